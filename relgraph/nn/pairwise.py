"""A pair MLP :math:`\\mathrm{MLP}(\\lvert x_i - x_j \\rvert)` over a list of node pairs, fast.

The learned kernels of the GNN (Garcia & Bruna 2018) and of the edge-labeling GNN (Kim et al.
2019) run an MLP of ``Linear -> BatchNorm -> LeakyReLU`` blocks and a last ``Linear`` on the
absolute difference of every node pair. On a CPU, with the ``P ~ n^2`` rows of a 400-node
graph, the matrix products are only half of the time when the layers run one after the other
on ``[P, h]`` tensors: every BatchNorm, activation and their backward passes stream the
whole tensor through memory again (tens of MB per layer, far larger than the caches).

:func:`pair_mlp` computes exactly the same function (same parameters, same BatchNorm
statistics and running-statistics updates) in blocks of rows, one pass over the rows per
layer: a block's matrix product, its BatchNorm statistics, the previous layer's normalisation
and activation all happen while the block is in cache, and the backward pass is written by
hand in the same way (BatchNorm's backward in one pass per block, the pair differences
recomputed instead of stored). It also takes a **multiplicity** per row:
BatchNorm then normalises with the statistics of the multiset in which row ``r`` appears
``counts[r]`` times, so a symmetric kernel evaluated once per unordered pair gives the same
values and gradients as the full ``n x n`` computation (see :func:`symmetric_pairs`).

:func:`use_fused` switches the fast path off (``with use_fused(False): ...``) to run the
plain modules instead, e.g. to compare or time both; the plain path is also taken where the
fast one does not apply (another layer layout).

**Mixed precision.** Under bfloat16 autocast (``torch.autocast(device,
dtype=torch.bfloat16)``, the trainer's ``train.amp_dtype: bfloat16``) the fast path keeps what
autocast would: the matrix products, the rows' activations and their gradients in bfloat16
(products accumulated in float32 by the BLAS, results rounded), the parameters and their
gradients in float32; BatchNorm's statistics are per-block sums accumulated in float32
(rounded once per block) and combined in float64. On a CPU with AMX / AVX-512 BF16 units the
products run several times faster and the saved rows take half the memory
(``experiments/bench_amp_cpu.py``). The accuracy is autocast's own (tested against float64).
Under float16 autocast (GPUs) the plain modules run: float16's range would not hold the
blocks' sums nor BatchNorm's small gradient corrections.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["pair_mlp", "symmetric_pairs", "use_fused", "fused_enabled", "supports_fused"]

#: Rows per block on the CPU: a block's ``[rows, hidden]`` float32 tensors stay in the caches
#: (rows of a 2-byte autocast dtype: twice as many).
CPU_BLOCK_ROWS = 2048

_FUSED = True

#: Whether training without multiplicities (``counts=None``, BatchNorm with batch statistics)
#: on the CPU under bfloat16 autocast takes the fast path. Off: there the plain modules
#: (PyTorch's own BatchNorm kernels under autograd) measured faster than the blocked backward
#: pass, which in float32 measured faster (``experiments/bench_pair_mlp.py``, part 4). On
#: other devices such training always runs the plain modules.
BLOCKED_TRAINING_UNDER_AUTOCAST = False


@contextlib.contextmanager
def use_fused(enabled: bool = True) -> Iterator[None]:
    """Turn the fast path of :func:`pair_mlp` (and of the heads that use it) on or off inside
    a ``with`` block (module-wide; the previous setting is restored on exit)."""
    global _FUSED
    old, _FUSED = _FUSED, bool(enabled)
    try:
        yield
    finally:
        _FUSED = old


def fused_enabled() -> bool:
    """Whether the fast path is on (see :func:`use_fused`)."""
    return _FUSED


@dataclass(frozen=True)
class _Block:
    linear: nn.Linear
    norm: nn.BatchNorm1d | None
    slope: float | None  # LeakyReLU slope; None for the last Linear


def _blocks(mlp: nn.Sequential) -> list[_Block] | None:
    """The MLP as ``Linear [-> BatchNorm1d] -> LeakyReLU`` blocks and a last ``Linear``, or
    ``None`` when it has another layout."""
    mods = list(mlp)
    out: list[_Block] = []
    i = 0
    while i < len(mods):
        lin = mods[i]
        if type(lin) is not nn.Linear:
            return None
        if i == len(mods) - 1:
            out.append(_Block(lin, None, None))
            return out
        i += 1
        norm = None
        if isinstance(mods[i], nn.BatchNorm1d):
            norm = mods[i]
            if norm.weight is None or not norm.track_running_stats:
                return None
            i += 1
        if i >= len(mods) or type(mods[i]) is not nn.LeakyReLU:
            return None
        if mods[i].negative_slope < 0:  # the backward reads the sign of the output
            return None
        out.append(_Block(lin, norm, float(mods[i].negative_slope)))
        i += 1
    return None  # no last Linear


def _matmul_dtype(x: Tensor) -> torch.dtype | None:
    """The autocast dtype of ``x``'s device when autocast is on there, else ``None``."""
    kind = x.device.type
    return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else None


