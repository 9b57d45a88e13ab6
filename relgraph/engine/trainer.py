"""The single episodic training loop.

``train(config, out)`` trains ``config.method`` on episodes of ``config.data``, validates on
fixed validation episodes every ``train.val_every`` steps, keeps the best checkpoint on
validation (never on test classes), stops early after ``train.patience`` validations without
improvement, and writes into ``out``:

- ``checkpoint.pt``: the best model on validation, with everything needed to use it;
- ``last.pt``: the full training state (optimiser, scheduler, RNG), to resume;
- ``metrics.csv`` and ``curves.png``: the learning curves;
- ``config.yaml``: the resolved configuration.

Resuming (the default when ``out/last.pt`` exists) continues exactly where the last
validation left off: batch ``t`` of training is a pure function of ``(seed, t)``, and the
model, optimiser, scheduler and RNG states are restored, so an interrupted run (even by
``kill -9``) ends with the same weights and metrics as an uninterrupted one.
"""

from __future__ import annotations

import csv
import io
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn
from tqdm.auto import tqdm

from relgraph.backbones import build_backbone
from relgraph.data import FewShotDataset, RotatedClasses, build_dataset
from relgraph.data.augment import AffineAugment
from relgraph.data.sampler import EpisodeSampler, episode_seed
from relgraph.engine.checkpoint import load_checkpoint, save_checkpoint
from relgraph.engine.config import Config, DataConfig
from relgraph.engine.distributed import DistInfo, barrier, init_distributed
from relgraph.engine.evaluate import autocast_context, evaluate
from relgraph.methods import FewShotMethod, build_method
from relgraph.utils import atomic_write_text

__all__ = ["train", "build_model", "build_datasets", "init_backbone", "load_model", "VAL_SEED"]

#: Seed of the fixed validation episodes and of the validation class hold-out.
VAL_SEED = 12345


def _dataset(data: DataConfig, split: str | None) -> FewShotDataset:
    kwargs = dict(data.options)
    if split is not None:
        kwargs["split"] = split
    if data.image_size is not None and data.dataset != "tensors":
        kwargs["image_size"] = data.image_size
    return build_dataset(data.dataset, data.roots, alphabets=data.alphabets, **kwargs)


def build_datasets(data: DataConfig) -> tuple[FewShotDataset, FewShotDataset | None]:
    """Training and validation datasets of a :class:`DataConfig`.

    Validation classes come from the dataset's ``val_split``, else the ``val_alphabets``, else
    a fraction ``val_fraction`` of the classes chosen with a fixed seed; they never overlap the
    training classes. Rotations (if asked) are added to the training classes only.

    Returns:
        ``(train, val)``; ``val`` is ``None`` when no validation is configured.
    """
    base = _dataset(data, data.split)
    val: FewShotDataset | None
    if data.val_split:
        val = _dataset(data, data.val_split)
        train = base
    elif data.val_alphabets:
        val = base.select_alphabets(data.val_alphabets)
        keep = [a for a in base.alphabets if a not in set(data.val_alphabets)]
        train = base.select_alphabets(keep)
    elif data.val_fraction > 0:
        if not 0 < data.val_fraction < 1:
            raise ValueError(f"val_fraction must lie in (0, 1), got {data.val_fraction}")
        g = torch.Generator().manual_seed(VAL_SEED)
        perm = torch.randperm(base.num_classes, generator=g)
        n_val = max(1, round(data.val_fraction * base.num_classes))
        val = base.select_classes(perm[:n_val].sort().values)
        train = base.select_classes(perm[n_val:].sort().values)
    else:
        train, val = base, None
    if data.rotations:
        train = RotatedClasses(train)
    return train, val


def build_model(config: Config, preprocessing: dict[str, Any],
                num_classes: int | None = None) -> FewShotMethod:
    """The method of ``config`` on its backbone, for inputs described by ``preprocessing``.

    ``num_classes`` (training classes) reaches the methods that declare ``needs_num_classes``.
    """
    backbone_args = dict(config.backbone_args)
    if "channels" in preprocessing:
        backbone_args.setdefault("in_channels", int(preprocessing["channels"]))
    if preprocessing.get("image_size"):
        backbone_args.setdefault("image_size", int(preprocessing["image_size"]))
    backbone = build_backbone(config.backbone, **backbone_args)
    return build_method(config.method, backbone, num_classes=num_classes,
                        **config.method_args)


