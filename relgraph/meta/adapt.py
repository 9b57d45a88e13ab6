"""Functional adaptation (torch.func): inner loops over parameter dicts, episode-level BatchNorm,
and a batched linear head fitted to support features.

Gradient-based methods (MAML, Reptile, Meta-Transfer, fine-tuning) adapt parameters per
episode. Here the parameters are plain ``{name: tensor}`` dicts evaluated with
:func:`torch.func.functional_call`: no module is cloned, the meta-parameters stay the
module's own ``nn.Parameter`` objects, and the outer gradient reaches them by ordinary
autograd, so DistributedDataParallel, optimisers and schedulers work unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial

import torch
import torch.nn.functional as F
from einops import einsum
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["inner_loop", "episode_batch_norm", "functional_forward", "fit_linear_head",
           "linear_head_logits", "centre_normalise", "at_least_float32"]

Params = dict[str, Tensor]


def at_least_float32(x: Tensor) -> Tensor:
    """Half-precision (autocast) results in float32; float32 and float64 stay as they are."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def inner_loop(loss_fn: Callable[[Params], Tensor], params: Params, steps: int, lr: float,
               create_graph: bool) -> Params:
    """Plain gradient descent on ``loss_fn`` over a dict of tensors.

    .. math:: \\theta_{t+1} = \\theta_t - \\alpha \\nabla_\\theta \\mathcal{L}(\\theta_t),
        \\qquad t = 0, \\dots, T-1

    With ``create_graph=True`` the result is differentiable to second order in the initial
    parameters (MAML); with ``False`` each gradient is a constant, so
    :math:`\\partial\\theta_T / \\partial\\theta_0 = I` (first-order MAML) and no
    activation is kept between steps.

    Args:
        loss_fn: maps a parameter dict to a scalar loss.
        params: the initial parameters :math:`\\theta_0`; those that do not require grad (frozen
            layers) are kept as they are.
        steps: number of steps :math:`T` (0 returns ``params``).
        lr: step size :math:`\\alpha`.
        create_graph: keep the graph of the gradients (second-order derivatives).

    Returns:
        The adapted parameters :math:`\\theta_T`, same keys and shapes.
    """
    if steps < 0:
        raise ValueError(f"inner steps must be >= 0, got {steps}")
    names = [k for k, v in params.items() if v.requires_grad]  # frozen ones stay as they are
    for _ in range(steps):
        loss = loss_fn(params)
        grads = torch.autograd.grad(loss, [params[k] for k in names], create_graph=create_graph,
                                    allow_unused=True)
        params = {**params, **{k: params[k] if g is None else params[k] - lr * g
                               for k, g in zip(names, grads, strict=True)}}
    return params


def _batch_norm_from_first(module: _BatchNorm, n_stats: int | None, x: Tensor) -> Tensor:
    """BatchNorm of ``x`` with the mean and variance of ``x[:n_stats]`` (all rows if None).

    When the statistics come from every row (the inner loop's support-only batches) this is
    ordinary batch-statistics BatchNorm, so it runs as PyTorch's fused kernel (one pass instead
    of six; exact first and second derivatives, running statistics untouched). The kernel
    refuses a single value per channel (one row of vectors), which the formula below handles."""
    if (n_stats is None or n_stats >= x.shape[0]) and x.numel() > x.shape[1]:
        return F.batch_norm(x, None, None, module.weight, module.bias, training=True,
                            momentum=0.0, eps=module.eps)
    ref = x[:n_stats]
    dims = [0, *range(2, x.dim())]
    mean = ref.mean(dims, keepdim=True)
    var = ref.var(dims, unbiased=False, keepdim=True)
    y = (x - mean) * torch.rsqrt(var + module.eps)
    if module.affine:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        y = y * module.weight.view(shape) + module.bias.view(shape)
    return y


@contextmanager
def episode_batch_norm(module: nn.Module, n_stats: int | None) -> Iterator[None]:
    """Inside the context, every BatchNorm layer of ``module`` normalises with the statistics of
    the first ``n_stats`` examples of its input, in training and in eval mode alike.

    .. math:: \\mathrm{BN}(x) = \\gamma \\frac{x - \\mu_S}{\\sqrt{\\sigma_S^2 + \\epsilon}}
        + \\beta, \\qquad \\mu_S, \\sigma_S^2 \\text{ over the first } n_\\text{stats}
        \\text{ rows (and all spatial positions)}

    Feeding ``cat(support, query)`` with ``n_stats = len(support)`` gives the inductive
    "MetaBN" of Bronskill et al. (2020, *TaskNorm*): support statistics normalise support and
    queries, so no query influences another. ``n_stats=None`` uses the whole batch (the
    original, transductive MAML). Running statistics are neither used nor updated.

    Args:
        module: a network containing BatchNorm layers (others are left alone).
        n_stats: rows that give the statistics; ``None`` for all.
    """
    bns = [m for m in module.modules() if isinstance(m, _BatchNorm)]
    for m in bns:
        m.forward = partial(_batch_norm_from_first, m, n_stats)
    try:
        yield
    finally:
        for m in bns:
            del m.forward


