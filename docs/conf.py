"""Sphinx configuration for relgraph."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import relgraph

sys.path.insert(0, str(Path(__file__).resolve().parent))  # docs/gallery_scrapers.py

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
    "sphinx.ext.intersphinx",
    "matplotlib.sphinxext.plot_directive",
    "sphinx_gallery.gen_gallery",
]
plot_html_show_formats = False
plot_html_show_source_link = False
plot_formats = [("png", 110)]
autosummary_generate = True
# extra_repr is nn.Module printing plumbing, not API: left out of the pages
autodoc_default_options = {"members": True, "show-inheritance": True, "ignore-module-all": True,
                           "exclude-members": "extra_repr"}
autodoc_typehints = "description"
autodoc_member_order = "bysource"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
nitpicky = False
exclude_patterns = ["_build", "_small1_table.rst", "tutorials/README.rst"]


# -- intersphinx: links to Python, PyTorch, PyG and NumPy ------------------------------------
# The inventories (objects.inv) are fetched from the web at build time. This project's build
# machines are offline, where every failed fetch is a warning and the build runs with -W, so the
# links are on only when asked for (the build then does not depend on which sites answer):
#   RELGRAPH_DOCS_INTERSPHINX=1  on (a fetch that fails is then a warning, so an error with -W)
#   unset or anything else       off: external names stay plain text
_INTERSPHINX = {
    "python": ("https://docs.python.org/3", None),
    "torch": ("https://docs.pytorch.org/docs/stable", None),
    "torch_geometric": ("https://pytorch-geometric.readthedocs.io/en/latest", None),
    "numpy": ("https://numpy.org/doc/stable", None),
}


_wanted = os.environ.get("RELGRAPH_DOCS_INTERSPHINX", "").strip()
intersphinx_mapping = _INTERSPHINX if _wanted == "1" else {}
intersphinx_timeout = 10


# -- the tutorial gallery (sphinx-gallery): every tutorial runs when the docs build -----------
# Sources: docs/tutorials/tNN_<name>.py (a plain script each; README.rst is the gallery's
# header). Output: docs/auto_tutorials/ (generated, not committed), with each page's printed
# output, figures, run time and download links for the .py and .ipynb.
sphinx_gallery_conf = {
    "examples_dirs": ["tutorials"],
    "gallery_dirs": ["auto_tutorials"],
    "filename_pattern": r"/t\d\d_",  # execute every tutorial
    "ignore_pattern": r"__init__\.py",
    "within_subsection_order": "FileNameSortKey",
    "download_all_examples": True,
    "abort_on_example_error": True,
    "remove_config_comments": True,
    "matplotlib_animations": False,
    "image_scrapers": ("gallery_scrapers.tight_matplotlib",),  # docs/gallery_scrapers.py
    "reset_modules": ("matplotlib",),
    "show_memory": False,
    "plot_gallery": "True",
    "min_reported_time": 0,
}
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
