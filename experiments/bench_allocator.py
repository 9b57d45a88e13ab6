"""glibc's malloc as it comes vs freed memory kept (``relgraph.allocator``), per training step.

Each workload runs in fresh processes (malloc's settings are per process), once with glibc's
defaults (``RELGRAPH_ALLOCATOR=system``: large blocks are ``mmap``-ed and returned at every
``free``, so every step page-faults its tensors back in) and once after
:func:`relgraph.allocator.keep_freed_memory` (what the ``relgraph`` command does at start).
Workloads (seeded random inputs, so only the CPU is measured; 1 thread):

- ``protonet train``: the Vinyals ProtoNet 1-shot training step (Conv4, 60-way 1-shot
  5 queries, 28x28: 360 images; forward + backward + Adam), as ``bench_threads.py``;
- ``edge_gnn train``: the edge-labeling GNN's training step on a 20-way 5-shot 15-query image
  episode (400 images, Conv4 and the head; ``relgraph bench --method edge_gnn``'s shapes);
- ``gnn_transductive train (features)``: the transductive GNN head alone on one 400-node
  graph of 64-d features (``bench_reference_heads.py``'s shapes), float32 and under bfloat16
  autocast;
- ``protonet eval``: ProtoNet's evaluation step on a 20-way 5-shot 15-query episode.

With ``--run CONFIG``, also a whole ``relgraph train`` run of that config
(``--run-steps`` steps, one validation at the end, into a temporary folder), once per setting:
its wall, user and system time (the child process's ``getrusage``) and whether both runs wrote
the same metrics (the allocator must not change a result).

Per workload and setting: the median wall time of a step, and over the timed steps the user and
system CPU time and the minor page faults per step (``getrusage``), and the process's peak
resident memory (``ru_maxrss``). Rounds repeat every (workload, setting) in turn so that other
load on the machine spreads over both.

Usage (from the project root)::

    python experiments/bench_allocator.py [--steps 5] [--warmup 2] [--rounds 2] [--note TEXT]
        [--run experiments/configs/omniglot_small1_protonet.yaml --run-steps 300]
        [--out experiments/results/allocator.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results" / "allocator.md"

WORKLOADS = ("protonet train", "edge_gnn train", "gnn_transductive train (features)",
             "gnn_transductive train (features, bfloat16)", "protonet eval")
#: (name, keep freed memory)
SETTINGS = (("glibc defaults", False), ("freed memory kept", True))


def _workload(name: str):  # noqa: ANN202
    """The step closure of a workload."""
    import torch

    from relgraph.bench import _build, _steps, random_episode, random_features

    torch.manual_seed(0)
    if name == "protonet train":
        model = _build("protonet", "conv4", 1, 28, None, None, 0)
        return _steps(model, random_episode(60, 1, 5, 1, 1, 28))["train"]
    if name == "edge_gnn train":
        model = _build("edge_gnn", "conv4", 1, 28, None, None, 0)
        return _steps(model, random_episode(20, 5, 15, 1, 1, 28))["train"]
    if name.startswith("gnn_transductive train (features"):
        model = _build("gnn_transductive", "conv4", 1, 28, None, None, 0, features=64)
        amp = "bfloat16" if "bfloat16" in name else None
        return _steps(model, random_features(20, 5, 15, 64), features=True, amp=amp)["train"]
    if name == "protonet eval":
        model = _build("protonet", "conv4", 1, 28, None, None, 0)
        return _steps(model, random_episode(20, 5, 15, 1, 1, 28))["eval"]
    raise ValueError(f"unknown workload {name!r}; expected one of {', '.join(WORKLOADS)}")


def child(name: str, keep: bool, steps: int, warmup: int) -> None:
    """Time ``steps`` steps of workload ``name`` after ``warmup`` ones; print one JSON line."""
    from relgraph.allocator import keep_freed_memory

    kept = keep_freed_memory() if keep else False
    import torch

    torch.set_num_threads(1)
    step = _workload(name)
    for _ in range(warmup):
        step()
    before = resource.getrusage(resource.RUSAGE_SELF)
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    after = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({
        "kept": kept, "wall_ms": 1000 * statistics.median(times),
        "user_ms": 1000 * (after.ru_utime - before.ru_utime) / steps,
        "sys_ms": 1000 * (after.ru_stime - before.ru_stime) / steps,
        "minflt": (after.ru_minflt - before.ru_minflt) / steps,
        "maxrss_mib": after.ru_maxrss / 1024}), flush=True)


def measure(name: str, keep: bool, steps: int, warmup: int) -> dict[str, float]:
    from relgraph.allocator import child_environment

    env = {**child_environment(keep), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, __file__, "--child", name, "--steps", str(steps), "--warmup",
           str(warmup)] + (["--keep"] if keep else [])
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise RuntimeError(f"{name}: child failed:\n{proc.stderr[-2000:]}")
    got = json.loads(proc.stdout.splitlines()[-1])
    if keep and not got["kept"]:
        raise RuntimeError("keep_freed_memory() did nothing here (not glibc, or an allocator "
                           "setting in the environment): nothing to compare")
    return got


def whole_run(config: Path, steps: int, keep: bool) -> dict[str, object]:
    """One ``relgraph train`` run of ``config`` for ``steps`` steps (one validation, at the
    end), 1 thread: wall, user and system seconds, and its last metrics line."""
    from relgraph.allocator import child_environment

    # the relgraph command keeps freed memory unless RELGRAPH_ALLOCATOR=system says not to
    env = {**child_environment(keep), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "relgraph.cli", "train", "--config", str(config), "--out",
               str(Path(tmp) / "run"), "--no-progress", "--set", f"train.steps={steps}",
               "--set", f"train.val_every={steps}"]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True,
                              check=False)
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode:
            raise RuntimeError(f"relgraph train failed:\n{proc.stderr[-2000:]}")
        last = (Path(tmp) / "run" / "metrics.csv").read_text().strip().splitlines()[-1]
    # the last column is the loop's own clock; the rest must not depend on the allocator
    return {"wall_s": wall, "user_s": after.ru_utime - before.ru_utime,
            "sys_s": after.ru_stime - before.ru_stime, "metrics": last.rsplit(",", 1)[0]}


def _load() -> str:
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def report(results: dict[tuple[str, bool], list[dict[str, float]]], args: argparse.Namespace,
           loads: list[str], workloads: tuple[str, ...],
           runs: dict[bool, list[dict[str, object]]]) -> str:
    import torch

    def med(name: str, keep: bool, key: str) -> float:
        return statistics.median(r[key] for r in results[(name, keep)])

    lines = [
        "# Memory allocator: glibc's defaults vs freed memory kept",
        "",
        "`" + " ".join(["python experiments/bench_allocator.py", "--steps", str(args.steps),
                        "--warmup", str(args.warmup), "--rounds", str(args.rounds)]
                       + [f"--workload {shlex.quote(w)}" for w in args.workload or []]
                       + ([f"--run {args.run} --run-steps {args.run_steps}"] if args.run
                          else [])
                       + ([f"--note {shlex.quote(args.note)}"] if args.note else [])) + "`",
        "",
        (__doc__ or "").split("\n\n", 1)[1].split("\n\nUsage")[0].strip(),
        "",
        "| workload | setting | step, wall (ms) | user (ms/step) | system (ms/step) | "
        "minor page faults / step | peak RSS (MiB) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    ratios = []
    for name in workloads:
        for label, keep in SETTINGS:
            lines.append(f"| {name} | {label} | {med(name, keep, 'wall_ms'):.0f} | "
                         f"{med(name, keep, 'user_ms'):.0f} | {med(name, keep, 'sys_ms'):.0f} | "
                         f"{med(name, keep, 'minflt'):.0f} | "
                         f"{med(name, keep, 'maxrss_mib'):.0f} |")
        ratios.append(f"{name} {med(name, False, 'wall_ms') / med(name, True, 'wall_ms'):.2f}x")
    lines += [
        "",
        "Step time, glibc defaults / freed memory kept (medians of the rounds' medians): "
        + "; ".join(ratios) + ".",
        "",
    ]
    if runs:
        def rmed(keep: bool, key: str) -> float:
            return statistics.median(float(r[key]) for r in runs[keep])  # type: ignore[arg-type]

        same = len({r["metrics"] for rs in runs.values() for r in rs}) == 1
        lines += [f"## A whole training run: `relgraph train --config {args.run} --set "
                  f"train.steps={args.run_steps} --set train.val_every={args.run_steps}`", "",
                  "1 thread, one run per setting per round (medians over the rounds).", "",
                  "| setting | wall (s) | user (s) | system (s) |", "|---|---:|---:|---:|"]
        for label, keep in SETTINGS:
            lines.append(f"| {label} | {rmed(keep, 'wall_s'):.1f} | {rmed(keep, 'user_s'):.1f} "
                         f"| {rmed(keep, 'sys_s'):.1f} |")
        lines += ["", f"Whole run, glibc defaults / freed memory kept: "
                  f"{rmed(False, 'wall_s') / rmed(True, 'wall_s'):.2f}x wall. Same metrics "
                  f"(losses, accuracies, validation) in every run: {'yes' if same else 'NO'}.",
                  ""]
    lines += [
        f"Machine: {os.cpu_count()} cores, torch {torch.__version__}, Python "
        f"{platform.python_version()}, {platform.machine()}, glibc "
        f"{platform.libc_ver()[1] or '?'}; 1 thread per process, one process at a time. "
        f"Load average (1/5/15 min) before each round: {'; '.join(loads)}."
        + (f" {args.note}" if args.note else ""),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--child", metavar="WORKLOAD", help=argparse.SUPPRESS)
    parser.add_argument("--keep", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per process")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--rounds", type=int, default=2, help="repetitions of every setting")
    parser.add_argument("--workload", action="append", choices=WORKLOADS,
                        help="only these workloads (repeatable; default all)")
    parser.add_argument("--run", type=Path, metavar="CONFIG",
                        help="also time a whole relgraph train run of this config per setting")
    parser.add_argument("--run-steps", type=int, default=300, help="its steps (default 300)")
    parser.add_argument("--note", default="", help="how the machine was loaded, for the page")
    parser.add_argument("--out", type=Path, default=RESULTS, help="the page to write")
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.keep, args.steps, args.warmup)
        return 0
    sys.path.insert(0, str(ROOT))
    from relgraph.utils import atomic_write_text

    workloads = tuple(args.workload or WORKLOADS)
    results: dict[tuple[str, bool], list[dict[str, float]]] = {
        (n, k): [] for n in workloads for _, k in SETTINGS}
    runs: dict[bool, list[dict[str, object]]] = {k: [] for _, k in SETTINGS} if args.run else {}
    loads = []
    for r in range(args.rounds):
        loads.append(_load())
        for name in workloads:
            for label, keep in (SETTINGS if r % 2 == 0 else SETTINGS[::-1]):
                got = measure(name, keep, args.steps, args.warmup)
                results[(name, keep)].append(got)
                print(f"round {r + 1}: {name}, {label}: {got['wall_ms']:.0f} ms, "
                      f"{got['minflt']:.0f} faults", flush=True)
        if args.run:
            for label, keep in (SETTINGS if r % 2 == 0 else SETTINGS[::-1]):
                got_run = whole_run(args.run.resolve(), args.run_steps, keep)
                runs[keep].append(got_run)
                print(f"round {r + 1}: whole run, {label}: {got_run['wall_s']:.1f} s",
                      flush=True)
    text = report(results, args, loads, workloads, runs)
    atomic_write_text(args.out, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
