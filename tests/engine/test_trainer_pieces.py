"""The training loop's pieces (setup, build_state, train_step, validate, ...) and early checks."""

from __future__ import annotations

import pytest
import torch
from helpers import tiny_config

from relgraph.engine import load_checkpoint, train
from relgraph.engine.trainer import (
    TrainState,
    build_state,
    end_interval,
    loss_runner,
    save_last,
    setup,
    train_step,
    validate,
    write_config,
)


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
