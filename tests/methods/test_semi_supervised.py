"""Semi-supervised episodes (Ren et al. 2018), soft k-means ProtoNet and TPN (Liu et al. 2019)."""

from __future__ import annotations

import warnings

import pytest
import torch
from helpers import make_tiny_data
from test_contract import B, K, N, Q, make_episode

from relgraph.backbones import build_backbone
from relgraph.data import Episode, EpisodeSampler, build_dataset
from relgraph.engine.evaluate import episode_accuracies, evaluate
from relgraph.methods import RelationalHead, build_method, list_methods, method_class
from relgraph.methods.protonet import soft_kmeans
from relgraph.methods.tpn import knn_graph, label_propagation

U = 2  # unlabelled examples per class

HEADS = [m for m in list_methods() if issubclass(method_class(m), RelationalHead)]
EXTRA = {"protonet": {"unlabelled": "soft_kmeans"}}


def semi_episode(seed: int = 0, distractors: int = 1) -> Episode:
    """make_episode's episode plus U unlabelled examples per class and of distractor classes."""
    ep = make_episode(seed)
    g = torch.Generator().manual_seed(100 + seed)
    u = (N + distractors) * U
    unlabelled = torch.rand(B, u, *ep.support.shape[2:], generator=g)
    labels = torch.cat([torch.arange(N).repeat_interleave(U),
                        torch.full((distractors * U,), -1)]).expand(B, -1).clone()
    return Episode(ep.support, ep.support_labels, ep.query, ep.query_labels, ep.class_ids, N, K,
                   unlabelled=unlabelled, unlabelled_labels=labels)


def make_head(name: str) -> RelationalHead:
    torch.manual_seed(0)
    backbone = build_backbone("conv4", in_channels=1, image_size=16, hidden=8, out_channels=8)
    model = build_method(name, backbone, **EXTRA.get(name, {}))
    model.train()
    with torch.no_grad():
        for s in range(2):
            model(semi_episode(10 + s))
    return model.eval()


def assert_queries_apart(model: RelationalHead, ep: Episode) -> None:
    """Dropping all queries but one per class leaves the kept queries' logits unchanged."""
    keep = torch.arange(0, N * Q, Q)
    dropped = Episode(ep.support, ep.support_labels, ep.query[:, keep], ep.query_labels[:, keep],
                      ep.class_ids, N, K, unlabelled=ep.unlabelled,
                      unlabelled_labels=ep.unlabelled_labels)
    with torch.no_grad():
        assert torch.allclose(model(dropped), model(ep)[:, keep], atol=1e-5)


# -- the sampler --------------------------------------------------------------------------------

@pytest.fixture
def tiny(tmp_path):
    return build_dataset("tensors", [str(make_tiny_data(tmp_path / "tiny.pt"))])


def test_unlabelled_examples_leave_the_labelled_episode_unchanged(tiny):
    plain = EpisodeSampler(tiny, 3, 1, 2, seed=4)
    semi = EpisodeSampler(tiny, 3, 1, 2, seed=4, n_unlabelled=3, n_distractors=2)
    for e in range(20):
        assert torch.equal(plain.sample_episode(e), semi.sample_episode(e))
        idx, labels = semi.sample_unlabelled(e)
        assert idx.shape == labels.shape == ((3 + 2) * 3,)
        episode = semi.sample_episode(e)
        classes = tiny.targets[episode[:, 0]]
        own = tiny.targets[idx[labels >= 0]]
        assert torch.equal(own, classes.repeat_interleave(3))  # hidden label = episode class
        assert not set(tiny.targets[idx[labels < 0]].tolist()) & set(classes.tolist())
        assert not set(idx.tolist()) & set(episode.reshape(-1).tolist())  # no example twice
    batch = semi.read(tiny, [0, 1])
    assert batch.unlabelled.shape == (2, 15, 1, 28, 28) and batch.n_unlabelled == 15
    loader = next(iter(EpisodeSampler(tiny, 3, 1, 2, seed=4, n_unlabelled=3, n_distractors=2,
                                      episodes_per_batch=2).loader(tiny)))
    assert torch.equal(loader.unlabelled, batch.unlabelled)
    assert torch.equal(loader.unlabelled_labels, batch.unlabelled_labels)
    with pytest.raises(ValueError, match="n_distractors=1 needs n_unlabelled"):
        EpisodeSampler(tiny, 3, 1, 2, n_distractors=1)
    with pytest.raises(ValueError, match="n_way=10 \\+ n_distractors=3"):
        EpisodeSampler(tiny, 10, 1, 2, n_unlabelled=1, n_distractors=3)


# -- every head ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", HEADS)
def test_hidden_labels_of_unlabelled_examples_never_reach_a_head(name):
    model = make_head(name)
    ep = semi_episode()
    flipped = Episode(ep.support, ep.support_labels, ep.query, ep.query_labels, ep.class_ids, N,
                      K, unlabelled=ep.unlabelled, unlabelled_labels=ep.unlabelled_labels.flip(1))
    with torch.no_grad():
        assert torch.equal(model(ep), model(flipped))


