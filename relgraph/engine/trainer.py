"""The single episodic training loop.

``train(config, out)`` trains ``config.method`` on episodes of ``config.data``, validates on
fixed validation episodes every ``train.val_every`` steps, keeps the best checkpoint on
validation (never on test classes), stops early after ``train.patience`` validations without
improvement, and writes into ``out``:

- ``checkpoint.pt``: the best model on validation, with everything needed to use it;
- ``last.pt``: the full training state (optimiser, scheduler, RNG), to resume;
- both say which device trained them (``"device"``: :func:`device_label`, of the latest run
  in the folder) and keep the run's compute as ``"segments"``: one
  ``{"steps": [first, last], "minutes", "device"}`` per call that trained (a run resumed or
  continued on another device or thread count adds a segment; their minutes add up to the
  run's training time: the last ``time_s``, or, for a run stopped between validations, the
  time up to the stop, which ``last.pt`` keeps and the resumed run's ``time_s`` goes on from);
- ``metrics.csv`` and ``curves.png``: the learning curves;
- ``config.yaml``: the resolved configuration.

Resuming (the default when ``out/last.pt`` exists) continues exactly where the last
validation left off: batch ``t`` of training is a pure function of ``(seed, t)``, and the
model, optimiser, scheduler and RNG states are restored, so an interrupted run (even by
``kill -9``) ends with the same weights and metrics as an uninterrupted one. SIGTERM and
Ctrl-C save ``last.pt`` after the current step, so nothing since the last validation is lost;
a lock file (``.lock``) keeps a second run out of the folder while one trains.

A finished run continues to a larger budget the same way: resume it with a larger
``train.steps``. With a step schedule (or none) the continued run equals a run started with
the larger budget (plus a validation row at the old last step); a cosine schedule is stretched
to the new length, which a straight run's first steps never had (see :func:`_fit_schedule`).

The loop is built from small pieces, each usable on its own (the tests drive them directly):

- :func:`setup` checks the config and builds what stays fixed (:class:`TrainRun`: data,
  training episodes, augmentation); it writes nothing, so a bad setting leaves no run folder;
- :func:`build_state` builds what changes (:class:`TrainState`: model, optimiser, scheduler,
  gradient scaler, step, history, best, running sums), and :func:`resume_from_last` fills it
  from ``last.pt``;
- :func:`train_step` does one optimisation step;
- every ``train.val_every`` steps, :func:`end_interval` summarises the training steps,
  :func:`validate` evaluates and keeps the best model (:func:`save_best`, ``checkpoint.pt``),
  :func:`save_last` writes ``last.pt`` and :func:`log` the metrics and curves.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import math
import signal
import threading
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn
from tqdm.auto import tqdm

from relgraph.backbones import BACKBONES, build_backbone
from relgraph.data import FewShotDataset, RotatedClasses, build_dataset
from relgraph.data.augment import AffineAugment
from relgraph.data.base import base_class_names, dataset_polarity
from relgraph.data.catalog import DATASETS
from relgraph.data.episode import Episode
from relgraph.data.resident import resident_images
from relgraph.data.sampler import EpisodeSampler, episode_seed
from relgraph.engine.checkpoint import load_checkpoint, save_checkpoint
from relgraph.engine.config import Config, DataConfig
from relgraph.engine.distributed import DistInfo, barrier, init_distributed
from relgraph.engine.evaluate import autocast_context, autocast_enabled, evaluate, method_amp
from relgraph.engine.lock import remove_stale_temp_files, run_lock
from relgraph.methods import METHODS, FewShotMethod, build_method
from relgraph.registry import accepted_keywords
from relgraph.utils import atomic_write_text

__all__ = ["train", "build_model", "build_datasets", "features_backbone", "init_backbone",
           "load_model", "VAL_SEED",
           "TrainRun", "TrainState", "setup", "build_state", "resume_from_last", "saved_segments",
           "record_segment", "train_step", "validate", "validation_result",
           "save_best", "save_last", "check_init_from", "check_arguments",
           "NonFiniteLoss"]

logger = logging.getLogger(__name__)

#: Seed of the fixed validation episodes and of the validation class hold-out.
VAL_SEED = 12345


def _dataset(data: DataConfig, split: str | None,
             alphabets: list[str] | None = None) -> FewShotDataset:
    kwargs = dict(data.options)
    if split is not None:
        kwargs["split"] = split
    accepted = accepted_keywords(DATASETS.get(data.dataset))
    if data.image_size is not None and (accepted is None or "image_size" in accepted):
        kwargs["image_size"] = data.image_size  # not for features, tensors or text
    return build_dataset(data.dataset, data.roots, alphabets=alphabets, **kwargs)


def _check_disjoint(train: FewShotDataset, val: FewShotDataset) -> None:
    shared = sorted(set(train.class_names) & set(val.class_names))
    if shared:
        raise ValueError(
            f"{len(shared)} validation class(es) are also training classes (e.g. "
            f"{', '.join(map(repr, shared[:3]))}): a validation that picks the checkpoint on "
            "classes it trained on says nothing about new classes; give data.split and "
            "data.val_split two different splits of the dataset")


def build_datasets(data: DataConfig) -> tuple[FewShotDataset, FewShotDataset | None]:
    """Training and validation datasets of a :class:`DataConfig`.

    Validation classes come from the dataset's ``val_split``, else the ``val_alphabets``, else
    a fraction ``val_fraction`` of the classes chosen with a fixed seed; they never overlap the
    training classes (checked). ``alphabets`` filters the training classes (before a
    ``val_alphabets`` or ``val_fraction`` hold-out), not a ``val_split``. Rotations (if asked)
    are added to the training classes only.

    Returns:
        ``(train, val)``; ``val`` is ``None`` when no validation is configured.

    Raises:
        ValueError: ``val_split`` without ``split`` (the training set would be the whole
            dataset, validation and test classes included), or training and validation
            classes that overlap.
    """
    if data.val_split and not data.split:
        raise ValueError(
            f"data.val_split is {data.val_split!r} but data.split is not set: without it the "
            f"{data.dataset!r} dataset trains on all its classes, the validation and test "
            "classes included; set data.split (e.g. data.split=train)")
    base = _dataset(data, data.split, data.alphabets)
    val: FewShotDataset | None
    if data.val_split:
        try:
            val = _dataset(data, data.val_split)
        except ValueError as exc:  # the dataset speaks of "split": say which key
            raise ValueError(f"data.val_split={data.val_split!r}: {exc}") from exc
        _check_disjoint(base, val)
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
    if data.rotated_alphabets and not data.rotations:
        raise ValueError("data.rotated_alphabets needs data.rotations: true (it groups the "
                         "rotated copies of the training classes by orientation)")
    if data.rotations:
        train = RotatedClasses(train, separate_alphabets=data.rotated_alphabets)
    return train, val


def check_arguments(config: Config) -> None:
    """Check the nested arguments of ``config`` against the signatures they go to.

    ``method_args`` against the method's class, ``backbone_args`` against the backbone's,
    ``data.options`` against the dataset builder's; nothing is built.

    Raises:
        KeyError: an unknown method, backbone or dataset name (the choices are listed).
        ValueError: an unknown key, named with the closest allowed one and all allowed ones.
    """
    if "too_small" in config.data.options:
        raise ValueError("data.options.too_small: too_small is a setting of the episodes, not "
                         "an option of the dataset; set data.too_small=skip instead")
    for key in ("rotations", "image_size", "split"):
        if key in config.data.options:  # data.<key> would override it, or miss the hold-out
            raise ValueError(f"data.options.{key}: {key} is a key of data itself, which the "
                             f"training data, the validation hold-out and the checkpoint use; "
                             f"set data.{key} instead")
    METHODS.check_keywords(config.method, config.method_args, "method_args",
                           reserved=("backbone", "num_classes"))
    BACKBONES.check_keywords(config.backbone, config.backbone_args, "backbone_args")
    DATASETS.check_keywords(config.data.dataset, config.data.options, "data.options",
                            reserved=("roots", "alphabets"))


def build_model(config: Config, preprocessing: dict[str, Any],
                num_classes: int | None = None) -> FewShotMethod:
    """The method of ``config`` on its backbone, for inputs described by ``preprocessing``.

    ``num_classes`` (training classes) reaches the methods that declare ``needs_num_classes``.
    """
    backbone_args = dict(config.backbone_args)
    if config.backbone == "features" and "feature_shape" in preprocessing:
        backbone_args.setdefault("feature_shape", list(preprocessing["feature_shape"]))
    if "channels" in preprocessing:
        backbone_args.setdefault("in_channels", int(preprocessing["channels"]))
    if preprocessing.get("image_size"):
        backbone_args.setdefault("image_size", int(preprocessing["image_size"]))
    if "vocab_size" in preprocessing:  # token ids of a text dataset (encoder="tokens")
        backbone_args.setdefault("vocab_size", int(preprocessing["vocab_size"]))
    backbone = build_backbone(config.backbone, **backbone_args)
    return build_method(config.method, backbone, num_classes=num_classes,
                        **config.method_args)


def features_backbone(config: Config, preprocessing: dict[str, Any]) -> Config:
    """``config`` with the ``features`` backbone when the data are precomputed features.

    Features data (``preprocessing["feature_shape"]``, e.g. the ``features`` dataset) need no
    encoder: the default backbone (``conv4`` without ``backbone_args``) becomes ``features``,
    whose ``out_dim`` comes from the data.

    Raises:
        ValueError: another image backbone was chosen for features data.
    """
    if "feature_shape" not in preprocessing or config.backbone == "features":
        return config
    if config.backbone == Config.backbone and not config.backbone_args:
        logger.info("the data are precomputed features %s: using the 'features' backbone",
                    list(preprocessing["feature_shape"]))
        return config.override({"backbone": "features"})
    raise ValueError(f"the data are precomputed features {list(preprocessing['feature_shape'])} "
                     f"but backbone {config.backbone!r} reads images; use the 'features' "
                     "backbone (set backbone=features, or --backbone features)")


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
#: Salt of the seed of torch's global generator at the start of a run (dropout).
_GLOBAL_RNG_SALT = 0x6_10BA1


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

    A scale of 0 freezes the backbone (``requires_grad=False``, no optimiser state) and its
    BatchNorm statistics (:attr:`~relgraph.methods.FewShotMethod.frozen_backbone`).
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
        model.frozen_backbone = True  # and its BatchNorm statistics: eval mode while training
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


@dataclass
class TrainRun:
    """What stays fixed during a run: the config, where it writes, the process, the data.

    Attributes:
        config: the experiment.
        out: the run folder.
        info: this process (rank, world size, device).
        train_ds, val_ds: training and validation classes (``val_ds`` may be ``None``);
            datasets held in memory are :class:`~relgraph.data.resident.ResidentImages` on
            the run's device (the same examples, read by one gather per batch).
        preprocessing: the training data's preprocessing (image size, channels, inversion,
            and the training images' ``mean_intensity``, ``polarity`` and
            ``normalisation``), saved in checkpoints.
        sampler: the training episodes (batch ``t`` is a pure function of ``(seed, t)``).
        augment: the training images' random affine warps (possibly inactive).
        use_amp: mixed precision (``train.amp``: on CUDA, or on the CPU in bfloat16).
        amp_dtype: its dtype, ``"float16"`` or ``"bfloat16"`` (``train.amp_dtype``).
    """

    config: Config
    out: Path
    info: DistInfo
    train_ds: FewShotDataset
    val_ds: FewShotDataset | None
    preprocessing: dict[str, Any]
    sampler: EpisodeSampler
    augment: AffineAugment
    use_amp: bool
    amp_dtype: str = "float16"

    @property
    def device(self) -> torch.device:
        """The device this process trains on (``info.device``)."""
        return self.info.device

    @property
    def amp(self) -> bool | str:
        """What :func:`~relgraph.engine.evaluate.autocast_context` takes: ``False`` or the
        autocast dtype's name."""
        return self.amp_dtype if self.use_amp else False

    @property
    def loss_scaling(self) -> bool:
        """Whether gradients are scaled (float16 autocast only; bfloat16 needs none)."""
        return self.use_amp and self.amp_dtype == "float16"


