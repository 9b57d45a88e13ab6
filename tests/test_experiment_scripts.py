"""The experiment scripts that train Omniglot models: the GPU reproduction script (its --smoke
mode, on the CPU) and continuing a model's run to a larger budget (experiments/omniglot.py)."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import torch

from relgraph.engine import load_checkpoint, load_config

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--set", "train.steps=4", "--set", "train.val_every=2", "--set", "train.val_episodes=4",
        "--set", "train.device=cpu"]


def script(*args: str, timeout: int = 1200) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_reproduce_names_missing_data_in_one_line(tmp_path):
    run = script("experiments/gpu/reproduce.py", "--data", str(tmp_path / "nowhere"),
                 "--out", str(tmp_path / "out"), timeout=120)
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and "missing:" in run.stderr, run.stderr
    assert "images_evaluation.npz" in run.stderr


@pytest.mark.data
@pytest.mark.slow
def test_reproduce_smoke_on_the_cpu(shared_data, tmp_path):
    out = tmp_path / "out"
    run = script("experiments/gpu/reproduce.py", "--smoke", "--data", str(shared_data),
                 "--out", str(out), "--runs", str(tmp_path / "runs"), "--models", "protonet:1",
                 "--challenge", "minimal", "--choose-tta", "1,2", "--seeds", "2")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["machine.txt", "reproduce.md",
                                                      "results.tar.gz", "runs.tar.gz.1"]
    with tarfile.open(out / "results.tar.gz") as tar:
        names = set(tar.getnames())
        assert {"results/omniglot.md", "results/omniglot_curves.png",
                "results/omniglot_challenge.md"} <= names
        rows = json.load(tar.extractfile("results/omniglot.json"))
    row = rows["protonet:1"]
    assert row["segments"][0]["steps"] == [0, 4] and "CPU" in row["segments"][0]["device"]
    assert [c[0] for c in row["curve"]] == [2, 4]
    assert set(row["results"]) == {"5w1s", "20w1s"}
    # the Vinyals model's test-time augmentation, chosen on its validation characters
    assert set(row["tta_choice"]["accuracy"]) == {"1", "2"} and row["tta_choice"]["episodes"] == 10
    assert row["results"]["20w1s"]["tta"] == row["tta_choice"]["chosen"]
    with tarfile.open(out / "results.tar.gz") as tar:
        challenge = json.load(tar.extractfile("results/omniglot_challenge.json"))["minimal"]
        page = tar.extractfile("results/omniglot_challenge.md").read().decode()
    # the challenge run's test-time augmentation, chosen on its validation alphabets
    choice = challenge["tta_choice"]
    assert set(choice["accuracy"]) == {"1", "2"}  # JSON keys
    assert int(choice["chosen"]) == challenge["result"]["tta"] and choice["episodes"] == 10
    assert "chosen on the validation alphabets after training" in page
    # --seeds 2: two runs of the condition, one evaluation: their ensemble or the better run,
    # chosen on the validation alphabets
    ensemble = challenge["ensemble"]
    assert ensemble["members"] == ["minimal", "minimal@1"] and len(ensemble["member_val"]) == 2
    assert ensemble["chosen"] == (ensemble["val"] > max(ensemble["member_val"]))
    assert len(challenge["segments"]) == (2 if ensemble["chosen"] else 1)
    assert "Ensembles (`--ensemble`" in page
    with tarfile.open(out / "runs.tar.gz.1") as tar:  # one part: a whole archive
        names = set(tar.getnames())
    assert {"protonet_1shot/checkpoint.pt", "protonet_1shot/last.pt",
            "challenge/minimal/metrics.csv", "challenge/minimal_seed1/checkpoint.pt",
            "logs/train_protonet_1.log", "logs/train_challenge_minimal_seed1.log"} <= names
    assert "| protonet:1 |" in (out / "reproduce.md").read_text()


@pytest.mark.data
@pytest.mark.slow
def test_omniglot_continues_a_run_to_a_larger_budget(shared_data, tmp_path):
    """4 steps, then continued to 8, equals 8 steps straight (step schedule); the row records
    both segments and the learning curve."""
    def omniglot(out: str, *extra: str) -> None:
        run = script("experiments/omniglot.py", "--data", str(shared_data), "--out",
                     str(tmp_path / out), "--results", str(tmp_path / f"results_{out}"),
                     "--episodes", "10", "--ways", "5", *TINY, *extra, "protonet:1")
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    omniglot("cont")
    omniglot("cont", "--continue-to", "x2")
    omniglot("straight", "--set", "train.steps=8")
    row = json.loads((tmp_path / "results_cont" / "omniglot.json").read_text())["protonet:1"]
    assert [s["steps"] for s in row["segments"]] == [[0, 4], [4, 8]]
    assert [c[0] for c in row["curve"]] == [2, 4, 6, 8] and row["train_steps"] == 8
    table = (tmp_path / "results_cont" / "omniglot.md").read_text()
    assert "0-4: " in table and "4-8: " in table and "## Learning curves" in table
    assert (tmp_path / "results_cont" / "omniglot_curves.png").is_file()
    a = load_checkpoint(tmp_path / "cont" / "protonet_1shot" / "last.pt")
    b = load_checkpoint(tmp_path / "straight" / "protonet_1shot" / "last.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    # re-evaluating a run into a table whose row came from an earlier run of the same steps and
    # best step (a model trained again: here the straight run's row with another time and
    # result): the row takes the evaluated run's time, not the old one's
    other = json.loads((tmp_path / "results_straight" / "omniglot.json").read_text())["protonet:1"]
    other["train_seconds"] += 100.0
    other["segments"] = [{**other["segments"][0], "minutes": 99.0}]
    other["results"]["5w1s"]["accuracy"] = 12.5
    other["results"]["20w1s"] = {**other["results"]["5w1s"], "ways": 20}  # both its cells
    (tmp_path / "results_other").mkdir()
    (tmp_path / "results_other" / "omniglot.json").write_text(json.dumps({"protonet:1": other}))

    def evaluate_cont(ways: str) -> dict:
        run = script("experiments/omniglot.py", "--data", str(shared_data), "--out",
                     str(tmp_path / "cont"), "--results", str(tmp_path / "results_other"),
                     "--episodes", "10", "--ways", ways, "--skip-training", "protonet:1")
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        return json.loads((tmp_path / "results_other" / "omniglot.json").read_text())["protonet:1"]

    again = evaluate_cont("5")
    with open(tmp_path / "cont" / "protonet_1shot" / "metrics.csv") as f:
        seconds = float(f.read().strip().splitlines()[-1].split(",")[-1])  # the last time_s
    # the run's own record (last.pt's segments): both calls that trained it
    assert [s["steps"] for s in again["segments"]] == [[0, 4], [4, 8]]
    assert sum(s["minutes"] for s in again["segments"]) == pytest.approx(seconds / 60, abs=0.02)
    assert all(s["device"].startswith("CPU, ") for s in again["segments"])
    assert not any("assumed" in s["device"] for s in again["segments"])
    assert again["results"]["5w1s"] != other["results"]["5w1s"]
    assert [h["results"] for h in again["history"]] == [other["results"]]
    # its other way count in a second process: the cells of one run join, and the other run's
    # evaluation stays the one entry of the history (no mixed intermediate row)
    both = evaluate_cont("20")
    assert set(both["results"]) == {"5w1s", "20w1s"}
    assert both["results"]["5w1s"] == again["results"]["5w1s"]
    assert [h["results"] for h in both["history"]] == [other["results"]]
    # continuing a run whose model the table's row does not describe (the row's run was
    # trained again since): the row takes the run's own segments, not the old row's
    (tmp_path / "results_again").mkdir()
    (tmp_path / "results_again" / "omniglot.json").write_text(json.dumps({"protonet:1": other}))
    run = script("experiments/omniglot.py", "--data", str(shared_data), "--out",
                 str(tmp_path / "cont"), "--results", str(tmp_path / "results_again"),
                 "--episodes", "10", "--ways", "5", *TINY, "--continue-to", "12", "protonet:1")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    longer = json.loads((tmp_path / "results_again" / "omniglot.json").read_text())["protonet:1"]
    assert [s["steps"] for s in longer["segments"]] == [[0, 4], [4, 8], [8, 12]]
    assert [s["minutes"] for s in longer["segments"][:2]] == [
        s["minutes"] for s in again["segments"]]
    assert [h["results"] for h in longer["history"]] == [other["results"]]
    # test-time augmentation chosen on the validation characters, then the test cells
    # evaluated with it; the evaluation without it stays in the history
    run = script("experiments/omniglot.py", "--data", str(shared_data), "--out",
                 str(tmp_path / "cont"), "--results", str(tmp_path / "results_cont"),
                 "--episodes", "10", "--ways", "5", "--skip-training", "--choose-tta", "1,2",
                 "--tta-episodes", "6", "protonet:1")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    tta = json.loads((tmp_path / "results_cont" / "omniglot.json").read_text())["protonet:1"]
    choice = tta["tta_choice"]
    assert set(choice["accuracy"]) == {"1", "2"} and choice["episodes"] == 6
    assert (choice["ways"], choice["shots"], choice["queries"]) == (20, 1, 15)  # its eval shape
    best = max(choice["accuracy"].values())
    assert choice["chosen"] == min(int(n) for n, a in choice["accuracy"].items() if a == best)
    assert tta["results"]["5w1s"]["tta"] == choice["chosen"]
    # the evaluations before it used the recipe's TTA (the config's eval.tta)
    recipe = load_config(ROOT / "experiments" / "configs" / "omniglot_protonet_1shot.yaml")
    assert tta["history"][-1]["results"]["5w1s"]["tta"] == recipe.eval.tta
    page = (tmp_path / "results_cont" / "omniglot.md").read_text()
    assert "## Test-time augmentation, chosen on validation" in page
    assert f"x{choice['chosen']} chosen" in page
    refused = script("experiments/omniglot.py", "--data", str(shared_data), "--trainval",
                     "--choose-tta", "1,5", "protonet:1")
    assert refused.returncode != 0 and "--choose-tta chooses on the validation" in refused.stderr


def reproduce_module(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "experiments"))
    monkeypatch.syspath_prepend(str(ROOT / "experiments" / "gpu"))
    import reproduce

    return reproduce


def unpack_parts(out: Path, into: Path) -> list[str]:
    """``cat runs.tar.gz.* | tar xz`` into ``into``; returns the archive's names in order."""
    parts = sorted(out.glob("runs.tar.gz.*"))
    whole = into.with_suffix(".tar.gz")
    whole.write_bytes(b"".join(p.read_bytes() for p in parts))
    with tarfile.open(whole) as tar:
        tar.extractall(into, filter="data")
        return tar.getnames()


