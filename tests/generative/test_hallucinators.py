"""Generated support examples (issue 7): hallucinators, the ``augment`` option, checkpoints."""

from __future__ import annotations

import pytest
import torch
import yaml
from helpers import make_tiny_data, tiny_config
from torch import nn

from relgraph.backbones import build_backbone
from relgraph.data import Episode
from relgraph.generative import (
    DeltaVAE,
    GANHallucinator,
    build_hallucinator,
    generation_slots,
    list_hallucinators,
    pca_2d,
    plot_generated_features,
)
from relgraph.graph import to_networkx
from relgraph.methods import build_method
from relgraph.methods.protonet import ProtoNet, prototypes

N, K, Q, B, D = 3, 2, 4, 2, 6


class Features(nn.Identity):
    """A 'backbone' for feature episodes: the inputs are the embeddings."""

    out_dim = D


def feature_episode(seed: int = 0, b: int = B, k: int = K, q: int = Q) -> Episode:
    g = torch.Generator().manual_seed(seed)
    centres = 3 * torch.randn(b, N, 1, D, generator=g)
    support = (centres + torch.randn(b, N, k, D, generator=g)).reshape(b, N * k, D)
    query = (centres + torch.randn(b, N, q, D, generator=g)).reshape(b, N * q, D)
    labels = torch.arange(N)
    return Episode(support, labels.repeat_interleave(k).expand(b, -1).clone(), query,
                   labels.repeat_interleave(q).expand(b, -1).clone(),
                   torch.arange(N).expand(b, -1).clone(), n_way=N, k_shot=k)


def conv_method(name: str, **augment) -> nn.Module:
    torch.manual_seed(0)
    backbone = build_backbone("conv4", in_channels=1, image_size=16, hidden=8, out_channels=8)
    kwargs = {"augment": augment} if augment else {}
    return build_method(name, backbone, **kwargs)


def image_episode(seed: int = 0) -> Episode:
    g = torch.Generator().manual_seed(seed)
    support = torch.rand(B, N * K, 1, 16, 16, generator=g)
    query = torch.rand(B, N * Q, 1, 16, 16, generator=g)
    labels = torch.arange(N)
    return Episode(support, labels.repeat_interleave(K).expand(B, -1).clone(), query,
                   labels.repeat_interleave(Q).expand(B, -1).clone(),
                   torch.arange(N).expand(B, -1).clone(), n_way=N, k_shot=K)


# -- the hallucinators --------------------------------------------------------------------------

def test_registry_lists_both():
    assert list_hallucinators() == ["gan", "vae"]
    assert isinstance(build_hallucinator("vae", dim=D), DeltaVAE)
    assert isinstance(build_hallucinator("gan", dim=D), GANHallucinator)
    with pytest.raises(KeyError, match="unknown hallucinator 'flow'; choose one of: gan, vae"):
        build_hallucinator("flow", dim=D)


def test_generation_slots_reference():
    labels = torch.tensor([[1, 0, 1, 0, 2, 2], [2, 0, 1, 2, 0, 1]])
    anchor, rounds, gen_labels = generation_slots(labels, 3, 3)
    # round 0 uses every support once; round 1 the first support of each class again
    assert anchor.tolist() == [[0, 1, 2, 3, 4, 5, 0, 1, 4], [0, 1, 2, 3, 4, 5, 0, 1, 2]]
    assert rounds.tolist() == [[0, 0, 0, 0, 0, 0, 1, 1, 1]] * 2
    assert torch.equal(gen_labels, labels.gather(1, anchor))
    for c in range(3):  # class balanced, unbalanced supports included
        assert ((gen_labels == c).sum(1) == 3).all()
    unbalanced = torch.tensor([[0, 0, 0, 1]])
    a, r, lab = generation_slots(unbalanced, 2, 2)
    assert a.tolist() == [[0, 1, 3, 3]] and r.tolist() == [[0, 0, 0, 1]]
    assert lab.tolist() == [[0, 0, 1, 1]]
    empty = generation_slots(labels, 3, 0)
    assert all(t.shape == (2, 0) for t in empty)
    with pytest.raises(ValueError, match="without support examples"):
        generation_slots(torch.tensor([[0, 0]]), 2, 1)
    with pytest.raises(ValueError, match="m >= 0"):
        generation_slots(labels, 3, -1)


