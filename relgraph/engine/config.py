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

Every value is checked against its field's type hint when a config is built from a dict (a YAML
file, a checkpoint, ``--set`` overrides), and a wrong one is a :class:`ValueError` naming the
dotted key, what was expected and what came::

    train.lr: expected a number, got 'abc' (str)

``int`` fields take integers (not booleans); ``float`` fields take integers, floats and
numeric strings (YAML 1.1 reads ``1e-3`` as the string ``"1e-3"``; it becomes ``0.001``);
``bool`` fields take booleans only; ``list[str]`` and ``dict[str, ...]`` fields take lists and
mappings of those types. Fields with a fixed set of values (``train.optimizer``,
``train.scheduler``, ``train.on_nonfinite``) or a range (``train.steps >= 1``, ``train.lr > 0``,
``0 <= data.val_fraction < 1``, ...) are checked too; their limits are in each field's
``metadata``.
"""

from __future__ import annotations

import dataclasses
import math
import operator
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = ["Config", "DataConfig", "TrainConfig", "EvalConfig", "load_config"]

# Field limits, kept in ``dataclasses.field(metadata=...)`` and checked by ``_check_limits``:
# ``min`` (>=), ``above`` (>), ``below`` (<), ``choices`` (one of).
_AT_LEAST_0 = {"min": 0}
_AT_LEAST_1 = {"min": 1}


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
        alphabets: keep only these alphabets of the training data (before a ``val_alphabets``
            or ``val_fraction`` hold-out; a ``val_split`` is not filtered).
        split: the dataset's own split to train on (e.g. ``"train"``), if it has one;
            required with ``val_split``.
        val_split: the dataset's own split to validate on (e.g. ``"val"``).
        val_alphabets: alphabets of the training roots held out for validation.
        val_fraction: fraction of training classes held out for validation.
        image_size: image side length.
        rotations: add rotated copies (90/180/270) of training classes as new classes.
        rotated_alphabets: with ``rotations``, the rotated copies of an alphabet are alphabets
            of their own, so within-alphabet training episodes (``train.within_alphabet``) hold
            one orientation, like the upright test episodes (see
            :class:`relgraph.data.RotatedClasses`).
        augment: random affine warps of training images, e.g. ``{rotate: 10, scale: 0.1,
            shear: 10, translate: 0.1}`` (see :class:`relgraph.data.augment.AffineAugment`);
            images with a black background only (``padding`` is 0).
        too_small: classes with fewer than ``shots + queries`` examples: ``"error"`` stops
            with a message naming them, ``"skip"`` leaves them out of the episodes (warning).
        options: extra dataset keyword arguments.
    """

    dataset: str = "glyphs"
    roots: list[str] = field(default_factory=list)
    alphabets: list[str] | None = None
    split: str | None = None
    val_split: str | None = None
    val_alphabets: list[str] | None = None
    val_fraction: float = field(default=0.2, metadata={"min": 0, "below": 1})
    image_size: int | None = field(default=28, metadata={"min": 1})
    rotations: bool = False
    rotated_alphabets: bool = False
    augment: dict[str, float] = field(default_factory=dict)
    too_small: str = field(default="error", metadata={"choices": ("error", "skip")})
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
        amp: mixed precision (autocast in ``amp_dtype``): on GPU; on the CPU only with
            ``amp_dtype: bfloat16`` (otherwise ignored there).
        amp_dtype: ``"float16"`` (with loss scaling) or ``"bfloat16"`` (float32's range, no
            loss scaling; Ampere GPUs and later, and CPUs: fast with AMX / AVX-512 bf16 units,
            see ``experiments/results/bench_amp_cpu.md``).
        compile: run the training step's forward and loss through ``torch.compile`` (speed
            only: a resumed run may turn it on or off). Training episodes keep one shape, so
            it compiles once; validation runs uncompiled.
        grad_clip: clip the gradient norm to this value (0: off).
        within_alphabet: draw all classes of a training episode from one alphabet (harder
            episodes, as in the Omniglot challenge; needs a dataset with alphabets).
        init_from: start the backbone from the weights of another run's ``checkpoint.pt`` or
            run folder (e.g. a ProtoNet run, before training a relational head on top); its
            backbone must have the same architecture. ``None``: random initialisation.
        backbone_lr_scale: the backbone's learning rate is ``lr * backbone_lr_scale`` (the
            rest of the model uses ``lr``); below 1 keeps a pre-trained backbone (see
            ``init_from``) close to its start while a relational head learns on top. 0 freezes
            the backbone: its weights, and its BatchNorm layers, which keep using the running
            statistics they came with (eval mode) while the rest trains.
        unlabelled: semi-supervised training episodes: unlabelled examples per episode class
            (see :class:`~relgraph.data.EpisodeSampler`); 0 (default): none.
        distractors: distractor classes per training episode (with ``unlabelled``).
        on_nonfinite: what a NaN or infinite training loss does: ``"stop"`` the run with a
            clear error (``last.pt`` and ``checkpoint.pt`` stay those of the last validation)
            or ``"skip"`` that step's update with a warning (the step still counts).
    """

    ways: int = field(default=20, metadata=_AT_LEAST_1)
    shots: int = field(default=1, metadata=_AT_LEAST_1)
    queries: int = field(default=5, metadata=_AT_LEAST_1)
    episodes_per_batch: int = field(default=1, metadata=_AT_LEAST_1)
    steps: int = field(default=2000, metadata=_AT_LEAST_1)
    optimizer: str = field(default="adam", metadata={"choices": ("adam", "adamw", "sgd")})
    lr: float = field(default=1e-3, metadata={"above": 0})
    weight_decay: float = field(default=0.0, metadata=_AT_LEAST_0)
    momentum: float = field(default=0.9, metadata=_AT_LEAST_0)
    scheduler: str = field(default="step", metadata={"choices": ("none", "step", "cosine")})
    step_size: int = field(default=1000, metadata=_AT_LEAST_1)
    gamma: float = field(default=0.5, metadata={"above": 0})
    val_every: int = field(default=250, metadata=_AT_LEAST_1)
    val_episodes: int = field(default=200, metadata=_AT_LEAST_1)
    patience: int = field(default=0, metadata=_AT_LEAST_0)
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    amp_dtype: str = field(default="float16", metadata={"choices": ("float16", "bfloat16")})
    compile: bool = False
    grad_clip: float = field(default=0.0, metadata=_AT_LEAST_0)
    within_alphabet: bool = False
    init_from: str | None = None
    backbone_lr_scale: float = field(default=1.0, metadata=_AT_LEAST_0)
    unlabelled: int = field(default=0, metadata=_AT_LEAST_0)
    distractors: int = field(default=0, metadata=_AT_LEAST_0)
    on_nonfinite: str = field(default="stop", metadata={"choices": ("stop", "skip")})


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
        unlabelled, distractors: semi-supervised evaluation (and validation) episodes: ``U``
            unlabelled examples of each episode class and of ``D`` distractor classes.
        tta: test-time augmentation of the final evaluation: each image's embedding averaged
            over this many fixed small warps (:mod:`relgraph.engine.tta`; ``1`` = off, at most
            9). Per image, so an inductive method stays inductive. Validation during training
            does not use it (choose it on validation episodes with ``relgraph evaluate --tta``).
    """

    ways: int = field(default=5, metadata=_AT_LEAST_1)
    shots: int = field(default=1, metadata=_AT_LEAST_1)
    queries: int = field(default=15, metadata=_AT_LEAST_1)
    episodes: int = field(default=1000, metadata=_AT_LEAST_1)
    seed: int = 0
    episodes_per_batch: int = field(default=20, metadata=_AT_LEAST_1)
    within_alphabet: bool = False
    unlabelled: int = field(default=0, metadata=_AT_LEAST_0)
    distractors: int = field(default=0, metadata=_AT_LEAST_0)
    tta: int = field(default=1, metadata={"min": 1, "below": 10})


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
        """Build from a dict, checking every value (see the module docstring).

        Raises:
            ValueError: an unknown key (the valid ones are listed), or a value of the wrong
                type or out of its field's range (the dotted key is named).
        """
        return _from_dict(cls, data or {}, "")

    def override(self, dotted: dict[str, Any], keep_none: bool = False) -> Config:
        """A copy with ``{"train.lr": 0.01, ...}`` values replaced.

        ``None`` values are skipped (a flag not given), unless ``keep_none``: then they are set
        (``--set train.init_from=null`` clears a value). A mapping given for a whole section
        (``{"train": {"lr": 0.01}}``) updates the keys it names and keeps the others; a free-form
        mapping (``method_args``, ``backbone_args``, ``data.options``, ``data.augment``) is
        replaced as given. The result goes through the same checks as :meth:`from_dict`, so
        ``--set`` values (strings parsed by YAML) are checked and coerced like those of a
        config file.
        """
        data = self.to_dict()
        for key, value in dotted.items():
            if value is None and not keep_none:
                continue
            node = data
            parts = key.split(".")
            for part in parts[:-1]:
                if part not in node or not isinstance(node[part], dict):
                    sections = sorted(k for k, v in node.items() if isinstance(v, dict))
                    raise ValueError(f"unknown config key {key!r}: {part!r} is not a section; "
                                     f"sections here: {', '.join(sections)}")
                node = node[part]
            free_form = len(parts) >= 2 and parts[-2] in _FREE_FORM
            if parts[-1] not in node and not free_form:
                raise ValueError(f"unknown config key {key!r}; valid keys here: "
                                 f"{', '.join(sorted(node))}")
            section = (isinstance(value, dict) and isinstance(node.get(parts[-1]), dict)
                       and not free_form and parts[-1] not in _FREE_FORM)
            node[parts[-1]] = {**node[parts[-1]], **value} if section else value
        return Config.from_dict(data)


