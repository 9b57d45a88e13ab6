"""Transfer baselines: Baseline and Baseline++ (Chen et al., ICLR 2019, "A Closer Look at
Few-shot Classification") and full fine-tuning of the backbone on the support set.

All three pre-train the backbone with ordinary mini-batch classification over all training
classes, then, for each test episode, fit a new classifier on the support set. In relgraph's
single training loop a training "episode" is simply a mini-batch: its images' global classes
are ``Episode.class_ids`` gathered at the episode labels, and big-way episodes with a few
images per class cover the training classes quickly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from relgraph.data.episode import Episode
from relgraph.meta import (
    at_least_float32,
    centre_normalise,
    fit_linear_head,
    functional_forward,
    inner_loop,
    linear_head_logits,
)
from relgraph.methods.base import FewShotMethod, register_method

__all__ = ["Baseline", "BaselinePlusPlus", "FineTune"]

HEADS = ("logistic", "centroid")


def cosine_scale(num_classes: int) -> float:
    """Chen et al.'s (2019) fixed scale of a cosine classifier over ``num_classes`` classes: 2
    for at most 200, else 10 (a softmax over more classes needs larger logits)."""
    return 2.0 if num_classes <= 200 else 10.0


def _global_labels(episode: Episode, labels: Tensor) -> Tensor:
    """Dataset classes ``[b, m]`` of episode labels ``[b, m]``."""
    return episode.class_ids.gather(1, labels)


@register_method("baseline")
class Baseline(FewShotMethod):
    """Baseline (Chen et al., ICLR 2019): pre-train a classifier over all training classes,
    then fit a new head on each episode's frozen support features.

    **Pre-training** (``loss``): cross-entropy of the classifier over the ``C`` training
    classes on every support and query image of the batch,

    .. math:: \\ell_c(x) = w_c^\\top f_\\theta(x) + b_c \\ \\text{(linear)} \\quad\\text{or}\\quad
        \\ell_c(x) = s \\cos(w_c, f_\\theta(x)) \\ \\text{(cosine, Baseline++)}

    The logits returned with the loss are the classifier's logits of the episode's own
    classes, ``[b, n*q, n]``, so the training accuracy is an n-way accuracy.

    **Evaluation** (``forward``): the backbone is frozen; each episode gets a new head on its
    support features, all ``b`` episodes fitted at once (:func:`relgraph.meta.fit_linear_head`):

    - ``head="logistic"`` (default): multinomial logistic regression by ``head_steps`` steps of
      full-batch gradient descent. The linear classifier starts at zero on features centred on
      the support mean and L2-normalised (:func:`relgraph.meta.centre_normalise`; normalised
      features as in Tian et al. 2020, so one step size suits any backbone, and centred so that
      gradient descent is well conditioned); the cosine classifier starts at the class
      centroids of the L2-normalised features.
    - ``head="centroid"``: nearest class centroid by cosine similarity, closed form.

    Inductive: the backbone runs in eval mode and each query is scored on its own.

    Args:
        backbone: the encoder; must expose ``out_dim``.
        num_classes: training classes ``C`` (passed by the training loop).
        classifier: ``"linear"`` (Baseline, default) or ``"cosine"`` (Baseline++).
        scale: cosine logit scale :math:`s` of pre-training; default ``None`` follows Chen
            et al.'s rule on the classifier's number of classes (their ``distLinear``): 2 for
            at most 200 classes, else 10 (e.g. Omniglot's thousands of training classes).
        head_scale: the scale of the per-episode cosine head; default ``None``: the same rule
            on the episode's ``n`` classes (2 for any usual ``n``), as Chen et al.'s
            fine-tuning builds a new ``distLinear`` over the ``n`` classes.
        head: ``"logistic"`` or ``"centroid"``.
        head_steps: gradient steps of the per-episode head. Default ``100`` (Chen et al.).
        head_lr: their step size. Default ``1.0``.
        head_weight_decay: L2 penalty of the per-episode head. Default ``0``.

    Shapes:
        episode ``support [b, n*k, *x]``, ``query [b, n*q, *x]`` -> logits ``[b, n*q, n]``.
    """

    float16_autocast = False  # gradient steps inside forward: no float16 autocast

    needs_num_classes = True
    default_classifier = "linear"

    def __init__(self, backbone: nn.Module, num_classes: int, classifier: str | None = None,
                 scale: float | None = None, head: str = "logistic", head_steps: int = 100,
                 head_lr: float = 1.0, head_weight_decay: float = 0.0,
                 head_scale: float | None = None) -> None:
        super().__init__(backbone)
        classifier = classifier or self.default_classifier
        if classifier not in ("linear", "cosine"):
            raise ValueError(f"classifier must be 'linear' or 'cosine', got {classifier!r}")
        if head not in HEADS:
            raise ValueError(f"head must be one of {', '.join(HEADS)}, got {head!r}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 (the training classes), got {num_classes}")
        if head_steps < 0 or head_lr <= 0:
            raise ValueError(f"expected head_steps >= 0 and head_lr > 0, got {head_steps} and "
                             f"{head_lr}")
        out_dim = getattr(backbone, "out_dim", None)
        if not isinstance(out_dim, int):
            raise ValueError(f"{type(self).__name__} needs a backbone with an integer out_dim "
                             "(the classifier's input size); wrap plain modules in "
                             "relgraph.backbones.BackboneAdapter")
        self.num_classes = num_classes
        self.cosine = classifier == "cosine"
        for name, value in (("scale", scale), ("head_scale", head_scale)):
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0 (or None for Chen et al.'s rule), got "
                                 f"{value}")
        self.scale = float(scale) if scale is not None else cosine_scale(num_classes)
        self.head_scale = None if head_scale is None else float(head_scale)
        self.classifier = nn.Linear(out_dim, num_classes, bias=not self.cosine)
        self.head = head
        self.head_steps = head_steps
        self.head_lr = head_lr
        self.head_weight_decay = head_weight_decay

    def extra_repr(self) -> str:
        head_scale = "rule" if self.head_scale is None else self.head_scale
        return (f"classifier={'cosine' if self.cosine else 'linear'}, scale={self.scale}, "
                f"head_scale={head_scale}, head={self.head!r}, head_steps={self.head_steps}, "
                f"{super().extra_repr()}")

    def episode_scale(self, n_way: int) -> float:
        """Scale of the per-episode cosine head over ``n_way`` classes: ``head_scale``, else
        :func:`cosine_scale` of ``n_way``."""
        return self.head_scale if self.head_scale is not None else cosine_scale(n_way)

    def class_logits(self, z: Tensor) -> Tensor:
        """Pre-training logits over all training classes: ``[..., d] -> [..., C]``."""
        if self.cosine:
            return self.scale * F.linear(F.normalize(z, dim=-1),
                                         F.normalize(self.classifier.weight, dim=-1))
        return self.classifier(z)

    def loss(self, episode: Episode) -> tuple[Tensor, Tensor]:
        """Pre-training: classification over all training classes (see the class docstring)."""
        x = torch.cat([episode.support, episode.query], dim=1)  # [b, s+q, *x]
        labels = torch.cat([_global_labels(episode, episode.support_labels),
                            _global_labels(episode, episode.query_labels)], dim=1)
        if int(labels.max()) >= self.num_classes:
            raise ValueError(f"episode class id {int(labels.max())} is out of range for a "
                             f"classifier over {self.num_classes} training classes; build the "
                             "method with the training set's num_classes")
        logits = self.class_logits(self.embed(x)).float()  # [b, s+q, C]
        loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten())
        s = episode.support.shape[1]
        query_logits = logits[:, s:]
        idx = episode.class_ids.unsqueeze(1).expand(-1, query_logits.shape[1], -1)
        return loss, query_logits.gather(2, idx)

    def head_inputs(self, support: Tensor, query: Tensor) -> tuple[Tensor, Tensor]:
        """Features as the per-episode head sees them: centred on the support mean and
        L2-normalised for the linear head (:func:`relgraph.meta.centre_normalise`),
        L2-normalised for the cosine and centroid heads. ``[b, s, d], [b, q, d]`` in and out."""
        if self.cosine or self.head == "centroid":
            return F.normalize(support, dim=-1), F.normalize(query, dim=-1)
        return centre_normalise(support, query)

    def fit_head(self, support: Tensor, labels: Tensor, n_way: int) -> tuple[Tensor, Tensor]:
        """New per-episode heads on prepared support features ``[b, s, d]`` (see
        :meth:`head_inputs`); returns ``(weight [b, n, d], bias [b, n])``."""
        if self.head == "centroid":
            return fit_linear_head(support, labels, n_way, 0, self.head_lr, cosine=True)
        return fit_linear_head(support, labels, n_way, self.head_steps, self.head_lr,
                               cosine=self.cosine, scale=self.episode_scale(n_way),
                               weight_decay=self.head_weight_decay)

    def head_logits(self, query: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        """Logits ``[b, q, n]`` of prepared query features ``[b, q, d]`` under the heads."""
        cosine = self.cosine or self.head == "centroid"
        return linear_head_logits(query, weight, bias, cosine,
                                  self.episode_scale(weight.shape[1]))

    def forward(self, episode: Episode) -> Tensor:
        with torch.no_grad():  # frozen features
            support, query = self.head_inputs(at_least_float32(self.embed(episode.support)),
                                              at_least_float32(self.embed(episode.query)))
        weight, bias = self.fit_head(support, episode.support_labels, episode.n_way)
        return self.head_logits(query, weight, bias)


@register_method("baseline_pp")
class BaselinePlusPlus(Baseline):
    """Baseline++ (Chen et al., ICLR 2019): :class:`Baseline` with a cosine classifier.

    .. math:: \\ell_c(x) = s \\cos(w_c, f_\\theta(x))

    both for pre-training over all training classes and for the per-episode head, which starts
    at the support class centroids. Same arguments as :class:`Baseline` (``classifier``
    defaults to ``"cosine"``).
    """

    default_classifier = "cosine"


@register_method("finetune")
class FineTune(Baseline):
    """Fine-tuning: :class:`Baseline` pre-training, then the whole backbone and a new head are
    fine-tuned on each episode's support set (Chen et al. 2019, section 4.3; Dhillon et al.,
    ICLR 2020, without their transductive term).

    For an episode, the head :math:`(W, c)` is first fitted on the frozen features as in
    :class:`Baseline`, then backbone and head take ``finetune_steps`` steps of full-batch
    gradient descent on the support loss,

    .. math:: (\\theta', W', c') \\leftarrow (\\theta', W', c') - \\eta \\nabla
        \\mathcal{L}_S(\\theta', W', c'), \\quad \\theta'_0 = \\theta

    and the queries are classified with :math:`(\\theta', W', c')`. BatchNorm follows the
    module's mode (running statistics in evaluation): inductive.

    **Cost.** Each episode needs its own copy of the weights, so episodes run one after
    another: per episode ``finetune_steps`` forward and backward passes of the backbone on the
    support set plus one forward pass on support and queries, and memory for one set of
    weights and gradients (:class:`Baseline` needs one forward pass per image and fits the
    heads of all episodes at once). Measured on one CPU core (Conv4, 28x28, 5-way 1-shot,
    15 queries): 13 ms per episode without fine-tuning, 39 ms with 5 steps, 57 ms with 10
    (about 4-5 ms per step), hence the small default.
    Training (pre-training) costs the same as :class:`Baseline`; validation does not (keep
    ``train.val_episodes`` small).

    Args:
        backbone: the encoder.
        num_classes: training classes (passed by the training loop).
        classifier, scale, head: as in :class:`Baseline`.
        head_steps, head_lr, head_weight_decay, head_scale: as in :class:`Baseline`.
        finetune_steps: joint backbone + head steps per episode. Default ``5``.
        finetune_lr: their step size :math:`\\eta`. Default ``0.01``.
    """

    #: Fine-tunes the backbone per episode by parameter name: no test-time augmentation wrapper.
    supports_tta = False

    def __init__(self, backbone: nn.Module, num_classes: int, classifier: str | None = None,
                 scale: float | None = None, head: str = "logistic", head_steps: int = 100,
                 head_lr: float = 1.0, head_weight_decay: float = 0.0, finetune_steps: int = 5,
                 finetune_lr: float = 0.01, head_scale: float | None = None) -> None:
        super().__init__(backbone, num_classes, classifier, scale, head, head_steps, head_lr,
                         head_weight_decay, head_scale)
        if finetune_steps < 0 or finetune_lr <= 0:
            raise ValueError(f"expected finetune_steps >= 0 and finetune_lr > 0, got "
                             f"{finetune_steps} and {finetune_lr}")
        if not math.isfinite(finetune_lr):
            raise ValueError(f"finetune_lr must be finite, got {finetune_lr}")
        self.finetune_steps = finetune_steps
        self.finetune_lr = finetune_lr

    def extra_repr(self) -> str:
        return (f"finetune_steps={self.finetune_steps}, finetune_lr={self.finetune_lr}, "
                f"{super().extra_repr()}")

    def forward(self, episode: Episode) -> Tensor:
        with torch.no_grad():
            z = at_least_float32(self.embed(episode.support))
            support, _ = self.head_inputs(z, z)
        weight, bias = self.fit_head(support, episode.support_labels, episode.n_way)
        logits = []
        for e in range(episode.batch_size):
            params = {f"backbone.{k}": v for k, v in self.backbone.named_parameters()}
            params["head.weight"] = weight[e:e + 1].clone().requires_grad_(True)
            params["head.bias"] = bias[e:e + 1].clone().requires_grad_(True)
            x_s, y_s = episode.support[e], episode.support_labels[e]

            def run(p: dict[str, Tensor], x_q: Tensor | None, x_s: Tensor = x_s) -> Tensor:
                """Logits of the support set (``x_q=None``) or of the queries ``x_q``."""
                bb = {k[len("backbone."):]: v for k, v in p.items() if k.startswith("backbone.")}
                x = x_s if x_q is None else torch.cat([x_s, x_q])
                z = at_least_float32(functional_forward(self.backbone, bb, x, episode_bn=False))
                zs, zq = self.head_inputs(z[None, :len(x_s)], z[None, len(x_s):])
                return self.head_logits(zs if x_q is None else zq, p["head.weight"],
                                        p["head.bias"])[0]

            with torch.enable_grad():
                fast = inner_loop(lambda p, y_s=y_s, run=run: F.cross_entropy(run(p, None), y_s),
                                  params, self.finetune_steps, self.finetune_lr,
                                  create_graph=False)
            with torch.no_grad():
                logits.append(run({k: v.detach() for k, v in fast.items()}, episode.query[e]))
        return torch.stack(logits)
