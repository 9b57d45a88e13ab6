"""Backbones: embed images ``[m, c, h, w]`` as vectors ``[m, d]`` or feature maps.

Conv-4, ResNet-12, the text CNN (token ids ``[m, L]``) and MiniLM (``minilm``, WordPiece ids,
extra ``relgraph[text]``) are registered by name
(:func:`build_backbone`); any other ``nn.Module``
becomes a backbone through :class:`BackboneAdapter` or :func:`as_backbone`.
"""

from relgraph.backbones.adapter import BackboneAdapter, as_backbone
from relgraph.backbones.base import Backbone
from relgraph.backbones.catalog import (
    BACKBONES,
    build_backbone,
    list_backbones,
    register_backbone,
)
from relgraph.backbones.conv4 import Conv4
from relgraph.backbones.features import FeatureInput
from relgraph.backbones.minilm import MiniLMBackbone
from relgraph.backbones.pretrained import Normalize, pretrained_backbone
from relgraph.backbones.resnet12 import ResNet12
from relgraph.backbones.text_cnn import TextCNN

__all__ = [
    "BACKBONES",
    "Backbone",
    "BackboneAdapter",
    "Conv4",
    "FeatureInput",
    "MiniLMBackbone",
    "Normalize",
    "ResNet12",
    "TextCNN",
    "as_backbone",
    "build_backbone",
    "list_backbones",
    "pretrained_backbone",
    "register_backbone",
]
