"""Few-shot datasets: labelled examples grouped into classes, classes grouped into alphabets.

Every dataset in relgraph is a :class:`FewShotDataset`. It knows, for each example, its class
(``targets``), and for each class its name and its alphabet (a group of related classes: an
Omniglot alphabet, a Unicode script, or just ``""``). Images come out as float tensors
``[c, h, w]`` in ``[0, 1]``.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "base_class_names",
    "ink_polarity",
    "dataset_polarity",
    "FewShotDataset",
    "InMemoryDataset",
    "ClassSubset",
    "RotatedClasses",
    "resize_images",
]


def resize_images(images: Tensor, size: int | None) -> Tensor:
    """Resize a batch of images to ``size x size`` (antialiased bilinear), keeping the dtype.

    This is the single resize used by every relgraph dataset, so a model sees the same pixels
    whether its data came from PNG files, a zip, or an npz array.

    Args:
        images: ``[m, c, h, w]`` uint8 or float.
        size: target side length; ``None`` returns ``images`` unchanged.

    Shapes:
        ``[m, c, h, w] -> [m, c, size, size]``
    """
    if images.dim() != 4:
        raise ValueError(f"resize_images expects [m, c, h, w], got shape {tuple(images.shape)}")
    if size is None or tuple(images.shape[-2:]) == (size, size):
        return images
    if size <= 0:
        raise ValueError(f"image size must be positive, got {size}")
    out = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True,
                        align_corners=False)
    if images.dtype == torch.uint8:
        return out.round_().clamp_(0, 255).to(torch.uint8)
    return out.to(images.dtype)


class FewShotDataset(torch.utils.data.Dataset):
    """Base class: examples with class labels, classes with names and alphabets.

    Subclasses implement :meth:`load` (and may override :meth:`get_batch` for speed).

    Args:
        targets: class index of every example, ``[N]`` with values in ``0..C-1``.
        class_names: ``C`` unique names, e.g. ``"Greek/character03"``.
        class_alphabets: ``C`` alphabet (group) names; defaults to ``""`` for all classes.
        preprocessing: how images were made (size, channels, invert, ...), recorded in
            checkpoints so that a trained model sees new data the same way.

    Attributes:
        targets (Tensor): ``[N]`` long.
        class_names (list[str]): ``[C]``.
        class_alphabets (list[str]): ``[C]``.
    """

    def __init__(
        self,
        targets: Sequence[int] | Tensor,
        class_names: Sequence[str],
        class_alphabets: Sequence[str] | None = None,
        preprocessing: dict[str, Any] | None = None,
    ) -> None:
        self.targets = torch.as_tensor(targets, dtype=torch.long).reshape(-1)
        self.class_names = list(class_names)
        if class_alphabets is None:
            class_alphabets = [""] * len(self.class_names)
        self.class_alphabets = list(class_alphabets)
        self.preprocessing = dict(preprocessing or {})
        if len(self.class_alphabets) != len(self.class_names):
            raise ValueError(
                f"got {len(self.class_names)} class names but {len(self.class_alphabets)} alphabets"
            )
        if len(set(self.class_names)) != len(self.class_names):
            seen: set[str] = set()
            dup = next(n for n in self.class_names if n in seen or seen.add(n))  # type: ignore[func-returns-value]
            raise ValueError(f"class names must be unique; {dup!r} appears more than once")
        if self.targets.numel() and (
            int(self.targets.min()) < 0 or int(self.targets.max()) >= len(self.class_names)
        ):
            raise ValueError(
                f"targets must lie in 0..{len(self.class_names) - 1}, got range "
                f"{int(self.targets.min())}..{int(self.targets.max())}"
            )
        self._class_indices: list[Tensor] | None = None

    # -- to implement -----------------------------------------------------------------------
    def load(self, index: int) -> Tensor:
        """The example at ``index`` as a float tensor ``[c, h, w]`` in ``[0, 1]``."""
        raise NotImplementedError

    # -- generic ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.targets.numel())

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.load(int(index)), int(self.targets[index])

    def get_batch(self, indices: Tensor) -> Tensor:
        """Examples at ``indices`` stacked: ``[m] -> [m, c, h, w]`` float."""
        return torch.stack([self.load(int(i)) for i in indices.reshape(-1)])

    def storage_index(self, indices: Tensor) -> tuple[InMemoryDataset, Tensor, Tensor] | None:
        """Where examples ``indices`` sit in the one tensor that holds this dataset, if any.

        Returns ``(base, rows, quarter_turns)``: example ``indices[i]`` is
        ``torch.rot90(base.images[rows[i]], quarter_turns[i], dims=(-2, -1))`` read by
        ``base`` (as ``base.get_batch`` reads its rows). ``None`` (the default) for datasets
        that are not views of an :class:`InMemoryDataset` (files read on demand, text), and
        for subclasses that override ``get_batch`` without overriding this method (their
        reading is their own); :class:`~relgraph.data.resident.ResidentImages` then cannot
        hold them.

        Shapes:
            ``[m] -> (base, [m] long, [m] long in 0..3)``
        """
        return None

    @property
    def num_classes(self) -> int:
        """Number of classes ``C``."""
        return len(self.class_names)

    @property
    def alphabets(self) -> list[str]:
        """Sorted unique alphabet names (``[""]`` when the dataset has no alphabets)."""
        return sorted(set(self.class_alphabets))

    def class_indices(self) -> list[Tensor]:
        """For each class ``c``, the sorted example indices with ``targets == c`` (cached)."""
        if self._class_indices is None:
            order = torch.argsort(self.targets, stable=True)
            counts = torch.bincount(self.targets, minlength=self.num_classes)
            self._class_indices = list(torch.split(order, counts.tolist()))
        return self._class_indices

    def class_counts(self) -> Tensor:
        """Examples per class, ``[C]`` long."""
        return torch.bincount(self.targets, minlength=self.num_classes)

    def summary(self) -> dict[str, int]:
        """Counts: ``{"classes": C, "examples": N, "alphabets": A}`` (A = 0 without alphabets)."""
        alphabets = [a for a in self.alphabets if a]
        return {"classes": self.num_classes, "examples": len(self), "alphabets": len(alphabets)}

    def select_classes(self, classes: Sequence[int] | Tensor) -> ClassSubset:
        """A view holding only ``classes`` (dataset class indices), renumbered ``0..m-1``."""
        return ClassSubset(self, classes)

    def select_alphabets(self, alphabets: Sequence[str]) -> ClassSubset:
        """A view holding only the classes of ``alphabets``; unknown names raise ``ValueError``."""
        wanted = list(dict.fromkeys(alphabets))
        known = set(self.class_alphabets)
        missing = [a for a in wanted if a not in known]
        if missing:
            raise ValueError(
                f"unknown alphabet(s) {missing}; this dataset has: {', '.join(self.alphabets)}"
            )
        keep = set(wanted)
        return ClassSubset(self, [c for c, a in enumerate(self.class_alphabets) if a in keep])

    def __repr__(self) -> str:
        s = self.summary()
        return (f"{type(self).__name__}(classes={s['classes']}, examples={s['examples']}, "
                f"alphabets={s['alphabets']})")


def _reads_its_own_way(dataset: FewShotDataset, cls: type) -> bool:
    """Whether ``dataset`` (an instance of ``cls``) overrides ``get_batch`` but not
    ``storage_index``: a subclass reading its examples in a way the storage map cannot know."""
    kind = type(dataset)
    return kind.get_batch is not cls.get_batch and kind.storage_index is cls.storage_index


class InMemoryDataset(FewShotDataset):
    """A dataset whose images all sit in one tensor (uint8 to save memory, or float).

    Args:
        images: ``[N, c, h, w]`` uint8 (0..255) or float (0..1).
        targets: ``[N]`` class indices.
        class_names, class_alphabets, preprocessing: as in :class:`FewShotDataset`.
    """

    def __init__(
        self,
        images: Tensor,
        targets: Sequence[int] | Tensor,
        class_names: Sequence[str],
        class_alphabets: Sequence[str] | None = None,
        preprocessing: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(targets, class_names, class_alphabets, preprocessing)
        if images.dim() != 4:
            raise ValueError(f"images must be [N, c, h, w], got shape {tuple(images.shape)}")
        if images.shape[0] != len(self.targets):
            raise ValueError(f"{images.shape[0]} images but {len(self.targets)} targets")
        self.images = images
        self.preprocessing.setdefault("channels", int(images.shape[1]))
        self.preprocessing.setdefault("image_size", int(images.shape[-1]))

    def _to_float(self, x: Tensor) -> Tensor:
        return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()

    def read_rows(self, rows: Tensor) -> Tensor:
        """What :meth:`get_batch` returns for rows of :attr:`images` (on any device): float,
        uint8 read as ``x / 255``. Subclasses that reshape their examples override this.

        Shapes:
            ``[m, c, h, w]`` (rows of ``images``) ``-> [m, c, h, w]`` float
        """
        return self._to_float(rows)

    def load(self, index: int) -> Tensor:
        return self._to_float(self.images[index])

    def get_batch(self, indices: Tensor) -> Tensor:
        return self.read_rows(self.images[indices.reshape(-1)])

    def storage_index(self, indices: Tensor) -> tuple[InMemoryDataset, Tensor, Tensor] | None:
        if _reads_its_own_way(self, InMemoryDataset):
            return None
        rows = indices.reshape(-1)
        return self, rows, torch.zeros_like(rows)


class ClassSubset(FewShotDataset):
    """A view of ``dataset`` restricted to some of its classes, renumbered ``0..m-1``.

    Args:
        dataset: the parent dataset.
        classes: parent class indices to keep, in the order of the new numbering.
    """

    def __init__(self, dataset: FewShotDataset, classes: Sequence[int] | Tensor) -> None:
        classes = torch.as_tensor(classes, dtype=torch.long).reshape(-1)
        n = dataset.num_classes
        if classes.numel() and (int(classes.min()) < 0 or int(classes.max()) >= n):
            raise ValueError(f"class indices must lie in 0..{dataset.num_classes - 1}")
        remap = torch.full((dataset.num_classes,), -1, dtype=torch.long)
        remap[classes] = torch.arange(classes.numel())
        new_targets = remap[dataset.targets]
        self.indices = torch.nonzero(new_targets >= 0).reshape(-1)
        super().__init__(
            new_targets[self.indices],
            [dataset.class_names[c] for c in classes.tolist()],
            [dataset.class_alphabets[c] for c in classes.tolist()],
            dataset.preprocessing,
        )
        self.dataset = dataset

    def load(self, index: int) -> Tensor:
        return self.dataset.load(int(self.indices[index]))

    def get_batch(self, indices: Tensor) -> Tensor:
        return self.dataset.get_batch(self.indices[indices.reshape(-1)])

    def storage_index(self, indices: Tensor) -> tuple[InMemoryDataset, Tensor, Tensor] | None:
        if _reads_its_own_way(self, ClassSubset):
            return None
        return self.dataset.storage_index(self.indices[indices.reshape(-1)])


#: The suffix :class:`RotatedClasses` gives a rotated copy's class name.
_ROTATION_SUFFIX = re.compile(r"/rot\d{3}$")


def base_class_names(names: Sequence[str]) -> list[str]:
    """Class names without :class:`RotatedClasses`' ``/rotDDD`` suffix, unique and sorted:
    the characters (or classes) behind a possibly rotated set of classes.

    Example:
        >>> base_class_names(["a/x/rot000", "a/x/rot090", "b/y"])
        ['a/x', 'b/y']
    """
    return sorted({_ROTATION_SUFFIX.sub("", n) for n in names})


class RotatedClasses(FewShotDataset):
    """Rotations of every class as new classes (the standard Omniglot augmentation).

    Example ``i`` of rotation ``r`` is ``r * N + i``; its class is ``r * C + c`` and is named
    ``"<name>/rotDDD"`` (``rot000``, ``rot090``, ...), as in the Vinyals split files.

    Args:
        dataset: the parent dataset (square images).
        angles: rotations in degrees, multiples of 90 (default ``(0, 90, 180, 270)``).
        separate_alphabets: the rotated copies of an alphabet form alphabets of their own
            (``"<alphabet>/rot090"``, ...), so a within-alphabet episode holds characters of one
            orientation, like the upright test episodes; by default (``False``) they stay in
            their alphabet, and most of a within-alphabet episode's classes then differ from
            each other by orientation alone, which is easy.

    Example:
        >>> ds = InMemoryDataset(torch.zeros(4, 1, 8, 8), [0, 0, 1, 1], ["a/x", "a/y"], ["a", "a"])
        >>> rotated = RotatedClasses(ds, separate_alphabets=True)
        >>> rotated.num_classes, sorted(set(rotated.class_alphabets))
        (8, ['a', 'a/rot090', 'a/rot180', 'a/rot270'])
    """

    def __init__(self, dataset: FewShotDataset, angles: Sequence[int] = (0, 90, 180, 270),
                 separate_alphabets: bool = False) -> None:
        angles = [int(a) % 360 for a in angles]
        bad = [a for a in angles if a % 90]
        if bad or not angles or len(set(angles)) != len(angles):
            raise ValueError(f"angles must be distinct multiples of 90 degrees, got {list(angles)}")
        self.dataset = dataset
        self.angles = angles
        n, c = len(dataset), dataset.num_classes
        targets = torch.cat([dataset.targets + r * c for r in range(len(angles))])
        names = [f"{name}/rot{a:03d}" for a in angles for name in dataset.class_names]
        alphabets = [f"{alpha}/rot{a:03d}" if separate_alphabets and a else alpha
                     for a in angles for alpha in dataset.class_alphabets]
        super().__init__(targets, names, alphabets, dataset.preprocessing)
        self._n = n

    def load(self, index: int) -> Tensor:
        r, i = divmod(int(index), self._n)
        return torch.rot90(self.dataset.load(i), k=self.angles[r] // 90, dims=(-2, -1))

    def get_batch(self, indices: Tensor) -> Tensor:
        indices = indices.reshape(-1)
        r, i = indices // self._n, indices % self._n
        base = self.dataset.get_batch(i)
        out = base.clone()
        for slot, angle in enumerate(self.angles):
            sel = r == slot
            if angle and bool(sel.any()):
                out[sel] = torch.rot90(base[sel], k=angle // 90, dims=(-2, -1))
        return out

    def storage_index(self, indices: Tensor) -> tuple[InMemoryDataset, Tensor, Tensor] | None:
        if _reads_its_own_way(self, RotatedClasses):
            return None
        indices = indices.reshape(-1)
        found = self.dataset.storage_index(indices % self._n)
        if found is None:
            return None
        base, rows, turns = found
        quarter = torch.tensor([a // 90 for a in self.angles], dtype=torch.long)
        return base, rows, (turns + quarter[indices // self._n]) % 4


_SKIP_HINT = re.compile(r"(;|\.)? *(remove it or pass skip_bad=True|Remove or replace this file "
                        r"\(or pass skip_bad=True[^)]*\)|\(?or pass skip_bad=True[^)]*\)?)\.?$")


def ink_polarity(images: Tensor) -> dict[str, Any]:
    """How bright a set of images is, to check that new images match a model's training data.

    Args:
        images: ``[m, c, h, w]`` in ``[0, 1]`` (as datasets return them).

    Returns:
        ``{"mean_intensity": float, "polarity": "light-on-dark" | "dark-on-light"}``: the mean
        pixel value, and whether the background is dark (mean below 0.5: bright ink on black,
        like relgraph's Omniglot) or light (dark ink on white paper, like most scans).
    """
    mean = float(images.float().mean()) if images.numel() else 0.0
    return {"mean_intensity": round(mean, 4),
            "polarity": "light-on-dark" if mean < 0.5 else "dark-on-light"}


def dataset_polarity(dataset: FewShotDataset, examples: int = 256) -> dict[str, Any] | None:
    """:func:`ink_polarity` of up to ``examples`` images spread over ``dataset``; ``None`` when
    its examples are not images (``[c, h, w]``)."""
    if len(dataset) == 0:
        return None
    index = torch.linspace(0, len(dataset) - 1, min(examples, len(dataset))).long().unique()
    x = dataset.get_batch(index)
    if x.dim() != 4 or not x.is_floating_point():
        return None
    return ink_polarity(x)


def warn_or_raise(message: str, skip: bool) -> None:
    """Warn (when the user asked to skip bad files) or raise ``ValueError``.

    The warning leaves out the message's closing "pass skip_bad=True" hint (it was passed)
    and says that the file is skipped.
    """
    if skip:
        warnings.warn(_SKIP_HINT.sub("", message).rstrip(" .;") + "; skipped", stacklevel=3)
    else:
        raise ValueError(message)
