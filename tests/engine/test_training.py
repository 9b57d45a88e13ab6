"""The training loop: outputs, best-on-validation checkpoint, exact resume, kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from helpers import metrics, tiny_config

from relgraph.engine import Config, load_checkpoint, load_model, train


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def test_training_writes_the_run(tiny_data, tmp_path):
    out = tmp_path / "run"
    result = train(tiny_config(tiny_data), out, progress=False)
    for name in ("checkpoint.pt", "last.pt", "metrics.csv", "curves.png", "config.yaml"):
        assert (out / name).is_file(), name
    assert result["finished"] and result["step"] == 6
    rows = metrics(out)
    assert [int(r["step"]) for r in rows] == [2, 4, 6]
    best = max(rows, key=lambda r: float(r["val_acc"]))
    assert result["best"]["step"] == int(best["step"])
    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert ckpt["step"] == result["best"]["step"]
    threads = torch.get_num_threads()
    assert ckpt["device"] == f"CPU, {threads} thread" + ("" if threads == 1 else "s")
    assert load_checkpoint(out / "last.pt")["device"] == ckpt["device"]
    assert ckpt["preprocessing"]["dataset"] == "tensors"
    assert "optimizer" not in ckpt  # the model checkpoint carries what is needed to use it
    model, _ = load_model(out / "checkpoint.pt")
    assert not model.training
    assert not list(tmp_path.rglob("*.tmp")), "no temporary files left behind"


def test_resume_after_stop_is_exact(tiny_data, tmp_path):
    config = tiny_config(tiny_data)
    train(config, tmp_path / "a", progress=False)
    part = train(config, tmp_path / "b", progress=False, stop_after=3)  # stops between validations
    assert not part["finished"] and part["step"] == 3
    rest = train(config, tmp_path / "b", progress=False)
    assert rest["finished"]
    assert metrics(tmp_path / "a") == metrics(tmp_path / "b")
    assert_same_weights(tmp_path / "a" / "last.pt", tmp_path / "b" / "last.pt")
    assert_same_weights(tmp_path / "a" / "checkpoint.pt", tmp_path / "b" / "checkpoint.pt")


def test_resume_refuses_a_different_config(tiny_data, tmp_path):
    train(tiny_config(tiny_data), tmp_path / "a", progress=False, stop_after=2)
    with pytest.raises(ValueError, match=r"different configuration: train.lr \(0.001 -> 0.01\)"):
        train(tiny_config(tiny_data, lr=0.01), tmp_path / "a", progress=False)


def test_resume_after_kill_9_is_exact(tiny_data, tmp_path):
    config = tiny_config(tiny_data, steps=40, val_every=4)
    train(config, tmp_path / "ref", progress=False)
    out = tmp_path / "killed"
    script = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(Path(__file__).parents[1])!r})
        from helpers import metrics, tiny_config
        from relgraph.engine import train
        train(tiny_config({str(tiny_data)!r}, steps=40, val_every=4), {str(out)!r},
              progress=False)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "last.pt").exists() and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)  # let it get further into training, possibly mid-write
    assert proc.poll() is None, "training ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    train(config, out, progress=False)
    assert metrics(tmp_path / "ref") == metrics(out)
    assert_same_weights(tmp_path / "ref" / "last.pt", out / "last.pt")


def test_early_stopping(tiny_data, tmp_path):
    config = tiny_config(tiny_data, steps=40, val_every=2, patience=1, lr=1.0, scheduler="none")
    result = train(config, tmp_path / "run", progress=False)
    assert result["stopped_early"] and result["step"] < 40


def test_no_validation_keeps_the_latest(tiny_data, tmp_path):
    config = tiny_config(tiny_data)
    config.data.val_fraction = 0
    result = train(config, tmp_path / "run", progress=False)
    assert result["best"]["step"] == 6


def test_bad_settings_fail_before_training(tiny_data, tmp_path):
    config = tiny_config(tiny_data)
    config.eval.queries = 50
    with pytest.raises(ValueError, match=r"validation episodes.*fewer than eval.shots \+ "
                                         r"eval.queries"):
        train(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="train.optimizer: expected one of"):
        tiny_config(tiny_data, optimizer="lbfgs")  # the config itself is checked now
    config = tiny_config(tiny_data)
    config.train.optimizer = "lbfgs"  # set after the checks: the trainer still refuses it
    with pytest.raises(ValueError, match="unknown optimizer"):
        train(config, tmp_path / "run2", progress=False)


def test_resume_is_exact_with_augmentation(tiny_data, tmp_path):
    config = tiny_config(tiny_data)
    config.data.augment = {"rotate": 10, "scale": 0.1, "shear": 5, "translate": 0.1}
    train(config, tmp_path / "a", progress=False)
    train(config, tmp_path / "b", progress=False, stop_after=3)
    train(config, tmp_path / "b", progress=False)
    assert metrics(tmp_path / "a") == metrics(tmp_path / "b")
    assert_same_weights(tmp_path / "a" / "last.pt", tmp_path / "b" / "last.pt")
    plain = tiny_config(tiny_data)
    train(plain, tmp_path / "c", progress=False)
    assert metrics(tmp_path / "c") != metrics(tmp_path / "a")  # augmentation did something
    config.data.augment = {"blur": 1}
    with pytest.raises(ValueError, match="data.augment accepts"):
        train(config, tmp_path / "d", progress=False)


def test_within_alphabet_training_and_validation(tiny_data, tmp_path):
    groups = {c: "ABC"[c // 4] for c in range(12)}  # three alphabets of four classes
    data = {"dataset": "tensors", "roots": [str(tiny_data)], "val_alphabets": ["C"],
            "options": {"class_alphabets": groups}}
    config = tiny_config(tiny_data, within_alphabet=True)
    config = type(config).from_dict({**config.to_dict(), "data": data,
                                     "eval": {**config.to_dict()["eval"],
                                              "within_alphabet": True}})
    train(config, tmp_path / "ok", progress=False)
    assert (tmp_path / "ok" / "checkpoint.pt").is_file()
    too_wide = type(config).from_dict({**config.to_dict(), "train": {
        **config.to_dict()["train"], "ways": 5}})
    with pytest.raises(ValueError, match="within_alphabet"):
        train(too_wide, tmp_path / "bad", progress=False)
    assert not (tmp_path / "bad" / "checkpoint.pt").exists()


def test_init_from_copies_the_backbone(tiny_data, tmp_path):
    from relgraph.engine import build_model, init_backbone

    train(tiny_config(tiny_data), tmp_path / "proto", progress=False)
    ckpt = tmp_path / "proto" / "checkpoint.pt"
    config = tiny_config(tiny_data, init_from=str(ckpt))
    config.method = "gnn"
    pre = load_checkpoint(ckpt)["preprocessing"]
    model = build_model(config, pre)
    init_backbone(model, ckpt)
    source = weights(ckpt)
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(v, source[f"backbone.{k}"]), k
    train(config, tmp_path / "gnn", progress=False)  # trains from there
    wider = Config.from_dict({**config.to_dict(), "backbone_args": {
        **config.backbone_args, "hidden": 16}})
    with pytest.raises(ValueError, match="does not fit"):
        train(wider, tmp_path / "bad", progress=False)
    missing = tiny_config(tiny_data, init_from=str(tmp_path / "nope.pt"))
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        train(missing, tmp_path / "bad2", progress=False)


def test_backbone_lr_scale_freezes_or_slows_the_backbone(tiny_data, tmp_path):
    from relgraph.engine.trainer import _param_groups

    train(tiny_config(tiny_data), tmp_path / "proto", progress=False)
    ckpt = tmp_path / "proto" / "checkpoint.pt"
    config = tiny_config(tiny_data, init_from=str(ckpt), backbone_lr_scale=0.0)
    config.method = "gnn"
    train(config, tmp_path / "frozen", progress=False)
    before, after = weights(ckpt), weights(tmp_path / "frozen" / "checkpoint.pt")
    convs = [k for k in before if k.startswith("backbone.") and k.endswith("weight")]
    assert convs and all(torch.equal(before[k], after[k]) for k in convs)
    # and its BatchNorm statistics: the frozen backbone trains in eval mode
    stats = [k for k in before if k.startswith("backbone.") and "running_" in k]
    assert stats and all(torch.equal(before[k], after[k]) for k in stats)

    from relgraph.engine import build_model
    model = build_model(config, load_checkpoint(ckpt)["preprocessing"])
    groups = _param_groups(model, 1e-3, 0.1)
    assert [g.get("lr") for g in groups] == [None, pytest.approx(1e-4)]
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    with pytest.raises(ValueError, match=">= 0"):
        _param_groups(model, 1e-3, -1.0)
    config.method = "protonet"
    with pytest.raises(ValueError, match="no other parameters"):
        train(config, tmp_path / "bad", progress=False)
