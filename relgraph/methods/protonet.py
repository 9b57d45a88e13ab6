"""Prototypical Networks (Snell, Swersky & Zemel, NeurIPS 2017)."""

from __future__ import annotations

from typing import Any

import torch
from einops import einsum
from torch import Tensor, nn

from relgraph.graph.classes import class_aggregate, prototypes
from relgraph.graph.episode_graph import EpisodeGraph
from relgraph.graph.kernels import cosine_similarity, squared_euclidean
from relgraph.methods.base import embedding_size, register_method
from relgraph.methods.head import RelationalHead

__all__ = ["ProtoNet", "prototypes", "soft_kmeans"]

DISTANCES = ("euclidean", "cosine")
UNLABELLED_MODES = ("ignore", "soft_kmeans", "soft_kmeans_distractor")


def soft_kmeans(protos: Tensor, unlabelled: Tensor, support: Tensor, labels: Tensor,
                n_way: int, weights: Tensor | None = None,
                distractor_log_r: Tensor | None = None) -> Tensor:
    """One soft k-means step of the prototypes with unlabelled examples (Ren et al. 2018).

    .. math::
        \\tilde z_{jc} = \\operatorname{softmax}_c\\big(-\\lVert \\tilde h_j - p_c\\rVert^2
            \\big), \\qquad
        \\tilde p_c = \\frac{\\sum_i w_i z_{ic} h_i + \\sum_j \\tilde z_{jc} \\tilde h_j}
            {\\sum_i w_i z_{ic} + \\sum_j \\tilde z_{jc}}

    with :math:`z_{ic}` the supports' one-hot labels. With ``distractor_log_r`` an extra
    cluster at the origin of learned radius :math:`r` takes the unlabelled examples of no
    episode class (their logit :math:`-\\lVert \\tilde h_j\\rVert^2 / r^2 - \\log r`); it is
    not a class the queries can be assigned to.

    Shapes:
        ``protos [b, n, d], unlabelled [b, u, d], support [b, s, d], labels [b, s]``
        -> ``[b, n, d]``
    """
    logits = -squared_euclidean(unlabelled, protos)  # [b, u, n]
    if distractor_log_r is not None:
        # 1 / r^2 as exp(-2 log r): no overflow for large radii (it underflows to 0)
        outlier = (-unlabelled.pow(2).sum(-1, keepdim=True) * (-2 * distractor_log_r).exp()
                   - distractor_log_r)
        logits = torch.cat([logits, outlier], dim=-1)
    z = logits.softmax(dim=-1)[..., :n_way]  # [b, u, n]
    sums = class_aggregate(support, labels, n_way, weights) + einsum(
        z, unlabelled, "b u n, b u d -> b n d")
    counts = class_aggregate(torch.ones_like(support[..., :1]), labels, n_way, weights)
    return sums / (counts + z.sum(dim=1).unsqueeze(-1)).clamp_min(1e-12)


@register_method("protonet")
class ProtoNet(RelationalHead):
    """Prototypical Networks (Snell et al. 2017): classify queries by distance to class means.

    On the episode graph, every class becomes one prototype node, the weighted mean of its
    support nodes (:func:`~relgraph.graph.prototypes`), and a query's logits are its kernel
    values to the prototypes:

    .. math::
        p(y = k \\mid x) = \\frac{\\exp(-d(f(x), c_k))}{\\sum_{k'} \\exp(-d(f(x), c_{k'}))}

    with :math:`d` the squared Euclidean distance (the paper's choice,
    :func:`~relgraph.graph.squared_euclidean`) or the scaled cosine distance
    :math:`-s \\cos(f(x), c_k)`. Inductive: each query is scored on its own.

    With ``augment``, generated examples join their class's support set and the prototypes
    are weighted means (a generated example weighing ``augment.weight``).

    **Semi-supervised episodes** (``unlabelled="soft_kmeans"``, Ren et al., ICLR 2018): the
    prototypes are refined by one soft k-means step over the episode's unlabelled nodes
    (:func:`soft_kmeans`); ``"soft_kmeans_distractor"`` adds a distractor cluster at the
    origin with a learned radius, for unlabelled examples of classes outside the episode.
    The refinement reads supports and unlabelled examples, never queries: the method stays
    inductive. ``"ignore"`` (default): unlabelled nodes are not used.

    Args:
        backbone: the encoder (``None``: the inputs are features).
        distance: ``"euclidean"`` (squared Euclidean, default) or ``"cosine"``.
        scale: logit scale for the cosine distance (learned if ``learn_scale``), default 10.
        learn_scale: learn the cosine scale.
        augment: generated support examples, e.g. ``{"hallucinator": "vae", "per_class": 5}``
            (see :doc:`/generative`); ``None`` (default): none.
        embed_dim: embedding size (for ``augment``); default ``backbone.out_dim``.
        unlabelled: ``"ignore"`` (default), ``"soft_kmeans"`` or ``"soft_kmeans_distractor"``.
        distractor_log_radius: initial :math:`\\log r` of the distractor cluster (learned in
            training; 0 by default, i.e. :math:`r = 1`). A model trained without unlabelled
            nodes never learns it: choose it on validation episodes instead
            (``experiments/distractor_radius_sweep.py``). Its logit
            :math:`-\\lVert h\\rVert^2 / r^2 - \\log r` tends to the constant :math:`-\\log r`
            for large :math:`r`: an unlabelled example goes to the distractor cluster when its
            squared distance to every prototype exceeds about :math:`\\log r`.

    Shapes:
        :meth:`relate`: graph ``x [b, n, d]`` -> logits ``[b, q, n_way]``.
    """

    def __init__(self, backbone: nn.Module | None, distance: str = "euclidean",
                 scale: float = 10.0, learn_scale: bool = False,
                 augment: dict[str, Any] | None = None, embed_dim: int | None = None,
                 unlabelled: str = "ignore", distractor_log_radius: float = 0.0) -> None:
        super().__init__(backbone)
        if distance not in DISTANCES:
            raise ValueError(f"distance must be 'euclidean' or 'cosine', got {distance!r}")
        if unlabelled not in UNLABELLED_MODES:
            raise ValueError(f"unlabelled must be one of {', '.join(UNLABELLED_MODES)}, got "
                             f"{unlabelled!r}")
        self.unlabelled = unlabelled
        self.uses_unlabelled = unlabelled != "ignore"
        if unlabelled == "soft_kmeans_distractor":
            self.distractor_log_r = nn.Parameter(torch.tensor(float(distractor_log_radius)))
        self.distance = distance
        scale_t = torch.tensor(float(scale))
        if learn_scale:
            self.scale = nn.Parameter(scale_t)
        else:
            self.register_buffer("scale", scale_t)
        if augment is not None:
            self.setup_augment(augment, embedding_size(self.backbone, embed_dim))

    def relate(self, graph: EpisodeGraph) -> Tensor:
        protos = prototypes(graph.support, graph.support_labels, graph.n_way,
                            graph.support_weights)
        if self.uses_unlabelled and graph.n_unlabelled:
            protos = soft_kmeans(protos, graph.unlabelled, graph.support, graph.support_labels,
                                 graph.n_way, graph.support_weights,
                                 getattr(self, "distractor_log_r", None))
        if self.distance == "euclidean":
            return -squared_euclidean(graph.query, protos)
        return self.scale * cosine_similarity(graph.query, protos, eps=1e-12)

    def extra_repr(self) -> str:
        return (f"distance={self.distance!r}, unlabelled={self.unlabelled!r}, "
                f"{super().extra_repr()}")
