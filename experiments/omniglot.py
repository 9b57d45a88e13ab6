"""The standard Omniglot benchmark (Vinyals et al. 2016): our numbers next to the papers'.

Protocol: the Vinyals split of the full Omniglot (``splits/vinyals``: 1,028 training characters,
172 validation characters for model selection, 423 test characters), each character x4
rotations as new classes, 28x28, Conv4. One model per method and shot count, evaluated 5-way
and 20-way (Vinyals et al. and Snell et al. did so); every model is evaluated once per
test-time augmentation on the test characters: 15 queries per class, 1,000 fixed episodes
(seed 0), BatchNorm in eval mode, 95% CI = 1.96 std / sqrt(episodes).

Per-way models: Finn et al., Sung et al. and Garcia & Bruna trained a model for each way count.
A config ``omniglot_<method>_<k>shot_<n>way.yaml`` (model ``method:k:n``, run folder
``<method>_<k>shot_<n>way``) is such a model: trained on n-way episodes, its validation
episodes n-way, evaluated on the n-way cell only. It fills that cell in the table (marked) if
it beats the general model on its validation episodes (both scored on them when the per-way
model is evaluated, and again whenever the general model is evaluated, so the comparison is
always with the general model in the table); the general model's evaluation of the cell stays
listed either way. The comparison is on validation only: a general model evaluated with
``--ways`` leaves the cells it was not evaluated on to the per-way models that lead it.

Usage (from the project root)::

    python experiments/omniglot.py                       # the whole table
    python experiments/omniglot.py protonet:1            # one model (both of its cells)
    python experiments/omniglot.py protonet matching:5   # a method's 1- and 5-shot models, ...
    python experiments/omniglot.py maml:1:20             # the 20-way 1-shot model (per-way)
    python experiments/omniglot.py --skip-training protonet:1   # re-evaluate a saved run
    python experiments/omniglot.py --skip-training --ways 20 maml:5   # one way count only
    python experiments/omniglot.py --continue-to x2 protonet:1   # twice the budget, from its run
    python experiments/omniglot.py --table-only   # rewrite the table and plots from the JSON
    python experiments/omniglot.py --merge results/omniglot.json   # rows from a GPU run
    python experiments/omniglot.py --trainval protonet:1   # the papers' protocol (below)
    python experiments/omniglot.py --skip-training --choose-tta 1,5,9 protonet:1   # TTA (below)
    python experiments/omniglot.py --compare maml:1:20   # per-way vs general, validation only
    python experiments/omniglot.py --ensemble RUN_A,RUN_B relation:1   # an ensemble (below)

A model's config is ``experiments/configs/omniglot_<method>_<k>shot.yaml`` (a per-way model's
``..._<k>shot_<n>way.yaml``); its run goes to ``runs/omniglot/<method>_<k>shot[_<n>way]/``.
The table goes to ``experiments/results/omniglot.md`` (rows of models not run are kept), the
plot to ``experiments/results/omniglot.png``, the learning curves (validation accuracy against
training minutes) to ``omniglot_curves.png``.

Longer budgets: ``--continue-to STEPS`` (or ``xF``, F times the run's current steps) resumes a
model's finished run from its ``last.pt`` with ``train.steps=STEPS`` instead of starting again
(exact: with the configs' step schedules the result is that of a run started with ``STEPS``;
the learning rate keeps halving every ``step_size`` steps). Each row records its training
segments (steps, minutes, device), so the table shows the total compute of a model that was
trained in several goes, on several machines.

The papers' protocol (``--trainval``): Vinyals et al., Snell et al., Finn et al. and Sung et
al. trained their reported models on 1,200 characters, the Vinyals training and validation
characters together (Snell et al.'s code first picks the number of epochs on the validation
characters, then trains again on both for that many). ``--trainval`` does the same for a model
already in the table: its config trained on ``trainval`` for the step count of its train-only
run's best validation, without validation (the last model is kept), evaluated once on the same
test episodes; rows in ``omniglot_trainval.json``, a section of the table of their own.

Test-time augmentation: a config's ``eval.tta`` (default 1, off) averages each test image's
embedding over that many fixed small warps (``relgraph.engine.tta``; per image, so an inductive
method stays inductive; the papers used none). ``--choose-tta 1,5,9`` chooses it on the model's
validation characters instead (``TTA_EPISODES`` episodes of its validation shape, seed 0, the
same episodes for every choice; the fewest views on a tie) and records the choice in the row;
write the chosen value into the config's ``eval.tta`` to keep it as the recipe. The papers'
protocol rows (``--trainval``) use the config's ``eval.tta``: they have no validation
characters left to choose on. maml averages the same views over its adapted embeddings (in the
inner loop and for the queries; ``GradientMetaLearner``).

Ensembles (``--ensemble RUN,RUN,... method:shots``): trained runs of the model's config (run
folders under ``--out``, e.g. a longer run and one with another recipe) averaged
(``relgraph.engine.Ensemble``), scored on the validation episodes the runs validated on. The
test cells are evaluated once, only if the ensemble validates above each member alone and above
the table's model; the table keeps one model per method and shot count, and ensembles get a
section of their own (rows in ``omniglot_ensembles.json``), their training the sum of their
members'.

Data: ``--data DIR`` or ``$RELGRAPH_DATA`` (the folder holding ``omniglot/full``), default
``../shared/data``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import re
import sys
import time
from pathlib import Path

import common
import torch
from common import cpu_threads, data_dir, learning_curve, run_time, threads_label
from common import train as train_run

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
TABLE = RESULTS / "omniglot.md"
STATE = RESULTS / "omniglot.json"
TRAINVAL_STATE = RESULTS / "omniglot_trainval.json"
ENSEMBLE_STATE = RESULTS / "omniglot_ensembles.json"
PLOT = RESULTS / "omniglot.png"
CURVES = RESULTS / "omniglot_curves.png"
METHODS = ["protonet", "matching", "relation", "gnn", "edge_gnn", "tpn", "dpgn", "maml"]
SHOTS = [1, 5]
WAYS = (5, 20)
CELLS = ["5w1s", "5w5s", "20w1s", "20w5s"]
#: Validation episodes per test-time augmentation tried (``--choose-tta``).
TTA_EPISODES = 1000

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


Model = tuple[str, int, "int | None"]  # (method, shots, ways of a per-way model or None)


def parse_cells(args: list[str]) -> list[Model]:
    """The models named on the command line: ``method`` (its general models and the per-way
    models that have a config), ``method:shots`` (the general model) or ``method:shots:ways``
    (a per-way model). ``["protonet", "maml:1:20"]`` -> ``[("protonet", 1, None), ("protonet",
    5, None), ("maml", 1, 20)]``."""
    models = []
    for arg in args or METHODS:
        method, *rest = arg.split(":")
        if method not in PAPER or len(rest) > 2:
            sys.exit(f"unknown model {arg!r}: expected method, method:shots or "
                     f"method:shots:ways; methods: {', '.join(PAPER)}")
        try:
            numbers = [int(x) for x in rest]
        except ValueError:
            sys.exit(f"{arg}: shots and ways must be numbers, e.g. maml:1:20")
        if numbers and numbers[0] not in SHOTS:
            sys.exit(f"{arg}: shots must be one of {SHOTS}")
        if len(numbers) == 2 and numbers[1] not in WAYS:
            sys.exit(f"{arg}: ways must be one of {list(WAYS)}")
        if len(numbers) == 2:
            models.append((method, numbers[0], numbers[1]))
            continue
        for k in numbers or SHOTS:
            models.append((method, k, None))
            if not numbers:
                models += [(method, k, n) for n in WAYS if config_path(method, k, n).is_file()]
    return models


def model_key(method: str, shots: int, ways: int | None = None) -> str:
    """A model's key in the results JSON: ``"maml:1"``, a per-way model ``"maml:1:20"``."""
    return f"{method}:{shots}" + (f":{ways}" if ways else "")


def split_key(key: str) -> Model:
    """``"maml:1:20"`` -> ``("maml", 1, 20)``; ``"maml:1"`` -> ``("maml", 1, None)``."""
    method, shots, *ways = key.split(":")
    return method, int(shots), int(ways[0]) if ways else None


def model_label(key: str) -> str:
    """``"maml 1-shot"``, a per-way model ``"maml 1-shot 20-way"``."""
    method, shots, ways = split_key(key)
    return f"{method} {shots}-shot" + (f" {ways}-way" if ways else "")


