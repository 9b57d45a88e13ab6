"""The embedding step: a backbone maps every example of a batch of episodes once."""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor, nn

__all__ = ["EMBEDDINGS", "embed_examples"]

#: What a head reads from the backbone: ``"vector"`` (``backbone(x)``, ``[m, d]``) or
#: ``"map"`` (``backbone.forward_map(x)``, ``[m, C, H, W]``, flattened to ``C*H*W``).
EMBEDDINGS = ("vector", "map")


def embed_examples(backbone: nn.Module, x: Tensor, kind: str = "vector",
                   chunk: int | None = None) -> Tensor:
    """Embed every example of a batch of episodes: ``[b, m, *x] -> [b, m, d]``.

    In eval mode the examples go through the backbone in chunks of ``chunk`` (exact: BatchNorm
    uses running statistics there, and it keeps activations in cache: a 20-episode batch
    through Conv4 at once is about 2x slower per image on CPU than in chunks); in training mode
    in one call, so BatchNorm normalises with the statistics of all of them.

    Args:
        backbone: the encoder (``nn.Identity()`` for precomputed features).
        x: ``[b, m, *x]`` inputs of ``b`` episodes.
        kind: ``"vector"`` or ``"map"`` (see :data:`EMBEDDINGS`).
        chunk: examples per backbone call in eval mode; ``None``: all at once.

    Shapes:
        ``[b, m, *x] -> [b, m, d]`` (``d = C*H*W`` for ``"map"``)
    """
    if kind not in EMBEDDINGS:
        raise ValueError(f"kind must be one of {', '.join(EMBEDDINGS)}, got {kind!r}")
    fn = backbone.forward_map if kind == "map" else backbone
    b = x.shape[0]
    flat = rearrange(x, "b m ... -> (b m) ...")
    if backbone.training or chunk is None or flat.shape[0] <= chunk:
        z = fn(flat)
    else:
        z = torch.cat([fn(part) for part in flat.split(chunk)])
    return rearrange(z.flatten(1), "(b m) d -> b m d", b=b)
