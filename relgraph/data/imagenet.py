"""``miniimagenet`` and ``tieredimagenet``: the ImageNet few-shot benchmarks, as usually shipped.

miniImageNet (Vinyals et al. 2016) with the split of Ravi & Larochelle (2017): 100 classes of
600 images, 64 train / 16 val / 20 test. Two layouts are read:

- **CSV + images** (Ravi & Larochelle's): ``root/images/<filename>`` and
  ``{train,val,test}.csv`` with the header ``filename,label`` (in ``root``, or in
  ``split_dir``);
- **pickle cache** (widely shared): ``root/mini-imagenet-cache-{train,val,test}.pkl``, each a
  dict with ``image_data`` ``[N, 84, 84, 3]`` uint8 and ``class_dict`` ``{wnid: [indices]}``.

tieredImageNet (Ren et al. 2018): 608 classes in 34 ImageNet categories, 351 train / 97 val /
160 test classes (20 / 6 / 8 categories); the category is each class's alphabet, so
``within_alphabet`` episodes work. Two layouts:

- **CSV + ImageNet folders**: ``{train,val,test}.csv`` with lines ``wnid,category_wnid`` (no
  header; in ``root`` or ``split_dir``) and the ImageNet training images in
  ``root/<wnid>/*.JPEG``;
- **pickle cache** (Ren et al.'s release): ``root/{split}_images_png.pkl`` (a list of
  PNG-encoded images; or ``{split}_images.npz`` with ``images`` ``[N, 84, 84, 3]``) and
  ``root/{split}_labels.pkl`` (``label_specific``, ``label_general``,
  ``label_specific_str``, ``label_general_str``).

Pickles are read with :func:`~relgraph.data.io.read_pickle` (numpy arrays and plain data only).
Neither benchmark has an official archive to download; put the files in place by hand.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from relgraph.data.catalog import register_dataset
from relgraph.data.imagelist import ImageListDataset, check_split
from relgraph.data.io import file_not_found, is_image_file, read_npz, read_pickle, read_text

__all__ = ["MiniImageNet", "TieredImageNet", "read_miniimagenet_csv", "read_tiered_csv",
           "MINI_IMAGENET_CLASSES", "TIERED_IMAGENET_CLASSES"]

#: Classes per split (each with 600 images in miniImageNet).
MINI_IMAGENET_CLASSES = {"train": 64, "val": 16, "test": 20}
TIERED_IMAGENET_CLASSES = {"train": 351, "val": 97, "test": 160}


def read_miniimagenet_csv(path: str | os.PathLike[str]) -> dict[str, list[str]]:
    """Ravi & Larochelle's split file: ``{label: [filename, ...]}`` in file order.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: a missing ``filename,label`` header or a malformed row (file and line named).
    """
    if not Path(path).is_file():
        raise file_not_found(path)
    rows = list(csv.reader(read_text(path).splitlines()))
    if not rows or [c.strip() for c in rows[0]] != ["filename", "label"]:
        raise ValueError(f"{path}: expected the header 'filename,label', got {rows[:1]}")
    out: dict[str, list[str]] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != 2 or not row[0] or not row[1]:
            raise ValueError(f"{path}, line {line}: expected 'filename,label', got {row}")
        out.setdefault(row[1], []).append(row[0])
    return out


def read_tiered_csv(path: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """tieredImageNet's split file: ``[(class_wnid, category_wnid), ...]`` in file order."""
    if not Path(path).is_file():
        raise file_not_found(path)
    out = []
    for line, row in enumerate(csv.reader(read_text(path).splitlines()), start=1):
        if not row:
            continue
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            raise ValueError(f"{path}, line {line}: expected 'class_wnid,category_wnid', "
                             f"got {row}")
        out.append((row[0].strip(), row[1].strip()))
    return out


def _root(roots: list[str], dataset: str) -> Path:
    if len(roots) != 1:
        raise ValueError(f"the {dataset} dataset needs exactly one --root (its folder), got "
                         f"{len(roots)}")
    root = Path(roots[0])
    if not root.is_dir():
        raise ValueError(f"{dataset} root {root} is not a folder")
    return root


def _merge(parts: list[tuple[list[Any], list[int], list[str], list[str]]]
           ) -> tuple[list[Any], list[int], list[str], list[str]]:
    """Concatenate per-split (sources, targets, names, alphabets), renumbering classes."""
    sources: list[Any] = []
    targets: list[int] = []
    names: list[str] = []
    alphabets: list[str] = []
    for src, tgt, nm, al in parts:
        sources.extend(src)
        targets.extend(t + len(names) for t in tgt)
        names.extend(nm)
        alphabets.extend(al)
    return sources, targets, names, alphabets


