"""Time relgraph's methods against easyfsl 1.5.0's on the same backbone, episodes and machine.

Pairs: relgraph ``protonet`` / easyfsl ``PrototypicalNetworks``, ``matching`` (timed as
``matching_fce``, the comparable model) / ``MatchingNetworks``, ``relation`` /
``RelationNetworks``. Both sides start from the same
Conv-4 weights (easyfsl gets a copy of relgraph's backbone; for Relation Networks a wrapper
returning the backbone's feature map) and see the same seeded random episodes, in one process,
with repeats interleaved A/B (order alternating) so that load from other processes hits both.

- training: one episode per optimiser step for both sides (Adam; easyfsl's loss is
  cross-entropy for ProtoNet, NLL for Matching Networks (they output log-probabilities), MSE
  for Relation Networks, as its docs say); relgraph also with ``--train-batch`` episodes per step.
- evaluation: the same ``--eval-episodes`` episodes; easyfsl one at a time
  (``process_support_set`` then ``forward``), relgraph ``--eval-batch`` episodes per forward
  (and one per forward, for comparison).

Usage::

    pip install --no-deps easyfsl==1.5.0
    python experiments/bench_peers.py                 # writes experiments/results/bench_peers.md
    python experiments/bench_peers.py --methods relation --configs "20,5,15,20" --append

``--append`` adds the run to those kept in ``bench_peers.json`` beside the report, so a long
comparison can be split into short runs.

easyfsl's ``easyfsl.modules`` imports ``torchvision.models.resnet``; when torchvision cannot be
imported a stand-in module with the names it imports is installed first (the three methods timed
here never use them).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import statistics
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from relgraph.backbones import build_backbone
from relgraph.bench import machine_info, random_episode
from relgraph.data.episode import Episode
from relgraph.methods import build_method, list_methods
from relgraph.utils import atomic_write_text

IMAGE_SIZE = 28
PAIRS = {"protonet": "PrototypicalNetworks", "matching": "MatchingNetworks",
         "relation": "RelationNetworks"}
#: The relgraph model timed for each pair: easyfsl's Matching Networks always use full context
#: embeddings, with an attention LSTM unrolled once per support example, so the comparable
#: relgraph model is ``matching_fce`` with ``unrolling_steps`` = the support size.
OURS = {"protonet": "protonet", "matching": "matching_fce", "relation": "relation"}


def install_torchvision_stub() -> bool:
    """Make ``from torchvision.models.resnet import BasicBlock, Bottleneck, conv1x1, conv3x3``
    work; returns ``True`` if a stand-in had to be installed."""
    try:
        import torchvision.models.resnet  # noqa: F401

        return False
    except Exception:  # noqa: BLE001 (a broken torchvision raises RuntimeError too)
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]

    def conv3x3(in_planes: int, out_planes: int, stride: int = 1, groups: int = 1,
                dilation: int = 1) -> nn.Conv2d:
        return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=dilation,
                         groups=groups, bias=False, dilation=dilation)

    def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
        return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)

    class _Block(nn.Module):
        expansion = 1

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            raise NotImplementedError("torchvision stand-in: ResNet blocks are not available")

    class BasicBlock(_Block):
        expansion = 1

    class Bottleneck(_Block):
        expansion = 4

    pkg = types.ModuleType("torchvision")
    models = types.ModuleType("torchvision.models")
    resnet = types.ModuleType("torchvision.models.resnet")
    for obj in (conv3x3, conv1x1, BasicBlock, Bottleneck):
        setattr(resnet, obj.__name__, obj)
    pkg.__path__ = []  # a package, so submodule imports resolve through sys.modules
    models.__path__ = []
    pkg.models, models.resnet = models, resnet
    sys.modules.update({"torchvision": pkg, "torchvision.models": models,
                        "torchvision.models.resnet": resnet})
    return True


class FeatureMap(nn.Module):
    """A relgraph backbone returning its feature map ``[m, c, h, w]`` (for easyfsl Relation)."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, x: Tensor) -> Tensor:
        return self.backbone.forward_map(x)


