"""The dataset registry: build any relgraph dataset by name.

A dataset factory takes ``roots`` (a list of paths, possibly empty) and keyword options and
returns a :class:`~relgraph.data.base.FewShotDataset`. Register new ones with
``@register_dataset("name")``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from relgraph.data.base import FewShotDataset
from relgraph.registry import Registry

__all__ = ["DATASETS", "register_dataset", "build_dataset", "list_datasets"]

DATASETS: Registry[FewShotDataset] = Registry("dataset")
register_dataset = DATASETS.register


def list_datasets() -> list[str]:
    """Names of the registered datasets."""
    return DATASETS.list()


def build_dataset(
    name: str,
    roots: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    alphabets: Sequence[str] | None = None,
    **kwargs: Any,
) -> FewShotDataset:
    """Build the dataset ``name`` from ``roots``, optionally keeping only some alphabets.

    Args:
        name: a registered name (see :func:`list_datasets`).
        roots: one path or several (folders, zips or files, as the dataset reads them).
        alphabets: keep only the classes of these alphabets (unknown names raise).
        **kwargs: dataset options (e.g. ``image_size``, ``split``).

    Raises:
        KeyError: unknown ``name`` (the message lists the valid ones).
    """
    factory = DATASETS.get(name)
    if roots is None:
        root_list: list[str] = []
    elif isinstance(roots, (str, os.PathLike)):
        root_list = [os.fspath(roots)]
    else:
        root_list = [os.fspath(r) for r in roots]
    dataset = factory(roots=root_list, **kwargs)
    if alphabets:
        dataset = dataset.select_alphabets(list(alphabets))
    return dataset