class MiniImageNet(ImageListDataset):
    """miniImageNet with Ravi & Larochelle's split (see the module docstring for the layouts).

    Args:
        root: the folder (``images/`` + CSVs, or the ``mini-imagenet-cache-*.pkl`` files).
        split: ``"train"``, ``"val"``, ``"test"``, or ``None`` for all 100 classes.
        image_size: side of the returned images (default 84).
        split_dir: where the CSVs are, when not in ``root``.
        layout: ``"auto"`` (pickles when present, else CSV + images), ``"csv"`` or
            ``"pickle"``.

    Raises:
        ValueError: missing files (named), or a CSV naming an image that is not there.
    """

    def __init__(self, root: str | os.PathLike[str], split: str | None = "train",
                 image_size: int | None = 84, split_dir: str | os.PathLike[str] | None = None,
                 layout: str = "auto") -> None:
        root = Path(root)
        splits = check_split(split, "miniimagenet")
        pickles = [root / f"mini-imagenet-cache-{s}.pkl" for s in splits]
        if layout not in ("auto", "csv", "pickle"):
            raise ValueError(f"layout must be auto, csv or pickle, got {layout!r}")
        use_pickle = layout == "pickle" or (layout == "auto" and all(p.is_file()
                                                                      for p in pickles))
        parts = []
        for s, pkl in zip(splits, pickles, strict=True):
            parts.append(self._from_pickle(pkl) if use_pickle else
                         self._from_csv(root, Path(split_dir or root) / f"{s}.csv"))
        if use_pickle:
            images = torch.cat([p[0] for p in parts])
            _, targets, names, alphabets = _merge([([], p[1], p[2], p[3]) for p in parts])
            sources: Any = images
        else:
            sources, targets, names, alphabets = _merge(parts)
        super().__init__(sources, targets, names, alphabets, image_size,
                         {"dataset": "miniimagenet", "split": split,
                          "layout": "pickle" if use_pickle else "csv"})

    @staticmethod
    def _from_csv(root: Path, csv_path: Path) -> tuple[list[Path], list[int], list[str],
                                                       list[str]]:
        if not csv_path.is_file():
            raise FileNotFoundError(
                f"{csv_path} not found: miniImageNet needs images/ and {{train,val,test}}.csv "
                f"(Ravi & Larochelle), or mini-imagenet-cache-{{split}}.pkl, in {root}")
        by_class = read_miniimagenet_csv(csv_path)
        images = root / "images"
        files, targets = [], []
        for c, name in enumerate(by_class):
            for f in by_class[name]:
                files.append(images / f)
                targets.append(c)
        if files and not files[0].is_file():
            raise FileNotFoundError(f"{files[0]} (listed in {csv_path}) not found; the images "
                                    f"go in {images}/")
        return files, targets, list(by_class), [""] * len(by_class)

    @staticmethod
    def _from_pickle(path: Path) -> tuple[torch.Tensor, list[int], list[str], list[str]]:
        data = read_pickle(path)
        if not isinstance(data, dict) or "image_data" not in data or "class_dict" not in data:
            keys = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"{path}: expected a dict with 'image_data' and 'class_dict', got "
                             f"{keys}")
        images = np.asarray(data["image_data"])
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(f"{path}: image_data must be uint8 [N, h, w, 3], got "
                             f"{images.dtype} {images.shape}")
        names = list(data["class_dict"])
        order, targets = [], []
        for c, name in enumerate(names):
            idx = [int(i) for i in data["class_dict"][name]]
            order.extend(idx)
            targets.extend([c] * len(idx))
        if order and (min(order) < 0 or max(order) >= len(images)):
            raise ValueError(f"{path}: class_dict indexes {max(order)} but there are "
                             f"{len(images)} images")
        x = torch.from_numpy(images[order]).permute(0, 3, 1, 2).contiguous()
        return x, targets, names, [""] * len(names)