def test_reproduce_packs_every_checkpoint_before_any_last_pt(tmp_path, monkeypatch):
    """The device tool returns 8 files of at most 16 MB: the runs come back as one archive split
    into at most MAX_ARCHIVES parts (so a checkpoint larger than a part still comes back),
    every run's checkpoint, metrics and config first (the evaluated runs' first), then last.pt
    files while room is left."""
    reproduce = reproduce_module(monkeypatch)
    monkeypatch.setattr(reproduce, "ARCHIVE_LIMIT", 3000)
    monkeypatch.setattr(reproduce, "MAX_ARCHIVES", 5)
    logs, out = tmp_path / "logs", tmp_path / "out"
    logs.mkdir()
    out.mkdir()
    jobs = []
    for i in range(4):
        run = tmp_path / "runs" / f"protonet_{i}shot"
        run.mkdir(parents=True)
        (run / "checkpoint.pt").write_bytes(os.urandom(1000))
        (run / "last.pt").write_bytes(os.urandom(1000))
        (run / "metrics.csv").write_text("step,val_acc,time_s\n")
        jobs.append(reproduce.Job(f"protonet:{i}", run / "config.yaml", run,
                                  eval_rc=i % 2 or None))
    notes = reproduce.pack_runs(jobs, logs, out)
    parts = sorted(out.glob("runs.tar.gz.*"))
    assert 1 < len(parts) <= 5 and all(p.stat().st_size <= 3000 for p in parts)
    names = unpack_parts(out, tmp_path / "back")
    checkpoints = [n for n in names if n.endswith("checkpoint.pt")]
    assert checkpoints == [f"protonet_{i}shot/checkpoint.pt" for i in (1, 3, 0, 2)]
    kept = [n for n in names if n.endswith("last.pt")]
    assert len(kept) == 1  # 4 x 2,563 bytes of essentials in 12,952: room for one last.pt
    assert all(names.index(k) > names.index(checkpoints[-1]) for k in kept)
    assert sum("last.pt left out" in n for n in notes) == 4 - len(kept)
    assert (tmp_path / "back" / checkpoints[0]).read_bytes() == (
        tmp_path / "runs" / checkpoints[0]).read_bytes()


def test_reproduce_returns_a_checkpoint_too_large_in_float16(tmp_path, monkeypatch):
    """A checkpoint with no room left in float32 (two ResNet-12 ones: 2 x 47.5 MB, over the
    files' 56 MB) comes back in float16, marked, when that fits; it loads as usual."""
    reproduce = reproduce_module(monkeypatch)
    run = tmp_path / "runs" / "protonet_1shot"
    run.mkdir(parents=True)
    torch.save({"model": {"w": torch.randn(6000), "n": torch.tensor(3)}, "step": 7},
               run / "checkpoint.pt")
    fp32 = reproduce.packed_size(run / "checkpoint.pt")
    monkeypatch.setattr(reproduce, "ARCHIVE_LIMIT", 4000)
    monkeypatch.setattr(reproduce, "RUNS_LIMIT", fp32 - 4000)
    out = tmp_path / "out"
    out.mkdir()
    notes = reproduce.pack_runs([reproduce.Job("protonet:1", run / "config.yaml", run,
                                               eval_rc=0)], tmp_path, out)
    assert unpack_parts(out, tmp_path / "back") == ["protonet_1shot/checkpoint.pt"]
    half = torch.load(tmp_path / "back/protonet_1shot/checkpoint.pt", weights_only=False)
    assert half["stored_as"] == "float16" and half["model"]["w"].dtype == torch.float16
    assert half["model"]["n"].dtype == torch.int64 and half["step"] == 7
    assert notes and "came back in float16" in notes[0]


