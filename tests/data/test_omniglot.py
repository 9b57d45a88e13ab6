"""Omniglot: PNG folders, zips and npz give the same tensors; splits, rotations, bad input."""

from __future__ import annotations

import io
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from relgraph.data import RotatedClasses, build_dataset, resize_images
from relgraph.data.omniglot import (
    VINYALS_TEST_ALPHABETS,
    VINYALS_VAL_ALPHABETS,
    Omniglot,
    vinyals_split,
)

SIDE = 21  # native side of the synthetic drawings (the real ones are 105)
DRAWERS = 3
# alphabet, first global id, number of characters (ids as in alphabets.tsv)
BACKGROUND = [("Greek", 1, 3), ("Hebrew", 4, 2)]
EVALUATION = [("Kannada", 6, 2)]


def _paper(n_chars: int, seed: int) -> np.ndarray:
    """Random drawings as in the npz: bool ``[n_chars, DRAWERS, SIDE, SIDE]``, True = paper."""
    return np.random.default_rng(seed).random((n_chars, DRAWERS, SIDE, SIDE)) > 0.15


def _png(paper: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(paper).save(buf, format="PNG")  # bool -> 1-bit PNG, like the official files
    return buf.getvalue()


def _members(alphabets: list[tuple[str, int, int]], paper: np.ndarray) -> dict[str, bytes]:
    """``Alphabet/characterNN/<id>_<drawer>.png`` -> PNG bytes, for the official layout."""
    out = {}
    row = 0
    for alphabet, first, count in alphabets:
        for c in range(count):
            for d in range(DRAWERS):
                out[f"{alphabet}/character{c + 1:02d}/{first + c:04d}_{d + 1:02d}.png"] = \
                    _png(paper[row, d])
            row += 1
    return out


def _write_folder(folder: Path, members: dict[str, bytes]) -> Path:
    for name, data in members.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return folder


def _write_zip(path: Path, members: dict[str, bytes], prefix: str) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(prefix + name, data)
    return path


def _write_npz(folder: Path, set_name: str, paper: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    labels = np.broadcast_to(np.arange(paper.shape[0])[:, None], paper.shape[:2])
    path = folder / f"images_{set_name}.npz"
    np.savez_compressed(path, images=paper, labels=labels)
    lines = ["# alphabet folder name\tset\tfirst char id\tlast char id"]
    for rows, which in ((BACKGROUND, "background"), (EVALUATION, "evaluation")):
        lines += [f"{a}\t{which}\t{first}\t{first + n - 1}" for a, first, n in rows]
    (folder / "alphabets.tsv").write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path | np.ndarray]:
    """The same synthetic background set as a folder, a zip, an npz; plus an evaluation set."""
    base = tmp_path_factory.mktemp("omniglot")
    bg, ev = _paper(5, seed=1), _paper(2, seed=2)
    bg_members, ev_members = _members(BACKGROUND, bg), _members(EVALUATION, ev)
    container = base / "container"
    _write_folder(container / "images_background", bg_members)
    _write_zip(container / "images_evaluation.zip", ev_members, "images_evaluation/")
    return {
        "paper": bg,
        "folder": _write_folder(base / "folder" / "images_background", bg_members),
        "zip": _write_zip(base / "images_background.zip", bg_members, "images_background/"),
        "flatzip": _write_zip(base / "flat.zip", bg_members, ""),
        "npz": _write_npz(base / "full", "background", bg),
        "npz_eval": _write_npz(base / "full", "evaluation", ev),
        "container": container,
    }


# -- formats agree ----------------------------------------------------------------------------


@pytest.mark.parametrize("size", [None, 8, 28])
def test_folder_zip_npz_give_identical_tensors(synth: dict, size: int | None) -> None:
    datasets = [Omniglot(synth[k], image_size=size) for k in ("folder", "zip", "flatzip", "npz")]
    ref = datasets[0]
    assert ref.summary() == {"classes": 5, "examples": 15, "alphabets": 2}
    for ds in datasets[1:]:
        assert ds.class_names == ref.class_names
        assert ds.class_alphabets == ref.class_alphabets
        assert torch.equal(ds.targets, ref.targets)
        assert torch.equal(ds.images, ref.images)
    # ... and they are the inverted drawings through the shared resize
    ink = torch.from_numpy(~synth["paper"]).to(torch.uint8).mul(255).reshape(-1, 1, SIDE, SIDE)
    assert torch.equal(ref.images, resize_images(ink, size))


def test_images_names_and_preprocessing(synth: dict) -> None:
    ds = Omniglot(synth["zip"], image_size=None)
    assert ds.images.dtype == torch.uint8 and ds.images.shape == (15, 1, SIDE, SIDE)
    assert ds.class_names == ["Greek/character01", "Greek/character02", "Greek/character03",
                              "Hebrew/character01", "Hebrew/character02"]
    assert ds.class_alphabets == ["Greek"] * 3 + ["Hebrew"] * 2
    assert ds.targets.tolist() == [c for c in range(5) for _ in range(DRAWERS)]
    # ink (False in the npz) is bright: 255; paper is 0
    assert torch.equal(ds.images[0, 0] == 255, torch.from_numpy(~synth["paper"][0, 0]))
    x, y = ds[4]
    assert x.dtype == torch.float32 and float(x.max()) == 1.0 and y == 1
    assert ds.files[0].endswith("images_background/Greek/character01/0001_01.png")
    assert Omniglot(synth["zip"]).preprocessing == {
        "dataset": "omniglot", "image_size": 28, "channels": 1, "invert": True}


def test_container_folder_reads_every_set(synth: dict) -> None:
    ds = Omniglot(synth["container"], image_size=8)
    assert ds.summary() == {"classes": 7, "examples": 21, "alphabets": 3}
    only = Omniglot(synth["container"], image_size=8, sets=["images_evaluation"])
    assert only.class_names == ["Kannada/character01", "Kannada/character02"]
    with pytest.raises(ValueError, match="images_small9"):
        Omniglot(synth["container"], sets=["images_small9"])
    both_npz = Omniglot([synth["npz"], synth["npz_eval"]], image_size=8)
    assert both_npz.class_names == ds.class_names
    assert torch.equal(both_npz.images, ds.images)
    assert Omniglot(synth["npz"].parent, image_size=8).num_classes == 7  # full/ holds both npz


def test_duplicates_across_roots_are_one_class(synth: dict) -> None:
    single = Omniglot(synth["folder"], image_size=8)
    both = Omniglot([synth["zip"], synth["folder"], synth["npz"]], image_size=8)
    assert both.class_names == single.class_names and len(both) == len(single)
    assert torch.equal(both.images, single.images)
    assert all(".zip:" in f for f in both.files)  # the first root wins
    union = Omniglot([synth["zip"], synth["container"]], image_size=8)
    assert union.num_classes == 7


def test_order_does_not_depend_on_roots(synth: dict) -> None:
    a = Omniglot([synth["npz"], synth["npz_eval"]], image_size=8)
    b = Omniglot([synth["npz_eval"], synth["npz"]], image_size=8)
    assert a.class_names == b.class_names and torch.equal(a.images, b.images)


def test_alphabet_filter(synth: dict) -> None:
    ds = Omniglot(synth["zip"], alphabets=["Hebrew"], image_size=8)
    assert ds.class_names == ["Hebrew/character01", "Hebrew/character02"]
    assert build_dataset("omniglot", synth["zip"], alphabets=["Hebrew"]).num_classes == 2
    with pytest.raises(ValueError, match="Klingon"):
        Omniglot(synth["zip"], alphabets=["Klingon"])


def test_rotations_are_new_classes(synth: dict) -> None:
    base = build_dataset("omniglot", synth["zip"], image_size=8)
    rot = build_dataset("omniglot", synth["zip"], image_size=8, rotations=True)
    assert isinstance(rot, RotatedClasses) and rot.num_classes == 4 * base.num_classes
    assert rot.class_names[0] == "Greek/character01/rot000"
    assert rot.class_names[base.num_classes] == "Greek/character01/rot090"
    assert rot.preprocessing == base.preprocessing
    x, _ = base[3]
    assert torch.equal(rot[2 * len(base) + 3][0], torch.rot90(x, 2, dims=(-2, -1)))
    two = build_dataset("omniglot", synth["zip"], image_size=8, rotations=[0, 180])
    assert two.num_classes == 2 * base.num_classes
    assert two.class_names[-1] == "Hebrew/character02/rot180"
    with pytest.raises(ValueError, match="rotations"):
        build_dataset("omniglot", synth["zip"], rotations=4)


def test_rotated_alphabets_keep_within_alphabet_episodes_in_one_orientation(synth: dict) -> None:
    from relgraph.data import EpisodeSampler
    from relgraph.engine.config import DataConfig
    from relgraph.engine.trainer import build_datasets

    data = DataConfig(dataset="omniglot", roots=[str(synth["zip"])], image_size=8,
                      val_fraction=0, rotations=True, rotated_alphabets=True)
    train, _ = build_datasets(data)
    c = train.num_classes // 4
    assert train.class_alphabets[0] == "Greek" and train.class_alphabets[c] == "Greek/rot090"
    sampler = EpisodeSampler(train, n_way=2, k_shot=1, n_query=1, within_alphabet=True,
                             num_batches=20, seed=0)
    for episode in sampler.episodes(train):
        groups = {train.class_alphabets[int(k)] for k in episode.class_ids.reshape(-1)}
        assert len(groups) == 1
    mixed, _ = build_datasets(DataConfig(dataset="omniglot", roots=[str(synth["zip"])],
                                         image_size=8, val_fraction=0, rotations=True))
    assert mixed.class_alphabets[c] == "Greek"
    with pytest.raises(ValueError, match="rotated_alphabets needs data.rotations"):
        build_datasets(DataConfig(dataset="omniglot", roots=[str(synth["zip"])],
                                  val_fraction=0, rotated_alphabets=True))


# -- the Vinyals split --------------------------------------------------------------------------


def test_vinyals_split_facts() -> None:
    assert vinyals_split("Gurmukhi/character41") == "train"
    assert vinyals_split("Gurmukhi/character42") == "test"
    assert vinyals_split("Gurmukhi/character45/rot090") == "test"
    assert vinyals_split("Hebrew/character01") == "val"
    assert vinyals_split("Tengwar/character03") == "test"
    assert vinyals_split("Angelic/character01") == "train"  # an evaluation alphabet in train
    assert len(VINYALS_TEST_ALPHABETS) == 13 and len(VINYALS_VAL_ALPHABETS) == 5


def test_split_selects_characters(tmp_path: Path) -> None:
    paper = _paper(1, seed=3)[0, 0]
    names = ["Gurmukhi/character41", "Gurmukhi/character42", "Hebrew/character01",
             "Latin/character01", "Kannada/character01"]
    _write_folder(tmp_path / "images_background",
                  {f"{n}/x_01.png": _png(paper) for n in names})
    expect = {
        "train": ["Gurmukhi/character41", "Latin/character01"],
        "val": ["Hebrew/character01"],
        "test": ["Gurmukhi/character42", "Kannada/character01"],
        "trainval": ["Gurmukhi/character41", "Hebrew/character01", "Latin/character01"],
    }
    for split, wanted in expect.items():
        assert Omniglot(tmp_path, split=split).class_names == wanted
    rot = build_dataset("omniglot", tmp_path, split="val", rotations=True)
    assert rot.class_names == [f"Hebrew/character01/rot{a:03d}" for a in (0, 90, 180, 270)]
    with pytest.raises(ValueError, match="split"):
        Omniglot(tmp_path, split="dev")
    with pytest.raises(ValueError, match="no Omniglot characters left.*'val'"):
        Omniglot(tmp_path, split="val", alphabets=["Latin"])


# -- bad input ----------------------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A small set folder to break in each test."""
    members = _members(BACKGROUND, _paper(5, seed=4))
    return _write_folder(tmp_path / "images_background", members)


def test_corrupt_image_named_or_skipped(tree: Path) -> None:
    bad = tree / "Greek" / "character02" / "0002_02.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(ValueError, match="0002_02.png"):
        Omniglot(tree)
    with pytest.warns(UserWarning, match="0002_02.png"):
        ds = Omniglot(tree, skip_bad=True)
    assert len(ds) == 14 and ds.class_counts().tolist() == [3, 2, 3, 3, 3]


def test_unsupported_file_named_or_skipped_and_junk_ignored(tree: Path) -> None:
    (tree / "Greek" / "character01" / ".DS_Store").write_bytes(b"junk")
    (tree / "Greek" / "Thumbs.db").write_bytes(b"junk")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(Omniglot(tree)) == 15  # junk is ignored silently
    notes = tree / "Greek" / "character01" / "notes.txt"
    notes.write_text("hello")
    with pytest.raises(ValueError, match="notes.txt"):
        Omniglot(tree)
    with pytest.warns(UserWarning, match="notes.txt"):
        assert len(Omniglot(tree, skip_bad=True)) == 15


def test_empty_class_folder(tree: Path) -> None:
    (tree / "Hebrew" / "character09").mkdir()
    with pytest.raises(ValueError, match="character09.*empty"):
        Omniglot(tree)
    with pytest.warns(UserWarning, match="character09"):
        assert Omniglot(tree, skip_bad=True).num_classes == 5


def test_class_with_only_bad_images_is_dropped(tree: Path) -> None:
    for f in (tree / "Hebrew" / "character02").iterdir():
        f.write_bytes(b"broken")
    with pytest.warns(UserWarning, match="Hebrew/character02"):
        ds = Omniglot(tree, skip_bad=True)
    assert ds.num_classes == 4


def test_missing_root_mentions_download(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="download=True") as info:
        Omniglot(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(info.value)


def test_folder_without_data(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("hi")
    with pytest.raises(ValueError, match="no Omniglot data found"):
        Omniglot(tmp_path)
    with pytest.raises(ValueError, match="unsupported Omniglot root"):
        Omniglot(tmp_path / "readme.txt")


def test_zip_without_layout(tmp_path: Path) -> None:
    png = _png(_paper(1, seed=5)[0, 0])
    flat = _write_zip(tmp_path / "flat.zip", {"a.png": png, "b.png": png}, "")
    with pytest.raises(ValueError, match="flat.zip.*layout"):
        Omniglot(flat)
    empty = _write_zip(tmp_path / "empty.zip", {"readme.txt": b"hi"}, "")
    with pytest.raises(ValueError, match="empty.zip has no images"):
        Omniglot(empty)
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="junk.zip"):
        Omniglot(junk)
    txt = _write_zip(tmp_path / "txt.zip", {"Greek/character01/a.png": png,
                                            "Greek/character01/a.txt": b"hi"}, "images_x/")
    with pytest.raises(ValueError, match=r"txt.zip:images_x/Greek/character01/a.txt"):
        Omniglot(txt)
    with pytest.warns(UserWarning, match="a.txt"):
        assert len(Omniglot(txt, skip_bad=True)) == 1
    corrupt = _write_zip(tmp_path / "corrupt.zip", {"Greek/character01/a.png": b"xx"}, "s/")
    with pytest.raises(ValueError, match=r"corrupt.zip:s/Greek/character01/a.png"):
        Omniglot(corrupt)


def test_npz_problems_name_the_file(tmp_path: Path) -> None:
    lone = tmp_path / "lone" / "images_background.npz"
    lone.parent.mkdir()
    np.savez(lone, images=_paper(5, seed=6))
    with pytest.raises(FileNotFoundError, match="alphabets.tsv"):
        Omniglot(lone)
    wrong = _write_npz(tmp_path / "wrong", "background", _paper(4, seed=6))  # tsv says 5
    with pytest.raises(ValueError, match="images_background.npz"):
        Omniglot(wrong)
    odd = wrong.parent / "images_other.npz"
    np.savez(odd, images=_paper(5, seed=6))
    with pytest.raises(ValueError, match="images_other.npz"):
        Omniglot(odd)


def test_mixed_image_sizes(tmp_path: Path) -> None:
    small, big = _paper(1, seed=7)[0, 0], np.ones((30, 30), dtype=bool)
    _write_folder(tmp_path / "images_background", {
        "Greek/character01/a.png": _png(small), "Greek/character01/b.png": _png(big)})
    assert Omniglot(tmp_path, image_size=10).images.shape == (2, 1, 10, 10)
    with pytest.raises(ValueError, match="image_size"):
        Omniglot(tmp_path, image_size=None)


# -- real data ----------------------------------------------------------------------------------


@pytest.mark.data
def test_real_small1_zip(shared_data: Path) -> None:
    ds = Omniglot(shared_data / "omniglot" / "images_background_small1.zip")
    assert ds.summary() == {"classes": 136, "examples": 2720, "alphabets": 5}
    assert ds.images.shape == (2720, 1, 28, 28)
    assert (ds.class_counts() == 20).all()


@pytest.mark.data
def test_real_small_sets_share_greek_and_latin(shared_data: Path) -> None:
    root = shared_data / "omniglot"
    ds = Omniglot([root / "images_background_small1.zip", root / "images_background_small2.zip"])
    # 136 + 156 characters, of which Greek (24) and Latin (26) are in both
    assert ds.summary() == {"classes": 136 + 156 - 50, "examples": 242 * 20, "alphabets": 8}


@pytest.mark.data
def test_real_npz_counts_and_speed(shared_data: Path) -> None:
    full = shared_data / "omniglot" / "full"
    start = time.perf_counter()
    bg = Omniglot(full / "images_background.npz")
    ev = Omniglot(full / "images_evaluation.npz")
    both = Omniglot([full / "images_background.npz", full / "images_evaluation.npz"])
    elapsed = time.perf_counter() - start
    assert (bg.num_classes, len(bg.alphabets)) == (964, 30)
    assert (ev.num_classes, len(ev.alphabets)) == (659, 20)
    assert both.summary() == {"classes": 1623, "examples": 32460, "alphabets": 50}
    assert elapsed < 30, f"loading the npz files took {elapsed:.1f}s"


@pytest.mark.data
def test_real_png_and_npz_agree(shared_data: Path) -> None:
    root = shared_data / "omniglot"
    png = Omniglot(root / "images_background_small1.zip", image_size=None)
    npz = Omniglot(root / "full" / "images_background.npz", image_size=None,
                   alphabets=png.alphabets)
    assert npz.class_names == png.class_names
    assert torch.equal(npz.images, png.images)
    png28 = Omniglot(root / "images_background_small1.zip")
    npz28 = Omniglot(root / "full" / "images_background.npz", alphabets=png.alphabets)
    assert torch.equal(npz28.images, png28.images)


@pytest.mark.data
@pytest.mark.parametrize("split,characters", [("train", 1028), ("val", 172), ("test", 423),
                                              ("trainval", 1200)])
def test_real_vinyals_split_matches_files(shared_data: Path, split: str, characters: int) -> None:
    root = shared_data / "omniglot"
    ds = build_dataset("omniglot", root / "full", split=split, rotations=True, image_size=8)
    expected = (root / "splits" / "vinyals" / f"{split}.txt").read_text().split()
    assert len(expected) == 4 * characters
    assert sorted(ds.class_names) == sorted(expected)
