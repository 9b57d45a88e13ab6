"""Reading images from files, zips and bytes, with errors that name the file."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

__all__ = ["IMAGE_EXTENSIONS", "decode_image", "read_image", "is_image_file"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
                    ".pgm")


def is_image_file(name: str | os.PathLike[str]) -> bool:
    """Whether ``name`` has a supported image extension (case-insensitive)."""
    return str(name).lower().endswith(IMAGE_EXTENSIONS)


def decode_image(data: bytes | Path | str, name: str, channels: int = 1,
                 invert: bool = False) -> Tensor:
    """Decode one image to a uint8 tensor ``[channels, h, w]``.

    Args:
        data: the encoded bytes, or a path to read.
        name: how to name the image in an error (its path, or ``archive.zip:member``).
        channels: 1 (grayscale) or 3 (RGB); the image is converted as needed.
        invert: return ``255 - pixel`` (Omniglot-style data: dark ink on white paper becomes
            bright ink on black, so that empty paper is 0).

    Raises:
        ValueError: the file cannot be read or is not an image; the message names the file.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    try:
        source = io.BytesIO(data) if isinstance(data, bytes) else open(data, "rb")  # noqa: SIM115
        with source, Image.open(source) as img:
            img.load()
            img = img.convert("L" if channels == 1 else "RGB")
            arr = np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f"cannot read image {name}: {exc}. Remove or replace this file (or "
                         "pass skip_bad=True to skip unreadable files with a warning).") from exc
    tensor = torch.from_numpy(arr.copy())
    tensor = tensor.unsqueeze(0) if channels == 1 else tensor.permute(2, 0, 1).contiguous()
    return 255 - tensor if invert else tensor


def read_image(path: str | os.PathLike[str], channels: int = 1, invert: bool = False) -> Tensor:
    """Read the image file at ``path``: see :func:`decode_image`."""
    return decode_image(Path(path), str(path), channels=channels, invert=invert)