def test_reproduce_gate_and_scaled_budgets(tmp_path, monkeypatch):
    """--gate: a run reaches the test classes only when its best validation beats the committed
    row's; --scale stretches steps, the step schedule and the validation interval alike."""
    reproduce = reproduce_module(monkeypatch)
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.csv").write_text("step,train_loss,val_acc,time_s\n"
                                     "10,1.0,90.5,6.0\n20,0.5,91.0,12.0\n")
    job = reproduce.Job("protonet:1", ROOT / "experiments/configs/omniglot_protonet_1shot.yaml",
                        run, committed_val=91.0)
    assert "not evaluated on the test classes" in reproduce.gate_note(job)
    job.committed_val = 90.9
    assert reproduce.gate_note(job) is None
    job.committed_val = None  # no committed row: evaluated
    assert reproduce.gate_note(job) is None
    from relgraph.engine import load_config

    t = load_config(job.config).train
    sets = reproduce.scaled_sets(t, 1.5)
    assert sets == [f"train.steps={round(t.steps * 1.5)}",
                    f"train.val_every={round(t.val_every * 1.5)}",
                    f"train.step_size={round(t.step_size * 1.5)}"]
    assert reproduce.source_path().split(os.pathsep)[0] == str(ROOT)


def test_reproduce_times_calibration_from_validated_rows(tmp_path, monkeypatch):
    """The calibration's rate comes from the seconds (not rounded minutes) of the validated
    rows of metrics.csv; a row without validation is skipped."""
    reproduce = reproduce_module(monkeypatch)
    (tmp_path / "metrics.csv").write_text("step,train_loss,val_acc,time_s\n"
                                          "50,1.0,80.0,2.5\n60,0.9,,2.71\n"
                                          "100,0.8,85.0,3.125\n150,0.7,86.0,3.7\n")
    times = reproduce.step_times(tmp_path)
    assert times == [(50, 2.5), (100, 3.125), (150, 3.7)]
    assert reproduce.step_times(tmp_path / "none") == []


FAKE_TRAINING = """
import sys, time
from pathlib import Path
out, flag = Path(sys.argv[1]), Path(sys.argv[5])
delay, fast_ms, loaded_ms = map(float, sys.argv[2:5])
out.mkdir(parents=True, exist_ok=True)
time.sleep(delay)  # start-up
rows, step, loop = ["step,train_loss,val_acc,time_s"], 0, 0.0
while True:
    ms = loaded_ms if flag.exists() else fast_ms  # slower once the slow job is in its loop
    step += 10
    loop += 10 * ms / 1000
    rows.append(f"{step},1.0,50.0,{loop:.4f}")
    (out / "metrics.tmp").write_text("\\n".join(rows) + "\\n")
    (out / "metrics.tmp").replace(out / "metrics.csv")
    if delay > 0:
        flag.touch()
    time.sleep(0.05)
"""


def test_reproduce_calibration_times_each_job_while_all_run(tmp_path, monkeypatch):
    """--scale's timing: a fast job is timed only over intervals after every job reached its
    training loop (here it runs 1 ms a step until the slow job starts, 4 ms after), and all
    jobs are stopped at once when each has been timed."""
    import argparse

    reproduce = reproduce_module(monkeypatch)
    script_path = tmp_path / "fake_train.py"
    script_path.write_text(FAKE_TRAINING)
    flag = tmp_path / "slow_started"
    speeds = {"protonet:1": (0.0, 1.0, 4.0), "protonet:5": (1.5, 4.0, 4.0)}

    def fake_start(config, run, data, *extra, log=None, env=None, wait=True):
        name = "protonet:1" if "1shot" in str(config) else "protonet:5"
        return subprocess.Popen([sys.executable, str(script_path), str(run),
                                 *map(str, speeds[name]), str(flag)])

    monkeypatch.setattr(reproduce, "start_training", fake_start)
    jobs = reproduce.jobs_for(["protonet:1", "protonet:5"], [], tmp_path / "runs")
    args = argparse.Namespace(calibrate=30, calibrate_limit=60.0, scale=100.0, deadline=1000.0,
                              eval_reserve=0.0, threads=1, smoke=False, amp="config",
                              compile=False, set=[])
    began = time.monotonic()
    reproduce.calibrate(jobs, args, tmp_path, tmp_path / "runs", tmp_path, began)
    assert time.monotonic() - began < 30
    for job in jobs:
        assert "4.0 ms per step" in job.notes[-1], job.notes
        assert "start-up" in job.notes[-1]
    rows = reproduce.step_times(tmp_path / "runs" / "_calibrate" / "protonet_1")
    assert rows[0][1] == pytest.approx(0.01)  # its first rows ran at 1 ms a step, untimed
    assert reproduce.loaded_rate([(10, 0.01), (20, 0.02), (30, 0.06), (40, 0.10)], 2) == (
        pytest.approx(0.004))


def test_reproduce_evaluates_one_run_per_challenge_condition(tmp_path, monkeypatch):
    """Variants of a challenge condition (configs omniglot_challenge_<condition>_<tag>.yaml)
    fill their condition's row; of the runs for one row only the best validating one reaches
    the test classes (ties: the first listed)."""
    reproduce = reproduce_module(monkeypatch)
    challenge = reproduce.omniglot_challenge
    assert challenge.condition_of("full") == "full"
    assert challenge.condition_of("full_r12") == "full"  # committed variant configs
    assert challenge.condition_of("minimal_w128") == "minimal"
    assert challenge.condition_of("full_nosuch") is None
    assert challenge.condition_of("half") is None

    def job(name: str, vals: list[float]) -> object:
        run = tmp_path / name.replace(":", "_")
        run.mkdir()
        rows = "".join(f"{10 * (i + 1)},1.0,{v},{i + 1.0}\n" for i, v in enumerate(vals))
        (run / "metrics.csv").write_text("step,train_loss,val_acc,time_s\n" + rows)
        return reproduce.Job(name, challenge.config_of(name.split(":")[1]), run)

    base, w128, r12 = (job("challenge:full", [80.0, 85.0]), job("challenge:full_w128", [88.0]),
                      job("challenge:full_r12", [87.0, 88.0]))
    other = job("protonet:1", [99.0])
    jobs = [base, w128, r12, other]
    assert [j.row for j in jobs] == ["full", "full", "full", "protonet:1"]
    assert reproduce.rival_note(w128, jobs) is None  # 88.0, listed before r12's 88.0
    assert "challenge:full_w128 validated higher" in reproduce.rival_note(r12, jobs)
    assert "(88.00 against 85.00)" in reproduce.rival_note(base, jobs)
    assert reproduce.rival_note(other, jobs) is None
    command = reproduce.evaluation_command(w128, tmp_path, tmp_path, tmp_path, 10)
    assert command[-1] == "full_w128" and command[1].endswith("omniglot_challenge.py")
    row = {"config": "experiments/configs/omniglot_challenge_full_w128.yaml"}
    assert challenge.variant_label("full", row) == ", config `omniglot_challenge_full_w128.yaml`"
    row = {"config": "experiments/configs/omniglot_challenge_full.yaml"}
    assert challenge.variant_label("full", row) == ""
    # the script itself refuses two runs for one condition (each would touch the test set)
    done = script("experiments/omniglot_challenge.py", "full", "full_w128", "--data",
                  str(tmp_path), "--out", str(tmp_path / "runs"))
    assert done.returncode != 0 and "one run per condition" in done.stderr, done.stderr


