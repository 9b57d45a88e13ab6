"""Contract tests run on every registered method (timm/PyG style)."""

from __future__ import annotations

import pytest
import torch

from relgraph.backbones import build_backbone
from relgraph.data import Episode
from relgraph.methods import METHODS, FewShotMethod, build_method, list_methods, method_class

N, K, Q, B = 4, 2, 3, 2

#: Generated supports (issue 7): every method that takes ``augment``, with each hallucinator.
#: ``per_class`` is a multiple of K, so the generated set does not depend on the support order.
AUGMENTS = {"vae": {"hallucinator": "vae", "per_class": 2 * K, "hidden": 16},
            "gan": {"hallucinator": "gan", "per_class": 2 * K, "hidden": 16, "critic": True,
                    "weight": 0.5}}
AUGMENTED = [f"{m}+{h}" for m in list_methods() if getattr(METHODS.get(m), "supports_augment",
                                                            False) for h in AUGMENTS]


def make_method(name: str) -> FewShotMethod:
    """``name`` is a registered method, or ``"<method>+<hallucinator>"`` (see AUGMENTS)."""
    torch.manual_seed(0)
    backbone = build_backbone("conv4", in_channels=1, image_size=16, hidden=8, out_channels=8)
    method, _, hallucinator = name.partition("+")
    kwargs = {"augment": AUGMENTS[hallucinator]} if hallucinator else {}
    return build_method(method, backbone, num_classes=N, **kwargs)  # num_classes: if needed


def make_episode(seed: int = 0) -> Episode:
    g = torch.Generator().manual_seed(seed)
    centers = torch.rand(B, N, 1, 1, 16, 16, generator=g)
    support = (centers + 0.2 * torch.randn(B, N, K, 1, 16, 16, generator=g)).reshape(B, N * K,
                                                                                      1, 16, 16)
    query = (centers + 0.2 * torch.randn(B, N, Q, 1, 16, 16, generator=g)).reshape(B, N * Q,
                                                                                    1, 16, 16)
    labels = torch.arange(N)
    return Episode(support, labels.repeat_interleave(K).expand(B, -1).clone(), query,
                   labels.repeat_interleave(Q).expand(B, -1).clone(),
                   torch.arange(N).expand(B, -1).clone(), n_way=N, k_shot=K)


def train_a_little(model: FewShotMethod) -> None:
    """Move BatchNorm running statistics away from their initial values."""
    model.train()
    with torch.no_grad():
        for s in range(3):
            model(make_episode(10 + s))
    model.eval()


# methods that adapt (a copy of) the backbone to each episode, embedding its examples in their
# own passes rather than through the shared embed step
ADAPTS_BACKBONE = {"maml", "fomaml", "reptile", "mtl", "finetune"}


@pytest.fixture(params=list_methods() + AUGMENTED)
def name(request) -> str:
    return request.param


def test_output_shape_and_finite(name):
    model = make_method(name)
    logits = model(make_episode())
    assert logits.shape == (B, N * Q, N)
    assert torch.isfinite(logits).all()


def test_every_parameter_gets_a_gradient(name):
    model = make_method(name)
    loss, logits = model.loss(make_episode())
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    for pname, p in model.named_parameters():
        if not p.requires_grad:  # frozen by design (Meta-Transfer Learning's backbone)
            continue
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname


def test_eval_mode_is_deterministic(name):
    model = make_method(name)
    train_a_little(model)
    ep = make_episode()
    assert torch.equal(model(ep), model(ep))


def test_eval_chunking_is_exact(name):
    # in eval mode the backbone embeds a batch in chunks of eval_chunk examples (cache-friendly
    # on CPU); BatchNorm uses running statistics there, so chunks must not change the logits
    if name in ADAPTS_BACKBONE:
        pytest.skip(f"{name} adapts its backbone per episode in its own passes; eval_chunk "
                    "does not apply")
    model = make_method(name)
    train_a_little(model)
    ep = make_episode()
    rows = []  # examples per backbone call (vector or map embedding)
    hook = model.backbone.register_forward_hook(lambda m, args, out: rows.append(len(args[0])))
    if hasattr(model.backbone, "forward_map"):
        forward_map = model.backbone.forward_map
        model.backbone.forward_map = lambda x: (rows.append(len(x)), forward_map(x))[1]
    with torch.no_grad():
        whole = model(ep)
        model.eval_chunk = 5
        rows.clear()
        chunked = model(ep)
    hook.remove()
    assert torch.allclose(whole, chunked, atol=1e-5)
    assert rows and max(rows) <= 5, rows  # it did embed, in chunks


