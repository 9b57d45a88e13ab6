"""The standard Omniglot benchmark (Vinyals et al. 2016): our numbers next to the papers'.

Protocol: the Vinyals split of the full Omniglot (``splits/vinyals``: 1,028 training characters,
172 validation characters for model selection, 423 test characters), each character x4
rotations as new classes, 28x28, Conv4. One model per method and shot count (the papers also
train one model per shot and evaluate it 5-way and 20-way); every model is evaluated once on
the test characters: 5-way and 20-way, 15 queries per class, 1,000 fixed episodes (seed 0),
BatchNorm in eval mode, 95% CI = 1.96 std / sqrt(episodes).

Usage (from the project root)::

    python experiments/omniglot.py                       # the whole table
    python experiments/omniglot.py protonet:1            # one model (both of its cells)
    python experiments/omniglot.py protonet matching:5   # a method's 1- and 5-shot models, ...
    python experiments/omniglot.py --skip-training protonet:1   # re-evaluate a saved run
    python experiments/omniglot.py --skip-training --ways 20 maml:5   # one way count only

A cell's config is ``experiments/configs/omniglot_<method>_<k>shot.yaml``; its run goes to
``runs/omniglot/<method>_<k>shot/``. The table goes to ``experiments/results/omniglot.md``
(rows of models not run are kept), the plot to ``experiments/results/omniglot.png``.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch
from common import run_time

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "omniglot" / "full"
RESULTS = ROOT / "experiments" / "results"
TABLE = RESULTS / "omniglot.md"
STATE = RESULTS / "omniglot.json"
PLOT = RESULTS / "omniglot.png"
METHODS = ["protonet", "matching", "relation", "gnn", "edge_gnn", "tpn", "dpgn", "maml"]
SHOTS = [1, 5]
WAYS = (5, 20)
CELLS = ["5w1s", "5w5s", "20w1s", "20w5s"]

#: Published accuracies (%) on this protocol: 5w1s, 5w5s, 20w1s, 20w5s.
PAPER = {
    "matching": ("Vinyals et al. 2016", [98.1, 98.9, 93.8, 98.5]),
    "protonet": ("Snell et al. 2017", [98.8, 99.7, 96.0, 98.9]),
    "maml": ("Finn et al. 2017", [98.7, 99.9, 95.8, 98.9]),
    "relation": ("Sung et al. 2018", [99.6, 99.8, 97.6, 99.1]),
    "gnn": ("Garcia & Bruna 2018", [99.2, 99.7, 97.4, 99.0]),
    "edge_gnn": ("Kim et al. 2019 (no Omniglot numbers)", [None, None, None, None]),
    "tpn": ("Liu et al. 2019 (no Omniglot numbers)", [None, None, None, None]),
    "dpgn": ("Yang et al. 2020 (no Omniglot numbers)", [None, None, None, None]),
}


def parse_cells(args: list[str]) -> list[tuple[str, int]]:
    """``["protonet", "matching:5"]`` -> ``[("protonet", 1), ("protonet", 5), ("matching", 5)]``."""
    cells = []
    for arg in args or METHODS:
        method, _, shots = arg.partition(":")
        if method not in PAPER:
            sys.exit(f"unknown method {method!r}; choose from {', '.join(PAPER)}")
        for k in ([int(shots)] if shots else SHOTS):
            if k not in SHOTS:
                sys.exit(f"{arg}: shots must be one of {SHOTS}")
            cells.append((method, k))
    return cells


def config_path(method: str, shots: int) -> Path:
    return ROOT / "experiments" / "configs" / f"omniglot_{method}_{shots}shot.yaml"


def run_model(method: str, shots: int, out_root: Path, skip_training: bool,
              episodes: int, ways_list: tuple[int, ...] = WAYS) -> dict:
    from relgraph.data import build_dataset
    from relgraph.engine import evaluate, load_model

    config = config_path(method, shots)
    out = out_root / f"{method}_{shots}shot"
    if not skip_training:
        cmd = [sys.executable, "-m", "relgraph.cli", "train", "--config", str(config),
               "--out", str(out), "--no-resume", "--no-progress"]
        subprocess.run(cmd, check=True, cwd=ROOT)
    model, ckpt = load_model(out / "checkpoint.pt")
    test = build_dataset("omniglot", [DATA / "images_background.npz",
                                      DATA / "images_evaluation.npz"],
                         split="test", rotations=True,
                         image_size=ckpt["preprocessing"]["image_size"])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    results = {}
    threads = torch.get_num_threads()
    train_seconds, train_steps = run_time(out)
    for ways in ways_list:
        started = time.perf_counter()
        res = evaluate(model, test, ways=ways, shots=shots, queries=15, episodes=episodes,
                       seed=0, device=device)
        res["seconds"] = round(time.perf_counter() - started, 1)
        results[f"{ways}w{shots}s"] = res
    return {"method": method, "shots": shots, "config": str(config.relative_to(ROOT)),
            "train_seconds": train_seconds, "train_steps": train_steps,
            "best_step": ckpt["best"]["step"], "best_val": ckpt["best"]["val_acc"],
            "device": torch.cuda.get_device_name() if device == "cuda" else
            f"CPU, {threads} thread{'s' if threads > 1 else ''}",
            "torch": torch.__version__,
            "transductive": next(iter(results.values()))["transductive"], "results": results}


def _cell(rows: dict, method: str, cell: str) -> dict | None:
    shots = int(cell.split("w")[1][:-1])
    row = rows.get(f"{method}:{shots}")
    return row["results"].get(cell) if row else None


def shortfalls(rows: dict) -> list[str]:
    """One line per model: how far each of its cells is below the paper's number, and what the
    run's own record says about why (still improving at the end of its budget, or not)."""
    lines = []
    for key, r in rows.items():
        method, shots = key.split(":")
        gaps = [f"{cell} {res['accuracy'] - paper:+.2f}"
                for i, cell in enumerate(CELLS) if cell.endswith(f"w{shots}s")
                and (res := _cell(rows, method, cell)) and (paper := PAPER[method][1][i])
                is not None]
        if not gaps:
            continue
        why = ("its best validation accuracy came at the last step, so it was still improving "
               "when its budget ended (likely undertrained)"
               if r["best_step"] == r["train_steps"] else
               f"its validation accuracy peaked at step {r['best_step']} of "
               f"{r['train_steps']}, so more steps of this recipe alone are unlikely to close it")
        budget = (f"{r['train_seconds'] / 60:.0f} min, {r['device']}"
                  if r["train_seconds"] is not None else r["device"])
        lines.append(f"- {method} {shots}-shot: {', '.join(gaps)} points vs the paper; {why}. "
                     f"The paper trained far longer on a GPU (this run: {budget}).")
    return lines or ["- no model run yet"]


