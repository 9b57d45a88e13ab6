"""Continuing a finished run to a larger budget; the speed settings (compile, AMP dtype)."""

from __future__ import annotations

import math
import time

import pytest
import torch
from helpers import metrics, tiny_config

from relgraph.engine import Config, load_checkpoint, train, trainer
from relgraph.engine.evaluate import autocast_context
from relgraph.engine.trainer import device_label


def same_weights(a, b) -> bool:  # noqa: ANN001
    wa, wb = load_checkpoint(a)["model"], load_checkpoint(b)["model"]
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_continuing_a_step_schedule_equals_the_longer_run(tiny_data, tmp_path):
    train(tiny_config(tiny_data, steps=12), tmp_path / "straight", progress=False)
    first = train(tiny_config(tiny_data, steps=6), tmp_path / "cont", progress=False)
    assert first["finished"] and first["step"] == 6
    more = train(tiny_config(tiny_data, steps=12), tmp_path / "cont", progress=False)
    assert more["resumed_from"] == 6 and more["step"] == 12
    assert metrics(tmp_path / "straight") == metrics(tmp_path / "cont")
    assert same_weights(tmp_path / "straight" / "last.pt", tmp_path / "cont" / "last.pt")
    assert same_weights(tmp_path / "straight" / "checkpoint.pt",
                        tmp_path / "cont" / "checkpoint.pt")
    saved = load_checkpoint(tmp_path / "cont" / "last.pt")
    assert saved["config"]["train"]["steps"] == 12


def test_each_call_that_trains_adds_a_segment(tiny_data, tmp_path):
    """last.pt and checkpoint.pt keep the run's compute per call (steps, minutes, device),
    adding up to the run's time; a stop between validations ends a segment at its step; a
    finished run resumed with nothing to do adds none; a last.pt written before segments were
    kept gets one for what it already did."""
    out = tmp_path / "run"
    here = device_label("cpu")  # "CPU, N threads": this process's torch threads
    train(tiny_config(tiny_data, steps=12), out, progress=False, stop_after=5)  # stops at 5
    train(tiny_config(tiny_data, steps=12), out, progress=False, stop_after=3)  # 5 -> 8
    done = train(tiny_config(tiny_data, steps=12), out, progress=False)  # 8 -> 12
    again = train(tiny_config(tiny_data, steps=12), out, progress=False)  # nothing to do
    segments = load_checkpoint(out / "last.pt")["segments"]
    assert [s["steps"] for s in segments] == [[0, 5], [5, 8], [8, 12]]
    assert done["segments"] == again["segments"] == segments
    assert {s["device"] for s in segments} == {here}
    total = float(done["history"][-1]["time_s"]) / 60
    assert sum(s["minutes"] for s in segments) == pytest.approx(total, abs=0.02)
    best = load_checkpoint(out / "checkpoint.pt")
    assert best["segments"][-1]["steps"][1] == best["step"]
    # a last.pt from before segments were kept: one segment for its steps, on its device
    old = tmp_path / "old"
    train(tiny_config(tiny_data, steps=6), old, progress=False)
    saved = load_checkpoint(old / "last.pt")
    saved.pop("segments")
    saved["running"].pop("time_s")  # nor the time: it goes on from the last validation's
    saved["device"] = "CPU, 7 threads"
    torch.save(saved, old / "last.pt")
    cont = train(tiny_config(tiny_data, steps=8), old, progress=False)
    assert [(s["steps"], s["device"]) for s in cont["segments"]] == [
        ([0, 6], "CPU, 7 threads"), ([6, 8], here)]


def test_a_stop_between_validations_keeps_its_time(tiny_data, tmp_path, monkeypatch):
    """The steps done since the last validation count in the run's compute: a run stopped at
    step 3 (validations at 2 and 4) keeps its time up to the stop in last.pt, its segment
    ends there, and the resumed run's time_s goes on from it."""
    step = trainer.train_step

    def slow_third_step(run, state, runner):  # noqa: ANN001, ANN202
        step(run, state, runner)
        if state.step == 3:
            time.sleep(1.5)

    monkeypatch.setattr(trainer, "train_step", slow_third_step)
    out = tmp_path / "run"
    train(tiny_config(tiny_data, steps=6), out, progress=False, stop_after=3)
    saved = load_checkpoint(out / "last.pt")
    assert saved["step"] == 3 and saved["history"][-1]["step"] == 2
    assert saved["running"]["time_s"] >= 1.5
    assert saved["segments"] == [{**saved["segments"][0], "steps": [0, 3]}]
    assert saved["segments"][0]["minutes"] >= 0.02
    done = train(tiny_config(tiny_data, steps=6), out, progress=False)
    after = {r["step"]: r["time_s"] for r in done["history"]}
    assert after[4] >= saved["running"]["time_s"]  # not restarted from step 2's time
    assert sum(s["minutes"] for s in done["segments"]) == pytest.approx(after[6] / 60, abs=0.02)


