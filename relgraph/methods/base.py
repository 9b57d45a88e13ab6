"""The method interface: one small abstract base, batched over episodes, and the registry."""

from __future__ import annotations

import abc
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from relgraph.data.episode import Episode
from relgraph.registry import Registry

__all__ = ["FewShotMethod", "METHODS", "register_method", "build_method", "list_methods"]


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
            :mod:`relgraph.backbones`).

    Shapes:
        - ``forward(episode)``: ``episode.support`` ``[b, n*k, *x]``, ``episode.query``
          ``[b, n*q, *x]`` -> logits ``[b, n*q, n]``.
    """

    transductive: bool = False

    #: Methods that train a classifier over all training classes (Baseline, fine-tuning) set
    #: this; :func:`build_method` then passes ``num_classes``, the number of training classes
    #: (``Episode.class_ids`` index them).
    needs_num_classes: bool = False

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    #: Examples per backbone call in eval mode. Batch statistics are not used in eval mode,
    #: so chunking is exact; it keeps activations in cache (a 20-episode batch through Conv4
    #: at once is about 2x slower per image on CPU than in chunks).
    eval_chunk: int = 128

    def embed(self, x: Tensor) -> Tensor:
        """Embed every example of a batch of episodes: ``[b, m, *x] -> [b, m, d]``."""
        b = x.shape[0]
        flat = rearrange(x, "b m ... -> (b m) ...")
        if self.training or flat.shape[0] <= self.eval_chunk:
            z = self.backbone(flat)
        else:
            z = torch.cat([self.backbone(part) for part in flat.split(self.eval_chunk)])
        return rearrange(z, "(b m) d -> b m d", b=b)

    @abc.abstractmethod
    def forward(self, episode: Episode) -> Tensor:
        """Query logits ``[b, n*q, n_way]`` for a batch of episodes."""

    def loss(self, episode: Episode) -> tuple[Tensor, Tensor]:
        """Training loss and query logits: ``(scalar, [b, n*q, n_way])``.

        The default is the cross-entropy of the logits against ``episode.query_labels``;
        methods with other or auxiliary losses override this.
        """
        logits = self(episode)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                               episode.query_labels.reshape(-1))
        return loss, logits

    def extra_repr(self) -> str:
        return f"transductive={self.transductive}"


METHODS: Registry[FewShotMethod] = Registry("method")
register_method = METHODS.register


def build_method(name: str, backbone: nn.Module, num_classes: int | None = None,
                 **kwargs: Any) -> FewShotMethod:
    """Build the method registered as ``name`` on ``backbone`` (unknown names list choices).

    ``num_classes`` (the number of training classes) is passed on only to methods that declare
    ``needs_num_classes``; they cannot be built without it.
    """
    factory = METHODS.get(name)
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
