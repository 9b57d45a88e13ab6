"""Similarity kernels over all node pairs of all episodes at once: ``[b, n, d] -> [b, n, m]``.

No Python loop over nodes, queries or episodes. The learned kernel is evaluated in chunks of
rows with activation checkpointing, so its peak memory grows with ``b * chunk * n * hidden``
instead of ``b * n^2 * hidden``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from einops import einsum
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from relgraph.nn.pairwise import pair_mlp, supports_fused, symmetric_pairs
from relgraph.nn.precision import compute_dtype

__all__ = ["squared_euclidean", "cosine_similarity", "LearnedKernel"]

#: In training mode, :meth:`LearnedKernel.symmetric` evaluates distinct pairs only when they
#: are at most this share of the block (half on a full graph).
_SYMMETRIC_SHARE = 0.7


def squared_euclidean(x: Tensor, y: Tensor | None = None) -> Tensor:
    """Squared Euclidean distances between all pairs, batched over episodes.

    .. math:: D_{bij} = \\lVert x_{bi} - y_{bj} \\rVert^2

    Computed as :math:`\\lVert x\\rVert^2 - 2 x \\cdot y + \\lVert y\\rVert^2` with one batched
    matrix product, clamped at 0, in float32 (float64 for float64 inputs) even under autocast:
    in float16 or bfloat16 the cross term cancels against the norms and large distances lose
    their digits.

    Args:
        x: ``[b, n, d]``.
        y: ``[b, m, d]``; defaults to ``x``.

    Shapes:
        ``[b, n, d], [b, m, d] -> [b, n, m]``
    """
    y = x if y is None else y
    _check(x, y)
    with _full_precision(x):
        x, y = x.to(compute_dtype(x)), y.to(compute_dtype(x))
        xx = x.pow(2).sum(-1, keepdim=True)
        yy = y.pow(2).sum(-1).unsqueeze(1)
        return (xx - 2 * einsum(x, y, "b i d, b j d -> b i j") + yy).clamp_min_(0)


def cosine_similarity(x: Tensor, y: Tensor | None = None, eps: float = 1e-8) -> Tensor:
    """Cosine similarity between all pairs, batched over episodes.

    .. math:: S_{bij} = \\frac{x_{bi} \\cdot y_{bj}}{\\max(\\lVert x_{bi}\\rVert
              \\lVert y_{bj}\\rVert, \\epsilon)}

    Computed in float32 (float64 for float64 inputs), also under autocast.

    Shapes:
        ``[b, n, d], [b, m, d] -> [b, n, m]``
    """
    y = x if y is None else y
    _check(x, y)
    with _full_precision(x):
        x, y = x.to(compute_dtype(x)), y.to(compute_dtype(x))
        xn = x / x.norm(dim=-1, keepdim=True).clamp_min(eps)
        yn = y / y.norm(dim=-1, keepdim=True).clamp_min(eps)
        return einsum(xn, yn, "b i d, b j d -> b i j")


def _full_precision(x: Tensor) -> torch.autocast:
    """Autocast switched off on ``x``'s device: the kernels' products run in their inputs' type."""
    return torch.autocast(x.device.type, enabled=False)


def _check(x: Tensor, y: Tensor) -> None:
    if x.dim() != 3 or y.dim() != 3:
        raise ValueError(f"kernels expect [b, n, d] inputs, got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")
    if x.shape[0] != y.shape[0] or x.shape[-1] != y.shape[-1]:
        raise ValueError(f"batch and feature sizes must match, got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")