def _from_dict(cls: type, data: dict[str, Any], prefix: str) -> Any:
    """Build the dataclass ``cls`` from ``data``, checking and coercing every value."""
    if not isinstance(data, dict):
        raise ValueError(f"config section {prefix or '<root>'!r} must be a mapping, "
                         f"got {type(data).__name__}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        where = f" in section {prefix.rstrip('.')!r}" if prefix else ""
        raise ValueError(f"unknown config key(s) {unknown}{where}; valid keys: "
                         f"{', '.join(sorted(known))}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        key = prefix + name
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _from_dict(hint, value or {}, f"{key}.")
        else:
            kwargs[name] = _check_limits(_coerce(value, hint, key), known[name].metadata, key)
    return cls(**kwargs)


def _got(value: Any) -> str:
    return f"got {value!r} ({type(value).__name__})"


def _expected(hint: Any) -> str:
    """``hint`` in words, for error messages."""
    if hint is bool:
        return "true or false"
    if hint is int:
        return "an integer"
    if hint is float:
        return "a number"
    if hint is str:
        return "a string"
    if hint is Any:
        return "a value"
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        return " or ".join("null" if a is type(None) else _expected(a) for a in args)
    if origin is list:
        return f"a list of {_expected(args[0]).split(' ', 1)[-1]}s"
    if origin is dict:
        return f"a mapping of {_expected(args[0]).split(' ', 1)[-1]} keys to " + (
            "any values" if args[1] is Any else f"{_expected(args[1]).split(' ', 1)[-1]}s")
    return str(hint)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """``value`` checked against the type hint ``hint``; numeric strings become floats.

    Raises:
        ValueError: ``key: expected ..., got ...``.
    """
    if hint is Any:
        return value
    if hint is bool or hint is str:
        if isinstance(value, hint):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        number = value
        if isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                number = None
        if (isinstance(number, (int, float)) and not isinstance(number, bool)
                and math.isfinite(number)):
            return number  # integers stay integers (1 and 1.0 train identically)
    else:
        origin, args = typing.get_origin(hint), typing.get_args(hint)
        if origin in (types.UnionType, typing.Union) and type(None) in args:
            if value is None:
                return None
            (inner,) = [a for a in args if a is not type(None)]
            if isinstance(value, (list, dict)):
                return _coerce(value, inner, key)  # a wrong item is named by its own key
            try:
                return _coerce(value, inner, key)
            except ValueError:
                pass  # reported below as "expected ... or null"
        elif origin is list and isinstance(value, list):
            return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
        elif origin is dict and isinstance(value, dict):
            return {_coerce(k, args[0], f"{key} key {k!r}"): _coerce(v, args[1], f"{key}.{k}")
                    for k, v in value.items()}
    raise ValueError(f"{key}: expected {_expected(hint)}, {_got(value)}")


def _check_limits(value: Any, limits: typing.Mapping[str, Any], key: str) -> Any:
    """``value`` checked against a field's ``choices`` / ``min`` / ``above`` / ``below``."""
    if value is None:
        return value
    choices = limits.get("choices")
    if choices is not None and value not in choices:
        raise ValueError(f"{key}: expected one of {', '.join(map(repr, choices))}, "
                         f"{_got(value)}")
    bounds = [(op, limits[name], check) for op, name, check in
              ((">=", "min", operator.ge), (">", "above", operator.gt), ("<", "below", operator.lt))
              if name in limits]
    if not all(check(value, bound) for _, bound, check in bounds):
        wanted = " and ".join(f"{op} {bound}" for op, bound, _ in bounds)
        raise ValueError(f"{key}: expected a value {wanted}, got {value!r}")
    return value


#: Config keys whose values are free-form mappings (passed on as keyword arguments).
_FREE_FORM = ("method_args", "backbone_args", "options", "augment")


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (YAML keeps the last
    silently, so a second ``train:`` section would drop the first)."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while reading a mapping", node.start_mark,
                f"the key {key!r} is given twice (line {key_node.start_mark.line + 1}); "
                "keep one", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def load_config(path: str | os.PathLike[str] | None = None,
                overrides: dict[str, Any] | None = None) -> Config:
    """Read a YAML config (or start from defaults) and apply dotted overrides.

    Args:
        path: a YAML file; ``None`` starts from the defaults.
        overrides: ``{"train.steps": 100, ...}``; ``None`` values are ignored.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a mapping, has unknown keys (they are listed) or a
            key given twice.
    """
    config = Config()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} not found")
        try:
            data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
        except UnicodeDecodeError as exc:
            raise ValueError(f"{path} is not UTF-8 text (byte {exc.start}): is it the right "
                             "file?") from exc
        except yaml.YAMLError as exc:
            raise ValueError(f"{path} is not valid YAML: {exc}") from exc
        if data is None:
            raise ValueError(f"{path} is empty: a config file gives the settings that differ "
                             "from the defaults (see relgraph.engine.Config)")
        try:
            config = Config.from_dict(data)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{path}: {exc}") from exc
    return config.override(overrides or {})