def _no_best() -> dict[str, Any]:
    return {"step": None, "val_acc": -math.inf, "val_ci95": None}


@dataclass
class TrainState:
    """Everything that changes during training; ``last.pt`` saves all of it.

    Attributes:
        model, optimizer, scheduler, scaler: the model and its optimisation.
        step: optimisation steps done.
        history: one metrics row per validation.
        best: ``{"step", "val_acc", "val_ci95"}`` of the best validation so far.
        bad: validations since the last improvement (for ``train.patience``).
        loss_sum, acc_sum, count: training loss and accuracy summed over the steps since the
            last validation.
        time_s: the run's training time in seconds (all calls) when it was last saved: at a
            validation, that row's ``time_s``; stopped between validations, the time up to the
            stop (so a resumed run counts the steps done since the last validation too).
        segments: the run's compute, one ``{"steps": [first, last], "minutes", "device"}``
            per call of :func:`train` that trained (see :func:`record_segment`).
    """

    model: FewShotMethod
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=_no_best)
    bad: int = 0
    loss_sum: float = 0.0
    acc_sum: float = 0.0
    count: int = 0
    time_s: float = 0.0
    segments: list[dict[str, Any]] = field(default_factory=list)

    def running(self) -> dict[str, Any]:
        """The running sums and the training time as saved in ``last.pt``."""
        return {"loss_sum": self.loss_sum, "acc_sum": self.acc_sum, "count": self.count,
                "time_s": self.time_s}


