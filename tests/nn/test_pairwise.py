"""The blocked pair MLP equals the plain modules: values, gradients, BatchNorm statistics."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from relgraph.graph import LearnedKernel
from relgraph.methods import build_method
from relgraph.nn.edge_labeling import mlp_layers
from relgraph.nn.pairwise import pair_mlp, symmetric_pairs, use_fused


def random_mlp(dims: tuple[int, ...], out: int = 2, dtype: torch.dtype = torch.float64,
               norm: bool = True) -> nn.Sequential:
    torch.manual_seed(0)
    if norm:
        mlp = nn.Sequential(*mlp_layers(dims), nn.Linear(dims[-1], out))
    else:  # LearnedKernel's layout without BatchNorm (biases, LeakyReLU not in place)
        mlp = LearnedKernel(dims[0], dims[1:], out_dim=out, norm=False).mlp
    for m in mlp:
        if isinstance(m, nn.BatchNorm1d):  # not the identity at the start
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_()
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
    return mlp.to(dtype)


def grads(out: torch.Tensor, weight: torch.Tensor, inputs: list[torch.Tensor]) -> list:
    return list(torch.autograd.grad((out * weight).sum(), inputs))


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("norm", [True, False])
def test_matches_the_mlp_on_the_repeated_rows(training, norm):
    """Row ``r`` counted ``c_r`` times: the plain MLP on the repeated rows (each repeat but the
    first getting no gradient of its own) gives the same values, gradients and statistics."""
    mlp = random_mlp((5, 7, 6), norm=norm).train(training)
    ref = copy.deepcopy(mlp)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(9, 5, dtype=torch.float64, generator=g, requires_grad=True)
    pairs = torch.randint(0, 9, (2, 30), generator=g)
    counts = torch.randint(1, 4, (30,), generator=g)
    out = pair_mlp(mlp, x, pairs, counts.double(), block_rows=7)  # 5 blocks, the last short
    w = torch.randn(out.shape, dtype=torch.float64, generator=g)

    diff = (x[pairs[0]] - x[pairs[1]]).abs().repeat_interleave(counts, 0)
    full = ref(diff)
    first = torch.zeros(len(full), dtype=torch.bool)
    first[counts.cumsum(0) - counts] = True
    w_full = torch.zeros_like(full)
    w_full[first] = w
    torch.testing.assert_close(out, full[first], rtol=1e-10, atol=1e-10)
    for a, b in zip(grads(out, w, [x, *mlp.parameters()]),
                    grads(full, w_full, [x, *ref.parameters()]), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
    for (name, a), b in zip(mlp.named_buffers(), ref.buffers(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=name)


def test_no_grad_eval_and_plain_path_agree():
    mlp = random_mlp((4, 8, 8)).float().eval()
    x = torch.randn(6, 4)
    pairs = torch.tensor([[1, 2, 3, 5, 0], [0, 0, 4, 1, 0]])
    with torch.no_grad():
        fast = pair_mlp(mlp, x, pairs, block_rows=2)
        with use_fused(False):
            plain = pair_mlp(mlp, x, pairs)
    torch.testing.assert_close(fast, plain)
    with pytest.raises(ValueError, match="multiplicities"), use_fused(False):
        pair_mlp(mlp, x, pairs, torch.full((5,), 2.0))


def test_symmetric_pairs_cover_the_block():
    senders = torch.tensor([True, False, True, True, False])
    pairs, counts, lookup = symmetric_pairs(senders, batch=2)
    n, cols = 5, senders.nonzero().squeeze(1)
    assert lookup.shape == (2, n, 3)
    assert counts.sum() == 2 * n * 3  # every entry of the block once
    hits = torch.zeros(len(counts))
    for b in range(2):
        for i in range(n):
            for c, j in enumerate(cols.tolist()):
                r = int(lookup[b, i, c])
                hits[r] += 1
                if i == j:
                    assert r == len(counts) - 1  # the diagonal row, difference 0
                else:
                    assert {int(pairs[0, r]), int(pairs[1, r])} == {b * n + i, b * n + j}
    torch.testing.assert_close(hits, counts)


@pytest.mark.parametrize("training", [True, False])
def test_symmetric_kernel_equals_the_full_block(training):
    torch.manual_seed(0)
    kernel = LearnedKernel(5, (8, 6), out_dim=2).double().train(training)
    ref = copy.deepcopy(kernel)
    x = torch.randn(3, 7, 5, dtype=torch.float64, requires_grad=True)
    senders = torch.tensor([True, True, False, True, False, False, True])
    out = kernel.symmetric(x, senders)
    full = ref(x, x[:, senders])
    torch.testing.assert_close(out, full)
    w = torch.randn(out.shape, dtype=torch.float64)
    for a, b in zip(grads(out, w, [x, *kernel.parameters()]),
                    grads(full, w, [x, *ref.parameters()]), strict=True):
        torch.testing.assert_close(a, b)
    for a, b in zip(kernel.buffers(), ref.buffers(), strict=True):
        torch.testing.assert_close(a, b)


def _head_outputs(model: nn.Module, feats: tuple, labels: torch.Tensor, training: bool) -> list:
    support, s_lab, query, n_way = feats
    model.train(training)
    s = support.clone().requires_grad_(True)
    q = query.clone().requires_grad_(True)
    graph = model.build_graph(s, s_lab, q, n_way)
    loss, logits = model.relate_loss(graph, labels)
    params = [p for p in model.parameters() if p.requires_grad]
    return [loss, logits, *torch.autograd.grad(loss, [s, q, *params], allow_unused=True),
            *[b.clone() for b in model.buffers()]]


@pytest.mark.parametrize("method", ["gnn", "gnn_transductive", "edge_gnn",
                                    "edge_gnn_transductive"])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("block_rows", [2048, 7])
def test_heads_equal_their_plain_path(method, training, block_rows, monkeypatch):
    """The graph heads with the fast pair MLP give the plain modules' loss, logits, gradients
    and BatchNorm statistics (a batch of 2 episodes of 4-way 2-shot 3-query; in float64: in
    float32 a rounding difference of 1e-7 in the forward pass can flip a LeakyReLU slope
    downstream and move some gradients by 1e-3 in either path)."""
    monkeypatch.setattr("relgraph.nn.pairwise.CPU_BLOCK_ROWS", block_rows)
    torch.manual_seed(0)
    kwargs = {"nf": 8} if method.startswith("gnn") else {"proj_dim": 12}
    fast = build_method(method, nn.Identity(), in_dim=10, **kwargs) if "edge" in method else \
        build_method(method, nn.Identity(), embed_dim=10, **kwargs)
    fast = fast.double()
    plain = copy.deepcopy(fast)
    g = torch.Generator().manual_seed(2)
    s_lab = torch.arange(4).repeat_interleave(2).expand(2, -1)
    q_lab = torch.arange(4).repeat(3).expand(2, -1)
    feats = (torch.randn(2, 8, 10, generator=g, dtype=torch.float64), s_lab,
             torch.randn(2, 12, 10, generator=g, dtype=torch.float64), 4)
    got = _head_outputs(fast, feats, q_lab, training)
    with use_fused(False):
        want = _head_outputs(plain, feats, q_lab, training)
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        if a is None or b is None:
            assert a is None and b is None
            continue
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().double() - b.detach().double()).norm() / b.detach().double().norm())


@pytest.mark.parametrize("training", [True, False])
def test_autocast_keeps_the_fast_path_as_accurate_as_autocast(training):
    """Under bfloat16 autocast the fast path (products and rows in bfloat16, statistics and
    parameters in float32) is as close to the exact float64 result as autocast's own run of
    the plain modules: values, gradients, BatchNorm statistics."""
    mlp = random_mlp((12, 32, 24), out=1, dtype=torch.float32).train(training)
    ref, plain = copy.deepcopy(mlp).double(), copy.deepcopy(mlp)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(40, 12, generator=g)
    pairs = torch.randint(0, 40, (2, 600), generator=g)
    counts = torch.randint(1, 3, (600,), generator=g).sort().values
    w = torch.randn(600, 1, generator=g)
    first = torch.zeros(int(counts.sum()), dtype=torch.bool)
    first[counts.cumsum(0) - counts] = True
    w_full = torch.zeros(int(counts.sum()), 1)
    w_full[first] = w

    def run(model, dtype, fast):
        xx = x.to(dtype).requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.float32):
            if fast:
                out = pair_mlp(model, xx, pairs, counts.float(), block_rows=128)
                weight = w
            else:
                diff = (xx[pairs[0]] - xx[pairs[1]]).abs()
                out = model(torch.repeat_interleave(diff, counts, 0))
                weight = w_full
        res = grads(out.to(dtype), weight.to(dtype), [xx, *model.parameters()])
        return [out[first] if not fast else out, *res, *[b.clone() for b in model.buffers()]]

    exact = run(ref, torch.float64, fast=False)
    fast = run(mlp, torch.float32, fast=True)
    with use_fused(False):
        auto = run(plain, torch.float32, fast=False)
    assert fast[0].dtype == torch.float32
    for f, a, e in zip(fast, auto, exact, strict=True):
        if e.dtype == torch.long:  # num_batches_tracked
            assert f == a == e
            continue
        assert _rel_err(f, e) <= 2 * _rel_err(a, e) + 1e-3


def test_autocast_takes_the_fast_path():
    """Float32 parameters under bfloat16 autocast take the fast path even with a bfloat16
    input; float16 autocast does not."""
    from relgraph.nn.pairwise import supports_fused

    mlp = random_mlp((4, 8), dtype=torch.float32)
    x = torch.randn(5, 4)
    assert supports_fused(mlp, x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert supports_fused(mlp, x)
        assert supports_fused(mlp, x.bfloat16())
        assert not supports_fused(mlp.double(), x)
    with torch.autocast("cpu", dtype=torch.float16):  # float16's range: the plain modules
        assert not supports_fused(mlp, x)
        with use_fused(False):
            assert not supports_fused(mlp, x)


def test_training_without_multiplicities_takes_the_faster_path_per_dtype(monkeypatch):
    """BatchNorm in training, no multiplicities: the blocked path in float32, the plain modules
    under bfloat16 autocast unless BLOCKED_TRAINING_UNDER_AUTOCAST (experiments/
    bench_pair_mlp.py, part 4, measured both)."""
    import relgraph.nn.pairwise as pw

    taken = []
    monkeypatch.setattr(pw._PairMLP, "apply", lambda *a: taken.append("blocked") or
                        torch.zeros(a[1].shape[1], 1))
    mlp = random_mlp((4, 8), out=1, dtype=torch.float32).train()
    x = torch.randn(6, 4, requires_grad=True)
    pairs = torch.tensor([[1, 2, 3, 4, 5], [0, 0, 1, 2, 3]])
    pw.pair_mlp(mlp, x, pairs)
    assert taken == ["blocked"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        pw.pair_mlp(mlp, x, pairs)
        assert taken == ["blocked"]  # the plain modules
        monkeypatch.setattr(pw, "BLOCKED_TRAINING_UNDER_AUTOCAST", True)
        pw.pair_mlp(mlp, x, pairs)
    assert taken == ["blocked", "blocked"]
