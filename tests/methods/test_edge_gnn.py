"""EdgeLabelingGNN: initial edges, one layer against a slow loop reference, modes, loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from relgraph.data import Episode
from relgraph.graph import EpisodeGraph
from relgraph.methods import build_method, list_methods
from relgraph.methods.edge_gnn import (
    EdgeLabelingGNN,
    balanced_edge_loss,
    initial_edges,
    pair_index,
)

D = 4


def feature_episode(support_labels: list[int], n_query: int, n_way: int, b: int = 2,
                    seed: int = 0) -> Episode:
    """Episodes of ``D``-dim feature vectors (use with an identity backbone)."""
    g = torch.Generator().manual_seed(seed)
    s = len(support_labels)
    labels = torch.tensor(support_labels).expand(b, -1).clone()
    qlabels = (torch.arange(n_query) % n_way).expand(b, -1).clone()
    k = min(support_labels.count(c) for c in range(n_way))
    support = torch.randn(b, s, D, generator=g)
    query = torch.randn(b, n_query, D, generator=g)
    return Episode(support, labels, query, qlabels, torch.arange(n_way).expand(b, -1).clone(),
                   n_way=n_way, k_shot=k)


def tiny_model(transductive: bool = False, **kwargs) -> EdgeLabelingGNN:
    torch.manual_seed(0)
    kwargs = {"node_dims": (6, 5), "edge_hidden": (7,), "num_layers": 2, **kwargs}
    return EdgeLabelingGNN(nn.Identity(), in_dim=D, transductive=transductive, **kwargs)


def randomise_batch_norm(model: nn.Module) -> None:
    """Non-trivial running statistics, so eval mode is a real test of the layers."""
    g = torch.Generator().manual_seed(3)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.running_mean.copy_(0.3 * torch.randn(m.num_features, generator=g))
            m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
            m.weight.data.copy_(1 + 0.2 * torch.randn(m.num_features, generator=g))
            m.bias.data.copy_(0.2 * torch.randn(m.num_features, generator=g))


def test_registered_both_modes():
    assert {"edge_gnn", "edge_gnn_transductive"} <= set(list_methods())
    assert not build_method("edge_gnn", nn.Identity(), in_dim=D).transductive
    assert build_method("edge_gnn_transductive", nn.Identity(), in_dim=D).transductive


def test_initial_edges_from_labels():
    ep = feature_episode([0, 1, 0], n_query=2, n_way=2, b=1)
    x = torch.zeros(1, 3, D)
    graph = EpisodeGraph.from_episode(ep, x, torch.zeros(1, 2, D))
    e = initial_edges(graph)
    assert e.shape == (1, 5, 5, 2)
    same, diff, half = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]), torch.tensor([0.5, 0.5])
    assert torch.equal(e[0, 0, 2], same) and torch.equal(e[0, 2, 0], same)
    assert torch.equal(e[0, 0, 1], diff) and torch.equal(e[0, 1, 2], diff)
    for i in range(5):
        assert torch.equal(e[0, i, i], same)
        for j in range(3, 5):
            if i != j:
                assert torch.equal(e[0, i, j], half) and torch.equal(e[0, j, i], half)
    assert torch.equal(initial_edges(graph, senders=3), e[:, :, :3])


def test_pair_index_covers_each_unordered_pair_once():
    pairs, lookup = pair_index(6, 4)
    assert pairs.shape == (2, 4 * 3 // 2 + 2 * 4)
    assert (pairs[0] > pairs[1]).all() and (pairs[1] < 4).all()
    for i in range(6):
        for j in range(4):
            p = int(lookup[i, j])
            if i == j:
                assert p == pairs.shape[1]
            else:
                assert {int(pairs[0, p]), int(pairs[1, p])} == {i, j}


def slow_layer(model: EdgeLabelingGNN, layer: int, x: torch.Tensor, e: torch.Tensor,
               hears: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One node + edge update of one episode with explicit loops over i, j (the paper's rules).

    ``hears[i, j]``: node ``i`` receives from node ``j`` (self-loops are skipped regardless).
    """
    f_v = model.node_layers[layer].mlp
    f_e = model.edge_layers[layer].mlp
    n, d = x.shape
    nb = [[j for j in range(n) if j != i and hears[i, j]] for i in range(n)]
    new_x = []
    for i in range(n):
        parts = []
        for p in range(2):
            total = sum(float(e[i, k, p]) for k in nb[i])
            agg = torch.zeros(d)
            for j in nb[i]:  # an all-zero channel aggregates nothing
                agg = agg + (float(e[i, j, p]) / total * x[j] if total > 0 else 0.0)
            parts.append(agg)
        new_x.append(f_v(torch.cat(parts + [x[i]]).unsqueeze(0))[0])
    v = torch.stack(new_x)
    new_e = torch.zeros(n, n, 2)
    for i in range(n):
        s = {j: float(torch.sigmoid(f_e((v[i] - v[j]).abs().unsqueeze(0)))) for j in nb[i]}
        for p in range(2):
            w = {j: s[j] if p == 0 else 1.0 - s[j] for j in nb[i]}
            mass = sum(float(e[i, k, p]) for k in nb[i])
            norm = sum(w[k] * float(e[i, k, p]) for k in nb[i])
            for j in nb[i]:
                new_e[i, j, p] = w[j] * float(e[i, j, p]) / norm * mass if norm > 0 else 0.0
        new_e[i, i, 0] = 1.0
    new_e = new_e + 1e-6
    return v, new_e / new_e.sum(-1, keepdim=True)


