"""Train every Vinyals model and both Omniglot challenge configs at once on one GPU, evaluate.

The 12 models of ``experiments/omniglot.py`` (``omniglot_<method>_<k>shot.yaml``, and the
per-way models that have a config, ``omniglot_<method>_<k>shot_<n>way.yaml``) and the two
of ``experiments/omniglot_challenge.py`` (``omniglot_challenge_{full,minimal}.yaml``) train to
their configs' full budgets as concurrent processes on one GPU (one CPU thread each), each
evaluated as soon as it finishes, exactly as those scripts evaluate (``--skip-training`` on the
run). Made for a lent GPU's first call: a fixed deadline (``--deadline``, seconds from the
start) stops the trainings still running early enough to evaluate them (SIGTERM: each saves
``last.pt`` and keeps its best checkpoint; the table then says at which step it stopped, and
``experiments/omniglot.py --continue-to`` can finish it later from the returned run).

Outputs (in ``--out``, else ``$OUT``, else ``runs/reproduce/out``), few files so that they
come back from a device machine: ``reproduce.md`` (status of every job and both tables),
``results.tar.gz`` (``omniglot.md/.json/.png``, ``omniglot_curves.png``,
``omniglot_challenge.md/.json/.png``, the evaluation logs), ``runs.tar.gz.1``, ``.2``, ...
(each run's ``checkpoint.pt``, ``last.pt``, ``metrics.csv``, ``config.yaml`` and training log
while room is left, as one archive split into parts under 15 MB: ``cat runs.tar.gz.* | tar
xz``) and ``machine.txt``. Merge into the committed tables with
``tar xzf results.tar.gz && python experiments/omniglot.py --merge results/omniglot.json``
(and ``omniglot_challenge.py --merge results/omniglot_challenge.json``); each row's training
segment names the GPU and how many runs shared it. A run stopped by the deadline continues
from its returned folder (``runs.tar.gz.*`` unpacked into ``runs/omniglot``) with
``experiments/omniglot.py --continue-to STEPS``.

Speed settings, all off unless asked (the configs are the recipe): ``--amp {config,off,fp16,
bf16}`` (the configs' ``train.amp: true`` means fp16 autocast on CUDA), ``--compile``
(``train.compile``), ``--set KEY=VALUE`` (any training setting, e.g.
``train.episodes_per_batch``, which changes the recipe and is recorded in the run's config).

Challenge variants (``--challenge full,full_<tag>``, configs
``omniglot_challenge_full_<tag>.yaml``: another recipe for a condition, e.g. a larger backbone)
train beside their condition; once every run for a condition has ended, only the best
validating one is evaluated (and with ``--gate`` only if it beats the committed row), so one
test evaluation per condition and call. ``--seeds N`` trains each listed condition or variant
N times (``<name>``, ``<name>@1``, ...: ``train.seed=k``) and evaluates them once, by the first
run's evaluation process (``omniglot_challenge.py --ensemble``): their ensemble if it validates
above each run alone, else the best run, and with ``--gate`` only above the committed row.

``--smoke``: two models and the minimal challenge config, 4 steps each, on the CPU, 10
evaluation episodes: checks the whole script (launch, deadline, evaluation, packing) anywhere.

Usage (from the project root; see ``reproduce.sh`` for the device call)::

    python experiments/gpu/reproduce.py --data ../shared/data
    python experiments/gpu/reproduce.py --smoke --out /tmp/repro
"""

from __future__ import annotations

import argparse
import atexit
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "experiments"))
sys.path.insert(0, str(ROOT))

import omniglot  # noqa: E402
import omniglot_challenge  # noqa: E402
from common import data_dir, learning_curve, run_time, step_times  # noqa: E402
from common import train as start_training  # noqa: E402

if TYPE_CHECKING:
    from relgraph.engine.config import TrainConfig

METHODS = ["protonet", "matching", "relation", "gnn", "edge_gnn", "maml"]
#: Models of the table that no paper reports on Omniglot: trained only when --models names them.
EXTRA = ["tpn", "dpgn"]
CHALLENGE = ["full", "minimal"]
#: A file that comes back from the device machine must stay under 16 MiB, all under 64 MiB.
ARCHIVE_LIMIT = 15 * 2**20
RUNS_LIMIT = 56 * 2**20
#: ... and at most 8 files come back: machine.txt, reproduce.md, results.tar.gz and these.
MAX_ARCHIVES = 5
#: Validation episodes at each of the timing's validations (every --calibrate/3 steps): about
#: the configs' validation load per step (e.g. 200 episodes every 1,000 steps).
CALIBRATION_VAL_EPISODES = 5
#: The timing's training steps: more than any job reaches before it is stopped.
CALIBRATION_STEPS = 1_000_000
#: Validation intervals timed per job once all jobs are in their loops.
TIMED_INTERVALS = 2
SMOKE_SETS = ["train.steps=4", "train.val_every=2", "train.val_episodes=4", "train.device=cpu"]