@pytest.mark.data
@pytest.mark.slow
def test_omniglot_ensemble_is_chosen_on_validation(shared_data, tmp_path):
    """--ensemble RUN,RUN: two runs of a model's config scored together on their validation
    episodes; the test cells only if the ensemble validates above each and the table's model;
    a row in omniglot_ensembles.json and a section of the page."""
    results = tmp_path / "results"
    for seed in (0, 1):
        run = script("experiments/omniglot.py", "--data", str(shared_data), "--out",
                     str(tmp_path / f"out{seed}"), "--results", str(results), "--episodes", "10",
                     "--ways", "5", *TINY, "--set", f"train.seed={seed}", "protonet:1")
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        (tmp_path / f"out{seed}" / "protonet_1shot").rename(tmp_path / f"m{seed}")
    table_val = json.loads((results / "omniglot.json").read_text())["protonet:1"]["best_val"]

    def ensemble(*extra: str) -> subprocess.CompletedProcess:
        return script("experiments/omniglot.py", "--data", str(shared_data), "--out",
                      str(tmp_path), "--results", str(results), "--episodes", "10", "--ways",
                      "5", "--tta-episodes", "10", *extra)

    run = ensemble("--ensemble", "m0,m1", "protonet:1")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    row = json.loads((results / "omniglot_ensembles.json").read_text())["protonet:1"]
    assert [m["run"] for m in row["members"]] == ["m0", "m1"]
    assert row["validation"]["episodes"] == 4 and row["table_val"] == table_val
    best = max(m["best_val"] for m in row["members"])
    assert row["chosen"] == (row["validation"]["accuracy"] > max(best, table_val))
    assert set(row["results"]) == ({"5w1s"} if row["chosen"] else set())
    page = (results / "omniglot.md").read_text()
    assert "## Ensembles, chosen on validation" in page and "ensemble of 2 (`m0`" in page
    run = ensemble("--ensemble", "m0,m1", "matching:1")
    assert run.returncode != 0 and "m0 is a protonet 1-shot run, not matching 1-shot" in (
        run.stderr), run.stderr
    run = ensemble("--ensemble", "m0", "protonet:1")
    assert run.returncode != 0 and "two or more run folders" in run.stderr, run.stderr


def test_reproduce_seeds_make_one_ensemble_candidate_per_condition(tmp_path, monkeypatch):
    """--seeds N: N runs per challenge condition (<name>@k trains with train.seed=k into
    <name>_seed<k>), evaluated once, by the first, as an ensemble candidate."""
    reproduce = reproduce_module(monkeypatch)
    challenge = reproduce.omniglot_challenge
    assert challenge.split_name("full_r12@2") == ("full_r12", 2)
    assert challenge.split_name("full_r12") == ("full_r12", None)
    assert challenge.condition_of("full_r12@2") == "full"
    assert challenge.config_of("full_r12@2") == challenge.config_of("full_r12")
    assert challenge.run_name("full_r12@2") == "full_r12_seed2"
    assert challenge.condition_of("full_r12@x") is None
    jobs = reproduce.jobs_for(["protonet:1"], ["full_r12"], tmp_path / "runs", seeds=3)
    assert [j.name for j in jobs] == ["protonet:1", "challenge:full_r12", "challenge:full_r12@1",
                                      "challenge:full_r12@2"]
    assert [j.seed for j in jobs] == [None, None, 1, 2]
    assert [j.run.name for j in jobs[1:]] == ["full_r12", "full_r12_seed1", "full_r12_seed2"]
    assert jobs[3].slug == "challenge_full_r12_seed2" and {j.row for j in jobs[1:]} == {"full"}
    for job in jobs:
        job.run.mkdir(parents=True)
        (job.run / "checkpoint.pt").touch()
    members = reproduce.ensemble_members(jobs[2], jobs)
    assert members == jobs[1:] and reproduce.ensemble_members(jobs[0], jobs) is None
    command = reproduce.evaluation_command(jobs[1], tmp_path, tmp_path, tmp_path, 10, "1,5",
                                           members, 91.5)
    at = command.index("--ensemble")
    assert command[at + 1:] == ["--min-val", "91.5", "--choose-tta", "1,5", "full_r12",
                                "full_r12@1", "full_r12@2"]
    # one recipe per condition: two variants' inputs may differ
    done = script("experiments/gpu/reproduce.py", "--seeds", "2", "--challenge", "full,full_r12",
                  "--models", "", "--data", str(tmp_path), "--out", str(tmp_path / "out"),
                  timeout=120)
    assert done.returncode != 0 and "one recipe per condition" in done.stderr, done.stderr


def test_training_cwd_makes_the_configs_relative_roots_reach_the_data(tmp_path, monkeypatch):
    """Data elsewhere (a device machine's copy): training runs in a folder beside a
    shared/data link, so a run's saved config keeps the usual ../shared/data roots."""
    monkeypatch.syspath_prepend(str(ROOT / "experiments"))
    import common

    data = tmp_path / "copy"
    (data / "omniglot").mkdir(parents=True)
    cwd = common.training_cwd(data)
    assert (cwd / ".." / "shared" / "data" / "omniglot").resolve() == (data / "omniglot")
    assert common.training_cwd(data) == cwd  # one folder per data folder
    assert common.training_cwd(common.SHARED_DATA) == ROOT


def test_omniglot_table_keeps_every_replaced_test_evaluation():
    """A model trained again replaces its row; the old row's test results go to its history
    (and to the page), but not when the same checkpoint is only evaluated on more cells."""
    sys.path.insert(0, str(ROOT / "experiments"))
    try:
        import omniglot
    finally:
        sys.path.remove(str(ROOT / "experiments"))

    def row(steps: int, acc: float, cells: tuple[str, ...] = ("5w1s", "20w1s")) -> dict:
        return {"config": "c.yaml", "train_steps": steps, "best_step": steps, "best_val": 90.0,
                "device": "CPU, 1 thread", "evaluated": "2026-12-02",
                "results": {c: {"accuracy": acc, "ci95": 0.1} for c in cells}}

    first = row(100, 95.0)
    assert omniglot.carry_history(None, first) is first
    second = omniglot.carry_history(first, row(200, 96.0))
    assert [h["train_steps"] for h in second["history"]] == [100]
    third = omniglot.carry_history(second, row(400, 97.0))
    assert [h["train_steps"] for h in third["history"]] == [100, 200]
    partial = row(400, 97.0, ("5w1s",))
    assert not omniglot.carry_history(partial, row(400, 97.0)).get("history")
    page = "\n".join(omniglot.history_section({"protonet:1": third}))
    assert page.count("- protonet 1-shot, `c.yaml` at ") == 2
    assert "5w1s 95.00 +- 0.10" in page and "5w1s 96.00 +- 0.10" in page