def write_table(rows: dict) -> None:
    from relgraph.utils import atomic_write_text

    lines = [
        "# Omniglot, standard protocol (Vinyals et al. 2016)",
        "",
        "Protocol: Vinyals split of the full Omniglot (1,028 training characters; the 172 "
        "validation characters select the checkpoint; 423 test characters, touched once), "
        "rotations x4 as new classes, 28x28, Conv4. One model per method and shot count, "
        "evaluated 5-way and 20-way on 1,000 fixed test episodes (seed 0, 15 queries per "
        "class), BatchNorm in eval mode. Accuracy in % with 95% CI (1.96 std / sqrt(1000)); "
        "the paper's number in brackets. Training budgets are far below the papers' (which "
        "trained for hours on a GPU): see the budget table.",
        "",
        "| method | mode | " + " | ".join(CELLS) + " |",
        "|---|---|" + "---|" * len(CELLS),
    ]
    for method in METHODS:
        if not any(f"{method}:{k}" in rows for k in SHOTS):
            continue
        mode = next(("transductive" if rows[f"{method}:{k}"]["transductive"] else "inductive")
                    for k in SHOTS if f"{method}:{k}" in rows)
        cells = []
        for i, cell in enumerate(CELLS):
            res = _cell(rows, method, cell)
            paper = PAPER[method][1][i]
            ours = f"{res['accuracy']:.2f} +- {res['ci95']:.2f}" if res else "not run"
            cells.append(ours + (f" ({paper})" if paper is not None else ""))
        lines.append(f"| {method} | {mode} | " + " | ".join(cells) + " |")
    lines += ["", "Papers: " + "; ".join(f"{m}: {PAPER[m][0]}" for m in METHODS
                                          if any(f"{m}:{k}" in rows for k in SHOTS)) + ".",
              "", "## Training budget", "",
              "| model | config | steps | best val step (val acc) | training | device |",
              "|---|---|---|---|---|---|"]
    for key, r in rows.items():
        secs = r["train_seconds"]
        lines.append(f"| {key.replace(':', ' ')}-shot | `{r['config']}` | {r['train_steps']} | "
                     f"{r['best_step']} ({r['best_val']:.2f}) | "
                     f"{secs / 60:.1f} min | {r['device']} |")
    lines += ["", "Training time: wall clock of the training loop incl. validation (metrics.csv). "
              "Other jobs on the same machine slow it, so treat CPU times as upper bounds.",
              "", "## Short of the papers", ""] + shortfalls(rows)
    devices = sorted({f"{r['device'].split(',')[0]}: torch {r.get('torch', '?')}"
                      for r in rows.values()})
    lines += ["", f"Software per device: {'; '.join(devices)} ({platform.machine()}). CPU rows "
              "ran on this project's 2-core machine, GPU rows on a lent GPU machine with the "
              "same configs (same steps and episodes). Plot: `omniglot.png`.", "",
              "Reproduce: `python experiments/omniglot.py` (all), or "
              "`python experiments/omniglot.py <method>[:<shots>] ...` for some models.", ""]
    atomic_write_text(TABLE, "\n".join(lines))
    atomic_write_text(STATE, json.dumps(rows, indent=2) + "\n")