def init_backbone(model: FewShotMethod, path: str | Path) -> None:
    """Copy the backbone weights of the run checkpoint ``path`` into ``model.backbone``.

    Raises:
        ValueError: the checkpoint has no backbone, or one of another architecture.
    """
    state = load_checkpoint(path)
    weights = {k[len("backbone."):]: v for k, v in state.get("model", {}).items()
               if k.startswith("backbone.")}
    if not weights:
        raise ValueError(f"train.init_from: {path} holds no backbone weights; give the "
                         "checkpoint.pt of a relgraph training run")
    try:
        model.backbone.load_state_dict(weights)
    except RuntimeError as exc:
        raise ValueError(f"train.init_from: the backbone in {path} does not fit this config's "
                         f"backbone (same backbone and backbone_args needed): {exc}") from exc


def load_model(path: str | Path, device: str | torch.device = "cpu"
               ) -> tuple[FewShotMethod, dict[str, Any]]:
    """Rebuild a trained model from a checkpoint; returns ``(model in eval mode, checkpoint)``.

    The checkpoint carries the method, backbone and preprocessing, so nothing else is needed.
    """
    ckpt = load_checkpoint(path)
    try:
        config = Config.from_dict(ckpt["config"])
        model = build_model(config, ckpt["preprocessing"], ckpt.get("num_classes"))
        model.load_state_dict(ckpt["model"])
    except (KeyError, RuntimeError, ValueError, TypeError) as exc:
        raise ValueError(f"checkpoint {path} does not match this relgraph's models: {exc}") from exc
    return model.to(device).eval(), ckpt


_AUGMENT_SALT = 0xA06_3E7


