"""gnn against gnn_semi on VALIDATION episodes (the small1 validation classes, never the test set).

Both small1 runs (``runs/omniglot_small1/{gnn,gnn_semi}``) on 500 validation episodes, 5-way
1-shot, 5 queries, with U = 0, 5 unlabelled examples per class and D = 0, 3 distractor classes,
paired against gnn on the same episodes. This is what decided that gnn_semi was worth one test
evaluation (``experiments/semi_supervised.py gnn_semi``). It prints its results;
``experiments/results/semi_validation.txt`` is that output. Usage (from the project root)::

    python experiments/semi_validation.py > experiments/results/semi_validation.txt
"""

from __future__ import annotations

import sys

import torch


def main() -> int:
    from relgraph.engine import confidence_interval, episode_accuracies, load_model
    from relgraph.engine.config import Config
    from relgraph.engine.trainer import VAL_SEED, build_datasets

    gnn, ckpt = load_model("runs/omniglot_small1/gnn/checkpoint.pt")
    semi, _ = load_model("runs/omniglot_small1/gnn_semi/checkpoint.pt")
    _, val = build_datasets(Config.from_dict(ckpt["config"]).data)
    for u, d in ((0, 0), (5, 0), (5, 3)):
        base = None
        for name, model in (("gnn", gnn), ("gnn_semi", semi)):
            acc = episode_accuracies(model, val, 5, 1, 5, 500, seed=VAL_SEED, unlabelled=u,
                                     distractors=d)
            base = acc if base is None else base
            diff = acc - base
            print(f"val U={u} D={d} {name}: {100 * float(acc.mean()):.2f}  paired vs gnn "
                  f"{100 * float(diff.mean()):+.2f} +- {100 * confidence_interval(diff):.2f}",
                  flush=True)
    return 0


if __name__ == "__main__":
    torch.set_num_threads(1)
    sys.exit(main())