@dataclass
class Job:
    """One model: its config, run folder, training and evaluation processes."""

    name: str  # "protonet:1", a per-way model "maml:1:20", or "challenge:full"
    config: Path
    run: Path
    train: subprocess.Popen | None = None
    evaluate: subprocess.Popen | None = None
    started: float = 0.0
    trained_s: float | None = None
    stopped: str | None = None  # why training ended early, if it did
    train_rc: int | None = None
    eval_rc: int | None = None
    sets: list[str] = field(default_factory=list)  # this job's own training settings (--scale)
    committed_val: float | None = None  # the committed row's best validation (--gate)
    notes: list[str] = field(default_factory=list)

    @property
    def is_challenge(self) -> bool:
        return self.name.startswith("challenge:")

    @property
    def seed(self) -> int | None:
        """A challenge run's own training seed (``challenge:<variant>@<seed>``), else ``None``
        (the config's)."""
        return (omniglot_challenge.split_name(self.name.split(":", 1)[1])[1]
                if self.is_challenge else None)

    @property
    def slug(self) -> str:
        """The name as a file name: ``challenge_full_r12_seed1`` for ``challenge:full_r12@1``."""
        return self.name.replace(":", "_").replace("@", "_seed")

    @property
    def row(self) -> str:
        """The table row this job's evaluation fills: the model key, or the challenge
        condition (``full`` for the variant ``challenge:full_<tag>``)."""
        if self.is_challenge:
            return omniglot_challenge.condition_of(self.name.split(":")[1]) or self.name
        return self.name

    @property
    def waits_for(self) -> tuple[str, ...]:
        """The rows whose runs must have finished before this job is evaluated: its own, and
        for a per-way model (``maml:1:20``) its general model's (``maml:1``), which the
        per-way evaluation compares it with on validation."""
        parts = self.name.split(":")
        if not self.is_challenge and len(parts) == 3:
            return (self.row, ":".join(parts[:2]))
        return (self.row,)


def jobs_for(models: list[str], challenge: list[str], runs: Path, seeds: int = 1) -> list[Job]:
    """A job per model, and ``seeds`` per challenge condition or variant: ``<name>`` with its
    config's seed, then ``<name>@1`` ... ``<name>@<seeds - 1>`` (``train.seed=k``), the runs
    of an ensemble candidate."""
    jobs = []
    for model in models:
        method, shots, ways = omniglot.split_key(model)
        jobs.append(Job(model, omniglot.config_path(method, shots, ways),
                        runs / omniglot.run_name(method, shots, ways)))
    for cond in challenge:
        for k in range(seeds):
            name = cond if k == 0 else f"{cond}@{k}"
            jobs.append(Job(f"challenge:{name}", omniglot_challenge.config_of(name),
                            runs / "challenge" / omniglot_challenge.run_name(name)))
    return jobs


def known_model(name: str) -> bool:
    """Whether ``name`` is a model of the table with a config: ``method:shots`` or a per-way
    ``method:shots:ways``."""
    parts = name.split(":")
    if parts[0] not in METHODS + EXTRA or len(parts) not in (2, 3) or not all(
            p.isdigit() for p in parts[1:]):
        return False
    method, shots, ways = omniglot.split_key(name)
    return shots in omniglot.SHOTS and omniglot.config_path(method, shots, ways).is_file()


def check_data(data: Path, jobs: list[Job]) -> str | None:
    """What is missing under ``data`` for these jobs, in one line, or ``None``."""
    need = [data / "omniglot" / "full" / "images_background.npz",
            data / "omniglot" / "full" / "images_evaluation.npz"]
    if any(j.row == "minimal" for j in jobs):
        need.append(data / "omniglot" / "images_background_small1.zip")
    missing = [str(p) for p in need if not p.is_file()]
    if missing:
        return (f"reproduce: the Omniglot data are not where --data / $RELGRAPH_DATA point "
                f"({data}); missing: {', '.join(missing)}")
    return None


def training_sets(args: argparse.Namespace) -> list[str]:
    sets = list(SMOKE_SETS if args.smoke else [])
    if args.amp == "off":
        sets.append("train.amp=false")
    elif args.amp in ("fp16", "bf16"):
        sets += ["train.amp=true",
                 f"train.amp_dtype={'float16' if args.amp == 'fp16' else 'bfloat16'}"]
    if args.compile:
        sets.append("train.compile=true")
    return sets + args.set