@pytest.mark.parametrize("name", HEADS)
def test_heads_use_or_ignore_unlabelled_nodes_as_they_declare(name):
    model = make_head(name)
    semi = semi_episode()
    plain = make_episode()
    with torch.no_grad():
        with_u, without = model(semi), model(plain)
    if model.uses_unlabelled:
        assert not torch.allclose(with_u, without, atol=1e-6)
    else:
        assert torch.equal(with_u, without)


@pytest.mark.parametrize("name", [h for h in HEADS if not method_class(h).transductive])
def test_inductive_heads_stay_inductive_with_unlabelled_nodes(name):
    model = make_head(name)
    if model.transductive:
        pytest.skip("transductive")
    ep = semi_episode()
    assert_queries_apart(model, ep)


@pytest.mark.parametrize("name", ["protonet", "gnn", "edge_gnn", "tpn"])
def test_semi_supervised_training_step(name):
    model = make_head(name)
    model.train()
    loss, logits = model.loss(semi_episode(3))
    loss.backward()
    assert logits.shape == (B, N * Q, N) and torch.isfinite(loss)
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname


def test_cached_evaluation_with_unlabelled_examples_matches_uncached(tmp_path):
    data = build_dataset("tensors", [str(make_tiny_data(tmp_path / "tiny.pt"))])
    torch.manual_seed(0)
    backbone = build_backbone("conv4", in_channels=1, image_size=28, hidden=8, out_channels=8)
    for name, extra in (("protonet", {"unlabelled": "soft_kmeans_distractor"}), ("gnn", {}),
                        ("tpn", {})):
        model = build_method(name, backbone, **extra).eval()
        kw = dict(ways=3, shots=1, queries=2, episodes=8, unlabelled=2, distractors=1)
        assert torch.equal(episode_accuracies(model, data, cache=True, **kw),
                           episode_accuracies(model, data, cache=False, **kw))
    result = evaluate(build_method("matching", backbone), data, 3, 1, 2, 4, unlabelled=2)
    assert result["mode"] == "inductive (unlabelled examples ignored: U=2, D=0)"
    result = evaluate(build_method("tpn", backbone), data, 3, 1, 2, 4, unlabelled=2,
                      distractors=1)
    assert result["mode"] == "transductive, semi-supervised (U=2, D=1)"


# -- reference values ---------------------------------------------------------------------------

def test_soft_kmeans_reference():
    support = torch.tensor([[[0.0, 0.0], [4.0, 0.0]]])
    labels = torch.tensor([[0, 1]])
    protos = support.clone()
    unlabelled = torch.tensor([[[0.0, 1.0], [4.0, 1.0]]])
    out = soft_kmeans(protos, unlabelled, support, labels, 2)
    z = torch.softmax(torch.tensor([-1.0, -17.0]), 0)  # unlabelled 0 to the two prototypes
    expected0 = (support[0, 0] + z[0] * unlabelled[0, 0] + z[1] * unlabelled[0, 1]) / (1 + 1)
    assert torch.allclose(out[0, 0], expected0, atol=1e-6)
    # a far distractor cluster takes nothing from an example next to a prototype ...
    far = soft_kmeans(protos, unlabelled, support, labels, 2, None, torch.tensor(-5.0))
    assert torch.allclose(far, out, atol=1e-4)
    # ... and a wide one takes a far-away example away from the classes
    outlier = torch.tensor([[[30.0, 30.0]]])
    plain = soft_kmeans(protos, outlier, support, labels, 2)
    wide = soft_kmeans(protos, outlier, support, labels, 2, None, torch.tensor(4.0))
    assert (plain - support).abs().max() > 5 and (wide - support).abs().max() < 1e-3
    # a very wide one is a constant threshold -log r: finite, no overflow in 1 / r^2
    huge = soft_kmeans(protos, outlier, support, labels, 2, None, torch.tensor(200.0))
    assert torch.isfinite(huge).all() and (huge - support).abs().max() < 1e-3


def test_distractor_log_radius_sets_the_initial_radius():
    model = build_method("protonet", None, unlabelled="soft_kmeans_distractor",
                         distractor_log_radius=8.0)
    assert model.distractor_log_r.item() == 8.0
    assert build_method("protonet", None, unlabelled="soft_kmeans_distractor"
                        ).distractor_log_r.item() == 0.0


def test_label_propagation_matches_the_explicit_inverse():
    g = torch.Generator().manual_seed(0)
    w = torch.rand(3, 6, 6, generator=g)
    w = knn_graph(w + w.transpose(1, 2), 3)
    assert torch.equal(w, w.transpose(1, 2)) and (w.diagonal(dim1=1, dim2=2) == 0).all()
    assert ((w > 0).sum(-1) >= 3).all()
    y = torch.zeros(3, 6, 2)
    y[:, 0, 0] = y[:, 1, 1] = 1
    out = label_propagation(w, y, 0.9)
    for e in range(3):
        d = w[e].sum(-1).rsqrt()
        s = d[:, None] * w[e] * d[None, :]
        ref = torch.linalg.inv(torch.eye(6) - 0.9 * s) @ y[e]
        assert torch.allclose(out[e], ref, atol=1e-5)


