"""Generative augmentation ablation: hallucinated supports for ProtoNet and the edge-labeling GNN.

For ``method`` in (protonet, edge_gnn), ``hallucinator`` in (vae, gan) and ``m`` in (0, 5, 20)
generated examples per class: train on the minimal Omniglot background set (the base configs
``experiments/configs/generative_<method>.yaml`` plus ``method_args.augment``), then evaluate on
the unseen alphabets ``Japanese_(katakana), Sanskrit, Tagalog`` of
``images_background_small2.zip``: 5-way 1-shot and 5-way 5-shot, 15 queries per class, 1,000
fixed episodes (seed 0), inductive, BatchNorm in eval mode. ``m = 0`` is the method without
generation, trained once per method (it does not depend on the hallucinator).

Usage (from the project root)::

    python experiments/generative.py                      # the whole grid (10 runs)
    python experiments/generative.py protonet             # one method: baseline + 4 variants
    python experiments/generative.py protonet:vae:5 protonet:0   # single runs (":0": baseline)
    python experiments/generative.py --skip-training      # re-evaluate saved runs
    python experiments/generative.py --figure-only        # only redraw the picture

A run is ``<method>:<hallucinator>:<m>``; ``<method>`` alone selects its 5 runs,
``<method>:<hallucinator>`` its two generating runs, ``<method>:0`` (or ``<method>:<h>:0``) the
baseline. Runs go to ``runs/generative/<method>/<hallucinator>_<m>/`` (baseline: ``m0``);
training resumes an interrupted run, and a finished run is only evaluated again. The table goes
to ``experiments/results/generative.md`` (and ``.json``; rows of runs not selected are kept),
the picture of real and generated features to ``experiments/results/generative_features.png``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from common import record_row, refuse_silent_reevaluation, run_time
from omniglot_small1 import DATA, TEST_ALPHABETS, TEST_ROOT

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("protonet", "edge_gnn")
HALLUCINATORS = ("vae", "gan")
PER_CLASS = (5, 20)
#: Hallucinator arguments of the ablation (the library defaults; see docs/generative.rst).
HALLUCINATOR_ARGS: dict[str, dict[str, Any]] = {"vae": {}, "gan": {}}
SHOTS = (1, 5)
#: Examples generated per class in the picture (more than the runs' m, to show the spread).
FIGURE_M = 20


def run_key(method: str, hallucinator: str, m: int) -> str:
    return f"{method}:none:0" if m == 0 else f"{method}:{hallucinator}:{m}"


def all_runs() -> list[str]:
    keys = []
    for method in METHODS:
        keys.append(run_key(method, "none", 0))
        keys += [run_key(method, h, m) for h in HALLUCINATORS for m in PER_CLASS]
    return keys


def select(items: list[str]) -> list[str]:
    """Run keys from the command line selection (see the module docstring)."""
    if not items:
        return all_runs()
    keys: list[str] = []
    for item in items:
        parts = item.split(":")
        method = parts[0]
        if method not in METHODS:
            raise SystemExit(f"unknown method {method!r} in {item!r}; choose one of "
                             f"{', '.join(METHODS)}")
        if len(parts) == 1:
            new = [k for k in all_runs() if k.startswith(method + ":")]
        elif len(parts) == 2 and parts[1] == "0":
            new = [run_key(method, "none", 0)]
        elif len(parts) in (2, 3) and parts[1] in HALLUCINATORS:
            ms = PER_CLASS if len(parts) == 2 else (_int(parts[2], item),)
            new = [run_key(method, parts[1], m) for m in ms]
        else:
            raise SystemExit(f"cannot read run {item!r}; write <method>, <method>:0, "
                             f"<method>:<hallucinator> or <method>:<hallucinator>:<m> with "
                             f"hallucinator in {', '.join(HALLUCINATORS)}")
        keys += [k for k in new if k not in keys]
    return keys


def _int(text: str, item: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise SystemExit(f"m must be an integer >= 0 in {item!r}") from None
    if value < 0:
        raise SystemExit(f"m must be an integer >= 0 in {item!r}")
    return value


def run_config(key: str, overrides: dict[str, Any]):  # noqa: ANN201
    """The Config of run ``key``: the method's base config, ``augment``, then ``overrides``."""
    from relgraph.engine import load_config

    method, hallucinator, m = key.split(":")
    config = load_config(ROOT / "experiments" / "configs" / f"generative_{method}.yaml")
    if int(m) > 0:
        augment = {"hallucinator": hallucinator, "per_class": int(m),
                   **HALLUCINATOR_ARGS[hallucinator]}
        config = config.override({"method_args.augment": augment})
    return config.override(overrides)