def check_init_from(path: str | Path) -> None:
    """Fail early, in one line, when ``train.init_from`` names a checkpoint that is not there.

    A path ``runs/<group>/<name>/checkpoint.pt`` with a config
    ``experiments/configs/<group>_<name>.yaml`` (relative to the current directory) is the run
    of that config: the message gives the command that trains it.

    Raises:
        FileNotFoundError: no file at ``path``.
    """
    path = Path(path)
    if path.is_file() or (path / "checkpoint.pt").is_file():  # a checkpoint, or its run folder
        return
    parts = path.parts
    if len(parts) >= 4 and parts[-4] == "runs" and parts[-1] == "checkpoint.pt":
        config = Path("experiments", "configs", f"{parts[-3]}_{parts[-2]}.yaml")
        if config.is_file():
            raise FileNotFoundError(
                f"train.init_from: {path} does not exist; train that run first: "
                f"relgraph train --config {config.as_posix()} --out {path.parent.as_posix()}")
    raise FileNotFoundError(f"train.init_from: {path} does not exist; train that run first "
                            "(its checkpoint.pt) or fix the path")


def _episodes_error(exc: ValueError, section: str, what: str) -> ValueError:
    """The sampler's message about ``n_way`` / ``k_shot`` / ``n_query``, told in config keys."""
    text = str(exc)
    for python, key in (("k_shot + n_query", f"{section}.shots + {section}.queries"),
                        ("k_shot/n_query", f"{section}.shots/{section}.queries"),
                        ("n_way", f"{section}.ways"),
                        ("pass too_small='skip'", "set data.too_small=skip")):
        text = text.replace(python, key)
    return ValueError(f"{what}: {text}")


def _validation_fit(config: Config, val_ds: FewShotDataset) -> tuple[Config, str | None]:
    """``config`` with ``eval.ways`` / ``eval.queries`` lowered to what the validation classes
    hold (at least 2 ways and 1 query), and a sentence saying what changed (or ``None``)."""
    v = config.eval
    counts = val_ds.class_counts()
    changes: dict[str, int] = {}
    if 2 <= val_ds.num_classes < v.ways:
        changes["eval.ways"] = val_ds.num_classes
    smallest = int(counts.min()) if len(counts) else 0
    if smallest - v.shots >= 1 and smallest < v.shots + v.queries:
        changes["eval.queries"] = smallest - v.shots
    if not changes:
        return config, None
    said = ", ".join(f"{k}={val}" for k, val in changes.items())
    return config.override(changes), (
        f"validation episodes: {said} to fit the validation classes ({val_ds.num_classes} "
        f"classes, {smallest} or more examples each); set eval.* to choose")


def _too_few_validation_classes(config: Config, train_ds: FewShotDataset,
                                val_ds: FewShotDataset) -> str:
    """Why the validation classes cannot fill ``eval.ways``, and the settings that would."""
    v, d = config.eval, config.data
    message = (f"validation episodes: eval.ways={v.ways} needs {v.ways} classes but the "
               f"validation split has {val_ds.num_classes}")
    fixes = []
    if val_ds.num_classes >= 2:
        fixes.append(f"set eval.ways={val_ds.num_classes} (or fewer)")
    if d.val_split is None and not d.val_alphabets:
        total = train_ds.num_classes + val_ds.num_classes
        message += f" (data.val_fraction={d.val_fraction} of {total} classes)"
        spare = total - config.train.ways  # classes training can give up
        wanted = min(v.ways, spare)
        if wanted >= 2 and wanted > val_ds.num_classes:
            fixes.append(f"set data.val_fraction={math.ceil(100 * wanted / total) / 100} "
                         f"({wanted} validation classes)")
    else:
        fixes.append("give the validation split more classes")
    fixes.append("set data.val_fraction=0 to train without validation")
    return message + "; " + ", or ".join(fixes)


