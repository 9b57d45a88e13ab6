"""How much float32 rounding moves each method's gradients, on the CPU alone.

Adds 1e-6 Gaussian noise to the images of the CUDA tests' tiny episode and prints, per method,
the largest relative change of a parameter's gradient, ``|g' - g| / |g|``. This is the
measured basis of the per-tensor gradient tolerance in ``tests/methods/test_cuda.py``.

Usage (from the project root): ``python experiments/grad_sensitivity.py``
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import torch

sys.path[:0] = [str(Path(__file__).resolve().parents[1] / "tests"),
                str(Path(__file__).resolve().parents[1] / "tests" / "methods")]
from test_contract import make_episode, make_method  # noqa: E402

from relgraph.methods import list_methods  # noqa: E402


def main() -> int:
    for name in list_methods():
        a = make_method(name)
        b = copy.deepcopy(a)
        ep, noisy = make_episode(), make_episode()
        g = torch.Generator().manual_seed(1)
        noisy.support.add_(1e-6 * torch.randn(noisy.support.shape, generator=g))
        noisy.query.add_(1e-6 * torch.randn(noisy.query.shape, generator=g))
        a.loss(ep)[0].backward()
        b.loss(noisy)[0].backward()
        worst = max((((pa.grad - pb.grad).norm() / pa.grad.norm().clamp_min(1e-12)).item(), n)
                    for (n, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters(),
                                                strict=True)
                    if pa.grad is not None and pa.grad.norm() > 1e-6)
        print(f"{name:24s} {100 * worst[0]:7.3f} %  {worst[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
