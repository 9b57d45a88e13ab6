"""The ``relgraph`` command line.

Commands:
    ``relgraph data``: count the classes, examples and alphabets of a dataset.
    ``relgraph train``: episodic training from a YAML config and/or flags.
    ``relgraph evaluate``: fixed, seeded evaluation episodes (or Lake's one-shot runs).
    ``relgraph predict``: classify a folder of images from a few labelled ones per class.
    ``relgraph demo``: the main job on the embedded ``glyphs`` data.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

__all__ = ["main", "build_parser"]


def _split_list(text: str | None) -> list[str] | None:
    if not text:
        return None
    return [t.strip() for t in text.split(",") if t.strip()]


def _add_data_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--dataset", required=required,
                   help="dataset name (omniglot, glyphs, folder, tensors)")
    p.add_argument("--root", action="append", default=[], metavar="PATH",
                   help="data folder, zip or file; repeat for several roots")
    p.add_argument("--alphabets", metavar="A,B,...",
                   help="keep only these alphabets (comma separated)")
    p.add_argument("--split", help="dataset split, e.g. train / val / test")
    p.add_argument("--image-size", type=int, help="image side length")


def _dataset_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if getattr(args, "split", None):
        kwargs["split"] = args.split
    if getattr(args, "image_size", None):
        kwargs["image_size"] = args.image_size
    return kwargs


def cmd_data(args: argparse.Namespace) -> int:
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
        print("images    " + ", ".join(f"{k}={v}" for k, v in ds.preprocessing.items()))
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
    for item in args.set or []:
        if "=" not in item:
            raise ValueError(f"--set expects KEY=VALUE (e.g. train.lr=0.01), got {item!r}")
        key, value = item.split("=", 1)
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides


def cmd_train(args: argparse.Namespace) -> int:
    from relgraph.engine import load_config, train

    config = load_config(args.config, _train_overrides(args))
    if args.episodes is not None:
        per = config.train.episodes_per_batch
        config = config.override({"train.steps": max(1, args.episodes // per)})
    result = train(config, args.out, resume=not args.no_resume, progress=not args.no_progress,
                   stop_after=args.stop_after)
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
        print(f"wrote {Path(args.out) / 'checkpoint.pt'}, metrics.csv, curves.png, config.yaml")
    if result.get("interrupted"):
        return 128 + signal.Signals[result["interrupted"]].value
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from relgraph.engine import evaluate, load_model, resolve_device
    from relgraph.predict import dataset_for_checkpoint
    from relgraph.utils import atomic_write_text

    device = resolve_device(args.device)
    model, ckpt = load_model(args.checkpoint, device=device)
    pre = ckpt["preprocessing"]
    ev = ckpt["config"].get("eval", {})
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
                  "checkpoint": str(args.checkpoint)}
        text = (f"error rate {result['error_rate']:.2f}% over {result['runs']} runs "
                f"(accuracy {result['accuracy']:.2f}%)")
    else:
        if not args.dataset:
            raise ValueError("evaluate needs --dataset NAME --root PATH, or --omniglot-runs DIR")
        ds = dataset_for_checkpoint(args.dataset, args.root, pre, _split_list(args.alphabets),
                                    args.split)
        ways = args.ways or ev.get("ways", 5)
        shots = args.shots or ev.get("shots", 1)
        queries = args.queries or ev.get("queries", 15)
        result = evaluate(model, ds, ways, shots, queries, args.episodes, seed=args.seed,
                          device=device, progress=not args.no_progress,
                          within_alphabet=args.within_alphabet, tta=args.tta,
                          cache=not args.no_cache)
        result.update({"image_size": pre.get("image_size"), "dataset": args.dataset,
                       "roots": args.root, "checkpoint": str(args.checkpoint)})
        text = (f"{ways}-way {shots}-shot, {queries} queries, {result['episodes']} episodes: "
                f"accuracy {result['accuracy']:.2f} +- {result['ci95']:.2f}% (95% CI)")
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")
    print(text)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from relgraph.engine import load_model, resolve_device
    from relgraph.predict import predict_folder, write_predictions

    device = resolve_device(args.device)
    model, ckpt = load_model(args.checkpoint, device=device)
    rows = predict_folder(model, ckpt["preprocessing"], args.support, args.query, device=device)
    if args.out:
        write_predictions(rows, args.out)
    width = max(len(Path(r["file"]).name) for r in rows)
    for r in rows:
        print(f"{Path(r['file']).name:<{width}}  {r['prediction']}  ({r['confidence']:.1%})")
    if args.out:
        print(f"wrote {args.out}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from relgraph.demo import run_demo

    summary = run_demo(Path(args.out), seed=args.seed, quick=args.quick,
                       progress=not args.no_progress)
    print(summary)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from relgraph.bench import benchmark, format_sweep, format_table, machine_info, sweep

    kwargs: dict[str, Any] = {
        "device": args.device, "image_size": args.image_size, "steps": args.steps,
        "warmup": args.warmup, "backbone": args.backbone, "channels": args.channels,
        "memory": not args.no_memory, "seed": args.seed, "features": args.features}
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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``relgraph`` command."""
    from relgraph import __version__

    parser = argparse.ArgumentParser(prog="relgraph", description=(
        "Graph-based relational few-shot learning: every episode is a graph."))
    parser.add_argument("--version", action="version", version=f"relgraph {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("data", help="count the classes, examples and alphabets of a dataset")
    _add_data_args(p)
    p.add_argument("--json", action="store_true", help="print JSON: classes, examples, alphabets")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("train", help="train a few-shot method on episodes")
    p.add_argument("--config", help="YAML experiment file (flags below override it)")
    p.add_argument("--method", help="registered method, e.g. protonet")
    p.add_argument("--backbone", help="registered backbone, e.g. conv4")
    _add_data_args(p, required=False)
    p.add_argument("--ways", type=int, help="classes per training episode")
    p.add_argument("--shots", type=int, help="support examples per class")
    p.add_argument("--queries", type=int, help="query examples per class")
    p.add_argument("--episodes", type=int,
                   help="training episodes in all (steps = episodes / episodes_per_batch)")
    p.add_argument("--steps", type=int, help="optimisation steps")
    p.add_argument("--lr", type=float, help="learning rate")
    p.add_argument("--val-every", type=int, help="validate every this many steps")
    p.add_argument("--seed", type=int, help="training seed")
    p.add_argument("--device", help="auto, cpu or cuda")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override any config value, e.g. --set train.gamma=0.5 (repeatable)")
    p.add_argument("--out", required=True, help="run folder (checkpoint, metrics, curves)")
    p.add_argument("--no-resume", action="store_true",
                   help="start over even if OUT/last.pt exists")
    p.add_argument("--stop-after", type=int, help="run at most this many steps now, then pause")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="evaluate a checkpoint on fixed, seeded episodes")
    p.add_argument("--checkpoint", required=True, help="checkpoint.pt from relgraph train")
    _add_data_args(p, required=False)
    p.add_argument("--omniglot-runs", metavar="DIR",
                   help="score on Lake et al.'s 20 one-shot runs (runNN folders) instead")
    p.add_argument("--ways", type=int, help="classes per episode (default: the checkpoint's)")
    p.add_argument("--shots", type=int, help="support examples per class")
    p.add_argument("--queries", type=int, help="queries per class")
    p.add_argument("--episodes", type=int, default=1000,
                   help="evaluation episodes (default 1000; 600 and 10000 are common)")
    p.add_argument("--seed", type=int, default=0, help="seed of the evaluation episodes")
    p.add_argument("--within-alphabet", action="store_true",
                   help="draw every episode's classes from a single alphabet")
    p.add_argument("--tta", type=int, default=1, metavar="VIEWS",
                   help="test-time augmentation: average each image's embedding over this many "
                        "fixed small warps (1 = off; per image, so inductive stays inductive)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--no-cache", action="store_true",
                   help="embed every episode on its own (by default relational heads embed "
                        "each distinct image once and relate all episodes on the cached "
                        "features: the same episodes and accuracy, much faster)")
    p.add_argument("--json", metavar="FILE", help="write the result as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="classify new images from a few labelled ones")
    p.add_argument("--checkpoint", required=True, help="checkpoint.pt from relgraph train")
    p.add_argument("--support", required=True, help="labelled images: DIR/<class>/<image>")
    p.add_argument("--query", required=True, help="folder of images to classify")
    p.add_argument("--out", metavar="FILE.csv", help="write file, prediction, confidence")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("demo", help="the main job on the embedded glyphs data")
    p.add_argument("--out", default="relgraph-demo", help="report folder (default: relgraph-demo)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--quick", action="store_true", help="a very short run, for smoke tests")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("bench", help="episodes per second and peak memory of a method")
    p.add_argument("--method", required=True, help="registered method, e.g. protonet")
    p.add_argument("--backbone", default="conv4", help="registered backbone (default: conv4)")
    p.add_argument("--ways", type=int, default=5, help="classes per episode (default 5)")
    p.add_argument("--shots", type=int, default=1, help="support examples per class (default 1)")
    p.add_argument("--queries", type=int, default=15, help="queries per class (default 15)")
    p.add_argument("--batch", type=int, default=1, help="episodes per step (default 1)")
    p.add_argument("--image-size", type=int, default=28, help="image side (default 28)")
    p.add_argument("--channels", type=int, default=1, help="image channels (default 1)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--steps", type=int, default=10, help="timed steps, medians (default 10)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    p.add_argument("--seed", type=int, default=0, help="seed of weights and images")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    p.add_argument("--features", type=int, metavar="D",
                   help="time the relational head alone on one graph of random D-dim features "
                        "(no backbone: forward, loss, backward and Adam step of the head)")
    p.add_argument("--sweep", action="store_true",
                   help="repeat over --sweep-ways and fit time ~ nodes^k")
    p.add_argument("--sweep-ways", default="5,10,20,30,50", metavar="N,N,...",
                   help="ways of the sweep (default 5,10,20,30,50)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``relgraph`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, KeyError, OSError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"relgraph {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
