"""Compare trained runs on the same validation episodes, paired, without touching test data.

Two runs trained on the same data config share their validation split (the held-out
characters of the training alphabets). This script rebuilds that split from the first run's
``config.yaml``, checks that every other run was trained on the same data, evaluates all of
them on the same fixed episodes (seed 12345) and prints each run's accuracy and its mean
per-episode difference to the first run, with 95% confidence intervals. With 1,000 episodes
the paired difference resolves a few tenths of a point, where two separate 200-episode
validation numbers cannot: use it to choose between recipes before the one test evaluation.

Usage (from the project root)::

    python experiments/paired_val.py runs/omniglot_small1/protonet runs/omniglot_small1/gnn
    python experiments/paired_val.py REF RUN [RUN ...] --ways 5 --shots 1 --episodes 1000
"""

from __future__ import annotations

import argparse
from pathlib import Path

from relgraph.engine import confidence_interval, episode_accuracies, load_model
from relgraph.engine.config import load_config
from relgraph.engine.trainer import build_datasets


def data_key(run: Path) -> dict:
    """The part of a run's data config that fixes its validation split."""
    data = load_config(run / "config.yaml").data
    return {k: getattr(data, k) for k in ("dataset", "roots", "image_size", "rotations",
                                          "val_fraction", "val_alphabets", "val_split",
                                          "alphabets", "split")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, nargs="+",
                        help="run folders (checkpoint.pt, config.yaml); the first is the reference")
    parser.add_argument("--ways", type=int, default=5)
    parser.add_argument("--shots", type=int, default=1)
    parser.add_argument("--queries", type=int, default=15)
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=12345)
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1, ...")
    args = parser.parse_args()

    ref_key = data_key(args.runs[0])
    for run in args.runs[1:]:
        if data_key(run) != ref_key:
            raise SystemExit(f"{run} was trained on other data than {args.runs[0]} "
                             f"({data_key(run)} vs {ref_key}): their validation splits differ")
    _, val = build_datasets(load_config(args.runs[0] / "config.yaml").data)
    if val is None:
        raise SystemExit(f"the config of {args.runs[0]} has no validation split")
    ref = None
    for run in args.runs:
        model, _ = load_model(run / "checkpoint.pt", args.device)
        accs = episode_accuracies(model, val, args.ways, args.shots, args.queries, args.episodes,
                                  args.seed, device=args.device).double().cpu()
        line = (f"{run}: {100 * float(accs.mean()):.2f} +- {100 * confidence_interval(accs):.2f}")
        if ref is None:
            ref = accs
        else:
            d = accs - ref
            line += (f"   minus {args.runs[0].name}: {100 * float(d.mean()):+.2f} "
                     f"+- {100 * confidence_interval(d):.2f}")
        print(line, flush=True)


if __name__ == "__main__":
    main()
