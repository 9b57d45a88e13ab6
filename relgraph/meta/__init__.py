"""MAML / Reptile style adaptation with :mod:`torch.func`: inner loops over parameter dicts,
episode-level BatchNorm statistics and batched per-episode linear heads."""

from relgraph.meta.adapt import (
    at_least_float32,
    centre_normalise,
    episode_batch_norm,
    fit_linear_head,
    functional_forward,
    inner_loop,
    linear_head_logits,
)

__all__ = [
    "at_least_float32",
    "centre_normalise",
    "episode_batch_norm",
    "fit_linear_head",
    "functional_forward",
    "inner_loop",
    "linear_head_logits",
]
