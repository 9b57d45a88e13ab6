"""Choose TPN's evaluation-time k and alpha on VALIDATION episodes (never the test alphabets).

Loads the small1 TPN and ProtoNet runs, evaluates TPN on 500 validation episodes of the small1
validation classes (5-way 1-shot, 15 queries) for each (k, alpha), paired against ProtoNet on
the same episodes. With ``--random-queries`` every setting is also scored on the same episodes
with random query counts per class (1 to 15, seeded: the unbalanced query sets of the tables'
"random queries" column), and the setting with the best worse-of-the-two paired difference is
named. Usage (from the project root)::

    python experiments/tpn_validation_sweep.py [--runs runs/omniglot_small1] [--random-queries]
        [--out experiments/results/tpn_random_sweep.txt]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

GRID = [(20, 0.99), (20, 0.9), (20, 0.7), (20, 0.5), (20, 0.3), (5, 0.5), (10, 0.5),
        (40, 0.5), (10, 0.7)]
#: The wider grid of ``--random-queries``: fewer neighbours keep a class with few queries
#: from borrowing its neighbours from other classes.
RANDOM_GRID = [(k, a) for k in (3, 5, 7, 10, 20) for a in (0.3, 0.5, 0.7, 0.9)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="runs/omniglot_small1")
    parser.add_argument("--episodes", type=int, default=500)
    parser.add_argument("--random-queries", action="store_true",
                        help="score every setting on balanced and on random query counts")
    parser.add_argument("--out", help="also write the lines to this file (atomically)")
    args = parser.parse_args()
    from relgraph.engine import confidence_interval, episode_accuracies, load_model
    from relgraph.engine.config import Config
    from relgraph.engine.trainer import VAL_SEED, build_datasets
    from relgraph.utils import atomic_write_text

    lines: list[str] = []

    def say(line: str) -> None:
        lines.append(line)
        print(line, flush=True)

    say("python experiments/tpn_validation_sweep.py " + " ".join(sys.argv[1:]))
    model, ckpt = load_model(Path(args.runs) / "tpn" / "checkpoint.pt")
    protonet, _ = load_model(Path(args.runs) / "protonet" / "checkpoint.pt")
    _, val = build_datasets(Config.from_dict(ckpt["config"]).data)
    modes = (False, True) if args.random_queries else (False,)
    base = {r: episode_accuracies(protonet, val, 5, 1, 15, args.episodes, seed=VAL_SEED,
                                  random_queries=r) for r in modes}
    say(f"validation classes {val.num_classes}, {args.episodes} episodes (5-way 1-shot, 15 "
        f"queries{'; balanced / random query counts' if args.random_queries else ''})")
    say("protonet " + " / ".join(f"{100 * float(b.mean()):.2f}" for b in base.values()))
    best = None
    for k, alpha in (RANDOM_GRID if args.random_queries else GRID):
        model.k, model.alpha = k, alpha
        parts, worst = [], None
        for r in modes:
            acc = episode_accuracies(model, val, 5, 1, 15, args.episodes, seed=VAL_SEED,
                                     random_queries=r)
            d = acc - base[r]
            parts.append(f"{'random' if r else 'balanced'} {100 * float(acc.mean()):.2f}, paired "
                         f"{100 * float(d.mean()):+.2f} +- {100 * confidence_interval(d):.2f}")
            worst = float(d.mean()) if worst is None else min(worst, float(d.mean()))
        say(f"k {k} alpha {alpha}: " + "; ".join(parts))
        if best is None or worst > best[0]:
            best = (worst, k, alpha)
    if args.random_queries and best is not None:
        say(f"best worse-of-the-two paired difference: k {best[1]} alpha {best[2]} "
            f"({100 * best[0]:+.2f})")
    if args.out:
        atomic_write_text(Path(args.out), "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    torch.set_num_threads(1)
    sys.exit(main())