class TieredImageNet(ImageListDataset):
    """tieredImageNet (see the module docstring for the layouts); alphabets = categories.

    Args:
        root: the folder (ImageNet ``<wnid>/`` folders + CSVs, or the pickles).
        split: ``"train"``, ``"val"``, ``"test"``, or ``None`` for all 608 classes.
        image_size: side of the returned images (default 84).
        split_dir: where the CSVs are, when not in ``root``.
        layout: ``"auto"`` (pickles when present, else CSV + folders), ``"csv"`` or
            ``"pickle"``.
    """

    def __init__(self, root: str | os.PathLike[str], split: str | None = "train",
                 image_size: int | None = 84, split_dir: str | os.PathLike[str] | None = None,
                 layout: str = "auto") -> None:
        root = Path(root)
        splits = check_split(split, "tieredimagenet")
        if layout not in ("auto", "csv", "pickle"):
            raise ValueError(f"layout must be auto, csv or pickle, got {layout!r}")
        use_pickle = layout == "pickle" or (
            layout == "auto" and all((root / f"{s}_labels.pkl").is_file() for s in splits))
        parts = [self._from_pickle(root, s) if use_pickle else
                 self._from_csv(root, Path(split_dir or root) / f"{s}.csv") for s in splits]
        sources, targets, names, alphabets = _merge(parts)
        if use_pickle and all(isinstance(p[0], torch.Tensor) for p in parts):
            sources = torch.cat([p[0] for p in parts])
        super().__init__(sources, targets, names, alphabets, image_size,
                         {"dataset": "tieredimagenet", "split": split,
                          "layout": "pickle" if use_pickle else "csv"})

    @staticmethod
    def _from_csv(root: Path, csv_path: Path) -> tuple[list[Path], list[int], list[str],
                                                       list[str]]:
        if not csv_path.is_file():
            raise FileNotFoundError(
                f"{csv_path} not found: tieredImageNet needs {{train,val,test}}.csv "
                f"(wnid,category) with ImageNet <wnid>/ folders, or {{split}}_labels.pkl, in "
                f"{root}")
        classes = read_tiered_csv(csv_path)
        files: list[Path] = []
        targets: list[int] = []
        for c, (wnid, _) in enumerate(classes):
            folder = root / wnid
            if not folder.is_dir():
                raise FileNotFoundError(f"{folder} (class {wnid} of {csv_path}) not found; "
                                        "the ImageNet training images go in root/<wnid>/")
            found = sorted(f for f in folder.iterdir() if is_image_file(f.name))
            if not found:
                raise ValueError(f"class folder {folder} holds no images")
            files.extend(found)
            targets.extend([c] * len(found))
        return files, targets, [w for w, _ in classes], [p for _, p in classes]

    @staticmethod
    def _from_pickle(root: Path, split: str) -> tuple[Any, list[int], list[str], list[str]]:
        labels_path = root / f"{split}_labels.pkl"
        labels = read_pickle(labels_path)
        need = ("label_specific", "label_general", "label_specific_str", "label_general_str")
        if not isinstance(labels, dict) or any(k not in labels for k in need):
            keys = sorted(labels) if isinstance(labels, dict) else type(labels).__name__
            raise ValueError(f"{labels_path}: expected a dict with {', '.join(need)}; got "
                             f"{keys}")
        specific = np.asarray(labels["label_specific"]).astype(np.int64).reshape(-1)
        general = np.asarray(labels["label_general"]).astype(np.int64).reshape(-1)
        names = [str(s) for s in labels["label_specific_str"]]
        categories = [str(s) for s in labels["label_general_str"]]
        parent = {}
        for s, g in zip(specific.tolist(), general.tolist(), strict=True):
            parent.setdefault(s, g)
        if specific.size and (specific.min() < 0 or specific.max() >= len(names)):
            raise ValueError(f"{labels_path}: label_specific out of range for "
                             f"{len(names)} class names")
        alphabets = [categories[parent[c]] if c in parent else "" for c in range(len(names))]
        png, npz = root / f"{split}_images_png.pkl", root / f"{split}_images.npz"
        sources: Any
        if png.is_file():
            sources = [bytes(np.asarray(b, dtype=np.uint8)) for b in read_pickle(png)]
        elif npz.is_file():
            images = read_npz(npz, ["images"])["images"]
            sources = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
        else:
            raise FileNotFoundError(f"neither {png} nor {npz} found (tieredImageNet images of "
                                    f"split {split})")
        if len(sources) != len(specific):
            raise ValueError(f"{split}: {len(sources)} images but {len(specific)} labels in "
                             f"{labels_path}")
        return sources, specific.tolist(), names, alphabets


@register_dataset("miniimagenet")
def _build_mini(roots: list[str], **kwargs: Any) -> MiniImageNet:
    return MiniImageNet(_root(roots, "miniimagenet"), **kwargs)


@register_dataset("tieredimagenet")
def _build_tiered(roots: list[str], **kwargs: Any) -> TieredImageNet:
    return TieredImageNet(_root(roots, "tieredimagenet"), **kwargs)