def run_dir(out_root: Path, key: str) -> Path:
    method, hallucinator, m = key.split(":")
    return out_root / method / ("m0" if m == "0" else f"{hallucinator}_{m}")


def test_dataset(image_size: int):  # noqa: ANN201
    from relgraph.data import build_dataset

    return build_dataset("omniglot", [TEST_ROOT], alphabets=TEST_ALPHABETS,
                         image_size=image_size)


def run(key: str, out_root: Path, skip_training: bool, overrides: dict[str, Any],
        episodes: int) -> dict[str, Any]:
    """Train (unless skipped) and evaluate run ``key``; returns its table row."""
    from relgraph.engine import confidence_interval, episode_accuracies, load_model, train

    out = run_dir(out_root, key)
    config = run_config(key, overrides)
    seconds = None
    if not skip_training:
        started = time.perf_counter()
        train(config, out, progress=False)
        seconds = time.perf_counter() - started
    if not (out / "checkpoint.pt").is_file():
        raise SystemExit(f"no trained run at {out}; train it first (drop --skip-training)")
    model, ckpt = load_model(out / "checkpoint.pt")
    test = test_dataset(ckpt["preprocessing"]["image_size"])
    results, per_episode = {}, {}
    for k in SHOTS:
        accs = episode_accuracies(model, test, ways=5, shots=k, queries=15, episodes=episodes,
                                  seed=0)
        results[f"5w{k}s"] = {"accuracy": 100.0 * float(accs.mean()),
                              "ci95": 100.0 * confidence_interval(accs),
                              "episodes": int(accs.numel()), "ways": 5, "shots": k,
                              "queries": 15, "seed": 0,
                              "transductive": bool(model.transductive)}
        per_episode[f"5w{k}s"] = [round(float(a), 5) for a in accs]
    method, hallucinator, m = key.split(":")
    recorded, steps = run_time(out)
    return {"key": key, "method": method, "hallucinator": hallucinator, "per_class": int(m),
            "augment": config.method_args.get("augment"), "out": str(out),
            "train_seconds": recorded if recorded is not None else seconds, "steps": steps,
            "best_step": ckpt["best"]["step"], "best_val": ckpt["best"]["val_acc"],
            "overrides": overrides, "results": results, "per_episode": per_episode}


def paired_delta(row: dict[str, Any], base: dict[str, Any], key: str = "5w1s") -> str:
    """``row - base`` accuracy on the same episodes: the mean per-episode difference with its
    95% CI when both rows carry per-episode accuracies, else the plain difference."""
    from relgraph.engine import confidence_interval

    a, b = row.get("per_episode", {}).get(key), base.get("per_episode", {}).get(key)
    if a and b and len(a) == len(b):
        d = torch.tensor(a, dtype=torch.float64) - torch.tensor(b, dtype=torch.float64)
        return f"{100 * float(d.mean()):+.2f} +- {100 * confidence_interval(d):.2f}"
    return f"{row['results'][key]['accuracy'] - base['results'][key]['accuracy']:+.2f}"


def _fmt(r: dict[str, Any]) -> str:
    return f"{r['accuracy']:.2f} +- {r['ci95']:.2f}"


