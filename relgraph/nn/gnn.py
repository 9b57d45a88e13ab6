"""The class-equivariant graph convolution of the GNN head (Garcia & Bruna, ICLR 2018)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import einsum
from torch import Tensor, nn

__all__ = ["ClassGraphConv"]


class ClassGraphConv(nn.Module):
    """One GNN layer with the operators :math:`\\{I, A\\}` on per-class node features.

    Node ``i`` holds shared features :math:`f_i` (``[b, n, d]``, the embedding) and, for every
    class ``k``, features :math:`g_{ik}` (``[b, n, K, e]``). With the adjacency ``adj`` over the
    sending nodes ``cols``:

    .. math::
        g'_{ik} = \\rho\\Big(\\mathrm{BN}\\big(W_c [g_{ik}, (A g)_{ik}]
            + W_s [f_i, (A f)_i, \\operatorname{mean}_k g_{ik},
            \\operatorname{mean}_k (A g)_{ik}]\\big)\\Big)

    (the most general class-equivariant linear map of the inputs, DeepSets), :math:`\\rho` the
    leaky ReLU. The ``last`` layer is the read-out: :math:`W_c [g_{ik}, (A g)_{ik}]` alone, one
    score per class.

    Args:
        embed_dim: size ``d`` of :math:`f`.
        class_dim: size ``e`` of :math:`g_{ik}`.
        out_dim: output channels per class (1 for the read-out).
        last: the read-out layer (no shared part, no BatchNorm, no activation).

    Shapes:
        ``forward(f [b, n, d], g [b, n, K, e], adj [b, n, m], cols [n] bool with m True)``
        -> ``[b, n, K, out_dim]`` (``[b, n, K]`` for the read-out).
    """

    def __init__(self, embed_dim: int, class_dim: int, out_dim: int, last: bool) -> None:
        super().__init__()
        self.last = last
        # per-class part [g_ik, (A g)_ik]; weights shared by all classes
        self.lin_class = nn.Linear(2 * class_dim, out_dim, bias=False)
        if not last:
            # class-shared part [f_i, (A f)_i, mean_k g_ik, mean_k (A g)_ik] (DeepSets pooling)
            self.lin_shared = nn.Linear(2 * embed_dim + 2 * class_dim, out_dim, bias=False)
            self.norm = nn.BatchNorm1d(out_dim)

    def forward(self, f: Tensor, g: Tensor, adj: Tensor, cols: Tensor) -> Tensor:
        """New per-class features: ``f [b, n, d], g [b, n, K, e], adj [b, n, m], cols [n]``
        -> ``[b, n, K, out_dim]`` (``[b, n, K]`` for the read-out)."""
        ag = einsum(adj, g[:, cols], "b i j, b j k e -> b i k e")
        out = self.lin_class(torch.cat([g, ag], dim=-1))  # [b, n, k, c]
        if self.last:
            return out.squeeze(-1)
        af = einsum(adj, f[:, cols], "b i j, b j d -> b i d")
        shared = self.lin_shared(torch.cat([f, af, g.mean(2), ag.mean(2)], dim=-1))
        out = out + shared.unsqueeze(2)
        shape = out.shape
        out = self.norm(out.reshape(-1, shape[-1])).reshape(shape)
        return F.leaky_relu(out, 0.01)

    def extra_repr(self) -> str:
        return f"last={self.last}"
