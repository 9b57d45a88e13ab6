"""The papers' own graph networks against relgraph's, one training step each, in one run (issue 16).

Times one training step (forward + loss + backward + Adam) on one transductive 20-way 5-shot
graph of random 64-d features, process CPU time, 1 thread, medians of ``--steps`` after one
untimed step, every model called in turn (interleaved, so load affects all alike):

- **Kim et al. 2019** (edge-labeling GNN), their ``model.GraphNetwork`` from a checkout of
  https://github.com/khy0809/fewshot-egnn (``--egnn``): ``in_features=64,
  node_features=96, edge_features=96, num_layers=3`` (their miniImageNet widths), all ``n x n``
  edges, initial edges and the class-balanced query-edge loss of their ``train.py`` (layers
  weighted 0.5, 0.5, 1), against relgraph's ``edge_gnn_transductive`` (the same widths).
- **Garcia & Bruna 2018** (GNN), their ``models.gnn_iclr.GNN_nl`` from a checkout of
  https://github.com/vgsatorras/few-shot-gnn (``--gnn``): ``nf=96``, input = embedding ++ label
  encoding (64 + 20), the whole graph in one pass, cross-entropy of their read-out, against
  relgraph's ``gnn_transductive`` (``nf=96``).

relgraph's heads run in float32 and under ``torch.autocast("cpu", dtype=torch.bfloat16)`` (the
trainer's ``train.amp_dtype: bfloat16``); the reference codes in float32 as published. Their
code is imported from the given folders, never copied: the EGNN's ``torchtools`` wants
``tensorboardX`` for logging, which is stubbed (nothing is logged) when it is not installed.

Every model runs under two memory allocators, one fresh process each: glibc malloc's defaults
(how ``python`` runs the papers' code: every large tensor is ``mmap``-ed and returned at its
``free``, so each step page-faults it back in) and with freed memory kept
(:func:`relgraph.allocator.keep_freed_memory`, what the ``relgraph`` command does). The
reference codes, with their ``n x n x features`` tensors, gain the most from the second.

Usage (project root; the checkouts anywhere, e.g. from ``git clone``)::

    OMP_NUM_THREADS=1 python experiments/bench_reference_heads.py --egnn ../fewshot-egnn \\
        --gnn ../few-shot-gnn [--queries 15] [--steps 3] [--allocator both] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import importlib
import json
import shlex
import statistics
import subprocess
import sys
import time
import types
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from relgraph.allocator import child_environment, keep_freed_memory
from relgraph.bench import _build, _steps, machine_info, random_features
from relgraph.utils import atomic_write_text

WAYS, SHOTS, DIM, NF = 20, 5, 64, 96


def _import_egnn(folder: Path) -> types.ModuleType:
    """Kim et al.'s ``model`` module (their ``torchtools`` parses ``sys.argv`` on import)."""
    if not (folder / "model.py").is_file() or not (folder / "torchtools").is_dir():
        raise SystemExit(f"--egnn {folder}: expected a checkout of khy0809/fewshot-egnn "
                         "(model.py and torchtools/)")
    try:
        importlib.import_module("tensorboardX")
    except ImportError:  # logging only; stubbed
        stub = types.ModuleType("tensorboardX")
        stub.SummaryWriter = object  # type: ignore[attr-defined]
        sys.modules["tensorboardX"] = stub
    argv, sys.argv = sys.argv, sys.argv[:1]
    sys.path.insert(0, str(folder))
    try:
        return importlib.import_module("model")
    finally:
        sys.argv = argv
        sys.path.remove(str(folder))


def _import_gnn(folder: Path) -> types.ModuleType:
    """Garcia & Bruna's ``models.gnn_iclr`` module."""
    if not (folder / "models" / "gnn_iclr.py").is_file():
        raise SystemExit(f"--gnn {folder}: expected a checkout of vgsatorras/few-shot-gnn "
                         "(models/gnn_iclr.py)")
    sys.path.insert(0, str(folder))
    try:
        return importlib.import_module("models.gnn_iclr")
    finally:
        sys.path.remove(str(folder))


def _commit(folder: Path) -> str:
    """The checkout's git commit, or ``unknown`` (not a git checkout)."""
    try:
        out = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], check=True,
                             capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip()


def _labels(queries: int) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.arange(WAYS).repeat_interleave(SHOTS),
            torch.arange(WAYS).repeat_interleave(queries))


