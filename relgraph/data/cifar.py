"""``cifar_fs`` and ``fc100``: few-shot splits of CIFAR-100, read from its python pickles.

Both use all 60,000 images of CIFAR-100 (its ``train`` and ``test`` pickles together: 600 per
fine class, 32x32 RGB) and split the classes, never the images:

- **CIFAR-FS** (Bertinetto et al., ICLR 2019): 64 / 16 / 20 fine classes, by name
  (:data:`CIFAR_FS_SPLIT`: val and test are listed, train is the other 64).
- **FC100** (Oreshkin et al., NeurIPS 2018): by superclass, 12 / 4 / 4 superclasses = 60 / 20 /
  20 fine classes (:data:`FC100_SPLIT`); a class's superclass is its alphabet.

The root is the folder ``cifar-100-python/`` (``train``, ``test``, ``meta``) or the one holding
it; ``download=True`` fetches the official ``cifar-100-python.tar.gz`` and checks its md5.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from relgraph.data.catalog import register_dataset
from relgraph.data.download import download_file, extract_archive
from relgraph.data.imagelist import ImageListDataset, check_split
from relgraph.data.io import read_pickle

__all__ = ["CIFARFewShot", "CIFAR_FS_SPLIT", "FC100_SPLIT", "download_cifar100",
           "CIFAR100_URL", "CIFAR100_MD5"]

#: The official archive and its md5 (as published with CIFAR and used by torchvision).
CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
CIFAR100_MD5 = "eb9058c3a382ffc7106e4002c42a8d85"

#: CIFAR-FS (Bertinetto et al. 2019): validation and test fine classes; train = the other 64.
CIFAR_FS_SPLIT = {
    "val": ["beaver", "beetle", "butterfly", "camel", "cattle", "crab", "crocodile",
            "flatfish", "lamp", "maple_tree", "motorcycle", "otter", "sea", "shark",
            "television", "tractor"],
    "test": ["baby", "bed", "bicycle", "chimpanzee", "fox", "leopard", "man", "pickup_truck",
             "plain", "poppy", "rocket", "rose", "snail", "sweet_pepper", "table", "telephone",
             "wardrobe", "whale", "woman", "worm"],
}

#: FC100 (Oreshkin et al. 2018): the superclasses of each split.
FC100_SPLIT = {
    "train": ["fish", "flowers", "food_containers", "fruit_and_vegetables",
              "household_electrical_devices", "household_furniture",
              "large_man-made_outdoor_things", "large_natural_outdoor_scenes", "reptiles",
              "trees", "vehicles_1", "vehicles_2"],
    "val": ["large_carnivores", "large_omnivores_and_herbivores", "non-insect_invertebrates",
            "small_mammals"],
    "test": ["aquatic_mammals", "insects", "medium_mammals", "people"],
}


def download_cifar100(root: str | os.PathLike[str], url: str = CIFAR100_URL,
                      md5: str | None = CIFAR100_MD5) -> Path:
    """Download and unpack CIFAR-100 (python version) into ``root``; returns
    ``root/cifar-100-python``.

    Raises:
        DownloadError: the download failed or its md5 did not match.
    """
    root = Path(root)
    archive = download_file(url, root / "cifar-100-python.tar.gz", {"md5": md5} if md5 else None)
    if not (root / "cifar-100-python" / "meta").is_file():
        extract_archive(archive, root)
    return root / "cifar-100-python"


def _text(values: Any) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def _get(d: dict, key: str, path: Path) -> Any:
    for k in (key, key.encode()):
        if k in d:
            return d[k]
    raise ValueError(f"{path}: no {key!r} entry (is it CIFAR-100's python version?); it has "
                     f"{sorted(_text(d))}")


class CIFARFewShot(ImageListDataset):
    """CIFAR-FS or FC100 from CIFAR-100's python pickles (see the module docstring).

    Args:
        root: ``cifar-100-python/`` or the folder holding it.
        benchmark: ``"cifar_fs"`` or ``"fc100"``.
        split: ``"train"``, ``"val"``, ``"test"``, or ``None`` for all 100 classes.
        image_size: side of the returned images (default 32, the original size).
        download: fetch and unpack the official archive into ``root`` when missing.
    """

    def __init__(self, root: str | os.PathLike[str], benchmark: str = "cifar_fs",
                 split: str | None = "train", image_size: int | None = 32,
                 download: bool = False) -> None:
        if benchmark not in ("cifar_fs", "fc100"):
            raise ValueError(f"benchmark must be cifar_fs or fc100, got {benchmark!r}")
        splits = set(check_split(split, benchmark))
        root = Path(root)
        if not (root / "meta").is_file():
            if download and not (root / "cifar-100-python" / "meta").is_file():
                download_cifar100(root)
            root = root / "cifar-100-python"
        if not (root / "meta").is_file():
            raise FileNotFoundError(f"{root / 'meta'} not found: pass the cifar-100-python "
                                    "folder (train, test, meta), or download=True")
        meta = read_pickle(root / "meta")
        fine = _text(_get(meta, "fine_label_names", root / "meta"))
        coarse = _text(_get(meta, "coarse_label_names", root / "meta"))
        images, fine_labels, coarse_labels = [], [], []
        for part in ("train", "test"):
            d = read_pickle(root / part)
            data = np.asarray(_get(d, "data", root / part), dtype=np.uint8)
            images.append(data.reshape(-1, 3, 32, 32))
            fine_labels.extend(int(v) for v in _get(d, "fine_labels", root / part))
            coarse_labels.extend(int(v) for v in _get(d, "coarse_labels", root / part))
        parent = dict(zip(fine_labels, coarse_labels, strict=True))
        if benchmark == "cifar_fs":
            named = {n: s for s, names in CIFAR_FS_SPLIT.items() for n in names}
            split_of = {c: named.get(fine[c], "train") for c in range(len(fine))}
        else:
            named = {n: s for s, names in FC100_SPLIT.items() for n in names}
            split_of = {c: named[coarse[parent[c]]] for c in range(len(fine)) if c in parent}
        keep = [c for c in range(len(fine)) if split_of.get(c) in splits]
        renumber = {c: i for i, c in enumerate(keep)}
        labels = np.asarray(fine_labels)
        rows = np.nonzero(np.isin(labels, keep))[0]
        x = torch.from_numpy(np.concatenate(images)[rows])
        targets = [renumber[int(c)] for c in labels[rows]]
        alphabets = [coarse[parent[c]] if benchmark == "fc100" else "" for c in keep]
        super().__init__(x, targets, [fine[c] for c in keep], alphabets, image_size,
                         {"dataset": benchmark, "split": split})


@register_dataset("cifar_fs")
def _build_fs(roots: list[str], **kwargs: Any) -> CIFARFewShot:
    if len(roots) != 1:
        raise ValueError("the cifar_fs dataset needs exactly one --root: cifar-100-python/")
    return CIFARFewShot(roots[0], "cifar_fs", **kwargs)


@register_dataset("fc100")
def _build_fc(roots: list[str], **kwargs: Any) -> CIFARFewShot:
    if len(roots) != 1:
        raise ValueError("the fc100 dataset needs exactly one --root: cifar-100-python/")
    return CIFARFewShot(roots[0], "fc100", **kwargs)
