"""Speed and memory of a method on random episodes: the ``relgraph bench`` command.

:func:`benchmark` times one configuration (episodes per second for a training step and for
evaluation, medians over repeated steps, and peak memory); :func:`sweep` repeats it from 5-way
up to 50-way and fits how the cost grows with the number of nodes of the episode graph,
``n = ways * (shots + queries)``.

The relational part of a method (everything after the backbone) is not timed on its own, since
methods have no common hook for it. It is *estimated* as the full step minus the backbone alone
embedding the same images (``relational_* = full - backbone``): an estimate, noisy when the
backbone dominates.
"""

from __future__ import annotations

import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from relgraph.data.episode import Episode

__all__ = ["benchmark", "sweep", "random_episode", "fit_exponent", "format_table",
           "format_sweep"]

RELATIONAL_NOTE = ("relational_* is an estimate: the full step minus the backbone alone on the "
                   "same images (not measured directly)")


def random_episode(ways: int, shots: int, queries: int, batch: int = 1, channels: int = 1,
                   image_size: int = 28, seed: int = 0) -> Episode:
    """A batch of ``batch`` episodes of seeded random images, ordered class by class.

    Shapes:
        support ``[batch, ways*shots, channels, s, s]``, query ``[batch, ways*queries, ...]``.
    """
    for name, value in (("ways", ways), ("shots", shots), ("queries", queries),
                        ("batch", batch), ("channels", channels), ("image_size", image_size)):
        if value < 1:
            raise ValueError(f"expected {name} >= 1, got {value}")
    g = torch.Generator().manual_seed(seed)
    x = (channels, image_size, image_size)
    support = torch.rand(batch, ways * shots, *x, generator=g)
    query = torch.rand(batch, ways * queries, *x, generator=g)
    support_labels = torch.arange(ways).repeat_interleave(shots).expand(batch, -1).contiguous()
    query_labels = torch.arange(ways).repeat_interleave(queries).expand(batch, -1).contiguous()
    class_ids = torch.arange(ways).expand(batch, -1).contiguous()
    return Episode(support, support_labels, query, query_labels, class_ids, ways, shots)


def _build(method: str, backbone: str, channels: int, image_size: int,
           method_args: dict[str, Any] | None, backbone_args: dict[str, Any] | None,
           seed: int) -> nn.Module:
    from relgraph.backbones import build_backbone
    from relgraph.methods import build_method

    kwargs = {"in_channels": channels, "image_size": image_size, **(backbone_args or {})}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_backbone(backbone, **kwargs)
        return build_method(method, net, **(method_args or {}))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_ms(times: list[float]) -> float:
    return 1000.0 * statistics.median(times)


def _steps(model: nn.Module, episode: Episode) -> dict[str, Callable[[], None]]:
    """The four timed closures: full / backbone-only, train / eval."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    backbone: nn.Module = model.backbone  # type: ignore[assignment]
    bopt = torch.optim.Adam(backbone.parameters(), lr=1e-3)

    def embed(x: torch.Tensor) -> torch.Tensor:
        return backbone(x.flatten(0, 1))

    def train_full() -> None:
        model.train()
        loss, _ = model.loss(episode)  # type: ignore[operator]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def train_backbone() -> None:
        model.train()
        loss = embed(episode.support).float().mean() + embed(episode.query).float().mean()
        bopt.zero_grad(set_to_none=True)
        loss.backward()
        bopt.step()

    def eval_full() -> None:
        model.eval()
        with torch.no_grad():
            model(episode)

    def eval_backbone() -> None:
        model.eval()
        with torch.no_grad():
            embed(episode.support)
            embed(episode.query)

    return {"train": train_full, "train_backbone": train_backbone, "eval": eval_full,
            "eval_backbone": eval_backbone}


def _time_interleaved(fns: dict[str, Callable[[], None]], steps: int, warmup: int,
                      device: torch.device) -> dict[str, float]:
    """Median milliseconds per call of each closure, calling them in turn (A/B interleaving)."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for i in range(warmup + steps):
        for name, fn in fns.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return {k: _median_ms(v) for k, v in times.items()}


