"""Test-time augmentation: fixed views, identity first, per-image (inductive), restored after."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from relgraph.backbones import Conv4
from relgraph.data import Episode, TensorDataset
from relgraph.engine import choose_tta, evaluate
from relgraph.engine.tta import VIEWS, TTABackbone, warp_views, with_tta
from relgraph.methods import build_method


def episode(seed: int = 0, queries: int = 3) -> Episode:
    g = torch.Generator().manual_seed(seed)

    def images(n: int) -> torch.Tensor:  # smooth blobs, so small warps change the features
        return F.interpolate(torch.rand(n, 1, 7, 7, generator=g), size=28,
                             mode="bilinear").unsqueeze(0)

    return Episode(images(3), torch.arange(3).unsqueeze(0), images(3 * queries),
                   torch.arange(3).repeat_interleave(queries).unsqueeze(0),
                   torch.arange(3).unsqueeze(0), n_way=3, k_shot=1)


def test_views_shape_identity_first_and_deterministic():
    x = torch.rand(4, 1, 28, 28)
    v = warp_views(x, 5)
    assert v.shape == (5, 4, 1, 28, 28)
    assert torch.equal(v[0], x)
    assert not torch.allclose(v[1], x)
    assert torch.equal(v, warp_views(x, 5))
    # a shift by 4% of 28 px moves the content about one pixel
    y = torch.zeros(1, 1, 28, 28)
    y[..., 10:18, 10:18] = 1
    shifted = warp_views(y, 2)[1]
    assert (shifted.sum() - y.sum()).abs() < 1.0
    with pytest.raises(ValueError, match="views"):
        warp_views(x, len(VIEWS) + 1)
    with pytest.raises(ValueError, match="images"):
        warp_views(torch.rand(4, 8), 2)


def test_wrapper_averages_in_eval_only():
    net = Conv4(hidden=8, out_channels=8).eval()
    x = torch.rand(6, 1, 28, 28)
    tta = TTABackbone(net, 3).eval()
    expected = net(warp_views(x, 3).flatten(0, 1)).view(3, 6, -1).mean(0)
    torch.testing.assert_close(tta(x), expected)
    assert torch.equal(TTABackbone(net, 1)(x), net(x))
    tta.train()
    net.train()
    assert tta(x).shape == net(x).shape


def test_context_restores_backbone_and_keeps_queries_isolated():
    torch.manual_seed(0)
    model = build_method("protonet", Conv4(hidden=8, out_channels=8)).eval()
    backbone = model.backbone
    ep = episode()
    with torch.no_grad():
        plain = model(ep)
        with with_tta(model, 5):
            aug = model(ep)
            # replacing the other queries leaves query 0 unchanged (still inductive)
            other = episode(seed=1)
            mixed = Episode(ep.support, ep.support_labels,
                            torch.cat([ep.query[:, :1], other.query[:, 1:]], 1),
                            ep.query_labels, ep.class_ids, 3, 1)
            torch.testing.assert_close(model(mixed)[:, 0], aug[:, 0])
    assert model.backbone is backbone
    assert not torch.allclose(plain, aug)
    with pytest.raises(RuntimeError), with_tta(model, 3):
        raise RuntimeError("boom")
    assert model.backbone is backbone


@pytest.mark.parametrize("name", ["maml", "mtl", "finetune"])
def test_methods_that_adapt_the_backbone_refuse_tta(name):
    model = build_method(name, Conv4(hidden=8, out_channels=8), num_classes=5)
    with pytest.raises(ValueError, match="test-time augmentation"), with_tta(model, 3):
        pass
    assert isinstance(model.backbone, Conv4)


def blobs(noise: float) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    centers = F.interpolate(torch.rand(10, 1, 4, 4, generator=g), size=28, mode="bilinear")
    x = centers.repeat(12, 1, 1, 1) + noise * torch.randn(120, 1, 28, 28, generator=g)
    return TensorDataset(x, torch.arange(120) % 10)


def test_choose_tta_scores_every_choice_on_the_same_episodes():
    torch.manual_seed(0)
    model = build_method("protonet", Conv4(hidden=8, out_channels=8)).eval()
    ds = blobs(noise=0.6)
    kwargs = dict(ways=5, shots=1, queries=3, episodes=40, seed=3)
    pick = choose_tta(model, ds, (5, 1, 3, 5), **kwargs)
    assert sorted(pick["accuracy"]) == [1, 3, 5]
    for n in (1, 3, 5):
        res = evaluate(model, ds, tta=n, **kwargs)
        assert pick["accuracy"][n] == res["accuracy"] and pick["ci95"][n] == res["ci95"]
    assert pick["chosen"] == max((1, 3, 5), key=lambda n: (pick["accuracy"][n], -n))
    assert (pick["episodes"], pick["ways"], pick["shots"], pick["queries"]) == (40, 5, 1, 3)
    assert model.backbone.__class__ is Conv4  # the wrapper is gone afterwards


def test_choose_tta_takes_the_fewest_views_on_a_tie():
    torch.manual_seed(0)
    model = build_method("protonet", Conv4(hidden=8, out_channels=8)).eval()
    pick = choose_tta(model, blobs(noise=0.0), (9, 5, 1), ways=5, shots=1, queries=3,
                      episodes=10)
    assert set(pick["accuracy"].values()) == {100.0}
    assert pick["chosen"] == 1


def test_choose_tta_rejects_bad_choices_and_adapting_methods():
    model = build_method("protonet", Conv4(hidden=8, out_channels=8))
    ds = blobs(noise=0.5)
    with pytest.raises(ValueError, match="from 1 to 9"):
        choose_tta(model, ds, (1, 10))
    with pytest.raises(ValueError, match="from 1 to 9"):
        choose_tta(model, ds, ())
    with pytest.raises(TypeError, match="tta"):
        choose_tta(model, ds, (1, 5), tta=5)
    maml = build_method("maml", Conv4(hidden=8, out_channels=8), num_classes=5)
    with pytest.raises(ValueError, match="tta=1"):
        choose_tta(maml, ds, (1, 5))
