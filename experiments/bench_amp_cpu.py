"""Does bfloat16 autocast on the CPU speed up the transductive graph heads? (issue 16, a probe)

Times one training step (``build_graph`` + ``relate_loss`` + backward + Adam) of
``edge_gnn_transductive`` and ``gnn_transductive`` on one 20-way 5-shot 15-query graph of
random 64-d features (n = 400, the shapes of ``experiments/bench_heads.py``), float32 and under
``torch.autocast("cpu", dtype=torch.bfloat16)``, interleaved, process CPU time, medians of
``--steps`` after one untimed step each. On CPUs with AMX / AVX-512 bf16 the matrix products run
several times faster in bfloat16. The trainer autocasts on the CPU only with
``train.amp_dtype: bfloat16`` (off by default); the fused pair-MLP path of the GNN kernel is off
under autocast (hence gnn_transductive's slowdown).

Usage (project root)::

    OMP_NUM_THREADS=1 python experiments/bench_amp_cpu.py [--steps 3] [--out FILE.md]
        [--runs FP32_RUN BF16_RUN]

``--runs`` adds the validation curves and training times of two ``relgraph train`` runs of one
config, float32 and with ``train.amp_dtype: bfloat16`` (their ``metrics.csv``), e.g.
``omniglot_small1_edge_gnn_transductive.yaml`` as it is and with ``--set train.amp_dtype=bfloat16``.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path

import torch

from relgraph.bench import machine_info
from relgraph.methods import build_method
from relgraph.utils import atomic_write_text

HEADS = {"edge_gnn_transductive": {"in_dim": 64}, "gnn_transductive": {"embed_dim": 64}}
#: The reference codes' training step at n = 400 quoted in issue 16 (1 thread, this machine
#: type): Kim et al.'s edge-labeling GNN 16.1 s, Garcia & Bruna's GNN 16.0 s.
REFERENCE_S = {"edge_gnn_transductive": 16.1, "gnn_transductive": 16.0}


def step(model: torch.nn.Module, opt: torch.optim.Optimizer, batch: tuple, bf16: bool) -> float:
    """One training step; returns its process CPU seconds."""
    support, support_labels, query, query_labels, ways = batch
    started = time.process_time()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        graph = model.build_graph(support, support_labels, query, ways)
        loss, _ = model.relate_loss(graph, query_labels)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return time.process_time() - started


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
    out = ["## A whole training run, float32 and bfloat16 autocast", "",
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--out", default="experiments/results/bench_amp_cpu.md")
    p.add_argument("--runs", nargs=2, metavar=("FP32_RUN", "BF16_RUN"),
                   help="two run folders of one config, float32 and bfloat16 autocast")
    p.add_argument("--note", default="", help="how the --runs were made, for the page")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    ways, shots, queries, dim = 20, 5, 15, 64
    rows = []
    for name, kwargs in HEADS.items():
        torch.manual_seed(0)
        model = build_method(name, None, **kwargs).train()
        opt = torch.optim.Adam(model.parameters())
        support = torch.randn(1, ways * shots, dim, requires_grad=True)
        support_labels = torch.arange(ways).repeat_interleave(shots)[None]
        query = torch.randn(1, ways * queries, dim, requires_grad=True)
        query_labels = torch.arange(ways).repeat_interleave(queries)[None]

        batch = (support, support_labels, query, query_labels, ways)
        step(model, opt, batch, False)
        step(model, opt, batch, True)
        times: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(args.steps):
            for bf16 in (False, True):
                times[bf16].append(step(model, opt, batch, bf16))
        fp32, bf16 = (statistics.median(times[b]) for b in (False, True))
        rows.append((name, fp32, bf16))
        print(f"{name}: float32 {fp32:.3f} s, bfloat16 autocast {bf16:.3f} s", flush=True)
    bf16_units = cpu_bf16_units() or ["none found"]
    command = ("OMP_NUM_THREADS=1 python experiments/bench_amp_cpu.py " + " ".join(
        argv if argv is not None else sys.argv[1:])).strip()
    lines = ["# bfloat16 autocast on the CPU: transductive graph heads at n = 400", "",
             f"`{command}`", "",
             f"Run on {time.strftime('%Y-%m-%d')}: {machine_info()}; CPU bf16 units: "
             f"{', '.join(bf16_units)}.", "", __doc__.split("\n\n")[1].replace("\n", " "), "",
             "| head | float32 s/step | bfloat16 autocast s/step | ratio | reference s/step "
             "(issue 16) | reference / float32 | reference / bfloat16 |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, fp32, bf16 in rows:
        ref = REFERENCE_S[name]
        lines.append(f"| {name} | {fp32:.3f} | {bf16:.3f} | {fp32 / bf16:.2f} | {ref} | "
                     f"{ref / fp32:.1f} | {ref / bf16:.1f} |")
    lines += ["", "The reference figures are the issue's, measured on an earlier day, not in "
              "this run; ratios to them are indicative only.", ""]
    if args.runs:
        lines += runs_section(*(Path(r) for r in args.runs))
        if args.note:
            lines += [args.note, ""]
    atomic_write_text(Path(args.out), "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
