"""bfloat16 autocast on the CPU: the graph heads' training step, float32 vs bfloat16 (issue 16).

1. Times one training step (``build_graph`` + ``relate_loss`` + backward + Adam) of
``edge_gnn_transductive`` and ``gnn_transductive`` on one 20-way 5-shot 15-query graph of
random 64-d features (n = 400, the shapes of ``experiments/bench_heads.py``) in three ways,
interleaved in one run, process CPU time, medians of ``--steps`` after one untimed step each:
float32; bfloat16 autocast with the pair MLPs as plain modules (``use_fused(False)``: how the
previous code ran under autocast); bfloat16 autocast as ``pair_mlp`` chooses now (the fused
path: products and rows in bfloat16, statistics in float32, see ``relgraph.nn.pairwise``; but
the plain modules where that measured faster: the edge-labeling GNN's edge MLPs in training,
which have no row multiplicities, ``experiments/bench_pair_mlp.py`` part 4). On CPUs with AMX /
AVX-512 bf16 the matrix products run several times faster in bfloat16. The trainer autocasts on
the CPU only with ``train.amp_dtype: bfloat16`` (off by default).

2. Inductive ``edge_gnn`` on images (20-way 5-shot 15-query, Conv4 on 28x28, the shapes of
``relgraph bench``): the backbone's training step and the relational head's training step on
its embeddings, each measured directly (``relgraph.bench``), float32 and bfloat16 autocast.

Usage (project root)::

    OMP_NUM_THREADS=1 python experiments/bench_amp_cpu.py [--steps 3] [--out FILE.md]
        [--runs FP32_RUN BF16_RUN [--note TEXT]] ...

Each ``--runs`` adds the validation curves and training times of two ``relgraph train`` runs of
one config, float32 and with ``train.amp_dtype: bfloat16`` (their ``metrics.csv``), e.g.
``omniglot_small1_edge_gnn_transductive.yaml`` as it is and with ``--set train.amp_dtype=bfloat16``;
the i-th ``--note`` says how the i-th pair was made.
"""

from __future__ import annotations

import argparse
import csv
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import yaml

from relgraph.bench import _build, _steps, machine_info, random_episode, random_features
from relgraph.nn.pairwise import use_fused
from relgraph.utils import atomic_write_text

HEADS = ("edge_gnn_transductive", "gnn_transductive")
#: The reference codes' training step at n = 400 quoted in issue 16 (1 thread, this machine
#: type): Kim et al.'s edge-labeling GNN 16.1 s, Garcia & Bruna's GNN 16.0 s.
REFERENCE_S = {"edge_gnn_transductive": 16.1, "gnn_transductive": 16.0}


#: Half the paper's edge-MLP widths (192, 192, 96, 96), for the inductive edge_gnn section.
NARROW = (96, 96, 48, 48)

#: The ways a step runs: (label, bfloat16 autocast, fused pair MLPs).
MODES = (("float32", False, True), ("bfloat16, plain pair MLPs (before)", True, False),
         ("bfloat16, pair_mlp's choice (now)", True, True))


def cpu_seconds(fn: Callable[[], None], fused: bool = True) -> float:
    """Process CPU seconds of one call of ``fn`` (pair MLPs fused or not)."""
    started = time.process_time()
    with use_fused(fused):
        fn()
    return time.process_time() - started