def setup(config: Config, out: str | Path, fit_validation: bool = False) -> TrainRun:
    """Check ``config`` and build what a run keeps fixed; writes nothing.

    Everything that can fail on the user's settings is built or checked here (nested
    arguments, datasets, training and validation episodes, ``init_from``), so a bad setting
    leaves no run folder; :func:`build_state` then builds the model.

    Args:
        config: the experiment.
        out: the run folder (not created here).
        fit_validation: lower ``eval.ways`` and ``eval.queries`` to what the validation
            classes can fill (with a warning saying so) instead of failing.

    Raises:
        ValueError: a setting that would fail later (nested arguments, augmentation
            arguments, episodes the training or validation classes cannot fill, ...).
        FileNotFoundError: ``train.init_from`` names a checkpoint that does not exist.
    """
    check_arguments(config)
    info = init_distributed(config.train.device)
    t = config.train
    if t.steps < 1 or t.val_every < 1:
        raise ValueError(f"train.steps and train.val_every must be >= 1, got {t.steps} and "
                         f"{t.val_every}")
    if t.init_from:
        check_init_from(t.init_from)
    train_ds, val_ds = build_datasets(config.data)
    # held once on the training device, episodes gathered by index (the same examples)
    train_ds = resident_images(train_ds, info.device)
    val_ds = resident_images(val_ds, info.device) if val_ds is not None else None
    try:
        sampler = EpisodeSampler(train_ds, t.ways, t.shots, t.queries, t.episodes_per_batch,
                                 num_batches=t.steps, seed=t.seed, rank=info.rank,
                                 world_size=info.world_size, within_alphabet=t.within_alphabet,
                                 too_small=config.data.too_small,
                                 n_unlabelled=t.unlabelled, n_distractors=t.distractors)
    except ValueError as exc:
        raise _episodes_error(exc, "train", f"training episodes ({t.ways}-way {t.shots}-shot "
                              f"{t.queries} queries, {train_ds.num_classes} training "
                              "classes)") from exc
    try:
        augment = AffineAugment(**config.data.augment)
    except TypeError as exc:
        raise ValueError(f"data.augment accepts rotate, scale, shear, translate: {exc}") from exc
    except ValueError as exc:
        raise ValueError(f"data.{exc}") from exc
    if augment.active and "image_size" not in train_ds.preprocessing:
        raise ValueError(f"data.augment warps images, but the {config.data.dataset!r} training "
                         "data are not images (features or text); remove data.augment")
    if val_ds is not None:  # fail now, not after the first training interval
        if fit_validation:
            config, note = _validation_fit(config, val_ds)
            if note:
                warnings.warn(note, stacklevel=2)
        v = config.eval
        if val_ds.num_classes < v.ways:
            raise ValueError(_too_few_validation_classes(config, train_ds, val_ds))
        try:
            EpisodeSampler(val_ds, v.ways, v.shots, v.queries, within_alphabet=v.within_alphabet,
                           too_small=config.data.too_small, n_unlabelled=v.unlabelled,
                           n_distractors=v.distractors)
        except ValueError as exc:
            raise _episodes_error(exc, "eval", f"validation episodes ({v.ways}-way {v.shots}-shot "
                                  f"{v.queries} queries, from eval.*; {val_ds.num_classes} "
                                  "validation classes, from data.val_split / val_alphabets / "
                                  f"val_fraction={config.data.val_fraction})") from exc
    preprocessing = dict(train_ds.preprocessing)
    polarity = dataset_polarity(train_ds)  # recorded so that predict can check new images
    if polarity is not None:
        preprocessing.update(polarity, normalisation="pixel / 255, in [0, 1]")
    config = features_backbone(config, preprocessing)
    return TrainRun(config=config, out=Path(out), info=info, train_ds=train_ds, val_ds=val_ds,
                    preprocessing=preprocessing, sampler=sampler,
                    augment=augment,
                    use_amp=autocast_enabled(info.device, t.amp and t.amp_dtype),
                    amp_dtype=t.amp_dtype)


def build_state(run: TrainRun) -> TrainState:
    """A fresh model (seeded by ``train.seed``; backbone from ``train.init_from`` if given),
    its optimiser, learning-rate scheduler and gradient scaler, at step 0."""
    config, t = run.config, run.config.train
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(t.seed)
        try:
            model = build_model(config, run.preprocessing, num_classes=run.train_ds.num_classes)
        except (TypeError, ValueError) as exc:  # a bad value in method_args / backbone_args
            raise ValueError(f"method_args / backbone_args of {config.method!r} on "
                             f"{config.backbone!r}: {exc}") from exc
    if t.init_from:
        init_backbone(model, t.init_from)
    if not any(p.requires_grad for p in model.parameters()):
        warnings.warn(f"{config.method} on the {config.backbone!r} backbone has no trainable "
                      "parameters: training only validates and saves the checkpoint (on "
                      "features, set backbone_args.project=D to learn a linear projection)",
                      stacklevel=2)
    model.to(run.device)
    if run.use_amp and method_amp(model, run.device, run.amp) is False:
        run.use_amp = False  # float32: its inner gradients would not survive float16
    optimizer = _optimizer(config, _param_groups(model, t.lr, t.backbone_lr_scale))
    return TrainState(model=model, optimizer=optimizer, scheduler=_scheduler(config, optimizer),
                      scaler=torch.amp.GradScaler("cuda", enabled=run.loss_scaling))


