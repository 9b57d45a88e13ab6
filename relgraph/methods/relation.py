"""Relation Networks (Sung, Yang, Zhang, Xiang, Torr & Hospedales, CVPR 2018)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from einops import einsum, rearrange
from torch import Tensor, nn

from relgraph.backbones.base import init_weights
from relgraph.data.episode import Episode
from relgraph.methods.base import FewShotMethod, register_method

__all__ = ["RelationNet", "class_maps"]

LOSSES = ("mse", "ce")
AGGREGATES = ("sum", "mean")


def class_maps(maps: Tensor, labels: Tensor, n_way: int, aggregate: str = "sum",
               weights: Tensor | None = None) -> Tensor:
    """Per-class feature maps of the support set: the element-wise sum (or mean) of its shots.

    .. math:: m_k = \\sum_{(x_i, y_i) \\in S_k} w_i f(x_i)

    (the mean divides by :math:`\\sum_{i \\in S_k} w_i`). Computed with one-hot labels, so
    unbalanced support sets work.

    Args:
        maps: ``[b, s, C, H, W]`` support feature maps.
        labels: ``[b, s]`` labels in ``0..n_way-1``.
        n_way: number of classes.
        aggregate: ``"sum"`` (the paper) or ``"mean"``. Default ``"sum"``.
        weights: ``[b, s]`` weights :math:`w_i` of the shots; default 1.

    Shapes:
        ``[b, s, C, H, W], [b, s], [b, s] -> [b, n_way, C, H, W]``
    """
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate must be one of {', '.join(AGGREGATES)}, got {aggregate!r}")
    onehot = F.one_hot(labels, n_way).to(maps.dtype)  # [b, s, n]
    if weights is not None:
        if weights.shape != labels.shape:
            raise ValueError(f"expected weights of shape {tuple(labels.shape)}, got "
                             f"{tuple(weights.shape)}")
        onehot = onehot * weights.to(maps.dtype).unsqueeze(-1)
    sums = einsum(onehot, maps, "b s n, b s c h w -> b n c h w")
    if aggregate == "mean":
        sums = sums / onehot.sum(dim=1).clamp_min(1.0)[..., None, None, None]
    return sums


def _pooled(size: tuple[int, int]) -> tuple[int, int]:
    """Side after the relation module's pooling: halve only while both sides are >= 2."""
    h, w = size
    return (h // 2, w // 2) if min(h, w) >= 2 else (h, w)


@register_method("relation")
class RelationNet(FewShotMethod):
    """Relation Networks (Sung et al. 2018): a learned relation score for every (class, query).

    The support feature maps of each class are summed (K-shot: element-wise sum), concatenated
    along channels with each query's map, and scored by the relation module :math:`g_\\phi`:

    .. math::
        r_{k,j} = \\sigma\\big(g_\\phi([\\textstyle\\sum_{i : y_i = k} f(x_i),\\, f(x_j)])\\big)
        \\in (0, 1)

    :math:`g_\\phi` is two blocks ``conv3x3(hidden, padding 1) -> BatchNorm -> ReLU -> maxpool
    2`` followed by ``FC(fc_hidden) -> ReLU -> FC(1)``. A block pools only while the map is at
    least 2x2, so small maps (1x1, or the 3x3 of Conv-4 on 28x28 Omniglot with
    ``pool_last=False``) pass unpooled. The paper's loss regresses the scores on the one-hot
    labels (``loss="mse"``):

    .. math:: \\mathcal{L} = \\frac{1}{|Q| N} \\sum_{j} \\sum_{k} (r_{k,j} - [y_j = k])^2

    ``loss="ce"`` uses the cross-entropy of the logits instead.

    :meth:`forward` returns the **pre-sigmoid** relation logits
    :math:`\\sigma^{-1}(r_{k,j})`; the sigmoid is monotonic, so the predicted class (argmax) is
    the same, and ``torch.sigmoid(logits)`` gives the paper's relation scores.

    All (query, class) pairs of all episodes are scored in one batch. The first convolution is
    linear in its concatenated input, so it is evaluated as ``conv_class(m_k) + conv_query(q_j)``
    on the ``n`` class maps and ``q`` query maps separately (identical to convolving the ``q * n``
    concatenations, and ``(q * n) / (q + n)`` times cheaper); everything after runs on the pairs.
    Inductive: a pair's score depends only on the support set and that query (BatchNorm uses its
    running statistics in eval mode).

    **Generated supports** (``augment``): the hallucinator works on the flattened support
    feature maps (size :math:`C H W`); its outputs are reshaped to maps and summed into their
    class maps like real shots, weighted by ``augment.weight``
    (:func:`class_maps`). With ``aggregate="sum"`` a class map then adds up ``k + m`` shots,
    as it did during training when training used the same ``augment``.

    Args:
        backbone: the encoder; its :meth:`~relgraph.backbones.Backbone.forward_map` is used.
        loss: ``"mse"`` (the paper, default) or ``"ce"``.
        aggregate: how the shots of a class are combined: ``"sum"`` (the paper, default) or
            ``"mean"`` (scale independent of the number of shots, e.g. for unbalanced support
            sets at prediction time).
        hidden: channels of the relation module's convolutions. Default ``64``.
        fc_hidden: width of its hidden fully connected layer. Default ``8``.
        map_shape: ``(C, H, W)`` of the backbone's feature map; ``None`` (default) asks
            ``backbone.map_shape()``. Fixes the input size of the first fully connected layer.
        augment: generated support examples, e.g. ``{"hallucinator": "vae", "per_class": 5}``
            (see :doc:`/generative`); ``None`` (default): none.

    Shapes:
        episode ``support [b, s, c, h, w]``, ``support_labels [b, s]``, ``query [b, q, c, h, w]``
        -> logits ``[b, q, n_way]``.
    """

    supports_augment = True

    def __init__(self, backbone: nn.Module, loss: str = "mse", aggregate: str = "sum",
                 hidden: int = 64, fc_hidden: int = 8,
                 map_shape: Sequence[int] | None = None,
                 augment: dict[str, Any] | None = None) -> None:
        super().__init__(backbone)
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
        if aggregate not in AGGREGATES:
            raise ValueError(f"aggregate must be one of {', '.join(AGGREGATES)}, got {aggregate!r}")
        if hidden < 1 or fc_hidden < 1:
            raise ValueError(f"expected hidden >= 1 and fc_hidden >= 1, got {hidden} and "
                             f"{fc_hidden}")
        if not callable(getattr(backbone, "forward_map", None)):
            raise ValueError(f"Relation Networks need a backbone with forward_map (feature maps), "
                             f"got {type(backbone).__name__}")
        if map_shape is None:
            try:
                map_shape = backbone.map_shape()  # type: ignore[operator]
            except (AttributeError, TypeError, ValueError) as e:
                raise ValueError("could not get the backbone's feature map shape; pass "
                                 "map_shape=(C, H, W)") from e
        map_shape = tuple(int(v) for v in map_shape)
        if len(map_shape) != 3 or min(map_shape) < 1:
            raise ValueError(f"expected map_shape (C, H, W) of positive sizes, got {map_shape}")
        self.criterion = loss
        self.aggregate = aggregate
        self.map_shape = map_shape
        c, h, w = map_shape
        self.conv1 = nn.Conv2d(2 * c, hidden, 3, padding=1, bias=False)
        self.norm1 = nn.BatchNorm2d(hidden)
        self.conv2 = nn.Conv2d(hidden, hidden, 3, padding=1, bias=False)
        self.norm2 = nn.BatchNorm2d(hidden)
        out_h, out_w = _pooled(_pooled((h, w)))
        self.fc = nn.Sequential(nn.Linear(hidden * out_h * out_w, fc_hidden), nn.ReLU(inplace=True),
                                nn.Linear(fc_hidden, 1))
        init_weights(self.conv1)
        init_weights(self.conv2)
        if augment is not None:
            self._setup_augment(augment, math.prod(map_shape))

    def feature_maps(self, x: Tensor) -> Tensor:
        """Backbone feature maps of every example of a batch of episodes.

        Shapes:
            ``[b, m, c, h, w] -> [b, m, C, H, W]``
        """
        b = x.shape[0]
        z = self.run_backbone(self.backbone.forward_map, rearrange(x, "b m ... -> (b m) ..."))
        if tuple(z.shape[1:]) != self.map_shape:
            raise ValueError(f"expected feature maps of shape {self.map_shape} (set at "
                             f"construction), got {tuple(z.shape[1:])}; build the method for "
                             f"this input size (map_shape=...)")
        return rearrange(z, "(b m) c h w -> b m c h w", b=b)

    def relation_logits(self, classes: Tensor, query: Tensor) -> Tensor:
        """Pre-sigmoid relation scores of every (query, class) pair.

        Args:
            classes: ``[b, n, C, H, W]`` class maps.
            query: ``[b, q, C, H, W]`` query maps.

        Shapes:
            ``[b, n, C, H, W], [b, q, C, H, W] -> [b, q, n]``
        """
        b, n, c = classes.shape[:3]
        q = query.shape[1]
        w_class, w_query = self.conv1.weight.split(c, dim=1)
        zc = F.conv2d(rearrange(classes, "b n c h w -> (b n) c h w"), w_class, padding=1)
        zq = F.conv2d(rearrange(query, "b q c h w -> (b q) c h w"), w_query, padding=1)
        zc = rearrange(zc, "(b n) c h w -> b 1 n c h w", b=b)
        zq = rearrange(zq, "(b q) c h w -> b q 1 c h w", b=b)
        z = rearrange(zc + zq, "b q n c h w -> (b q n) c h w")  # conv1 of the concatenation
        z = self._pool(F.relu(self.norm1(z)))
        z = self._pool(F.relu(self.norm2(self.conv2(z))))
        out = self.fc(z.flatten(1))  # [(b q n), 1]
        return rearrange(out, "(b q n) 1 -> b q n", b=b, q=q, n=n)

    @staticmethod
    def _pool(z: Tensor) -> Tensor:
        return F.max_pool2d(z, 2) if min(z.shape[-2:]) >= 2 else z

    def forward(self, episode: Episode) -> Tensor:
        return self.forward_with_aux(episode)[0]

    def forward_with_aux(self, episode: Episode) -> tuple[Tensor, Tensor]:
        support = self.feature_maps(episode.support)
        query = self.feature_maps(episode.query)
        labels, weights = episode.support_labels, None
        if self.hallucinator is not None:
            flat_s, flat_q = support.flatten(2).float(), query.flatten(2).float()
            aux = self.augment_loss(flat_s, labels, flat_q, episode.query_labels)
            flat_s, labels, _, weights = self.augment_support(flat_s, labels, episode.n_way)
            support = flat_s.to(support.dtype).unflatten(2, self.map_shape)
        else:
            aux = query.new_zeros((), dtype=torch.float32)
        classes = class_maps(support, labels, episode.n_way, self.aggregate, weights)
        return self.relation_logits(classes, query), aux

    def loss(self, episode: Episode) -> tuple[Tensor, Tensor]:
        """MSE of the relation scores against one-hot labels (``"mse"``), or cross-entropy,
        plus the hallucinator's auxiliary loss with ``augment``."""
        logits, aux = self.forward_with_aux(episode)
        if self.criterion == "ce":
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                                   episode.query_labels.reshape(-1))
        else:
            target = F.one_hot(episode.query_labels, episode.n_way).float()
            loss = F.mse_loss(torch.sigmoid(logits.float()), target)
        return loss + aux, logits

    def extra_repr(self) -> str:
        return (f"loss={self.criterion!r}, aggregate={self.aggregate!r}, "
                f"map_shape={self.map_shape}, {super().extra_repr()}")
