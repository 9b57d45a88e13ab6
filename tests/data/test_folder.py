"""The ``folder`` dataset and bad files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from relgraph.data import ImageFolderDataset, build_dataset


def make_tree(root: Path, classes=("cat", "dog"), per_class: int = 3, size=(10, 12)) -> Path:
    for c, name in enumerate(classes):
        d = root / name
        d.mkdir(parents=True)
        for i in range(per_class):
            color = (40 * c + 10 * i, 100, 200)
            Image.new("RGB", size, color).save(d / f"{i}.png")
    return root


def test_reads_rgb_tree(tmp_path):
    make_tree(tmp_path)
    (tmp_path / "dog" / ".DS_Store").write_text("junk")  # ignored silently
    ds = build_dataset("folder", tmp_path, image_size=8)
    assert ds.class_names == ["cat", "dog"] and len(ds) == 6
    x, y = ds[4]
    assert x.shape == (3, 8, 8) and y == 1
    assert torch.allclose(x[:, 0, 0], torch.tensor([50, 100, 200]) / 255, atol=1 / 255)
    assert ds.preprocessing == {"dataset": "folder", "image_size": 8, "channels": 3,
                                "invert": False}


def test_grayscale_lazy_and_several_roots(tmp_path):
    make_tree(tmp_path / "a", classes=("cat",))
    make_tree(tmp_path / "b", classes=("cat", "owl"))
    ds = ImageFolderDataset([tmp_path / "a", tmp_path / "b"], image_size=5, channels=1,
                            lazy=True)
    assert ds.class_names == ["cat", "owl"] and ds.class_counts().tolist() == [6, 3]
    assert ds.get_batch(torch.tensor([0, 8])).shape == (2, 1, 5, 5)


def test_corrupt_image_is_named(tmp_path):
    make_tree(tmp_path)
    bad = tmp_path / "cat" / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    with pytest.raises(ValueError, match=r"cannot read image .*broken\.png"):
        ImageFolderDataset(tmp_path)
    with pytest.warns(UserWarning, match=r"broken\.png"):
        ds = ImageFolderDataset(tmp_path, skip_bad=True)
    assert len(ds) == 6


def test_unsupported_file_and_empty_class(tmp_path):
    make_tree(tmp_path)
    (tmp_path / "cat" / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match=r"notes\.txt is not a supported image"):
        ImageFolderDataset(tmp_path)
    (tmp_path / "cat" / "notes.txt").unlink()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"class folder .*empty holds no images"):
        ImageFolderDataset(tmp_path)
    with pytest.warns(UserWarning, match="holds no images"):
        ds = ImageFolderDataset(tmp_path, skip_bad=True)
    assert ds.class_names == ["cat", "dog"]


def test_missing_root_and_no_images(tmp_path):
    with pytest.raises(ValueError, match="is not a folder"):
        ImageFolderDataset(tmp_path / "nope")
    with pytest.raises(ValueError, match="no images found"):
        ImageFolderDataset(tmp_path)


def test_mixed_sizes_need_image_size(tmp_path):
    make_tree(tmp_path / "r", classes=("a",), size=(4, 4))
    make_tree(tmp_path / "s", classes=("b",), size=(5, 5))
    with pytest.raises(ValueError, match="different sizes"):
        ImageFolderDataset([tmp_path / "r", tmp_path / "s"], image_size=None)
    assert len(ImageFolderDataset([tmp_path / "r", tmp_path / "s"], image_size=4)) == 6


def _encoded(img: Image.Image, fmt: str = "PNG", **kwargs: object) -> bytes:
    import io

    buffer = io.BytesIO()
    img.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def test_images_decode_as_a_viewer_shows_them():
    """Transparency onto white paper (convert() dropped alpha: a blank image), 16-bit and
    float pixels scaled (convert() clipped them to two levels), EXIF orientation applied."""
    import numpy as np

    from relgraph.data.io import decode_image

    stroke = np.zeros((10, 10, 4), np.uint8)
    stroke[3:7, 3:7, 3] = 255  # opaque black ink on a transparent background
    ink = decode_image(_encoded(Image.fromarray(stroke, "RGBA")), "ink.png", invert=True)
    assert ink.unique().tolist() == [0, 255] and int(ink[0, 4, 4]) == 255
    ramp = (np.arange(100).reshape(10, 10) * 660).astype(np.uint16)
    assert decode_image(_encoded(Image.fromarray(ramp)), "r16.png").unique().numel() == 100
    floats = (np.arange(100).reshape(10, 10) / 99).astype(np.float32)
    scaled = decode_image(_encoded(Image.fromarray(floats, "F"), "TIFF"), "f.tif")
    assert scaled.unique().numel() == 100 and int(scaled.max()) == 255
    photo = Image.fromarray(np.zeros((10, 30, 3), np.uint8))
    exif = photo.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    turned = decode_image(_encoded(photo, "JPEG", exif=exif.tobytes()), "p.jpg", channels=3)
    assert tuple(turned.shape) == (3, 30, 10)


def test_lazy_folder_with_skip_bad_leaves_bad_files_out_at_construction(tmp_path):
    """Read on access, a damaged file used to raise mid-training although skip_bad was set."""
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(2):
            Image.new("L", (8, 8), color=40 * i).save(tmp_path / c / f"{i}.png")
    (tmp_path / "b" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.warns(UserWarning, match="bad.png"):
        ds = ImageFolderDataset(tmp_path, lazy=True, skip_bad=True, image_size=8, channels=1)
    assert len(ds) == 4
    assert ds.get_batch(torch.arange(4)).shape == (4, 1, 8, 8)
