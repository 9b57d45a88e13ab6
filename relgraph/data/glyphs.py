"""``glyphs``: an Omniglot-like data set rendered from the fonts that ship with matplotlib.

Nothing is downloaded. Every class is one Unicode letter; its examples are the letter drawn in
the DejaVu (Sans, Sans Mono, Serif) and STIX General font files of matplotlib's
``mpl-data/fonts/ttf`` (:data:`FONT_FILES`: regular, bold, oblique/italic and bold
oblique/italic of each family), with seeded distortions. Images are single channel, ink bright
(255) on a black (0) background, like relgraph's Omniglot. The default set (28 x 28, 20
examples per class) has 1,059 classes in 22 alphabets and takes about 10 s to make on 2 CPU
cores; it is then cached.

**Classes.** A character becomes a class when it passes these rules, in this order:

1. *Letter*: Unicode category Lu, Ll, Lt or Lo (modifier letters, Lm, are left out), in the
   ``cmap`` of at least 2 of the font files, and drawn with visible ink by each of them.
2. *Known script*: its Unicode name starts with a prefix of :data:`SCRIPTS` (``"LATIN "``,
   ``"GREEK "``, ``"CANADIAN SYLLABICS "``, ...).
3. *Not composed*: NFKD normalisation leaves it unchanged. This drops accented letters,
   ligatures, superscripts and presentation forms (their base letters stay).
4. *Not tiny*: its ink, in its canonical font (the first font of :data:`FONT_FILES` that has
   it, DejaVu Sans for nearly all), spans at least 25% of the em size.
5. *Visually distinct* (the near-duplicate rule): the *canonical image* of a character is its
   canonical-font rendering cropped to the ink, centred in a square with its aspect ratio kept
   (longer side 72% of the square) and resized to 28 x 28. Two characters are near-duplicates
   when their canonical images differ by less than a small feature, ``unmatched <= 6`` pixels
   of ink lying more than one pixel from the other image's ink, or have nearly the same
   overall shape, soft IoU ``>= 0.85`` after a Gaussian blur of sigma 1 pixel (see
   :func:`glyph_distances`, :func:`near_duplicates`). Candidates are visited in script order
   (the order of :data:`SCRIPTS`: Latin, Greek, Cyrillic, ...), then by code point, and one is
   kept only when it is no near-duplicate of any class already kept. So Greek Alpha and
   Cyrillic A fold into Latin A, and letters that differ only in size once filled to the box
   (``o``/``O``, ``c``/small capital ``C``) count once.

**Alphabets and splits.** A class's alphabet is its script (:data:`SCRIPTS`), except that Latin
is cut by Unicode block ("Latin" for Basic Latin and Latin-1, "Latin Extended-A",
"Latin Extended-B", "IPA Extensions", ...; :func:`glyph_alphabet`). Splits are by alphabet,
fixed by :data:`SPLITS`: ``val`` is Armenian, Lao, Tifinagh and Hebrew (136 classes), ``test``
is Georgian, Arabic and Greek (184 classes), every other alphabet is ``train`` (739 classes:
Canadian Aboriginal syllabics, Cyrillic, the Latin blocks, NKo, Ogham, Old Italic, Coptic,
Lisu). Every val/test alphabet has at least 20 classes.

**Examples.** Example ``e`` of a class is drawn in font ``fonts[e % len(fonts)]`` (the fonts
having the letter, in :data:`FONT_FILES` order), cropped to its ink and centred as above, then
distorted: stroke width (erosion with probability 0.3 unless that removes over 40% of the ink;
dilation with probability 0.45 for non-bold fonts), a random affine map (rotation within
10 degrees, shear within 0.2, scale 0.85-1.1, aspect within 10%, translation kept inside the
frame) and a smooth elastic displacement (bicubic from a 4 x 4 grid of Gaussian control
points), all in one ``grid_sample``, then resized with :func:`~relgraph.data.base.resize_images`.
The distortion parameters come from a random stream seeded by ``(seed, code point)``, example
``e`` taking the ``e``-th draws, so an example depends on ``(seed, class, e)`` only, not on the
order in which classes are made.

**Cache.** The full set is generated once per ``(image_size, examples_per_class, seed)`` and
saved atomically as ``glyphs-<GLYPHS_VERSION>-<size>-<examples>-<seed>.npz`` in
:func:`relgraph.utils.cache_dir` (or the given folder); later constructions load it. Pixels
depend on the installed FreeType (through Pillow), so caches are not meant to move between
machines; bump :data:`GLYPHS_VERSION` whenever the generator changes.
"""