def build_pair(name: str, easyfsl_methods: Any, seed: int, support_size: int
               ) -> tuple[nn.Module, nn.Module]:
    """relgraph's method and easyfsl's counterpart on identical Conv-4 weights."""
    kwargs = {"unrolling_steps": support_size} if name == "matching" else {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_backbone("conv4", in_channels=1, image_size=IMAGE_SIZE)
        ours = build_method(OURS[name], net, **kwargs)
        backbone = copy.deepcopy(ours.backbone)
        cls = getattr(easyfsl_methods, PAIRS[name])
        if name == "protonet":
            theirs = cls(backbone)
        elif name == "matching":
            theirs = cls(backbone, feature_dimension=backbone.out_dim)
        else:
            theirs = cls(FeatureMap(backbone), feature_dimension=backbone.map_shape()[0])
    return ours, theirs


def their_loss(name: str, out: Tensor, labels: Tensor) -> Tensor:
    if name == "protonet":
        return F.cross_entropy(out, labels)
    if name == "matching":
        return F.nll_loss(out, labels)
    return F.mse_loss(out, F.one_hot(labels, out.shape[-1]).float())


def make_steps(name: str, ours: nn.Module, theirs: nn.Module, pool: Episode,
               train_batch: int, eval_batch: int, eval_episodes: int
               ) -> dict[str, Callable[[int], None]]:
    """Closures ``f(i)``: one training step on episode(s) ``i``, or one evaluation pass."""
    o_opt = torch.optim.Adam(ours.parameters(), lr=1e-3)
    t_opt = torch.optim.Adam(theirs.parameters(), lr=1e-3)
    e = pool.batch_size

    def ours_train(i: int, b: int = 1) -> None:
        ours.train()
        start = (i * b) % (e - b + 1)
        loss, _ = ours.loss(pool[start:start + b])
        o_opt.zero_grad(set_to_none=True)
        loss.backward()
        o_opt.step()

    def theirs_train(i: int) -> None:
        theirs.train()
        j = i % e
        theirs.process_support_set(pool.support[j], pool.support_labels[j])
        loss = their_loss(name, theirs(pool.query[j]), pool.query_labels[j])
        t_opt.zero_grad(set_to_none=True)
        loss.backward()
        t_opt.step()

    def ours_eval(_: int) -> None:
        ours.eval()
        with torch.no_grad():
            for start in range(0, eval_episodes, eval_batch):
                ours(pool[start:min(start + eval_batch, eval_episodes)]).argmax(-1)

    def theirs_eval(_: int) -> None:
        theirs.eval()
        with torch.no_grad():
            for j in range(eval_episodes):
                theirs.process_support_set(pool.support[j], pool.support_labels[j])
                theirs(pool.query[j]).argmax(-1)

    return {"ours_train": ours_train, "theirs_train": theirs_train,
            "ours_train_batched": lambda i: ours_train(i, train_batch),
            "ours_eval": ours_eval, "theirs_eval": theirs_eval}


def agreement(name: str, ours: nn.Module, theirs: nn.Module, pool: Episode, n: int) -> float:
    """Fraction of equal eval predictions on ``n`` episodes (same weights: ProtoNet only)."""
    ours.eval()
    theirs.eval()
    same = total = 0
    with torch.no_grad():
        a = ours(pool[0:n]).argmax(-1)
        for j in range(n):
            theirs.process_support_set(pool.support[j], pool.support_labels[j])
            b = theirs(pool.query[j]).argmax(-1)
            same += int((a[j] == b).sum())
            total += b.numel()
    return same / total


def interleaved(groups: list[list[tuple[str, Callable[[int], None], int]]], repeats: int,
                warmup: int) -> dict[str, float]:
    """Median seconds per call of each closure; within each group the closures run in turn,
    in alternating order from one repeat to the next (A B, B A, ...).

    Each entry is ``(key, fn, calls)``: one timing is ``calls`` consecutive calls.
    """
    times: dict[str, list[float]] = {k: [] for g in groups for k, _, _ in g}
    for group in groups:
        for _, fn, _ in group:
            for i in range(warmup):
                fn(i)
        for r in range(repeats):
            order = group if r % 2 == 0 else group[::-1]
            for key, fn, calls in order:
                start = time.perf_counter()
                for i in range(calls):
                    fn(r * calls + i)
                times[key].append((time.perf_counter() - start) / calls)
    return {k: statistics.median(v) for k, v in times.items()}


def run_pair(name: str, easyfsl_methods: Any, ways: int, shots: int, queries: int,
             eval_episodes: int, args: argparse.Namespace) -> dict[str, Any]:
    ours, theirs = build_pair(name, easyfsl_methods, args.seed, ways * shots)
    episodes = max(eval_episodes, args.train_batch, 1)
    pool = random_episode(ways, shots, queries, batch=episodes, image_size=IMAGE_SIZE,
                          seed=args.seed)
    agree = agreement(name, ours, theirs, pool, min(5, episodes)) if name == "protonet" else None
    fns = make_steps(name, ours, theirs, pool, args.train_batch, args.eval_batch,
                     eval_episodes)
    single = make_steps(name, ours, theirs, pool, 1, 1, eval_episodes)["ours_eval"]
    k = args.train_steps
    sec = interleaved(
        [[("ours_train", fns["ours_train"], k), ("theirs_train", fns["theirs_train"], k),
          ("ours_train_batched", fns["ours_train_batched"], max(1, k // args.train_batch))],
         [("ours_eval", fns["ours_eval"], 1), ("ours_eval_1", single, 1),
          ("theirs_eval", fns["theirs_eval"], 1)]],
        args.repeats, args.warmup)
    eps = {
        "ours_train": 1 / sec["ours_train"], "theirs_train": 1 / sec["theirs_train"],
        "ours_train_batched": args.train_batch / sec["ours_train_batched"],
        "ours_eval": eval_episodes / sec["ours_eval"],
        "ours_eval_1": eval_episodes / sec["ours_eval_1"],
        "theirs_eval": eval_episodes / sec["theirs_eval"],
    }
    return {"method": OURS[name], "peer": PAIRS[name], "ways": ways, "shots": shots,
            "queries": queries, "eval_episodes": eval_episodes, "eps": eps, "agreement": agree,
            "threads": torch.get_num_threads(), "repeats": args.repeats,
            "train_steps": args.train_steps, "train_batch": args.train_batch,
            "eval_batch": args.eval_batch}


NOTES = {
    "matching_fce": "Matching Networks: easyfsl's always use full context embeddings with the "
                    "attention LSTM unrolled once per support example; relgraph's comparable "
                    "model is `matching_fce` with `unrolling_steps` = the support size.",
    "relation": "Relation Networks: same backbone feature map (64x1x1 at 28px), but the relation "
                "modules differ: easyfsl's upsamples each pair's map to 5x5 (AdaptiveMaxPool2d) "
                "and convolves every (query, class) concatenation; relgraph's convolves the class "
                "and query maps once each and adds them (the first convolution is linear), so the "
                "ratio compares implementations of the paper, not library overheads.",
}


def report(runs: list[dict[str, Any]]) -> str:
    """The Markdown report of one or more runs of this script."""
    lines = [
        "# relgraph vs easyfsl: episodes per second", "",
        f"Conv-4 backbone (identical initial weights on both sides), {IMAGE_SIZE}px, 1 channel, "
        "seeded random images, Adam. Each number is the median of interleaved repeats (A/B "
        "order alternating), in episodes per second. *train*: one episode per step for both; "
        "*ours batched*: B episodes per step. *eval*: the same set of episodes (column 'eval "
        "eps.') under `torch.no_grad()` in eval mode; easyfsl one episode at a time "
        "(`process_support_set` then `forward`), relgraph B episodes per forward pass (and, "
        "for comparison, 1). Ratio = ours / easyfsl (> 1: relgraph faster).", "",
        "| run | method / easyfsl | episode | threads | train ours | train easyfsl | ratio "
        "| ours batched (B) | ratio | eval eps. | eval ours (B) | eval ours (1) | eval easyfsl "
        "| ratio (B) | ratio (1) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for i, run in enumerate(runs, 1):
        for r in run["rows"]:
            e = r["eps"]
            lines.append(
                f"| {i} | {r['method']} / {r['peer']} | {r['ways']}w{r['shots']}s{r['queries']}q "
                f"| {r['threads']} | {e['ours_train']:.2f} | {e['theirs_train']:.2f} "
                f"| {e['ours_train'] / e['theirs_train']:.2f} "
                f"| {e['ours_train_batched']:.2f} (B={r['train_batch']}) "
                f"| {e['ours_train_batched'] / e['theirs_train']:.2f} | {r['eval_episodes']} "
                f"| {e['ours_eval']:.2f} (B={r['eval_batch']}) | {e['ours_eval_1']:.2f} "
                f"| {e['theirs_eval']:.2f} | {e['ours_eval'] / e['theirs_eval']:.2f} "
                f"| {e['ours_eval_1'] / e['theirs_eval']:.2f} |")
    lines += ["", "## Runs", ""]
    for i, run in enumerate(runs, 1):
        lines.append(f"{i}. `{run['command']}`: {run['date']}; {run['machine']}; easyfsl "
                     f"{run['easyfsl']}{'' if not run['stub'] else ' (torchvision stand-in)'}; "
                     f"load average (1, 5, 15 min) at start {run['load'][0]}, at end "
                     f"{run['load'][1]}; {run['rows'][0]['repeats'] if run['rows'] else 0} "
                     f"repeats of {run['rows'][0]['train_steps'] if run['rows'] else 0} "
                     "training steps.")
    lines += ["", "## Notes", ""]
    rows = [r for run in runs for r in run["rows"]]
    agree: dict[str, float] = {}
    for r in rows:
        if r["agreement"] is not None:
            key = f"{r['method']} {r['ways']}w{r['shots']}s"
            agree[key] = min(agree.get(key, 1.0), r["agreement"])
    for key, value in agree.items():
        lines.append(f"- {key}: relgraph's and easyfsl's predictions agree on {100 * value:.1f}% "
                     "of the queries of the first episodes (same weights, before training): "
                     "the same model.")
    for method, note in NOTES.items():
        if any(r["method"] == method for r in rows):
            lines.append(f"- {note}")
    slower = [r for r in rows if r["eps"]["ours_eval"] < r["eps"]["ours_eval_1"]]
    if slower:
        ratios = [r["eps"]["ours_eval"] / r["eps"]["ours_eval_1"] for r in rows]
        lines.append(f"- Batched evaluation per episode, against one episode per forward pass: "
                     f"{min(ratios):.2f}-{max(ratios):.2f}x ({len(slower)} of {len(rows)} rows "
                     "slower). Where it is slower (CPU), "
                     "the backbone embeds B times more images in one call, and their "
                     "activations (e.g. 1,600 x 64 x 28 x 28 floats, 320 MB, after the first "
                     "convolution for 20 5-way episodes) no longer fit in the caches; profiled, "
                     "convolution was 2.6x and BatchNorm 11x slower per image. Embedding in "
                     "chunks of about 32-128 images (exact in eval mode) avoids it.")
    if any(r["threads"] == 1 for r in rows):
        lines.append("- Runs with 1 thread were made while other processes loaded the cores: two "
                     "OpenMP threads on two busy cores wait for each other at every parallel "
                     "region, which made both sides erratic and up to 10x slower.")
    lines += [f"- skipped {s}" for run in runs for s in run["skipped"]]
    lines += ["- Ratios are more trustworthy than absolute numbers: the interleaving spreads "
              "the load of other processes over both sides; see the load averages above.", ""]
    return "\n".join(lines)


def _load() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", default="protonet,matching,relation",
                   help="relgraph methods to compare (default: protonet,matching,relation)")
    p.add_argument("--configs", default="5,1,15;20,5,15", metavar="W,S,Q[,E];...",
                   help="episode shapes ways,shots,queries and optionally the evaluation "
                        "episodes E of that shape (default: 5,1,15;20,5,15)")
    p.add_argument("--eval-episodes", type=int, default=100,
                   help="evaluation episodes where --configs gives none (100)")
    p.add_argument("--eval-batch", type=int, default=20, help="relgraph episodes per forward")
    p.add_argument("--train-steps", type=int, default=10, help="training steps per repeat (10)")
    p.add_argument("--train-batch", type=int, default=5,
                   help="episodes per step for 'ours batched' (5)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats, medians (3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls of each first (1)")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_peers.md"),
                   help="Markdown report; the runs are also kept in the .json beside it")
    p.add_argument("--append", action="store_true",
                   help="add this run to those already in OUT's .json instead of replacing them")
    p.add_argument("--render-only", action="store_true",
                   help="only rewrite OUT from the runs in OUT's .json")
    args = p.parse_args(argv)
    out = Path(args.out)
    store = out.with_suffix(".json")
    if args.render_only:
        atomic_write_text(out, report(json.loads(store.read_text())))
        print(f"wrote {out}")
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    configs = []
    for c in args.configs.split(";"):
        values = [int(v) for v in c.split(",") if v.strip()]
        if len(values) not in (3, 4) or min(values) < 1:
            p.error(f"--configs: expected W,S,Q or W,S,Q,E (positive), got {c!r}")
        configs.append((*values[:3], values[3] if len(values) == 4 else args.eval_episodes))
    names = [m.strip() for m in args.methods.split(",") if m.strip()]
    for name in names:
        if name not in PAIRS:
            p.error(f"--methods: expected some of {', '.join(PAIRS)}, got {name!r}")

    stub = install_torchvision_stub()
    try:
        import easyfsl
        import easyfsl.methods as easyfsl_methods
    except ImportError as exc:
        print(f"easyfsl is not installed ({exc}); pip install --no-deps easyfsl==1.5.0",
              file=sys.stderr)
        return 1

    load_start = _load()
    available = set(list_methods())
    rows, skipped = [], []
    for name in names:
        if OURS[name] not in available:
            msg = (f"{name}: {OURS[name]!r} is not registered in relgraph yet (registered: "
                   f"{', '.join(sorted(available))})")
            print(f"skipping {msg}", file=sys.stderr)
            skipped.append(msg)
            continue
        for ways, shots, queries, eval_episodes in configs:
            print(f"timing {OURS[name]} vs {PAIRS[name]} at {ways}w{shots}s{queries}q ...",
                  file=sys.stderr, flush=True)
            r = run_pair(name, easyfsl_methods, ways, shots, queries, eval_episodes, args)
            e = r["eps"]
            print(f"  train ours {e['ours_train']:.2f}  easyfsl {e['theirs_train']:.2f}  "
                  f"ours batched {e['ours_train_batched']:.2f}  |  eval ours "
                  f"{e['ours_eval']:.2f} (1/forward: {e['ours_eval_1']:.2f})  easyfsl "
                  f"{e['theirs_eval']:.2f} episodes/s", file=sys.stderr, flush=True)
            rows.append(r)
    given = sys.argv[1:] if argv is None else argv
    run = {"command": " ".join(["python experiments/bench_peers.py", *given]),
           "date": datetime.datetime.now().isoformat(timespec="seconds"),
           "machine": machine_info(), "easyfsl": easyfsl.__version__, "stub": stub,
           "load": [load_start, _load()], "rows": rows, "skipped": skipped}
    runs = json.loads(store.read_text()) if args.append and store.is_file() else []
    runs.append(run)
    text = report(runs)
    atomic_write_text(store, json.dumps(runs, indent=1) + "\n")
    atomic_write_text(out, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
