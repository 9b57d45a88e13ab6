"""Reusable layers: dense batched graph layers (``x [b, n, d]``, ``adj [b, n, n]``)."""

from relgraph.nn.dense import DenseGraphConv

__all__ = ["DenseGraphConv"]
