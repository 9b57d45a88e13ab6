"""``features``: the backbone of precomputed features (an encoder already ran elsewhere)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from relgraph.backbones.base import Backbone
from relgraph.backbones.catalog import register_backbone

__all__ = ["FeatureInput"]


@register_backbone("features")
class FeatureInput(Backbone):
    """Pass precomputed features through, flattened: the backbone of ``features`` data.

    By default it has no parameters; it tells the head the feature size (:attr:`out_dim`) and
    gives heads that read feature maps (Relation Networks) a ``[m, d, 1, 1]`` map. With
    ``project`` it learns a linear map ``d -> project`` on top of the frozen features (then a
    parameter-free head such as ProtoNet has something to train).

    Args:
        dim: feature size ``d``; the training loop takes it from the data
            (``preprocessing["feature_shape"]``), so a config needs no ``backbone_args``.
        feature_shape: shape of one example, e.g. ``(d,)``; ``dim`` is its product. Give one
            of the two.
        project: learn a linear projection to this size (default ``None``: none).

    Shapes:
        - :meth:`forward`: ``[m, *feature_shape] -> [m, out_dim]`` (``out_dim`` = ``project``
          or ``d``)
        - :meth:`forward_map`: ``[m, *feature_shape] -> [m, out_dim, 1, 1]``

    Example:
        >>> FeatureInput(384).out_dim
        384
    """

    def __init__(self, dim: int | None = None, feature_shape: Sequence[int] | None = None,
                 project: int | None = None) -> None:
        super().__init__()
        if feature_shape is not None:
            size = 1
            for s in feature_shape:
                size *= int(s)
            if dim is not None and dim != size:
                raise ValueError(f"dim={dim} does not match feature_shape {list(feature_shape)}")
            dim = size
        if dim is None or int(dim) < 1:
            raise ValueError(f"the features backbone needs the feature size (dim >= 1 or "
                             f"feature_shape), got dim={dim!r}")
        self.in_dim = int(dim)
        self.proj: nn.Module = nn.Identity()
        if project is not None:
            if int(project) < 1:
                raise ValueError(f"project must be >= 1, got {project}")
            self.proj = nn.Linear(self.in_dim, int(project))
        self.out_dim = int(project) if project is not None else self.in_dim

    def check_input(self, x: Tensor) -> None:
        """Raise ``ValueError`` unless ``x`` holds ``in_dim`` features per example."""
        if x.dim() < 2 or x[0].numel() != self.in_dim:
            raise ValueError(f"expected features [m, {self.in_dim}], got shape "
                             f"{tuple(x.shape)}")

    def map_shape(self, image_size: int | Sequence[int] | None = None) -> tuple[int, int, int]:
        """``(d, 1, 1)``: features seen as a one-pixel map."""
        return (self.out_dim, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        """Features, flattened and projected: ``[m, *feature_shape] -> [m, out_dim]``."""
        self.check_input(x)
        return self.proj(x.flatten(1))

    def forward_map(self, x: Tensor) -> Tensor:
        """The embedding as a 1x1 map: ``[m, *feature_shape] -> [m, out_dim, 1, 1]``."""
        return self.forward(x).reshape(x.shape[0], self.out_dim, 1, 1)