def egnn_step(module: types.ModuleType, queries: int) -> Callable[[], None]:
    """One training step of the reference edge-labeling GNN, as their ``train.py`` makes it
    (transductive: every query-query edge counts)."""
    torch.manual_seed(0)
    net = module.GraphNetwork(in_features=DIM, node_features=NF, edge_features=NF,
                              num_layers=3, dropout=0.0).train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    s_lab, q_lab = _labels(queries)
    s = len(s_lab)
    label = torch.cat([s_lab, q_lab])[None]  # [1, n]
    n = label.shape[1]
    full_edge = (label.unsqueeze(1) == label.unsqueeze(2)).float()
    full_edge = torch.stack([full_edge, 1 - full_edge], 1)  # [1, 2, n, n]
    init_edge = full_edge.clone()
    init_edge[:, :, s:, :] = 0.5
    init_edge[:, :, :, s:] = 0.5
    idx = torch.arange(s, n)
    init_edge[:, 0, idx, idx] = 1.0
    init_edge[:, 1, idx, idx] = 0.0
    query_mask = torch.ones(1, n, n)
    query_mask[:, :s, :s] = 0
    feats = torch.randn(1, n, DIM, generator=torch.Generator().manual_seed(1))

    def run() -> None:
        x = feats.clone().requires_grad_(True)
        layers = net(node_feat=x, edge_feat=init_edge)
        loss = 0.0
        for w, layer in zip((0.5, 0.5, 1.0), layers, strict=True):
            bce = F.binary_cross_entropy(1 - layer[:, 0], 1 - full_edge[:, 0], reduction="none")
            pos, neg = query_mask * full_edge[:, 0], query_mask * (1 - full_edge[:, 0])
            loss = loss + w * ((bce * pos).sum() / pos.sum() + (bce * neg).sum() / neg.sum())
        opt.zero_grad()
        loss.backward()
        opt.step()

    return run


def gnn_step(module: types.ModuleType, queries: int) -> Callable[[], None]:
    """One training step of the reference GNN on the whole graph (their read-out of node 0)."""
    torch.manual_seed(0)
    args = types.SimpleNamespace(dataset="omniglot", train_N_way=WAYS, cuda=False)
    net = module.GNN_nl(args, DIM + WAYS, nf=NF, J=1).train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    s_lab, q_lab = _labels(queries)
    enc = torch.cat([F.one_hot(s_lab, WAYS).float(), torch.full((len(q_lab), WAYS), 1 / WAYS)])
    feats = torch.randn(1, len(enc), DIM, generator=torch.Generator().manual_seed(1))
    target = q_lab[:1]

    def run() -> None:
        x = torch.cat([feats, enc[None]], -1).requires_grad_(True)
        with warnings.catch_warnings():  # their F.softmax without dim
            warnings.simplefilter("ignore")
            out = net(x)
        loss = F.cross_entropy(out, target)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return run


def ours_step(method: str, queries: int, bf16: bool) -> Callable[[], None]:
    """One training step of a relgraph head on the same shapes, as ``relgraph bench
    --features`` times it (``build_graph`` + ``relate_loss`` + backward + Adam)."""
    kwargs = {} if method.startswith("edge") else {"nf": NF}
    model = _build(method, "conv4", 1, 28, kwargs, None, 0, features=DIM)
    episode = random_features(WAYS, SHOTS, queries, DIM, seed=1)
    return _steps(model, episode, features=True, amp="bfloat16" if bf16 else None)["train"]


ALLOCATORS = {"system": "glibc malloc's defaults (as a plain ``python`` runs the papers' code)",
              "kept": "freed memory kept (``relgraph.allocator.keep_freed_memory``, as the "
                      "``relgraph`` command runs)"}
#: (reference, relgraph's like-for-like head); every head runs in each of MODES (label, bf16)
PAIRS = (("reference edge-labeling GNN (Kim et al.)", "edge_gnn_transductive"),
         ("reference GNN (Garcia & Bruna)", "gnn_transductive"))
MODES = (("float32", False), ("bfloat16 autocast", True))