def resume_from_last(run: TrainRun, state: TrainState) -> bool:
    """Load ``out/last.pt`` into ``state`` (model, optimiser, counters, RNG) if it exists.

    Returns:
        whether there was a ``last.pt`` to resume from.

    Raises:
        ValueError: ``last.pt`` was written by a different configuration.
    """
    last = run.out / "last.pt"
    if not last.is_file():
        return False
    saved = load_checkpoint(last)
    before, now = _resumable_config(saved.get("config")), _resumable_config(run.config.to_dict())
    if before != now:
        changed = _changed_keys(before, now)
        shown = ", ".join(f"{k} ({a!r} -> {b!r})" for k, a, b in changed[:5])
        raise ValueError(f"{last} was written by a different configuration"
                         f"{': ' + shown if shown else ''}; use another --out folder, or pass "
                         "resume=False (--no-resume) to start over")
    if isinstance(saved.get("step"), int) and saved["step"] > run.config.train.steps:
        raise ValueError(f"{last} is at step {saved['step']}, past train.steps="
                         f"{run.config.train.steps}; a run can continue to a larger budget, "
                         "not a smaller one")
    try:
        state.model.load_state_dict(saved["model"])
        state.optimizer.load_state_dict(saved["optimizer"])
        state.scheduler.load_state_dict(saved["scheduler"])
        _fit_schedule(run.config, state)
        state.scaler.load_state_dict(saved["scaler"])
        state.step, state.history, state.best, state.bad = (
            saved["step"], saved["history"], saved["best"], saved["bad"])
        _set_rng_state(saved["rng"], run.device)
        running = saved["running"]
        state.loss_sum, state.acc_sum, state.count = (
            running["loss_sum"], running["acc_sum"], running["count"])
        # a last.pt written before the time was kept: its last validation's time_s
        state.time_s = float(running.get("time_s", state.history[-1]["time_s"]
                                         if state.history else 0.0))
        state.segments = saved_segments(saved)
    except (KeyError, TypeError, RuntimeError, ValueError) as exc:
        raise ValueError(f"{last} is not a resumable training state ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''}); delete it, or pass "
                         "resume=False (--no-resume) to start over") from exc
    return True


def saved_segments(saved: dict[str, Any]) -> list[dict[str, Any]]:
    """The training segments of a saved ``last.pt`` or ``checkpoint.pt``; a state written
    before segments were kept had one, from step 0 to its step, over its last ``time_s``, on
    the device it names (the device of its latest call)."""
    if saved.get("segments"):
        return list(saved["segments"])
    history = saved.get("history") or []
    if not history:
        return []
    return [{"steps": [0, int(saved.get("step") or history[-1]["step"])],
             "minutes": round(history[-1]["time_s"] / 60, 2),
             "device": saved.get("device") or "unknown"}]


def record_segment(run: TrainRun, state: TrainState, index: int, first_step: int,
                   base_s: float, time_s: float) -> None:
    """Set ``state.segments[index]``, this call's segment (appended on its first update): the
    steps from ``first_step`` (where the call started) to ``state.step``, the minutes from
    ``base_s`` (the run's ``time_s`` when the call started) to ``time_s`` (its latest), on this
    run's device (:func:`device_label`)."""
    seg = {"steps": [first_step, state.step], "minutes": round(max(time_s - base_s, 0.0) / 60, 2),
           "device": device_label(run.device)}
    if index < len(state.segments):
        state.segments[index] = seg
    else:
        state.segments.append(seg)


def _fit_schedule(config: Config, state: TrainState) -> None:
    """Fit a resumed learning-rate schedule to ``train.steps`` when the budget changed.

    A step schedule does not depend on ``train.steps`` (x ``gamma`` every ``step_size`` steps),
    so a run continued from ``N`` to ``M`` steps follows exactly the schedule of a run started
    with ``M`` steps. A cosine schedule does: it is stretched to the new ``T_max = M`` and the
    learning rate set to the longer cosine's value at the current step, so the rest of the run
    follows a straight ``M``-step run's learning rates; the first ``N`` steps followed the
    shorter cosine, which ended near 0, so the learning rate jumps back up at the continuation
    and the weights differ from a straight ``M``-step run's.
    """
    scheduler = state.scheduler
    if not isinstance(scheduler, torch.optim.lr_scheduler.CosineAnnealingLR):
        return
    t_max = max(1, config.train.steps)
    if scheduler.T_max == t_max:
        return
    logger.info("continuing to %d steps: the cosine schedule of %d steps is stretched to %d "
                "(learning rate at step %d set to the longer schedule's)", t_max,
                scheduler.T_max, t_max, state.step)
    scheduler.T_max = t_max
    epoch = scheduler.last_epoch
    lrs = [scheduler.eta_min + (base - scheduler.eta_min) * (1 + math.cos(math.pi * epoch / t_max))
           / 2 for base in scheduler.base_lrs]
    for group, lr in zip(state.optimizer.param_groups, lrs, strict=True):
        group["lr"] = lr
    scheduler._last_lr = lrs  # what get_last_lr() reports


def _resumable_config(data: Any) -> Any:
    """A saved config with its defaults filled in, less the settings a resumed run may change:
    ``train.on_nonfinite`` (a run stopped by a NaN loss may resume skipping such steps),
    ``train.steps`` (a run may continue to a larger budget; see :func:`_fit_schedule`) and
    ``train.compile`` (speed only)."""
    try:
        data = Config.from_dict(data).to_dict()
    except (ValueError, TypeError):
        return data
    for key in ("on_nonfinite", "steps", "compile"):
        data["train"].pop(key, None)
    return data