def test_omniglot_trainval_row_keeps_the_train_only_run_that_set_its_steps():
    """After a model's train-only run is replaced, its row of the papers' protocol is still
    compared with the run whose best step it trained for, and the page says so."""
    sys.path.insert(0, str(ROOT / "experiments"))
    try:
        import omniglot
    finally:
        sys.path.remove(str(ROOT / "experiments"))

    def row(steps: int, seconds: float, acc: float) -> dict:
        return {"config": "c.yaml", "train_seconds": seconds, "train_steps": steps,
                "best_step": steps, "best_val": 90.0, "device": "CPU, 1 thread",
                "results": {c: {"accuracy": acc, "ci95": 0.1} for c in ("5w1s", "20w1s")}}

    old_run = row(4500, 2000.0, 93.0)
    trainval = {**row(4500, 1700.0, 93.5), "segments": [{"steps": [0, 4500], "minutes": 28.3,
                                                        "device": "CPU, 1 thread"}],
                "train_only": omniglot.train_only_snapshot(old_run)}
    assert not omniglot.stale_trainval(trainval, old_run)
    page = "\n".join(omniglot.trainval_section({"gnn:1": trainval}, {"gnn:1": old_run}))
    assert "| 20w1s | 93.50 +- 0.10 | 93.00 +- 0.10 |" in page and "since replaced" not in page
    new_run = row(9000, 4000.0, 95.0)
    assert omniglot.stale_trainval(trainval, new_run)
    page = "\n".join(omniglot.trainval_section({"gnn:1": trainval}, {"gnn:1": new_run}))
    assert "| 20w1s | 93.50 +- 0.10 | 93.00 +- 0.10 |" in page  # not the new run's 95.00
    assert "gnn 1-shot (its train-only model was trained again since: now 9000 steps" in page
    lines = omniglot.shortfalls({"gnn:1": {**new_run, "curve": []}}, {"gnn:1": trainval})
    assert "its section below, 4500 steps: the step count of the run this one replaced" in lines[0]
    # a cell below the paper's number but within its 95% CI meets it too, and says how
    close = {**row(9000, 4000.0, 99.15), "curve": []}  # gnn's papers: 99.2 (5w1s), 97.4
    line = omniglot.shortfalls({"gnn:1": close})[0]
    assert "5w1s -0.05 (meets it, within its 95% CI), 20w1s +1.75 (meets it) points" in line
    # rows recorded before the snapshot was kept compare with the table's row
    assert not omniglot.stale_trainval({k: v for k, v in trainval.items()
                                        if k != "train_only"}, new_run)


def test_omniglot_per_way_model_fills_its_cell_and_keeps_the_general_models(tmp_path,
                                                                           monkeypatch):
    """A per-way model (``maml:1:20``) fills its way count's cell in the table (marked), its
    budget, curve and shortfall are its own, and the general model's evaluation of that cell
    stays on the page (history); the general model keeps its other cell."""
    sys.path.insert(0, str(ROOT / "experiments"))
    try:
        import omniglot
    finally:
        sys.path.remove(str(ROOT / "experiments"))

    def row(config: str, cells: dict[str, float], best: int, **extra) -> dict:
        return {"config": config, "train_seconds": 600.0, "train_steps": 1000, "best_step": best,
                "best_val": 90.0, "device": "CPU, 1 thread", "transductive": False,
                "evaluated": "2026-12-03", "curve": [[250 * i, 2.5 * i, 80.0 + 2 * i]
                                                     for i in range(1, 5)],
                "results": {c: {"accuracy": a, "ci95": 0.2} for c, a in cells.items()}, **extra}

    rows = {"maml:1": row("experiments/configs/omniglot_maml_1shot.yaml",
                          {"5w1s": 95.0, "20w1s": 85.0}, 1000),
            "maml:1:20": row("experiments/configs/omniglot_maml_1shot_20way.yaml",
                             {"20w1s": 93.0}, 750, ways=20)}
    assert omniglot.source_key(rows, "maml", "20w1s") == "maml:1:20"
    assert omniglot.source_key(rows, "maml", "5w1s") == "maml:1"
    assert omniglot.source_key(rows, "maml", "5w5s") is None
    assert omniglot.superseded(rows, "maml:1") == ["20w1s"]
    assert omniglot.superseded(rows, "maml:1:20") == []
    for name in ("RESULTS", "TABLE", "STATE", "TRAINVAL_STATE", "PLOT", "CURVES"):
        monkeypatch.setattr(omniglot, name, getattr(omniglot, name))  # restored afterwards
    omniglot.set_results(tmp_path)
    omniglot.write_table(rows, trainval={})
    page = (tmp_path / "omniglot.md").read_text()
    assert ("| maml | inductive | 95.00 +- 0.20 (98.7) | not run (99.9) | 93.00 +- 0.20* (95.8) "
            "| not run (98.9) |") in page
    assert "| maml 1-shot 20-way | `experiments/configs/omniglot_maml_1shot_20way.yaml` |" in page
    assert "| maml 1-shot 20-way | 2.5: 82.00, " in page  # its learning curve
    short = page.split("## Short of the papers")[1].split("##")[0]
    assert "- maml 1-shot: 5w1s -3.70 points" in short and "20w1s -10.80" not in short
    assert "Its 20w1s cell in the table comes from the per-way model" in short
    assert "- maml 1-shot 20-way: 20w1s -2.80 points" in short
    # a peak before the last step is not a verdict on more steps: the budget estimate is
    assert ("its validation accuracy peaked at step 750 of 1000 (whether more steps would help: "
            "its budget estimate)") in short
    assert "unlikely" not in short
    assert "Budget: for 20w1s" in short.split("- maml 1-shot 20-way")[1]
    history = page.split("## Test evaluations (history)")[1]
    assert "- maml 1-shot, `experiments/configs/omniglot_maml_1shot.yaml` at 1000 steps" in history
    assert "20w1s 85.00 +- 0.20; not in the table: the per-way model fills that cell" in history
    assert json.loads((tmp_path / "omniglot.json").read_text()) == rows
    assert "Not compared with the general model on validation" in short  # nothing recorded
    # chosen on validation: the per-way model fills its cell only when it led the general model
    # on its validation episodes
    def compared(own: float, general: float) -> dict:
        return {"ways": 20, "shots": 1, "queries": 15, "episodes": 200, "seed": 12345,
                "models": {"maml:1:20": {"accuracy": own, "ci95": 0.5, "train_steps": 1000,
                                         "best_step": 750},
                           "maml:1": {"accuracy": general, "ci95": 0.5, "train_steps": 1000,
                                      "best_step": 1000}}}

    rows["maml:1:20"]["validation"] = compared(91.0, 88.0)
    assert omniglot.source_key(rows, "maml", "20w1s") == "maml:1:20"
    omniglot.write_table(rows, trainval={})
    short = (tmp_path / "omniglot.md").read_text().split("## Short of the papers")[1]
    assert ("it scored 91.00 +- 0.50, the general maml 1-shot model 88.00 +- 0.50 (its run at "
            "1000 steps, best step 1000): so it fills its cell.") in short
    assert "The table's general model is a later run" not in short  # compared with this run
    # compared with an earlier run of the general model (told apart by its steps): said so
    rows["maml:1:20"]["validation"]["models"]["maml:1"]["train_steps"] = 500
    omniglot.write_table(rows, trainval={})
    short = (tmp_path / "omniglot.md").read_text().split("## Short of the papers")[1]
    assert ("(its run at 500 steps, best step 1000): so it fills its cell. The table's general "
            "model is a later run (1000 steps, best step 1000), not compared with it yet: "
            "`python experiments/omniglot.py --compare maml:1:20` does") in short
    rows["maml:1:20"]["validation"] = compared(87.0, 88.0)
    assert omniglot.source_key(rows, "maml", "20w1s") == "maml:1"
    assert omniglot.superseded(rows, "maml:1") == []
    assert omniglot.superseded(rows, "maml:1:20") == ["20w1s"]
    omniglot.write_table(rows, trainval={})
    page = (tmp_path / "omniglot.md").read_text()
    assert "| 85.00 +- 0.20 (95.8) |" in page  # the general model's cell, unmarked
    short = page.split("## Short of the papers")[1].split("##")[0]
    assert "- maml 1-shot: 5w1s -3.70, 20w1s -10.80 points" in short
    assert "- maml 1-shot 20-way: not in the table. On its 200 20-way 1-shot" in short
    assert "so the general model keeps the cell." in short
    history = page.split("## Test evaluations (history)")[1]
    assert ("20w1s 93.00 +- 0.20; not in the table: the general model keeps the cell (chosen on "
            "validation)") in history
    # the general model evaluated on 5-way only (--ways 5) while the per-way model leads it on
    # validation: the cell stays the per-way model's, and the page says why it is missing
    rows["maml:1:20"]["validation"] = compared(91.0, 90.0)
    rows["maml:1"]["results"].pop("20w1s")
    assert omniglot.source_key(rows, "maml", "20w1s") == "maml:1:20"
    omniglot.write_table(rows, trainval={})
    page = (tmp_path / "omniglot.md").read_text()
    assert "| 93.00 +- 0.20* (95.8) |" in page
    short = page.split("## Short of the papers")[1].split("##")[0]
    assert ("- maml 1-shot: 5w1s -3.70 points vs the paper; ") in short
    assert ("Not evaluated on 20w1s: the per-way model (below) leads it on validation and fills "
            "that cell.") in short
    # ... and when the general model leads but has no evaluation of the cell, it is empty
    rows["maml:1:20"]["validation"] = compared(89.0, 90.0)
    assert omniglot.source_key(rows, "maml", "20w1s") is None
    # command-line names
    assert omniglot.parse_cells(["maml:1:20"]) == [("maml", 1, 20)]
    assert omniglot.split_key("maml:1:20") == ("maml", 1, 20)
    assert omniglot.run_name("maml", 1, 20) == "maml_1shot_20way"
    assert omniglot.config_path("maml", 1, 20).name == "omniglot_maml_1shot_20way.yaml"
    for bad in ("maml:1:10", "maml:2", "maml:one", "maml:1:20:5", "nope"):
        with pytest.raises(SystemExit):
            omniglot.parse_cells([bad])


