"""Relation Networks (Sung, Yang, Zhang, Xiang, Torr & Hospedales, CVPR 2018)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from relgraph.graph.classes import class_aggregate
from relgraph.graph.episode_graph import EpisodeGraph
from relgraph.methods.base import cross_entropy, register_method
from relgraph.methods.head import RelationalHead
from relgraph.nn.relation import RelationModule

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
    return class_aggregate(maps, labels, n_way, weights, mean=aggregate == "mean")


@register_method("relation")
class RelationNet(RelationalHead):
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
        backbone: the encoder; its :meth:`~relgraph.backbones.Backbone.forward_map` is used
            (``None``: the inputs are flattened feature maps, ``map_shape`` required).
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
        :meth:`relate`: graph ``x [b, n, C*H*W]`` (flattened feature maps) -> logits
        ``[b, q, n_way]``.
    """

    embedding = "map"

    #: The relation module's layers were attributes of the method before they became
    #: :class:`~relgraph.nn.RelationModule`.
    renamed_parameters = {**RelationalHead.renamed_parameters,
                          **{f"{name}.": f"relation_module.{name}."
                             for name in ("conv1", "norm1", "conv2", "norm2", "fc")}}

    def __init__(self, backbone: nn.Module | None, loss: str = "mse", aggregate: str = "sum",
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
        if backbone is None:
            self.embedding = "vector"  # the inputs are flattened feature maps already
        elif not callable(getattr(backbone, "forward_map", None)):
            raise ValueError(f"Relation Networks need a backbone with forward_map (feature maps), "
                             f"got {type(backbone).__name__}")
        if map_shape is None:
            try:
                map_shape = self.backbone.map_shape()  # type: ignore[operator]
            except (AttributeError, TypeError, ValueError) as e:
                raise ValueError("could not get the backbone's feature map shape; pass "
                                 "map_shape=(C, H, W)") from e
        map_shape = tuple(int(v) for v in map_shape)
        if len(map_shape) != 3 or min(map_shape) < 1:
            raise ValueError(f"expected map_shape (C, H, W) of positive sizes, got {map_shape}")
        self.criterion = loss
        self.aggregate = aggregate
        self.map_shape = map_shape
        self.relation_module = RelationModule(map_shape, hidden, fc_hidden)
        if augment is not None:
            self.setup_augment(augment, math.prod(map_shape))

    def relate(self, graph: EpisodeGraph) -> Tensor:
        if graph.x.shape[-1] != math.prod(self.map_shape):
            raise ValueError(f"expected node features of size {math.prod(self.map_shape)} (flat "
                             f"feature maps {self.map_shape}, set at construction), got "
                             f"{graph.x.shape[-1]}; build the method for this input size "
                             "(map_shape=...)")
        support = graph.support.unflatten(2, self.map_shape)
        query = graph.query.unflatten(2, self.map_shape)
        weights = graph.support_weights if bool(graph.is_generated.any()) else None
        classes = class_maps(support, graph.support_labels, graph.n_way, self.aggregate, weights)
        return self.relation_module(classes, query)

    def relate_loss(self, graph: EpisodeGraph, query_labels: Tensor) -> tuple[Tensor, Tensor]:
        """MSE of the relation scores against one-hot labels (``"mse"``), or cross-entropy,
        and the query logits.

        Shapes:
            graph, ``query_labels [b, q]`` -> ``([], [b, q, n_way])``
        """
        logits = self.relate(graph)
        if self.criterion == "ce":
            return cross_entropy(logits, query_labels), logits
        target = F.one_hot(query_labels, graph.n_way).float()
        return F.mse_loss(torch.sigmoid(logits.float()), target), logits

    def extra_repr(self) -> str:
        return (f"loss={self.criterion!r}, aggregate={self.aggregate!r}, "
                f"map_shape={self.map_shape}, {super().extra_repr()}")
