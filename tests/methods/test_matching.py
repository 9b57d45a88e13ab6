"""Matching Networks: reference values on tiny tensors, FCE, options and errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from relgraph.data import Episode
from relgraph.methods import build_method
from relgraph.methods.matching import LOG_PROB_FLOOR, MatchingNet, matching_log_probs


class Vectors(nn.Module):
    """An identity 'backbone' on vectors, with the ``out_dim`` FCE needs."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.out_dim = dim

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(1)


def episode(support: Tensor, labels: Tensor, query: Tensor, n_way: int,
            query_labels: Tensor | None = None) -> Episode:
    b, q = query.shape[:2]
    if query_labels is None:
        query_labels = torch.zeros(b, q, dtype=torch.long)
    k = int(torch.bincount(labels[0], minlength=n_way).min())
    return Episode(support, labels, query, query_labels,
                   torch.arange(n_way).expand(b, -1).clone(), n_way=n_way, k_shot=max(k, 1))


def random_episode(b: int = 2, n: int = 3, k: int = 2, q: int = 4, d: int = 5,
                   seed: int = 0) -> Episode:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n).repeat_interleave(k).expand(b, -1).clone()
    return episode(torch.randn(b, n * k, d, generator=g), labels,
                   torch.randn(b, q, d, generator=g), n,
                   torch.randint(0, n, (b, q), generator=g))


def test_attention_is_softmax_of_cosine_by_hand():
    s = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]]])
    labels = torch.tensor([[0, 1, 1]])
    query = torch.tensor([[[1.0, 1.0], [2.0, 0.0]]])
    logits = MatchingNet(nn.Flatten())(episode(s, labels, query, 2))
    r = 2 ** -0.5
    for j, cos in enumerate(([r, r, 1.0], [1.0, 0.0, r])):
        e = [math.exp(c) for c in cos]
        y = [e[0] / sum(e), (e[1] + e[2]) / sum(e)]
        assert torch.allclose(logits[0, j].exp(), torch.tensor(y), atol=1e-6)
        assert torch.allclose(logits[0, j], torch.tensor(y).log(), atol=1e-6)


def test_loss_is_nll_of_attention_vote_and_scale_multiplies_cosines():
    ep = random_episode()
    model = MatchingNet(nn.Flatten(), scale=3.0)
    loss, logits = model.loss(ep)
    cos = F.normalize(ep.query, dim=-1) @ F.normalize(ep.support, dim=-1).transpose(1, 2)
    y_hat = (3.0 * cos).softmax(-1) @ F.one_hot(ep.support_labels, 3).float()
    assert torch.allclose(logits.exp(), y_hat, atol=1e-6)
    nll = -y_hat.gather(-1, ep.query_labels.unsqueeze(-1)).log().mean()
    assert torch.allclose(loss, nll, atol=1e-6)


def test_learned_scale_gets_a_gradient():
    model = MatchingNet(nn.Flatten(), learn_scale=True)
    model.loss(random_episode())[0].backward()
    assert model.scale.grad is not None and model.scale.grad != 0


def test_unbalanced_support_and_empty_class():
    s = torch.tensor([[[1.0, 0.0], [0.9, 0.1], [0.8, 0.3], [0.0, 1.0]]])
    query = torch.tensor([[[0.5, 0.5]]])
    labels = torch.tensor([[0, 0, 0, 1]])
    out = MatchingNet(nn.Flatten())(episode(s, labels, query, 2))
    cos = F.normalize(query, dim=-1) @ F.normalize(s, dim=-1).transpose(1, 2)
    att = cos.softmax(-1)[0, 0]
    assert torch.allclose(out[0, 0].exp(), torch.stack([att[:3].sum(), att[3]]), atol=1e-6)
    # a class without supports gets the floor, finite and with finite gradients
    scores = torch.randn(1, 2, 3, requires_grad=True)
    lp = matching_log_probs(scores, torch.tensor([[0, 0, 2]]), 3)
    assert torch.all(lp[..., 1] == LOG_PROB_FLOOR)
    lp.sum().backward()
    assert torch.isfinite(scores.grad).all()


