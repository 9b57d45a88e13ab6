"""Choose the test-time inner loop of a trained MAML / first-order MAML / Reptile run on
validation episodes only.

Loads ``RUN/checkpoint.pt``, rebuilds the run's validation split from ``RUN/config.yaml``
(held-out characters of the training alphabets, never the test alphabets) and evaluates every
combination of ``eval_inner_steps`` and ``eval_inner_lr`` at 5-way 1-shot and 5-way 5-shot on
the same fixed episodes (seed 12345, 15 queries). Prints one line per combination; put the
chosen values into the config's ``method_args``.

Usage (from the project root)::

    python experiments/meta_eval_sweep.py runs/omniglot_small1/maml
    python experiments/meta_eval_sweep.py runs/omniglot_small1/fomaml --steps 5 10 --lrs 0.4 0.1

The values in ``experiments/configs/omniglot_small1_{maml,fomaml}.yaml`` were chosen with
the default grid and 150 episodes, on the runs trained with the earlier test-time settings.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from relgraph.engine import evaluate, load_model
from relgraph.engine.config import load_config
from relgraph.engine.trainer import build_datasets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="run folder with checkpoint.pt and config.yaml")
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 3, 5, 10])
    parser.add_argument("--lrs", type=float, nargs="+", default=[0.4, 0.1])
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--episodes", type=int, default=150)
    args = parser.parse_args()

    model, _ = load_model(args.run / "checkpoint.pt")
    if not hasattr(model, "eval_inner_lr"):
        raise SystemExit(f"{args.run} holds a {type(model).__name__}, not a gradient "
                         "meta-learner (maml, fomaml, reptile)")
    _, val = build_datasets(load_config(args.run / "config.yaml").data)
    if val is None:
        raise SystemExit(f"the config of {args.run} has no validation split")
    model.eval()
    for shots in args.shots:
        for steps in args.steps:
            for lr in args.lrs:
                model.eval_inner_steps, model.eval_inner_lr = steps, lr
                r = evaluate(model, val, 5, shots, 15, args.episodes, seed=12345)
                print(f"5w{shots}s eval_inner_steps={steps:<3d} eval_inner_lr={lr:<6g} "
                      f"{r['accuracy']:.2f} +- {r['ci95']:.2f}", flush=True)


if __name__ == "__main__":
    main()
