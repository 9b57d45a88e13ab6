"""Test-time augmentation: embed each image under a few fixed small warps and average.

Every image is treated on its own (no statistics are shared between images), so an inductive
method stays inductive: a query's prediction still depends only on itself and the support set.
The views are fixed, not random, so evaluation stays deterministic.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["VIEWS", "TTABackbone", "warp_views", "with_tta"]

#: Fixed views as (rotation degrees, scale, shift x, shift y in fractions of the image side).
#: The first is the identity; ``views=n`` uses the first ``n``.
VIEWS: list[tuple[float, float, float, float]] = [
    (0.0, 1.0, 0.0, 0.0),
    (0.0, 1.0, 0.04, 0.0), (0.0, 1.0, -0.04, 0.0), (0.0, 1.0, 0.0, 0.04), (0.0, 1.0, 0.0, -0.04),
    (6.0, 1.0, 0.0, 0.0), (-6.0, 1.0, 0.0, 0.0), (0.0, 1.08, 0.0, 0.0), (0.0, 0.93, 0.0, 0.0),
]


def warp_views(x: Tensor, views: int) -> Tensor:
    """The first ``views`` fixed warps of a batch of images.

    Args:
        x: ``[N, C, H, W]`` images.
        views: how many of :data:`VIEWS` to use (1 to ``len(VIEWS)``).

    Returns:
        ``[views, N, C, H, W]``; ``[0]`` is ``x`` itself.
    """
    if not 1 <= views <= len(VIEWS):
        raise ValueError(f"views must be between 1 and {len(VIEWS)}, got {views}")
    if x.dim() != 4:
        raise ValueError(f"test-time augmentation needs images [N, C, H, W], got shape "
                         f"{tuple(x.shape)}; turn it off for feature inputs")
    mats = []
    for deg, scale, tx, ty in VIEWS[:views]:
        a = math.radians(deg)
        c, s = math.cos(a) / scale, math.sin(a) / scale
        mats.append([[c, -s, -2 * tx], [s, c, -2 * ty]])
    theta = torch.tensor(mats, dtype=x.dtype, device=x.device)  # [V, 2, 3]
    n = x.shape[0]
    grid = F.affine_grid(theta.repeat_interleave(n, 0), [views * n, *x.shape[1:]],
                         align_corners=False)
    out = F.grid_sample(x.repeat(views, 1, 1, 1), grid, align_corners=False,
                        padding_mode="zeros")
    out[:n] = x  # the identity view exactly, without resampling error
    return out.view(views, *x.shape)


class TTABackbone(nn.Module):
    """Wrap a backbone: in eval mode, average its outputs over fixed warped views.

    In training mode it is the plain backbone. ``forward`` averages feature vectors
    ``[N, D]``; ``forward_map`` (when the backbone has one) averages feature maps.

    Args:
        backbone: the backbone to wrap.
        views: number of fixed views (see :data:`VIEWS`), ``1`` = no augmentation.
    """

    def __init__(self, backbone: nn.Module, views: int) -> None:
        super().__init__()
        if not 1 <= views <= len(VIEWS):
            raise ValueError(f"views must be between 1 and {len(VIEWS)}, got {views}")
        self.backbone = backbone
        self.views = views
        self.train(backbone.training)  # start in the backbone's mode

    def _average(self, fn, x: Tensor) -> Tensor:  # noqa: ANN001
        if self.training or self.views == 1:
            return fn(x)
        v = warp_views(x, self.views)
        return fn(v.flatten(0, 1)).unflatten(0, (self.views, x.shape[0])).mean(0)

    def forward(self, x: Tensor) -> Tensor:
        """``[N, C, H, W]`` -> the backbone's output averaged over the views."""
        return self._average(self.backbone, x)

    def forward_map(self, x: Tensor) -> Tensor:
        """``[N, C, H, W]`` -> the backbone's feature map averaged over the views."""
        return self._average(self.backbone.forward_map, x)

    def __getattr__(self, name: str):  # noqa: ANN204  (map_shape, out_dim, ...)
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("backbone"), name)


@contextlib.contextmanager
def with_tta(model: nn.Module, views: int) -> Iterator[nn.Module]:
    """Temporarily wrap ``model.backbone`` in :class:`TTABackbone` (no-op for ``views <= 1``).

    Example:
        >>> with with_tta(model, views=5):  # doctest: +SKIP
        ...     logits = model(episode)
    """
    if views <= 1:
        yield model
        return
    if not hasattr(model, "backbone"):
        raise ValueError("test-time augmentation needs a method with a .backbone")
    if not getattr(model, "supports_tta", True):
        raise ValueError(f"{type(model).__name__} adapts its backbone per episode and does not "
                         "support test-time augmentation; evaluate it with tta=1 (--tta 1)")
    original = model.backbone
    model.backbone = TTABackbone(original, views)
    try:
        yield model
    finally:
        model.backbone = original
