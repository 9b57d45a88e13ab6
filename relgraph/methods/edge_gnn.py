"""Edge-Labeling Graph Neural Network (Kim, Kim, Kim & Yoo, CVPR 2019)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from relgraph.graph.classes import class_aggregate, prototypes
from relgraph.graph.episode_graph import EpisodeGraph
from relgraph.graph.kernels import squared_euclidean
from relgraph.methods.base import (
    cross_entropy,
    embedding_size,
    register_method,
    register_variant,
)
from relgraph.methods.head import RelationalHead
from relgraph.nn.edge_labeling import EdgeUpdate, NodeUpdate, apply_rows, pair_index
from relgraph.nn.precision import compute_dtype

__all__ = ["EdgeLabelingGNN", "balanced_edge_loss", "initial_edges", "pair_index"]

CLASS_SCORES = ("sum", "mean")
EDGE_INITS = ("uniform", "metric")
_TINY = 1e-12  # guards the L1 normalisations of empty rows


def initial_edges(graph: EpisodeGraph, senders: int | None = None) -> Tensor:
    """Initial edge features :math:`e^0_{ij} = [e_{sim}, e_{dis}]` from the support labels.

    ``[1, 0]`` for two supports of the same class (and for every self-loop), ``[0, 1]`` for two
    supports of different classes, ``[0.5, 0.5]`` where a query is involved.

    Args:
        graph: the episode graph (supports first).
        senders: keep the edges towards the first ``senders`` nodes only (the supports, for an
            inductive graph); default all nodes.

    Shapes:
        ``graph`` with ``n`` nodes -> ``[b, n, senders, 2]``
    """
    m = graph.num_nodes if senders is None else senders
    e = graph.edge_labels()[:, :, :m].to(compute_dtype(graph.x))
    return torch.stack([e, 1.0 - e], dim=-1)


def _metric_edges(edges: Tensor, support: Tensor, query: Tensor, labels: Tensor, n_way: int,
                  weights: Tensor | None) -> Tensor:
    """``edges [b, n, m, 2]`` with every query-support edge set to ProtoNet's probability of
    the support's class for that query (embeddings ``support [b, s, d]``, ``query [b, q, d]``,
    support ``labels [b, s]``, support ``weights [b, s]`` or ``None``). In a transductive graph
    (``m = n``) the support-query edges get the same values: edge labels are symmetric."""
    s = support.shape[1]
    protos = prototypes(support, labels, n_way, weights)  # [b, c, d]
    probs = torch.softmax(-squared_euclidean(query, protos), dim=-1)  # [b, q, c]
    sim = probs.gather(-1, labels.unsqueeze(1).expand(-1, probs.shape[1], -1))  # [b, q, s]
    sim = sim.to(edges.dtype)
    edges = edges.clone()
    pairs = torch.stack([sim, 1.0 - sim], dim=-1)  # [b, q, s, 2]
    edges[:, -query.shape[1]:, :s] = pairs  # query rows
    if edges.shape[2] > s:  # transductive: the support rows' query columns, e_ij = e_ji
        edges[:, :s, -query.shape[1]:] = pairs.transpose(1, 2)
    return edges


def balanced_edge_loss(sim: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Class-balanced binary cross-entropy of edge similarities (the EGNN edge loss).

    .. math::
        \\mathcal{L}_e = \\frac{1}{|P|} \\sum_{(i,j) \\in P} \\mathrm{BCE}(e_{ij1}, 1)
        + \\frac{1}{|N|} \\sum_{(i,j) \\in N} \\mathrm{BCE}(e_{ij1}, 0)

    with :math:`P` / :math:`N` the positive (same class) / negative edges selected by ``mask``,
    pooled over the whole batch of episodes, as in the reference code. Logs are clamped at -100
    like :class:`torch.nn.BCELoss`; an empty set contributes 0.

    Args:
        sim: predicted similarities in ``[0, 1]``.
        target: 1 for same class, 0 for different classes.
        mask: bool, the edges that count.

    Shapes:
        ``sim, target, mask``: any one shape -> scalar.
    """
    if not (sim.shape == target.shape == mask.shape):
        raise ValueError(f"sim, target and mask must have the same shape, got "
                         f"{tuple(sim.shape)}, {tuple(target.shape)}, {tuple(mask.shape)}")
    p = sim.float()
    t = target.float()
    bce = -(t * torch.log(p).clamp_min(-100.0) + (1.0 - t) * torch.log1p(-p).clamp_min(-100.0))
    pos = mask & (t > 0.5)
    neg = mask & (t <= 0.5)
    zero = torch.zeros_like(bce)
    return (torch.where(pos, bce, zero).sum() / pos.sum().clamp_min(1)
            + torch.where(neg, bce, zero).sum() / neg.sum().clamp_min(1))


