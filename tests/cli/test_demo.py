"""``relgraph demo`` end to end (quick mode: a few steps, few episodes)."""

from __future__ import annotations

import json

from relgraph.cli import main


def test_demo_quick_writes_the_report(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--quick", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "test 5way 1shot" in text and "test 5way 5shot" in text
    report = json.loads((out / "metrics.json").read_text())
    for key in ("5way_1shot", "5way_5shot"):
        res = report["test"][key]
        assert 0 <= res["accuracy"] <= 100 and res["ci95"] >= 0
        assert res["transductive"] is False and res["ways"] == 5
    assert report["splits"]["test"]["classes"] > 0
    for name in ("curves.png", "episode.png", "run/checkpoint.pt", "run/metrics.csv"):
        assert (out / name).is_file(), name
