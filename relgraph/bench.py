"""Speed and memory of a method on random episodes: the ``relgraph bench`` command.

:func:`benchmark` times one configuration (episodes per second for a training step and for
evaluation, medians over repeated steps, and peak memory); :func:`sweep` repeats it from 5-way
up to 50-way and fits how the cost grows with the number of nodes of the episode graph,
``n = ways * (shots + queries)``.

For the relational heads (:class:`~relgraph.methods.head.RelationalHead`: every metric and
graph method) the step is split at the head's seam and both parts are **measured**, each on its
own:

- *backbone*: :meth:`~relgraph.methods.head.RelationalHead.embed_episode` on the episode's
  images (in training, + the backward of a gradient of the embeddings and an Adam step of the
  backbone);
- *relational*: :meth:`~relgraph.methods.head.RelationalHead.build_graph` and
  :meth:`~relgraph.methods.head.RelationalHead.relate_loss` on precomputed embeddings (detached
  tensors with ``requires_grad=True``, so the backward into the embeddings is included), the
  backward and an Adam step of the head; in evaluation
  :meth:`~relgraph.methods.head.RelationalHead.relate` under :func:`torch.no_grad`.

Methods that adapt their backbone by gradient steps (MAML, fine-tuning, ...) have no such seam:
for them the relational part is still *estimated* as the full step minus the backbone alone
(``relational_measured: false``). With ``features=d`` only the head is timed, on one graph of
random ``d``-dimensional features (no backbone at all).
"""

from __future__ import annotations

import contextlib
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
from relgraph.engine.evaluate import method_amp

__all__ = ["benchmark", "sweep", "random_episode", "random_features", "fit_exponent",
           "format_table", "format_sweep"]

#: ``relational_note`` of the methods without a head seam (gradient-based methods).
RELATIONAL_NOTE = ("relational_* is an estimate: the full step minus the backbone alone on the "
                   "same images (not measured directly; this method has no relational head)")
#: ``relational_note`` of the relational heads, measured on their own.
RELATIONAL_MEASURED_NOTE = (
    "relational_* measured on its own: build_graph + relate_loss + backward + Adam step of the "
    "head on precomputed embeddings (requires_grad, so the backward into them counts); eval: "
    "relate under no_grad. backbone_*: embed_episode (+ backward of a gradient of the "
    "embeddings + Adam step of the backbone)")
#: ``relational_note`` of the head-only mode (``features=d``).
FEATURES_NOTE = ("head only, on random features (no backbone): train = build_graph + "
                 "relate_loss + backward (into the features too) + Adam step of the head; eval = "
                 "relate under no_grad")


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


def random_features(ways: int, shots: int, queries: int, dim: int, batch: int = 1,
                    seed: int = 0) -> Episode:
    """A batch of ``batch`` episodes of seeded standard-normal ``dim``-dimensional features,
    ordered class by class (the input of a head without a backbone).

    Shapes:
        support ``[batch, ways*shots, dim]``, query ``[batch, ways*queries, dim]``.
    """
    if dim < 1:
        raise ValueError(f"expected features (the feature size) >= 1, got {dim}")
    e = random_episode(ways, shots, queries, batch, 1, 1, seed)
    g = torch.Generator().manual_seed(seed)
    support = torch.randn(batch, ways * shots, dim, generator=g)
    query = torch.randn(batch, ways * queries, dim, generator=g)
    return Episode(support, e.support_labels, query, e.query_labels, e.class_ids, ways, shots)


def _is_head(model: nn.Module) -> bool:
    from relgraph.methods.head import RelationalHead

    return isinstance(model, RelationalHead)


def _build(method: str, backbone: str, channels: int, image_size: int,
           method_args: dict[str, Any] | None, backbone_args: dict[str, Any] | None,
           seed: int, features: int | None = None, num_classes: int | None = None
           ) -> nn.Module:
    from relgraph.backbones import BACKBONES, FeatureInput, build_backbone
    from relgraph.methods import build_method
    from relgraph.registry import accepted_keywords

    if not features:
        accepted = accepted_keywords(BACKBONES.get(backbone))
        if accepted is not None and not {"in_channels", "image_size"} <= accepted:
            raise ValueError(f"bench times backbones on random images (conv4, resnet12, ...); "
                             f"{backbone!r} reads other inputs: time its relational head on "
                             "features instead (--features D)")
    kwargs = {"in_channels": channels, "image_size": image_size, **(backbone_args or {})}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = FeatureInput(features) if features else build_backbone(backbone, **kwargs)
        # methods with a classifier over all training classes (baseline, finetune, mtl) get
        # the episode's way count as that number, unless method_args give one
        model = build_method(method, net, **{"num_classes": num_classes, **(method_args or {})})
    if features and not _is_head(model):
        raise ValueError(f"features (the head-only mode) needs a relational head; {method!r} "
                         "adapts its backbone by gradient steps and has none")
    return model


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_ms(times: list[float]) -> float:
    return 1000.0 * statistics.median(times)


