"""Omniglot (Lake, Salakhutdinov & Tenenbaum 2015): 1623 handwritten characters from 50 alphabets,
drawn once by each of 20 people.

:class:`Omniglot` reads any mix of

- the official PNG layout ``images_background/<Alphabet>/characterNN/<id>_<drawer>.png`` (also
  ``images_evaluation``, ``images_background_small1``, ``images_background_small2``), from a
  folder or straight from the official zip;
- the npz form: ``images_background.npz`` / ``images_evaluation.npz`` with ``images`` bool
  ``[n_chars, 20, 105, 105]`` (True = white paper) and ``labels``, named through an
  ``alphabets.tsv`` beside them (alphabet folder name, set, first id, last id).

Every source goes through :func:`~relgraph.data.io.decode_image` (or the same inversion for the
npz) and :func:`~relgraph.data.base.resize_images`, so PNG, zip and npz give identical tensors.
Images are inverted: ink is bright (255) and paper is 0.

The registered dataset ``"omniglot"`` (:func:`build_omniglot`) adds the standard rotation
augmentation (90/180/270 degree rotations as new classes) and the Vinyals et al. (2016) split.

Example:
    >>> ds = build_dataset("omniglot", "data/omniglot",  # doctest: +SKIP
    ...                    split="train", rotations=True)
    >>> ds.num_classes  # 1028 characters x 4 rotations  # doctest: +SKIP
    4112
"""

from __future__ import annotations

import os
import re
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from relgraph.data.base import FewShotDataset, InMemoryDataset, RotatedClasses, resize_images
from relgraph.data.base import warn_or_raise as _warn_or_raise
from relgraph.data.catalog import register_dataset
from relgraph.data.decoded import decoded_cache_path, file_stamps, load_decoded, save_decoded
from relgraph.data.download import download_file, file_checksum
from relgraph.data.io import (
    check_zip_member,
    decode_image,
    is_image_file,
    open_zip,
    read_npz,
    read_text,
    read_zip_member,
)
from relgraph.utils import cache_dir

__all__ = [
    "Omniglot",
    "build_omniglot",
    "download_omniglot",
    "vinyals_split",
    "OMNIGLOT_BASE_URL",
    "OMNIGLOT_CHECKSUMS",
    "OMNIGLOT_SETS",
    "DEFAULT_DOWNLOAD_SETS",
    "VINYALS_TEST_ALPHABETS",
    "VINYALS_VAL_ALPHABETS",
    "VINYALS_GURMUKHI_FIRST_TEST",
    "SPLITS",
]

# -- facts ------------------------------------------------------------------------------------

#: Where the official zips live (``<base>/<set>.zip``).
OMNIGLOT_BASE_URL = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python"

#: The official image sets.
OMNIGLOT_SETS = (
    "images_background",
    "images_evaluation",
    "images_background_small1",
    "images_background_small2",
)

#: Checksums of the official zips (md5 of the full sets as published by torchvision; md5 and
#: sha256 of the small sets computed from the official files).
OMNIGLOT_CHECKSUMS: dict[str, dict[str, str]] = {
    "images_background": {"md5": "68d2efa1b9178cc56df9314c21c6e718"},
    "images_evaluation": {"md5": "6b91aef0f799c5bb55b94e3f2daec811"},
    "images_background_small1": {
        "md5": "e704a628b5459e08445c13499850abc4",
        "sha256": "f38eb80f801274ac2b4dff5b24289016bfaba4a7d5bb50deebf27104ad6cb8a4",
    },
    "images_background_small2": {
        "md5": "b75a71a51d3b13f821f212756fe481fd",
        "sha256": "3ccaa407515a8778e5d0861875af38b17e418f301ad5bb3b5a6b65d901a41c7f",
    },
}

#: What ``download=True`` fetches when no ``sets`` are named: all 1623 characters.
DEFAULT_DOWNLOAD_SETS = ("images_background", "images_evaluation")

