"""Evaluation embeds every distinct example once for relational heads: same episodes, same
accuracy as embedding each episode on its own."""

from __future__ import annotations

import pytest
import torch
from helpers import trained_a_little

from relgraph.data import build_dataset
from relgraph.engine.evaluate import episode_accuracies, evaluate
from relgraph.methods import list_methods, method_class

HEADS = [m for m in list_methods() if method_class(m).caches_embeddings]  # every relational head


@pytest.mark.parametrize("name", HEADS)
def test_cached_and_uncached_evaluation_agree(name, tiny_data):
    dataset = build_dataset("tensors", [str(tiny_data)])
    model = trained_a_little(name, dataset)
    kwargs = dict(ways=3, shots=2, queries=3, episodes=12, seed=5, episodes_per_batch=5)
    cached = episode_accuracies(model, dataset, cache=True, **kwargs)
    uncached = episode_accuracies(model, dataset, cache=False, **kwargs)
    assert cached.shape == (12,)
    assert torch.equal(cached, uncached)


def test_cache_embeds_each_distinct_example_once(tiny_data):
    dataset = build_dataset("tensors", [str(tiny_data)])
    model = trained_a_little("protonet", dataset)
    calls = []
    model.backbone.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    result = evaluate(model, dataset, ways=3, shots=1, queries=5, episodes=200, seed=1)
    assert sum(calls) <= len(dataset)  # 200 episodes x 18 images would be 3,600
    calls.clear()
    uncached = evaluate(model, dataset, ways=3, shots=1, queries=5, episodes=200, seed=1,
                        cache=False)
    assert sum(calls) == 200 * 18
    assert result["accuracy"] == uncached["accuracy"]


def test_every_relational_head_is_cached():
    """The heads (whose embedding of an example does not depend on the episode) all take the
    cached path, so the agreement test above runs for each of them."""
    assert {"protonet", "matching", "matching_fce", "relation", "gnn", "gnn_transductive",
            "edge_gnn", "edge_gnn_transductive", "pyg", "tpn", "dpgn"} <= set(HEADS)


def test_methods_that_adapt_per_episode_are_not_cached():
    for name in ("maml", "fomaml", "reptile", "finetune", "baseline", "baseline_pp", "mtl"):
        assert not method_class(name).caches_embeddings, name
