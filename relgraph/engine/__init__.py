"""The engine: one training loop, evaluation, checkpoints, configuration, distributed."""

from relgraph.engine.checkpoint import load_checkpoint, save_checkpoint
from relgraph.engine.config import Config, DataConfig, EvalConfig, TrainConfig, load_config
from relgraph.engine.distributed import DistInfo, init_distributed, resolve_device
from relgraph.engine.ensemble import Ensemble, load_ensemble
from relgraph.engine.evaluate import choose_tta, confidence_interval, episode_accuracies, evaluate
from relgraph.engine.trainer import build_datasets, build_model, init_backbone, load_model, train

__all__ = [
    "Config",
    "DataConfig",
    "DistInfo",
    "Ensemble",
    "EvalConfig",
    "TrainConfig",
    "build_datasets",
    "build_model",
    "choose_tta",
    "confidence_interval",
    "episode_accuracies",
    "evaluate",
    "init_backbone",
    "init_distributed",
    "load_checkpoint",
    "load_config",
    "load_ensemble",
    "load_model",
    "resolve_device",
    "save_checkpoint",
    "train",
]
