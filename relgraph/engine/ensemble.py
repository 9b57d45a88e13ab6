"""Ensembles: several trained models classify the same episodes, their predictions averaged.

An :class:`Ensemble` is a :class:`~relgraph.methods.FewShotMethod` like any other, so
:func:`~relgraph.engine.evaluate`, :func:`~relgraph.engine.choose_tta` and
``relgraph evaluate --checkpoint A --checkpoint B`` take it unchanged. When every member is a
relational head, evaluation still embeds each distinct image once (each member's embedding,
side by side) and relates all episodes on the cached features.

Each member classifies each query on its own, so an ensemble of inductive models is inductive.
It costs the sum of its members at test time (and their training), which a comparison with a
single model should state.

Example:
    >>> model, _ = load_ensemble(["runs/a", "runs/b"])  # doctest: +SKIP
    >>> evaluate(model, val, ways=20, shots=1)  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from relgraph.data.episode import Episode
from relgraph.engine.trainer import load_model
from relgraph.engine.tta import with_tta
from relgraph.methods.base import FewShotMethod
from relgraph.nn.precision import compute_dtype

__all__ = ["Ensemble", "load_ensemble", "COMBINE"]

#: How member predictions are combined: ``"prob"`` averages the class probabilities (softmax of
#: each member's logits) and returns the log of the mean; ``"logit"`` averages the raw logits.
COMBINE = ("prob", "logit")


class Ensemble(FewShotMethod):
    """Average the predictions of trained few-shot models on the same episodes.

    Args:
        members: the trained methods; they must read the same inputs (image size, channels,
            polarity: :func:`load_ensemble` checks it for checkpoints).
        combine: ``"prob"`` (default): the mean of the members' class probabilities, each the
            softmax of its logits; logits whose scale differs between members (e.g. a Relation
            Network's scores in ``[0, 1]`` beside ProtoNet's distances) weigh unequally, so
            prefer members of one method. ``"logit"``: the mean of the raw logits.

    Test-time augmentation (``with_tta`` / ``evaluate(tta=N)``) applies to every member.
    Transductive if any member is; embeddings are cached in evaluation only when every member
    allows it.

    Shapes:
        - ``forward(episode)``: ``support [b, n*k, *x]``, ``query [b, n*q, *x]`` ->
          ``[b, n*q, n]``: the log of the mean probabilities (``"prob"``) or the mean logits.
        - :meth:`embed_inputs`: ``[b, m, *x]`` -> ``[b, m, d_1 + ... + d_M]``, the members'
          embeddings side by side.
        - :meth:`forward_features`: those features ``[b, s, D], [b, s], [b, q, D]`` ->
          ``[b, q, n]``.
    """

    def __init__(self, members: Sequence[FewShotMethod], combine: str = "prob") -> None:
        super().__init__(None)
        if len(members) == 0:
            raise ValueError("an ensemble needs at least one member model")
        if combine not in COMBINE:
            raise ValueError(f"combine must be one of {', '.join(COMBINE)}, got {combine!r}")
        self.members = nn.ModuleList(members)
        self.combine = combine
        self.transductive = any(m.transductive for m in members)
        self.uses_unlabelled = any(getattr(m, "uses_unlabelled", False) for m in members)
        self.caches_embeddings = all(getattr(m, "caches_embeddings", False) for m in members)
        self.float16_autocast = all(getattr(m, "float16_autocast", True) for m in members)
        self.supports_tta = all(getattr(m, "supports_tta", True) for m in members)
        self.tta_views = 1  # set by with_tta; applied to every member
        #: Sizes of the members' embeddings, read when :meth:`embed_inputs` runs.
        self.feature_dims: list[int] | None = None

    def combined(self, logits: Sequence[Tensor]) -> Tensor:
        """Combine the members' logits ``M x [b, q, n]`` into ``[b, q, n]`` (float32, or float64
        for float64 members: :func:`~relgraph.nn.precision.compute_dtype`)."""
        stacked = torch.stack([x.to(compute_dtype(x)) for x in logits])  # [M, b, q, n]
        if self.combine == "logit":
            return stacked.mean(0)
        return torch.logsumexp(stacked.log_softmax(-1), 0) - math.log(len(logits))

    def forward(self, episode: Episode) -> Tensor:
        """Query scores ``[b, n*q, n_way]``: every member on the episodes, combined."""
        outs = []
        for member in self.members:
            with with_tta(member, self.tta_views):
                outs.append(member(episode))
        return self.combined(outs)

    def embed_inputs(self, x: Tensor) -> Tensor:
        """Every member's embedding of ``[b, m, *x]`` inputs, side by side: ``[b, m, D]``."""
        parts = []
        for member in self.members:
            if not hasattr(member, "embed_inputs"):
                raise ValueError(f"{type(member).__name__} adapts to each episode and has no "
                                 "fixed embedding; evaluate the ensemble without the cache")
            with with_tta(member, self.tta_views):
                part = member.embed_inputs(x)
                parts.append(part.to(compute_dtype(part)))
        self.feature_dims = [p.shape[-1] for p in parts]
        return torch.cat(parts, dim=-1)

    def forward_features(self, support: Tensor, support_labels: Tensor, query: Tensor,
                         n_way: int, unlabelled: Tensor | None = None) -> Tensor:
        """Query scores ``[b, q, n_way]`` of episodes given as :meth:`embed_inputs` features."""
        dims = self.feature_dims
        if dims is None or sum(dims) != support.shape[-1]:
            raise ValueError(f"features of size {support.shape[-1]} do not match this "
                             f"ensemble's members (sizes {dims}); make them with "
                             "Ensemble.embed_inputs")
        supports, queries = support.split(dims, -1), query.split(dims, -1)
        extra = unlabelled.split(dims, -1) if unlabelled is not None else [None] * len(dims)
        outs = [m.forward_features(s, support_labels, q, n_way, u)
                for m, s, q, u in zip(self.members, supports, queries, extra, strict=True)]
        return self.combined(outs)

    def extra_repr(self) -> str:
        return f"members={len(self.members)}, combine={self.combine!r}, " + super().extra_repr()


#: Preprocessing entries that may differ between members (measured, not a reading setting).
_IGNORED = {"mean_intensity"}


def load_ensemble(paths: Sequence[str | Path], device: str | torch.device = "cpu",
                  combine: str = "prob") -> tuple[Ensemble, list[dict[str, Any]]]:
    """An :class:`Ensemble` of trained checkpoints; returns ``(model in eval mode, checkpoints)``.

    Args:
        paths: checkpoint files or run folders written by ``relgraph train`` (two or more for an
            ensemble; one gives an ensemble of one, the model itself).
        device: where to put the models.
        combine: see :class:`Ensemble`.

    Raises:
        ValueError: the checkpoints read their inputs differently (the message names the
            setting and both values): their images would not be the same.
    """
    if len(paths) == 0:
        raise ValueError("load_ensemble needs at least one checkpoint")
    members, ckpts = [], []
    for path in paths:
        model, ckpt = load_model(path, device=device)
        if ckpts:
            first, this = ckpts[0]["preprocessing"], ckpt["preprocessing"]
            for key in sorted((set(first) | set(this)) - _IGNORED):
                if first.get(key) != this.get(key):
                    raise ValueError(
                        f"{path} reads its inputs with {key}={this.get(key)!r} but {paths[0]} "
                        f"with {key}={first.get(key)!r}; an ensemble's members must read the "
                        "same inputs (train them on the same data settings)")
        members.append(model)
        ckpts.append(ckpt)
    return Ensemble(members, combine=combine).to(device).eval(), ckpts
