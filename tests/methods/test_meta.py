"""MAML, first-order MAML, Reptile and the functional adaptation helpers (learn2learn style)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import make_tiny_data, tiny_config
from test_contract import make_episode

from relgraph.backbones import BackboneAdapter, build_backbone
from relgraph.data import Episode
from relgraph.engine import evaluate, load_checkpoint, load_model, train
from relgraph.meta import episode_batch_norm, fit_linear_head, inner_loop
from relgraph.methods import build_method
from relgraph.methods.maml import FOMAML, MAML, Reptile


def tiny_mlp(seed: int = 0, dtype: torch.dtype = torch.float32) -> BackboneAdapter:
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh())
    return BackboneAdapter(net.to(dtype), input_shape=(6,))


def vector_episode(b: int = 2, n: int = 3, k: int = 2, q: int = 2, seed: int = 0,
                   dtype: torch.dtype = torch.float32) -> Episode:
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(b, n, 1, 6, generator=g, dtype=torch.float64)
    support = (centers + 0.3 * torch.randn(b, n, k, 6, generator=g, dtype=torch.float64))
    query = (centers + 0.3 * torch.randn(b, n, q, 6, generator=g, dtype=torch.float64))
    labels = torch.arange(n)
    return Episode(support.reshape(b, n * k, 6).to(dtype),
                   labels.repeat_interleave(k).expand(b, -1).clone(),
                   query.reshape(b, n * q, 6).to(dtype),
                   labels.repeat_interleave(q).expand(b, -1).clone(),
                   torch.arange(n).expand(b, -1).clone(), n_way=n, k_shot=k)


def conv_method(name: str, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    backbone = build_backbone("conv4", in_channels=1, image_size=16, hidden=8, out_channels=8)
    return build_method(name, backbone, **kwargs)


# --- the inner loop ------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["maml", "fomaml", "reptile"])
def test_adapting_lowers_the_support_loss(name):
    model = conv_method(name, inner_lr=0.4)
    ep = make_episode()
    x, y = ep.support[0], ep.support_labels[0]
    losses = []
    for steps in (0, 1, 3, 6):
        fast = model.adapt(x, y, ep.n_way, steps, create_graph=False)
        with torch.no_grad():
            losses.append(float(F.cross_entropy(model._logits(fast, x, None), y)))
    assert losses[0] == pytest.approx(torch.log(torch.tensor(4.0)).item())  # zero head
    assert all(a > b for a, b in zip(losses, losses[1:], strict=False)), losses


def test_inner_loop_is_gradient_descent():
    w = torch.tensor([1.0, -2.0], requires_grad=True)
    out = inner_loop(lambda p: (p["w"] ** 2).sum(), {"w": w}, steps=2, lr=0.25,
                     create_graph=False)
    assert torch.allclose(out["w"], w.detach() * 0.5 * 0.5)  # w <- w - 0.25 * 2w, twice
    with pytest.raises(ValueError, match="inner steps must be >= 0"):
        inner_loop(lambda p: p["w"].sum(), {"w": w}, steps=-1, lr=0.1, create_graph=False)


@pytest.mark.parametrize("name", ["maml", "fomaml", "reptile"])
def test_meta_parameters_receive_nonzero_gradients(name):
    model = conv_method(name, inner_steps=2)
    loss, logits = model.loss(make_episode())
    loss.backward()
    assert logits.shape == (2, 12, 4)
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


# --- gradients against references ------------------------------------------------------------

def reference_adapt(A, a, x, y, n, steps, lr, create_graph):
    """Hand-written MAML inner loop for the model z = tanh(x A^T + a), logits = z W^T + c."""
    W = torch.zeros(n, A.shape[0], dtype=A.dtype, requires_grad=True)
    c = torch.zeros(n, dtype=A.dtype, requires_grad=True)
    for _ in range(steps):
        loss = F.cross_entropy(torch.tanh(x @ A.T + a) @ W.T + c, y)
        gA, ga, gW, gc = torch.autograd.grad(loss, (A, a, W, c), create_graph=create_graph)
        A, a, W, c = A - lr * gA, a - lr * ga, W - lr * gW, c - lr * gc
    return A, a, W, c


def reference_outer_loss(A, a, ep, steps, lr, create_graph):
    total = 0.0
    for e in range(ep.batch_size):
        A2, a2, W, c = reference_adapt(A, a, ep.support[e], ep.support_labels[e], ep.n_way,
                                       steps, lr, create_graph)
        logits = torch.tanh(ep.query[e] @ A2.T + a2) @ W.T + c
        total = total + F.cross_entropy(logits, ep.query_labels[e])
    return total / ep.batch_size


def test_first_order_maml_matches_a_hand_written_reference():
    model = FOMAML(tiny_mlp(), inner_steps=3, inner_lr=0.5)
    ep = vector_episode()
    loss, _ = model.loss(ep)
    loss.backward()
    lin = model.backbone.module[0]
    A = lin.weight.detach().clone().requires_grad_(True)
    a = lin.bias.detach().clone().requires_grad_(True)
    ref = reference_outer_loss(A, a, ep, steps=3, lr=0.5, create_graph=False)
    ref.backward()
    assert torch.allclose(loss, ref, atol=1e-6)
    assert torch.allclose(lin.weight.grad, A.grad, atol=1e-6)
    assert torch.allclose(lin.bias.grad, a.grad, atol=1e-6)


def test_eval_inner_lr_is_used_in_eval_mode_only():
    ep = vector_episode()
    small = FOMAML(tiny_mlp(), inner_steps=3, eval_inner_steps=3, inner_lr=0.5,
                   eval_inner_lr=0.05)
    same = FOMAML(tiny_mlp(), inner_steps=3, eval_inner_steps=3, inner_lr=0.05)
    assert small.eval_inner_lr == 0.05 and same.eval_inner_lr == 0.05
    with torch.no_grad():
        assert torch.allclose(small.eval()(ep), same.eval()(ep), atol=1e-6)
        assert not torch.allclose(small.train()(ep), same.train()(ep), atol=1e-4)
    lin = small.backbone.module[0]
    A = lin.weight.detach().clone().requires_grad_(True)
    a = lin.bias.detach().clone().requires_grad_(True)
    A2, a2, W, c = reference_adapt(A, a, ep.support[0], ep.support_labels[0], ep.n_way,
                                   3, 0.05, False)
    expected = torch.tanh(ep.query[0] @ A2.T + a2) @ W.T + c
    with torch.no_grad():
        assert torch.allclose(small.eval()(ep)[0], expected.detach(), atol=1e-5)
    with pytest.raises(ValueError, match="eval_inner_lr"):
        FOMAML(tiny_mlp(), eval_inner_lr=0.0)


def test_second_order_maml_matches_reference_and_finite_differences():
    model = MAML(tiny_mlp(dtype=torch.float64), inner_steps=2, inner_lr=0.5)
    ep = vector_episode(dtype=torch.float64)
    loss, _ = model.loss(ep)
    loss.backward()
    lin = model.backbone.module[0]
    grad = lin.weight.grad.clone()
    # against the hand-written second-order reference
    A = lin.weight.detach().clone().requires_grad_(True)
    a = lin.bias.detach().clone().requires_grad_(True)
    reference_outer_loss(A, a, ep, steps=2, lr=0.5, create_graph=True).backward()
    assert torch.allclose(grad, A.grad, atol=1e-7)  # the method's loss is float32
    # against central finite differences of the method's own forward, in float64 (the loss
    # of the base class is computed in float32)
    def outer_loss() -> float:
        return F.cross_entropy(model(ep).flatten(0, 1), ep.query_labels.flatten()).item()

    eps = 1e-6
    with torch.no_grad():
        for i, j in [(0, 0), (1, 3), (4, 5), (2, 2)]:
            old = lin.weight[i, j].item()
            lin.weight[i, j] = old + eps
            up = outer_loss()
            lin.weight[i, j] = old - eps
            down = outer_loss()
            lin.weight[i, j] = old
            assert (up - down) / (2 * eps) == pytest.approx(grad[i, j].item(), abs=1e-7)
    # and it is really second order: first-order MAML's gradient differs
    fo = FOMAML(tiny_mlp(dtype=torch.float64), inner_steps=2, inner_lr=0.5)
    fo.loss(ep)[0].backward()
    assert not torch.allclose(fo.backbone.module[0].weight.grad, grad, atol=1e-4)


@pytest.mark.parametrize("train_on_queries", [False, True])
def test_reptile_gradient_is_theta_minus_mean_adapted(train_on_queries):
    model = Reptile(tiny_mlp(), inner_steps=4, inner_lr=0.3, train_on_queries=train_on_queries)
    ep = vector_episode()
    loss, logits = model.loss(ep)
    loss.backward()
    lin = model.backbone.module[0]
    A = lin.weight.detach().clone().requires_grad_(True)
    a = lin.bias.detach().clone().requires_grad_(True)
    x, y = ep.support, ep.support_labels
    if train_on_queries:  # the inner loop sees supports and queries
        x, y = torch.cat([x, ep.query], 1), torch.cat([y, ep.query_labels], 1)
    adapted = [reference_adapt(A, a, x[e], y[e], ep.n_way, 4, 0.3, False)
               for e in range(ep.batch_size)]
    mean_A = torch.stack([r[0].detach() for r in adapted]).mean(0)
    mean_a = torch.stack([r[1].detach() for r in adapted]).mean(0)
    assert torch.allclose(lin.weight.grad, A.detach() - mean_A, atol=1e-6)
    assert torch.allclose(lin.bias.grad, a.detach() - mean_a, atol=1e-6)
    assert logits.shape == (2, 6, 3) and not logits.requires_grad


def test_evaluation_adapts_without_outer_graph():
    """In evaluation the inner loop still adapts (the zero-initialised head moves, so the
    logits are not all zero) on detached tensors, and the model's own parameters stay as
    they were."""
    model = conv_method("maml").eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        adapted, logits = model._adapt_and_predict(make_episode())
    assert logits.shape == (2, 12, 4) and logits.abs().amax() > 0  # adapted: a zero head gives 0
    assert len(adapted) == 2
    assert not any(v.requires_grad for fast in adapted for v in fast.values())
    backbone = dict(model.backbone.named_parameters())
    for fast in adapted:  # the backbone adapted too, not only the head
        assert fast["head.weight"].abs().amax() > 0
        assert any(not torch.equal(fast[k], v) for k, v in backbone.items())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k  # adapting copies; the model is untouched


# --- BatchNorm -----------------------------------------------------------------------------

def test_episode_batch_norm_uses_the_first_rows_and_restores_the_module():
    bn = torch.nn.BatchNorm1d(3)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, 2.0, 3.0]))
        bn.bias.copy_(torch.tensor([0.0, 1.0, -1.0]))
    x = torch.randn(7, 3)
    with episode_batch_norm(bn, 4):
        y = bn(x)
    ref = (x - x[:4].mean(0)) / torch.sqrt(x[:4].var(0, unbiased=False) + bn.eps)
    assert torch.allclose(y, ref * bn.weight + bn.bias, atol=1e-6)
    assert torch.equal(bn.running_mean, torch.zeros(3))  # untouched
    assert "forward" not in vars(bn)  # restored
    bn.train()
    assert torch.allclose(bn(x[:4]), y[:4], atol=1e-5)  # = ordinary batch statistics


def test_episode_batch_norm_on_all_rows_matches_the_formula_to_second_order():
    """All rows as statistics takes the fused kernel: same values, gradients and gradients of
    gradients (second-order MAML) as the written-out formula."""
    torch.manual_seed(0)
    bn = torch.nn.BatchNorm2d(3).eval()
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
        bn.bias.copy_(torch.tensor([0.0, 1.0, -1.0]))
    x = torch.randn(5, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    bn = bn.double()

    def formula(x):
        mean = x.mean((0, 2, 3), keepdim=True)
        var = x.var((0, 2, 3), unbiased=False, keepdim=True)
        return ((x - mean) * torch.rsqrt(var + bn.eps) * bn.weight.view(1, -1, 1, 1)
                + bn.bias.view(1, -1, 1, 1))

    for n_stats in (None, 5):
        with episode_batch_norm(bn, n_stats):
            y = bn(x)
        ref = formula(x)
        assert torch.allclose(y, ref, atol=1e-10)
        w = torch.randn_like(y)
        g, = torch.autograd.grad((y * w).sum(), x, create_graph=True)
        g_ref, = torch.autograd.grad((ref * w).sum(), x, create_graph=True)
        assert torch.allclose(g, g_ref, atol=1e-10)
        gg, = torch.autograd.grad((g * g).sum(), x)
        gg_ref, = torch.autograd.grad((g_ref * g_ref).sum(), x)
        assert torch.allclose(gg, gg_ref, atol=1e-8)
    assert torch.equal(bn.running_mean, torch.zeros(3, dtype=torch.float64))
    vector = torch.nn.BatchNorm1d(3)
    with episode_batch_norm(vector, None):  # one value per channel: the formula, no error
        assert torch.allclose(vector(torch.ones(1, 3)), vector.bias.detach().view(1, 3))


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_support_batch_norm_is_inductive_in_both_modes(mode):
    model = conv_method("maml")
    model.train(mode == "train")
    ep = make_episode()
    base = model(ep)
    noisy = ep.query.clone()
    noisy[:, 1:] = torch.rand_like(noisy[:, 1:]) * 5
    replaced = Episode(ep.support, ep.support_labels, noisy, ep.query_labels, ep.class_ids, 4, 2)
    assert torch.allclose(model(replaced)[:, 0], base[:, 0], atol=1e-5)
    assert not model.transductive


def test_transductive_batch_norm_is_flagged_and_mixes_queries():
    model = conv_method("maml", bn="transductive").eval()
    assert model.transductive
    ep = make_episode()
    base = model(ep)
    noisy = ep.query.clone()
    noisy[:, 1:] = torch.rand_like(noisy[:, 1:]) * 5
    replaced = Episode(ep.support, ep.support_labels, noisy, ep.query_labels, ep.class_ids, 4, 2)
    assert not torch.allclose(model(replaced)[:, 0], base[:, 0], atol=1e-5)
    with pytest.raises(ValueError, match="bn must be one of support, transductive"):
        conv_method("maml", bn="running")


def test_fit_linear_head_is_batched_per_episode():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(3, 6, 4, generator=g)
    y = torch.tensor([0, 0, 1, 1, 2, 2]).expand(3, -1)
    w, c = fit_linear_head(z, y, 3, steps=20, lr=0.5)
    for e in range(3):
        we, ce = fit_linear_head(z[e:e + 1], y[e:e + 1], 3, steps=20, lr=0.5)
        assert torch.allclose(w[e], we[0], atol=1e-6) and torch.allclose(c[e], ce[0], atol=1e-6)
    assert not w.requires_grad


# --- through the engine --------------------------------------------------------------------

@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    return make_tiny_data(tmp_path / "tiny.pt")


@pytest.mark.parametrize("name,args", [
    ("maml", {"inner_steps": 2}),
    ("fomaml", {}),
    ("reptile", {"inner_steps": 3, "eval_inner_steps": 3}),
    ("maml", {"bn": "transductive"}),
])
def test_trains_and_evaluates_through_the_engine(name, args, tiny_data, tmp_path):
    config = tiny_config(tiny_data, steps=4, episodes_per_batch=2)
    config.method, config.method_args = name, args
    out = tmp_path / "run"
    result = train(config, out, progress=False)
    assert result["finished"] and len(result["history"]) == 2
    model, ckpt = load_model(out / "checkpoint.pt")
    from relgraph.engine import build_datasets

    _, val = build_datasets(config.data)
    res = evaluate(model, val, ways=3, shots=1, queries=2, episodes=6, episodes_per_batch=4)
    assert 0 <= res["accuracy"] <= 100
    assert res["transductive"] is (args.get("bn") == "transductive")


def _ddp_config(data: Path, name: str, episodes_per_batch: int):
    config = tiny_config(data, episodes_per_batch=episodes_per_batch, steps=2, val_every=2,
                         optimizer="sgd", lr=0.05)
    config.backbone_args["norm"] = "none"  # per-process BatchNorm would differ
    config.method, config.method_args = name, {"inner_steps": 2}
    return config


@pytest.mark.slow
def test_maml_under_two_process_ddp_equals_single_process(tiny_data, tmp_path):
    single = tmp_path / "single"
    train(_ddp_config(tiny_data, "maml", 2), single, progress=False)
    ddp = tmp_path / "ddp"
    script = tmp_path / "run_ddp.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        sys.path.insert(0, {str(Path(__file__).parents[1])!r})
        from test_meta import _ddp_config
        from relgraph.engine import train
        from pathlib import Path
        train(_ddp_config(Path({str(tiny_data)!r}), "maml", 1), {str(ddp)!r}, progress=False)
    """))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = load_checkpoint(single / "last.pt"), load_checkpoint(ddp / "last.pt")
    assert a["step"] == b["step"] == 2
    for k in a["model"]:
        assert torch.allclose(a["model"][k], b["model"][k], atol=1e-5, rtol=1e-4), k


