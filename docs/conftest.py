"""pytest collects the ``>>>`` examples of the ``.rst`` pages here, not the Sphinx
configuration or the tutorials (those run when the docs build, and as scripts)."""

collect_ignore_glob = ["conf.py", "gallery_scrapers.py", "tutorials/*", "auto_tutorials/*",
                       "_build/*"]
