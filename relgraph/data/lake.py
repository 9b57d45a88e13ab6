"""The one-shot classification runs of Lake et al. (2015): 20 runs of 20-way 1-shot Omniglot.

Layout (the official ``all_runs`` folder or zip)::

    run01/training/class01.png ... class20.png    one drawing of each of the 20 classes
    run01/test/item01.png ... item20.png          20 drawings to classify
    run01/class_labels.txt                        "run01/test/item01.png run01/training/class12.png"
    ...
    run20/...

The paths in ``class_labels.txt`` are relative to the folder holding the runs. The score is the
error rate over all test items (400 for the official runs). Nothing here hard-codes 20: any
number of runs, classes and test items is read.

Example:
    >>> runs = load_lake_runs("data/all_runs", image_size=28)  # doctest: +SKIP
    >>> evaluate_lake_runs(runs, predict)["error_rate"]  # doctest: +SKIP
"""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from relgraph.data.base import resize_images
from relgraph.data.io import (
    check_zip_member,
    decode_image,
    is_image_file,
    open_zip,
    read_text,
    read_zip_member,
)

__all__ = ["LakeRun", "load_lake_runs", "evaluate_lake_runs"]

_RUN = re.compile(r"^run\d+$")
_LINE_FORMAT = "'runNN/test/itemMM.png runNN/training/classKK.png'"


@dataclass
class LakeRun:
    """One run: ``n`` training drawings (one per class) and ``m`` test drawings to classify.

    Attributes:
        name: the run folder name, e.g. ``"run01"``.
        support: ``[n, 1, S, S]`` float in ``[0, 1]``, ink bright; support ``i`` has label ``i``.
        query: ``[m, 1, S, S]`` float in ``[0, 1]``, ink bright.
        query_labels: ``[m]`` long, the index in ``support`` of each query's class.
        support_files: ``[n]`` where each support image came from (sorted file names).
        query_files: ``[m]`` where each query image came from (sorted file names).
    """

    name: str
    support: Tensor
    query: Tensor
    query_labels: Tensor
    support_files: list[str]
    query_files: list[str]

    @property
    def n_way(self) -> int:
        """Number of classes (support images) ``n``."""
        return int(self.support.shape[0])