def run_name(method: str, shots: int, ways: int | None = None) -> str:
    """A model's run folder under ``--out``: ``maml_1shot``; a per-way model's
    ``maml_1shot_20way``."""
    return f"{method}_{shots}shot" + (f"_{ways}way" if ways else "")


def set_results(folder: Path) -> None:
    """Write the table, JSON and plots into ``folder`` instead of experiments/results."""
    global RESULTS, TABLE, STATE, TRAINVAL_STATE, ENSEMBLE_STATE, PLOT, CURVES
    folder.mkdir(parents=True, exist_ok=True)
    RESULTS, TABLE, STATE = folder, folder / TABLE.name, folder / STATE.name
    TRAINVAL_STATE = folder / TRAINVAL_STATE.name
    ENSEMBLE_STATE = folder / ENSEMBLE_STATE.name
    PLOT, CURVES = folder / PLOT.name, folder / CURVES.name


def config_path(method: str, shots: int, ways: int | None = None) -> Path:
    return ROOT / "experiments" / "configs" / f"omniglot_{run_name(method, shots, ways)}.yaml"


def read_rows(path: Path) -> dict:
    """The rows of a results JSON (``{}`` when there is none yet)."""
    return json.loads(path.read_text()) if path.is_file() else {}


def same_run(old: dict | None, seconds: float | None, steps: int | None) -> bool:
    """Whether a table row came from the run whose metrics.csv ends at ``seconds`` and
    ``steps`` (a model trained again to the same steps took its own time)."""
    return bool(old) and old.get("train_seconds") == seconds and old.get("train_steps") == steps


def record(table: dict, key: str, row: dict, ways_only: bool, why: str | None) -> None:
    """Put a model's new ``row`` into ``table``: with ``ways_only`` (some way counts evaluated)
    the cells of the same run already there are kept, and the replaced row's test evaluation
    goes to the history (:func:`carry_history`)."""
    old = table.get(key)
    if ways_only and same_run(old, row["train_seconds"], row["train_steps"]):
        row["results"] = {**old["results"], **row["results"]}  # same checkpoint
    table[key] = carry_history(old, row, why)


def train_only_snapshot(row: dict) -> dict:
    """What a row of the papers' protocol keeps of the train-only row that set its step count:
    that run's ``train_seconds``, ``train_steps`` and test cells (its best step is the papers'
    row's own ``train_steps``), so that the comparison stays with that run after the model is
    trained again."""
    return {"train_seconds": row["train_seconds"], "train_steps": row["train_steps"],
            "results": {cell: {"accuracy": res["accuracy"], "ci95": res["ci95"],
                               **({"tta": res["tta"]} if res.get("tta", 1) > 1 else {})}
                        for cell, res in row["results"].items()}}


def trainval_config(method: str, shots: int, steps: int, folder: Path,
                    ways: int | None = None) -> Path:
    """The papers' protocol for a cell's config: trained on the 1,200 train + validation
    characters for ``steps`` steps (the train-only run's best validation step; the learning-rate
    schedule keeps its step size), without validation. Written into ``folder``; returns its
    path."""
    import yaml

    from relgraph.utils import atomic_write_text

    base = config_path(method, shots, ways)
    config = yaml.safe_load(base.read_text())
    config["data"]["split"] = "trainval"
    config["data"].pop("val_split", None)
    config["data"].pop("val_alphabets", None)
    config["data"]["val_fraction"] = 0.0
    config["train"]["steps"] = steps
    config["train"]["patience"] = 0
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"omniglot_{run_name(method, shots, ways)}_trainval.yaml"
    atomic_write_text(path, f"# {base.relative_to(ROOT)} on train + validation characters for "
                            f"{steps} steps (experiments/omniglot.py --trainval)\n"
                      + yaml.safe_dump(config, sort_keys=False))
    return path


def training_device() -> str:
    """The device a ``relgraph train`` started here trains on (``train.device: auto``)."""
    from relgraph.engine.trainer import device_label

    return device_label("cuda" if torch.cuda.is_available() else "cpu", cpu_threads())


def continue_steps(target: str, out: Path) -> int:
    """``--continue-to``: ``"4000"`` or ``"x2"`` (twice the steps of the run in ``out``)."""
    if target.startswith("x"):
        _, steps = run_time(out)
        return round(float(target[1:]) * steps)
    return int(target)


def sets(overrides: tuple[str, ...]) -> list[str]:
    return [arg for item in overrides for arg in ("--set", item)]


def prior_segments(old: dict | None) -> list[dict]:
    """The training segments of a table row; rows written before segments were recorded
    had one, described by their ``train_steps`` / ``train_seconds`` / ``device``."""
    if not old:
        return []
    if old.get("segments"):
        return list(old["segments"])
    return [{"steps": [0, old["train_steps"]], "minutes": round(old["train_seconds"] / 60, 2),
             "device": old["device"]}]


def run_segments(out: Path, ckpt: dict, seconds: float, steps: int) -> list[dict]:
    """The training segments a run folder keeps itself (``last.pt``'s ``"segments"``, which
    the trainer extends at each call that trains, whoever started it); a run trained before
    they were kept has one, over its whole ``metrics.csv`` (``seconds``, ``steps``), on the
    device its checkpoint names."""
    from relgraph.checkpoint import load_checkpoint
    from relgraph.engine.trainer import saved_segments

    last = out / "last.pt"
    saved = load_checkpoint(last) if last.is_file() else ckpt
    if saved.get("segments") and saved["segments"][-1]["steps"][1] == steps:
        return saved_segments(saved)
    return [{"steps": [0, steps], "minutes": round(seconds / 60, 2),
             "device": ckpt.get("device") or (
                 training_device() + " (assumed: the run's own record has no device)")}]


