"""Helpers shared by the experiment scripts (run as ``python experiments/<script>.py``)."""

from __future__ import annotations

import atexit
import csv
import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Where the configs' relative roots (``../shared/data/...``) point from the project root.
SHARED_DATA = ROOT.parent / "shared" / "data"


def run_time(out: Path) -> tuple[float | None, int | None]:
    """Training seconds and steps of the run in ``out``: the last row of its metrics.csv."""
    path = out / "metrics.csv"
    if not path.is_file():
        return None, None
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return (float(rows[-1]["time_s"]), int(rows[-1]["step"])) if rows else (None, None)


def learning_curve(out: Path) -> list[list[float]]:
    """``[[step, training minutes, validation accuracy], ...]`` from the run's metrics.csv
    (minutes: the cumulative ``time_s`` of the training loop, validation included)."""
    path = out / "metrics.csv"
    if not path.is_file():
        return []
    with open(path) as f:
        return [[int(r["step"]), round(float(r["time_s"]) / 60, 3), round(float(r["val_acc"]), 3)]
                for r in csv.DictReader(f) if r.get("val_acc") not in (None, "")]


def step_times(out: Path) -> list[tuple[int, float]]:
    """``[(step, seconds), ...]`` at each validation of the run's metrics.csv: the training
    loop's exact ``time_s`` when that step ended (its validation comes after it)."""
    path = out / "metrics.csv"
    if not path.is_file():
        return []
    with open(path) as f:
        return [(int(r["step"]), float(r["time_s"])) for r in csv.DictReader(f)
                if r.get("val_acc") not in (None, "")]


def data_dir(given: str | None = None) -> Path:
    """The shared data folder (holding ``omniglot/...``): ``given``, else ``$RELGRAPH_DATA``,
    else ``shared/data`` inside the checkout, else ``../shared/data`` beside it."""
    if given or os.environ.get("RELGRAPH_DATA"):
        return Path(given or os.environ["RELGRAPH_DATA"]).expanduser().resolve()
    inside = ROOT / "shared" / "data"
    return inside if inside.is_dir() else SHARED_DATA


@functools.cache
def training_cwd(data: Path) -> Path:
    """A working directory in which the configs' relative roots (``../shared/data/...``)
    reach ``data``: the project root when they already do, else a temporary folder beside a
    ``shared/data`` link to ``data``, so that a run's saved config is the same wherever the
    data lie (and a run trained elsewhere can be continued here). One folder per ``data`` in
    this process, removed when it exits."""
    if SHARED_DATA.resolve() == data.resolve():
        return ROOT
    base = Path(tempfile.mkdtemp(prefix="relgraph-data-"))
    atexit.register(shutil.rmtree, base, ignore_errors=True)
    (base / "shared").mkdir()
    (base / "shared" / "data").symlink_to(data.resolve(), target_is_directory=True)
    (base / "cwd").mkdir()
    return base / "cwd"


def train(config: Path, out: Path, data: Path, *extra: str, log: Path | None = None,
          env: dict[str, str] | None = None, wait: bool = True) -> subprocess.Popen | None:
    """``relgraph train --config CONFIG --out OUT --no-progress EXTRA...`` run where the
    config's data roots reach ``data`` (:func:`training_cwd`); output to ``log`` if given.

    Returns the process when ``wait`` is false (else waits and raises on failure).
    """
    cmd = [sys.executable, "-m", "relgraph.cli", "train", "--config", str(Path(config).resolve()),
           "--out", str(Path(out).resolve()), "--no-progress", *extra]
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT)] + [p for p in full_env.get("PYTHONPATH", "").split(os.pathsep) if p])
    stream = open(log, "a") if log is not None else None  # noqa: SIM115 (closed below)
    try:
        proc = subprocess.Popen(cmd, cwd=training_cwd(data), env=full_env, stdout=stream,
                                stderr=subprocess.STDOUT if stream else None)
    finally:
        if stream is not None:
            stream.close()  # the child holds its own copy
    if not wait:
        return proc
    if wait_or_stop(proc):
        raise subprocess.CalledProcessError(proc.returncode, cmd)
    return None


def wait_or_stop(proc: subprocess.Popen, grace_s: float = 60.0) -> int:
    """Wait for ``proc`` and return its exit code; if this script is stopped meanwhile (Ctrl-C,
    or ``kill`` sending SIGTERM to this process alone), stop ``proc`` too before exiting.

    Without this, ``kill <script's pid>`` left its training child running on its own: it
    kept the run folder's lock, so the script run again could not train there, and it kept
    the cores busy (seen on 2026-12-05). The child gets SIGTERM, then SIGKILL after
    ``grace_s`` seconds.
    """
    on_main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM)
    try:
        if on_main:  # signal handlers can only be set there
            signal.signal(signal.SIGTERM, _exit_on_sigterm)
        return proc.wait()
    except BaseException:
        proc.terminate()
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise
    finally:
        if on_main:  # None: a handler set outside Python, which Python cannot restore
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def threads_label(n: int) -> str:
    """``"1 thread"`` / ``"2 threads"``."""
    return f"{n} thread" + ("" if n == 1 else "s")