def evaluation_command(job: Job, runs: Path, data: Path, results: Path,
                       episodes: int, choose_tta: str | None = None,
                       members: list[Job] | None = None, min_val: float | None = None
                       ) -> list[str]:
    """The evaluation of ``job``'s row (``omniglot.py`` / ``omniglot_challenge.py
    --skip-training``); ``members``: the challenge runs of an ensemble candidate
    (``--ensemble``; ``job`` is the first), ``min_val``: the validation the chosen model must
    beat to touch the test classes (``--min-val``, the committed row's)."""
    if job.is_challenge:
        script, target, out = "omniglot_challenge.py", job.name.split(":")[1], runs / "challenge"
    else:
        script, target, out = "omniglot.py", job.name, runs
    cmd = [sys.executable, str(ROOT / "experiments" / script), "--skip-training", "--out",
           str(out), "--data", str(data), "--results", str(results / job.slug),
           "--episodes", str(episodes)]
    names = [target]
    if members:
        cmd.append("--ensemble")
        names = [m.name.split(":")[1] for m in members]
    if min_val is not None:
        cmd += ["--min-val", str(min_val)]
    if choose_tta and job.name.startswith("maml"):
        # maml adapts to every validation episode under every view count (about 15x its plain
        # evaluation for 1,5,9): more than its evaluation reserve, so no choice here. It is
        # evaluated with its config's eval.tta (maml 1-shot: 5 views, chosen on the CPU,
        # several times its plain evaluation: give it the reserve, or leave it out); choose
        # afterwards with omniglot.py --skip-training --choose-tta on its run folder
        choose_tta = None
    if choose_tta:  # chosen on validation episodes (no more of them than test episodes)
        cmd += ["--choose-tta", choose_tta]
        if not job.is_challenge:
            cmd += ["--tta-episodes", str(min(1000, episodes))]
    return cmd + names


def machine_text() -> str:
    import torch

    lines = [f"python {platform.python_version()}, torch {torch.__version__}, "
             f"{os.cpu_count()} CPUs, {platform.machine()}"]
    if torch.cuda.is_available():
        lines.append(f"CUDA {torch.version.cuda}: {torch.cuda.get_device_name()}")
    try:
        smi = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
        lines.append(smi.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        lines.append("no nvidia-smi")
    return "\n".join(x for x in lines if x) + "\n"


def start_mps(log: Path) -> str:
    """Start the CUDA MPS daemon (kernels of the processes then share the GPU at once)."""
    if not shutil.which("nvidia-cuda-mps-control"):
        return "MPS: nvidia-cuda-mps-control not found; processes time-share the GPU"
    rc = subprocess.run(["nvidia-cuda-mps-control", "-d"], capture_output=True, text=True)
    log.write_text(rc.stdout + rc.stderr)
    return f"MPS: started (rc {rc.returncode})"


def stop_mps() -> None:
    """Stop the MPS daemon that :func:`start_mps` started."""
    subprocess.run(["nvidia-cuda-mps-control"], input="quit\n", text=True, capture_output=True)


def source_path() -> str:
    """``PYTHONPATH`` with the checkout first: the evaluation scripts import ``relgraph``
    from it on a machine where it is not installed."""
    return os.pathsep.join([str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "")
                                          .split(os.pathsep) if p])


def process_env(args: argparse.Namespace) -> dict[str, str]:
    """What every training and evaluation process gets in its environment."""
    return {"OMP_NUM_THREADS": str(args.threads), "PYTHONUNBUFFERED": "1"}


def reserve(job: Job, args: argparse.Namespace) -> float:
    """Seconds before the deadline at which ``job``'s training is stopped: the evaluation
    reserve, twice over for maml (its evaluation adapts to every episode: 10 inner steps)."""
    return args.eval_reserve * (2 if job.name.startswith("maml") else 1)


def best_validation(run: Path) -> float | None:
    """The run's best validation accuracy (its ``metrics.csv``), ``None`` before any."""
    curve = learning_curve(run)
    return max(v for _, _, v in curve) if curve else None


def committed_validation(jobs: list[Job], folder: Path) -> None:
    """Set each job's ``committed_val``: the best validation of its row in the committed
    ``omniglot.json`` / ``omniglot_challenge.json`` of ``folder`` (same validation episodes:
    same config, same seed)."""
    tables = {}
    for name in ("omniglot.json", "omniglot_challenge.json"):
        path = folder / name
        tables[name] = json.loads(path.read_text()) if path.is_file() else {}
    for job in jobs:
        if job.is_challenge:
            row = tables["omniglot_challenge.json"].get(job.row)
        else:
            row = tables["omniglot.json"].get(job.name)
        job.committed_val = row.get("best_val") if row else None


def gate_note(job: Job) -> str | None:
    """Why ``job`` is not evaluated on the test classes (``--gate``), or ``None`` to evaluate:
    only a run whose best validation beats the committed row's touches the test classes."""
    if job.committed_val is None:
        return None
    new = best_validation(job.run)
    if new is not None and new > job.committed_val:
        return None
    shown = "none" if new is None else f"{new:.2f}"
    return (f"not evaluated on the test classes: best validation {shown} <= the committed "
            f"row's {job.committed_val:.2f} (--gate)")


def rival_note(job: Job, jobs: list[Job]) -> str | None:
    """Why ``job`` is not evaluated on the test classes because another run for its row (a
    variant of its challenge condition) validated higher, or ``None``: a row's test classes
    are touched by its best validating run alone (ties: the first listed)."""
    own = best_validation(job.run)
    for rival in jobs:
        if rival is job or rival.row != job.row:
            continue
        theirs = best_validation(rival.run)
        if theirs is not None and (own is None or theirs > own or (
                theirs == own and jobs.index(rival) < jobs.index(job))):
            shown = "none" if own is None else f"{own:.2f}"
            return (f"not evaluated on the test classes: {rival.name} validated higher for "
                    f"the same row ({theirs:.2f} against {shown})")
    return None


