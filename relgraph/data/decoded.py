"""The decoded-image cache: images decoded once, kept on disk as uint8 ``.npy``, memory-mapped.

Decoding a dataset (reading PNGs from a zip, unpacking an npz, resizing every image) costs
seconds to minutes at every start of a run, and gives the same tensor each time. Datasets
that decode (:class:`~relgraph.data.omniglot.Omniglot`) keep the result in
``<cache_dir()>/decoded/<name>-<key>.npy`` (the images ``[N, c, h, w]`` uint8) with
``<name>-<key>.json`` beside it (what the dataset needs to rebuild itself: class names,
counts, file names). Later constructions memory-map the ``.npy`` (``np.load(...,
mmap_mode="c")``: pages are read when touched and shared between processes through the page
cache; writes, which relgraph never makes, would stay private).

The ``key`` is a sha256 of everything the pixels depend on: the cache format, the torch
version (resizing), the dataset's options (image size, selection) and a stamp of every source
file (path, size, modification time, inode; :func:`file_stamps`). A source that changes, moves
or is replaced gets a new key, so a stale cache is never read; old files stay until removed
(delete the ``decoded`` folder at any time). A damaged cache file is reported with a warning
and decoded again.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from relgraph.utils import atomic_path, atomic_write_text, cache_dir

__all__ = ["file_stamps", "decoded_cache_path", "load_decoded", "save_decoded",
           "CACHE_FORMAT"]

#: Bump when what a cache file holds (or how pixels are made) changes: old files are ignored.
CACHE_FORMAT = 2  # 2: transparency, 16-bit and EXIF orientation decoded as shown


def file_stamps(paths: Iterable[str | os.PathLike[str]]) -> list[list[Any]]:
    """``[path, size, mtime_ns, inode]`` of each file (its resolved path), in the given order.

    Raises:
        FileNotFoundError: a file is missing (names it).
    """
    out = []
    for p in paths:
        st = os.stat(p)
        out.append([str(Path(p).resolve()), st.st_size, st.st_mtime_ns, st.st_ino])
    return out


def decoded_cache_path(name: str, payload: dict[str, Any], folder: Path | None = None) -> Path:
    """``<folder or cache_dir()/decoded>/<name>-<key>.npy``, ``key`` a sha256 of ``payload``
    (JSON-serialisable) with the cache format and the torch version."""
    text = json.dumps({"format": CACHE_FORMAT, "torch": torch.__version__, **payload},
                      sort_keys=True, separators=(",", ":"))
    key = hashlib.sha256(text.encode()).hexdigest()[:24]
    return (folder if folder is not None else cache_dir() / "decoded") / f"{name}-{key}.npy"


def load_decoded(path: Path) -> tuple[Tensor, dict[str, Any]] | None:
    """The cached images (memory-mapped uint8 tensor ``[N, c, h, w]``) and their metadata, or
    ``None`` when there is no cache file (or it is damaged: a warning names it)."""
    meta_path = path.with_suffix(".json")
    if not path.is_file() or not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        array = np.load(path, mmap_mode="c", allow_pickle=False)
        if array.dtype != np.uint8 or array.ndim != 4 or list(array.shape) != meta["shape"]:
            raise ValueError(f"holds {array.dtype} {list(array.shape)}, its metadata says uint8 "
                             f"{meta.get('shape')}")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        warnings.warn(f"ignoring the damaged decoded-image cache {path} ({exc}); decoding the "
                      "images again", stacklevel=3)
        return None
    return torch.from_numpy(array), meta


def save_decoded(path: Path, images: Tensor, meta: dict[str, Any]) -> None:
    """Write ``images`` (``[N, c, h, w]`` uint8) and ``meta`` atomically (the ``.npy`` first,
    so a reader that finds the ``.json`` finds a complete ``.npy``). A failed write (full
    disk, read-only cache) only warns: the cache is an optimisation."""
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(f"the decoded-image cache holds uint8 [N, c, h, w], got {images.dtype} "
                         f"{tuple(images.shape)}")
    try:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, images.contiguous().numpy(), allow_pickle=False)
        atomic_write_text(path.with_suffix(".json"),
                          json.dumps({**meta, "shape": list(images.shape)}))
    except OSError as exc:
        warnings.warn(f"could not write the decoded-image cache {path}: {exc}", stacklevel=3)