def supports_fused(mlp: nn.Sequential, x: Tensor) -> bool:
    """Whether :func:`pair_mlp` takes the fast path for this MLP and input."""
    if not _FUSED or _blocks(mlp) is None:
        return False
    mm = _matmul_dtype(x)
    if mm is not None:  # mixed precision: bfloat16 (float32's range), float32 parameters
        return (mm == torch.bfloat16 and x.is_floating_point()
                and all(p.dtype == torch.float32 for p in mlp.parameters()))
    return (x.dtype in (torch.float32, torch.float64)
            and all(p.dtype == x.dtype for p in mlp.parameters()))


def symmetric_pairs(senders: Tensor, batch: int = 1) -> tuple[Tensor, Tensor, Tensor]:
    """The distinct values of a symmetric pair function on the ``n x m`` block ``(i, j)``,
    ``j`` in ``senders``, of ``batch`` graphs, with their multiplicities.

    ``(i, j)`` and ``(j, i)`` (both ends senders) hold the same value, and every diagonal entry
    ``(i, i)`` the value at ``x_i - x_i = 0``. So the block has one row per unordered pair
    ``{i, j}`` (``i != j``, at least one end a sender) of every graph, counted twice when both
    ends are senders, and a last row, the pair ``(0, 0)`` (difference 0), counted once per
    diagonal entry of the block over all graphs. Rows index the flattened nodes
    ``[batch * n, d]``; the pairs counted twice come first (all graphs), then those counted
    once, then the diagonal row (runs of equal multiplicity, as :func:`pair_mlp` prefers).

    Args:
        senders: ``[n]`` bool, the columns ``j`` of the block (``m`` of them).
        batch: number of graphs.

    Returns:
        ``pairs [2, R]`` (node indices of every row), ``counts [R]`` (float multiplicities,
        summing to ``batch * n * m``) and ``lookup [batch, n, m]`` (the row of every entry).
    """
    n = senders.shape[0]
    dev = senders.device
    cols = senders.nonzero().squeeze(1)  # [m]
    m = cols.shape[0]
    i_full = torch.arange(n, device=dev).unsqueeze(1).expand(n, m)
    j_full = cols.unsqueeze(0).expand(n, m)
    both = senders.unsqueeze(1).expand(n, m)
    # an entry (i, j) with both ends senders is stored once, as (max, min)
    twice = both & (i_full > j_full)
    once = ~both
    # [2, P2] and [2, P1]
    pairs_ep = [torch.stack([i_full[sel], j_full[sel]]) for sel in (twice, once)]
    p2, p1 = pairs_ep[0].shape[1], pairs_ep[1].shape[1]
    # row of every entry within one graph: twice-pairs 0..P2-1, once-pairs P2..P2+P1-1
    table = torch.full((n, n), -1, dtype=torch.long, device=dev)
    table[pairs_ep[0][0], pairs_ep[0][1]] = torch.arange(p2, device=dev)
    table[pairs_ep[0][1], pairs_ep[0][0]] = torch.arange(p2, device=dev)
    table[pairs_ep[1][0], pairs_ep[1][1]] = torch.arange(p2, p2 + p1, device=dev)
    local = table[:, cols]  # [n, m], -1 on the diagonal
    e = torch.arange(batch, device=dev).view(-1, 1, 1)
    lookup = torch.where(local < p2, e * p2 + local, batch * p2 + e * p1 + (local - p2))
    lookup = torch.where(local < 0, batch * (p2 + p1), lookup)
    offsets = (torch.arange(batch, device=dev) * n).view(1, -1, 1)
    pairs = torch.cat([(pairs_ep[0].unsqueeze(1) + offsets).flatten(1),
                       (pairs_ep[1].unsqueeze(1) + offsets).flatten(1),
                       torch.zeros(2, 1, dtype=torch.long, device=dev)], dim=1)
    counts = torch.cat([torch.full((batch * p2,), 2.0, device=dev),
                        torch.ones(batch * p1, device=dev),
                        torch.full((1,), float(batch * m), device=dev)])
    return pairs, counts, lookup


