"""MAML (Finn, Abbeel & Levine, ICML 2017), first-order MAML and Reptile (Nichol, Achiam &
Schulman, 2018), on any backbone with a per-episode linear head.

All three adapt a copy of the parameters to each episode's support set by gradient descent
(:func:`relgraph.meta.inner_loop` over parameter dicts with :func:`torch.func.functional_call`)
and differ in the outer gradient: MAML differentiates through the inner loop (second order),
first-order MAML treats the inner gradients as constants, Reptile moves the initialisation
towards the adapted parameters. No module is cloned: the meta-parameters are the backbone's own
``nn.Parameter`` objects and the outer gradient reaches them by ordinary autograd, so the one
training loop, its optimisers and schedulers, and DistributedDataParallel all apply.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from relgraph.data.augment import warp_views
from relgraph.data.episode import Episode
from relgraph.meta import at_least_float32, functional_forward, inner_loop
from relgraph.methods.base import FewShotMethod, register_method

__all__ = ["GradientMetaLearner", "MAML", "FOMAML", "Reptile"]

Params = dict[str, Tensor]
_HEAD_W, _HEAD_B = "head.weight", "head.bias"
BN_MODES = ("support", "transductive")


def _backbone_part(params: Params) -> Params:
    return {k: v for k, v in params.items() if k not in (_HEAD_W, _HEAD_B)}


class GradientMetaLearner(FewShotMethod):
    """Shared machinery of MAML, first-order MAML and Reptile: per-episode adaptation of the
    backbone and a linear head by gradient descent on the support set.

    **Head.** The linear head :math:`W \\in \\mathbb{R}^{n \\times d}, c \\in \\mathbb{R}^n` starts
    at zero in every episode (the "zeroing trick" of Kao et al., ICLR 2022), so the method works
    for any number of ways (training 20-way, testing 5-way) and relabelling the classes permutes
    the logits exactly. Its first inner step sets :math:`w_k` proportional to the support mean of
    class :math:`k` minus the overall support mean; only from the second step on does the
    backbone move (its gradient is zero while :math:`W = 0`).

    **BatchNorm** (``bn``):

    - ``"support"`` (default, inductive): every BatchNorm layer normalises support *and* queries
      with the statistics of the episode's support set, in training and evaluation alike
      (MetaBN, Bronskill et al. 2020). A query's prediction depends on the support set and
      itself only. Running statistics are not used.
    - ``"transductive"``: the original MAML. Batch statistics of the support set in the inner
      loop, of the query set for the predictions, at test time too: queries influence each
      other. Sets ``transductive = True``, which the evaluation output records.

    **Test-time augmentation** (``tta_views``, set by :func:`relgraph.engine.tta.with_tta`,
    i.e. ``evaluate(..., tta=N)`` and a config's ``eval.tta``): in eval mode, every image's
    embedding under the current (adapted) parameters is the mean of its embeddings under the
    first ``N`` fixed warps (:func:`relgraph.data.augment.warp_views`), in the inner loop and
    for the queries alike, as the fixed-backbone methods' test-time augmentation. With
    ``bn="support"`` the BatchNorm statistics come from the ``N`` warped copies of the support
    set, so a query's prediction still depends on the support set and itself only (inductive).
    Training mode ignores it. ``1`` (default) is off.

    **Episodes.** ``b`` episodes per outer step are adapted one after another: their adapted
    weights differ, so a generic backbone cannot process them in one call. (``torch.func.vmap``
    over episodes does, but measured 2x slower than the loop for Conv4 on CPU.) Within an
    episode everything is batched.

    Args:
        backbone: the encoder; must expose ``out_dim``.
        inner_steps: inner gradient steps :math:`T` during training. Default ``1``.
        eval_inner_steps: inner steps in eval mode (validation, test). Default ``3``.
        inner_lr: inner step size :math:`\\alpha`. Default ``0.4`` (Finn et al., Omniglot).
        eval_inner_lr: inner step size in eval mode; ``None`` (default) uses ``inner_lr``.
            A smaller test-time step can be chosen on validation episodes: the learned
            initialisation is tuned for the training shot, and with more shots at test time
            the training step size can overshoot.
        bn: ``"support"`` (inductive) or ``"transductive"``, see above.

    Shapes:
        episode ``support [b, n*k, *x]``, ``query [b, n*q, *x]`` -> logits ``[b, n*q, n]``.
    """

    float16_autocast = False  # gradient steps inside forward: no float16 autocast

    #: Test-time augmentation by :attr:`tta_views` (the backbone is called by parameter name,
    #: so it cannot be wrapped in :class:`~relgraph.engine.tta.TTABackbone`).
    supports_tta = True

    first_order: bool = False

    def __init__(self, backbone: nn.Module, inner_steps: int = 1, eval_inner_steps: int = 3,
                 inner_lr: float = 0.4, bn: str = "support", eval_inner_lr: float | None = None
                 ) -> None:
        super().__init__(backbone)
        if bn not in BN_MODES:
            raise ValueError(f"bn must be one of {', '.join(BN_MODES)}, got {bn!r}")
        if inner_steps < 0 or eval_inner_steps < 0:
            raise ValueError(f"inner steps must be >= 0, got inner_steps={inner_steps}, "
                             f"eval_inner_steps={eval_inner_steps}")
        if inner_lr <= 0:
            raise ValueError(f"inner_lr must be > 0, got {inner_lr}")
        if eval_inner_lr is not None and eval_inner_lr <= 0:
            raise ValueError(f"eval_inner_lr must be > 0 (or None for inner_lr), got "
                             f"{eval_inner_lr}")
        out_dim = getattr(backbone, "out_dim", None)
        if not isinstance(out_dim, int):
            raise ValueError(f"{type(self).__name__} needs a backbone with an integer out_dim "
                             "(the head's input size); wrap plain modules in "
                             "relgraph.backbones.BackboneAdapter")
        self.out_dim = out_dim
        self.inner_steps = inner_steps
        self.eval_inner_steps = eval_inner_steps
        self.inner_lr = inner_lr
        self.eval_inner_lr = inner_lr if eval_inner_lr is None else eval_inner_lr
        self.bn = bn
        self.transductive = bn == "transductive"
        #: Fixed warped views averaged over in eval mode (test-time augmentation); ``1`` = off.
        self.tta_views = 1

    def extra_repr(self) -> str:
        return (f"inner_steps={self.inner_steps}, eval_inner_steps={self.eval_inner_steps}, "
                f"inner_lr={self.inner_lr}, eval_inner_lr={self.eval_inner_lr}, "
                f"bn={self.bn!r}, {super().extra_repr()}")

    def meta_parameters(self) -> Params:
        """The initialisation :math:`\\theta` that the inner loop starts from (the backbone's
        parameters, by name)."""
        return dict(self.backbone.named_parameters())

    def _initial(self, n_way: int, like: Tensor) -> Params:
        params = self.meta_parameters()
        # the head in the weights' type: ``like`` may hold token ids (a long tensor)
        dtype = next((p.dtype for p in params.values() if p.is_floating_point()),
                     like.dtype if like.is_floating_point() else torch.float32)
        params[_HEAD_W] = torch.zeros(n_way, self.out_dim, dtype=dtype, device=like.device,
                                      requires_grad=True)
        params[_HEAD_B] = torch.zeros(n_way, dtype=dtype, device=like.device,
                                      requires_grad=True)
        return params

    def functional_embed(self, params: Params, x: Tensor, n_stats: int | None) -> Tensor:
        """Embeddings of ``x [N, *x]`` under ``params``, BatchNorm statistics from
        ``x[:n_stats]`` (all rows if ``None``) -> ``[N, d]``.

        In eval mode with ``tta_views`` :math:`V > 1`: each row's embedding averaged over its
        :math:`V` fixed warps, the statistics from the :math:`V` warps of ``x[:n_stats]``.
        """
        views = 1 if self.training else self.tta_views
        if views == 1:
            return functional_forward(self.backbone, _backbone_part(params), x, n_stats=n_stats)
        s = x.shape[0] if n_stats is None else min(n_stats, x.shape[0])
        warped = warp_views(x, views)  # [V, N, *x]
        # the statistics rows first: all warps of x[:s], then all warps of the rest
        rows = torch.cat([warped[:, :s].flatten(0, 1), warped[:, s:].flatten(0, 1)])
        z = functional_forward(self.backbone, _backbone_part(params), rows,
                               n_stats=None if n_stats is None else views * s)
        head = z[:views * s].unflatten(0, (views, s))
        rest = z[views * s:].unflatten(0, (views, x.shape[0] - s))
        return torch.cat([head, rest], dim=1).mean(0)

    def _logits(self, params: Params, x: Tensor, n_stats: int | None) -> Tensor:
        return F.linear(self.functional_embed(params, x, n_stats), params[_HEAD_W], params[_HEAD_B])

    def adapt(self, support: Tensor, labels: Tensor, n_way: int, steps: int,
              create_graph: bool) -> Params:
        """Adapt backbone and head to one episode's support set.

        .. math:: \\theta'_{t+1} = \\theta'_t - \\alpha \\nabla \\mathcal{L}_S(\\theta'_t),
            \\quad \\theta'_0 = (\\theta, W = 0, c = 0)

        with :math:`\\alpha` = ``inner_lr`` in training mode and ``eval_inner_lr`` in eval mode.

        Args:
            support: ``[s, *x]`` support inputs of one episode.
            labels: ``[s]`` labels in ``0..n_way-1``.
            n_way: classes.
            steps: inner steps.
            create_graph: differentiate through the inner loop (second order).

        Returns:
            The adapted parameters, backbone names plus ``head.weight [n, d]``, ``head.bias [n]``.
        """
        def support_loss(p: Params) -> Tensor:
            return F.cross_entropy(at_least_float32(self._logits(p, support, None)), labels)

        with torch.enable_grad():
            lr = self.inner_lr if self.training else self.eval_inner_lr
            return inner_loop(support_loss, self._initial(n_way, support), steps, lr,
                              create_graph)

    def predict(self, params: Params, support: Tensor, query: Tensor) -> Tensor:
        """Query logits ``[q, n]`` of one episode under adapted ``params`` (BatchNorm as ``bn``)."""
        if self.bn == "transductive":
            return self._logits(params, query, None)
        s = support.shape[0]
        return self._logits(params, torch.cat([support, query]), s)[s:]

    def _adapt_and_predict(self, episode: Episode) -> tuple[list[Params], Tensor]:
        outer_grad = torch.is_grad_enabled()
        create_graph = outer_grad and not self.first_order
        steps = self.inner_steps if self.training else self.eval_inner_steps
        adapted, logits = [], []
        for e in range(episode.batch_size):
            fast = self.adapt(episode.support[e], episode.support_labels[e], episode.n_way, steps,
                              create_graph)
            if not outer_grad:
                fast = {k: v.detach() for k, v in fast.items()}
            adapted.append(fast)
            logits.append(self.predict(fast, episode.support[e], episode.query[e]))
        return adapted, at_least_float32(torch.stack(logits))

    def forward(self, episode: Episode) -> Tensor:
        """Query logits after adapting to each episode's support set:
        episode ``support [b, n*k, *x]``, ``query [b, n*q, *x]`` -> ``[b, n*q, n]``."""
        return self._adapt_and_predict(episode)[1]


@register_method("maml")
class MAML(GradientMetaLearner):
    """Model-Agnostic Meta-Learning (Finn et al., ICML 2017), second order.

    The outer loss is the query loss after adaptation, differentiated through the inner loop:

    .. math::
        \\theta \\leftarrow \\theta - \\beta \\nabla_\\theta \\frac{1}{B} \\sum_{e=1}^{B}
        \\mathcal{L}_{Q_e}\\big(\\theta'_e(\\theta)\\big), \\qquad
        \\theta'_e = \\theta - \\alpha \\nabla_\\theta \\mathcal{L}_{S_e}(\\theta)
        \\ \\text{(repeated } T \\text{ times)}

    The outer step (:math:`\\beta`, optimiser, schedule) is the training loop's ``train.lr``,
    ``train.optimizer`` and ``train.scheduler``; :math:`B` is ``train.episodes_per_batch``.
    Memory grows linearly with ``inner_steps`` (the graph of every inner step is kept).
    See :class:`GradientMetaLearner` for the arguments, the head and the BatchNorm modes.
    """


@register_method("fomaml")
class FOMAML(GradientMetaLearner):
    """First-order MAML (Finn et al., ICML 2017, section 5.2).

    Same as :class:`MAML` with the inner gradients treated as constants, so
    :math:`\\partial\\theta'/\\partial\\theta = I` and the outer gradient is the query-loss
    gradient at the adapted parameters:

    .. math:: g = \\frac{1}{B} \\sum_e \\nabla_{\\theta'} \\mathcal{L}_{Q_e}(\\theta'_e)

    Memory does not grow with ``inner_steps``. See :class:`GradientMetaLearner` for the
    arguments.
    """

    first_order = True


@register_method("reptile")
class Reptile(GradientMetaLearner):
    """Reptile (Nichol, Achiam & Schulman, 2018, "On First-Order Meta-Learning Algorithms").

    The inner loop runs ``inner_steps`` steps of SGD on the support set (the paper's inner
    optimiser is Adam; plain SGD here); the outer update moves :math:`\\theta` towards the
    adapted parameters :math:`\\phi_e`:

    .. math:: \\theta \\leftarrow \\theta + \\epsilon \\frac{1}{B} \\sum_e (\\phi_e - \\theta)

    It is written as the loss

    .. math:: \\mathcal{L}(\\theta) = \\frac{1}{B} \\sum_e \\tfrac{1}{2}
        \\lVert \\theta - \\operatorname{sg}(\\phi_e) \\rVert^2, \\qquad
        \\nabla_\\theta \\mathcal{L} = \\theta - \\bar\\phi

    (sg: stop-gradient), so with ``train.optimizer: sgd``, ``momentum: 0`` and
    ``lr`` :math:`= \\epsilon` the training loop performs exactly the Reptile step, and the
    usual schedulers anneal :math:`\\epsilon`. The reported training loss is this distance,
    not a classification loss. Needs ``inner_steps >= 2`` to move the backbone (the
    zero-initialised head absorbs the first step). The query logits returned with the loss
    (for the training accuracy) use the adapted parameters.

    Args:
        backbone: the encoder.
        inner_steps: inner SGD steps per episode in training. Default ``5``.
        eval_inner_steps: inner steps in evaluation. Default ``10``.
        inner_lr: inner step size. Default ``0.1``.
        eval_inner_lr: inner step size in evaluation; ``None`` (default) uses ``inner_lr``.
        bn: ``"support"`` or ``"transductive"`` (see :class:`GradientMetaLearner`).
        train_on_queries: in training, adapt on the support and query examples together
            (Reptile has no outer query loss, so a training episode's queries are simply more
            labelled data for the inner loop, as the paper's larger "train shots"; the
            reported training accuracy is then on examples the inner loop has seen).
            Evaluation always adapts on the support set only. Default ``True``.
    """

    first_order = True

    def __init__(self, backbone: nn.Module, inner_steps: int = 5, eval_inner_steps: int = 10,
                 inner_lr: float = 0.1, bn: str = "support", train_on_queries: bool = True,
                 eval_inner_lr: float | None = None) -> None:
        super().__init__(backbone, inner_steps, eval_inner_steps, inner_lr, bn, eval_inner_lr)
        self.train_on_queries = bool(train_on_queries)

    def loss(self, episode: Episode) -> tuple[Tensor, Tensor]:
        """Reptile's surrogate loss (its gradient is :math:`\\theta - \\bar\\phi`) and the
        query logits: ``([], [b, n*q, n])``."""
        with torch.no_grad():
            if self.train_on_queries:
                # Reptile has no query loss: in training the inner loop sees every labelled
                # example of the episode (the paper's "train shots" > "shots")
                episode = replace(
                    episode, support=torch.cat([episode.support, episode.query], dim=1),
                    support_labels=torch.cat([episode.support_labels, episode.query_labels],
                                             dim=1))
            adapted, logits = self._adapt_and_predict(episode)
        theta = self.meta_parameters()
        total = sum(
            0.5 * sum((theta[k] - fast[k]).pow(2).sum() for k in theta) for fast in adapted)
        return total / episode.batch_size, logits