def write_results(rows: dict[str, dict[str, Any]], results_dir: Path) -> None:
    from relgraph.utils import atomic_write_text

    lines = [
        "# Generative augmentation: hallucinated support examples",
        "",
        "Protocol: train on `images_background_small1.zip` only (5 alphabets, rotations x4 as "
        "new classes; 20% of the characters held out for validation and model selection); "
        "evaluate once on the unseen alphabets Japanese_(katakana), Sanskrit, Tagalog of "
        "`images_background_small2.zip`: 5-way 1-shot and 5-way 5-shot, 15 queries per class, "
        "1,000 fixed episodes (seed 0), 28x28, Conv4, inductive, BatchNorm in eval mode. "
        "Accuracy in % with 95% CI (1.96 std / sqrt(episodes)). `m`: generated examples per "
        "class, added as extra support nodes in training and at test time (m = 0: no "
        "generation, the baseline, trained with the same base config). delta: 5-way 1-shot "
        "accuracy minus the same method's baseline on the same 1,000 episodes, as the mean "
        "per-episode difference with its 95% CI (paired; a CI containing 0 means no "
        "measurable change). Target of issue 7: +1 point on 5-way "
        "1-shot.",
        "",
        "| method | hallucinator | m | 5-way 1-shot | 5-way 5-shot | delta 5w1s | training "
        "| best val step |",
        "|---|---|---|---|---|---|---|---|",
    ]
    order = {k: i for i, k in enumerate(all_runs())}
    ordered = sorted(rows.values(), key=lambda r: order.get(r["key"], len(order)))
    for r in ordered:
        base = rows.get(run_key(r["method"], "none", 0))
        one = r["results"]["5w1s"]
        delta = "-"
        if base is not None and r["per_class"] > 0:
            delta = paired_delta(r, base)
        secs = r["train_seconds"]
        t = f"{secs / 60:.1f} min" if secs else "not recorded"
        h = "-" if r["per_class"] == 0 else r["hallucinator"]
        lines.append(f"| {r['method']} | {h} | {r['per_class']} | {_fmt(one)} | "
                     f"{_fmt(r['results']['5w5s'])} | {delta} | {t} | {r['best_step']} |")
    lines += ["", "Verdict (computed from the rows above):", ""]
    for method in METHODS:
        base = rows.get(run_key(method, "none", 0))
        gains = [(r["results"]["5w1s"]["accuracy"] - base["results"]["5w1s"]["accuracy"], r)
                 for r in ordered if base is not None and r["method"] == method
                 and r["per_class"] > 0]
        if not gains:
            lines.append(f"- {method}: not measured yet (needs its baseline and at least one "
                         "generating run).")
            continue
        # the run is chosen by its validation accuracy, never by the test numbers it reports
        gain, best = max(gains, key=lambda g: g[1].get("best_val") or float("-inf"))
        met = "met" if gain >= 1.0 else "NOT met"
        lines.append(f"- {method}: 5-way 1-shot change of the generating run that validated "
                     f"best ({best['hallucinator']}, m = {best['per_class']}, validation "
                     f"{best.get('best_val', float('nan')):.2f} against the baseline's "
                     f"{base.get('best_val', float('nan')):.2f}; {len(gains)} generating runs): "
                     f"{paired_delta(best, base)} points: target (+1 point) {met}.")
    overridden = sorted({json.dumps(r["overrides"], sort_keys=True) for r in ordered
                         if r["overrides"]})
    if overridden:
        lines += ["", "Config overrides used (NOT the committed protocol): "
                  f"{', '.join(overridden)}"]
    lines += ["", "Hallucinators: `vae` = DeltaVAE (pairs of same-class features, trained by its "
              "own loss on detached features), `gan` = Wang et al. 2018 generator trained through "
              "the classification loss (no critic); arguments "
              f"{json.dumps(HALLUCINATOR_ARGS)} on top of the library defaults. See "
              "docs/generative.rst.",
              "", "Training time: the training loop's wall clock incl. validation (metrics.csv); "
              "edge_gnn starts from the ProtoNet run's backbone "
              "(runs/omniglot_small1/protonet), add its time for the whole cost.",
              "", f"Configs: `experiments/configs/generative_<method>.yaml` + "
              f"`method_args.augment`. Machine: {torch.get_num_threads()} threads, torch "
              f"{torch.__version__}, {platform.machine()}.",
              "", "Picture: `generative_features.png`, real and generated support features "
              "(PCA of the real ones).",
              "", "Reproduce: `python experiments/generative.py [<method>[:<hallucinator>[:<m>]] "
              "...]`.", ""]
    atomic_write_text(results_dir / "generative.md", "\n".join(lines))
    summary = {k: {f: v for f, v in r.items() if f != "per_episode"} for k, r in rows.items()}
    atomic_write_text(results_dir / "generative.json", json.dumps(summary, indent=2) + "\n")
    episodes = {k: r["per_episode"] for k, r in rows.items() if r.get("per_episode")}
    atomic_write_text(results_dir / "generative_episodes.json",
                      json.dumps(episodes, separators=(",", ":")) + "\n")