from __future__ import annotations

import math
import os
import unicodedata
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from relgraph.data.base import InMemoryDataset, resize_images
from relgraph.data.catalog import register_dataset
from relgraph.utils import atomic_path
from relgraph.utils import cache_dir as _cache_root

__all__ = [
    "DEDUP_IOU",
    "DEDUP_UNMATCHED",
    "FONT_FILES",
    "GLYPHS_VERSION",
    "GlyphsDataset",
    "SCRIPTS",
    "SPLITS",
    "canonical_images",
    "generate_glyphs",
    "glyph_alphabet",
    "glyph_classes",
    "glyph_script",
    "glyph_distances",
    "near_duplicates",
]

#: Bump when anything that changes the generated pixels changes (invalidates old caches).
GLYPHS_VERSION = "v1"

#: Font files (in matplotlib's ``mpl-data/fonts/ttf``), in a fixed order. The first one that
#: has a character is its canonical font.
FONT_FILES: tuple[str, ...] = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSans-BoldOblique.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf",
    "DejaVuSerif-BoldItalic.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
    "DejaVuSansMono-Oblique.ttf",
    "DejaVuSansMono-BoldOblique.ttf",
    "STIXGeneral.ttf",
    "STIXGeneralBol.ttf",
    "STIXGeneralItalic.ttf",
    "STIXGeneralBolIta.ttf",
)

#: Character-name prefix -> script, in deduplication priority order (earlier scripts keep
#: homoglyphs).
SCRIPTS: tuple[tuple[str, str], ...] = (
    ("LATIN ", "Latin"),
    ("GREEK ", "Greek"),
    ("CYRILLIC ", "Cyrillic"),
    ("ARMENIAN ", "Armenian"),
    ("HEBREW ", "Hebrew"),
    ("ARABIC ", "Arabic"),
    ("GEORGIAN ", "Georgian"),
    ("COPTIC ", "Coptic"),
    ("CANADIAN SYLLABICS ", "Canadian Aboriginal"),
    ("TIFINAGH ", "Tifinagh"),
    ("NKO ", "NKo"),
    ("LAO ", "Lao"),
    ("OGHAM ", "Ogham"),
    ("OLD ITALIC ", "Old Italic"),
    ("LISU ", "Lisu"),
)

#: Latin is split into alphabets by Unicode block: (first, last code point, alphabet).
_LATIN_BLOCKS: tuple[tuple[int, int, str], ...] = (
    (0x0000, 0x00FF, "Latin"),
    (0x0100, 0x017F, "Latin Extended-A"),
    (0x0180, 0x024F, "Latin Extended-B"),
    (0x0250, 0x02AF, "IPA Extensions"),
    (0x1D00, 0x1DBF, "Phonetic Extensions"),
    (0x1E00, 0x1EFF, "Latin Extended Additional"),
    (0x2C60, 0x2C7F, "Latin Extended-C"),
    (0xA720, 0xA7FF, "Latin Extended-D"),
    (0xAB30, 0xAB6F, "Latin Extended-E"),
)

#: Alphabets of the validation and test splits; every other alphabet is in ``train``.
SPLITS: dict[str, tuple[str, ...]] = {
    "val": ("Armenian", "Lao", "Tifinagh", "Hebrew"),
    "test": ("Georgian", "Arabic", "Greek"),
}

#: Near-duplicate thresholds (see :func:`near_duplicates`): unmatched ink in pixels of the
#: 28 x 28 canonical images, and soft IoU of the blurred canonical images.
DEDUP_UNMATCHED = 6.0
DEDUP_IOU = 0.85

_MIN_FONTS = 2
_CATEGORIES = ("Lu", "Ll", "Lt", "Lo")  # letters, not modifier letters (Lm)
_MIN_EXTENT = 0.25
_RENDER_PX = 96  # em size in pixels of the master renderings
_LEVELS = 8  # grey levels of the canonical images when comparing them
_CANON_SIZE = 28  # side of the canonical images used for deduplication
_FILL = 0.72  # the longer side of a glyph spans this fraction of the image before distortion
_EXTENT = 0.8  # after the affine map the glyph box lies within this (image half side = 1)
_KEEP_INK = 0.6  # erosion must keep this fraction of the ink
_INK = 32  # a master-rendering pixel above this counts as ink when cropping


