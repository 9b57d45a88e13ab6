"""A dataset's images held once, as stored (uint8), on the training device.

:class:`ResidentImages` wraps any view of an :class:`~relgraph.data.base.InMemoryDataset`
(class subsets, rotated classes, the Omniglot split of a training run) and reads a batch of
examples with one gather on the device that holds the images, instead of the chain of views
each reading, converting and rotating on the CPU:

1. the view chain maps the batch's indices to rows of the stored tensor and quarter turns
   (:meth:`~relgraph.data.base.FewShotDataset.storage_index`, a few tensor operations on
   the indices);
2. one ``index_select`` reads those rows (still uint8, a quarter of the bytes of floats), and
   the rows that turn are turned in three groups (``torch.rot90`` by 1, 2, 3 quarter turns,
   written back with ``index_copy_``);
3. the uint8 pixels become floats ``x / 255`` on the device.

The examples are bit for bit those of the wrapped dataset's ``get_batch`` (same rows, same
rotations, same conversion), so episodes drawn from a seed do not change: only where and how
fast they are made. On a GPU the images cross the bus once, at construction, and a training
step copies only the batch's indices.

Example (needs the Omniglot data and a GPU, so not run as a doctest):
    >>> train = build_dataset("omniglot", root, split="train", rotations=True)  # doctest: +SKIP
    >>> resident = ResidentImages(train, "cuda")  # doctest: +SKIP
    >>> episode = sampler.episode_batch(resident, 0)  # doctest: +SKIP
"""

from __future__ import annotations

import torch
from torch import Tensor

from relgraph.data.base import FewShotDataset, InMemoryDataset

__all__ = ["ResidentImages", "resident_images"]


class ResidentImages(FewShotDataset):
    """``dataset``'s stored images on ``device``, read by one gather per batch.

    Same examples, classes, names and alphabets as ``dataset``; :meth:`get_batch` returns what
    ``dataset.get_batch`` returns, on ``device``.

    Args:
        dataset: a view of an :class:`~relgraph.data.base.InMemoryDataset` (its
            :meth:`~relgraph.data.base.FewShotDataset.storage_index` is not ``None``).
        device: where to hold the images; default: where they are (no copy).

    Attributes:
        images (Tensor): the stored tensor ``[N, c, h, w]`` (uint8 or float) on ``device``,
            shared by every view of the same base dataset's rows.
        dataset (FewShotDataset): the wrapped dataset.

    Shapes:
        ``get_batch(indices [m])`` (any device) ``-> [m, c, h, w]`` float on ``device``

    Raises:
        ValueError: the dataset is not held in one tensor (files read on demand, text), or it
            rotates examples that cannot be rotated (feature vectors, non-square images).
    """

    def __init__(self, dataset: FewShotDataset, device: torch.device | str | None = None) -> None:
        everything = torch.arange(len(dataset))
        found = dataset.storage_index(everything)
        if found is None:
            raise ValueError(
                f"{type(dataset).__name__} is not held in one tensor (its examples are read on "
                "demand), so it cannot be made resident; read it with its own get_batch, or "
                "load it into an InMemoryDataset / TensorDataset first")
        base, _, turns = found
        super().__init__(dataset.targets, dataset.class_names, dataset.class_alphabets,
                         dataset.preprocessing)
        self.dataset = dataset
        self.base: InMemoryDataset = base
        self.device = torch.device(device) if device is not None else base.images.device
        self.images = base.images.to(self.device)
        self._rotates = bool(turns.any())
        if self._rotates:
            h, w = base.images.shape[-2:]
            what = None
            if "feature_shape" in base.preprocessing:
                what = "feature vectors"
            elif h != w and bool((turns % 2).any()):
                what = f"non-square images ({h}x{w}) turned by 90 or 270 degrees"
            if what is not None:
                raise ValueError(f"{type(dataset).__name__} rotates its examples, but they are "
                                 f"{what}: only square images can turn by 90 degrees")

    def load(self, index: int) -> Tensor:
        return self.get_batch(torch.tensor([int(index)]))[0]

    def get_batch(self, indices: Tensor) -> Tensor:
        """Examples at ``indices``: ``[m] -> [m, c, h, w]`` float on :attr:`device`."""
        found = self.dataset.storage_index(indices.reshape(-1).cpu())
        assert found is not None  # checked at construction
        _, rows, turns = found
        x = self.images.index_select(0, rows.to(self.device, non_blocking=True))
        if self._rotates:  # turns live on the CPU: grouping them does not wait for the device
            for k in (1, 2, 3):
                where = torch.nonzero(turns == k).reshape(-1)
                if where.numel():
                    where = where.to(self.device, non_blocking=True)
                    x.index_copy_(0, where, torch.rot90(x.index_select(0, where), k,
                                                        dims=(-2, -1)))
        return self.base.read_rows(x)

    def storage_index(self, indices: Tensor) -> tuple[InMemoryDataset, Tensor, Tensor] | None:
        return self.dataset.storage_index(indices)

    def __repr__(self) -> str:
        return f"ResidentImages({self.dataset!r}, device={self.device})"


def resident_images(dataset: FewShotDataset, device: torch.device | str | None = None
                    ) -> FewShotDataset:
    """``ResidentImages(dataset, device)`` when ``dataset`` is held in one tensor, else
    ``dataset`` itself (its own ``get_batch`` then reads it, e.g. from files)."""
    if isinstance(dataset, ResidentImages):
        wanted = torch.device(device) if device is not None else dataset.device
        if wanted.type == dataset.device.type and wanted.index in (None, dataset.device.index):
            return dataset  # already there ("cuda" names the current device)
    if dataset.storage_index(torch.zeros(0, dtype=torch.long)) is None:
        return dataset
    return ResidentImages(dataset, device)