def test_continuing_a_cosine_schedule_stretches_it(tiny_data, tmp_path):
    """The continued run follows the longer cosine from the old last step on (its learning
    rate jumps back up there); its first steps had the shorter cosine, so weights differ."""
    cosine = {"scheduler": "cosine", "lr": 0.01}
    train(tiny_config(tiny_data, steps=12, **cosine), tmp_path / "straight", progress=False)
    train(tiny_config(tiny_data, steps=6, **cosine), tmp_path / "cont", progress=False)
    lr6 = float(metrics(tmp_path / "cont")[-1]["lr"])
    assert lr6 == pytest.approx(0.0, abs=1e-12)  # the 6-step cosine ended at 0
    train(tiny_config(tiny_data, steps=12, **cosine), tmp_path / "cont", progress=False)
    straight = {r["step"]: float(r["lr"]) for r in metrics(tmp_path / "straight")}
    cont = {r["step"]: float(r["lr"]) for r in metrics(tmp_path / "cont")}
    for step in ("8", "10", "12"):
        assert cont[step] == pytest.approx(straight[step], rel=1e-9, abs=1e-15)
    assert cont["8"] == pytest.approx(0.01 * (1 + math.cos(math.pi * 8 / 12)) / 2)
    assert not same_weights(tmp_path / "straight" / "last.pt", tmp_path / "cont" / "last.pt")


def test_a_run_cannot_shrink_below_its_step(tiny_data, tmp_path):
    train(tiny_config(tiny_data, steps=6), tmp_path / "run", progress=False)
    with pytest.raises(ValueError, match="continue to a larger budget, not a smaller one"):
        train(tiny_config(tiny_data, steps=4), tmp_path / "run", progress=False)


def test_other_changes_still_refused(tiny_data, tmp_path):
    train(tiny_config(tiny_data, steps=6), tmp_path / "run", progress=False)
    with pytest.raises(ValueError, match="different configuration"):
        train(tiny_config(tiny_data, steps=12, step_size=6), tmp_path / "run", progress=False)


def test_compile_wraps_the_training_step_and_may_change_on_resume(tiny_data, tmp_path,
                                                                   monkeypatch):
    compiled = []

    def fake_compile(module, **kwargs):  # noqa: ANN001, ANN003, ANN202
        compiled.append(type(module).__name__)
        return module

    monkeypatch.setattr(torch, "compile", fake_compile)
    train(tiny_config(tiny_data), tmp_path / "ref", progress=False)
    assert compiled == []
    train(tiny_config(tiny_data, compile=True), tmp_path / "run", progress=False, stop_after=3)
    assert compiled == ["_LossModule"]
    train(tiny_config(tiny_data), tmp_path / "run", progress=False)  # resumed without compile
    assert metrics(tmp_path / "ref") == metrics(tmp_path / "run")


def test_amp_dtype_setting():
    assert Config.from_dict({"train": {"amp_dtype": "bfloat16"}}).train.amp_dtype == "bfloat16"
    with pytest.raises(ValueError, match="train.amp_dtype: expected one of"):
        Config.from_dict({"train": {"amp_dtype": "float8"}})
    cpu = torch.device("cpu")
    for amp in (True, "float16", False):
        with autocast_context(cpu, amp):  # CPU: no float16 autocast
            assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    with autocast_context(cpu, "bfloat16"):  # CPU: bfloat16 only when asked for by name
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="'float16' or 'bfloat16'"):
        autocast_context(cpu, "half")


@pytest.mark.slow
def test_compiled_training_matches_eager_on_cpu(tiny_data, tmp_path):
    """The real torch.compile (inductor, about a minute to compile here): same losses and
    validation accuracies as eager, within float tolerance."""
    train(tiny_config(tiny_data), tmp_path / "eager", progress=False)
    train(tiny_config(tiny_data, compile=True), tmp_path / "compiled", progress=False)
    for a, b in zip(metrics(tmp_path / "eager"), metrics(tmp_path / "compiled"), strict=True):
        assert float(a["train_loss"]) == pytest.approx(float(b["train_loss"]), rel=1e-3)
        assert float(a["val_acc"]) == pytest.approx(float(b["val_acc"]), abs=1e-6)