#: The Vinyals et al. (2016) split, as used by Prototypical Networks. The background and
#: evaluation sets are pooled; test = these alphabets (Gurmukhi only from character 42 on) ...
VINYALS_TEST_ALPHABETS = (
    "Gurmukhi",
    "Kannada",
    "Keble",
    "Malayalam",
    "Manipuri",
    "Mongolian",
    "Old_Church_Slavonic_(Cyrillic)",
    "Oriya",
    "Sylheti",
    "Syriac_(Serto)",
    "Tengwar",
    "Tibetan",
    "ULOG",
)
#: ... Gurmukhi characters ``1..41`` are train, ``42..45`` test ...
VINYALS_GURMUKHI_FIRST_TEST = 42
#: ... val = these alphabets; train = every other character. Sizes: 1028 train + 172 val
#: (= 1200 trainval) and 423 test characters.
VINYALS_VAL_ALPHABETS = (
    "Armenian",
    "Bengali",
    "Early_Aramaic",
    "Hebrew",
    "Mkhedruli_(Georgian)",
)

SPLITS = ("train", "val", "test", "trainval")

# Files that operating systems drop into folders; ignored silently.
_JUNK_NAMES = {".ds_store", "thumbs.db", "desktop.ini", "__macosx", ".ipynb_checkpoints"}
_LAYOUT = ("images_background/<Alphabet>/characterNN/*.png (or images_evaluation, "
           "images_background_small1/2)")
_NUMBER = re.compile(r"(\d+)$")
_RESIZE_CHUNK = 2048


def _is_junk(name: str) -> bool:
    return name.lower() in _JUNK_NAMES or name.startswith("._")


def _char_number(folder: str) -> int | None:
    match = _NUMBER.search(folder)
    return int(match.group(1)) if match else None


def vinyals_split(class_name: str) -> str:
    """The Vinyals split a character belongs to: ``"train"``, ``"val"`` or ``"test"``.

    Args:
        class_name: ``"Alphabet/characterNN"`` (a trailing ``"/rotDDD"`` is allowed).

    Raises:
        ValueError: a Gurmukhi character name without a number.
    """
    alphabet, _, rest = class_name.partition("/")
    if alphabet in VINYALS_VAL_ALPHABETS:
        return "val"
    if alphabet == "Gurmukhi":
        number = _char_number(rest.split("/")[0])
        if number is None:
            raise ValueError(f"cannot place {class_name!r} in the Vinyals split: Gurmukhi "
                             "characters must be named characterNN")
        return "test" if number >= VINYALS_GURMUKHI_FIRST_TEST else "train"
    if alphabet in VINYALS_TEST_ALPHABETS:
        return "test"
    return "train"


def _in_split(class_name: str, split: str) -> bool:
    part = vinyals_split(class_name)
    return part in ("train", "val") if split == "trainval" else part == split


# -- downloading ------------------------------------------------------------------------------


def download_omniglot(
    root: str | os.PathLike[str] | None = None,
    sets: Sequence[str] = DEFAULT_DOWNLOAD_SETS,
    base_url: str | None = None,
    checksums: Mapping[str, Mapping[str, str]] | None = None,
) -> list[Path]:
    """Download the official Omniglot zips into ``root`` (unless already there).

    A set already present in ``root`` as ``<set>.zip``, a ``<set>/`` folder or ``<set>.npz``
    is not downloaded again. The zips are kept as they are: :class:`Omniglot` reads them directly.

    Args:
        root: the folder to put ``<set>.zip`` in; defaults to ``<cache_dir()>/omniglot``.
        sets: which official sets (see :data:`OMNIGLOT_SETS`).
        base_url: where ``<set>.zip`` is fetched from (default :data:`OMNIGLOT_BASE_URL`).
        checksums: expected digests by set name (default :data:`OMNIGLOT_CHECKSUMS`).

    Returns:
        The local path of each set (the zip, or the folder / npz that was already there).

    Raises:
        DownloadError: a download failed or did not match its checksum.
        ValueError: an unknown set name.
    """
    root = Path(root).expanduser() if root is not None else cache_dir() / "omniglot"
    base_url = (base_url or OMNIGLOT_BASE_URL).rstrip("/")
    checksums = OMNIGLOT_CHECKSUMS if checksums is None else checksums
    paths = []
    for name in sets:
        if name not in checksums:
            raise ValueError(f"unknown Omniglot set {name!r}; choose from {', '.join(checksums)}")
        present = [root / name, root / f"{name}.zip", root / f"{name}.npz"]
        existing = next((p for p in present if p.exists()), None)
        if existing is not None:
            if existing.suffix == ".zip" and existing.is_file():  # a partial copy?
                for algo, expected in checksums[name].items():
                    if file_checksum(existing, algo).lower() != expected.lower():
                        raise ValueError(
                            f"{existing} is not the official {name}.zip ({algo} differs: a "
                            "partial or damaged download?); delete it and run again to "
                            f"download it, or put a good copy from {base_url}/{name}.zip there")
            paths.append(existing)
            continue
        paths.append(download_file(f"{base_url}/{name}.zip", root / f"{name}.zip",
                                   checksums=checksums[name]))
    return paths


