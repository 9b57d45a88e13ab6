"""Evaluation protocol, confidence intervals, checkpoints and configs."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import tiny_config

from relgraph.backbones import build_backbone
from relgraph.data import TensorDataset
from relgraph.engine import (
    Config,
    confidence_interval,
    episode_accuracies,
    evaluate,
    load_checkpoint,
    load_config,
    load_model,
    save_checkpoint,
)
from relgraph.methods import build_method


def test_confidence_interval_matches_formula():
    accs = torch.tensor([0.5, 0.7, 0.9, 1.0])
    std = math.sqrt(sum((a - 0.775) ** 2 for a in accs.tolist()) / 4)
    assert confidence_interval(accs) == pytest.approx(1.96 * std / 2)
    assert confidence_interval(torch.tensor([1.0])) == 0.0


def feature_model_and_data():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(10, 1, 16, 16, generator=g) * 3
    x = centers.repeat(20, 1, 1, 1) + torch.randn(200, 1, 16, 16, generator=g)
    ds = TensorDataset(x, torch.arange(200) % 10)
    backbone = build_backbone("conv4", in_channels=1, image_size=16, hidden=4, out_channels=4,
                              pool_last=False, flatten=False)
    return build_method("protonet", backbone), ds


def test_evaluation_is_fixed_and_reports_the_protocol():
    model, ds = feature_model_and_data()
    a = evaluate(model, ds, ways=5, shots=1, queries=3, episodes=30, seed=4, episodes_per_batch=7)
    b = evaluate(model, ds, ways=5, shots=1, queries=3, episodes=30, seed=4, episodes_per_batch=30)
    assert a == b  # the batch size is a speed knob only
    assert a["episodes"] == 30 and a["ways"] == 5 and a["shots"] == 1 and a["queries"] == 3
    assert a["transductive"] is False and a["seed"] == 4
    accs = episode_accuracies(model, ds, 5, 1, 3, 30, seed=4)
    assert a["accuracy"] == pytest.approx(100 * float(accs.mean()))
    assert a["ci95"] == pytest.approx(100 * confidence_interval(accs))
    c = evaluate(model, ds, ways=5, shots=1, queries=3, episodes=30, seed=5)
    assert c["accuracy"] != a["accuracy"] or c["ci95"] != a["ci95"]
    assert model.training  # mode restored


def test_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "garbage.pt").write_bytes(b"definitely not a checkpoint")
    with pytest.raises(ValueError, match="not a readable relgraph checkpoint"):
        load_checkpoint(tmp_path / "garbage.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="not a relgraph checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    save_checkpoint(tmp_path / "future.pt", {"version": 99})
    with pytest.raises(ValueError, match="newer relgraph"):
        load_checkpoint(tmp_path / "future.pt")
    save_checkpoint(tmp_path / "bad_model.pt", {"config": Config().to_dict(),
                                                "preprocessing": {"channels": 1,
                                                                  "image_size": 28},
                                                "model": {"nope": torch.zeros(1)}})
    with pytest.raises(ValueError, match="does not match"):
        load_model(tmp_path / "bad_model.pt")


def test_checkpoint_round_trip(tmp_path, tiny_data):
    from relgraph.engine import build_model

    config = tiny_config(tiny_data)
    model = build_model(config, {"channels": 1, "image_size": 28})
    save_checkpoint(tmp_path / "c.pt", {"config": config.to_dict(),
                                        "preprocessing": {"channels": 1, "image_size": 28},
                                        "model": model.state_dict()})
    loaded, ckpt = load_model(tmp_path / "c.pt")
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k])
    assert ckpt["config"] == config.to_dict()


def test_config_files_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("method: protonet\ntrain: {ways: 30, lr: 0.01}\ndata: {dataset: glyphs}\n")
    c = load_config(path, {"train.ways": 10, "train.shots": None, "method_args.distance": "cosine"})
    assert c.train.ways == 10 and c.train.lr == 0.01 and c.train.shots == 1
    assert c.method_args == {"distance": "cosine"}
    path.write_text("train: {wayz: 3}\n")
    with pytest.raises(ValueError, match=r"unknown config key\(s\) \['wayz'\] in section 'train'"):
        load_config(path)
    with pytest.raises(ValueError, match="unknown config key 'train.nope'"):
        load_config(None, {"train.nope": 1})
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "missing.yaml")
    path.write_text("train: [1, 2\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_config(path)
