"""Image scraper of the tutorial gallery (``sphinx_gallery_conf["image_scrapers"]`` in conf.py).

A module of its own (not a function of conf.py) so that Sphinx can pickle the configuration.
"""

from __future__ import annotations

from typing import Any


def tight_matplotlib(block: Any, block_vars: Any, gallery_conf: Any, **kwargs: Any) -> str:
    """sphinx-gallery's matplotlib scraper, saving with ``bbox_inches="tight"`` so that long
    labels (the class names left of an episode, legends outside the axes) are not cut off."""
    from sphinx_gallery.scrapers import matplotlib_scraper

    kwargs.setdefault("bbox_inches", "tight")
    return matplotlib_scraper(block, block_vars, gallery_conf, **kwargs)
