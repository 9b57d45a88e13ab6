"""Sphinx configuration for relgraph."""

from __future__ import annotations

import relgraph

project = "relgraph"
author = "relgraph developers"
copyright = "2026, relgraph developers"
release = relgraph.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "matplotlib.sphinxext.plot_directive",
]
plot_html_show_formats = False
plot_html_show_source_link = False
plot_formats = [("png", 110)]
autosummary_generate = True
autodoc_default_options = {"members": True, "show-inheritance": True, "ignore-module-all": True}
autodoc_typehints = "description"
autodoc_member_order = "bysource"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
# Offline builds: no intersphinx inventories are fetched, so external types stay plain text.
nitpicky = False
exclude_patterns = ["_build", "_small1_table.rst"]
html_theme = "alabaster"
html_static_path = ["_static"]


def _small1_table() -> None:
    """Write ``_small1_table.rst`` (included by families.rst) from the measured results.

    The numbers come from ``experiments/results/omniglot_small1.json`` (written by
    ``experiments/omniglot_small1.py``), so the docs never hold a number typed by hand.
    """
    import sys
    from pathlib import Path

    here = Path(__file__).resolve().parent
    sys.path.insert(0, str(here.parent / "experiments"))
    from omniglot_small1 import FAMILIES, SETTINGS, load_rows  # the table's own definitions

    rows = load_rows()
    lines = [".. list-table::", "   :header-rows: 1", "",
             "   * - method", "     - family", "     - mode",
             *(f"     - {w}-way {k}-shot" for w, k in SETTINGS), "     - training (2-core CPU)"]
    order = list(FAMILIES)
    for r in sorted(rows.values(), key=lambda r: order.index(r["method"])
                    if r["method"] in order else len(order)):
        cells = []
        for w, k in SETTINGS:
            a = r["results"].get(f"{w}w{k}s")
            cells.append(f"{a['accuracy']:.2f} ± {a['ci95']:.2f}" if a else "not run")
        secs = r.get("train_seconds")
        mode = "transductive" if r["transductive"] else "inductive"
        lines += [f"   * - ``{r['method']}``", f"     - {FAMILIES.get(r['method'], '?')}",
                  f"     - {mode}", *(f"     - {c}" for c in cells),
                  f"     - {secs / 60:.1f} min" if secs else "     - not recorded"]
    if not rows:
        lines = ["(No results yet: run ``python experiments/omniglot_small1.py``.)"]
    out = here / "_small1_table.rst"
    text = "\n".join(lines) + "\n"
    if not out.is_file() or out.read_text() != text:
        out.write_text(text)


_small1_table()