def _changed_keys(before: Any, now: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """``(dotted key, saved value, current value)`` of every setting that differs."""
    if isinstance(before, dict) and isinstance(now, dict):
        out = []
        for key in sorted(set(before) | set(now), key=str):
            out += _changed_keys(before.get(key), now.get(key), f"{prefix}{key}.")
        return out
    return [] if before == now else [(prefix.rstrip("."), before, now)]


def write_config(run: TrainRun) -> None:
    """Create the run folder and write the resolved ``config.yaml`` (main process only)."""
    if run.info.is_main:
        run.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run.out / "config.yaml",
                          yaml.safe_dump(run.config.to_dict(), sort_keys=False))


def loss_runner(run: TrainRun, model: FewShotMethod) -> nn.Module:
    """``model.loss`` as a module, wrapped in DistributedDataParallel under torchrun and
    compiled with ``torch.compile`` when ``train.compile`` is on."""
    runner: nn.Module = _LossModule(model)
    if run.info.distributed:
        device = run.device
        runner = nn.parallel.DistributedDataParallel(
            runner, device_ids=[device.index] if device.type == "cuda" else None)
    if run.config.train.compile:
        runner = torch.compile(runner)
    return runner


def training_batch(run: TrainRun, step: int) -> Episode:
    """Training episodes of step ``step`` (augmented if asked), on the run's device."""
    episode = run.sampler.episode_batch(run.train_ds, step)
    if run.augment.active:
        g = torch.Generator().manual_seed(episode_seed(run.config.train.seed ^ _AUGMENT_SALT,
                                                       step))
        episode = replace(episode, support=_warp(run.augment, episode.support, g),
                          query=_warp(run.augment, episode.query, g))
        if episode.unlabelled is not None:  # after the others: their warps stay the same
            episode = replace(episode, unlabelled=_warp(run.augment, episode.unlabelled, g))
    return episode.to(run.device, non_blocking=True)


def train_step(run: TrainRun, state: TrainState, runner: nn.Module) -> float:
    """One optimisation step on batch ``state.step``; adds to the running sums.

    Args:
        run: the run.
        state: updated in place (weights, optimiser, scheduler, ``step``, running sums).
        runner: :func:`loss_runner` of ``state.model``.

    Returns:
        the training loss of this step (before the update).
    """
    episode = training_batch(run, state.step)
    # a skipped step must not keep what its forward pass did to BatchNorm statistics
    buffers = ([b.detach().clone() for b in state.model.buffers()]
               if run.config.train.on_nonfinite == "skip" else [])
    with autocast_context(run.device, run.amp):
        loss, logits = runner(episode)
    if not _all_finite(run, loss):
        if run.config.train.on_nonfinite == "skip":
            with torch.no_grad():
                for b, saved in zip(state.model.buffers(), buffers, strict=True):
                    b.copy_(saved)
        return _nonfinite_step(run, state, float(loss.detach()))
    opt, scaler = state.optimizer, state.scaler
    if loss.requires_grad:  # a model without trainable parameters (ProtoNet on features) has
        opt.zero_grad(set_to_none=True)  # nothing to update: the step only counts
        scaler.scale(loss).backward()
        if run.config.train.grad_clip > 0:
            scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(state.model.parameters(), run.config.train.grad_clip)
        scaler.step(opt)
        scaler.update()
        state.scheduler.step()
    state.step += 1
    loss_value = float(loss.detach())
    state.loss_sum += loss_value
    state.acc_sum += float((logits.detach().argmax(-1) == episode.query_labels).float().mean())
    state.count += 1
    return loss_value


class NonFiniteLoss(ValueError):
    """The training loss became NaN or infinite (``train.on_nonfinite: stop``)."""


def _all_finite(run: TrainRun, loss: torch.Tensor) -> bool:
    """Whether the loss is finite on every process (all of them must take the same branch)."""
    finite = torch.isfinite(loss.detach()).all()
    if run.info.distributed:
        flag = finite.to(torch.float32).reshape(1)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
        return bool(flag.item() > 0)
    return bool(finite)


def _nonfinite_step(run: TrainRun, state: TrainState, loss: float) -> float:
    """Skip the update of a step whose loss is not finite, or stop the run (``on_nonfinite``).

    A skipped step still counts (``step`` and the scheduler advance, so batch ``t`` stays
    batch ``t``) but changes no weight or buffer (:func:`train_step` restores the BatchNorm
    statistics its forward pass touched) and adds nothing to the running loss and accuracy.

    Raises:
        NonFiniteLoss: ``train.on_nonfinite`` is ``"stop"``.
    """
    t = run.config.train
    if t.on_nonfinite == "stop":
        last = state.history[-1]["step"] if state.history else None
        kept = (f"{run.out / 'last.pt'} and checkpoint.pt are those of step {last}"
                if last is not None else "no checkpoint was written yet")
        raise NonFiniteLoss(
            f"the training loss is {loss} at step {state.step + 1}; stopped ({kept}). Lower "
            "train.lr or set train.grad_clip, or set train.on_nonfinite=skip to skip such steps "
            "(a stopped run then resumes with the same --out)")
    warnings.warn(f"training loss is {loss} at step {state.step + 1}: step skipped "
                  "(train.on_nonfinite=skip)", RuntimeWarning, stacklevel=3)
    state.optimizer.zero_grad(set_to_none=True)
    state.scheduler.step()
    state.step += 1
    return loss


def is_validation_step(run: TrainRun, step: int) -> bool:
    """Validate every ``train.val_every`` steps and after the last step."""
    return step % run.config.train.val_every == 0 or step == run.config.train.steps


