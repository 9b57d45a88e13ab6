"""Shared test fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _shared_data() -> Path:
    env = os.environ.get("RELGRAPH_SHARED_DATA")
    return Path(env) if env else ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (or ``$RELGRAPH_SHARED_DATA``); skips the test when it is absent."""
    path = _shared_data()
    if not path.is_dir():
        pytest.skip(f"real data not found at {path} (set RELGRAPH_SHARED_DATA)")
    return path


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Keep relgraph's on-disk cache inside the test session's temporary folder."""
    cache = os.environ.get("RELGRAPH_TEST_CACHE")
    if cache is None:
        cache = str(tmp_path_factory.getbasetemp() / "relgraph-cache")
        os.environ["RELGRAPH_TEST_CACHE"] = cache
    monkeypatch.setenv("RELGRAPH_CACHE", cache)
