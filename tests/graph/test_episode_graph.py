"""The episode graph, its message mask, and the similarity kernels (reference values)."""

from __future__ import annotations

import pytest
import torch

from relgraph.data import Episode
from relgraph.graph import (
    EpisodeGraph,
    LearnedKernel,
    cosine_similarity,
    message_mask,
    squared_euclidean,
)


def tiny_episode() -> Episode:
    """One 2-way episode: supports of classes 1, 0, 1 (unbalanced), two queries (0, 1)."""
    support = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [2.0, 0.0]]])
    query = torch.tensor([[[0.0, 3.0], [1.0, 1.0]]])
    return Episode(support, torch.tensor([[1, 0, 1]]), query, torch.tensor([[0, 1]]),
                   torch.tensor([[7, 3]]), n_way=2, k_shot=1)


def test_from_episode_reference_values():
    ep = tiny_episode()
    g = EpisodeGraph.from_episode(ep, ep.support, ep.query)
    assert g.num_nodes == 5 and g.n_support == 3 and g.n_way == 2 and not g.transductive
    assert torch.equal(g.x, torch.cat([ep.support, ep.query], dim=1))
    assert g.is_query.tolist() == [[False, False, False, True, True]]
    assert g.labels.tolist() == [[1, 0, 1, -1, -1]]  # the query labels are not carried
    assert g.node_labels().tolist() == [[[0, 1], [1, 0], [0, 1], [0, 0], [0, 0]]]
    u = 0.5
    assert g.edge_labels().tolist() == [[
        [1, 0, 1, u, u],
        [0, 1, 0, u, u],
        [1, 0, 1, u, u],
        [u, u, u, 1, u],
        [u, u, u, u, 1],
    ]]
    assert g.edge_known[0].tolist() == [
        [True, True, True, False, False],
        [True, True, True, False, False],
        [True, True, True, False, False],
        [False, False, False, True, False],
        [False, False, False, False, True],
    ]
    assert g.target_edges(ep.query_labels)[0, 3].tolist() == [0, 1, 0, 1, 0]
    assert torch.equal(g.support, ep.support) and torch.equal(g.query, ep.query)
    full = EpisodeGraph.from_episode(ep, ep.support, ep.query, transductive=True)
    assert full.node_labels("uniform")[0, 3:].tolist() == [[0.5, 0.5], [0.5, 0.5]]
    assert full.edge_labels(unknown=0.25)[0, 0, 4] == 0.25 and full.mask.all()
    with pytest.raises(ValueError, match="fill"):
        g.node_labels("one-hot")
    with pytest.raises(ValueError, match="query_labels of shape"):
        g.target_edges(ep.query_labels[:, :1])