def _font_dir() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def glyph_script(codepoint: int) -> str | None:
    """The script of a character (:data:`SCRIPTS`, by name prefix), or ``None``."""
    name = unicodedata.name(chr(codepoint), "")
    for prefix, script in SCRIPTS:
        if name.startswith(prefix):
            return script
    return None


def glyph_alphabet(codepoint: int) -> str | None:
    """The alphabet of a character: its script (:data:`SCRIPTS`), Latin split by block.

    Args:
        codepoint: a Unicode code point.

    Returns:
        The alphabet name, or ``None`` when the character belongs to no listed script.
    """
    script = glyph_script(codepoint)
    if script != "Latin":
        return script
    for lo, hi, block in _LATIN_BLOCKS:
        if lo <= codepoint <= hi:
            return block
    return "Latin Other"


def _split_of(alphabet: str) -> str:
    for split, alphabets in SPLITS.items():
        if alphabet in alphabets:
            return split
    return "train"


@cache
def _font(index: int) -> Any:
    from PIL import ImageFont

    return ImageFont.truetype(str(_font_dir() / FONT_FILES[index]), size=_RENDER_PX,
                              layout_engine=ImageFont.Layout.BASIC)


def _cmaps() -> list[set[int]]:
    from fontTools.ttLib import TTFont

    out = []
    for name in FONT_FILES:
        path = _font_dir() / name
        if not path.exists():
            out.append(set())
            continue
        font = TTFont(str(path), lazy=True)
        out.append(set(font.getBestCmap() or {}))
        font.close()
    return out


def _render(codepoint: int, font: int) -> np.ndarray | None:
    """The ink of ``chr(codepoint)`` in font ``font``, cropped: uint8 ``[h, w]`` or ``None``."""
    from PIL import Image, ImageDraw

    pil_font = _font(font)
    ch = chr(codepoint)
    left, top, right, bottom = pil_font.getbbox(ch)
    if right <= left or bottom <= top:
        return None
    image = Image.new("L", (right - left + 4, bottom - top + 4))
    ImageDraw.Draw(image).text((2 - left, 2 - top), ch, font=pil_font, fill=255)
    ink = np.asarray(image)
    rows = np.flatnonzero((ink > _INK).any(axis=1))
    cols = np.flatnonzero((ink > _INK).any(axis=0))
    if rows.size == 0:
        return None
    return ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def _fit(ink: np.ndarray, size: int) -> np.ndarray:
    """Centre ``ink`` ``[h, w]`` in a ``size x size`` float image, longer side ``_FILL * size``."""
    from PIL import Image

    h, w = ink.shape
    scale = _FILL * size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    small = Image.fromarray(ink).resize((nw, nh), Image.Resampling.LANCZOS)
    out = np.zeros((size, size), dtype=np.float32)
    top, left = (size - nh) // 2, (size - nw) // 2
    out[top:top + nh, left:left + nw] = np.asarray(small, dtype=np.float32) / 255.0
    return out


@dataclass(frozen=True)
class _Candidate:
    codepoint: int
    alphabet: str
    fonts: tuple[int, ...]
    canonical: np.ndarray  # [_CANON_SIZE, _CANON_SIZE] float in [0, 1]


def _candidates() -> list[_Candidate]:
    """Rules 1-4 of the module docstring, in deduplication order."""
    cmaps = _cmaps()
    codepoints = sorted(set().union(*cmaps))
    priority = {script: i for i, (_, script) in enumerate(SCRIPTS)}
    found: list[tuple[int, int, _Candidate]] = []
    for cp in codepoints:
        ch = chr(cp)
        if unicodedata.category(ch) not in _CATEGORIES:
            continue
        if unicodedata.normalize("NFKD", ch) != ch:
            continue
        alphabet = glyph_alphabet(cp)
        if alphabet is None:
            continue
        fonts = tuple(i for i, cmap in enumerate(cmaps) if cp in cmap)
        if len(fonts) < _MIN_FONTS:
            continue
        inks = [_render(cp, f) for f in fonts]
        if any(ink is None for ink in inks):
            continue
        canon = inks[0]
        assert canon is not None
        if max(canon.shape) < _MIN_EXTENT * _RENDER_PX:
            continue
        rank = priority[glyph_script(cp)]  # type: ignore[index]
        image = resize_images(torch.from_numpy(_fit(canon, 64))[None, None], _CANON_SIZE)
        found.append((rank, cp, _Candidate(cp, alphabet, fonts, image[0, 0].numpy())))
    found.sort(key=lambda t: (t[0], t[1]))
    return [c for _, _, c in found]


