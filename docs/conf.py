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
exclude_patterns = ["_build"]
html_theme = "alabaster"
html_static_path = ["_static"]
