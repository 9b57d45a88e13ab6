"""Natural-image loaders on small fixtures in their exact layouts, and on the real split files."""

from __future__ import annotations

import http.server
import json
import pickle
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from relgraph.cli import main
from relgraph.data import DownloadError, build_dataset
from relgraph.data import cifar as cifar_module
from relgraph.data.cifar import CIFAR_FS_SPLIT, FC100_SPLIT
from relgraph.data.cub import cub_split
from relgraph.data.download import file_checksum
from relgraph.data.imagenet import read_miniimagenet_csv, read_tiered_csv
from relgraph.data.io import read_pickle


def _png(path: Path, color: int, size: int = 20) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size + 4), (color, 255 - color, 7)).save(path)


# -- miniImageNet ---------------------------------------------------------------------------
def _mini_csv(root: Path, per: int = 3) -> None:
    classes = {"train": ["n01", "n02", "n03"], "val": ["n04", "n05"], "test": ["n06", "n07"]}
    for split, names in classes.items():
        lines = ["filename,label"]
        for c in names:
            for i in range(per):
                name = f"{c}{i:08d}.jpg"
                _png(root / "images" / name, 30 * int(c[1:]))
                lines.append(f"{name},{c}")
        (root / f"{split}.csv").write_text("\n".join(lines) + "\n")


def test_miniimagenet_csv_layout(tmp_path):
    _mini_csv(tmp_path)
    train = build_dataset("miniimagenet", tmp_path, split="train")
    assert train.summary() == {"classes": 3, "examples": 9, "alphabets": 0}
    assert train.class_names == ["n01", "n02", "n03"]
    x = train.get_batch(torch.tensor([0, 8]))
    assert x.shape == (2, 3, 84, 84) and 0 <= float(x.min()) <= float(x.max()) <= 1
    assert abs(float(x[0, 0].mean()) - 30 / 255) < 0.01
    assert build_dataset("miniimagenet", tmp_path, split=None).num_classes == 7
    assert build_dataset("miniimagenet", tmp_path, split="val", image_size=32).load(0).shape \
        == (3, 32, 32)


def test_miniimagenet_pickle_layout(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 3), ("val", 2), ("test", 2)):
        images = rng.integers(0, 256, size=(n * 4, 84, 84, 3), dtype=np.uint8)
        class_dict = {f"{split}{c}": list(range(c, n * 4, n)) for c in range(n)}
        with open(tmp_path / f"mini-imagenet-cache-{split}.pkl", "wb") as f:
            pickle.dump({"image_data": images, "class_dict": class_dict}, f)
        if split == "val":
            ds = build_dataset("miniimagenet", tmp_path, split="val")
            first = class_dict["val0"][1]
            assert torch.equal((ds.load(1) * 255).round().to(torch.uint8),
                               torch.from_numpy(images[first]).permute(2, 0, 1))
    ds = build_dataset("miniimagenet", tmp_path, split=None)
    assert ds.summary() == {"classes": 7, "examples": 28, "alphabets": 0}
    assert ds.preprocessing["layout"] == "pickle"


def test_miniimagenet_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"train\.csv not found"):
        build_dataset("miniimagenet", tmp_path)
    (tmp_path / "train.csv").write_text("file,class\na.jpg,n1\n")
    with pytest.raises(ValueError, match="expected the header 'filename,label'"):
        build_dataset("miniimagenet", tmp_path)
    with pytest.raises(ValueError, match="split must be one of train, val, test"):
        build_dataset("miniimagenet", tmp_path, split="trainval")


def test_pickles_with_code_are_refused(tmp_path):
    class Evil:
        def __reduce__(self):  # noqa: ANN204
            return (print, ("pwned",))

    with open(tmp_path / "mini-imagenet-cache-train.pkl", "wb") as f:
        pickle.dump({"image_data": Evil(), "class_dict": {}}, f)
    with pytest.raises(ValueError, match="refusing to load builtins.print"):
        build_dataset("miniimagenet", tmp_path)


