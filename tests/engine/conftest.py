"""Fixtures for engine tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import make_tiny_data


@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    return make_tiny_data(tmp_path / "tiny.pt")
