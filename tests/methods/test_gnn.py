"""The GNN of Garcia & Bruna: adjacency, inductive/transductive messages, any support set."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from relgraph.data import Episode
from relgraph.graph import EpisodeGraph
from relgraph.methods import build_method
from relgraph.methods.gnn import GNN, masked_softmax, receive_mask

D = 6


def feature_episode(n_way: int = 3, k_shot: int = 2, n_query: int = 2, b: int = 2,
                    seed: int = 0, support_labels: list[int] | None = None) -> Episode:
    """Episodes of feature vectors around class centres (the backbone is the identity)."""
    g = torch.Generator().manual_seed(seed)
    centres = 2 * torch.randn(b, n_way, D, generator=g)
    s_lab = (torch.tensor(support_labels) if support_labels is not None
             else torch.arange(n_way).repeat_interleave(k_shot))
    q_lab = torch.arange(n_way).repeat_interleave(n_query)
    support = centres[:, s_lab] + 0.3 * torch.randn(b, len(s_lab), D, generator=g)
    query = centres[:, q_lab] + 0.3 * torch.randn(b, len(q_lab), D, generator=g)
    return Episode(support, s_lab.expand(b, -1).clone(), query, q_lab.expand(b, -1).clone(),
                   torch.arange(n_way).expand(b, -1).clone(), n_way=n_way, k_shot=k_shot)


def make_gnn(**kwargs) -> GNN:
    torch.manual_seed(0)
    return GNN(nn.Flatten(), embed_dim=D, nf=8, **kwargs)


def settle(model: GNN) -> GNN:
    """A few training-mode passes (BatchNorm running statistics), then eval mode."""
    model.train()
    with torch.no_grad():
        for s in range(3):
            model(feature_episode(seed=10 + s))
    return model.eval()


@pytest.mark.parametrize("transductive", [False, True])
@pytest.mark.parametrize("training", [False, True])
def test_adjacency_rows_sum_to_one_over_allowed_edges(transductive, training):
    model = make_gnn(transductive=transductive, layers=2)
    model.train(training)
    ep = feature_episode()
    adjs = model.adjacencies(model.graph(ep))
    assert len(adjs) == 3  # two hidden layers and the read-out layer
    graph = EpisodeGraph.from_episode(ep, ep.support, ep.query, transductive)
    allowed = receive_mask(graph, self_loops=False)
    for adj in adjs:
        assert adj.shape == allowed.shape
        assert (adj[~allowed] == 0).all()
        assert (adj[allowed] > 0).all()
        assert torch.allclose(adj.sum(-1), torch.ones(adj.shape[:2]), atol=1e-6)


def test_receive_mask_keeps_queries_apart():
    ep = feature_episode()
    s = ep.support.shape[1]
    graph = EpisodeGraph.from_episode(ep, ep.support, ep.query, transductive=False)
    mask = receive_mask(graph)
    assert mask[:, :s, :s].all()  # supports hear supports
    assert not mask[:, :s, s:].any()  # but not queries (they would pass them on)
    assert mask[:, s:, :s].all()  # queries hear supports
    assert torch.equal(mask[:, s:, s:], torch.eye(mask.shape[1] - s, dtype=torch.bool)
                       .expand(2, -1, -1))  # and only themselves
    assert not receive_mask(graph, self_loops=False).diagonal(dim1=1, dim2=2).any()
    full = EpisodeGraph.from_episode(ep, ep.support, ep.query, transductive=True)
    assert receive_mask(full).all()


def test_masked_softmax_empty_rows_are_zero():
    scores = torch.tensor([[1.0, 2.0, 3.0], [1.0, 1.0, 1.0]])
    mask = torch.tensor([[True, False, True], [False, False, False]])
    out = masked_softmax(scores, mask)
    e = torch.tensor([1.0, 3.0]).exp()
    assert torch.allclose(out[0], torch.stack([e[0], torch.tensor(0.0), e[1]]) / e.sum())
    assert torch.equal(out[1], torch.zeros(3))


def test_inductive_query_depends_only_on_supports_and_itself():
    model = settle(make_gnn())
    ep = feature_episode()
    base = model(ep)
    noisy = ep.query.clone()
    noisy[:, 1:] = 10 * torch.randn_like(noisy[:, 1:])
    out = model(Episode(ep.support, ep.support_labels, noisy, ep.query_labels, ep.class_ids,
                        ep.n_way, ep.k_shot))
    assert torch.allclose(out[:, 0], base[:, 0], atol=1e-5)
    # alone in its episode, a query gets the same scores
    alone = model(Episode(ep.support, ep.support_labels, ep.query[:, :1], ep.query_labels[:, :1],
                          ep.class_ids, ep.n_way, ep.k_shot))
    assert torch.allclose(alone[:, 0], base[:, 0], atol=1e-5)


def test_transductive_queries_influence_each_other():
    model = settle(make_gnn(transductive=True))
    assert model.transductive and not make_gnn().transductive
    ep = feature_episode()
    base = model(ep)
    noisy = ep.query.clone()
    noisy[:, 1:] = 10 * torch.randn_like(noisy[:, 1:])
    out = model(Episode(ep.support, ep.support_labels, noisy, ep.query_labels, ep.class_ids,
                        ep.n_way, ep.k_shot))
    assert not torch.allclose(out[:, 0], base[:, 0], atol=1e-4)


def test_registered_variants():
    inductive = build_method("gnn", nn.Flatten(), embed_dim=D)
    transductive = build_method("gnn_transductive", nn.Flatten(), embed_dim=D)
    assert isinstance(transductive, GNN) and transductive.transductive
    assert not inductive.transductive
    assert "transductive=True" in repr(transductive)


def test_unbalanced_supports_and_any_number_of_ways():
    model = settle(make_gnn())
    # 3 supports of class 0, 1 of class 1, 2 of class 2, in no particular order
    ep = feature_episode(k_shot=1, support_labels=[2, 0, 1, 0, 2, 0])
    out = model(ep)
    assert out.shape == (2, 6, 3) and torch.isfinite(out).all()
    perm = torch.tensor([5, 3, 0, 2, 4, 1])
    shuffled = Episode(ep.support[:, perm], ep.support_labels[:, perm], ep.query,
                       ep.query_labels, ep.class_ids, ep.n_way, ep.k_shot)
    assert torch.allclose(model(shuffled), out, atol=1e-5)
    # the same weights run 5-way and 2-way episodes
    assert model(feature_episode(n_way=5, k_shot=1)).shape == (2, 10, 5)
    assert model(feature_episode(n_way=2, k_shot=3)).shape == (2, 4, 2)
    # one support in all: it receives no message (empty row), still finite with gradients
    model.train()
    loss, logits = model.loss(feature_episode(n_way=1, k_shot=1))
    loss.backward()
    assert torch.isfinite(logits).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_a_few_steps_learn_easy_episodes():
    model = make_gnn()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for step in range(25):
        loss, _ = model.loss(feature_episode(b=4, seed=step))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5


def test_bad_arguments():
    with pytest.raises(ValueError, match="nf >= 2"):
        GNN(nn.Flatten(), embed_dim=D, nf=1)
    with pytest.raises(ValueError, match="layers >= 0"):
        GNN(nn.Flatten(), embed_dim=D, layers=-1)
    with pytest.raises(ValueError, match="embed_dim"):
        GNN(nn.Flatten())
    small = GNN(nn.Flatten(), embed_dim=D, layers=0)
    assert len(small.adjacencies(small.graph(feature_episode()))) == 1


def test_distance_bias_gives_protonet_adjacency_when_the_kernel_is_constant():
    """With the kernel MLPs' last layer zeroed, a 1-shot query's first adjacency over the
    supports is softmax(-||q - s||^2): Prototypical Networks' class distribution."""
    from relgraph.graph import squared_euclidean
    from relgraph.methods.protonet import ProtoNet

    model = make_gnn(distance_bias=True).eval()
    for kernel in model.kernels:
        last = [m for m in kernel.modules() if isinstance(m, nn.Linear)][-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
    ep = feature_episode(k_shot=1, n_query=2)
    adj = model.adjacencies(model.graph(ep))[0]  # [b, n, n]
    s = ep.support.shape[1]
    expected = torch.softmax(-squared_euclidean(ep.query, ep.support), dim=-1)
    torch.testing.assert_close(adj[:, s:, :s], expected)
    proto = ProtoNet(nn.Flatten()).eval()(ep)
    torch.testing.assert_close(adj[:, s:, :s], torch.softmax(proto, dim=-1))
    # alpha is learned: it gets a gradient
    model.train()
    loss = model.loss(feature_episode(k_shot=1))[0]
    loss.backward()
    assert model.log_alpha.grad is not None and torch.isfinite(model.log_alpha.grad).all()
    assert "distance_bias=True" in repr(model)


@pytest.mark.parametrize("k_shot", [1, 3])
def test_metric_readout_starts_as_protonet_and_learns_a_correction(k_shot):
    """With metric_readout the fresh model's query scores are exactly ProtoNet's logits (the
    read-out layer starts at zero); after a training step the graph layers contribute."""
    from relgraph.methods.protonet import ProtoNet

    model = make_gnn(metric_readout=True)
    ep = feature_episode(k_shot=k_shot, n_query=2)
    proto = ProtoNet(nn.Flatten()).eval()(ep)
    torch.testing.assert_close(settle(model)(ep), proto)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    hard = feature_episode(k_shot=k_shot, seed=3)  # queries labelled as the next class: high loss
    hard = Episode(hard.support, hard.support_labels, hard.query, (hard.query_labels + 1) % 3,
                   hard.class_ids, n_way=3, k_shot=k_shot)
    loss = model.loss(hard)[0]
    loss.backward()
    assert model.log_beta.grad is not None and torch.isfinite(model.log_beta.grad).all()
    assert model.convs[-1].lin_class.weight.grad.abs().sum() > 0
    opt.step()
    assert not torch.allclose(model.eval()(ep), proto)
    assert "metric_readout=True" in repr(model)
