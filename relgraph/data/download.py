"""Downloading files over HTTP(S) with checksum verification and atomic writes.

A download is written to a temporary file beside its destination and renamed into place only
once it is complete and its checksums match, so an interrupted or corrupted download never
leaves a half-written file behind. A destination that already exists is trusted and not
downloaded again.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from relgraph.utils import atomic_path

__all__ = ["DownloadError", "download_file", "file_checksum", "extract_archive"]

_CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A download failed (network error, HTTP error, or checksum mismatch)."""


def file_checksum(path: str | os.PathLike[str], algorithm: str = "sha256") -> str:
    """Hex digest of the file at ``path`` (``algorithm``: any :mod:`hashlib` name, e.g. ``md5``)."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_file(
    url: str,
    path: str | os.PathLike[str],
    checksums: Mapping[str, str] | None = None,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` to ``path`` unless ``path`` already exists.

    The data goes to a temporary file beside ``path``, is checked against ``checksums``, and
    only then renamed onto ``path``; on any failure nothing is left behind.

    Args:
        url: what to fetch (``https://``, ``http://`` or ``file://``).
        path: where to put it; parent folders are created.
        checksums: expected hex digests by :mod:`hashlib` algorithm name, e.g.
            ``{"md5": "...", "sha256": "..."}``; all given ones must match.
        timeout: seconds to wait for the server at each step.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        DownloadError: the server could not be reached, answered with an error, or the data
            did not match ``checksums``. The message names the URL and says where to put a
            copy downloaded by hand.
    """
    path = Path(path)
    if path.exists():
        return path
    checksums = {k.lower(): v.lower() for k, v in (checksums or {}).items()}
    by_hand = (f"If you are offline, download {url} by hand (with a browser or curl) and put "
               f"it at {path}.")
    try:
        digests = {algo: hashlib.new(algo) for algo in checksums}
    except ValueError as exc:
        raise ValueError(f"unknown checksum algorithm in {sorted(checksums)}: {exc}") from exc
    with atomic_path(path) as tmp:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
                size = 0
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    out.write(chunk)
                    size += len(chunk)
                    for digest in digests.values():
                        digest.update(chunk)
                expected = response.headers.get("Content-Length")
                if expected is not None and expected.isdigit() and size != int(expected):
                    raise DownloadError(  # the server closed early: read() just ends
                        f"could not download {url}: the transfer stopped after {size} of "
                        f"{expected} bytes (nothing was written to {path}). {by_hand}")
        except urllib.error.HTTPError as exc:
            raise DownloadError(f"could not download {url}: HTTP {exc.code} {exc.reason}. "
                                f"{by_hand}") from exc
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", exc)
            raise DownloadError(f"could not download {url}: {reason}. {by_hand}") from exc
        for algo, digest in digests.items():
            got = digest.hexdigest()
            if got != checksums[algo]:
                raise DownloadError(
                    f"checksum mismatch for {url}: {algo} is {got}, expected {checksums[algo]}. "
                    f"The download was discarded (nothing was written to {path}); the file on "
                    f"the server may have changed or the transfer was corrupted. {by_hand}"
                )
    return path


def extract_archive(archive: str | os.PathLike[str], dest: str | os.PathLike[str]) -> Path:
    """Extract the tar archive ``archive`` (``.tar``, ``.tgz``, ``.tar.gz``) into ``dest``.

    Members that would land outside ``dest`` (absolute paths, ``..``, links) are refused. The
    archive is unpacked into a temporary folder inside ``dest`` first and its top-level entries
    are then moved into place (replacing entries of the same name), so an interrupted or failed
    extraction leaves no half-written dataset folder behind for a later run to take as complete.

    Raises:
        ValueError: the archive is damaged or holds an unsafe member; the message names it.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".extracting-", dir=dest))
    root = staging.resolve()
    try:
        try:
            with tarfile.open(archive) as tar:
                members = tar.getmembers()
                for m in members:
                    target = (root / m.name).resolve()
                    if not (m.isfile() or m.isdir()) or not target.is_relative_to(root):
                        raise ValueError(f"unsafe member {m.name!r}")
                tar.extractall(staging, members=members)  # noqa: S202  (members checked above)
        except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
            raise ValueError(f"cannot extract {archive}: {exc}; delete it and download it "
                             "again") from exc
        for entry in staging.iterdir():
            target = dest / entry.name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
            os.replace(entry, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest
