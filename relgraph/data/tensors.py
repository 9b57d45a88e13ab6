"""``tensors``: in-memory tensors or precomputed features with labels."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from relgraph.data.base import InMemoryDataset
from relgraph.data.catalog import register_dataset
from relgraph.data.io import file_not_found, read_npz

__all__ = ["TensorDataset"]


class TensorDataset(InMemoryDataset):
    """Examples held in a tensor: images ``[N, c, h, w]`` or precomputed features ``[N, d]``.

    Labels may be any integers or strings; they are mapped to classes ``0..C-1`` in sorted
    order of their values, and class names are their ``str``.

    Args:
        inputs: ``[N, *x]`` float (or uint8 images, read as ``x / 255``).
        labels: ``[N]`` class labels (ints or strings).
        alphabets: optional mapping ``label -> alphabet`` to group classes.

    Example:
        >>> feats = torch.randn(100, 64); labels = torch.arange(100) % 10
        >>> ds = TensorDataset(feats, labels)
        >>> ds.num_classes, ds.get_batch(torch.tensor([0, 1])).shape
        (10, torch.Size([2, 64]))
    """

    def __init__(
        self,
        inputs: Tensor,
        labels: Sequence[Any] | Tensor,
        alphabets: dict[Any, str] | None = None,
    ) -> None:
        inputs = torch.as_tensor(inputs)
        if isinstance(labels, Tensor):
            if labels.dim() != 1 or labels.dtype.is_floating_point:
                raise ValueError(f"labels must be a 1-d integer tensor, got {labels.dtype} "
                                 f"shape {tuple(labels.shape)}")
            labels = labels.tolist()
        labels = list(labels)
        if inputs.dim() < 2:
            raise ValueError(f"inputs must be [N, *x] with at least 2 dims, got shape "
                             f"{tuple(inputs.shape)}")
        if len(labels) != inputs.shape[0]:
            raise ValueError(f"{inputs.shape[0]} inputs but {len(labels)} labels")
        try:
            values = sorted(set(labels))
        except TypeError as exc:
            raise ValueError("labels must be all ints or all strings, not a mix") from exc
        index = {v: i for i, v in enumerate(values)}
        targets = torch.tensor([index[v] for v in labels], dtype=torch.long)
        class_alphabets = None
        if alphabets is not None:
            missing = [v for v in values if v not in alphabets]
            if missing:
                raise ValueError(f"alphabets has no entry for label(s) {missing[:5]}")
            class_alphabets = [str(alphabets[v]) for v in values]
        # Images keep the 4-d layout InMemoryDataset expects; features are stored as [N, d, 1, 1].
        self._feature_shape: tuple[int, ...] | None = None
        if inputs.dim() != 4:
            self._feature_shape = tuple(inputs.shape[1:])
            inputs = inputs.reshape(inputs.shape[0], int(torch.tensor(self._feature_shape).prod()),
                                    1, 1)
        super().__init__(inputs, targets, [str(v) for v in values], class_alphabets,
                         {"dataset": "tensors"})
        if self._feature_shape is not None:
            self.preprocessing.pop("image_size", None)
            self.preprocessing.pop("channels", None)
            self.preprocessing["feature_shape"] = list(self._feature_shape)

    def _shape(self, x: Tensor, batched: bool) -> Tensor:
        if self._feature_shape is None:
            return x
        return x.reshape(-1, *self._feature_shape) if batched else x.reshape(self._feature_shape)

    def load(self, index: int) -> Tensor:
        return self._shape(super().load(index), batched=False)

    def read_rows(self, rows: Tensor) -> Tensor:
        return self._shape(super().read_rows(rows), batched=True)


@register_dataset("tensors")
def _build(roots: list[str], class_alphabets: dict[Any, str] | None = None, **kwargs: Any
           ) -> TensorDataset:
    """Load ``inputs`` and ``labels`` from a ``.pt`` (``torch.save({"inputs", "labels"})``) or
    ``.npz`` file, or take them as keyword arguments ``inputs=..., labels=...``.

    ``class_alphabets`` (a mapping ``label -> alphabet``, e.g. ``data.options`` in a config)
    groups classes into alphabets; ``alphabets`` is :func:`build_dataset`'s filter."""
    if class_alphabets is not None:
        kwargs["alphabets"] = class_alphabets
    if "inputs" in kwargs:
        return TensorDataset(kwargs.pop("inputs"), kwargs.pop("labels"), **kwargs)
    if len(roots) != 1:
        raise ValueError("the tensors dataset needs exactly one --root: a .pt or .npz file with "
                         "'inputs' and 'labels'")
    path = roots[0]
    if path.endswith(".npz"):
        arrays = read_npz(path, ["inputs", "labels"])
    elif path.endswith((".pt", ".pth")):
        if not Path(path).is_file():
            raise file_not_found(path)
        try:
            arrays = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for damaged or foreign files
            detail = str(exc).splitlines()[0] if str(exc) else ""
            raise ValueError(f"cannot read {path}: not a readable torch file of tensors "
                             f"({type(exc).__name__}: {detail})") from exc
    else:
        raise ValueError(f"{path}: unsupported file; the tensors dataset reads .pt or .npz files")
    if not isinstance(arrays, dict) or "inputs" not in arrays or "labels" not in arrays:
        have = sorted(arrays) if isinstance(arrays, dict) else type(arrays).__name__
        raise ValueError(f"{path} must hold 'inputs' and 'labels' (it holds {have}); save "
                         "them as a dict, e.g. torch.save({'inputs': x, 'labels': y}, path)")
    try:
        labels = arrays["labels"]
        labels = labels.tolist() if hasattr(labels, "tolist") else list(labels)
        inputs = torch.as_tensor(arrays["inputs"])
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{path}: 'inputs' must be a tensor [N, ...] and 'labels' [N] "
                         f"integers or strings ({exc})") from exc
    try:
        return TensorDataset(inputs, labels, **kwargs)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc
