"""``relgraph predict`` on texts, 150 classes at once: CLINC150 with 5 labelled examples per intent.

Writes a support file (``label<TAB>text``, ``--shots`` examples per intent from the official
train split, drawn as ``experiments/text.py``'s practitioner protocol draws them: seed
``1000 * shots + draw``), a query file (CSV ``label,text``: ``--per-intent`` seeded texts per
intent from the official test split, or all 4,500 with ``--per-intent 0``), runs
``relgraph predict`` on them in a subprocess (one thread, an empty feature cache, then again with
the cache filled) and writes ``experiments/results/text_predict.md``:

    OMP_NUM_THREADS=1 python experiments/text_predict.py --checkpoint /tmp/clinc_feat \\
        --data ../shared/data/text/clinc150

The checkpoint is any model trained on CLINC150 MiniLM features, e.g. ProtoNet (the nearest
class mean; ``docs/text.rst`` shows the command). With ``--per-intent 0`` and draw 0 the
accuracy is the practitioner table's protonet draw 0 in ``experiments/results/text.md``.
"""

from __future__ import annotations

import argparse
import csv
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from relgraph.data import build_dataset
from relgraph.utils import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
#: How the checkpoint of the reported run was trained (ProtoNet on MiniLM features: no
#: parameters, so the 20 steps only validate and save it).
TRAIN = ("OMP_NUM_THREADS=1 relgraph train --method protonet --dataset clinc150 "
         "--root ../shared/data/text/clinc150 --split train "
         "--alphabets banking,home,kitchen_and_dining,meta,travel,auto_and_commute,work "
         "--set 'data.val_alphabets=[auto_and_commute,work]' --ways 5 --shots 5 --queries 10 "
         "--steps 20 --out /tmp/clinc_feat_tp")


def write_files(data: Path, work: Path, shots: int, per_intent: int, draw: int,
                seed: int) -> tuple[Path, Path, int]:
    """The support ``.tsv`` and the query ``.csv``; returns their paths and the query count."""
    tr = build_dataset("clinc150", data, split="train", progress=False)
    te = build_dataset("clinc150", data, split="test", progress=False)
    g = torch.Generator().manual_seed(1000 * shots + draw)  # as experiments/text.py draws
    perms = [c[torch.randperm(len(c), generator=g)] for c in tr.class_indices()]
    support = work / "support.tsv"
    with open(support, "w", encoding="utf-8") as f:
        f.write("label\ttext\n")
        for p in perms:
            for i in p[:shots].tolist():
                f.write(f"{tr.class_names[int(tr.targets[i])]}\t{tr.texts[i]}\n")
    gq = torch.Generator().manual_seed(seed)
    chosen = []
    for c in te.class_indices():
        order = c[torch.randperm(len(c), generator=gq)]
        chosen += (order if per_intent == 0 else order[:per_intent]).tolist()
    chosen.sort()
    query = work / "query.csv"
    with open(query, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["label", "text"])
        for i in chosen:
            w.writerow([te.class_names[int(te.targets[i])], te.texts[i]])
    return support, query, len(chosen)


def run_predict(checkpoint: str, support: Path, query: Path, out: Path,
                cache: Path) -> tuple[float, float]:
    """``relgraph predict`` in a subprocess; returns (seconds, accuracy %) from its CSV."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RELGRAPH_CACHE": str(cache),
           "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "relgraph.cli", "predict", "--checkpoint", checkpoint,
           "--support", str(support), "--query", str(query), "--out", str(out),
           "--device", "cpu", "--no-progress"]
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - t0
    with open(out, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return seconds, 100 * sum(r["prediction"] == r["label"] for r in rows) / len(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, help="a run trained on CLINC150 features")
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "text" / "clinc150"))
    p.add_argument("--shots", type=int, default=5)
    p.add_argument("--per-intent", type=int, default=2, help="test texts per intent (0: all)")
    p.add_argument("--draw", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(ROOT / "experiments" / "results" / "text_predict.md"))
    args = p.parse_args(argv)
    command = "OMP_NUM_THREADS=1 python experiments/text_predict.py " + shlex.join(
        a for a in (argv if argv is not None else sys.argv[1:]))
    ckpt = torch.load(Path(args.checkpoint) / "checkpoint.pt" if Path(args.checkpoint).is_dir()
                      else args.checkpoint, map_location="cpu", weights_only=False)
    model = (f"{ckpt['config']['method']} on the {ckpt['config']['backbone']} backbone, trained "
             f"on {ckpt['preprocessing'].get('dataset')} ({ckpt['preprocessing'].get('encoder')})")
    results = []
    for per_intent in dict.fromkeys([args.per_intent, 0]):  # the sample, then the whole test set
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            support, query, n = write_files(Path(args.data), work, args.shots, per_intent,
                                            args.draw, args.seed)
            cold, acc = run_predict(args.checkpoint, support, query, work / "p.csv",
                                    work / "cache")
            warm, acc_warm = run_predict(args.checkpoint, support, query, work / "p.csv",
                                         work / "cache")
            assert acc == acc_warm, (acc, acc_warm)
            results.append((n, acc, cold, warm))
            print(f"{n} queries: accuracy {acc:.2f}%, {cold:.1f} s (features cached: "
                  f"{warm:.1f} s)")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    lines = [
        "# `relgraph predict` on texts: CLINC150, 150 intents at once",
        "",
        "Generated by `experiments/text_predict.py`:",
        "",
        f"    {command}",
        "",
        f"Model: {model}; the reported run's checkpoint was trained with",
        "",
        f"    {TRAIN}",
        "",
        f"Support: {args.shots} labelled texts per intent ({150 * args.shots} lines of "
        "`label<TAB>text`) from the "
        f"official train split, draw {args.draw} of `experiments/text.py`'s practitioner "
        "protocol; queries: a CSV `label,text` of official test texts (seeded sample per "
        "intent, and the whole test set). 150-way, all supports in the episode. Time: the whole "
        "`relgraph predict` subprocess on one CPU thread (start-up, loading MiniLM, encoding "
        "support and queries, classifying, writing the CSV); cold = empty feature cache, "
        "warm = the same files again (features read from the cache). The machine was shared "
        f"(load average {load} at the end, {os.cpu_count()} cores), so the seconds are upper "
        "bounds.",
        "",
        "| queries | accuracy % | seconds (cold) | seconds (warm) |",
        "|---|---|---|---|",
        *[f"| {n} | {acc:.2f} | {cold:.1f} | {warm:.1f} |" for n, acc, cold, warm in results],
        "",
        "For a ProtoNet checkpoint with 5 shots and draw 0, the whole test set's row is the "
        "protonet (nearest class mean) 5-shot draw 0 of the practitioner table in "
        "`experiments/results/text.md` (86.84), which scores the cached dataset features in "
        "Python; `relgraph predict` reads and encodes the files itself.",
        "",
    ]
    atomic_write_text(args.out, "\n".join(lines))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
