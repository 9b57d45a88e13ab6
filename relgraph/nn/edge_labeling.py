"""The layers of the edge-labeling GNN (Kim et al., CVPR 2019): node and edge updates.

Dense and batched over episodes: node features ``x [b, n, d]``, two-channel edge features
``edges [b, n, m, 2]`` (similarity, dissimilarity) from every node ``i`` to the first ``m``
nodes (``m = n``: the full graph; ``m = s``: the supports, an inductive graph).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from einops import einsum, rearrange
from torch import Tensor, nn

from relgraph.nn.pairwise import pair_mlp
from relgraph.nn.precision import compute_dtype

__all__ = ["NodeUpdate", "EdgeUpdate", "pair_index", "mlp_layers", "apply_rows"]

_TINY = 1e-12  # guards the L1 normalisations of empty rows
_EDGE_EPS = 1e-6  # added before the final L1 normalisation of an edge (reference code)


def pair_index(n: int, m: int, device: torch.device | None = None) -> tuple[Tensor, Tensor]:
    """The unordered node pairs of an ``n x m`` edge block (senders ``j < m``), each once.

    Returns ``pairs [2, P]``, the pairs ``(i, j)`` with ``j < m`` and ``i > j`` (every other
    off-diagonal entry is the mirror ``(j, i)`` of one of them), and ``lookup [n, m]``, the
    pair of every entry (``P``, one past the last pair, on the diagonal). A symmetric pair
    function evaluated on ``pairs`` is expanded to the block by ``values[..., lookup]``.

    Shapes:
        ``-> [2, P], [n, m]`` with ``P = m (m - 1) / 2 + (n - m) m``
    """
    pairs = torch.tril_indices(n, m, offset=-1, device=device)
    table = torch.full((n, m), pairs.shape[1], dtype=torch.long, device=device)
    table[pairs[0], pairs[1]] = torch.arange(pairs.shape[1], device=device)
    rows = torch.arange(n, device=device).unsqueeze(1)
    cols = torch.arange(m, device=device).unsqueeze(0)
    lookup = table[torch.maximum(rows, cols), torch.minimum(rows, cols)]
    return pairs, lookup  # the diagonal keeps the default P


def mlp_layers(dims: Sequence[int]) -> list[nn.Module]:
    """``Linear -> BatchNorm -> LeakyReLU`` per width (the reference's 1x1 convolutions).

    Applied to ``[rows, d]`` matrices. LeakyReLU runs in place: BatchNorm's backward needs its
    input, not its output, so this keeps one activation per layer instead of two.
    """
    layers: list[nn.Module] = []
    for a, h in zip(dims[:-1], dims[1:], strict=True):
        layers += [nn.Linear(a, h, bias=False), nn.BatchNorm1d(h),
                   nn.LeakyReLU(0.01, inplace=True)]
    return layers


def apply_rows(module: nn.Module, x: Tensor) -> Tensor:
    """Apply ``module`` to the last dimension of ``x [..., d]`` as one ``[rows, d]`` matrix."""
    out = module(x.reshape(-1, x.shape[-1]))
    return out.reshape(*x.shape[:-1], out.shape[-1])


class NodeUpdate(nn.Module):
    """Edge-to-node step: aggregate neighbours by both edge channels, then the MLP :math:`f_v`.

    .. math::
        v'_i = f_v\\Big(\\big[\\textstyle\\sum_{j} \\tilde e_{ij1} v_j \\,;\\,
        \\sum_{j} \\tilde e_{ij2} v_j \\,;\\, v_i\\big]\\Big), \\qquad
        \\tilde e_{ijc} = \\frac{e_{ijc}}{\\sum_k e_{ikc}}

    Args:
        in_dim: node feature size ``d``.
        dims: widths of :math:`f_v` (``Linear -> BatchNorm -> LeakyReLU`` each).
        dropout: dropout after :math:`f_v` (training only).

    Shapes:
        ``x [b, n, d], edges [b, n, m, 2]`` (self-loops already removed) -> ``[b, n, d_out]``
    """

    def __init__(self, in_dim: int, dims: Sequence[int], dropout: float = 0.0) -> None:
        super().__init__()
        layers = mlp_layers((3 * in_dim, *dims))
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: Tensor, edges: Tensor) -> Tensor:
        """New node features: ``x [b, n, d], edges [b, n, m, 2] -> [b, n, d_out]``."""
        m = edges.shape[2]
        weights = edges / edges.sum(dim=2, keepdim=True).clamp_min(_TINY)  # per channel
        agg = einsum(weights.to(x.dtype), x[:, :m], "b i j c, b j d -> b i c d")
        return apply_rows(self.mlp,
                          torch.cat([rearrange(agg, "b i c d -> b i (c d)"), x], dim=-1))


class EdgeUpdate(nn.Module):
    """Node-to-edge step: multiplicative, row-normalised update of both edge channels.

    With :math:`s_{ij} = \\sigma(f_e(|v_i - v_j|))`, each channel is rescaled by
    :math:`s_{ij}` (similarity) or :math:`1 - s_{ij}` (dissimilarity), keeping each row's
    mass; self-loops become ``[1, 0]``; each edge is L1-normalised (see
    :class:`~relgraph.methods.EdgeLabelingGNN` for the formulas).

    Args:
        in_dim: node feature size ``d``.
        hidden: hidden widths of :math:`f_e` (a last ``Linear`` to one channel follows).

    The similarity :math:`f_e(|v_i - v_j|)` is symmetric, so it is evaluated once per
    unordered pair (see :func:`pair_index`): half the work of all ``n x n`` ordered pairs in
    a full graph. In training mode BatchNorm therefore normalises over the unordered pairs.
    It runs as :func:`~relgraph.nn.pairwise.pair_mlp` (in eval mode: blocks of rows in cache,
    every layer of a block at once).

    Shapes:
        ``x [b, n, d], edges [b, n, m, 2], off_diag [n, m, 1], pairs [2, P], lookup [n, m]``
        -> ``[b, n, m, 2]``
    """

    def __init__(self, in_dim: int, hidden: Sequence[int]) -> None:
        super().__init__()
        self.mlp = nn.Sequential(*mlp_layers((in_dim, *hidden)),
                                 nn.Linear(hidden[-1] if hidden else in_dim, 1))

    def similarity(self, x: Tensor, pairs: Tensor, lookup: Tensor) -> Tensor:
        """:math:`s_{ij} = \\sigma(f_e(|v_i - v_j|))` on the block, 0 on the diagonal.

        Shapes:
            ``x [b, n, d], pairs [2, P], lookup [n, m] -> [b, n, m]``
        """
        b, n = x.shape[:2]
        rows = (pairs.unsqueeze(1) + n * torch.arange(b, device=x.device).view(1, b, 1))
        out = pair_mlp(self.mlp, x.reshape(b * n, -1), rows.flatten(1))  # [b * P, 1]
        sim = torch.sigmoid(out.reshape(b, -1).to(compute_dtype(x)))
        sim = torch.cat([sim, sim.new_zeros(b, 1)], dim=1)
        return sim.index_select(1, lookup.flatten()).reshape(sim.shape[0], *lookup.shape)

    def forward(self, x: Tensor, edges: Tensor, off_diag: Tensor, pairs: Tensor,
                lookup: Tensor) -> Tensor:
        """New edge features: ``x [b, n, d], edges [b, n, m, 2], off_diag [n, m, 1],
        pairs [2, P], lookup [n, m] -> [b, n, m, 2]``."""
        sim = self.similarity(x, pairs, lookup).unsqueeze(-1)  # [b, n, m, 1]
        e = edges * off_diag
        upd = torch.cat([sim, 1.0 - sim], dim=-1) * e
        upd = upd / upd.sum(dim=2, keepdim=True).clamp_min(_TINY) * e.sum(dim=2, keepdim=True)
        self_loop = (1.0 - off_diag) * off_diag.new_tensor([1.0, 0.0])  # [n, m, 2]
        upd = upd + self_loop + _EDGE_EPS
        return upd / upd.sum(dim=-1, keepdim=True)
