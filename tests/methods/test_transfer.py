"""Baseline, Baseline++, fine-tuning and Meta-Transfer Learning."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import make_tiny_data, tiny_config
from test_contract import make_episode

from relgraph.backbones import BackboneAdapter, build_backbone
from relgraph.data import Episode
from relgraph.engine import build_datasets, evaluate, load_checkpoint, load_model, train
from relgraph.methods import build_method
from relgraph.methods.mtl import MTL
from relgraph.methods.transfer import Baseline


def conv4(seed: int = 0):
    torch.manual_seed(seed)
    return build_backbone("conv4", in_channels=1, image_size=16, hidden=8, out_channels=8)


def shifted_episode(offset: int = 5) -> Episode:
    """The contract episode with dataset classes offset..offset+3 in a shuffled order."""
    ep = make_episode()
    ids = torch.tensor([[offset + 2, offset, offset + 3, offset + 1],
                        [offset + 1, offset + 3, offset, offset + 2]])
    return Episode(ep.support, ep.support_labels, ep.query, ep.query_labels, ids, 4, 2)


def test_pretraining_is_classification_over_global_classes():
    model = build_method("baseline", conv4(), num_classes=12)
    ep = shifted_episode()
    loss, logits = model.loss(ep)
    z = model.embed(torch.cat([ep.support, ep.query], 1))
    all_logits = model.classifier(z)
    labels = torch.cat([ep.class_ids.gather(1, ep.support_labels),
                        ep.class_ids.gather(1, ep.query_labels)], 1)
    assert torch.allclose(loss, F.cross_entropy(all_logits.flatten(0, 1), labels.flatten()),
                          atol=1e-5)
    # the returned logits are the episode's own classes, in episode-label order
    s = ep.support.shape[1]
    for e in range(2):
        assert torch.allclose(logits[e], all_logits[e, s:][:, ep.class_ids[e]], atol=1e-5)
    with pytest.raises(ValueError, match="out of range for a classifier over 6"):
        build_method("baseline", conv4(), num_classes=6).loss(ep)


def test_methods_with_a_classifier_need_num_classes():
    with pytest.raises(ValueError, match="'baseline_pp' trains a classifier.*needs num_classes"):
        build_method("baseline_pp", conv4())
    assert build_method("protonet", conv4(), num_classes=7)  # ignored by the others


def test_baseline_pp_uses_a_cosine_classifier():
    model = build_method("baseline_pp", conv4(), num_classes=12)
    assert model.cosine and model.classifier.bias is None and model.scale == 2.0  # 12 classes
    z = torch.randn(3, 8)
    expected = 2.0 * F.normalize(z, dim=-1) @ F.normalize(model.classifier.weight, dim=-1).T
    assert torch.allclose(model.class_logits(z), expected, atol=1e-6)


def test_baseline_pp_scales_follow_chen_et_al_on_the_number_of_classes():
    """Their distLinear: scale 2 for at most 200 output classes, else 10 (Omniglot's
    thousands of training classes); the per-episode head is a new one over the n classes."""
    many = build_method("baseline_pp", conv4(), num_classes=4112)
    assert many.scale == 10.0 and many.episode_scale(5) == 2.0 and many.episode_scale(201) == 10
    wide = build_backbone("conv4", in_channels=1, image_size=84, hidden=8, out_channels=64)
    assert wide.out_dim == 1600  # miniImageNet's 64 classes: 2, whatever the feature size
    assert build_method("baseline_pp", wide, num_classes=64).scale == 2.0
    fixed = build_method("baseline_pp", conv4(), num_classes=64, scale=4, head_scale=3)
    assert fixed.scale == 4.0 and fixed.episode_scale(5) == 3.0
    with pytest.raises(ValueError, match="head_scale must be > 0"):
        build_method("baseline_pp", conv4(), num_classes=64, head_scale=0)
    # the head's logits use the episode scale: 5-way logits of centroids are 2 * cosine
    model = build_method("baseline_pp", conv4(), num_classes=4112, head_steps=0).eval()
    ep = make_episode()
    logits = model(ep)
    assert logits.abs().max() <= 2.0 + 1e-5


@pytest.mark.parametrize("name", ["baseline", "baseline_pp"])
def test_per_episode_head_is_fitted_on_frozen_features_batched(name):
    model = build_method(name, conv4(), num_classes=12).eval()
    ep = make_episode()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batched = model(ep)
    for e in range(ep.batch_size):
        assert torch.allclose(model(ep[e])[0], batched[e], atol=1e-5)
    # the logistic head separates the support set it was fitted to (even on the untrained
    # backbone's features; the cosine head at scale 2 moves too slowly from the centroids)
    z, _ = model.head_inputs(model.embed(ep.support), model.embed(ep.support))
    w, c = model.fit_head(z, ep.support_labels, ep.n_way)
    if name == "baseline":
        assert (model.head_logits(z, w, c).argmax(-1) == ep.support_labels).all()
    # the features are frozen: the logits hang on no parameter of the model (the head is
    # fitted on detached features), and evaluation changed none of them
    assert not batched.requires_grad
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_centroid_head_is_cosine_nearest_centroid():
    model = build_method("baseline", conv4(), num_classes=12, head="centroid").eval()
    ep = make_episode()
    zs = F.normalize(model.embed(ep.support), dim=-1)
    zq = F.normalize(model.embed(ep.query), dim=-1)
    onehot = F.one_hot(ep.support_labels, 4).float()
    centroids = torch.einsum("bsn,bsd->bnd", onehot, zs) / 2
    expected = model.scale * torch.einsum("bqd,bnd->bqn", zq, F.normalize(centroids, dim=-1))
    assert torch.allclose(model(ep), expected, atol=1e-5)


def test_finetune_adapts_a_copy_of_the_backbone():
    ep = make_episode()
    base = build_method("baseline", conv4(), num_classes=12).eval()
    ft0 = build_method("finetune", conv4(), num_classes=12, finetune_steps=0).eval()
    assert torch.allclose(ft0(ep), base(ep), atol=1e-5)
    ft = build_method("finetune", conv4(), num_classes=12, finetune_steps=3,
                      finetune_lr=0.5).eval()
    before = {k: v.clone() for k, v in ft.state_dict().items()}
    logits = ft(ep)
    assert logits.shape == (2, 12, 4) and not torch.allclose(logits, base(ep), atol=1e-3)
    assert all(torch.equal(before[k], v) for k, v in ft.state_dict().items())  # untouched


def test_finetune_is_equivariant_in_float64():
    """Support order and class labels do not matter, exactly (float32 adds ~1e-4 noise)."""
    model = build_method("finetune", conv4(), num_classes=12, finetune_steps=5).double().eval()
    ep = make_episode()
    ep = Episode(ep.support.double(), ep.support_labels, ep.query.double(), ep.query_labels,
                 ep.class_ids, 4, 2)
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(1))
    permuted = Episode(ep.support[:, perm], ep.support_labels[:, perm], ep.query,
                       ep.query_labels, ep.class_ids, 4, 2)
    base = model(ep)
    assert torch.allclose(model(permuted), base, atol=1e-10)
    sigma = torch.tensor([2, 0, 3, 1])
    relabelled = Episode(ep.support, sigma[ep.support_labels], ep.query, sigma[ep.query_labels],
                         ep.class_ids, 4, 2)
    assert torch.allclose(model(relabelled)[..., sigma], base, atol=1e-10)


def test_mtl_freezes_the_backbone_and_meta_learns_scale_and_shift():
    model = MTL(conv4(), inner_steps=3)
    assert all(not p.requires_grad for p in model.backbone.parameters())
    assert len(model.ss_scale) == 4 and model.ss_scale[0].shape == (8,)
    model.train()
    assert model.training and not model.backbone.training  # running statistics always
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    loss, logits = model.loss(make_episode())
    loss.backward()
    assert logits.shape == (2, 12, 4)
    for p in [*model.ss_scale, *model.ss_shift]:
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert all(torch.equal(before[k], v) for k, v in model.backbone.state_dict().items())
    with pytest.raises(ValueError, match="no nn.Conv2d layer"):
        MTL(BackboneAdapter(torch.nn.Flatten(), input_shape=(4,)))


def test_mtl_at_identity_predicts_what_its_baseline_predicts(tmp_path):
    from relgraph.engine import save_checkpoint

    baseline = Baseline(conv4(seed=3), num_classes=12, head_steps=7, head_lr=0.5)
    baseline.loss(make_episode(5))  # move BatchNorm statistics
    baseline.eval()
    path = save_checkpoint(tmp_path / "checkpoint.pt", {"model": baseline.state_dict()})
    mtl = MTL(conv4(seed=4), pretrained=str(path), eval_inner_steps=7, inner_lr=0.5).eval()
    ep = make_episode()
    assert torch.allclose(mtl(ep), baseline(ep), atol=1e-4)
    with pytest.raises(FileNotFoundError, match="train a Baseline first"):
        MTL(conv4(), pretrained=str(tmp_path / "missing.pt"))
    other = build_backbone("conv4", in_channels=1, image_size=16, hidden=4, out_channels=8)
    with pytest.raises(ValueError, match="does not match this backbone"):
        MTL(other, pretrained=str(path))


# --- through the engine --------------------------------------------------------------------

@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    return make_tiny_data(tmp_path / "tiny.pt")


def run(config, out: Path):
    result = train(config, out, progress=False)
    assert result["finished"]
    model, ckpt = load_model(out / "checkpoint.pt")
    _, val = build_datasets(config.data)
    res = evaluate(model, val, ways=3, shots=1, queries=2, episodes=6, episodes_per_batch=4)
    assert 0 <= res["accuracy"] <= 100 and res["transductive"] is False
    return model, ckpt


@pytest.mark.parametrize("name,args", [
    ("baseline", {}),
    ("baseline_pp", {"head": "centroid"}),
    ("finetune", {"finetune_steps": 2}),
])
def test_transfer_methods_train_and_evaluate_through_the_engine(name, args, tiny_data,
                                                                tmp_path):
    config = tiny_config(tiny_data, steps=4)
    config.method, config.method_args = name, args
    model, ckpt = run(config, tmp_path / name)
    train_ds, _ = build_datasets(config.data)
    assert ckpt["num_classes"] == train_ds.num_classes == model.num_classes
    assert load_checkpoint(tmp_path / name / "last.pt")["num_classes"] == train_ds.num_classes


def test_mtl_trains_on_a_baseline_checkpoint(tiny_data, tmp_path):
    config = tiny_config(tiny_data, steps=2)
    config.method = "baseline"
    run(config, tmp_path / "baseline")
    pretrained = tmp_path / "baseline" / "checkpoint.pt"
    config = tiny_config(tiny_data, steps=4)
    config.method, config.method_args = "mtl", {"pretrained": str(pretrained)}
    model, _ = run(config, tmp_path / "mtl")
    backbone = load_checkpoint(pretrained)["model"]
    for k, v in model.backbone.state_dict().items():  # frozen: still the baseline's
        assert torch.equal(v, backbone[f"backbone.{k}"]), k
