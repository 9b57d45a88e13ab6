"""Choose soft k-means ProtoNet's distractor radius on VALIDATION episodes (never the test set).

The small1 ProtoNet run was trained without unlabelled nodes, so the distractor cluster of
``unlabelled="soft_kmeans_distractor"`` (Ren et al. 2018) never learned its radius; at its
initial ``log r = 0`` it takes no example (its logit ``-|h|^2 - log r`` is far below every
class's) and the variant equals plain soft k-means. This sweep evaluates the run on episodes
of the small1 validation classes, 5-way, 5 queries, ``U = 5`` unlabelled examples per class
with ``D = 0`` and ``D = 3`` distractor classes, 1 and 5 shots, for each ``log r`` of a grid,
paired against the same episodes without unlabelled examples. The criterion, fixed before
the sweep: the mean of the 1-shot and 5-shot accuracies at ``U = 5, D = 3``.

Usage (from the project root; it prints its results, and
``experiments/results/distractor_radius_sweep.txt`` is that output)::

    python experiments/distractor_radius_sweep.py > experiments/results/distractor_radius_sweep.txt

(``--runs DIR``: the small1 runs' folder, default ``runs/omniglot_small1``.)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

GRID = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 15.0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="runs/omniglot_small1")
    parser.add_argument("--episodes", type=int, default=500)
    args = parser.parse_args()
    from semi_supervised import load

    from relgraph.checkpoint import load_checkpoint
    from relgraph.engine import confidence_interval, episode_accuracies
    from relgraph.engine.config import Config
    from relgraph.engine.trainer import VAL_SEED, build_datasets

    run = Path(args.runs) / "protonet"
    ckpt = load_checkpoint(run / "checkpoint.pt")
    _, val = build_datasets(Config.from_dict(ckpt["config"]).data)
    model = load(run, {"unlabelled": "soft_kmeans_distractor"})
    scores = {}
    for shots in (1, 5):
        base = episode_accuracies(model, val, 5, shots, 5, args.episodes, seed=VAL_SEED)
        print(f"{shots}-shot U=0: {100 * float(base.mean()):.2f}", flush=True)
        for log_r in GRID:
            with torch.no_grad():
                model.distractor_log_r.fill_(log_r)
            for d in (0, 3):
                acc = episode_accuracies(model, val, 5, shots, 5, args.episodes, seed=VAL_SEED,
                                         unlabelled=5, distractors=d)
                diff = acc - base
                scores.setdefault(log_r, {})[(shots, d)] = 100 * float(acc.mean())
                print(f"{shots}-shot log r {log_r:5.1f} U=5 D={d}: {100 * float(acc.mean()):.2f}"
                      f" (paired {100 * float(diff.mean()):+.2f} +- "
                      f"{100 * confidence_interval(diff):.2f})", flush=True)
    best = max(GRID, key=lambda r: (scores[r][(1, 3)] + scores[r][(5, 3)]) / 2)
    print(f"chosen log r = {best} (mean of 1- and 5-shot accuracy at U=5 D=3: "
          f"{(scores[best][(1, 3)] + scores[best][(5, 3)]) / 2:.2f})")
    return 0


if __name__ == "__main__":
    torch.set_num_threads(1)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
