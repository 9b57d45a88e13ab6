"""Any PyG convolution as a method; the episode graph's PyG view agrees with dense layers."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch_geometric.nn import DenseGraphConv, GINEConv, GraphConv, MessagePassing

from relgraph.data import Episode
from relgraph.graph import EpisodeGraph, cosine_similarity
from relgraph.graph.views import knn_mask, to_pyg
from relgraph.methods import build_method
from relgraph.methods.pyg_conv import PyGConvMethod

D = 6


def feature_episode(n_way: int = 3, k_shot: int = 2, n_query: int = 2, b: int = 2,
                    seed: int = 0) -> Episode:
    g = torch.Generator().manual_seed(seed)
    centres = 2 * torch.randn(b, n_way, D, generator=g)
    s_lab = torch.arange(n_way).repeat_interleave(k_shot)
    q_lab = torch.arange(n_way).repeat_interleave(n_query)
    support = centres[:, s_lab] + 0.3 * torch.randn(b, len(s_lab), D, generator=g)
    query = centres[:, q_lab] + 0.3 * torch.randn(b, len(q_lab), D, generator=g)
    return Episode(support, s_lab.expand(b, -1).clone(), query, q_lab.expand(b, -1).clone(),
                   torch.arange(n_way).expand(b, -1).clone(), n_way=n_way, k_shot=k_shot)


def episode_graph(transductive: bool = True) -> EpisodeGraph:
    ep = feature_episode()
    return EpisodeGraph.from_episode(ep, ep.support, ep.query, transductive)


def copy_weights(dense: DenseGraphConv, sparse: GraphConv) -> None:
    with torch.no_grad():
        sparse.lin_rel.weight.copy_(dense.lin_rel.weight)
        sparse.lin_rel.bias.copy_(dense.lin_rel.bias)
        sparse.lin_root.weight.copy_(dense.lin_root.weight)


@pytest.mark.parametrize(("aggr", "weighted"), [("add", False), ("mean", False), ("add", True)])
def test_dense_graph_conv_matches_pyg_on_the_full_graph(aggr, weighted):
    # (weighted "mean" differs by design: test_dense_weighted_mean_divides_by_the_weighted_degree)
    torch.manual_seed(0)
    graph = episode_graph(transductive=True)
    dense, sparse = DenseGraphConv(D, 5, aggr=aggr), GraphConv(D, 5, aggr=aggr)
    copy_weights(dense, sparse)
    sim = cosine_similarity(graph.x) + 2.0 if weighted else None  # positive weights
    batch = to_pyg(graph, sim)
    adj = sim if weighted else graph.mask.float()
    assert graph.mask.all()  # fully connected, self-loops included
    expected = dense(graph.x, adj)
    got = sparse(batch.x, batch.edge_index, batch.edge_attr if weighted else None)
    assert torch.allclose(got, expected.reshape(-1, 5), atol=1e-5)


def test_dense_weighted_mean_divides_by_the_weighted_degree():
    """With weighted edges, DenseGraphConv's 'mean' divides the weighted sum by the weighted
    degree (sparse GraphConv divides by the edge count, so the two are not compared)."""
    torch.manual_seed(0)
    graph = episode_graph(transductive=True)
    dense = DenseGraphConv(D, 5, aggr="mean")
    adj = cosine_similarity(graph.x) + 2.0  # positive weights, degrees > 1
    expected = (dense.lin_rel((adj @ graph.x) / adj.sum(-1, keepdim=True))
                + dense.lin_root(graph.x))
    assert torch.allclose(dense(graph.x, adj), expected, atol=1e-5)


def test_dense_graph_conv_matches_pyg_on_knn_and_inductive_graphs():
    torch.manual_seed(0)
    graph = episode_graph(transductive=False)
    sim = cosine_similarity(graph.x)
    dense, sparse = DenseGraphConv(D, 4), GraphConv(D, 4)
    copy_weights(dense, sparse)
    for knn in (None, 3):
        batch = to_pyg(graph, sim, knn=knn)
        adj = graph.mask if knn is None else knn_mask(graph.mask, sim, knn)
        expected = dense(graph.x, adj.float())
        assert torch.allclose(sparse(batch.x, batch.edge_index), expected.reshape(-1, 4),
                              atol=1e-5)


def isolation_holds(model: PyGConvMethod) -> bool:
    model.eval()
    ep = feature_episode()
    base = model(ep)
    noisy = ep.query.clone()
    noisy[:, 1:] = 10 * torch.randn_like(noisy[:, 1:])
    out = model(Episode(ep.support, ep.support_labels, noisy, ep.query_labels, ep.class_ids,
                        ep.n_way, ep.k_shot))
    return torch.allclose(out[:, 0], base[:, 0], atol=1e-5)


@pytest.mark.parametrize("kwargs", [
    {"conv": "GATConv", "heads": 2},
    {"conv": "GATConv", "knn": 2, "edge_input": "edge_attr", "conv_kwargs": {"edge_dim": 1}},
    {"conv": "GCNConv"},
    {"conv": "GraphConv", "knn": 3, "edge_input": "edge_weight", "conv_kwargs": {"aggr": "mean"}},
    {"conv": "SAGEConv", "layers": 3},
])
def test_pyg_convolutions_train_and_keep_queries_apart(kwargs):
    torch.manual_seed(0)
    model = PyGConvMethod(nn.Flatten(), embed_dim=D, hidden=8, **kwargs)
    loss, logits = model.loss(feature_episode())
    assert logits.shape == (2, 6, 3) and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    assert isolation_holds(model)
    # relabelling the classes permutes the logits; any number of ways works
    ep = feature_episode()
    sigma = torch.tensor([2, 0, 1])
    relabelled = Episode(ep.support, sigma[ep.support_labels], ep.query, sigma[ep.query_labels],
                         ep.class_ids, 3, 2)
    assert torch.allclose(model(relabelled)[..., sigma], model(ep), atol=1e-5)
    assert model(feature_episode(n_way=5, k_shot=1)).shape == (2, 10, 5)


def test_transductive_pyg_lets_queries_talk():
    torch.manual_seed(0)
    model = PyGConvMethod(nn.Flatten(), embed_dim=D, hidden=8, transductive=True)
    assert model.transductive and not isolation_holds(model)


class MaxRelConv(MessagePassing):
    """The docstring example: a relational layer of one's own."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(aggr="max")
        self.mlp = nn.Sequential(nn.Linear(2 * in_channels, out_channels), nn.ReLU())

    def forward(self, x, edge_index):  # noqa: ANN001, ANN201
        return self.propagate(edge_index, x=x)

    def message(self, x_i, x_j):  # noqa: ANN001, ANN201
        return self.mlp(torch.cat([x_i, (x_i - x_j).abs()], dim=-1))


