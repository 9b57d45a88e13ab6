"""The :class:`Backbone` interface: images ``[m, c, h, w]`` in, embeddings ``[m, d]`` out.

Every backbone also exposes the feature map it computes before flattening or pooling
(:meth:`Backbone.forward_map`), which Relation Networks compare pairwise.
"""

from __future__ import annotations

import abc
import math
import numbers
from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["Backbone", "NORMS", "norm_layer", "init_weights", "as_size"]

#: Normalisation layers accepted by the convolutional backbones.
NORMS = ("batch", "none", "group")


def as_size(size: int | Sequence[int] | None, what: str = "image_size") -> tuple[int, int] | None:
    """Normalise an image size given as ``s`` or ``(h, w)`` to ``(h, w)`` (``None`` stays)."""
    if size is None:
        return None
    bad = ValueError(f"expected {what} to be a positive int or (h, w), got {size!r}")
    if isinstance(size, bool) or isinstance(size, (str, bytes)):
        raise bad
    if isinstance(size, numbers.Integral):
        size = (int(size), int(size))
    try:
        pair = tuple(size)  # type: ignore[arg-type]
    except TypeError:
        raise bad from None
    if len(pair) != 2 or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool)
                                 for s in pair) or min(pair) < 1:
        raise bad
    return (int(pair[0]), int(pair[1]))


def norm_layer(norm: str, channels: int) -> nn.Module:
    """The normalisation layer ``norm`` for ``channels`` feature maps.

    Args:
        norm: ``"batch"`` (:class:`~torch.nn.BatchNorm2d`), ``"group"``
            (:class:`~torch.nn.GroupNorm` with ``gcd(channels, 8)`` groups) or ``"none"``
            (identity).
        channels: number of channels normalised.
    """
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "group":
        return nn.GroupNorm(math.gcd(channels, 8), channels)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"expected norm to be one of {', '.join(NORMS)}, got {norm!r}")


def init_weights(module: nn.Module) -> None:
    """Kaiming-normal convolutions (zero bias); normalisation weight 1, bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def probe(module: nn.Module, input_shape: Sequence[int], fn: str = "forward") -> Tensor:
    """Run ``module.<fn>`` on zeros ``[1, *input_shape]`` without gradients, in eval mode.

    The training flag of every submodule is restored afterwards, so a model with some layers
    deliberately frozen in eval mode keeps them that way.
    """
    param = next(module.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        with torch.no_grad():
            return getattr(module, fn)(torch.zeros(1, *input_shape, device=device, dtype=dtype))
    finally:
        for m, training in modes:
            m.training = training


class Backbone(nn.Module, abc.ABC):
    """Base class of relgraph backbones: embed a batch of images.

    Subclasses implement :meth:`forward_map` (the feature map) and, when the vector is not the
    flattened map, :meth:`forward`. They set :attr:`out_dim` in their constructor.

    In eval mode BatchNorm uses running statistics, so an example's embedding does not depend on
    the other examples of the batch. In train mode BatchNorm normalises with the statistics of the
    current batch, as usual.

    Attributes:
        out_dim: size ``d`` of the vectors returned by :meth:`forward`.
        in_channels: number of input channels ``c`` expected (``None``: not checked).
        out_channels: channels ``C`` of the feature map (``None``: the backbone yields vectors
            only).
        image_size: ``(h, w)`` the backbone was built for (``None``: any size).

    Shapes:
        - :meth:`forward`: ``[m, c, h, w] -> [m, out_dim]``
        - :meth:`forward_map`: ``[m, c, h, w] -> [m, C, H', W']``
    """

    out_dim: int
    in_channels: int | None = None
    out_channels: int | None = None
    image_size: tuple[int, int] | None = None
    #: Whether inputs must be exactly :attr:`image_size` (e.g. when the map is flattened).
    fixed_size: bool = False
    #: Smallest input side the backbone accepts (its total downsampling factor).
    min_size: int = 1

    @abc.abstractmethod
    def forward_map(self, x: Tensor) -> Tensor:
        """The feature map before flattening or pooling.

        Shapes:
            ``[m, c, h, w] -> [m, C, H', W']``
        """

    def forward(self, x: Tensor) -> Tensor:
        """Embed ``x``: by default the flattened feature map.

        Shapes:
            ``[m, c, h, w] -> [m, out_dim]``
        """
        return self.forward_map(x).flatten(1)

    def map_shape(self, image_size: int | Sequence[int] | None = None) -> tuple[int, int, int]:
        """Shape ``(C, H', W')`` of the feature map for ``image_size`` (default: the built one).

        This generic version runs a dummy forward pass; subclasses may compute it directly.
        """
        size = as_size(image_size) or self.image_size
        if size is None or self.in_channels is None:
            raise ValueError("map_shape needs an image_size (none was given or built in) "
                             "and a known in_channels")
        return tuple(probe(self, (self.in_channels, *size), "forward_map").shape[1:])  # type: ignore[return-value]

    def _map_size(self, image_size: int | Sequence[int] | None) -> tuple[int, int]:
        """``image_size`` (or the built one) as ``(h, w)``, checked against ``min_size``."""
        size = as_size(image_size) or self.image_size
        if size is None:
            raise ValueError("expected an image_size (none was given or built in), got None")
        if min(size) < self.min_size:
            raise ValueError(f"expected images of at least {self.min_size}x{self.min_size}, "
                             f"got {size[0]}x{size[1]}")
        return size

    def check_input(self, x: Tensor) -> None:
        """Raise ``ValueError`` unless ``x`` is ``[m, in_channels, h, w]`` of an accepted size."""
        if x.dim() != 4:
            raise ValueError(f"expected a 4-d input [m, c, h, w], got shape {tuple(x.shape)}")
        if self.in_channels is not None and x.shape[1] != self.in_channels:
            raise ValueError(
                f"expected {self.in_channels} input channel(s), got {x.shape[1]}"
            )
        h, w = x.shape[-2:]
        if self.fixed_size and self.image_size is not None and (h, w) != self.image_size:
            eh, ew = self.image_size
            raise ValueError(f"expected {eh}x{ew} images (out_dim depends on it), got {h}x{w}")
        if min(h, w) < self.min_size:
            raise ValueError(
                f"expected images of at least {self.min_size}x{self.min_size}, got {h}x{w}"
            )

    def extra_repr(self) -> str:
        return f"out_dim={self.out_dim}"