def _warp(augment: AffineAugment, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Apply ``augment`` to ``[b, m, c, h, w]`` images."""
    b, m = x.shape[:2]
    return augment(x.reshape(b * m, *x.shape[2:]), g).reshape(x.shape)


class _LossModule(nn.Module):
    """Runs ``method.loss`` in ``forward`` so DistributedDataParallel can wrap it."""

    def __init__(self, method: FewShotMethod) -> None:
        super().__init__()
        self.method = method

    def forward(self, episode):  # noqa: ANN001, ANN201
        return self.method.loss(episode)


def _param_groups(model: FewShotMethod, lr: float, backbone_lr_scale: float) -> list[dict]:
    """Optimiser parameter groups: the backbone at ``lr * backbone_lr_scale``, the rest at ``lr``.

    A scale of 0 freezes the backbone (``requires_grad=False``, no optimiser state).
    """
    if backbone_lr_scale < 0:
        raise ValueError(f"train.backbone_lr_scale must be >= 0, got {backbone_lr_scale}")
    if backbone_lr_scale == 1.0:
        return [{"params": list(model.parameters())}]
    backbone = {id(p) for p in model.backbone.parameters()}
    head = [p for p in model.parameters() if id(p) not in backbone]
    groups = [{"params": head}] if head else []
    if backbone_lr_scale == 0:
        for p in model.backbone.parameters():
            p.requires_grad_(False)
    else:
        groups.append({"params": list(model.backbone.parameters()),
                       "lr": lr * backbone_lr_scale})
    if not groups:
        raise ValueError("train.backbone_lr_scale: 0 freezes the backbone, and this method has "
                         "no other parameters to train; use a scale > 0")
    return groups


def _optimizer(config: Config, params) -> torch.optim.Optimizer:  # noqa: ANN001
    t = config.train
    if t.optimizer == "adam":
        return torch.optim.Adam(params, lr=t.lr, weight_decay=t.weight_decay)
    if t.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
    if t.optimizer == "sgd":
        return torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay,
                               nesterov=t.momentum > 0)
    raise ValueError(f"unknown optimizer {t.optimizer!r}; choose adam, adamw or sgd")


def _scheduler(config: Config, opt: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    t = config.train
    if t.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=t.step_size, gamma=t.gamma)
    if t.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, t.steps))
    if t.scheduler == "none":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    raise ValueError(f"unknown scheduler {t.scheduler!r}; choose step, cosine or none")


METRIC_FIELDS = ["step", "train_loss", "train_acc", "val_acc", "val_ci95", "lr", "time_s"]


def _write_metrics(out: Path, history: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRIC_FIELDS)
    writer.writeheader()
    for row in history:
        writer.writerow({k: row.get(k) for k in METRIC_FIELDS})
    atomic_write_text(out / "metrics.csv", buf.getvalue())


def _plot_curves(out: Path, history: list[dict[str, Any]], title: str, train_label: str,
                 val_label: str) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from relgraph.viz import save_figure

    steps = [r["step"] for r in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.2))
    ax1.plot(steps, [r["train_loss"] for r in history], marker=".")
    ax1.set_xlabel("step")
    ax1.set_ylabel("training loss")
    ax1.grid(alpha=0.3)
    ax2.plot(steps, [r["train_acc"] for r in history], marker=".", label=train_label)
    if any(r.get("val_acc") is not None for r in history):
        ax2.plot(steps, [r.get("val_acc") for r in history], marker=".", label=val_label)
    ax2.set_xlabel("step")
    ax2.set_ylabel("accuracy (%)")
    ax2.grid(alpha=0.3)
    ax2.legend()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, out / "curves.png")


def _rng_state(device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def train(
    config: Config,
    out: str | Path,
    resume: bool = True,
    progress: bool = True,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Train ``config`` and write the run into ``out`` (see the module docstring).

    Args:
        config: the experiment.
        out: output folder.
        resume: continue from ``out/last.pt`` when it exists (same config required).
        progress: show a tqdm progress bar.
        stop_after: run at most this many steps in this call, then save ``last.pt`` and
            return (``"finished": False``); a later call resumes.

    Returns:
        ``{"out", "step", "finished", "best": {"step", "val_acc", "val_ci95"}, "history"}``.
    """
    out = Path(out)
    info: DistInfo = init_distributed(config.train.device)
    device = info.device
    t = config.train
    if t.steps < 1 or t.val_every < 1:
        raise ValueError(f"train.steps and train.val_every must be >= 1, got {t.steps} and "
                         f"{t.val_every}")
    train_ds, val_ds = build_datasets(config.data)
    preprocessing = dict(train_ds.preprocessing)
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.yaml", yaml.safe_dump(config.to_dict(), sort_keys=False))

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(t.seed)
        model = build_model(config, preprocessing, num_classes=train_ds.num_classes)
    if t.init_from:
        init_backbone(model, t.init_from)
    model.to(device)
    opt = _optimizer(config, _param_groups(model, t.lr, t.backbone_lr_scale))
    sched = _scheduler(config, opt)
    use_amp = t.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    sampler = EpisodeSampler(train_ds, t.ways, t.shots, t.queries, t.episodes_per_batch,
                             num_batches=t.steps, seed=t.seed, rank=info.rank,
                             world_size=info.world_size, within_alphabet=t.within_alphabet)
    val_eval = config.eval
    try:
        augment = AffineAugment(**config.data.augment)
    except TypeError as exc:
        raise ValueError(f"data.augment accepts rotate, scale, shear, translate: {exc}") from exc
    if val_ds is not None:  # fail now, not after the first training interval
        EpisodeSampler(val_ds, val_eval.ways, val_eval.shots, val_eval.queries,
                       within_alphabet=val_eval.within_alphabet)

    step, history, best, bad = 0, [], {"step": None, "val_acc": -math.inf, "val_ci95": None}, 0
    running = {"loss_sum": 0.0, "acc_sum": 0.0, "count": 0}
    last = out / "last.pt"
    if resume and last.is_file():
        state = load_checkpoint(last)
        if state.get("config") != config.to_dict():
            raise ValueError(f"{last} was written by a different configuration; use another "
                             "--out folder, or pass resume=False (--no-resume) to start over")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        step, history, best, bad = state["step"], state["history"], state["best"], state["bad"]
        _set_rng_state(state["rng"], device)
        running = state["running"]

    runner: nn.Module = _LossModule(model)
    if info.distributed:
        runner = nn.parallel.DistributedDataParallel(
            runner, device_ids=[device.index] if device.type == "cuda" else None)

    def save_last() -> None:
        if info.is_main:
            save_checkpoint(last, {
                "config": config.to_dict(), "preprocessing": preprocessing,
                "num_classes": train_ds.num_classes,
                "model": model.state_dict(), "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(), "scaler": scaler.state_dict(),
                "step": step, "history": history, "best": best, "bad": bad,
                "rng": _rng_state(device),
                "running": {"loss_sum": loss_sum, "acc_sum": acc_sum, "count": count}})

    stopped_early = False
    run_until = t.steps if stop_after is None else min(t.steps, step + stop_after)
    loss_sum, acc_sum, count = running["loss_sum"], running["acc_sum"], running["count"]
    started = time.perf_counter()
    bar = tqdm(total=t.steps, initial=step, desc=f"train {config.method}", unit="step",
               disable=not (progress and info.is_main), dynamic_ncols=True)
    model.train()
    while step < run_until:
        episode = sampler.episode_batch(train_ds, step)
        if augment.active:
            g = torch.Generator().manual_seed(episode_seed(t.seed ^ _AUGMENT_SALT, step))
            episode = replace(episode, support=_warp(augment, episode.support, g),
                              query=_warp(augment, episode.query, g))
        episode = episode.to(device, non_blocking=True)
        with autocast_context(device, use_amp):
            loss, logits = runner(episode)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if t.grad_clip > 0:
            scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
        scaler.step(opt)
        scaler.update()
        sched.step()
        step += 1
        loss_sum += float(loss.detach())
        acc_sum += float((logits.detach().argmax(-1) == episode.query_labels).float().mean())
        count += 1
        bar.update(1)
        if step % t.val_every == 0 or step == t.steps:
            if info.distributed:  # log the mean over all ranks' episodes
                sums = torch.tensor([loss_sum, acc_sum], dtype=torch.float64, device=device)
                torch.distributed.all_reduce(sums)
                loss_sum, acc_sum = (sums / info.world_size).tolist()
            row: dict[str, Any] = {
                "step": step, "train_loss": loss_sum / count, "train_acc": 100 * acc_sum / count,
                "val_acc": None, "val_ci95": None, "lr": opt.param_groups[0]["lr"],
                "time_s": round(time.perf_counter() - started, 3)}
            loss_sum = acc_sum = 0.0
            count = 0
            improved = False
            if val_ds is not None:
                res = evaluate(model, val_ds, val_eval.ways, val_eval.shots, val_eval.queries,
                               t.val_episodes, seed=VAL_SEED,
                               episodes_per_batch=val_eval.episodes_per_batch, device=device,
                               amp=use_amp, within_alphabet=val_eval.within_alphabet)
                row["val_acc"], row["val_ci95"] = res["accuracy"], res["ci95"]
                improved = res["accuracy"] > best["val_acc"]
            else:
                improved = True  # no validation: the latest model is the one to keep
            history.append(row)
            if improved:
                best = {"step": step, "val_acc": row["val_acc"], "val_ci95": row["val_ci95"]}
                bad = 0
                if info.is_main:
                    save_checkpoint(out / "checkpoint.pt", {
                        "config": config.to_dict(), "preprocessing": preprocessing,
                        "num_classes": train_ds.num_classes,
                        "model": model.state_dict(), "step": step, "best": best,
                        "history": history})
            else:
                bad += 1
            bar.set_postfix(loss=f"{row['train_loss']:.3f}",
                            val=f"{row['val_acc']:.2f}" if row["val_acc"] is not None else "-")
            save_last()
            if info.is_main:
                _write_metrics(out, history)
                _plot_curves(out, history,
                             f"{config.method} / {config.backbone} on {config.data.dataset}",
                             f"training episodes ({t.ways}-way {t.shots}-shot)",
                             f"validation ({val_eval.ways}-way {val_eval.shots}-shot)")
            if t.patience and bad >= t.patience:
                stopped_early = True
                break
            model.train()
    bar.close()
    if step < t.steps and not stopped_early and (step % t.val_every):
        save_last()  # stop_after between validations: keep the exact state
    barrier(info)
    finished = stopped_early or step >= t.steps
    return {"out": str(out), "step": step, "finished": finished, "stopped_early": stopped_early,
            "best": best, "history": history}