def _adam(params: list[nn.Parameter]) -> torch.optim.Optimizer | None:
    return torch.optim.Adam(params, lr=1e-3) if params else None


def _step(loss: torch.Tensor, opt: torch.optim.Optimizer | None) -> None:
    if opt is not None:
        opt.zero_grad(set_to_none=True)
    loss.backward()
    if opt is not None:
        opt.step()


def _head_loss(model: Any, support: torch.Tensor, query: torch.Tensor,
               episode: Episode) -> torch.Tensor:
    """What :meth:`RelationalHead.loss` computes after the backbone: the hallucinator's loss
    (with ``augment``), :meth:`build_graph` and :meth:`relate_loss`."""
    aux = None
    if model.support_generator is not None:
        aux = model.support_generator.loss(support, episode.support_labels, query,
                                           episode.query_labels)
    graph = model.build_graph(support, episode.support_labels, query, episode.n_way)
    loss, _ = model.relate_loss(graph, episode.query_labels)
    return loss if aux is None else loss + aux


AMP_DTYPES = ("bfloat16", "float16")


def _forward_context(episode: Episode, amp: str | None) -> Callable[[], Any]:
    """A context factory for the forward passes: autocast in ``amp`` on the episode's device
    (backward passes and optimiser steps run outside it, as in the trainer), or none."""
    if amp is None:
        return contextlib.nullcontext
    kind, dtype = episode.support.device.type, getattr(torch, amp)
    return lambda: torch.autocast(kind, dtype=dtype)


def _relational_steps(model: Any, episode: Episode, support: dict[str, torch.Tensor],
                      query: dict[str, torch.Tensor], amp: str | None = None
                      ) -> dict[str, Callable[[], None]]:
    """The head's closures on precomputed embeddings (``support[mode]``, ``query[mode]`` for
    ``mode`` in ``train`` / ``eval``), forward passes under autocast in ``amp``."""
    head_params = [p for name, p in model.named_parameters() if not name.startswith("backbone.")]
    hopt = _adam(head_params)
    forward = _forward_context(episode, amp)

    def train_relational() -> None:
        model.train()
        s = support["train"].detach().requires_grad_(True)
        q = query["train"].detach().requires_grad_(True)
        with forward():
            loss = _head_loss(model, s, q, episode)
        _step(loss, hopt)

    def eval_relational() -> None:
        model.eval()
        with torch.no_grad(), forward():
            model.relate(model.build_graph(support["eval"], episode.support_labels,
                                           query["eval"], episode.n_way))

    return {"train_relational": train_relational, "eval_relational": eval_relational}


