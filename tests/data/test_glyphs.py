"""Tests for the embedded ``glyphs`` data set (relgraph.data.glyphs).

The full default set is generated once per module (a few seconds) into a temporary cache;
the other tests use small ``max_classes`` subsets.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path

import numpy as np
import pytest
import torch

import relgraph
from relgraph.data import glyphs
from relgraph.data.glyphs import GlyphsDataset


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("glyphs-cache")


@pytest.fixture(scope="module")
def full(cache: Path) -> GlyphsDataset:
    """The default set (all splits, 28 x 28, 20 examples, seed 0), generated once."""
    return GlyphsDataset(cache_dir=cache)


def test_default_size(full: GlyphsDataset) -> None:
    assert not full.from_cache
    assert full.num_classes >= 1000
    assert len(full.alphabets) >= 8
    assert int(full.class_counts().min()) >= 20
    assert full.images.shape == (len(full), 1, 28, 28)
    assert full.summary()["alphabets"] == len(full.alphabets)


def test_images_bright_ink_on_black(full: GlyphsDataset) -> None:
    images = full.images
    assert images.dtype == torch.uint8
    border = torch.cat([images[..., 0, :], images[..., -1, :],
                        images[..., :, 0], images[..., :, -1]], dim=-1)
    assert (border == 0).float().mean() > 0.99  # background is black
    assert int(images[..., 0, 0].max()) == 0  # corners always are
    flat = images.flatten(1)
    assert int(flat.max(dim=1).values.min()) >= 128  # every image has bright ink
    assert float((flat > 0).float().mean()) < 0.3  # ...on a mostly black background
    batch = full.get_batch(torch.arange(5))
    assert batch.dtype == torch.float32 and batch.shape == (5, 1, 28, 28)
    assert 0.0 <= float(batch.min()) and float(batch.max()) <= 1.0


def test_names_and_alphabets(full: GlyphsDataset) -> None:
    assert len(set(full.class_names)) == full.num_classes
    for name, alphabet, cp in zip(full.class_names, full.class_alphabets, full.codepoints,
                                  strict=True):
        assert name == f"{alphabet}/{unicodedata.name(chr(cp))}"
        assert glyphs.glyph_alphabet(cp) == alphabet
    for script in ("Latin", "Greek", "Cyrillic", "Armenian", "Hebrew", "Arabic", "Georgian"):
        assert script in full.alphabets
    assert full.preprocessing["dataset"] == "glyphs"
    assert full.preprocessing["image_size"] == 28
    assert full.preprocessing["channels"] == 1
    assert full.preprocessing["invert"] is False


def test_rules_drop_accents_homoglyphs_and_case_pairs(full: GlyphsDataset) -> None:
    codepoints = set(full.codepoints)
    assert ord("A") in codepoints
    assert ord("\u0391") not in codepoints  # GREEK CAPITAL LETTER ALPHA looks like A
    assert ord("\u0410") not in codepoints  # CYRILLIC CAPITAL LETTER A too
    assert ord("\u00e9") not in codepoints  # e with acute: NFKD-decomposable
    assert len({ord("o"), ord("O")} & codepoints) == 1
    for cp in codepoints:
        ch = chr(cp)
        assert unicodedata.category(ch) in ("Lu", "Ll", "Lt", "Lo")
        assert unicodedata.normalize("NFKD", ch) == ch


def test_classes_visually_distinct(full: GlyphsDataset) -> None:
    canon = glyphs.canonical_images()
    assert canon.shape == (full.num_classes, 28, 28)
    assert [c for c, _, _ in glyphs.glyph_classes()] == full.codepoints
    unmatched, iou = glyphs.glyph_distances(canon)  # what near_duplicates() thresholds
    off = ~torch.eye(len(canon), dtype=torch.bool)
    assert float(unmatched[off].min()) > glyphs.DEDUP_UNMATCHED
    assert float(iou[off].max()) < glyphs.DEDUP_IOU
    # an independent check: no two canonical images are nearly equal pixel for pixel
    flat = canon.flatten(1)
    rms = torch.cdist(flat, flat) / flat.shape[1] ** 0.5
    assert float(rms[off].min()) > 0.05


def test_near_duplicates_measure() -> None:
    a = torch.zeros(3, 28, 28)
    a[0, 4:24, 12:15] = 1.0  # a bar
    a[1, 4:24, 12:15] = 1.0
    a[1, 4, 12:14] = 0.0  # the same bar, one corner nicked
    a[2, 12:15, 4:24] = 1.0  # a crossing bar
    dup = glyphs.near_duplicates(a)
    assert dup.tolist() == [[False, True, False], [True, False, False], [False, False, False]]


def test_splits_by_alphabet(full: GlyphsDataset, cache: Path) -> None:
    splits = {s: GlyphsDataset(split=s, cache_dir=cache) for s in ("train", "val", "test")}
    for ds in splits.values():
        assert ds.from_cache
    alphabets = {s: set(ds.alphabets) for s, ds in splits.items()}
    assert not alphabets["train"] & alphabets["val"]
    assert not alphabets["train"] & alphabets["test"]
    assert not alphabets["val"] & alphabets["test"]
    names = [n for ds in splits.values() for n in ds.class_names]
    assert sorted(names) == sorted(full.class_names)
    assert sum(len(ds) for ds in splits.values()) == len(full)
    assert set(alphabets["val"]) == set(glyphs.SPLITS["val"])
    assert set(alphabets["test"]) == set(glyphs.SPLITS["test"])
    assert splits["train"].num_classes > splits["test"].num_classes
    for s in ("val", "test"):
        assert splits[s].num_classes >= 100
        counts: dict[str, int] = {}
        for a in splits[s].class_alphabets:
            counts[a] = counts.get(a, 0) + 1
        assert min(counts.values()) >= 20, counts
    # split examples are the full set's examples of those classes
    test = splits["test"]
    first = full.class_names.index(test.class_names[0])
    torch.testing.assert_close(test.images[test.targets == 0],
                               full.images[full.targets == first])


def test_generation_deterministic() -> None:
    a = glyphs.generate_glyphs(examples_per_class=4, max_classes=30)
    b = glyphs.generate_glyphs(examples_per_class=4, max_classes=30)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    c = glyphs.generate_glyphs(examples_per_class=4, max_classes=30, seed=1)
    np.testing.assert_array_equal(a["codepoints"], c["codepoints"])
    assert not np.array_equal(a["images"], c["images"])


def test_examples_depend_only_on_seed_class_and_index(full: GlyphsDataset) -> None:
    small = glyphs.generate_glyphs(examples_per_class=3, max_classes=25)
    assert len(small["codepoints"]) <= 25
    images = full.images.numpy().astype(np.int16)
    for k, cp in enumerate(small["codepoints"].tolist()):
        c = full.codepoints.index(cp)
        ref = images[(full.targets == c).numpy()][:3]
        got = small["images"][small["targets"] == k].astype(np.int16)
        assert np.abs(ref - got).max() <= 1  # equal up to float rounding


def test_cache_reused(tmp_path: Path) -> None:
    first = GlyphsDataset(examples_per_class=2, max_classes=12, cache_dir=tmp_path)
    assert not first.from_cache
    assert first.cache_path.parent == tmp_path
    assert glyphs.GLYPHS_VERSION in first.cache_path.name
    assert [p.name for p in tmp_path.iterdir()] == [first.cache_path.name]  # no temp left
    second = GlyphsDataset(examples_per_class=2, max_classes=12, cache_dir=tmp_path)
    assert second.from_cache
    assert torch.equal(first.images, second.images)
    assert first.class_names == second.class_names
    assert first.class_alphabets == second.class_alphabets
    # a damaged cache file is regenerated: a foreign one, and a truncated one (a bad zip)
    whole = first.cache_path.read_bytes()
    for damaged in (b"not an npz", whole[: len(whole) // 2]):
        first.cache_path.write_bytes(damaged)
        third = GlyphsDataset(examples_per_class=2, max_classes=12, cache_dir=tmp_path)
        assert not third.from_cache
        assert torch.equal(first.images, third.images)


def test_unwritable_cache_warns_and_keeps_the_images(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    with pytest.warns(UserWarning, match="could not write the glyphs cache"):
        ds = GlyphsDataset(examples_per_class=2, max_classes=12, cache_dir=not_a_folder)
    assert not ds.from_cache and len(ds) == 2 * ds.num_classes


def test_default_cache_dir_and_image_size(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELGRAPH_CACHE", str(tmp_path))
    ds = GlyphsDataset(image_size=40, examples_per_class=2, max_classes=8)
    assert ds.cache_path.parent == tmp_path
    assert ds.images.shape == (len(ds), 1, 40, 40)
    assert ds.preprocessing["image_size"] == 40


def test_build_dataset(full: GlyphsDataset, cache: Path,
                       monkeypatch: pytest.MonkeyPatch) -> None:
    assert "glyphs" in relgraph.data.list_datasets()
    monkeypatch.setenv("RELGRAPH_CACHE", str(cache))
    train = relgraph.build_dataset("glyphs", split="train")
    assert isinstance(train, GlyphsDataset) and train.from_cache
    assert train.num_classes == sum(1 for a in full.class_alphabets
                                    if a not in glyphs.SPLITS["val"] + glyphs.SPLITS["test"])
    val = relgraph.build_dataset("glyphs", roots=[cache], split="val")
    assert val.from_cache and val.alphabets == sorted(glyphs.SPLITS["val"])
    greek = relgraph.build_dataset("glyphs", roots=str(cache), alphabets=["Greek"])
    assert greek.alphabets == ["Greek"]


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="split"):
        GlyphsDataset(split="valid", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="at most one root"):
        relgraph.build_dataset("glyphs", roots=[tmp_path, tmp_path])
    with pytest.raises(ValueError):
        glyphs.generate_glyphs(image_size=0)
