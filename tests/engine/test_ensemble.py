"""Ensembles: the members' predictions averaged on the same episodes, cached or not."""

from __future__ import annotations

import json
import math

import pytest
import torch
from helpers import make_tiny_data
from helpers import trained_a_little as member

from relgraph.cli import main
from relgraph.data import EpisodeSampler, build_dataset
from relgraph.engine import Ensemble, load_checkpoint, load_ensemble
from relgraph.engine.evaluate import episode_accuracies, evaluate
from relgraph.engine.tta import with_tta


@pytest.fixture
def dataset(tiny_data):  # noqa: ANN001, ANN201
    return build_dataset("tensors", [str(tiny_data)])


def test_probabilities_are_averaged(dataset):
    a, b = member("protonet", dataset, 0), member("relation", dataset, 1)
    episode = EpisodeSampler(dataset, 3, 2, 3, seed=4, episodes_per_batch=2).episode_batch(
        dataset, 0)
    with torch.no_grad():
        got = Ensemble([a, b])(episode)
        want = (a(episode).softmax(-1) + b(episode).softmax(-1)) / 2
        mean_logits = Ensemble([a, b], combine="logit")(episode)
        want_logits = (a(episode) + b(episode)) / 2
    assert got.shape == (2, 9, 3)
    torch.testing.assert_close(got.exp(), want)
    torch.testing.assert_close(mean_logits, want_logits)


def test_an_ensemble_of_one_is_the_model(dataset):
    model = member("protonet", dataset, 0)
    kwargs = dict(ways=3, shots=1, queries=3, episodes=15, seed=2)
    assert torch.equal(episode_accuracies(Ensemble([model]), dataset, **kwargs),
                       episode_accuracies(model, dataset, **kwargs))


@pytest.mark.parametrize("tta", [1, 5])
def test_cached_and_uncached_evaluation_agree(dataset, tta):
    ensemble = Ensemble([member("protonet", dataset, 0), member("relation", dataset, 1),
                         member("gnn", dataset, 2)]).eval()
    assert ensemble.caches_embeddings and not ensemble.transductive
    kwargs = dict(ways=3, shots=2, queries=3, episodes=12, seed=5, episodes_per_batch=5, tta=tta)
    cached = episode_accuracies(ensemble, dataset, cache=True, **kwargs)
    uncached = episode_accuracies(ensemble, dataset, cache=False, **kwargs)
    assert cached.shape == (12,)
    assert torch.equal(cached, uncached)


def test_tta_reaches_every_member(dataset):
    a, b = member("protonet", dataset, 0), member("matching", dataset, 1)
    ensemble = Ensemble([a, b])
    episode = EpisodeSampler(dataset, 3, 1, 2, seed=1).episode_batch(dataset, 0)
    with torch.no_grad():
        plain = ensemble(episode)
        with with_tta(ensemble, 5):
            warped = ensemble(episode)
            with with_tta(a, 5), with_tta(b, 5):
                want = ensemble.combined([a(episode), b(episode)])
    assert ensemble.tta_views == 1 and not hasattr(a.backbone, "views")  # restored
    assert not torch.allclose(plain, warped)
    torch.testing.assert_close(warped, want)


def test_a_member_that_adapts_per_episode_turns_the_cache_off(dataset):
    ensemble = Ensemble([member("protonet", dataset, 0),
                         member("maml", dataset, 1)]).eval()
    assert not ensemble.caches_embeddings
    result = evaluate(ensemble, dataset, ways=3, shots=1, queries=2, episodes=4)
    assert result["embedding_cache"] is False and 0 <= result["accuracy"] <= 100


def test_inductive_members_keep_each_query_on_its_own(dataset):
    ensemble = Ensemble([member("protonet", dataset, 0), member("relation", dataset, 1)])
    episode = EpisodeSampler(dataset, 3, 1, 4, seed=3).episode_batch(dataset, 0)
    other = episode.query.clone()
    other[:, 1:] = torch.rand_like(other[:, 1:])  # every query but the first replaced
    with torch.no_grad():
        first = ensemble(episode)[:, 0]
        again = ensemble(type(episode)(**{**episode.__dict__, "query": other}))[:, 0]
    torch.testing.assert_close(first, again)


def test_bad_arguments_say_what_to_do(dataset):
    with pytest.raises(ValueError, match="at least one member"):
        Ensemble([])
    with pytest.raises(ValueError, match="combine must be one of prob, logit"):
        Ensemble([member("protonet", dataset, 0)], combine="vote")
    ensemble = Ensemble([member("protonet", dataset, 0)])
    with pytest.raises(ValueError, match="make them with Ensemble.embed_inputs"):
        ensemble.forward_features(torch.zeros(1, 3, 5), torch.zeros(1, 3, dtype=torch.long),
                                  torch.zeros(1, 2, 5), 3)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):  # noqa: ANN001, ANN201
    root = tmp_path_factory.mktemp("ensemble")
    data = make_tiny_data(root / "tiny.pt")
    runs = []
    for seed in (0, 1):
        out = root / f"run{seed}"
        code = main(["train", "--dataset", "tensors", "--root", str(data), "--ways", "4",
                     "--shots", "1", "--queries", "2", "--steps", "4", "--val-every", "2",
                     "--set", f"train.seed={seed}", "--set", "train.val_episodes=5",
                     "--set", "eval.ways=2", "--set", "eval.queries=2",
                     "--set", "backbone_args.hidden=8", "--set", "backbone_args.out_channels=8",
                     "--device", "cpu", "--out", str(out), "--no-progress"])
        assert code == 0
        runs.append(out)
    return data, runs


def test_load_ensemble_and_the_command_line(two_runs, tmp_path, capsys):
    data, runs = two_runs
    model, ckpts = load_ensemble([r / "checkpoint.pt" for r in runs])
    assert isinstance(model, Ensemble) and len(model.members) == 2 and not model.training
    assert len(ckpts) == 2
    capsys.readouterr()
    args = ["evaluate", "--checkpoint", str(runs[0]), "--checkpoint", str(runs[1]),
            "--dataset", "tensors", "--root", str(data), "--split", "all", "--episodes", "20",
            "--no-progress", "--device", "cpu", "--json", str(tmp_path / "r.json")]
    assert main(args) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["checkpoint"] == [str(r) for r in runs]
    assert result["ways"] == 2 and result["embedding_cache"] is True
    direct = evaluate(model, build_dataset("tensors", [str(data)]), ways=2, shots=1, queries=2,
                      episodes=20)
    assert math.isclose(result["accuracy"], direct["accuracy"])


def test_members_must_read_the_same_inputs(two_runs, tmp_path):
    _, runs = two_runs
    ckpt = load_checkpoint(runs[1] / "checkpoint.pt")
    ckpt["preprocessing"]["image_size"] = 56
    torch.save(ckpt, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="reads its inputs with image_size=56 but .* "
                                         "image_size=28; an ensemble's members"):
        load_ensemble([runs[0] / "checkpoint.pt", tmp_path / "other.pt"])
