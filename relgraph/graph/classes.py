"""From support nodes to classes: the one weighted class aggregation every head uses."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import einsum
from torch import Tensor

__all__ = ["class_aggregate", "prototypes"]


def class_aggregate(values: Tensor, labels: Tensor, n_way: int, weights: Tensor | None = None,
                    mean: bool = False) -> Tensor:
    """Weighted sum (or mean) of the support values of every class, batched over episodes.

    .. math:: a_k = \\sum_{i : y_i = k} w_i v_i \\qquad \\Big(\\text{mean: }
              \\frac{\\sum_{i : y_i = k} w_i v_i}{\\sum_{i : y_i = k} w_i}\\Big)

    Computed with one-hot labels (one batched matrix product), so unbalanced support sets
    work; a class without supports gets 0.

    Args:
        values: ``[b, s, *f]`` one value per support (embeddings ``[b, s, d]``, feature maps
            ``[b, s, C, H, W]``, edge values ``[b, s, q]`` ...).
        labels: ``[b, s]`` labels in ``0..n_way-1``.
        n_way: number of classes.
        weights: ``[b, s]`` positive weights :math:`w_i`; default 1.
        mean: divide by the class's total weight.

    Shapes:
        ``[b, s, *f], [b, s], [b, s] -> [b, n_way, *f]``
    """
    if labels.shape != values.shape[:2]:
        raise ValueError(f"expected labels of shape {tuple(values.shape[:2])} (one per "
                         f"support), got {tuple(labels.shape)}")
    onehot = F.one_hot(labels, n_way).to(values.dtype)  # [b, s, n]
    if weights is not None:
        if weights.shape != labels.shape:
            raise ValueError(f"expected weights of shape {tuple(labels.shape)}, got "
                             f"{tuple(weights.shape)}")
        onehot = onehot * weights.to(values.dtype).unsqueeze(-1)
    sums = einsum(onehot, values.flatten(2), "b s n, b s f -> b n f")
    if mean:
        sums = sums / onehot.sum(dim=1).clamp_min(torch.finfo(onehot.dtype).tiny).unsqueeze(-1)
    return sums.unflatten(2, values.shape[2:])


def prototypes(support: Tensor, labels: Tensor, n_way: int,
               weights: Tensor | None = None) -> Tensor:
    """Class means of support embeddings, optionally weighted (Snell et al. 2017).

    .. math:: c_k = \\frac{\\sum_{(x_i, y_i) \\in S_k} w_i f(x_i)}{\\sum_{(x_i, y_i) \\in S_k} w_i}

    Args:
        support: ``[b, s, d]`` support embeddings.
        labels: ``[b, s]`` labels in ``0..n_way-1``.
        n_way: number of classes.
        weights: ``[b, s]`` positive weights :math:`w_i`; default 1 (the plain mean).

    Shapes:
        ``[b, s, d], [b, s], [b, s] -> [b, n_way, d]``
    """
    return class_aggregate(support, labels, n_way, weights, mean=True)
