"""Prototypical Networks (Snell, Swersky & Zemel, NeurIPS 2017)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from relgraph.graph.classes import prototypes
from relgraph.graph.episode_graph import EpisodeGraph
from relgraph.graph.kernels import cosine_similarity, squared_euclidean
from relgraph.methods.base import embedding_size, register_method
from relgraph.methods.head import RelationalHead

__all__ = ["ProtoNet", "prototypes"]

DISTANCES = ("euclidean", "cosine")


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

    Args:
        backbone: the encoder (``None``: the inputs are features).
        distance: ``"euclidean"`` (squared Euclidean, default) or ``"cosine"``.
        scale: logit scale for the cosine distance (learned if ``learn_scale``), default 10.
        learn_scale: learn the cosine scale.
        augment: generated support examples, e.g. ``{"hallucinator": "vae", "per_class": 5}``
            (see :doc:`/generative`); ``None`` (default): none.
        embed_dim: embedding size (for ``augment``); default ``backbone.out_dim``.

    Shapes:
        :meth:`relate`: graph ``x [b, n, d]`` -> logits ``[b, q, n_way]``.
    """

    def __init__(self, backbone: nn.Module | None, distance: str = "euclidean",
                 scale: float = 10.0, learn_scale: bool = False,
                 augment: dict[str, Any] | None = None, embed_dim: int | None = None) -> None:
        super().__init__(backbone)
        if distance not in DISTANCES:
            raise ValueError(f"distance must be 'euclidean' or 'cosine', got {distance!r}")
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
        if self.distance == "euclidean":
            return -squared_euclidean(graph.query, protos)
        return self.scale * cosine_similarity(graph.query, protos, eps=1e-12)

    def extra_repr(self) -> str:
        return f"distance={self.distance!r}, {super().extra_repr()}"
