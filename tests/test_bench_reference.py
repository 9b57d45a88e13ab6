"""experiments/bench_reference_heads.py: its plumbing, on stand-ins for the reference codes
(the real checkouts are not part of the project; the harness imports them from a folder)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Stand-ins with the reference codes' module layout and call signatures.
EGNN_MODEL = '''
import sys
import torch
from torch import nn
from torchtools import tt
assert sys.argv[1:] == []  # the harness hides its own arguments from torchtools' parser


class GraphNetwork(nn.Module):
    def __init__(self, in_features, node_features, edge_features, num_layers, dropout=0.0):
        super().__init__()
        self.lin = nn.Linear(in_features, 1)
        self.num_layers = num_layers

    def forward(self, node_feat, edge_feat):
        s = torch.sigmoid(self.lin(node_feat))  # [b, n, 1]
        sim = (s * s.transpose(1, 2)).clamp(1e-3, 1 - 1e-3)
        return [torch.stack([sim, 1 - sim], 1)] * self.num_layers
'''
TORCHTOOLS = '''
import tensorboardX  # noqa: F401  (the real one logs with it)
tt = object()
'''
GNN_ICLR = '''
from torch import nn


class GNN_nl(nn.Module):
    def __init__(self, args, input_features, nf, J):
        super().__init__()
        self.lin = nn.Linear(input_features, args.train_N_way)

    def forward(self, x):
        return self.lin(x)[:, 0, :]
'''


def run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "experiments/bench_reference_heads.py", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)


def test_reference_harness_writes_its_table(tmp_path):
    egnn, gnn = tmp_path / "fewshot-egnn", tmp_path / "few-shot-gnn"
    (egnn / "torchtools").mkdir(parents=True)
    (egnn / "model.py").write_text(EGNN_MODEL)
    (egnn / "torchtools" / "__init__.py").write_text(TORCHTOOLS)
    (gnn / "models").mkdir(parents=True)
    (gnn / "models" / "__init__.py").write_text("")
    (gnn / "models" / "gnn_iclr.py").write_text(GNN_ICLR)
    out = tmp_path / "bench.md"
    done = run("--egnn", str(egnn), "--gnn", str(gnn), "--queries", "1", "--steps", "1",
               "--out", str(out))
    assert done.returncode == 0, done.stderr
    page = out.read_text()
    assert "at n = 120" in page
    for row in ("reference edge-labeling GNN (Kim et al.)", "edge_gnn_transductive, float32",
                "reference GNN (Garcia & Bruna)", "gnn_transductive, bfloat16 autocast"):
        assert f"| {row} |" in page
    assert "few-shot-gnn at unknown" in page  # not git checkouts
    # one table per allocator (a fresh process each), and their ratio
    assert "## Memory allocator: glibc malloc's defaults" in page
    assert "## Memory allocator: freed memory kept" in page
    assert page.count("| reference GNN (Garcia & Bruna) |") == 2
    assert "glibc defaults / freed memory kept: reference edge-labeling GNN" in page


def test_reference_harness_names_a_wrong_folder(tmp_path):
    done = run("--egnn", str(tmp_path), "--gnn", str(tmp_path))
    assert done.returncode != 0
    assert "expected a checkout of khy0809/fewshot-egnn" in done.stderr