def carry_history(old: dict | None, new: dict, why: str | None, fields: tuple[str, ...],
                  replaced: bool) -> dict:
    """``new`` with the test evaluation of the row it replaces kept in ``new["history"]``: the
    old row's own history first, then (when ``replaced``, i.e. its test results differ from the
    new ones) the old row's ``fields`` with ``why`` (why it was trained or evaluated again)."""
    if old is None:
        return new
    past = list(old.get("history", []))
    if replaced:
        past.append({**{k: old.get(k) for k in fields}, "why": why})
    new["history"] = past + [h for h in new.get("history", []) if h not in past]
    return new


def refuse_silent_reevaluation(rows: dict, keys: list[str], why: str | None) -> None:
    """Stop (exit 2) before any test data is read when ``keys`` already have test results on
    a page and no ``--why`` says why they are evaluated again: a rerun must not overwrite a
    recorded test evaluation without a trace."""
    again = [k for k in keys if k in rows]
    if again and not why:
        sys.exit(f"{', '.join(again)} already have test results on the page; evaluating them "
                 "again replaces those rows: say why with --why TEXT (the replaced results "
                 "stay in the row's history)")


def record_row(rows: dict, key: str, new: dict, why: str | None) -> dict:
    """``rows[key] = new``, the row it replaces kept in ``new["history"]`` (with ``why``) when
    its test results differ (:func:`carry_history` over every field but the history)."""
    old = rows.get(key)
    fields = tuple(k for k in (old or {}) if k not in ("history", "per_episode"))
    replaced = old is not None and old.get("results", old.get("cells")) != \
        new.get("results", new.get("cells"))
    rows[key] = carry_history(old, new, why, fields, replaced)
    return rows[key]


def cpu_threads() -> int:
    """The thread count a ``relgraph`` command uses here (``OMP_NUM_THREADS``, else the CPUs
    this process may use)."""
    from relgraph.threads import available_cpus

    given = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(given) if given.isdigit() and int(given) > 0 else available_cpus()


def validation_settings(config) -> tuple:  # noqa: ANN001 (a relgraph.engine.Config)
    """What decides a run's validation episodes: its data settings but the training-only
    ``augment`` warps, its ``eval`` section and ``train.val_episodes``. Runs that agree on it
    validated on the same episodes (seed ``VAL_SEED``)."""
    import dataclasses

    return (dataclasses.replace(config.data, augment={}), config.eval, config.train.val_episodes)


def ensemble_validation(runs: list[Path], configs: list, data: Path, device: str
                        ) -> tuple:
    """The ensemble of the runs' checkpoints scored on the validation episodes they validated
    on (``configs``: their saved configs; the first's ``train.val_episodes`` episodes of its
    ``eval`` shape, seed ``VAL_SEED``), with the data under ``data`` (:func:`training_cwd`).

    Returns:
        ``(ensemble, checkpoints, result)``: the :class:`relgraph.engine.Ensemble` in eval mode
        on ``device``, the members' checkpoints, :func:`relgraph.engine.evaluate`'s result.

    Raises:
        SystemExit: the runs validated on other episodes (see :func:`validation_settings`).
    """
    from relgraph.engine import load_ensemble
    from relgraph.engine.trainer import validation_result

    for run, config in zip(runs[1:], configs[1:], strict=True):
        if validation_settings(config) != validation_settings(configs[0]):
            raise SystemExit(f"{run.name} validated on other episodes than {runs[0].name} (data "
                             "but augment, eval or train.val_episodes differ): an ensemble is "
                             "chosen on its members' validation episodes, so they must be the "
                             "same")
    model, ckpts = load_ensemble([r / "checkpoint.pt" for r in runs], device=device)
    return model, ckpts, validation_result(model, validation_classes(configs[0], data),
                                           configs[0], device)


def validation_classes(config, data: Path):  # noqa: ANN001, ANN201 (Config -> FewShotDataset)
    """The validation classes a run of ``config`` validated on, its relative roots
    (``../shared/data/...``) read from ``data`` (:func:`training_cwd`)."""
    import dataclasses

    from relgraph.engine.trainer import build_datasets

    cwd = training_cwd(data)
    _, val = build_datasets(dataclasses.replace(
        config.data, roots=[str(cwd / root) for root in config.data.roots]))
    return val