def measure(egnn_dir: Path, gnn_dir: Path, queries: int, steps: int) -> dict[str, float]:
    """Median process CPU seconds of a training step of every model, interleaved."""
    torch.set_num_threads(1)
    egnn, gnn = _import_egnn(egnn_dir.resolve()), _import_gnn(gnn_dir.resolve())
    fns: dict[str, Callable[[], None]] = {}
    for (ref, ours), ref_step in zip(PAIRS, (egnn_step(egnn, queries), gnn_step(gnn, queries)),
                                     strict=True):
        fns[ref] = ref_step
        for mode, bf16 in MODES:
            fns[f"{ours}, {mode}"] = ours_step(ours, queries, bf16)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for i in range(steps + 1):
        for name, fn in fns.items():
            started = time.process_time()
            fn()
            if i:  # the first step of each is untimed
                times[name].append(time.process_time() - started)
            print(f"step {i} {name}: {time.process_time() - started:.2f} s", file=sys.stderr,
                  flush=True)
    return {k: statistics.median(v) for k, v in times.items()}


def _in_child(args: argparse.Namespace, allocator: str) -> dict[str, float]:
    """:func:`measure` in a fresh process with the given allocator setting."""
    cmd = [sys.executable, __file__, "--egnn", str(args.egnn), "--gnn", str(args.gnn),
           "--queries", str(args.queries), "--steps", str(args.steps), "--child", allocator]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False,
                          env={**child_environment(allocator == "kept"),
                               "OMP_NUM_THREADS": "1"})
    if proc.returncode:
        raise SystemExit(f"the {allocator} run failed (exit {proc.returncode})")
    return json.loads(proc.stdout.splitlines()[-1])


def _table(sec: dict[str, float]) -> list[str]:
    lines = ["| model | s/step | reference / this |", "|---|---:|---:|"]
    for ref, ours in PAIRS:
        lines.append(f"| {ref} | {sec[ref]:.3f} | 1.00 |")
        for mode, _ in MODES:
            key = f"{ours}, {mode}"
            lines.append(f"| {key} | {sec[key]:.3f} | {sec[ref] / sec[key]:.1f} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--egnn", required=True, type=Path, help="checkout of khy0809/fewshot-egnn")
    p.add_argument("--gnn", required=True, type=Path,
                   help="checkout of vgsatorras/few-shot-gnn")
    p.add_argument("--queries", type=int, default=15, help="queries per class (n = 20 x "
                                                           "(5 + queries); default 15: n = 400)")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--allocator", choices=("system", "kept", "both"), default="both",
                   help="glibc malloc's defaults, freed memory kept (relgraph.allocator), or "
                        "both, one fresh process each (default)")
    p.add_argument("--out", default="experiments/results/bench_reference_heads.md")
    p.add_argument("--note", default="", help="how the machine was loaded, for the page")
    p.add_argument("--child", choices=tuple(ALLOCATORS), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        if args.child == "kept" and not keep_freed_memory():
            raise SystemExit("keep_freed_memory() did nothing here (not glibc, or an allocator "
                             "setting in the environment)")
        print(json.dumps(measure(args.egnn, args.gnn, args.queries, args.steps)), flush=True)
        return 0
    runs = {a: _in_child(args, a) for a in (ALLOCATORS if args.allocator == "both"
                                            else (args.allocator,))}
    n = WAYS * (SHOTS + args.queries)
    command = ("OMP_NUM_THREADS=1 python experiments/bench_reference_heads.py " + shlex.join(
        argv if argv is not None else sys.argv[1:])).strip()
    lines = [f"# The papers' graph networks vs relgraph's heads, one training step at n = {n}", "",
             f"`{command}`", "",
             f"Run on {time.strftime('%Y-%m-%d')}: {machine_info()}. Reference code: "
             f"khy0809/fewshot-egnn at {_commit(args.egnn)}, vgsatorras/few-shot-gnn at "
             f"{_commit(args.gnn)}.", "",
             *[" ".join(par.split()) + "\n" for par in __doc__.split("\n\n")[1:5]],
             *([args.note, ""] if args.note else [])]
    for allocator, sec in runs.items():
        lines += [f"## Memory allocator: {ALLOCATORS[allocator]}", "", *_table(sec), ""]
    if len(runs) == 2:
        ratio = {k: runs["system"][k] / runs["kept"][k] for k in runs["system"]}
        lines += ["Each model's step, glibc defaults / freed memory kept: "
                  + "; ".join(f"{k} {v:.2f}x" for k, v in ratio.items()) + ".", ""]
    lines += ["Process CPU time (user + system) of one step (forward + loss + backward + Adam), "
              f"median of {args.steps} after one untimed step, all models interleaved within "
              "each run; one fresh process per allocator setting, one after the other.", ""]
    atomic_write_text(Path(args.out), "\n".join(lines))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
