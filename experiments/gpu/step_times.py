"""Training step times of the same runs trained in two ways (e.g. two reproduce.py calls:
GPU time-shared, then under CUDA MPS), read from their ``metrics.csv``.

Each run's time per step is taken over its second validation interval (its first includes
the start: CUDA set-up, the first kernels), validation of that interval included; the
validation episodes per step are shown beside it, so that loads can be compared.

Usage (each call's runs unpacked into its own folder: ``runs-N.tar.gz`` up to call 7,
``cat runs.tar.gz.* | tar xz`` after)::

    python experiments/gpu/step_times.py CALL1_RUNS CALL2_RUNS
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import step_times  # noqa: E402


def interval_ms(run: Path) -> tuple[float, float]:
    """(ms per step over the second validation interval, validation episodes per step)."""
    times = step_times(run)
    if len(times) < 2:
        raise SystemExit(f"{run}: fewer than two validations in metrics.csv")
    (s1, t1), (s2, t2) = times[:2]
    train = yaml.safe_load((run / "config.yaml").read_text())["train"]
    return 1000 * (t2 - t1) / (s2 - s1), train["val_episodes"] / train["val_every"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", type=Path, help="run folders of the first way (e.g. time-shared)")
    parser.add_argument("second", type=Path, help="the same runs trained the second way")
    args = parser.parse_args()
    print("| run | first: ms per step (validation episodes per step) | second: ms per step "
          "(validation episodes per step) | ratio |")
    print("|---|---:|---:|---:|")
    for run in sorted(p for p in args.first.iterdir() if (p / "metrics.csv").is_file()):
        other = args.second / run.name
        if not (other / "metrics.csv").is_file():
            continue
        (a, va), (b, vb) = interval_ms(run), interval_ms(other)
        print(f"| {run.name} | {a:.1f} ({va:.2f}) | {b:.1f} ({vb:.2f}) | {a / b:.1f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