# -- tieredImageNet -------------------------------------------------------------------------
def test_tieredimagenet_csv_layout(tmp_path):
    rows = {"train": [("n11", "cat1"), ("n12", "cat1"), ("n13", "cat2")],
            "val": [("n21", "cat3"), ("n22", "cat3")], "test": [("n31", "cat4"), ("n32", "cat5")]}
    for split, classes in rows.items():
        (tmp_path / f"{split}.csv").write_text("".join(f"{w},{p}\n" for w, p in classes))
        for w, _ in classes:
            for i in range(2):
                _png(tmp_path / w / f"{w}_{i}.JPEG", 50)
    ds = build_dataset("tieredimagenet", tmp_path, split="train")
    assert ds.summary() == {"classes": 3, "examples": 6, "alphabets": 2}
    assert ds.class_alphabets == ["cat1", "cat1", "cat2"]
    assert ds.get_batch(torch.tensor([5])).shape == (1, 3, 84, 84)


def test_tieredimagenet_pickle_layout(tmp_path):
    import io

    for split, n in (("train", 3), ("val", 2), ("test", 2)):
        pngs = []
        for i in range(n * 2):
            buf = io.BytesIO()
            Image.new("RGB", (84, 84), (10 * i, 0, 0)).save(buf, format="PNG")
            pngs.append(np.frombuffer(buf.getvalue(), dtype=np.uint8))
        with open(tmp_path / f"{split}_images_png.pkl", "wb") as f:
            pickle.dump(pngs, f)
        labels = {"label_specific": np.arange(n * 2) % n, "label_general": np.zeros(n * 2, int),
                  "label_specific_str": [f"{split}_w{c}" for c in range(n)],
                  "label_general_str": [f"{split}_cat"]}
        with open(tmp_path / f"{split}_labels.pkl", "wb") as f:
            pickle.dump(labels, f)
    ds = build_dataset("tieredimagenet", tmp_path, split="train")
    assert ds.summary() == {"classes": 3, "examples": 6, "alphabets": 1}
    assert abs(float(ds.load(4)[0].mean()) - 40 / 255) < 0.01
    assert build_dataset("tieredimagenet", tmp_path, split=None).num_classes == 7


