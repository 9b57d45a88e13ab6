"""The shape of the package: data flows one way, and no module imports one that imports it."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "relgraph"


def module_imports() -> dict[str, set[str]]:
    """Every relgraph module and the relgraph modules it imports (lazy imports included)."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("relgraph")}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                    and node.module.startswith("relgraph"):
                found.add(node.module)
        modules[name] = found
    return modules


def test_no_module_imports_a_module_that_imports_it_back():
    imports = module_imports()
    pairs = sorted({tuple(sorted((a, b))) for a, deps in imports.items() for b in deps
                    if b in imports and a in imports[b] and a != b})
    assert not pairs, pairs


def test_methods_never_import_the_engine():
    imports = module_imports()
    upward = {(a, b) for a, deps in imports.items() if a.startswith("relgraph.methods")
              for b in deps if b.startswith(("relgraph.engine", "relgraph.cli"))}
    assert not upward, upward


def test_graph_nn_and_backbones_do_not_import_methods():
    imports = module_imports()
    for a, deps in imports.items():
        if a.startswith(("relgraph.graph", "relgraph.nn", "relgraph.backbones", "relgraph.data")):
            assert not {b for b in deps if b.startswith(("relgraph.methods",
                                                          "relgraph.engine"))}, a
