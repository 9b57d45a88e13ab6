"""The ``relgraph`` command line: data, train, evaluate, predict, errors."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import make_tiny_data
from PIL import Image

from relgraph.cli import main


def run(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("cli")
    data = make_tiny_data(root / "tiny.pt")
    out = root / "run"
    code = main(["train", "--dataset", "tensors", "--root", str(data), "--ways", "4",
                 "--shots", "1", "--queries", "2", "--steps", "4", "--val-every", "2",
                 "--set", "eval.queries=2", "--set", "eval.ways=2", "--set", "train.val_episodes=5",
                 "--set", "backbone_args.hidden=8", "--set", "backbone_args.out_channels=8",
                 "--device", "cpu", "--out", str(out), "--no-progress"])
    assert code == 0
    return data, out


def test_data_json(tmp_path, capsys):
    torch.save({"inputs": torch.zeros(6, 3), "labels": torch.tensor([0, 0, 1, 1, 2, 2])},
               tmp_path / "f.pt")
    code, out, _ = run(["data", "--dataset", "tensors", "--root", str(tmp_path / "f.pt"),
                        "--json"], capsys)
    assert code == 0 and json.loads(out) == {"classes": 3, "examples": 6, "alphabets": 0}


def test_train_writes_run(trained):
    _, out = trained
    for name in ("checkpoint.pt", "metrics.csv", "curves.png", "config.yaml"):
        assert (out / name).is_file()


def test_evaluate_json(trained, tmp_path, capsys):
    data, out = trained
    code, text, _ = run(["evaluate", "--checkpoint", str(out / "checkpoint.pt"), "--dataset",
                         "tensors", "--root", str(data), "--ways", "3", "--shots", "1",
                         "--queries", "2", "--episodes", "20", "--json",
                         str(tmp_path / "r.json"), "--no-progress", "--device", "cpu"], capsys)
    assert code == 0 and "accuracy" in text
    result = json.loads((tmp_path / "r.json").read_text())
    for key in ("accuracy", "ci95", "episodes", "ways", "shots", "queries", "transductive",
                "seed", "image_size"):
        assert key in result
    assert result["episodes"] == 20 and result["ways"] == 3 and result["transductive"] is False


def test_predict_on_a_tiny_folder(trained, tmp_path, capsys):
    data, out = trained
    payload = torch.load(data, weights_only=True)
    x, y = payload["inputs"], payload["labels"]
    for c in range(3):
        (tmp_path / "support" / f"class{c}").mkdir(parents=True)
        idx = (y == c).nonzero().reshape(-1)
        for i in idx[:2 + c].tolist():  # unbalanced on purpose: 2, 3, 4 shots
            Image.fromarray((x[i, 0] * 255).byte().numpy()).save(
                tmp_path / "support" / f"class{c}" / f"{i}.png")
        (tmp_path / "query").mkdir(exist_ok=True)
        Image.fromarray((x[int(idx[-1]), 0] * 255).byte().numpy()).save(
            tmp_path / "query" / f"q{c}.png")
    code, text, _ = run(["predict", "--checkpoint", str(out / "checkpoint.pt"), "--support",
                         str(tmp_path / "support"), "--query", str(tmp_path / "query"),
                         "--out", str(tmp_path / "pred.csv"), "--device", "cpu"], capsys)
    assert code == 0 and "q0.png" in text
    with open(tmp_path / "pred.csv") as f:
        rows = list(csv.DictReader(f))
    assert [Path(r["file"]).name for r in rows] == ["q0.png", "q1.png", "q2.png"]
    for r in rows:
        assert r["prediction"] in {"class0", "class1", "class2"}
        probs = [float(r[f"p(class{c})"]) for c in range(3)]
        assert sum(probs) == pytest.approx(1.0, abs=1e-4)
        assert float(r["confidence"]) == pytest.approx(max(probs), abs=1e-6)


def test_user_errors_are_clear(trained, tmp_path, capsys):
    _, out = trained
    code, _, err = run(["evaluate", "--checkpoint", str(tmp_path / "nope.pt"), "--dataset",
                        "glyphs"], capsys)
    assert code == 2 and "not found" in err
    code, _, err = run(["data", "--dataset", "imagenet"], capsys)
    assert code == 2 and "unknown dataset 'imagenet'" in err and "omniglot" in err
    code, _, err = run(["predict", "--checkpoint", str(out / "checkpoint.pt"), "--support",
                        str(tmp_path / "none"), "--query", str(tmp_path)], capsys)
    assert code == 2 and "not a folder" in err
    code, _, err = run(["evaluate", "--checkpoint", str(out / "checkpoint.pt")], capsys)
    assert code == 2 and "--omniglot-runs" in err
    code, _, err = run(["train", "--config", str(tmp_path / "missing.yaml"), "--out",
                        str(tmp_path / "o")], capsys)
    assert code == 2 and "missing.yaml" in err


def test_console_script_runs():
    proc = subprocess.run([sys.executable, "-m", "relgraph.cli", "--version"],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("relgraph ")


def test_import_registers_a_method_of_ones_own(tmp_path, monkeypatch, capsys):
    """``--import FILE.py`` (or a module name) runs the user's module before the command, so a
    method it registers can be trained, evaluated and used; importing it again is a no-op."""
    import uuid

    from relgraph.methods import list_methods

    name = f"my_head_{uuid.uuid4().hex[:8]}"
    plugin = tmp_path / f"{name}_module.py"
    plugin.write_text("from relgraph.methods import ProtoNet, register_method\n\n\n"
                      f"@register_method({name!r})\nclass MyHead(ProtoNet):\n    pass\n")
    data = make_tiny_data(tmp_path / "tiny.pt")
    args = ["train", "--method", name, "--dataset", "tensors", "--root", str(data),
            "--ways", "3", "--shots", "1", "--queries", "2", "--steps", "2", "--val-every", "2",
            "--set", "eval.queries=2", "--set", "eval.ways=2", "--set", "train.val_episodes=2",
            "--set", "backbone_args.hidden=8", "--set", "backbone_args.out_channels=8",
            "--device", "cpu", "--out", str(tmp_path / "run"), "--no-progress"]
    code, _, err = run(args, capsys)
    assert code == 2 and f"unknown method {name!r}" in err and "pass --import" in err
    code, _, err = run(args + ["--import", str(plugin)], capsys)
    assert code == 0, err
    assert name in list_methods()
    evaluate = ["evaluate", "--checkpoint", str(tmp_path / "run"), "--dataset", "tensors",
                "--root", str(data), "--ways", "2", "--shots", "1", "--queries", "2",
                "--episodes", "4", "--device", "cpu", "--no-progress"]
    monkeypatch.chdir(tmp_path)  # a module name is found in the current folder
    code, text, err = run(evaluate + ["--import", plugin.stem], capsys)
    assert code == 0 and "accuracy" in text, err
    code, _, err = run(evaluate + ["--import", "no_such_module_here"], capsys)
    assert code == 2 and "--import no_such_module_here: no module named" in err
    code, _, err = run(evaluate + ["--import", "missing.py"], capsys)
    assert code == 2 and "--import missing.py: no such file" in err


def test_train_without_a_config_keeps_the_glyphs_test_split_unseen(tmp_path, monkeypatch,
                                                                   capsys):
    """`relgraph train --dataset glyphs` used to train on every class, test alphabets included,
    and `evaluate` then scored its test split without a word. Now training takes the train
    split (validating on val), and evaluate warns about (and counts) classes it trained on."""
    monkeypatch.setenv("RELGRAPH_CACHE", str(tmp_path / "cache"))
    small = ["--option", "examples_per_class=3", "--option", "max_classes=120"]
    out = tmp_path / "run"
    code, _, err = run(["train", "--dataset", "glyphs", *small, "--ways", "3", "--shots", "1",
                        "--queries", "1", "--steps", "2", "--val-every", "2",
                        "--set", "train.val_episodes=2", "--set", "backbone_args.hidden=8",
                        "--device", "cpu", "--out", str(out), "--no-progress"], capsys)
    assert code == 0 and "training on the glyphs train split" in err
    ckpt = torch.load(out / "checkpoint.pt", weights_only=False)
    assert ckpt["config"]["data"]["split"] == "train" and ckpt["train_classes"]
    for split, seen in (("test", False), ("train", True)):
        code, _, err = run(["evaluate", "--checkpoint", str(out), "--dataset", "glyphs", *small,
                            "--split", split, "--ways", "3", "--shots", "1", "--queries", "1",
                            "--episodes", "2", "--json", str(tmp_path / f"{split}.json"),
                            "--no-progress", "--device", "cpu"], capsys)
        result = json.loads((tmp_path / f"{split}.json").read_text())
        assert code == 0 and ("were training classes of this model" in err) == seen
        assert (result["classes_seen_in_training"] > 0) == seen