@register_method("edge_gnn")
class EdgeLabelingGNN(RelationalHead):
    """Edge-Labeling GNN (Kim et al., CVPR 2019): predict edge labels, classify by edges.

    Every episode is a fully connected graph of support and query nodes. Node features start
    as the embeddings, :math:`v^0_i = f_{emb}(x_i)` (optionally projected), and each edge
    carries two features, similarity and dissimilarity, initialised from the support labels:
    :math:`e^0_{ij} = [1, 0]` for two supports of the same class (and self-loops),
    :math:`[0, 1]` for different classes and :math:`[0.5, 0.5]` where a query is involved.
    ``num_layers`` layers then alternate a node and an edge update. The node update aggregates
    the neighbours by both edge channels, normalised per row without self-loops:

    .. math::
        \\tilde e_{ijp} = \\frac{e^{l-1}_{ijp}}{\\sum_{k \\ne i} e^{l-1}_{ikp}}, \\qquad
        v^l_i = f^l_v\\Big(\\big[\\textstyle\\sum_{j \\ne i} \\tilde e_{ij1} v^{l-1}_j \\,;\\,
        \\sum_{j \\ne i} \\tilde e_{ij2} v^{l-1}_j \\,;\\, v^{l-1}_i\\big]\\Big)

    and the edge update rescales both channels by a learned similarity
    :math:`s_{ij} = f^l_e(|v^l_i - v^l_j|) \\in (0, 1)`, keeping each row's mass:

    .. math::
        \\bar e_{ij1} = \\frac{s_{ij}\\, e^{l-1}_{ij1}}{\\sum_{k \\ne i} s_{ik}\\, e^{l-1}_{ik1}}
        \\sum_{k \\ne i} e^{l-1}_{ik1}, \\qquad
        \\bar e_{ij2} = \\frac{(1 - s_{ij})\\, e^{l-1}_{ij2}}
        {\\sum_{k \\ne i} (1 - s_{ik})\\, e^{l-1}_{ik2}} \\sum_{k \\ne i} e^{l-1}_{ik2},

    .. math::
        \\bar e_{ii} = [1, 0], \\qquad
        e^l_{ij} = \\frac{\\bar e_{ij} + \\epsilon}{\\lVert \\bar e_{ij} + \\epsilon \\rVert_1}
        \\quad (\\epsilon = 10^{-6}, \\text{ as the reference code}).

    :math:`f_v` is ``Linear -> BatchNorm -> LeakyReLU`` per entry of ``node_dims`` (the
    paper's 1x1 convolutions), :math:`f_e` the same MLP with hidden widths ``edge_hidden``, a
    last ``Linear`` to one channel and a sigmoid, evaluated once per unordered node pair (as
    :class:`~relgraph.graph.LearnedKernel`, but symmetric: half the work on a full graph).
    A query's class scores sum its final similarity edges to the supports of each class,
    computed with one-hot support labels (unbalanced supports work):

    .. math::
        p(y_i = c) = \\frac{\\sum_{j \\in S_c} e^L_{ij1}}{\\sum_{c'} \\sum_{j \\in S_{c'}}
        e^L_{ij1}}, \\qquad \\mathrm{logits}_{ic} = \\log(p(y_i = c) + \\epsilon_{\\log}).

    :meth:`forward` returns these log-probabilities (argmax = the paper's prediction; a
    softmax of them gives back ``p`` up to ``eps``). :meth:`loss` is the class-balanced edge
    loss of every layer (:func:`balanced_edge_loss`) on the edges with at least one query
    end, :math:`\\mathcal{L} = \\sum_l \\lambda_l \\mathcal{L}_e(E^l)`, optionally plus
    ``node_loss_weight`` times the cross-entropy of the logits.

    **Inductive mode** (default): one pass for all queries, instead of the reference code's
    one graph per query. Supports exchange messages with supports only, and each query hears
    the supports (and itself), never another query or a query's effect on a support: a
    query's prediction depends on the support set and that query alone (in eval mode). The
    edges then only run from every node to the supports, ``[b, n, s, 2]`` instead of
    ``[b, n, n, 2]``, which is both the message mask (no query-query edges, no query-to-support
    messages) and ``n / s`` times less work. It differs from the reference, whose supports also
    hear the single query of their graph. **Transductive mode** (``transductive=True``, or the
    ``"edge_gnn_transductive"`` registry entry): all ``[b, n, n, 2]`` edges carry messages.

    **Generated supports** (``augment``): generated examples (made from the backbone's
    embeddings, before ``proj``) become extra support nodes with known labels, so their edges
    to other supports start at ``[1, 0]`` / ``[0, 1]`` and the edge loss also covers their
    edges to the queries; they are flagged in :attr:`EpisodeGraph.is_generated`. In the class
    scores a support ``j`` counts with its weight :math:`w_j` (``augment.weight`` for generated
    ones, 1 for real ones): :math:`\\sum_{j \\in S_c} w_j e^L_{ij1}`.

    Everything is batched over episodes; the only Python loop runs over the layers.

    Args:
        backbone: the encoder.
        num_layers: node/edge update layers ``L``. Default ``3`` (the paper).
        node_dims: widths of :math:`f_v`; the last is the node feature size. Default
            ``(192, 96)`` (the reference code).
        edge_hidden: hidden widths of :math:`f_e`. Default ``(192, 192, 96, 96)`` (reference).
        proj_dim: project the embeddings with ``Linear -> BatchNorm`` to this size first
            (the reference encoder's last layer); ``None`` (default) uses them as they are.
        in_dim: embedding size; ``None`` (default) reads ``backbone.out_dim``.
        transductive: let queries exchange messages. Default ``False``.
        layer_weights: :math:`\\lambda_l` of the per-layer edge losses; default ``0.5`` for
            every layer but the last, ``1.0`` for the last (the reference code).
        node_loss_weight: weight of the query cross-entropy added to the loss. Default ``0``
            (the paper trains on the edge loss only).
        class_scores: ``"sum"`` of the similarity edges to a class's supports (the paper,
            default) or their ``"mean"`` (not biased towards larger classes of an unbalanced
            support set).
        eps: :math:`\\epsilon_{\\log}` of the logits. Default ``1e-6``.
        edge_init: the initial similarity of a query-support edge: ``"uniform"`` (default,
            the paper: 0.5) or ``"metric"`` (not in the paper): Prototypical Networks'
            probability of the support's class for that query,
            :math:`\\operatorname{softmax}_c(-\\lVert f_i - c_c \\rVert^2)` on the
            backbone's embeddings, so with a ProtoNet backbone (``train.init_from``) the layers
            refine ProtoNet's answer instead of starting from none. Query-query edges of the
            transductive mode stay at 0.5.
        dropout: dropout after the node MLP :math:`f_v` of every layer but the last (training
            only; the reference code uses it on miniImageNet). Default ``0``.
        augment: generated support examples, e.g. ``{"hallucinator": "vae", "per_class": 5}``
            (see :doc:`/generative`); ``None`` (default): none.

    Shapes:
        episode ``support [b, s, *x]``, ``support_labels [b, s]``, ``query [b, q, *x]`` ->
        logits ``[b, q, n_way]``; :meth:`propagate` ``x [b, n, d], edges [b, n, m, 2]`` ->
        ``L`` x ``[b, n, m, 2]``.
    """

    uses_unlabelled = True  # unlabelled nodes are context nodes of the graph

    def __init__(self, backbone: nn.Module | None, num_layers: int = 3,
                 node_dims: Sequence[int] = (192, 96),
                 edge_hidden: Sequence[int] = (192, 192, 96, 96),
                 proj_dim: int | None = None, in_dim: int | None = None,
                 transductive: bool = False, layer_weights: Sequence[float] | None = None,
                 node_loss_weight: float = 0.0, class_scores: str = "sum",
                 eps: float = 1e-6, dropout: float = 0.0, edge_init: str = "uniform",
                 augment: dict[str, Any] | None = None) -> None:
        super().__init__(backbone)
        if edge_init not in EDGE_INITS:
            raise ValueError(f"edge_init must be one of {', '.join(EDGE_INITS)}, got "
                             f"{edge_init!r}")
        if num_layers < 1:
            raise ValueError(f"expected num_layers >= 1, got {num_layers}")
        node_dims, edge_hidden = tuple(node_dims), tuple(edge_hidden)
        if not node_dims or min(node_dims) < 1:
            raise ValueError(f"expected node_dims to be positive sizes, at least one, got "
                             f"{node_dims}")
        if edge_hidden and min(edge_hidden) < 1:
            raise ValueError(f"expected edge_hidden to be positive sizes, got {edge_hidden}")
        if proj_dim is not None and proj_dim < 1:
            raise ValueError(f"expected proj_dim >= 1 or None, got {proj_dim}")
        if layer_weights is None:
            layer_weights = (0.5,) * (num_layers - 1) + (1.0,)
        layer_weights = tuple(float(w) for w in layer_weights)
        if len(layer_weights) != num_layers or min(layer_weights) < 0:
            raise ValueError(f"expected {num_layers} non-negative layer_weights, got "
                             f"{layer_weights}")
        if node_loss_weight < 0:
            raise ValueError(f"expected node_loss_weight >= 0, got {node_loss_weight}")
        if class_scores not in CLASS_SCORES:
            raise ValueError(f"class_scores must be one of {', '.join(CLASS_SCORES)}, got "
                             f"{class_scores!r}")
        if eps <= 0:
            raise ValueError(f"expected eps > 0, got {eps}")
        if not 0 <= dropout < 1:
            raise ValueError(f"expected 0 <= dropout < 1, got {dropout}")
        in_dim = embed_dim = embedding_size(self.backbone, in_dim, "in_dim")
        self.transductive = transductive
        self.layer_weights = layer_weights
        self.node_loss_weight = float(node_loss_weight)
        self.class_scores = class_scores
        self.edge_init = edge_init
        self.eps = float(eps)
        self.proj: nn.Module = nn.Identity()
        if proj_dim is not None:
            self.proj = nn.Sequential(nn.Linear(in_dim, proj_dim), nn.BatchNorm1d(proj_dim))
            in_dim = proj_dim
        self.node_layers = nn.ModuleList()
        self.edge_layers = nn.ModuleList()
        for _ in range(num_layers):
            last = len(self.node_layers) == num_layers - 1
            self.node_layers.append(NodeUpdate(in_dim, node_dims, 0.0 if last else dropout))
            in_dim = node_dims[-1]
            self.edge_layers.append(EdgeUpdate(in_dim, edge_hidden))
        if augment is not None:
            self.setup_augment(augment, embed_dim)

    @property
    def num_layers(self) -> int:
        """Number of node/edge update layers ``L``."""
        return len(self.node_layers)

    def propagate(self, x: Tensor, edges: Tensor) -> list[Tensor]:
        """Run the ``L`` layers: the edge features after each layer.

        Node ``j`` sends to node ``i`` where ``edges[:, i, j]`` exists, i.e. for
        ``j < m``: ``m = n`` is the full graph, ``m = s`` the inductive one.

        Args:
            x: ``[b, n, d]`` initial node features.
            edges: ``[b, n, m, 2]`` initial edge features (see :func:`initial_edges`).

        Shapes:
            ``[b, n, d], [b, n, m, 2] -> L x [b, n, m, 2]``
        """
        b, n, m, c = edges.shape
        if x.dim() != 3 or x.shape[:2] != (b, n) or c != 2 or m > n:
            raise ValueError(f"expected x [b, n, d] and edges [b, n, m <= n, 2], got "
                             f"{tuple(x.shape)} and {tuple(edges.shape)}")
        off_diag = 1.0 - torch.eye(n, m, device=edges.device, dtype=edges.dtype).unsqueeze(-1)
        pairs, lookup = pair_index(n, m, edges.device)
        out = []
        for node_layer, edge_layer in zip(self.node_layers, self.edge_layers, strict=True):
            x = node_layer(x, edges * off_diag)
            edges = edge_layer(x, edges, off_diag, pairs, lookup)
            out.append(edges)
        return out

    def edge_layers_of(self, graph: EpisodeGraph) -> list[Tensor]:
        """The edge features after every layer, ``L x [b, n, m, 2]`` (``m = n`` transductive,
        ``m = s`` inductive): project the node features, initialise the edges, propagate."""
        x = apply_rows(self.proj, graph.x)  # one BatchNorm batch of all nodes
        m = graph.num_nodes if self.transductive else graph.n_context
        edges = initial_edges(graph, m)
        if self.edge_init == "metric":
            edges = _metric_edges(edges, graph.support, graph.query, graph.support_labels,
                                  graph.n_way, graph.support_weights)
        return self.propagate(x, edges)

    def _logits(self, graph: EpisodeGraph, edges: Tensor) -> Tensor:
        s = graph.n_support
        with torch.autocast(edges.device.type, enabled=False):  # float32 under mixed precision
            to_support = edges[:, graph.query_start:, :s, 0]
            to_support = to_support.to(compute_dtype(to_support)).transpose(1, 2)  # [b, s, q]
            scores = class_aggregate(to_support, graph.support_labels, graph.n_way,
                                     graph.support_weights.float(),
                                     mean=self.class_scores == "mean").transpose(1, 2)
        probs = scores / scores.sum(dim=-1, keepdim=True).clamp_min(_TINY)
        return torch.log(probs + self.eps)

    def relate(self, graph: EpisodeGraph) -> Tensor:
        return self._logits(graph, self.edge_layers_of(graph)[-1])

    def relate_loss(self, graph: EpisodeGraph, query_labels: Tensor) -> tuple[Tensor, Tensor]:
        """Weighted class-balanced edge losses of all layers on the edges with a query end
        (+ the optional node loss), and the last layer's query logits.

        Shapes:
            graph, ``query_labels [b, q]`` -> ``([], [b, q, n_way])``
        """
        layers = self.edge_layers_of(graph)
        n, m = layers[0].shape[1:3]
        target = graph.target_edges(query_labels)[:, :, :m]
        diag = torch.eye(n, m, dtype=torch.bool, device=target.device)
        with_query = graph.is_query.unsqueeze(2) | graph.is_query[:, :m].unsqueeze(1)
        unlabelled = graph.is_unlabelled.unsqueeze(2) | graph.is_unlabelled[:, :m].unsqueeze(1)
        mask = with_query & ~diag & ~unlabelled
        loss = sum(w * balanced_edge_loss(e[..., 0], target, mask)
                   for w, e in zip(self.layer_weights, layers, strict=True))
        logits = self._logits(graph, layers[-1])
        if self.node_loss_weight > 0:
            loss = loss + self.node_loss_weight * cross_entropy(logits, query_labels)
        return loss, logits

    def extra_repr(self) -> str:
        return (f"layers={self.num_layers}, layer_weights={self.layer_weights}, "
                f"node_loss_weight={self.node_loss_weight}, "
                f"class_scores={self.class_scores!r}, edge_init={self.edge_init!r}, "
                f"{super().extra_repr()}")


register_variant("edge_gnn_transductive", EdgeLabelingGNN, "edge_gnn", transductive=True)
