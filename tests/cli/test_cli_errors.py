"""Every failure a user can cause: one line on stderr, exit 2, nothing left behind (issue 21)."""

from __future__ import annotations

import csv
import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from relgraph.cli import _default_split, main
from relgraph.data import Omniglot
from relgraph.utils import atomic_write_text

TINY = ["--set", "backbone_args.hidden=8", "--set", "backbone_args.out_channels=8",
        "--device", "cpu", "--no-progress"]


def run(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def glyph_images(classes: int, per_class: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Bright strokes on a black background (like relgraph's Omniglot): ``[n, 1, 28, 28]``."""
    g = torch.Generator().manual_seed(seed)
    protos = (torch.rand(classes, 1, 28, 28, generator=g) > 0.85).float()
    x = protos.repeat(per_class, 1, 1, 1)
    flip = torch.rand(x.shape, generator=g) < 0.03  # a little noise
    x = torch.where(flip, 1 - x, x)
    return x, torch.arange(classes * per_class) % classes


def write_folder(root: Path, x: torch.Tensor, y: torch.Tensor, invert: bool = False) -> Path:
    for i, (img, c) in enumerate(zip(x, y.tolist(), strict=True)):
        (root / f"c{c}").mkdir(parents=True, exist_ok=True)
        pixels = (img[0] * 255).round().byte().numpy()
        Image.fromarray(255 - pixels if invert else pixels).save(root / f"c{c}" / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def glyph_run(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny model trained on light-on-dark images (tensors dataset)."""
    root = tmp_path_factory.mktemp("glyph_run")
    x, y = glyph_images(12, 8)
    torch.save({"inputs": x, "labels": y}, root / "glyphs.pt")
    code = main(["train", "--dataset", "tensors", "--root", str(root / "glyphs.pt"), "--ways",
                 "4", "--shots", "1", "--queries", "2", "--steps", "4", "--val-every", "2",
                 "--set", "train.val_episodes=4", "--set", "data.val_fraction=0.25",
                 "--out", str(root / "run"), *TINY])
    assert code == 0
    return root / "glyphs.pt", root / "run"


@pytest.fixture
def five(tmp_path: Path) -> Path:
    """Five small classes of four images: the issue's 'a user with 5 small classes'."""
    x, y = glyph_images(5, 4, seed=1)
    return write_folder(tmp_path / "five", x, y)


# -- 1. nested arguments --------------------------------------------------------------------


@pytest.mark.parametrize(("setting", "names"), [
    ("method_args.distanse=euclidean", ["method_args", "'distanse'", "'distance'", "scale"]),
    ("backbone_args.hiden=32", ["backbone_args", "'hiden'", "'hidden'", "out_channels"]),
    ("data.options.skip_bda=true", ["data.options", "'skip_bad'", "invert"]),
    ("data.options.too_small=skip", ["data.options.too_small", "--set data.too_small=skip"]),
])
def test_misspelled_nested_keys(five, tmp_path, capsys, setting, names):
    out = tmp_path / "run"
    code, _, err = run(["train", "--dataset", "folder", "--root", str(five), "--ways", "2",
                        "--set", setting, "--out", str(out), *TINY], capsys)
    line = one_error_line(err)
    assert code == 2 and all(n in line for n in names), line
    assert not out.exists()


# -- 2. nothing written on failure ----------------------------------------------------------


@pytest.mark.parametrize("bad", [
    ["--ways", "11"],                                 # more ways than training classes
    ["--shots", "5"],                                 # classes too small
    ["--set", "method_args.scale=[1]"],               # wrong type reaches the constructor
    ["--set", "train.init_from=nowhere/checkpoint.pt"],
    ["--set", "method=gnn_transductive", "--set", "method_args.transductive=false"],
])
def test_failed_train_leaves_no_folder(glyph_run, tmp_path, capsys, bad):
    data, _ = glyph_run
    out = tmp_path / "run"
    args = ["train", "--dataset", "tensors", "--root", str(data), "--steps", "2",
            "--out", str(out), *TINY]
    code, _, err = run(args + (["--ways", "3"] if "--ways" not in bad else []) + bad, capsys)
    one_error_line(err)
    assert code == 2 and not out.exists()


def test_failed_train_leaves_an_existing_folder_unchanged(glyph_run, tmp_path, capsys):
    data, run_dir = glyph_run
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    code, _, err = run(["train", "--dataset", "tensors", "--root", str(data), "--ways", "4",
                        "--set", "method_args.distanse=cosine", "--out", str(run_dir), *TINY],
                       capsys)
    one_error_line(err)
    assert code == 2 and {p.name: p.read_bytes() for p in run_dir.iterdir()} == before


# -- 3. validation episodes ------------------------------------------------------------------


def test_validation_errors_say_validation_and_the_flag(five, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run(["train", "--dataset", "folder", "--root", str(five), "--ways", "3",
                        "--shots", "1", "--queries", "2", "--out", str(out), *TINY], capsys)
    line = one_error_line(err)
    assert code == 2 and not out.exists()
    assert "validation episodes: eval.ways=3 needs 3 classes but the validation split has 1" \
        in line and "--set data.val_fraction=0.4" in line and "k_shot" not in line
    code, _, err = run(["train", "--dataset", "folder", "--root", str(five), "--ways", "2",
                        "--queries", "2", "--set", "eval.queries=15", "--set", "eval.ways=2",
                        "--set", "data.val_fraction=0.4", "--out", str(out), *TINY], capsys)
    line = one_error_line(err)
    assert code == 2 and "validation episodes" in line and "--set eval.queries=N" in line


def test_five_small_classes_train_from_flags(five, tmp_path, capsys):
    out = tmp_path / "run"
    code, text, err = run(["train", "--dataset", "folder", "--root", str(five), "--ways", "3",
                           "--shots", "1", "--queries", "2", "--steps", "2", "--set",
                           "data.val_fraction=0.4", "--out", str(out), *TINY], capsys)
    assert code == 0 and "training finished" in text, err
    assert "validation episodes follow the training flags: 3-way 1-shot 2 queries" in err
    assert "warning: validation episodes: eval.ways=2" in err and "Traceback" not in err


# -- 4. hints name flags ---------------------------------------------------------------------


def test_hints_name_flags(tmp_path, capsys):
    code, _, err = run(["data", "--dataset", "omniglot", "--root", str(tmp_path / "nope")],
                       capsys)
    line = one_error_line(err)
    assert code == 2 and "--option download=true" in line and "download=True" not in line
    x, y = glyph_images(2, 2)
    root = write_folder(tmp_path / "f", x, y)
    (root / "c0" / "notes.txt").write_text("hi")
    code, _, err = run(["data", "--dataset", "folder", "--root", str(root)], capsys)
    assert code == 2 and "--option skip_bad=true" in one_error_line(err)
    code, _, err = run(["data", "--dataset", "folder", "--root", str(root), "--option",
                        "skip_bad=true"], capsys)
    assert code == 0 and "notes.txt" in err and "skipped" in err and "skip_bad" not in err


# -- 5. evaluate's split ----------------------------------------------------------------------


def test_evaluate_says_which_split(glyph_run, tmp_path, capsys):
    assert _default_split("glyphs", None) == "test"
    assert _default_split("omniglot", None) == "test"
    assert _default_split("glyphs", "all") is None
    assert _default_split("omniglot", None, ["Greek"]) is None  # classes chosen by hand
    assert _default_split("folder", None) is None and _default_split("tensors", None) is None
    data, run_dir = glyph_run
    code, text, _ = run(["evaluate", "--checkpoint", str(run_dir), "--dataset", "tensors",
                         "--root", str(data), "--ways", "3", "--episodes", "4", "--queries",
                         "2", "--json", str(tmp_path / "r.json"), "--no-progress", "--device",
                         "cpu"], capsys)
    assert code == 0 and "tensors all classes (12 classes)" in text
    import json

    result = json.loads((tmp_path / "r.json").read_text())
    assert result["split"] == "all classes" and result["classes"] == 12


# -- 6. polarity -------------------------------------------------------------------------------


def _predict(run_dir: Path, support: Path, query: Path, tmp_path: Path, capsys,
             *extra: str) -> tuple[list[str], str]:
    out = tmp_path / f"pred{len(extra)}{support.name}.csv"
    code, _, err = run(["predict", "--checkpoint", str(run_dir), "--support", str(support),
                        "--query", str(query), "--out", str(out), "--device", "cpu", *extra],
                       capsys)
    assert code == 0, err
    with open(out) as f:
        return [r["prediction"] for r in csv.DictReader(f)], err


def test_predict_detects_and_inverts_the_other_polarity(glyph_run, tmp_path, capsys):
    data, run_dir = glyph_run
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert ckpt["preprocessing"]["polarity"] == "light-on-dark"
    assert ckpt["preprocessing"]["mean_intensity"] < 0.5 and "normalisation" in ckpt[
        "preprocessing"]
    x, y = glyph_images(12, 8)
    sup, qry = (y < 3) & (torch.arange(len(y)) < 36), (y < 3) & (torch.arange(len(y)) >= 84)
    light = write_folder(tmp_path / "light_s", x[sup], y[sup])
    write_folder(tmp_path / "light_q", x[qry], y[qry])
    dark = write_folder(tmp_path / "dark_s", x[sup], y[sup], invert=True)
    write_folder(tmp_path / "dark_q", x[qry], y[qry], invert=True)
    expected, err = _predict(run_dir, light, tmp_path / "light_q", tmp_path, capsys)
    assert "warning" not in err
    got, err = _predict(run_dir, dark, tmp_path / "dark_q", tmp_path, capsys)
    assert got == expected
    assert "dark-on-light" in err and "inverting them" in err and "--no-invert" in err
    assert len(err.strip().splitlines()) == 1
    _, err = _predict(run_dir, dark, tmp_path / "dark_q", tmp_path, capsys, "--no-invert")
    assert "warning" not in err
    forced, _ = _predict(run_dir, dark, tmp_path / "dark_q", tmp_path, capsys, "--invert")
    assert forced == expected


# -- 7. resuming -------------------------------------------------------------------------------


def test_resume_says_so_and_time_goes_on(glyph_run, tmp_path, capsys):
    data, _ = glyph_run
    out = tmp_path / "run"
    args = ["train", "--dataset", "tensors", "--root", str(data), "--ways", "3", "--steps", "4",
            "--val-every", "2", "--set", "train.val_episodes=4", "--out", str(out), *TINY]
    code, _, err = run(args + ["--stop-after", "2"], capsys)
    assert code == 0 and "resuming" not in err
    code, _, err = run(args, capsys)
    assert code == 0 and "resuming" in err and "from step 2 of 4" in err
    with open(out / "metrics.csv") as f:
        times = [float(r["time_s"]) for r in csv.DictReader(f)]
    assert len(times) == 2 and times[1] >= times[0] > 0


# -- 8. smaller ones ---------------------------------------------------------------------------


def test_written_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644


def test_checkpoint_errors(glyph_run, tmp_path, capsys):
    data, run_dir = glyph_run
    code, _, err = run(["evaluate", "--checkpoint", str(tmp_path), "--dataset", "tensors",
                        "--root", str(data)], capsys)
    assert code == 2 and "without a checkpoint.pt" in one_error_line(err)

    class Evil:
        def __reduce__(self):  # noqa: ANN204
            return (os.system, ("echo pwned",))

    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    code, _, err = run(["evaluate", "--checkpoint", str(tmp_path / "evil.pt"), "--dataset",
                        "tensors", "--root", str(data)], capsys)
    line = one_error_line(err)
    assert code == 2 and "refused" in line and "system" in line and "weights_only" not in line


def _png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("member", ["../../x.png", "/abs/Greek/character01/x.png",
                                    "s/Greek/../x.png"])
def test_zip_members_outside_the_tree_are_refused(tmp_path, member):
    path = tmp_path / "evil.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("s/Greek/character01/a.png", _png())
        zf.writestr(member, _png())
    with pytest.raises(ValueError, match="refused member " + repr(member).replace(".", r"\.")):
        Omniglot(path)


def test_predict_help_lists_probability_columns(capsys):
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    assert "p(<class>)" in capsys.readouterr().out


# -- 6. found by a review (2026-12-06) ---------------------------------------------------------


@pytest.mark.parametrize("bad", [
    ["evaluate", "--shots", "0"], ["evaluate", "--episodes", "-5"], ["evaluate", "--tta", "0"],
    ["train", "--stop-after", "0"], ["bench", "--method", "protonet", "--batch", "0"],
])
def test_counts_below_one_are_usage_errors(bad, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*bad, "--checkpoint", "x"] if bad[0] == "evaluate" else bad)
    assert exc.value.code == 2 and "expected an integer >=" in capsys.readouterr().err


@pytest.mark.parametrize("command", [
    ["train", "--steps", "1"], ["bench", "--method", "protonet", "--steps", "1"]])
@pytest.mark.parametrize("device", ["gpu", "tpu"])
def test_unknown_devices_are_one_line(command, device, tmp_path, capsys):
    code, _, err = run([*command, "--device", device, "--out", str(tmp_path / "r")]
                       if command[0] == "train" else [*command, "--device", device], capsys)
    assert code == 2 and f"unknown device '{device}'" in one_error_line(err)


def test_evaluate_refuses_what_it_would_ignore(glyph_run, tmp_path, capsys):
    data, run_dir = glyph_run
    base = ["evaluate", "--checkpoint", str(run_dir), "--dataset", "tensors", "--root", str(data),
            "--ways", "3", "--episodes", "2", "--no-progress", "--device", "cpu"]
    code, _, err = run([*base, "--image-size", "32"], capsys)
    assert code == 2 and "this model reads 28 px inputs" in one_error_line(err)
    code, _, err = run([*base, "--option", "bogus=1"], capsys)
    assert code == 2 and "--option: unknown key 'bogus'" in one_error_line(err)
    code, _, err = run(["evaluate", "--checkpoint", str(run_dir), "--dataset", "features",
                        "--root", str(tmp_path / "f.npz"), "--no-progress"], capsys)
    assert code == 2 and "does not read" in one_error_line(err)


def test_train_episodes_and_steps_conflict(glyph_run, tmp_path, capsys):
    data, _ = glyph_run
    base = ["train", "--dataset", "tensors", "--root", str(data), "--ways", "3",
            "--out", str(tmp_path / "r"), *TINY]
    code, _, err = run([*base, "--episodes", "4", "--steps", "2"], capsys)
    assert code == 2 and "pass one" in one_error_line(err)
    code, _, err = run([*base, "--episodes", "5", "--set", "train.episodes_per_batch=2"], capsys)
    assert code == 2 and "not a multiple" in one_error_line(err)
    assert not (tmp_path / "r").exists()


def test_set_null_clears_and_a_section_mapping_merges(glyph_run, tmp_path, capsys):
    data, run_dir = glyph_run
    out = tmp_path / "r"
    code, text, err = run(["train", "--dataset", "tensors", "--root", str(data), "--ways", "3",
                           "--steps", "2", "--val-every", "2",
                           "--set", f"train.init_from={run_dir}",  # a run folder is accepted
                           "--set", "train={lr: 0.002}", "--set", "train.val_episodes=2",
                           "--out", str(out), *TINY], capsys)
    assert code == 0, err
    saved = torch.load(out / "checkpoint.pt", weights_only=False)["config"]["train"]
    assert saved["lr"] == 0.002 and saved["steps"] == 2 and saved["init_from"] == str(run_dir)
    assert "wrote" in text and "last.pt" in text
    code, _, err = run(["train", "--dataset", "tensors", "--root", str(data), "--ways", "3",
                        "--steps", "2", "--val-every", "2", "--set", "train.val_episodes=2",
                        "--set", f"train.init_from={run_dir}", "--set", "train.init_from=null",
                        "--out", str(tmp_path / "r2"), *TINY], capsys)
    saved = torch.load(tmp_path / "r2" / "checkpoint.pt", weights_only=False)["config"]["train"]
    assert code == 0 and saved["init_from"] is None


def test_train_stopped_before_a_validation_lists_only_what_it_wrote(glyph_run, tmp_path, capsys):
    data, _ = glyph_run
    code, text, _ = run(["train", "--dataset", "tensors", "--root", str(data), "--ways", "3",
                         "--steps", "6", "--val-every", "3", "--stop-after", "2",
                         "--out", str(tmp_path / "r"), *TINY], capsys)
    written = text.strip().splitlines()[-1]
    assert code == 0 and "last.pt" in written and "checkpoint.pt" not in written


def test_predict_hints_at_no_option_it_lacks(glyph_run, tmp_path, capsys):
    _, run_dir = glyph_run
    x, y = glyph_images(2, 2)
    support = write_folder(tmp_path / "support", x, y)
    (support / "empty").mkdir()
    query = write_folder(tmp_path / "query", x[:1], y[:1])
    code, _, err = run(["predict", "--checkpoint", str(run_dir), "--support", str(support),
                        "--query", str(query), "--device", "cpu"], capsys)
    line = one_error_line(err)
    assert code == 2 and "skip_bad" not in line and "--option" not in line, line


def test_a_misspelled_flag_gets_the_command_usage_and_the_closest_flag(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--confg", "x.yaml", "--out", "r"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "usage: relgraph train" in err
    assert "unrecognized arguments: --confg x.yaml (did you mean --config?)" in err
