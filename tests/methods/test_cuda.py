"""The same code on CUDA: every registered method, the kernels, training and evaluation.

Skipped where no CUDA device is present (CI has none); run on a GPU machine with
``pytest -q tests/methods/test_cuda.py``. Each test compares CUDA with the CPU on the same
weights and inputs, with TF32 switched off so both sides compute in full float32.
"""

from __future__ import annotations

import pytest
import torch
from helpers import make_tiny_data, tiny_config
from test_contract import B, K, N, Q, make_episode, make_method

from relgraph.data import build_dataset
from relgraph.engine import evaluate, load_model, train
from relgraph.graph import EpisodeGraph, cosine_similarity, squared_euclidean
from relgraph.methods import list_methods

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

@pytest.fixture(autouse=True)
def _full_float32():
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


@pytest.mark.parametrize("name", list_methods())
def test_method_on_cuda_matches_cpu(name):
    cpu = make_method(name)
    gpu = make_method(name).cuda()
    ep = make_episode()
    # training step: the loss and every gradient agree
    loss_c, _ = cpu.loss(ep)
    loss_g, _ = gpu.loss(ep.to("cuda"))
    loss_c.backward()
    loss_g.backward()
    assert loss_g.device.type == "cuda"
    torch.testing.assert_close(loss_g.cpu(), loss_c, rtol=1e-3, atol=1e-4)
    for (pname, pc), (_, pg) in zip(cpu.named_parameters(), gpu.named_parameters(), strict=True):
        if pc.grad is None:
            assert pg.grad is None, pname
            continue
        assert pg.grad.device.type == "cuda", pname
        # Compared as whole tensors, not element by element: the graph methods' gradients are
        # sensitive to float32 rounding (on the CPU alone, 1e-6 noise on the images moves
        # edge_gnn's backbone gradients by up to 4.5 % in norm, experiments/grad_sensitivity.py),
        # and CUDA sums in another order than the CPU.
        err, ref = (pg.grad.cpu() - pc.grad).norm().item(), pc.grad.norm().item()
        assert err <= 0.1 * ref + 1e-5, f"{pname}: |grad_cuda - grad_cpu| = {err:.3g}, " \
                                        f"|grad_cpu| = {ref:.3g}"
    # evaluation: the same logits (methods that adapt at test time run their inner loop)
    cpu.eval()
    gpu.eval()
    torch.testing.assert_close(gpu(ep.to("cuda")).detach().cpu(), cpu(ep).detach(),
                               rtol=1e-3, atol=1e-3)


def test_kernels_on_cuda_match_cpu():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 20, 16, generator=g)
    for kernel in (squared_euclidean, cosine_similarity):
        torch.testing.assert_close(kernel(x.cuda(), x.cuda()).cpu(), kernel(x, x),
                                   rtol=1e-4, atol=1e-4)
    ep = make_episode()
    s, q = torch.randn(B, N * K, 16, generator=g), torch.randn(B, N * Q, 16, generator=g)
    for transductive in (False, True):
        graph_c = EpisodeGraph.from_episode(ep, s, q, transductive=transductive)
        graph_g = EpisodeGraph.from_episode(ep.to("cuda"), s.cuda(), q.cuda(),
                                            transductive=transductive)
        for field in ("x", "node_labels", "edge_labels", "edge_known", "mask"):
            value, expected = getattr(graph_g, field), getattr(graph_c, field)
            if callable(value):  # node_labels(), edge_labels() are methods
                value, expected = value(), expected()
            assert value.device.type == "cuda", field
            torch.testing.assert_close(value.cpu(), expected, msg=field)


def test_train_and_evaluate_on_cuda(tmp_path):
    data = make_tiny_data(tmp_path / "tiny.pt")
    result = train(tiny_config(data, device="cuda"), tmp_path / "run", progress=False)
    assert result["finished"]
    model, _ = load_model(tmp_path / "run" / "checkpoint.pt", device="cuda")
    assert next(model.parameters()).device.type == "cuda"
    ds = build_dataset("tensors", [data])
    res = evaluate(model, ds, ways=3, shots=1, queries=2, episodes=10, device="cuda")
    assert 0 <= res["accuracy"] <= 100


@pytest.mark.parametrize("speed", [{"amp_dtype": "bfloat16"}, {"compile": True}])
def test_speed_settings_on_cuda(tmp_path, speed):
    """bf16 autocast (no loss scaling) and torch.compile train a finite model; a compiled run
    resumes uncompiled (train.compile may change on resume)."""
    data = make_tiny_data(tmp_path / "tiny.pt")
    config = tiny_config(data, device="cuda", **speed)
    part = train(config, tmp_path / "run", progress=False, stop_after=3)
    assert part["step"] == 3
    result = train(tiny_config(data, device="cuda", **{**speed, "compile": False}),
                   tmp_path / "run", progress=False)
    assert result["finished"] and all(torch.isfinite(torch.tensor(r["train_loss"]))
                                      for r in result["history"])


def test_maml_learns_on_cuda_with_the_default_amp(tmp_path):
    """train.amp defaults to float16 autocast on CUDA, under which MAML's unscaled inner
    gradients turned non-finite (every step skipped, weights unchanged): it now trains in
    float32 with a warning, and its weights move."""
    from relgraph.engine.trainer import build_state, setup

    data = make_tiny_data(tmp_path / "tiny.pt")
    config = tiny_config(data, device="cuda")
    config.method = "maml"
    with pytest.warns(UserWarning, match="runs in float32"):
        start = build_state(setup(config, tmp_path / "start")).model
        result = train(config, tmp_path / "run", progress=False)
    assert result["finished"]
    trained, _ = load_model(tmp_path / "run" / "last.pt", device="cuda")
    moved = [not torch.equal(a, b) for a, b in zip(start.parameters(), trained.parameters(),
                                                   strict=True)]
    assert all(moved)
