"""torchrun with 2 CPU processes (gloo) equals single-process training on the same episodes."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from helpers import tiny_config

from relgraph.engine import load_checkpoint, train


def _config(data: Path, episodes_per_batch: int):
    config = tiny_config(data, episodes_per_batch=episodes_per_batch, steps=4, val_every=2,
                         optimizer="sgd", lr=0.05)  # Adam would amplify float-order noise
    # BatchNorm statistics are per process under DDP (as without SyncBatchNorm); without
    # normalisation layers the two runs must agree exactly up to float summation order.
    config.backbone_args["norm"] = "none"
    return config


@pytest.mark.slow
def test_two_process_training_equals_single_process(tiny_data, tmp_path):
    single = tmp_path / "single"
    train(_config(tiny_data, episodes_per_batch=2), single, progress=False)

    ddp = tmp_path / "ddp"
    script = tmp_path / "run_ddp.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        sys.path.insert(0, {str(Path(__file__).parents[1])!r})
        from test_distributed import _config
        from relgraph.engine import train
        from pathlib import Path
        train(_config(Path({str(tiny_data)!r}), episodes_per_batch=1), {str(ddp)!r},
              progress=False)
    """))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    a, b = load_checkpoint(single / "last.pt"), load_checkpoint(ddp / "last.pt")
    for k in a["model"]:
        assert torch.allclose(a["model"][k], b["model"][k], atol=1e-5, rtol=1e-4), k
    with open(single / "metrics.csv") as f1, open(ddp / "metrics.csv") as f2:
        r1, r2 = list(csv.DictReader(f1)), list(csv.DictReader(f2))
    assert [r["step"] for r in r1] == [r["step"] for r in r2]
    for x, y in zip(r1, r2, strict=True):
        assert float(x["val_acc"]) == pytest.approx(float(y["val_acc"]), abs=1e-6)
        assert float(x["train_loss"]) == pytest.approx(float(y["train_loss"]), rel=1e-3)
    # only rank 0 wrote: exactly one set of files, no leftovers
    assert sorted(p.name for p in ddp.iterdir()) == ["checkpoint.pt", "config.yaml",
                                                     "curves.png", "last.pt", "metrics.csv"]


@pytest.mark.slow
@pytest.mark.faults
def test_a_killed_worker_fails_the_job_cleanly_and_it_resumes(tiny_data, tmp_path):
    """kill -9 of one torchrun worker: the job ends (no hang) with a non-zero status, and the
    same command resumes from the last ``last.pt`` to what single-process training gives."""
    steps, val_every = 16, 4
    single = tmp_path / "single"
    config = _config(tiny_data, episodes_per_batch=2)
    config = config.override({"train.steps": steps, "train.val_every": val_every})
    train(config, single, progress=False)

    ddp = tmp_path / "ddp"
    script = tmp_path / "run_ddp.py"
    script.write_text(textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        sys.path.insert(0, {str(Path(__file__).parents[1])!r})
        from test_distributed import _config
        from relgraph.engine import train
        from pathlib import Path
        Path({str(tmp_path)!r}, "pid" + os.environ["RANK"]).write_text(str(os.getpid()))
        config = _config(Path({str(tiny_data)!r}), episodes_per_batch=1)
        config = config.override({{"train.steps": {steps}, "train.val_every": {val_every}}})
        if os.environ.get("SLOW") and os.environ["RANK"] == "1":
            import relgraph.engine.trainer as t, time
            step = t.train_step
            t.train_step = lambda *a: (time.sleep(0.2), step(*a))[1]
        train(config, {str(ddp)!r}, progress=False)
    """))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node=2", str(script)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SLOW": "1"}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 180
    while time.time() < deadline and not (ddp / "last.pt").exists() and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the job ended before a worker could be killed"
    os.kill(int((tmp_path / "pid1").read_text()), signal.SIGKILL)
    _, err = proc.communicate(timeout=180)  # fails, does not hang
    assert proc.returncode != 0
    saved = load_checkpoint(ddp / "last.pt")
    assert saved["step"] % val_every == 0 and saved["step"] < steps, "killed mid-run"

    env.pop("SLOW")
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    a, b = load_checkpoint(single / "last.pt"), load_checkpoint(ddp / "last.pt")
    assert b["step"] == steps
    for k in a["model"]:
        assert torch.allclose(a["model"][k], b["model"][k], atol=1e-5, rtol=1e-4), k
    assert [r["step"] for r in a["history"]] == [r["step"] for r in b["history"]]
    assert sorted(p.name for p in ddp.iterdir()) == ["checkpoint.pt", "config.yaml",
                                                     "curves.png", "last.pt", "metrics.csv"]
