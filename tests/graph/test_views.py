"""PyG, networkx and matplotlib views of episode graphs."""

from __future__ import annotations

import pytest
import torch
from torch_geometric.data import Batch, Data

from relgraph.data import Episode
from relgraph.graph import EpisodeGraph, cosine_similarity
from relgraph.graph.views import draw_episode_graph, knn_mask, to_networkx, to_pyg

Q_LABELS = torch.tensor([0, 0, 1, 1]).expand(2, -1)


def make_graph(transductive: bool = False, b: int = 2) -> EpisodeGraph:
    """2-way 2-shot, 2 queries per class: 4 supports, 4 queries, 8 nodes per episode."""
    g = torch.Generator().manual_seed(0)
    s_lab = torch.tensor([0, 0, 1, 1])
    q_lab = torch.tensor([0, 0, 1, 1])
    centres = torch.randn(b, 2, 5, generator=g)
    support = centres[:, s_lab] + 0.2 * torch.randn(b, 4, 5, generator=g)
    query = centres[:, q_lab] + 0.2 * torch.randn(b, 4, 5, generator=g)
    ep = Episode(support, s_lab.expand(b, -1).clone(), query, q_lab.expand(b, -1).clone(),
                 torch.tensor([[3, 8]]).expand(b, -1).clone(), n_way=2, k_shot=2)
    return EpisodeGraph.from_episode(ep, support, query, transductive)


def test_to_pyg_edges_follow_the_mask():
    graph = make_graph()
    sim = cosine_similarity(graph.x)
    batch = to_pyg(graph, sim)
    assert batch.num_graphs == 2 and batch.x.shape == (16, 5)
    assert torch.equal(batch.y, graph.labels.reshape(-1))
    reference = Batch.from_data_list([
        Data(x=graph.x[e], edge_index=graph.mask[e].nonzero().flip(1).T) for e in range(2)])
    assert torch.equal(batch.edge_index, reference.edge_index)  # one vectorised call
    assert torch.equal(batch.is_query, graph.is_query.reshape(-1))
    for e, data in enumerate(batch.to_data_list()):
        assert torch.equal(data.x, graph.x[e])
        assert torch.equal(data.node_labels, graph.node_labels()[e])
        source, target = data.edge_index
        assert data.num_edges == int(graph.mask[e].sum())
        assert graph.mask[e, target, source].all()  # target receives from source
        assert torch.equal(data.edge_attr, sim[e, target, source])
        # no query receives from another query
        qq = data.is_query[source] & data.is_query[target] & (source != target)
        assert not qq.any()
    # without a similarity there is no edge_attr, and the same edges (the mask's, not sim's)
    plain = to_pyg(graph)
    assert plain.edge_attr is None
    assert torch.equal(plain.edge_index, batch.edge_index)


def test_to_pyg_knn_keeps_the_most_similar_allowed_neighbours():
    graph = make_graph(transductive=True)
    sim = cosine_similarity(graph.x)
    batch = to_pyg(graph, sim, knn=2)
    n = graph.num_nodes
    for e, data in enumerate(batch.to_data_list()):
        source, target = data.edge_index
        loops = source == target
        assert loops.sum() == n  # self-loops of the mask are kept
        for i in range(n):
            chosen = source[(target == i) & ~loops]
            assert len(chosen) == 2
            others = sim[e, i].clone()
            others[i] = -float("inf")
            assert set(chosen.tolist()) == set(others.topk(2).indices.tolist())
    # fewer allowed neighbours than k: all of them (inductive queries hear the 4 supports)
    mask = knn_mask(make_graph().mask, sim, 10)
    assert torch.equal(mask, make_graph().mask)
    with pytest.raises(ValueError, match="knn needs a similarity"):
        to_pyg(graph, knn=2)
    with pytest.raises(ValueError, match="knn >= 1"):
        to_pyg(graph, sim, knn=0)
    with pytest.raises(ValueError, match=r"similarity of shape \(2, 8, 8\)"):
        to_pyg(graph, sim[:, :4])


def test_to_networkx_attributes():
    graph = make_graph()
    sim = cosine_similarity(graph.x)
    preds = torch.tensor([[0, 1, 1, 1], [0, 0, 1, 1]])
    g = to_networkx(graph, 1, sim, preds, query_labels=Q_LABELS)
    assert g.number_of_nodes() == 8
    assert [g.nodes[i]["role"] for i in range(8)] == ["support"] * 4 + ["query"] * 4
    assert [g.nodes[i]["label"] for i in range(8)] == [0, 0, 1, 1, 0, 0, 1, 1]
    assert [g.nodes[i]["prediction"] for i in range(8)] == [None] * 4 + [0, 0, 1, 1]
    # without the query labels (the graph does not carry them) queries are -1
    assert [to_networkx(graph, 1).nodes[i]["label"] for i in range(8)] == [0, 0, 1, 1] + [-1] * 4
    # inductive: every pair except two different queries; no self-loops
    assert g.number_of_edges() == 28 - 6
    assert not g.has_edge(4, 5) and g.has_edge(0, 5)
    assert g[0][5]["weight"] == pytest.approx(float(sim[1, 0, 5]))
    # logits work as predictions; no similarity gives weight 1
    logits = torch.nn.functional.one_hot(preds, 2).float()
    g2 = to_networkx(make_graph(transductive=True), 0, predictions=logits)
    assert g2.number_of_edges() == 28 and g2[4][5]["weight"] == 1.0
    assert [g2.nodes[i]["prediction"] for i in range(4, 8)] == [0, 1, 1, 1]
    with pytest.raises(ValueError, match="predictions"):
        to_networkx(graph, 0, predictions=torch.zeros(2, 3, dtype=torch.long))


def test_draw_episode_graph(tmp_path):
    import matplotlib.pyplot as plt

    from relgraph.viz import save_figure

    graph = make_graph()
    preds = torch.tensor([[0, 1, 1, 1], [0, 0, 1, 1]])
    fig = draw_episode_graph(graph, 0, predictions=preds, class_names=["alpha", "beta"],
                             query_labels=Q_LABELS)
    ax = fig.axes[0]
    assert "3/4 correct" in ax.get_title()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[:2] == ["alpha", "beta"] and "wrong" in labels
    # seeded layout: the same picture twice
    again = draw_episode_graph(graph, 0, predictions=preds, class_names=["alpha", "beta"],
                               query_labels=Q_LABELS)
    first = [c.get_offsets().tolist() for c in ax.collections]
    assert first == [c.get_offsets().tolist() for c in again.axes[0].collections]
    path = save_figure(fig, tmp_path / "graph.png")
    assert path.stat().st_size > 1000
    plt.close(again)
    # on a given axis, circular layout, no predictions
    fig, axes = plt.subplots(1, 2)
    assert draw_episode_graph(graph, 1, ax=axes[1], layout="circular") is fig
    plt.close(fig)
    with pytest.raises(ValueError, match="2 class names"):
        draw_episode_graph(graph, class_names=["a"])
    with pytest.raises(ValueError, match="layout"):
        draw_episode_graph(graph, layout="kamada")
