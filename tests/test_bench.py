"""``relgraph.bench`` and ``relgraph bench``: keys, positive numbers, JSON (no timing limits)."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch

from relgraph.bench import benchmark, fit_exponent, format_sweep, format_table, sweep
from relgraph.cli import main

TINY = {"ways": 2, "shots": 1, "queries": 1, "batch": 1, "steps": 2, "warmup": 0,
        "image_size": 16, "backbone_args": {"hidden": 8, "out_channels": 8}}


def test_benchmark_keys_and_positive_numbers():
    r = benchmark("protonet", memory=True, **TINY)
    for key in ("train_ms", "eval_ms", "train_eps", "eval_eps", "backbone_train_ms",
                "backbone_eval_ms", "relational_train_ms", "relational_eval_ms"):
        assert r[key] > 0, key  # a head: the relational part is measured, not a difference
    assert r["full_train_ms"] == r["train_ms"] and r["full_eval_ms"] == r["eval_ms"]
    assert r["train_peak_mb"] >= 0 and r["eval_peak_mb"] >= 0
    assert r["nodes"] == 4 and r["device"] == "cpu" and r["relational_measured"] is True
    assert "measured" in r["relational_note"] and "estimate" not in r["relational_note"]
    assert "train" in format_table(r)


def test_head_parts_are_measured_and_add_up_loosely():
    """Backbone and head timed on their own add up to the full step within a loose factor
    (no timing threshold beyond that: they are separate calls on a shared machine)."""
    r = benchmark("gnn", memory=False, **{**TINY, "steps": 3})
    for k in ("train", "eval"):
        assert r[f"backbone_{k}_ms"] > 0 and r[f"relational_{k}_ms"] > 0
        parts = r[f"backbone_{k}_ms"] + r[f"relational_{k}_ms"]
        assert r[f"parts_{k}"] == pytest.approx(parts / r[f"{k}_ms"])
        assert 0.2 < r[f"parts_{k}"] < 5.0, (k, r)


def test_gradient_method_keeps_the_estimate():
    r = benchmark("fomaml", memory=False, **TINY)
    assert r["relational_measured"] is False and "estimate" in r["relational_note"]
    assert r["relational_train_ms"] == pytest.approx(r["train_ms"] - r["backbone_train_ms"])
    assert r["parts_train"] is None
    assert "* relational_* is an estimate" in format_table(r)


def test_head_only_features_mode():
    r = benchmark("edge_gnn_transductive", features=8, memory=True,
                  **{k: v for k, v in TINY.items() if k != "backbone_args"})
    assert r["features"] == 8 and r["backbone"] is None and r["backbone_train_ms"] is None
    assert r["relational_measured"] is True
    assert r["train_ms"] > 0 and r["relational_train_ms"] == r["train_ms"]
    assert r["train_peak_mb"] >= 0
    assert "head alone on 8-d random features" in format_table(r)
    with pytest.raises(ValueError, match="relational head"):
        benchmark("fomaml", features=8, memory=False, **TINY)


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
    assert s["relational_measured"] is True
    assert s["exponent_relational_train"] == pytest.approx(
        fit_exponent([4, 6], [r["relational_train_ms"] for r in s["rows"]]))
    assert "nodes^k" in format_sweep(s)


def test_cli_bench_json(capsys):
    code = main(["bench", "--method", "protonet", "--ways", "2", "--shots", "1", "--queries",
                 "1", "--batch", "1", "--steps", "2", "--warmup", "0", "--image-size", "16",
                 "--no-memory", "--json"])
    assert code == 0
    r = json.loads(capsys.readouterr().out)
    assert r["method"] == "protonet" and r["train_eps"] > 0 and r["train_peak_mb"] is None
    assert r["relational_measured"] is True and r["relational_train_ms"] > 0


def test_cli_bench_features(capsys):
    code = main(["bench", "--method", "gnn", "--features", "8", "--ways", "2", "--shots", "1",
                 "--queries", "1", "--steps", "1", "--warmup", "0", "--no-memory", "--json"])
    assert code == 0
    r = json.loads(capsys.readouterr().out)
    assert r["features"] == 8 and r["relational_train_ms"] > 0 and r["backbone_train_ms"] is None
    assert main(["bench", "--method", "fomaml", "--features", "8", "--no-memory"]) == 2
    assert "relational head" in capsys.readouterr().err


def test_cli_bench_table_and_unknown_method(capsys):
    assert main(["bench", "--method", "protonet", "--ways", "2", "--queries", "1", "--steps",
                 "1", "--warmup", "0", "--image-size", "16", "--no-memory"]) == 0
    assert "episodes/s" in capsys.readouterr().out
    assert main(["bench", "--method", "nope", "--no-memory"]) == 2
    assert "protonet" in capsys.readouterr().err


def test_bench_under_bf16_autocast(capsys, monkeypatch):
    """--amp bfloat16 times every step under CPU autocast (the memory child too); float16 on
    the CPU and unknown dtypes are clear errors."""
    seen = []
    real = torch.autocast

    def spy(*args, **kwargs):
        seen.append(kwargs.get("dtype"))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "autocast", spy)
    r = benchmark("gnn", features=8, memory=False, amp="bfloat16",
                  **{k: v for k, v in TINY.items() if k != "backbone_args"})
    assert r["amp"] == "bfloat16" and r["train_ms"] > 0
    assert torch.bfloat16 in seen
    assert "autocast bfloat16" in format_table(r)
    with pytest.raises(ValueError, match="on the CPU use amp='bfloat16'"):
        benchmark("protonet", amp="float16", memory=False, **TINY)
    with pytest.raises(ValueError, match="amp must be one of"):
        benchmark("protonet", amp="int8", memory=False, **TINY)
    monkeypatch.undo()
    code = main(["bench", "--method", "protonet", "--ways", "2", "--shots", "1", "--queries",
                 "1", "--steps", "1", "--warmup", "0", "--image-size", "16", "--amp",
                 "bfloat16", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["amp"] == "bfloat16" and out["train_peak_mb"] is not None


def test_machine_info_names_the_cpu_model():
    """Benchmark pages name the CPU model (timings differ several-fold between the models one
    machine type may get)."""
    from relgraph.bench import cpu_model, machine_info

    model = cpu_model()
    assert isinstance(model, str)
    info = machine_info()
    assert info.startswith(f"{os.cpu_count()} cores")
    if model:
        assert f"({model})" in info


@pytest.mark.parametrize("method", ["mtl", "baseline"])
def test_methods_with_a_class_count_or_a_frozen_backbone_bench(method):
    """baseline needs a class count (the episode's ways stand in); MTL's backbone is frozen,
    so its backbone part has no backward. Both used to fail."""
    r = benchmark(method, ways=2, shots=1, queries=1, steps=1, warmup=0, memory=False)
    assert r["train_ms"] > 0 and r["eval_ms"] > 0


def test_a_backbone_for_other_inputs_is_refused_by_name():
    with pytest.raises(ValueError, match="'text_cnn' reads other inputs"):
        benchmark("protonet", backbone="text_cnn", steps=1, warmup=0, memory=False)


def test_a_class_count_in_method_args_wins():
    r = benchmark("baseline", ways=2, shots=1, queries=1, steps=1, warmup=0, memory=False,
                  method_args={"num_classes": 7})
    assert r["train_ms"] > 0