def load_rows(results_dir: Path) -> dict[str, dict[str, Any]]:
    """The rows saved in ``generative.json``, with their per-episode accuracies
    (``generative_episodes.json``) where recorded."""
    state = results_dir / "generative.json"
    rows = json.loads(state.read_text()) if state.is_file() else {}
    episodes_file = results_dir / "generative_episodes.json"
    episodes = json.loads(episodes_file.read_text()) if episodes_file.is_file() else {}
    for key, row in rows.items():
        if key in episodes:
            row["per_episode"] = episodes[key]
    return rows


def draw_figure(out_root: Path, results_dir: Path) -> Path | None:
    """Real and generated features of one 5-way 1-shot test episode, one panel per
    hallucinator, from the ProtoNet runs (m = 5 if trained, else m = 20)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from relgraph.data import EpisodeSampler
    from relgraph.engine import load_model
    from relgraph.generative import plot_generated_features
    from relgraph.viz import save_figure

    panels = []
    for h in HALLUCINATORS:
        for m in PER_CLASS:
            path = run_dir(out_root, run_key("protonet", h, m)) / "checkpoint.pt"
            if path.is_file():
                panels.append((h, m, path))
                break
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 4.6), squeeze=False)
    for ax, (h, m, path) in zip(axes[0], panels, strict=True):
        model, ckpt = load_model(path)
        test = test_dataset(ckpt["preprocessing"]["image_size"])
        # every drawing (20) of 5 test characters: 1 support + 19 queries per class
        episode = EpisodeSampler(test, n_way=5, k_shot=1, n_query=19, seed=0).read(test, [0])
        with torch.no_grad():
            support, query = model.embed_episode(episode)
            gen, gen_labels = model.support_generator.hallucinator(
                support, episode.support_labels, 5, FIGURE_M, torch.Generator().manual_seed(0))
        names = [test.class_names[int(c)] for c in episode.class_ids[0]]
        plot_generated_features(
            torch.cat([support[0], query[0]]),
            torch.cat([episode.support_labels[0], episode.query_labels[0]]), gen[0],
            gen_labels[0], support[0], episode.support_labels[0], class_names=names, ax=ax,
            title=f"ProtoNet + {h} (trained with m = {m}), 5 unseen characters:\n"
                  f"all 20 drawings, 1 support each, {FIGURE_M} generated from it")
    fig.tight_layout()
    return save_figure(fig, results_dir / "generative_features.png")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", help="runs to do (default: all); see the docstring")
    parser.add_argument("--out", default=str(ROOT / "runs" / "generative"),
                        help="folder of the training runs")
    parser.add_argument("--results", default=str(ROOT / "experiments" / "results"),
                        help="folder of generative.md/.json/_features.png")
    parser.add_argument("--skip-training", action="store_true",
                        help="evaluate saved runs only")
    parser.add_argument("--figure-only", action="store_true", help="only draw the picture")
    parser.add_argument("--table-only", action="store_true",
                        help="rewrite the page from its JSON (no training, no evaluation)")
    parser.add_argument("--episodes", type=int, default=1000,
                        help="test episodes per setting (1,000 for the report)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value of every selected run, e.g. "
                             "--set train.steps=2 (smoke tests; marked in the table)")
    parser.add_argument("--why", help="why a run with a row is trained or evaluated again "
                                      "(required then; kept with the replaced row)")
    args = parser.parse_args()
    if args.table_only:
        write_results(load_rows(Path(args.results)), Path(args.results))
        return 0
    if not TEST_ROOT.is_file():
        sys.exit(f"Omniglot data not found at {DATA}; this experiment needs ../shared/data")
    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            sys.exit(f"--set expects KEY=VALUE, got {item!r}")
        overrides[key.strip()] = yaml.safe_load(value)
    out_root, results_dir = Path(args.out), Path(args.results)
    if not args.figure_only:
        refuse_silent_reevaluation(load_rows(results_dir), select(args.runs), args.why)
        for key in select(args.runs):
            row = run(key, out_root, args.skip_training, overrides, args.episodes)
            # re-read just before writing: another process may have added rows meanwhile
            rows = load_rows(results_dir)
            record_row(rows, key, row, args.why)
            write_results(rows, results_dir)
            r = rows[key]["results"]
            print(f"{key}: 5w1s {_fmt(r['5w1s'])}, 5w5s {_fmt(r['5w5s'])}", flush=True)
    picture = draw_figure(out_root, results_dir)
    print(f"picture: {picture}" if picture else "picture: no trained ProtoNet run with a "
          "hallucinator yet")
    return 0


if __name__ == "__main__":
    sys.exit(main())
