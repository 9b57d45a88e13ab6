"""How many CPU threads a relgraph process should use: the cores it is actually given.

``os.cpu_count()`` counts the machine's cores, not the ones this process may run on. A process
pinned to some cores (``taskset``, ``sched_setaffinity``) or in a container with a CPU quota
(``docker --cpus 2``, Kubernetes CPU limits: the cgroup's ``cpu.max`` or ``cpu.cfs_quota_us``)
that starts one compute thread per machine core gets its threads descheduled in turn, and every
OpenMP barrier waits for the slowest one. :func:`available_cpus` counts what the process really
has; :func:`configure_threads` gives torch that many intra-op threads unless the user chose:

1. an explicit ``threads`` argument (the ``relgraph --threads N`` option), else
2. ``OMP_NUM_THREADS`` (or ``MKL_NUM_THREADS``) in the environment, which torch already
   follows, else
3. :func:`available_cpus`.

Only the command line (:mod:`relgraph.cli`) calls :func:`configure_threads`: library code never
changes the process's thread settings, so ``torch.set_num_threads`` in a user's script stands.

The ``relgraph`` command also sets ``OMP_WAIT_POLICY=PASSIVE`` before torch is imported
(:func:`command_line_wait_policy`), unless the user set ``OMP_WAIT_POLICY`` or
``GOMP_SPINCOUNT``: by default GNU OpenMP's idle threads spin for a while at every barrier, which
on a machine shared with other jobs burns the cores those jobs need and waits on threads that
are descheduled. ``experiments/bench_threads.py`` measured it (``experiments/results/threads.md``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["available_cpus", "cgroup_cpu_limit", "command_line_wait_policy", "configure_threads",
           "default_threads"]

#: Variables by which a user chose how OpenMP threads wait; any of them set: left alone.
WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")

_V1_CPU_DIRS = ("cpu", "cpu,cpuacct", "cpuacct,cpu")


def _cgroup_paths(proc_cgroup: Path) -> tuple[str | None, str | None]:
    """This process's cgroup v2 path and cgroup v1 ``cpu`` controller path (``None``: none)."""
    v2 = v1 = None
    try:
        text = proc_cgroup.read_text(encoding="ascii", errors="replace")
    except OSError:
        return None, None
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            v2 = path
        elif "cpu" in controllers.split(","):
            v1 = path
    return v2, v1


def _ancestors(base: Path, path: str) -> list[Path]:
    """``base/path`` and each of its parents up to ``base`` (a limit on any of them applies)."""
    rel = Path(path.lstrip("/"))
    dirs = [base / rel]
    while rel != rel.parent:
        rel = rel.parent
        dirs.append(base / rel)
    return list(dict.fromkeys(dirs))


def _v2_limit(directory: Path) -> float | None:
    try:
        quota, *period = (directory / "cpu.max").read_text(encoding="ascii").split()
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    try:
        return int(quota) / int(period[0] if period else 100_000)
    except (ValueError, ZeroDivisionError):
        return None


def _v1_limit(directory: Path) -> float | None:
    try:
        quota = int((directory / "cpu.cfs_quota_us").read_text(encoding="ascii"))
        period = int((directory / "cpu.cfs_period_us").read_text(encoding="ascii"))
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


