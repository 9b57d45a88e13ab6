"""Settings that used to pass silently and cost a run, or its meaning: each now fails early
with a message naming the key (or behaves as documented)."""

from __future__ import annotations

import warnings

import pytest
import torch
from helpers import make_tiny_data, tiny_config

from relgraph.engine import load_checkpoint, load_config, train
from relgraph.engine.config import Config
from relgraph.engine.trainer import build_datasets, setup


def test_val_split_without_a_training_split_is_refused():
    """Without data.split the dataset's training set would be all its classes, the
    validation and test classes included."""
    config = Config.from_dict({"data": {"dataset": "glyphs", "val_split": "val"}})
    with pytest.raises(ValueError, match=r"data.val_split is 'val' but data.split is not set"):
        build_datasets(config.data)


def test_training_and_validation_classes_must_not_overlap(tmp_path, monkeypatch):
    monkeypatch.setenv("RELGRAPH_CACHE", str(tmp_path))
    options = {"examples_per_class": 2, "max_classes": 60}
    config = Config.from_dict({"data": {"dataset": "glyphs", "split": "val",
                                        "val_split": "val", "options": options}})
    with pytest.raises(ValueError, match="validation class.*are also training classes"):
        build_datasets(config.data)
    config.data.split = "train"
    train_ds, val_ds = build_datasets(config.data)
    assert not set(train_ds.class_names) & set(val_ds.class_names)
    # data.alphabets filters the training split only, never the validation split
    config.data.alphabets = [train_ds.alphabets[0]]
    only, val_again = build_datasets(config.data)
    assert only.alphabets == [train_ds.alphabets[0]]
    assert val_again.class_names == val_ds.class_names


@pytest.mark.parametrize("key, value", [("rotations", True), ("image_size", 16),
                                        ("split", "train")])
def test_data_keys_given_as_dataset_options_are_refused(tmp_path, key, value):
    config = tiny_config(make_tiny_data(tmp_path / "tiny.pt"))
    config.data.options = {key: value}
    with pytest.raises(ValueError, match=rf"data.options.{key}:.*set data.{key} instead"):
        setup(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_validation_skips_too_small_classes_as_training_does(tmp_path):
    """data.too_small=skip reaches the validation episodes too: the run used to pass setup,
    train its first interval and then stop at the validation, losing the interval."""
    labels = torch.arange(16).repeat_interleave(8)
    labels = labels[(labels % 4 != 0) | (torch.arange(len(labels)) % 8 < 3)]  # 4 classes of 3
    g = torch.Generator().manual_seed(0)
    x = torch.rand(16, 1, 28, 28, generator=g)[labels] + 0.2 * torch.rand(len(labels), 1, 28, 28,
                                                                            generator=g)
    torch.save({"inputs": x.clamp(0, 1), "labels": labels}, tmp_path / "uneven.pt")
    config = tiny_config(tmp_path / "uneven.pt", val_every=2, steps=2)
    config.data.val_fraction = 0.5
    config.data.too_small = "skip"
    config.eval.queries = 4  # 1 shot + 4 queries: the 3-image classes cannot take part
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the skipped classes are announced by a warning
        result = train(config, tmp_path / "run", progress=False)
    assert result["finished"] and result["history"][-1]["val_acc"] is not None


def test_an_early_stopped_run_stays_stopped_when_its_command_runs_again(tmp_path):
    config = tiny_config(make_tiny_data(tmp_path / "tiny.pt"), steps=40, val_every=2,
                         patience=1, lr=1.0, scheduler="none")
    first = train(config, tmp_path / "run", progress=False)
    assert first["stopped_early"] and first["step"] < 40
    again = train(config, tmp_path / "run", progress=False)
    assert again["stopped_early"] and again["finished"]
    assert again["step"] == first["step"] and again["history"] == first["history"]


def test_dropout_follows_train_seed_whatever_the_global_generator_did(tmp_path):
    features = torch.randn(60, 6) + torch.arange(12).repeat(5)[:, None]
    torch.save({"inputs": features, "labels": torch.arange(12).repeat(5)}, tmp_path / "f.pt")
    config = load_config(None, {
        "data.dataset": "tensors", "data.roots": [str(tmp_path / "f.pt")],
        "data.image_size": None, "data.val_fraction": 0, "backbone": "features",
        "method": "edge_gnn", "method_args.dropout": 0.5, "train.ways": 4, "train.shots": 1,
        "train.queries": 2, "train.steps": 3, "train.val_every": 3, "train.device": "cpu"})
    weights = []
    for run in ("a", "b"):
        torch.rand(int(run == "b"))  # something else used the global generator in between
        train(config, tmp_path / run, progress=False)
        weights.append(load_checkpoint(tmp_path / run / "checkpoint.pt")["model"])
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


@pytest.mark.parametrize("augment, message", [
    ({"rotate": -10}, r"data.augment rotate must be a number in \[0, 180\)"),
    ({"scale": 1.0}, r"data.augment scale must be a number in \[0, 1\)"),
])
def test_bad_augment_values_are_refused(tmp_path, augment, message):
    config = tiny_config(make_tiny_data(tmp_path / "tiny.pt"))
    config.data.augment = augment
    with pytest.raises(ValueError, match=message):
        setup(config, tmp_path / "run")


def test_augment_on_features_is_refused_before_anything_is_written(tmp_path):
    torch.save({"inputs": torch.randn(48, 6), "labels": torch.arange(12).repeat(4)},
               tmp_path / "f.pt")
    config = load_config(None, {
        "data.dataset": "tensors", "data.roots": [str(tmp_path / "f.pt")],
        "data.image_size": None, "backbone": "features", "backbone_args.project": 4,
        "data.augment": {"rotate": 10}, "train.ways": 3, "train.shots": 1, "train.queries": 1,
        "eval.ways": 2, "eval.queries": 1, "train.device": "cpu"})
    with pytest.raises(ValueError, match="data.augment warps images.*not images"):
        train(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_gamma_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="train.gamma"):
        tiny_config(make_tiny_data(tmp_path / "tiny.pt"), gamma=-1.0)


def test_a_key_given_twice_in_a_config_file_is_refused(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text("train:\n  lr: 0.01\n  steps: 500\nmethod: protonet\ntrain:\n  ways: 10\n")
    with pytest.raises(ValueError, match=r"the key 'train' is given twice \(line 5\)"):
        load_config(path)


def test_an_empty_config_file_is_refused(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("# only a comment\n")
    with pytest.raises(ValueError, match="is empty"):
        load_config(path)


def test_a_bad_val_split_names_the_key(tmp_path, monkeypatch):
    monkeypatch.setenv("RELGRAPH_CACHE", str(tmp_path))
    config = Config.from_dict({"data": {"dataset": "glyphs", "split": "train",
                                        "val_split": "vall",
                                        "options": {"examples_per_class": 2, "max_classes": 30}}})
    with pytest.raises(ValueError, match="data.val_split='vall': split must be"):
        build_datasets(config.data)
