"""Helpers shared by the experiment scripts (run as ``python experiments/<script>.py``)."""

from __future__ import annotations

import csv
from pathlib import Path


def run_time(out: Path) -> tuple[float | None, int | None]:
    """Training seconds and steps of the run in ``out``: the last row of its metrics.csv."""
    path = out / "metrics.csv"
    if not path.is_file():
        return None, None
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return (float(rows[-1]["time_s"]), int(rows[-1]["step"])) if rows else (None, None)