@pytest.mark.data
@pytest.mark.slow
def test_omniglot_trains_a_per_way_model_into_its_own_run(shared_data, tmp_path):
    """``maml:1:20`` trains its own config into its own run folder and is evaluated on its
    way count only; asking it for another way count is a clear error that trains nothing."""
    common_args = ["experiments/omniglot.py", "--data", str(shared_data), "--out",
                   str(tmp_path / "runs"), "--results", str(tmp_path / "results"),
                   "--episodes", "4"]
    run = script(*common_args, "--ways", "5", *TINY, "maml:1:20")
    assert run.returncode != 0 and "evaluated on its own way count only" in run.stderr
    assert not (tmp_path / "runs").exists()
    run = script(*common_args, *TINY, "maml:1:20")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    rows = json.loads((tmp_path / "results" / "omniglot.json").read_text())
    assert list(rows) == ["maml:1:20"]
    row = rows["maml:1:20"]
    assert row["ways"] == 20 and set(row["results"]) == {"20w1s"}
    assert row["config"] == "experiments/configs/omniglot_maml_1shot_20way.yaml"
    assert [c[0] for c in row["curve"]] == [2, 4]
    # compared on its own validation episodes (no general model here): the same episodes as
    # its training's validation, so the same accuracy as its best step's
    assert list(row["validation"]["models"]) == ["maml:1:20"]
    assert row["validation"]["models"]["maml:1:20"]["accuracy"] == pytest.approx(row["best_val"])
    config = (tmp_path / "runs" / "maml_1shot_20way" / "config.yaml").read_text()
    assert "ways: 20" in config
    page = (tmp_path / "results" / "omniglot.md").read_text()
    assert "| maml | inductive | not run (98.7) | not run (99.9) | " in page
    assert "* (95.8) |" in page and "| maml 1-shot 20-way |" in page
    # the general model evaluated later (here on 5-way only): the per-way model is compared
    # again, with it, on the same validation episodes; the per-way model's test cell stays
    run = script(*common_args, "--ways", "5", *TINY, "maml:1")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "20w1s validation (maml:1:20 " in run.stdout
    rows = json.loads((tmp_path / "results" / "omniglot.json").read_text())
    assert set(rows["maml:1"]["results"]) == {"5w1s"}
    assert rows["maml:1:20"]["results"] == row["results"]
    models = rows["maml:1:20"]["validation"]["models"]
    assert list(models) == ["maml:1:20", "maml:1"]
    assert models["maml:1:20"]["accuracy"] == pytest.approx(
        row["validation"]["models"]["maml:1:20"]["accuracy"])
    assert models["maml:1"]["train_steps"] == rows["maml:1"]["train_steps"] == 4
    assert models["maml:1"]["train_seconds"] == rows["maml:1"]["train_seconds"]
    # the same general model evaluated again: the comparison with it is kept, not redone
    run = script(*common_args, "--ways", "5", "--skip-training", "maml:1")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "20w1s validation" not in run.stdout
    again = json.loads((tmp_path / "results" / "omniglot.json").read_text())
    assert again["maml:1:20"] == rows["maml:1:20"]
    # the general model trained again after the per-way model's run folder is gone: the
    # per-way model's recorded score is kept and the new general model is scored on the same
    # recorded episodes
    shutil.rmtree(tmp_path / "runs" / "maml_1shot_20way")
    run = script(*common_args, "--ways", "5", *TINY, "--set", "train.seed=1", "maml:1")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "20w1s validation (maml:1:20 " in run.stdout
    rows = json.loads((tmp_path / "results" / "omniglot.json").read_text())
    models = rows["maml:1:20"]["validation"]["models"]
    assert models["maml:1:20"] == again["maml:1:20"]["validation"]["models"]["maml:1:20"]
    assert models["maml:1"]["train_seconds"] == rows["maml:1"]["train_seconds"]
    assert models["maml:1"]["train_seconds"] != again["maml:1"]["train_seconds"]
    assert rows["maml:1:20"]["results"] == row["results"]
    # --compare alone: kept for the same general run; redone for a record without its time
    # (as written before the time was recorded), to the same scores
    run = script(*common_args, "--compare", "maml:1:20")
    assert run.returncode == 0 and "already compared" in run.stdout, run.stdout + run.stderr
    state = tmp_path / "results" / "omniglot.json"
    old = json.loads(state.read_text())
    del old["maml:1:20"]["validation"]["models"]["maml:1"]["train_seconds"]
    state.write_text(json.dumps(old))
    run = script(*common_args, "--compare", "maml:1:20")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "20w1s validation (maml:1:20 " in run.stdout
    redone = json.loads(state.read_text())["maml:1:20"]["validation"]["models"]
    assert redone["maml:1:20"] == models["maml:1:20"]
    assert redone["maml:1"]["train_seconds"] == rows["maml:1"]["train_seconds"]
    assert redone["maml:1"]["accuracy"] == pytest.approx(models["maml:1"]["accuracy"])
    run = script(*common_args, "--compare", "maml:1")
    assert run.returncode != 0 and "--compare takes per-way models" in run.stderr