@pytest.mark.parametrize("transductive", [False, True])
def test_one_layer_matches_slow_reference(transductive):
    """n = 5 (3 supports, 2 queries): the batched layer equals the loops, in both modes."""
    model = tiny_model(transductive, num_layers=1)
    randomise_batch_norm(model)
    model.eval()
    ep = feature_episode([0, 1, 0], n_query=2, n_way=2, b=2)
    graph = EpisodeGraph.from_episode(ep, ep.support, ep.query, transductive)
    # who hears whom: the episode graph's message mask; inductive: supports never hear queries
    hears = graph.mask
    if not transductive:
        hears = hears & ~(~graph.is_query.unsqueeze(2) & graph.is_query.unsqueeze(1))
    m = 5 if transductive else 3
    with torch.no_grad():
        fast = model.propagate(graph.x, initial_edges(graph, m))[0]
        for k in range(2):
            _, slow = slow_layer(model, 0, graph.x[k], initial_edges(graph)[k], hears[k])
            assert torch.allclose(fast[k], slow[:, :m], atol=1e-6), (fast[k], slow[:, :m])


def test_second_layer_node_and_edge_features_match_slow_reference():
    """Two layers: the node features each layer computes and the edges after each equal the
    loops (the second layer starts from the first's output)."""
    model = tiny_model(True, num_layers=2)
    randomise_batch_norm(model)
    model.eval()
    ep = feature_episode([0, 1, 0], n_query=2, n_way=2, b=1)
    graph = EpisodeGraph.from_episode(ep, ep.support, ep.query, True)
    hears = torch.ones(5, 5, dtype=torch.bool)
    nodes = []  # the node features of each layer, as the batched code computes them
    hooks = [layer.register_forward_hook(lambda m, args, out: nodes.append(out))
             for layer in model.node_layers]
    with torch.no_grad():
        v1, e1 = slow_layer(model, 0, graph.x[0], initial_edges(graph)[0], hears)
        v2, e2 = slow_layer(model, 1, v1, e1, hears)
        fast = model.propagate(graph.x, initial_edges(graph))
    for hook in hooks:
        hook.remove()
    assert len(nodes) == 2
    assert torch.allclose(nodes[0][0], v1, atol=1e-6)
    assert torch.allclose(nodes[1][0], v2, atol=1e-6)
    assert torch.allclose(fast[0][0], e1, atol=1e-6)
    assert torch.allclose(fast[1][0], e2, atol=1e-6)


