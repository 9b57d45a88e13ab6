"""The ``features`` dataset: npy + labels, npz, safetensors, parquet; the command line on it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from relgraph.backbones import FeatureInput, build_backbone
from relgraph.cli import main
from relgraph.data import FeaturesDataset, build_dataset, read_features


def _data(n_classes: int = 6, per: int = 8, d: int = 5, seed: int = 0):
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(n_classes, d)) * 4
    x = np.concatenate([means[c] + rng.normal(size=(per, d)) for c in range(n_classes)])
    labels = np.repeat([f"class{c}" for c in range(n_classes)], per)
    split = np.array(["train", "val", "test"])[np.repeat(np.arange(n_classes) % 3, per)]
    return x.astype(np.float32), labels, split


def test_npz_with_string_labels_and_split(tmp_path):
    x, y, s = _data()
    np.savez(tmp_path / "f.npz", features=x, labels=y, split=s)
    ds = build_dataset("features", tmp_path / "f.npz")
    assert ds.summary() == {"classes": 6, "examples": 48, "alphabets": 0}
    assert ds.preprocessing == {"dataset": "features", "feature_shape": [5]}
    assert torch.allclose(ds.get_batch(torch.tensor([0, 9])), torch.from_numpy(x[[0, 9]]))
    test = build_dataset("features", tmp_path / "f.npz", split="test")
    assert test.class_names == ["class2", "class5"] and len(test) == 16


def test_npz_missing_key_lists_the_keys(tmp_path):
    np.savez(tmp_path / "f.npz", emb=np.zeros((3, 2)), y=np.arange(3))
    with pytest.raises(ValueError, match=r"no 'features' array; its arrays are \['emb', 'y'\]"):
        build_dataset("features", tmp_path / "f.npz")
    ds = build_dataset("features", tmp_path / "f.npz", features_key="emb", labels_key="y")
    assert ds.num_classes == 3


def test_unknown_split_names_the_present_ones(tmp_path):
    x, y, s = _data()
    np.savez(tmp_path / "f.npz", features=x, labels=y, split=s)
    with pytest.raises(ValueError, match=r"no rows of split 'dev'; its splits are \['test', "):
        build_dataset("features", tmp_path / "f.npz", split="dev")


@pytest.mark.parametrize("labels_file", ["labels.npy", "labels.txt"])
def test_npy_with_a_labels_file(tmp_path, labels_file):
    x, y, _ = _data()
    np.save(tmp_path / "f.npy", x)
    ints = np.repeat(np.arange(6) * 10, 8)
    if labels_file.endswith(".npy"):
        np.save(tmp_path / labels_file, ints)
    else:
        (tmp_path / labels_file).write_text("\n".join(map(str, ints)) + "\n")
    ds = build_dataset("features", [tmp_path / "f.npy", tmp_path / labels_file])
    assert ds.class_names == ["0", "10", "20", "30", "40", "50"]  # integers, numeric order
    with pytest.raises(ValueError, match="has no labels"):
        build_dataset("features", tmp_path / "f.npy")
    with pytest.raises(FileNotFoundError, match=r"nope\.txt not found; check the labels option"):
        build_dataset("features", tmp_path / "f.npy", labels=tmp_path / "nope.txt")


def test_count_mismatch_and_bad_shapes(tmp_path):
    np.savez(tmp_path / "f.npz", features=np.zeros((4, 2)), labels=np.arange(3))
    with pytest.raises(ValueError, match="4 feature rows but 3 labels"):
        build_dataset("features", tmp_path / "f.npz")
    np.savez(tmp_path / "g.npz", features=np.zeros((4, 2, 2)), labels=np.arange(4))
    with pytest.raises(ValueError, match=r"2-d numeric array \[N, d\]"):
        build_dataset("features", tmp_path / "g.npz")
    with pytest.raises(ValueError, match="unsupported features file"):
        build_dataset("features", tmp_path / "f.csv")


def test_safetensors(tmp_path):
    st = pytest.importorskip("safetensors.numpy")
    x, _, _ = _data()
    labels = np.repeat(np.arange(6), 8).astype(np.int64)
    st.save_file({"features": x, "labels": labels,
                  "split": (np.arange(48) // 8 % 3).astype(np.int64)},
                 str(tmp_path / "f.safetensors"),
                 metadata={"class_names": json.dumps([f"n{i}" for i in range(6)])})
    ds = build_dataset("features", tmp_path / "f.safetensors", split="val")
    assert ds.class_names == ["n1", "n4"]


def test_parquet_list_column_and_numeric_columns(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    x, y, s = _data()
    pq.write_table(pa.table({"features": x.tolist(), "label": y.tolist(), "split": s.tolist()}),
                   tmp_path / "a.parquet")
    pq.write_table(pa.table({**{f"f{i}": x[:, i] for i in range(5)}, "label": y.tolist()}),
                   tmp_path / "b.parquet")
    a = build_dataset("features", tmp_path / "a.parquet", split="train")
    b = build_dataset("features", tmp_path / "b.parquet")
    assert a.num_classes == 2 and b.num_classes == 6
    assert torch.allclose(b.get_batch(torch.arange(48)), torch.from_numpy(x))


def test_parquet_labels_column_and_labels_that_only_look_numeric(tmp_path):
    """A "labels" column works like "label" (the error used to ask for it and then ignore
    it), and "7" / "007" / "01" / "1" stay four classes (they were merged into 7 and 1)."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    x, y, _ = _data()
    pq.write_table(pa.table({**{f"f{i}": x[:, i] for i in range(5)}, "labels": y.tolist()}),
                   tmp_path / "c.parquet")
    assert build_dataset("features", tmp_path / "c.parquet").num_classes == 6
    labels = ["1", "01", "007", "7"] * 12
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "y.txt").write_text("\n".join(labels) + "\n")
    ds = build_dataset("features", [tmp_path / "x.npy", tmp_path / "y.txt"])
    assert sorted(ds.class_names) == ["007", "01", "1", "7"]
    (tmp_path / "z.txt").write_text("\n".join(["3", "10", "-2"] * 16) + "\n")
    assert build_dataset("features", [tmp_path / "x.npy", tmp_path / "z.txt"]).num_classes == 3


