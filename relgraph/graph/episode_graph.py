"""The episode graph: every episode becomes a fully connected graph of its examples.

Node order, per episode: the ``s`` labelled supports (the given ones, then any generated
ones), then the ``u`` unlabelled nodes (extra examples without labels, as in semi-supervised
episodes), then the ``q`` queries, ``n = s + u + q``. Supports and unlabelled nodes form the
*context* (nodes ``0..s+u-1``), the nodes every query may hear. The graph carries what a
relational head may see: node features, support labels, node roles, flags and weights, and the
message mask.
It never carries the queries' labels: a head cannot read them, and the loss receives them
separately.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["EpisodeGraph", "message_mask", "UNLABELLED"]

#: Label of the nodes whose class the graph does not carry (queries, unlabelled nodes).
UNLABELLED = -1

QUERY_FILLS = ("zero", "uniform")


def message_mask(is_query: Tensor, transductive: bool) -> Tensor:
    """Which node pairs may exchange messages: ``[b, n] -> [b, n, n]`` bool.

    ``mask[b, i, j]`` is True when node ``i`` may receive a message from node ``j``.

    Inductive (``transductive=False``): every node receives from the non-query nodes (the
    supports and any unlabelled nodes) and from itself, and from no other query. Non-query
    nodes therefore never hear of queries, so no query can reach another even through a
    support over several layers, and each query's prediction depends only on the non-query
    nodes and itself (one pass for all queries, instead of one graph per query as in the
    reference code). Transductive: every edge.

    Shapes:
        ``is_query [b, n] -> [b, n, n]``
    """
    b, n = is_query.shape
    if transductive:
        return torch.ones(b, n, n, dtype=torch.bool, device=is_query.device)
    from_support = (~is_query).unsqueeze(1).expand(b, n, n)
    eye = torch.eye(n, dtype=torch.bool, device=is_query.device).unsqueeze(0)
    return from_support | eye


@dataclass(frozen=True)
class EpisodeGraph:
    """A batch of ``b`` episode graphs of ``n`` nodes each.

    Build one with :meth:`build` (from embeddings) or :meth:`from_episode`.

    Attributes:
        x: node features ``[b, n, d]`` (supports, then unlabelled nodes, then queries).
        labels: ``[b, n]`` long: the class (``0..n_way-1``) of every support node,
            :data:`UNLABELLED` (-1) for queries and unlabelled nodes.
        is_query: ``[b, n]`` bool, the query nodes (the ones to classify).
        is_unlabelled: ``[b, n]`` bool, extra nodes without labels that are not queries.
        is_generated: ``[b, n]`` bool, the support nodes that were generated (hallucinated,
            see :mod:`relgraph.generative`) rather than given.
        node_weights: ``[b, n]`` weight of every node (1 for given nodes, the generation
            weight for generated ones).
        mask: ``[b, n, n]`` bool, ``mask[b, i, j]``: node ``i`` receives messages from node
            ``j`` (see :func:`message_mask`).
        n_way: classes per episode.
        n_support: labelled support nodes per episode ``s`` (generated ones included).
        n_query: query nodes per episode ``q``.
        transductive: whether queries may exchange messages.
        n_unlabelled: unlabelled nodes per episode ``u``.

    Shapes:
        ``n = s + u + q``; nodes ``0..s-1`` supports, ``s..s+u-1`` unlabelled, ``s+u..n-1``
        queries.
    """

    x: Tensor
    labels: Tensor
    is_query: Tensor
    is_unlabelled: Tensor
    is_generated: Tensor
    node_weights: Tensor
    mask: Tensor
    n_way: int
    n_support: int
    n_query: int
    transductive: bool
    n_unlabelled: int = 0

    @classmethod
    def build(cls, support: Tensor, support_labels: Tensor, query: Tensor, n_way: int,
              transductive: bool = False, is_generated: Tensor | None = None,
              support_weights: Tensor | None = None,
              unlabelled: Tensor | None = None) -> EpisodeGraph:
        """Build the graphs of a batch of episodes from their node features.

        Args:
            support: ``[b, s, d]`` support features (generated ones included, if any).
            support_labels: ``[b, s]`` their labels in ``0..n_way-1``.
            query: ``[b, q, d]`` query features.
            n_way: classes per episode.
            transductive: let queries exchange messages.
            is_generated: ``[b, s]`` bool, which supports were generated; default none.
            support_weights: ``[b, s]`` weights of the supports; default 1.
            unlabelled: ``[b, u, d]`` features of unlabelled (non-query) nodes; default none.

        Shapes:
            ``[b, s, d], [b, s], [b, q, d] -> x [b, s + u + q, d]``
        """
        if support.dim() != 3 or query.dim() != 3:
            raise ValueError(f"expected support [b, s, d] and query [b, q, d], got "
                             f"{tuple(support.shape)} and {tuple(query.shape)}")
        b, s, d = support.shape
        q = query.shape[1]
        if query.shape[0] != b or query.shape[2] != d:
            raise ValueError(f"support {tuple(support.shape)} and query {tuple(query.shape)} "
                             "must have the same batch and feature sizes")
        for name, t in (("support_labels", support_labels), ("is_generated", is_generated),
                        ("support_weights", support_weights)):
            if t is not None and tuple(t.shape) != (b, s):
                raise ValueError(f"expected {name} of shape {(b, s)} (one per support "
                                 f"node), got {tuple(t.shape)}")
        parts = [support]
        u = 0
        if unlabelled is not None:
            if unlabelled.dim() != 3 or unlabelled.shape[0] != b or unlabelled.shape[2] != d:
                raise ValueError(f"expected unlabelled [b={b}, u, d={d}], got "
                                 f"{tuple(unlabelled.shape)}")
            u = unlabelled.shape[1]
            parts.append(unlabelled.to(support.dtype))
        parts.append(query)
        x = torch.cat(parts, dim=1)
        device, n = x.device, s + u + q
        labels = torch.full((b, n), UNLABELLED, dtype=torch.long, device=device)
        labels[:, :s] = support_labels.to(device)
        # checked eagerly; under torch.compile (train.compile) the check would split the graph
        # at the host read, and the training episodes' labels are the sampler's own
        if s and not torch.compiler.is_compiling() and (
                int(support_labels.min()) < 0 or int(support_labels.max()) >= n_way):
            raise ValueError(f"support labels must lie in 0..{n_way - 1} (n_way={n_way}), got "
                             f"{int(support_labels.min())}..{int(support_labels.max())}")
        is_query = torch.zeros(b, n, dtype=torch.bool, device=device)
        is_query[:, s + u:] = True
        is_unlabelled = torch.zeros(b, n, dtype=torch.bool, device=device)
        is_unlabelled[:, s:s + u] = True
        generated = torch.zeros(b, n, dtype=torch.bool, device=device)
        if is_generated is not None:
            generated[:, :s] = is_generated.to(device)
        weights = torch.ones(b, n, dtype=x.dtype, device=device)
        if support_weights is not None:
            weights[:, :s] = support_weights.to(device=device, dtype=x.dtype)
        return cls(x=x, labels=labels, is_query=is_query, is_unlabelled=is_unlabelled,
                   is_generated=generated, node_weights=weights,
                   mask=message_mask(is_query, transductive), n_way=int(n_way), n_support=s,
                   n_query=q, transductive=bool(transductive), n_unlabelled=u)

    @classmethod
    def from_episode(cls, episode, support: Tensor, query: Tensor,  # noqa: ANN001
                     transductive: bool = False, support_labels: Tensor | None = None,
                     is_generated: Tensor | None = None,
                     support_weights: Tensor | None = None) -> EpisodeGraph:
        """:meth:`build` with the support labels and ``n_way`` of an
        :class:`~relgraph.data.Episode` (its query labels are not read).

        Args:
            episode: the episodes.
            support: ``[b, s, d]`` support features (generated ones included, if any).
            query: ``[b, q, d]`` query features.
            transductive: let queries exchange messages.
            support_labels: ``[b, s]`` labels of ``support`` when it is not the episode's own
                support set (e.g. with generated examples); default ``episode.support_labels``.
            is_generated: ``[b, s]`` bool, which supports were generated; default none.
            support_weights: ``[b, s]`` weights of the supports; default 1.
        """
        labels = episode.support_labels if support_labels is None else support_labels
        return cls.build(support, labels, query, episode.n_way, transductive, is_generated,
                         support_weights)

    # -- views of the nodes -----------------------------------------------------------------
    @property
    def num_nodes(self) -> int:
        """Nodes per episode ``n``."""
        return int(self.x.shape[1])

    @property
    def support(self) -> Tensor:
        """Support node features ``[b, s, d]``."""
        return self.x[:, :self.n_support]

    @property
    def support_labels(self) -> Tensor:
        """Support labels ``[b, s]``."""
        return self.labels[:, :self.n_support]

    @property
    def support_weights(self) -> Tensor:
        """Support node weights ``[b, s]``."""
        return self.node_weights[:, :self.n_support]

    @property
    def n_context(self) -> int:
        """Context nodes per episode (supports and unlabelled nodes) ``s + u``: the first
        nodes, the ones every query may hear."""
        return self.n_support + self.n_unlabelled

    @property
    def query_start(self) -> int:
        """Index of the first query node, ``s + u``."""
        return self.n_support + self.n_unlabelled

    @property
    def query(self) -> Tensor:
        """Query node features ``[b, q, d]``."""
        return self.x[:, self.query_start:]

    @property
    def unlabelled(self) -> Tensor:
        """Unlabelled node features ``[b, u, d]``."""
        return self.x[:, self.n_support:self.query_start]

    @property
    def is_labelled(self) -> Tensor:
        """``[b, n]`` bool, the nodes whose class the graph carries (the supports)."""
        return self.labels >= 0

    def node_labels(self, fill: str = "zero") -> Tensor:
        """The label encoding a model may see: ``[b, n, n_way]``.

        One-hot for supports; for queries and unlabelled nodes all zero (``fill="zero"``)
        or uniform ``1 / n_way`` (``"uniform"``, as in Garcia & Bruna).
        """
        if fill not in QUERY_FILLS:
            raise ValueError(f"fill must be one of {', '.join(QUERY_FILLS)}, got {fill!r}")
        out = F.one_hot(self.labels.clamp_min(0), self.n_way).to(self.x.dtype)
        value = 0.0 if fill == "zero" else 1.0 / self.n_way
        return torch.where(self.is_labelled.unsqueeze(-1), out, torch.full_like(out, value))

    @property
    def edge_known(self) -> Tensor:
        """``[b, n, n]`` bool: both ends are labelled supports (or it is a self-loop)."""
        known = self.is_labelled.unsqueeze(2) & self.is_labelled.unsqueeze(1)
        return known | torch.eye(self.num_nodes, dtype=torch.bool,
                                 device=self.x.device).unsqueeze(0)

    def edge_labels(self, unknown: float = 0.5) -> Tensor:
        """``[b, n, n]``: 1 for two supports of the same class (and every self-loop), 0 for
        two of different classes, ``unknown`` where a query or unlabelled node is involved."""
        same = (self.labels.unsqueeze(2) == self.labels.unsqueeze(1)).to(self.x.dtype)
        return torch.where(self.edge_known, same, torch.full_like(same, unknown))

    def target_edges(self, query_labels: Tensor) -> Tensor:
        """Ground-truth edge labels ``[b, n, n]`` (1 same class, 0 different) for losses,
        from the supports' labels and the query labels given here (the graph has none).
        Edges to unlabelled nodes are 0 (mask them out of a loss).

        Shapes:
            ``query_labels [b, q] -> [b, n, n]``
        """
        if tuple(query_labels.shape) != (self.x.shape[0], self.n_query):
            raise ValueError(f"expected query_labels of shape {(self.x.shape[0], self.n_query)},"
                             f" got {tuple(query_labels.shape)}")
        labels = self.labels.clone()
        labels[:, self.query_start:] = query_labels.to(labels.device)
        same = labels.unsqueeze(2) == labels.unsqueeze(1)
        known = (labels >= 0).unsqueeze(2) & (labels >= 0).unsqueeze(1)
        return (same & known).to(self.x.dtype)

    def with_mask(self, mask: Tensor) -> EpisodeGraph:
        """A copy with another message mask ``[b, n, n]``."""
        if mask.shape != self.mask.shape:
            raise ValueError(f"expected a mask of shape {tuple(self.mask.shape)}, got "
                             f"{tuple(mask.shape)}")
        return replace(self, mask=mask)