def end_interval(run: TrainRun, state: TrainState, started: float) -> dict[str, Any]:
    """The metrics row of the steps since the last validation (averaged over all processes);
    resets the running sums. ``val_acc`` and ``val_ci95`` are left to :func:`validate`.

    ``started`` is the :func:`time.perf_counter` of this call's first step (for ``time_s``).
    """
    if run.info.distributed:  # log the mean over all ranks' episodes
        sums = torch.tensor([state.loss_sum, state.acc_sum], dtype=torch.float64,
                            device=run.device)
        torch.distributed.all_reduce(sums)
        state.loss_sum, state.acc_sum = (sums / run.info.world_size).tolist()
    row: dict[str, Any] = {
        "step": state.step, "train_loss": state.loss_sum / state.count if state.count else math.nan,
        "train_acc": 100 * state.acc_sum / state.count if state.count else math.nan,
        "val_acc": None, "val_ci95": None,
        "lr": state.optimizer.param_groups[0]["lr"],
        "time_s": round(time.perf_counter() - started, 3)}
    state.loss_sum = state.acc_sum = 0.0
    state.count = 0
    return row


def validation_result(model: FewShotMethod, val_ds: FewShotDataset, config: Config,
                      device: torch.device | str = "cpu", amp: bool | str = False
                      ) -> dict[str, Any]:
    """``model`` on a config's fixed validation episodes: ``train.val_episodes`` episodes of the
    ``eval`` section's shape, seed :data:`VAL_SEED` (the episodes :func:`validate` scores, so a
    checkpoint scores its recorded best validation accuracy on them).

    Returns:
        :func:`relgraph.engine.evaluate`'s result (accuracy and ci95 in %).
    """
    t, v = config.train, config.eval
    return evaluate(model, val_ds, v.ways, v.shots, v.queries, t.val_episodes,
                    seed=VAL_SEED, episodes_per_batch=v.episodes_per_batch, device=device,
                    amp=amp, within_alphabet=v.within_alphabet, unlabelled=v.unlabelled,
                    distractors=v.distractors, too_small=config.data.too_small)


def validate(run: TrainRun, state: TrainState, row: dict[str, Any]) -> bool:
    """Evaluate on the fixed validation episodes (seed :data:`VAL_SEED`), add ``row`` to the
    history, and keep the model in ``checkpoint.pt`` if it is the best so far.

    Without validation classes the latest model is the one kept.

    Returns:
        whether the model improved on the best validation accuracy.
    """
    if run.val_ds is not None:
        res = validation_result(state.model, run.val_ds, run.config, run.device, run.amp)
        row["val_acc"], row["val_ci95"] = res["accuracy"], res["ci95"]
        improved = res["accuracy"] > state.best["val_acc"]
    else:
        improved = True  # no validation: the latest model is the one to keep
    state.history.append(row)
    if improved:
        state.best = {"step": state.step, "val_acc": row["val_acc"], "val_ci95": row["val_ci95"]}
        state.bad = 0
        save_best(run, state)
    else:
        state.bad += 1
    return improved


def device_label(device: torch.device | str, threads: int | None = None) -> str:
    """The device a run trains on, in words, as the results pages print it: the GPU's name,
    ``"CPU, N threads"`` (``threads``, by default this process's torch threads), or the
    device's name for other devices."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type != "cpu":
        return str(device)
    threads = torch.get_num_threads() if threads is None else threads
    return f"CPU, {threads} thread" + ("" if threads == 1 else "s")


def _run_payload(run: TrainRun) -> dict[str, Any]:
    # the training classes (characters, without rotations): evaluate warns if it scores them
    return {"config": run.config.to_dict(), "preprocessing": run.preprocessing,
            "num_classes": run.train_ds.num_classes, "device": device_label(run.device),
            "train_classes": base_class_names(run.train_ds.class_names)}


def save_best(run: TrainRun, state: TrainState) -> None:
    """Write ``checkpoint.pt``: the model and everything needed to use it (main process)."""
    if run.info.is_main:
        save_checkpoint(run.out / "checkpoint.pt", {
            **_run_payload(run), "model": state.model.state_dict(), "step": state.step,
            "best": state.best, "history": state.history, "segments": state.segments})


def save_last(run: TrainRun, state: TrainState) -> None:
    """Write ``last.pt``: the whole training state, to resume exactly (main process)."""
    if run.info.is_main:
        save_checkpoint(run.out / "last.pt", {
            **_run_payload(run), "model": state.model.state_dict(),
            "optimizer": state.optimizer.state_dict(), "scheduler": state.scheduler.state_dict(),
            "scaler": state.scaler.state_dict(), "step": state.step, "history": state.history,
            "best": state.best, "bad": state.bad, "rng": _rng_state(run.device),
            "running": state.running(), "segments": state.segments})


def log(run: TrainRun, history: list[dict[str, Any]]) -> None:
    """Write ``metrics.csv`` and ``curves.png`` (main process)."""
    if not run.info.is_main:
        return
    config, t, v = run.config, run.config.train, run.config.eval
    _write_metrics(run.out, history)
    _plot_curves(run.out, history, f"{config.method} / {config.backbone} on {config.data.dataset}",
                 f"training episodes ({t.ways}-way {t.shots}-shot)",
                 f"validation ({v.ways}-way {v.shots}-shot)")


class _StopSignals:
    """Turn SIGTERM and SIGINT (Ctrl-C) into a request to stop after the current step.

    The loop then saves ``last.pt`` and returns, so the same command resumes exactly. A second
    signal interrupts at once (``KeyboardInterrupt``; ``last.pt`` is that of the last save).
    Handlers are installed only in the main thread of a single-process run: under
    ``torchrun`` a rank that stopped alone would leave the others waiting in a collective, so
    there the signals keep their default effect and the run resumes from the last validation.
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:  # noqa: ARG002
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = signum

    def __enter__(self) -> _StopSignals:
        if self.enabled:
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    @property
    def name(self) -> str | None:
        return None if self.received is None else signal.Signals(self.received).name


