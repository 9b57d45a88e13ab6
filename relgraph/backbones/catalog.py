"""The backbone registry: build any relgraph backbone by name.

A backbone factory takes keyword options and returns a
:class:`~relgraph.backbones.base.Backbone`. Register new ones with
``@register_backbone("name")``.
"""

from __future__ import annotations

from typing import Any

from relgraph.backbones.base import Backbone
from relgraph.registry import Registry

__all__ = ["BACKBONES", "register_backbone", "build_backbone", "list_backbones"]

BACKBONES: Registry[Backbone] = Registry("backbone")
register_backbone = BACKBONES.register


def list_backbones() -> list[str]:
    """Names of the registered backbones."""
    return BACKBONES.list()


def build_backbone(name: str, **kwargs: Any) -> Backbone:
    """Build the backbone registered as ``name`` with options ``kwargs``.

    Unknown names raise ``KeyError`` listing the valid choices.

    Example:
        >>> build_backbone("conv4", in_channels=3, image_size=84).out_dim
        1600
    """
    return BACKBONES.build(name, **kwargs)
