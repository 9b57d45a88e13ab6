"""The Omniglot challenge (Lake et al. 2015): 20-way 1-shot within one alphabet, error in %.

Two training conditions, each one config:

- ``full``: the whole background set (30 alphabets; five held out for validation),
  ``experiments/configs/omniglot_challenge_full.yaml``;
- ``minimal``: the minimal set ``images_background_small1.zip`` alone (one of its five
  alphabets held out for validation), ``experiments/configs/omniglot_challenge_minimal.yaml``.

Evaluation, once, at the end: the 20 evaluation alphabets (``full/images_evaluation.npz``, never
used for training or tuning), 20-way 1-shot episodes whose 20 classes all come from one
alphabet, 1,000 fixed episodes (seed 0), 15 queries per class, inductive: each test image is
classified on its own against the 20 training images, as people did it (the method's
inductive guarantee makes the other queries irrelevant; they only tighten the CI). Error in %
with 95% CI (1.96 std / sqrt(1000)).

A *variant* of a condition is another recipe for it: ``omniglot_challenge_<condition>_<tag>.yaml``
(e.g. a larger backbone), named ``<condition>_<tag>``. It trains into its own run folder, and
its evaluation fills its condition's row (the row records the config it came from). Pick
between variants on validation (``experiments/gpu/reproduce.py`` evaluates only the best
validating run of a condition).

Usage (from the project root)::

    python experiments/omniglot_challenge.py                  # both conditions
    python experiments/omniglot_challenge.py minimal          # one
    python experiments/omniglot_challenge.py --skip-training full   # re-evaluate a saved run
    python experiments/omniglot_challenge.py --choose-tta 1,5,9 full_r12
        # the test-time augmentation chosen on the validation alphabets, not the config's

Runs go to ``runs/omniglot_challenge/<condition>/``; results to
``experiments/results/omniglot_challenge.md`` / ``.json`` / ``.png`` (``--results DIR`` for
another folder). Data: ``--data DIR`` or ``$RELGRAPH_DATA`` (the folder holding ``omniglot/``),
default ``../shared/data``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import common
import torch
from common import data_dir, learning_curve, run_time, threads_label
from common import train as train_run

ROOT = Path(__file__).resolve().parents[1]
EVAL_SET = data_dir() / "omniglot" / "full" / "images_evaluation.npz"
RESULTS = ROOT / "experiments" / "results"
TABLE = RESULTS / "omniglot_challenge.md"
STATE = RESULTS / "omniglot_challenge.json"
PLOT = RESULTS / "omniglot_challenge.png"
#: Target error (%) on THIS protocol (1,000 within-alphabet episodes): half the errors of the
#: first runs (17.04 / 23.21), as issue 19 asks; on Lake et al.'s official 20 runs (held out
#: from this repository) the targets are 6 / 10, human level 4.5.
CONDITIONS = {"full": 8.5, "minimal": 12.0}
#: Episodes on the validation alphabets per test-time augmentation tried (--choose-tta).
VAL_EPISODES = 300

#: Published error rates (%) on the original 20 within-alphabet runs (Lake et al. 2015, 2019).
#: The last two: Lake et al. 2015's convnet trained on each of the two five-alphabet
#: background sets (the minimal condition's kind of training data); BPL scored 4.3 / 4.0 there.
ANCHORS = [
    ("people", 4.5), ("Bayesian Program Learning", 3.3), ("siamese convnet", 8.0),
    ("deep convnet", 13.5), ("convnet, 5-alphabet background set 1", 24.0),
    ("convnet, 5-alphabet background set 2", 22.3),
]


def config_of(name: str) -> Path:
    """The config of a condition or variant: ``omniglot_challenge_<name>.yaml``."""
    return ROOT / "experiments" / "configs" / f"omniglot_challenge_{name}.yaml"


def condition_of(name: str) -> str | None:
    """The condition (``full`` / ``minimal``) of a condition or variant name
    (``<condition>_<tag>``), ``None`` when ``name`` is neither or its config is missing."""
    base = name.split("_", 1)[0]
    return base if base in CONDITIONS and config_of(name).is_file() else None


def set_results(folder: Path) -> None:
    """Write the table, JSON and plot into ``folder`` instead of experiments/results."""
    global RESULTS, TABLE, STATE, PLOT
    folder.mkdir(parents=True, exist_ok=True)
    RESULTS, TABLE, STATE, PLOT = (folder, folder / TABLE.name, folder / STATE.name,
                                   folder / PLOT.name)


def choose_tta(model, preprocessing: dict, config: Path, choices: tuple[int, ...],
               device: str, episodes: int = VAL_EPISODES) -> dict:
    """The test-time augmentation (views per image) with the best accuracy on the condition's
    validation alphabets (the config's ``data.val_alphabets`` of its background roots, all
    their classes, 20-way 1-shot within alphabet, 15 queries, seed 0), the fewest views on
    a tie. Returns ``{"chosen": N, "accuracy": {N: acc, ...}, "episodes": episodes}``."""
    from relgraph.engine import choose_tta as choose
    from relgraph.engine import load_config
    from relgraph.predict import dataset_for_checkpoint

    data = load_config(config).data
    # the roots (../shared/data/...) as training reads them: from the folder where they reach
    # the data in use (the one holding EVAL_SET)
    cwd = common.training_cwd(EVAL_SET.parents[2])
    roots = [str(cwd / r) for r in data.roots]
    val = dataset_for_checkpoint("omniglot", roots, preprocessing, list(data.val_alphabets))
    pick = choose(model, val, choices, ways=20, shots=1, queries=15, episodes=episodes, seed=0,
                  device=device, within_alphabet=True)
    return {"chosen": pick["chosen"], "accuracy": pick["accuracy"], "episodes": episodes}


def run_condition(name: str, out_root: Path, skip_training: bool, episodes: int,
                  overrides: tuple[str, ...] = (), device_label: str | None = None,
                  tta_choices: tuple[int, ...] = ()) -> dict:
    from relgraph.data import build_dataset
    from relgraph.engine import evaluate, load_config, load_model

    config = config_of(name)
    out = out_root / name
    if not skip_training:
        sets = [a for item in overrides for a in ("--set", item)]
        train_run(config, out, EVAL_SET.parents[2], "--no-resume", *sets)
    model, ckpt = load_model(out / "checkpoint.pt")
    test = build_dataset("omniglot", [EVAL_SET], image_size=ckpt["preprocessing"]["image_size"])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    # the config file's eval.tta: chosen on the validation alphabets after training, so it is
    # read from the recipe, not from the checkpoint (whose copy of the config predates it);
    # with tta_choices, chosen here on them
    tta = load_config(config).eval.tta
    choice = None
    if tta_choices:
        choice = choose_tta(model, ckpt["preprocessing"], config, tta_choices, device,
                            min(VAL_EPISODES, episodes))
        tta = choice["chosen"]
    started = time.perf_counter()
    res = evaluate(model, test, ways=20, shots=1, queries=15, episodes=episodes, seed=0,
                   device=device, within_alphabet=True, tta=tta)
    res["seconds"] = round(time.perf_counter() - started, 1)
    return {"condition": condition_of(name), "config": str(config.relative_to(ROOT)),
            "method": ckpt["config"]["method"] if "config" in ckpt else None,
            "train_seconds": run_time(out)[0], "train_steps": run_time(out)[1],
            "best_step": ckpt["best"]["step"], "best_val": ckpt["best"]["val_acc"],
            "device": device_label or (torch.cuda.get_device_name() if device == "cuda" else
                                       f"CPU, {threads_label(torch.get_num_threads())}"),
            "torch": torch.__version__, "error": 100.0 - res["accuracy"], "result": res,
            "curve": learning_curve(out),
            "evaluated": time.strftime("%Y-%m-%d"), **({"tta_choice": choice} if choice else {})}


def software_text(rows: dict) -> str:
    """Which torch each row's device ran (rows merged before the version was recorded point to
    the GPU call's page) and the machine that wrote the page, in a sentence."""
    known = sorted({f"{r['device'].split(',')[0]}: torch {r['torch']}"
                    for r in rows.values() if r.get("torch")})
    unknown = sorted(name for name, r in rows.items() if not r.get("torch"))
    parts = known + ([f"{', '.join(unknown)}: torch not recorded (a GPU row's software is in "
                      "experiments/results/gpu/reproduce.md)"] if unknown else [])
    return (f"Software per row: {'; '.join(parts)}. " if parts else "") + (
        f"Page written with torch {torch.__version__}, {platform.machine()}.")


