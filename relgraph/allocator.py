"""Keep freed memory in the process: no page faults for every step's large tensors.

glibc's ``malloc`` serves every allocation above its mmap threshold (128 KiB, rising
dynamically up to 32 MiB) with a fresh ``mmap`` and gives it back to the operating system when
it is freed; freed memory at the top of the heap is returned as well (``M_TRIM_THRESHOLD``).
A training step allocates and frees the same tens or hundreds of MiB of activations every time
(a Conv-4 on 400 images: an 80 MiB feature map per layer; a 400-node graph head: ``n x n x h``
tensors), so every step page-faults all of it back in, and the kernel zeroes every page. On the
project's 2-core machine a 300-step ProtoNet training run spent 18 s of its 93 s in the kernel
and took 68 s with freed memory kept (``experiments/results/allocator.md``); the papers' own
graph networks' steps took half the time (``experiments/results/bench_reference_heads.md``).

:func:`keep_freed_memory` asks glibc to keep what it frees (``mallopt``: no ``mmap`` for large
blocks, ``M_MMAP_MAX = 0``, so they come from the heap, and no trimming of the heap,
``M_TRIM_THRESHOLD`` at its maximum), as allocators made for this (jemalloc, tcmalloc; the
PyTorch CPU tuning guide recommends them) do by design. The process's resident memory then
stays at its peak instead of shrinking between steps.

Only the command line (:mod:`relgraph.cli`) calls it, as it sets threads
(:mod:`relgraph.threads`): library code never changes process-wide settings. It is skipped
when the user chose an allocator setting (:func:`allocator_chosen`: ``RELGRAPH_ALLOCATOR=system``,
glibc's ``MALLOC_*_`` variables or ``GLIBC_TUNABLES``, or an allocator in ``LD_PRELOAD``) and
where ``mallopt`` does not exist (macOS, Windows, musl).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import warnings
from collections.abc import Mapping

__all__ = ["allocator_chosen", "child_environment", "keep_freed_memory"]

#: ``mallopt`` parameters (glibc's ``malloc.h``).
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
#: The largest value ``mallopt`` takes (a C ``int``).
INT_MAX = 2**31 - 1

#: Environment variables by which a user chose glibc malloc's behaviour; any set: left alone.
GLIBC_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_",
                   "MALLOC_MMAP_MAX_", "MALLOC_ARENA_MAX", "GLIBC_TUNABLES")
#: Allocators that replace malloc through ``LD_PRELOAD``.
PRELOADED = ("jemalloc", "tcmalloc", "mimalloc")


def allocator_chosen(environ: Mapping[str, str] | None = None) -> str | None:
    """Why the user's own allocator settings stand, or ``None`` when there are none.

    Args:
        environ: the environment (default ``os.environ``).
    """
    environ = os.environ if environ is None else environ
    value = environ.get("RELGRAPH_ALLOCATOR", "").strip().lower()
    if value == "system":
        return "RELGRAPH_ALLOCATOR=system"
    if value:
        warnings.warn(f"RELGRAPH_ALLOCATOR={value!r} is not a setting: 'system' leaves malloc "
                      "as it is; unset it to keep freed memory (the default)", stacklevel=2)
    for var in GLIBC_VARIABLES:
        if var in environ:
            return var
    preload = environ.get("LD_PRELOAD", "")
    for name in PRELOADED:
        if name in preload:
            return f"LD_PRELOAD ({name})"
    return None


def child_environment(keep: bool, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a child process that is to run with glibc malloc's defaults
    (``keep=False``) or with freed memory kept by the ``relgraph`` command (``keep=True``), for
    benchmarks comparing the two: ``environ`` (default ``os.environ``) without
    ``RELGRAPH_ALLOCATOR`` and glibc's malloc variables, plus ``RELGRAPH_ALLOCATOR=system``
    when not keeping. An allocator in ``LD_PRELOAD`` stays (then :func:`keep_freed_memory`
    does nothing, which a benchmark should check).

    Args:
        keep: whether the child keeps freed memory.
        environ: the environment to start from (default ``os.environ``).
    """
    environ = os.environ if environ is None else environ
    env = {k: v for k, v in environ.items()
           if k != "RELGRAPH_ALLOCATOR" and k not in GLIBC_VARIABLES}
    if not keep:
        env["RELGRAPH_ALLOCATOR"] = "system"
    return env


def _libc() -> ctypes.CDLL | None:
    """The process's C library if it is glibc (``mallopt`` and ``gnu_get_libc_version``)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    if not (hasattr(libc, "mallopt") and hasattr(libc, "gnu_get_libc_version")):
        return None
    return libc


def keep_freed_memory(environ: Mapping[str, str] | None = None) -> bool:
    """Make glibc's malloc keep freed memory for reuse (see the module's notes); returns
    whether it did.

    Nothing happens (``False``) where the C library is not glibc, or when the user chose an
    allocator setting (:func:`allocator_chosen`).

    Args:
        environ: the environment (default ``os.environ``).
    """
    if allocator_chosen(environ) is not None:
        return False
    libc = _libc()
    if libc is None:
        return False
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, INT_MAX))