@pytest.mark.parametrize("transductive", [False, True])
def test_queries_influence_each_other_only_when_transductive(transductive):
    model = tiny_model(transductive)
    randomise_batch_norm(model)
    model.eval()
    ep = feature_episode([0, 1, 2, 0, 1, 2], n_query=6, n_way=3)
    base = model(ep)
    noisy = ep.query.clone()
    noisy[:, 1:] = 3 * torch.randn_like(noisy[:, 1:])
    out = model(Episode(ep.support, ep.support_labels, noisy, ep.query_labels, ep.class_ids, 3, 2))
    changed = not torch.allclose(out[:, 0], base[:, 0], atol=1e-5)
    assert changed == transductive


def test_balanced_edge_loss_hand_made():
    sim = torch.tensor([[0.9, 0.2, 0.4, 0.5], [0.7, 0.1, 0.3, 0.99]])
    target = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, True, True], [True, False, True, False]])
    # positives: 0.9 ; negatives: 0.2, 0.4, 0.5, 0.7, 0.3 (0.1 and 0.99 are masked out)
    pos = -math.log(0.9)
    neg = -sum(math.log(1 - p) for p in (0.2, 0.4, 0.5, 0.7, 0.3)) / 5
    assert balanced_edge_loss(sim, target, mask).item() == pytest.approx(pos + neg, rel=1e-6)
    # not the plain mean: one positive weighs as much as all negatives together
    plain = F.binary_cross_entropy(sim[mask], target[mask]).item()
    assert plain != pytest.approx(pos + neg, rel=1e-3)
    # no positive at all: only the negative term
    assert balanced_edge_loss(sim[:, 2:], target[:, 2:], mask[:, 2:]).item() == pytest.approx(
        -(math.log(0.6) + math.log(0.5) + math.log(0.7)) / 3, rel=1e-6)


def test_loss_is_the_weighted_edge_loss_on_query_edges():
    model = tiny_model(False, num_layers=2, layer_weights=(0.2, 1.0))
    randomise_batch_norm(model)
    model.eval()
    ep = feature_episode([0, 1, 2, 1], n_query=5, n_way=3)
    graph = EpisodeGraph.from_episode(ep, ep.support, ep.query)
    layers = model.propagate(graph.x, initial_edges(graph, 4))
    target = graph.target_edges(ep.query_labels)[:, 4:, :4]
    ones = torch.ones_like(target, dtype=torch.bool)
    expected = sum(w * balanced_edge_loss(e[:, 4:, :, 0], target, ones)
                   for w, e in zip((0.2, 1.0), layers, strict=True))
    loss, logits = model.loss(ep)
    assert torch.allclose(loss, expected)
    assert torch.allclose(logits, model(ep))
    with_ce = tiny_model(False, num_layers=2, layer_weights=(0.2, 1.0), node_loss_weight=0.5)
    with_ce.load_state_dict(model.state_dict())
    with_ce.eval()
    ce = F.cross_entropy(logits.reshape(-1, 3), ep.query_labels.reshape(-1))
    assert torch.allclose(with_ce.loss(ep)[0], expected + 0.5 * ce, atol=1e-6)


@pytest.mark.parametrize("scores", ["sum", "mean"])
def test_unbalanced_supports(scores):
    model = tiny_model(False, class_scores=scores)
    ep = feature_episode([0, 0, 0, 1, 2, 1], n_query=4, n_way=3)
    loss, logits = model.loss(ep)
    assert logits.shape == (2, 4, 3) and torch.isfinite(logits).all()
    loss.backward()
    model.eval()
    with torch.no_grad():
        graph = EpisodeGraph.from_episode(ep, ep.support, ep.query)
        sim = model.propagate(graph.x, initial_edges(graph, 6))[-1][:, 6:, :, 0]  # [b, q, s]
        onehot = F.one_hot(ep.support_labels, 3).float()
        class_sum = torch.einsum("bqs,bsc->bqc", sim, onehot)
        if scores == "mean":
            class_sum = class_sum / onehot.sum(1, keepdim=True)
        probs = class_sum / class_sum.sum(-1, keepdim=True)
        assert torch.allclose(model(ep), torch.log(probs + 1e-6), atol=1e-6)
        assert torch.allclose(model(ep).exp().sum(-1), torch.ones(2, 4), atol=1e-4)