def _prepare_download(root: Path, sets: Sequence[str] | None) -> None:
    """Fetch what ``root`` needs (``download=True``); leaves existing data alone."""
    if root.suffix.lower() == ".zip":
        if not root.exists():
            if root.stem not in OMNIGLOT_SETS:
                raise ValueError(f"cannot download {root}: not an official Omniglot zip name "
                                 f"(choose from {', '.join(OMNIGLOT_SETS)})")
            download_omniglot(root.parent, [root.stem])
        return
    if root.suffix.lower() == ".npz":
        return  # no official npz to fetch; a missing one is reported when reading
    if root.is_dir() and _looks_like_set_folder(root):
        return
    download_omniglot(root, list(sets) if sets else DEFAULT_DOWNLOAD_SETS)


# -- sources ----------------------------------------------------------------------------------


@dataclass
class _Char:
    """One character found in a source: its name and where its drawings are."""

    alphabet: str
    folder: str
    source: _Source
    items: list[str] = field(default_factory=list)  # file paths or zip members
    row: int = -1  # npz row

    @property
    def name(self) -> str:
        return f"{self.alphabet}/{self.folder}"


class _Source:
    """A place holding characters: a set folder, a zip, or an npz."""

    path: Path

    def list(self, skip_bad: bool) -> list[_Char]:
        raise NotImplementedError

    def load(self, chars: list[_Char], size: int | None,
             skip_bad: bool) -> list[tuple[Tensor, list[str]]]:
        """For each character: its images ``[n, 1, S, S]`` uint8 and their names."""
        raise NotImplementedError


def _decode_all(chars: list[_Char], read: Any, describe: Any, size: int | None,
                skip_bad: bool) -> list[tuple[Tensor, list[str]]]:
    """Decode the PNGs of ``chars`` (``read(item) -> bytes | Path``) and resize them together."""
    images: list[Tensor] = []
    names: list[str] = []
    owner: list[int] = []
    for c, char in enumerate(chars):
        for item in char.items:
            name = describe(item)
            try:
                images.append(decode_image(read(item), name, channels=1, invert=True))
            except ValueError as exc:
                if not skip_bad:
                    raise
                warnings.warn(f"skipped {name}: {exc}", stacklevel=4)
                continue
            names.append(name)
            owner.append(c)
    resized = _resize_list(images, names, size)
    owner_t = torch.tensor(owner, dtype=torch.long)
    out = []
    for c in range(len(chars)):
        sel = torch.nonzero(owner_t == c).reshape(-1)
        out.append((resized[sel], [names[i] for i in sel.tolist()]))
    return out


def _resize_chunked(images: Tensor, size: int | None) -> Tensor:
    """:func:`resize_images` in chunks (bounded memory); ``[m, 1, h, w] -> [m, 1, S, S]``."""
    if size is None or images.shape[0] <= _RESIZE_CHUNK:
        return resize_images(images, size)
    return torch.cat([resize_images(images[i:i + _RESIZE_CHUNK], size)
                      for i in range(0, images.shape[0], _RESIZE_CHUNK)])


def _resize_list(images: list[Tensor], names: list[str], size: int | None) -> Tensor:
    """Stack decoded ``[1, h, w]`` images into ``[m, 1, S, S]``, resizing each shape group."""
    if not images:
        side = size or 105
        return torch.zeros(0, 1, side, side, dtype=torch.uint8)
    shapes = {tuple(im.shape) for im in images}
    if len(shapes) == 1:
        return _resize_chunked(torch.stack(images), size)
    if size is None:
        first = tuple(images[0].shape)
        odd = next(n for im, n in zip(images, names, strict=True) if tuple(im.shape) != first)
        raise ValueError(f"image {odd} has a different size from {names[0]} ({first[-2:]}); "
                         "pass an image_size to resize all images to one size")
    out = torch.empty(len(images), 1, size, size, dtype=torch.uint8)
    for shape in shapes:
        idx = [i for i, im in enumerate(images) if tuple(im.shape) == shape]
        out[idx] = _resize_chunked(torch.stack([images[i] for i in idx]), size)
    return out


