"""Checkpoints: written atomically, read safely (``torch.load(weights_only=True)``).

A checkpoint is a dict of tensors and plain Python values::

    {"format": "relgraph-checkpoint", "version": 1,
     "config": Config.to_dict(), "preprocessing": {...},   # everything needed to use it
     "num_classes": int,   # training classes (for methods with a classifier over them)
     "model": state_dict, "step": int, "best": {...}, "history": [...],
     # for resuming only (in last.pt):
     "optimizer": ..., "scheduler": ..., "rng": {...}, "scaler": ...}
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from relgraph.utils import atomic_path, write_error

__all__ = ["save_checkpoint", "load_checkpoint", "CHECKPOINT_FORMAT"]

CHECKPOINT_FORMAT = "relgraph-checkpoint"
CHECKPOINT_VERSION = 1


def save_checkpoint(path: str | os.PathLike[str], payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``path`` atomically: a crash (even ``kill -9``) mid-write leaves
    the previous file intact.

    Raises:
        relgraph.utils.WriteFailed: the write failed (a full disk, ...); the previous file at
            ``path`` is intact and no temporary file is left.
    """
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **payload}
    with atomic_path(path) as tmp:
        try:
            torch.save(payload, tmp)
        except RuntimeError as exc:  # torch's zip writer reports failed writes so
            raise write_error(Path(path), exc) from exc
    return Path(path)


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
                    ) -> dict[str, Any]:
    """Read a relgraph checkpoint safely (no arbitrary code runs: ``weights_only=True``).

    ``path`` is a checkpoint file or a run folder (its ``checkpoint.pt``).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a relgraph checkpoint, or is damaged.
    """
    path = Path(path)
    if path.is_dir():
        if not (path / "checkpoint.pt").is_file():
            raise FileNotFoundError(f"{path} is a folder without a checkpoint.pt; pass a run "
                                    "folder written by 'relgraph train --out DIR' or its "
                                    "checkpoint.pt")
        path = path / "checkpoint.pt"
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found; pass the checkpoint.pt written "
                                "by 'relgraph train --out DIR'")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"unsupported GLOBAL (\S+)", str(exc), re.IGNORECASE)
        if found:  # a refused pickle; torch's advice (turn weights_only off) is left out
            raise ValueError(f"{path} was refused: it asks to import {found.group(1)}, and "
                             "loading it could run arbitrary code (a relgraph checkpoint holds "
                             "only tensors and plain values)") from exc
        raise ValueError(f"{path} is not a readable relgraph checkpoint (it could not be "
                         "unpickled); it may be damaged or come from another program") from exc
    except Exception as exc:  # torch raises many types for damaged or foreign files
        raise ValueError(f"{path} is not a readable relgraph checkpoint ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''}); it may be damaged "
                         "or come from another program") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a relgraph checkpoint (no 'format: "
                         f"{CHECKPOINT_FORMAT}' entry)")
    if int(payload.get("version", 0)) > CHECKPOINT_VERSION:
        raise ValueError(f"{path} was written by a newer relgraph (checkpoint version "
                         f"{payload['version']}); upgrade relgraph to read it")
    return payload