def pair_mlp(mlp: nn.Sequential, x: Tensor, pairs: Tensor, counts: Tensor | None = None,
             block_rows: int | None = None) -> Tensor:
    """``mlp(|x[pairs[0]] - x[pairs[1]]|)`` for every row of ``pairs``, BatchNorm over the rows
    weighted by ``counts``.

    Equal to running ``mlp`` on the ``[R, d]`` differences, each row repeated ``counts[r]``
    times (values, gradients and BatchNorm running statistics, up to float rounding); with
    ``counts=None`` every row once. ``mlp`` is ``Linear [-> BatchNorm1d] -> LeakyReLU``
    blocks and a last ``Linear`` (:func:`~relgraph.nn.edge_labeling.mlp_layers`,
    :class:`~relgraph.graph.LearnedKernel`); other layouts run the plain modules, which
    requires ``counts=None``; so do BatchNorm layers in training mode with
    ``counts=None`` under bfloat16 autocast or off the CPU (on the CPU under autocast PyTorch's
    own BatchNorm kernels under autograd measured slightly faster than the blocked backward
    pass; GPUs were not measured). Rows are processed in
    blocks of equal multiplicity, so long runs of equal ``counts`` are fastest. Under
    bfloat16 autocast the products and the rows run in bfloat16, the statistics in float32
    (see the module's notes); the output is float32.

    Args:
        mlp: the MLP.
        x: ``[N, d]`` node features (all graphs flattened).
        pairs: ``[2, R]`` long node indices of every row.
        counts: ``[R]`` positive (integer-valued) multiplicities; default 1.
        block_rows: rows per block; default :data:`CPU_BLOCK_ROWS` on the CPU, all rows at
            once elsewhere.

    Shapes:
        ``x [N, d], pairs [2, R], counts [R] -> [R, out]``
    """
    if pairs.dim() != 2 or pairs.shape[0] != 2:
        raise ValueError(f"expected pairs [2, R], got {tuple(pairs.shape)}")
    rows = pairs.shape[1]
    if counts is not None and counts.shape != (rows,):
        raise ValueError(f"expected counts [{rows}], got {tuple(counts.shape)}")
    training = any(b.norm is not None and b.norm.training for b in _blocks(mlp) or [])
    # training without multiplicities: the blocked path where it measured faster (the CPU in
    # float32; see BLOCKED_TRAINING_UNDER_AUTOCAST), PyTorch's own modules elsewhere (GPUs:
    # not measured)
    plain_faster = training and counts is None and (
        x.device.type != "cpu"
        or (_matmul_dtype(x) is not None and not BLOCKED_TRAINING_UNDER_AUTOCAST))
    if rows == 0 or not supports_fused(mlp, x) or plain_faster:
        if counts is not None and bool((counts != 1).any()):
            raise ValueError("row multiplicities need the fused path of pair_mlp (an MLP of "
                             "Linear [-> BatchNorm1d] -> LeakyReLU blocks; under autocast "
                             "only bfloat16, with float32 parameters)")
        diff = (x.index_select(0, pairs[0]) - x.index_select(0, pairs[1])).abs()
        return mlp(diff)
    blocks = _blocks(mlp)
    assert blocks is not None
    mm = _matmul_dtype(x)
    if mm is not None:
        x = x.float()  # float32 between the products (an autocast input may be bfloat16)
    if block_rows is None:
        # the same bytes per block: twice the rows of a 2-byte autocast dtype
        scale = 4 // (torch.finfo(mm).bits // 8) if mm is not None else 1
        block_rows = CPU_BLOCK_ROWS * scale if x.device.type == "cpu" else rows
    # spans of at most block_rows rows of one multiplicity each: (start, end, count)
    if counts is None:
        runs = [(0, rows, 1.0)]
    else:
        values, lengths = torch.unique_consecutive(counts.cpu(), return_counts=True)
        ends = lengths.cumsum(0).tolist()
        runs = [(e - n, e, float(v)) for v, n, e in zip(values.tolist(), lengths.tolist(), ends,
                                                        strict=True)]
    spans = [(s, min(s + block_rows, e), c) for s0, e, c in runs
             for s in range(s0, e, block_rows)]
    total = sum((e - s) * c for s, e, c in spans)
    if any(b.norm is not None and b.norm.training for b in blocks) and total <= 1:
        raise ValueError(f"Expected more than 1 value per channel when training, got {total:g} "
                         "rows")
    if not any(b.norm is not None and b.norm.training for b in blocks) and not (
            torch.is_grad_enabled() and (x.requires_grad
                                         or any(p.requires_grad for p in mlp.parameters()))):
        return _rows_at_once(x, pairs, blocks, block_rows, mm)
    params: list[Tensor] = []
    for b in blocks:
        params.append(b.linear.weight)
        if b.linear.bias is not None:
            params.append(b.linear.bias)
        if b.norm is not None:
            params += [b.norm.weight, b.norm.bias]
    with torch.autocast(x.device.type, enabled=False):  # the products are cast by hand
        return _PairMLP.apply(x, pairs, (tuple(spans), float(total), tuple(blocks), mm),
                              *params)


