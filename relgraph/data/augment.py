"""Training-time augmentation of image episodes: seeded random affine warps.

Applied by the engine to training episodes only (never to validation or test data). The
randomness of step ``t`` is a pure function of ``(seed, t)``, so resumed runs stay exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["AffineAugment"]


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
