"""``cub``: Caltech-UCSD Birds-200-2011 with the class split of Chen et al. (2019).

The official archive ``CUB_200_2011.tgz`` unpacks to ``CUB_200_2011/`` with ``images/``,
``images.txt`` (``<image_id> <path>``), ``image_class_labels.txt`` (``<image_id> <class_id>``)
and ``classes.txt`` (``<class_id> <name>``, ids 1..200). The split is the one of "A Closer Look
at Few-shot Classification" (Chen et al., ICLR 2019), by class index ``i = class_id - 1``:

- train (100 classes): ``i % 2 == 0``
- val (50 classes): ``i % 4 == 1``
- test (50 classes): ``i % 4 == 3``

Images are whole photographs (not cropped to the bounding boxes), resized to 84 px.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from relgraph.data.catalog import register_dataset
from relgraph.data.download import download_file, extract_archive
from relgraph.data.imagelist import ImageListDataset, check_split
from relgraph.data.io import read_text

__all__ = ["CUB", "cub_split", "download_cub", "CUB_URL", "CUB_MD5"]

#: The official archive and its md5 (as published by Caltech and used by torchvision).
CUB_URL = "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz"
CUB_MD5 = "97eceeb196236b17998738112f37df78"


def cub_split(index: int) -> str:
    """The split of class index ``index`` (0..199) in Chen et al.'s split."""
    if index % 2 == 0:
        return "train"
    return "val" if index % 4 == 1 else "test"


def _table(path: Path) -> list[tuple[str, str]]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (CUB-200-2011 needs images.txt, "
                                "image_class_labels.txt, classes.txt and images/)")
    rows = []
    for line, text in enumerate(read_text(path).splitlines(), start=1):
        if not text.strip():
            continue
        parts = text.split(maxsplit=1)
        if len(parts) != 2:
            raise ValueError(f"{path}, line {line}: expected '<id> <value>', got {text!r}")
        rows.append((parts[0], parts[1].strip()))
    return rows


def download_cub(root: str | os.PathLike[str], url: str = CUB_URL,
                 md5: str | None = CUB_MD5) -> Path:
    """Download and unpack ``CUB_200_2011.tgz`` into ``root``; returns ``root/CUB_200_2011``.

    Raises:
        DownloadError: the download failed or its md5 did not match.
    """
    root = Path(root)
    archive = download_file(url, root / "CUB_200_2011.tgz", {"md5": md5} if md5 else None)
    if not (root / "CUB_200_2011" / "classes.txt").is_file():
        extract_archive(archive, root)
    return root / "CUB_200_2011"


class CUB(ImageListDataset):
    """CUB-200-2011 birds, Chen et al.'s 100/50/50 class split (see the module docstring).

    Args:
        root: ``CUB_200_2011/`` (or the folder holding it).
        split: ``"train"``, ``"val"``, ``"test"``, or ``None`` for all 200 classes.
        image_size: side of the returned images (default 84).
        download: fetch and unpack the official archive into ``root`` when missing.
    """

    def __init__(self, root: str | os.PathLike[str], split: str | None = "train",
                 image_size: int | None = 84, download: bool = False) -> None:
        root = Path(root)
        splits = set(check_split(split, "cub"))
        if (root / "CUB_200_2011").is_dir() or (download and not (root / "classes.txt").is_file()):
            if download:
                download_cub(root)
            root = root / "CUB_200_2011"
        if not (root / "classes.txt").is_file():
            raise FileNotFoundError(f"{root / 'classes.txt'} not found: pass the CUB_200_2011 "
                                    "folder, or download=True to fetch it")
        classes = _table(root / "classes.txt")
        images = dict(_table(root / "images.txt"))
        labels = _table(root / "image_class_labels.txt")
        keep = {int(cid): name for i, (cid, name) in enumerate(classes)
                if cub_split(i) in splits}
        renumber = {cid: c for c, cid in enumerate(keep)}
        files, targets = [], []
        for image_id, cid in labels:
            if int(cid) in renumber:
                if image_id not in images:
                    raise ValueError(f"image id {image_id} of image_class_labels.txt is not in "
                                     "images.txt")
                files.append(root / "images" / images[image_id])
                targets.append(renumber[int(cid)])
        if files and not files[0].is_file():
            raise FileNotFoundError(f"{files[0]} (listed in images.txt) not found")
        super().__init__(files, targets, list(keep.values()), None, image_size,
                         {"dataset": "cub", "split": split})


@register_dataset("cub")
def _build(roots: list[str], **kwargs: Any) -> CUB:
    if len(roots) != 1:
        raise ValueError("the cub dataset needs exactly one --root: the CUB_200_2011 folder")
    return CUB(roots[0], **kwargs)
