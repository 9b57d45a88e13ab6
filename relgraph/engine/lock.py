"""One run per run folder: a lock file holding the PID of the process that trains there.

:func:`run_lock` takes ``<run folder>/.lock`` for the duration of a training call. A second
``relgraph train`` on the same folder refuses to start (a :class:`RunFolderLocked` naming the
folder and the PID holding it) instead of interleaving its checkpoints with the first one's.

The lock is an ``flock`` on the file (where the platform has ``fcntl``), which the kernel
releases when the holding process dies, even by ``kill -9``; the lock file a dead process
leaves behind is then taken over with a warning. Without ``fcntl`` the PID in the file is
checked instead (alive: refused; dead: taken over).
"""

from __future__ import annotations

import contextlib
import os
import socket
import warnings
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["run_lock", "RunFolderLocked", "LOCK_NAME", "remove_stale_temp_files"]

LOCK_NAME = ".lock"


class RunFolderLocked(ValueError):
    """Another live process is training in this run folder."""


def _holder(text: str) -> tuple[int | None, str]:
    """``(pid, host)`` written in a lock file (``None`` when unreadable)."""
    fields = text.split()
    try:
        return int(fields[0]), (fields[1] if len(fields) > 1 else "")
    except (IndexError, ValueError):
        return None, ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _refuse(folder: Path, text: str) -> RunFolderLocked:
    pid, host = _holder(text)
    who = f"process {pid}" + (f" on {host}" if host and host != socket.gethostname() else "")
    return RunFolderLocked(
        f"{folder} is in use by another relgraph run ({who}, lock file {folder / LOCK_NAME}); "
        "wait for it to finish or stop it, or give another --out folder")


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Remove the temporary files that an interrupted atomic write left in ``folder``.

    Only names written by :func:`relgraph.utils.atomic_path` (``.<name>.<random>.tmp``) are
    removed; call it while holding the folder's lock.
    """
    removed = []
    for path in folder.glob(".*.tmp"):
        if path.is_file():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            removed.append(path)
    return removed


@contextlib.contextmanager
def run_lock(folder: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold ``folder/.lock`` for the duration of the block (the folder is created if needed).

    On leaving the block the lock file is removed, and so is the folder if the block left
    it empty (a run that failed before writing anything leaves nothing behind).

    Raises:
        RunFolderLocked: a live process holds the lock.
    """
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK_NAME
    fd = _acquire(folder, lock)
    try:
        yield lock
    finally:
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()  # while still holding it: a waiting process then sees a new file
        os.close(fd)
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if empty


def _acquire(folder: Path, lock: Path) -> int:
    me = f"{os.getpid()} {socket.gethostname()}\n"
    for _ in range(10):  # retries only when another process removes the file meanwhile
        if fcntl is not None:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                text = os.pread(fd, 200, 0).decode("utf-8", "replace")
                os.close(fd)
                raise _refuse(folder, text) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(lock).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the holder removed it between our open and flock: try again
                os.close(fd)
                continue
            previous = os.pread(fd, 200, 0).decode("utf-8", "replace")
        else:  # pragma: no cover - Windows: the PID decides
            try:
                fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
                previous = ""
            except FileExistsError:
                previous = lock.read_text(encoding="utf-8", errors="replace")
                pid, _ = _holder(previous)
                if pid is not None and _alive(pid):
                    raise _refuse(folder, previous) from None
                with contextlib.suppress(FileNotFoundError):
                    lock.unlink()
                continue
        if previous.strip():
            pid, _ = _holder(previous)
            warnings.warn(f"{lock}: taking over the stale lock of process {pid}, which is no "
                          "longer running (an interrupted run)", RuntimeWarning, stacklevel=4)
        os.ftruncate(fd, 0)
        os.pwrite(fd, me.encode(), 0)
        return fd
    raise _refuse(folder, lock.read_text(encoding="utf-8", errors="replace"))
