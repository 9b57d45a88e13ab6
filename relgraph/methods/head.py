"""Relational heads: episode -> embed -> episode graph -> relate -> logits.

Every metric and graph method (ProtoNet, Matching, Relation, GNN, edge-labeling GNN, PyG
convolutions) is a :class:`RelationalHead`. It implements one step, :meth:`RelationalHead.relate`,
on an :class:`~relgraph.graph.EpisodeGraph`; the shared steps around it are the same for all:

1. **embed** (:meth:`~RelationalHead.embed_episode`): the backbone maps every support and query
   once, batched over episodes (:func:`~relgraph.backbones.embed.embed_examples`);
2. **build the graph** (:meth:`~RelationalHead.build_graph`): generated supports are inserted
   (:class:`~relgraph.generative.stage.SupportGenerator`, with ``augment``), then the graph of
   supports, queries and unlabelled nodes with its message mask;
3. **relate** (:meth:`~RelationalHead.relate`): the head's logits ``[b, q, n_way]``;
   :meth:`~RelationalHead.relate_loss` its training loss (cross-entropy by default).

A head never calls the backbone and never sees the queries' labels, so it runs unchanged on
precomputed features (:meth:`~RelationalHead.forward_features`), and evaluation can embed every
distinct example once (:mod:`relgraph.engine.evaluate`).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from relgraph.backbones.embed import embed_examples
from relgraph.data.episode import Episode
from relgraph.generative.stage import SupportGenerator, build_support_generator
from relgraph.graph.episode_graph import EpisodeGraph
from relgraph.methods.base import FewShotMethod, cross_entropy
from relgraph.nn.precision import compute_dtype

__all__ = ["RelationalHead"]


class RelationalHead(FewShotMethod):
    """Base of the heads that relate the nodes of an episode graph.

    Subclasses implement :meth:`relate` (and :meth:`relate_loss` when the paper's loss is not
    the cross-entropy of the logits), and call :meth:`setup_augment` at the end of their
    constructor when they support generated supports.

    Args:
        backbone: the encoder; ``None`` when the inputs are features already.

    Shapes:
        - :meth:`embed_episode`: episode ``support [b, s, *x]``, ``query [b, q, *x]`` ->
          ``[b, s, d], [b, q, d]``.
        - :meth:`build_graph`: ``[b, s, d], [b, s], [b, q, d]`` -> graph with
          ``x [b, s + s_gen + q + u, d]``.
        - :meth:`relate`: graph -> logits ``[b, q, n_way]``.
    """

    caches_embeddings = True
    supports_augment = True

    #: What the head reads from the backbone: ``"vector"`` or ``"map"`` (flattened feature
    #: maps, e.g. the Relation Network's).
    embedding: str = "vector"

    #: Whether the head uses unlabelled nodes (semi-supervised episodes); heads that do not
    #: ignore them (they are then neither embedded nor put in the graph).
    uses_unlabelled: bool = False

    #: Old parameter name prefixes -> new ones, for checkpoints written before a rename.
    renamed_parameters: Mapping[str, str] = {"hallucinator.": "support_generator.hallucinator.",
                                             "augment_step": "support_generator.step"}

    def __init__(self, backbone: nn.Module | None) -> None:
        super().__init__(backbone)
        self.support_generator: SupportGenerator | None = None
        self._register_load_state_dict_pre_hook(self._rename_old_parameters)

    def setup_augment(self, augment: Mapping[str, Any] | None, dim: int) -> None:
        """Insert generated supports with the ``augment`` method argument (see
        :func:`~relgraph.generative.stage.build_support_generator`); ``dim`` is the size of the
        features the hallucinator works on. Call it at the end of the constructor, so its
        parameters exist before an optimiser is made or a checkpoint loaded."""
        if augment is not None and not self.supports_augment:
            raise ValueError(f"{type(self).__name__} does not support method_args.augment")
        self.support_generator = build_support_generator(augment, dim)

    # -- step 1: embed ------------------------------------------------------------------------
    def embed_episode(self, episode: Episode) -> tuple[Tensor, Tensor]:
        """Support and query embeddings ``([b, s, d], [b, q, d])`` in float32.

        Supports and queries go through the backbone in two calls (in training mode BatchNorm
        normalises each with its own statistics, as the papers' code does).
        """
        return self.embed_inputs(episode.support), self.embed_inputs(episode.query)

    def embed_inputs(self, x: Tensor) -> Tensor:
        """Embed ``[b, m, *x]`` inputs as this head reads them (:attr:`embedding`):
        ``[b, m, d]`` in float32 (float64 for a float64 model, see
        :func:`~relgraph.nn.precision.compute_dtype`)."""
        z = embed_examples(self.backbone, x, self.embedding, self.eval_chunk)
        return z.to(compute_dtype(z))

    # -- step 2: build the graph --------------------------------------------------------------
    def build_graph(self, support: Tensor, support_labels: Tensor, query: Tensor, n_way: int,
                    unlabelled: Tensor | None = None) -> EpisodeGraph:
        """The episode graphs of embedded episodes, generated supports inserted.

        Args:
            support: ``[b, s, d]`` support embeddings.
            support_labels: ``[b, s]`` labels in ``0..n_way-1``.
            query: ``[b, q, d]`` query embeddings.
            n_way: classes per episode.
            unlabelled: ``[b, u, d]`` embeddings of unlabelled examples; default none.
        """
        generated = weights = None
        if self.support_generator is not None:
            support, support_labels, generated, weights = self.support_generator(
                support, support_labels, n_way)
        return EpisodeGraph.build(support, support_labels, query, n_way, self.transductive,
                                  is_generated=generated, support_weights=weights,
                                  unlabelled=unlabelled)

    def embed_unlabelled(self, episode: Episode) -> Tensor | None:
        """Embeddings ``[b, u, d]`` of the episode's unlabelled examples, or ``None`` (none
        given, or a head that does not use them)."""
        if episode.unlabelled is None or not self.uses_unlabelled:
            return None
        return self.embed_inputs(episode.unlabelled)

    def graph(self, episode: Episode) -> EpisodeGraph:
        """Embed a batch of episodes and build their graphs (steps 1 and 2)."""
        support, query = self.embed_episode(episode)
        return self.build_graph(support, episode.support_labels, query, episode.n_way,
                                self.embed_unlabelled(episode))

    # -- step 3: relate -----------------------------------------------------------------------
    @abc.abstractmethod
    def relate(self, graph: EpisodeGraph) -> Tensor:
        """Query logits ``[b, q, n_way]`` of a batch of episode graphs."""

    def relate_loss(self, graph: EpisodeGraph, query_labels: Tensor) -> tuple[Tensor, Tensor]:
        """Training loss and logits of a batch of graphs: ``(scalar, [b, q, n_way])``.

        The default is the cross-entropy of :meth:`relate`'s logits; heads with the paper's
        own loss (Relation's MSE, the edge loss of the edge-labeling GNN) override it.

        Shapes:
            graph, ``query_labels [b, q]`` -> ``([], [b, q, n_way])``
        """
        logits = self.relate(graph)
        return cross_entropy(logits, query_labels), logits

    # -- the composed method ------------------------------------------------------------------
    def forward(self, episode: Episode) -> Tensor:
        """Query logits ``[b, q, n_way]``: embed, build the graph, relate."""
        return self.relate(self.graph(episode))

    def forward_features(self, support: Tensor, support_labels: Tensor, query: Tensor,
                         n_way: int, unlabelled: Tensor | None = None) -> Tensor:
        """Query logits of episodes given as embeddings (no backbone call): build the graph
        and relate. ``[b, s, d], [b, s], [b, q, d], [b, u, d] -> [b, q, n_way]``."""
        if not self.uses_unlabelled:
            unlabelled = None
        return self.relate(self.build_graph(support, support_labels, query, n_way, unlabelled))

    def loss(self, episode: Episode) -> tuple[Tensor, Tensor]:
        """Training loss and query logits: ``(scalar, [b, q, n_way])``.

        :meth:`relate_loss` on the episode graphs, plus the hallucinator's own loss with
        ``augment`` (computed on the real embeddings, before generation).
        """
        support, query = self.embed_episode(episode)
        aux = None
        if self.support_generator is not None:
            aux = self.support_generator.loss(support, episode.support_labels, query,
                                              episode.query_labels)
        graph = self.build_graph(support, episode.support_labels, query, episode.n_way,
                                 self.embed_unlabelled(episode))
        loss, logits = self.relate_loss(graph, episode.query_labels)
        return (loss if aux is None else loss + aux), logits

    def _rename_old_parameters(self, state_dict, prefix, *args) -> None:  # noqa: ANN001
        """Load checkpoints written before a parameter was renamed (see
        :attr:`renamed_parameters`)."""
        for key in list(state_dict):
            if not key.startswith(prefix):
                continue
            local = key[len(prefix):]
            for old, new in self.renamed_parameters.items():
                if local.startswith(old) and not local.startswith(new):
                    state_dict[prefix + new + local[len(old):]] = state_dict.pop(key)
                    break

    def extra_repr(self) -> str:
        return f"transductive={self.transductive}"
