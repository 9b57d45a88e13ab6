"""Dense batched graph layers: all episodes' graphs as ``x [b, n, d]`` and ``adj [b, n, n]``."""

from __future__ import annotations

from einops import einsum
from torch import Tensor, nn

__all__ = ["DenseGraphConv"]


class DenseGraphConv(nn.Module):
    """The graph convolution of Morris et al. (AAAI 2019) on dense batched graphs.

    .. math:: x'_i = W_1 x_i + W_2 \\sum_j A_{ij} x_j

    with :math:`A_{ij}` the weight of the message ``j -> i`` (0: no edge). The dense counterpart
    of :class:`torch_geometric.nn.GraphConv` (``aggr="add"``): with the same weights and the
    episode graph's PyG view (:func:`relgraph.graph.views.to_pyg`) both give the same output.

    Args:
        in_channels: input features ``d``.
        out_channels: output features.
        aggr: ``"add"`` (sum of messages) or ``"mean"`` (divided by the number of edges).
        bias: bias of :math:`W_2` (named ``lin_rel`` as in PyG; ``lin_root`` has none).

    Shapes:
        ``forward(x [b, n, d], adj [b, n, n], mask [b, n] = None) -> [b, n, out]``; ``mask``
        marks real nodes (padding rows come out as 0).
    """

    def __init__(self, in_channels: int, out_channels: int, aggr: str = "add",
                 bias: bool = True) -> None:
        super().__init__()
        if aggr not in ("add", "mean"):
            raise ValueError(f"aggr must be 'add' or 'mean', got {aggr!r}")
        self.aggr = aggr
        self.lin_rel = nn.Linear(in_channels, out_channels, bias=bias)
        self.lin_root = nn.Linear(in_channels, out_channels, bias=False)

    def forward(self, x: Tensor, adj: Tensor, mask: Tensor | None = None) -> Tensor:
        if x.dim() != 3 or adj.shape != (x.shape[0], x.shape[1], x.shape[1]):
            raise ValueError(f"expected x [b, n, d] and adj [b, n, n], got {tuple(x.shape)} and "
                             f"{tuple(adj.shape)}")
        adj = adj.to(x.dtype)
        msg = einsum(adj, x, "b i j, b j d -> b i d")
        if self.aggr == "mean":
            msg = msg / (adj != 0).sum(-1, keepdim=True).clamp_min(1).to(x.dtype)
        out = self.lin_rel(msg) + self.lin_root(x)
        if mask is not None:
            out = out * mask.unsqueeze(-1).to(out.dtype)
        return out

    def extra_repr(self) -> str:
        return f"aggr={self.aggr!r}"
