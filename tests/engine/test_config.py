"""Typed, validated configs: wrong types, numeric strings, choices and ranges."""

from __future__ import annotations

import pytest
import yaml

from relgraph.engine import Config, load_config


def test_yaml_exponent_floats_become_numbers(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train: {lr: 1e-3, weight_decay: 5e-4}\ndata: {augment: {scale: 1e-1}}\n")
    assert yaml.safe_load(path.read_text())["train"]["lr"] == "1e-3"  # YAML 1.1 reads a string
    c = load_config(path)
    assert c.train.lr == 0.001 and isinstance(c.train.lr, float)
    assert c.train.weight_decay == 0.0005 and c.data.augment == {"scale": 0.1}


def test_integers_stay_integers_in_float_fields():
    c = Config.from_dict({"train": {"lr": 1, "gamma": 1}})
    assert c.train.lr == 1 and type(c.train.lr) is int  # the same config.yaml as before


@pytest.mark.parametrize(("data", "message"), [
    ({"train": {"lr": "abc"}}, "train.lr: expected a number, got 'abc' (str)"),
    ({"train": {"lr": True}}, "train.lr: expected a number, got True (bool)"),
    ({"train": {"steps": "abc"}}, "train.steps: expected an integer, got 'abc' (str)"),
    ({"train": {"steps": 10.0}}, "train.steps: expected an integer, got 10.0 (float)"),
    ({"train": {"ways": True}}, "train.ways: expected an integer, got True (bool)"),
    ({"data": {"rotations": 3}}, "data.rotations: expected true or false, got 3 (int)"),
    ({"train": {"amp": "yes"}}, "train.amp: expected true or false, got 'yes' (str)"),
    ({"method": 3}, "method: expected a string, got 3 (int)"),
    ({"data": {"split": 1}}, "data.split: expected a string or null, got 1 (int)"),
    ({"data": {"roots": "a.zip"}}, "data.roots: expected a list of strings, got 'a.zip' (str)"),
    ({"data": {"alphabets": ["Latin", 2]}}, "data.alphabets[1]: expected a string, got 2 (int)"),
    ({"data": {"augment": {"rotate": "x"}}}, "data.augment.rotate: expected a number"),
    ({"method_args": [1]}, "method_args: expected a mapping"),
    ({"train": {"init_from": 5}}, "train.init_from: expected a string or null, got 5 (int)"),
])
def test_wrong_types_name_the_key(data, message):
    with pytest.raises(ValueError) as info:
        Config.from_dict(data)
    assert message in str(info.value)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("train.optimizer", "lbfgs", "train.optimizer: expected one of 'adam', 'adamw', 'sgd', "
                                 "got 'lbfgs'"),
    ("train.scheduler", "exp", "train.scheduler: expected one of 'none', 'step', 'cosine'"),
    ("train.steps", 0, "train.steps: expected a value >= 1, got 0"),
    ("train.val_every", 0, "train.val_every: expected a value >= 1"),
    ("train.ways", 0, "train.ways: expected a value >= 1"),
    ("train.shots", 0, "train.shots: expected a value >= 1"),
    ("train.queries", 0, "train.queries: expected a value >= 1"),
    ("train.episodes_per_batch", 0, "train.episodes_per_batch: expected a value >= 1"),
    ("eval.queries", 0, "eval.queries: expected a value >= 1"),
    ("train.lr", 0, "train.lr: expected a value > 0, got 0"),
    ("train.lr", "-1e-3", "train.lr: expected a value > 0, got -0.001"),
    ("data.val_fraction", 1, "data.val_fraction: expected a value >= 0 and < 1, got 1"),
    ("data.val_fraction", -0.1, "data.val_fraction: expected a value >= 0 and < 1"),
    ("eval.tta", 0, "eval.tta: expected a value >= 1 and < 10, got 0"),
    ("eval.tta", 10, "eval.tta: expected a value >= 1 and < 10, got 10"),
])
def test_choices_and_ranges(key, value, message):
    with pytest.raises(ValueError) as info:
        Config().override({key: value})
    assert message in str(info.value)


def test_valid_edges_pass():
    c = Config.from_dict({"train": {"steps": 1, "scheduler": "none", "optimizer": "sgd"},
                          "data": {"val_fraction": 0, "image_size": None}})
    assert (c.train.steps, c.data.val_fraction, c.data.image_size) == (1, 0, None)


def test_overrides_from_the_command_line_are_checked(tmp_path, capsys):
    from relgraph.cli import main

    assert Config().override({"train.lr": yaml.safe_load("1e-3")}).train.lr == 0.001
    code = main(["train", "--set", "train.steps=abc", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "train.steps: expected an integer, got 'abc' (str)" in err
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match=r"'trian' is not a section; sections here: .*train"):
        Config().override({"trian.steps": 5})


def test_config_file_errors_name_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train: {rotations: 3}\n")
    with pytest.raises(ValueError, match="unknown config key"):
        load_config(path)
    path.write_text("data: {rotations: 3}\n")
    with pytest.raises(ValueError, match=r"c\.yaml: data\.rotations: expected true or false"):
        load_config(path)


def test_round_trip_is_unchanged():
    c = Config.from_dict({"train": {"lr": "5e-4", "init_from": "runs/a/b/checkpoint.pt"},
                          "data": {"alphabets": ["Latin"], "options": {"x": [1]}}})
    assert Config.from_dict(c.to_dict()) == c
