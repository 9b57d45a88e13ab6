"""The pretrained-backbone adapter, on small randomly initialised stand-ins (no downloads).

torchvision is not installed here (its PyPI wheel for torch 2.13 is the CUDA build, which does
not load with the CPU torch), so a module shaped like a torchvision ResNet (a ``fc``
classifier) and one shaped like a timm model (``reset_classifier``, ``pretrained_cfg``) stand
in; with torchvision installed the real resnet18 is tested too.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from relgraph.backbones import Normalize, build_backbone, pretrained_backbone
from relgraph.backbones.pretrained import IMAGENET_MEAN, IMAGENET_STD
from relgraph.methods import build_method


class TinyResNet(nn.Module):
    """Shaped like a torchvision classifier: features, then ``fc``."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(8, 1000)
        self.seen: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = x
        return self.fc(self.body(x))


class TinyTimm(TinyResNet):
    pretrained_cfg = {"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}

    def reset_classifier(self, num_classes: int) -> None:
        self.fc = nn.Identity() if num_classes == 0 else nn.Linear(8, num_classes)


def test_imagenet_normalisation_and_classifier_removed():
    net = TinyResNet()
    bb = pretrained_backbone(net, image_size=16)
    assert bb.out_dim == 8  # the 1000-way fc is gone
    x = torch.rand(2, 3, 16, 16)
    bb.eval()
    out = bb(x)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    assert torch.allclose(net.seen, (x - mean) / std)
    assert out.shape == (2, 8)


def test_timm_statistics_and_override():
    net = TinyTimm()
    pretrained_backbone(net, image_size=8)(torch.full((1, 3, 8, 8), 0.75))
    assert torch.allclose(net.seen, torch.ones(1, 3, 8, 8))
    net = TinyTimm()
    pretrained_backbone(net, mean=(0, 0, 0), std=(1, 1, 1), image_size=8)(
        torch.full((1, 3, 8, 8), 0.75))
    assert torch.allclose(net.seen, torch.full((1, 3, 8, 8), 0.75))


def test_grayscale_is_repeated_to_rgb():
    net = TinyResNet()
    bb = pretrained_backbone(net, in_channels=1, image_size=8)
    x = torch.rand(2, 1, 8, 8)
    bb(x)
    assert net.seen.shape == (2, 3, 8, 8)
    for c in range(3):  # every channel is the gray image, normalised with its own statistics
        assert torch.allclose(net.seen[:, c] * IMAGENET_STD[c] + IMAGENET_MEAN[c], x[:, 0],
                              atol=1e-6)
    with pytest.raises(ValueError, match="expected 1 or 3 channels"):
        Normalize()(torch.rand(1, 2, 4, 4))


def test_a_head_trains_on_it():
    bb = pretrained_backbone(TinyResNet(), image_size=8)
    model = build_method("protonet", bb)
    from relgraph.bench import random_episode

    ep = random_episode(3, 1, 2, 1, 3, 8, 0)
    loss, logits = model.loss(ep)
    loss.backward()
    assert logits.shape == (1, 6, 3)
    assert all(p.grad is not None for p in bb.parameters())


def test_named_model_needs_the_package(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_vision(name, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if name in ("timm", "torchvision"):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_vision)
    with pytest.raises(ImportError, match=r"relgraph\[images\]"):
        build_backbone("pretrained", model="resnet18")


def test_real_torchvision_resnet18_random_weights():
    tv = pytest.importorskip("torchvision")
    bb = pretrained_backbone(tv.models.resnet18(weights=None), image_size=32)
    assert bb.out_dim == 512
    assert bb(torch.rand(2, 3, 32, 32)).shape == (2, 512)