@pytest.mark.parametrize("name", ["vae", "gan"])
def test_shapes_labels_and_seeded_determinism(name):
    torch.manual_seed(0)
    h = build_hallucinator(name, dim=D)
    ep = feature_episode()
    out, labels = h(ep.support, ep.support_labels, N, 5, torch.Generator().manual_seed(3))
    assert out.shape == (B, N * 5, D) and labels.shape == (B, N * 5)
    assert torch.isfinite(out).all()
    assert ((labels.unsqueeze(-1) == torch.arange(N)).sum(1) == 5).all()
    again, _ = h(ep.support, ep.support_labels, N, 5, torch.Generator().manual_seed(3))
    assert torch.equal(out, again)
    torch.manual_seed(7)
    a, _ = h(ep.support, ep.support_labels, N, 5)
    torch.manual_seed(7)
    b, _ = h(ep.support, ep.support_labels, N, 5)
    assert torch.equal(a, b)  # the global generator, seeded, is deterministic too
    # an episode's examples do not depend on the other episodes of the batch
    alone, _ = h(ep.support[1:], ep.support_labels[1:], N, 5, torch.Generator().manual_seed(3))
    assert torch.allclose(alone[0], out[1], atol=1e-6)
    with pytest.raises(ValueError, match=r"\[b, s, 6\]"):
        h(ep.support[..., :4], ep.support_labels, N, 5)


def test_gan_starts_as_copies_and_generations_differ_after_a_step():
    torch.manual_seed(0)
    h = GANHallucinator(D, hidden=8)
    ep = feature_episode()
    out, labels = h(ep.support, ep.support_labels, N, 2)
    anchor, _, _ = generation_slots(ep.support_labels, N, 2)
    assert torch.equal(out, ep.support.gather(1, anchor.unsqueeze(-1).expand(-1, -1, D)))
    with torch.no_grad():
        h.generator[-1].weight.normal_()
    out2, _ = h(ep.support, ep.support_labels, N, 2)
    assert not torch.allclose(out2, out)


