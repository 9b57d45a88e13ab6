"""What the training loop adds to the model step: the data pipeline, before and after (issue 19).

For each config (default: the Vinyals 1-shot protonet / relation / gnn / maml configs), in one
process and on the config's own episodes:

- **model step**: what ``relgraph bench`` times, on the trainer's machinery: forward (the
  method's loss), backward, optimiser and scheduler step on episodes already built and already
  on the device (``training_batch`` of the same steps, made before timing);
- **trainer step, old path**: the real :func:`relgraph.engine.trainer.train_step` reading its
  episodes through the dataset views as before this change (``RotatedClasses`` of the Omniglot
  split: index, convert every image to float on the CPU, rotate by boolean masks, then copy the
  floats to the device);
- **trainer step, new path**: the same ``train_step`` on
  :class:`~relgraph.data.resident.ResidentImages` (the uint8 images held once on the device,
  one ``index_select`` per batch, rotations per quarter-turn group, floats made on the device).

The three are interleaved step by step (the order rotating), so the load of other processes
falls on all of them alike; the numbers are medians over ``--steps`` steps after ``--warmup``.
Inside the trainer steps, timers on the pipeline's stages (the real functions, wrapped) say
where the difference goes: sampling the episode indices (``EpisodeSampler.episode_indices``),
reading the images (``get_batch``), assembling the :class:`~relgraph.data.Episode`
(``make_episode``), the affine augmentation (``_warp``; off in these configs), the host to
device copy (``Episode.to``); *rest* is the trainer step less the model step and those stages
(reading the loss and accuracy for the logs, the finiteness check). On CUDA the stage timers
synchronise the device (so the stages are attributed, at the price of the overlap).

Once per config, the work done at every validation (``train.val_every`` steps) is timed too
and spread over its interval (new path): :func:`~relgraph.engine.trainer.validate` (the
config's ``train.val_episodes``, or ``--val-episodes`` of them scaled up; the checkpoint write
included),
``save_last`` and ``log`` (``metrics.csv`` and ``curves.png``). And the start: building the
datasets, decoding the npz files (old, ``cache=False``) or memory-mapping the decoded-image
cache (new, a warm cache).

Check: the old and new paths give identical episodes (asserted for every timed step).

Usage::

    python experiments/bench_pipeline.py                 # writes experiments/results/pipeline.md
    python experiments/bench_pipeline.py --configs omniglot_gnn_1shot --steps 10 --device cuda
    python experiments/bench_pipeline.py --configs omniglot_challenge_full_r12 --device cuda \
        --data .gpudata --steps 20 --val-episodes 20 --no-startup --out $OUT/pipeline_r12.md
    pip install --no-deps easyfsl==1.5.0   # then --peers adds easyfsl's TaskSampler + DataLoader

Overhead = (trainer step - model step) / model step; the issue's target is <= 10 %.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from relgraph.bench import machine_info  # noqa: E402
from relgraph.data.episode import Episode  # noqa: E402
from relgraph.data.resident import ResidentImages  # noqa: E402
from relgraph.engine import trainer  # noqa: E402
from relgraph.engine.config import load_config  # noqa: E402
from relgraph.engine.evaluate import autocast_context  # noqa: E402
from relgraph.utils import atomic_write_text  # noqa: E402

sys.path.insert(0, str(ROOT / "experiments"))
from common import training_cwd  # noqa: E402

CONFIGS = ["omniglot_protonet_1shot", "omniglot_relation_1shot", "omniglot_gnn_1shot",
           "omniglot_maml_1shot"]
STAGES = ["sample", "read", "assemble", "augment", "copy"]
BEGIN, END = "<!-- bench_pipeline:begin -->", "<!-- bench_pipeline:end -->"


class Timers:
    """Seconds spent in wrapped functions, per label (``old`` / ``new``) and stage."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.label: str | None = None
        self.spent: dict[str, float] = {}

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def wrap(self, stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            if self.label is None:
                return fn(*args, **kwargs)
            self.sync()
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.sync()
                self.spent[stage] = self.spent.get(stage, 0.0) + time.perf_counter() - start
        return timed

    @contextlib.contextmanager
    def measuring(self, label: str) -> Iterator[dict[str, float]]:
        self.label, self.spent = label, {}
        try:
            yield self.spent
        finally:
            self.label = None


def _median_ms(values: list[float]) -> float:
    return round(1000 * statistics.median(values), 3)


def _config(name: str, device: str) -> Any:
    path = ROOT / "experiments" / "configs" / f"{name}.yaml"
    return load_config(path).override({"train.device": device})


def startup(config: Any) -> dict[str, float]:
    """Seconds to build the datasets: decoding (no cache), then from a warm cache."""
    out = {}
    data = config.data
    with tempfile.TemporaryDirectory() as cache, _env("RELGRAPH_CACHE", cache):
        for what, options in (("decode", {"cache": False}), ("cache_cold", {}),
                              ("cache_warm", {})):
            conf = replace(data, options={**data.options, **options})
            start = time.perf_counter()
            trainer.build_datasets(conf)
            out[what] = round(time.perf_counter() - start, 3)
    return out


@contextlib.contextmanager
def _env(key: str, value: str) -> Iterator[None]:
    old = os.environ.get(key)
    os.environ[key] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


def bench_config(name: str, args: argparse.Namespace) -> dict[str, Any]:
    config = _config(name, args.device)
    t = config.train
    result: dict[str, Any] = {"config": name, "method": config.method,
                              "episode": f"{t.episodes_per_batch}x {t.ways}w{t.shots}s{t.queries}q"}
    if args.startup:
        result["startup_s"] = startup(config)
    with tempfile.TemporaryDirectory() as out:
        run_new = trainer.setup(config, out)
        if not isinstance(run_new.train_ds, ResidentImages):
            raise SystemExit(f"{name}: the training data are not held in memory; nothing to "
                             "compare")
        run_old = replace(run_new, train_ds=run_new.train_ds.dataset,
                          val_ds=getattr(run_new.val_ds, "dataset", run_new.val_ds))
        device = run_new.device
        state = trainer.build_state(run_new)
        runner = trainer.loss_runner(run_new, state.model)
        state.model.train()
        timers = Timers(device)
        n = args.warmup + args.steps
        prebuilt = [trainer.training_batch(run_new, i) for i in range(n)]

        def model_step(i: int) -> None:  # what the trainer does with an episode in hand
            with autocast_context(device, run_new.use_amp):
                loss, _ = runner(prebuilt[i])
            state.optimizer.zero_grad(set_to_none=True)
            state.scaler.scale(loss).backward()
            state.scaler.step(state.optimizer)
            state.scaler.update()
            state.scheduler.step()

        def trainer_step(run: trainer.TrainRun) -> Callable[[int], None]:
            def step(i: int) -> None:
                state.step = i
                trainer.train_step(run, state, runner)
            return step

        sampler = run_new.sampler
        saved = {"episode_indices": sampler.episode_indices, "make_episode": sampler.make_episode,
                 "warp": trainer._warp, "to": Episode.to}
        sampler.episode_indices = timers.wrap("sample", sampler.episode_indices)
        sampler.make_episode = timers.wrap("assemble", sampler.make_episode)
        trainer._warp = timers.wrap("augment", trainer._warp)
        Episode.to = timers.wrap("copy", Episode.to)
        for run in (run_old, run_new):
            run.train_ds.get_batch = timers.wrap("read", run.train_ds.get_batch)
        try:
            variants = {"model": model_step, "old": trainer_step(run_old),
                        "new": trainer_step(run_new)}
            times: dict[str, list[float]] = {k: [] for k in variants}
            stages: dict[str, dict[str, list[float]]] = {
                k: {s: [] for s in STAGES} for k in ("old", "new")}
            order = list(variants)
            for i in range(n):
                for j in range(len(order)):
                    label = order[(i + j) % len(order)]
                    with timers.measuring(label) as spent:
                        timers.sync()
                        start = time.perf_counter()
                        variants[label](i)
                        timers.sync()
                        took = time.perf_counter() - start
                    if i >= args.warmup:
                        times[label].append(took)
                        if label != "model":
                            for s in STAGES:
                                stages[label][s].append(spent.get(s, 0.0))
                # the two paths made the same episodes
                a, b = (trainer.training_batch(r, i) for r in (run_old, run_new))
                assert torch.equal(a.support, b.support) and torch.equal(a.query, b.query), i
        finally:
            sampler.episode_indices = saved["episode_indices"]
            sampler.make_episode = saved["make_episode"]
            trainer._warp = saved["warp"]
            Episode.to = saved["to"]
            for run in (run_old, run_new):
                vars(run.train_ds).pop("get_batch", None)
        model = _median_ms(times["model"])
        result["model_ms"] = model
        for label in ("old", "new"):
            step = _median_ms(times[label])
            parts = {s: _median_ms(v) for s, v in stages[label].items()}
            parts["rest"] = round(step - model - sum(parts.values()), 3)
            result[label] = {"step_ms": step, "stages_ms": parts,
                             "overhead_pct": round(100 * (step - model) / model, 1)}
        result.update(interval(run_new, state, args))
        for label in ("old", "new"):
            amortised = result[label]["step_ms"] + result["interval_ms_per_step"]
            result[label]["overhead_with_validation_pct"] = round(
                100 * (amortised - model) / model, 1)
    return result


def interval(run: Any, state: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Validation, save_last and log of one interval (new path), per training step."""
    t = run.config.train
    episodes = min(args.val_episodes or t.val_episodes, t.val_episodes)
    run = replace(run, config=run.config.override({"train.val_episodes": episodes}))
    trainer.write_config(run)
    row = trainer.end_interval(run, state, time.perf_counter())
    start = time.perf_counter()
    trainer.validate(run, state, row)
    val = (time.perf_counter() - start) * t.val_episodes / episodes
    start = time.perf_counter()
    trainer.save_last(run, state)
    trainer.log(run, state.history)
    save = time.perf_counter() - start
    state.model.train()
    return {"val_episodes_timed": episodes, "val_episodes": t.val_episodes,
            "val_every": t.val_every, "validate_s": round(val, 3),
            "save_log_s": round(save, 3),
            "interval_ms_per_step": round(1000 * (val + save) / t.val_every, 3)}


def _stages_pct(r: dict[str, Any], label: str) -> float:
    """The pipeline's stages (measured directly) as a percentage of the model step."""
    parts = r[label]["stages_ms"]
    return 100 * sum(parts[k] for k in STAGES) / r["model_ms"]


def _row(r: dict[str, Any]) -> str:
    o, n = r["old"], r["new"]
    return (f"| {r['method']} | {r['episode']} | {r['model_ms']:.1f} | {o['step_ms']:.1f} | "
            f"{n['step_ms']:.1f} | {o['overhead_pct']:+.1f} % | {n['overhead_pct']:+.1f} % | "
            f"{_stages_pct(r, 'old'):.2f} % | {_stages_pct(r, 'new'):.2f} % | "
            f"{sum(o['stages_ms'][k] for k in STAGES) / sum(n['stages_ms'][k] for k in STAGES):.2f}"
            f" | {100 * r['interval_ms_per_step'] / r['model_ms']:.1f} % |")


def _stage_row(r: dict[str, Any], label: str) -> str:
    s = r[label]["stages_ms"]
    return (f"| {r['method']} | {label} | " + " | ".join(f"{s[k]:.2f}" for k in STAGES)
            + f" | {s['rest']:+.2f} |")


def report(results: list[dict[str, Any]], header: str,
           peer_rows: list[dict[str, Any]] | None = None) -> str:
    lines = [header, "",
             "| method | episodes per step | model step (ms) | trainer step, old (ms) | "
             "trainer step, new (ms) | overhead old | overhead new | pipeline old | "
             "pipeline new | pipeline old / new | validation + logs |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [_row(r) for r in results]
    lines += ["", "*overhead* = (trainer step - model step) / model step, medians (on a loaded "
              "machine its noise is several %); *pipeline* = the stages below (sample + read + "
              "assemble + augment + copy, each timed inside the trainer step) / model step; "
              "*pipeline old / new* = the ratio of those stage times; *validation + logs* = "
              "validate + save_last + log, every `val_every` steps, spread over them, / model "
              "step."]
    lines += ["", "Where the trainer step's extra time goes (medians, ms per step; *rest* = "
              "trainer step - model step - the stages, mostly noise):", "",
              "| method | path | sample | read | assemble | augment | copy | rest |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
    lines += [_stage_row(r, label) for r in results for label in ("old", "new")]
    if peer_rows:
        lines += ["", "Making one training batch (data only, no model; medians, ms): easyfsl "
                  "1.5.0's `TaskSampler` + `DataLoader` with its `episodic_collate_fn` (one "
                  "`__getitem__` per image) over the same in-memory training images, and "
                  "relgraph's two paths:", "",
                  "| method | episode | easyfsl | relgraph old | relgraph new | easyfsl / new |",
                  "|---|---|---:|---:|---:|---:|"]
        lines += [f"| {r['method']} | {r['episode']} | {r['easyfsl_ms']:.2f} | "
                  f"{r['old_ms']:.2f} | {r['new_ms']:.2f} | "
                  f"{r['easyfsl_ms'] / r['new_ms']:.1f} |" for r in peer_rows]
    starts = [r for r in results if "startup_s" in r]
    if starts:
        s = starts[0]["startup_s"]
        lines += ["", f"Start (building the training and validation datasets, "
                  f"{starts[0]['config']}): decoding the npz files {s['decode']:.2f} s, "
                  f"first run with the cache (decode + write) {s['cache_cold']:.2f} s, from the "
                  f"warm cache {s['cache_warm']:.3f} s ({s['decode'] / s['cache_warm']:.0f}x)."]
    lines += ["", "Every `val_every` steps (the same for both paths; *+ validation* above spreads "
              "it over the interval): " + "; ".join(
                  f"{r['method']}: validate {r['validate_s']:.1f} s ({r['val_episodes']} "
                  "episodes" + (f", timed on {r['val_episodes_timed']} and scaled"
                                if r['val_episodes_timed'] != r['val_episodes'] else "")
                  + f"), save_last + log {r['save_log_s']:.2f} s, every {r['val_every']} steps "
                  f"= {r['interval_ms_per_step']:.1f} ms per step" for r in results) + "."]
    return "\n".join(lines)


def write(out: Path, table: str, saved: dict[str, Any]) -> None:
    """Put ``table`` between the markers of ``out`` (kept text around them) and the run in
    ``out`` with suffix ``.json``."""
    body = f"{BEGIN}\n{table}\n{END}"
    text = (out.read_text() if out.is_file()
            else f"# Data pipeline: trainer step vs model step\n\n{BEGIN}\n{END}\n")
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN)] + body + text[text.index(END) + len(END):]
    else:
        text = text.rstrip() + "\n\n" + body + "\n"
    atomic_write_text(out, text)
    atomic_write_text(out.with_suffix(".json"), json.dumps(saved, indent=1))


class _Items(torch.utils.data.Dataset):
    """A relgraph dataset as easyfsl reads one: ``(image, label)`` per item, ``get_labels``."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.dataset[i]

    def get_labels(self) -> list[int]:
        return self.dataset.targets.tolist()


def easyfsl_task_sampler() -> Any:
    """easyfsl's ``TaskSampler`` class (``pip install --no-deps easyfsl==1.5.0``), loaded with
    a stand-in for ``easyfsl.datasets`` (whose other modules import torchvision; the sampler
    only needs the name ``FewShotDataset``) and, on torch versions whose ``Sampler`` takes no
    ``data_source``, a base class that accepts the one it passes. ``None`` when easyfsl is not
    installed."""
    import importlib.util
    import types

    spec = importlib.util.find_spec("easyfsl")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "samplers" / "task_sampler.py"
    stub = types.ModuleType("easyfsl.datasets")
    stub.FewShotDataset = torch.utils.data.Dataset  # type: ignore[attr-defined]
    saved = sys.modules.get("easyfsl.datasets")
    sys.modules["easyfsl.datasets"] = stub
    try:
        module_spec = importlib.util.spec_from_file_location("_easyfsl_task_sampler", path)
        module = importlib.util.module_from_spec(module_spec)  # type: ignore[arg-type]
        module_spec.loader.exec_module(module)  # type: ignore[union-attr]
    finally:
        if saved is None:
            sys.modules.pop("easyfsl.datasets", None)
        else:
            sys.modules["easyfsl.datasets"] = saved
    sampler = module.TaskSampler
    try:
        torch.utils.data.Sampler(data_source=None)  # type: ignore[call-arg]
    except TypeError:
        # easyfsl 1.5.0 calls Sampler.__init__(data_source=None), an argument newer torch
        # versions dropped: give it a base that accepts it (and ignores it, as torch did)
        class _Sampler(torch.utils.data.Sampler):
            def __init__(self, data_source: Any = None) -> None:
                pass

        sampler.__bases__ = (_Sampler,)
    return sampler


def peers(names: list[str], steps: int, warmup: int) -> list[dict[str, Any]]:
    """Milliseconds to make one training batch of each config (one episode per batch):
    easyfsl's ``TaskSampler`` and ``DataLoader`` (``episodic_collate_fn``, one ``__getitem__``
    per image) over the same in-memory training images, relgraph's old path and its new path;
    interleaved medians. Empty when easyfsl is not installed."""
    task_sampler = easyfsl_task_sampler()
    if task_sampler is None:
        return []
    return [_peer_row(name, task_sampler, steps, warmup) for name in names
            if _config(name, "cpu").train.episodes_per_batch == 1]


def _peer_row(name: str, task_sampler: Any, steps: int, warmup: int) -> dict[str, Any]:
    config = _config(name, "cpu")
    t = config.train
    with tempfile.TemporaryDirectory() as tmp:
        run = trainer.setup(config, tmp)
    new, old = run.train_ds, getattr(run.train_ds, "dataset", run.train_ds)
    task = task_sampler(_Items(old), t.ways, t.shots, t.queries, n_tasks=10**9)
    loader = iter(torch.utils.data.DataLoader(_Items(old), batch_sampler=task,
                                              collate_fn=task.episodic_collate_fn))
    fns: dict[str, Callable[[int], Any]] = {
        "easyfsl": lambda i: next(loader),
        "old": lambda i: run.sampler.episode_batch(old, i),
        "new": lambda i: run.sampler.episode_batch(new, i)}
    times: dict[str, list[float]] = {k: [] for k in fns}
    for i in range(warmup + steps):
        for label, fn in fns.items():
            start = time.perf_counter()
            fn(i)
            if i >= warmup:
                times[label].append(time.perf_counter() - start)
    return {"config": name, "method": config.method, "episode": f"{t.ways}w{t.shots}s{t.queries}q",
            **{f"{k}_ms": _median_ms(v) for k, v in times.items()}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", nargs="+", default=CONFIGS,
                   help="config names in experiments/configs (without .yaml)")
    p.add_argument("--steps", type=int, default=30, help="timed steps per variant")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--val-episodes", type=int, default=None,
                   help="validation episodes timed, scaled to the config's (default: all)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--peers", nargs="*", default=None, metavar="CONFIG",
                   help="also time making one batch with easyfsl's TaskSampler + DataLoader "
                   "for these configs (default with --peers alone: protonet, matching, "
                   "relation 1-shot; needs easyfsl installed)")
    p.add_argument("--no-startup", dest="startup", action="store_false",
                   help="skip timing the dataset build")
    p.add_argument("--out", default=str(ROOT / "experiments" / "results" / "pipeline.md"))
    p.add_argument("--data", metavar="DIR",
                   help="the shared data folder holding omniglot/ when it is not ../shared/data "
                        "beside the project (e.g. a lent GPU's .gpudata)")
    p.add_argument("--report", metavar="JSON",
                   help="only write the report of a saved run (its pipeline.json)")
    args = p.parse_args(argv)
    args.out = str(Path(args.out).resolve())
    if args.report:
        saved = json.loads(Path(args.report).read_text())
        write(Path(args.out), report(saved["results"], saved["header"],
                                     saved.get("peers", [])), saved)
        return 0
    torch.set_num_threads(args.threads)
    # the configs' data paths (../shared/data/...) are relative to the project root, or to a
    # folder beside a link to --data
    os.chdir(training_cwd(Path(args.data).resolve()) if args.data else ROOT)
    load = os.getloadavg()
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    results = []
    for i, name in enumerate(args.configs):
        args.startup = args.startup and i == 0
        r = bench_config(name, args)
        print(json.dumps(r), flush=True)
        results.append(r)
    peer_rows = []
    if args.peers is not None:
        peer_rows = peers(args.peers or [f"omniglot_{m}_1shot" for m in
                                         ("protonet", "matching", "relation")],
                          max(args.steps, 50), args.warmup)
        if not peer_rows:
            print("easyfsl is not installed: no peer rows (pip install --no-deps "
                  "easyfsl==1.5.0)", file=sys.stderr)
    end = os.getloadavg()
    command = "python experiments/bench_pipeline.py " + " ".join(sys.argv[1:] if argv is None
                                                                  else argv)
    header = (f"Run: `{command.strip()}`, {started}; {machine_info()}; device {args.device}; "
              f"load average (1, 5, 15 min) at start {' '.join(f'{x:.2f}' for x in load)}, at "
              f"end {' '.join(f'{x:.2f}' for x in end)}; {args.steps} timed steps after "
              f"{args.warmup} warm-up, interleaved (model / old / new, order rotating).")
    saved = {"command": command, "started": started, "machine": machine_info(),
             "device": args.device, "load": [load, end], "header": header, "results": results,
             "peers": peer_rows}
    table = report(results, header, peer_rows)
    print(table)
    write(Path(args.out), table, saved)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