def test_missing_optional_package_names_the_extra(tmp_path, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_pyarrow(name, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if name.startswith("pyarrow"):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    with pytest.raises(ImportError, match=r"relgraph\[features\]"):
        read_features(tmp_path / "x.parquet")


def test_features_backbone():
    bb = build_backbone("features", feature_shape=[7])
    assert bb.out_dim == 7 and bb.map_shape() == (7, 1, 1)
    x = torch.randn(3, 7)
    assert torch.equal(bb(x), x) and bb.forward_map(x).shape == (3, 7, 1, 1)
    assert FeatureInput(7, project=4)(x).shape == (3, 4)
    with pytest.raises(ValueError, match=r"expected features \[m, 7\]"):
        bb(torch.randn(3, 6))


def test_command_line_train_evaluate_predict(tmp_path, capsys):
    x, y, s = _data(n_classes=9, per=10)
    np.savez(tmp_path / "f.npz", features=x, labels=y, split=s)
    np.savez(tmp_path / "support.npz", features=x[::10], labels=y[::10])
    np.save(tmp_path / "query.npy", x[1::10])
    assert main(["data", "--dataset", "features", "--root", str(tmp_path / "f.npz"),
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["classes"] == 9
    out = tmp_path / "run"
    assert main(["train", "--dataset", "features", "--root", str(tmp_path / "f.npz"),
                 "--split", "train", "--set", "data.val_split=val", "--method", "gnn",
                 "--ways", "3", "--shots", "1", "--queries", "2", "--steps", "3",
                 "--val-every", "3", "--out", str(out), "--no-progress"]) == 0
    ckpt = torch.load(out / "checkpoint.pt", weights_only=False)
    assert ckpt["config"]["backbone"] == "features"
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(out), "--dataset", "features", "--root",
                 str(tmp_path / "f.npz"), "--ways", "3", "--episodes", "5",
                 "--no-progress"]) == 0
    assert "features test split (3 classes)" in capsys.readouterr().out
    assert main(["predict", "--checkpoint", str(out), "--support",
                 str(tmp_path / "support.npz"), "--query", str(tmp_path / "query.npy"),
                 "--out", str(tmp_path / "p.csv")]) == 0
    lines = (tmp_path / "p.csv").read_text().splitlines()
    assert len(lines) == 10 and lines[1].startswith("query.npy[0],")


def test_image_backbone_on_features_is_refused(tmp_path, capsys):
    x, y, _ = _data()
    np.savez(tmp_path / "f.npz", features=x, labels=y)
    code = main(["train", "--dataset", "features", "--root", str(tmp_path / "f.npz"),
                 "--backbone", "resnet12", "--ways", "2", "--steps", "1", "--set",
                 "data.val_fraction=0", "--out",
                 str(tmp_path / "run"), "--no-progress"])
    assert code == 2
    assert "use the 'features' backbone" in capsys.readouterr().err


def test_dataset_class_is_exported():
    assert FeaturesDataset.__mro__[1].__name__ == "TensorDataset"