class _Files:
    """The runs' files by path relative to the runs' parent folder (``runNN/...``)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._zip: zipfile.ZipFile | None = None
        self.members: dict[str, str] = {}  # relative path -> file path or zip member
        if root.is_dir():
            for run in sorted(root.iterdir()):
                if run.is_dir() and _RUN.match(run.name):
                    for dirpath, _, filenames in os.walk(run):
                        for name in filenames:
                            full = Path(dirpath) / name
                            self.members[full.relative_to(root).as_posix()] = str(full)
            self.prefix = ""
        else:
            self._zip = open_zip(root)
            prefixes = set()
            for info in self._zip.infolist():
                check_zip_member(root, info.filename, "a zip of Lake et al.'s one-shot runs")
                if info.is_dir():
                    continue
                parts = info.filename.split("/")
                idx = next((i for i, p in enumerate(parts[:-1]) if _RUN.match(p)), None)
                if idx is None or parts[0] == "__MACOSX":
                    continue
                prefixes.add("/".join(parts[:idx]))
                self.members["/".join(parts[idx:])] = info.filename
            if len(prefixes) > 1:
                raise ValueError(f"zip {root} holds runs in several folders {sorted(prefixes)}; "
                                 "expected one folder of runNN folders")
            self.prefix = prefixes.pop() if prefixes else ""
        self.runs = sorted({key.split("/")[0] for key in self.members})

    def describe(self, key: str) -> str:
        """How to name ``key`` in a message: its path, or ``archive.zip:member``."""
        if self._zip is None:
            return str(self.root / key)
        return f"{self.root}:{self.prefix + '/' if self.prefix else ''}{key}"

    def read(self, key: str) -> bytes | Path:
        if self._zip is None:
            return Path(self.members[key])
        return read_zip_member(self._zip, self.members[key], self.describe(key))

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()


def _load_images(files: _Files, keys: list[str], image_size: int | None) -> Tensor:
    """Decode ``keys`` (ink bright) and resize: ``-> [m, 1, S, S]`` float in ``[0, 1]``."""
    images = [decode_image(files.read(k), files.describe(k), channels=1, invert=True)
              for k in keys]
    shapes = {tuple(im.shape) for im in images}
    if len(shapes) == 1:
        batch = resize_images(torch.stack(images), image_size)
    elif image_size is None:
        raise ValueError(f"images of different sizes {sorted(shapes)} in "
                         f"{files.describe(keys[0].rsplit('/', 1)[0])}; pass an image_size")
    else:
        batch = torch.cat([resize_images(im[None], image_size) for im in images])
    return batch.float().div_(255.0)


def _run_key(path: str, run: str, where: str) -> str:
    """``path`` from class_labels.txt as a key ``runNN/...`` (a path relative to the run is
    accepted too)."""
    parts = [p for p in path.replace("\\", "/").split("/") if p and p != "."]
    if parts and _RUN.match(parts[0]):
        if parts[0] != run:
            raise ValueError(f"{where}: {path!r} belongs to {parts[0]}, not {run}")
        return "/".join(parts)
    return "/".join([run, *parts])


def _load_run(files: _Files, run: str, image_size: int | None) -> LakeRun:
    def images_in(folder: str) -> list[str]:
        keys = sorted(k for k in files.members
                      if k.startswith(f"{run}/{folder}/") and is_image_file(k)
                      and k.count("/") == 2)
        if not keys:
            raise FileNotFoundError(f"no images in {files.describe(f'{run}/{folder}')}/ "
                                    f"(expected {run}/{folder}/*.png)")
        return keys

    support_keys = images_in("training")
    query_keys = images_in("test")
    labels_key = f"{run}/class_labels.txt"
    labels_name = files.describe(labels_key)
    if labels_key not in files.members:
        raise FileNotFoundError(f"{labels_name} not found: each run needs a class_labels.txt "
                                f"with lines {_LINE_FORMAT}")
    raw = files.read(labels_key)
    text = read_text(raw, labels_name)
    support_index = {k: i for i, k in enumerate(support_keys)}
    query_index = {k: j for j, k in enumerate(query_keys)}
    labels = [-1] * len(query_keys)
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{labels_name}:{lineno}"
        fields = line.split()
        if len(fields) != 2:
            raise ValueError(f"{where}: expected {_LINE_FORMAT}, got {line.strip()!r}")
        item, cls = (_run_key(f, run, where) for f in fields)
        if item not in query_index:
            raise ValueError(f"{where}: test image {fields[0]!r} not found "
                             f"(no {files.describe(item)})")
        if cls not in support_index:
            raise ValueError(f"{where}: training image {fields[1]!r} not found "
                             f"(no {files.describe(cls)})")
        j = query_index[item]
        if labels[j] != -1:
            raise ValueError(f"{where}: {fields[0]!r} is labelled twice")
        labels[j] = support_index[cls]
    unlabelled = [query_keys[j] for j, lab in enumerate(labels) if lab == -1]
    if unlabelled:
        raise ValueError(f"{labels_name}: no label for {len(unlabelled)} test image(s), e.g. "
                         f"{unlabelled[0]}")
    return LakeRun(
        name=run,
        support=_load_images(files, support_keys, image_size),
        query=_load_images(files, query_keys, image_size),
        query_labels=torch.tensor(labels, dtype=torch.long),
        support_files=[files.describe(k) for k in support_keys],
        query_files=[files.describe(k) for k in query_keys],
    )


def load_lake_runs(root: str | os.PathLike[str], image_size: int | None = 28) -> list[LakeRun]:
    """Read the one-shot classification runs under ``root``.

    Images are inverted (ink bright, paper 0) and resized with
    :func:`~relgraph.data.base.resize_images`, exactly as :class:`~relgraph.data.omniglot.Omniglot`
    prepares its images, so a model trained on Omniglot sees the runs the same way.

    Args:
        root: the folder holding ``run01``, ``run02``, ... (or a zip holding them, possibly
            inside one folder such as ``all_runs/``).
        image_size: side ``S`` of the returned images; ``None`` keeps the original size.

    Returns:
        The runs, sorted by name. Each has ``support [n, 1, S, S]``, ``query [m, 1, S, S]`` and
        ``query_labels [m]``.

    Raises:
        FileNotFoundError: ``root``, a run's images or its ``class_labels.txt`` is missing.
        ValueError: a malformed ``class_labels.txt`` line (file and line number given), or an
            unreadable image (file named).
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"Lake runs folder {root} does not exist (expected a folder or "
                                "zip holding run01/, run02/, ...)")
    files = _Files(root)
    try:
        if not files.runs:
            raise FileNotFoundError(f"no runNN folders in {root} (expected run01/training/"
                                    "class01.png, run01/test/item01.png, run01/class_labels.txt)")
        return [_load_run(files, run, image_size) for run in files.runs]
    finally:
        files.close()


