"""Use any ``nn.Module`` (a torchvision or timm model, a small MLP) as a relgraph backbone."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from relgraph.backbones.base import Backbone, probe
from relgraph.backbones.catalog import build_backbone

__all__ = ["BackboneAdapter", "as_backbone"]


class BackboneAdapter(Backbone):
    """Wrap a module returning ``[m, ...]`` features as a :class:`Backbone` with ``[m, d]`` output.

    The output of ``module`` is flattened to vectors. When ``out_dim`` is not given it is inferred
    by running ``module`` once on zeros of ``input_shape`` (batch of one, without gradients, in
    eval mode; the training flag of every submodule is restored afterwards).

    In eval mode BatchNorm uses running statistics, so an example's embedding does not depend on
    the other examples of the batch (for modules whose only cross-example layers are BatchNorm).

    Args:
        module: the network; called as ``module(x)`` and must return one tensor.
        out_dim: size of the flattened output; ``None`` infers it from ``input_shape``.
        input_shape: shape of one input, ``(c, h, w)`` for images (then the channel count of
            inputs is checked) or e.g. ``(d,)`` for pre-extracted features. Default ``None``.

    Shapes:
        - :meth:`forward`: ``[m, *input_shape] -> [m, out_dim]``
        - :meth:`forward_map`: ``[m, c, h, w] -> [m, C, H', W']``, only when ``module`` returns
          4-d maps

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(2))
        >>> BackboneAdapter(net, input_shape=(3, 32, 32)).out_dim
        32
    """

    def __init__(
        self,
        module: nn.Module,
        out_dim: int | None = None,
        input_shape: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(module, nn.Module):
            raise TypeError(f"expected an nn.Module, got {type(module).__name__}")
        self.input_shape = None if input_shape is None else tuple(int(s) for s in input_shape)
        if self.input_shape is not None and (not self.input_shape or min(self.input_shape) < 1):
            raise ValueError(f"expected input_shape of positive sizes, got {self.input_shape}")
        if self.input_shape is not None and len(self.input_shape) == 3:
            self.in_channels = self.input_shape[0]
            self.image_size = self.input_shape[1:]  # type: ignore[assignment]
        self.module = module

        if out_dim is None:
            if self.input_shape is None:
                raise ValueError("expected out_dim or input_shape (to infer out_dim from a dummy "
                                 "forward pass), got neither")
            out = probe(module, self.input_shape)
            self._check_output(out, 1)
            if out.dim() == 4:
                self.out_channels = int(out.shape[1])
            out_dim = int(out[0].numel())
        if out_dim < 1:
            raise ValueError(f"expected out_dim >= 1, got {out_dim}")
        self.out_dim = int(out_dim)

    def _check_output(self, out: Any, m: int) -> None:
        name = type(self.module).__name__
        if not isinstance(out, Tensor):
            raise ValueError(f"expected the wrapped {name} to return a Tensor, "
                             f"got {type(out).__name__}")
        if out.dim() < 2 or out.shape[0] != m:
            raise ValueError(f"expected the wrapped {name} to return [{m}, ...] features, "
                             f"got shape {tuple(out.shape)}")

    def check_input(self, x: Tensor) -> None:
        """Check ``x`` against ``input_shape`` (channels only for images), when it was given."""
        if self.input_shape is None:
            if x.dim() < 2:
                raise ValueError(f"expected a batched input [m, ...], got shape {tuple(x.shape)}")
        elif len(self.input_shape) == 3:
            super().check_input(x)
        elif tuple(x.shape[1:]) != self.input_shape:
            shape = ", ".join(map(str, self.input_shape))
            raise ValueError(f"expected inputs of shape [m, {shape}], got {tuple(x.shape)}")

    def _run(self, x: Tensor) -> Tensor:
        self.check_input(x)
        out = self.module(x)
        self._check_output(out, x.shape[0])
        return out

    def forward(self, x: Tensor) -> Tensor:
        """The module's output, flattened.

        Shapes:
            ``[m, *input_shape] -> [m, out_dim]``
        """
        out = self._run(x).flatten(1)
        if out.shape[1] != self.out_dim:
            raise ValueError(f"expected the wrapped {type(self.module).__name__} to return "
                             f"{self.out_dim} features per example, got {out.shape[1]}")
        return out

    def forward_map(self, x: Tensor) -> Tensor:
        """The module's output, which must be a 4-d feature map.

        Shapes:
            ``[m, c, h, w] -> [m, C, H', W']``
        """
        out = self._run(x)
        if out.dim() != 4:
            raise ValueError(
                f"this backbone yields vectors only: the wrapped {type(self.module).__name__} "
                f"returned shape {tuple(out.shape)}, and forward_map needs a 4-d [m, C, H, W] map"
            )
        return out


def as_backbone(module_or_name: nn.Module | str, **kwargs: Any) -> Backbone:
    """A :class:`Backbone` from a registered name, a plain module, or a backbone.

    Args:
        module_or_name: a name from :func:`~relgraph.backbones.list_backbones` (built with
            ``kwargs``), an ``nn.Module`` (wrapped in :class:`BackboneAdapter` with ``kwargs``),
            or a :class:`Backbone` (returned as is; ``kwargs`` must then be empty).
        **kwargs: options for the backbone or the adapter.

    Example:
        >>> as_backbone("conv4").out_dim
        64
        >>> as_backbone(nn.Flatten(), input_shape=(1, 4, 4)).out_dim
        16
    """
    if isinstance(module_or_name, Backbone):
        if kwargs:
            raise ValueError(f"expected no options for an already built backbone, "
                             f"got {', '.join(sorted(kwargs))}")
        return module_or_name
    if isinstance(module_or_name, nn.Module):
        return BackboneAdapter(module_or_name, **kwargs)
    if isinstance(module_or_name, str):
        return build_backbone(module_or_name, **kwargs)
    raise TypeError(
        f"expected a backbone name or an nn.Module, got {type(module_or_name).__name__}"
    )
