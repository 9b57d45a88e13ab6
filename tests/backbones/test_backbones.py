"""Contract tests for relgraph.backbones: shapes, gradients, batch independence, registry."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from relgraph.backbones import (
    BACKBONES,
    Backbone,
    BackboneAdapter,
    Conv4,
    ResNet12,
    as_backbone,
    build_backbone,
    list_backbones,
    register_backbone,
)


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def small_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.MaxPool2d(2))


# name -> (factory, input shape [c, h, w], out_dim, map shape or None)
CASES: dict[str, tuple[Callable[[], Backbone], tuple[int, int, int], int, tuple | None]] = {
    "conv4-omniglot": (lambda: Conv4(), (1, 28, 28), 64, (64, 1, 1)),
    "conv4-rgb84": (lambda: Conv4(in_channels=3, image_size=84), (3, 84, 84), 1600, (64, 5, 5)),
    "conv4-group": (lambda: Conv4(norm="group"), (1, 28, 28), 64, (64, 1, 1)),
    "conv4-none-nopool": (lambda: Conv4(norm="none", pool_last=False), (1, 28, 28), 576,
                          (64, 3, 3)),
    "conv4-gap": (lambda: Conv4(in_channels=3, image_size=None, flatten=False, hidden=8,
                                out_channels=16), (3, 40, 40), 16, (16, 2, 2)),
    "resnet12": (lambda: ResNet12(image_size=32), (3, 32, 32), 640, (640, 2, 2)),
    "resnet12-gray": (lambda: ResNet12(in_channels=1, image_size=28, widths=(8, 16, 16, 32)),
                      (1, 28, 28), 32, (32, 1, 1)),
    "adapter": (lambda: BackboneAdapter(small_net(), input_shape=(3, 16, 16)), (3, 16, 16),
                256, (4, 8, 8)),
}


@pytest.fixture(params=sorted(CASES))
def case(request: pytest.FixtureRequest) -> tuple[Backbone, tuple[int, int, int], int, tuple]:
    torch.manual_seed(0)
    factory, shape, out_dim, map_shape = CASES[request.param]
    return factory(), shape, out_dim, map_shape


def test_output_and_map_shapes(case) -> None:
    model, shape, out_dim, map_shape = case
    x = randn(2, *shape)
    assert model.out_dim == out_dim
    out = model(x)
    assert out.shape == (2, out_dim)
    assert torch.isfinite(out).all()
    fmap = model.forward_map(x)
    assert fmap.shape == (2, *map_shape)
    assert model.map_shape(shape[1:]) == map_shape
    assert model.out_channels == map_shape[0]


def test_every_parameter_gets_a_gradient(case) -> None:
    model, shape, out_dim, _ = case
    model.train()
    out = model(randn(3, *shape))
    (out * randn(*out.shape, seed=1)).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_eval_embedding_does_not_depend_on_the_batch(case) -> None:
    model, shape, _, _ = case
    model.train()
    with torch.no_grad():  # move the BatchNorm running statistics away from their init
        model(randn(4, *shape, seed=2) * 2 + 1)
    model.eval()
    x = randn(5, *shape, seed=3)
    with torch.no_grad():
        batch, batch_map = model(x), model.forward_map(x)
        for i in range(len(x)):
            torch.testing.assert_close(model(x[i : i + 1])[0], batch[i], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(model.forward_map(x[i : i + 1])[0], batch_map[i],
                                       atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model(x), batch, atol=0, rtol=0)  # deterministic


def test_norm_none_is_batch_independent_in_train_mode() -> None:
    torch.manual_seed(0)
    model = Conv4(in_channels=3, image_size=32, norm="none").train()
    x = randn(4, 3, 32, 32)
    batch = model(x)
    for i in range(len(x)):
        torch.testing.assert_close(model(x[i : i + 1])[0], batch[i], atol=1e-5, rtol=1e-5)


def test_init_normalisation_weights() -> None:
    for model in (Conv4(), Conv4(norm="group"), ResNet12(widths=(4, 8))):
        norms = [m for m in model.modules() if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm))]
        assert norms
        for m in norms:
            assert torch.equal(m.weight, torch.ones_like(m.weight))
            assert torch.equal(m.bias, torch.zeros_like(m.bias))


def test_conv4_structure() -> None:
    model = Conv4(in_channels=3, image_size=84, hidden=32, out_channels=48)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(3, 32), (32, 32), (32, 32),
                                                                 (32, 48)]
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) for c in convs)
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 4
    assert model.out_dim == 48 * 5 * 5
    assert not any(isinstance(m, nn.BatchNorm2d) for m in Conv4(norm="none").modules())


def test_resnet12_structure() -> None:
    model = ResNet12()
    assert model.out_dim == 640
    assert model.map_shape() == (640, 5, 5)
    assert len(model.blocks) == 4
    assert [b.shortcut[0].out_channels for b in model.blocks] == [64, 160, 320, 640]
    assert ResNet12(dropout=0.1, widths=(4, 8)).min_size == 4


@pytest.mark.parametrize(
    ("make", "x", "message"),
    [
        (lambda: Conv4(), randn(2, 3, 28, 28), r"expected 1 input channel\(s\), got 3"),
        (lambda: Conv4(in_channels=3, image_size=84), randn(2, 1, 84, 84),
         r"expected 3 input channel\(s\), got 1"),
        (lambda: ResNet12(widths=(4, 8)), randn(2, 1, 8, 8), r"expected 3 input channel\(s\)"),
        (lambda: Conv4(), randn(1, 28, 28), r"expected a 4-d input \[m, c, h, w\]"),
        (lambda: Conv4(), randn(2, 1, 32, 32), r"expected 28x28 images .* got 32x32"),
        (lambda: ResNet12(widths=(4, 8, 8, 8)), randn(2, 3, 8, 8),
         r"at least 16x16, got 8x8"),
        (lambda: BackboneAdapter(small_net(), input_shape=(3, 8, 8)), randn(2, 1, 8, 8),
         r"expected 3 input channel\(s\), got 1"),
    ],
)
def test_bad_input_raises(make: Callable[[], Backbone], x: torch.Tensor, message: str) -> None:
    model = make()
    with pytest.raises(ValueError, match=message):
        model(x)


def test_bad_options_raise() -> None:
    with pytest.raises(ValueError, match="expected norm to be one of batch, none, group, got"):
        Conv4(norm="layer")
    with pytest.raises(ValueError, match="expected an image_size when flatten=True"):
        Conv4(image_size=None)
    with pytest.raises(ValueError, match="at least 16x16, got 8x8"):
        Conv4(image_size=8)
    with pytest.raises(ValueError, match="expected dropout in"):
        ResNet12(dropout=1.0)


# ----------------------------------------------------------------------------------- adapter


def test_adapter_infers_out_dim_and_restores_training_modes() -> None:
    net = small_net()
    net[1].eval()  # a deliberately frozen BatchNorm must stay frozen
    model = BackboneAdapter(net, input_shape=(3, 16, 16))
    assert model.out_dim == 4 * 8 * 8
    assert model.out_channels == 4
    assert [m.training for m in net.modules()] == [True, True, False, True, True]
    assert net[1].num_batches_tracked.item() == 0  # the dummy pass did not touch statistics


def test_adapter_explicit_out_dim_and_vector_module() -> None:
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))
    model = BackboneAdapter(mlp, out_dim=10)
    assert model.out_dim == 10
    assert model(randn(4, 3, 8, 8)).shape == (4, 10)
    with pytest.raises(ValueError, match="this backbone yields vectors only"):
        model.forward_map(randn(4, 3, 8, 8))
    with pytest.raises(ValueError, match="expected the wrapped Sequential to return 7 features"):
        BackboneAdapter(mlp, out_dim=7)(randn(4, 3, 8, 8))


def test_adapter_feature_inputs_and_errors() -> None:
    model = BackboneAdapter(nn.Linear(5, 3), input_shape=(5,))
    assert model.out_dim == 3
    assert model(randn(2, 5)).shape == (2, 3)
    with pytest.raises(ValueError, match=r"expected inputs of shape \[m, 5\], got \(2, 4\)"):
        model(randn(2, 4))
    with pytest.raises(ValueError, match="expected out_dim or input_shape"):
        BackboneAdapter(nn.Identity())
    with pytest.raises(TypeError, match="expected an nn.Module"):
        BackboneAdapter(lambda x: x, out_dim=3)  # type: ignore[arg-type]


def test_as_backbone() -> None:
    conv = as_backbone("conv4", in_channels=3, image_size=84)
    assert isinstance(conv, Conv4) and conv.out_dim == 1600
    assert as_backbone(conv) is conv
    adapted = as_backbone(nn.Flatten(), input_shape=(1, 4, 4))
    assert isinstance(adapted, BackboneAdapter) and adapted.out_dim == 16
    with pytest.raises(ValueError, match="expected no options"):
        as_backbone(conv, hidden=3)
    with pytest.raises(TypeError, match="expected a backbone name or an nn.Module"):
        as_backbone(3)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------- registry


def test_registry_build_and_list() -> None:
    assert {"conv4", "resnet12"} <= set(list_backbones())
    model = build_backbone("Conv4", in_channels=3, image_size=84)
    assert isinstance(model, Conv4) and model.out_dim == 1600
    assert isinstance(build_backbone("resnet12", widths=(4, 8)), ResNet12)


def test_registry_unknown_and_duplicate_names() -> None:
    with pytest.raises(KeyError, match="unknown backbone 'vgg'; choose one of: .*conv4"):
        build_backbone("vgg")
    with pytest.raises(ValueError, match="already registered"):
        register_backbone("conv4")(Conv4)
    assert "resnet12" in BACKBONES
