"""The method interface: one small abstract base, batched over episodes, and the registry.

Two families build on :class:`FewShotMethod`:

- the relational heads (:class:`~relgraph.methods.head.RelationalHead`: ProtoNet, Matching,
  Relation, GNN, edge-labeling GNN, PyG convolutions), which see an episode only as an
  :class:`~relgraph.graph.EpisodeGraph` of embeddings: embed -> graph -> relate;
- the methods that adapt to each episode by gradient steps (MAML, first-order MAML, Reptile,
  fine-tuning, Baseline, Meta-Transfer Learning), which need the images themselves.
"""

from __future__ import annotations

import abc
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from relgraph.backbones.embed import embed_examples
from relgraph.data.episode import Episode
from relgraph.registry import Registry

__all__ = ["FewShotMethod", "METHODS", "Variant", "register_method", "register_variant",
           "build_method", "method_class", "list_methods", "embedding_size", "cross_entropy"]


def embedding_size(backbone: nn.Module, given: int | None = None, name: str = "embed_dim"
                   ) -> int:
    """The embedding size ``d``: ``given`` when not ``None``, else the backbone's ``out_dim``.

    Args:
        backbone: the encoder.
        given: the size passed to the method (its ``embed_dim`` / ``in_dim`` argument).
        name: that argument's name, for the error message.

    Raises:
        ValueError: neither is a positive integer (the message says which argument to pass).
    """
    dim = given if given is not None else getattr(backbone, "out_dim", None)
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"could not read the embedding size of {type(backbone).__name__}: "
                         f"expected an integer out_dim >= 1 (or {name}=... >= 1), got "
                         f"{dim!r}; give the backbone an out_dim attribute or pass {name}")
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

    Args:
        backbone: the encoder, mapping ``[m, c, h, w]`` to ``[m, d]`` (see
            :mod:`relgraph.backbones`); ``None``: the inputs are features already.

    Shapes:
        ``forward(episode)``: ``episode.support`` ``[b, n*k, *x]``, ``episode.query``
        ``[b, n*q, *x]`` -> logits ``[b, n*q, n]``.
    """

    transductive: bool = False

    #: Methods that train a classifier over all training classes (Baseline, fine-tuning) set
    #: this; :func:`build_method` then passes ``num_classes``, the number of training classes
    #: (``Episode.class_ids`` index them).
    needs_num_classes: bool = False

    #: Whether the method takes the ``augment`` argument (generated support examples).
    supports_augment: bool = False

    #: Whether, in eval mode, an example's embedding does not depend on the episode it is in,
    #: so evaluation may embed every distinct example once and reuse it (the relational heads);
    #: ``False`` for methods that adapt their backbone per episode.
    caches_embeddings: bool = False

    #: Examples per backbone call in eval mode (see :func:`~relgraph.backbones.embed_examples`).
    eval_chunk: int = 128

    #: ``False`` for methods that take gradient steps inside their forward pass (an inner
    #: loop, a head fitted per episode): those gradients are not loss-scaled, so under float16
    #: autocast they turn non-finite and every training step is skipped (seen: MAML on a GPU
    #: learnt nothing). Training and :func:`~relgraph.engine.evaluate` then run such a method
    #: in float32 with a warning; bfloat16 autocast (float32's range) is kept.
    float16_autocast: bool = True

    #: A frozen backbone (the training loop sets it for ``train.backbone_lr_scale: 0``) stays
    #: in eval mode when the method trains: its BatchNorm layers keep, and use, the running
    #: statistics they came with instead of each episode's.
    frozen_backbone: bool = False

    def __init__(self, backbone: nn.Module | None) -> None:
        super().__init__()
        self.backbone = backbone if backbone is not None else nn.Identity()

    def train(self, mode: bool = True) -> FewShotMethod:
        """Set the training mode (``nn.Module.train``); a :attr:`frozen_backbone` stays in eval
        mode."""
        super().train(mode)
        if self.frozen_backbone:
            self.backbone.eval()
        return self

    def embed(self, x: Tensor) -> Tensor:
        """Embed every example of a batch of episodes: ``[b, m, *x] -> [b, m, d]``."""
        return embed_examples(self.backbone, x, "vector", self.eval_chunk)

    @abc.abstractmethod
    def forward(self, episode: Episode) -> Tensor:
        """Query logits ``[b, n*q, n_way]`` for a batch of episodes."""

    def loss(self, episode: Episode) -> tuple[Tensor, Tensor]:
        """Training loss and query logits: ``(scalar, [b, n*q, n_way])``.

        The default is the cross-entropy of the logits against ``episode.query_labels``.
        """
        logits = self(episode)
        return cross_entropy(logits, episode.query_labels), logits

    def extra_repr(self) -> str:
        return f"transductive={self.transductive}"


def cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy of ``[b, q, n]`` logits against ``[b, q]`` labels, in float32."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1))


METHODS: Registry[FewShotMethod] = Registry("method")
register_method = METHODS.register


def _method_class(factory: Any) -> Any:
    """The class behind a registry entry (a class, or a ``functools.partial`` of one)."""
    return getattr(factory, "func", factory)


def build_method(name: str, backbone: nn.Module | None, num_classes: int | None = None,
                 **kwargs: Any) -> FewShotMethod:
    """Build the method registered as ``name`` on ``backbone`` (unknown names list choices).

    ``num_classes`` (the number of training classes) is passed on only to methods that declare
    ``needs_num_classes``; they cannot be built without it.
    """
    factory = METHODS.get(name)
    cls = _method_class(factory)
    if kwargs.get("augment") is not None and not getattr(cls, "supports_augment", False):
        able = [m for m in METHODS.list()
                if getattr(_method_class(METHODS.get(m)), "supports_augment", False)]
        raise ValueError(f"method {name!r} does not support method_args.augment (generated "
                         f"support examples); methods that do: {', '.join(able)}")
    if getattr(cls, "needs_num_classes", False):
        if num_classes is None:
            raise ValueError(f"method {name!r} trains a classifier over the training classes "
                             "and needs num_classes (the training loop passes it; pass "
                             "num_classes=... when building it yourself)")
        kwargs["num_classes"] = num_classes
    return factory(backbone=backbone, **kwargs)


def method_class(name: str) -> type[FewShotMethod]:
    """The class of the method registered as ``name`` (variants: the class they build)."""
    return _method_class(METHODS.get(name))


def list_methods() -> list[str]:
    """Names of the registered methods."""
    return METHODS.list()


class Variant:
    """A registry entry that builds ``cls`` with some arguments fixed.

    Example: ``register_variant("gnn_transductive", GNN, "gnn", transductive=True)``. Passing a
    fixed argument again is an error naming the base entry to use instead.

    Args:
        cls: the method class.
        base: the registry name of the unrestricted entry (for the error message).
        fixed: the fixed keyword arguments.
    """

    def __init__(self, cls: type[FewShotMethod], base: str, **fixed: Any) -> None:
        self.func = cls
        self.base = base
        self.fixed = fixed
        self.__doc__ = (f":class:`{cls.__name__}` with "
                        + ", ".join(f"``{k}={v!r}``" for k, v in fixed.items()) + ".")

    def __call__(self, *args: Any, **kwargs: Any) -> FewShotMethod:
        clash = sorted(set(kwargs) & set(self.fixed))
        if clash:
            raise ValueError(f"this registry entry sets {', '.join(clash)} itself; use method "
                             f"{self.base!r} to choose {'it' if len(clash) == 1 else 'them'}")
        return self.func(*args, **self.fixed, **kwargs)


def register_variant(name: str, cls: type[FewShotMethod], base: str, **fixed: Any) -> Variant:
    """Register ``cls`` under ``name`` with ``fixed`` keyword arguments (see :class:`Variant`)."""
    variant = Variant(cls, base, **fixed)
    METHODS.register(name)(variant)
    return variant
