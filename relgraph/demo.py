"""``relgraph demo``: the main job, on the embedded ``glyphs`` data (no download).

Trains Prototypical Networks (Conv4) on the glyphs training alphabets, keeps the best model
on the validation alphabets, evaluates it on the held-out test alphabets (5-way 1-shot and
5-way 5-shot, fixed seeded episodes, 95% confidence intervals, inductive) and writes a report
folder:

- ``metrics.json``: the results with their protocol;
- ``curves.png``: learning curves; ``episode.png``: one test episode with the predictions;
- ``run/``: the training run (``checkpoint.pt``, ``metrics.csv``, ``config.yaml``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from relgraph.data import EpisodeSampler, build_dataset
from relgraph.engine import Config, evaluate, load_model, train
from relgraph.utils import atomic_path, atomic_write_text
from relgraph.viz import plot_episode, save_figure

__all__ = ["run_demo", "demo_config"]


def demo_config(seed: int = 0, quick: bool = False) -> Config:
    """The demo's experiment: ProtoNet + Conv4 on glyphs (train split; validation split)."""
    return Config.from_dict({
        "method": "protonet",
        "backbone": "conv4",
        "data": {"dataset": "glyphs", "split": "train", "val_split": "val", "image_size": 28},
        "train": {"ways": 20, "shots": 1, "queries": 5, "steps": 30 if quick else 900,
                  "lr": 1e-3, "scheduler": "step", "step_size": 400, "gamma": 0.5,
                  "val_every": 15 if quick else 150, "val_episodes": 20 if quick else 200,
                  "seed": seed, "device": "auto"},
        "eval": {"ways": 5, "shots": 1, "queries": 15, "episodes": 50 if quick else 1000},
    })


def run_demo(out: str | Path = "relgraph-demo", seed: int = 0, quick: bool = False,
             progress: bool = True) -> str:
    """Run the demo and write its report to ``out``; returns a short text summary.

    Args:
        out: report folder (created if missing; an interrupted demo resumes its training).
        seed: training seed (evaluation episodes are fixed by their own seed, 0).
        quick: a much shorter run for smoke tests (the numbers are then meaningless).
        progress: show progress bars.
    """
    out = Path(out)  # created by the training run (nothing is written if its setup fails)
    started = time.perf_counter()
    config = demo_config(seed, quick)
    run = out / "run"
    result = train(config, run, progress=progress)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, _ = load_model(run / "checkpoint.pt", device=device)
    test = build_dataset("glyphs", split="test", image_size=config.data.image_size)
    results: dict[str, Any] = {}
    for shots in (1, 5):
        res = evaluate(model, test, ways=5, shots=shots, queries=15,
                       episodes=config.eval.episodes, seed=0, device=device, progress=progress,
                       label=f"test 5-way {shots}-shot")
        results[f"5way_{shots}shot"] = res
    sampler = EpisodeSampler(test, n_way=5, k_shot=1, n_query=5, seed=1)
    episode = sampler.read(test, [0])
    with torch.no_grad():
        predictions = model(episode.to(device)).argmax(-1).cpu()
    save_figure(plot_episode(episode, class_names=test.class_names, predictions=predictions,
                             title="glyphs test alphabets: 5-way 1-shot (green: right, red: "
                                   "wrong)"), out / "episode.png")
    with atomic_path(out / "curves.png") as tmp:
        tmp.write_bytes((run / "curves.png").read_bytes())
    report = {
        "dataset": "glyphs",
        "method": config.method,
        "backbone": config.backbone,
        "protocol": "inductive; BatchNorm in eval mode; fixed seeded test episodes; "
                    "test alphabets never seen in training or model selection",
        "splits": {s: build_dataset("glyphs", split=s).summary() for s in ("train", "val",
                                                                             "test")},
        "best_validation": result["best"],
        "test": results,
        "quick": quick,
        "seconds": round(time.perf_counter() - started, 1),
    }
    atomic_write_text(out / "metrics.json", json.dumps(report, indent=2) + "\n")
    lines = [f"relgraph demo: ProtoNet + Conv4 on glyphs ({report['seconds']:.0f} s)"]
    for name, s in report["splits"].items():
        lines.append(f"  {name:5s} {s['classes']:5d} classes  {s['alphabets']:3d} alphabets")
    best = result["best"]
    if best.get("val_acc") is not None:
        lines.append(f"  best validation (5-way 1-shot) {best['val_acc']:.2f}% at step "
                     f"{best['step']}")
    for name, res in results.items():
        lines.append(f"  test {name.replace('_', ' ')}: {res['accuracy']:.2f} +- "
                     f"{res['ci95']:.2f}% ({res['episodes']} episodes, 15 queries, inductive)")
    lines.append(f"  report: {out}/metrics.json, curves.png, episode.png, run/checkpoint.pt")
    return "\n".join(lines)
