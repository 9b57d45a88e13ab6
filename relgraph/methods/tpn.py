"""Transductive Propagation Networks (Liu, Lee, Park, Kim, Yang, Hwang & Yang, ICLR 2019)."""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from relgraph.graph.episode_graph import EpisodeGraph
from relgraph.graph.kernels import squared_euclidean
from relgraph.methods.base import cross_entropy, embedding_size, register_method
from relgraph.methods.head import RelationalHead
from relgraph.nn.precision import compute_dtype

__all__ = ["TPN", "knn_graph", "label_propagation"]

#: How the kernel reduces the squared differences over the embedding dimensions.
DISTANCES = ("mean", "sum")


def knn_graph(weights: Tensor, k: int) -> Tensor:
    """Keep each node's ``k`` largest edge weights (no self-loops), symmetrically: an edge
    stays when either end has the other among its ``k`` nearest.

    Shapes:
        ``[b, n, n] -> [b, n, n]``
    """
    n = weights.shape[-1]
    eye = torch.eye(n, dtype=torch.bool, device=weights.device)
    w = weights.masked_fill(eye, 0.0)
    k = min(k, n - 1)
    if k < 1:
        return torch.zeros_like(w)
    top = w.topk(k, dim=-1).indices
    keep = torch.zeros_like(w, dtype=torch.bool).scatter_(-1, top, True)
    return w * (keep | keep.transpose(1, 2)).to(w.dtype)


def label_propagation(weights: Tensor, seeds: Tensor, alpha: float) -> Tensor:
    """Closed-form label propagation (Zhou et al. 2004), batched over episodes.

    .. math:: F^* = (I - \\alpha S)^{-1} Y, \\qquad S = D^{-1/2} W D^{-1/2}

    with :math:`D` the degree matrix of ``weights``. One batched linear solve, no loop over
    episodes.

    Args:
        weights: ``[b, n, n]`` symmetric non-negative edge weights :math:`W`.
        seeds: ``[b, n, c]`` initial labels :math:`Y` (one-hot rows for labelled nodes, 0
            for the others).
        alpha: propagation strength in ``(0, 1)``.

    Shapes:
        ``[b, n, n], [b, n, c] -> [b, n, c]``
    """
    inv_sqrt = weights.sum(-1).clamp_min(1e-12).rsqrt()
    s = inv_sqrt.unsqueeze(-1) * weights * inv_sqrt.unsqueeze(-2)
    eye = torch.eye(weights.shape[-1], dtype=weights.dtype, device=weights.device)
    return torch.linalg.solve(eye - alpha * s, seeds)