def run_model(method: str, shots: int, out_root: Path, skip_training: bool,
              episodes: int, ways_list: tuple[int, ...] = WAYS, data: Path | None = None,
              continue_to: str | None = None, old: dict | None = None,
              eval_device: str | None = None, overrides: tuple[str, ...] = (),
              trainval_steps: int | None = None, model_ways: int | None = None,
              tta_choices: tuple[int, ...] = (), tta_episodes: int = TTA_EPISODES) -> dict:
    """Train (or continue, or reuse) one model and evaluate its cells; returns its table row.

    ``old`` is the model's previous row (its training segments are kept when the run is
    continued or only re-evaluated); ``overrides`` are ``KEY=VALUE`` settings passed to
    ``relgraph train --set``; ``trainval_steps``: train as the papers did (see the module's
    notes) for this many steps, in ``<method>_<shots>shot_trainval``; ``model_ways``: the
    per-way model of that way count (``omniglot_<method>_<k>shot_<n>way.yaml``), evaluated on
    that way count only; ``tta_choices``: the test-time augmentations to choose from on the
    validation characters (:func:`choose_tta`, ``tta_episodes`` episodes each; default the
    config's ``eval.tta``).
    """
    if model_ways is not None and tuple(ways_list) != (model_ways,):
        sys.exit(f"{model_key(method, shots, model_ways)} is a {model_ways}-way model: it is "
                 f"evaluated on {model_ways}-way episodes only (--ways {model_ways} or no --ways)")
    from relgraph.engine import load_config, load_model

    data = data or data_dir()
    config = config_path(method, shots, model_ways)
    out = out_root / run_name(method, shots, model_ways)
    if trainval_steps is not None:
        out = out_root / f"{run_name(method, shots, model_ways)}_trainval"
        config = trainval_config(method, shots, trainval_steps, out_root / "configs", model_ways)
    before_s, before_step = run_time(out)
    if continue_to is not None:
        if not (out / "last.pt").is_file():
            sys.exit(f"{out / 'last.pt'} not found: nothing to continue; train "
                     f"{model_key(method, shots, model_ways)} first (without --continue-to), "
                     "or pass --out")
        steps = continue_steps(continue_to, out)
        row_run = same_run(old, before_s, before_step)
        train_run(config, out, data, *sets(overrides), "--set", f"train.steps={steps}")
        after_s, after_step = run_time(out)
        segments = []  # not the row's run (trained again since): the run's own record, below
        if row_run:
            segments = prior_segments(old)
            if after_step != before_step:
                segments.append({"steps": [before_step, after_step],
                                 "minutes": round((after_s - before_s) / 60, 2),
                                 "device": training_device()})
    elif not skip_training:
        train_run(config, out, data, "--no-resume", *sets(overrides))
        after_s, after_step = run_time(out)
        segments = [{"steps": [0, after_step], "minutes": round(after_s / 60, 2),
                     "device": training_device()}]
    else:
        segments = prior_segments(old) if same_run(old, before_s, before_step) else []
    model, ckpt = load_model(out / "checkpoint.pt")
    now_s, now_step = run_time(out)
    if not segments and now_step is not None:  # a run no row recorded: its own record
        segments = run_segments(out, ckpt, now_s, now_step)
    test = vinyals_characters(data, "test", ckpt["preprocessing"]["image_size"])
    device = eval_device or ("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    tta, choice = load_config(config).eval.tta, None
    if tta_choices and trainval_steps is None:
        choice = choose_tta(model, method, shots, model_ways, data, tta_choices, device,
                            tta_episodes)
        tta = choice["chosen"] if choice else 1
    threads = torch.get_num_threads()
    train_seconds, train_steps = run_time(out)
    results = evaluate_cells(model, test, ways_list, shots, episodes, device, tta)
    chosen = ({"validation": validation_comparison(method, shots, model_ways, out_root, data,
                                                   device)}
              if model_ways and trainval_steps is None else {})
    return {"method": method, "shots": shots, **({"ways": model_ways} if model_ways else {}),
            **chosen,
            "config": str(config_path(method, shots, model_ways).relative_to(ROOT)),
            **({"trainval": True} if trainval_steps is not None else {}),
            "train_seconds": train_seconds, "train_steps": train_steps,
            "best_step": ckpt["best"]["step"], "best_val": ckpt["best"].get("val_acc"),
            "device": torch.cuda.get_device_name() if device == "cuda" else
            f"CPU, {threads_label(threads)}",
            "segments": segments, "curve": learning_curve(out),
            "torch": torch.__version__,
            "transductive": next(iter(results.values()))["transductive"], "results": results,
            **({"tta_choice": choice} if choice else {}),
            "evaluated": time.strftime("%Y-%m-%d")}


def vinyals_characters(data: Path, split: str, image_size: int | None):  # noqa: ANN201
    """A split (``"test"``, ``"val"``) of the Vinyals characters, x4 rotations as classes, at
    ``image_size``: a ``FewShotDataset``."""
    from relgraph.data import build_dataset

    full = data / "omniglot" / "full"
    return build_dataset("omniglot", [full / "images_background.npz",
                                      full / "images_evaluation.npz"],
                         split=split, rotations=True, image_size=image_size)


def evaluate_cells(model: torch.nn.Module, test, ways_list,  # noqa: ANN001 (test: a dataset)
                   shots: int, episodes: int, device: str, tta: int) -> dict:
    """``model``'s test cells: ``{"5w1s": evaluate's result with its "seconds", ...}`` on the
    fixed test episodes (seed 0, 15 queries per class)."""
    from relgraph.engine import evaluate

    results = {}
    for ways in ways_list:
        started = time.perf_counter()
        res = evaluate(model, test, ways=ways, shots=shots, queries=15, episodes=episodes,
                       seed=0, device=device, tta=tta)
        res["seconds"] = round(time.perf_counter() - started, 1)
        results[f"{ways}w{shots}s"] = res
    return results


def choose_tta(model: torch.nn.Module, method: str, shots: int, ways: int | None, data: Path,
               choices: tuple[int, ...], device: str,
               episodes: int = TTA_EPISODES) -> dict | None:
    """The test-time augmentation (views per image) with the best accuracy on the model's
    validation characters: ``episodes`` episodes of its config's validation shape
    (``eval.ways``, the model's shots, ``eval.queries``; seed 0, the same for every choice),
    the fewest views on a tie. ``None`` (with a note) for a method that adapts per episode
    and takes none.

    Returns:
        :func:`relgraph.engine.choose_tta`'s ``{"chosen": N, "accuracy": {N: acc, ...},
        "ci95": {N: ci, ...}, "episodes", "ways", "shots", "queries", "seed"}`` (in %).
    """
    from relgraph.engine import choose_tta as choose
    from relgraph.engine import load_config

    if not getattr(model, "supports_tta", True):
        print(f"{model_key(method, shots, ways)}: {type(model).__name__} adapts per episode "
              "and takes no test-time augmentation; evaluated without")
        return None
    config = load_config(config_path(method, shots, ways))
    val = vinyals_characters(data, config.data.val_split or "val", config.data.image_size)
    pick = choose(model, val, choices, ways=config.eval.ways, shots=shots,
                  queries=config.eval.queries, episodes=episodes, seed=0, device=device)
    for n, acc in pick["accuracy"].items():
        print(f"{model_key(method, shots, ways)} validation, TTA x{n}: {acc:.2f} "
              f"+- {pick['ci95'][n]:.2f}")
    return pick


def validation_comparison(method: str, shots: int, ways: int, out_root: Path, data: Path,
                          device: str, recorded: dict | None = None) -> dict:
    """A per-way model and its method's general model (when its run folder is under
    ``out_root``) on the same validation episodes: those the per-way model's training validated
    on (its run's ``config.yaml``, scored by the trainer's own
    :func:`~relgraph.engine.trainer.validation_result`), so the per-way model's score equals its
    best validation accuracy. Decides whether it fills its cell (:func:`source_key`). When
    its run folder is gone, the episodes of its ``recorded`` comparison (their ways, shots,
    queries and count, on the validation split of its config's data) are scored instead.

    Returns:
        ``{"ways", "shots", "queries", "episodes", "seed", "models": {key: {"accuracy",
        "ci95", "train_seconds", "train_steps", "best_step"}}}``.
    """
    import dataclasses

    from relgraph.engine import load_model
    from relgraph.engine.config import load_config
    from relgraph.engine.trainer import VAL_SEED, validation_result

    saved = out_root / run_name(method, shots, ways) / "config.yaml"  # as it trained
    if saved.is_file() or not recorded:
        config = load_config(saved if saved.is_file() else config_path(method, shots, ways))
    else:  # the run folder is gone: the episodes its recorded score came from
        config = load_config(config_path(method, shots, ways))
        config = dataclasses.replace(
            config, eval=dataclasses.replace(config.eval, ways=recorded["ways"],
                                             shots=recorded["shots"],
                                             queries=recorded["queries"]),
            train=dataclasses.replace(config.train, val_episodes=recorded["episodes"]))
    val = common.validation_classes(config, data)
    out = {"ways": config.eval.ways, "shots": config.eval.shots,
           "queries": config.eval.queries, "episodes": config.train.val_episodes,
           "seed": VAL_SEED, "models": {}}
    for key in (model_key(method, shots, ways), model_key(method, shots)):
        path = out_root / run_name(*split_key(key)) / "checkpoint.pt"
        if not path.is_file():
            continue
        model, ckpt = load_model(path)
        res = validation_result(model.to(device), val, config, device)
        seconds, steps = run_time(path.parent)
        out["models"][key] = {"accuracy": res["accuracy"], "ci95": res["ci95"],
                              "train_seconds": seconds, "train_steps": steps,
                              "best_step": ckpt["best"]["step"]}
    return out


def refresh_comparison(rows: dict, key: str, out_root: Path, data: Path, device: str) -> str:
    """Compare the per-way model ``key`` again with its method's general model in ``rows`` on
    the per-way model's validation episodes (:func:`validation_comparison`): its recorded
    comparison was with the general model of then, which may have been trained again since.
    A comparison with the same general run (its training time and steps) is kept. When the
    per-way model's run folder is gone, its recorded score is kept and only the general model
    is scored, on the same episodes (the recorded ways, shots, queries, count and seed).
    Validation only; no test cell changes. Updates ``rows[key]`` in place.

    Returns:
        What happened, in a sentence (printed by the callers).
    """
    method, shots, ways = split_key(key)
    general_key = model_key(method, shots)
    then = rows[key].get("validation") or {}
    then_general = then.get("models", {}).get(general_key)
    if then_general and same_run(rows.get(general_key), then_general.get("train_seconds"),
                                 then_general.get("train_steps")):
        return f"{key}: already compared with this {general_key} run; kept"
    if not (out_root / run_name(method, shots) / "checkpoint.pt").is_file():
        return f"{key}: no {general_key} run under {out_root} to compare with; kept as it was"
    new = validation_comparison(method, shots, ways, out_root, data, device, then or None)
    if key not in new["models"]:  # its run folder is gone: its score recorded on these episodes
        if key not in then.get("models", {}) or then.get("seed") != new["seed"]:
            return (f"{key}: its run folder is gone and no score of it on the same validation "
                    "episodes is recorded; kept as it was (train it again to compare)")
        new["models"] = {key: then["models"][key], **new["models"]}
    rows[key]["validation"] = new
    cell = f"{ways}w{shots}s"
    scores = ", ".join(f"{k} {v['accuracy']:.2f}" for k, v in new["models"].items())
    source = source_key(rows, method, cell)
    return (f"{cell} validation ({scores}): " + (
        f"{source} fills the cell" if source else
        f"{general_key} leads but has no {cell} test evaluation: run python "
        f"experiments/omniglot.py --skip-training --ways {ways} {general_key}"))


def carry_history(old: dict | None, new: dict, why: str | None = None) -> dict:
    """``new`` with the test evaluations of the row it replaces kept in ``new["history"]``
    (the old row's own history first; nothing is added when the new results contain the old
    ones, e.g. a re-evaluation of the same checkpoint or more of its cells); ``why`` (why
    the model was trained again) is kept with the replaced evaluation."""
    if old is None:
        return new
    def measured(cell: dict | None) -> dict | None:  # a cell less its timing
        return None if cell is None else {k: v for k, v in cell.items() if k != "seconds"}

    now = new.get("results") or {}
    replaced = bool(old.get("results")) and any(measured(now.get(c)) != measured(v)
                                                for c, v in old["results"].items())
    return common.carry_history(old, new, why, ("config", "train_steps", "best_step",
                                                "best_val", "device", "evaluated", "results"),
                                replaced)


def history_section(rows: dict, trainval: dict | None = None,
                    ensembles: dict | None = None) -> list[str]:
    """Every recorded evaluation on the test characters of a model no longer in the table
    (``trainval``: the rows of the papers' protocol, listed after the others; ``ensembles``:
    the ensembles' replaced evaluations, last)."""
    out = ["## Test evaluations (history)", "",
           "The test characters were evaluated once per trained model and test-time "
           "augmentation (a model evaluated again with a TTA chosen on validation keeps its "
           "earlier evaluation here). Models trained again "
           "(same or changed config) replaced their rows; the replaced models' evaluations "
           "recorded since 2026-12-02 are listed here, per model in the order they were "
           "replaced, each by the next and the last by the table's row (earlier replacements "
           "were not recorded). None of them chose anything: configs change on validation "
           "only.", ""]
    listed = False
    for label, table in (("", rows), (" on train + validation", trainval or {}),
                         (" ensemble", ensembles or {})):
        for key, r in table.items():
            for h in r.get("history", []):
                cells = ", ".join(f"{c} {v['accuracy']:.2f} +- {v['ci95']:.2f}{tta_mark(v)}"
                                  for c, v in h["results"].items())
                picked = ("no validation" if h.get("best_val") is None else
                          f"ensemble validation {h['best_val']:.2f}" if h.get("best_step") is None
                          else f"best validation {h['best_val']:.2f} at step {h['best_step']}")
                out.append(f"- {model_label(key)}{label}, `{h['config']}` at "
                           f"{h['train_steps']} steps ({picked}; evaluated "
                           f"{h.get('evaluated') or 'before 2026-12-02'} on {h['device']}): "
                           f"{cells}"
                           + (f"; why replaced: {h['why']}" if h.get("why") else "") + ".")
                listed = True
    for key, r in rows.items():  # current models' cells that another model of theirs fills
        if gone := superseded(rows, key):
            cells = ", ".join(f"{c} {r['results'][c]['accuracy']:.2f} +- "
                              f"{r['results'][c]['ci95']:.2f}" for c in gone)
            out.append(f"- {model_label(key)}, `{r['config']}` at {r['train_steps']} steps "
                       f"(current; evaluated {r.get('evaluated') or 'before 2026-12-02'}): "
                       f"{cells}; not in the table: "
                       + ("the per-way model fills " + ("those cells" if len(gone) > 1 else
                                                        "that cell")
                          if not split_key(key)[2] else
                          "the general model keeps the cell (chosen on validation)") + ".")
            listed = True
    if not listed:
        out.append("- none recorded")
    return out + [""]


def source_key(rows: dict, method: str, cell: str) -> str | None:
    """The model whose evaluation fills ``cell`` (``"20w1s"``) of ``method``'s table row: the
    per-way model of that way count when it has the cell and was not behind the general model
    on its validation episodes (:func:`beats_general`), else the method's general model of that
    shot count when it has the cell, else ``None``."""
    ways, shots = (int(x) for x in cell[:-1].split("w"))
    per_way, general = model_key(method, shots, ways), model_key(method, shots)
    if (cell in rows.get(per_way, {}).get("results", {})
            and beats_general(per_way, rows[per_way]) is not False):
        return per_way
    return general if cell in rows.get(general, {}).get("results", {}) else None


def beats_general(key: str, row: dict) -> bool | None:
    """Whether the per-way model ``key`` (its ``row``) scored higher than its method's general
    model on the same validation episodes (``row["validation"]``,
    :func:`validation_comparison`); ``None`` when no such comparison was recorded (the general
    model's run folder was not there)."""
    models = (row.get("validation") or {}).get("models", {})
    own = models.get(key)
    general = models.get(model_key(*split_key(key)[:2]))
    if not own or not general:
        return None
    return own["accuracy"] > general["accuracy"]


def chosen_text(key: str, row: dict, general_row: dict | None = None) -> str:
    """How a per-way model's row was chosen over the general model (or not), in a sentence;
    with ``general_row`` (the table's general model) it also says when the comparison was with
    an earlier run of the general model than the table's (not compared again: that run's
    folder was not there when the general model was last evaluated)."""
    v = row.get("validation") or {}
    models = v.get("models", {})
    general = model_key(*split_key(key)[:2])
    if key not in models or general not in models:
        return (" Not compared with the general model on validation (its run folder was not "
                "there when this model was evaluated); it fills its cell.")
    own, other = models[key], models[general]
    verdict = ("so it fills its cell" if beats_general(key, row) else
               "so the general model keeps the cell")
    return (f" On its {v['episodes']} {v['ways']}-way {v['shots']}-shot validation episodes "
            f"(seed {v['seed']}) it scored {own['accuracy']:.2f} +- {own['ci95']:.2f}, the "
            f"general {model_label(general)} model {other['accuracy']:.2f} +- "
            f"{other['ci95']:.2f} (its run at {other['train_steps']} steps, best step "
            f"{other['best_step']}): {verdict}." + stale_comparison_text(key, other, general_row))


def stale_comparison_text(key: str, compared: dict, general_row: dict | None) -> str:
    """A sentence when the general model a per-way model was compared with (``compared``, its
    record in the comparison) is not the table's general model (``general_row``): an earlier
    run, told apart by its steps or best step; empty otherwise."""
    if not general_row or (compared.get("train_steps"), compared.get("best_step")) == (
            general_row.get("train_steps"), general_row.get("best_step")):
        return ""
    return (f" The table's general model is a later run ({general_row['train_steps']} steps, "
            f"best step {general_row['best_step']}), not compared with it yet: "
            f"`python experiments/omniglot.py --compare {key}` does, where that run's folder "
            "is.")


def _cell(rows: dict, method: str, cell: str) -> dict | None:
    key = source_key(rows, method, cell)
    return rows[key]["results"][cell] if key else None


def superseded(rows: dict, key: str) -> list[str]:
    """The cells a model was evaluated on that another model of its method fills in the table
    (a general model's cell that a per-way model fills, or the reverse)."""
    method = split_key(key)[0]
    return [cell for cell in rows[key].get("results", {})
            if source_key(rows, method, cell) != key]


def budget_estimate(curve: list[list[float]], gap: float) -> str:
    """What training budget the validation curve says would close ``gap`` points: a
    least-squares fit of ``accuracy = a + b ln(minutes)`` to the curve's second half (from its
    middle validation on, at least three), extrapolated to ``gap`` more points, assuming the
    test cell gains what the validation episodes gain. Curves flatten, so the answer is a
    lower bound; a flat or falling second half says that more of the recipe will not do.

    Args:
        curve: ``[[step, minutes, validation accuracy], ...]`` (:func:`common.learning_curve`).
        gap: points to gain (> 0).
    """
    tail = curve[(len(curve) - 1) // 2:]
    if len(tail) < 3:
        return "too few validations recorded to extrapolate"
    xs = [math.log(m) for _, m, _ in tail]
    ys = [a for _, _, a in tail]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = (sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
             / sum((x - mx) ** 2 for x in xs))  # points per e-fold of the minutes
    per_doubling = slope * math.log(2)
    if per_doubling < 0.1:
        return (f"its validation curve's second half is flat ({per_doubling:+.2f} points per "
                "doubling of the training time): more steps of this recipe will not close it")
    end = curve[-1][1]
    need = end * math.exp(gap / slope)
    return (f"its validation curve's second half gains {per_doubling:.2f} points per doubling "
            f"of the training time; extrapolated (log-linear, a lower bound since curves "
            f"flatten; the test cell assumed to gain what validation gains), closing "
            f"{gap:.1f} points takes about {need:,.0f} min on the same device "
            f"({need / end:,.0f}x this run)")


def shortfalls(rows: dict, trainval: dict | None = None) -> list[str]:
    """One line per model: how far each of its cells is below the paper's number, and what the
    run's own record says about why (still improving at the end of its budget, or not); with
    the model's row of the papers' protocol (``trainval``), its gaps too."""
    lines = []
    for key, r in rows.items():
        method, shots, ways = split_key(key)
        gaps = [gap_text(cell, res, paper)
                for i, cell in enumerate(CELLS) if cell.endswith(f"w{shots}s")
                and source_key(rows, method, cell) == key
                and (res := r["results"][cell]) and (paper := PAPER[method][1][i]) is not None]
        if not gaps:
            if ways and r.get("results"):
                lines.append(f"- {model_label(key)}: not in the table."
                             + chosen_text(key, r, rows.get(model_key(method, shots))))
            continue
        all_meet = all(meets(r["results"][cell], PAPER[method][1][i])
                       for i, cell in enumerate(CELLS) if cell.endswith(f"w{shots}s")
                       and source_key(rows, method, cell) == key
                       and PAPER[method][1][i] is not None)
        segments = prior_segments(r) if r["train_seconds"] is not None else []
        budget = (" + ".join(f"{seg['minutes']:.0f} min, {seg['device']}" for seg in segments)
                  or r["device"])
        # the cell of the validation episodes' way count (20-way, 5-way for maml; a per-way
        # model's own)
        val_cell = f"{ways or (5 if method == 'maml' else 20)}w{shots}s"
        res, paper = _cell(rows, method, val_cell), PAPER[method][1][CELLS.index(val_cell)]
        if source_key(rows, method, val_cell) != key:
            need = ""
        elif not r.get("curve"):
            need = " Budget: no learning curve recorded for this run."
        elif res and paper is not None and res["accuracy"] < paper:
            need = (f" Budget: for {val_cell} (the validation episodes' ways), "
                    + budget_estimate(r["curve"], paper - res["accuracy"]) + ".")
        else:
            need = ""
        why = ("its best validation accuracy came at the last step, so it was still improving "
               "when its budget ended" + ("" if all_meet else " (likely undertrained)")
               if r["best_step"] == r["train_steps"] else
               f"its validation accuracy peaked at step {r['best_step']} of {r['train_steps']}"
               + (" (whether more steps would help: its budget estimate)"
                  if need.startswith(" Budget: for") else ""))
        if tv := (trainval or {}).get(key):
            tv_gaps = [gap_text(cell, res, paper)
                       for cell, res in tv["results"].items()
                       if (paper := PAPER[method][1][CELLS.index(cell)]) is not None]
            need += (" Trained on train + validation as the paper (its section below"
                     + (f", {tv['train_steps']} steps: the step count of the run this one "
                        "replaced" if stale_trainval(tv, r) else "") + "): "
                     + ", ".join(tv_gaps) + ".")
        if ways:
            need += chosen_text(key, r, rows.get(model_key(method, shots)))
        lent = [cell for cell in CELLS if cell.endswith(f"w{shots}s") and not ways
                and cell not in r["results"]
                and source_key(rows, method, cell) not in (None, key)]
        if lent:  # evaluated with --ways: the per-way models that lead it fill these cells
            many = len(lent) > 1
            need += (f" Not evaluated on {', '.join(lent)}: the per-way model"
                     f"{'s' if many else ''} (below) lead{'' if many else 's'} it on validation "
                     f"and fill{'' if many else 's'} {'those cells' if many else 'that cell'}.")
        if gone := superseded(rows, key):
            need += (f" Its {', '.join(gone)} cell{'s' if len(gone) > 1 else ''} in the table "
                     "come" + ("" if len(gone) > 1 else "s") + " from the per-way model "
                     "(below).")
        lines.append(f"- {model_label(key)}: {', '.join(gaps)} points vs the paper; {why}. "
                     f"The paper trained far longer on a GPU (this run: {budget}).{need}")
    return lines or ["- no model run yet"]


def meets(res: dict, paper: float | None) -> bool:
    """Whether a cell meets the paper's number within its 95% CI."""
    return paper is not None and res["accuracy"] + res["ci95"] >= paper


def gap_text(cell: str, res: dict, paper: float) -> str:
    """``"5w1s -0.11 (meets it, within its 95% CI)"``: a cell's distance to the paper."""
    text = f"{cell} {res['accuracy'] - paper:+.2f}"
    if not meets(res, paper):
        return text
    return text + (" (meets it)" if res["accuracy"] >= paper else " (meets it, within its 95% CI)")


def tta_mark(res: dict) -> str:
    """``" TTA x9"`` for a cell evaluated with test-time augmentation, else ``""``."""
    views = int(res.get("tta", 1))
    return f" TTA x{views}" if views > 1 else ""


def tta_section(rows: dict) -> list[str]:
    """The test-time augmentations chosen on validation (``--choose-tta``), one line per row
    that chose."""
    lines = []
    for key, r in rows.items():
        if not (c := r.get("tta_choice")):
            continue
        tried = ", ".join(f"x{n} {acc:.2f} +- {c['ci95'][n]:.2f}"
                          for n, acc in sorted(c["accuracy"].items(), key=lambda kv: int(kv[0])))
        lines.append(f"- {model_label(key)}: {tried} on {c['episodes']} {c['ways']}-way "
                     f"{c['shots']}-shot validation episodes ({c['queries']} queries, seed 0): "
                     f"x{c['chosen']} chosen.")
    if not lines:
        return []
    return ["## Test-time augmentation, chosen on validation", "",
            "`python experiments/omniglot.py --skip-training --choose-tta 1,5,9 "
            "<method>:<shots>`: each image's embedding averaged over N fixed small warps "
            "(shifts, +-6 degree rotations, scalings; per image, so an inductive method stays "
            "inductive), N chosen on the validation characters (the same episodes for each N; "
            "the fewest views on a tie), then the test cells evaluated once with it. Accuracy "
            "in % with 95% CI:", "", *lines, ""]


def trainval_section(trainval: dict, rows: dict) -> list[str]:
    """The rows of the papers' protocol (``--trainval``) beside their train-only rows."""
    if not trainval:
        return []
    out = ["## The papers' protocol: trained on train + validation characters", "",
           "Vinyals et al., Snell et al., Finn et al. and Sung et al. trained their reported "
           "models on 1,200 characters, the training and validation characters together (Snell "
           "et al.'s code picks the number of epochs on the validation characters, then trains "
           "again on both for that many). Each row here does the same: the model's config "
           "trained on the 1,200 characters for the step count of its train-only run's best "
           "validation (above), without validation (the last model is kept), evaluated once "
           "on the same 1,000 test episodes per cell (`python experiments/omniglot.py "
           "--trainval <method>:<shots>`). A cell meets the paper when the paper's number "
           "lies within its 95% CI or below. Training: wall clock of the training loop, as in "
           "the budget table (other jobs on the machine slow it: upper bounds).", "",
           "| model | steps | training | cell | train + val | train only | paper | meets the "
           "paper |", "|---|---|---|---|---|---|---|---|"]
    replaced = []
    for key, r in trainval.items():
        method, _, _ = split_key(key)
        segments = prior_segments(r)
        total = sum(seg["minutes"] for seg in segments)
        # the training device(s) (the row's own "device" is where it was last evaluated)
        trained_on = "; ".join(dict.fromkeys(seg["device"] for seg in segments))
        source = r.get("train_only") or rows.get(key, {})
        if stale_trainval(r, rows.get(key)):
            now = rows[key]
            replaced.append(f"{model_label(key)} (its train-only model was trained again "
                            f"since: now {now['train_steps']} steps, best validation at step "
                            f"{now['best_step']})")
        for cell, res in r["results"].items():
            paper = PAPER[method][1][CELLS.index(cell)]
            base = source.get("results", {}).get(cell)
            out.append(f"| {model_label(key)} | {r['train_steps']} | {total:.1f} min, "
                       f"{trained_on} | {cell} | {res['accuracy']:.2f} +- {res['ci95']:.2f}"
                       f"{tta_mark(res)} | "
                       + (f"{base['accuracy']:.2f} +- {base['ci95']:.2f}{tta_mark(base)}"
                          if base else "-")
                       + f" | {paper if paper is not None else '-'} | "
                       + ("-" if paper is None else "yes" if meets(res, paper) else
                          f"no ({res['accuracy'] - paper:+.2f})") + " |")
    if replaced:
        out += ["", "The train-only column is the run whose best validation step set the row's "
                "steps. Rows from a train-only model since replaced (listed in the history): "
                + "; ".join(replaced) + "."]
    return out


def stale_trainval(row: dict, train_only: dict | None) -> bool:
    """Whether a row of the papers' protocol took its step count from a train-only run that
    has since been replaced in the table (rows recorded before the snapshot was kept count as
    current)."""
    snap = row.get("train_only")
    return bool(snap and train_only) and not same_run(train_only, snap["train_seconds"],
                                                      snap["train_steps"])


def write_table(rows: dict, trainval: dict | None = None) -> None:
    """The table page (and ``rows`` as JSON); ``trainval``: the rows of the papers' protocol
    (default: those in ``omniglot_trainval.json``)."""
    from relgraph.utils import atomic_write_text

    if trainval is None:
        trainval = read_rows(TRAINVAL_STATE)
    lines = [
        "# Omniglot, standard protocol (Vinyals et al. 2016)",
        "",
        "Protocol: Vinyals split of the full Omniglot (1,028 training characters; the 172 "
        "validation characters select the checkpoint; 423 test characters, each trained model "
        "evaluated on them once per test-time augmentation: every evaluation is listed in the "
        "history at the end), rotations x4 as new classes, "
        "28x28, Conv4. One model per method and shot count, evaluated 5-way and 20-way on 1,000"
        " fixed test episodes (seed 0, 15 queries per class), BatchNorm in eval mode; a cell "
        "marked * comes from a model trained for its way count (a per-way model, as Finn et "
        "al., Sung et al. and Garcia & Bruna trained one per setting; listed in the budget "
        "table). Accuracy in % with 95% CI (1.96 std / sqrt(1000)); the paper's number in "
        "brackets; TTA xN: each test image's embedding averaged over N fixed small warps, N "
        "chosen on the validation characters (per image, so still inductive; the papers used "
        "none; see its section). Training budgets are far below the papers' (which trained for "
        "hours on a GPU): see the budget table. Transductive rows (tpn, dpgn) classify all "
        "queries of an episode together, on these balanced query sets (15 per class), whose "
        "balance is itself information they can use; they are not like for like with the "
        "inductive rows (on the small1 protocol, `omniglot_small1.md`, TPN's lead over ProtoNet"
        " disappears with random query counts).",
        "",
        "| method | mode | " + " | ".join(CELLS) + " |",
        "|---|---|" + "---|" * len(CELLS),
    ]
    for method in METHODS:
        own = [key for key in rows if split_key(key)[0] == method]
        if not own:
            continue
        mode = "transductive" if rows[own[0]]["transductive"] else "inductive"
        cells = []
        for i, cell in enumerate(CELLS):
            res = _cell(rows, method, cell)
            paper = PAPER[method][1][i]
            ours = (f"{res['accuracy']:.2f} +- {res['ci95']:.2f}{tta_mark(res)}" if res else
                    "not run")
            mark = "*" if res and split_key(source_key(rows, method, cell))[2] else ""
            cells.append(ours + mark + (f" ({paper})" if paper is not None else ""))
        lines.append(f"| {method} | {mode} | " + " | ".join(cells) + " |")
    lines += ["", "Papers: " + "; ".join(f"{m}: {PAPER[m][0]}" for m in METHODS
                                          if any(split_key(key)[0] == m for key in rows)) + ".",
              "", "## Training budget", "",
              "| model | config | steps | best val step (val acc) | training, total | "
              "segments (steps: minutes, device) |",
              "|---|---|---|---|---|---|"]
    for key, r in rows.items():
        segments = prior_segments(r)
        total = sum(seg["minutes"] for seg in segments)
        parts = "; ".join(f"{a}-{b}: {m:.1f} min, {d}" for (a, b), m, d in
                          ((seg["steps"], seg["minutes"], seg["device"]) for seg in segments))
        lines.append(f"| {model_label(key)} | `{r['config']}` | {r['train_steps']} | "
                     f"{r['best_step']} ({r['best_val']:.2f}) | {total:.1f} min | {parts} |")
    lines += ["", "Training time: wall clock of the training loop incl. validation (metrics.csv), "
              "per segment: a model continued to a larger budget (`--continue-to`) resumed its "
              "run from the last checkpoint, so its segments add up. Other jobs on the same "
              "machine slow it, so treat CPU times as upper bounds.",
              "", "## Learning curves", "",
              "Validation accuracy (the validation characters, the checkpoint's selection "
              "set, in each config's eval episodes: 20-way, 5-way for maml, a per-way "
              "model's own way count) at each "
              "validation, against cumulative training minutes "
              "(plot: `omniglot_curves.png`). Last gain: the change over the last two "
              "validations.", "",
              "| model | minutes: val acc (%) at each validation | last gain |", "|---|---|---|"]
    missing = [model_label(key) for key, r in rows.items() if not r.get("curve")]
    for key, r in rows.items():
        curve = r.get("curve") or []
        if not curve:
            continue
        points = ", ".join(f"{m:.1f}: {a:.2f}" for _, m, a in curve)
        gain = (f"{curve[-1][2] - curve[-2][2]:+.2f} in {curve[-1][1] - curve[-2][1]:.1f} min"
                if len(curve) > 1 else "")
        lines.append(f"| {model_label(key)} | {points} | {gain} |")
    if missing:
        one = len(missing) == 1
        lines += ["", f"Not recorded for {', '.join(missing)}: "
                  f"{'its row was' if one else 'their rows were'} written before the learning "
                  f"curves were kept, and {'its run folder is' if one else 'their run folders are'}"
                  " not here; `--skip-training` on a run folder (or `--continue-to`) records it."]
    lines += ["", *tta_section(rows), "## Short of the papers", ""] + shortfalls(rows, trainval)
    if trainval:
        lines += [""] + trainval_section(trainval, rows)
    ensembles = read_rows(ENSEMBLE_STATE)
    if ensembles:
        lines += [""] + ensemble_section(ensembles, rows)
    lines += [""] + history_section(rows, trainval, ensembles)
    devices = sorted({f"{r['device'].split(',')[0]}: torch {r.get('torch', '?')}"
                      for r in rows.values()})
    lines += ["", f"Software per device: {'; '.join(devices)} ({platform.machine()}). CPU rows "
              "ran on this project's 2-core machine, GPU rows on a lent GPU machine with the "
              "same configs (same steps and episodes). Plot: `omniglot.png`.", "",
              "Reproduce: `python experiments/omniglot.py` (all), or "
              "`python experiments/omniglot.py <method>[:<shots>] ...` for some models.", ""]
    atomic_write_text(TABLE, "\n".join(lines))
    atomic_write_text(STATE, json.dumps(rows, indent=2) + "\n")
    if trainval:
        atomic_write_text(TRAINVAL_STATE, json.dumps(trainval, indent=2) + "\n")


def plot(rows: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from relgraph.viz import save_figure

    methods = [m for m in METHODS if any(split_key(key)[0] == m for key in rows)]
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


def plot_curves(rows: dict) -> None:
    """Validation accuracy against training minutes, one panel per shot count (nothing is
    written while no row has a learning curve)."""
    if not any(r.get("curve") for r in rows.values()):
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from relgraph.viz import save_figure

    fig, axes = plt.subplots(1, len(SHOTS), figsize=(5.2 * len(SHOTS), 3.6))
    for ax, k in zip(axes, SHOTS, strict=True):
        for key, r in rows.items():
            m, shots, ways = split_key(key)
            if shots != k or not r.get("curve"):
                continue
            i = METHODS.index(m)
            minutes = [c[1] for c in r["curve"]]
            acc = [c[2] for c in r["curve"]]
            ax.plot(minutes, acc, marker=".", color=f"C{i}", ls="--" if ways else "-",
                    label=f"{m} ({ways}-way model)" if ways else m)
            for seg in prior_segments(r)[1:]:  # where a continuation started
                start = next((c[1] for c in r["curve"] if c[0] == seg["steps"][0]), None)
                if start is not None:
                    ax.axvline(start, color=f"C{i}", ls=":", lw=0.8)
        ax.set_title(f"{k}-shot models (validation: 20-way, maml 5-way)", fontsize=10)
        ax.set_xlabel("training minutes (cumulative)")
        ax.set_ylabel("validation accuracy (%)")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    save_figure(fig, CURVES)
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
    parser.add_argument("--continue-to", metavar="STEPS|xF",
                        help="continue each model's finished run from its last.pt to STEPS "
                             "steps (or F times its current steps) instead of starting again")
    parser.add_argument("--data", help="the shared data folder holding omniglot/full "
                                       "(default: $RELGRAPH_DATA, else ../shared/data)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="training setting for every model (relgraph train --set), e.g. "
                             "for a quick check; the configs stay the recorded recipe")
    parser.add_argument("--results", help="write the table, JSON and plots into this folder "
                                          "(default: experiments/results)")
    parser.add_argument("--table-only", action="store_true",
                        help="rewrite the table and plots from the JSON (adding the learning "
                             "curves of rows without one whose run folder is under --out); "
                             "nothing is trained or evaluated")
    parser.add_argument("--trainval", action="store_true",
                        help="the papers' protocol: train each model (already in the table) on "
                             "the train + validation characters for its best validation step "
                             "count, no validation; rows in omniglot_trainval.json")
    parser.add_argument("--choose-tta", metavar="N,N,...",
                        help="choose the test-time augmentation (views per image, 1-9) among "
                             f"these on the model's validation characters ({TTA_EPISODES} "
                             "episodes each) instead of the config's eval.tta, e.g. 1,5,9")
    parser.add_argument("--tta-episodes", type=int, default=TTA_EPISODES, metavar="E",
                        help=f"validation episodes per choice of --choose-tta (default "
                             f"{TTA_EPISODES})")
    parser.add_argument("--why", help="why the models are trained (or merged) again: kept "
                                      "with the replaced rows' test results in the history")
    parser.add_argument("--compare", action="store_true",
                        help="compare the per-way models named (e.g. maml:1:20) again with "
                             "their general models on validation, as done when either is "
                             "evaluated; nothing is trained, nothing on the test characters")
    parser.add_argument("--ensemble", metavar="RUN,RUN,...",
                        help="evaluate these run folders (under --out) of one model's config "
                             "as an ensemble: scored on validation, the test cells only if it "
                             "validates above each run and the table's model; rows in "
                             "omniglot_ensembles.json")
    parser.add_argument("--merge", metavar="JSON",
                        help="add the rows of another omniglot.json (e.g. from "
                             "experiments/gpu/reproduce.py's results.tar.gz) to the table, "
                             "replacing those of the same models; nothing is trained")
    args = parser.parse_args()
    if args.results:
        set_results(Path(args.results))
    if args.table_only or args.merge:
        rows = read_rows(STATE)
        if args.merge:
            for key, row in json.loads(Path(args.merge).read_text()).items():
                rows[key] = carry_history(rows.get(key), row, args.why)
        for key, r in rows.items():  # rows written before curves were kept, run folder here
            folder = Path(args.out) / run_name(*split_key(key))
            if not r.get("curve") and same_run(r, *run_time(folder)):  # that row's own run
                if curve := learning_curve(folder):
                    r["curve"] = curve
        write_table(rows)
        plot(rows)
        plot_curves(rows)
        return 0
    data = data_dir(args.data)
    if not (data / "omniglot" / "full" / "images_evaluation.npz").is_file():
        sys.exit(f"full Omniglot not found at {data / 'omniglot' / 'full'}; this experiment "
                 "needs the shared data (--data DIR or RELGRAPH_DATA=DIR)")
    if args.trainval and args.continue_to:
        sys.exit("--trainval trains from the start; it cannot go with --continue-to")
    if args.continue_to and args.skip_training:
        sys.exit("--continue-to trains; it cannot go with --skip-training")
    if args.continue_to and not re.fullmatch(r"x\d+(\.\d+)?|\d+", args.continue_to):
        sys.exit(f"--continue-to expects STEPS or xF (e.g. 4000 or x2), got {args.continue_to!r}")
    try:
        tta_choices = tuple(int(n) for n in (args.choose_tta or "").split(",") if n.strip())
    except ValueError:
        sys.exit(f"--choose-tta takes view counts separated by commas (e.g. 1,5,9), got "
                 f"{args.choose_tta!r}")
    if args.tta_episodes < 1:
        sys.exit(f"--tta-episodes must be at least 1, got {args.tta_episodes}")
    if any(not 1 <= n <= 9 for n in tta_choices):
        sys.exit(f"--choose-tta: view counts go from 1 to 9, got {args.choose_tta!r}")
    if tta_choices and args.trainval:
        sys.exit("--choose-tta chooses on the validation characters, which --trainval trains "
                 "on: choose on the train-only model, write the choice into the config's "
                 "eval.tta, then run --trainval (it evaluates with eval.tta)")
    models = parse_cells(args.models)
    missing = [str(config_path(*m).relative_to(ROOT)) for m in models
               if not config_path(*m).is_file()]
    if missing:
        sys.exit("no config for: " + ", ".join(missing))
    wrong = [model_key(*m) for m in models if m[2] and args.ways and m[2] not in args.ways]
    if wrong:
        sys.exit(f"{', '.join(wrong)}: a per-way model is evaluated on its own way count only; "
                 f"--ways {' '.join(map(str, args.ways))} leaves it nothing")
    rows = read_rows(STATE)
    if args.compare:
        wrong = [model_key(*m) for m in models if not m[2] or model_key(*m) not in rows]
        if wrong:
            sys.exit(f"--compare takes per-way models in the table (e.g. maml:1:20); not: "
                     f"{', '.join(wrong)}")
        compare([model_key(*m) for m in models], Path(args.out), data)
        return 0
    if args.trainval:
        return trainval_main(args, models, rows, data)
    if args.ensemble:
        return ensemble_main(args, models, rows, data, tta_choices)
    named = {model_key(*m) for m in models}  # per-way models named are compared when evaluated
    for method, shots, ways in models:
        key = model_key(method, shots, ways)
        row = run_model(method, shots, Path(args.out), args.skip_training, args.episodes,
                        (ways,) if ways else tuple(args.ways or WAYS), data, args.continue_to,
                        rows.get(key), overrides=tuple(args.set), model_ways=ways,
                        tta_choices=tta_choices, tta_episodes=args.tta_episodes)
        # re-read before writing: several invocations may fill the table in parallel
        rows = read_rows(STATE)
        record(rows, key, row, bool(args.ways) and not ways, args.why)
        write_table(rows)
        plot(rows)
        plot_curves(rows)
        for cell, res in rows[key]["results"].items():
            print(f"{model_label(key)} {cell}: {res['accuracy']:.2f} +- {res['ci95']:.2f}")
        if ways is None:  # its per-way models were compared with the general model of then
            compare([k for k in rows if split_key(k)[:2] == (method, shots) and split_key(k)[2]
                     and k not in named], Path(args.out), data)
    return 0


def compare(keys: list[str], out_root: Path, data: Path) -> None:
    """:func:`refresh_comparison` for the per-way models ``keys``, the table rewritten."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    for key in keys:
        rows = read_rows(STATE)  # re-read: other invocations may write it
        print(refresh_comparison(rows, key, out_root, data, device))
        write_table(rows)


def trainval_main(args: argparse.Namespace, models: list[Model], rows: dict,
                  data: Path) -> int:
    """``--trainval``: each of ``models`` trained as the papers did (module notes)."""
    missing = [model_key(*m) for m in models if model_key(*m) not in rows]
    if missing:
        sys.exit(f"--trainval takes its step count from the model's train-only row; not in the "
                 f"table: {', '.join(missing)} (run python experiments/omniglot.py "
                 f"{' '.join(missing)} first)")
    for method, shots, ways in models:
        key = model_key(method, shots, ways)
        row = run_model(method, shots, Path(args.out), args.skip_training, args.episodes,
                        (ways,) if ways else tuple(args.ways or WAYS), data, None,
                        read_rows(TRAINVAL_STATE).get(key), overrides=tuple(args.set),
                        trainval_steps=rows[key]["best_step"], model_ways=ways)
        row["train_only"] = train_only_snapshot(rows[key])
        trainval = read_rows(TRAINVAL_STATE)  # re-read: other invocations may write it
        record(trainval, key, row, bool(args.ways) and not ways, args.why)
        write_table(read_rows(STATE) or rows, trainval)
        for cell, res in trainval[key]["results"].items():
            print(f"{model_label(key)} {cell} (train + validation): {res['accuracy']:.2f} +- "
                  f"{res['ci95']:.2f}")
    return 0


def ensemble_main(args: argparse.Namespace, models: list[Model], rows: dict, data: Path,
                  tta_choices: tuple[int, ...]) -> int:
    """``--ensemble``: the named runs of one model's config as an ensemble (module notes)."""
    from relgraph.engine import load_config

    if len(models) != 1 or models[0][2] is not None or args.trainval or args.continue_to:
        sys.exit("--ensemble takes one general model (method:shots) and its runs; no "
                 "--trainval or --continue-to")
    method, shots, _ = models[0]
    key = model_key(method, shots)
    out_root = Path(args.out)
    names = [n for n in args.ensemble.split(",") if n]
    runs = [out_root / n for n in names]
    gone = [str(r) for r in runs if not (r / "checkpoint.pt").is_file()]
    if len(names) < 2 or gone:
        sys.exit("--ensemble needs two or more run folders with a checkpoint.pt"
                 + (f"; missing: {', '.join(gone)}" if gone else ""))
    configs = [load_config(r / "config.yaml") for r in runs]
    for name, c in zip(names, configs, strict=True):
        if c.method != method or c.eval.shots != shots:
            sys.exit(f"{name} is a {c.method} {c.eval.shots}-shot run, not {model_label(key)}")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, ckpts, ens = common.ensemble_validation(runs, configs, data, device)
    committed = flat_settings(load_config(config_path(method, shots)).to_dict())
    members = []
    for name, run, ckpt, c in zip(names, runs, ckpts, configs, strict=True):
        seconds, steps = run_time(run)
        own = flat_settings(c.to_dict())
        members.append({"run": name, "train_seconds": seconds, "train_steps": steps,
                        "best_step": ckpt["best"]["step"], "best_val": ckpt["best"]["val_acc"],
                        "segments": run_segments(run, ckpt, seconds, steps),
                        "changes": [f"{k}={own.get(k)}" for k in sorted(set(own) | set(committed))
                                    if own.get(k) != committed.get(k) and k != "data.roots"]})
    table_val = rows.get(key, {}).get("best_val")
    best_member = max(m["best_val"] for m in members)
    chosen = ens["accuracy"] > best_member and (table_val is None or
                                                 ens["accuracy"] > table_val)
    row = {"method": method, "shots": shots, "config": str(config_path(method, shots)
                                                          .relative_to(ROOT)),
           "members": members,
           "train_seconds": sum(m["train_seconds"] or 0 for m in members),
           "train_steps": sum(m["train_steps"] or 0 for m in members), "best_step": None,
           "best_val": ens["accuracy"],
           "validation": {k: ens[k] for k in ("accuracy", "ci95", "episodes", "ways", "shots",
                                              "queries", "seed")},
           "table_val": table_val, "chosen": chosen, "results": {},
           "device": torch.cuda.get_device_name() if device == "cuda" else
           f"CPU, {threads_label(torch.get_num_threads())}",
           "torch": torch.__version__, "evaluated": time.strftime("%Y-%m-%d")}
    print(f"{model_label(key)} ensemble of {len(names)}: validation {ens['accuracy']:.2f} +- "
          f"{ens['ci95']:.2f}; members " + ", ".join(f"{m['run']} {m['best_val']:.2f}"
                                                   for m in members)
          + (f"; the table's model {table_val:.2f}" if table_val is not None else ""))
    if chosen:
        tta = load_config(config_path(method, shots)).eval.tta
        if tta_choices:
            row["tta_choice"] = choose_tta(model, method, shots, None, data, tta_choices,
                                           device, args.tta_episodes)
            tta = row["tta_choice"]["chosen"] if row["tta_choice"] else 1
        test = vinyals_characters(data, "test", configs[0].data.image_size)
        row["results"] = evaluate_cells(model, test, args.ways or WAYS, shots, args.episodes,
                                        device, tta)
        for cell, res in row["results"].items():
            print(f"{model_label(key)} ensemble {cell}: {res['accuracy']:.2f} +- "
                  f"{res['ci95']:.2f}")
    else:
        print("not evaluated on the test characters: the ensemble does not validate above "
              "each member and the table's model")
    ensembles = read_rows(ENSEMBLE_STATE)
    ensembles[key] = carry_history(ensembles.get(key), row, args.why)
    from relgraph.utils import atomic_write_text

    atomic_write_text(ENSEMBLE_STATE, json.dumps(ensembles, indent=2) + "\n")
    write_table(read_rows(STATE) or rows)
    return 0


def flat_settings(tree: dict, prefix: str = "") -> dict:
    """A config's settings as ``{"train.steps": 25000, "data.augment.rotate": 10, ...}``."""
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):  # an empty one sets nothing
            out.update(flat_settings(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def ensemble_section(ensembles: dict, rows: dict) -> list[str]:
    """The ensembles tried (``--ensemble``): validation against their members and the table's
    model, and the test cells of those chosen."""
    out = ["## Ensembles, chosen on validation", "",
           "`python experiments/omniglot.py --ensemble RUN,RUN <method>:<shots>`: trained runs "
           "of the model's config averaged (their class probabilities; each query on its own, "
           "so still inductive), scored on the validation episodes the runs validated on "
           "(the config's, seed 12345). The test cells are evaluated once, only if the "
           "ensemble validates above each member alone and above the table's model. The "
           "table above keeps one model per method and shot count; an ensemble costs the sum "
           "of its members' training and their test-time compute.", ""]
    for key, r in ensembles.items():
        method, shots, _ = split_key(key)
        v = r["validation"]
        parts = "; ".join(
            f"`{m['run']}`: " + (f"the config with {', '.join(m['changes'])}"
                                 if m.get("changes") else "the config as committed")
            + f", {m['train_steps']} steps, best validation {m['best_val']:.2f} at step "
            f"{m['best_step']}, "
            + " + ".join(f"{seg['minutes']:.1f} min, {seg['device']}" for seg in m["segments"])
            for m in r["members"])
        line = (f"- {model_label(key)}, ensemble of {len(r['members'])} ({parts}): validation "
                f"{v['accuracy']:.2f} +- {v['ci95']:.2f} on {v['episodes']} {v['ways']}-way "
                f"{v['shots']}-shot episodes"
                + (f"; the table's model {r['table_val']:.2f}" if r.get("table_val") is not None
                   else ""))
        if not r["results"]:
            out.append(line + ": not above " + ("its best member" if r["table_val"] is None
                                                 else "each member and the table's model")
                       + ", so not evaluated on the test characters.")
            continue
        if c := r.get("tta_choice"):
            line += ("; TTA " + ", ".join(f"x{n} {a:.2f}" for n, a in sorted(
                c["accuracy"].items(), key=lambda kv: int(kv[0])))
                     + f" on {c['episodes']} validation episodes (seed 0, the validation "
                     f"characters with their rotations as classes, as the test episodes are "
                     f"drawn; the {v['episodes']} selection episodes, as training validated, "
                     f"have no rotated classes), x{c['chosen']} chosen")
        cells = []
        for cell, res in r["results"].items():
            paper = PAPER[method][1][CELLS.index(cell)]
            table = rows.get(key, {}).get("results", {}).get(cell)
            notes = ([f"table's model {table['accuracy']:.2f}{tta_mark(table)}"] if table
                     else [])
            if paper is not None:
                notes.append(f"paper {paper}: " + ("meets it" if meets(res, paper) else
                                                   f"{res['accuracy'] - paper:+.2f}"))
            cells.append(f"{cell} {res['accuracy']:.2f} +- {res['ci95']:.2f}{tta_mark(res)}"
                         + (f" ({'; '.join(notes)})" if notes else ""))
        out.append(line + ". Test: " + "; ".join(cells) + ".")
    return out


if __name__ == "__main__":
    sys.exit(main())