def train(
    config: Config,
    out: str | Path,
    resume: bool = True,
    progress: bool = True,
    stop_after: int | None = None,
    fit_validation: bool = False,
) -> dict[str, Any]:
    """Train ``config`` and write the run into ``out`` (see the module docstring).

    The loop, piece by piece: :func:`setup` (checks, data, episodes), :func:`build_state`
    (model, optimiser), :func:`resume_from_last`, then :func:`train_step` until the next
    validation, where :func:`end_interval`, :func:`validate` (and :func:`save_best`),
    :func:`save_last` and :func:`log` run.

    Args:
        config: the experiment.
        out: output folder.
        resume: continue from ``out/last.pt`` when it exists (same config required).
        progress: show a tqdm progress bar.
        stop_after: run at most this many steps in this call, then save ``last.pt`` and
            return (``"finished": False``); a later call resumes.
        fit_validation: fit the validation episodes to the validation classes (see
            :func:`setup`).

    Resuming is logged (logger ``relgraph.engine.trainer``, level INFO), and the metrics'
    ``time_s`` goes on from the resumed run's total.

    A fresh run seeds torch's global generator (dropout masks) from ``train.seed``; a resumed
    one restores it from ``last.pt``.

    Faults: the run folder is locked (``out/.lock``) while training, so a second run on it
    refuses; SIGTERM or Ctrl-C stops after the current step with ``last.pt`` saved
    (``"interrupted"`` names the signal); a NaN or infinite loss stops or skips the step
    (``train.on_nonfinite``); checkpoints are written atomically. See the "When things go wrong"
    page of the documentation.

    Returns:
        ``{"out", "step", "finished", "stopped_early", "interrupted", "resumed_from" (step,
        or ``None``), "config" (as run: validation episodes possibly fitted), "best", "history",
        "segments"}``; ``interrupted`` is ``None`` or the signal's name (``"SIGTERM"``,
        ``"SIGINT"``), ``best`` is ``{"step", "val_acc", "val_ci95"}``, ``segments`` the run's
        compute per call that trained (:func:`record_segment`).

    Raises:
        ValueError: a bad setting (before anything is written); :class:`NonFiniteLoss`;
            :class:`relgraph.engine.lock.RunFolderLocked` (another run trains in ``out``).
        relgraph.utils.WriteFailed: a checkpoint or log could not be written (full disk...);
            the previous files are intact.
    """
    run = setup(config, out, fit_validation=fit_validation)
    state = build_state(run)
    with contextlib.ExitStack() as stack:
        if run.info.is_main:
            stack.enter_context(run_lock(run.out))
            remove_stale_temp_files(run.out)  # of a write interrupted by kill -9
        barrier(run.info)  # the other ranks read last.pt only once rank 0 holds the folder
        signals = stack.enter_context(_StopSignals(not run.info.distributed))
        return _loop(run, state, resume, progress, stop_after, signals)


def _loop(run: TrainRun, state: TrainState, resume: bool, progress: bool,
          stop_after: int | None, signals: _StopSignals) -> dict[str, Any]:
    """The body of :func:`train`, holding the run folder's lock."""
    config = run.config
    t = config.train
    resumed = resume and resume_from_last(run, state)
    if resumed and run.info.is_main:
        logger.info("resuming %s from step %d of %d (%s)", run.out, state.step, config.train.steps,
                    run.out / "last.pt")
    if not resumed:  # the global generator draws dropout masks: seeded, as a resume restores it
        torch.manual_seed(episode_seed(t.seed ^ _GLOBAL_RNG_SALT, run.info.rank))
    write_config(run)
    runner = loss_runner(run, state.model)
    state_start = state.step
    run_until = t.steps if stop_after is None else min(t.steps, state.step + stop_after)
    # a run that stopped early (train.patience) stays stopped when its command runs again
    stopped_early = bool(resumed and t.patience and state.bad >= t.patience)
    if stopped_early:
        run_until = state.step
    # time_s goes on from the resumed run's total (up to its last save: a validation or a stop)
    base_s = state.time_s
    started = time.perf_counter() - base_s
    segment = len(state.segments)  # this call's entry in state.segments, once it trains
    bar = tqdm(total=t.steps, initial=state.step, desc=f"train {config.method}", unit="step",
               disable=not (progress and run.info.is_main), dynamic_ncols=True)
    state.model.train()
    while state.step < run_until:
        train_step(run, state, runner)
        bar.update(1)
        if signals.received is not None and not is_validation_step(run, state.step):
            break
        if not is_validation_step(run, state.step):
            continue
        row = end_interval(run, state, started)
        state.time_s = row["time_s"]
        record_segment(run, state, segment, state_start, base_s, row["time_s"])
        validate(run, state, row)
        bar.set_postfix(loss=f"{row['train_loss']:.3f}",
                        val=f"{row['val_acc']:.2f}" if row["val_acc"] is not None else "-")
        save_last(run, state)
        log(run, state.history)
        if t.patience and state.bad >= t.patience:
            stopped_early = True
            break
        if signals.received is not None:
            break
        state.model.train()
    bar.close()
    if state.step < t.steps and not stopped_early and not is_validation_step(run, state.step):
        if state.step > state_start:  # its minutes end at the stop, kept in last.pt
            state.time_s = round(time.perf_counter() - started, 3)
            record_segment(run, state, segment, state_start, base_s, state.time_s)
        save_last(run, state)  # stopped between validations: keep the exact state
    barrier(run.info)
    finished = stopped_early or state.step >= t.steps
    return {"out": str(run.out), "step": state.step, "finished": finished,
            "resumed_from": state_start if resumed else None, "config": run.config,
            "stopped_early": stopped_early, "interrupted": signals.name, "best": state.best,
            "history": state.history, "segments": state.segments}
