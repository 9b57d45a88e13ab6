"""Test-time augmentation: fixed views, identity first, per-image (inductive), restored after."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from relgraph.backbones import Conv4
from relgraph.data import Episode, TensorDataset
from relgraph.engine import choose_tta, evaluate
from relgraph.engine.tta import VIEWS, TTABackbone, warp_views, with_tta
from relgraph.meta import functional_forward
from relgraph.methods import build_method
from relgraph.methods.maml import _backbone_part


def episode(seed: int = 0, queries: int = 3) -> Episode:
    g = torch.Generator().manual_seed(seed)

    def images(n: int) -> torch.Tensor:  # smooth blobs, so small warps change the features
        return F.interpolate(torch.rand(n, 1, 7, 7, generator=g), size=28,
                             mode="bilinear").unsqueeze(0)

    return Episode(images(3), torch.arange(3).unsqueeze(0), images(3 * queries),
                   torch.arange(3).repeat_interleave(queries).unsqueeze(0),
                   torch.arange(3).unsqueeze(0), n_way=3, k_shot=1)


def other_queries(ep: Episode) -> Episode:
    """``ep`` with every query but the first replaced by another episode's."""
    other = episode(seed=1, queries=ep.query.shape[1] // ep.n_way)
    return Episode(ep.support, ep.support_labels,
                   torch.cat([ep.query[:, :1], other.query[:, 1:]], 1),
                   ep.query_labels, ep.class_ids, ep.n_way, ep.k_shot)


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

    def centroid(img):
        w = img[0, 0]
        cols = torch.arange(28.0)
        return (w.sum(0) * cols).sum() / w.sum(), (w.sum(1) * cols).sum() / w.sum()

    (x0, y0), (x1, y1) = centroid(y), centroid(shifted)
    assert abs((x1 - x0) - 0.04 * 28) < 0.05 and abs(y1 - y0) < 0.05  # +1.12 px along x
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
    torch.testing.assert_close(tta(x), net(x))  # training mode: the backbone alone, no views


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
            torch.testing.assert_close(model(other_queries(ep))[:, 0], aug[:, 0])
    assert model.backbone is backbone
    assert not torch.allclose(plain, aug)
    with pytest.raises(RuntimeError), with_tta(model, 3):
        raise RuntimeError("boom")
    assert model.backbone is backbone


@pytest.mark.parametrize("name", ["mtl", "finetune"])
def test_methods_that_adapt_the_backbone_refuse_tta(name):
    model = build_method(name, Conv4(hidden=8, out_channels=8), num_classes=5)
    with pytest.raises(ValueError, match="test-time augmentation"), with_tta(model, 3):
        pass
    assert isinstance(model.backbone, Conv4)


def small_maml(name: str = "maml", **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_method(name, Conv4(hidden=8, out_channels=8), inner_steps=1,
                         eval_inner_steps=2, inner_lr=0.3, **kwargs)
    # a few training steps, so the adapted backbone is not the random one
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for seed in range(3):
        loss, _ = model.loss(episode(seed=seed))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.mark.parametrize("name", ["maml", "fomaml", "reptile"])
def test_meta_learners_average_their_adapted_embeddings_over_the_views(name):
    model = small_maml(name)
    backbone = model.backbone
    ep = episode()
    plain = model(ep)
    with with_tta(model, 5):
        assert model.tta_views == 5
        aug = model(ep)
        # replacing the other queries leaves query 0 unchanged (still inductive)
        torch.testing.assert_close(model(other_queries(ep))[:, 0], aug[:, 0])
        # what the views mean: the mean embedding over the warps, statistics from the warped
        # support set, adapted on the supports' averaged embeddings
        fast = model.adapt(ep.support[0], ep.support_labels[0], 3, model.eval_inner_steps,
                           create_graph=False)
        s, q = ep.support[0], ep.query[0]
        rows = torch.cat([warp_views(s, 5).flatten(0, 1), warp_views(q, 5).flatten(0, 1)])
        z = functional_forward(model.backbone, _backbone_part(fast), rows, n_stats=5 * 3)
        zq = z[5 * 3:].view(5, q.shape[0], -1).mean(0)
        expected = F.linear(zq, fast["head.weight"], fast["head.bias"])
        torch.testing.assert_close(aug[0], expected)
    assert model.tta_views == 1 and model.backbone is backbone
    assert not torch.allclose(plain, aug)
    torch.testing.assert_close(model(ep), plain)  # restored: the same logits as before
    # one view is the plain model; training mode ignores the views
    with with_tta(model, 1):
        torch.testing.assert_close(model(ep), plain)
    model.train()
    model.tta_views = 5
    torch.manual_seed(0)
    trained_with = model(ep)
    model.tta_views = 1
    torch.manual_seed(0)
    torch.testing.assert_close(model(ep), trained_with)
    with pytest.raises(RuntimeError), with_tta(model, 3):
        raise RuntimeError("boom")
    assert model.tta_views == 1


def test_meta_learner_views_adapt_on_the_averaged_support_embeddings():
    model = small_maml()
    ep = episode()
    s, y = ep.support[0], ep.support_labels[0]
    with with_tta(model, 3):
        fast = model.adapt(s, y, 3, 2, create_graph=False)
    # by hand: each step's loss on the supports' mean embeddings over their 3 warps,
    # BatchNorm with the statistics of the 9 warped supports
    rows = warp_views(s, 3).flatten(0, 1)

    def by_hand(average_embeddings: bool) -> dict:
        params = {k: v.detach().clone().requires_grad_() for k, v in
                  model.backbone.named_parameters()}
        params["head.weight"] = torch.zeros(3, 8, requires_grad=True)
        params["head.bias"] = torch.zeros(3, requires_grad=True)
        for _ in range(2):
            z = functional_forward(model.backbone, _backbone_part(params), rows).view(3, 3, -1)
            w, b = params["head.weight"], params["head.bias"]
            if average_embeddings:
                loss = F.cross_entropy(F.linear(z.mean(0), w, b), y)
            else:  # the mean of the views' losses
                loss = torch.stack([F.cross_entropy(F.linear(v, w, b), y) for v in z]).mean()
            grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
            params = {k: v if g is None else v - model.eval_inner_lr * g
                      for (k, v), g in zip(params.items(), grads, strict=True)}
        return params

    expected = by_hand(average_embeddings=True)
    for k in expected:
        torch.testing.assert_close(fast[k], expected[k])
    other = by_hand(average_embeddings=False)
    assert not torch.allclose(fast["head.weight"], other["head.weight"], atol=1e-5)


def test_meta_learner_views_in_transductive_batch_norm_and_bad_counts():
    model = small_maml(bn="transductive")
    ep = episode()
    with with_tta(model, 3):
        assert model(ep).shape == (1, 9, 3)
    with pytest.raises(ValueError, match="views"), with_tta(model, 10):
        pass
    model.tta_views = 10
    with pytest.raises(ValueError, match="views must be between 1 and 9"):
        model(ep)


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
    mtl = build_method("mtl", Conv4(hidden=8, out_channels=8), num_classes=5)
    with pytest.raises(ValueError, match="tta=1"):
        choose_tta(mtl, ds, (1, 5))


def test_choose_tta_on_a_meta_learner_matches_evaluate():
    model = small_maml()
    ds = blobs(noise=0.6)
    kwargs = dict(ways=5, shots=1, queries=3, episodes=6, seed=3)
    pick = choose_tta(model, ds, (1, 3), **kwargs)
    for n in (1, 3):
        assert pick["accuracy"][n] == evaluate(model, ds, tta=n, **kwargs)["accuracy"]
    assert model.tta_views == 1