def images_section(steps: int) -> list[str]:
    """Inductive edge_gnn on a 20-way 5-shot 15-query image episode: backbone and relational
    training / eval steps, float32 and bfloat16 autocast, each measured directly."""
    episode = random_episode(20, 5, 15, 1, 1, 28)
    model = _build("edge_gnn", "conv4", 1, 28, None, None, 0)
    # the same head with half the edge MLP's widths (not the paper's): its relational step
    narrow = _build("edge_gnn", "conv4", 1, 28, {"edge_hidden": NARROW}, None, 0)
    fns = {}
    for bf16 in (False, True):
        amp = "bfloat16" if bf16 else None
        fns.update({(k, bf16): fn for k, fn in _steps(model, episode, amp=amp).items()})
        fns[("train_relational_narrow", bf16)] = _steps(narrow, episode,
                                                        amp=amp)["train_relational"]
    names = ("train_backbone", "train_relational", "eval_backbone", "eval_relational",
             "train_relational_narrow")
    times: dict[tuple[str, bool], list[float]] = {(n, b): [] for n in names for b in (False, True)}
    for i in range(steps + 1):
        for key, got in times.items():
            took = cpu_seconds(fns[key])
            if i:  # the first call of each is untimed
                got.append(took)
    ms = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    # the floor: the edge MLPs' matrix products alone (forward + both backward products) at
    # the GEMM rate this core reaches on their shapes, measured here
    s_nodes = episode.support.shape[1]
    n_nodes = s_nodes + episode.query.shape[1]
    pairs = s_nodes * (s_nodes - 1) // 2 + (n_nodes - s_nodes) * s_nodes
    macs = sum(m.in_features * m.out_features for layer in model.edge_layers
               for m in layer.mlp if isinstance(m, torch.nn.Linear))
    flops = 6 * macs * pairs
    rates = {bf16: gemm_rate(torch.bfloat16 if bf16 else torch.float32) for bf16 in (False, True)}
    out = ["## 2. Inductive edge_gnn: relational head vs backbone", "",
           "20-way 5-shot 15-query image episode (n = 400), Conv4 on 28x28, ms of process CPU "
           "time (medians). Training: forward + loss + backward + Adam of the backbone alone "
           "(a fixed gradient into its embeddings) and of the head alone (on the backbone's "
           "embeddings, gradient into them too).", "",
           "| step | float32 ms | bfloat16 ms | float32 / bfloat16 |", "|---|---:|---:|---:|"]
    for name in names:
        a, b = ms[(name, False)], ms[(name, True)]
        out.append(f"| {name} | {a:,.0f} | {b:,.0f} | {a / b:.2f} |")
    for mode, bf16 in (("float32", False), ("bfloat16", True)):
        r = ms[("train_relational", bf16)] / ms[("train_backbone", bf16)]
        r_narrow = ms[("train_relational_narrow", bf16)] / ms[("train_backbone", bf16)]
        floor = 1e3 * flops / rates[bf16]
        out += ["", f"Relational / backbone training step, {mode}: {r:.2f}. The edge MLPs' "
                f"matrix products alone ({pairs:,} node pairs x 3 layers, {flops / 1e9:.1f} "
                f"GFLOP forward + backward) at the {rates[bf16] / 1e9:.0f} GFLOP/s this core "
                f"reaches on a [4096, 192] x [192, 192] product in {mode}: {floor:,.0f} ms, "
                f"{floor / ms[('train_backbone', bf16)]:.2f}x the backbone's whole step. "
                f"With half the edge MLP's widths (edge_hidden={NARROW}, not the paper's; "
                f"train_relational_narrow): {r_narrow:.2f}."]
    return out + [""]


def gemm_rate(dtype: torch.dtype, repeats: int = 20) -> float:
    """FLOP/s of a ``[4096, 192] x [192, 192]`` matrix product in ``dtype`` on this thread."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4096, 192, generator=g).to(dtype)
    b = torch.randn(192, 192, generator=g).to(dtype)
    a @ b
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * 4096 * 192 * 192 * repeats / (time.perf_counter() - started)


def cpu_bf16_units() -> list[str]:
    """The CPU's bfloat16 units named in ``/proc/cpuinfo`` (Linux; empty elsewhere)."""
    info = Path("/proc/cpuinfo")
    flags = next((line.split(":", 1)[1].split() for line in info.read_text().splitlines()
                  if line.startswith("flags")), []) if info.is_file() else []
    return [f for f in ("amx_bf16", "avx512_bf16") if f in flags]


def runs_section(fp32: Path, bf16: Path) -> list[str]:
    """Validation accuracy at each validation and the loop's seconds of two runs."""
    rows = {}
    for name, folder in (("float32", fp32), ("bfloat16", bf16)):
        with open(folder / "metrics.csv", newline="") as f:
            rows[name] = {int(r["step"]): r for r in csv.DictReader(f)}
    steps = sorted(set(rows["float32"]) & set(rows["bfloat16"]))
    config = yaml.safe_load((fp32 / "config.yaml").read_text()) or {}
    args = yaml.safe_dump(config.get("method_args") or {}, default_flow_style=True,
                          width=10**6).strip()
    what = f"{config.get('method', '?')} {args if args != '{}' else ''}".strip()
    out = [f"## A whole training run, float32 and bfloat16 autocast: {what}", "",
           f"`{fp32}` and `{bf16}` (their `config.yaml`: the same config but "
           "`train.amp_dtype`), metrics.csv: validation accuracy (%) and the training loop's "
           "seconds (incl. validation) at each validation.", "",
           "| step | float32 val | bfloat16 val | float32 s | bfloat16 s |",
           "|---:|---:|---:|---:|---:|"]
    for step in steps:
        a, b = rows["float32"][step], rows["bfloat16"][step]
        out.append(f"| {step} | {float(a['val_acc']):.2f} +- {float(a['val_ci95']):.2f} | "
                   f"{float(b['val_acc']):.2f} +- {float(b['val_ci95']):.2f} | "
                   f"{float(a['time_s']):.1f} | {float(b['time_s']):.1f} |")
    last = steps[-1]
    ratio = float(rows["float32"][last]["time_s"]) / float(rows["bfloat16"][last]["time_s"])
    best = {k: max(float(r["val_acc"]) for r in v.values()) for k, v in rows.items()}
    out += ["", f"Whole loop: {ratio:.2f}x faster in bfloat16; best validation float32 "
            f"{best['float32']:.2f}, bfloat16 {best['bfloat16']:.2f}.", ""]
    return out


