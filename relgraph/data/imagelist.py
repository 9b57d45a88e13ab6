"""Images given as a list (files, encoded bytes) or one uint8 array, with their classes.

The shared piece of the benchmark loaders (miniImageNet, tieredImageNet, CUB, CIFAR-FS, FC100):
each parses its own index files and hands the images here, where they are decoded, converted to
RGB and resized with :func:`~relgraph.data.base.resize_images` like every relgraph image.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from relgraph.data.base import FewShotDataset, resize_images
from relgraph.data.io import decode_image

__all__ = ["ImageListDataset", "SPLITS", "check_split"]

#: The splits of the benchmark datasets.
SPLITS = ("train", "val", "test")


def check_split(split: str | None, dataset: str) -> list[str]:
    """The splits to read: ``[split]``, or all three for ``None``; others raise ``ValueError``."""
    if split is None:
        return list(SPLITS)
    if split not in SPLITS:
        raise ValueError(f"{dataset}: split must be one of {', '.join(SPLITS)} (or none for all "
                         f"classes), got {split!r}")
    return [split]


class ImageListDataset(FewShotDataset):
    """Images from a list of sources, decoded on access (or an array held in memory).

    Args:
        sources: one per example: a path, or encoded bytes (PNG / JPEG); or a uint8 tensor
            ``[N, c, h, w]`` of decoded images.
        targets, class_names, class_alphabets: as in :class:`FewShotDataset`.
        image_size: side of the square images returned (``None``: as stored).
        preprocessing: recorded in checkpoints (``dataset``, ``split``, ...).
        names: how to name example ``i`` in an error (default: its path or its index).

    Shapes:
        :meth:`get_batch`: ``[m] -> [m, 3, image_size, image_size]`` float in ``[0, 1]``.
    """

    def __init__(
        self,
        sources: Sequence[str | os.PathLike[str] | bytes] | Tensor,
        targets: Sequence[int] | Tensor,
        class_names: Sequence[str],
        class_alphabets: Sequence[str] | None = None,
        image_size: int | None = 84,
        preprocessing: dict[str, Any] | None = None,
        names: Sequence[str] | None = None,
    ) -> None:
        pre = {**(preprocessing or {}), "image_size": image_size, "channels": 3}
        super().__init__(targets, class_names, class_alphabets, pre)
        if len(sources) != len(self.targets):
            raise ValueError(f"{len(sources)} images but {len(self.targets)} labels")
        if isinstance(sources, Tensor) and (sources.dim() != 4 or sources.dtype != torch.uint8):
            raise ValueError(f"an image array must be uint8 [N, c, h, w], got {sources.dtype} "
                             f"shape {tuple(sources.shape)}")
        self.sources = sources
        self.image_size = image_size
        self.names = names

    def _name(self, index: int) -> str:
        if self.names is not None:
            return self.names[index]
        src = self.sources[index]
        return str(src) if isinstance(src, (str, Path)) else f"image {index}"

    def _decode(self, indices: Tensor) -> Tensor:
        if isinstance(self.sources, Tensor):
            x = self.sources[indices]
            if x.shape[1] == 1:
                x = x.expand(-1, 3, -1, -1)
            return resize_images(x, self.image_size)
        out = []
        for i in indices.tolist():
            src = self.sources[i]
            data = src if isinstance(src, bytes) else Path(src)
            img = decode_image(data, self._name(i), channels=3)
            out.append(resize_images(img.unsqueeze(0), self.image_size)[0])
        return torch.stack(out)

    def load(self, index: int) -> Tensor:
        return self._decode(torch.tensor([int(index)]))[0].float().div_(255.0)

    def get_batch(self, indices: Tensor) -> Tensor:
        return self._decode(indices.reshape(-1)).float().div_(255.0)