def test_custom_message_passing_layer():
    torch.manual_seed(0)
    model = PyGConvMethod(nn.Flatten(), conv=MaxRelConv, embed_dim=D, hidden=8, knn=3)
    assert model(feature_episode()).shape == (2, 6, 3)
    assert isolation_holds(model)
    assert "conv=MaxRelConv" in repr(model)


def test_registered_default_is_gat():
    model = build_method("pyg", nn.Flatten(), embed_dim=D)
    assert type(model.convs[0]).__name__ == "GATConv" and not model.transductive


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown convolution 'NopeConv'.*GATConv"):
        PyGConvMethod(nn.Flatten(), conv="NopeConv", embed_dim=D)
    with pytest.raises(ValueError, match="heads"):
        PyGConvMethod(nn.Flatten(), embed_dim=D, hidden=10, heads=3)
    with pytest.raises(ValueError, match="edge_input"):
        PyGConvMethod(nn.Flatten(), embed_dim=D, edge_input="weights")
    with pytest.raises(ValueError, match="knn"):
        PyGConvMethod(nn.Flatten(), embed_dim=D, knn=0)
    with pytest.raises(ValueError, match="layers"):
        PyGConvMethod(nn.Flatten(), embed_dim=D, layers=0)
    with pytest.raises(ValueError, match="embed_dim"):
        PyGConvMethod(nn.Flatten())
    with pytest.raises(ValueError, match="fails on"):  # GINEConv needs edge features
        PyGConvMethod(nn.Flatten(), conv=lambda i, o: GINEConv(nn.Linear(i, o)), embed_dim=D)
