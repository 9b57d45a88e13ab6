"""The decoded-image cache: memory-mapped, identical, invalidated when a source changes."""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from relgraph.data import omniglot
from relgraph.data.decoded import decoded_cache_path, load_decoded, save_decoded
from relgraph.data.omniglot import Omniglot
from relgraph.utils import cache_dir


def _png(seed: int) -> bytes:
    paper = np.random.default_rng(seed).random((12, 12)) > 0.2
    buf = io.BytesIO()
    Image.fromarray(paper).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(autouse=True)
def _own_cache(_isolated_cache: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cache folder of this test's own (the session's is shared by every test)."""
    monkeypatch.setenv("RELGRAPH_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A set folder: 2 alphabets x 2 characters x 3 drawers of random 12 px drawings."""
    root = tmp_path / "images_background"
    seed = 0
    for alphabet in ("Greek", "Latin"):
        for char in (1, 2):
            folder = root / alphabet / f"character{char:02d}"
            folder.mkdir(parents=True)
            for drawer in (1, 2, 3):
                seed += 1
                (folder / f"{seed:04d}_{drawer:02d}.png").write_bytes(_png(seed))
    return tmp_path


def _cached_files() -> list[Path]:
    folder = cache_dir() / "decoded"
    return sorted(folder.glob("omniglot-*.npy")) if folder.is_dir() else []


def _same(a: Omniglot, b: Omniglot) -> None:
    assert torch.equal(a.images, b.images)
    assert torch.equal(a.targets, b.targets)
    assert a.class_names == b.class_names and a.class_alphabets == b.class_alphabets
    assert a.files == b.files and a.preprocessing == b.preprocessing


def test_second_build_reads_the_memory_mapped_cache(tree, monkeypatch):
    first = Omniglot(tree, image_size=8)
    assert len(_cached_files()) == 1
    with monkeypatch.context() as m:
        m.setattr(omniglot, "_decode", lambda *a: pytest.fail("decoded again"))
        second = Omniglot(tree, image_size=8)
    _same(first, second)
    _same(second, Omniglot(tree, image_size=8, cache=False))
    if Path("/proc/self/maps").is_file():  # Linux: the images are the mapped cache file
        (npy,) = _cached_files()
        ptr = second.images.data_ptr()
        spans = [line.split()[0].split("-") for line in Path("/proc/self/maps").read_text()
                 .splitlines() if line.endswith(str(npy))]
        assert any(int(lo, 16) <= ptr < int(hi, 16) for lo, hi in spans)
    assert len(Omniglot(tree, image_size=8, alphabets=["Latin"])) == 6
    assert len(_cached_files()) == 2, "a different selection is a different cache entry"


def test_a_changed_source_is_decoded_again(tree):
    before = Omniglot(tree, image_size=None)
    png = sorted(tree.rglob("*.png"))[4]
    png.write_bytes(_png(99))
    stat = png.stat()
    os.utime(png, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # coarse file systems
    after = Omniglot(tree, image_size=None)
    assert not torch.equal(before.images, after.images)
    _same(after, Omniglot(tree, image_size=None, cache=False))
    assert len(_cached_files()) == 2


def test_a_damaged_cache_file_warns_and_is_rebuilt(tree):
    first = Omniglot(tree, image_size=8)
    (path,) = _cached_files()
    path.write_bytes(b"not an npy file")
    with pytest.warns(UserWarning, match=r"ignoring the damaged decoded-image cache .*omniglot-"):
        again = Omniglot(tree, image_size=8)
    _same(first, again)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _same(first, Omniglot(tree, image_size=8))  # rewritten


def test_decodings_that_skipped_files_are_not_cached(tree):
    bad = sorted(tree.rglob("*.png"))[0]
    bad.write_bytes(b"broken")
    for _ in range(2):  # the warning comes every time: nothing was cached
        with pytest.warns(UserWarning, match=f"skipped {bad}"):
            ds = Omniglot(tree, image_size=8, skip_bad=True)
        assert len(ds) == 11
    assert _cached_files() == []


def test_cache_false_writes_nothing(tree):
    Omniglot(tree, image_size=8, cache=False)
    assert _cached_files() == []


def test_save_decoded_refuses_what_it_cannot_hold(tmp_path):
    path = decoded_cache_path("x", {"a": 1}, folder=tmp_path)
    assert path.parent == tmp_path and path.name.startswith("x-") and path.suffix == ".npy"
    assert decoded_cache_path("x", {"a": 2}, folder=tmp_path) != path
    with pytest.raises(ValueError, match=r"uint8 \[N, c, h, w\], got torch.float32"):
        save_decoded(path, torch.zeros(1, 1, 2, 2), {})
    assert load_decoded(path) is None
    save_decoded(path, torch.ones(3, 1, 2, 2, dtype=torch.uint8), {"note": "hi"})
    images, meta = load_decoded(path)
    assert images.shape == (3, 1, 2, 2) and meta == {"note": "hi", "shape": [3, 1, 2, 2]}
