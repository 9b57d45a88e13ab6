"""The episode graph: every episode becomes a fully connected graph of support and query nodes.

Nodes ``0..s-1`` are the supports (in episode order, then any generated supports), nodes
``s..n-1`` the queries, ``n = s + q``. Built once per batch from an
:class:`~relgraph.data.Episode` and the node embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from relgraph.data.episode import Episode

__all__ = ["EpisodeGraph", "message_mask"]


def message_mask(is_query: Tensor, transductive: bool) -> Tensor:
    """Which node pairs may exchange messages: ``[b, n] -> [b, n, n]`` bool.

    ``mask[b, i, j]`` is True when node ``i`` may receive a message from node ``j``.

    Inductive (``transductive=False``): every node receives from the supports and from itself,
    and from no other query. Supports therefore never hear of queries, so no query can reach
    another even through a support over several layers, and each query's prediction depends
    only on the supports and itself (one pass for all queries, instead of one graph per query
    as in the reference code). Transductive: every edge.

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
    """A batch of episode graphs.

    Attributes:
        x: node features ``[b, n, d]`` (supports first, then queries).
        is_query: ``[b, n]`` bool, the node roles.
        labels: ``[b, n]`` long, the class of every node (queries' labels are the targets,
            hidden from the model: use :attr:`node_labels` and :attr:`edge_labels`).
        node_labels: ``[b, n, n_way]``: one-hot for supports; for queries zero
            (``query_label="zero"``) or uniform ``1/n_way`` (``"uniform"``).
        edge_labels: ``[b, n, n]``: 1 for two supports of the same class, 0 for different
            classes, ``unknown`` (default 0.5) where a query is involved (except a node with
            itself, which is 1).
        edge_known: ``[b, n, n]`` bool: both ends are supports (or it is a self-loop).
        mask: ``[b, n, n]`` bool, ``mask[b, i, j]``: node ``i`` receives messages from node
            ``j`` (see :func:`message_mask`).
        n_way: classes per episode.
        n_support: support nodes per episode ``s`` (generated ones included).
        transductive: whether queries may exchange messages.
        is_generated: ``[b, n]`` bool, the support nodes that were generated (hallucinated,
            see :mod:`relgraph.generative`) rather than given; ``None``: none were.
        node_weights: ``[b, n]`` weight of every node (1 for real nodes, ``augment.weight``
            for generated ones); ``None``: all 1.
    """

    x: Tensor
    is_query: Tensor
    labels: Tensor
    node_labels: Tensor
    edge_labels: Tensor
    edge_known: Tensor
    mask: Tensor
    n_way: int
    n_support: int
    transductive: bool
    is_generated: Tensor | None = None
    node_weights: Tensor | None = None

    @classmethod
    def from_episode(cls, episode: Episode, support: Tensor, query: Tensor,
                     transductive: bool = False, query_label: str = "zero",
                     unknown: float = 0.5, support_labels: Tensor | None = None,
                     is_generated: Tensor | None = None,
                     support_weights: Tensor | None = None) -> EpisodeGraph:
        """Build the graph of a batch of episodes from their embeddings.

        Args:
            episode: the episodes (for labels).
            support: ``[b, s, d]`` support embeddings (generated ones included, if any).
            query: ``[b, q, d]`` query embeddings.
            transductive: let queries exchange messages.
            query_label: ``"zero"`` or ``"uniform"`` label encoding for query nodes.
            unknown: edge label where a query is involved.
            support_labels: ``[b, s]`` labels of ``support`` when it is not the episode's own
                support set (e.g. with generated examples, see
                :meth:`relgraph.methods.FewShotMethod.augment_support`); default
                ``episode.support_labels``.
            is_generated: ``[b, s]`` bool, which supports were generated; default none.
            support_weights: ``[b, s]`` weights of the supports; default 1. Queries weigh 1.
        """
        if query_label not in ("zero", "uniform"):
            raise ValueError(f"query_label must be 'zero' or 'uniform', got {query_label!r}")
        b, s, _ = support.shape
        q = query.shape[1]
        n_way = episode.n_way
        if support_labels is None:
            support_labels = episode.support_labels
        for name, t in (("support_labels", support_labels), ("is_generated", is_generated),
                        ("support_weights", support_weights)):
            if t is not None and tuple(t.shape) != (b, s):
                raise ValueError(f"expected {name} of shape {(b, s)} (one per support "
                                 f"embedding), got {tuple(t.shape)}")
        x = torch.cat([support, query], dim=1)
        device = x.device
        is_query = torch.zeros(b, s + q, dtype=torch.bool, device=device)
        is_query[:, s:] = True
        generated = torch.zeros(b, s + q, dtype=torch.bool, device=device)
        if is_generated is not None:
            generated[:, :s] = is_generated.to(device)
        weights = torch.ones(b, s + q, dtype=x.dtype, device=device)
        if support_weights is not None:
            weights[:, :s] = support_weights.to(device=device, dtype=x.dtype)
        labels = torch.cat([support_labels.to(device), episode.query_labels.to(device)], dim=1)
        node_labels = F.one_hot(labels, n_way).to(x.dtype)
        node_labels[:, s:] = 0.0 if query_label == "zero" else 1.0 / n_way
        same = (labels.unsqueeze(2) == labels.unsqueeze(1)).to(x.dtype)
        known = ~(is_query.unsqueeze(2) | is_query.unsqueeze(1))
        known |= torch.eye(s + q, dtype=torch.bool, device=device).unsqueeze(0)
        edge_labels = torch.where(known, same, torch.full_like(same, unknown))
        return cls(x=x, is_query=is_query, labels=labels, node_labels=node_labels,
                   edge_labels=edge_labels, edge_known=known,
                   mask=message_mask(is_query, transductive), n_way=n_way, n_support=s,
                   transductive=transductive, is_generated=generated, node_weights=weights)

    @property
    def num_nodes(self) -> int:
        """Nodes per episode ``n``."""
        return int(self.x.shape[1])

    @property
    def target_edges(self) -> Tensor:
        """Ground-truth edge labels ``[b, n, n]`` (1 same class, 0 different), for losses."""
        return (self.labels.unsqueeze(2) == self.labels.unsqueeze(1)).to(self.x.dtype)

    def to_pyg(self, similarity: Tensor | None = None, knn: int | None = None):
        """This batch as a :class:`torch_geometric.data.Batch` of ``b`` graphs.

        Args:
            similarity: optional ``[b, n, n]`` edge weights stored as ``edge_attr``.
            knn: keep, for every node, only its ``knn`` most similar neighbours (by
                ``similarity``) among the allowed edges; default fully connected.

        Each graph has ``x [n, d]``, ``y [n]``, ``is_query [n]``, ``edge_index [2, E]`` (the
        message-carrying edges, ``source -> target``) and ``edge_attr [E]``.
        """
        from relgraph.graph.views import to_pyg

        return to_pyg(self, similarity, knn)

    def to_networkx(self, index: int = 0, similarity: Tensor | None = None,
                    predictions: Tensor | None = None):
        """Episode ``index`` as a :class:`networkx.Graph` (roles, labels, predictions,
        edge weights)."""
        from relgraph.graph.views import to_networkx

        return to_networkx(self, index, similarity, predictions)
