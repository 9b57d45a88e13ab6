"""Test-time augmentation: embed each image under a few fixed small warps and average.

Every image is treated on its own (no statistics are shared between images), so an inductive
method stays inductive: a query's prediction still depends only on itself and the support set.
The views are fixed, not random, so evaluation stays deterministic (:func:`warp_views`, from
:mod:`relgraph.data.augment`).

Methods with a fixed backbone are wrapped in :class:`TTABackbone`. Methods that adapt their
backbone to each episode by gradient steps (MAML, first-order MAML, Reptile) average over the
same views themselves: :func:`with_tta` sets their ``tta_views`` (see
:class:`relgraph.methods.maml.GradientMetaLearner`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import Tensor, nn

from relgraph.data.augment import VIEWS, warp_views

__all__ = ["VIEWS", "TTABackbone", "warp_views", "with_tta"]


class TTABackbone(nn.Module):
    """Wrap a backbone: in eval mode, average its outputs over fixed warped views.

    In training mode it is the plain backbone. ``forward`` averages feature vectors
    ``[N, D]``; ``forward_map`` (when the backbone has one) averages feature maps.

    Args:
        backbone: the backbone to wrap.
        views: number of fixed views (see :data:`VIEWS`), ``1`` = no augmentation.
    """

    def __init__(self, backbone: nn.Module, views: int) -> None:
        super().__init__()
        if not 1 <= views <= len(VIEWS):
            raise ValueError(f"views must be between 1 and {len(VIEWS)}, got {views}")
        self.backbone = backbone
        self.views = views
        self.train(backbone.training)  # start in the backbone's mode

    def _average(self, fn, x: Tensor) -> Tensor:  # noqa: ANN001
        if self.training or self.views == 1:
            return fn(x)
        v = warp_views(x, self.views)
        return fn(v.flatten(0, 1)).unflatten(0, (self.views, x.shape[0])).mean(0)

    def forward(self, x: Tensor) -> Tensor:
        """``[N, C, H, W]`` -> the backbone's output averaged over the views."""
        return self._average(self.backbone, x)

    def forward_map(self, x: Tensor) -> Tensor:
        """``[N, C, H, W]`` -> the backbone's feature map averaged over the views."""
        return self._average(self.backbone.forward_map, x)

    def __getattr__(self, name: str):  # noqa: ANN204  (map_shape, out_dim, ...)
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("backbone"), name)


@contextlib.contextmanager
def with_tta(model: nn.Module, views: int) -> Iterator[nn.Module]:
    """Temporarily evaluate ``model`` with test-time augmentation over ``views`` fixed warps
    (no-op for ``views <= 1``).

    A method with a ``tta_views`` attribute (the gradient-based meta-learners, which adapt
    their backbone to each episode) averages over the views itself: its ``tta_views`` is set
    for the block. Any other method's ``backbone`` is wrapped in :class:`TTABackbone`. Either
    way the model is restored afterwards, also when the block raises.

    Example:
        >>> with with_tta(model, views=5):  # doctest: +SKIP
        ...     logits = model(episode)
    """
    if views <= 1:
        yield model
        return
    if not getattr(model, "supports_tta", True):
        raise ValueError(f"{type(model).__name__} adapts to each episode and does not "
                         "support test-time augmentation; evaluate it with tta=1 (--tta 1)")
    if not 1 <= views <= len(VIEWS):
        raise ValueError(f"views must be between 1 and {len(VIEWS)}, got {views}")
    if hasattr(model, "tta_views"):
        previous = model.tta_views
        model.tta_views = views
        try:
            yield model
        finally:
            model.tta_views = previous
        return
    if not hasattr(model, "backbone"):
        raise ValueError("test-time augmentation needs a method with a .backbone")
    original = model.backbone
    model.backbone = TTABackbone(original, views)
    try:
        yield model
    finally:
        model.backbone = original
