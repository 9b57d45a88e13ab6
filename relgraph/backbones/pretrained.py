"""Pretrained image backbones a user already has (timm or torchvision), with their input
normalisation.

relgraph datasets give images in ``[0, 1]``; ImageNet-pretrained networks expect them
normalised by the ImageNet mean and standard deviation (timm models record their own in
``pretrained_cfg``). :func:`pretrained_backbone` puts that normalisation (and grayscale to RGB)
in front of the network, removes its classifier, and wraps it as a relgraph backbone::

    import timm
    backbone = pretrained_backbone(timm.create_model("resnet50", pretrained=True))
    # or by name, when timm / torchvision is installed (weights download on first use):
    backbone = pretrained_backbone("resnet18", source="torchvision", pretrained=True)

In a config: ``backbone: pretrained`` with ``backbone_args: {model: resnet18, source:
torchvision, pretrained: true}`` (``train.backbone_lr_scale: 0`` keeps it frozen).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from relgraph.backbones.adapter import BackboneAdapter
from relgraph.backbones.catalog import register_backbone

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "Normalize", "pretrained_backbone",
           "strip_classifier"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel; 1-channel inputs are repeated to ``len(mean)``.

    Args:
        mean, std: per-channel statistics of the inputs the network was trained on.

    Shapes:
        ``[m, 1 or c, h, w] -> [m, c, h, w]``
    """

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD) -> None:
        super().__init__()
        if len(mean) != len(std) or min(std) <= 0:
            raise ValueError(f"expected mean and std of one length with std > 0, got {mean}, "
                             f"{std}")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        """Normalised images (grey images repeated to ``c`` channels):
        ``[m, 1 or c, h, w] -> [m, c, h, w]``."""
        c = self.mean.shape[1]
        if x.shape[1] == 1 and c != 1:
            x = x.expand(-1, c, -1, -1)
        if x.shape[1] != c:
            raise ValueError(f"expected 1 or {c} channels, got {x.shape[1]}")
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)


def strip_classifier(module: nn.Module) -> nn.Module:
    """Remove the classification layer so ``module`` returns features (in place).

    timm models: ``reset_classifier(0)``; torchvision: ``fc`` (ResNets), ``classifier``
    (VGG, DenseNet, EfficientNet, MobileNet...) or ``heads`` / ``head`` become identities.
    """
    if callable(getattr(module, "reset_classifier", None)):
        module.reset_classifier(0)
        return module
    for name in ("fc", "classifier", "heads", "head"):
        if isinstance(getattr(module, name, None), nn.Module):
            setattr(module, name, nn.Identity())
            return module
    return module


def _from_name(name: str, source: str, pretrained: bool) -> nn.Module:
    if source in ("timm", "auto"):
        try:
            import timm
        except ImportError:
            if source == "timm":
                raise ImportError("backbone source 'timm' needs timm: pip install "
                                  "'relgraph[images]' (or pip install timm)") from None
        else:
            return timm.create_model(name, pretrained=pretrained, num_classes=0)
    if source in ("torchvision", "auto"):
        try:
            import torchvision
        except ImportError:
            raise ImportError(f"naming a pretrained backbone ({name!r}) needs timm or "
                              "torchvision: pip install 'relgraph[images]', or pass the "
                              "nn.Module itself") from None
        weights = "DEFAULT" if pretrained else None
        return torchvision.models.get_model(name, weights=weights)
    raise ValueError(f"source must be timm, torchvision or auto, got {source!r}")


@register_backbone("pretrained")
def pretrained_backbone(
    model: nn.Module | str,
    source: str = "auto",
    pretrained: bool = False,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    in_channels: int = 3,
    image_size: int = 224,
    out_dim: int | None = None,
) -> BackboneAdapter:
    """A relgraph backbone from a pretrained image network (see the module docstring).

    Args:
        model: the network (an ``nn.Module``, e.g. from timm or torchvision), or its name.
        source: for a name: ``"timm"``, ``"torchvision"`` or ``"auto"`` (timm if installed).
        pretrained: for a name: load the published weights (downloads them on first use).
        mean, std: input normalisation; default the model's own (timm ``pretrained_cfg``),
            else ImageNet's.
        in_channels: channels of the data (1: grayscale, repeated to RGB).
        image_size: side of the input images (to infer ``out_dim``).
        out_dim: feature size; default inferred by one forward pass on zeros.

    Shapes:
        ``[m, in_channels, image_size, image_size] -> [m, out_dim]``
    """
    module = _from_name(model, source, pretrained) if isinstance(model, str) else model
    if not isinstance(module, nn.Module):
        raise TypeError(f"expected an nn.Module or a model name, got {type(module).__name__}")
    cfg = getattr(module, "pretrained_cfg", None) or {}
    mean = tuple(mean or cfg.get("mean") or IMAGENET_MEAN)
    std = tuple(std or cfg.get("std") or IMAGENET_STD)
    if in_channels not in (1, len(mean)):
        raise ValueError(f"in_channels must be 1 or {len(mean)}, got {in_channels}")
    net = nn.Sequential(Normalize(mean, std), strip_classifier(module))
    return BackboneAdapter(net, out_dim=out_dim, input_shape=(in_channels, image_size,
                                                              image_size))
