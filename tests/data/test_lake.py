"""Lake et al. one-shot runs: loading (folder and zip), bad files, and the evaluator."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor

from relgraph.data import LakeRun, evaluate_lake_runs, load_lake_runs

N_RUNS, N_WAY, SIDE = 3, 4, 12


def _make_runs(root: Path, seed: int = 0) -> dict[str, list[int]]:
    """Write ``N_RUNS`` runs of ``N_WAY`` classes; test item ``j`` of a run is a slightly
    altered copy of the class ``answers[run][j]`` (so nearest neighbour gets it right)."""
    rng = np.random.default_rng(seed)
    answers = {}
    for r in range(1, N_RUNS + 1):
        run = f"run{r:02d}"
        (root / run / "training").mkdir(parents=True)
        (root / run / "test").mkdir()
        ink = rng.random((N_WAY, SIDE, SIDE)) < 0.3
        for k in range(N_WAY):
            Image.fromarray(~ink[k]).save(root / run / "training" / f"class{k + 1:02d}.png")
        perm = rng.permutation(N_WAY).tolist()
        lines = []
        for j, k in enumerate(perm):
            item = ink[k].copy()
            item[0, 0] = not item[0, 0]  # not an exact copy
            Image.fromarray(~item).save(root / run / "test" / f"item{j + 1:02d}.png")
            lines.append(f"{run}/test/item{j + 1:02d}.png {run}/training/class{k + 1:02d}.png")
        rng.shuffle(lines)  # the file's order does not matter
        (root / run / "class_labels.txt").write_text("\n".join(lines) + "\n")
        answers[run] = perm
    return answers


@pytest.fixture
def runs_dir(tmp_path: Path) -> tuple[Path, dict[str, list[int]]]:
    root = tmp_path / "all_runs"
    return root, _make_runs(root)


def _nearest_neighbour(support: Tensor, support_labels: Tensor, query: Tensor) -> Tensor:
    """Logits ``[1, m, n]``: minus the squared pixel distance to each support image."""
    s, q = support.flatten(2), query.flatten(2)
    return -torch.cdist(q, s) ** 2


def test_load_runs(runs_dir: tuple[Path, dict[str, list[int]]]) -> None:
    root, answers = runs_dir
    runs = load_lake_runs(root, image_size=None)
    assert [r.name for r in runs] == ["run01", "run02", "run03"]
    for run in runs:
        assert isinstance(run, LakeRun) and run.n_way == N_WAY
        assert run.support.shape == (N_WAY, 1, SIDE, SIDE)
        assert run.query.shape == (N_WAY, 1, SIDE, SIDE)
        assert run.support.dtype == torch.float32
        assert run.query_labels.dtype == torch.long
        assert run.query_labels.tolist() == answers[run.name]
        assert run.support_files[0].endswith(f"{run.name}/training/class01.png")
        assert run.query_files[-1].endswith(f"{run.name}/test/item04.png")
    # ink is bright: the images hold 0 (paper) and 1 (ink), about 30% ink
    values = torch.unique(runs[0].support)
    assert values.tolist() == [0.0, 1.0]
    assert 0.15 < float(runs[0].support.mean()) < 0.45
    resized = load_lake_runs(root, image_size=8)
    assert resized[0].support.shape == (N_WAY, 1, 8, 8)
    assert float(resized[0].support.max()) <= 1.0


def zip_runs(root: Path, archive: Path, extra: str | None = None) -> Path:
    """The runs folder as a zip with an ``all_runs/`` prefix (plus an ``extra`` member)."""
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                zf.write(path, "all_runs/" + path.relative_to(root).as_posix())
        if extra is not None:
            zf.writestr(extra, b"x")
    return archive


def test_load_runs_from_zip(runs_dir: tuple[Path, dict[str, list[int]]], tmp_path: Path) -> None:
    root, answers = runs_dir
    archive = zip_runs(root, tmp_path / "all_runs.zip")
    from_zip = load_lake_runs(archive)
    from_dir = load_lake_runs(root)
    assert [r.name for r in from_zip] == [r.name for r in from_dir]
    for a, b in zip(from_zip, from_dir, strict=True):
        assert torch.equal(a.support, b.support) and torch.equal(a.query, b.query)
        assert torch.equal(a.query_labels, b.query_labels)
    assert from_zip[0].support_files[0] == f"{archive}:all_runs/run01/training/class01.png"


def test_evaluate_nearest_neighbour_is_perfect(runs_dir: tuple[Path, dict]) -> None:
    runs = load_lake_runs(runs_dir[0])
    result = evaluate_lake_runs(runs, _nearest_neighbour)
    assert result == {"error_rate": 0.0, "accuracy": 100.0, "runs": N_RUNS,
                      "items": N_RUNS * N_WAY, "per_run_error": [0.0] * N_RUNS}


def test_evaluate_wrong_and_label_predictors(runs_dir: tuple[Path, dict]) -> None:
    runs = load_lake_runs(runs_dir[0])

    def wrong(support: Tensor, support_labels: Tensor, query: Tensor) -> Tensor:
        right = _nearest_neighbour(support, support_labels, query).argmax(-1)
        return (right + 1) % support.shape[1]  # labels [1, m], always off by one

    result = evaluate_lake_runs(runs, wrong)
    assert result["error_rate"] == 100.0 and result["accuracy"] == 0.0
    assert result["per_run_error"] == [100.0] * N_RUNS

    # right in the first run only: error = 2/3 of the items
    first = runs[0].support

    def first_run_only(support: Tensor, support_labels: Tensor, query: Tensor) -> Tensor:
        logits = _nearest_neighbour(support, support_labels, query)
        if torch.equal(support[0], first):
            return logits
        return wrong(support, support_labels, query)

    result = evaluate_lake_runs(runs, first_run_only)
    assert result["per_run_error"] == [0.0, 100.0, 100.0]
    assert result["error_rate"] == pytest.approx(200.0 / 3)


def test_evaluate_one_at_a_time(runs_dir: tuple[Path, dict]) -> None:
    runs = load_lake_runs(runs_dir[0])
    shapes = []

    def predict(support: Tensor, support_labels: Tensor, query: Tensor) -> Tensor:
        shapes.append(tuple(query.shape))
        assert support.shape == (1, N_WAY, 1, 28, 28)
        assert support_labels.tolist() == [list(range(N_WAY))]
        return _nearest_neighbour(support, support_labels, query)

    result = evaluate_lake_runs(runs, predict, one_at_a_time=True)
    assert result["error_rate"] == 0.0
    assert shapes == [(1, 1, 1, 28, 28)] * (N_RUNS * N_WAY)
    shapes.clear()
    evaluate_lake_runs(runs, predict)
    assert shapes == [(1, N_WAY, 1, 28, 28)] * N_RUNS


def test_evaluate_rejects_bad_outputs(runs_dir: tuple[Path, dict]) -> None:
    runs = load_lake_runs(runs_dir[0])
    with pytest.raises(ValueError, match=r"logits \[1, 4, 4\] or labels \[1, 4\]"):
        evaluate_lake_runs(runs, lambda s, sl, q: torch.zeros(4, 4))
    with pytest.raises(ValueError, match="0..3"):
        evaluate_lake_runs(runs, lambda s, sl, q: torch.full((1, 4), 7))
    with pytest.raises(ValueError, match="no runs"):
        evaluate_lake_runs([], _nearest_neighbour)


def test_missing_files_are_named(runs_dir: tuple[Path, dict], tmp_path: Path) -> None:
    root, _ = runs_dir
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_lake_runs(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="no runNN folders"):
        load_lake_runs(root / "run01" / "training")
    (root / "run02" / "class_labels.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"run02[/\\]class_labels.txt"):
        load_lake_runs(root)


def test_malformed_labels_name_file_and_line(runs_dir: tuple[Path, dict]) -> None:
    root, _ = runs_dir
    labels = root / "run03" / "class_labels.txt"
    lines = labels.read_text().splitlines()

    labels.write_text("\n".join([lines[0], "just-one-field", *lines[1:]]))
    with pytest.raises(ValueError, match=r"run03[/\\]class_labels.txt:2: expected"):
        load_lake_runs(root)

    labels.write_text("\n".join([*lines[:2], "run03/test/item09.png run03/training/class01.png"]))
    with pytest.raises(ValueError, match=r"class_labels.txt:3: test image .*item09.png"):
        load_lake_runs(root)

    labels.write_text("\n".join([lines[0], "run03/test/item01.png run03/training/class99.png"]))
    with pytest.raises(ValueError, match=r"class_labels.txt:2: training image .*class99"):
        load_lake_runs(root)

    labels.write_text("\n".join([lines[0], "run01/test/item01.png run01/training/class01.png"]))
    with pytest.raises(ValueError, match=r"class_labels.txt:2: .*belongs to run01"):
        load_lake_runs(root)

    labels.write_text("\n".join(lines[:-1]))
    with pytest.raises(ValueError, match=r"class_labels.txt: no label for 1 test image"):
        load_lake_runs(root)

    labels.write_text("\n".join([*lines, lines[0]]))
    with pytest.raises(ValueError, match=r"class_labels.txt:5: .*labelled twice"):
        load_lake_runs(root)


def test_corrupt_image_is_named(runs_dir: tuple[Path, dict]) -> None:
    root, _ = runs_dir
    (root / "run02" / "test" / "item03.png").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"run02[/\\]test[/\\]item03.png"):
        load_lake_runs(root)


@pytest.mark.parametrize("member", ["../../run01/training/class01.png", "/abs/run01/x.png",
                                    "all_runs\\run01\\x.png"])
def test_zip_members_outside_the_archive_are_refused(runs_dir, tmp_path, member) -> None:
    root, _ = runs_dir
    archive = zip_runs(root, tmp_path / "bad.zip", extra=member)
    with pytest.raises(ValueError, match=r"refused member .*one-shot runs"):
        load_lake_runs(archive)