# -- CUB ------------------------------------------------------------------------------------
def _cub(root: Path, n_classes: int = 8, per: int = 2) -> Path:
    cub = root / "CUB_200_2011"
    classes, images, labels = [], [], []
    for c in range(1, n_classes + 1):
        name = f"{c:03d}.Bird_{c}"
        classes.append(f"{c} {name}")
        for i in range(per):
            image_id = len(images) + 1
            rel = f"{name}/Bird_{c}_{i}.jpg"
            _png(cub / "images" / rel, 20 * c, size=30)
            images.append(f"{image_id} {rel}")
            labels.append(f"{image_id} {c}")
    (cub / "classes.txt").write_text("\n".join(classes) + "\n")
    (cub / "images.txt").write_text("\n".join(images) + "\n")
    (cub / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    return cub


def test_cub_split_of_chen_et_al():
    splits = [cub_split(i) for i in range(200)]
    assert [splits.count(s) for s in ("train", "val", "test")] == [100, 50, 50]
    assert splits[:4] == ["train", "val", "train", "test"]


def test_cub_layout(tmp_path):
    _cub(tmp_path)
    train = build_dataset("cub", tmp_path, split="train")
    assert train.class_names == ["001.Bird_1", "003.Bird_3", "005.Bird_5", "007.Bird_7"]
    test = build_dataset("cub", tmp_path / "CUB_200_2011", split="test")
    assert test.class_names == ["004.Bird_4", "008.Bird_8"]
    assert test.get_batch(torch.arange(4)).shape == (4, 3, 84, 84)
    assert build_dataset("cub", tmp_path, split=None).summary()["examples"] == 16


# -- CIFAR-FS and FC100 ---------------------------------------------------------------------
def _cifar(root: Path, per: int = 2) -> Path:
    """A CIFAR-100 python folder with the real class and superclass names, ``per`` images of
    each class in ``train`` and one in ``test``."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    superclasses = sorted({*FC100_SPLIT["train"], *FC100_SPLIT["val"], *FC100_SPLIT["test"]})
    named = sorted({*CIFAR_FS_SPLIT["val"], *CIFAR_FS_SPLIT["test"]})
    fine = sorted(named + [f"class_{i:02d}" for i in range(100 - len(named))])
    coarse_of = [i % 20 for i in range(100)]
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": fine, "coarse_label_names": superclasses}, f)
    for part, n in (("train", per), ("test", 1)):
        fl = [c for c in range(100) for _ in range(n)]
        data = np.array([[c] * 3072 for c in fl], dtype=np.uint8)
        with open(folder / part, "wb") as f:
            pickle.dump({b"data": data, b"fine_labels": fl,
                         b"coarse_labels": [coarse_of[c] for c in fl]}, f, protocol=2)
    return folder


def test_cifar_fs_and_fc100(tmp_path):
    _cifar(tmp_path)
    counts = {s: build_dataset("cifar_fs", tmp_path, split=s).summary() for s in
              ("train", "val", "test")}
    assert [counts[s]["classes"] for s in ("train", "val", "test")] == [64, 16, 20]
    assert counts["train"]["examples"] == 64 * 3
    test = build_dataset("cifar_fs", tmp_path / "cifar-100-python", split="test")
    assert test.class_names == sorted(CIFAR_FS_SPLIT["test"])
    x = test.get_batch(torch.tensor([0]))
    c = build_dataset("cifar_fs", tmp_path, split=None).class_names.index(test.class_names[0])
    assert x.shape == (1, 3, 32, 32) and abs(float(x.mean()) - c / 255) < 1e-6
    fc = {s: build_dataset("fc100", tmp_path, split=s) for s in ("train", "val", "test")}
    assert [fc[s].num_classes for s in ("train", "val", "test")] == [60, 20, 20]
    assert fc["test"].alphabets == sorted(FC100_SPLIT["test"])
    assert fc["val"].get_batch(torch.tensor([0])).shape == (1, 3, 32, 32)
    assert build_dataset("fc100", tmp_path, split="val", image_size=84).load(0).shape \
        == (3, 84, 84)


def test_relgraph_data_counts_them(tmp_path, capsys):
    _cifar(tmp_path / "c")
    _mini_csv(tmp_path / "m")
    _cub(tmp_path / "b")
    for name, root, split, classes in (("cifar_fs", "c", "val", 16), ("fc100", "c", "test", 20),
                                       ("miniimagenet", "m", "train", 3),
                                       ("cub", "b", "val", 2)):
        assert main(["data", "--dataset", name, "--root", str(tmp_path / root), "--split", split,
                     "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["classes"] == classes


# -- download with checksum, from a loopback server -----------------------------------------
@pytest.fixture
def server(tmp_path):
    served = tmp_path / "served"
    served.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):  # noqa: ANN002, ANN003
            super().__init__(*args, directory=str(served), **kwargs)

        def log_message(self, *args):  # noqa: ANN002
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_cifar_download_checks_md5_and_extracts(tmp_path, server, monkeypatch):
    served, url = server
    _cifar(tmp_path / "src")
    archive = served / "cifar-100-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-100-python", arcname="cifar-100-python")
    wrong = tmp_path / "wrong"
    monkeypatch.setattr(cifar_module, "CIFAR100_URL", f"{url}/cifar-100-python.tar.gz")
    monkeypatch.setattr(cifar_module.download_cifar100, "__defaults__",
                        (f"{url}/cifar-100-python.tar.gz", "0" * 32))
    with pytest.raises(DownloadError, match="checksum mismatch"):
        build_dataset("cifar_fs", wrong, split="val", download=True)
    assert not (wrong / "cifar-100-python.tar.gz").exists()
    monkeypatch.setattr(cifar_module.download_cifar100, "__defaults__",
                        (f"{url}/cifar-100-python.tar.gz", file_checksum(archive, "md5")))
    ds = build_dataset("cifar_fs", tmp_path / "dl", split="val", download=True)
    assert ds.num_classes == 16
    assert (tmp_path / "dl" / "cifar-100-python" / "meta").is_file()
    with pytest.raises(DownloadError, match="HTTP 404"):
        cifar_module.download_cifar100(tmp_path / "missing", url=f"{url}/nothing.tar.gz")


def test_unsafe_archive_is_refused(tmp_path):
    from relgraph.data.download import extract_archive

    (tmp_path / "x.txt").write_text("x")
    with tarfile.open(tmp_path / "bad.tar", "w") as tar:
        tar.add(tmp_path / "x.txt", arcname="../escape.txt")
    with pytest.raises(ValueError, match="unsafe member"):
        extract_archive(tmp_path / "bad.tar", tmp_path / "out")


def test_extraction_is_all_or_nothing(tmp_path):
    """A damaged archive leaves nothing in the destination (no half-written dataset folder, no
    staging folder); a good one replaces what an earlier, interrupted extraction left."""
    from relgraph.data.download import extract_archive

    data = tmp_path / "src" / "ds"
    data.mkdir(parents=True)
    for i in range(3):
        (data / f"f{i}.bin").write_bytes(bytes(range(256)) * 200)
    with tarfile.open(tmp_path / "good.tar.gz", "w:gz") as tar:
        tar.add(data, arcname="ds")
    whole = (tmp_path / "good.tar.gz").read_bytes()
    (tmp_path / "cut.tar.gz").write_bytes(whole[: len(whole) // 2])
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="cannot extract"):
        extract_archive(tmp_path / "cut.tar.gz", out)
    assert list(out.iterdir()) == []
    (out / "ds").mkdir()
    (out / "ds" / "f0.bin").write_bytes(b"partial")  # what an interrupted run left
    extract_archive(tmp_path / "good.tar.gz", out)
    assert sorted(p.name for p in out.iterdir()) == ["ds"]
    assert (out / "ds" / "f0.bin").read_bytes() == (data / "f0.bin").read_bytes()
    assert len(list((out / "ds").iterdir())) == 3


def test_read_pickle_reads_python2_style_cifar(tmp_path):
    folder = _cifar(tmp_path)
    d = read_pickle(folder / "test")
    assert d[b"data"].shape == (100, 3072)


# -- the real split files -------------------------------------------------------------------
@pytest.mark.data
def test_real_miniimagenet_split_files(shared_data):
    folder = shared_data / "splits" / "miniimagenet_ravi"
    if not (folder / "train.csv").is_file():
        pytest.skip(f"{folder} not present")
    seen: set[str] = set()
    for split, n in (("train", 64), ("val", 16), ("test", 20)):
        by_class = read_miniimagenet_csv(folder / f"{split}.csv")
        assert len(by_class) == n
        assert {len(v) for v in by_class.values()} == {600}
        assert not seen & set(by_class)
        seen |= set(by_class)


@pytest.mark.data
def test_real_miniimagenet_split_files_through_the_loader(shared_data, tmp_path):
    folder = shared_data / "splits" / "miniimagenet_ravi"
    if not (folder / "test.csv").is_file():
        pytest.skip(f"{folder} not present")
    by_class = read_miniimagenet_csv(folder / "test.csv")
    first = by_class[next(iter(by_class))][0]
    _png(tmp_path / "images" / first, 9)  # the loader checks the first image only
    ds = build_dataset("miniimagenet", tmp_path, split="test", split_dir=folder)
    assert ds.summary() == {"classes": 20, "examples": 12000, "alphabets": 0}
    assert ds.load(0).shape == (3, 84, 84)


@pytest.mark.data
def test_real_tieredimagenet_split_files(shared_data):
    folder = shared_data / "splits" / "tieredimagenet"
    if not (folder / "train.csv").is_file():
        pytest.skip(f"{folder} not present")
    counts, cats, seen = {}, {}, set()
    for split in ("train", "val", "test"):
        rows = read_tiered_csv(folder / f"{split}.csv")
        counts[split] = len({w for w, _ in rows})
        cats[split] = len({p for _, p in rows})
        assert not seen & {w for w, _ in rows}
        seen |= {w for w, _ in rows}
    assert counts == {"train": 351, "val": 97, "test": 160}
    assert cats == {"train": 20, "val": 6, "test": 8}
