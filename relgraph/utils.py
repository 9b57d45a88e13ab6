"""Small shared helpers: the cache folder and atomic writes."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["cache_dir", "atomic_path", "atomic_write_text"]


def cache_dir() -> Path:
    """relgraph's cache folder: ``$RELGRAPH_CACHE``, else ``$XDG_CACHE_HOME/relgraph``, else
    ``~/.cache/relgraph``. Created if missing."""
    env = os.environ.get("RELGRAPH_CACHE")
    if env:
        path = Path(env)
    else:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        path = Path(base) / "relgraph"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _umask() -> int:
    """The process's umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    The file gets the permissions a plain ``open(path, "w")`` would give (``0666`` less the
    umask). If the block raises, the temporary file is removed and ``path`` is left as it was, so a
    reader never sees a half-written file.

    Example:
        >>> with atomic_path("results.json") as tmp:
        ...     tmp.write_text("{}")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 -> what open() would give (0644 usually)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically (temp file, then rename)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