def ensemble_members(job: Job, jobs: list[Job]) -> list[Job] | None:
    """With ``--seeds``: the runs of ``job``'s challenge row that have a checkpoint (the first
    of them evaluates them as one ensemble candidate), ``None`` for a Vinyals model."""
    if not job.is_challenge:
        return None
    return [j for j in jobs if j.row == job.row and (j.run / "checkpoint.pt").is_file()]


def scaled_sets(t: TrainConfig, factor: float) -> list[str]:
    """Training settings that stretch the schedule of ``t`` (a config's ``train`` section) by
    ``factor``: steps, the step schedule's ``step_size`` and ``val_every`` (as many
    validations; a cosine schedule follows ``steps`` by itself)."""
    steps = max(1, round(t.steps * factor))
    sets = [f"train.steps={steps}", f"train.val_every={max(1, round(t.val_every * factor))}"]
    if t.scheduler == "step":
        sets.append(f"train.step_size={max(1, round(t.step_size * factor))}")
    return sets


def calibrate(jobs: list[Job], args: argparse.Namespace, data: Path, runs: Path, logs: Path,
              started: float) -> None:
    """``--scale``: time every job at once (all processes sharing the GPU as they will), then
    set each job's budget to at most ``args.scale`` times its config's steps, as many as its
    measured rate fits before its stop (deadline less its reserve), with the measured start-up
    time and a safety factor of 0.95.

    Every job validates each ``args.calibrate // 3`` steps and runs until all jobs are in
    their training loops (each has validated once: the first validation's one-off costs are
    behind it) and each has then validated :data:`TIMED_INTERVALS` more times; then all are
    stopped at once. A job's rate is timed over those later intervals alone, during which
    every other job ran too: a fast job timed while slower ones were still starting ran
    1.5-2x faster than it then kept up (experiments/results/gpu/reproduce.md, call 6)."""
    from relgraph.engine import load_config

    every = max(1, args.calibrate // 3)
    sets = training_sets(args) + [f"train.steps={CALIBRATION_STEPS}", f"train.val_every={every}",
                                  f"train.val_episodes={CALIBRATION_VAL_EPISODES}"]
    env = process_env(args)
    procs = {}
    t0 = time.monotonic()
    for job in jobs:
        run = runs / "_calibrate" / job.slug
        shutil.rmtree(run, ignore_errors=True)
        run.parent.mkdir(parents=True, exist_ok=True)
        procs[job.name] = (run, start_training(
            job.config, run, data, "--no-resume", *omniglot.sets(tuple(sets)),
            log=logs / f"calibrate_{job.slug}.log", env=env, wait=False))
    in_loop: dict[str, float] = {}  # job -> start-up seconds (launch to its training loop)
    loaded: dict[str, int] = {}  # job -> its rows logged before all jobs were in their loops
    times: dict[str, list[tuple[int, float]]] = {}
    limit = t0 + args.calibrate_limit
    while time.monotonic() < limit:
        now = time.monotonic()
        for name, (run, _) in procs.items():
            times[name] = step_times(run)
            if times[name] and name not in in_loop:
                in_loop[name] = now - t0 - times[name][0][1]
        if len(in_loop) == len(procs) and not loaded:
            loaded = {name: len(rows) for name, rows in times.items()}
        if loaded and all(len(times[n]) >= loaded[n] + TIMED_INTERVALS + 1 for n in procs):
            break
        if all(proc.poll() is not None for _, proc in procs.values()):
            break
        time.sleep(0.25)
    for _, proc in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for name, (run, _) in procs.items():
        times[name] = step_times(run)
    timed = [n for n in procs if loaded and len(times[n]) >= loaded[n] + 2]
    print(f"calibration: {len(timed)}/{len(procs)} jobs timed with all {len(procs)} running, "
          f"in {time.monotonic() - t0:.0f} s", flush=True)
    for job in jobs:
        t = load_config(job.config).train
        config_steps = t.steps
        if job.name not in timed:
            job.notes.append(f"calibration did not finish: trained at the config's budget "
                             f"({config_steps} steps)")
            continue
        first, rows = loaded[job.name], times[job.name]
        per_step = loaded_rate(rows, first)
        startup = in_loop[job.name]
        budget = started + args.deadline - reserve(job, args) - time.monotonic() - startup
        fits = 0.95 * budget / per_step
        factor = max(0.0, min(args.scale, fits / config_steps))
        job.sets = scaled_sets(t, factor)
        job.notes.append(f"calibration: {per_step * 1000:.1f} ms per step over steps "
                         f"{rows[first][0]}-{rows[-1][0]} with all jobs running (with "
                         f"{CALIBRATION_VAL_EPISODES} validation episodes every {every} steps), "
                         f"start-up {startup:.0f} s; budget "
                         f"x{factor:.2f} of the config's {config_steps} steps "
                         f"({', '.join(job.sets)})")
        print(f"{job.name}: {job.notes[-1]}", flush=True)


def loaded_rate(rows: list[tuple[int, float]], first: int) -> float:
    """Seconds per step from a run's validated ``rows`` (``[(step, loop seconds), ...]``, as
    :func:`step_times`) over the intervals that began at or after row ``first``: those that
    ran while every job was in its loop."""
    (s0, t0), (s1, t1) = rows[first], rows[-1]
    return (t1 - t0) / (s1 - s0)


def run_all(jobs: list[Job], args: argparse.Namespace, data: Path, runs: Path, logs: Path,
            evals: Path, started: float) -> None:
    """Train all jobs at once; evaluate each as its training ends; stop training at the
    deadline less the evaluation reserve."""
    env = process_env(args)
    for job in jobs:
        seed = [f"train.seed={job.seed}"] if job.seed is not None else []
        sets = omniglot.sets(tuple(training_sets(args) + seed + job.sets))
        shutil.rmtree(job.run, ignore_errors=True)  # a fresh run (a warm machine keeps files)
        job.run.parent.mkdir(parents=True, exist_ok=True)
        job.started = time.monotonic()
        job.train = start_training(job.config, job.run, data, "--no-resume", *sets,
                                   log=logs / f"train_{job.slug}.log",
                                   env=env, wait=False)
    evaluating: list[Job] = []
    undecided: list[Job] = []  # trained, not yet gated
    while True:
        now = time.monotonic()
        for job in jobs:
            stop_at = started + args.deadline - reserve(job, args)
            if job.train is not None and job.train_rc is None:
                rc = job.train.poll()
                if rc is None and now >= stop_at and job.stopped is None:
                    job.train.send_signal(signal.SIGTERM)
                    job.stopped = f"stopped by the deadline after {now - job.started:.0f} s"
                    print(f"{job.name}: {job.stopped}", flush=True)
                    continue
                if rc is None:
                    continue
                job.train_rc, job.trained_s = rc, time.monotonic() - job.started
                print(f"{job.name}: training ended (rc {rc}) after {job.trained_s:.0f} s",
                      flush=True)
                undecided.append(job)
        for job in list(undecided):
            if any(j.train_rc is None for j in jobs if j.row in job.waits_for):
                continue  # a run it is compared with is still training: decide with it
            undecided.remove(job)
            members = ensemble_members(job, jobs) if args.seeds > 1 else None
            if members is not None and job is not members[0]:
                gate = f"a member of the ensemble candidate evaluated by {members[0].name}"
            elif members:
                gate = None  # the candidate's script chooses it or its best run on validation
            else:
                gate = gate_note(job) or rival_note(job, jobs)
            if gate:
                job.notes.append(gate)
                print(f"{job.name}: {gate}", flush=True)
            elif (job.run / "checkpoint.pt").is_file():
                cmd = evaluation_command(job, runs, data, evals, args.episodes, args.choose_tta,
                                         members, job.committed_val if members else None)
                with open(logs / f"eval_{job.slug}.log", "w") as log:
                    job.evaluate = subprocess.Popen(
                        cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                        env={**os.environ, **env, "PYTHONPATH": source_path()})
                evaluating.append(job)
            else:
                job.notes.append("no checkpoint.pt: nothing to evaluate")
        for job in evaluating:
            if job.eval_rc is None and job.evaluate.poll() is not None:
                job.eval_rc = job.evaluate.returncode
                print(f"{job.name}: evaluation ended (rc {job.eval_rc}) at "
                      f"{time.monotonic() - started:.0f} s", flush=True)
        if all(j.train_rc is not None for j in jobs) and \
                all(j.eval_rc is not None for j in evaluating):
            return
        if time.monotonic() - started > args.deadline:
            for job in evaluating:
                if job.eval_rc is None:
                    job.evaluate.kill()
                    job.eval_rc = -9
                    job.notes.append("evaluation killed at the deadline")
            for job in jobs:
                if job.train_rc is None:
                    job.train.kill()
                    job.train_rc = -9
                    job.notes.append("training killed at the deadline")
            return
        time.sleep(0.5)


def merge_results(jobs: list[Job], evals: Path, results: Path, device_name: str,
                  concurrent: int) -> tuple[dict, dict]:
    """One ``omniglot.json`` and one ``omniglot_challenge.json`` (and their tables and plots)
    from the per-job evaluations, each row's training recorded as one GPU segment."""
    rows, challenge = {}, {}
    for job in jobs:
        folder = evals / job.slug
        name = "omniglot_challenge.json" if job.is_challenge else "omniglot.json"
        if not (folder / name).is_file():
            continue
        # written atomically once the test cells are in: kept even when the evaluation then
        # failed or was killed at the deadline (while drawing its plots, say)
        for key, row in json.loads((folder / name).read_text()).items():
            if job.eval_rc != 0:
                row["evaluation_rc"] = job.eval_rc
            ensemble = row.get("ensemble") or {}
            # the runs the row's model came from: the ensemble's, else its best validating run
            # (which need not be this job's, the candidate's first)
            members = (ensemble["members"] if ensemble.get("chosen") else
                       [row.get("lead")] if ensemble else [None])
            row["segments"] = []
            for member in members:  # one segment per run (an ensemble's members)
                run = job.run.parent / omniglot_challenge.run_name(member) if member else job.run
                seconds, steps = run_time(run)
                row["segments"].append({
                    **({"run": member} if member else {}), "steps": [0, steps],
                    "minutes": round((seconds or 0) / 60, 2),
                    "device": f"{device_name}, {concurrent} runs at once"})
            if job.stopped:
                row["stopped"] = f"{job.stopped}, at step {run_time(job.run)[1]}"
            if job.sets:
                row["training_sets"] = list(job.sets)
            (challenge if job.is_challenge else rows)[key] = row
    results.mkdir(parents=True, exist_ok=True)
    if rows:
        omniglot.set_results(results)
        omniglot.write_table(rows)
        omniglot.plot(rows)
        omniglot.plot_curves(rows)
    if challenge:
        omniglot_challenge.set_results(results)
        omniglot_challenge.write_table(challenge)
        omniglot_challenge.plot(challenge)
    return rows, challenge


def pack_runs(jobs: list[Job], logs: Path, out: Path) -> list[str]:
    """The runs' files as one ``runs.tar.gz`` split into at most :data:`MAX_ARCHIVES` parts
    ``runs.tar.gz.1``, ``.2``, ... of at most :data:`ARCHIVE_LIMIT` each (:data:`RUNS_LIMIT`
    in all; unpack with ``cat runs.tar.gz.* | tar xz``), so that a file larger than one part
    (a ResNet-12 checkpoint: 47.5 MB) still comes back. First every run's ``checkpoint.pt``,
    ``metrics.csv``, ``config.yaml`` and training log (the evaluated runs' first), then the
    ``last.pt`` files (needed only to continue a run) while room is left. A checkpoint that
    does not fit comes back in float16 if that fits (``stored_as: float16`` in it; it loads
    as usual). Returns notes on what was left out or halved."""
    import torch

    essential, extra = [], []
    for job in sorted(jobs, key=lambda j: j.eval_rc is None):  # evaluated runs first
        base = job.run.relative_to(job.run.parents[1 if job.is_challenge else 0])
        for name in ("checkpoint.pt", "metrics.csv", "config.yaml"):
            if (job.run / name).is_file():
                essential.append((job.run / name, f"{base}/{name}", job.name))
        log = logs / f"train_{job.slug}.log"
        if log.is_file():
            essential.append((log, f"logs/{log.name}", job.name))
        if (job.run / "last.pt").is_file():
            extra.append((job.run / "last.pt", f"{base}/last.pt", job.name))
    room = min(RUNS_LIMIT, MAX_ARCHIVES * ARCHIVE_LIMIT) - 2048  # tar's end, gzip's header
    chosen: list[tuple[Path, str]] = []
    notes = []
    for path, arc, name in essential + extra:
        size = packed_size(path)
        if size > room and path.name == "checkpoint.pt":
            half = path.with_name("checkpoint.float16.pt")
            try:
                ckpt = torch.load(path, map_location="cpu", weights_only=False)
                ckpt["model"] = {k: v.half() if v.is_floating_point() else v
                                 for k, v in ckpt["model"].items()}
                ckpt["stored_as"] = "float16"
                torch.save(ckpt, half)
            except Exception as e:  # noqa: BLE001 (a note, not a failed call)
                notes.append(f"{name}: no float16 copy of checkpoint.pt ({e})")
            half_size = packed_size(half) if half.is_file() else None
            if half_size is not None and half_size <= room:
                notes.append(f"{name}: checkpoint.pt came back in float16 "
                             f"({size / 2**20:.1f} MB in float32; evaluated in float32 here)")
                path, size = half, half_size
        if size > room:
            notes.append(f"{name}: {path.name} left out ({size / 2**20:.1f} MB; "
                         f"{room / 2**20:.1f} MB of room left in the returned files)"
                         + (": its run cannot be continued from what came back"
                            if path.name == "last.pt" else ""))
            continue
        chosen.append((path, arc))
        room -= size
    whole = out / "runs.tar.gz"
    with tarfile.open(whole, "w:gz") as tar:
        for path, arc in chosen:
            tar.add(path, arcname=arc)
    with open(whole, "rb") as f:
        for i in range(1, MAX_ARCHIVES + 1):
            part = f.read(ARCHIVE_LIMIT)
            if not part:
                break
            (out / f"runs.tar.gz.{i}").write_bytes(part)
    whole.unlink()
    return notes


def packed_size(path: Path) -> int:
    """Bytes that ``path`` takes in a gzipped tar at worst: its 512-byte blocks and header,
    plus gzip's overhead on data that does not compress (under 0.1 %)."""
    return math.ceil((-(-path.stat().st_size // 512) + 1) * 512 * 1.001)


def summary(jobs: list[Job], rows: dict, challenge: dict, args: argparse.Namespace,
            elapsed: float, machine: str, notes: list[str]) -> str:
    scaled = f"; per job with --scale {args.scale:g}: see its notes" if args.scale != 1 else ""
    tested = ("each row's best validating run (variants of a challenge condition share its "
              "row)" + (f"; for a challenge condition, the ensemble of its {args.seeds} runs "
                        "when it validates above each alone" if args.seeds > 1 else "")
              + ", " + ("only when it beats the committed row's best validation (--gate)"
                        if args.gate else "whatever the committed row's"))
    lines = ["# Omniglot on one GPU: every Vinyals model and both challenge configs at once", "",
             f"Machine: {machine.strip().splitlines()[0]}; "
             f"{'; '.join(machine.strip().splitlines()[1:]) or 'no GPU'}.",
             f"Command: `python experiments/gpu/reproduce.py {' '.join(sys.argv[1:])}` "
             f"({elapsed:.0f} s in all; deadline {args.deadline} s, evaluation reserve "
             f"{args.eval_reserve} s, {args.threads} CPU thread(s) per process).",
             f"Training settings added to the configs: "
             f"{', '.join(training_sets(args)) or 'none (the configs as committed)'}"
             f"{scaled}.", f"Test classes: {tested}.", "",
             "| job | training | steps done / planned | evaluation | notes |",
             "|---|---|---|---|---|"]
    import yaml

    for job in jobs:
        seconds, steps = run_time(job.run)
        resolved = job.run / "config.yaml"  # the config as run, overrides included
        planned = yaml.safe_load((resolved if resolved.is_file() else job.config).read_text()
                                 )["train"]["steps"]
        trained = (f"{job.trained_s:.0f} s (loop {seconds:.0f} s), rc {job.train_rc}"
                   if job.trained_s is not None and seconds is not None else
                   f"rc {job.train_rc}")
        lines.append(f"| {job.name} | {trained} | {steps} / {planned} | rc {job.eval_rc} | "
                     f"{'; '.join(filter(None, [job.stopped, *job.notes]))} |")
    lines += ["", "Cells and the challenge error: `results.tar.gz` (`omniglot.md`, "
              "`omniglot_challenge.md`, same format as `experiments/results/`)."]
    for key, r in rows.items():
        cells = ", ".join(f"{c} {v['accuracy']:.2f} +- {v['ci95']:.2f}"
                          for c, v in r["results"].items())
        lines.append(f"- {key}: {cells} (best val step {r['best_step']})")
    for key, r in challenge.items():
        ens = r.get("ensemble") or {}
        lines.append(f"- challenge {key}: error {r['error']:.2f} +- {r['result']['ci95']:.2f} %"
                     + (f" (ensemble of {len(ens['members'])}: validation {ens['val']:.2f}, "
                        f"members {', '.join(f'{v:.2f}' for v in ens['member_val'])})"
                        if ens.get("chosen") else ""))
    lines += [""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="shared data folder holding omniglot/ (default: "
                                       "$RELGRAPH_DATA, shared/data, ../shared/data)")
    parser.add_argument("--out", help="output folder (default: $OUT, else runs/reproduce/out)")
    parser.add_argument("--runs", help="run folders (default: beside --out, runs/reproduce/runs "
                                       "or a temporary folder when $OUT is set)")
    parser.add_argument("--models", default=",".join(
                            omniglot.model_key(*m) for m in omniglot.parse_cells(METHODS)),
                        help="comma-separated method:shots or method:shots:ways (default: the "
                             "12 with papers' numbers and the per-way models with a config; "
                             f"{', '.join(EXTRA)} also accepted)")
    parser.add_argument("--challenge", default=",".join(CHALLENGE),
                        help="comma-separated challenge conditions (default: full,minimal; "
                             "'' for none), or variants <condition>_<tag> (config "
                             "omniglot_challenge_<condition>_<tag>.yaml); of the runs for one "
                             "condition only the best validating is evaluated")
    parser.add_argument("--seeds", type=int, default=1,
                        help="train each challenge condition or variant this many times "
                             "(<name>, <name>@1, ...: train.seed=k) and evaluate them as an "
                             "ensemble when it validates above each run alone, else the best "
                             "run (omniglot_challenge.py --ensemble); one variant per "
                             "condition (default 1: no ensemble)")
    parser.add_argument("--deadline", type=float, default=570.0,
                        help="seconds from the start by which everything ends (default 570)")
    parser.add_argument("--eval-reserve", type=float, default=80.0,
                        help="seconds kept for evaluation: training still running at "
                             "deadline - reserve is stopped, twice that for maml (default 80; "
                             "on an H200 a challenge run's evaluation took 37-42 s from the end "
                             "of its training, 5-10 s of it evaluating)")
    parser.add_argument("--episodes", type=int, default=1000, help="test episodes per cell")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per process")
    parser.add_argument("--amp", choices=("config", "off", "fp16", "bf16"), default="config")
    parser.add_argument("--compile", action="store_true", help="train.compile=true")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a training setting for every job (relgraph train --set)")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="train each model up to this many times its config's steps (its "
                             "step schedule and validation interval stretched alike), as many "
                             "as a first timing of every job at once fits before the deadline "
                             "(default 1: the configs' budgets, no timing)")
    parser.add_argument("--calibrate", type=int, default=150,
                        help="with --scale, three validation intervals of that timing: each "
                             "job validates every CALIBRATE/3 steps and is timed over two "
                             "intervals during which all jobs ran (default 150)")
    parser.add_argument("--calibrate-limit", type=float, default=120.0,
                        help="seconds at most for that timing (default 120)")
    parser.add_argument("--gate", nargs="?", const=str(ROOT / "experiments" / "results"),
                        default=None, metavar="FOLDER",
                        help="evaluate on the test classes only the runs whose best validation "
                             "beats their committed row's (omniglot.json, "
                             "omniglot_challenge.json in FOLDER, default experiments/results)")
    parser.add_argument("--mps", action=argparse.BooleanOptionalAction, default=None,
                        help="start the CUDA MPS daemon first, so that the processes' kernels "
                             "share the GPU at once (default: on where CUDA is; on an H200 with "
                             "17 jobs, 3.7-8.1x faster steps than time-sharing: see "
                             "experiments/results/gpu/reproduce.md)")
    parser.add_argument("--choose-tta", metavar="N,N,...",
                        help="choose the test-time augmentation among these view counts "
                             "before the test evaluation: on the condition's validation "
                             "alphabets for challenge runs, on the validation characters for "
                             "the Vinyals models (--choose-tta of omniglot_challenge.py and "
                             "omniglot.py; not for maml, whose choice costs about 15x its "
                             "evaluation: it is evaluated without), e.g. 1,5,9")
    parser.add_argument("--smoke", action="store_true",
                        help="protonet:1, maml:1 and challenge minimal, 4 steps each on the CPU, "
                             "10 test episodes: a check of the script, not of the models")
    args = parser.parse_args()
    started = time.monotonic()
    if args.smoke:
        if args.models == parser.get_default("models"):
            args.models = "protonet:1,maml:1"
        if args.challenge == parser.get_default("challenge"):
            args.challenge = "minimal"
        args.episodes = min(args.episodes, 10)
    models = [m for m in args.models.split(",") if m]
    bad = [m for m in models if not known_model(m)]
    conds = [c for c in args.challenge.split(",") if c]
    if bad or any(omniglot_challenge.condition_of(c) is None for c in conds):
        sys.exit(f"reproduce: unknown models {bad} or challenge conditions {conds}")
    if args.seeds < 1:
        sys.exit(f"reproduce: --seeds is a count of runs per challenge condition, >= 1, got "
                 f"{args.seeds}")
    rows_of = [omniglot_challenge.condition_of(c) for c in conds]
    if args.seeds > 1 and len(set(rows_of)) < len(rows_of):
        sys.exit(f"reproduce: --seeds {args.seeds} makes an ensemble of one recipe per "
                 f"condition; {conds} names several for one condition (their inputs may differ)")
    out = Path(args.out or os.environ.get("OUT") or ROOT / "runs" / "reproduce" / "out")
    runs = Path(args.runs) if args.runs else (
        Path(os.environ.get("TMPDIR", "/tmp")) / "relgraph-reproduce" if os.environ.get("OUT")
        and not args.out else out.parent / "runs")
    data = data_dir(args.data)
    jobs = jobs_for(models, conds, runs, args.seeds)
    problem = check_data(data, jobs)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    for d in (out, runs):
        d.mkdir(parents=True, exist_ok=True)
    work = runs / "_work"
    shutil.rmtree(work, ignore_errors=True)
    logs, evals = work / "logs", work / "evals"
    logs.mkdir(parents=True)
    machine = machine_text()
    notes = []
    import torch

    if args.mps or (args.mps is None and not args.smoke and torch.cuda.is_available()):
        notes.append(start_mps(logs / "mps.log"))
        if notes[-1].startswith("MPS: started"):
            atexit.register(stop_mps)
    (out / "machine.txt").write_text(machine)
    print(machine, end="", flush=True)
    if args.gate:
        committed_validation(jobs, Path(args.gate))
    if args.scale != 1.0:
        calibrate(jobs, args, data, runs, logs, started)
    run_all(jobs, args, data, runs, logs, evals, started)
    import torch

    device_name = ("CPU" if args.smoke or not torch.cuda.is_available()
                   else torch.cuda.get_device_name())
    rows, challenge = merge_results(jobs, evals, work / "results", device_name, len(jobs))
    with tarfile.open(out / "results.tar.gz", "w:gz") as tar:
        tar.add(work / "results", arcname="results")
        tar.add(evals, arcname="evals")  # each evaluation's own JSON, as it wrote it
        for log in sorted(logs.glob("eval_*.log")):
            tar.add(log, arcname=f"logs/{log.name}")
    notes += pack_runs(jobs, logs, out)
    text = summary(jobs, rows, challenge, args, time.monotonic() - started, machine, notes)
    (out / "reproduce.md").write_text(text)
    print(text)
    # a run stopped by the deadline, or not evaluated by choice (--gate, a better validating
    # rival for its row), is no failure
    ok = all((j.train_rc == 0 or j.stopped is not None) and j.eval_rc in (0, None)
             for j in jobs)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
