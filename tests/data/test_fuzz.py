"""Fuzzing the readers (issue 21): random, truncated and bit-flipped bytes in PNG images, zips,
npz files, Lake et al. runs, image folders and YAML configs.

Every case either reads or fails with the library's own error, a ``ValueError`` or
``FileNotFoundError`` naming the file (what the command line turns into one line and exit 2);
never an internal error (``TypeError``, ``KeyError``, ``zlib.error``, ``struct.error``,
``UnicodeDecodeError`` without the file...), and nothing is written beside the input.
"""

from __future__ import annotations

import io
import os
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

# CI runs the same 40 examples per reader every time; RELGRAPH_FUZZ_EXAMPLES=2000 fuzzes
# deeper with fresh random examples.
_DEEP = int(os.environ.get("RELGRAPH_FUZZ_EXAMPLES", "0"))
FUZZ = settings(max_examples=_DEEP or 40, deadline=None, derandomize=not _DEEP, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


def png_bytes(seed: int = 0, size: int = 12) -> bytes:
    g = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray((g.random((size, size)) > 0.5).astype(np.uint8) * 255).save(buf, "PNG")
    return buf.getvalue()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


@st.composite
def damaged(draw: st.DrawFn, valid: bytes) -> bytes:
    """Random bytes, a truncation, or a few bytes overwritten, of the valid file ``valid``."""
    kind = draw(st.sampled_from(["random", "truncated", "flipped", "flipped"]))
    if kind == "random":
        return draw(st.binary(max_size=600))
    if kind == "truncated":
        return valid[: draw(st.integers(0, len(valid) - 1))]
    data = bytearray(valid)
    for i, v in draw(st.lists(st.tuples(st.integers(0, len(valid) - 1), st.integers(0, 255)),
                              min_size=1, max_size=6)):
        data[i] = v
    return bytes(data)


def check_reader(read: Callable[[Path], object], path: Path, data: bytes,
                 name: str | None = None) -> None:
    """Write ``data`` to ``path`` and read it: success, or a library error naming the file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    before = sorted(p for p in path.parent.parent.rglob("*"))
    try:
        read(path)
    except (ValueError, FileNotFoundError) as exc:
        message = str(exc.args[0]) if exc.args else str(exc)
        assert (name or str(path)) in message, f"{type(exc).__name__} without the file: {exc}"
        assert type(exc) is not UnicodeDecodeError, f"internal error leaked: {exc!r}"
    # anything else propagates and fails the test with its traceback
    assert sorted(path.parent.parent.rglob("*")) == before, "the reader wrote files"


# -- PNG images --------------------------------------------------------------------------------


@FUZZ
@given(data=damaged(png_bytes()))
def test_fuzz_png(data):
    from relgraph.data.io import decode_image

    try:
        decode_image(data, "fuzz.png")
    except ValueError as exc:
        assert "fuzz.png" in str(exc)


# -- Omniglot zips and npz ---------------------------------------------------------------------

OMNIGLOT_ZIP = zip_bytes({f"images_background/Alpha/character0{c}/{c}_{i}.png": png_bytes(3 * c + i)
                          for c in (1, 2) for i in (1, 2)})


@FUZZ
@given(data=damaged(OMNIGLOT_ZIP))
def test_fuzz_omniglot_zip(data):
    from relgraph.data.omniglot import Omniglot

    with tempfile.TemporaryDirectory() as tmp:
        check_reader(lambda p: Omniglot(p, image_size=8),
                     Path(tmp, "d", "images_background.zip"), data)


def npz_bytes(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


OMNIGLOT_NPZ = npz_bytes(images=np.ones((2, 2, 6, 6), dtype=bool))


@FUZZ
@given(data=damaged(OMNIGLOT_NPZ))
def test_fuzz_omniglot_npz(data):
    from relgraph.data.omniglot import Omniglot

    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "d").mkdir()
        Path(tmp, "d", "alphabets.tsv").write_text("Alpha\tbackground\t1\t2\n")
        check_reader(lambda p: Omniglot(p, image_size=8), Path(tmp, "d", "images_background.npz"),
                     data)


@FUZZ
@given(text=st.text(max_size=80))
def test_fuzz_omniglot_npz_tsv(text):
    from relgraph.data.omniglot import Omniglot

    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "d").mkdir()
        Path(tmp, "d", "images_background.npz").write_bytes(OMNIGLOT_NPZ)
        tsv = Path(tmp, "d", "alphabets.tsv")
        check_reader(lambda p: Omniglot(p.parent / "images_background.npz", image_size=8),
                     tsv, text.encode("utf-8", "surrogatepass"))


TENSORS_NPZ = npz_bytes(inputs=np.zeros((6, 1, 4, 4), dtype=np.float32),
                        labels=np.arange(6) % 3)


@FUZZ
@given(data=damaged(TENSORS_NPZ))
def test_fuzz_tensors_npz(data):
    from relgraph.data import build_dataset

    with tempfile.TemporaryDirectory() as tmp:
        check_reader(lambda p: build_dataset("tensors", [str(p)]), Path(tmp, "d", "x.npz"), data)


def _pt_bytes() -> bytes:
    buf = io.BytesIO()
    torch.save({"inputs": torch.zeros(6, 1, 4, 4), "labels": torch.arange(6) % 3}, buf)
    return buf.getvalue()


@FUZZ
@given(data=damaged(_pt_bytes()))
def test_fuzz_tensors_pt(data):
    from relgraph.data import build_dataset

    with tempfile.TemporaryDirectory() as tmp:
        check_reader(lambda p: build_dataset("tensors", [str(p)]), Path(tmp, "d", "x.pt"), data)


# -- Lake et al. one-shot runs -------------------------------------------------------------------

LABELS = b"run01/test/item01.png run01/training/class01.png\n" \
         b"run01/test/item02.png run01/training/class02.png\n"
LAKE_ZIP = zip_bytes({"all_runs/run01/training/class01.png": png_bytes(1),
                      "all_runs/run01/training/class02.png": png_bytes(2),
                      "all_runs/run01/test/item01.png": png_bytes(3),
                      "all_runs/run01/test/item02.png": png_bytes(4),
                      "all_runs/run01/class_labels.txt": LABELS})


@FUZZ
@given(data=damaged(LAKE_ZIP))
def test_fuzz_lake_zip(data):
    from relgraph.data.lake import load_lake_runs

    with tempfile.TemporaryDirectory() as tmp:
        check_reader(lambda p: load_lake_runs(p, image_size=8), Path(tmp, "d", "runs.zip"), data)


@FUZZ
@given(data=damaged(LABELS))
def test_fuzz_lake_labels(data):
    from relgraph.data.lake import load_lake_runs

    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp, "d", "run01")
        for folder, names in (("training", ("class01", "class02")), ("test", ("item01", "item02"))):
            (run / folder).mkdir(parents=True)
            for i, n in enumerate(names):
                (run / folder / f"{n}.png").write_bytes(png_bytes(i))
        check_reader(lambda p: load_lake_runs(p.parents[1], image_size=8),
                     run / "class_labels.txt", data)


# -- image folders -----------------------------------------------------------------------------


@FUZZ
@given(data=damaged(png_bytes(7)))
def test_fuzz_image_folder(data):
    from relgraph.data.folder import ImageFolderDataset

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp, "d")
        for c in ("a", "b"):
            (root / c).mkdir(parents=True)
            (root / c / "1.png").write_bytes(png_bytes(ord(c)))
        check_reader(lambda p: ImageFolderDataset(root, image_size=8, channels=1),
                     root / "b" / "2.png", data)


# -- YAML configs ---------------------------------------------------------------------------------

CONFIG = b"""method: protonet
method_args: {distance: euclidean}
data: {dataset: glyphs, val_fraction: 0.2, roots: [a, b]}
train: {ways: 5, shots: 1, lr: 1e-3, steps: 10, optimizer: adam}
eval: {ways: 5, episodes: 100}
"""

yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["method", "train", "data", "eval", "lr", "ways", "roots", "steps",
                         "dataset", "x"]) | st.integers(), inner, max_size=3),
    max_leaves=8)


@FUZZ
@given(data=damaged(CONFIG))
def test_fuzz_config_bytes(data):
    from relgraph.engine.config import load_config

    with tempfile.TemporaryDirectory() as tmp:
        check_reader(load_config, Path(tmp, "d", "config.yaml"), data)


@FUZZ
@given(value=yaml_values)
def test_fuzz_config_structure(value):
    import yaml

    from relgraph.engine.config import load_config

    with tempfile.TemporaryDirectory() as tmp:
        check_reader(load_config, Path(tmp, "d", "config.yaml"),
                     yaml.safe_dump(value).encode())


def test_fuzz_files_are_valid_when_undamaged(tmp_path):
    """The fuzzed files read when intact, so the fuzzing reaches past the first check."""
    from relgraph.data import build_dataset
    from relgraph.data.lake import load_lake_runs
    from relgraph.data.omniglot import Omniglot
    from relgraph.engine.config import load_config

    (tmp_path / "images_background.zip").write_bytes(OMNIGLOT_ZIP)
    assert Omniglot(tmp_path / "images_background.zip", image_size=8).num_classes == 2
    (tmp_path / "n").mkdir()
    (tmp_path / "n" / "alphabets.tsv").write_text("Alpha\tbackground\t1\t2\n")
    (tmp_path / "n" / "images_background.npz").write_bytes(OMNIGLOT_NPZ)
    assert Omniglot(tmp_path / "n" / "images_background.npz", image_size=8).num_classes == 2
    (tmp_path / "x.npz").write_bytes(TENSORS_NPZ)
    assert build_dataset("tensors", [str(tmp_path / "x.npz")]).num_classes == 3
    (tmp_path / "runs.zip").write_bytes(LAKE_ZIP)
    assert len(load_lake_runs(tmp_path / "runs.zip", image_size=8)) == 1
    (tmp_path / "c.yaml").write_bytes(CONFIG)
    assert load_config(tmp_path / "c.yaml").train.lr == 0.001
    assert os.listdir(tmp_path)  # nothing else to check: the readers returned
