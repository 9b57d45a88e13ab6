"""Layers of the Distribution Propagation Graph Network (Yang et al., CVPR 2020).

Dense and batched over episodes: edges ``[b, n, m]`` from every node ``i`` to the first ``m``
nodes (``m = n``: the full graph; ``m`` = the context nodes: an inductive graph).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from relgraph.nn.edge_labeling import apply_rows, mlp_layers
from relgraph.nn.precision import compute_dtype

__all__ = ["PairSimilarity", "SetPairSimilarity", "PointToDistribution", "DistributionToPoint",
           "normalised_edge_update"]

_TINY = 1e-12
_EDGE_EPS = 1e-6


def normalised_edge_update(sim: Tensor, previous: Tensor) -> Tensor:
    """The edge update of DPGN (and of the edge-labeling GNN's similarity channel).

    .. math::
        \\bar e_{ij} = \\frac{s_{ij} e_{ij}}{\\sum_{k \\ne i} s_{ik} e_{ik}}
            \\sum_{k \\ne i} e_{ik}, \\qquad \\bar e_{ii} = 1, \\qquad
        e'_{ij} = \\frac{\\bar e_{ij} + \\epsilon}{\\sum_k (\\bar e_{ik} + \\epsilon)}

    Args:
        sim: ``[b, n, m]`` new similarities :math:`s_{ij} \\in (0, 1)`.
        previous: ``[b, n, m]`` previous edges :math:`e_{ij}` (0 where no message flows).

    Shapes:
        ``[b, n, m], [b, n, m] -> [b, n, m]``
    """
    n, m = sim.shape[1:]
    off_diag = 1.0 - torch.eye(n, m, device=sim.device, dtype=sim.dtype)
    e = previous * off_diag
    upd = sim * e
    upd = upd / upd.sum(-1, keepdim=True).clamp_min(_TINY) * e.sum(-1, keepdim=True)
    upd = upd + (1.0 - off_diag) + _EDGE_EPS
    return upd / upd.sum(-1, keepdim=True).clamp_min(_TINY)


class PairSimilarity(nn.Module):
    """:math:`s_{ij} = \\sigma(f((v_i - v_j)^2))` for every node ``i`` and the first ``m``
    nodes ``j``, with ``f`` ``Linear -> BatchNorm -> LeakyReLU`` per hidden width and a last
    ``Linear`` to one channel (the point similarity of DPGN).

    Args:
        in_dim: node feature size.
        hidden: hidden widths of ``f``.

    Shapes:
        ``forward(x [b, n, d], m) -> [b, n, m]``
    """

    def __init__(self, in_dim: int, hidden: Sequence[int] = (96,)) -> None:
        super().__init__()
        hidden = tuple(hidden)
        self.mlp = nn.Sequential(*mlp_layers((in_dim, *hidden)),
                                 nn.Linear(hidden[-1] if hidden else in_dim, 1))

    def forward(self, x: Tensor, m: int) -> Tensor:
        """Point similarities of every node to the first ``m``:
        ``x [b, n, d], m -> [b, n, m]`` in ``(0, 1)``."""
        diff = (x.unsqueeze(2) - x[:, :m].unsqueeze(1)).pow(2)  # [b, n, m, d]
        return torch.sigmoid(apply_rows(self.mlp, diff).squeeze(-1).to(compute_dtype(x)))


class SetPairSimilarity(nn.Module):
    """The distribution similarity of DPGN, for distributions over any number of supports.

    The paper's MLP reads :math:`(v^d_i - v^d_j)^2 \\in \\mathbb R^{NK}`, which ties a model to
    one episode shape. Here the squared differences :math:`\\delta_{ijk}` over the support
    coordinates ``k`` are pooled into three statistics (their mean, their maximum and the mean
    of their square roots), invariant to the order of the supports and defined for any ``NK``,
    and an MLP ``f`` reads them: :math:`s_{ij} = \\sigma(f([\\operatorname{mean}_k
    \\delta_{ijk}, \\max_k \\delta_{ijk}, \\operatorname{mean}_k \\sqrt{\\delta_{ijk}}]))`.
    The cost is that of the differences, ``[b, n, m, s]``, not ``s`` times a hidden width.

    Args:
        hidden: width of ``f``'s hidden layer.

    Shapes:
        ``forward(v [b, n, s], m) -> [b, n, m]``
    """

    def __init__(self, hidden: int = 32) -> None:
        super().__init__()
        self.mlp = nn.Sequential(*mlp_layers((3, hidden)), nn.Linear(hidden, 1))

    def forward(self, v: Tensor, m: int) -> Tensor:
        """Distribution similarities of every node to the first ``m``:
        ``v [b, n, s], m -> [b, n, m]`` in ``(0, 1)``."""
        diff = (v.unsqueeze(2) - v[:, :m].unsqueeze(1)).pow(2)  # [b, n, m, s]
        pooled = torch.stack([diff.mean(-1), diff.amax(-1),
                              diff.clamp_min(1e-12).sqrt().mean(-1)], dim=-1)
        return torch.sigmoid(apply_rows(self.mlp, pooled).squeeze(-1).to(compute_dtype(v)))


class PointToDistribution(nn.Module):
    """P2D: a node's new distribution over the supports from its point edges to them and its
    old distribution.

    The paper's ``FC([e^p_{i,1..NK}, v^d_i]) -> ReLU`` in its support-permutation-equivariant
    form, for any number of supports: every support coordinate ``k`` gets
    :math:`\\mathrm{ReLU}(a\\, e^p_{ik} + b\\, v^d_{ik} + c\\, \\bar e^p_i + d\\, \\bar v^d_i + e)`
    (bars: means over ``k``).

    Shapes:
        ``forward(point_edges [b, n, s], v [b, n, s]) -> [b, n, s]``
    """

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 1)

    def forward(self, point_edges: Tensor, v: Tensor) -> Tensor:
        """New distributions over the supports:
        ``point_edges [b, n, s], v [b, n, s] -> [b, n, s]``."""
        feats = torch.stack([point_edges, v,
                             point_edges.mean(-1, keepdim=True).expand_as(v),
                             v.mean(-1, keepdim=True).expand_as(v)], dim=-1)
        return torch.relu(self.lin(feats).squeeze(-1))


class DistributionToPoint(nn.Module):
    """D2P: aggregate the point features over the distribution edges, then an MLP of
    ``[aggregate, own features]`` (``Linear -> BatchNorm -> LeakyReLU`` per width).

    Shapes:
        ``forward(x [b, n, d], edges [b, n, m]) -> [b, n, d_out]``
    """

    def __init__(self, in_dim: int, dims: Sequence[int]) -> None:
        super().__init__()
        self.mlp = nn.Sequential(*mlp_layers((2 * in_dim, *dims)))

    def forward(self, x: Tensor, edges: Tensor) -> Tensor:
        """New point features: ``x [b, n, d], edges [b, n, m] -> [b, n, d_out]``."""
        m = edges.shape[2]
        n = x.shape[1]
        off_diag = 1.0 - torch.eye(n, m, device=x.device, dtype=edges.dtype)
        w = edges * off_diag
        w = w / w.sum(-1, keepdim=True).clamp_min(_TINY)
        agg = torch.einsum("bij,bjd->bid", w.to(x.dtype), x[:, :m])
        return apply_rows(self.mlp, torch.cat([agg, x], dim=-1))
