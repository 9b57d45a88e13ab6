"""Prototypical Networks (Snell, Swersky & Zemel, NeurIPS 2017)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import einsum
from torch import Tensor, nn

from relgraph.data.episode import Episode
from relgraph.methods.base import FewShotMethod, register_method

__all__ = ["ProtoNet", "prototypes"]


def prototypes(support: Tensor, labels: Tensor, n_way: int) -> Tensor:
    """Class means of support embeddings.

    .. math:: c_k = \\frac{1}{|S_k|} \\sum_{(x_i, y_i) \\in S_k} f(x_i)

    Args:
        support: ``[b, s, d]`` support embeddings.
        labels: ``[b, s]`` labels in ``0..n_way-1``.
        n_way: number of classes.

    Shapes:
        ``[b, s, d], [b, s] -> [b, n_way, d]``
    """
    onehot = F.one_hot(labels, n_way).to(support.dtype)  # [b, s, n]
    sums = einsum(onehot, support, "b s n, b s d -> b n d")
    counts = onehot.sum(dim=1).clamp_min(1.0).unsqueeze(-1)  # [b, n, 1]
    return sums / counts


@register_method("protonet")
class ProtoNet(FewShotMethod):
    """Prototypical Networks (Snell et al. 2017): classify queries by distance to class means.

    .. math::
        p(y = k \\mid x) = \\frac{\\exp(-d(f(x), c_k))}{\\sum_{k'} \\exp(-d(f(x), c_{k'}))}

    with :math:`d` the squared Euclidean distance (the paper's choice) or the scaled cosine
    distance :math:`-s \\cos(f(x), c_k)`. Inductive: each query is scored on its own.

    Args:
        backbone: the encoder.
        distance: ``"euclidean"`` (squared Euclidean, default) or ``"cosine"``.
        scale: logit scale for the cosine distance (learned if ``learn_scale``), default 10.
        learn_scale: learn the cosine scale.

    Shapes:
        episode ``support [b, n*k, *x]``, ``query [b, n*q, *x]`` -> logits ``[b, n*q, n]``.
    """

    def __init__(self, backbone: nn.Module, distance: str = "euclidean", scale: float = 10.0,
                 learn_scale: bool = False) -> None:
        super().__init__(backbone)
        if distance not in ("euclidean", "cosine"):
            raise ValueError(f"distance must be 'euclidean' or 'cosine', got {distance!r}")
        self.distance = distance
        scale_t = torch.tensor(float(scale))
        if learn_scale:
            self.scale = nn.Parameter(scale_t)
        else:
            self.register_buffer("scale", scale_t)

    def forward(self, episode: Episode) -> Tensor:
        support = self.embed(episode.support).float()
        query = self.embed(episode.query).float()
        protos = prototypes(support, episode.support_labels, episode.n_way)
        if self.distance == "euclidean":
            # ||q - c||^2 = ||q||^2 - 2 q.c + ||c||^2, batched over episodes
            return -(query.pow(2).sum(-1, keepdim=True)
                     - 2 * einsum(query, protos, "b q d, b n d -> b q n")
                     + protos.pow(2).sum(-1).unsqueeze(1))
        q = F.normalize(query, dim=-1)
        c = F.normalize(protos, dim=-1)
        return self.scale * einsum(q, c, "b q d, b n d -> b q n")
