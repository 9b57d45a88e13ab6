"""Few-shot learning with Graph Neural Networks (Garcia & Bruna, ICLR 2018)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from relgraph.graph.classes import prototypes
from relgraph.graph.episode_graph import EpisodeGraph
from relgraph.graph.kernels import LearnedKernel, squared_euclidean
from relgraph.methods.base import embedding_size, register_method, register_variant
from relgraph.methods.head import RelationalHead
from relgraph.nn.gnn import ClassGraphConv

__all__ = ["GNN", "receive_mask", "masked_softmax"]


def receive_mask(graph: EpisodeGraph, self_loops: bool = True) -> Tensor:
    """Which node ``i`` receives a message from which node ``j``: ``[b, n, n]`` bool.

    :attr:`EpisodeGraph.mask` (see :func:`~relgraph.graph.message_mask`: inductive supports
    receive only from supports, queries from the supports and themselves), with or without the
    self-loops.

    Shapes:
        ``-> [b, n, n]``, row ``i`` the nodes ``i`` receives from.
    """
    eye = torch.eye(graph.num_nodes, dtype=torch.bool, device=graph.mask.device)
    return graph.mask | eye if self_loops else graph.mask & ~eye


def masked_softmax(scores: Tensor, mask: Tensor) -> Tensor:
    """Softmax over the last dimension restricted to ``mask``; 0 elsewhere and on empty rows.

    Shapes:
        ``scores [..., m], mask [..., m] -> [..., m]``
    """
    empty = ~mask.any(dim=-1, keepdim=True)
    scores = scores.masked_fill(~mask, float("-inf")).masked_fill(empty, 0.0)
    out = torch.softmax(scores, dim=-1)
    return torch.where(mask, out, torch.zeros_like(out))


@register_method("gnn")
class GNN(RelationalHead):
    """The GNN of Garcia & Bruna (ICLR 2018): node classification on the episode graph.

    Every support and query is a node. Node features start as the embedding concatenated with
    the label encoding (one-hot for supports, uniform over the classes for queries). Each layer
    ``l`` learns an adjacency from the current features and applies the graph convolution of
    the operator family :math:`\\{I, A^{(l)}\\}`; new features are concatenated to the old ones
    (the paper's dense connections); the last layer outputs one score per class for the queries:

    .. math::
        A^{(l)}_{ij} &= \\operatorname{softmax}_{j \\in \\mathcal N(i)}
            \\operatorname{MLP}^{(l)}\\big(\\lvert x^{(l)}_i - x^{(l)}_j \\rvert\\big) \\\\
        x^{(l+1)}_i &= \\Big[\\, x^{(l)}_i,\\; \\rho\\big(\\mathrm{BN}(\\theta^{(l)}
            [\\, x^{(l)}_i, (A^{(l)} x^{(l)})_i \\,])\\big) \\Big]

    with :math:`\\rho` the leaky ReLU and :math:`\\mathcal N(i)` the nodes ``i`` receives from
    (:func:`receive_mask`, without ``i`` itself, as in the reference code).

    **Class equivariance.** A linear layer reading the one-hot label dimensions ties the model to
    one ``n_way`` and does not permute its scores when the classes are relabelled. Here the label
    part of every node is kept per class: node ``i`` holds shared features :math:`f_i` (the
    embedding) and, for each class ``k``, features :math:`g_{ik}` (initially the label encoding
    :math:`\\ell_{ik}`, then the new channels). :math:`\\theta` acts on
    :math:`x_{ik} = [f_i, g_{ik}]` with weights shared over classes, plus the class mean of the
    same input (the most general equivariant linear map, DeepSets); the kernel reads
    :math:`[f_i, \\operatorname{mean}_k g_{ik}, \\max_k g_{ik}]`; the read-out is a linear score
    of :math:`[g_{qk}, (A g)_{qk}]` per class ``k``. Relabelling the classes permutes the
    scores exactly, and one model runs episodes of any ``n_way``.

    **One pass.** All queries of all episodes are scored in one pass (the reference code builds
    one graph per query). Inductive (default): supports receive from supports, queries from
    supports, so queries cannot influence each other; only the pairs that carry messages are
    evaluated by the kernel (``n x s`` instead of ``n x n``). Transductive: the full graph.
    The kernel is symmetric, so it runs once per unordered pair
    (:meth:`~relgraph.graph.LearnedKernel.symmetric`, BatchNorm weighted to give the statistics
    of the whole block): half the work on the full graph, the same numbers.

    **Distance bias** (``distance_bias=True``, not in the paper): every layer's kernel score
    gets :math:`-\\alpha^{(l)} \\lVert f_i - f_j \\rVert^2` added, the squared Euclidean
    distance of the embeddings scaled by a learned :math:`\\alpha^{(l)} > 0` (initially 1):

    .. math::
        A^{(l)}_{ij} = \\operatorname{softmax}_{j \\in \\mathcal N(i)}
            \\big(\\operatorname{MLP}^{(l)}(\\ldots) - \\alpha^{(l)}
            \\lVert f_i - f_j \\rVert^2\\big).

    With the kernel MLP's output constant, a 1-shot query's adjacency over the supports is then
    exactly Prototypical Networks' class distribution (Snell et al. 2017), so the GNN starts
    from the metric that ProtoNet's backbone was trained for (``train.init_from``) instead of
    learning it anew from ``|x_i - x_j|``.

    **Metric read-out** (``metric_readout=True``, not in the paper): the query scores get
    Prototypical Networks' logits added, :math:`-\\beta \\lVert f_q - c_k \\rVert^2` with
    :math:`c_k` the mean embedding of class ``k``'s supports and a learned :math:`\\beta > 0`
    (initially 1); the read-out layer starts at zero, so the model starts as exactly ProtoNet on
    its backbone (``train.init_from``) and the graph layers learn a correction to it.

    **Generated supports** (``augment``): generated examples become extra support nodes with
    their one-hot labels (flagged in :attr:`EpisodeGraph.is_generated`); a node ``j`` of
    weight :math:`w_j` (``augment.weight`` for generated ones, 1 for real ones) enters every
    adjacency softmax with its score plus :math:`\\log w_j`,
    :math:`A_{ij} \\propto w_j\\, e^{\\operatorname{MLP}(\\ldots)}`.

    Args:
        backbone: the encoder.
        nf: the paper's width ``nf``: each layer adds ``nf // 2`` channels per class, the kernel
            MLPs have hidden sizes ``(2 nf, 2 nf, nf, nf)`` (default 96, as for Omniglot).
        layers: hidden GNN layers before the read-out layer (default 2, as the paper).
        kernel_hidden: hidden sizes of the kernel MLPs (default from ``nf``).
        transductive: let queries exchange messages.
        embed_dim: embedding size (default ``backbone.out_dim``).
        chunk: rows per chunk of the kernel (see :class:`~relgraph.graph.LearnedKernel`).
        distance_bias: add the learned-scale squared Euclidean distance term (see above).
        metric_readout: add ProtoNet's logits to the read-out (see above).
        augment: generated support examples, e.g. ``{"hallucinator": "vae", "per_class": 5}``
            (see :doc:`/generative`); ``None`` (default): none.

    Shapes:
        episode ``support [b, s, *x]``, ``query [b, q, *x]`` -> logits ``[b, q, n_way]``.

    Example:
        >>> from relgraph.backbones import build_backbone
        >>> model = GNN(build_backbone("conv4"), nf=96, layers=2)
    """

    uses_unlabelled = True  # unlabelled nodes are context nodes of the graph

    def __init__(self, backbone: nn.Module | None, nf: int = 96, layers: int = 2,
                 kernel_hidden: Sequence[int] | None = None, transductive: bool = False,
                 embed_dim: int | None = None, chunk: int | None = 64,
                 distance_bias: bool = False, metric_readout: bool = False,
                 augment: dict[str, Any] | None = None) -> None:
        super().__init__(backbone)
        if nf < 2:
            raise ValueError(f"expected nf >= 2, got {nf}")
        if layers < 0:
            raise ValueError(f"expected layers >= 0, got {layers}")
        self.embed_dim = d = embedding_size(self.backbone, embed_dim)
        self.nf = nf
        self.transductive = bool(transductive)
        hidden = tuple(kernel_hidden) if kernel_hidden is not None else (2 * nf, 2 * nf, nf, nf)
        c = nf // 2
        self.kernels = nn.ModuleList()
        self.convs = nn.ModuleList()
        e = 1
        for layer in range(layers + 1):
            last = layer == layers
            self.kernels.append(LearnedKernel(d + 2 * e, hidden, out_dim=1, chunk=chunk))
            self.convs.append(ClassGraphConv(d, e, 1 if last else c, last))
            e += c
        self.distance_bias = bool(distance_bias)
        if self.distance_bias:
            # log alpha per layer; alpha = 1 at the start
            self.log_alpha = nn.Parameter(torch.zeros(layers + 1))
        self.metric_readout = bool(metric_readout)
        if self.metric_readout:
            self.log_beta = nn.Parameter(torch.zeros(()))  # beta = 1: ProtoNet's logits
            nn.init.zeros_(self.convs[-1].lin_class.weight)  # start as exactly ProtoNet
        if augment is not None:
            self.setup_augment(augment, d)

    def run(self, graph: EpisodeGraph) -> tuple[Tensor, list[Tensor]]:
        """Scores of every node and the adjacency of every layer.

        Returns:
            ``(scores [b, n, n_way], [A [b, n, n] per layer])``; the adjacencies are 0 on the
            edges that carry no message, and their rows sum to 1 over the others.
        """
        f = graph.x
        g = graph.node_labels("uniform").unsqueeze(-1)  # [b, n, k, 1]
        mask = receive_mask(graph, self_loops=False)
        cols = mask.any(dim=1).any(dim=0)  # nodes that send at least one message
        sub = mask[:, :, cols]
        w = graph.node_weights
        log_w = None if w is None else w[:, cols].log().unsqueeze(1)  # [b, 1, m]
        dist = squared_euclidean(f, f[:, cols]) if self.distance_bias else None  # [b, n, m]
        adjacencies = []
        for layer, (kernel, conv) in enumerate(zip(self.kernels, self.convs, strict=True)):
            node = torch.cat([f, g.mean(2), g.amax(2)], dim=-1)
            scores = kernel.symmetric(node, cols).squeeze(-1)  # [b, n, m]
            if dist is not None:
                scores = scores - self.log_alpha[layer].exp() * dist
            if log_w is not None:
                scores = scores + log_w
            adj = masked_softmax(scores, sub)
            full = adj.new_zeros(mask.shape)
            full[:, :, cols] = adj
            adjacencies.append(full)
            out = conv(f, g, adj, cols)
            if conv.last:
                if self.metric_readout:
                    out = out - self.log_beta.exp() * squared_euclidean(f, prototypes(
                        graph.support, graph.support_labels, graph.n_way, graph.support_weights))
                return out, adjacencies
            g = torch.cat([g, out], dim=-1)
        raise AssertionError("unreachable")

    def relate(self, graph: EpisodeGraph) -> Tensor:
        scores, _ = self.run(graph)
        return scores[:, graph.query_start:]

    def adjacencies(self, graph: EpisodeGraph) -> list[Tensor]:
        """The learned adjacency ``[b, n, n]`` of every layer (for inspection and plots)."""
        return self.run(graph)[1]

    def extra_repr(self) -> str:
        return (f"embed_dim={self.embed_dim}, nf={self.nf}, layers={len(self.convs) - 1}, "
                f"transductive={self.transductive}, distance_bias={self.distance_bias}, "
                f"metric_readout={self.metric_readout}")


register_variant("gnn_transductive", GNN, "gnn", transductive=True)