@dataclass(frozen=True)
class _Norm:
    """A hidden block's BatchNorm as ``p = z * scale + shift`` (``scale = gamma * rstd``)."""
    mean: Tensor
    var: Tensor
    rstd: Tensor
    scale: Tensor
    shift: Tensor
    batch: bool  # batch statistics (training) or running ones
    eps: float
    weight: Tensor


class _Stats:
    """Weighted mean and variance of the rows from per-span sums (the sum and the sum of
    squares of every span, combined in float64 with Chan et al.'s parallel formula)."""

    def __init__(self, spans: list[tuple[int, int, float]], width: int, like: Tensor) -> None:
        self.sums = like.new_empty(len(spans), width)
        self.squares = like.new_empty(len(spans), width)
        self.rows = torch.tensor([float(e - s) for s, e, _ in spans], dtype=torch.float64,
                                 device=like.device).unsqueeze(1)
        self.counts = torch.tensor([c for _, _, c in spans], dtype=torch.float64,
                                   device=like.device).unsqueeze(1)

    def add(self, k: int, z: Tensor) -> None:
        if z.dtype == self.sums.dtype:
            torch.sum(z, 0, out=self.sums[k])
            torch.linalg.vecdot(z, z, dim=0, out=self.squares[k])
        else:  # low-precision rows: sums accumulated in float32, rounded once (a cast copy
            # of the rows, as dtype=float32 makes, would cost more than the rest of the pass)
            self.sums[k] = z.sum(0)
            self.squares[k] = torch.linalg.vecdot(z, z, dim=0)

    def mean_var(self, total: float) -> tuple[Tensor, Tensor]:
        means = self.sums.double() / self.rows  # [spans, C]
        m2 = self.squares.double() - self.rows * means * means  # per span, unweighted
        mean = (self.counts * self.rows * means).sum(0) / total
        m2 = (self.counts * (m2 + self.rows * (means - mean).square())).sum(0)
        return mean, (m2 / total).clamp_min(0)