def test_vae_aux_loss_decreases():
    torch.manual_seed(0)
    vae = DeltaVAE(D, latent_dim=2, hidden=32, beta=0.1)
    opt = torch.optim.Adam(vae.parameters(), lr=1e-2)
    ep = feature_episode(q=6)
    losses = []
    for _ in range(60):
        loss = vae.aux_loss(ep.support, ep.support_labels, ep.query, ep.query_labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert sum(losses[-10:]) / 10 < 0.7 * sum(losses[:10]) / 10
    no_pairs = vae.aux_loss(ep.support[:, ::K], ep.support_labels[:, ::K], ep.query[:, :0],
                            ep.query_labels[:, :0])
    assert float(no_pairs) == 0.0


def test_gan_trains_end_to_end_through_the_classification_loss():
    """Only the generator trains (identity backbone): the few-shot loss still goes down."""
    torch.manual_seed(0)
    model = ProtoNet(Features(), augment={"hallucinator": "gan", "per_class": 4, "hidden": 32})
    opt = torch.optim.Adam(model.support_generator.hallucinator.parameters(), lr=1e-2)
    ep = feature_episode(k=1, q=6)
    model.train()
    losses = []
    for _ in range(40):
        loss, _ = model.loss(ep)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.9 * losses[0]


def test_gan_critic_updates_each_player_with_its_own_loss():
    softplus = torch.nn.functional.softplus
    torch.manual_seed(0)
    h = GANHallucinator(D, hidden=8, critic=True, critic_hidden=8, adv_weight=1.0)
    with torch.no_grad():
        h.generator[-1].weight.normal_()
    ep = feature_episode()
    support = ep.support.clone().requires_grad_(True)
    torch.manual_seed(1)
    aux = h.aux_loss(support, ep.support_labels, ep.query, ep.query_labels)
    assert aux.dim() == 0 and float(aux.detach()) > 0
    aux.backward()
    assert support.grad is None  # nothing reaches the features (the backbone)
    assert all(p.grad is not None for p in h.parameters())
    critic_aux = [p.grad.clone() for p in h.critic.parameters()]
    generator_aux = [p.grad.clone() for p in h.generator.parameters()]
    real = torch.cat([ep.support, ep.query], 1).flatten(0, 1)
    # the critic's gradient is that of L_D alone (L_G sees a detached critic) ...
    h.zero_grad()
    torch.manual_seed(1)
    fake, _ = h(ep.support, ep.support_labels, N, h.adv_per_class)
    (softplus(-h.critic(real)).mean()
     + softplus(h.critic(fake.detach().flatten(0, 1))).mean()).backward()
    for a, b in zip(critic_aux, (p.grad for p in h.critic.parameters()), strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    # ... and the generator's that of L_G alone (L_D sees detached generated features)
    h.zero_grad()
    torch.manual_seed(1)
    fake, _ = h(ep.support, ep.support_labels, N, h.adv_per_class)
    softplus(-h.critic(fake.flatten(0, 1))).mean().backward()
    for a, b in zip(generator_aux, (p.grad for p in h.generator.parameters()), strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    no_critic = GANHallucinator(D)
    assert float(no_critic.aux_loss(ep.support, ep.support_labels, ep.query,
                                    ep.query_labels)) == 0.0


# -- the augment option of the methods ----------------------------------------------------------

def test_vae_loss_does_not_reach_the_backbone():
    model = conv_method("protonet", hallucinator="vae", per_class=2, hidden=16)
    model.train()
    ep = image_episode()
    support, query = model.embed_episode(ep)
    model.support_generator.loss(support, ep.support_labels, query, ep.query_labels).backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert all(p.grad is not None for p in model.support_generator.hallucinator.parameters())
    # and the classification loss reaches the backbone but not the VAE
    model.zero_grad(set_to_none=True)
    logits = model(ep)
    torch.nn.functional.cross_entropy(logits.flatten(0, 1), ep.query_labels.flatten()).backward()
    assert all(p.grad is not None for p in model.backbone.parameters())
    assert all(p.grad is None for p in model.support_generator.hallucinator.parameters())


def test_augment_support_flags_weights_and_identity():
    model = conv_method("protonet", hallucinator="vae", per_class=3, weight=0.25, hidden=16)
    model.eval()
    s = torch.randn(B, N * K, 8)
    out, labels, generated, weights = model.support_generator(s, image_episode().support_labels, N)
    assert out.shape == (B, N * K + N * 3, 8) and labels.shape == generated.shape == (B, 15)
    assert torch.equal(out[:, :N * K], s)
    assert generated.tolist() == [[False] * 6 + [True] * 9] * B
    assert torch.equal(weights, torch.where(generated, 0.25, 1.0))
    plain = conv_method("protonet")
    assert plain.support_generator is None
    graph = plain.build_graph(s, image_episode().support_labels, s[:, :2], N)
    assert torch.equal(graph.support, s) and not graph.is_generated.any()
    assert (graph.node_weights == 1).all()
    assert float(model.support_generator.loss(s, labels[:, :6], s, labels[:, :6])) == 0.0
    # per_class 0 builds the hallucinator but changes nothing
    zero = conv_method("protonet", hallucinator="vae", per_class=0)
    zero.eval()
    plain.eval()
    assert torch.equal(zero(image_episode()), plain(image_episode()))


def test_weighted_prototypes_reference():
    s = torch.tensor([[[0.0], [2.0], [4.0]]])
    labels = torch.tensor([[0, 0, 1]])
    w = torch.tensor([[1.0, 0.25, 1.0]])
    assert torch.allclose(prototypes(s, labels, 2, w), torch.tensor([[[0.4], [4.0]]]))
    with pytest.raises(ValueError, match="weights of shape"):
        prototypes(s, labels, 2, w[:, :2])


@pytest.mark.parametrize("name", ["gnn", "edge_gnn"])
def test_generated_nodes_are_flagged_supports_and_ignore_queries(name):
    model = conv_method(name, hallucinator="gan", per_class=2, hidden=16)
    with torch.no_grad():
        model.support_generator.hallucinator.generator[-1].weight.normal_()
    model.eval()
    ep = image_episode()
    graph = model.graph(ep)
    s = N * K
    assert graph.n_support == s + N * 2
    assert graph.is_generated[:, s:graph.n_support].all()
    assert not graph.is_generated[:, :s].any() and not graph.is_generated[:, graph.n_support:].any()
    assert not (graph.is_generated & graph.is_query).any()
    labels = graph.labels[:, s:graph.n_support]
    assert ((labels.unsqueeze(-1) == torch.arange(N)).sum(1) == 2).all()
    # generated nodes carry their (known) labels, like supports
    assert torch.equal(graph.node_labels()[:, s:graph.n_support].argmax(-1), labels)
    # generation reads the supports only: other queries give the same generated nodes
    other = Episode(ep.support, ep.support_labels, torch.rand_like(ep.query), ep.query_labels,
                    ep.class_ids, N, K)
    graph2 = model.graph(other)
    assert torch.equal(graph.x[:, :graph.n_support], graph2.x[:, :graph.n_support])
    nxg = to_networkx(graph, 0)
    assert [nxg.nodes[i]["generated"] for i in range(graph.num_nodes)] == \
        graph.is_generated[0].tolist()


@pytest.mark.parametrize("name", ["protonet", "matching", "relation", "gnn", "edge_gnn"])
def test_eval_generation_is_deterministic_and_batch_independent(name):
    model = conv_method(name, hallucinator="vae", per_class=3, hidden=16)
    model.train()
    with torch.no_grad():
        model(image_episode(5))  # move BatchNorm statistics
    model.eval()
    ep = image_episode()
    base = model(ep)
    assert torch.equal(base, model(ep))
    single = Episode(ep.support[1:], ep.support_labels[1:], ep.query[1:], ep.query_labels[1:],
                     ep.class_ids[1:], N, K)
    assert torch.allclose(model(single)[0], base[1], atol=1e-5)
    # and generation changes the predictions (it is not a no-op)
    model.support_generator.per_class = 0
    assert not torch.allclose(model(ep), base)


# -- errors -------------------------------------------------------------------------------------

def test_clear_errors_for_bad_augment_args():
    with pytest.raises(ValueError, match="unknown hallucinator 'flow'; choose one of: gan, vae"):
        conv_method("protonet", hallucinator="flow")
    with pytest.raises(ValueError, match="per_class must be an integer >= 0"):
        conv_method("protonet", hallucinator="vae", per_class=-1)
    with pytest.raises(ValueError, match="weight must be a number > 0"):
        conv_method("gnn", hallucinator="vae", weight=0)
    with pytest.raises(ValueError, match="seed must be an integer"):
        conv_method("protonet", hallucinator="vae", seed="zero")
    with pytest.raises(ValueError, match="needs hallucinator: one of gan, vae"):
        conv_method("protonet", per_class=5)
    with pytest.raises(ValueError, match="accepts: latent_dim, hidden, beta"):
        conv_method("protonet", hallucinator="vae", critic=True)
    with pytest.raises(ValueError, match="must be a mapping"):
        build_method("protonet", build_backbone("conv4"), augment="vae")
    with pytest.raises(ValueError, match="'maml' does not support method_args.augment.*protonet"):
        build_method("maml", build_backbone("conv4"), augment={"hallucinator": "vae"})
    with pytest.raises(ValueError, match="out_dim"):
        ProtoNet(nn.Identity(), augment={"hallucinator": "vae"})


# -- training, checkpoints, the command line ----------------------------------------------------

@pytest.mark.parametrize("augment", [
    {"hallucinator": "vae", "per_class": 2, "hidden": 16},
    {"hallucinator": "gan", "per_class": 2, "hidden": 16, "critic": True, "weight": 0.5},
])
def test_train_via_cli_and_checkpoint_round_trip(augment, tmp_path):
    from relgraph.cli import main
    from relgraph.engine import load_checkpoint, load_model

    data = make_tiny_data(tmp_path / "tiny.pt")
    config = tiny_config(data, steps=4, val_every=2, val_episodes=4)
    config.method_args = {"augment": augment}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config.to_dict()))
    out = tmp_path / "run"
    assert main(["train", "--config", str(path), "--out", str(out), "--no-progress"]) == 0
    state = load_checkpoint(out / "checkpoint.pt")["model"]
    keys = [k for k in state if k.startswith("support_generator.hallucinator.")]
    assert keys
    model, _ = load_model(out / "checkpoint.pt")
    assert model.support_generator is not None and model.support_generator.per_class == 2
    for k in keys:
        assert torch.equal(model.state_dict()[k], state[k]), k
    ep = tiny_image_episode()
    assert torch.equal(model(ep), load_model(out / "checkpoint.pt")[0](ep))


def tiny_image_episode() -> Episode:
    """A 3-way episode of 28x28 images, as the tiny config's model expects."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 9, 1, 28, 28, generator=g)
    labels = torch.tensor([[0, 1, 2, 0, 1, 2, 0, 1, 2]])
    return Episode(x[:, :3], labels[:, :3], x[:, 3:], labels[:, 3:], torch.tensor([[0, 1, 2]]),
                   n_way=3, k_shot=1)


# -- the picture --------------------------------------------------------------------------------

def test_pca_and_plot():
    x = torch.tensor([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [4.0, 0.0, 1e-3]])
    (fit,) = pca_2d(x)
    assert torch.allclose(fit[:, 0], torch.tensor([-2.0, 0.0, 2.0]), atol=1e-4)
    (_, other) = pca_2d(x, torch.tensor([[6.0, 0.0, 0.0]]))
    assert torch.allclose(other[0, 0], torch.tensor(4.0), atol=1e-4)
    ep = feature_episode()
    h = DeltaVAE(D, hidden=8)
    gen, gen_labels = h(ep.support[:1], ep.support_labels[:1], N, 4)
    fig = plot_generated_features(ep.query[0], ep.query_labels[0], gen[0], gen_labels[0],
                                  ep.support[0], ep.support_labels[0], title="t")
    assert len(fig.axes) == 1
    with pytest.raises(ValueError, match="one label per feature"):
        plot_generated_features(ep.query[0], ep.query_labels[0, :2], gen[0], gen_labels[0])
    with pytest.raises(ValueError, match="at least 2"):
        pca_2d(x[:1])


def test_resume_with_augmentation_is_exact(tmp_path):
    """Training draws the generation noise from the global generator, which runs checkpoint."""
    from relgraph.engine import load_checkpoint, train

    data = make_tiny_data(tmp_path / "tiny.pt")
    config = tiny_config(data)
    config.method_args = {"augment": {"hallucinator": "gan", "per_class": 2, "hidden": 16,
                                      "critic": True}}
    train(config, tmp_path / "a", progress=False)
    train(config, tmp_path / "b", progress=False, stop_after=3)
    train(config, tmp_path / "b", progress=False)
    a = load_checkpoint(tmp_path / "a" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "b" / "last.pt")["model"]
    assert a.keys() == b.keys() and any(k.startswith("support_generator.") for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("augment", [{"hallucinator": "vae", "per_class": 2},
                                     {"hallucinator": "gan", "per_class": 2, "critic": True}])
def test_hallucinator_losses_run_in_float64(augment):
    """A float64 model (``model.double()``, as the heads' float64 checks use) trains with its
    hallucinator: the auxiliary losses read the features in the model's type."""
    torch.manual_seed(0)
    n, k, q, d = 3, 2, 2, 8
    labels = torch.arange(n)
    support = torch.randn(1, n * k, d, dtype=torch.float64)
    query = torch.randn(1, n * q, d, dtype=torch.float64)
    episode = Episode(support, labels.repeat_interleave(k)[None], query,
                      labels.repeat_interleave(q)[None], labels[None], n_way=n, k_shot=k)
    model = build_method("protonet", None, embed_dim=d, augment=augment).double().train()
    loss, logits = model.loss(episode)
    loss.backward()
    assert logits.dtype == torch.float64 and torch.isfinite(loss)
