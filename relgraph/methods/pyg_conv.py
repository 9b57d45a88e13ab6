"""Any PyTorch Geometric convolution as a few-shot method on the episode graph."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from relgraph.graph.episode_graph import EpisodeGraph
from relgraph.graph.kernels import cosine_similarity
from relgraph.graph.views import to_pyg
from relgraph.methods.base import embedding_size, register_method
from relgraph.methods.gnn import receive_mask
from relgraph.methods.head import RelationalHead

__all__ = ["PyGConvMethod", "resolve_conv"]

EDGE_INPUTS = (None, "edge_weight", "edge_attr")


def resolve_conv(conv: str | Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """A convolution class of :mod:`torch_geometric.nn` by name, or ``conv`` itself."""
    if not isinstance(conv, str):
        if not callable(conv):
            raise ValueError(f"expected conv to be a name or a class/factory, got {conv!r}")
        return conv
    import torch_geometric.nn as pyg_nn

    cls = getattr(pyg_nn, conv, None)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        names = sorted(n for n in dir(pyg_nn) if n.endswith("Conv") and not n.startswith("Dense"))
        raise ValueError(f"unknown convolution {conv!r} in torch_geometric.nn; choose one of: "
                         f"{', '.join(names)}")
    return cls


@register_method("pyg")
class PyGConvMethod(RelationalHead):
    """Few-shot classification with any :mod:`torch_geometric.nn` convolution.

    Each episode becomes a graph of its supports and queries (:class:`EpisodeGraph`), fully
    connected or reduced to every node's ``knn`` most similar neighbours (cosine similarity of
    the embeddings), minus the edges that would let queries influence each other (inductive,
    :func:`~relgraph.methods.gnn.receive_mask`). Node features are the embedding concatenated
    with a label indicator; ``layers`` convolutions (ELU in between) and a linear read-out of
    all layers' outputs score every query:

    .. math::
        h^{(0)}_{ik} = [f(x_i), \\ell_{ik}], \\quad
        h^{(l+1)}_{\\cdot k} = \\mathrm{ELU}\\big(\\mathrm{conv}_l(h^{(l)}_{\\cdot k},
            E)\\big), \\quad
        \\mathrm{logit}_{qk} = w^\\top [h^{(1)}_{qk}, \\dots, h^{(L)}_{qk}]

    with :math:`\\ell_{ik}` 1 if support ``i`` is of class ``k`` (0 otherwise, ``1/n_way`` for
    queries). The graph is run once per class ``k`` (one PyG batch of ``b * n_way`` graphs, the
    weights shared), so relabelling the classes permutes the logits exactly and any ``n_way``
    works.

    Args:
        backbone: the encoder.
        conv: a class name of :mod:`torch_geometric.nn` (default ``"GATConv"``) or a class /
            factory called as ``conv(in_channels, out_channels, **conv_kwargs)``.
        hidden: output width of every layer (default 64); with ``heads`` each head has
            ``hidden // heads`` channels, concatenated.
        layers: number of convolutions (default 2).
        heads: attention heads, passed to ``conv`` when given.
        knn: keep each node's ``knn`` most similar neighbours (default: fully connected).
        transductive: let queries exchange messages.
        conv_kwargs: more keyword arguments of ``conv``.
        edge_input: pass the similarity of each edge to ``conv`` as ``"edge_weight"`` (``[E]``,
            e.g. GCNConv, GraphConv) or ``"edge_attr"`` (``[E, 1]``, e.g. GATConv with
            ``edge_dim=1``); default none.
        embed_dim: embedding size (default ``backbone.out_dim``).

    Shapes:
        episode ``support [b, s, *x]``, ``query [b, q, *x]`` -> logits ``[b, q, n_way]``.

    Example:
        A relational layer of your own, in a few lines::

            from torch_geometric.nn import MessagePassing

            class MaxRelConv(MessagePassing):
                def __init__(self, in_channels, out_channels):
                    super().__init__(aggr="max")
                    self.mlp = nn.Sequential(nn.Linear(2 * in_channels, out_channels), nn.ReLU())

                def forward(self, x, edge_index):
                    return self.propagate(edge_index, x=x)

                def message(self, x_i, x_j):
                    return self.mlp(torch.cat([x_i, (x_i - x_j).abs()], dim=-1))

            model = PyGConvMethod(backbone, conv=MaxRelConv, hidden=64, knn=5)

        or a PyG layer by name: ``build_method("pyg", backbone, conv="GATv2Conv", heads=4)``,
        or in a config ``method: pyg``, ``method_args: {conv: TransformerConv, heads: 2}``.
    """

    uses_unlabelled = True  # unlabelled nodes are context nodes of the graph
    supports_augment = False

    def __init__(self, backbone: nn.Module | None, conv: str | Callable[..., nn.Module] = "GATConv",
                 hidden: int = 64, layers: int = 2, heads: int | None = None,
                 knn: int | None = None, transductive: bool = False,
                 conv_kwargs: dict[str, Any] | None = None, edge_input: str | None = None,
                 embed_dim: int | None = None) -> None:
        super().__init__(backbone)
        if layers < 1:
            raise ValueError(f"expected layers >= 1, got {layers}")
        if hidden < 1:
            raise ValueError(f"expected hidden >= 1, got {hidden}")
        if knn is not None and knn < 1:
            raise ValueError(f"expected knn >= 1 or None, got {knn}")
        if edge_input not in EDGE_INPUTS:
            raise ValueError(f"edge_input must be one of {EDGE_INPUTS}, got {edge_input!r}")
        kwargs = dict(conv_kwargs or {})
        width = hidden
        if heads is not None:
            if heads < 1 or hidden % heads:
                raise ValueError(f"expected heads >= 1 dividing hidden={hidden}, got {heads}")
            kwargs["heads"] = heads
            width = hidden // heads
        self.embed_dim = embedding_size(self.backbone, embed_dim)
        self.transductive = bool(transductive)
        self.knn = knn
        self.edge_input = edge_input
        factory = resolve_conv(conv)
        self.conv_name = conv if isinstance(conv, str) else getattr(conv, "__name__", "conv")
        self.convs = nn.ModuleList()
        dims = []
        prev = self.embed_dim + 1
        for _ in range(layers):
            layer = factory(prev, width, **kwargs)
            prev = self._probe(layer, prev)
            self.convs.append(layer)
            dims.append(prev)
        self.readout = nn.Linear(sum(dims), 1)

    def _conv_inputs(self, edge_index: Tensor, sim: Tensor | None) -> dict[str, Tensor]:
        if self.edge_input is None:
            return {}
        value = sim if self.edge_input == "edge_weight" else sim.unsqueeze(-1)
        return {self.edge_input: value}

    def _probe(self, layer: nn.Module, in_dim: int) -> int:
        """Output width of ``layer``, from a forward pass on a two-node graph."""
        x = torch.zeros(2, in_dim)
        edge_index = torch.tensor([[0, 1], [1, 0]])
        training = layer.training
        layer.eval()
        try:
            with torch.no_grad():
                out = layer(x, edge_index, **self._conv_inputs(edge_index, torch.ones(2)))
        except Exception as err:  # any layer may fail in its own way
            extra = f", {self.edge_input}" if self.edge_input else ""
            raise ValueError(f"the convolution {layer.__class__.__name__} fails on "
                             f"conv(x, edge_index{extra}): {err}") from err
        finally:
            layer.train(training)
        if not isinstance(out, Tensor) or out.dim() != 2:
            raise ValueError(f"expected the convolution to return [nodes, features], got "
                             f"{type(out).__name__}")
        return int(out.shape[-1])

    def relate(self, graph: EpisodeGraph) -> Tensor:
        graph = graph.with_mask(receive_mask(graph))
        labels = graph.node_labels("uniform")
        b, n, k = labels.shape
        sim = None
        if self.knn is not None or self.edge_input is not None:
            sim = cosine_similarity(graph.x)
        batch = to_pyg(graph, sim, self.knn)  # b graphs, nodes ordered (b n)
        # one copy of the graph per class k: node (k, b, i) sees the indicator of class k
        x = torch.cat([graph.x.unsqueeze(1).expand(b, k, n, -1),
                       rearrange(labels, "b n k -> b k n 1")], dim=-1)
        x = rearrange(x, "b k n d -> (k b n) d")
        edges = batch.edge_index.shape[1]
        offsets = torch.arange(k, device=x.device).repeat_interleave(edges) * (b * n)
        edge_index = batch.edge_index.repeat(1, k) + offsets
        extra = self._conv_inputs(edge_index, batch.edge_attr.repeat(k)
                                  if sim is not None else None)
        outs = []
        h = x
        for conv in self.convs:
            h = F.elu(conv(h, edge_index, **extra))
            outs.append(h)
        logits = self.readout(torch.cat(outs, dim=-1)).squeeze(-1)
        logits = rearrange(logits, "(k b n) -> b n k", k=k, b=b)
        return logits[:, graph.query_start:]

    def extra_repr(self) -> str:
        return (f"conv={self.conv_name}, knn={self.knn}, edge_input={self.edge_input}, "
                f"transductive={self.transductive}")