@register_method("tpn")
class TPN(RelationalHead):
    """Transductive Propagation Network (Liu et al. 2019): learn the graph, propagate labels.

    Every node (supports, unlabelled examples and the whole query set) gets a learned scale
    :math:`\\sigma_i = g_\\phi(f(x_i))` (a small MLP on the embedding here; a small CNN on the
    feature map in the paper). The edge weights are a Gaussian kernel on the scaled
    embeddings, reduced to each node's ``k`` nearest neighbours (:func:`knn_graph`); labels
    spread from the supports in closed form (:func:`label_propagation`):

    .. math::
        W_{ij} = \\exp\\Big(-\\tfrac{1}{2d} \\big\\lVert \\tfrac{f(x_i)}{\\sigma_i}
            - \\tfrac{f(x_j)}{\\sigma_j} \\big\\rVert^2\\Big), \\qquad
        F^* = (I - \\alpha S)^{-1} Y

    ``distance="mean"`` divides the squared distance by the embedding's size ``d``, as the
    authors' code does (``((a - b) ** 2).mean``); the default ``"sum"`` is the formula above. On
    large unnormalised embeddings (Conv4 at 84 px: ``d = 1600``) summed distances start near
    2,000, every weight underflows to 0 and nothing propagates, so no gradient reaches the scale
    network or the backbone; training then warns and names ``distance="mean"``. Normalised
    embeddings (e.g. sentence encoders) suit the sum.

    The query logits are the rows of :math:`F^*` (the paper's softmax of :math:`F^*`); the
    loss is the cross-entropy over supports and queries, as in the paper.

    **Transductive**: a query's prediction depends on every query of its episode (the class
    balance of the query set is information too; evaluate also with unbalanced query sets).
    Unlabelled nodes of semi-supervised episodes join the graph like queries.

    Args:
        backbone: the encoder (``None``: the inputs are features).
        k: neighbours kept per node (default 20, the paper's).
        alpha: propagation strength :math:`\\alpha` (default 0.99, the paper's).
        scale_hidden: hidden width of the scale network :math:`g_\\phi` (default 64).
        embed_dim: embedding size; default ``backbone.out_dim``.
        distance: ``"sum"`` (default) or ``"mean"`` of the squared differences over the
            embedding's dimensions.

    Shapes:
        :meth:`relate`: graph ``x [b, n, d]`` -> logits ``[b, q, n_way]``.
    """

    transductive = True
    uses_unlabelled = True
    supports_augment = False

    def __init__(self, backbone: nn.Module | None, k: int = 20, alpha: float = 0.99,
                 scale_hidden: int = 64, embed_dim: int | None = None,
                 distance: str = "sum") -> None:
        super().__init__(backbone)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k (neighbours per node) must be an integer >= 1, got {k!r}")
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
        if scale_hidden < 1:
            raise ValueError(f"scale_hidden must be >= 1, got {scale_hidden}")
        if distance not in DISTANCES:
            raise ValueError(f"distance must be one of {', '.join(DISTANCES)}, got {distance!r}")
        d = embedding_size(self.backbone, embed_dim)
        self.distance = distance
        self._divisor = float(d) if distance == "mean" else 1.0
        self._checked = False  # the first training episode's weights, for the warning
        self.k = k
        self.alpha = float(alpha)
        self.scale = nn.Sequential(nn.Linear(d, scale_hidden), nn.ReLU(inplace=True),
                                   nn.Linear(scale_hidden, 1))

    def propagate(self, graph: EpisodeGraph) -> Tensor:
        """Propagated label scores :math:`F^*` of every node: ``[b, n, n_way]``."""
        x = graph.x.to(compute_dtype(graph.x))
        sigma = F.softplus(self.scale(x)) + 1e-3  # [b, n, 1]
        z = x / sigma
        distances = squared_euclidean(z) / self._divisor
        weights = knn_graph(torch.exp(-0.5 * distances), self.k)
        if self.training and not self._checked:
            self._checked = True
            if not bool(weights.any()):
                typical = float(distances.detach().median())
                warnings.warn(
                    "TPN: every edge weight underflows to 0 (squared distances of the scaled "
                    f"embeddings are about {typical:.3g}): no label propagates and no gradient "
                    "reaches the scale network or the backbone; for large unnormalised "
                    "embeddings set method_args.distance=mean (the authors' kernel)",
                    stacklevel=2)
        seeds = graph.node_labels("zero") * graph.node_weights.unsqueeze(-1)
        return label_propagation(weights, seeds.to(x.dtype), self.alpha)

    def relate(self, graph: EpisodeGraph) -> Tensor:
        return self.propagate(graph)[:, graph.query_start:]

    def relate_loss(self, graph: EpisodeGraph, query_labels: Tensor) -> tuple[Tensor, Tensor]:
        """Cross-entropy of the propagated scores of supports and queries (the paper's), and
        the queries' propagated scores as the logits.

        Shapes:
            graph, ``query_labels [b, q]`` -> ``([], [b, q, n_way])``
        """
        scores = self.propagate(graph)
        logits = scores[:, graph.query_start:]
        support = scores[:, :graph.n_support]
        loss = (cross_entropy(torch.cat([support, logits], dim=1),
                              torch.cat([graph.support_labels, query_labels], dim=1)))
        return loss, logits

    def extra_repr(self) -> str:
        return (f"k={self.k}, alpha={self.alpha}, distance={self.distance!r}, "
                f"{super().extra_repr()}")
