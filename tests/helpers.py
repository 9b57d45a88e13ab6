"""Helpers shared by tests: tiny, learnable image data and configs for fast training runs."""

from __future__ import annotations

import csv
from pathlib import Path

import torch

from relgraph.engine import Config


def make_tiny_data(path: Path, classes: int = 12, per_class: int = 12, size: int = 28) -> Path:
    """Class prototypes plus noise: easy to learn, fast to train on."""
    g = torch.Generator().manual_seed(0)
    protos = torch.rand(classes, 1, size, size, generator=g)
    n = classes * per_class
    x = (protos.repeat(per_class, 1, 1, 1) + 0.3 * torch.randn(n, 1, size, size, generator=g))
    torch.save({"inputs": x.clamp(0, 1), "labels": torch.arange(n) % classes}, path)
    return path



def tiny_config(data: Path, **train: object) -> Config:
    return Config.from_dict({
        "backbone_args": {"image_size": 28, "in_channels": 1, "hidden": 8, "out_channels": 8},
        "data": {"dataset": "tensors", "roots": [str(data)], "val_fraction": 0.25},
        "train": {"ways": 4, "shots": 1, "queries": 2, "steps": 6, "val_every": 2,
                  "val_episodes": 10, "step_size": 3, "device": "cpu", **train},
        "eval": {"ways": 3, "shots": 1, "queries": 2, "episodes": 10},
    })


def metrics(out: Path) -> list[dict[str, str]]:
    """The rows of a run's metrics.csv without the wall-clock column (for exact comparisons)."""
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r.pop("time_s")
    return rows


def trained_a_little(name: str, dataset, seed: int = 0) -> torch.nn.Module:  # noqa: ANN001
    """Method ``name`` on a small Conv4 whose BatchNorm statistics moved away from their start
    (three training-mode passes, no gradient steps), in eval mode."""
    from relgraph.backbones import build_backbone
    from relgraph.data import EpisodeSampler
    from relgraph.methods import build_method

    torch.manual_seed(seed)
    backbone = build_backbone("conv4", in_channels=1, image_size=28, hidden=8, out_channels=8)
    model = build_method(name, backbone, num_classes=dataset.num_classes)
    sampler = EpisodeSampler(dataset, 3, 1, 2, episodes_per_batch=2)
    model.train()
    with torch.no_grad():
        for t in range(3):
            model(sampler.episode_batch(dataset, t))
    return model.eval()