def _predicted_labels(out: Tensor, m: int, n: int, run: str) -> Tensor:
    """``[1, m, n]`` logits or ``[1, m]`` labels -> ``[m]`` long labels."""
    out = torch.as_tensor(out).detach().cpu()
    if out.dim() == 3 and tuple(out.shape) == (1, m, n):
        return out[0].argmax(-1)
    if out.dim() == 2 and tuple(out.shape) == (1, m):
        labels = out[0]
        if labels.is_floating_point():
            if not bool((labels == labels.round()).all()):
                raise ValueError(f"{run}: predict returned non-integer labels {labels.tolist()}")
            labels = labels.round()
        labels = labels.long()
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= n):
            raise ValueError(f"{run}: predicted labels must lie in 0..{n - 1}, got "
                             f"{labels.tolist()}")
        return labels
    raise ValueError(f"{run}: predict must return logits [1, {m}, {n}] or labels [1, {m}], got "
                     f"shape {tuple(out.shape)}")


def evaluate_lake_runs(
    runs: list[LakeRun],
    predict: Callable[[Tensor, Tensor, Tensor], Tensor],
    one_at_a_time: bool = False,
    device: torch.device | str | None = None,
) -> dict[str, float | int | list[float]]:
    """Score ``predict`` on the runs: the error rate over all test items.

    Args:
        runs: from :func:`load_lake_runs`.
        predict: ``predict(support, support_labels, query)`` with ``support [1, n, 1, S, S]``,
            ``support_labels [1, n]`` (``0..n-1``) and ``query [1, m, 1, S, S]``, returning
            logits ``[1, m, n]`` or predicted labels ``[1, m]``. Called under
            :func:`torch.no_grad`.
        one_at_a_time: call ``predict`` with one query at a time (``m = 1``), the inductive
            protocol: no information flows between test items.
        device: where to put the tensors passed to ``predict`` (default: CPU).

    Returns:
        A dict with ``error_rate`` (%), ``accuracy`` (%), ``runs`` (number of runs),
        ``items`` (test items) and ``per_run_error`` (% per run).

    Raises:
        ValueError: no runs, or ``predict`` returned an unexpected shape or label.
    """
    if not runs:
        raise ValueError("no runs to evaluate: pass the runs load_lake_runs returns (is the "
                         "runs folder or zip the one with run01 ... run20?)")
    per_run: list[float] = []
    wrong_total = items = 0
    with torch.no_grad():
        for run in runs:
            n, m = run.n_way, int(run.query.shape[0])
            support = run.support.unsqueeze(0).to(device)
            support_labels = torch.arange(n).unsqueeze(0).to(device)
            query = run.query.unsqueeze(0).to(device)
            if one_at_a_time:
                predicted = torch.cat([
                    _predicted_labels(predict(support, support_labels, query[:, j:j + 1]), 1, n,
                                      run.name)
                    for j in range(m)
                ])
            else:
                predicted = _predicted_labels(predict(support, support_labels, query), m, n,
                                              run.name)
            wrong = int((predicted != run.query_labels).sum())
            per_run.append(100.0 * wrong / m)
            wrong_total += wrong
            items += m
    error = 100.0 * wrong_total / items
    return {"error_rate": error, "accuracy": 100.0 - error, "runs": len(runs), "items": items,
            "per_run_error": per_run}
