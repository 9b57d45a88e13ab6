"""relgraph.allocator: glibc's malloc keeps freed memory in the ``relgraph`` command (no page
faults for every step's tensors), and the user's own allocator settings stand."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from relgraph import allocator
from relgraph.allocator import allocator_chosen, child_environment, keep_freed_memory

ROOT = Path(__file__).resolve().parents[1]
GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def test_the_users_choice_stands():
    assert allocator_chosen({}) is None
    with pytest.warns(UserWarning, match="RELGRAPH_ALLOCATOR='default' is not a setting"):
        assert allocator_chosen({"RELGRAPH_ALLOCATOR": "default"}) is None  # kept, with a word
    assert allocator_chosen({"RELGRAPH_ALLOCATOR": "System"}) == "RELGRAPH_ALLOCATOR=system"
    assert allocator_chosen({"MALLOC_TRIM_THRESHOLD_": "0"}) == "MALLOC_TRIM_THRESHOLD_"
    assert allocator_chosen({"GLIBC_TUNABLES": "glibc.malloc.mmap_max=1"}) == "GLIBC_TUNABLES"
    assert allocator_chosen({"LD_PRELOAD": "/usr/lib/libjemalloc.so.2"}) == "LD_PRELOAD (jemalloc)"
    assert allocator_chosen({"LD_PRELOAD": "/opt/libfoo.so"}) is None


def test_child_environment_sets_one_setting_and_drops_the_others():
    user = {"PATH": "/bin", "MALLOC_ARENA_MAX": "2", "RELGRAPH_ALLOCATOR": "system"}
    assert child_environment(True, user) == {"PATH": "/bin"}
    assert child_environment(False, user) == {"PATH": "/bin", "RELGRAPH_ALLOCATOR": "system"}
    assert allocator_chosen(child_environment(True, user)) is None


def test_nothing_changes_when_the_user_chose(monkeypatch):
    def fail():
        raise AssertionError("the C library was touched")

    monkeypatch.setattr(allocator, "_libc", fail)
    assert keep_freed_memory({"RELGRAPH_ALLOCATOR": "system"}) is False
    assert keep_freed_memory({"LD_PRELOAD": "libtcmalloc.so"}) is False


def test_no_glibc_no_change(monkeypatch):
    monkeypatch.setattr(allocator, "_libc", lambda: None)
    assert keep_freed_memory({}) is False


FAULTS = """
import json, resource, sys
import torch
from relgraph.allocator import keep_freed_memory
kept = keep_freed_memory({}) if sys.argv[1] == "kept" else False
for _ in range(3):  # 64 MiB, before counting: the heap grows to its working size
    torch.empty(2**24).fill_(1.0)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    torch.empty(2**24).fill_(1.0)  # allocated, touched, freed: a step's activations
print(json.dumps({"kept": kept,
                  "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def faults(setting: str) -> dict:
    env = {k: v for k, v in child_environment(setting == "kept").items() if k != "LD_PRELOAD"}
    done = subprocess.run([sys.executable, "-c", FAULTS, setting], capture_output=True,
                          text=True, timeout=300, env={**env, "PYTHONPATH": str(ROOT)},
                          check=True)
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason="glibc's mallopt only")
def test_freed_memory_is_reused_without_page_faults():
    # 10 x 64 MiB touched: 16,384 pages each with glibc's defaults (mmap per allocation)
    default, kept = faults("system"), faults("kept")
    assert kept["kept"] and not default["kept"]
    assert default["faults"] > 10 * 16_000
    assert kept["faults"] < 16_000  # not one allocation's worth over ten


def test_the_command_calls_it(tmp_path, monkeypatch):
    from helpers import make_tiny_data

    from relgraph.cli import main

    calls = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: calls.append(1) or True)
    data = ["data", "--dataset", "tensors", "--root", str(make_tiny_data(tmp_path / "t.pt"))]
    assert main(data) == 0
    assert calls == [1]
