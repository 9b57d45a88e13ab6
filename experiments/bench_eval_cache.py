"""Benchmark: evaluation with the embedding cache against embedding every episode.

Runs ``relgraph evaluate`` on the small1 test protocol (unseen alphabets of
``images_background_small2``, 5-way 1-shot, 15 queries) for each checkpoint, once with the
embedding cache (the default) and once with ``--no-cache``, on the same episodes, and reports
the wall-clock time of each command (process start included), their ratio and both accuracies.
Each command runs alone with the threads given (``--threads``, default 1).

Usage (from the project root)::

    python experiments/bench_eval_cache.py runs/omniglot_small1/protonet \\
        runs/omniglot_small1/gnn runs/omniglot_small1/edge_gnn --episodes 10000

Writes ``experiments/results/bench_eval_cache.md`` (``--out``) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEST_ROOT = ROOT.parent / "shared" / "data" / "omniglot" / "images_background_small2.zip"
ALPHABETS = "Japanese_(katakana),Sanskrit,Tagalog"


def run(checkpoint: Path, episodes: int, cache: bool, threads: int) -> tuple[float, dict]:
    """Wall-clock seconds and JSON result of one ``relgraph evaluate`` command."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "relgraph.cli", "evaluate", "--checkpoint", str(checkpoint),
               "--dataset", "omniglot", "--root", str(TEST_ROOT), "--alphabets", ALPHABETS,
               "--ways", "5", "--shots", "1", "--queries", "15", "--episodes", str(episodes),
               "--json", str(out), "--no-progress"] + ([] if cache else ["--no-cache"])
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        start = time.perf_counter()
        subprocess.run(cmd, check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - start
        return seconds, json.loads(out.read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run folders (or their checkpoint.pt)")
    parser.add_argument("--episodes", type=int, default=10000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--uncached-episodes", type=int, nargs="*", default=None,
                        help="episodes of the uncached comparison, one number per run "
                             "(default: --episodes); the cached path is then timed on that "
                             "number too, for the ratio and the accuracy comparison")
    parser.add_argument("--out", default=str(ROOT / "experiments" / "results" /
                                             "bench_eval_cache.md"))
    args = parser.parse_args()
    import torch

    compare = args.uncached_episodes or [args.episodes] * len(args.runs)
    if len(compare) != len(args.runs):
        parser.error("give one --uncached-episodes number per run")
    rows = []
    for run_dir, n in zip(args.runs, compare, strict=True):
        ckpt = Path(run_dir)
        ckpt = ckpt / "checkpoint.pt" if ckpt.is_dir() else ckpt
        full_s, full = run(ckpt, args.episodes, True, args.threads)
        cached_s, cached = (full_s, full) if n == args.episodes else run(ckpt, n, True,
                                                                          args.threads)
        uncached_s, uncached = run(ckpt, n, False, args.threads)
        same = (cached["accuracy"], cached["ci95"]) == (uncached["accuracy"], uncached["ci95"])
        rows.append(f"| {ckpt.parent.name} | {full_s:.1f} | {full['accuracy']:.2f} +- "
                    f"{full['ci95']:.2f} | {n:,} | {cached_s:.1f} | {uncached_s:.1f} | "
                    f"{uncached_s / cached_s:.1f}x | {cached['accuracy']:.2f} / "
                    f"{uncached['accuracy']:.2f} | {'yes' if same else 'NO'} |")
        print(rows[-1], flush=True)
    text = "\n".join([
        "# Evaluation with the embedding cache",
        "",
        f"`relgraph evaluate` on {args.episodes:,} episodes of the small1 test protocol "
        f"(unseen alphabets {ALPHABETS} of images_background_small2, 5-way 1-shot, 15 queries, "
        "seed 0), with the embedding cache (default: every distinct image embedded once, all "
        "episodes related on the cached features) and with `--no-cache` (every episode "
        "embedded on its own), on the same episodes. Wall clock of the whole command "
        f"(process start and data loading included), {args.threads} thread(s), one command at "
        "a time.",
        "",
        f"| run | {args.episodes:,} episodes, cached (s) | accuracy | comparison episodes "
        "| cached (s) | uncached (s) | speed-up | accuracy cached / uncached | same |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"Machine: {os.cpu_count()}-core CPU, torch {torch.__version__}, "
        f"{platform.machine()}. Command: `python experiments/bench_eval_cache.py "
        f"{' '.join(args.runs)} --episodes {args.episodes} --threads {args.threads}"
        + (f" --uncached-episodes {' '.join(map(str, compare))}`." if args.uncached_episodes
           else "`."),
        "The comparison runs both paths on the same episodes (the first 'comparison "
        "episodes' of the seeded stream); 'same' means equal accuracy and CI.",
        "",
    ])
    from relgraph.utils import atomic_write_text

    atomic_write_text(args.out, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