def test_fce_changes_outputs_and_is_registered():
    ep = random_episode()
    torch.manual_seed(0)
    fce = build_method("matching_fce", Vectors(5))
    plain = build_method("matching", Vectors(5))
    assert fce.fce and fce.support_order_dependent
    assert not plain.fce and not plain.support_order_dependent
    assert not torch.allclose(fce(ep), plain(ep), atol=1e-3)
    assert torch.allclose(fce(ep).exp().sum(-1), torch.ones(2, 4), atol=1e-5)


def test_fce_support_embedding_is_bilstm_plus_skip():
    torch.manual_seed(0)
    model = MatchingNet(Vectors(5), fce=True, lstm_layers=2)
    x = torch.randn(2, 6, 5)
    out, _ = model.support_lstm(x)
    assert torch.allclose(model.encode_support(x), x + out[..., :5] + out[..., 5:], atol=1e-6)
    # reading the supports in another order changes g (the documented order dependence)
    assert not torch.allclose(model.encode_support(x.flip(1)).flip(1), model.encode_support(x),
                              atol=1e-4)


def attention_lstm_reference(cell: nn.LSTMCell, x: Tensor, g: Tensor, steps: int) -> Tensor:
    """The paper's attLSTM for one query ``x [d]`` over ``g [s, d]``, written out by hand."""
    d = x.shape[0]
    h, c = x, torch.zeros(d)
    for _ in range(steps):
        r = (g @ h).softmax(0) @ g
        gates = (cell.weight_ih @ torch.cat([x, r]) + cell.bias_ih
                 + cell.weight_hh @ h + cell.bias_hh)
        i, f, cc, o = gates.chunk(4)
        c = f.sigmoid() * c + i.sigmoid() * cc.tanh()
        h = o.sigmoid() * c.tanh() + x
    return h


def test_fce_query_embedding_matches_hand_written_attention_lstm():
    torch.manual_seed(0)
    model = MatchingNet(Vectors(5), fce=True, unrolling_steps=3)
    query, support = torch.randn(2, 4, 5), torch.randn(2, 6, 5)
    with torch.no_grad():
        out = model.encode_query(query, support)
        for e in range(2):
            for j in range(4):
                ref = attention_lstm_reference(model.query_lstm, query[e, j], support[e], 3)
                assert torch.allclose(out[e, j], ref, atol=1e-5)


def test_fce_is_inductive_and_gets_gradients():
    torch.manual_seed(0)
    model = MatchingNet(Vectors(5), fce=True).eval()
    ep = random_episode()
    base = model(ep)
    one = Episode(ep.support, ep.support_labels, ep.query[:, :1], ep.query_labels[:, :1],
                  ep.class_ids, ep.n_way, ep.k_shot)
    assert torch.allclose(model(one), base[:, :1], atol=1e-6)
    model.loss(ep)[0].backward()
    assert all(p.grad is not None for p in model.parameters())


def test_errors():
    with pytest.raises(ValueError, match="could not read the embedding size"):
        MatchingNet(nn.Flatten(), fce=True)
    with pytest.raises(ValueError, match="lstm_layers >= 1"):
        MatchingNet(Vectors(3), fce=True, lstm_layers=0)
    with pytest.raises(ValueError, match="unrolling_steps >= 1"):
        MatchingNet(Vectors(3), fce=True, unrolling_steps=0)
    with pytest.raises(ValueError, match="sets fce itself; use method .matching."):
        build_method("matching_fce", Vectors(3), fce=False)
    with pytest.raises(ValueError, match=r"expected scores \[b, q, s\]"):
        matching_log_probs(torch.zeros(1, 2, 3), torch.zeros(1, 4, dtype=torch.long), 2)


def test_fce_runs_under_bfloat16_autocast():
    """oneDNN has no bfloat16 LSTM on CPUs without AVX-512 (this project's machine): the
    LSTMs run in float32 under autocast, the rest of the model in bfloat16."""
    from relgraph.backbones import build_backbone

    torch.manual_seed(0)
    model = build_method("matching_fce", build_backbone("conv4", in_channels=1, image_size=28,
                                                        hidden=8, out_channels=8)).eval()
    x = torch.rand(1, 6, 1, 28, 28)
    labels = torch.arange(3)[None]
    episode = Episode(x[:, :3], labels, x[:, 3:], labels, labels, n_way=3, k_shot=1)
    with torch.no_grad():
        exact = model(episode)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = model(episode)
    assert torch.allclose(half.float(), exact, atol=0.05)
