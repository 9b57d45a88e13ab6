"""Time the graph heads alone on precomputed features at n = 200, 400, 800 (no backbone).

For each head, ``relgraph.bench.benchmark(..., features=D)`` times one training step
(``build_graph`` + ``relate_loss`` + backward, into the features too, + an Adam step of the
head) and one evaluation (``relate`` under ``torch.no_grad()``) on one 20-way 5-shot graph of
random ``D``-dimensional features, with 5, 15 and 35 queries per class (n = 200, 400, 800
nodes), medians of ``--steps`` timed steps, and the peak memory of a fresh process (CPU: peak
RSS growth over the built head). It then fits ``time ~ n^k`` (log-log least squares).

This is the like-for-like comparison with the papers' reference GNN code run on features.

Usage (project root; set the threads, e.g. ``OMP_NUM_THREADS=1``)::

    python experiments/bench_heads.py                    # writes experiments/results/bench_heads.md
    python experiments/bench_heads.py --methods gnn --queries 5,15 --steps 2 --out /tmp/x.md
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import sys
from pathlib import Path

import torch

from relgraph.bench import benchmark, fit_exponent, machine_info
from relgraph.utils import atomic_write_text

METHODS = ("edge_gnn", "edge_gnn_transductive", "gnn", "gnn_transductive")


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated heads")
    p.add_argument("--features", type=int, default=64, help="feature size (default 64)")
    p.add_argument("--ways", type=int, default=20, help="classes per episode (default 20)")
    p.add_argument("--shots", type=int, default=5, help="shots (default 5)")
    p.add_argument("--queries", default="5,15,35", help="queries per class, one graph size each")
    p.add_argument("--steps", type=int, default=3, help="timed steps, medians (default 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first (default 1)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak memory")
    p.add_argument("--skip", action="append", default=[], metavar="METHOD:N",
                   help="leave out a size of a head (e.g. gnn_transductive:800, too much memory "
                        "for the machine); stated in the report; repeatable")
    p.add_argument("--note", default="", help="a line about the machine's load, for the report")
    p.add_argument("--out", default="experiments/results/bench_heads.md", help="report (.md)")
    args = p.parse_args(argv)

    methods = [m for m in args.methods.split(",") if m]
    queries = _ints(args.queries)
    command = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])])
    rows: dict[str, list[dict]] = {}
    for m in methods:
        rows[m] = []
        for q in queries:
            if f"{m}:{args.ways * (args.shots + q)}" in args.skip:
                continue
            r = benchmark(m, args.ways, args.shots, q, 1, steps=args.steps, warmup=args.warmup,
                          features=args.features, memory=not args.no_memory)
            rows[m].append(r)
            print(f"{m:<24} n={r['nodes']:>4}  train {r['train_ms']:>10.1f} ms  eval "
                  f"{r['eval_ms']:>9.1f} ms  train peak {r['train_peak_mb']} MiB", flush=True)

    def mb(v: float | None) -> str:
        return "n/a" if v is None else f"{v:,.0f}"

    lines = [
        "# Graph heads alone on precomputed features (no backbone)", "",
        f"`{command}`", "",
        f"Run on {datetime.date.today().isoformat()}: {machine_info()}; "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}. {args.note}".rstrip(),
        "",
        f"One {args.ways}-way {args.shots}-shot graph of random {args.features}-d features per "
        f"step; n = ways * (shots + queries). Training step = build_graph + relate_loss + "
        "backward (into the features too) + Adam step of the head; eval = relate under "
        f"no_grad. Medians of {args.steps} timed steps after {args.warmup} untimed. Peak = "
        "peak RSS growth of a fresh process over the built head (one eval, then one training "
        "step).", "",
        "| head | n | train ms/step | eval ms | train peak MiB | eval peak MiB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    summary = []
    for m, rs in rows.items():
        for r in rs:
            lines.append(f"| {m} | {r['nodes']} | {r['train_ms']:,.1f} | {r['eval_ms']:,.1f} | "
                         f"{mb(r['train_peak_mb'])} | {mb(r['eval_peak_mb'])} |")
        n = [r["nodes"] for r in rs]
        kt = fit_exponent(n, [r["train_ms"] for r in rs])
        ke = fit_exponent(n, [r["eval_ms"] for r in rs])
        summary.append(f"| {m} | {kt:.2f} | {ke:.2f} |")
    if args.skip:
        lines += ["", "Not run (--skip): " + ", ".join(
            f"{v.split(':')[0]} at n = {v.split(':')[1]}" for v in args.skip) + "."]
    lines += ["", "Growth, time ~ n^k (log-log least squares over the sizes above):", "",
              "| head | k train | k eval |", "|---|---:|---:|", *summary, ""]
    text = "\n".join(lines)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, text)
    atomic_write_text(out.with_suffix(".json"), json.dumps(
        {"command": command, "torch": torch.__version__, "rows": rows}, indent=2) + "\n")
    print(f"wrote {out} and {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
