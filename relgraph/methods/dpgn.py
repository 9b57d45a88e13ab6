"""Distribution Propagation Graph Network (Yang, Li, Zhang, Zhou, Zhou & Liu, CVPR 2020)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from relgraph.graph.classes import class_aggregate
from relgraph.graph.episode_graph import EpisodeGraph
from relgraph.methods.base import embedding_size, register_method
from relgraph.methods.head import RelationalHead
from relgraph.nn.dpgn import (
    DistributionToPoint,
    PairSimilarity,
    PointToDistribution,
    SetPairSimilarity,
    normalised_edge_update,
)
from relgraph.nn.precision import compute_dtype

__all__ = ["DPGN"]

_EPS_LOG = 1e-6


@register_method("dpgn")
class DPGN(RelationalHead):
    """Distribution Propagation Graph Network (Yang et al. 2020): a point graph and a
    distribution graph, updated in alternation over generations.

    Every node ``i`` (supports, unlabelled nodes, queries) has point features
    :math:`v^p_i` (the embedding) and a distribution :math:`v^d_i` over the ``s`` labelled
    supports (labelled nodes: 1 for the supports of their class; the others: uniform). Both
    graphs start from the support labels' edges (1 same class, 0 different, 0.5 where a query
    or unlabelled node is involved). Generation ``l``:

    .. math::
        e^p_{ij,l} &= \\operatorname{upd}\\big(\\sigma(f^p_l((v^p_{i,l-1} - v^p_{j,l-1})^2)),
            e^d_{ij,l-1}\\big) \\\\
        v^d_{i,l} &= \\mathrm{P2D}\\big(e^p_{i,1..s,l},\\, v^d_{i,l-1}\\big) \\\\
        e^d_{ij,l} &= \\operatorname{upd}\\big(\\sigma(f^d_l((v^d_{i,l} - v^d_{j,l})^2)),
            e^p_{ij,l}\\big) \\\\
        v^p_{i,l} &= \\mathrm{D2P}\\big(\\textstyle\\sum_j e^d_{ij,l} v^p_{j,l-1},\\,
            v^p_{i,l-1}\\big)

    with ``upd`` the row-normalised update of :func:`~relgraph.nn.dpgn.normalised_edge_update`.
    A query's class scores are its last point edges summed over each class's supports (as in
    the edge-labeling GNN); the loss sums, over generations, the cross-entropies of the class
    scores from the point edges (weight ``point_loss_weight``) and from the distribution edges
    (``distribution_loss_weight``), on the queries.

    **Any episode shape.** The paper's P2D layer and distribution-similarity MLP read vectors
    of size ``NK`` (the number of supports), which ties a model to one episode shape; here
    both are their support-permutation-equivariant versions
    (:class:`~relgraph.nn.dpgn.PointToDistribution`, :class:`~relgraph.nn.dpgn.SetPairSimilarity`),
    so a model trained on 5-way 1-shot episodes also runs 5-shot and 20-way ones.

    **Transductive** (default, as the paper): all queries exchange messages. With
    ``transductive=False`` the edges run from every node to the context nodes only (supports
    and unlabelled nodes), so a query's prediction depends on the context and itself.

    **Model selection**: the reference code selects its model on the test split; relgraph's
    engine selects on validation classes only.

    **Cost**: the distribution similarity pools the ``[b, n, m, s]`` squared differences of
    the distributions before its MLP, so memory grows with ``n * m * s`` (an earlier version
    ran an MLP on every coordinate: ``[b, n, m, s, 32]`` values).

    Args:
        backbone: the encoder (``None``: the inputs are features).
        generations: number of generations ``L`` (default 3; the paper uses 5-6 on
            miniImageNet).
        point_hidden: hidden widths of the point similarity MLPs :math:`f^p_l` (default (96,)).
        distribution_hidden: width of the distribution similarity networks (default 32).
        node_dims: widths of the D2P MLPs; the last is the point feature size (default: the
            embedding size).
        point_loss_weight, distribution_loss_weight: loss weights (default 1.0 and 0.1).
        transductive: let queries exchange messages (default ``True``).
        embed_dim: embedding size; default ``backbone.out_dim``.

    Shapes:
        :meth:`relate`: graph ``x [b, n, d]`` -> logits (log-probabilities) ``[b, q, n_way]``.
    """

    uses_unlabelled = True
    supports_augment = False

    def __init__(self, backbone: nn.Module | None, generations: int = 3,
                 point_hidden: Sequence[int] = (96,), distribution_hidden: int = 32,
                 node_dims: Sequence[int] | None = None, point_loss_weight: float = 1.0,
                 distribution_loss_weight: float = 0.1, transductive: bool = True,
                 embed_dim: int | None = None) -> None:
        super().__init__(backbone)
        if isinstance(generations, bool) or not isinstance(generations, int) or generations < 1:
            raise ValueError(f"generations must be an integer >= 1, got {generations!r}")
        if point_loss_weight < 0 or distribution_loss_weight < 0:
            raise ValueError("point_loss_weight and distribution_loss_weight must be >= 0, got "
                             f"{point_loss_weight} and {distribution_loss_weight}")
        d = embedding_size(self.backbone, embed_dim)
        dims = tuple(node_dims) if node_dims is not None else (d,)
        if not dims or min(dims) < 1:
            raise ValueError(f"node_dims must be positive sizes, got {dims}")
        self.transductive = bool(transductive)
        self.point_loss_weight = float(point_loss_weight)
        self.distribution_loss_weight = float(distribution_loss_weight)
        self.point_sims = nn.ModuleList()
        self.p2d = nn.ModuleList()
        self.dist_sims = nn.ModuleList()
        self.d2p = nn.ModuleList()
        width = d
        for g in range(generations):
            self.point_sims.append(PairSimilarity(width, point_hidden))
            self.p2d.append(PointToDistribution())
            self.dist_sims.append(SetPairSimilarity(distribution_hidden))
            if g < generations - 1:  # the last generation's point features are not read
                self.d2p.append(DistributionToPoint(width, dims))
                width = dims[-1]

    def generations_of(self, graph: EpisodeGraph) -> list[tuple[Tensor, Tensor]]:
        """The point and distribution edges of every generation, ``L x ([b, n, m], [b, n, m])``
        (``m = n`` transductive, the context nodes otherwise)."""
        s = graph.n_support
        m = graph.num_nodes if self.transductive else graph.n_context
        x = graph.x
        dtype = compute_dtype(x)
        edges = graph.edge_labels()[:, :, :m].to(dtype)
        same = (graph.labels.unsqueeze(2) == graph.labels[:, :s].unsqueeze(1)).to(dtype)
        v = torch.where(graph.is_labelled.unsqueeze(-1), same, torch.full_like(same, 1.0 / s))
        out = []
        for g, (point_sim, p2d, dist_sim) in enumerate(zip(self.point_sims, self.p2d,
                                                            self.dist_sims, strict=True)):
            point = normalised_edge_update(point_sim(x, m), edges)
            v = p2d(point[:, :, :s], v)
            edges = normalised_edge_update(dist_sim(v, m), point)
            if g < len(self.d2p):
                x = self.d2p[g](x, edges)
            out.append((point, edges))
        return out

    @staticmethod
    def _log_probs(graph: EpisodeGraph, edges: Tensor) -> Tensor:
        to_support = edges[:, graph.query_start:, :graph.n_support]
        to_support = to_support.to(compute_dtype(to_support)).transpose(1, 2)
        scores = class_aggregate(to_support, graph.support_labels, graph.n_way,
                                 graph.support_weights.float()).transpose(1, 2)  # [b, q, n]
        probs = scores / scores.sum(-1, keepdim=True).clamp_min(1e-12)
        return torch.log(probs + _EPS_LOG)

    def relate(self, graph: EpisodeGraph) -> Tensor:
        return self._log_probs(graph, self.generations_of(graph)[-1][0])

    def relate_loss(self, graph: EpisodeGraph, query_labels: Tensor) -> tuple[Tensor, Tensor]:
        """Point and distribution losses of every generation, and the last generation's
        query log-probabilities (its point graph) as the logits.

        Shapes:
            graph, ``query_labels [b, q]`` -> ``([], [b, q, n_way])``
        """
        loss: Any = 0.0
        nll = nn.functional.nll_loss
        target = query_labels.reshape(-1)
        generations = self.generations_of(graph)
        for point, dist in generations:
            lp = self._log_probs(graph, point)
            ld = self._log_probs(graph, dist)
            loss = loss + self.point_loss_weight * nll(lp.reshape(-1, graph.n_way), target) \
                + self.distribution_loss_weight * nll(ld.reshape(-1, graph.n_way), target)
        return loss, self._log_probs(graph, generations[-1][0])

    def extra_repr(self) -> str:
        return (f"generations={len(self.p2d)}, point_loss_weight={self.point_loss_weight}, "
                f"distribution_loss_weight={self.distribution_loss_weight}, "
                f"{super().extra_repr()}")