def cgroup_cpu_limit(root: str | os.PathLike[str] = "/sys/fs/cgroup",
                     proc_cgroup: str | os.PathLike[str] = "/proc/self/cgroup") -> float | None:
    """The CPU quota of this process's cgroup, in cores (``1.5`` = 150 ms per 100 ms), or
    ``None`` when there is none.

    cgroup v2: ``cpu.max`` (``"<quota> <period>"`` or ``"max <period>"``) of the process's
    cgroup and of its ancestors; cgroup v1: ``cpu.cfs_quota_us / cpu.cfs_period_us`` (-1: no
    quota) under the ``cpu`` controller. The smallest limit found applies. Inside a container
    the cgroup path is often ``/`` (a cgroup namespace), which reads the files at ``root``.

    Args:
        root: where the cgroup file systems are mounted (v2 there, v1 in ``root/cpu`` etc.).
        proc_cgroup: the ``/proc/<pid>/cgroup`` file naming this process's cgroups.
    """
    root = Path(root)
    v2, v1 = _cgroup_paths(Path(proc_cgroup))
    limits: list[float] = []
    if v2 is not None:
        limits += [x for d in _ancestors(root, v2) if (x := _v2_limit(d)) is not None]
        unified = root / "unified"  # hybrid layout: the v2 hierarchy mounted beside v1
        if unified.is_dir():
            limits += [x for d in _ancestors(unified, v2) if (x := _v2_limit(d)) is not None]
    if v1 is not None:
        for name in _V1_CPU_DIRS:
            base = root / name
            if base.is_dir():
                limits += [x for d in _ancestors(base, v1) if (x := _v1_limit(d)) is not None]
    return min(limits) if limits else None


def available_cpus(root: str | os.PathLike[str] = "/sys/fs/cgroup",
                   proc_cgroup: str | os.PathLike[str] = "/proc/self/cgroup") -> int:
    """CPUs this process may use: its affinity mask (``os.sched_getaffinity``), capped by the
    cgroup CPU quota rounded up (:func:`cgroup_cpu_limit`: a quota of 1.5 cores gives 2), at
    least 1. Where affinity is not available (macOS, Windows), ``os.cpu_count()``."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    limit = cgroup_cpu_limit(root, proc_cgroup)
    if limit is not None:
        cpus = min(cpus, math.ceil(limit))
    return max(1, cpus)


def default_threads(threads: int | None = None, environ: Mapping[str, str] | None = None,
                    **where: str | os.PathLike[str]) -> tuple[int | None, str]:
    """The intra-op thread count to set and why, or ``(None, why)`` to leave torch's own.

    Args:
        threads: the user's explicit choice (``--threads``); wins when given.
        environ: the environment (default ``os.environ``); a set ``OMP_NUM_THREADS`` or
            ``MKL_NUM_THREADS`` means the user chose, and torch follows it already.
        where: ``root`` / ``proc_cgroup`` for :func:`available_cpus` (tests).

    Raises:
        ValueError: ``threads`` is below 1.
    """
    if threads is not None:
        if threads < 1:
            raise ValueError(f"--threads must be >= 1, got {threads}")
        return threads, "--threads"
    environ = os.environ if environ is None else environ
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        if environ.get(var, "").strip():
            return None, var
    return available_cpus(**where), "available CPUs (affinity and cgroup quota)"


def configure_threads(threads: int | None = None, environ: Mapping[str, str] | None = None,
                      **where: str | os.PathLike[str]) -> int:
    """Set torch's intra-op threads as :func:`default_threads` says; returns the count in use.

    For programs' entry points (the ``relgraph`` command); library functions never call it.
    """
    import torch

    n, _ = default_threads(threads, environ, **where)
    if n is not None and n != torch.get_num_threads():
        torch.set_num_threads(n)
    return torch.get_num_threads()


def command_line_wait_policy(orig_argv: Sequence[str], argv: Sequence[str],
                             environ: Mapping[str, str], modules: Mapping[str, object]) -> bool:
    """Whether to set ``OMP_WAIT_POLICY=PASSIVE`` while ``relgraph`` is imported: only in the
    ``relgraph`` command (the console script, or ``python -m relgraph.cli``), only before
    torch is imported (OpenMP reads it once, when torch loads it), and only when the user set
    none of :data:`WAIT_VARIABLES`.

    Args:
        orig_argv: the interpreter's command line (``sys.orig_argv``).
        argv: the program's (``sys.argv``).
        environ: the environment.
        modules: the imported modules (``sys.modules``).
    """
    if "torch" in modules or any(v in environ for v in WAIT_VARIABLES):
        return False
    orig = list(orig_argv)
    module = orig[orig.index("-m") + 1] if "-m" in orig[:-1] else None
    script = Path(argv[0]).name if argv else ""
    return module == "relgraph.cli" or script == "relgraph"