def functional_forward(module: nn.Module, params: Params, x: Tensor,
                       n_stats: int | None = None, episode_bn: bool = True) -> Tensor:
    """``module(x)`` with ``params`` in place of its parameters (buffers stay the module's).

    Args:
        module: the network.
        params: ``{name: tensor}`` replacing (some of) ``module.named_parameters()``.
        x: the input batch.
        n_stats: with ``episode_bn``, BatchNorm statistics come from ``x[:n_stats]``
            (see :func:`episode_batch_norm`).
        episode_bn: use episode statistics in BatchNorm; ``False`` keeps the module's own
            behaviour (batch statistics in training mode, running statistics in eval mode).
    """
    if not episode_bn:
        return functional_call(module, params, (x,))
    with episode_batch_norm(module, n_stats):
        return functional_call(module, params, (x,))


def centre_normalise(support: Tensor, query: Tensor) -> tuple[Tensor, Tensor]:
    """Centre features on the episode's support mean, then L2-normalise them.

    .. math:: \\tilde z = \\frac{z - \\bar z_S}{\\lVert z - \\bar z_S \\rVert}

    "CL2N" of SimpleShot (Wang et al. 2019), with the support mean instead of the base-class
    mean: queries do not enter it (inductive), and it removes the direction all features
    share, which makes logistic regression by gradient descent well conditioned.

    Shapes:
        ``support [b, s, d]``, ``query [b, q, d]`` -> the same shapes
    """
    mean = support.mean(dim=1, keepdim=True)
    return F.normalize(support - mean, dim=-1), F.normalize(query - mean, dim=-1)


def linear_head_logits(features: Tensor, weight: Tensor, bias: Tensor | None = None,
                       cosine: bool = False, scale: float = 10.0) -> Tensor:
    """Per-episode linear (or scaled cosine) classifier.

    .. math:: \\ell_{bqk} = w_{bk}^\\top z_{bq} + c_{bk} \\quad\\text{or}\\quad
        \\ell_{bqk} = s \\cos(w_{bk}, z_{bq})

    Shapes:
        ``features [b, q, d]``, ``weight [b, n, d]``, ``bias [b, n]`` -> ``[b, q, n]``
    """
    if cosine:
        return scale * einsum(F.normalize(features, dim=-1), F.normalize(weight, dim=-1),
                              "b q d, b n d -> b q n")
    logits = einsum(features, weight, "b q d, b n d -> b q n")
    return logits if bias is None else logits + bias.unsqueeze(1)


def fit_linear_head(features: Tensor, labels: Tensor, n_way: int, steps: int, lr: float,
                    cosine: bool = False, scale: float = 10.0, weight_decay: float = 0.0,
                    create_graph: bool = False) -> tuple[Tensor, Tensor]:
    """Fit one softmax classifier per episode to support features, all episodes at once.

    Multinomial logistic regression by ``steps`` of full-batch gradient descent on

    .. math:: \\mathcal{L}_b(W, c) = \\frac{1}{|S_b|} \\sum_{(z, y) \\in S_b}
        -\\log \\operatorname{softmax}(\\ell(z))_y + \\frac{\\lambda}{2} \\lVert W \\rVert^2

    The episodes' losses are summed, so each episode's head gets exactly its own gradient.
    The linear head starts at zero (its first step moves :math:`w_k` towards the class mean
    minus the overall mean); the cosine head starts at the class means (nearest-centroid,
    which is also what ``steps=0`` returns). Both start points are equivariant to relabelling
    the classes.

    Args:
        features: ``[b, s, d]`` support features.
        labels: ``[b, s]`` labels in ``0..n_way-1``.
        n_way: classes per episode.
        steps: gradient steps.
        lr: step size.
        cosine: scaled-cosine logits (Baseline++) instead of linear ones.
        scale: cosine logit scale :math:`s`.
        weight_decay: :math:`\\lambda`.
        create_graph: keep the graph, so the head is differentiable in ``features`` to second
            order (Meta-Transfer Learning); otherwise ``features`` are treated as constants.

    Returns:
        ``(weight [b, n_way, d], bias [b, n_way])``.
    """
    onehot = F.one_hot(labels, n_way).to(features.dtype)  # [b, s, n]
    if not create_graph:
        features = features.detach()
    b, _, d = features.shape
    if cosine:
        z = F.normalize(features, dim=-1)
        weight = einsum(onehot, z, "b s n, b s d -> b n d") / onehot.sum(1).clamp_min(1)[..., None]
    else:
        weight = features.new_zeros(b, n_way, d)
    bias = features.new_zeros(b, n_way)
    if not weight.requires_grad:  # a fresh leaf (else it depends on features: MTL)
        weight.requires_grad_(True)
    bias.requires_grad_(True)

    def loss_fn(p: Params) -> Tensor:
        logits = linear_head_logits(features, p["weight"], None if cosine else p["bias"],
                                    cosine, scale)
        ce = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none")
        loss = ce.view(b, -1).mean(1).sum()  # sum over episodes of each episode's mean
        if weight_decay:
            loss = loss + 0.5 * weight_decay * p["weight"].pow(2).sum()
        return loss

    params = {"weight": weight, "bias": bias}
    with torch.enable_grad():
        params = inner_loop(loss_fn, params, steps, lr, create_graph)
    if not create_graph:
        return params["weight"].detach(), params["bias"].detach()
    return params["weight"], params["bias"]