def _norm(norm: nn.BatchNorm1d, stats: _Stats | None, total: float, dtype: torch.dtype,
          offset: Tensor | None = None) -> _Norm:
    """The normalisation of a block: batch statistics of the saved ``z - offset`` (and the
    running-statistics update of :class:`torch.nn.BatchNorm1d` in training) or the running
    ones."""
    if stats is not None:
        assert offset is not None
        mean, var = (t.to(dtype) for t in stats.mean_var(total))
        with torch.no_grad():
            norm.num_batches_tracked.add_(1)  # type: ignore[union-attr]
            factor = (1.0 / float(norm.num_batches_tracked) if norm.momentum is None
                      else norm.momentum)
            unbiased = var * (total / (total - 1.0))
            norm.running_mean.mul_(1 - factor).add_(mean + offset, alpha=factor)
            norm.running_var.mul_(1 - factor).add_(unbiased, alpha=factor)
    else:
        mean = norm.running_mean.to(dtype)
        var = norm.running_var.to(dtype)
    rstd = (var + norm.eps).rsqrt()
    scale = norm.weight.detach() * rstd
    return _Norm(mean, var, rstd, scale, norm.bias.detach() - mean * scale, stats is not None,
                 norm.eps, norm.weight.detach())


def _rows_at_once(x: Tensor, pairs: Tensor, blocks: list[_Block], block_rows: int,
                  mm: torch.dtype | None) -> Tensor:
    """The forward pass without gradients nor batch statistics: every layer of a block of
    rows in one go (nothing is kept but the output); products in ``mm`` when given."""
    norms = [None if b.norm is None else _norm(b.norm, None, 0.0, x.dtype) for b in blocks]
    weights = [_weight(b.linear, mm) for b in blocks]
    out = []
    with torch.autocast(x.device.type, enabled=False):
        for s in range(0, pairs.shape[1], block_rows):
            a = _input(x, pairs, s, min(s + block_rows, pairs.shape[1]))
            a = a if mm is None else a.to(mm)
            for blk, norm, w in zip(blocks, norms, weights, strict=True):
                a = _linear(a, w, blk.linear.bias)
                if blk.slope is not None:
                    a = F.leaky_relu_(_pre(a, norm), blk.slope)
            out.append(a.to(x.dtype))
    return torch.cat(out) if len(out) > 1 else out[0]


def _diff(x: Tensor, pairs: Tensor, s: int, e: int) -> Tensor:
    """``x_i - x_j`` of rows ``s:e``."""
    return x.index_select(0, pairs[0, s:e]) - x.index_select(0, pairs[1, s:e])


def _input(x: Tensor, pairs: Tensor, s: int, e: int) -> Tensor:
    """``|x_i - x_j|`` of rows ``s:e``."""
    return _diff(x, pairs, s, e).abs_()


def _weight(lin: nn.Linear, mm: torch.dtype | None) -> Tensor:
    """The weight of ``lin`` (detached) in the products' dtype."""
    w = lin.weight.detach()
    return w if mm is None else w.to(mm)


def _linear(a: Tensor, w: Tensor, bias: Tensor | None) -> Tensor:
    """``a w^T (+ bias)`` in ``w``'s dtype (from :func:`_weight`; the bias, added before the
    result is rounded, is cast to it)."""
    if bias is None:
        return a @ w.t()
    return torch.addmm(bias.detach().to(w.dtype), a, w.t())


def _pre(z: Tensor, norm: _Norm | None) -> Tensor:
    """The activation's input of a hidden block: a new tensor of ``z``'s dtype (``z`` is
    kept). Low-precision rows use the scale and shift rounded to their dtype: an operation
    of mixed dtypes would first copy the rows to float32."""
    if norm is None:
        return z.clone()
    return torch.addcmul(norm.shift.to(z.dtype), z, norm.scale.to(z.dtype))


