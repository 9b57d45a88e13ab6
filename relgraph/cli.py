"""The ``relgraph`` command line.

Commands:
    ``relgraph data``: count the classes, examples and alphabets of a dataset.
    ``relgraph demo``: the main job on the embedded ``glyphs`` data.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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


def cmd_demo(args: argparse.Namespace) -> int:
    from relgraph.demo import run_demo

    summary = run_demo(Path(args.out), seed=args.seed, quick=args.quick)
    print(summary)
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

    p = sub.add_parser("demo", help="the main job on the embedded glyphs data")
    p.add_argument("--out", default="relgraph-demo", help="report folder (default: relgraph-demo)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--quick", action="store_true", help="a very short run, for smoke tests")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``relgraph`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, KeyError, FileNotFoundError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"relgraph {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