def carry_history(old: dict | None, new: dict, why: str | None = None) -> dict:
    """``new`` with the test evaluation of the row it replaces kept in ``new["history"]``
    (the old row's own history first; nothing is added when the result is the same, e.g. a
    re-evaluation of the same checkpoint); ``why`` (why the condition was trained or evaluated
    again) is kept with the replaced evaluation."""
    if old is None:
        return new
    replaced = bool(old.get("result")) and old["result"] != new.get("result")
    return common.carry_history(old, new, why, ("config", "method", "train_steps", "best_step",
                                                "best_val", "device", "error", "evaluated",
                                                "result"), replaced)


def history_section(rows: dict) -> list[str]:
    """Every recorded evaluation on the evaluation alphabets of a model no longer in the
    table."""
    out = ["## Test evaluations (history)", "",
           "The evaluation alphabets were evaluated once per trained model. A condition trained "
           "again (same or changed config) replaced its row; the replaced evaluations are listed "
           "here, per condition in the order they were replaced, each by the next and the last by "
           "the table's row. None of them chose anything: configs change on the validation "
           "alphabets only.", ""]
    listed = False
    for name, r in rows.items():
        for h in r.get("history", []):
            out.append(f"- {name}: {h['method']}{tta_label(h['result'])}, `{h['config']}` at "
                       f"{h['train_steps']} steps (best validation {h['best_val']:.2f} at step "
                       f"{h['best_step']}, {h['device']}, evaluated "
                       f"{h.get('evaluated') or 'before 2026-12-02'}): error "
                       f"{h['error']:.2f} +- {h['result']['ci95']:.2f} %"
                       + (f"; why replaced: {h['why']}" if h.get("why") else "") + ".")
            listed = True
    if not listed:
        out.append("- none: each condition's table row is its only evaluation")
    return out + [""]