RUNS_HEADING = "## A whole training run"
KEPT_NOTE = ("(This and the other whole-run sections below were kept from an earlier run of "
             "this script, `--keep-runs`; the timings above are new.)")


def kept_runs(page: Path) -> list[str]:
    """The whole-run sections of an existing page (from the first one to the end), with a line
    saying they were kept from an earlier run of this script."""
    if not page.is_file():
        raise SystemExit(f"--keep-runs: {page} does not exist; nothing to keep (leave out "
                         "--keep-runs)")
    text = page.read_text()
    at = text.find(RUNS_HEADING)
    if at < 0:
        return []
    lines = text[at:].rstrip("\n").splitlines()
    if len(lines) > 3 and lines[2] == KEPT_NOTE:  # kept before: one note
        del lines[2:4]
    return [lines[0], "", KEPT_NOTE, *lines[1:], ""]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--out", default="experiments/results/bench_amp_cpu.md")
    p.add_argument("--runs", nargs=2, action="append", default=[],
                   metavar=("FP32_RUN", "BF16_RUN"),
                   help="two run folders of one config, float32 and bfloat16 autocast "
                        "(repeatable)")
    p.add_argument("--machine-note", default="",
                   help="how the machine was loaded during the timings, for the page")
    p.add_argument("--note", action="append", default=[],
                   help="how the i-th --runs pair was made, for the page (repeatable)")
    p.add_argument("--keep-runs", action="store_true",
                   help="keep the whole-run sections (and their notes) of the page at --out as "
                        "they are, e.g. when their run folders are gone; new --runs follow them")
    args = p.parse_args(argv)
    kept = kept_runs(Path(args.out)) if args.keep_runs else []
    torch.set_num_threads(1)
    ways, shots, queries, dim = 20, 5, 15, 64
    rows = []
    for name in HEADS:
        model = _build(name, "conv4", 1, 28, None, None, 0, features=dim)
        episode = random_features(ways, shots, queries, dim)
        train = {bf16: _steps(model, episode, features=True,
                              amp="bfloat16" if bf16 else None)["train"] for bf16 in (False, True)}
        for _, bf16, fused in MODES:
            cpu_seconds(train[bf16], fused)
        times: list[list[float]] = [[] for _ in MODES]
        for _ in range(args.steps):
            for got, (_, bf16, fused) in zip(times, MODES, strict=True):
                got.append(cpu_seconds(train[bf16], fused))
        medians = [statistics.median(t) for t in times]
        rows.append((name, *medians))
        print(name, ", ".join(f"{label} {s:.3f} s" for (label, _, _), s in
                              zip(MODES, medians, strict=True)), flush=True)
    bf16_units = cpu_bf16_units() or ["none found"]
    command = ("OMP_NUM_THREADS=1 python experiments/bench_amp_cpu.py " + shlex.join(
        argv if argv is not None else sys.argv[1:])).strip()
    lines = ["# bfloat16 autocast on the CPU: graph heads at n = 400", "",
             f"`{command}`", "",
             f"Run on {time.strftime('%Y-%m-%d')}: {machine_info()}; CPU bf16 units: "
             f"{', '.join(bf16_units)}.", "",
             *([args.machine_note, ""] if args.machine_note else []),
             "## 1. Transductive heads on one graph of features", "",
             __doc__.split("\n\n")[1].replace("\n", " ")[3:], "",
             "| head | float32 s/step | bfloat16, plain pair MLPs (before) | bfloat16, "
             "pair_mlp's choice (now) | float32 / now | before / now | reference s/step "
             "(issue 16) | reference / float32 | reference / now |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, fp32, before, now in rows:
        ref = REFERENCE_S[name]
        lines.append(f"| {name} | {fp32:.3f} | {before:.3f} | {now:.3f} | {fp32 / now:.2f} | "
                     f"{before / now:.2f} | {ref} | {ref / fp32:.1f} | {ref / now:.1f} |")
    lines += ["", "The reference figures are the issue's (the reference codes in float32, 1 "
              "thread, this machine type), measured on an earlier day, not in this run.", ""]
    lines += images_section(args.steps)
    lines += kept
    for i, pair in enumerate(args.runs):
        lines += runs_section(*(Path(r) for r in pair))
        if i < len(args.note):
            lines += [args.note[i], ""]
    atomic_write_text(Path(args.out), "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
