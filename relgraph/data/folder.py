"""``folder``: any ``root/<class>/<image>`` tree, such as a user's own few images per class."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor

from relgraph.data.base import FewShotDataset, resize_images, warn_or_raise
from relgraph.data.catalog import register_dataset
from relgraph.data.io import decode_image, is_image_file

__all__ = ["ImageFolderDataset", "IGNORED_FILES", "is_ignored"]

#: Files that operating systems leave in folders; skipped silently.
IGNORED_FILES = frozenset({"Thumbs.db", "desktop.ini"})


def is_ignored(name: str) -> bool:
    """Whether a file name is operating-system clutter (hidden files, Thumbs.db, ...)."""
    return name.startswith(".") or name in IGNORED_FILES


class ImageFolderDataset(FewShotDataset):
    """Images in ``root/<class>/<image>`` folders; the class is the folder name.

    Several roots may be given: classes with the same folder name are merged. Images are
    decoded, converted to ``channels`` and resized to ``image_size`` with the same resize as
    every relgraph dataset, and by default all read at construction, so a bad file is
    reported at once and nothing fails half-way through training.

    Args:
        roots: one or more folders.
        image_size: side length of the (square) images; ``None`` keeps the original size
            (all images must then share one size).
        channels: 1 (grayscale) or 3 (RGB).
        invert: ``255 - pixel`` (dark ink on white paper becomes bright ink on black).
        skip_bad: skip unreadable or unsupported files and empty class folders with a warning
            instead of raising.
        lazy: read images on access instead of at construction (for trees too big for memory);
            with ``skip_bad`` every file is still checked (its header) at construction.

    Raises:
        ValueError: a root is missing, a file cannot be read or is not an image, a class
            folder is empty, or no images were found. The message names the path.
    """

    def __init__(
        self,
        roots: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        image_size: int | None = 84,
        channels: int = 3,
        invert: bool = False,
        skip_bad: bool = False,
        lazy: bool = False,
    ) -> None:
        if isinstance(roots, (str, os.PathLike)):
            roots = [roots]
        if not roots:
            raise ValueError("the folder dataset needs at least one root folder")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        files_by_class: dict[str, list[Path]] = {}
        for root in map(Path, roots):
            if not root.is_dir():
                raise ValueError(f"{root} is not a folder; the folder dataset reads "
                                 "root/<class>/<image> trees")
            for entry in sorted(root.iterdir()):
                if is_ignored(entry.name):
                    continue
                if not entry.is_dir():
                    warn_or_raise(f"{entry} is a file directly under the root; expected one "
                                  "folder per class (root/<class>/<image>)", skip_bad)
                    continue
                files = []
                for f in sorted(entry.rglob("*")):
                    if f.is_dir() or is_ignored(f.name):
                        continue
                    if not is_image_file(f.name):
                        warn_or_raise(f"{f} is not a supported image file (by its extension); "
                                      "remove it or pass skip_bad=True", skip_bad)
                        continue
                    files.append(f)
                if not files:
                    warn_or_raise(f"class folder {entry} holds no images; remove it or pass "
                                  "skip_bad=True", skip_bad)
                    continue
                files_by_class.setdefault(entry.name, []).extend(files)
        if not files_by_class:
            raise ValueError(f"no images found under {', '.join(map(str, roots))}; expected "
                             "root/<class>/<image> folders")
        self.image_size, self.channels, self.invert = image_size, channels, invert
        self.skip_bad = skip_bad
        names = sorted(files_by_class)
        self.files: list[Path] = []
        targets: list[int] = []
        for c, name in enumerate(names):
            self.files.extend(files_by_class[name])
            targets.extend([c] * len(files_by_class[name]))
        self.images: Tensor | None = None
        if lazy and skip_bad:  # read later, a bad file could not be left out of an episode
            keep = []
            for i, f in enumerate(self.files):
                try:
                    with Image.open(f) as img:
                        img.verify()  # the header and structure, without decoding pixels
                    keep.append(i)
                except Exception as exc:  # PIL raises many types for damaged files
                    warn_or_raise(f"cannot read image {f}: {exc}", skip_bad)
            self.files = [self.files[i] for i in keep]
            targets = [targets[i] for i in keep]
        if not lazy:
            images, keep = [], []
            for i, f in enumerate(self.files):
                try:
                    images.append(self._read(f))
                    keep.append(i)
                except ValueError as exc:
                    warn_or_raise(str(exc), skip_bad)
            self.files = [self.files[i] for i in keep]
            targets = [targets[i] for i in keep]
            if not self.files:
                raise ValueError(f"no readable images left after skipping bad files under "
                                 f"{', '.join(map(str, roots))}: check that the folders hold "
                                 "images (the warnings name each file skipped)")
            shapes = {tuple(x.shape) for x in images}
            if len(shapes) > 1:
                raise ValueError(f"images have different sizes {sorted(shapes)[:3]}...; pass "
                                 "image_size to resize them")
            self.images = torch.stack(images)
        present = sorted(set(targets))
        if len(present) != len(names):
            remap = {c: i for i, c in enumerate(present)}
            targets = [remap[t] for t in targets]
            names = [names[c] for c in present]
        super().__init__(targets, names, None, {
            "dataset": "folder", "image_size": image_size, "channels": channels,
            "invert": invert})

    def _read(self, path: Path) -> Tensor:
        x = decode_image(path, str(path), channels=self.channels, invert=self.invert)
        return resize_images(x.unsqueeze(0), self.image_size)[0]

    def load(self, index: int) -> Tensor:
        if self.images is not None:
            return self.images[index].float().div_(255.0)
        return self._read(self.files[index]).float().div_(255.0)

    def get_batch(self, indices: Tensor) -> Tensor:
        if self.images is not None:
            return self.images[indices.reshape(-1)].float().div_(255.0)
        return super().get_batch(indices)


@register_dataset("folder")
def _build(roots: list[str], **kwargs: Any) -> ImageFolderDataset:
    return ImageFolderDataset(roots, **kwargs)
