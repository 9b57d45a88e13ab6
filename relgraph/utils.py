"""Small shared helpers: the cache folder and atomic writes."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["cache_dir", "atomic_path", "atomic_write_text", "WriteFailed", "write_error",
           "file_sha256"]


class WriteFailed(OSError):
    """A write of relgraph's failed (its message names the file; ``errno`` is the cause's)."""


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
    umask). If the block raises, the temporary file is removed and ``path`` is left as it was,
    so a reader never sees a half-written file. A process killed mid-write (``kill -9``) leaves
    ``path`` as it was too, and a ``.<name>.<random>.tmp`` file that the next training run in
    that folder removes.

    Raises:
        OSError: the write failed (e.g. the disk is full: ``errno.ENOSPC``); the message names
            ``path`` and says that it was left unchanged.

    Example:
        >>> with atomic_path("results.json") as tmp:
        ...     _ = tmp.write_text("{}")
        >>> Path("results.json").read_text()
        '{}'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 -> what open() would give (0644 usually)
    tmp_path = Path(tmp)
    try:
        try:
            yield tmp_path
            os.replace(tmp_path, path)
        except WriteFailed:
            raise
        except OSError as exc:
            raise write_error(path, exc) from exc
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_error(path: Path, exc: Exception) -> WriteFailed:
    """A one-line :class:`WriteFailed` for a failed atomic write of ``path``."""
    code = getattr(exc, "errno", None)
    if code in (errno.ENOSPC, errno.EDQUOT):
        reason = "no space left on device; free some space, then run the same command again"
    else:
        text = getattr(exc, "strerror", None) or str(exc)
        reason = text.splitlines()[0] if text else type(exc).__name__
    state = "left unchanged" if path.exists() else "not created"
    message = f"cannot write {path}: {reason} ({path.name} {state})"
    return WriteFailed(code, message) if code is not None else WriteFailed(message)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically (temp file, then rename)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
