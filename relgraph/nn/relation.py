"""The learned relation kernel of Relation Networks (Sung et al., CVPR 2018)."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from relgraph.backbones.base import init_weights

__all__ = ["RelationModule"]


def _pooled(size: tuple[int, int]) -> tuple[int, int]:
    """Side after a pooling block: halve only while both sides are >= 2."""
    h, w = size
    return (h // 2, w // 2) if min(h, w) >= 2 else (h, w)


class RelationModule(nn.Module):
    """A learned relation score for every (class, query) pair of feature maps.

    .. math::
        g_\\phi([m_k, q_j]) \\in \\mathbb{R} \\quad (\\text{a logit; } \\sigma \\text{ of it is the
        paper's relation score})

    :math:`g_\\phi` is two blocks ``conv3x3(hidden, padding 1) -> BatchNorm -> ReLU -> maxpool
    2`` followed by ``FC(fc_hidden) -> ReLU -> FC(1)``. A block pools only while the map is at
    least 2x2, so small maps pass unpooled. The first convolution is linear in its
    concatenated input, so it is evaluated as ``conv_class(m_k) + conv_query(q_j)`` on the
    ``n`` class maps and ``q`` query maps separately (identical to convolving the ``q * n``
    concatenations, and ``(q * n) / (q + n)`` times cheaper); everything after runs on the
    pairs.

    Args:
        map_shape: ``(C, H, W)`` of the feature maps.
        hidden: channels of the convolutions. Default ``64``.
        fc_hidden: width of the hidden fully connected layer. Default ``8``.

    Shapes:
        ``forward(classes [b, n, C, H, W], query [b, q, C, H, W]) -> [b, q, n]``
    """

    def __init__(self, map_shape: Sequence[int], hidden: int = 64, fc_hidden: int = 8) -> None:
        super().__init__()
        c, h, w = (int(v) for v in map_shape)
        self.map_shape = (c, h, w)
        self.conv1 = nn.Conv2d(2 * c, hidden, 3, padding=1, bias=False)
        self.norm1 = nn.BatchNorm2d(hidden)
        self.conv2 = nn.Conv2d(hidden, hidden, 3, padding=1, bias=False)
        self.norm2 = nn.BatchNorm2d(hidden)
        out_h, out_w = _pooled(_pooled((h, w)))
        self.fc = nn.Sequential(nn.Linear(hidden * out_h * out_w, fc_hidden),
                                nn.ReLU(inplace=True), nn.Linear(fc_hidden, 1))
        init_weights(self.conv1)
        init_weights(self.conv2)

    @staticmethod
    def _pool(z: Tensor) -> Tensor:
        return F.max_pool2d(z, 2) if min(z.shape[-2:]) >= 2 else z

    def forward(self, classes: Tensor, query: Tensor) -> Tensor:
        """Relation logits of every (query, class) pair:
        ``classes [b, n, C, H, W], query [b, q, C, H, W] -> [b, q, n]``."""
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

    def extra_repr(self) -> str:
        return f"map_shape={self.map_shape}"