def test_support_permutation_and_relabelling(name):
    model = make_method(name)
    train_a_little(model)
    ep = make_episode()
    if not model.caches_embeddings:
        # methods that adapt their backbone by gradient steps on each episode (no embedding
        # cache: maml, fomaml, reptile, finetune, mtl, ...) amplify float32 summation-order noise
        # (which depends on the thread count) to ~1e-3: in float64 they are exact to ~1e-12,
        # so the check below tests the method, not the rounding
        model.double()
        ep = Episode(ep.support.double(), ep.support_labels, ep.query.double(), ep.query_labels,
                     ep.class_ids, N, K)
    base = model(ep)
    # float32: up to ~4e-5 (tpn's label propagation solves a linear system)
    atol = 1e-9 if base.dtype == torch.float64 else 1e-4
    # permute the support examples (labels follow): same logits, except for methods that read
    # the support set as a sequence by design (Matching Networks' FCE bidirectional LSTM)
    if not getattr(model, "support_order_dependent", False):
        perm = torch.randperm(N * K, generator=torch.Generator().manual_seed(1))
        permuted = Episode(ep.support[:, perm], ep.support_labels[:, perm], ep.query,
                           ep.query_labels, ep.class_ids, N, K)
        assert torch.allclose(model(permuted), base, atol=atol)
    # relabel classes by sigma: logits' columns permute by sigma
    sigma = torch.tensor([2, 0, 3, 1])
    relabelled = Episode(ep.support, sigma[ep.support_labels], ep.query, sigma[ep.query_labels],
                         ep.class_ids, N, K)
    out = model(relabelled)
    assert torch.allclose(out[..., sigma], base, atol=atol)


def test_inductive_queries_do_not_influence_each_other(name):
    model = make_method(name)
    if model.transductive:
        pytest.skip("transductive method: queries may influence each other by design")
    train_a_little(model)
    ep = make_episode()
    base = model(ep)
    # permute the queries: predictions permute along
    perm = torch.randperm(N * Q, generator=torch.Generator().manual_seed(2))
    permuted = Episode(ep.support, ep.support_labels, ep.query[:, perm], ep.query_labels[:, perm],
                       ep.class_ids, N, K)
    assert torch.allclose(model(permuted), base[:, perm], atol=1e-5)
    # drop all queries but one per class: the kept queries' predictions are unchanged
    keep = torch.arange(0, N * Q, Q)
    dropped = Episode(ep.support, ep.support_labels, ep.query[:, keep], ep.query_labels[:, keep],
                      ep.class_ids, N, K)
    assert torch.allclose(model(dropped), base[:, keep], atol=1e-5)
    # replace the other queries by noise: query 0's prediction is unchanged
    noisy = ep.query.clone()
    noisy[:, 1:] = torch.rand_like(noisy[:, 1:])
    replaced = Episode(ep.support, ep.support_labels, noisy, ep.query_labels, ep.class_ids, N, K)
    assert torch.allclose(model(replaced)[:, 0], base[:, 0], atol=1e-5)


def test_inductive_test_would_catch_batch_statistics():
    """In train mode, BatchNorm mixes queries: the isolation test above can fail."""
    model = make_method("protonet")
    model.train()
    ep = make_episode()
    base = model(ep)
    noisy = ep.query.clone()
    noisy[:, 1:] = torch.rand_like(noisy[:, 1:]) * 5
    replaced = Episode(ep.support, ep.support_labels, noisy, ep.query_labels, ep.class_ids, N, K)
    assert not torch.allclose(model(replaced)[:, 0], base[:, 0], atol=1e-5)


def test_registry_lists_and_rejects():
    assert "protonet" in list_methods()
    with pytest.raises(KeyError, match="unknown method 'nope'; choose one of: .*protonet"):
        make_method("nope")


def test_protonet_distances():
    from relgraph.methods import ProtoNet, prototypes

    s = torch.tensor([[[0.0, 0.0], [2.0, 0.0], [0.0, 4.0], [0.0, 6.0]]])
    protos = prototypes(s, torch.tensor([[0, 0, 1, 1]]), 2)
    assert torch.equal(protos, torch.tensor([[[1.0, 0.0], [0.0, 5.0]]]))
    backbone = torch.nn.Flatten()
    ep = Episode(s.reshape(1, 4, 2), torch.tensor([[0, 0, 1, 1]]), torch.tensor([[[1.0, 1.0]]]),
                 torch.tensor([[0]]), torch.tensor([[0, 1]]), n_way=2, k_shot=2)
    logits = ProtoNet(backbone)(ep)
    assert torch.allclose(logits, torch.tensor([[[-1.0, -17.0]]]))
    cos = ProtoNet(backbone, distance="cosine", scale=1.0)(ep)
    assert torch.allclose(cos, torch.tensor([[[2 ** -0.5, 2 ** -0.5]]]))
    with pytest.raises(ValueError, match="distance must be"):
        ProtoNet(backbone, distance="manhattan")


# -- the episode graph as the spine ------------------------------------------------------------

