"""The :class:`Episode`: a batch of ``b`` N-way K-shot tasks with their queries."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor

__all__ = ["Episode"]


@dataclass(frozen=True)
class Episode:
    """A batch of ``b`` few-shot episodes of the same shape.

    Episodes drawn by :class:`~relgraph.data.EpisodeSampler` are ordered class by class:
    support ``s`` has label ``s // k_shot``, query ``j`` has label ``j // n_query``. Methods
    must rely on ``support_labels`` rather than on that order: a user's own support set (as in
    ``relgraph predict``) may be unbalanced, in which case ``support`` holds more than
    ``n_way * k_shot`` examples and ``k_shot`` is the smallest class's count. Labels inside an
    episode are ``0..n_way-1``; ``class_ids[e, l]`` is the dataset class behind label ``l`` of
    episode ``e``.

    Attributes:
        support: ``[b, n_way * k_shot, *x]`` inputs (images ``[c, h, w]`` or features ``[d]``).
        support_labels: ``[b, n_way * k_shot]`` long, in ``0..n_way-1``.
        query: ``[b, n_way * n_query, *x]``.
        query_labels: ``[b, n_way * n_query]`` long.
        class_ids: ``[b, n_way]`` long, the original dataset classes.
        n_way: classes per episode.
        k_shot: support examples per class.
        unlabelled: ``[b, u, *x]`` unlabelled examples (semi-supervised episodes), or
            ``None``. Their labels are never shown to a model.
        unlabelled_labels: ``[b, u]`` long, the hidden labels of ``unlabelled``
            (``0..n_way-1``, or -1 for a distractor class not in the episode), for analysis
            only; ``None`` without unlabelled examples.
    """

    support: Tensor
    support_labels: Tensor
    query: Tensor
    query_labels: Tensor
    class_ids: Tensor
    n_way: int
    k_shot: int
    unlabelled: Tensor | None = None
    unlabelled_labels: Tensor | None = None

    def __post_init__(self) -> None:
        b = self.support.shape[0]
        for f in ("support_labels", "query", "query_labels", "class_ids"):
            if getattr(self, f).shape[0] != b:
                raise ValueError(f"Episode.{f} has batch size {getattr(self, f).shape[0]}, "
                                 f"support has {b}")
        if self.support.shape[1] < self.n_way * self.k_shot:
            raise ValueError(f"support has {self.support.shape[1]} examples per episode, "
                             f"expected n_way * k_shot = {self.n_way * self.k_shot}")
        if self.support_labels.shape != self.support.shape[:2]:
            raise ValueError(f"support_labels shape {tuple(self.support_labels.shape)} does not "
                             f"match support {tuple(self.support.shape[:2])}")
        if self.query_labels.shape != self.query.shape[:2]:
            raise ValueError(f"query_labels shape {tuple(self.query_labels.shape)} does not "
                             f"match query {tuple(self.query.shape[:2])}")
        if self.class_ids.shape[1] != self.n_way:
            raise ValueError(f"class_ids has {self.class_ids.shape[1]} columns, n_way={self.n_way}")
        if self.unlabelled is not None:
            if self.unlabelled.shape[0] != b or self.unlabelled.shape[2:] != self.support.shape[2:]:
                raise ValueError(f"unlabelled has shape {tuple(self.unlabelled.shape)}; expected "
                                 f"[{b}, u, {', '.join(map(str, self.support.shape[2:]))}] like "
                                 "the supports")
            if self.unlabelled_labels is not None and \
                    self.unlabelled_labels.shape != self.unlabelled.shape[:2]:
                raise ValueError(f"unlabelled_labels shape {tuple(self.unlabelled_labels.shape)} "
                                 f"does not match unlabelled {tuple(self.unlabelled.shape[:2])}")

    @property
    def batch_size(self) -> int:
        """Number of episodes ``b``."""
        return int(self.support.shape[0])

    @property
    def n_query(self) -> int:
        """Queries per class (``query.shape[1] // n_way``)."""
        return int(self.query.shape[1]) // self.n_way

    @property
    def device(self) -> torch.device:
        """Device of the tensors."""
        return self.support.device

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Episode:
        """A copy with every tensor on ``device``."""
        moved = {f.name: getattr(self, f.name).to(device, non_blocking=non_blocking)
                 for f in fields(self) if isinstance(getattr(self, f.name), Tensor)}
        return replace(self, **moved)

    def pin_memory(self) -> Episode:
        """A copy in pinned memory (called by ``DataLoader(pin_memory=True)``)."""
        pinned = {f.name: getattr(self, f.name).pin_memory()
                  for f in fields(self) if isinstance(getattr(self, f.name), Tensor)}
        return replace(self, **pinned)

    def __getitem__(self, index: int | slice) -> Episode:
        """Episodes ``index`` of the batch (an int keeps a batch dimension of 1)."""
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        sliced = {f.name: getattr(self, f.name)[index]
                  for f in fields(self) if isinstance(getattr(self, f.name), Tensor)}
        return replace(self, **sliced)

    @property
    def n_unlabelled(self) -> int:
        """Unlabelled examples per episode ``u`` (0 without any)."""
        return 0 if self.unlabelled is None else int(self.unlabelled.shape[1])

    def __repr__(self) -> str:
        extra = f", unlabelled={self.n_unlabelled}" if self.unlabelled is not None else ""
        return (f"Episode(b={self.batch_size}, n_way={self.n_way}, k_shot={self.k_shot}, "
                f"n_query={self.n_query}{extra}, x={tuple(self.support.shape[2:])}, "
                f"device={self.device})")