@pytest.mark.parametrize("name", ["maml", "fomaml", "reptile"])
def test_gradient_meta_learners_take_token_ids_and_frozen_layers(name):
    """Token ids (a long tensor) used to make the zero head a long tensor that cannot
    require grad; a frozen layer used to be differentiated and refused by autograd."""
    from relgraph.backbones import build_backbone
    from relgraph.data import Episode
    from relgraph.methods import build_method

    torch.manual_seed(0)
    backbone = build_backbone("text_cnn", vocab_size=20, embed_dim=8, channels=4)
    next(backbone.parameters()).requires_grad_(False)  # the word embeddings, frozen
    model = build_method(name, backbone, inner_steps=1, eval_inner_steps=1)
    ids = torch.randint(2, 20, (1, 6, 7))
    labels = torch.arange(3).repeat_interleave(2)[None]
    episode = Episode(ids[:, :3], labels[:, ::2], ids[:, 3:], labels[:, ::2], torch.arange(3)[None],
                      n_way=3, k_shot=1)
    model.train()
    loss, logits = model.loss(episode)
    loss.backward()
    assert logits.shape == (1, 3, 3) and torch.isfinite(loss)
    assert next(backbone.parameters()).grad is None
    model.eval()
    assert model(episode).shape == (1, 3, 3)