def _looks_like_set_folder(path: Path) -> bool:
    """A folder of alphabet folders (no ``images_*`` children)."""
    children = [c for c in path.iterdir() if not _is_junk(c.name)]
    if any(c.name.startswith("images_") for c in children):
        return False
    return any(c.is_dir() for c in children)


class _FolderSource(_Source):
    """A set folder: ``<Alphabet>/<characterNN>/*.png``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def list(self, skip_bad: bool) -> list[_Char]:
        chars = []
        for alpha in sorted(self.path.iterdir()):
            if _is_junk(alpha.name):
                continue
            if not alpha.is_dir():
                _warn_or_raise(f"{alpha}: unexpected file in an Omniglot set folder (expected "
                               f"only alphabet folders: {_LAYOUT})", skip_bad)
                continue
            found = False
            for char_dir in sorted(alpha.iterdir()):
                if _is_junk(char_dir.name):
                    continue
                if not char_dir.is_dir():
                    _warn_or_raise(f"{char_dir}: unexpected file in an Omniglot alphabet folder "
                                   f"(expected only character folders: {_LAYOUT})", skip_bad)
                    continue
                found = True
                char = _Char(alpha.name, char_dir.name, self)
                for f in sorted(char_dir.iterdir()):
                    if _is_junk(f.name):
                        continue
                    if f.is_dir() or not is_image_file(f.name):
                        _warn_or_raise(f"{f}: unsupported {'folder' if f.is_dir() else 'file'} "
                                       "in an Omniglot character folder (expected only .png "
                                       "images)", skip_bad)
                        continue
                    char.items.append(str(f))
                if char.items:
                    chars.append(char)
                else:
                    _warn_or_raise(f"{char_dir}: empty character folder (no images)", skip_bad)
            if not found:
                _warn_or_raise(f"{alpha}: alphabet folder without character folders "
                               f"(expected {_LAYOUT})", skip_bad)
        return chars

    def load(self, chars: list[_Char], size: int | None,
             skip_bad: bool) -> list[tuple[Tensor, list[str]]]:
        return _decode_all(chars, Path, str, size, skip_bad)


class _ZipSource(_Source):
    """A zip of ``<set>/<Alphabet>/<characterNN>/*.png`` (or ``<Alphabet>/<characterNN>/...``)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _open(self) -> zipfile.ZipFile:
        return open_zip(self.path)

    def list(self, skip_bad: bool) -> list[_Char]:
        with self._open() as zf:
            infos = zf.infolist()
        files: list[tuple[list[str], str]] = []
        dirs: list[list[str]] = []
        for info in infos:
            check_zip_member(self.path, info.filename, "an Omniglot zip")
            parts = [p for p in info.filename.split("/") if p]
            if not parts or any(_is_junk(p) for p in parts):
                continue
            if info.is_dir():
                dirs.append(parts)
            else:
                files.append((parts, info.filename))
        depths = {len(parts) for parts, name in files if is_image_file(name)}
        if len(depths) != 1 or not depths <= {3, 4}:
            example = next((name for parts, name in files if len(parts) not in (3, 4)), None)
            detail = f" (e.g. {self.path}:{example})" if example else ""
            what = "has no images" if not depths else "does not have the Omniglot layout"
            raise ValueError(f"zip {self.path} {what}{detail}: expected members {_LAYOUT}")
        depth = depths.pop()
        by_char: dict[tuple[str, ...], _Char] = {}
        for parts, name in files:
            if len(parts) != depth:
                _warn_or_raise(f"{self.path}:{name}: unexpected member outside the Omniglot "
                               f"layout (expected {_LAYOUT})", skip_bad)
                continue
            if not is_image_file(name):
                _warn_or_raise(f"{self.path}:{name}: unsupported file in an Omniglot "
                               "character folder (expected only .png images)", skip_bad)
                continue
            key = tuple(parts[:-1])
            if key not in by_char:
                by_char[key] = _Char(parts[-3], parts[-2], self)
            by_char[key].items.append(name)
        for parts in dirs:
            if len(parts) == depth - 1 and tuple(parts) not in by_char:
                _warn_or_raise(f"{self.path}:{'/'.join(parts)}/: empty character folder "
                               "(no images)", skip_bad)
        chars = [by_char[k] for k in sorted(by_char)]
        for char in chars:
            char.items.sort()
        return chars

    def load(self, chars: list[_Char], size: int | None,
             skip_bad: bool) -> list[tuple[Tensor, list[str]]]:
        with self._open() as zf:
            return _decode_all(chars, lambda m: read_zip_member(zf, m, f"{self.path}:{m}"),
                               lambda m: f"{self.path}:{m}", size, skip_bad)


class _NpzSource(_Source):
    """``images_<set>.npz``, its characters named by the ``alphabets.tsv`` beside it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tsv = path.parent / "alphabets.tsv"

    def _read_tsv(self) -> list[tuple[str, str, int, int]]:
        if not self.tsv.is_file():
            raise FileNotFoundError(f"{self.tsv} not found: it names the characters of "
                                    f"{self.path} (alphabet folder name, set, first id, last id)")
        rows = []
        for lineno, line in enumerate(read_text(self.tsv).splitlines(), 1):
            if not line.strip() or line.startswith("#"):
                continue
            fields = line.split("\t")
            try:
                name, which, first, last = fields
                rows.append((name.strip(), which.strip(), int(first), int(last)))
                if not 0 <= rows[-1][2] <= rows[-1][3]:
                    raise ValueError("first id > last id")
            except ValueError as exc:
                raise ValueError(f"{self.tsv}:{lineno}: expected 'alphabet<TAB>set<TAB>first "
                                 f"id<TAB>last id', got {line!r}") from exc
        return rows

    def list(self, skip_bad: bool) -> list[_Char]:
        rows = self._read_tsv()
        which = self.path.stem.removeprefix("images_")
        mine = [r for r in rows if r[1] == which]
        if not mine:
            sets = sorted({r[1] for r in rows})
            raise ValueError(f"cannot tell which characters {self.path} holds: {self.tsv} lists "
                             f"sets {sets}; name the npz images_<set>.npz (e.g. "
                             "images_background.npz)")
        offset = min(r[2] for r in mine)
        self.expected_rows = sum(r[3] - r[2] + 1 for r in mine)
        chars = []
        for alphabet, _, first, last in mine:
            for char_id in range(first, last + 1):
                chars.append(_Char(alphabet, f"character{char_id - first + 1:02d}", self,
                                   row=char_id - offset))
        return chars

    def load(self, chars: list[_Char], size: int | None,
             skip_bad: bool) -> list[tuple[Tensor, list[str]]]:
        arrays = read_npz(self.path, ["images"], ["labels"])
        images, labels = arrays["images"], arrays.get("labels")
        if images.dtype != np.bool_ or images.ndim != 4 or images.shape[0] != self.expected_rows:
            raise ValueError(f"{self.path}: 'images' must be bool [{self.expected_rows}, drawers, "
                             f"h, w] (True = paper), got {images.dtype} {list(images.shape)}")
        if labels is not None and (labels.shape != images.shape[:2] or not np.array_equal(
                labels, np.broadcast_to(np.arange(images.shape[0])[:, None], labels.shape))):
            raise ValueError(f"{self.path}: 'labels' must be the row index of each image, "
                             f"[{images.shape[0]}, {images.shape[1]}]")
        rows = np.array([c.row for c in chars], dtype=np.int64)
        n, d, h, w = len(rows), images.shape[1], images.shape[2], images.shape[3]
        picked = torch.from_numpy(images[rows].reshape(n * d, 1, h, w))
        parts = [resize_images(torch.logical_not(picked[i:i + _RESIZE_CHUNK]).to(torch.uint8)
                               .mul_(255), size)
                 for i in range(0, n * d, _RESIZE_CHUNK)]
        resized = torch.cat(parts) if parts else torch.zeros(0, 1, size or h, size or w,
                                                             dtype=torch.uint8)
        resized = resized.reshape(n, d, *resized.shape[1:])
        return [(resized[i], [f"{self.path}[{c.row},{j}]" for j in range(d)])
                for i, c in enumerate(chars)]


def _open_root(root: Path, sets: Sequence[str] | None) -> list[_Source]:
    """The sources a root holds (see :class:`Omniglot` for what a root may be)."""
    if not root.exists() and root.suffix.lower() == ".npz":
        raise FileNotFoundError(
            f"Omniglot npz {root} does not exist (there is no official npz to download; "
            "download=True with a folder root fetches the official zips instead)")
    if not root.exists():
        raise FileNotFoundError(
            f"Omniglot root {root} does not exist. Pass download=True to fetch the official "
            f"zips into it (from {OMNIGLOT_BASE_URL}), or give a folder holding {_LAYOUT}, "
            "a zip, or an npz.")
    if root.is_file():
        suffix = root.suffix.lower()
        if suffix == ".zip":
            return [_ZipSource(root)]
        if suffix == ".npz":
            return [_NpzSource(root)]
        raise ValueError(f"{root}: unsupported Omniglot root; give a folder, a .zip or an .npz")
    children = {c.name: c for c in root.iterdir() if c.name.startswith("images_")}
    found: dict[str, Path] = {}
    for name, child in sorted(children.items()):
        stem = name if child.is_dir() else child.name.rsplit(".", 1)[0]
        kind = "dir" if child.is_dir() else child.suffix.lower()
        if kind not in ("dir", ".zip", ".npz"):
            continue
        rank = {"dir": 0, ".zip": 1, ".npz": 2}
        if stem not in found or rank[kind] < rank[_kind(found[stem])]:
            found[stem] = child
    if not found:
        if _looks_like_set_folder(root):
            return [_FolderSource(root)]
        raise ValueError(
            f"no Omniglot data found in {root}: expected {_LAYOUT} (a folder, a zip "
            "or an npz), or a folder of alphabet folders. Pass download=True to fetch the "
            "official zips.")
    if sets:
        missing = [s for s in sets if s not in found]
        if missing:
            raise ValueError(f"{root} has no Omniglot set {missing} (found: "
                             f"{', '.join(sorted(found))}); pass download=True to fetch it")
        found = {s: found[s] for s in sets}
    sources: list[_Source] = []
    for path in found.values():
        kind = _kind(path)
        if kind == "dir":
            sources.append(_FolderSource(path))
        elif kind == ".zip":
            sources.append(_ZipSource(path))
        else:
            sources.append(_NpzSource(path))
    return sources


def _kind(path: Path) -> str:
    return "dir" if path.is_dir() else path.suffix.lower()


# -- the dataset ------------------------------------------------------------------------------


class Omniglot(InMemoryDataset):
    """Omniglot characters as classes, all images in memory (uint8, ink bright).

    Each root may be: a folder holding ``images_background/``, ``images_evaluation/``, ...
    (as folders, ``.zip`` or ``.npz`` files; a folder wins over a zip, a zip over an npz of the
    same set), a set folder itself (holding alphabet folders), an official ``.zip``, or an
    ``.npz`` with ``alphabets.tsv`` beside it.

    The same character found in several roots or sets (e.g. Greek and Latin, which are in both
    ``images_background_small1`` and ``images_background_small2``, or a set given both as PNG and
    npz) is one class: the first occurrence (in ``roots`` order) is kept, later ones are skipped.
    Classes are ordered by alphabet, then character number, whatever the roots' order;
    examples within a class by drawer (file name).

    Args:
        roots: one path or several; default ``<cache_dir()>/omniglot``.
        image_size: side ``S`` of the square images; ``None`` keeps the original 105.
        alphabets: keep only these alphabets (folder names; unknown names raise).
        split: keep only the ``"train"``, ``"val"``, ``"test"`` or ``"trainval"`` characters of
            the Vinyals split (see :func:`vinyals_split`); ``None`` keeps all.
        sets: which sets to read from a folder root holding several (e.g.
            ``["images_background"]``); default all found. With ``download=True``, the sets to
            fetch when absent (default :data:`DEFAULT_DOWNLOAD_SETS`).
        download: fetch the official zips into a folder root (or the named zip) when missing.
        skip_bad: skip unreadable images, unsupported files and empty folders with a warning
            instead of raising.
        cache: keep the decoded images in the decoded-image cache
            (``<cache_dir()>/decoded/omniglot-<key>.npy``, see :mod:`relgraph.data.decoded`)
            and memory-map them from there at later constructions (milliseconds instead of
            seconds). The key covers the characters, the image size and the path, size and
            modification time of every source file, so changed sources are decoded again.
            Decodings that skipped bad files are not cached. Default ``True``.

    Attributes:
        images (Tensor): ``[N, 1, S, S]`` uint8, ink 255, paper 0 (memory-mapped from the
            cache file when it came from the cache).
        targets (Tensor): ``[N]`` long class indices.
        class_names (list[str]): ``[C]`` ``"Alphabet/characterNN"``.
        class_alphabets (list[str]): ``[C]`` alphabet folder names.
        files (list[str]): ``[N]`` where each image came from (``path``, ``zip:member`` or
            ``npz[row,drawer]``).

    Raises:
        FileNotFoundError: a root does not exist (and ``download`` is off).
        ValueError: unreadable or unexpected files (the message names the file), a zip without
            the Omniglot layout, unknown alphabets, or nothing left after filtering.
        DownloadError: ``download=True`` and a download failed.
    """

    def __init__(
        self,
        roots: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
        image_size: int | None = 28,
        alphabets: Sequence[str] | None = None,
        split: str | None = None,
        sets: Sequence[str] | None = None,
        download: bool = False,
        skip_bad: bool = False,
        cache: bool = True,
    ) -> None:
        if split is not None and split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        if image_size is not None and image_size <= 0:
            raise ValueError(f"image_size must be positive or None, got {image_size}")
        if isinstance(sets, str):
            sets = [sets]
        if roots is None:
            root_paths = [cache_dir() / "omniglot"]
        elif isinstance(roots, (str, os.PathLike)):
            root_paths = [Path(roots).expanduser()]
        else:
            root_paths = [Path(r).expanduser() for r in roots]
        if not root_paths:
            root_paths = [cache_dir() / "omniglot"]
        self.roots = root_paths

        # 1. find the characters (cheap: listings only)
        chars: dict[str, _Char] = {}
        for root in root_paths:
            if download:
                _prepare_download(root, sets)
            for source in _open_root(root, sets):
                for char in source.list(skip_bad):
                    chars.setdefault(char.name, char)  # first occurrence wins
        selected = list(chars.values())
        if alphabets is not None:
            known = {c.alphabet for c in selected}
            missing = [a for a in alphabets if a not in known]
            if missing:
                raise ValueError(f"unknown alphabet(s) {missing}; the Omniglot roots "
                                 f"{[str(r) for r in root_paths]} have: {', '.join(sorted(known))}")
            keep = set(alphabets)
            selected = [c for c in selected if c.alphabet in keep]
        if split is not None:
            selected = [c for c in selected if _in_split(c.name, split)]
        if not selected:
            where = [str(r) for r in root_paths]
            raise ValueError(f"no Omniglot characters left in {where}" +
                             (f" for split {split!r} (the Vinyals test alphabets are in "
                              "images_evaluation, val ones in images_background)" if split else ""))
        selected.sort(key=lambda c: (c.alphabet, _char_number(c.folder) or 0, c.folder))

        # 2. read the images: from the decoded-image cache, else one pass per source
        cache_file = _cache_file(selected, image_size) if cache else None
        cached = load_decoded(cache_file) if cache_file is not None else None
        if cached is not None and cached[1].get("classes") == [c.name for c in selected]:
            stacked, meta = cached
            counts, files = meta["counts"], meta["files"]
            names = [c.name for c in selected]
            class_alphabets = [c.alphabet for c in selected]
        else:
            loaded = _decode(selected, image_size, skip_bad)
            stacked, names, class_alphabets, counts, files = _gather(selected, loaded)
            clean = all(len(loaded[c.name][1]) == len(c.items) for c in selected if c.items)
            if cache_file is not None and clean:  # a run that skipped files is not cached
                save_decoded(cache_file, stacked, {"classes": names, "counts": counts,
                                                   "files": files})
        if not names:
            raise ValueError(f"no readable Omniglot images in {[str(r) for r in root_paths]}")
        targets = torch.arange(len(names)).repeat_interleave(torch.tensor(counts))
        self.files = files
        super().__init__(stacked, targets, names, class_alphabets, {
            "dataset": "omniglot",
            "image_size": int(stacked.shape[-1]),
            "channels": 1,
            "invert": True,
        })


def _cache_file(selected: list[_Char], image_size: int | None) -> Path:
    """Where the decoded images of ``selected`` at ``image_size`` are cached: keyed by the
    characters, where they come from and the stamps of their source files."""
    sources: dict[str, _Source] = {}
    items: list[str] = []
    for char in selected:
        sources.setdefault(str(char.source.path), char.source)
        if isinstance(char.source, _FolderSource):
            items.extend(char.items)
    archives = [Path(p) for p, src in sources.items() if not isinstance(src, _FolderSource)]
    archives += [src.tsv for src in sources.values() if isinstance(src, _NpzSource)]
    return decoded_cache_path("omniglot", {
        "image_size": image_size,
        "classes": [[c.name, type(c.source).__name__, str(c.source.path), c.row, c.items]
                    for c in selected],
        "stamps": file_stamps([*archives, *items]),
    })


def _decode(selected: list[_Char], image_size: int | None,
            skip_bad: bool) -> dict[str, tuple[Tensor, list[str]]]:
    """Decode the images of ``selected``, one pass per source: ``name -> (images, files)``."""
    loaded: dict[str, tuple[Tensor, list[str]]] = {}
    by_source: dict[int, list[_Char]] = {}
    for char in selected:
        by_source.setdefault(id(char.source), []).append(char)
    for group in by_source.values():
        for char, result in zip(group, group[0].source.load(group, image_size, skip_bad),
                                strict=True):
            loaded[char.name] = result
    return loaded


def _gather(selected: list[_Char], loaded: dict[str, tuple[Tensor, list[str]]]
            ) -> tuple[Tensor, list[str], list[str], list[int], list[str]]:
    """One tensor of the decoded characters, in order, without those that have no image:
    ``(images [N, 1, S, S], names, alphabets, counts, files)``."""
    images, names, class_alphabets, counts, files = [], [], [], [], []
    for char in selected:
        imgs, paths = loaded[char.name]
        if imgs.shape[0] == 0:
            warnings.warn(f"skipped class {char.name}: no readable images", stacklevel=3)
            continue
        names.append(char.name)
        class_alphabets.append(char.alphabet)
        counts.append(int(imgs.shape[0]))
        images.append(imgs)
        files.extend(paths)
    if not names:
        return torch.zeros(0, 1, 1, 1, dtype=torch.uint8), [], [], [], []
    shapes = {tuple(im.shape[1:]) for im in images}
    if len(shapes) != 1:
        raise ValueError(f"the Omniglot roots hold images of different sizes {sorted(shapes)}; "
                         "pass an image_size to resize them all to one size")
    return torch.cat(images), names, class_alphabets, counts, files


def _rotation_angles(rotations: bool | Sequence[int] | None) -> list[int]:
    if rotations is None or rotations is False:
        return []
    if rotations is True:
        return [0, 90, 180, 270]
    if isinstance(rotations, (int, str)):
        raise ValueError(f"rotations must be True/False or a list of angles like [0, 90, 180, "
                         f"270], got {rotations!r}")
    return [int(a) for a in rotations]


@register_dataset("omniglot")
def build_omniglot(
    roots: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    image_size: int | None = 28,
    split: str | None = None,
    rotations: bool | Sequence[int] | None = False,
    alphabets: Sequence[str] | None = None,
    sets: Sequence[str] | None = None,
    download: bool = False,
    skip_bad: bool = False,
    cache: bool = True,
) -> FewShotDataset:
    """The ``"omniglot"`` dataset: :class:`Omniglot`, optionally with rotated classes.

    Args:
        roots, image_size, alphabets, split, sets, download, skip_bad, cache: see
            :class:`Omniglot`.
            The split is applied to characters, so all rotations of a character share a split.
        rotations: ``True`` adds rotations by 90, 180 and 270 degrees as new classes (the
            standard augmentation; classes named ``"Alphabet/characterNN/rotDDD"``, as in the
            Vinyals split files); or the exact angles, e.g. ``[0, 180]``; ``False`` for none.

    Returns:
        An :class:`Omniglot`, or a :class:`~relgraph.data.base.RotatedClasses` around it.
        Images ``[1, S, S]`` float in ``[0, 1]``, ink bright.
    """
    dataset = Omniglot(roots, image_size=image_size, alphabets=alphabets, split=split,
                       sets=sets, download=download, skip_bad=skip_bad, cache=cache)
    angles = _rotation_angles(rotations)
    return RotatedClasses(dataset, angles) if angles else dataset
