"""Prototypical Networks (Snell, Swersky & Zemel, NeurIPS 2017)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from einops import einsum
from torch import Tensor, nn

from relgraph.data.episode import Episode
from relgraph.methods.base import FewShotMethod, embedding_size, register_method

__all__ = ["ProtoNet", "prototypes"]


def prototypes(support: Tensor, labels: Tensor, n_way: int,
               weights: Tensor | None = None) -> Tensor:
    """Class means of support embeddings, optionally weighted.

    .. math:: c_k = \\frac{\\sum_{(x_i, y_i) \\in S_k} w_i f(x_i)}{\\sum_{(x_i, y_i) \\in S_k} w_i}

    Args:
        support: ``[b, s, d]`` support embeddings.
        labels: ``[b, s]`` labels in ``0..n_way-1``.
        n_way: number of classes.
        weights: ``[b, s]`` positive weights :math:`w_i`; default 1 (the plain mean).

    Shapes:
        ``[b, s, d], [b, s], [b, s] -> [b, n_way, d]``
    """
    onehot = F.one_hot(labels, n_way).to(support.dtype)  # [b, s, n]
    if weights is not None:
        if weights.shape != labels.shape:
            raise ValueError(f"expected weights of shape {tuple(labels.shape)}, got "
                             f"{tuple(weights.shape)}")
        onehot = onehot * weights.to(support.dtype).unsqueeze(-1)
    sums = einsum(onehot, support, "b s n, b s d -> b n d")
    # a class without supports gets a zero prototype (its sum is 0)
    counts = onehot.sum(dim=1).clamp_min(torch.finfo(onehot.dtype).tiny).unsqueeze(-1)
    return sums / counts


@register_method("protonet")
class ProtoNet(FewShotMethod):
    """Prototypical Networks (Snell et al. 2017): classify queries by distance to class means.

    .. math::
        p(y = k \\mid x) = \\frac{\\exp(-d(f(x), c_k))}{\\sum_{k'} \\exp(-d(f(x), c_{k'}))}

    with :math:`d` the squared Euclidean distance (the paper's choice) or the scaled cosine
    distance :math:`-s \\cos(f(x), c_k)`. Inductive: each query is scored on its own.

    With ``augment``, generated examples join their class's support set and the prototypes
    are weighted means (:func:`prototypes`, a generated example weighing ``augment.weight``).

    Args:
        backbone: the encoder.
        distance: ``"euclidean"`` (squared Euclidean, default) or ``"cosine"``.
        scale: logit scale for the cosine distance (learned if ``learn_scale``), default 10.
        learn_scale: learn the cosine scale.
        augment: generated support examples, e.g. ``{"hallucinator": "vae", "per_class": 5}``
            (see :doc:`/generative`); ``None`` (default): none. Needs ``backbone.out_dim``.

    Shapes:
        episode ``support [b, n*k, *x]``, ``query [b, n*q, *x]`` -> logits ``[b, n*q, n]``.
    """

    supports_augment = True

    def __init__(self, backbone: nn.Module, distance: str = "euclidean", scale: float = 10.0,
                 learn_scale: bool = False, augment: dict[str, Any] | None = None) -> None:
        super().__init__(backbone)
        if distance not in ("euclidean", "cosine"):
            raise ValueError(f"distance must be 'euclidean' or 'cosine', got {distance!r}")
        self.distance = distance
        scale_t = torch.tensor(float(scale))
        if learn_scale:
            self.scale = nn.Parameter(scale_t)
        else:
            self.register_buffer("scale", scale_t)
        if augment is not None:
            self._setup_augment(augment, embedding_size(backbone))

    def forward(self, episode: Episode) -> Tensor:
        return self.forward_with_aux(episode)[0]

    def forward_with_aux(self, episode: Episode) -> tuple[Tensor, Tensor]:
        support = self.embed(episode.support).float()
        query = self.embed(episode.query).float()
        aux = self.augment_loss(support, episode.support_labels, query, episode.query_labels)
        support, labels, _, weights = self.augment_support(support, episode.support_labels,
                                                           episode.n_way)
        protos = prototypes(support, labels, episode.n_way, weights)
        if self.distance == "euclidean":
            # ||q - c||^2 = ||q||^2 - 2 q.c + ||c||^2, batched over episodes
            return -(query.pow(2).sum(-1, keepdim=True)
                     - 2 * einsum(query, protos, "b q d, b n d -> b q n")
                     + protos.pow(2).sum(-1).unsqueeze(1)), aux
        q = F.normalize(query, dim=-1)
        c = F.normalize(protos, dim=-1)
        return self.scale * einsum(q, c, "b q d, b n d -> b q n"), aux
