"""The ``relgraph`` command line.

Commands:
    ``relgraph data``: count the classes, examples and alphabets of a dataset.
    ``relgraph train``: episodic training from a YAML config and/or flags.
    ``relgraph evaluate``: fixed, seeded evaluation episodes (or Lake's one-shot runs).
    ``relgraph predict``: classify new images, feature rows or texts from a few labelled ones
    per class.
    ``relgraph demo``: the main job on the embedded ``glyphs`` data.

``train``, ``evaluate`` and ``predict`` take ``--import MODULE|FILE.py`` (repeatable): a module
of one's own, imported first, whose registered methods, backbones or datasets the command can
then name (:func:`import_modules`).
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import importlib.util
import json
import logging
import os
import re
import signal
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

__all__ = ["main", "build_parser", "import_modules"]


def _split_list(text: str | None) -> list[str] | None:
    if not text:
        return None
    return [t.strip() for t in text.split(",") if t.strip()]


def _add_data_args(p: argparse.ArgumentParser, required: bool = True,
                   split_help: str = "dataset split, e.g. train / val / test") -> None:
    p.add_argument("--dataset", required=required,
                   help="dataset name (omniglot, glyphs, folder, tensors, features, "
                        "miniimagenet, tieredimagenet, cub, cifar_fs, fc100)")
    p.add_argument("--root", action="append", default=[], metavar="PATH",
                   help="data folder, zip or file; repeat for several roots")
    p.add_argument("--alphabets", metavar="A,B,...",
                   help="keep only these alphabets (comma separated)")
    p.add_argument("--split", help=split_help)
    p.add_argument("--image-size", type=_at_least(1), help="image side length")
    p.add_argument("--option", action="append", metavar="KEY=VALUE",
                   help="dataset option, e.g. --option skip_bad=true or --option download=true "
                        "(repeatable; see the dataset's docs)")


def _add_import_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--import", dest="imports", action="append", default=[],
                   metavar="MODULE|FILE.py",
                   help="import this module first (a module importable from the current folder, "
                        "or a .py file), e.g. one that registers a method, backbone or dataset "
                        "of your own; repeatable (evaluate and predict need it again for such "
                        "a checkpoint)")


def import_modules(names: Sequence[str]) -> None:
    """Import the modules given with ``--import``, so that what they register (a method of
    one's own, a backbone, a dataset) can be named by the command.

    A name ending in ``.py`` is a file, run as the module named by its stem; any other name
    is a module importable from the current folder or the installed packages. A module that
    is already imported (from the same file) is not run again, so registering stays one-time.

    Raises:
        FileNotFoundError: no such ``.py`` file.
        ValueError: no such module.
    """
    for name in names:
        if name.endswith(".py"):
            path = Path(name).resolve()
            if not path.is_file():
                raise FileNotFoundError(f"--import {name}: no such file")
            loaded = sys.modules.get(path.stem)
            if loaded is not None and getattr(loaded, "__file__", None) and \
                    Path(loaded.__file__).resolve() == path:
                continue
            spec = importlib.util.spec_from_file_location(path.stem, path)
            if spec is None or spec.loader is None:
                raise ValueError(f"--import {name}: cannot load it as a Python module")
            module = importlib.util.module_from_spec(spec)
            sys.modules[path.stem] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[path.stem]
                raise
            continue
        if os.getcwd() not in sys.path and "" not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name.split(".")[0] and exc.name != name:
                raise
            raise ValueError(f"--import {name}: no module named {name!r} in the current folder "
                             "or the installed packages (give a module name or a .py file)"
                             ) from exc


def _key_values(items: list[str] | None, flag: str) -> dict[str, Any]:
    """``["a=1", "b=x"]`` -> ``{"a": 1, "b": "x"}`` (values read as YAML)."""
    pairs: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"{flag} expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        pairs[key.strip()] = yaml.safe_load(value)
    return pairs


def _dataset_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    from relgraph.data.catalog import DATASETS

    kwargs: dict[str, Any] = _key_values(getattr(args, "option", None), "--option")
    DATASETS.check_keywords(args.dataset, kwargs, "--option", reserved=("roots", "alphabets"))
    if getattr(args, "split", None):
        kwargs["split"] = args.split
    if getattr(args, "image_size", None):
        kwargs["image_size"] = args.image_size
    return kwargs


def cmd_data(args: argparse.Namespace) -> int:
    """``relgraph data``: print a dataset's summary (classes, examples, alphabets);
    0 on success."""
    from relgraph.data import build_dataset

    ds = build_dataset(args.dataset, args.root, alphabets=_split_list(args.alphabets),
                       **_dataset_kwargs(args))
    summary = ds.summary()
    if args.json:
        print(json.dumps(summary))
        return 0
    counts = ds.class_counts()
    print(f"dataset   {args.dataset} ({', '.join(args.root) or 'default location'})")
    print(f"classes   {summary['classes']}")
    print(f"examples  {summary['examples']} ({int(counts.min())}..{int(counts.max())} per class)")
    alphabets = [a for a in ds.alphabets if a]
    shown = ", ".join(alphabets[:8]) + (", ..." if len(alphabets) > 8 else "")
    print(f"alphabets {summary['alphabets']}" + (f" ({shown})" if alphabets else ""))
    if ds.preprocessing:
        what = "images   " if "image_size" in ds.preprocessing else "inputs   "
        shown = {k: (f"[{len(v)} items]" if isinstance(v, list) and len(v) > 8 else v)
                 for k, v in ds.preprocessing.items()}
        print(what + " " + ", ".join(f"{k}={v}" for k, v in shown.items()))
    return 0


def _train_overrides(args: argparse.Namespace) -> dict[str, Any]:
    overrides: dict[str, Any] = {
        "method": args.method, "backbone": args.backbone, "data.dataset": args.dataset,
        "data.roots": args.root or None, "data.alphabets": _split_list(args.alphabets),
        "data.image_size": args.image_size, "data.split": args.split,
        "train.ways": args.ways, "train.shots": args.shots,
        "train.queries": args.queries, "train.steps": args.steps, "train.seed": args.seed,
        "train.lr": args.lr, "train.device": args.device, "train.val_every": args.val_every,
    }
    overrides.update({f"data.options.{k}": v
                      for k, v in _key_values(args.option, "--option").items()})
    return overrides


_EPISODE_KEYS = ("ways", "shots", "queries")


def _validation_defaults(args: argparse.Namespace, config: Any) -> tuple[Any, bool]:
    """Validation episodes that follow ``--ways/--shots/--queries`` when no ``eval.*`` is given.

    Returns the config and whether the validation episodes may be fitted to the validation
    classes (only when they were not chosen by the user).
    """
    chosen = {k.split(".", 1)[1] for k in _key_values(args.set, "--set") if k.startswith("eval.")}
    if args.config:
        section = (yaml.safe_load(Path(args.config).read_text(encoding="utf-8")) or {}).get("eval")
        chosen |= set(section or {})
    given = [k for k in _EPISODE_KEYS if getattr(args, k) is not None]
    if not given or chosen & set(_EPISODE_KEYS):
        return config, False
    t = config.train
    config = config.override({f"eval.{k}": getattr(t, k) for k in _EPISODE_KEYS})
    print(f"relgraph train: validation episodes follow the training flags: {t.ways}-way "
          f"{t.shots}-shot {t.queries} queries (fewer if the validation classes are fewer; "
          "pass --set eval.ways=N, eval.shots=N, eval.queries=N to choose)", file=sys.stderr)
    return config, True


def _own_splits(config: Any) -> Any:
    """Without a config file and without any split, hold-out or alphabet setting, train on a
    dataset's own training split where it has one, so that ``evaluate``'s default (the test
    split) scores classes the model never saw: ``glyphs`` trains on ``train`` and validates on
    ``val``; other datasets with splits get a warning naming the flags."""
    from relgraph.data.catalog import DATASETS
    from relgraph.registry import accepted_keywords

    d = config.data
    if d.split or d.val_split or d.val_alphabets or d.alphabets:
        return config
    keywords = accepted_keywords(DATASETS.get(d.dataset))
    if keywords is None or "split" not in keywords:
        return config
    if d.dataset == "glyphs":  # its train / val / test alphabets
        print("relgraph train: training on the glyphs train split, validating on its val "
              "split (its test split stays unseen; --split all trains on every class)",
              file=sys.stderr)
        return config.override({"data.split": "train", "data.val_split": "val"})
    print(f"relgraph train: warning: training on every class of {d.dataset}, its test split "
          "included, so evaluate's default (the test split) would score training classes; "
          "pass --split train (and --set data.val_split=val) to keep them unseen",
          file=sys.stderr)
    return config


def cmd_train(args: argparse.Namespace) -> int:
    """``relgraph train``: train from a config (and ``--set`` overrides) into ``--out``;
    0 on success."""
    from relgraph.engine import load_config, train

    config = load_config(args.config, _train_overrides(args))
    # --set after the flags; ``--set KEY=null`` clears a value
    config = config.override(_key_values(args.set, "--set"), keep_none=True)
    if not args.config:
        config = _own_splits(config)
    if args.episodes is not None:
        per = config.train.episodes_per_batch
        if args.steps is not None:
            raise ValueError("--episodes and --steps both set the training length; pass one")
        if args.episodes % per:
            raise ValueError(f"--episodes {args.episodes} is not a multiple of "
                             f"train.episodes_per_batch={per}; pass a multiple, or --steps")
        config = config.override({"train.steps": args.episodes // per})
    config, fit = _validation_defaults(args, config)
    result = train(config, args.out, resume=not args.no_resume, progress=not args.no_progress,
                   stop_after=args.stop_after, fit_validation=fit)
    if int(os.environ.get("RANK", "0")) == 0:
        best = result["best"]
        status = "finished" if result["finished"] else "paused (resume with the same command)"
        if result.get("stopped_early"):
            status = "stopped early (no validation improvement)"
        if result.get("interrupted"):
            status = f"interrupted by {result['interrupted']} (resume with the same command)"
        val = (f"{best['val_acc']:.2f} +- {best['val_ci95']:.2f}%"
               if best.get("val_ci95") is not None else "n/a")
        print(f"training {status} at step {result['step']}; best validation accuracy {val} "
              f"at step {best['step']}")
        out = Path(args.out)
        written = [name for name in ("checkpoint.pt", "last.pt", "metrics.csv", "curves.png",
                                     "config.yaml") if (out / name).is_file()]
        print(f"wrote {out}: {', '.join(written)}")
    if result.get("interrupted"):
        return 128 + signal.Signals[result["interrupted"]].value
    return 0


def _default_split(name: str, split: str | None, alphabets: list[str] | None = None
                   ) -> str | None:
    """The split ``evaluate`` scores: ``--split``, else ``"test"`` where the dataset has splits;
    ``None`` (all classes) for ``--split all``, a dataset without splits, or ``--alphabets``
    (the classes were chosen by hand)."""
    from relgraph.data.catalog import DATASETS
    from relgraph.registry import accepted_keywords

    if split == "all":
        return None
    if split:
        return split
    if alphabets:
        return None
    keywords = accepted_keywords(DATASETS.get(name))
    return "test" if keywords is not None and "split" in keywords else None


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``relgraph evaluate``: score a checkpoint on fixed seeded episodes (accuracy
    with its 95% CI); 0 on success."""
    from relgraph.data.base import dataset_polarity
    from relgraph.engine import evaluate, load_model, resolve_device
    from relgraph.predict import dataset_for_checkpoint, seen_in_training
    from relgraph.utils import atomic_write_text

    device = resolve_device(args.device)
    if len(args.checkpoint) == 1:
        model, ckpt = load_model(args.checkpoint[0], device=device)
    else:
        from relgraph.engine.ensemble import load_ensemble

        model, ckpts = load_ensemble(args.checkpoint, device=device, combine=args.combine)
        ckpt = ckpts[0]  # the members read the same inputs (checked); eval defaults: the first
    members = [ckpt] if len(args.checkpoint) == 1 else ckpts
    checkpoint = args.checkpoint[0] if len(args.checkpoint) == 1 else args.checkpoint
    pre = ckpt["preprocessing"]
    ev = ckpt["config"].get("eval", {})
    if args.image_size is not None and args.image_size != pre.get("image_size"):
        raise ValueError(f"--image-size {args.image_size}: this model reads "
                         f"{pre.get('image_size')} px inputs (its checkpoint's preprocessing), "
                         "and evaluate resizes every image to that; leave --image-size out")
    if args.omniglot_runs:
        import torch

        from relgraph.data import Episode, evaluate_lake_runs, load_lake_runs

        runs = load_lake_runs(args.omniglot_runs, image_size=pre.get("image_size"))

        def predict(support, support_labels, query):  # noqa: ANN001, ANN202
            n = int(support_labels.max()) + 1
            ep = Episode(support, support_labels, query,
                         torch.zeros(query.shape[:2], dtype=torch.long),
                         torch.arange(n).unsqueeze(0), n_way=n, k_shot=1).to(device)
            return model(ep)

        from relgraph.engine.tta import with_tta

        with torch.no_grad(), with_tta(model, args.tta):
            result = evaluate_lake_runs(runs, predict, one_at_a_time=True)
        result = {"error_rate": result["error_rate"], "accuracy": result["accuracy"],
                  "runs": result["runs"], "per_run_error": result["per_run_error"],
                  "tta": args.tta,
                  "protocol": "Lake et al. 2015 one-shot runs, 20-way 1-shot within alphabet, "
                              "one test image at a time (inductive)",
                  "checkpoint": checkpoint}
        text = (f"error rate {result['error_rate']:.2f}% over {result['runs']} runs "
                f"(accuracy {result['accuracy']:.2f}%)")
    else:
        if not args.dataset:
            raise ValueError("evaluate needs --dataset NAME --root PATH, or --omniglot-runs DIR")
        alphabets = _split_list(args.alphabets)
        split = _default_split(args.dataset, args.split, alphabets)
        try:
            ds = dataset_for_checkpoint(args.dataset, args.root, pre, alphabets, split,
                                        **_key_values(args.option, "--option"))
        except ValueError as exc:
            if args.split is None and split == "test":
                raise ValueError(f"{exc} (evaluate scores the test split by default; pass "
                                 "--split all to score every class, or --alphabets)") from exc
            raise
        got = dataset_polarity(ds)
        if got is not None and pre.get("polarity") not in (None, got["polarity"]):
            print(f"relgraph evaluate: warning: the {args.dataset} images are {got['polarity']} "
                  f"(mean intensity {got['mean_intensity']:.2f}) but the model was trained on "
                  f"{pre['polarity']} images (mean {pre.get('mean_intensity', float('nan')):.2f});"
                  " for a folder dataset pass --option invert=true (or false)", file=sys.stderr)
        seen = sorted({n for c in members for n in seen_in_training(c, ds)})
        if seen:
            print(f"relgraph evaluate: warning: {len(seen)} of the evaluated classes were "
                  f"training classes of this model (e.g. {', '.join(seen[:3])}): a score on "
                  "them is not a score on new classes; evaluate classes it never trained on "
                  "(--split test, or other alphabets or roots)", file=sys.stderr)
        ways = args.ways or ev.get("ways", 5)
        shots = args.shots or ev.get("shots", 1)
        queries = args.queries or ev.get("queries", 15)
        result = evaluate(model, ds, ways, shots, queries, args.episodes, seed=args.seed,
                          device=device, progress=not args.no_progress,
                          within_alphabet=args.within_alphabet, tta=args.tta,
                          cache=not args.no_cache, unlabelled=args.unlabeled,
                          distractors=args.distractors, random_queries=args.random_queries)
        result.update({"image_size": pre.get("image_size"), "dataset": args.dataset,
                       "split": split or ("all classes of the given alphabets" if alphabets
                                          else "all classes"),
                       "classes": ds.num_classes, "classes_seen_in_training": len(seen),
                       "roots": args.root, "checkpoint": checkpoint})
        where = (f"{split} split" if split else
                 f"alphabets {args.alphabets}" if alphabets else "all classes")
        per_class = f"1-{queries} random" if args.random_queries else f"{queries}"
        extras = "".join([", within alphabets" if args.within_alphabet else "",
                          f", TTA x{args.tta}" if args.tta > 1 else ""])
        text = (f"{args.dataset} {where} ({ds.num_classes} classes), {ways}-way {shots}-shot, "
                f"{per_class} queries{extras}, {result['episodes']} episodes, {result['mode']}: "
                f"accuracy {result['accuracy']:.2f} +- {result['ci95']:.2f}% (95% CI)")
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")
    print(text)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    """``relgraph predict``: classify new examples (images, features or texts)
    against a labelled support set; 0 on success."""
    from relgraph.engine import load_model, resolve_device
    from relgraph.predict import (
        predict_features,
        predict_folder,
        predict_texts,
        text_encoder_of,
        write_predictions,
    )

    device = resolve_device(args.device)
    model, ckpt = load_model(args.checkpoint, device=device)
    pre = ckpt["preprocessing"]
    if text_encoder_of(pre) is not None:  # trained on texts: files of texts
        for flag, given in (("--support-labels", args.support_labels),
                            ("--invert/--no-invert", args.invert is not None)):
            if given:
                raise ValueError(f"{flag} is not for texts; this checkpoint was trained on "
                                 f"{pre.get('dataset', 'a text dataset')} texts (--support "
                                 "labelled.tsv --query texts.txt)")
        rows = predict_texts(model, pre, args.support, args.query, device=device,
                             progress=not args.no_progress)
    elif "feature_shape" in pre:  # trained on features: files of features
        rows = predict_features(model, pre, args.support, args.query,
                                support_labels=args.support_labels, device=device)
    else:
        if args.support_labels:
            raise ValueError("--support-labels is for features files; this checkpoint was "
                             "trained on images (--support DIR/<class>/<image>)")
        rows = predict_folder(model, pre, args.support, args.query,
                              device=device, invert=args.invert)
    if args.out:
        write_predictions(rows, args.out)
    width = max(len(Path(r["file"]).name) for r in rows)
    for r in rows:
        text = f"  {r['text'][:60]!r}" if "text" in r else ""
        print(f"{Path(r['file']).name:<{width}}  {r['prediction']}  ({r['confidence']:.1%}){text}")
    if any(r.get("label") for r in rows):  # texts with known labels: how many are right
        known = [r for r in rows if r.get("label")]
        right = sum(r["prediction"] == r["label"] for r in known)
        print(f"accuracy {right / len(known):.2%} on the {len(known)} labelled queries")
    if args.out:
        print(f"wrote {args.out}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """``relgraph demo``: train and evaluate on the embedded glyphs dataset and write
    its report; 0 on success."""
    from relgraph.demo import run_demo

    summary = run_demo(Path(args.out), seed=args.seed, quick=args.quick,
                       progress=not args.no_progress)
    print(summary)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """``relgraph bench``: time a method's training and evaluation steps (backbone and
    relational head apart) and their peak memory; 0 on success."""
    from relgraph.bench import benchmark, format_sweep, format_table, machine_info, sweep

    kwargs: dict[str, Any] = {
        "device": args.device, "image_size": args.image_size, "steps": args.steps,
        "warmup": args.warmup, "backbone": args.backbone, "channels": args.channels,
        "memory": not args.no_memory, "seed": args.seed, "features": args.features,
        "amp": args.amp}
    if args.sweep:
        ways = [int(w) for w in _split_list(args.sweep_ways) or []]
        if not ways:
            raise ValueError(f"--sweep-ways expects comma-separated ints, got {args.sweep_ways!r}")
        result = sweep(args.method, ways, args.shots, args.queries, args.batch, **kwargs)
        text = format_sweep(result)
    else:
        result = benchmark(args.method, args.ways, args.shots, args.queries, args.batch,
                           **kwargs)
        text = format_table(result)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(text)
        print(f"machine: {machine_info()}")
    return 0


def _at_least(low: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``low`` (a 0 or negative count is a usage error, not a
    silent default or a traceback)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {value}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``relgraph`` command."""
    from relgraph import __version__

    parser = argparse.ArgumentParser(prog="relgraph", description=(
        "Graph-based relational few-shot learning: every episode is a graph."))
    parser.add_argument("--version", action="version", version=f"relgraph {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--threads", type=int, metavar="N",
                        help="CPU threads of torch's operations (default: OMP_NUM_THREADS if "
                             "set, else the CPUs this process may use: its affinity mask, "
                             "capped by the cgroup CPU quota)")

    p = sub.add_parser(
        "data", parents=[common], help="count the classes, examples and alphabets of a dataset")
    _add_data_args(p)
    p.add_argument("--json", action="store_true", help="print JSON: classes, examples, alphabets")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser(
        "train", parents=[common], help="train a few-shot method on episodes")
    p.add_argument("--config", help="YAML experiment file (flags below override it)")
    p.add_argument("--method", help="registered method, e.g. protonet")
    p.add_argument("--backbone", help="registered backbone, e.g. conv4")
    _add_data_args(p, required=False)
    p.add_argument("--ways", type=_at_least(1), help="classes per training episode")
    p.add_argument("--shots", type=_at_least(1), help="support examples per class")
    p.add_argument("--queries", type=_at_least(1), help="query examples per class")
    p.add_argument("--episodes", type=_at_least(1),
                   help="training episodes in all (steps = episodes / episodes_per_batch)")
    p.add_argument("--steps", type=_at_least(1),
                   help="optimisation steps (more than a finished run in --out has: it "
                        "continues that run to the larger budget)")
    p.add_argument("--lr", type=float, help="learning rate")
    p.add_argument("--val-every", type=_at_least(1), help="validate every this many steps")
    p.add_argument("--seed", type=int, help="training seed")
    p.add_argument("--device", help="auto, cpu or cuda")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override any config value, e.g. --set train.gamma=0.5 (repeatable)")
    p.add_argument("--out", required=True, help="run folder (checkpoint, metrics, curves)")
    p.add_argument("--no-resume", action="store_true",
                   help="start over even if OUT/last.pt exists")
    p.add_argument("--stop-after", type=_at_least(1),
                   help="run at most this many steps now, then pause")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_import_arg(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "evaluate", parents=[common], help="evaluate a checkpoint on fixed, seeded episodes")
    p.add_argument("--checkpoint", required=True, action="append",
                   help="checkpoint.pt from relgraph train, or its run folder; give it again "
                        "for an ensemble (the models' predictions averaged, see --combine)")
    p.add_argument("--combine", choices=["prob", "logit"], default="prob",
                   help="how an ensemble combines its members: the mean of their class "
                        "probabilities (default) or of their logits")
    _add_data_args(p, required=False, split_help=(
        "split to score (default: test where the dataset has splits, else all classes; "
        "'all' for every class)"))
    p.add_argument("--omniglot-runs", metavar="DIR",
                   help="score on Lake et al.'s 20 one-shot runs (runNN folders) instead")
    p.add_argument("--ways", type=_at_least(1),
                   help="classes per episode (default: the checkpoint's)")
    p.add_argument("--shots", type=_at_least(1), help="support examples per class")
    p.add_argument("--queries", type=_at_least(1), help="queries per class")
    p.add_argument("--episodes", type=_at_least(1), default=1000,
                   help="evaluation episodes (default 1000; 600 and 10000 are common)")
    p.add_argument("--seed", type=int, default=0, help="seed of the evaluation episodes")
    p.add_argument("--within-alphabet", action="store_true",
                   help="draw every episode's classes from a single alphabet")
    p.add_argument("--tta", type=_at_least(1), default=1, metavar="VIEWS",
                   help="test-time augmentation: average each image's embedding over this many "
                        "fixed small warps (1 = off; per image, so inductive stays inductive)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--unlabeled", type=_at_least(0), default=0, metavar="U",
                   help="semi-supervised episodes: U unlabelled examples of each episode class "
                        "(default 0; the supports and queries stay the same)")
    p.add_argument("--distractors", type=_at_least(0), default=0, metavar="D",
                   help="and U unlabelled examples of each of D distractor classes (default 0)")
    p.add_argument("--random-queries", action="store_true",
                   help="keep a random number of queries per class in each episode (1 to "
                        "--queries, seeded): unbalanced query sets, the honest test of a "
                        "transductive method")
    p.add_argument("--no-cache", action="store_true",
                   help="embed every episode on its own (by default relational heads embed "
                        "each distinct image once and relate all episodes on the cached "
                        "features: the same episodes and accuracy, much faster)")
    p.add_argument("--json", metavar="FILE", help="write the result as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_import_arg(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "predict", parents=[common],
        help="classify new images, feature rows or texts from a few labelled ones",
        description="Classify every image under --query from the labelled images under "
                    "--support, read as the checkpoint's training images were (size, channels, "
                    "polarity). Images of the other polarity (dark ink on white paper for a "
                    "model trained on bright ink on black) are inverted, with a warning. A model "
                    "trained on features reads features files; a model trained on texts "
                    "(clinc150, banking77, fewrel) reads text files and encodes them as its "
                    "training texts were (MiniLM features or its token vocabulary). All the "
                    "supports form one episode, whatever the number of classes.")
    p.add_argument("--checkpoint", required=True,
                   help="checkpoint.pt from relgraph train, or its run folder")
    p.add_argument("--support", required=True,
                   help="labelled images: DIR/<class>/<image>; for a model trained on features, "
                        "a features file with labels (.npz, .safetensors, .parquet, .npy); for "
                        "a model trained on texts, a file of labelled texts: .tsv or .txt "
                        "(label<TAB>text per line), .csv (columns label, text) or .jsonl "
                        "({\"label\": ..., \"text\": ...} per line)")
    p.add_argument("--support-labels", metavar="FILE",
                   help="labels of an .npy --support features file (one per line, or .npy)")
    p.add_argument("--query", required=True,
                   help="folder of images to classify (or a features file, for a model "
                        "trained on features: every row is classified; or a file of texts, for "
                        "a model trained on texts: .txt with one text per line, or .csv / "
                        ".jsonl with a text column, or .tsv; a label column, if any, is kept "
                        "and the accuracy printed)")
    p.add_argument("--out", metavar="FILE.csv",
                   help="write a CSV with the columns file, prediction, confidence and one "
                        "p(<class>) column per support class (its probability); for texts, "
                        "file is <query file>:<line>, followed by the columns text (and label)")
    polarity = p.add_mutually_exclusive_group()
    polarity.add_argument("--invert", dest="invert", action="store_true", default=None,
                          help="invert the images (1 - pixel) before classifying them "
                               "(default: automatic, from their mean intensity against the "
                               "checkpoint's)")
    polarity.add_argument("--no-invert", dest="invert", action="store_false",
                          help="never invert the images (turns the automatic check off)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (while texts are encoded)")
    _add_import_arg(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "demo", parents=[common], help="the main job on the embedded glyphs data")
    p.add_argument("--out", default="relgraph-demo", help="report folder (default: relgraph-demo)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--quick", action="store_true", help="a very short run, for smoke tests")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "bench", parents=[common], help="episodes per second and peak memory of a method")
    p.add_argument("--method", required=True, help="registered method, e.g. protonet")
    p.add_argument("--backbone", default="conv4", help="registered backbone (default: conv4)")
    p.add_argument("--ways", type=_at_least(1), default=5, help="classes per episode (default 5)")
    p.add_argument("--shots", type=_at_least(1), default=1,
                   help="support examples per class (default 1)")
    p.add_argument("--queries", type=_at_least(1), default=15,
                   help="queries per class (default 15)")
    p.add_argument("--batch", type=_at_least(1), default=1, help="episodes per step (default 1)")
    p.add_argument("--image-size", type=_at_least(1), default=28, help="image side (default 28)")
    p.add_argument("--channels", type=_at_least(1), default=1, help="image channels (default 1)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--steps", type=_at_least(1), default=10,
                   help="timed steps, medians (default 10)")
    p.add_argument("--warmup", type=_at_least(0), default=2, help="untimed steps first (default 2)")
    p.add_argument("--seed", type=int, default=0, help="seed of weights and images")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    p.add_argument("--features", type=_at_least(1), metavar="D",
                   help="time the relational head alone on one graph of random D-dim features "
                        "(no backbone: forward, loss, backward and Adam step of the head)")
    p.add_argument("--amp", choices=("bfloat16", "float16"),
                   help="time every step under autocast in this dtype (bfloat16 on the CPU: "
                        "worth it with AMX / AVX-512 bf16 units; float16: GPU only)")
    p.add_argument("--sweep", action="store_true",
                   help="repeat over --sweep-ways and fit time ~ nodes^k")
    p.add_argument("--sweep-ways", default="5,10,20,30,50", metavar="N,N,...",
                   help="ways of the sweep (default 5,10,20,30,50)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_bench)
    return parser


#: Library hints (Python arguments) and what to type instead: (pattern, train, other commands).
_HINTS: list[tuple[str, str, str]] = [
    (r"[Pp]ass download=True", "pass --option download=true", "pass --option download=true"),
    (r"pass skip_bad=True", "pass --option skip_bad=true", "pass --option skip_bad=true"),
    (r"pass (an )?image_size", "pass --image-size N", "pass --image-size N"),
    (r"set data\.too_small=skip", "pass --set data.too_small=skip",
     "lower --shots/--queries"),
    (r"pass too_small='skip'", "pass --set data.too_small=skip", "lower --shots/--queries"),
    (r"Lower train\.shots/train\.queries", "Lower --shots/--queries",
     "Lower --shots/--queries"),
    (r"lower train\.ways", "lower --ways", "lower --ways"),
    (r"Lower eval\.shots/eval\.queries", "Lower them with --set eval.shots=N / "
     "--set eval.queries=N", "Lower --shots/--queries"),
    (r"lower eval\.ways", "pass --set eval.ways=N", "lower --ways"),
    (r"Lower k_shot/n_query", "Lower --shots/--queries", "Lower --shots/--queries"),
    (r"lower n_way", "lower --ways", "lower --ways"),
    (r"(?<![-\w])set (eval|data|train)\.([a-z_]+)=", r"pass --set \1.\2=", r"pass --set \1.\2="),
    (r"pass invert=False", "pass --no-invert", "pass --no-invert"),
    (r"pass resume=False \(--no-resume\)", "pass --no-resume", "pass --no-resume"),
]


def _for_the_command_line(message: str, command: str) -> str:
    """``message`` on one line, with Python-argument hints replaced by flags."""
    if command == "predict":  # no dataset options there: the support folder must be clean
        message = re.sub(r" \(or pass skip_bad=True[^)]*\)", "", message)
        message = re.sub(r"(remove it )?or pass skip_bad=True",
                         "remove it from the support or query folder", message)
    for pattern, train, other in _HINTS:
        message = re.sub(pattern, train if command == "train" else other, message)
    return " ".join(str(message).split())


def _show_warning(command: str):  # noqa: ANN202
    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001, ANN202
        text = _for_the_command_line(str(message), command)
        print(f"relgraph {command}: warning: {text}", file=sys.stderr)
    return show


def _unknown_arguments(parser: argparse.ArgumentParser, command: str,
                       extra: list[str]) -> None:
    """Exit 2 with the command's usage, naming the unknown arguments and, for a misspelled
    flag, the closest one of that command."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    command_parser = sub.choices[command]
    flags = [o for a in command_parser._actions for o in a.option_strings]
    hint = ""
    for word in extra:
        close = difflib.get_close_matches(word.split("=")[0], flags, n=1) \
            if word.startswith("--") else []
        if close:
            hint = f" (did you mean {close[0]}?)"
            break
    command_parser.error(f"unrecognized arguments: {' '.join(extra)}{hint}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``relgraph`` command; returns the exit status.

    A user's mistake (``ValueError``, ``KeyError``, ``FileNotFoundError``) ends in one line on
    stderr, ``relgraph COMMAND: error: ...``, and exit status 2; warnings and the library's
    INFO log lines (e.g. resuming a run) are one line each too.
    """
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # said by the command's own parser, with its usage and the closest flag
        _unknown_arguments(parser, args.command, extra)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"relgraph {args.command}: %(message)s"))
    library_log = logging.getLogger("relgraph")
    library_log.addHandler(handler)
    old_level = library_log.level
    library_log.setLevel(logging.INFO)
    old_show = warnings.showwarning
    warnings.showwarning = _show_warning(args.command)
    try:
        from relgraph.allocator import keep_freed_memory
        from relgraph.threads import configure_threads

        configure_threads(args.threads)
        keep_freed_memory()  # no page faults for every step's tensors (relgraph.allocator)
        import_modules(getattr(args, "imports", None) or [])
        return int(args.func(args) or 0)
    except (ValueError, KeyError, OSError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        text = _for_the_command_line(str(message), args.command)
        if "unknown method" in text and hasattr(args, "imports") and not args.imports:
            text += "; for a method of your own, pass --import MODULE|FILE.py"
        print(f"relgraph {args.command}: error: {text}", file=sys.stderr)
        return 2
    except ImportError as exc:
        if "relgraph[" not in str(exc):  # not a missing optional extra: a real failure
            raise
        print(f"relgraph {args.command}: error: {_for_the_command_line(str(exc), args.command)}",
              file=sys.stderr)
        return 2
    finally:
        warnings.showwarning = old_show
        library_log.removeHandler(handler)
        library_log.setLevel(old_level)


if __name__ == "__main__":
    sys.exit(main())