def test_challenge_table_keeps_every_replaced_test_evaluation():
    """A challenge condition trained again keeps the replaced row's error (with its TTA) in
    its history and on the page; re-evaluating the same result adds nothing."""
    sys.path.insert(0, str(ROOT / "experiments"))
    try:
        import omniglot_challenge as challenge
    finally:
        sys.path.remove(str(ROOT / "experiments"))

    def row(steps: int, error: float, tta: int = 1) -> dict:
        return {"config": "c.yaml", "method": "protonet", "train_steps": steps,
                "best_step": steps, "best_val": 90.0, "device": "CPU, 2 threads",
                "error": error, "result": {"accuracy": 100 - error, "ci95": 0.5, "tta": tta}}

    first = row(100, 20.0)
    assert challenge.carry_history(None, first) is first
    second = challenge.carry_history(first, row(200, 15.0, tta=5), why="longer")
    assert [h["train_steps"] for h in second["history"]] == [100]
    assert not challenge.carry_history(second, row(200, 15.0, tta=5))["history"][1:]
    third = challenge.carry_history(second, row(400, 12.0))
    assert [(h["train_steps"], h["result"]["tta"]) for h in third["history"]] == [(100, 1),
                                                                                 (200, 5)]
    page = "\n".join(challenge.history_section({"full": third}))
    assert "- full: protonet, `c.yaml` at 100 steps" in page
    assert "- full: protonet, TTA x5, `c.yaml` at 200 steps" in page
    assert "error 20.00 +- 0.50 %; why replaced: longer." in page
    assert challenge.tta_label({"tta": 5}) == ", TTA x5" and challenge.tta_label({}) == ""
    # the software line names each row's torch, and the rows that did not record it
    text = challenge.software_text({"full": {**third, "device": "NVIDIA H200",
                                             "torch": "2.11.0+cu130"}, "minimal": third})
    assert text.startswith("Software per row: NVIDIA H200: torch 2.11.0+cu130; minimal: torch "
                           "not recorded")


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's mallopt only")
def test_bench_allocator_writes_its_page(tmp_path):
    out = tmp_path / "allocator.md"
    done = script("experiments/bench_allocator.py", "--workload", "protonet eval", "--steps",
                  "1", "--warmup", "0", "--rounds", "1", "--out", str(out), timeout=600)
    assert done.returncode == 0, done.stderr
    page = out.read_text()
    assert "| protonet eval | glibc defaults |" in page
    assert "| protonet eval | freed memory kept |" in page
    assert "glibc defaults / freed memory kept" in page


def test_bench_pair_mlp_times_the_training_policy(tmp_path):
    """Part 4 of experiments/bench_pair_mlp.py times both paths of edge_gnn's training step in
    both dtypes and names the setting it decides."""
    out = tmp_path / "pair.md"
    done = script("experiments/bench_pair_mlp.py", "--methods", "", "--no-images", "--steps",
                  "1", "--warmup", "0", "--policy-queries", "1", "--out", str(out), timeout=600)
    assert done.returncode == 0, done.stderr
    page = out.read_text()
    assert "## 4. Training without multiplicities" in page and "(n = 120)" in page
    for row in ("| edge_gnn | float32 |", "| edge_gnn | bfloat16 |",
                "| edge_gnn_transductive | float32 |", "| edge_gnn_transductive | bfloat16 |"):
        assert row in page
    assert "BLOCKED_TRAINING_UNDER_AUTOCAST = False" in page
    assert len(json.loads(out.with_suffix(".json").read_text())["policy"]) == 4


def test_omniglot_budget_estimate_extrapolates_the_validation_curve():
    sys.path.insert(0, str(ROOT / "experiments"))
    try:
        import omniglot
    finally:
        sys.path.remove(str(ROOT / "experiments"))
    # 2 points per doubling of the minutes: 4 more points take 2 more doublings (4x)
    rising = [[i, m, 80.0 + 2.0 * math.log2(m)] for i, m in enumerate((1, 2, 4, 8, 16))]
    text = omniglot.budget_estimate(rising, 4.0)
    assert "gains 2.00 points per doubling" in text and "about 64 min" in text
    assert "(4x this run)" in text
    flat = [[i, m, 90.0] for i, m in enumerate((1, 2, 4, 8))]
    assert "flat" in omniglot.budget_estimate(flat, 1.0)
    assert "too few" in omniglot.budget_estimate(rising[:2], 1.0)


def test_bench_amp_cpu_keeps_the_whole_run_sections_once(tmp_path):
    """--keep-runs carries a page's whole-run sections (their run folders may be gone) with one
    note saying so, however often the page is rewritten."""
    sys.path.insert(0, str(ROOT / "experiments"))
    try:
        import bench_amp_cpu
    finally:
        sys.path.remove(str(ROOT / "experiments"))
    page = tmp_path / "page.md"
    page.write_text("# t\n\n## 2. timings\n\n| a |\n\n## A whole training run: x\n\n| step |\n"
                    "| 1 |\n\nhow it was made\n")
    kept = bench_amp_cpu.kept_runs(page)
    assert kept[0] == "## A whole training run: x" and kept[2] == bench_amp_cpu.KEPT_NOTE
    assert "| 1 |" in kept and "how it was made" in kept and "| a |" not in kept
    page.write_text("# new\n\n" + "\n".join(kept) + "\n")
    assert bench_amp_cpu.kept_runs(page) == kept
    with pytest.raises(SystemExit, match="nothing to keep"):
        bench_amp_cpu.kept_runs(tmp_path / "missing.md")


@pytest.mark.data
@pytest.mark.slow
def test_omniglot_trainval_trains_on_1200_characters_for_the_best_step(shared_data, tmp_path):
    """--trainval (the papers' protocol): the model's config on train + validation characters
    for its train-only run's best validation step, no validation; a section of its own."""
    common_args = ["experiments/omniglot.py", "--data", str(shared_data), "--out",
                   str(tmp_path / "runs"), "--results", str(tmp_path / "results"),
                   "--episodes", "10", "--ways", "5"]
    run = script(*common_args, *TINY, "protonet:1")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    best = json.loads((tmp_path / "results" / "omniglot.json").read_text())["protonet:1"]
    run = script(*common_args, "--trainval", "--set", "train.val_every=2", "--set",
                 "train.device=cpu", "protonet:1")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    row = json.loads((tmp_path / "results" / "omniglot_trainval.json").read_text())["protonet:1"]
    assert row["trainval"] and row["train_steps"] == best["best_step"]
    assert row["train_only"]["train_seconds"] == best["train_seconds"]
    assert row["train_only"]["results"]["5w1s"]["accuracy"] == best["results"]["5w1s"]["accuracy"]
    assert set(row["results"]) == {"5w1s"} and row["curve"] == []  # no validation
    config = (tmp_path / "runs" / "protonet_1shot_trainval" / "config.yaml").read_text()
    assert "split: trainval" in config and "val_split: null" in config
    ckpt = load_checkpoint(tmp_path / "runs" / "protonet_1shot_trainval" / "checkpoint.pt")
    assert ckpt["num_classes"] == 4 * 1200  # every train + validation character, rotated
    page = (tmp_path / "results" / "omniglot.md").read_text()
    assert "## The papers' protocol: trained on train + validation characters" in page
    assert "| protonet 1-shot |" in page.split("## The papers' protocol")[1]
    assert "Trained on train + validation as the paper (its section below): 5w1s " in page
    # the train-only table is untouched by it
    assert json.loads((tmp_path / "results" / "omniglot.json").read_text())["protonet:1"] == best