def test_tpn_arguments():
    with pytest.raises(ValueError, match="alpha must lie in"):
        build_method("tpn", None, embed_dim=4, alpha=1.0)
    with pytest.raises(ValueError, match="k \\(neighbours per node\\)"):
        build_method("tpn", None, embed_dim=4, k=0)
    with pytest.raises(ValueError, match="unlabelled must be one of"):
        build_method("protonet", None, unlabelled="kmeans")
    with pytest.raises(ValueError, match="distance must be one of"):
        build_method("tpn", None, embed_dim=4, distance="l2")


def test_tpn_mean_distance_keeps_large_embeddings_alive():
    """Summed over 1,600 unnormalised dimensions (Conv4 at 84 px) every Gaussian weight
    underflows: no propagation, no gradient, and a warning that names distance=mean; the
    authors' mean distance trains."""
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(1, 5, 1, 1600, generator=g)
    x = (3 * (centers + 0.5 * torch.randn(1, 5, 4, 1600, generator=g)).relu()).reshape(1, 20, 1600)
    labels = torch.arange(5).repeat_interleave(4).reshape(1, 20)
    support, query = x[:, ::4], x[:, [i for i in range(20) if i % 4]]
    s_labels, q_labels = labels[:, ::4], labels[:, [i for i in range(20) if i % 4]]
    episode = Episode(support, s_labels, query, q_labels, torch.arange(5)[None], n_way=5,
                      k_shot=1)
    for distance, alive in (("sum", False), ("mean", True)):
        torch.manual_seed(0)
        model = build_method("tpn", None, embed_dim=1600, distance=distance).train()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            loss, _ = model.loss(episode)
        loss.backward()
        grad = sum(float(p.grad.abs().sum()) for p in model.scale.parameters())
        warned = any("distance=mean" in str(w.message) for w in caught)
        assert (grad > 0) == alive and warned == (not alive), (distance, grad, warned)


def test_random_query_counts_keep_the_first_queries_of_each_class(tmp_path):
    data = build_dataset("tensors", [str(make_tiny_data(tmp_path / "tiny.pt"))])
    sampler = EpisodeSampler(data, 3, 1, 4, seed=2)
    counts = torch.stack([sampler.random_query_counts(e) for e in range(50)])
    assert counts.min() == 1 and counts.max() == 4 and len(set(counts.sum(1).tolist())) > 2
    torch.manual_seed(0)
    backbone = build_backbone("conv4", in_channels=1, image_size=28, hidden=8, out_channels=8)
    for name in ("protonet", "tpn"):
        model = build_method(name, backbone).eval()
        kw = dict(ways=3, shots=1, queries=4, episodes=6, seed=2, random_queries=True)
        cached = episode_accuracies(model, data, cache=True, **kw)
        assert torch.equal(cached, episode_accuracies(model, data, cache=False, **kw))
    # an inductive method scores each kept query as in the balanced episode
    model = build_method("protonet", backbone).eval()
    for e in range(6):
        ep = sampler.read(data, [e])
        with torch.no_grad():
            right = (model(ep).argmax(-1) == ep.query_labels)[0]
        keep = torch.cat([c * 4 + torch.arange(int(n))
                          for c, n in enumerate(sampler.random_query_counts(e))])
        acc = episode_accuracies(model, data, 3, 1, 4, e + 1, seed=2, random_queries=True)[e]
        assert torch.isclose(acc, right[keep].float().mean())
    result = evaluate(model, data, 3, 1, 4, 3, seed=2, random_queries=True)
    assert result["query_counts"] == "random 1-4 per class"


def test_dpgn_inductive_mode_keeps_queries_apart_and_runs_any_episode_shape():
    torch.manual_seed(0)
    backbone = build_backbone("conv4", in_channels=1, image_size=16, hidden=8, out_channels=8)
    model = build_method("dpgn", backbone, transductive=False, generations=2)
    model.train()
    with torch.no_grad():
        model(semi_episode(5))
    model.eval()
    ep = semi_episode()
    assert_queries_apart(model, ep)
    with torch.no_grad():
        one_shot = Episode(ep.support[:, ::K], ep.support_labels[:, ::K], ep.query,
                           ep.query_labels, ep.class_ids, N, 1)
        assert model(one_shot).shape == (B, N * Q, N)  # trained shape or not


def test_normalised_edge_update_reference():
    from relgraph.nn import normalised_edge_update

    prev = torch.tensor([[[1.0, 0.5, 0.5], [0.5, 1.0, 0.5], [0.5, 0.5, 1.0]]])
    sim = torch.tensor([[[0.0, 0.9, 0.1], [0.9, 0.0, 0.3], [0.1, 0.3, 0.0]]])
    out = normalised_edge_update(sim, prev)
    # row 0: off-diagonal mass 1.0 split 0.9 : 0.1, self-loop 1, then L1-normalised (+eps)
    expected = torch.tensor([1.0, 0.9, 0.1]) + 1e-6
    assert torch.allclose(out[0, 0], expected / expected.sum(), atol=1e-6)
    assert torch.allclose(out.sum(-1), torch.ones(1, 3))
