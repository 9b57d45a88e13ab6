"""Relation Networks: class maps, the batched relation module, losses, options and errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from relgraph.backbones import build_backbone
from relgraph.backbones.base import Backbone
from relgraph.data import Episode
from relgraph.methods import build_method
from relgraph.methods.relation import RelationNet, class_maps


class Maps(Backbone):
    """An identity 'backbone' whose feature map is the input itself."""

    def __init__(self, shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.in_channels, self.out_channels = shape[0], shape[0]
        self.image_size = shape[1:]
        self.out_dim = shape[0] * shape[1] * shape[2]

    def forward_map(self, x: Tensor) -> Tensor:
        return x


def make_episode(labels: list[int], q: int = 3, n: int = 3, shape=(2, 4, 4), b: int = 2,
                 seed: int = 0) -> Episode:
    g = torch.Generator().manual_seed(seed)
    support_labels = torch.tensor(labels).expand(b, -1).clone()
    k = int(torch.bincount(support_labels[0], minlength=n).min())
    return Episode(torch.randn(b, len(labels), *shape, generator=g), support_labels,
                   torch.randn(b, q, *shape, generator=g), torch.randint(0, n, (b, q), generator=g),
                   torch.arange(n).expand(b, -1).clone(), n_way=n, k_shot=max(k, 1))


def test_class_maps_sum_and_mean_unbalanced():
    maps = torch.randn(2, 5, 3, 2, 2)
    labels = torch.tensor([[0, 1, 0, 2, 0], [2, 2, 1, 0, 1]])
    summed = class_maps(maps, labels, 3)
    mean = class_maps(maps, labels, 3, aggregate="mean")
    for e in range(2):
        for k in range(3):
            members = maps[e, labels[e] == k]
            assert torch.allclose(summed[e, k], members.sum(0), atol=1e-6)
            assert torch.allclose(mean[e, k], members.mean(0), atol=1e-6)


def reference_logits(model: RelationNet, classes: Tensor, query: Tensor) -> Tensor:
    """The relation module on explicit concatenations, one (query, class) pair at a time."""
    b, n = classes.shape[:2]
    q = query.shape[1]
    out = torch.empty(b, q, n)
    pool = lambda z: F.max_pool2d(z, 2) if min(z.shape[-2:]) >= 2 else z  # noqa: E731
    for e in range(b):
        for j in range(q):
            for k in range(n):
                z = torch.cat([classes[e, k], query[e, j]])[None]
                z = pool(F.relu(model.relation_module.norm1(model.relation_module.conv1(z))))
                z = pool(F.relu(model.relation_module.norm2(model.relation_module.conv2(z))))
                out[e, j, k] = model.relation_module.fc(z.flatten(1))[0, 0]
    return out


@pytest.mark.parametrize("shape", [(2, 7, 7), (3, 1, 1), (2, 5, 3)])
def test_batched_relation_module_matches_explicit_concatenation(shape):
    torch.manual_seed(0)
    model = RelationNet(Maps(shape), hidden=6, fc_hidden=4)
    ep = make_episode([0, 1, 2, 0, 1, 2], shape=shape)
    model.train()
    with torch.no_grad():  # move the running statistics, then compare in eval mode
        model(ep)
    model.eval()
    with torch.no_grad():
        classes = class_maps(ep.support, ep.support_labels, 3)
        assert torch.allclose(model(ep), reference_logits(model, classes, ep.query), atol=1e-5)


@pytest.mark.parametrize("size,pooled", [(7, 1), (3, 1), (1, 1), (10, 2), (5, 1), (2, 1)])
def test_pooling_only_while_the_map_is_at_least_2x2(size, pooled):
    model = RelationNet(Maps((2, size, size)), hidden=4)
    assert model.relation_module.fc[0].in_features == 4 * pooled * pooled
    out = model.eval()(make_episode([0, 1, 2], shape=(2, size, size)))
    assert out.shape == (2, 3, 3) and torch.isfinite(out).all()


def test_mse_loss_value_and_ce_option():
    torch.manual_seed(0)
    ep = make_episode([0, 1, 2, 2])
    model = RelationNet(Maps((2, 4, 4)), hidden=4).eval()
    loss, logits = model.loss(ep)
    target = F.one_hot(ep.query_labels, 3).float()
    assert torch.allclose(loss, ((logits.sigmoid() - target) ** 2).mean(), atol=1e-7)
    model.criterion = "ce"
    loss, logits = model.loss(ep)
    assert torch.allclose(loss, F.cross_entropy(logits.reshape(-1, 3), ep.query_labels.reshape(-1)),
                          atol=1e-7)
    ce = build_method("relation", Maps((2, 4, 4)), loss="ce")
    assert ce.criterion == "ce"


def test_unbalanced_support_sums_the_shots_of_each_class():
    torch.manual_seed(0)
    model = RelationNet(Maps((2, 4, 4)), hidden=4).eval()
    ep = make_episode([0, 0, 0, 1, 2, 2])
    summed = class_maps(ep.support, ep.support_labels, 3)  # one pre-summed support per class
    ref = Episode(summed, torch.arange(3).expand(2, -1).clone(), ep.query, ep.query_labels,
                  ep.class_ids, 3, 1)
    assert torch.allclose(model(ep), model(ref), atol=1e-5)


def test_conv4_feature_maps_and_gradients():
    torch.manual_seed(0)
    backbone = build_backbone("conv4", in_channels=1, image_size=28, hidden=8, out_channels=8,
                              pool_last=False)
    model = RelationNet(backbone)
    assert model.map_shape == (8, 3, 3)
    g = torch.Generator().manual_seed(0)
    ep = Episode(torch.rand(1, 3, 1, 28, 28, generator=g), torch.tensor([[0, 1, 2]]),
                 torch.rand(1, 6, 1, 28, 28, generator=g), torch.tensor([[0, 0, 1, 1, 2, 2]]),
                 torch.tensor([[0, 1, 2]]), n_way=3, k_shot=1)
    loss, logits = model.loss(ep)
    loss.backward()
    assert logits.shape == (1, 6, 3)
    assert all(p.grad is not None for p in model.parameters())


def test_errors():
    with pytest.raises(ValueError, match="loss must be one of mse, ce, got 'hinge'"):
        RelationNet(Maps((2, 4, 4)), loss="hinge")
    with pytest.raises(ValueError, match="aggregate must be one of sum, mean"):
        RelationNet(Maps((2, 4, 4)), aggregate="max")
    with pytest.raises(ValueError, match="need a backbone with forward_map"):
        RelationNet(nn.Flatten())
    with pytest.raises(ValueError, match=r"pass map_shape=\(C, H, W\)"):
        RelationNet(build_backbone("conv4", image_size=None, flatten=False))
    model = RelationNet(build_backbone("conv4", image_size=None, flatten=False),
                        map_shape=(64, 1, 1))
    assert model.map_shape == (64, 1, 1)
    model = RelationNet(Maps((2, 4, 4)))
    with pytest.raises(ValueError, match=r"size 32 \(flat feature maps \(2, 4, 4\)"):
        model(make_episode([0, 1, 2], shape=(2, 5, 5)))
