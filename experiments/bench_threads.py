"""Threads: what two training processes sharing two cores cost each other, and what helps.

The workload is one fixed training step, the Vinyals ProtoNet 1-shot step of
``omniglot_protonet_1shot.yaml`` (Conv4, 60-way 1-shot 5 queries, 28x28: 360 images,
forward + backward + Adam) on seeded random images, so only the CPU is measured (no data
loading). Every measurement runs in fresh processes, since OpenMP reads its environment when
torch is imported:

- alone: one process, 1 thread and 2 threads;
- side by side: two processes started together (both wait at a barrier after their warm-up
  steps, then time the same number of steps), with 1 thread each and with 2 threads each,
  the latter also under the OpenMP wait policies that decide what an idle thread does while
  the other waits at a barrier: ``OMP_WAIT_POLICY=PASSIVE`` (sleep at once),
  ``GOMP_SPINCOUNT=0`` (GNU OpenMP: no spinning), ``KMP_BLOCKTIME=0`` (Intel OpenMP's knob;
  torch's wheels use GNU OpenMP, so it should change nothing: the control).

Reported per setting: the median step time of each process (ms), the slowdown against the
same thread count alone, and the throughput (steps per second of both processes together).
Rounds repeat every setting in turn so that other load on the machine spreads over all.

Usage (from the project root)::

    python experiments/bench_threads.py            # 6 steps, 2 rounds: writes results/threads.md
    python experiments/bench_threads.py --steps 3 --rounds 1 --no-write   # a quick look

Each child gets ``OMP_NUM_THREADS`` set to its thread count; the wait-policy variables of the
calling shell are removed (only the setting's own are set).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from relgraph.utils import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results" / "threads.md"

#: (name, processes, threads per process, extra environment)
SETTINGS: list[tuple[str, int, int, dict[str, str]]] = [
    ("alone, 1 thread", 1, 1, {}),
    ("alone, 2 threads", 1, 2, {}),
    ("alone, 2 threads, OMP_WAIT_POLICY=PASSIVE", 1, 2, {"OMP_WAIT_POLICY": "PASSIVE"}),
    ("2 processes x 1 thread", 2, 1, {}),
    ("2 processes x 2 threads", 2, 2, {}),
    ("2 processes x 2 threads, OMP_WAIT_POLICY=PASSIVE", 2, 2, {"OMP_WAIT_POLICY": "PASSIVE"}),
    ("2 processes x 2 threads, GOMP_SPINCOUNT=0", 2, 2, {"GOMP_SPINCOUNT": "0"}),
    ("2 processes x 2 threads, KMP_BLOCKTIME=0", 2, 2, {"KMP_BLOCKTIME": "0"}),
]
_WAIT_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME", "OMP_NUM_THREADS",
              "MKL_NUM_THREADS")


def child(threads: int, steps: int, warmup: int) -> None:
    """Time ``steps`` training steps after ``warmup`` ones; waits for "go" on stdin in between.

    Prints one JSON line: the step times in seconds.
    """
    import torch

    from relgraph.backbones import build_backbone
    from relgraph.bench import random_episode
    from relgraph.methods import build_method

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_method("protonet", build_backbone("conv4", in_channels=1, image_size=28))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    episode = random_episode(60, 1, 5, 1, 1, 28, seed=0)

    def step() -> None:
        loss, _ = model.loss(episode)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    print("ready", flush=True)
    sys.stdin.readline()  # the barrier: both processes start timing together
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    print(json.dumps({"times": times, "threads": torch.get_num_threads()}), flush=True)


def measure(processes: int, threads: int, env_extra: dict[str, str], steps: int,
            warmup: int) -> list[float]:
    """Median step time (ms) of each of ``processes`` processes run side by side."""
    env = {k: v for k, v in os.environ.items() if k not in _WAIT_VARS}
    env.update(env_extra, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(ROOT))
    cmd = [sys.executable, __file__, "--child", "--threads", str(threads), "--steps", str(steps),
           "--warmup", str(warmup)]
    procs = [subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True) for _ in range(processes)]
    for p in procs:
        if p.stdout.readline().strip() != "ready":
            raise RuntimeError("a child process failed before its warm-up ended")
    for p in procs:  # release both at once
        p.stdin.write("go\n")
        p.stdin.flush()
    medians = []
    for p in procs:
        out, _ = p.communicate()
        if p.returncode:
            raise RuntimeError(f"child exited with {p.returncode}")
        medians.append(1000 * statistics.median(json.loads(out.splitlines()[-1])["times"]))
    return medians


def _load() -> str:
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def report(results: dict[str, list[list[float]]], args: argparse.Namespace, loads: list[str]
           ) -> str:
    import torch

    from relgraph.threads import available_cpus

    def per_process(name: str) -> list[float]:
        return [statistics.median(run[i] for run in results[name])
                for i in range(len(results[name][0]))]

    def mean(name: str) -> float:
        return statistics.mean(per_process(name))

    base = mean("alone, 1 thread")
    lines = [
        "# Threads: two processes on two cores",
        "",
        "Workload: one training step of the Vinyals ProtoNet 1-shot config (Conv4, 60-way 1-shot "
        "5 queries, 28x28, forward + backward + Adam) on random images, timed in fresh processes; "
        "side-by-side processes start timing together. Median step time per process over "
        f"{args.steps} steps (after {args.warmup} warm-up steps), median over {args.rounds} "
        "rounds (each round runs every setting once, in turn). Slowdown: a process's step time "
        "against one process alone with 1 thread. Throughput: steps per second of all processes "
        "together.",
        "",
        "| setting | step (ms), each process | slowdown | throughput (steps/s) |",
        "|---|---|---|---|",
    ]
    for name, *_ in SETTINGS:
        per = per_process(name)
        lines.append(f"| {name} | {' / '.join(f'{p:.0f}' for p in per)} | "
                     f"{statistics.mean(per) / base:.2f}x | "
                     f"{sum(1000 / p for p in per):.2f} |")
    pair = mean("2 processes x 2 threads")
    passive = mean("2 processes x 2 threads, OMP_WAIT_POLICY=PASSIVE")
    lines += [
        "",
        f"Reading: two 2-thread processes side by side took {pair / base:.1f}x the step time of "
        "one 1-thread process with OpenMP's default wait policy (idle threads spin at every "
        f"barrier, on cores the other process needs), {passive / base:.1f}x with "
        f"OMP_WAIT_POLICY=PASSIVE ({pair / passive:.1f}x faster), and two 1-thread processes "
        f"{mean('2 processes x 1 thread') / base:.1f}x. One 2-thread process took "
        f"{mean('alone, 2 threads') / base:.1f}x spinning and "
        f"{mean('alone, 2 threads, OMP_WAIT_POLICY=PASSIVE') / base:.1f}x passive: the "
        "machine's other jobs make even a lone process a process beside others. "
        "GOMP_SPINCOUNT=0 (no spinning) did what PASSIVE did "
        f"({mean('2 processes x 2 threads, GOMP_SPINCOUNT=0') / passive:.2f}x its step time); "
        "KMP_BLOCKTIME=0, Intel OpenMP's knob, did nothing for torch's GNU OpenMP "
        f"({mean('2 processes x 2 threads, KMP_BLOCKTIME=0') / pair:.2f}x the default's).",
        "",
        f"Machine: {available_cpus()} CPUs available to this process (affinity and cgroup "
        f"quota; os.cpu_count() = {os.cpu_count()}), torch {torch.__version__} "
        f"({'GNU' if 'GNU' in torch.__config__.show() or _gomp() else 'other'} OpenMP), Python "
        f"{platform.python_version()}, {platform.machine()}. Load average (1/5/15 min) before "
        f"each round: {'; '.join(loads)}: other jobs shared the machine, so absolute times are "
        "upper bounds; the ratios within a round are the measurement.",
        "",
        f"Command: `python experiments/bench_threads.py --steps {args.steps} --warmup "
        f"{args.warmup} --rounds {args.rounds}`"
        + (" (this file rebuilt from that run's printed output with `--report-from`)."
           if args.report_from else "."),
        "",
    ]
    return "\n".join(lines)


def _gomp() -> bool:
    import torch

    lib = Path(torch.__file__).parent / "lib"
    return any(lib.glob("libgomp*"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per process")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--rounds", type=int, default=2, help="repetitions of every setting")
    parser.add_argument("--no-write", action="store_true", help="print, do not write the file")
    parser.add_argument("--report-from", metavar="LOG",
                        help="rebuild the report from this script's printed output (its "
                             "'round N: ...' and 'load: ...' lines) without measuring again")
    args = parser.parse_args()
    if args.child:
        child(args.threads, args.steps, args.warmup)
        return 0
    sys.path.insert(0, str(ROOT))
    results: dict[str, list[list[float]]] = {name: [] for name, *_ in SETTINGS}
    loads = []
    if args.report_from:
        for line in Path(args.report_from).read_text().splitlines():
            if line.startswith("load: "):
                loads.append(line[len("load: "):])
            elif line.startswith("round ") and line.endswith(" ms"):
                name, _, times = line.split(": ", 1)[1].rpartition(": ")
                results[name].append([float(t) for t in times[:-3].split(", ")])
        args.rounds = min(len(v) for v in results.values())
        results = {k: v[:args.rounds] for k, v in results.items()}
    for r in range(0 if args.report_from else args.rounds):
        loads.append(_load())
        print(f"load: {loads[-1]}", flush=True)
        for name, processes, threads, env in SETTINGS:
            medians = measure(processes, threads, env, args.steps, args.warmup)
            results[name].append(medians)
            print(f"round {r + 1}: {name}: {', '.join(f'{m:.0f}' for m in medians)} ms",
                  flush=True)
    text = report(results, args, loads)
    print(text)
    if not args.no_write:
        atomic_write_text(RESULTS, text)
        print(f"wrote {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
