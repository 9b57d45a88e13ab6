"""Thread counts: affinity, cgroup v1 / v2 quotas (mocked files), and the user's choice first."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from relgraph import threads
from relgraph.threads import available_cpus, cgroup_cpu_limit, configure_threads, default_threads


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def affinity(monkeypatch):
    def set_cpus(n: int) -> None:
        monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: set(range(n)),
                            raising=False)
    return set_cpus


def v2(tmp_path: Path, cpu_max: str | None, group: str = "/job") -> dict[str, Path]:
    write(tmp_path / "proc_cgroup", f"0::{group}\n")
    if cpu_max is not None:
        write(tmp_path / "cg" / group.lstrip("/") / "cpu.max", cpu_max + "\n")
    return {"root": tmp_path / "cg", "proc_cgroup": tmp_path / "proc_cgroup"}


def v1(tmp_path: Path, quota: int, period: int = 100_000, group: str = "/docker/abc",
       controller: str = "cpu,cpuacct") -> dict[str, Path]:
    write(tmp_path / "proc_cgroup", f"4:memory:{group}\n3:{controller}:{group}\n1:name=systemd:/\n")
    base = tmp_path / "cg" / controller / group.lstrip("/")
    write(base / "cpu.cfs_quota_us", f"{quota}\n")
    write(base / "cpu.cfs_period_us", f"{period}\n")
    return {"root": tmp_path / "cg", "proc_cgroup": tmp_path / "proc_cgroup"}


def test_cgroup_v2_quota_in_cores(tmp_path):
    assert cgroup_cpu_limit(**v2(tmp_path, "150000 100000")) == 1.5
    assert cgroup_cpu_limit(**v2(tmp_path / "b", "max 100000")) is None
    assert cgroup_cpu_limit(**v2(tmp_path / "c", None)) is None  # no cpu controller file


def test_cgroup_v2_smallest_limit_of_the_ancestors_applies(tmp_path):
    where = v2(tmp_path, "400000 100000", group="/parent/child")
    write(tmp_path / "cg" / "parent" / "cpu.max", "200000 100000\n")
    assert cgroup_cpu_limit(**where) == 2.0


def test_cgroup_v2_namespace_root(tmp_path):
    """In a container the cgroup path is "/": the files at the mount point are read."""
    assert cgroup_cpu_limit(**v2(tmp_path, "300000 100000", group="/")) == 3.0


def test_cgroup_v1_quota(tmp_path):
    assert cgroup_cpu_limit(**v1(tmp_path, 250_000)) == 2.5
    assert cgroup_cpu_limit(**v1(tmp_path / "b", -1)) is None
    assert cgroup_cpu_limit(**v1(tmp_path / "c", 50_000, 100_000, controller="cpu")) == 0.5


def test_no_cgroup_files(tmp_path):
    assert cgroup_cpu_limit(tmp_path / "nothing", tmp_path / "missing") is None


def test_available_cpus_is_affinity_capped_by_the_quota_rounded_up(tmp_path, affinity):
    affinity(8)
    assert available_cpus(**v2(tmp_path, "150000 100000")) == 2
    assert available_cpus(**v2(tmp_path / "b", "max 100000")) == 8
    assert available_cpus(**v1(tmp_path / "c", 20_000)) == 1  # 0.2 cores: still one thread
    affinity(2)
    assert available_cpus(**v1(tmp_path / "d", 800_000)) == 2  # the affinity is smaller


def test_the_user_chooses_first(tmp_path, affinity):
    affinity(16)
    where = v2(tmp_path, "400000 100000")
    assert default_threads(3, {"OMP_NUM_THREADS": "1"}, **where) == (3, "--threads")
    assert default_threads(None, {"OMP_NUM_THREADS": "1"}, **where) == (None, "OMP_NUM_THREADS")
    assert default_threads(None, {"MKL_NUM_THREADS": "2"}, **where)[0] is None
    assert default_threads(None, {"OMP_NUM_THREADS": ""}, **where)[0] == 4
    assert default_threads(None, {}, **where)[0] == 4
    with pytest.raises(ValueError, match="--threads must be >= 1"):
        default_threads(0, {})


def test_configure_threads_sets_torch(tmp_path, affinity):
    before = torch.get_num_threads()
    try:
        affinity(16)
        assert configure_threads(None, {}, **v2(tmp_path, "100000 100000")) == 1
        assert torch.get_num_threads() == 1
        assert configure_threads(2, {}) == 2
        torch.set_num_threads(1)
        assert configure_threads(None, {"OMP_NUM_THREADS": "4"}) == 1  # left as it was
    finally:
        torch.set_num_threads(before)


def test_the_command_line_option(tmp_path, capsys):
    from helpers import make_tiny_data

    from relgraph.cli import main

    data = ["data", "--dataset", "tensors", "--root", str(make_tiny_data(tmp_path / "t.pt"))]
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert main([*data, "--threads", "1"]) == 0
        assert torch.get_num_threads() == 1
        assert main([*data, "--threads", "0"]) == 2
        assert "--threads must be >= 1, got 0" in capsys.readouterr().err
    finally:
        torch.set_num_threads(before)


def test_wait_policy_only_for_the_command():
    from relgraph.threads import command_line_wait_policy as policy

    python = ["/usr/bin/python3"]
    assert policy([*python, "-m", "relgraph.cli", "train"], ["-m"], {}, {})
    assert policy(["/venv/bin/python", "/venv/bin/relgraph", "train"], ["/venv/bin/relgraph"],
                  {}, {})
    assert not policy([*python, "script.py"], ["script.py"], {}, {})  # a user's program
    assert not policy([*python, "-m", "pytest"], ["pytest"], {}, {})
    assert not policy([*python, "-m", "relgraph.cli"], ["-m"], {"OMP_WAIT_POLICY": "ACTIVE"}, {})
    assert not policy([*python, "-m", "relgraph.cli"], ["-m"], {"GOMP_SPINCOUNT": "1000"}, {})
    assert not policy([*python, "-m", "relgraph.cli"], ["-m"], {}, {"torch": object()})


def test_wait_policy_is_set_before_torch_loads():
    import os
    import subprocess
    import sys

    code = ("import sys; sys.argv = ['relgraph']; import relgraph, os; "
            "print(os.environ.get('OMP_WAIT_POLICY'))")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True)
    assert run.stdout.split()[-1] == "PASSIVE"
    run = subprocess.run([sys.executable, "-c", code.replace("sys.argv = ['relgraph']; ", "")],
                         capture_output=True, text=True, env=env, check=True)
    assert run.stdout.split()[-1] == "None"