def _steps(model: nn.Module, episode: Episode, features: bool = False, amp: str | None = None
           ) -> dict[str, Callable[[], None]]:
    """The timed closures: ``train`` / ``eval`` (the full step), ``*_backbone`` and, for heads,
    ``*_relational``. With ``features`` (the episode holds features): the head's closures only,
    as ``train`` / ``eval``. With ``amp``: forward passes under autocast in that dtype."""
    head = _is_head(model)
    if features:
        rel = _relational_steps(model, episode, {"train": episode.support, "eval": episode.support},
                                {"train": episode.query, "eval": episode.query}, amp)
        return {"train": rel["train_relational"], "eval": rel["eval_relational"]}
    amp = method_amp(model, episode.support.device, amp or False) or None  # as training does
    forward = _forward_context(episode, amp)

    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    backbone: nn.Module = model.backbone  # type: ignore[assignment]
    bopt = _adam(list(backbone.parameters()))

    def embed_pair() -> tuple[torch.Tensor, torch.Tensor]:
        if head:  # the head's only backbone call, as its loss and forward make it
            return model.embed_episode(episode)  # type: ignore[operator]
        return (backbone(episode.support.flatten(0, 1)).float(),
                backbone(episode.query.flatten(0, 1)).float())

    def train_full() -> None:
        model.train()
        with forward():
            loss, _ = model.loss(episode)  # type: ignore[operator]
        _step(loss, opt)

    grads: list[torch.Tensor] = []

    def train_backbone() -> None:
        model.train()
        with forward():
            z = embed_pair()
        if not grads:  # a fixed gradient of the embeddings, as the head would send back
            g = torch.Generator().manual_seed(0)
            grads.extend(torch.randn(t.shape, generator=g).to(t) / t.numel() for t in z)
        if bopt is not None:
            bopt.zero_grad(set_to_none=True)
        if any(t.requires_grad for t in z):  # a frozen backbone (MTL's) has no backward
            torch.autograd.backward(z, grads)
        if bopt is not None:
            bopt.step()

    def eval_full() -> None:
        model.eval()
        with torch.no_grad(), forward():
            model(episode)

    def eval_backbone() -> None:
        model.eval()
        with torch.no_grad(), forward():
            embed_pair()

    fns = {"train": train_full, "train_backbone": train_backbone, "eval": eval_full,
           "eval_backbone": eval_backbone}
    if head:
        support, query = {}, {}
        with torch.no_grad(), forward():
            for mode in ("train", "eval"):
                model.train(mode == "train")
                support[mode], query[mode] = model.embed_episode(episode)  # type: ignore[operator]
        fns.update(_relational_steps(model, episode, support, query, amp))
    return fns


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
    features = cfg.get("features")
    model = _build(cfg["method"], cfg["backbone"], cfg["channels"], cfg["image_size"],
                   cfg["method_args"], cfg["backbone_args"], cfg["seed"], features, cfg["ways"])
    episode = _episode(cfg["ways"], cfg["shots"], cfg["queries"], cfg["batch"],
                       cfg["channels"], cfg["image_size"], cfg["seed"], features)
    fns = _steps(model, episode, bool(features), cfg.get("amp"))
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


