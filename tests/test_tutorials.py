"""The tutorials leave nothing behind: the docs build runs them all in one process.

sphinx-gallery executes every ``docs/tutorials/tNN_*.py`` when the docs build (CI does it on
each change), in the build's own Python process. A tutorial that makes a folder with
``tempfile.mkdtemp`` leaves it in ``/tmp`` at every build (28 such folders, 228 MB, were
found on the development machine after a day of builds), and one that sets an environment
variable changes every tutorial run after it. These checks read the sources; they run nothing.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

FOLDER = Path(__file__).resolve().parents[1] / "docs" / "tutorials"
TUTORIALS = sorted(FOLDER.glob("t[0-9][0-9]_*.py"))


def _dotted(node: ast.AST) -> str:
    """``a.b.c`` for an attribute chain or a name, else ``""``."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else ""
    return ""


def _environ_key(node: ast.AST) -> str | None:
    """The key of ``os.environ["KEY"]`` (a subscript target), else None."""
    if isinstance(node, ast.Subscript) and _dotted(node.value) == "os.environ" \
            and isinstance(node.slice, ast.Constant):
        return str(node.slice.value)
    return None


def test_there_are_tutorials():
    assert len(TUTORIALS) >= 9, TUTORIALS


@pytest.mark.parametrize("path", TUTORIALS, ids=lambda p: p.stem)
def test_tutorial_removes_its_temporary_folders(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    calls = {_dotted(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    leaky = sorted(calls & {"tempfile.mkdtemp", "tempfile.mkstemp", "mkdtemp", "mkstemp"})
    assert not leaky, (f"{path.name} calls {leaky}, which nobody removes: use "
                       "tempfile.TemporaryDirectory and call its cleanup() at the end")
    folders = {t.id for n in tree.body if isinstance(n, ast.Assign)
               and isinstance(n.value, ast.Call)
               and _dotted(n.value.func) in {"tempfile.TemporaryDirectory", "TemporaryDirectory"}
               for t in n.targets if isinstance(t, ast.Name)}
    cleaned = {_dotted(n.value.func).rsplit(".", 1)[0] for n in tree.body
               if isinstance(n, ast.Expr) and isinstance(n.value, ast.Call)
               and _dotted(n.value.func).endswith(".cleanup")}
    assert folders <= cleaned, (f"{path.name}: {sorted(folders - cleaned)} never cleaned up "
                                "(add `<name>.cleanup()` at the end of the tutorial)")


@pytest.mark.parametrize("path", TUTORIALS, ids=lambda p: p.stem)
def test_tutorial_restores_the_environment_it_changes(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = list(ast.walk(tree))
    changed = {k for n in nodes if isinstance(n, ast.Assign) for t in n.targets
               if (k := _environ_key(t)) is not None}
    deleted = {k for n in nodes if isinstance(n, ast.Delete) for t in n.targets
               if (k := _environ_key(t)) is not None}
    assert changed <= deleted, (f"{path.name} sets os.environ{sorted(changed - deleted)} for "
                                "every later tutorial of the docs build: restore it at the end")
