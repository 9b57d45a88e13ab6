"""Meta-Transfer Learning (Sun, Liu, Chua & Schiele, CVPR 2019)."""

from __future__ import annotations

from pathlib import Path

import torch
from einops import rearrange
from torch import Tensor, nn

from relgraph.checkpoint import load_checkpoint
from relgraph.data.episode import Episode
from relgraph.meta import (
    at_least_float32,
    centre_normalise,
    fit_linear_head,
    functional_forward,
    linear_head_logits,
)
from relgraph.methods.base import FewShotMethod, register_method

__all__ = ["MTL"]


@register_method("mtl")
class MTL(FewShotMethod):
    """Meta-Transfer Learning (Sun et al., CVPR 2019): meta-train channel-wise scaling and
    shifting of a frozen pre-trained backbone.

    Every convolution :math:`(W, b)` of the backbone becomes

    .. math:: \\mathrm{conv}(x;\\, W \\odot \\Phi_{S_1},\\, b + \\Phi_{S_2})

    with :math:`\\Phi_{S_1} \\in \\mathbb{R}^{c_\\text{out}}` (init 1) scaling each output
    channel's filter and :math:`\\Phi_{S_2} \\in \\mathbb{R}^{c_\\text{out}}` (init 0) shifting
    it. :math:`W, b` and the BatchNorm layers stay frozen (BatchNorm always uses the
    pre-trained running statistics, so the method is inductive). Per episode, a linear head on
    the features centred on the support mean and L2-normalised
    (:func:`relgraph.meta.centre_normalise`) is fitted to the support set by ``inner_steps``
    gradient steps from zero (:func:`relgraph.meta.fit_linear_head`, all episodes at once);
    the query loss is differentiated through those steps (second order) into :math:`\\Phi_S`:

    .. math:: \\Phi_S \\leftarrow \\Phi_S - \\beta \\nabla_{\\Phi_S} \\mathcal{L}_Q\\big(
        \\Phi_S, W'(\\Phi_S)\\big), \\qquad
        W'_{t+1} = W'_t - \\alpha \\nabla_{W'} \\mathcal{L}_S(\\Phi_S, W'_t), \\ W'_0 = 0

    **Pre-training** is not repeated here: ``pretrained`` names the ``checkpoint.pt`` of a
    :class:`~relgraph.methods.transfer.Baseline` run (``relgraph train`` with method
    ``baseline``; the paper's first phase, large-scale classification over all training
    classes) with the same backbone, whose backbone weights are loaded. Without it the
    backbone is used as built (e.g. one that loads its own weights). The head is the
    Baseline's logistic-regression head, so with :math:`\\Phi_S` at their initial values and
    the same head steps and step size MTL predicts exactly what a linear Baseline checkpoint
    predicts; meta-training starts
    from there. Simplifications: the classifier is not meta-learned (zero start, which keeps
    any number of ways), and hard-task meta-batches are not used.

    Args:
        backbone: the encoder; its ``nn.Conv2d`` layers get scale and shift parameters.
        pretrained: path of a Baseline (or Baseline++) ``checkpoint.pt``; it must be readable
            whenever the model is built (training, and ``relgraph evaluate``).
        inner_steps: head steps in training. Default ``10``.
        eval_inner_steps: head steps in evaluation. Default ``100`` (as Baseline's head).
        inner_lr: head step size :math:`\\alpha`. Default ``1.0``.

    Shapes:
        episode ``support [b, n*k, *x]``, ``query [b, n*q, *x]`` -> logits ``[b, n*q, n]``.
    """

    #: The pre-trained backbone is frozen: it stays in eval mode (its running statistics).
    frozen_backbone = True

    float16_autocast = False  # gradient steps inside forward: no float16 autocast

    #: Scales and shifts the backbone's convolutions by name: no test-time augmentation wrapper.
    supports_tta = False

    def __init__(self, backbone: nn.Module, pretrained: str | None = None, inner_steps: int = 10,
                 eval_inner_steps: int = 100, inner_lr: float = 1.0) -> None:
        super().__init__(backbone)
        if inner_steps < 0 or eval_inner_steps < 0 or inner_lr <= 0:
            raise ValueError(f"expected inner steps >= 0 and inner_lr > 0, got inner_steps="
                             f"{inner_steps}, eval_inner_steps={eval_inner_steps}, "
                             f"inner_lr={inner_lr}")
        if pretrained is not None:
            self._load_backbone(Path(pretrained))
        self.pretrained = pretrained
        self.backbone.requires_grad_(False)
        self.convs = [name for name, m in self.backbone.named_modules()
                      if isinstance(m, nn.Conv2d)]
        if not self.convs:
            raise ValueError("MTL scales and shifts convolution filters, but the backbone has no "
                             "nn.Conv2d layer")
        modules = dict(self.backbone.named_modules())
        self.ss_scale = nn.ParameterList(
            [nn.Parameter(torch.ones(modules[n].out_channels)) for n in self.convs])
        self.ss_shift = nn.ParameterList(
            [nn.Parameter(torch.zeros(modules[n].out_channels)) for n in self.convs])
        self.inner_steps = inner_steps
        self.eval_inner_steps = eval_inner_steps
        self.inner_lr = inner_lr
        self.backbone.eval()

    def _load_backbone(self, path: Path) -> None:
        try:
            ckpt = load_checkpoint(path)
        except FileNotFoundError as exc:
            raise FileNotFoundError(
                f"MTL's pretrained checkpoint {path} not found: train a Baseline first "
                "(e.g. relgraph train --config experiments/configs/omniglot_small1_baseline.yaml"
                " --out runs/omniglot_small1/baseline) and pass its checkpoint.pt") from exc
        state = {k[len("backbone."):]: v for k, v in ckpt["model"].items()
                 if k.startswith("backbone.")}
        try:
            self.backbone.load_state_dict(state)
        except RuntimeError as exc:
            raise ValueError(f"the backbone of {path} does not match this backbone (use the "
                             f"pre-training run's backbone and backbone_args): {exc}") from exc

    def extra_repr(self) -> str:
        return (f"pretrained={self.pretrained!r}, inner_steps={self.inner_steps}, "
                f"eval_inner_steps={self.eval_inner_steps}, inner_lr={self.inner_lr}, "
                f"{super().extra_repr()}")

    def scaled_parameters(self) -> dict[str, Tensor]:
        """The convolutions' :math:`W \\odot \\Phi_{S_1}` and :math:`b + \\Phi_{S_2}`, by name."""
        modules = dict(self.backbone.named_modules())
        params: dict[str, Tensor] = {}
        for name, scale, shift in zip(self.convs, self.ss_scale, self.ss_shift, strict=True):
            conv = modules[name]
            params[f"{name}.weight"] = conv.weight * scale.view(-1, 1, 1, 1)
            params[f"{name}.bias"] = shift if conv.bias is None else conv.bias + shift
        return params

    def features(self, x: Tensor) -> Tensor:
        """Embeddings under the scaled and shifted backbone: ``[b, m, *x] -> [b, m, d]``."""
        flat = rearrange(x, "b m ... -> (b m) ...")
        z = functional_forward(self.backbone, self.scaled_parameters(), flat, episode_bn=False)
        return at_least_float32(rearrange(z, "(b m) d -> b m d", b=x.shape[0]))

    def forward(self, episode: Episode) -> Tensor:
        """Query logits of the per-episode head on the scaled and shifted backbone:
        episode ``support [b, n*k, *x]``, ``query [b, n*q, *x]`` -> ``[b, n*q, n]``."""
        s = episode.support.shape[1]
        z = self.features(torch.cat([episode.support, episode.query], 1))
        support, query = centre_normalise(z[:, :s], z[:, s:])
        steps = self.inner_steps if self.training else self.eval_inner_steps
        weight, bias = fit_linear_head(support, episode.support_labels, episode.n_way, steps,
                                       self.inner_lr, create_graph=torch.is_grad_enabled())
        return linear_head_logits(query, weight, bias)