def _blur(images: Tensor, sigma: float = 1.0) -> Tensor:
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = k / k.sum()
    images = F.conv2d(images, k.view(1, 1, 1, -1), padding=(0, radius))
    return F.conv2d(images, k.view(1, 1, -1, 1), padding=(radius, 0))


def _thermometer(q: Tensor) -> Tensor:
    """``[n, d]`` levels ``0.._LEVELS`` -> ``[n, _LEVELS * d]`` 0/1 codes ``[q >= k]``."""
    levels = torch.arange(1, _LEVELS + 1, dtype=q.dtype).view(-1, 1, 1)
    return (q[None] >= levels).permute(1, 0, 2).reshape(q.shape[0], -1).float()


def _min_sums(a: Tensor, b: Tensor) -> Tensor:
    """``out[i, j] = sum(min(a[i], b[j]))`` for rows quantised to ``0.._LEVELS``, exactly.

    ``min(x, y) = sum_k [x >= k] [y >= k]``, so this is one matrix product of 0/1 codes.
    """
    return _thermometer(a) @ _thermometer(b).T


def glyph_distances(images: Tensor) -> tuple[Tensor, Tensor]:
    """Pairwise measures between canonical images, the input of the near-duplicate rule.

    Images are first quantised to 8 grey levels. ``unmatched[i, j]`` is the ink of either
    image lying more than one pixel away from the other's ink, in pixels:
    ``sum(relu(a - dilate(b))) + sum(relu(b - dilate(a)))`` with a 3 x 3 grey dilation.
    ``iou[i, j]`` is the soft IoU ``sum(min(a, b)) / sum(max(a, b))`` of the images blurred by
    a Gaussian of sigma 1 pixel.

    Args:
        images: ``[C, h, w]`` float in ``[0, 1]`` (uint8 is scaled to ``[0, 1]``).

    Returns:
        ``(unmatched, iou)``, both ``[C, C]`` float and symmetric; diagonal 0 and 1.

    Shapes:
        ``[C, h, w] -> ([C, C], [C, C])``
    """
    x = images.float()
    if images.dtype == torch.uint8:
        x = x / 255.0
    x = x[:, None]
    q = (x * _LEVELS).round()
    a = q.flatten(1)
    b = F.max_pool2d(q, 3, stride=1, padding=1).flatten(1)
    unmatched = (a.sum(-1)[:, None] - _min_sums(a, b)) / _LEVELS
    unmatched = unmatched + unmatched.T
    blurred = (_blur(x) * _LEVELS).round_().flatten(1)
    inter = _min_sums(blurred, blurred)
    total = blurred.sum(-1)
    iou = inter / (total[:, None] + total[None, :] - inter).clamp_min(1e-8)
    return unmatched, iou


def near_duplicates(images: Tensor) -> Tensor:
    """Which pairs of canonical images look alike (the deduplication rule).

    A pair is a near-duplicate when ``unmatched <= DEDUP_UNMATCHED`` (they differ by less than
    a small feature) or ``iou >= DEDUP_IOU`` (their overall shapes nearly coincide); see
    :func:`glyph_distances`.

    Args:
        images: ``[C, h, w]`` canonical images.

    Returns:
        ``[C, C]`` bool, symmetric, ``False`` on the diagonal.
    """
    unmatched, iou = glyph_distances(images)
    dup = (unmatched <= DEDUP_UNMATCHED) | (iou >= DEDUP_IOU)
    dup.fill_diagonal_(False)
    return dup


@lru_cache(maxsize=1)
def _classes() -> tuple[_Candidate, ...]:
    cands = _candidates()
    if not cands:
        return ()
    dup = near_duplicates(torch.from_numpy(np.stack([c.canonical for c in cands]))).numpy()
    alive = np.ones(len(cands), dtype=bool)
    keep: list[int] = []
    for i in range(len(cands)):
        if alive[i]:
            keep.append(i)
            alive[i + 1:] &= ~dup[i, i + 1:]
    kept = [cands[i] for i in keep]
    kept.sort(key=lambda c: (c.alphabet, c.codepoint))
    return tuple(kept)