def test_the_graph_never_carries_query_labels():
    ep = tiny_episode()
    shuffled = Episode(ep.support, ep.support_labels, ep.query, ep.query_labels.flip(1),
                       ep.class_ids, ep.n_way, ep.k_shot)
    a = EpisodeGraph.from_episode(ep, ep.support, ep.query)
    b = EpisodeGraph.from_episode(shuffled, shuffled.support, shuffled.query)
    for name in ("x", "labels", "is_query", "is_unlabelled", "is_generated", "node_weights",
                 "mask"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_unlabelled_nodes_follow_the_supports_and_send_messages():
    ep = tiny_episode()
    extra = torch.tensor([[[5.0, 5.0], [6.0, 6.0]]])
    g = EpisodeGraph.build(ep.support, ep.support_labels, ep.query, 2, unlabelled=extra)
    assert g.num_nodes == 7 and g.n_support == 3 and g.n_query == 2 and g.n_unlabelled == 2
    assert g.n_context == 5 and g.query_start == 5
    assert g.is_unlabelled[0].tolist() == [False] * 3 + [True] * 2 + [False] * 2
    assert g.is_query[0].tolist() == [False] * 5 + [True] * 2
    assert g.labels[0, 3:5].tolist() == [-1, -1] and torch.equal(g.unlabelled, extra)
    assert torch.equal(g.query, ep.query)
    # inductive: every node receives from supports and unlabelled nodes, never from queries
    assert g.mask[0, :, :5].all() and not g.mask[0, :5, 5:].any()
    assert not g.edge_known[0, 0, 3] and g.edge_labels()[0, 0, 3] == 0.5
    with pytest.raises(ValueError, match="support labels must lie in"):
        EpisodeGraph.build(ep.support, ep.support_labels + 5, ep.query, 2)


def test_message_mask():
    is_query = torch.tensor([[False, False, True, True, True]])
    assert message_mask(is_query, transductive=True).all()
    mask = message_mask(is_query, transductive=False)[0]
    assert mask.diagonal().all()
    assert mask[:2, :2].all() and mask[2:, :2].all()  # everyone hears the supports
    assert torch.equal(mask[2:, 2:], torch.eye(3, dtype=torch.bool))  # queries: only themselves


def test_squared_euclidean_and_cosine_reference_values():
    x = torch.tensor([[[0.0, 0.0], [3.0, 4.0], [1.0, 0.0]]])
    y = torch.tensor([[[1.0, 1.0], [0.0, 2.0]]])
    assert torch.allclose(squared_euclidean(x, y),
                          torch.tensor([[[2.0, 4.0], [13.0, 13.0], [1.0, 5.0]]]))
    d = squared_euclidean(x)
    assert torch.allclose(d, d.transpose(1, 2)) and (d.diagonal(dim1=1, dim2=2) == 0).all()
    c = cosine_similarity(x, y)
    r2 = 2 ** -0.5
    assert torch.allclose(c, torch.tensor([[[0.0, 0.0], [0.7 * 2 ** 0.5, 0.8], [r2, 0.0]]]))
    with pytest.raises(ValueError, match=r"\[b, n, d\]"):
        squared_euclidean(x[0])
    with pytest.raises(ValueError, match="must match"):
        cosine_similarity(x, torch.zeros(1, 2, 3))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_kernels_keep_float32_under_autocast(dtype):
    """Large post-ReLU embeddings (as Conv4 at 84 px): in half precision the cross term of
    ||x||^2 - 2 x.y + ||y||^2 cancels against the norms; the kernels run in float32."""
    torch.manual_seed(0)
    x = torch.relu(torch.randn(2, 30, 1600)) * 3
    exact = squared_euclidean(x.double())
    with torch.autocast("cpu", dtype=dtype):
        d = squared_euclidean(x)
        c = cosine_similarity(x)
    assert d.dtype == torch.float32 and c.dtype == torch.float32
    assert (d.double() - exact).abs().max() < 0.05  # of ~1e4; half-precision products: 3.8 to 33
    assert torch.allclose(c.double(), cosine_similarity(x.double()), atol=1e-5)


def test_learned_kernel_reference_value():
    k = LearnedKernel(2, hidden=(), out_dim=1, norm=False)
    with torch.no_grad():
        k.mlp[0].weight.copy_(torch.tensor([[1.0, -2.0]]))
        k.mlp[0].bias.fill_(0.5)
    x = torch.tensor([[[0.0, 0.0], [1.0, 3.0]]])
    # |x_0 - x_1| = (1, 3): 1 - 6 + 0.5
    assert torch.allclose(k(x)[..., 0], torch.tensor([[[0.5, -4.5], [-4.5, 0.5]]]))


@pytest.mark.parametrize("norm", [False, True])
def test_learned_kernel_chunks_match_and_checkpointing_keeps_gradients(norm):
    torch.manual_seed(0)
    whole = LearnedKernel(3, hidden=(5, 4), out_dim=2, norm=norm, chunk=None)
    chunked = LearnedKernel(3, hidden=(5, 4), out_dim=2, norm=norm, chunk=2)
    chunked.load_state_dict(whole.state_dict())
    if norm:  # BatchNorm in eval mode: running statistics, rows independent
        with torch.no_grad():
            whole.train()(torch.randn(2, 5, 3))
        chunked.load_state_dict(whole.state_dict())
        whole.eval()
        chunked.eval()
    x = torch.randn(2, 5, 3)
    y = torch.randn(2, 4, 3)
    results = []
    for kernel in (whole, chunked):
        xx, yy = x.clone().requires_grad_(), y.clone().requires_grad_()
        out = kernel(xx, yy)
        assert out.shape == (2, 5, 4, 2)
        (out * torch.arange(8.0).reshape(4, 2)).sum().backward()
        results.append((out.detach(), xx.grad, yy.grad,
                        [p.grad for p in kernel.parameters()]))
        kernel.zero_grad()
    (o1, gx1, gy1, gp1), (o2, gx2, gy2, gp2) = results
    assert torch.allclose(o1, o2, atol=1e-6)
    assert torch.allclose(gx1, gx2, atol=1e-5) and torch.allclose(gy1, gy2, atol=1e-5)
    for a, b in zip(gp1, gp2, strict=True):
        assert torch.allclose(a, b, atol=1e-5)
    with torch.no_grad():  # no gradients: chunks without checkpointing
        assert torch.allclose(chunked(x, y), o1, atol=1e-6)