class _PairMLP(torch.autograd.Function):
    """The blocked forward and hand-written backward of :func:`pair_mlp`.

    Hidden block ``l``: ``z = a W^T (+ b)``, ``p = z * scale + shift`` (BatchNorm with batch or
    running statistics; ``p = z`` without one), ``a' = leaky(p)``. Saved: ``z`` and ``a'`` of
    every hidden block, per span of rows (with batch statistics ``z`` minus the mean of the
    first span, which BatchNorm does not see, so that the sums of squares do not cancel); the
    pair differences are recomputed span by span in the backward pass, and each span's
    gradients are carried through all the operations of a layer while it is in cache.
    """

    @staticmethod
    def forward(ctx, x, pairs, plan, *params):  # noqa: ANN001, ANN205
        spans, total, blocks, mm = plan
        weights = [_weight(b.linear, mm) for b in blocks]
        norms: list[_Norm | None] = []
        zs: list[list[Tensor]] = []
        acts: list[list[Tensor]] = []
        out: list[Tensor] = []
        diffs: list[Tensor] = []  # with mm: the pair differences x_i - x_j, kept in mm
        for li, blk in enumerate(blocks):
            stats = None
            if blk.norm is not None and blk.norm.training:
                stats = _Stats(spans, blk.linear.out_features, x)
            cur: list[Tensor] = []
            offset = shifted = None
            for k, (s, e, _) in enumerate(spans):
                if li == 0 and mm is None:
                    a = _input(x, pairs, s, e)
                elif li == 0:
                    diffs.append(_diff(x, pairs, s, e).to(mm))
                    a = diffs[-1].abs()
                else:
                    a = F.leaky_relu_(_pre(zs[-1][k], norms[-1]), blocks[li - 1].slope)
                    acts[-1].append(a)
                if stats is None:
                    z = _linear(a, weights[li], blk.linear.bias)
                elif k == 0:  # saved minus the first span's mean: well-conditioned sums
                    z = _linear(a, weights[li], blk.linear.bias)
                    offset = z.mean(0).to(x.dtype)
                    shifted = -offset if blk.linear.bias is None else blk.linear.bias - offset
                    if mm is None:
                        z.sub_(offset)
                    else:  # subtracted before the product is rounded
                        z = _linear(a, weights[li], shifted)
                else:
                    assert shifted is not None
                    z = _linear(a, weights[li], shifted)
                cur.append(z)
                if stats is not None:
                    stats.add(k, z)
            if blk.slope is None:
                out = [t.to(x.dtype) for t in cur]
                break
            zs.append(cur)
            acts.append([])
            norms.append(None if blk.norm is None
                         else _norm(blk.norm, stats, total, x.dtype, offset))
        ctx.save_for_backward(x, pairs, *[t for tl in zs + acts for t in tl], *diffs)
        ctx.plan, ctx.norms = plan, norms
        return torch.cat(out) if len(out) > 1 else out[0]

    @staticmethod
    def backward(ctx, grad_out):  # noqa: ANN001, ANN205
        with torch.autocast(grad_out.device.type, enabled=False):  # dtypes are set by hand
            return _PairMLP._backward(ctx, grad_out)

    @staticmethod
    def _backward(ctx, grad_out):  # noqa: ANN001, ANN205
        x, pairs, *flat = ctx.saved_tensors
        spans, total, blocks, mm = ctx.plan
        grad_out = grad_out.to(x.dtype if mm is None else mm)  # the rows' gradients' dtype
        norms = ctx.norms
        nk = len(spans)
        hidden = len(blocks) - 1
        zs = [flat[i * nk:(i + 1) * nk] for i in range(hidden)]
        acts = [flat[(hidden + i) * nk:(hidden + i + 1) * nk] for i in range(hidden)]
        diffs = flat[2 * hidden * nk:]  # with mm: x_i - x_j per span
        lin_grads: list[list[Tensor]] = [[] for _ in blocks]
        norm_grads: list[list[Tensor]] = [[] for _ in blocks]
        grad_x = torch.zeros_like(x) if ctx.needs_input_grad[0] else None
        # the gradient of block li's z, span k, is made by dz(k) when it is needed
        gps: list[Tensor] = [grad_out[s:e] for s, e, _ in spans]

        def dz(k: int) -> Tensor:
            return gps[k]

        for li in range(len(blocks) - 1, -1, -1):
            lin = blocks[li].linear
            w = _weight(lin, mm)
            dw = torch.zeros_like(lin.weight)
            db = None if lin.bias is None else torch.zeros_like(lin.bias)
            below = blocks[li - 1] if li > 0 else None
            norm = norms[li - 1] if li > 0 else None
            new_gps: list[Tensor] = []
            if norm is not None:
                sums = x.new_empty(2, nk, w.shape[1])  # per span: d gamma, d beta (float32)
                unsaved = norm.mean.new_empty(0)  # no saved statistics (below)
            for k, (s, e, _) in enumerate(spans):
                g = dz(k)
                if db is not None:
                    db.add_(g.sum(0))
                if below is None:  # the first block: the input |x_i - x_j|
                    d = diffs[k] if mm is not None else _diff(x, pairs, s, e)
                    _addmm_(dw, g.t(), d.abs())
                    if grad_x is not None:
                        i, j = pairs[0, s:e], pairs[1, s:e]
                        da = (g @ w).mul_(d.sign()).to(x.dtype)
                        grad_x.index_add_(0, i, da)
                        grad_x.index_add_(0, j, da, alpha=-1)
                    continue
                z = zs[li - 1][k]
                a = acts[li - 1][k]
                _addmm_(dw, g.t(), a)
                gp = torch.ops.aten.leaky_relu_backward(g @ w, a, below.slope, True)
                if norm is not None:  # one pass: gp * scale and this span's d gamma, d beta
                    # eval-mode backward on the batch's statistics; CUDA asserts that the
                    # saved statistics are given: empty ones make it use the running ones
                    gp, sums[0, k], sums[1, k] = torch.ops.aten.native_batch_norm_backward(
                        gp, z, norm.weight, norm.mean, norm.var, unsaved, unsaved, False, norm.eps,
                        [True, True, True])
                new_gps.append(gp)
            lin_grads[li] = [dw] + ([] if db is None else [db])
            if below is None:
                break
            gps = new_gps
            if norm is None:
                dz = _identity(gps)
                continue
            dgamma, dbeta = sums.double().sum(1).to(x.dtype)
            norm_grads[li - 1] = [dgamma, dbeta]
            dz = _norm_backward(gps, zs[li - 1], spans, norm, dgamma, dbeta, total)
        ordered = [t for li in range(len(blocks)) for t in lin_grads[li] + norm_grads[li]]
        needed = [t if need else None for t, need in zip(ordered, ctx.needs_input_grad[3:],
                                                          strict=True)]
        return (grad_x, None, None, *needed)