def device_of(row: dict) -> str:
    """Where the row's model trained: its segments' devices (a GPU run says how many runs
    shared the GPU), else the row's device."""
    devices = list(dict.fromkeys(s["device"] for s in row.get("segments", []) if s.get("device")))
    return "; ".join(devices) or row["device"]


def tta_label(result: dict) -> str:
    """``", TTA x5"`` when the evaluation averaged over fixed warps, else ``""``."""
    views = int(result.get("tta", 1))
    return f", TTA x{views}" if views > 1 else ""


def variant_label(name: str, row: dict) -> str:
    """``", config <file>"`` when a variant's config made the row, else ``""``."""
    config = Path(row.get("config") or "")
    return "" if config == config_of(name).relative_to(ROOT) else f", config `{config.name}`"


def write_table(rows: dict) -> None:
    from relgraph.utils import atomic_write_text

    lines = [
        "# The Omniglot challenge: 20-way 1-shot within one alphabet",
        "",
        "Protocol: train on background data only (validation on held-out background alphabets); "
        "evaluate once on the 20 evaluation alphabets of `full/images_evaluation.npz`: 1,000 "
        "fixed 20-way 1-shot episodes (seed 0) whose classes all come from one alphabet, 15 "
        "queries per class, inductive (each test image classified on its own), BatchNorm in "
        "eval mode. Error in % with 95% CI (1.96 std / sqrt(1000)). TTA xN: each image's "
        "embedding averaged over N fixed small warps (the config's `eval.tta`, chosen on the "
        "validation alphabets; per image, so still inductive).",
        "",
        "| training data | method | error (%) | target | validation acc. (held-out background "
        "alphabets) | training | device |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        res = r["result"]
        met = "met" if r["error"] <= CONDITIONS[name] else "missed"
        lines.append(
            f"| {name} | {r['method']}{tta_label(res)}{variant_label(name, r)} | "
            f"{r['error']:.2f} +- {res['ci95']:.2f} | "
            f"<= {CONDITIONS[name]:g} ({met}) | {r['best_val']:.2f} (step {r['best_step']}) | "
            f"{r['train_seconds'] / 60:.1f} min, {r['train_steps']} steps | {device_of(r)} |")
    chosen = [f"- {name}: " + ", ".join(f"x{n} {acc:.2f}" for n, acc in
                                        r["tta_choice"]["accuracy"].items())
              + f" ({r['tta_choice']['episodes']} episodes each; x{r['tta_choice']['chosen']} "
              "chosen)" for name, r in rows.items() if r.get("tta_choice")]
    if chosen:
        lines += ["", "Test-time augmentation chosen on the validation alphabets after training "
                  "(`--choose-tta`; accuracy % on 20-way 1-shot within-alphabet episodes), "
                  "instead of the config's `eval.tta`:", *chosen]
    lines += ["", "Targets: half the first runs' errors on this protocol (issue 19); on Lake et "
              "al.'s official 20 runs (held out from this repository, checked separately) the "
              "targets are <= 6 (full) and <= 10 (minimal).",
              "", "Anchors (error %, Lake et al. 2015 / 2019, original 20 runs): "
              + "; ".join(f"{n} {e}" for n, e in ANCHORS) + ".",
              "", "Configs: `experiments/configs/omniglot_challenge_<condition>.yaml` "
              "(each trains with `relgraph train --config ...`); variants, other recipes for a "
              "condition chosen against it on the validation alphabets, are "
              "`omniglot_challenge_<condition>_<tag>.yaml`, and a row made by one names it. "
              + software_text(rows) + " Plot: `omniglot_challenge.png`.",
              "", "Reproduce: `python experiments/omniglot_challenge.py [full|minimal]`.", "",
              "## Learning curves", "",
              "Validation accuracy (%, the held-out background alphabets) at each validation, "
              "against cumulative training minutes:", ""]
    for name, r in rows.items():
        curve = r.get("curve") or []
        lines.append(f"- {name}: " + (", ".join(f"{m:.1f} min {a:.2f}" for _, m, a in curve)
                                      if curve else "not recorded"))
    lines += [""] + history_section(rows)
    atomic_write_text(TABLE, "\n".join(lines))
    atomic_write_text(STATE, json.dumps(rows, indent=2) + "\n")


def plot(rows: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from relgraph.viz import save_figure

    names = [n for n, _ in ANCHORS] + [f"relgraph ({c})" for c in rows]
    errors = [e for _, e in ANCHORS] + [r["error"] for r in rows.values()]
    cis = [0.0] * len(ANCHORS) + [r["result"]["ci95"] for r in rows.values()]
    colors = ["0.6"] * len(ANCHORS) + ["C0"] * len(rows)
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.barh(range(len(names)), errors, xerr=cis, color=colors)
    for c, target in CONDITIONS.items():
        ax.axvline(target, ls="--", lw=1, color="C3")
        ax.text(target, len(names) - 0.4, f" target {c}", color="C3", fontsize=8)
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlabel("20-way 1-shot within-alphabet error (%)")
    fig.tight_layout()
    save_figure(fig, PLOT)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("conditions", nargs="*",
                        help="full and/or minimal (default: both), or a variant "
                             "<condition>_<tag> with a config omniglot_challenge_<name>.yaml")
    parser.add_argument("--out", default=str(ROOT / "runs" / "omniglot_challenge"))
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--data", help="the shared data folder holding omniglot/ (default: "
                                       "$RELGRAPH_DATA, else ../shared/data)")
    parser.add_argument("--results", help="write the table, JSON and plot into this folder")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="training setting for both conditions (relgraph train --set)")
    parser.add_argument("--merge", metavar="JSON",
                        help="add the rows of another omniglot_challenge.json (e.g. from "
                             "experiments/gpu/reproduce.py) to the table; nothing is trained")
    parser.add_argument("--device-label", metavar="TEXT",
                        help="how the training ran, for the table's device column (e.g. 'CPU, "
                             "2 threads' when --skip-training evaluates a run trained "
                             "elsewhere); default: this process's device and threads")
    parser.add_argument("--choose-tta", metavar="N,N,...",
                        help="choose the test-time augmentation (views per image) among these "
                             "on the condition's validation alphabets after training (300 "
                             "episodes each), instead of the config's eval.tta; e.g. 1,5,9")
    parser.add_argument("--why", help="why the conditions are trained (or evaluated) again: "
                                      "kept with the replaced rows' test results in the history")
    parser.add_argument("--table-only", action="store_true",
                        help="rewrite the table and plot from the JSON; nothing is trained or "
                             "evaluated")
    args = parser.parse_args()
    if args.table_only or args.merge:
        if args.results:
            set_results(Path(args.results))
        rows = json.loads(STATE.read_text()) if STATE.is_file() else {}
        if args.merge:
            for name, row in json.loads(Path(args.merge).read_text()).items():
                rows[name] = carry_history(rows.get(name), row, args.why)
        write_table(rows)
        plot(rows)
        return 0
    global EVAL_SET
    EVAL_SET = data_dir(args.data) / "omniglot" / "full" / "images_evaluation.npz"
    if args.results:
        set_results(Path(args.results))
    unknown = [c for c in args.conditions if condition_of(c) is None]
    if unknown:
        sys.exit(f"unknown condition(s) {unknown}; choose from {', '.join(CONDITIONS)} or a "
                 "variant <condition>_<tag> whose config experiments/configs/"
                 "omniglot_challenge_<condition>_<tag>.yaml exists")
    try:
        tta_choices = tuple(int(n) for n in (args.choose_tta or "").split(",") if n.strip())
    except ValueError:
        sys.exit(f"--choose-tta takes view counts separated by commas (e.g. 1,5,9), got "
                 f"{args.choose_tta!r}")
    from relgraph.engine.tta import VIEWS

    if any(not 1 <= n <= len(VIEWS) for n in tta_choices):
        sys.exit(f"--choose-tta: view counts go from 1 to {len(VIEWS)}, got {args.choose_tta!r}")
    names = args.conditions or list(CONDITIONS)
    conds = [condition_of(n) for n in names]
    twice = sorted({c for c in conds if conds.count(c) > 1})
    if twice:
        sys.exit(f"{', '.join(twice)}: one run per condition, please: each is evaluated on the "
                 "evaluation alphabets as soon as it is trained, and a condition has one row. "
                 "Choose between its variants on the validation alphabets first (e.g. "
                 "experiments/gpu/reproduce.py --challenge full,full_w128 evaluates only the "
                 "best validating run)")
    if not EVAL_SET.is_file():
        sys.exit(f"full Omniglot not found at {EVAL_SET.parent}; this experiment needs the "
                 "shared data (--data DIR or RELGRAPH_DATA=DIR)")
    rows = json.loads(STATE.read_text()) if STATE.is_file() else {}
    for name in names:
        cond = condition_of(name)
        rows[cond] = carry_history(rows.get(cond), run_condition(
            name, Path(args.out), args.skip_training, args.episodes, tuple(args.set),
            args.device_label, tta_choices), args.why)
        write_table(rows)
        plot(rows)
        r = rows[cond]
        print(f"{name}: error {r['error']:.2f} +- {r['result']['ci95']:.2f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
