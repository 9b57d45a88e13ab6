"""The method interface: one small abstract base, batched over episodes, and the registry."""

from __future__ import annotations

import abc
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from relgraph.data.episode import Episode
from relgraph.data.sampler import episode_seed
from relgraph.generative.hallucinators import HALLUCINATORS, Hallucinator
from relgraph.registry import Registry

__all__ = ["FewShotMethod", "METHODS", "register_method", "build_method", "list_methods",
           "embedding_size"]


def embedding_size(backbone: nn.Module) -> int:
    """The embedding size ``d`` of a backbone: its integer ``out_dim``.

    Raises:
        ValueError: the backbone has no integer ``out_dim`` (say the size with the method's
            own argument where it has one, e.g. ``embed_dim``/``in_dim``).
    """
    dim = getattr(backbone, "out_dim", None)
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"could not read the embedding size of {type(backbone).__name__}: "
                         f"expected an integer out_dim >= 1, got {dim!r}; give the backbone an "
                         "out_dim attribute")
    return dim


class FewShotMethod(nn.Module, abc.ABC):
    """Base of every few-shot method: maps a batch of episodes to query logits.

    Methods are stateless between episodes (nothing about an episode is kept on ``self``)
    and batched: one forward pass handles ``b`` episodes.

    **Inductive vs transductive.** ``transductive = False`` (the default) promises that the
    prediction for a query depends only on the support set and that query: permuting,
    dropping or replacing the other queries leaves it unchanged. Two things guarantee it in
    relgraph: methods never mix query embeddings with each other, and the engine evaluates in
    ``eval()`` mode, where BatchNorm normalises with its running statistics instead of the
    statistics of the current batch, so no batch statistic leaks from one query to another.
    (In training mode, BatchNorm uses the batch statistics of the episode's supports and
    queries, as in the papers.) Transductive methods set ``transductive = True`` (as a class
    attribute, or per instance for methods offering both modes).

    **Generated supports** (methods with ``supports_augment``: ProtoNet, Matching, Relation,
    GNN, edge-labeling GNN). The method argument ``augment`` (see :meth:`_setup_augment`) adds
    a :class:`~relgraph.generative.Hallucinator` as the submodule ``hallucinator``: the method
    passes its support embeddings through :meth:`augment_support`, which appends ``per_class``
    generated examples per class as extra support nodes (flagged, optionally weighted), and its
    loss adds the hallucinator's own loss (:meth:`augment_loss`). Generation reads the support
    set only; in eval mode its noise comes from a generator seeded with ``augment.seed``, so
    evaluation is deterministic and inductive. In training mode the noise of step ``t`` comes
    from a generator seeded with ``(augment.seed, t)``, ``t`` being the buffer
    ``augment_step`` (like BatchNorm's ``num_batches_tracked``: a counter of training passes,
    saved in checkpoints), so training is reproducible and resumes exactly.

    Args:
        backbone: the encoder, mapping ``[m, c, h, w]`` to ``[m, d]`` (see
            :mod:`relgraph.backbones`).

    Shapes:
        - ``forward(episode)``: ``episode.support`` ``[b, n*k, *x]``, ``episode.query``
          ``[b, n*q, *x]`` -> logits ``[b, n*q, n]``.
        - :meth:`augment_support`: ``[b, s, d], [b, s]`` -> ``[b, s + n*m, d]``,
          ``[b, s + n*m]`` x 3.
    """

    transductive: bool = False

    #: Methods that train a classifier over all training classes (Baseline, fine-tuning) set
    #: this; :func:`build_method` then passes ``num_classes``, the number of training classes
    #: (``Episode.class_ids`` index them).
    needs_num_classes: bool = False

    #: Whether the method takes the ``augment`` argument (generated support examples).
    supports_augment: bool = False

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.hallucinator: Hallucinator | None = None
        self.augment_per_class = 0
        self.augment_weight = 1.0
        self.augment_seed = 0

    #: Examples per backbone call in eval mode. Batch statistics are not used in eval mode,
    #: so chunking is exact; it keeps activations in cache (a 20-episode batch through Conv4
    #: at once is about 2x slower per image on CPU than in chunks).
    eval_chunk: int = 128

    def embed(self, x: Tensor) -> Tensor:
        """Embed every example of a batch of episodes: ``[b, m, *x] -> [b, m, d]``."""
        b = x.shape[0]
        z = self.run_backbone(self.backbone, rearrange(x, "b m ... -> (b m) ..."))
        return rearrange(z, "(b m) d -> b m d", b=b)

    def run_backbone(self, fn: Callable[[Tensor], Tensor], flat: Tensor) -> Tensor:
        """``fn(flat)`` for a flat batch of examples ``[N, *x]``, in chunks of
        :attr:`eval_chunk` examples in eval mode (exact: BatchNorm uses running statistics
        there); one call in training mode. ``fn`` is the backbone or one of its methods
        (e.g. ``forward_map``)."""
        if self.training or flat.shape[0] <= self.eval_chunk:
            return fn(flat)
        return torch.cat([fn(part) for part in flat.split(self.eval_chunk)])

    @abc.abstractmethod
    def forward(self, episode: Episode) -> Tensor:
        """Query logits ``[b, n*q, n_way]`` for a batch of episodes."""

    def forward_with_aux(self, episode: Episode) -> tuple[Tensor, Tensor]:
        """Query logits and the auxiliary loss of the same pass: ``([b, n*q, n_way], [])``.

        The auxiliary loss is the hallucinator's (:meth:`augment_loss`); the default returns
        ``(self(episode), 0)``. Methods supporting ``augment`` override it and implement
        ``forward`` as its first output.
        """
        logits = self(episode)
        return logits, logits.new_zeros((), dtype=torch.float32)

    def loss(self, episode: Episode) -> tuple[Tensor, Tensor]:
        """Training loss and query logits: ``(scalar, [b, n*q, n_way])``.

        The default is the cross-entropy of the logits against ``episode.query_labels``, plus
        the auxiliary loss of :meth:`forward_with_aux` (0 without ``augment``); methods with
        other losses override this and add the auxiliary loss themselves.
        """
        logits, aux = self.forward_with_aux(episode)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                               episode.query_labels.reshape(-1))
        return loss + aux, logits

    # -- generated support examples ---------------------------------------------------------
    def _setup_augment(self, augment: Mapping[str, Any] | None, dim: int) -> None:
        """Configure generated support examples from the ``augment`` method argument.

        Called at the end of the constructor of methods with ``supports_augment``, so the
        hallucinator's parameters exist before an optimiser is made or a checkpoint loaded.

        Args:
            augment: ``None`` (no generation) or a mapping with

                - ``hallucinator``: a registered name (``"vae"``, ``"gan"``), required;
                - ``per_class``: examples generated per class, ``m >= 0`` (default 5);
                - ``weight``: weight of a generated example relative to a real one, ``> 0``
                  (default 1.0; how each method uses it is in its docstring);
                - ``seed``: seed of the generation noise (default 0): evaluation uses it as
                  is, training mixes it with the step counter ``augment_step``;
                - any other key: an argument of the hallucinator (e.g. ``beta``, ``critic``).
            dim: the feature size the hallucinator works in.
        """
        if augment is None:
            return
        if not self.supports_augment:
            raise ValueError(f"{type(self).__name__} does not support method_args.augment "
                             "(generated support examples); use one of protonet, matching, "
                             "relation, gnn, edge_gnn, or drop augment")
        if not isinstance(augment, Mapping):
            raise ValueError(f"method_args.augment must be a mapping such as {{hallucinator: "
                             f"vae, per_class: 5}}, got {augment!r}")
        args = dict(augment)
        name = args.pop("hallucinator", None)
        if not isinstance(name, str):
            raise ValueError(f"method_args.augment needs hallucinator: one of "
                             f"{', '.join(HALLUCINATORS.list())}; got {name!r}")
        if name not in HALLUCINATORS:
            raise ValueError(f"method_args.augment.hallucinator: unknown hallucinator {name!r}; "
                             f"choose one of: {', '.join(HALLUCINATORS.list())}")
        per_class = args.pop("per_class", 5)
        weight = args.pop("weight", 1.0)
        seed = args.pop("seed", 0)
        if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 0:
            raise ValueError(f"method_args.augment.per_class must be an integer >= 0 (examples "
                             f"generated per class), got {per_class!r}")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight <= 0:
            raise ValueError(f"method_args.augment.weight must be a number > 0 (a generated "
                             f"example's weight relative to a real one), got {weight!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"method_args.augment.seed must be an integer, got {seed!r}")
        factory = HALLUCINATORS.get(name)
        try:
            self.hallucinator = factory(dim=dim, **args)
        except TypeError as exc:
            accepted = [p for p in inspect.signature(factory).parameters if p != "dim"]
            raise ValueError(f"method_args.augment: hallucinator {name!r} got an unknown "
                             f"argument ({exc}); besides hallucinator, per_class, weight and "
                             f"seed it accepts: {', '.join(accepted)}") from exc
        self.augment_per_class = per_class
        self.augment_weight = float(weight)
        self.augment_seed = seed
        self.register_buffer("augment_step", torch.zeros((), dtype=torch.long))

    def _augment_generator(self, salt: int) -> torch.Generator:
        """The CPU generator of the generation noise: ``augment.seed`` in eval mode; in
        training mode, seeded from ``(augment.seed ^ salt, augment_step)``."""
        if not self.training:
            return torch.Generator().manual_seed(self.augment_seed)
        step = int(self.augment_step)
        return torch.Generator().manual_seed(episode_seed(self.augment_seed ^ salt, step))

    def augment_support(self, support: Tensor, support_labels: Tensor, n_way: int
                        ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Append ``per_class`` generated examples per class to the support embeddings.

        The identity (plus all-False flags and unit weights) without ``augment``. Generation
        reads the supports only. In eval mode the noise comes from a fresh generator seeded
        with ``augment.seed`` at every call, so evaluating the same episodes twice gives the
        same result and a query's prediction still depends only on the support set and that
        query. In training mode it is seeded from ``augment.seed`` and the training pass
        counter ``augment_step``, which this call then advances.

        Args:
            support: ``[b, s, d]`` support embeddings.
            support_labels: ``[b, s]`` labels in ``0..n_way-1``.
            n_way: classes per episode.

        Returns:
            ``(support [b, s + n*m, d], labels [b, s + n*m], is_generated [b, s + n*m] bool,
            weights [b, s + n*m])``: the real supports first, then the generated ones
            (weight ``augment.weight``; real supports weigh 1).
        """
        real_flags = torch.zeros(support_labels.shape, dtype=torch.bool,
                                 device=support.device)
        real_weights = torch.ones(support_labels.shape, dtype=support.dtype,
                                  device=support.device)
        if self.hallucinator is None:
            return support, support_labels, real_flags, real_weights
        generator = self._augment_generator(_GENERATE_SALT)
        if self.training:
            with torch.no_grad():
                self.augment_step += 1
        if self.augment_per_class == 0:
            return support, support_labels, real_flags, real_weights
        fake, fake_labels = self.hallucinator(support, support_labels, n_way,
                                              self.augment_per_class, generator)
        fake_flags = torch.ones(fake_labels.shape, dtype=torch.bool, device=support.device)
        return (torch.cat([support, fake.to(support.dtype)], dim=1),
                torch.cat([support_labels, fake_labels], dim=1),
                torch.cat([real_flags, fake_flags], dim=1),
                torch.cat([real_weights, torch.full_like(fake_flags, self.augment_weight,
                                                         dtype=support.dtype)], dim=1))

    def augment_loss(self, support: Tensor, support_labels: Tensor, query: Tensor,
                     query_labels: Tensor) -> Tensor:
        """The hallucinator's own loss on the episode's real features (training mode only).

        0 without ``augment`` and in eval mode (so evaluation never reads query labels).

        Shapes:
            ``[b, s, d], [b, s], [b, q, d], [b, q] -> []``
        """
        if self.hallucinator is None or not self.training:
            return support.new_zeros((), dtype=torch.float32)
        return self.hallucinator.aux_loss(support, support_labels, query, query_labels,
                                          self._augment_generator(_AUX_SALT)).float()

    def extra_repr(self) -> str:
        return f"transductive={self.transductive}"


#: Salts separating the training noise of generation and of the hallucinator's own loss.
_GENERATE_SALT, _AUX_SALT = 0x6E4_E7A7E, 0xA0C_1055

METHODS: Registry[FewShotMethod] = Registry("method")
register_method = METHODS.register


def build_method(name: str, backbone: nn.Module, num_classes: int | None = None,
                 **kwargs: Any) -> FewShotMethod:
    """Build the method registered as ``name`` on ``backbone`` (unknown names list choices).

    ``num_classes`` (the number of training classes) is passed on only to methods that declare
    ``needs_num_classes``; they cannot be built without it.
    """
    factory = METHODS.get(name)
    if kwargs.get("augment") is not None and not getattr(factory, "supports_augment", False):
        able = [m for m in METHODS.list() if getattr(METHODS.get(m), "supports_augment", False)]
        raise ValueError(f"method {name!r} does not support method_args.augment (generated "
                         f"support examples); methods that do: {', '.join(able)}")
    if getattr(factory, "needs_num_classes", False):
        if num_classes is None:
            raise ValueError(f"method {name!r} trains a classifier over the training classes "
                             "and needs num_classes (the training loop passes it; pass "
                             "num_classes=... when building it yourself)")
        kwargs["num_classes"] = num_classes
    return factory(backbone=backbone, **kwargs)


def list_methods() -> list[str]:
    """Names of the registered methods."""
    return METHODS.list()