class LearnedKernel(nn.Module):
    """A learned kernel: an MLP on the absolute difference of every pair of nodes.

    .. math:: K_{bij} = \\mathrm{MLP}(\\lvert x_{bi} - x_{bj} \\rvert)

    as in the GNN of Garcia & Bruna (2018) and the edge-labeling GNN of Kim et al. (2019). The
    MLP acts on the last dimension (the papers' 1x1 convolutions). Rows are processed in chunks
    of ``chunk`` nodes; when gradients are needed each chunk is checkpointed (its hidden
    activations are recomputed in the backward pass), so the memory held for backward is
    ``b * n^2 * out`` instead of ``b * n^2 * hidden``.

    Args:
        in_dim: node feature size ``d``.
        hidden: hidden sizes of the MLP, e.g. ``(96, 96)``.
        out_dim: channels of the kernel output (1 for a scalar similarity).
        norm: add BatchNorm over the pair features after each hidden layer (as the papers).
        chunk: rows per chunk (``None``: all rows at once).

    Shapes:
        ``forward(x [b, n, d], y [b, m, d] = x) -> [b, n, m, out_dim]``
    """

    def __init__(self, in_dim: int, hidden: Sequence[int] = (96, 96), out_dim: int = 1,
                 norm: bool = True, chunk: int | None = 64) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = in_dim
        for h in hidden:
            layers.append(nn.Linear(prev, h, bias=not norm))
            if norm:
                layers.append(_PairBatchNorm(h))
            layers.append(nn.LeakyReLU(0.01))
            prev = h
        layers.append(nn.Linear(prev, out_dim))
        self.mlp = nn.Sequential(*layers)
        self.chunk = chunk
        self.out_dim = out_dim

    def _rows(self, xi: Tensor, y: Tensor) -> Tensor:
        return self.mlp((xi.unsqueeze(2) - y.unsqueeze(1)).abs())

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """The kernel of every pair: ``x [b, n, d], y [b, m, d] = x -> [b, n, m, out_dim]``."""
        y = x if y is None else y
        _check(x, y)
        n = x.shape[1]
        has_bn = any(isinstance(m, _PairBatchNorm) for m in self.mlp)
        if self.chunk is None or n <= self.chunk or (has_bn and self.training):
            # BatchNorm in training mode needs the statistics of all pairs at once
            return self._rows(x, y)
        parts = []
        for start in range(0, n, self.chunk):
            xi = x[:, start:start + self.chunk]
            if torch.is_grad_enabled() and (xi.requires_grad or y.requires_grad):
                parts.append(checkpoint(self._rows, xi, y, use_reentrant=False))
            else:
                parts.append(self._rows(xi, y))
        return torch.cat(parts, dim=1)

    def symmetric(self, x: Tensor, senders: Tensor) -> Tensor:
        """``self(x, x[:, senders])``, computing each unordered pair once.

        The kernel is symmetric, :math:`K_{bij} = K_{bji}`, so the block of pairs ``(i, j)``
        with ``j`` a sender holds one distinct value per unordered pair (and one for the whole
        diagonal, :math:`\\mathrm{MLP}(0)`): about half the work when every node sends. In
        training mode BatchNorm normalises with the statistics of the whole block (a pair
        counted twice when both ends send, the diagonal once per entry), so values, gradients
        and running statistics are those of ``self(x, x[:, senders])`` up to float rounding
        (see :func:`~relgraph.nn.pairwise.pair_mlp` and
        :func:`~relgraph.nn.pairwise.symmetric_pairs`). Falls back to ``self(x, x[:, senders])``
        where the fast path does not apply (see :func:`~relgraph.nn.pairwise.use_fused`), and in
        training mode when the distinct pairs are more than 70% of the block (few senders).

        Args:
            x: ``[b, n, d]`` node features.
            senders: ``[n]`` bool, the columns of the block (``m`` of them).

        Shapes:
            ``x [b, n, d], senders [n] -> [b, n, m, out_dim]``
        """
        if x.dim() != 3 or senders.shape != x.shape[1:2] or senders.dtype != torch.bool:
            raise ValueError(f"expected x [b, n, d] and senders [n] bool, got "
                             f"{tuple(x.shape)} and {tuple(senders.shape)} {senders.dtype}")
        b, n, d = x.shape
        m = int(senders.sum())
        distinct = m * (m - 1) // 2 + (n - m) * m + 1  # rows of symmetric_pairs per graph
        batch_norm = self.training and any(isinstance(mod, nn.BatchNorm1d) for mod in self.mlp)
        if not supports_fused(self.mlp, x) or (batch_norm and distinct > _SYMMETRIC_SHARE * n * m):
            # training with few repeated pairs (an inductive block): the blocked backward pass
            # costs more than the pairs it saves (experiments/bench_pair_mlp.py)
            return self(x, x[:, senders])
        pairs, counts, lookup = symmetric_pairs(senders, b)
        out = pair_mlp(self.mlp, x.reshape(b * n, d), pairs, counts)  # [R, out]
        return out[lookup]  # [b, n, m, out]


class _PairBatchNorm(nn.BatchNorm1d):
    """BatchNorm over the channel (last) dimension of ``[b, n, m, c]`` pair features."""

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        return super().forward(x.reshape(-1, shape[-1])).reshape(shape)
