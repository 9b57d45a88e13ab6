"""Old vs new pair MLPs of the graph heads, in one run: the plain modules vs ``pair_mlp``.

The heads ``gnn`` and ``edge_gnn`` (inductive and transductive) evaluate an MLP on
``|x_i - x_j|`` for every node pair. :mod:`relgraph.nn.pairwise` computes it in cache-sized
blocks of rows with a hand-written backward pass, and the GNN's kernel once per unordered pair
(BatchNorm weighted by multiplicity); ``with use_fused(False)`` runs the plain modules, the
code before that change (the GNN on the full ``n x m`` block). Both run here on the same
inputs, from the same weights, called in turn (A/B interleaved), medians of ``--steps`` timed
steps after ``--warmup`` untimed ones. Reported: wall-clock and process CPU time (user + system
of this process; on a shared machine the wall-clock time also counts the time other processes
held the core).

1. **Heads on features** (as ``experiments/bench_heads.py``): one 20-way 5-shot graph of random
   64-d features with 5, 15, 35 queries per class (n = 200, 400, 800). Training step =
   build_graph + relate_loss + backward (into the features too) + Adam step of the head; eval =
   relate under ``no_grad``. Old / new ratios and growth exponents ``time ~ n^k``.
2. **Inductive edge_gnn on images** (20-way 5-shot 15-query, Conv4 on 28x28): the backbone's
   training step (forward + backward of the embeddings) and the relational training step
   (``relgraph bench``'s closures), old and new.
3. **Checkpoints** (``--checkpoint``, repeatable): the largest difference of the eval logits of
   a trained model, old vs new, on random 5-way 1-shot 15-query episodes of its backbone's
   embeddings.
4. **The training policy** (``--no-policy`` skips it): edge_gnn and edge_gnn_transductive
   train without row multiplicities; their training step with the edge MLPs as plain modules
   and on the blocked path, float32 and bfloat16 autocast, at n = 400. ``pair_mlp`` takes the
   faster of the two per dtype (``relgraph.nn.pairwise.BLOCKED_TRAINING_UNDER_AUTOCAST``).

The old code is the plain modules everywhere. Since 2026-12-02 (evening) "new" trains
edge_gnn's edge MLPs on the blocked path in float32 (before, in training without
multiplicities, new = old).

Usage (project root, one thread, e.g. ``OMP_NUM_THREADS=1``)::

    python experiments/bench_pair_mlp.py --checkpoint runs/omniglot_small1/gnn \\
        --checkpoint runs/omniglot_small1/edge_gnn          # writes experiments/results/
    python experiments/bench_pair_mlp.py --methods edge_gnn --queries 5 --steps 1 --no-images \\
        --out /tmp/x.md                                      # a quick look
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from relgraph.allocator import keep_freed_memory
from relgraph.bench import (
    _build,
    _steps,
    fit_exponent,
    machine_info,
    random_episode,
    random_features,
)
from relgraph.nn import pairwise
from relgraph.nn.pairwise import use_fused
from relgraph.utils import atomic_write_text

METHODS = ("edge_gnn_transductive", "gnn_transductive", "edge_gnn", "gnn")


def _plain(fn: Callable[[], None]) -> Callable[[], None]:
    def run() -> None:
        with use_fused(False):
            fn()
    return run


def _time(fns: dict[str, Callable[[], None]], steps: int, warmup: int
          ) -> dict[str, dict[str, float]]:
    """Median wall and CPU milliseconds per call of each closure, called in turn."""
    wall: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    for i in range(warmup + steps):
        for name, fn in fns.items():
            w, c = time.perf_counter(), time.process_time()
            fn()
            if i >= warmup:
                wall[name].append(1e3 * (time.perf_counter() - w))
                cpu[name].append(1e3 * (time.process_time() - c))
    return {k: {"wall_ms": statistics.median(wall[k]), "cpu_ms": statistics.median(cpu[k])}
            for k in fns}


def heads(method: str, queries: int, steps: int, warmup: int, dim: int, old: bool = True
          ) -> dict:
    model = _build(method, "conv4", 1, 28, None, None, 0, features=dim)
    episode = random_features(20, 5, queries, dim)
    new_fns = _steps(model, episode, features=True)
    fns = {"train_new": new_fns["train"], "eval_new": new_fns["eval"]}
    if old:
        old_fns = _steps(copy.deepcopy(model), episode, features=True)
        fns = {"train_old": _plain(old_fns["train"]), "train_new": new_fns["train"],
               "eval_old": _plain(old_fns["eval"]), "eval_new": new_fns["eval"]}
    ms = _time(fns, steps, warmup)
    nan = {"wall_ms": float("nan"), "cpu_ms": float("nan")}
    return {"method": method, "nodes": episode.support.shape[1] + episode.query.shape[1],
            "train_old": nan, "eval_old": nan, **ms}


def images(steps: int, warmup: int) -> dict:
    model = _build("edge_gnn", "conv4", 1, 28, None, None, 0)
    old = copy.deepcopy(model)
    episode = random_episode(20, 5, 15, 1, 1, 28)
    new_fns = _steps(model, episode)
    old_fns = _steps(old, episode)
    return _time({"backbone_train": new_fns["train_backbone"],
                  "relational_train_old": _plain(old_fns["train_relational"]),
                  "relational_train_new": new_fns["train_relational"],
                  "backbone_eval": new_fns["eval_backbone"],
                  "relational_eval_old": _plain(old_fns["eval_relational"]),
                  "relational_eval_new": new_fns["eval_relational"]}, steps, warmup)


def policy(steps: int, warmup: int, dim: int, queries: int = 15) -> list[dict]:
    """Part 4: training without multiplicities (edge_gnn's edge MLPs), the plain modules vs
    the blocked path, in float32 and under bfloat16 autocast, on the 20-way 5-shot 15-query
    graph of features (n = 400; other ``queries`` per class for a quick look);
    ``pairwise.BLOCKED_TRAINING_UNDER_AUTOCAST`` is what the bfloat16 rows decide."""
    episode = random_features(20, 5, queries, dim)
    rows = []
    for method in ("edge_gnn", "edge_gnn_transductive"):
        model = _build(method, "conv4", 1, 28, None, None, 0, features=dim)
        for amp in (None, "bfloat16"):
            train = _steps(copy.deepcopy(model), episode, features=True, amp=amp)["train"]
            blocked = _steps(copy.deepcopy(model), episode, features=True, amp=amp)["train"]
            ms = _time({"plain": _plain(train), "blocked": _blocked(blocked)}, steps, warmup)
            rows.append({"method": method, "dtype": amp or "float32", **ms})
    return rows


def _blocked(fn: Callable[[], None]) -> Callable[[], None]:
    """``fn`` with the blocked path also in training under autocast."""
    def run() -> None:
        old, pairwise.BLOCKED_TRAINING_UNDER_AUTOCAST = (
            pairwise.BLOCKED_TRAINING_UNDER_AUTOCAST, True)
        try:
            fn()
        finally:
            pairwise.BLOCKED_TRAINING_UNDER_AUTOCAST = old
    return run


def checkpoint_diff(path: str, episodes: int = 20) -> dict:
    from relgraph.engine.trainer import load_model

    model, _ = load_model(Path(path) / "checkpoint.pt" if Path(path).is_dir() else path)
    ep = random_episode(5, 1, 15, episodes, 1, 28)
    with torch.no_grad():
        s, q = model.embed_episode(ep)
        new = model.forward_features(s, ep.support_labels, q, ep.n_way)
        with use_fused(False):
            old = model.forward_features(s, ep.support_labels, q, ep.n_way)
    return {"checkpoint": path, "episodes": episodes,
            "max_abs_logit_diff": float((new - old).abs().max()),
            "max_abs_logit": float(old.abs().max()),
            "same_argmax": bool((new.argmax(-1) == old.argmax(-1)).all())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated heads")
    p.add_argument("--queries", default="5,15,35", help="queries per class, one graph each")
    p.add_argument("--features", type=int, default=64, help="feature size (default 64)")
    p.add_argument("--steps", type=int, default=3, help="timed steps, medians (default 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first (default 1)")
    p.add_argument("--skip-old", action="append", default=[], metavar="METHOD:N",
                   help="time only the new code of this head at this size (the old one needs "
                        "too much memory); repeatable")
    p.add_argument("--no-images", action="store_true", help="skip part 2")
    p.add_argument("--checkpoint", action="append", default=[], help="part 3 (repeatable)")
    p.add_argument("--no-policy", action="store_true", help="skip part 4")
    p.add_argument("--policy-queries", type=int, default=15,
                   help="queries per class of part 4's graph (default 15: n = 400)")
    p.add_argument("--note", default="", help="a line about the machine's load")
    p.add_argument("--out", default="experiments/results/bench_pair_mlp.md", help="report")
    p.add_argument("--keep-freed-memory", action="store_true",
                   help="glibc malloc keeps freed memory, as the relgraph command runs "
                        "(relgraph.allocator.keep_freed_memory); default: malloc's defaults")
    args = p.parse_args(argv)
    kept = keep_freed_memory() if args.keep_freed_memory else False
    command = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])])
    start = time.time()
    load = os.getloadavg()

    rows = []
    for m in [m for m in args.methods.split(",") if m]:
        for q in [int(v) for v in args.queries.split(",") if v]:
            n = 20 * (5 + q)
            r = heads(m, q, args.steps, args.warmup, args.features,
                      old=f"{m}:{n}" not in args.skip_old)
            rows.append(r)
            print(f"{m:<24} n={r['nodes']:>4} train old {r['train_old']['cpu_ms']:>9.0f} new "
                  f"{r['train_new']['cpu_ms']:>9.0f} cpu ms | eval old "
                  f"{r['eval_old']['cpu_ms']:>8.0f} new {r['eval_new']['cpu_ms']:>8.0f}",
                  flush=True)
    img = None if args.no_images else images(args.steps, args.warmup)
    if img:
        print(json.dumps(img, indent=1), flush=True)
    pol = None if args.no_policy else policy(args.steps, args.warmup, args.features,
                                                 args.policy_queries)
    ckpts = [checkpoint_diff(c) for c in args.checkpoint]
    for c in ckpts:
        print(c, flush=True)
    load_end = os.getloadavg()

    def f(v: float) -> str:
        return f"{v:,.0f}"

    lines = ["# Pair MLPs of the graph heads: plain modules (old) vs pair_mlp (new), one run", "",
             f"`{command}`", "",
             f"Run on {datetime.date.today().isoformat()}: {machine_info()}; "
             f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; load average "
             f"{load[0]:.1f} at the start, {load_end[0]:.1f} at the end (2 cores, shared); "
             f"{(time.time() - start) / 60:.0f} min; memory allocator: "
             f"{'freed memory kept (as the relgraph command runs)' if kept else 'malloc defaults'}"
             f". {args.note}".rstrip(), "",
             "Old and new on the same inputs from the same weights, called in turn, medians of "
             f"{args.steps} timed steps after {args.warmup} untimed. cpu = process CPU time "
             "(user + system), wall = wall clock (also counts the time other processes held "
             "the core). Ratio = old / new.", "",
             "## 1. Heads on one 20-way 5-shot graph of random 64-d features", "",
             "| head | n | train old cpu ms | train new cpu ms | ratio | train old wall | "
             "train new wall | ratio | eval old cpu | eval new cpu | ratio |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        to, tn, eo, en = r["train_old"], r["train_new"], r["eval_old"], r["eval_new"]
        lines.append(f"| {r['method']} | {r['nodes']} | {f(to['cpu_ms'])} | {f(tn['cpu_ms'])} | "
                     f"{to['cpu_ms'] / tn['cpu_ms']:.2f} | {f(to['wall_ms'])} | "
                     f"{f(tn['wall_ms'])} | {to['wall_ms'] / tn['wall_ms']:.2f} | "
                     f"{f(eo['cpu_ms'])} | {f(en['cpu_ms'])} | {eo['cpu_ms'] / en['cpu_ms']:.2f} |")
    lines += ["", "Growth, cpu time ~ n^k over the sizes above:", "",
              "| head | k train old | k train new | k eval old | k eval new |",
              "|---|---:|---:|---:|---:|"]
    for m in dict.fromkeys(r["method"] for r in rows):
        rs = [r for r in rows if r["method"] == m]
        if len(rs) < 2:
            continue
        k = []
        for key in ("train_old", "train_new", "eval_old", "eval_new"):
            ok = [r for r in rs if r[key]["cpu_ms"] == r[key]["cpu_ms"]]  # not NaN
            k.append(fit_exponent([r["nodes"] for r in ok], [r[key]["cpu_ms"] for r in ok])
                     if len(ok) > 1 else float("nan"))
        lines.append(f"| {m} | " + " | ".join(f"{v:.2f}" for v in k) + " |")
    if args.skip_old:
        lines += ["", "Old code not run (--skip-old; k old over the other sizes): " + ", ".join(
            f"{v.split(':')[0]} at n = {v.split(':')[1]}" for v in args.skip_old) + "."]
    if img:
        lines += ["", "## 2. Inductive edge_gnn, 20-way 5-shot 15-query images (Conv4, 28x28)", "",
                  "| step | cpu ms | wall ms |", "|---|---:|---:|"]
        for k, v in img.items():
            lines.append(f"| {k} | {f(v['cpu_ms'])} | {f(v['wall_ms'])} |")
        bb = img["backbone_train"]["cpu_ms"]
        lines += ["", f"Relational / backbone training step (cpu): old "
                  f"{img['relational_train_old']['cpu_ms'] / bb:.2f}, new "
                  f"{img['relational_train_new']['cpu_ms'] / bb:.2f}."]
    if ckpts:
        lines += ["", "## 3. Trained checkpoints: eval logits, old vs new", "",
                  "| checkpoint | episodes | max abs logit diff | max abs logit | same argmax |",
                  "|---|---:|---:|---:|---|"]
        for c in ckpts:
            lines.append(f"| {c['checkpoint']} | {c['episodes']} | {c['max_abs_logit_diff']:.2e} "
                         f"| {c['max_abs_logit']:.2f} | {c['same_argmax']} |")
    if pol:
        lines += ["", "## 4. Training without multiplicities: plain modules vs blocked path", "",
                  "Training step (build_graph + relate_loss + backward + Adam) on the 20-way "
                  f"5-shot {args.policy_queries}-query graph of features (n = "
                  f"{20 * (5 + args.policy_queries)}), the edge MLPs as plain modules "
                  "or on the blocked path, float32 and bfloat16 autocast. pair_mlp takes the "
                  "blocked path in float32 and the plain modules under autocast "
                  "(relgraph.nn.pairwise.BLOCKED_TRAINING_UNDER_AUTOCAST = "
                  f"{pairwise.BLOCKED_TRAINING_UNDER_AUTOCAST}).", "",
                  "| head | dtype | plain cpu ms | blocked cpu ms | plain / blocked |",
                  "|---|---|---:|---:|---:|"]
        for r in pol:
            a, b = r["plain"]["cpu_ms"], r["blocked"]["cpu_ms"]
            lines.append(f"| {r['method']} | {r['dtype']} | {f(a)} | {f(b)} | {a / b:.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, text)
    atomic_write_text(out.with_suffix(".json"), json.dumps(
        {"command": command, "torch": torch.__version__, "heads": rows, "images": img,
         "checkpoints": ckpts, "policy": pol}, indent=2) + "\n")
    print(f"wrote {out} and {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
