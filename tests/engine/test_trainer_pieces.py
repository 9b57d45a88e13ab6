"""The training loop's pieces (setup, build_state, train_step, validate, ...) and early checks."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from helpers import tiny_config

from relgraph.data.resident import ResidentImages
from relgraph.engine import load_checkpoint, load_config, train
from relgraph.engine.trainer import (
    TrainState,
    build_state,
    check_init_from,
    end_interval,
    loss_runner,
    save_last,
    setup,
    train_step,
    training_batch,
    validate,
    write_config,
)

ROOT = Path(__file__).resolve().parents[2]


def test_train_step_lowers_the_loss(tiny_data, tmp_path):
    run = setup(tiny_config(tiny_data, steps=30, scheduler="none", lr=0.003), tmp_path / "run")
    state = build_state(run)
    assert isinstance(state, TrainState) and state.step == 0
    runner = loss_runner(run, state.model)
    state.model.train()
    losses = [train_step(run, state, runner) for _ in range(30)]
    assert state.step == 30 and state.count == 30
    assert state.loss_sum == pytest.approx(sum(losses))
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5
    assert not (tmp_path / "run").exists(), "setup and train_step write nothing"


def test_the_pieces_make_up_train(tiny_data, tmp_path):
    """Driving the pieces by hand gives train()'s weights, metrics and best checkpoint."""
    config = tiny_config(tiny_data)
    result = train(config, tmp_path / "whole", progress=False)
    run = setup(config, tmp_path / "pieces")
    state = build_state(run)
    write_config(run)
    runner = loss_runner(run, state.model)
    state.model.train()
    for _ in range(config.train.steps):
        train_step(run, state, runner)
        if state.step % config.train.val_every == 0:
            row = end_interval(run, state, 0.0)
            validate(run, state, row)
            save_last(run, state)
            state.model.train()
    assert state.best == result["best"]
    assert [r["val_acc"] for r in state.history] == [r["val_acc"] for r in result["history"]]
    for name in ("last.pt", "checkpoint.pt"):
        a = load_checkpoint(tmp_path / "whole" / name)
        b = load_checkpoint(tmp_path / "pieces" / name)
        assert a.keys() == b.keys(), name
        for k, v in a["model"].items():
            assert torch.equal(v, b["model"][k]), (name, k)


def test_missing_init_from_names_the_command_and_writes_nothing(tiny_data, tmp_path,
                                                                monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "experiments" / "configs").mkdir(parents=True)
    (tmp_path / "experiments" / "configs" / "grp_proto.yaml").write_text("method: protonet\n")
    config = tiny_config(tiny_data, init_from="runs/grp/proto/checkpoint.pt")
    config.method = "gnn"
    with pytest.raises(FileNotFoundError) as info:
        train(config, tmp_path / "runs" / "grp" / "gnn", progress=False)
    message = str(info.value)
    assert message == ("train.init_from: runs/grp/proto/checkpoint.pt does not exist; train "
                       "that run first: relgraph train --config "
                       "experiments/configs/grp_proto.yaml --out runs/grp/proto")
    assert not (tmp_path / "runs").exists(), "nothing written"


def test_missing_init_from_without_a_config(tiny_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for path in ("runs/grp/other/checkpoint.pt", str(tmp_path / "nope.pt")):
        config = tiny_config(tiny_data, init_from=path)
        with pytest.raises(FileNotFoundError) as info:
            train(config, tmp_path / "out", progress=False)
        assert str(info.value) == (f"train.init_from: {path} does not exist; train that run "
                                   "first (its checkpoint.pt) or fix the path")
        assert "\n" not in str(info.value)
        assert not (tmp_path / "out").exists()


def test_missing_init_from_of_a_committed_config(monkeypatch):
    """The committed gnn config points at the ProtoNet run and its config."""
    monkeypatch.chdir(ROOT)
    init_from = load_config("experiments/configs/omniglot_small1_gnn.yaml").train.init_from
    assert init_from == "runs/omniglot_small1/protonet/checkpoint.pt"
    if Path(init_from).is_file():
        pytest.skip("the ProtoNet run exists in this checkout")
    with pytest.raises(FileNotFoundError, match=(
            "relgraph train --config experiments/configs/omniglot_small1_protonet.yaml "
            "--out runs/omniglot_small1/protonet$")):
        check_init_from(init_from)


def test_training_reads_resident_data_with_the_same_episodes_and_weights(tiny_data, tmp_path):
    """The run holds its data as ResidentImages; the views' own get_batch (the path before)
    gives the same episodes, augmentation included, and so the same weights."""
    config = tiny_config(tiny_data, steps=4)
    config = config.override({"data.rotations": True,
                              "data.augment": {"rotate": 10.0, "translate": 0.1}})
    run = setup(config, tmp_path / "run")
    assert isinstance(run.train_ds, ResidentImages) and isinstance(run.val_ds, ResidentImages)
    before = replace(run, train_ds=run.train_ds.dataset, val_ds=run.val_ds.dataset)
    for step in range(4):
        a, b = training_batch(run, step), training_batch(before, step)
        assert torch.equal(a.support, b.support) and torch.equal(a.query, b.query)
    weights = []
    for r in (run, before):
        state = build_state(r)
        runner = loss_runner(r, state.model)
        state.model.train()
        for _ in range(4):
            train_step(r, state, runner)
        row = end_interval(r, state, 0.0)
        write_config(r)
        validate(r, state, row)
        weights.append((state.model.state_dict(), state.history[-1]["val_acc"]))
    (a, acc_a), (b, acc_b) = weights
    assert acc_a == acc_b
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_methods_with_inner_gradient_steps_refuse_float16_autocast():
    """MAML's inner-loop gradients are not loss-scaled: under float16 autocast they turned
    non-finite and every step was skipped (a GPU run learnt nothing), so such methods run in
    float32 with a warning; bfloat16 is kept, and other methods keep float16."""
    import warnings

    from relgraph.backbones import build_backbone
    from relgraph.engine.evaluate import method_amp
    from relgraph.methods import build_method

    def method(name: str):
        backbone = build_backbone("conv4", image_size=28, in_channels=1, hidden=8,
                                  out_channels=8)
        return build_method(name, backbone, num_classes=10)

    for name in ("maml", "fomaml", "reptile", "baseline", "baseline_pp", "finetune"):
        with pytest.warns(UserWarning, match="runs in float32"):
            assert method_amp(method(name), "cuda", "float16") is False
        assert method_amp(method(name), "cuda", "bfloat16") == "bfloat16"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert method_amp(method("protonet"), "cuda", "float16") == "float16"
        assert method_amp(method("maml"), "cpu", "float16") == "float16"  # no autocast there