@pytest.mark.data
@pytest.mark.slow
def test_bench_pipeline_reads_the_data_from_another_folder(shared_data, tmp_path):
    """bench_pipeline.py --data: the configs' ../shared/data roots reach a copy of the data
    elsewhere (as on a lent GPU, .gpudata), and the table names the config's method."""
    (tmp_path / "copy").mkdir()
    (tmp_path / "copy" / "omniglot").symlink_to(shared_data / "omniglot")
    run = script("experiments/bench_pipeline.py", "--configs", "omniglot_protonet_1shot",
                 "--steps", "1", "--warmup", "0", "--val-episodes", "2", "--no-startup",
                 "--data", str(tmp_path / "copy"), "--out", str(tmp_path / "pipeline.md"))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    table = (tmp_path / "pipeline.md").read_text()
    assert "| protonet |" in table and "--data" in table


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads Linux /proc")
def test_stopping_a_script_stops_its_training_child(tmp_path):
    """``kill <script>`` (SIGTERM to the script alone) stops the child it waits on, which
    would otherwise keep running, holding the run folder's lock and the cores."""
    ready = tmp_path / "child.pid"
    parent = subprocess.Popen(
        [sys.executable, "-c",
         "import subprocess, sys; sys.path.insert(0, 'experiments'); import common\n"
         "proc = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
         f"open({str(ready)!r}, 'w').write(str(proc.pid))\n"
         "common.wait_or_stop(proc)"], cwd=ROOT)
    deadline = time.monotonic() + 60
    while not (ready.is_file() and catches_sigterm(parent.pid)) and time.monotonic() < deadline:
        time.sleep(0.05)  # until the script waits on its child, SIGTERM handler set
    child = int(ready.read_text())
    parent.terminate()
    assert parent.wait(timeout=60) == 128 + 15
    with pytest.raises(ProcessLookupError):  # stopped and reaped by the script
        os.kill(child, 0)


def catches_sigterm(pid: int) -> bool:
    """Whether process ``pid`` has a handler for SIGTERM (its ``SigCgt`` mask, Linux)."""
    status = Path(f"/proc/{pid}/status").read_text()
    mask = next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(mask, 16) >> (signal.SIGTERM - 1) & 1)


def test_reproduce_chooses_tta_for_every_model_but_maml(monkeypatch, tmp_path):
    reproduce = reproduce_module(monkeypatch)

    def command(name: str) -> list[str]:
        job = reproduce.Job(name, tmp_path / "config.yaml", tmp_path / "run")
        return reproduce.evaluation_command(job, tmp_path, tmp_path, tmp_path, 1000, "1,5,9")

    for name in ("protonet:1", "relation:5", "challenge:full"):
        assert "--choose-tta" in command(name), name
    for name in ("maml:1", "maml:5:20"):  # its choice costs about 15x its evaluation
        assert "--choose-tta" not in command(name), name


def test_reproduce_per_way_jobs_wait_for_their_general_model(monkeypatch):
    """The per-way evaluation compares the per-way model with its general model on
    validation: it must not start while the general model still trains."""
    reproduce = reproduce_module(monkeypatch)
    per_way = reproduce.Job("maml:1:20", Path("c.yaml"), Path("r"))
    assert per_way.waits_for == ("maml:1:20", "maml:1")
    assert reproduce.Job("protonet:1", Path("c.yaml"), Path("r")).waits_for == ("protonet:1",)
    assert reproduce.Job("challenge:full_r12@1", Path("c.yaml"), Path("r")).waits_for == ("full",)


def test_reproduce_keeps_a_written_row_when_its_evaluation_then_failed(tmp_path, monkeypatch):
    """The evaluation writes its JSON (atomically) once the test cells are in; killed at the
    deadline afterwards (drawing plots), its row used to be dropped from the merge."""
    reproduce = reproduce_module(monkeypatch)
    run = tmp_path / "runs" / "protonet_1shot"
    run.mkdir(parents=True)
    (run / "metrics.csv").write_text("step,train_loss,train_acc,val_acc,val_ci95,lr,time_s\n"
                                     "4,1.0,50.0,60.0,1.0,0.001,12.0\n")
    job = reproduce.Job("protonet:1", Path("c.yaml"), run, eval_rc=-9)
    (tmp_path / "evals" / job.slug).mkdir(parents=True)
    row = json.loads((ROOT / "experiments" / "results" / "omniglot.json").read_text())
    key = next(iter(row))
    (tmp_path / "evals" / job.slug / "omniglot.json").write_text(json.dumps({key: row[key]}))
    rows, _ = reproduce.merge_results([job], tmp_path / "evals", tmp_path / "results", "CPU", 1)
    assert key in rows and rows[key]["evaluation_rc"] == -9


def test_reproduce_segments_follow_the_chosen_run_of_an_ensemble_candidate(tmp_path,
                                                                           monkeypatch):
    """Seeds of a challenge condition that did not ensemble: the row is its best validating
    run's, which need not be the candidate's first; its segment is that run's."""
    reproduce = reproduce_module(monkeypatch)
    runs = tmp_path / "runs" / "challenge"
    for name, seconds in (("full_r12", 60.0), ("full_r12_seed1", 120.0)):
        (runs / name).mkdir(parents=True)
        (runs / name / "metrics.csv").write_text(
            "step,train_loss,train_acc,val_acc,val_ci95,lr,time_s\n"
            f"10,1.0,50.0,60.0,1.0,0.001,{seconds}\n")
    job = reproduce.Job("challenge:full_r12", Path("c.yaml"), runs / "full_r12", eval_rc=0)
    (tmp_path / "evals" / job.slug).mkdir(parents=True)
    row = {"condition": "full", "lead": "full_r12@1", "error": 9.0,
           "result": {"accuracy": 91.0, "ci95": 0.4},
           "ensemble": {"members": ["full_r12", "full_r12@1"], "chosen": False}}
    (tmp_path / "evals" / job.slug / "omniglot_challenge.json").write_text(
        json.dumps({"full": row}))
    for name in ("write_table", "plot"):  # the page needs whole rows; the segments are the point
        monkeypatch.setattr(reproduce.omniglot_challenge, name, lambda rows: None)
    _, challenge = reproduce.merge_results([job], tmp_path / "evals", tmp_path / "results",
                                           "CPU", 1)
    assert challenge["full"]["segments"] == [
        {"run": "full_r12@1", "steps": [0, 10], "minutes": 2.0, "device": "CPU, 1 runs at once"}]