def _episode(ways: int, shots: int, queries: int, batch: int, channels: int, image_size: int,
             seed: int, features: int | None) -> Episode:
    if features is not None:
        return random_features(ways, shots, queries, features, batch, seed)
    return random_episode(ways, shots, queries, batch, channels, image_size, seed)


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
    features: int | None = None,
    amp: str | None = None,
) -> dict[str, Any]:
    """Time a training step and an evaluation pass of ``method`` on random episodes.

    A training step is ``model.train()``, ``method.loss``, backward and an Adam step on a batch
    of ``batch`` episodes; evaluation is ``model.eval()`` and a forward pass under
    :func:`torch.no_grad`. Each is repeated ``steps`` times after ``warmup`` untimed calls,
    interleaved (A/B, so the load of other processes hits all of them) with its parts timed on
    their own, and the median time of each is reported:

    - the **backbone** on the same images: for a relational head its
      :meth:`~relgraph.methods.head.RelationalHead.embed_episode` (in training, + the backward
      of a fixed gradient of the embeddings and an Adam step of the backbone);
    - the **relational part**, for a relational head *measured*:
      :meth:`~relgraph.methods.head.RelationalHead.build_graph` and
      :meth:`~relgraph.methods.head.RelationalHead.relate_loss` on precomputed embeddings
      (detached, ``requires_grad=True``, so the backward into them counts), backward and an Adam
      step of the head's parameters; in evaluation ``relate`` under :func:`torch.no_grad`. For
      the other methods (gradient-based: no head) it is *estimated* as full minus backbone
      (``relational_measured`` is ``False``).

    With ``features=d`` only the head runs, on one batch of random ``d``-dimensional features
    (:func:`random_features`; no backbone, no images): ``train_ms`` / ``eval_ms`` are then the
    head's step (as ``relational_*`` above) and the peak memory is the head's.

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
        features: time the head alone on random features of this size (relational heads
            only; ``backbone``, ``image_size`` and ``channels`` are then unused). Default
            ``None``: the whole method on images.
        amp: run the forward passes of every timed step under ``torch.autocast`` in this
            dtype (backward passes outside it, as the trainer does), ``"bfloat16"``
            (CPU or GPU; on CPUs with AMX / AVX-512 bf16 units, as the trainer's
            ``train.amp_dtype: bfloat16``) or ``"float16"`` (GPU only); ``None`` (default):
            float32.

    Returns:
        A dict with the configuration (``method``, ``ways``, ``shots``, ``queries``, ``batch``,
        ``nodes`` = ``ways * (shots + queries)``, ``device``, ``threads``, ``torch``, ...) and
        ``train_ms`` / ``eval_ms`` (median per full step; also as ``full_train_ms`` /
        ``full_eval_ms``), ``train_eps`` / ``eval_eps`` (episodes per second),
        ``backbone_train_ms`` / ``backbone_eval_ms`` (``None`` with ``features``),
        ``relational_train_ms`` / ``relational_eval_ms``, ``relational_measured`` (``False``:
        estimates), ``relational_note``, ``parts_train`` / ``parts_eval`` ((backbone +
        relational) / full, measured parts only, else ``None``), ``train_peak_mb`` /
        ``eval_peak_mb`` (``None`` without ``memory``) and ``memory_note``.
    """
    if steps < 1 or warmup < 0:
        raise ValueError(f"expected steps >= 1 and warmup >= 0, got {steps} and {warmup}")
    from relgraph.engine.distributed import resolve_device

    device = resolve_device(device) if isinstance(device, str) else torch.device(device)
    if amp is not None and amp not in AMP_DTYPES:
        raise ValueError(f"amp must be one of {', '.join(AMP_DTYPES)} or None, got {amp!r}")
    if amp == "float16" and device.type == "cpu":
        raise ValueError("float16 autocast is for GPUs; on the CPU use amp='bfloat16'")
    model = _build(method, backbone, channels, image_size, method_args, backbone_args, seed,
                   features, ways)
    model.to(device)
    episode = _episode(ways, shots, queries, batch, channels, image_size, seed,
                       features).to(device)
    fns = _steps(model, episode, features is not None, amp)
    ms = _time_interleaved(fns, steps, warmup, device)
    measured = _is_head(model)

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
                   "queries": queries, "batch": batch, "threads": torch.get_num_threads(),
                   "features": features, "amp": amp}
            child = _memory_cpu(cfg)
            peak.update(train=child["train"], eval=child["eval"])
            note = ("CPU peak RSS increase over the built model in a fresh subprocess "
                    "(VmHWM on Linux, else ru_maxrss): one eval, then one training step")

    out: dict[str, Any] = {
        "method": method, "backbone": None if features else backbone, "features": features,
        "ways": ways, "shots": shots, "queries": queries,
        "batch": batch, "nodes": ways * (shots + queries), "image_size": image_size,
        "channels": channels, "device": str(device), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "steps": steps, "warmup": warmup, "amp": amp,
        "train_ms": ms["train"], "eval_ms": ms["eval"],
        "full_train_ms": ms["train"], "full_eval_ms": ms["eval"],
        "train_eps": 1000.0 * batch / ms["train"], "eval_eps": 1000.0 * batch / ms["eval"],
        "relational_measured": measured,
    }
    if features:
        out.update(backbone_train_ms=None, backbone_eval_ms=None,
                   relational_train_ms=ms["train"], relational_eval_ms=ms["eval"],
                   relational_note=FEATURES_NOTE, parts_train=None, parts_eval=None)
    else:
        for k in ("train", "eval"):
            full, bb = ms[k], ms[f"{k}_backbone"]
            rel = ms[f"{k}_relational"] if measured else full - bb
            out[f"backbone_{k}_ms"] = bb
            out[f"relational_{k}_ms"] = rel
            out[f"parts_{k}"] = (bb + rel) / full if measured else None
        out["relational_note"] = RELATIONAL_MEASURED_NOTE if measured else RELATIONAL_NOTE
    out.update(train_peak_mb=peak["train"], eval_peak_mb=peak["eval"], memory_note=note)
    return out


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
        ``exponent_eval``, ``exponent_relational_train`` and ``exponent_relational_eval`` (of
        the measured relational times for relational heads, else of the estimates: ``nan``
        where one is not positive) and ``relational_measured``.
    """
    rows = [benchmark(method, w, shots, queries, batch, **kwargs) for w in ways]
    n = [r["nodes"] for r in rows]
    return {
        "rows": rows,
        "exponent_train": fit_exponent(n, [r["train_ms"] for r in rows]),
        "exponent_eval": fit_exponent(n, [r["eval_ms"] for r in rows]),
        "exponent_relational_train": fit_exponent(n, [r["relational_train_ms"] for r in rows]),
        "exponent_relational_eval": fit_exponent(n, [r["relational_eval_ms"] for r in rows]),
        "relational_measured": all(r["relational_measured"] for r in rows),
    }


def _mb(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1f}"


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else :func:`platform.processor`;
    empty when unknown). Timings differ several-fold between CPU models of one machine type
    (e.g. bfloat16 products with and without AMX units), so benchmark pages name it."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def machine_info() -> str:
    """One line: CPU cores (and model, where known), torch threads, torch version, platform."""
    model = cpu_model()
    return (f"{os.cpu_count()} cores{' (' + model + ')' if model else ''}, torch "
            f"{torch.__version__} with {torch.get_num_threads()} threads, Python "
            f"{platform.python_version()}, {platform.system()} {platform.machine()}")


def _what(r: dict[str, Any]) -> str:
    if r.get("features"):
        return f"{r['method']} head alone on {r['features']}-d random features"
    return f"{r['method']} on {r['backbone']}"


def _input(r: dict[str, Any]) -> str:
    return "" if r.get("features") else f"{r['image_size']}px, "


def format_table(r: dict[str, Any]) -> str:
    """A readable table of one :func:`benchmark` result."""
    head = (f"{_what(r)}: {r['ways']}-way {r['shots']}-shot "
            f"{r['queries']} queries, {r['batch']} episode(s) per step, {r['nodes']} nodes, "
            f"{_input(r)}{r['device']}, {r['threads']} threads"
            f"{', autocast ' + r['amp'] if r.get('amp') else ''}, median of "
            f"{r['steps']} steps")
    star = "" if r["relational_measured"] else "*"
    rel = "relational ms" + star
    lines = [head, "",
             f"{'':<12}{'episodes/s':>12}{'ms/step':>10}{'backbone ms':>13}"
             f"{rel:>16}{'b+r/full':>10}{'peak MiB':>10}"]
    for k in ("train", "eval"):
        parts = r.get(f"parts_{k}")
        lines.append(f"{k:<12}{r[f'{k}_eps']:>12.2f}{r[f'{k}_ms']:>10.2f}"
                     f"{_ms(r[f'backbone_{k}_ms']):>13}{r[f'relational_{k}_ms']:>16.2f}"
                     f"{'-' if parts is None else f'{parts:.2f}':>10}"
                     f"{_mb(r[f'{k}_peak_mb']):>10}")
    lines += ["", f"{star or 'relational:'} {r['relational_note']}",
              f"peak memory: {r['memory_note']}"]
    return "\n".join(lines)


def format_sweep(s: dict[str, Any]) -> str:
    """A readable table of a :func:`sweep` result."""
    r0 = s["rows"][0]
    star = "" if s["relational_measured"] else "*"
    rel = "rel ms" + star
    lines = [f"{_what(r0)}: {r0['shots']}-shot {r0['queries']} queries, "
             f"{r0['batch']} episode(s) per step, {_input(r0)}{r0['device']}, "
             f"{r0['threads']} threads", "",
             f"{'ways':>5}{'nodes':>7}{'train ep/s':>12}{'train ms':>10}{rel:>9}"
             f"{'eval ep/s':>11}{'eval ms':>9}{rel:>9}{'train MiB':>11}"]
    for r in s["rows"]:
        lines.append(f"{r['ways']:>5}{r['nodes']:>7}{r['train_eps']:>12.2f}"
                     f"{r['train_ms']:>10.2f}{r['relational_train_ms']:>9.2f}"
                     f"{r['eval_eps']:>11.2f}{r['eval_ms']:>9.2f}"
                     f"{r['relational_eval_ms']:>9.2f}{_mb(r['train_peak_mb']):>11}")
    lines += ["", "time ~ nodes^k (log-log fit): "
              f"train k={s['exponent_train']:.2f}, eval k={s['exponent_eval']:.2f}, "
              f"relational train k={s['exponent_relational_train']:.2f}, "
              f"relational eval k={s['exponent_relational_eval']:.2f}",
              f"{star or 'relational:'} {r0['relational_note']}"]
    return "\n".join(lines)
