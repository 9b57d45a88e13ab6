"""Reading images from files, zips and bytes, with errors that name the file."""

from __future__ import annotations

import io
import os
import pickle
import struct
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

__all__ = ["IMAGE_EXTENSIONS", "decode_image", "read_image", "is_image_file", "open_zip",
           "read_zip_member", "read_text", "read_npz", "read_pickle", "ZIP_ERRORS"]

#: What :mod:`zipfile` raises on damaged archives (a bad header, a CRC or a deflate error, a
#: size field past the end, a name that is not UTF-8, an unknown compression method).
ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, struct.error, EOFError,
              OSError, ValueError, NotImplementedError, KeyError, RuntimeError)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
                    ".pgm")


ROOT_OPTION = "the dataset root you gave (relgraph --root, or data.roots in a config)"


def file_not_found(path: str | os.PathLike[str], given_by: str = ROOT_OPTION
                   ) -> FileNotFoundError:
    """The error for a missing data file: names it, says where a relative path was looked
    for, and which option gave the path (``given_by``; by default a dataset's root)."""
    where = "" if Path(path).is_absolute() else f" (a relative path is read from {Path.cwd()})"
    return FileNotFoundError(f"{path} not found{where}; check {given_by}")


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
            img = _eight_bit(img).convert("L" if channels == 1 else "RGB")
            arr = np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f"cannot read image {name}: {exc}. Remove or replace this file (or "
                         "pass skip_bad=True to skip unreadable files with a warning).") from exc
    tensor = torch.from_numpy(arr.copy())
    tensor = tensor.unsqueeze(0) if channels == 1 else tensor.permute(2, 0, 1).contiguous()
    return 255 - tensor if invert else tensor


#: The EXIF tag of an image's orientation (1: as stored).
_EXIF_ORIENTATION = 0x0112


def _eight_bit(img: Image.Image) -> Image.Image:
    """``img`` as an 8-bit image ready for ``convert("L" / "RGB")``, as a viewer shows it:
    turned by its EXIF orientation (phone photos), 16-bit and float pixels scaled to 0-255
    (``convert`` would clip them to two levels), and transparency composited onto white
    paper (``convert`` drops the alpha channel: dark ink on a transparent background became
    a blank image)."""
    if "exif" in img.info and img.getexif().get(_EXIF_ORIENTATION, 1) != 1:  # a turn to make
        img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        if img.mode == "F" and arr.size and arr.max() <= 1.0:
            arr = arr * 255.0  # floats in [0, 1]
        elif img.mode.startswith("I;16") or (arr.size and arr.max() > 255):
            arr = arr / 257.0  # 16-bit: 65535 -> 255
        return Image.fromarray(np.clip(arr, 0, 255).round().astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(paper, rgba).convert("RGB")
    return img


def read_image(path: str | os.PathLike[str], channels: int = 1, invert: bool = False) -> Tensor:
    """Read the image file at ``path``: see :func:`decode_image`."""
    return decode_image(Path(path), str(path), channels=channels, invert=invert)


def open_zip(path: str | os.PathLike[str]) -> zipfile.ZipFile:
    """Open the zip at ``path``; a damaged one is a ``ValueError`` naming it."""
    try:
        return zipfile.ZipFile(path)
    except ZIP_ERRORS as exc:
        raise ValueError(f"cannot read zip {path}: {exc}; the file is damaged (a partial "
                         "download?): replace it with a good copy") from exc


def read_zip_member(zf: zipfile.ZipFile, member: str, name: str) -> bytes:
    """The bytes of ``member``; a damaged member (bad CRC, deflate error...) is a
    ``ValueError`` naming it as ``name`` (e.g. ``archive.zip:member``)."""
    try:
        return zf.read(member)
    except ZIP_ERRORS as exc:
        raise ValueError(f"cannot read {name}: the zip is damaged ({type(exc).__name__}: "
                         f"{exc})") from exc


def read_text(path: str | os.PathLike[str] | bytes, name: str | None = None) -> str:
    """UTF-8 text of the file ``path`` (or of the bytes ``path``, named ``name``); text that is
    not UTF-8 is a ``ValueError`` naming the file."""
    name = name or str(path)
    try:
        if isinstance(path, bytes):
            return path.decode("utf-8")
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{name} is not UTF-8 text (byte {exc.start}): is it the right "
                         "file?") from exc


def read_npz(path: str | os.PathLike[str], required: Sequence[str],
             optional: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """The arrays ``required`` (and those of ``optional`` present) of the ``.npz`` at ``path``.

    Object arrays are refused (no pickles are loaded).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a readable npz, or lacks a required array; the message
            names the file.
    """
    if not Path(path).is_file():
        raise file_not_found(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            if not hasattr(data, "files"):
                raise ValueError("a single .npy array, not an .npz archive")
            missing = [k for k in required if k not in data.files]
            if missing:
                raise KeyError(missing)
            return {k: data[k] for k in [*required, *optional] if k in data.files}
    except KeyError as exc:
        raise ValueError(f"{path} has no {' or '.join(map(repr, exc.args[0]))} array") from exc
    except Exception as exc:  # numpy raises many types for damaged files
        detail = str(exc).splitlines()[0] if str(exc) else ""
        raise ValueError(f"cannot read {path}: not a readable .npz file "
                         f"({type(exc).__name__}: {detail})") from exc


def check_zip_member(archive: str | os.PathLike[str], name: str, kind: str = "this kind of zip"
                     ) -> None:
    """Refuse a zip member that would name a place outside the archive's own tree.

    Args:
        archive: the zip (for the message).
        name: the member's name.
        kind: what the zip should be, for the message (e.g. ``"an Omniglot zip"``).

    Raises:
        ValueError: an absolute path, a drive letter, a backslash or a ``..`` part; the
            message names the member.
    """
    parts = name.split("/")
    if (name.startswith("/") or "\\" in name or ".." in parts
            or (len(name) > 1 and name[1] == ":")):
        raise ValueError(f"zip {archive}: refused member {name!r}: absolute paths and '..' "
                         f"parts point outside the archive; this zip is damaged or not {kind}")


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain data and numpy arrays only (no other classes, so no code runs)."""

    _ALLOWED = {("_codecs", "encode"), ("collections", "OrderedDict")}
    _NUMPY = {"_reconstruct", "ndarray", "dtype", "scalar", "_frombuffer"}

    def find_class(self, module: str, name: str):  # noqa: ANN201
        if (module, name) in self._ALLOWED or (module.split(".")[0] == "numpy"
                                               and name in self._NUMPY):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only numpy arrays "
                                     "and plain data are read)")


def read_pickle(path: str | os.PathLike[str], encoding: str = "latin1") -> object:
    """The pickle at ``path``, restricted to plain data and numpy arrays.

    The few-shot benchmarks ship as pickles (CIFAR-100's python version, the miniImageNet and
    tieredImageNet caches); this reads them without running any code they might carry.
    ``encoding`` decodes Python 2 strings (``latin1`` keeps the bytes of numpy arrays).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: not a readable pickle, or one holding other objects; the message names it.
    """
    if not Path(path).is_file():
        raise file_not_found(path)
    try:
        with open(path, "rb") as f:
            return _ArrayUnpickler(f, encoding=encoding).load()
    except Exception as exc:  # pickle raises many types for damaged files
        detail = str(exc).splitlines()[0] if str(exc) else ""
        raise ValueError(f"cannot read {path}: not a readable pickle of arrays "
                         f"({type(exc).__name__}: {detail})") from exc
