"""Matching Networks (Vinyals, Blundell, Lillicrap, Kavukcuoglu & Wierstra, NeurIPS 2016)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from einops import einsum, rearrange
from torch import Tensor, nn

from relgraph.graph.episode_graph import EpisodeGraph
from relgraph.graph.kernels import cosine_similarity
from relgraph.methods.base import embedding_size, register_method, register_variant
from relgraph.methods.head import RelationalHead
from relgraph.nn.precision import compute_dtype

__all__ = ["MatchingNet", "matching_log_probs"]

#: Floor of the log-probabilities, reached only by a class without any support example.
LOG_PROB_FLOOR = -1e4


def matching_log_probs(scores: Tensor, labels: Tensor, n_way: int) -> Tensor:
    """Log of the attention-weighted label distribution, computed in log space.

    .. math::
        \\log \\hat y_k = \\log \\sum_{i : y_i = k} a(\\hat x, x_i), \\qquad
        a(\\hat x, x_i) = \\frac{e^{c(\\hat x, x_i)}}{\\sum_j e^{c(\\hat x, x_j)}}

    evaluated as ``logsumexp`` over the class's supports minus ``logsumexp`` over all supports,
    which is exact (no :math:`\\epsilon` inside the log). A class without support examples gets
    ``LOG_PROB_FLOOR`` (-1e4) instead of :math:`-\\infty`.

    Args:
        scores: ``[b, q, s]`` attention scores :math:`c(\\hat x, x_i)` of each query for each
            support.
        labels: ``[b, s]`` support labels in ``0..n_way-1``.
        n_way: number of classes.

    Shapes:
        ``[b, q, s], [b, s] -> [b, q, n_way]``
    """
    if scores.dim() != 3 or labels.shape != (scores.shape[0], scores.shape[2]):
        raise ValueError(f"expected scores [b, q, s] and labels [b, s], got "
                         f"{tuple(scores.shape)} and {tuple(labels.shape)}")
    log_att = scores.log_softmax(dim=-1)  # [b, q, s]
    member = F.one_hot(labels, n_way).bool()  # [b, s, n]
    masked = log_att.unsqueeze(-1).masked_fill(~member.unsqueeze(1), torch.finfo(scores.dtype).min)
    return masked.logsumexp(dim=2).clamp_min(LOG_PROB_FLOOR)  # [b, q, n]


@register_method("matching")
class MatchingNet(RelationalHead):
    """Matching Networks (Vinyals et al. 2016): cosine attention over the support set.

    A query :math:`\\hat x` is labelled by an attention-weighted vote of the support labels:

    .. math::
        \\hat y = \\sum_{i=1}^{|S|} a(\\hat x, x_i)\\, y_i, \\qquad
        a(\\hat x, x_i) = \\operatorname{softmax}_i\\big(s \\cos(f(\\hat x), g(x_i))\\big)

    with :math:`y_i` one-hot and :math:`s = 1` in the paper. :meth:`forward` returns
    :math:`\\log \\hat y` (computed exactly in log space, see :func:`matching_log_probs`), so the
    default cross-entropy loss is the paper's negative log-likelihood
    :math:`-\\log \\hat y_{y}` (``softmax`` of the logits gives back :math:`\\hat y`).

    Without full context embeddings (``fce=False``, the default) :math:`f = g = f'`, the
    backbone. With ``fce=True`` both embeddings see the whole support set :math:`S`
    (Appendix A.2 of the paper):

    - :math:`g` is a bidirectional LSTM over the support embeddings :math:`g'(x_i)` with a skip
      connection,

      .. math:: g(x_i, S) = \\overrightarrow{h}_i + \\overleftarrow{h}_i + g'(x_i)

    - :math:`f` is an attention LSTM run for :math:`K` processing steps over :math:`g(S)`,
      starting from :math:`h_0 = f'(\\hat x)`, :math:`c_0 = 0`:

      .. math::
          r_{k-1} &= \\sum_{i} \\operatorname{softmax}_i\\big(h_{k-1}^\\top g(x_i)\\big)\\,
          g(x_i) \\\\
          \\hat h_k, c_k &= \\operatorname{LSTM}\\big(f'(\\hat x), [h_{k-1}, r_{k-1}],
          c_{k-1}\\big) \\\\
          h_k &= \\hat h_k + f'(\\hat x), \\qquad f(\\hat x, S) = h_K

      (the read-out :math:`r_{k-1}` enters the gates through its own weights, implemented as an
      :class:`~torch.nn.LSTMCell` with input :math:`[f'(\\hat x), r_{k-1}]` and state
      :math:`h_{k-1}`). Every query is processed on its own (queries of all episodes are the
      batch of the cell), so :math:`f(\\hat x, S)` depends only on :math:`S` and :math:`\\hat x`:
      the method stays inductive.

    **Support order.** The bidirectional LSTM reads the supports in the order given, so with
    ``fce=True`` the predictions depend on the order of the support set (the paper's choice;
    ``support_order_dependent`` is then ``True``). Without FCE the method is invariant to it.

    **Generated supports** (``augment``): generated examples join the support set (after the
    real ones, also in the FCE sequence), and a support of weight :math:`w_i`
    (``augment.weight`` for generated ones, 1 for real ones) enters the attention as
    :math:`a(\\hat x, x_i) \\propto w_i\\, e^{c(\\hat x, x_i)}` (its score plus
    :math:`\\log w_i`).

    Args:
        backbone: the encoder :math:`f' = g'` (``None``: the inputs are features).
        fce: use full context embeddings. Default ``False``.
        lstm_layers: layers of the support bidirectional LSTM (``fce`` only). Default ``1``.
        unrolling_steps: processing steps :math:`K` of the attention LSTM (``fce`` only). The
            paper leaves :math:`K` open; a fixed number (rather than one tied to the support size)
            keeps the unrolled length the same between training and test episodes. Default ``5``.
        scale: the scale :math:`s` of the cosine similarities (learned if ``learn_scale``).
            Default ``1`` (the paper).
        learn_scale: learn :math:`s`. Default ``False``.
        augment: generated support examples, e.g. ``{"hallucinator": "vae", "per_class": 5}``
            (see :doc:`/generative`); ``None`` (default): none.
        embed_dim: embedding size ``d`` (the LSTMs' size with ``fce``, the hallucinator's with
            ``augment``); default ``backbone.out_dim``.

    Shapes:
        :meth:`relate`: graph ``x [b, n, d]`` -> logits (log-probabilities) ``[b, q, n_way]``.
    """

    #: Whether the predictions depend on the order of the support set (``True`` with FCE).
    support_order_dependent: bool = False

    def __init__(self, backbone: nn.Module, fce: bool = False, lstm_layers: int = 1,
                 unrolling_steps: int = 5, scale: float = 1.0, learn_scale: bool = False,
                 augment: dict[str, Any] | None = None, embed_dim: int | None = None) -> None:
        super().__init__(backbone)
        if lstm_layers < 1:
            raise ValueError(f"expected lstm_layers >= 1, got {lstm_layers}")
        if unrolling_steps < 1:
            raise ValueError(f"expected unrolling_steps >= 1, got {unrolling_steps}")
        self.fce = bool(fce)
        self.unrolling_steps = int(unrolling_steps)
        scale_t = torch.tensor(float(scale))
        if learn_scale:
            self.scale = nn.Parameter(scale_t)
        else:
            self.register_buffer("scale", scale_t)
        if self.fce:
            dim = embedding_size(self.backbone, embed_dim)
            self.support_order_dependent = True
            self.support_lstm = nn.LSTM(dim, dim, num_layers=lstm_layers, batch_first=True,
                                        bidirectional=True)
            self.query_lstm = nn.LSTMCell(2 * dim, dim)
        if augment is not None:
            self.setup_augment(augment, embedding_size(self.backbone, embed_dim))

    def encode_support(self, support: Tensor) -> Tensor:
        """:math:`g(x_i, S)`: the bidirectional LSTM with a skip connection.

        Shapes:
            ``[b, s, d] -> [b, s, d]``
        """
        out, _ = self.support_lstm(support)  # [b, s, 2d]
        forward, backward = out.chunk(2, dim=-1)
        return support + forward + backward

    def encode_query(self, query: Tensor, support: Tensor) -> Tensor:
        """:math:`f(\\hat x, S)`: the attention LSTM, every query on its own.

        Args:
            query: ``[b, q, d]`` query embeddings :math:`f'(\\hat x)`.
            support: ``[b, s, d]`` support embeddings :math:`g(x_i, S)`.

        Shapes:
            ``[b, q, d], [b, s, d] -> [b, q, d]``
        """
        b = query.shape[0]
        x = rearrange(query, "b q d -> (b q) d")
        h, c = x, torch.zeros_like(x)
        for _ in range(self.unrolling_steps):
            att = einsum(rearrange(h, "(b q) d -> b q d", b=b), support,
                         "b q d, b s d -> b q s").softmax(dim=-1)
            read = rearrange(einsum(att, support, "b q s, b s d -> b q d"), "b q d -> (b q) d")
            h_hat, c = self.query_lstm(torch.cat([x, read], dim=-1), (h, c))
            h = h_hat + x
        return rearrange(h, "(b q) d -> b q d", b=b)

    def relate(self, graph: EpisodeGraph) -> Tensor:
        support, query = graph.support, graph.query
        if self.fce:
            # the LSTMs in float32 (float64 stays): oneDNN has no bfloat16 LSTM on CPUs without
            # AVX-512 ("could not create a primitive descriptor"), and the recurrences gain
            # nothing from half precision at these sizes
            dtype = compute_dtype(support)
            with torch.autocast(support.device.type, enabled=False):
                support = self.encode_support(support.to(dtype))
                query = self.encode_query(query.to(dtype), support)
        scores = self.scale * cosine_similarity(query, support)  # [b, q, s]
        scores = scores + graph.support_weights.log().unsqueeze(1)
        return matching_log_probs(scores, graph.support_labels, graph.n_way)

    def extra_repr(self) -> str:
        return (f"fce={self.fce}, unrolling_steps={self.unrolling_steps}, "
                f"scale={float(self.scale):g}, {super().extra_repr()}")


register_variant("matching_fce", MatchingNet, "matching", fce=True)
