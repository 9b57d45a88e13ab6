"""``relgraph.bench`` and ``relgraph bench``: keys, positive numbers, JSON (no timing asserts)."""

from __future__ import annotations

import json
import math

import pytest

from relgraph.bench import benchmark, fit_exponent, format_sweep, format_table, sweep
from relgraph.cli import main

TINY = {"ways": 2, "shots": 1, "queries": 1, "batch": 1, "steps": 2, "warmup": 0,
        "image_size": 16, "backbone_args": {"hidden": 8, "out_channels": 8}}


def test_benchmark_keys_and_positive_numbers():
    r = benchmark("protonet", memory=True, **TINY)
    for key in ("train_ms", "eval_ms", "train_eps", "eval_eps", "backbone_train_ms",
                "backbone_eval_ms"):
        assert r[key] > 0, key
    for key in ("relational_train_ms", "relational_eval_ms"):  # estimates: may be negative
        assert math.isfinite(r[key])
    assert r["train_peak_mb"] >= 0 and r["eval_peak_mb"] >= 0
    assert r["nodes"] == 4 and r["device"] == "cpu" and "estimate" in r["relational_note"]
    assert "train" in format_table(r)


def test_benchmark_rejects_bad_sizes():
    with pytest.raises(ValueError, match="ways"):
        benchmark("protonet", **{**TINY, "ways": 0})


def test_fit_exponent_recovers_power_law():
    n = [10, 20, 40, 80]
    assert fit_exponent(n, [3 * v**2 for v in n]) == pytest.approx(2.0)
    assert fit_exponent(n, [5.0] * 4) == pytest.approx(0.0)
    assert math.isnan(fit_exponent(n, [1, -1, 1, 1]))


def test_sweep_rows_and_exponents():
    kwargs = {k: v for k, v in TINY.items() if k not in ("ways", "shots", "queries", "batch")}
    s = sweep("protonet", ways=(2, 3), shots=1, queries=1, memory=False, **kwargs)
    assert [r["ways"] for r in s["rows"]] == [2, 3]
    assert math.isfinite(s["exponent_train"]) and math.isfinite(s["exponent_eval"])
    assert "nodes^k" in format_sweep(s)


def test_cli_bench_json(capsys):
    code = main(["bench", "--method", "protonet", "--ways", "2", "--shots", "1", "--queries",
                 "1", "--batch", "1", "--steps", "2", "--warmup", "0", "--image-size", "16",
                 "--no-memory", "--json"])
    assert code == 0
    r = json.loads(capsys.readouterr().out)
    assert r["method"] == "protonet" and r["train_eps"] > 0 and r["train_peak_mb"] is None


def test_cli_bench_table_and_unknown_method(capsys):
    assert main(["bench", "--method", "protonet", "--ways", "2", "--queries", "1", "--steps",
                 "1", "--warmup", "0", "--image-size", "16", "--no-memory"]) == 0
    assert "episodes/s" in capsys.readouterr().out
    assert main(["bench", "--method", "nope", "--no-memory"]) == 2
    assert "protonet" in capsys.readouterr().err
