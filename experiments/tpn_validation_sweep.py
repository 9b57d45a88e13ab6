"""Choose TPN's evaluation-time k and alpha on VALIDATION episodes (never the test alphabets).

Loads the small1 TPN and ProtoNet runs, evaluates TPN on 500 validation episodes of the small1
validation classes (5-way 1-shot, 15 queries) for each (k, alpha), paired against ProtoNet on
the same episodes. Usage (from the project root)::

    python experiments/tpn_validation_sweep.py [--runs runs/omniglot_small1]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

GRID = [(20, 0.99), (20, 0.9), (20, 0.7), (20, 0.5), (20, 0.3), (5, 0.5), (10, 0.5),
        (40, 0.5), (10, 0.7)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="runs/omniglot_small1")
    parser.add_argument("--episodes", type=int, default=500)
    args = parser.parse_args()
    from relgraph.engine import confidence_interval, episode_accuracies, load_model
    from relgraph.engine.config import Config
    from relgraph.engine.trainer import VAL_SEED, build_datasets

    model, ckpt = load_model(Path(args.runs) / "tpn" / "checkpoint.pt")
    protonet, _ = load_model(Path(args.runs) / "protonet" / "checkpoint.pt")
    _, val = build_datasets(Config.from_dict(ckpt["config"]).data)
    base = episode_accuracies(protonet, val, 5, 1, 15, args.episodes, seed=VAL_SEED)
    print(f"protonet {100 * float(base.mean()):.2f}")
    for k, alpha in GRID:
        model.k, model.alpha = k, alpha
        acc = episode_accuracies(model, val, 5, 1, 15, args.episodes, seed=VAL_SEED)
        d = acc - base
        print(f"k {k} alpha {alpha}: {100 * float(acc.mean()):.2f}, paired "
              f"{100 * float(d.mean()):+.2f} +- {100 * confidence_interval(d):.2f}", flush=True)
    return 0


if __name__ == "__main__":
    torch.set_num_threads(1)
    sys.exit(main())