@pytest.mark.parametrize("kwargs", [
    {"num_layers": 0},
    {"layer_weights": (1.0,)},
    {"layer_weights": (0.5, -1.0)},
    {"node_dims": ()},
    {"edge_hidden": (0,)},
    {"proj_dim": 0},
    {"node_loss_weight": -1.0},
    {"class_scores": "max"},
    {"eps": 0.0},
    {"dropout": 1.0},
])
def test_bad_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        tiny_model(**kwargs)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="pass in_dim"):
        EdgeLabelingGNN(nn.Identity())
    with pytest.raises(ValueError, match="transductive"):
        build_method("edge_gnn_transductive", nn.Identity(), in_dim=D, transductive=False)
    with pytest.raises(ValueError, match="same shape"):
        balanced_edge_loss(torch.rand(3), torch.ones(3), torch.ones(2, dtype=torch.bool))
    with pytest.raises(ValueError, match="expected x"):
        tiny_model().propagate(torch.randn(1, 5, D), torch.rand(1, 5, 6, 2))


def test_projection_and_batching():
    """proj_dim adds Linear + BatchNorm; episodes of a batch are independent in eval mode."""
    model = tiny_model(False, proj_dim=3)
    randomise_batch_norm(model)
    model.eval()
    ep = feature_episode([0, 1, 2], n_query=3, n_way=3, b=3)
    both = model(ep)
    assert torch.allclose(both[1:2], model(ep[1]), atol=1e-6)


def test_dropout_in_every_node_update_but_the_last():
    model = tiny_model(num_layers=3, dropout=0.5)
    has = [any(isinstance(m, nn.Dropout) for m in layer.modules()) for layer in model.node_layers]
    assert has == [True, True, False]
    ep = feature_episode([0, 1, 2], 4, 3)
    model.eval()
    assert torch.equal(model(ep), model(ep))  # dropout off in eval mode


@pytest.mark.parametrize("support_labels", [[0, 1, 2], [0, 0, 1, 1, 2, 2]])
def test_metric_edge_init_gives_protonet_when_the_edge_mlps_are_constant(support_labels):
    """edge_init="metric": query-support edges start at ProtoNet's class probability; with
    every edge MLP's output constant the layers keep them, so the class scores are
    ProtoNet's distribution. Support-support edges still come from the labels."""
    from relgraph.methods.protonet import ProtoNet

    model = tiny_model(edge_init="metric", class_scores="mean").eval()
    randomise_batch_norm(model)
    for layer in model.edge_layers:
        last = [m for m in layer.modules() if isinstance(m, nn.Linear)][-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
    ep = feature_episode(support_labels, n_query=4, n_way=3)
    proto = torch.softmax(ProtoNet(nn.Identity()).eval()(ep), dim=-1)
    # probabilities (the logits' eps and the edges' 1e-6 matter only for tiny ones)
    torch.testing.assert_close(model(ep).exp(), proto, atol=1e-4, rtol=1e-4)
    # the same model with the paper's init does not give ProtoNet
    model.edge_init = "uniform"
    assert not torch.allclose(model(ep).exp(), proto, atol=1e-2)
    with pytest.raises(ValueError, match="edge_init"):
        tiny_model(edge_init="cosine")
    assert "edge_init='uniform'" in repr(model)


def test_metric_edge_init_is_symmetric_in_a_transductive_graph():
    """Edge labels are symmetric (e_ij = e_ji): with all [n, n] edges, the support->query
    edges start at the same ProtoNet probabilities as the query->support ones."""
    from relgraph.methods.edge_gnn import _metric_edges

    ep = feature_episode([0, 1, 2], n_query=4, n_way=3)
    graph = EpisodeGraph.build(ep.support, ep.support_labels, ep.query, ep.n_way,
                               transductive=True)
    s, q = ep.support.shape[1], ep.query.shape[1]
    edges = _metric_edges(initial_edges(graph), ep.support, ep.query, ep.support_labels,
                          ep.n_way, None)
    assert torch.equal(edges, edges.transpose(1, 2))
    assert not torch.allclose(edges[:, -q:, :s], torch.full_like(edges[:, -q:, :s], 0.5))
    inductive = _metric_edges(initial_edges(graph, senders=s), ep.support, ep.query,
                              ep.support_labels, ep.n_way, None)
    assert torch.equal(inductive, edges[:, :, :s])
