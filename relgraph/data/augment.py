"""Augmentation of image episodes: seeded random affine warps for training, fixed warps for
test-time augmentation.

:class:`AffineAugment` is applied by the engine to training episodes only (never to validation
or test data); the randomness of step ``t`` is a pure function of ``(seed, t)``, so resumed runs
stay exact. :func:`warp_views` gives the fixed, deterministic views that test-time augmentation
averages over (:mod:`relgraph.engine.tta`, and the gradient-based meta-learners' own
``tta_views``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["AffineAugment", "VIEWS", "warp_views"]


@dataclass(frozen=True)
class AffineAugment:
    """Random affine warp of every image: rotation, scale, shear and translation.

    Args:
        rotate: maximum rotation in degrees (uniform in ``[-rotate, rotate]``).
        scale: maximum relative scale change (uniform in ``[1 - scale, 1 + scale]``).
        shear: maximum shear in degrees.
        translate: maximum shift as a fraction of the image side.

    Shapes:
        ``__call__(x [m, c, h, w], generator) -> [m, c, h, w]``
    """

    rotate: float = 0.0
    scale: float = 0.0
    shear: float = 0.0
    translate: float = 0.0

    def __post_init__(self) -> None:
        limits = {"rotate": 180.0, "scale": 1.0, "shear": 90.0, "translate": 1.0}
        for name, top in limits.items():
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) \
                    or not 0 <= value < top:
                raise ValueError(f"augment {name} must be a number in [0, {top:g}), got "
                                 f"{value!r}: it is the largest change drawn either way "
                                 "(0 switches it off)")

    @property
    def active(self) -> bool:
        """Whether any transformation is switched on."""
        return any(v > 0 for v in (self.rotate, self.scale, self.shear, self.translate))

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        if x.dim() != 4:
            raise ValueError(f"AffineAugment expects images [m, c, h, w], got {tuple(x.shape)}")
        if not self.active:
            return x
        m = x.shape[0]
        u = torch.rand(m, 5, generator=generator) * 2 - 1  # uniform in [-1, 1]
        angle = u[:, 0] * math.radians(self.rotate)
        scale = 1 + u[:, 1] * self.scale
        shear = u[:, 2] * math.radians(self.shear)
        shift = u[:, 3:5] * 2 * self.translate  # grid coordinates span [-1, 1]
        cos, sin = torch.cos(angle), torch.sin(angle)
        # inverse map (output -> input coordinates) of rotation * shear / scale
        theta = torch.zeros(m, 2, 3)
        theta[:, 0, 0] = cos / scale
        theta[:, 0, 1] = (-sin + cos * torch.tan(shear)) / scale
        theta[:, 1, 0] = sin / scale
        theta[:, 1, 1] = (cos + sin * torch.tan(shear)) / scale
        theta[:, :, 2] = shift
        theta = theta.to(device=x.device, dtype=x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


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