def _proc_status_mb(field: str) -> float | None:
    """``VmRSS`` / ``VmHWM`` of this process in MiB from ``/proc/self/status`` (Linux)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset this process's peak RSS to its current RSS (Linux ``clear_refs``); ``False`` if
    unavailable."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
    except OSError:
        return False
    return _proc_status_mb("VmHWM") is not None


def _max_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    return kb / (1024.0 * 1024.0) if sys.platform == "darwin" else kb / 1024.0


def _memory_child(cfg: dict[str, Any]) -> dict[str, float]:
    """Peak RSS increase (MiB) of one eval and then one training step, in this fresh process.

    The baseline is the resident set after the model, optimisers and episode exist. On Linux
    the peak is ``VmHWM``, reset to the current RSS (``/proc/self/clear_refs``) before each
    measurement, so the training peak is not hidden by the eval one and nothing inherited from
    the parent process counts. Elsewhere ``ru_maxrss`` is used (which can hide an increase
    below the process's earlier peak, e.g. from importing torch).
    """
    torch.set_num_threads(cfg["threads"])
    model = _build(cfg["method"], cfg["backbone"], cfg["channels"], cfg["image_size"],
                   cfg["method_args"], cfg["backbone_args"], cfg["seed"])
    episode = random_episode(cfg["ways"], cfg["shots"], cfg["queries"], cfg["batch"],
                             cfg["channels"], cfg["image_size"], cfg["seed"])
    fns = _steps(model, episode)
    out = {}
    if _reset_peak_rss():
        base = _proc_status_mb("VmRSS") or 0.0
        for name in ("eval", "train"):
            _reset_peak_rss()
            fns[name]()
            out[name] = (_proc_status_mb("VmHWM") or 0.0) - base
        out["baseline"] = base
        return out
    base = _max_rss_mb()
    for name in ("eval", "train"):
        fns[name]()
        out[name] = _max_rss_mb() - base
    out["baseline"] = base
    return out


def _memory_cpu(cfg: dict[str, Any]) -> dict[str, float]:
    code = ("import json, sys; from relgraph.bench import _memory_child; "
            "print(json.dumps(_memory_child(json.loads(sys.argv[1]))))")
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(cfg)], capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"memory measurement failed:\n{proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _memory_cuda(fns: dict[str, Callable[[], None]], device: torch.device) -> dict[str, float]:
    out = {}
    for name in ("eval", "train"):
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fns[name]()
        _sync(device)
        out[name] = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    return out


def benchmark(
    method: str,
    ways: int = 5,
    shots: int = 1,
    queries: int = 15,
    batch: int = 1,
    device: str | torch.device = "cpu",
    image_size: int = 28,
    steps: int = 10,
    warmup: int = 2,
    backbone: str = "conv4",
    channels: int = 1,
    method_args: dict[str, Any] | None = None,
    backbone_args: dict[str, Any] | None = None,
    memory: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """Time a training step and an evaluation pass of ``method`` on random episodes.

    A training step is ``model.train()``, ``method.loss``, backward and an Adam step on a batch
    of ``batch`` episodes; evaluation is ``model.eval()`` and a forward pass under
    :func:`torch.no_grad`. Each is repeated ``steps`` times after ``warmup`` untimed calls,
    interleaved with the backbone alone on the same images, and the median time is reported.

    Peak memory is the increase over the state after building the model: on CPU the peak
    resident set size (``VmHWM`` on Linux) of a fresh subprocess running one eval and then one
    training step; on CUDA :func:`torch.cuda.max_memory_allocated`.

    Args:
        method: registered method name, e.g. ``"protonet"``.
        ways: classes per episode. Default ``5``.
        shots: support examples per class. Default ``1``.
        queries: queries per class. Default ``15``.
        batch: episodes per step. Default ``1``.
        device: ``"cpu"``, ``"cuda"`` or a :class:`torch.device`. Default ``"cpu"``.
        image_size: side of the random square images. Default ``28``.
        steps: timed repeats of each measurement. Default ``10``.
        warmup: untimed calls before timing. Default ``2``.
        backbone: registered backbone name. Default ``"conv4"``.
        channels: image channels. Default ``1``.
        method_args: keyword arguments of the method.
        backbone_args: keyword arguments of the backbone (beside ``in_channels`` and
            ``image_size``).
        memory: measure peak memory (a subprocess on CPU). Default ``True``.
        seed: seed of the weights and the images. Default ``0``.

    Returns:
        A dict with the configuration (``method``, ``ways``, ``shots``, ``queries``, ``batch``,
        ``nodes`` = ``ways * (shots + queries)``, ``device``, ``threads``, ``torch``, ...) and
        ``train_ms`` / ``eval_ms`` (median per step), ``train_eps`` / ``eval_eps`` (episodes per
        second), ``backbone_train_ms`` / ``backbone_eval_ms``, ``relational_train_ms`` /
        ``relational_eval_ms`` (estimates, see ``relational_note``), ``train_peak_mb`` /
        ``eval_peak_mb`` (``None`` without ``memory``) and ``memory_note``.
    """
    if steps < 1 or warmup < 0:
        raise ValueError(f"expected steps >= 1 and warmup >= 0, got {steps} and {warmup}")
    device = torch.device(device)
    model = _build(method, backbone, channels, image_size, method_args, backbone_args, seed)
    model.to(device)
    episode = random_episode(ways, shots, queries, batch, channels, image_size, seed).to(device)
    fns = _steps(model, episode)
    ms = _time_interleaved(fns, steps, warmup, device)

    peak: dict[str, float | None] = {"train": None, "eval": None}
    note = "not measured"
    if memory:
        if device.type == "cuda":
            peak.update(_memory_cuda(fns, device))
            note = "CUDA max_memory_allocated increase over the model's state"
        else:
            cfg = {"method": method, "backbone": backbone, "channels": channels,
                   "image_size": image_size, "method_args": method_args,
                   "backbone_args": backbone_args, "seed": seed, "ways": ways, "shots": shots,
                   "queries": queries, "batch": batch, "threads": torch.get_num_threads()}
            child = _memory_cpu(cfg)
            peak.update(train=child["train"], eval=child["eval"])
            note = ("CPU peak RSS increase over the built model in a fresh subprocess "
                    "(VmHWM on Linux, else ru_maxrss): one eval, then one training step")

    return {
        "method": method, "backbone": backbone, "ways": ways, "shots": shots, "queries": queries,
        "batch": batch, "nodes": ways * (shots + queries), "image_size": image_size,
        "channels": channels, "device": str(device), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "steps": steps, "warmup": warmup,
        "train_ms": ms["train"], "eval_ms": ms["eval"],
        "train_eps": 1000.0 * batch / ms["train"], "eval_eps": 1000.0 * batch / ms["eval"],
        "backbone_train_ms": ms["train_backbone"], "backbone_eval_ms": ms["eval_backbone"],
        "relational_train_ms": ms["train"] - ms["train_backbone"],
        "relational_eval_ms": ms["eval"] - ms["eval_backbone"],
        "relational_note": RELATIONAL_NOTE,
        "train_peak_mb": peak["train"], "eval_peak_mb": peak["eval"], "memory_note": note,
    }


def fit_exponent(n: Sequence[float], t: Sequence[float]) -> float:
    """Least-squares slope of ``log t`` against ``log n``: ``t ~ n ** exponent``.

    ``nan`` when fewer than two points or any value is not positive.
    """
    if len(n) != len(t):
        raise ValueError(f"expected as many times as sizes, got {len(t)} and {len(n)}")
    if len(n) < 2 or min(n) <= 0 or min(t) <= 0:
        return math.nan
    x = [math.log(v) for v in n]
    y = [math.log(v) for v in t]
    mx, my = sum(x) / len(x), sum(y) / len(y)
    sxx = sum((a - mx) ** 2 for a in x)
    if sxx == 0:
        return math.nan
    return sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True)) / sxx


def sweep(
    method: str,
    ways: Sequence[int] = (5, 10, 20, 30, 50),
    shots: int = 1,
    queries: int = 15,
    batch: int = 1,
    **kwargs: Any,
) -> dict[str, Any]:
    """:func:`benchmark` at each number of ways, and how the cost grows with the graph size.

    The exponents are least-squares slopes of log time against log ``n``, the number of nodes
    ``ways * (shots + queries)`` (:func:`fit_exponent`): about 1 when the per-node backbone
    dominates, towards 2 for dense pairwise relational modules.

    Args:
        method: registered method name.
        ways: the numbers of ways. Default ``(5, 10, 20, 30, 50)``.
        shots: support examples per class. Default ``1``.
        queries: queries per class. Default ``15``.
        batch: episodes per step. Default ``1``.
        **kwargs: passed on to :func:`benchmark`.

    Returns:
        A dict: ``rows`` (the :func:`benchmark` results), ``exponent_train``,
        ``exponent_eval``, ``exponent_relational_train`` and ``exponent_relational_eval``
        (``nan`` where a relational estimate is not positive).
    """
    rows = [benchmark(method, w, shots, queries, batch, **kwargs) for w in ways]
    n = [r["nodes"] for r in rows]
    return {
        "rows": rows,
        "exponent_train": fit_exponent(n, [r["train_ms"] for r in rows]),
        "exponent_eval": fit_exponent(n, [r["eval_ms"] for r in rows]),
        "exponent_relational_train": fit_exponent(n, [r["relational_train_ms"] for r in rows]),
        "exponent_relational_eval": fit_exponent(n, [r["relational_eval_ms"] for r in rows]),
    }


def _mb(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1f}"


def machine_info() -> str:
    """One line: CPU cores, torch threads, torch version, platform."""
    return (f"{os.cpu_count()} cores, torch {torch.__version__} with "
            f"{torch.get_num_threads()} threads, Python {platform.python_version()}, "
            f"{platform.system()} {platform.machine()}")


def format_table(r: dict[str, Any]) -> str:
    """A readable table of one :func:`benchmark` result."""
    head = (f"{r['method']} on {r['backbone']}: {r['ways']}-way {r['shots']}-shot "
            f"{r['queries']} queries, {r['batch']} episode(s) per step, {r['nodes']} nodes, "
            f"{r['image_size']}px, {r['device']}, {r['threads']} threads, median of "
            f"{r['steps']} steps")
    lines = [head, "",
             f"{'':<12}{'episodes/s':>12}{'ms/step':>10}{'backbone ms':>13}"
             f"{'relational ms*':>16}{'peak MiB':>10}"]
    for k in ("train", "eval"):
        lines.append(f"{k:<12}{r[f'{k}_eps']:>12.2f}{r[f'{k}_ms']:>10.2f}"
                     f"{r[f'backbone_{k}_ms']:>13.2f}{r[f'relational_{k}_ms']:>16.2f}"
                     f"{_mb(r[f'{k}_peak_mb']):>10}")
    lines += ["", f"* {r['relational_note']}", f"peak memory: {r['memory_note']}"]
    return "\n".join(lines)


def format_sweep(s: dict[str, Any]) -> str:
    """A readable table of a :func:`sweep` result."""
    r0 = s["rows"][0]
    lines = [f"{r0['method']} on {r0['backbone']}: {r0['shots']}-shot {r0['queries']} queries, "
             f"{r0['batch']} episode(s) per step, {r0['image_size']}px, {r0['device']}, "
             f"{r0['threads']} threads", "",
             f"{'ways':>5}{'nodes':>7}{'train ep/s':>12}{'train ms':>10}{'rel ms*':>9}"
             f"{'eval ep/s':>11}{'eval ms':>9}{'rel ms*':>9}{'train MiB':>11}"]
    for r in s["rows"]:
        lines.append(f"{r['ways']:>5}{r['nodes']:>7}{r['train_eps']:>12.2f}"
                     f"{r['train_ms']:>10.2f}{r['relational_train_ms']:>9.2f}"
                     f"{r['eval_eps']:>11.2f}{r['eval_ms']:>9.2f}"
                     f"{r['relational_eval_ms']:>9.2f}{_mb(r['train_peak_mb']):>11}")
    lines += ["", "time ~ nodes^k (log-log fit): "
              f"train k={s['exponent_train']:.2f}, eval k={s['exponent_eval']:.2f}, "
              f"relational train k={s['exponent_relational_train']:.2f}, "
              f"relational eval k={s['exponent_relational_eval']:.2f}",
              f"* {r0['relational_note']}"]
    return "\n".join(lines)
