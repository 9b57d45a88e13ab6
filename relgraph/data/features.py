"""``features``: embeddings from any model, read from a file, as a few-shot dataset.

"I have embeddings from my own model": save them as one of these and every relgraph head
trains, evaluates and predicts on them (the ``features`` backbone passes them through):

=================  ==========================================================================
``.npy``           a float array ``[N, d]``; the labels in a second file (``labels=PATH`` or
                   a second ``--root``): ``.npy``, or ``.txt`` / ``.csv`` with one per line
``.npz``           arrays ``features`` ``[N, d]`` and ``labels`` ``[N]`` (other names with
                   ``features_key`` / ``labels_key``), optionally ``split`` ``[N]``
``.safetensors``   tensors ``features`` and ``labels`` (integers), optionally ``split``
                   (integers indexing the ``splits`` JSON list of the file's metadata) and
                   ``class_names`` (a JSON list in the metadata, indexed by the labels);
                   needs ``pip install relgraph[features]``
``.parquet``       one row per example: a ``label`` column, and either one list column
                   ``features`` or one numeric column per dimension; optionally a ``split``
                   column; needs ``pip install relgraph[features]`` (pyarrow)
=================  ==========================================================================

Labels may be integers or strings. With ``split="train"`` only the rows whose split value is
``"train"`` are kept (the split column or array, or a ``splits=PATH`` file beside an ``.npy``,
one value per line).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from relgraph.data.catalog import register_dataset
from relgraph.data.io import file_not_found, read_text
from relgraph.data.tensors import TensorDataset

__all__ = ["FeaturesDataset", "FeatureFile", "read_features", "FEATURE_SUFFIXES"]

#: File types the ``features`` dataset reads.
FEATURE_SUFFIXES = (".npy", ".npz", ".safetensors", ".parquet")


class FeatureFile(dict):
    """What :func:`read_features` returns: ``features`` ``[N, d]`` float32 array, ``labels``
    (list or ``None``), ``split`` (list of str or ``None``) and ``ids`` (row names)."""


def _missing_extra(what: str, package: str) -> ImportError:
    return ImportError(f"reading {what} files needs the {package} package: pip install "
                       f"'relgraph[features]' (or pip install {package})")


def _read_lines(path: str, option: str) -> list[str]:
    if not Path(path).is_file():
        raise file_not_found(path, f"the {option} option you gave (relgraph --option "
                                   f"{option}=..., or data.options in a config)")
    if path.endswith(".npy"):
        arr = np.load(path, allow_pickle=False)
        return arr.reshape(-1).tolist()
    lines = read_text(path).splitlines()
    if lines and path.endswith(".csv") and lines[0].strip().lower() in ("label", "labels",
                                                                          "split"):
        lines = lines[1:]
    return [line.strip() for line in lines if line.strip()]


def _labels_from_values(values: Sequence[Any]) -> list[Any]:
    """Integers stay integers (also ``"3"`` read from text files); the rest are strings.

    Text becomes integers only when every value is an integer written plainly (``"3"``, not
    ``"03"``), so distinct labels such as ``"7"`` and ``"007"`` stay distinct classes."""
    out = list(values)
    if all(isinstance(v, (int, np.integer)) for v in out):
        return [int(v) for v in out]
    text = [str(v) for v in out]
    if all(t.lstrip("-").isdigit() and str(int(t)) == t for t in text):
        return [int(t) for t in text]
    return text


def _from_npz(path: str, features_key: str, labels_key: str, split_key: str) -> FeatureFile:
    if not Path(path).is_file():
        raise file_not_found(path)
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as exc:  # numpy raises many types for damaged files
        raise ValueError(f"cannot read {path}: not a readable .npz file ({exc})") from exc
    with data:
        keys = list(data.files)
        if features_key not in keys:
            raise ValueError(f"{path} has no {features_key!r} array; its arrays are "
                             f"{keys} (pass features_key=NAME to use another)")
        out = FeatureFile(features=data[features_key], labels=None, split=None)
        if labels_key in keys:
            out["labels"] = data[labels_key].tolist()
        if split_key in keys:
            out["split"] = [str(s) for s in data[split_key].tolist()]
        out["keys"] = keys
    return out


def _from_safetensors(path: str, features_key: str, labels_key: str,
                      split_key: str) -> FeatureFile:
    try:
        from safetensors import safe_open
    except ImportError as exc:
        raise _missing_extra(".safetensors", "safetensors") from exc
    if not Path(path).is_file():
        raise file_not_found(path)
    try:
        with safe_open(path, framework="numpy") as f:
            keys = list(f.keys())
            meta = f.metadata() or {}
            if features_key not in keys:
                raise KeyError(features_key)
            arrays = {k: f.get_tensor(k) for k in (features_key, labels_key, split_key)
                      if k in keys}
    except KeyError:
        raise ValueError(f"{path} has no {features_key!r} tensor; its tensors are {keys} "
                         "(pass features_key=NAME to use another)") from None
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise ValueError(f"cannot read {path}: not a readable .safetensors file "
                         f"({type(exc).__name__}: {exc})") from exc
    out = FeatureFile(features=arrays[features_key], labels=None, split=None, keys=keys)
    if labels_key in arrays:
        labels = arrays[labels_key].reshape(-1).tolist()
        if "class_names" in meta:
            names = json.loads(meta["class_names"])
            if labels and not 0 <= min(labels) <= max(labels) < len(names):
                raise ValueError(f"{path}: labels index the metadata class_names "
                                 f"({len(names)} names) but range {min(labels)}..{max(labels)}")
            labels = [str(names[i]) for i in labels]
        out["labels"] = labels
    if split_key in arrays:
        codes = arrays[split_key].reshape(-1).tolist()
        names = json.loads(meta.get("splits", "null")) or ["train", "val", "test"]
        out["split"] = [str(names[int(c)]) for c in codes]
    return out


def _from_parquet(path: str, features_key: str, labels_key: str,
                  split_key: str) -> FeatureFile:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise _missing_extra(".parquet", "pyarrow") from exc
    if not Path(path).is_file():
        raise file_not_found(path)
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid and others for damaged files
        raise ValueError(f"cannot read {path}: not a readable parquet file ({exc})") from exc
    columns = list(table.column_names)
    out = FeatureFile(labels=None, split=None, keys=columns)
    if labels_key == "label" and "label" not in columns and "labels" in columns:
        labels_key = "labels"  # the default column is "label"; "labels" (as in npz) works too
    if labels_key in columns:
        out["labels"] = table.column(labels_key).to_pylist()
    if split_key in columns:
        out["split"] = [str(s) for s in table.column(split_key).to_pylist()]
    if features_key in columns:
        out["features"] = np.asarray(table.column(features_key).to_pylist(), dtype=np.float32)
    else:
        import pyarrow.types as pat

        numeric = [c for c in columns if c not in (labels_key, split_key)
                   and (pat.is_floating(table.schema.field(c).type)
                        or pat.is_integer(table.schema.field(c).type))]
        if not numeric:
            raise ValueError(f"{path} has no {features_key!r} list column and no numeric "
                             f"feature columns; its columns are {columns}")
        out["features"] = np.stack([table.column(c).to_numpy() for c in numeric], axis=1)
    return out


def read_features(
    path: str | os.PathLike[str],
    labels: str | os.PathLike[str] | None = None,
    splits: str | os.PathLike[str] | None = None,
    features_key: str = "features",
    labels_key: str = "labels",
    split_key: str = "split",
) -> FeatureFile:
    """Read a features file (see the module docstring for the formats).

    Args:
        path: ``.npy``, ``.npz``, ``.safetensors`` or ``.parquet``.
        labels: a labels file (``.npy``, ``.txt``, ``.csv``; one per line) for an ``.npy``.
        splits: a file of split names, one per line, for an ``.npy``.
        features_key, labels_key, split_key: the names of the arrays / columns (parquet's
            labels column is ``label`` when ``labels_key`` is left at ``labels``).

    Returns:
        a :class:`FeatureFile`; ``labels`` is ``None`` when the file has none (queries).

    Raises:
        ValueError: an unknown file type, missing arrays (the message lists those present),
            features that are not a 2-d numeric array, or counts that disagree.
        ImportError: ``.safetensors`` / ``.parquet`` without the optional packages.
    """
    path = os.fspath(path)
    lower = path.lower()
    if lower.endswith(".npy"):
        if not Path(path).is_file():
            raise file_not_found(path)
        try:
            arr = np.load(path, allow_pickle=False)
        except Exception as exc:  # numpy raises many types for damaged files
            raise ValueError(f"cannot read {path}: not a readable .npy file ({exc})") from exc
        out = FeatureFile(features=arr, labels=None, split=None, keys=[])
    elif lower.endswith(".npz"):
        out = _from_npz(path, features_key, labels_key, split_key)
    elif lower.endswith(".safetensors"):
        out = _from_safetensors(path, features_key, labels_key, split_key)
    elif lower.endswith(".parquet"):
        key = "label" if labels_key == "labels" else labels_key
        out = _from_parquet(path, features_key, key, split_key)
    else:
        raise ValueError(f"{path}: unsupported features file; expected one of "
                         f"{', '.join(FEATURE_SUFFIXES)}")
    if labels is not None:
        out["labels"] = _read_lines(os.fspath(labels), "labels")
    if splits is not None:
        out["split"] = [str(s) for s in _read_lines(os.fspath(splits), "splits")]
    feats = np.asarray(out["features"])
    if feats.ndim != 2 or not np.issubdtype(feats.dtype, np.number):
        raise ValueError(f"{path}: features must be a 2-d numeric array [N, d], got "
                         f"{feats.dtype} shape {feats.shape}")
    out["features"] = feats.astype(np.float32, copy=False)
    n = feats.shape[0]
    for what in ("labels", "split"):
        if out[what] is not None and len(out[what]) != n:
            raise ValueError(f"{path}: {n} feature rows but {len(out[what])} {what}")
    if out["labels"] is not None:
        out["labels"] = _labels_from_values(out["labels"])
    out["ids"] = [f"{Path(path).name}[{i}]" for i in range(n)]
    return out


class FeaturesDataset(TensorDataset):
    """Precomputed feature vectors with labels, read from a file (see the module docstring).

    Args:
        path: the features file.
        labels: labels file for an ``.npy`` (default: none, unless given as a second root).
        split: keep only the rows of this split (``train`` / ``val`` / ``test`` or any value
            of the file's split column); ``None`` keeps all.
        splits: split names file for an ``.npy``.
        features_key, labels_key, split_key: array / column names.

    Raises:
        ValueError: no labels, an unknown split (the present ones are listed), or a bad file.

    Example:
        >>> ds = FeaturesDataset("embeddings.npz", split="train")  # doctest: +SKIP
        >>> ds.get_batch(torch.tensor([0, 1])).shape  # doctest: +SKIP
        torch.Size([2, 384])
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        labels: str | os.PathLike[str] | None = None,
        split: str | None = None,
        splits: str | os.PathLike[str] | None = None,
        features_key: str = "features",
        labels_key: str = "labels",
        split_key: str = "split",
    ) -> None:
        data = read_features(path, labels, splits, features_key, labels_key, split_key)
        if data["labels"] is None:
            present = f"; its arrays are {data['keys']}" if data["keys"] else ""
            raise ValueError(f"{path} has no labels{present} (a {labels_key!r} array or "
                             "column, or a labels file: labels=PATH or a second --root)")
        feats, targets = data["features"], data["labels"]
        if split is not None:
            if data["split"] is None:
                raise ValueError(f"{path} has no split column; pass the file of one split, "
                                 f"or add a {split_key!r} array / column (or splits=PATH)")
            keep = [i for i, s in enumerate(data["split"]) if s == split]
            if not keep:
                raise ValueError(f"{path} has no rows of split {split!r}; its splits are "
                                 f"{sorted(set(data['split']))}")
            feats, targets = feats[keep], [targets[i] for i in keep]
        super().__init__(torch.from_numpy(np.ascontiguousarray(feats)), targets)
        self.path = os.fspath(path)
        self.preprocessing["dataset"] = "features"


@register_dataset("features")
def _build(roots: list[str], **kwargs: Any) -> FeaturesDataset:
    """One ``--root``: the features file; a second one: its labels file (for ``.npy``)."""
    if not roots or len(roots) > 2:
        raise ValueError("the features dataset needs one --root (a .npy / .npz / .safetensors "
                         "/ .parquet file) and, for .npy, a second --root with the labels")
    if len(roots) == 2:
        if kwargs.get("labels"):
            raise ValueError("labels given twice: as a second --root and as labels=")
        kwargs["labels"] = roots[1]
    return FeaturesDataset(roots[0], **kwargs)
