"""Checkpoints of training runs (see :mod:`relgraph.checkpoint`, re-exported here)."""

from relgraph.checkpoint import load_checkpoint, save_checkpoint

__all__ = ["load_checkpoint", "save_checkpoint"]
