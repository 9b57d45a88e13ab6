"""Experiment configuration: one YAML file per experiment, command-line overrides on top.

A config has four parts::

    method: protonet            # a registered method
    method_args: {distance: euclidean}
    backbone: conv4             # a registered backbone
    backbone_args: {}
    data:                       # where episodes come from (see DataConfig)
      dataset: omniglot
      roots: [../shared/data/omniglot/images_background_small1.zip]
      rotations: true
      val_fraction: 0.2
    train: {ways: 60, shots: 1, queries: 5, steps: 3000, lr: 0.001, ...}
    eval: {ways: 5, shots: 1, queries: 15, episodes: 1000}

Relative ``roots`` in a config file are resolved against the current directory (the project
root, for the configs under ``experiments/``).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = ["Config", "DataConfig", "TrainConfig", "EvalConfig", "load_config"]


@dataclass
class DataConfig:
    """Where training and validation episodes come from.

    Validation classes are, in order of precedence: the dataset's own ``val_split`` (e.g.
    ``glyphs`` ``split: val``), the ``val_alphabets`` held out of the training roots, or a
    seeded random ``val_fraction`` of the training classes. Test classes are never used in
    training or model selection.

    Attributes:
        dataset: registered dataset name.
        roots: data paths.
        alphabets: keep only these alphabets (before the validation hold-out).
        split: the dataset's own split to train on (e.g. ``"train"``), if it has one.
        val_split: the dataset's own split to validate on (e.g. ``"val"``).
        val_alphabets: alphabets of the training roots held out for validation.
        val_fraction: fraction of training classes held out for validation.
        image_size: image side length.
        rotations: add rotated copies (90/180/270) of training classes as new classes.
        augment: random affine warps of training images, e.g. ``{rotate: 10, scale: 0.1,
            shear: 10, translate: 0.1}`` (see :class:`relgraph.data.augment.AffineAugment`);
            images with a black background only (``padding`` is 0).
        options: extra dataset keyword arguments.
    """

    dataset: str = "glyphs"
    roots: list[str] = field(default_factory=list)
    alphabets: list[str] | None = None
    split: str | None = None
    val_split: str | None = None
    val_alphabets: list[str] | None = None
    val_fraction: float = 0.2
    image_size: int | None = 28
    rotations: bool = False
    augment: dict[str, float] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainConfig:
    """Episodic training.

    Attributes:
        ways, shots, queries: the training episodes' shape.
        episodes_per_batch: episodes per optimisation step (per process).
        steps: optimisation steps.
        optimizer: ``"adam"``, ``"adamw"`` or ``"sgd"``.
        lr, weight_decay, momentum: optimiser settings.
        scheduler: ``"none"``, ``"step"`` (x ``gamma`` every ``step_size`` steps) or ``"cosine"``.
        step_size, gamma: step scheduler settings.
        val_every: validate every this many steps.
        val_episodes: fixed validation episodes (ways/shots/queries from ``eval``).
        patience: stop after this many validations without improvement (0: never stop early).
        seed: seed of the training episodes and of the model's initialisation.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"`` (``"cuda:1"``...).
        amp: mixed precision on GPU (fp16 autocast with loss scaling); ignored on CPU.
        grad_clip: clip the gradient norm to this value (0: off).
        within_alphabet: draw all classes of a training episode from one alphabet (harder
            episodes, as in the Omniglot challenge; needs a dataset with alphabets).
        init_from: start the backbone from the weights of another run's ``checkpoint.pt``
            (e.g. a ProtoNet run, before training a relational head on top); its backbone
            must have the same architecture. ``None``: random initialisation.
        backbone_lr_scale: the backbone's learning rate is ``lr * backbone_lr_scale`` (the
            rest of the model uses ``lr``); below 1 keeps a pre-trained backbone (see
            ``init_from``) close to its start while a relational head learns on top. 0 freezes
            the backbone's weights (its BatchNorm running statistics still follow the training
            images).
    """

    ways: int = 20
    shots: int = 1
    queries: int = 5
    episodes_per_batch: int = 1
    steps: int = 2000
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    scheduler: str = "step"
    step_size: int = 1000
    gamma: float = 0.5
    val_every: int = 250
    val_episodes: int = 200
    patience: int = 0
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    grad_clip: float = 0.0
    within_alphabet: bool = False
    init_from: str | None = None
    backbone_lr_scale: float = 1.0


@dataclass
class EvalConfig:
    """The evaluation protocol: fixed, seeded episodes.

    Attributes:
        ways, shots, queries: the test episodes' shape.
        episodes: number of episodes (1,000 for reports; 600 or 10,000 also common).
        seed: seed of the evaluation episodes (independent of training).
        episodes_per_batch: episodes evaluated at once (speed only; results do not change).
        within_alphabet: all classes of an episode from one alphabet (the Omniglot challenge's
            protocol); also used for the validation episodes during training.
    """

    ways: int = 5
    shots: int = 1
    queries: int = 15
    episodes: int = 1000
    seed: int = 0
    episodes_per_batch: int = 20
    within_alphabet: bool = False


@dataclass
class Config:
    """A whole experiment: method, backbone, data, training and evaluation protocol."""

    method: str = "protonet"
    method_args: dict[str, Any] = field(default_factory=dict)
    backbone: str = "conv4"
    backbone_args: dict[str, Any] = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    # -- conversions --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain dict (YAML/JSON/checkpoint friendly)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        """Build from a dict, rejecting unknown keys with the list of valid ones."""
        return _from_dict(cls, data or {}, "")

    def override(self, dotted: dict[str, Any]) -> Config:
        """A copy with ``{"train.lr": 0.01, ...}`` values replaced (``None`` values skipped)."""
        data = self.to_dict()
        for key, value in dotted.items():
            if value is None:
                continue
            node = data
            parts = key.split(".")
            for part in parts[:-1]:
                if part not in node or not isinstance(node[part], dict):
                    raise ValueError(f"unknown config key {key!r}")
                node = node[part]
            free_form = len(parts) >= 2 and parts[-2] in ("method_args", "backbone_args",
                                                          "options", "augment")
            if parts[-1] not in node and not free_form:
                raise ValueError(f"unknown config key {key!r}; valid keys here: "
                                 f"{', '.join(sorted(node))}")
            node[parts[-1]] = value
        return Config.from_dict(data)


def _from_dict(cls: type, data: dict[str, Any], prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ValueError(f"config section {prefix or '<root>'!r} must be a mapping, "
                         f"got {type(data).__name__}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        where = f" in section {prefix.rstrip('.')!r}" if prefix else ""
        raise ValueError(f"unknown config key(s) {unknown}{where}; valid keys: "
                         f"{', '.join(sorted(known))}")
    kwargs = {}
    for name, value in data.items():
        sub = {"data": DataConfig, "train": TrainConfig, "eval": EvalConfig}.get(name)
        if cls is Config and sub is not None:
            kwargs[name] = _from_dict(sub, value or {}, f"{name}.")
        else:
            kwargs[name] = value
    return cls(**kwargs)


def load_config(path: str | os.PathLike[str] | None = None,
                overrides: dict[str, Any] | None = None) -> Config:
    """Read a YAML config (or start from defaults) and apply dotted overrides.

    Args:
        path: a YAML file; ``None`` starts from the defaults.
        overrides: ``{"train.steps": 100, ...}``; ``None`` values are ignored.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a mapping or has unknown keys (they are listed).
    """
    config = Config()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} not found")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ValueError(f"{path} is not valid YAML: {exc}") from exc
        try:
            config = Config.from_dict(data or {})
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{path}: {exc}") from exc
    return config.override(overrides or {})
