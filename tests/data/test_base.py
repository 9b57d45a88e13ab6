"""Dataset base classes: subsets, rotations, resizing, the registry."""

from __future__ import annotations

import pytest
import torch

from relgraph.data import (
    ClassSubset,
    InMemoryDataset,
    RotatedClasses,
    TensorDataset,
    build_dataset,
    list_datasets,
    resize_images,
)
from relgraph.registry import Registry


def small_images() -> InMemoryDataset:
    images = torch.randint(0, 256, (12, 1, 6, 6), dtype=torch.uint8)
    return InMemoryDataset(images, torch.arange(12) % 4, ["a", "b", "c", "d"],
                           ["X", "X", "Y", "Z"])


def test_in_memory_dataset_reads_uint8_as_unit_floats():
    ds = small_images()
    x, y = ds[5]
    assert x.dtype == torch.float32 and x.shape == (1, 6, 6) and y == 1
    assert torch.allclose(x, ds.images[5].float() / 255)
    assert torch.equal(ds.get_batch(torch.tensor([5, 6]))[0], x)
    assert ds.summary() == {"classes": 4, "examples": 12, "alphabets": 3}
    assert [c.tolist() for c in ds.class_indices()] == [[0, 4, 8], [1, 5, 9], [2, 6, 10],
                                                        [3, 7, 11]]


def test_select_alphabets_and_classes():
    ds = small_images()
    sub = ds.select_alphabets(["X"])
    assert isinstance(sub, ClassSubset)
    assert sub.class_names == ["a", "b"] and len(sub) == 6
    x, y = sub[1]
    assert y == 1 and torch.equal(x, ds[1][0])
    assert torch.equal(sub.get_batch(torch.tensor([1])), ds.get_batch(torch.tensor([1])))
    with pytest.raises(ValueError, match="unknown alphabet.*'Q'.*has: X, Y, Z"):
        ds.select_alphabets(["Q"])
    sub2 = ds.select_classes([3, 0])
    assert sub2.class_names == ["d", "a"] and sub2.targets.tolist() == [1, 0, 1, 0, 1, 0]


def test_rotated_classes():
    ds = small_images()
    rot = RotatedClasses(ds)
    assert rot.num_classes == 16 and len(rot) == 48
    assert rot.class_names[4] == "a/rot090" and rot.class_names[0] == "a/rot000"
    x90, y90 = rot[12 + 5]
    assert y90 == 4 + 1
    assert torch.equal(x90, torch.rot90(ds[5][0], 1, (-2, -1)))
    batch = rot.get_batch(torch.tensor([5, 17, 29, 41]))
    for r in range(4):
        assert torch.equal(batch[r], torch.rot90(ds[5][0], r, (-2, -1)))
    with pytest.raises(ValueError, match="multiples of 90"):
        RotatedClasses(ds, angles=(0, 45))


def test_resize_is_shared_and_keeps_dtype():
    x = torch.zeros(2, 1, 105, 105, dtype=torch.uint8)
    x[:, :, 40:60, 40:60] = 255
    y = resize_images(x, 28)
    assert y.shape == (2, 1, 28, 28) and y.dtype == torch.uint8
    assert y.max() == 255 and y[0, 0, 0, 0] == 0
    assert resize_images(x, None) is x
    with pytest.raises(ValueError, match="expects"):
        resize_images(x[0], 28)


def test_base_validation():
    with pytest.raises(ValueError, match="unique"):
        InMemoryDataset(torch.zeros(2, 1, 2, 2), [0, 1], ["a", "a"])
    with pytest.raises(ValueError, match="targets must lie"):
        InMemoryDataset(torch.zeros(2, 1, 2, 2), [0, 2], ["a", "b"])
    with pytest.raises(ValueError, match="2 images but 3 targets"):
        InMemoryDataset(torch.zeros(2, 1, 2, 2), [0, 1, 1], ["a", "b"])


def test_tensor_dataset_features_and_labels():
    feats = torch.randn(30, 16)
    labels = ["cat", "dog", "emu"] * 10
    ds = TensorDataset(feats, labels, alphabets={"cat": "m", "dog": "m", "emu": "b"})
    assert ds.class_names == ["cat", "dog", "emu"] and ds.summary()["alphabets"] == 2
    assert ds.get_batch(torch.tensor([0, 1])).shape == (2, 16)
    assert torch.equal(ds[4][0], feats[4]) and ds[4][1] == 1
    with pytest.raises(ValueError, match="30 inputs but 29 labels"):
        TensorDataset(feats, labels[:-1])
    with pytest.raises(ValueError, match="no entry"):
        TensorDataset(feats, labels, alphabets={"cat": "m"})


def test_tensor_dataset_from_files(tmp_path):
    feats = torch.randn(20, 8)
    torch.save({"inputs": feats, "labels": torch.arange(20) % 4}, tmp_path / "f.pt")
    ds = build_dataset("tensors", tmp_path / "f.pt")
    assert ds.num_classes == 4 and torch.equal(ds.get_batch(torch.tensor([3]))[0], feats[3])
    import numpy as np

    np.savez(tmp_path / "f.npz", inputs=feats.numpy(), labels=np.arange(20) % 5)
    assert build_dataset("tensors", str(tmp_path / "f.npz")).num_classes == 5
    (tmp_path / "f.csv").write_text("x")
    with pytest.raises(ValueError, match="unsupported file"):
        build_dataset("tensors", tmp_path / "f.csv")
    torch.save({"x": feats, "y": torch.arange(20)}, tmp_path / "g.pt")
    with pytest.raises(ValueError, match=r"must hold 'inputs' and 'labels' \(it holds \['x', "
                                         r"'y'\]\); save them as a dict"):
        build_dataset("tensors", tmp_path / "g.pt")
    with pytest.raises(FileNotFoundError, match=r"nope\.pt not found; check the dataset root"):
        build_dataset("tensors", tmp_path / "nope.pt")


def test_registry():
    reg: Registry[int] = Registry("thing")
    reg.register("one")(lambda: 1)
    assert reg.build("ONE") == 1 and reg.list() == ["one"] and "one" in reg
    with pytest.raises(ValueError, match="already registered"):
        reg.register("one")(lambda: 2)
    with pytest.raises(KeyError, match="unknown thing 'two'; choose one of: one"):
        reg.build("two")
    assert {"folder", "glyphs", "omniglot", "tensors"} <= set(list_datasets())