def _addmm_(out: Tensor, a: Tensor, b: Tensor) -> None:
    """``out += a @ b``, the product in ``a``'s dtype, summed in ``out``'s."""
    if a.dtype == out.dtype:
        out.addmm_(a, b)
    else:
        out.add_(a @ b)


def _identity(gps: list[Tensor]):  # noqa: ANN202
    return lambda k: gps[k]


def _norm_backward(gps: list[Tensor], zs: list[Tensor], spans, norm: _Norm,  # noqa: ANN001
                   dgamma: Tensor, dbeta: Tensor, total: float):  # noqa: ANN202
    """The gradient of ``z`` of span ``k``, as a function of ``k``, from ``gps[k]``, the
    gradient of ``p`` times ``scale`` (BatchNorm's backward with fixed statistics).

    With batch statistics, a row of multiplicity ``c`` gets
    ``scale * (gp - c / N * (dbeta + u * dgamma))``, ``u = (z - mean) * rstd``, i.e.
    ``gps[k] + c * (c0 + cz * z)``.
    """
    if not norm.batch:
        return lambda k: gps[k]
    cz = -norm.scale * norm.rstd * dgamma / total
    c0 = -norm.scale * dbeta / total - cz * norm.mean

    dtype = gps[0].dtype if gps else cz.dtype  # of the rows (mixed dtypes would copy them)

    def dz(k: int) -> Tensor:
        c = spans[k][2]
        return gps[k].addcmul_(zs[k], (cz * c).to(dtype)).add_((c0 * c).to(dtype))

    return dz
