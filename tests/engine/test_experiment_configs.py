"""Every committed experiment config loads and builds its model (no data, no training)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from relgraph.engine.config import load_config
from relgraph.engine.trainer import build_model
from relgraph.methods import list_methods

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "experiments" / "configs").glob("*.yaml"))


def test_there_are_configs():
    assert len(CONFIGS) >= 20


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_loads_and_builds(path):
    config = load_config(path)
    assert config.method in list_methods()
    if "pretrained" in config.method_args:  # mtl: needs another run's checkpoint on disk
        return
    torch.manual_seed(0)
    model = build_model(config, {"channels": 1, "image_size": config.data.image_size},
                        num_classes=100)
    assert sum(p.numel() for p in model.parameters()) > 0


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_names_and_options_are_known(path):
    """Method, backbone, dataset and their options exist (checked without the data, which
    may be absent: the miniImageNet configs were written for a machine that has it)."""
    from relgraph.engine.trainer import check_arguments

    check_arguments(load_config(path))


def test_miniimagenet_configs_are_resnet12_at_84px():
    mini = [p for p in CONFIGS if p.stem.startswith("miniimagenet_")]
    assert {load_config(p).method for p in mini} == {"protonet", "relation", "gnn", "edge_gnn",
                                                     "tpn"}
    for p in mini:
        config = load_config(p)
        assert (config.backbone, config.data.image_size, config.data.dataset) == (
            "resnet12", 84, "miniimagenet")
