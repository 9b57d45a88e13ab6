"""Doctests: ``pytest`` also runs the ``>>>`` examples of ``relgraph/`` and ``docs/*.rst``
(``--doctest-modules``, ``--doctest-glob``; see ``pyproject.toml``).

Each example runs in its own temporary folder, so one that writes a file leaves nothing in the
checkout, with relgraph's cache in the test session's temporary folder (shared with the tests,
``tests/conftest.py``), so the ``glyphs`` images are rendered once per session.
"""

from __future__ import annotations

import os

import pytest
from _pytest.doctest import DoctestItem

#: Not collected for doctests: the Sphinx configuration and the tutorials (they run when the docs
#: build, and as scripts) and the build's outputs.
collect_ignore_glob = ["docs/conf.py", "docs/gallery_scrapers.py", "docs/tutorials/*",
                       "docs/auto_tutorials/*", "docs/_build/*"]


@pytest.fixture(autouse=True)
def _doctest_in_a_temporary_folder(request: pytest.FixtureRequest,
                                   tmp_path_factory: pytest.TempPathFactory,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    if not isinstance(request.node, DoctestItem):
        return
    cache = os.environ.get("RELGRAPH_TEST_CACHE")
    if cache is None:
        cache = str(tmp_path_factory.getbasetemp() / "relgraph-cache")
        os.environ["RELGRAPH_TEST_CACHE"] = cache
    monkeypatch.setenv("RELGRAPH_CACHE", cache)
    monkeypatch.chdir(tmp_path_factory.mktemp("doctest"))