def test_a_batch_gives_the_logits_of_each_episode_alone(name):
    model = make_method(name)
    train_a_little(model)
    ep = make_episode()
    with torch.no_grad():
        batched = model(ep)
        alone = torch.cat([model(ep[e]) for e in range(B)])
    assert torch.allclose(batched, alone, atol=1e-5)


def test_logits_do_not_change_when_the_query_labels_are_shuffled(name):
    model = make_method(name)
    train_a_little(model)
    ep = make_episode()
    perm = torch.randperm(N * Q, generator=torch.Generator().manual_seed(3))
    shuffled = Episode(ep.support, ep.support_labels, ep.query, ep.query_labels[:, perm],
                       ep.class_ids, N, K)
    with torch.no_grad():
        assert torch.equal(model(ep), model(shuffled))


def test_a_head_on_cached_features_equals_the_full_model(name):
    from relgraph.methods import RelationalHead

    model = make_method(name)
    if not isinstance(model, RelationalHead):
        assert not model.caches_embeddings  # adapts per episode: evaluated uncached
        pytest.skip("not a relational head: adapts its backbone per episode")
    assert model.caches_embeddings
    train_a_little(model)
    ep = make_episode()
    with torch.no_grad():
        support, query = model.embed_episode(ep)
        cached = model.forward_features(support, ep.support_labels, query, N)
        assert torch.allclose(cached, model(ep), atol=1e-6)
        # and the same head on the features, without any backbone
        headless = build_method(name.partition("+")[0], None, num_classes=N,
                                **_headless_args(model))
        state = {k: v for k, v in model.state_dict().items() if not k.startswith("backbone.")}
        headless.load_state_dict(state)
        headless.eval()
        features = Episode(support, ep.support_labels, query, ep.query_labels, ep.class_ids,
                           N, K)
        assert torch.allclose(headless(features), cached, atol=1e-6)


def _headless_args(model: FewShotMethod) -> dict:
    """Constructor arguments a head needs without a backbone to read its sizes from."""
    from relgraph.methods import (
        DPGN,
        GNN,
        TPN,
        EdgeLabelingGNN,
        MatchingNet,
        ProtoNet,
        PyGConvMethod,
        RelationNet,
    )

    args: dict = {}
    gen = getattr(model, "support_generator", None)
    if gen is not None:
        name = "vae" if "VAE" in type(gen.hallucinator).__name__ else "gan"
        args["augment"] = AUGMENTS[name]
    d = model.backbone.out_dim
    if isinstance(model, (GNN, PyGConvMethod, MatchingNet, ProtoNet, TPN, DPGN)):
        args["embed_dim"] = d
    if isinstance(model, EdgeLabelingGNN):
        args["in_dim"] = d
    if isinstance(model, RelationNet):
        args["map_shape"] = model.map_shape
    return args


@pytest.mark.parametrize("head", [m for m in list_methods() if method_class(m).caches_embeddings])
def test_a_head_runs_in_float64(head):
    """``model.double()`` on float64 images: float64 throughout (no float32 cast on the way),
    the same logits as in float32 up to its rounding."""
    model = make_method(head)
    train_a_little(model)
    episode = make_episode(3)
    with torch.no_grad():
        single = model(episode)
        model.double()
        double = model(Episode(episode.support.double(), episode.support_labels,
                               episode.query.double(), episode.query_labels,
                               episode.class_ids, n_way=N, k_shot=K))
    assert double.dtype == torch.float64 and torch.isfinite(double).all()
    torch.testing.assert_close(double.float(), single, atol=1e-4, rtol=1e-4)


def test_no_relational_head_calls_the_backbone():
    """Only the shared embedding step runs the backbone: heads relate graphs."""
    import inspect

    from relgraph.methods import edge_gnn, gnn, matching, protonet, pyg_conv, relation

    for module in (protonet, matching, relation, gnn, edge_gnn, pyg_conv):
        source = inspect.getsource(module)
        assert "self.backbone(" not in source and "backbone.forward" not in source, module


@pytest.mark.parametrize("name", ["relation+vae", "protonet+gan", "edge_gnn+vae"])
def test_checkpoints_with_the_old_parameter_names_load(name):
    """Before the heads, the hallucinator sat on the method (``hallucinator.*``,
    ``augment_step``) and the relation module's layers were the method's own attributes."""
    model = make_method(name)
    train_a_little(model)
    old_names = {"support_generator.hallucinator.": "hallucinator.",
                 "support_generator.step": "augment_step", "relation_module.": ""}
    old = {}
    for key, value in model.state_dict().items():
        for new, before in old_names.items():
            if key.startswith(new):
                key = before + key[len(new):]
                break
        old[key] = value
    assert any(k.startswith("hallucinator.") for k in old)
    fresh = make_method(name)
    fresh.load_state_dict(old)
    fresh.eval()
    ep = make_episode()
    with torch.no_grad():
        assert torch.equal(fresh(ep), model(ep))
