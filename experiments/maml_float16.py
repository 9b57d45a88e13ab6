"""MAML under float16 autocast with loss scaling, on the CPU: are the gradients finite?

Shows why methods with gradient steps inside their forward pass do not use float16 autocast
(``FewShotMethod.float16_autocast``): the inner loop's gradients are not loss-scaled, and the
outer gradients came out non-finite at every step, so the gradient scaler skipped every update
(on an H200, MAML learnt nothing; ``experiments/results/gpu/reproduce.md``). The trainer's
own step (:func:`relgraph.engine.trainer.train_step`) runs under CPU float16 autocast and a CPU
gradient scaler here; ``--dtype bfloat16`` runs the same steps in bfloat16 (no scaler).

Usage::

    python experiments/maml_float16.py --data ../shared/data --steps 12
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))

from common import data_dir  # noqa: E402

import relgraph.engine.trainer as trainer  # noqa: E402
from relgraph.engine import load_config  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="shared data folder holding omniglot/")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--dtype", choices=("float16", "bfloat16"), default="float16")
    args = parser.parse_args()
    full = data_dir(args.data) / "omniglot" / "full"
    config = load_config(ROOT / "experiments" / "configs" / "omniglot_maml_5shot.yaml")
    config.data.roots = [str(full / "images_background.npz"),
                         str(full / "images_evaluation.npz")]
    config.train.device = "cpu"
    with tempfile.TemporaryDirectory() as out:
        run = trainer.setup(config, out)
        run.use_amp, run.amp_dtype = True, args.dtype
        dtype = getattr(torch, args.dtype)
        # the CPU autocasts float16 only when asked directly (the trainer keeps it to bfloat16)
        trainer.autocast_context = lambda device, amp: (
            torch.autocast("cpu", dtype=dtype) if amp else contextlib.nullcontext())
        state = trainer.build_state(run)
        state.scaler = torch.amp.GradScaler("cpu", enabled=args.dtype == "float16")
        runner = trainer.loss_runner(run, state.model)
        start = [p.detach().clone() for p in state.model.parameters()]
        bad = 0
        for i in range(args.steps):
            loss = trainer.train_step(run, state, runner)
            finite = all(torch.isfinite(p.grad).all() for p in state.model.parameters()
                         if p.grad is not None)
            bad += not finite
            print(f"step {i}: loss {loss:.3f}, scale {state.scaler.get_scale():g}, "
                  f"gradients finite: {finite}")
        moved = sum(not torch.equal(a, b) for a, b in zip(start, state.model.parameters(),
                                                          strict=True))
        print(f"{args.dtype}: {bad} of {args.steps} steps with non-finite gradients; "
              f"{moved} of {len(start)} parameter tensors changed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