def plot(rows: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from relgraph.viz import save_figure

    methods = [m for m in METHODS if any(f"{m}:{k}" in rows for k in SHOTS)]
    fig, axes = plt.subplots(1, len(CELLS), figsize=(3.2 * len(CELLS), 3.4), sharey=False)
    for ax, (i, cell) in zip(axes, enumerate(CELLS), strict=True):
        for j, m in enumerate(methods):
            res = _cell(rows, m, cell)
            paper = PAPER[m][1][i]
            if res:
                ax.errorbar(j - 0.12, res["accuracy"], yerr=res["ci95"], fmt="o", color="C0",
                            label="relgraph (this machine)" if j == 0 else None)
            if paper is not None:
                ax.plot(j + 0.12, paper, "s", color="C3", label="paper" if j == 0 else None)
        ax.set_xticks(range(len(methods)), methods, rotation=45, ha="right")
        ax.set_title(cell)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("test accuracy (%)")
    axes[0].legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    save_figure(fig, PLOT)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", help="method or method:shots (default: all)")
    parser.add_argument("--out", default=str(ROOT / "runs" / "omniglot"))
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--ways", type=int, choices=WAYS, action="append",
                        help="evaluate only these ways (repeatable; default 5 and 20); the "
                             "model's other cells already in the table are kept, so two "
                             "processes can evaluate one model's cells in parallel")
    args = parser.parse_args()
    if not (DATA / "images_evaluation.npz").is_file():
        sys.exit(f"full Omniglot not found at {DATA}; this experiment needs ../shared/data")
    cells = parse_cells(args.models)
    missing = [str(config_path(m, k).relative_to(ROOT)) for m, k in cells
               if not config_path(m, k).is_file()]
    if missing:
        sys.exit("no config for: " + ", ".join(missing))
    rows = json.loads(STATE.read_text()) if STATE.is_file() else {}
    for method, shots in cells:
        row = run_model(method, shots, Path(args.out), args.skip_training, args.episodes,
                        tuple(args.ways or WAYS))
        # re-read before writing: several invocations may fill the table in parallel
        rows = json.loads(STATE.read_text()) if STATE.is_file() else {}
        old = rows.get(f"{method}:{shots}")
        if args.ways and old and old.get("best_step") == row["best_step"]:
            row["results"] = {**old["results"], **row["results"]}  # same checkpoint
        rows[f"{method}:{shots}"] = row
        write_table(rows)
        plot(rows)
        for cell, res in rows[f"{method}:{shots}"]["results"].items():
            print(f"{method} {cell}: {res['accuracy']:.2f} +- {res['ci95']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
