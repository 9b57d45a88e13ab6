"""The floating-point type the relational math runs in."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["compute_dtype"]


def compute_dtype(x: Tensor) -> torch.dtype:
    """``torch.float64`` for a float64 ``x``, else ``torch.float32``.

    The heads cast autocast outputs (float16 / bfloat16) and masks to this type before their
    products and sums, so mixed precision still aggregates in float32, and a head run in float64
    (``model.double()`` on float64 features, e.g. to check a property without float32
    rounding) stays in float64 throughout.
    """
    return torch.float64 if x.dtype == torch.float64 else torch.float32