def glyph_classes() -> list[tuple[int, str, tuple[str, ...]]]:
    """The classes of the data set, after the rules of the module docstring.

    Returns:
        ``(codepoint, alphabet, font file names)`` per class, sorted by alphabet then code point.
    """
    return [(c.codepoint, c.alphabet, tuple(FONT_FILES[f] for f in c.fonts)) for c in _classes()]


def canonical_images() -> Tensor:
    """The canonical images of the classes (deduplication input), in :func:`glyph_classes` order.

    Returns:
        ``[C, 28, 28]`` float in ``[0, 1]``.
    """
    classes = _classes()
    if not classes:
        return torch.zeros(0, _CANON_SIZE, _CANON_SIZE)
    return torch.from_numpy(np.stack([c.canonical for c in classes]))


def _class_name(codepoint: int, alphabet: str) -> str:
    name = unicodedata.name(chr(codepoint), f"U+{codepoint:04X}")
    return f"{alphabet}/{name}"


def _distortion_params(seed: int, codepoint: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-example uniforms ``[n, 8]`` and elastic noise ``[n, 2, 4, 4]`` for one class."""
    uniforms = np.random.default_rng([seed, codepoint, 0]).random((n, 8))
    noise = np.random.default_rng([seed, codepoint, 1]).standard_normal((n, 2, 4, 4))
    return uniforms, noise


@lru_cache(maxsize=8)
def _upsampling_basis(n: int, size: int) -> Tensor:
    """``[size, n]`` matrix of 1-d bicubic upsampling (``align_corners=True``) of ``n`` points."""
    eye = torch.eye(n)[:, None, :, None]  # [n, 1, n, 1]
    cols = F.interpolate(eye, size=(size, 1), mode="bicubic", align_corners=True)
    return cols[:, 0, :, 0].T.contiguous()


def _distort(masters: Tensor, uniforms: Tensor, noise: Tensor, bold: Tensor) -> Tensor:
    """Seeded stroke width, affine and elastic distortions of a batch of master images.

    Args:
        masters: ``[m, 1, W, W]`` float in ``[0, 1]``.
        uniforms: ``[m, 8]`` uniforms in ``[0, 1)``.
        noise: ``[m, 2, 4, 4]`` standard normals (elastic displacement control points).
        bold: ``[m]`` bool, the master comes from a bold font (it is never thickened).

    Returns:
        ``[m, 1, W, W]`` float in ``[0, 1]``.
    """
    m, _, size, _ = masters.shape
    unit = max(1, round(size / 64))
    # stroke width, by 1 pixel per 64 of side: thin (erode) with probability 0.3, but only
    # where that keeps at least _KEEP_INK of the ink; thicken (dilate) non-bold fonts with
    # probability 0.45
    u = uniforms[:, 0]
    k = 2 * unit + 1
    x = masters
    thin = u < 0.3
    if bool(thin.any()):
        y = x[thin]
        eroded = -F.max_pool2d(-y, k, stride=1, padding=k // 2)
        ok = eroded.sum((1, 2, 3)) >= _KEEP_INK * y.sum((1, 2, 3))
        x = x.clone()
        x[thin] = torch.where(ok[:, None, None, None], eroded, y)
    thick = (u >= 0.55) & ~bold
    if bool(thick.any()):
        x = x.clone() if x is masters else x
        x[thick] = F.max_pool2d(x[thick], k, stride=1, padding=k // 2)
    # affine: forward map M = R(theta) @ shear @ diag(sx, sy), plus translation t
    theta = (uniforms[:, 1] * 2 - 1) * math.radians(10)
    shear = (uniforms[:, 2] * 2 - 1) * 0.2
    scale = 0.85 + 0.25 * uniforms[:, 3]
    aspect = torch.exp((uniforms[:, 4] * 2 - 1) * 0.1)
    sx, sy = scale * aspect, scale / aspect
    cos, sin = torch.cos(theta), torch.sin(theta)
    rot = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    shr = torch.zeros(m, 2, 2)
    shr[:, 0, 0] = 1
    shr[:, 1, 1] = 1
    shr[:, 0, 1] = shear
    fwd = rot @ shr @ torch.diag_embed(torch.stack([sx, sy], -1))
    # shrink so the glyph box (half side _FILL) stays inside the frame with a margin
    corners = torch.tensor([[1.0, 1.0], [1.0, -1.0]]) * _FILL
    extent = (fwd @ corners.T).abs().amax(dim=(-1, -2))  # [m]
    fwd = fwd * (_EXTENT / extent).clamp(max=1.0)[:, None, None]
    extent = (fwd @ corners.T).abs().amax(dim=(-1, -2))
    room = (_EXTENT + 0.05 - extent).clamp(min=0.0)
    shift = (uniforms[:, 5:7] * 2 - 1) * room[:, None]
    inv = torch.linalg.inv(fwd)
    affine = torch.cat([inv, -(inv @ shift[:, :, None])], dim=-1)  # [m, 2, 3]
    grid = F.affine_grid(affine, [m, 1, size, size], align_corners=False)
    # elastic: smooth displacement from a 4 x 4 control grid, amplitude ~ U(0, 0.05)
    amplitude = 0.05 * uniforms[:, 7]
    basis = _upsampling_basis(noise.shape[-1], size)  # bicubic upsampling is separable
    disp = torch.einsum("ij,mcjk,lk->mcil", basis, noise * amplitude[:, None, None, None], basis)
    grid = grid + disp.permute(0, 2, 3, 1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def generate_glyphs(
    image_size: int = 28,
    examples_per_class: int = 20,
    seed: int = 0,
    max_classes: int | None = None,
) -> dict[str, Any]:
    """Render the full glyphs data set (all splits), without touching the cache.

    Args:
        image_size: side of the output images.
        examples_per_class: examples made per class.
        seed: distortion seed.
        max_classes: keep only every ``k``-th class so that at most this many remain (tests).

    Returns:
        A dict of numpy arrays: ``images`` uint8 ``[N, 1, S, S]``, ``targets`` int64 ``[N]``,
        ``codepoints`` int64 ``[C]``, ``class_names`` str ``[C]`` and ``class_alphabets`` str
        ``[C]``; examples grouped by class, classes in :func:`glyph_classes` order.
    """
    if image_size <= 0 or examples_per_class <= 0:
        raise ValueError("image_size and examples_per_class must be positive")
    classes = list(_classes())
    if max_classes is not None and len(classes) > max_classes:
        step = math.ceil(len(classes) / max_classes)
        classes = classes[::step]
    work = max(64, image_size)
    n = examples_per_class
    images = np.zeros((len(classes) * n, 1, image_size, image_size), dtype=np.uint8)
    batch_classes = max(1, (1 << 23) // (work * work * n))  # about 32 MiB of masters per batch
    for start in range(0, len(classes), batch_classes):
        chunk = classes[start:start + batch_classes]
        masters, uniforms, noise, bold = [], [], [], []
        for cand in chunk:
            drawn = {}
            for f in cand.fonts:
                ink = _render(cand.codepoint, f)
                assert ink is not None  # checked by _candidates
                drawn[f] = _fit(ink, work)
            u, z = _distortion_params(seed, cand.codepoint, n)
            uniforms.append(u)
            noise.append(z)
            for e in range(n):
                f = cand.fonts[e % len(cand.fonts)]
                masters.append(drawn[f])
                bold.append("Bol" in FONT_FILES[f])
        out = _distort(
            torch.from_numpy(np.stack(masters))[:, None],
            torch.from_numpy(np.concatenate(uniforms)).float(),
            torch.from_numpy(np.concatenate(noise)).float(),
            torch.tensor(bold),
        )
        out = resize_images(out * 255.0, image_size).round_().clamp_(0, 255).to(torch.uint8)
        images[start * n:(start + len(chunk)) * n] = out.numpy()
    return {
        "images": images,
        "targets": np.repeat(np.arange(len(classes), dtype=np.int64), n),
        "codepoints": np.array([c.codepoint for c in classes], dtype=np.int64),
        "class_names": np.array([_class_name(c.codepoint, c.alphabet) for c in classes]),
        "class_alphabets": np.array([c.alphabet for c in classes]),
    }


def _cache_file(folder: Path, image_size: int, examples_per_class: int, seed: int,
                max_classes: int | None) -> Path:
    tag = f"glyphs-{GLYPHS_VERSION}-{image_size}-{examples_per_class}-{seed}"
    if max_classes is not None:
        tag += f"-max{max_classes}"
    return folder / f"{tag}.npz"


def _load_or_generate(folder: Path, image_size: int, examples_per_class: int, seed: int,
                      max_classes: int | None) -> tuple[dict[str, np.ndarray], Path, bool]:
    path = _cache_file(folder, image_size, examples_per_class, seed, max_classes)
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}, path, True
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            pass  # a corrupt (truncated) or foreign file: regenerate it
    arrays = generate_glyphs(image_size, examples_per_class, seed, max_classes)
    try:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)
    except OSError as exc:  # a read-only or full disk: the cache is an optimisation
        warnings.warn(f"could not write the glyphs cache {path} ({exc}); the images are "
                      "rendered again next time (set $RELGRAPH_CACHE to a writable folder)",
                      stacklevel=3)
    return arrays, path, False


class GlyphsDataset(InMemoryDataset):
    """Letters of many scripts rendered from matplotlib's fonts: an Omniglot-like data set.

    See the module docstring for how classes, alphabets, splits and examples are made. The
    default (28 x 28, 20 examples) has over 1,000 classes; it is generated in seconds on first
    use and cached.

    Args:
        split: ``"all"``, ``"train"``, ``"val"`` or ``"test"`` (by alphabet, see :data:`SPLITS`).
        image_size: side ``S`` of the images.
        examples_per_class: examples per class (at least 1; 20 by default).
        seed: distortion seed.
        cache_dir: folder for the cached ``.npz`` (default :func:`relgraph.utils.cache_dir`).
        max_classes: testing aid: keep only an evenly spaced subset of at most this many classes.

    Attributes:
        images (Tensor): ``[N, 1, S, S]`` uint8, ink 255 on background 0.
        targets (Tensor): ``[N]`` long.
        codepoints (list[int]): ``[C]`` the Unicode code point of each class.
        cache_path (Path): the cache file used.
        from_cache (bool): whether the data came from the cache file.
    """

    def __init__(
        self,
        split: str = "all",
        image_size: int = 28,
        examples_per_class: int = 20,
        seed: int = 0,
        cache_dir: str | os.PathLike[str] | None = None,
        max_classes: int | None = None,
    ) -> None:
        if split not in ("all", "train", "val", "test"):
            raise ValueError(f"split must be 'all', 'train', 'val' or 'test', got {split!r}")
        folder = Path(cache_dir) if cache_dir is not None else _cache_root()
        arrays, self.cache_path, self.from_cache = _load_or_generate(
            folder, int(image_size), int(examples_per_class), int(seed), max_classes)
        names = [str(s) for s in arrays["class_names"]]
        alphabets = [str(s) for s in arrays["class_alphabets"]]
        codepoints = [int(c) for c in arrays["codepoints"]]
        images = torch.from_numpy(arrays["images"])
        targets = torch.from_numpy(arrays["targets"]).long()
        if split != "all":
            keep = [c for c, a in enumerate(alphabets) if _split_of(a) == split]
            remap = torch.full((len(names),), -1, dtype=torch.long)
            remap[keep] = torch.arange(len(keep))
            new_targets = remap[targets]
            rows = torch.nonzero(new_targets >= 0).reshape(-1)
            images, targets = images[rows], new_targets[rows]
            names = [names[c] for c in keep]
            alphabets = [alphabets[c] for c in keep]
            codepoints = [codepoints[c] for c in keep]
        self.codepoints = codepoints
        self.split = split
        preprocessing = {
            "dataset": "glyphs",
            "version": GLYPHS_VERSION,
            "image_size": int(image_size),
            "channels": 1,
            "invert": False,
        }
        super().__init__(images.contiguous(), targets, names, alphabets, preprocessing)


@register_dataset("glyphs")
def _build(roots: Sequence[str], **kwargs: Any) -> GlyphsDataset:
    """The embedded ``glyphs`` data set; ``roots`` is empty (default cache) or one cache folder.

    Keyword options: ``split``, ``image_size``, ``examples_per_class``, ``seed``.
    """
    if len(roots) > 1:
        raise ValueError("the glyphs dataset takes at most one root: the folder for its cache")
    if roots:
        kwargs.setdefault("cache_dir", roots[0])
    return GlyphsDataset(**kwargs)
