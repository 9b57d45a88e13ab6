"""Evaluation on fixed, seeded episodes: mean accuracy with its 95% confidence interval."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from relgraph.data.base import FewShotDataset
from relgraph.data.sampler import EpisodeSampler
from relgraph.engine.tta import with_tta
from relgraph.methods.base import FewShotMethod

__all__ = ["evaluate", "confidence_interval", "episode_accuracies"]


def confidence_interval(accuracies: Tensor) -> float:
    """Half-width of the 95% confidence interval of the mean: ``1.96 * std / sqrt(E)``.

    ``std`` is the population standard deviation of the per-episode accuracies, as in the
    reference code of the papers. Zero for fewer than two episodes.

    Shapes:
        ``[E] -> float``
    """
    e = accuracies.numel()
    if e < 2:
        return 0.0
    return float(1.96 * accuracies.double().std(unbiased=False) / math.sqrt(e))


def autocast_context(device: torch.device, amp: bool):  # noqa: ANN201
    """fp16 autocast on CUDA when ``amp``; a no-op elsewhere."""
    enabled = amp and device.type == "cuda"
    return torch.autocast(device_type=device.type, dtype=torch.float16, enabled=enabled)


@torch.no_grad()
def episode_accuracies(
    model: FewShotMethod,
    dataset: FewShotDataset,
    ways: int,
    shots: int,
    queries: int,
    episodes: int,
    seed: int = 0,
    episodes_per_batch: int = 20,
    device: torch.device | str = "cpu",
    amp: bool = False,
    progress: bool = False,
    within_alphabet: bool = False,
    tta: int = 1,
) -> Tensor:
    """Accuracy of ``model`` on each of ``episodes`` fixed episodes: ``[episodes]`` float.

    The model is put in ``eval()`` mode (BatchNorm uses running statistics, so in an
    inductive method no query influences another) and restored to its mode afterwards.
    Episode ``e`` is the same for every model and every ``episodes_per_batch``. ``tta > 1``
    averages each image's embedding over that many fixed warps
    (:mod:`relgraph.engine.tta`; per image, so inductive methods stay inductive).
    """
    device = torch.device(device)
    sampler = EpisodeSampler(dataset, ways, shots, queries, seed=seed,
                             within_alphabet=within_alphabet)
    was_training = model.training
    model.eval()
    accs = []
    try:
        bar = tqdm(range(0, episodes, episodes_per_batch), desc="evaluate", unit="batch",
                   disable=not progress, leave=False)
        for start in bar:
            ids = range(start, min(start + episodes_per_batch, episodes))
            episode = sampler.read(dataset, ids).to(device)
            with autocast_context(device, amp), with_tta(model, tta):
                logits = model(episode)
            correct = (logits.argmax(-1) == episode.query_labels).float()
            accs.append(correct.mean(dim=1).cpu())
    finally:
        model.train(was_training)
    return torch.cat(accs) if accs else torch.zeros(0)


def evaluate(
    model: FewShotMethod,
    dataset: FewShotDataset,
    ways: int = 5,
    shots: int = 1,
    queries: int = 15,
    episodes: int = 1000,
    seed: int = 0,
    episodes_per_batch: int = 20,
    device: torch.device | str = "cpu",
    amp: bool = False,
    progress: bool = False,
    within_alphabet: bool = False,
    tta: int = 1,
) -> dict[str, Any]:
    """Evaluate on fixed episodes; returns accuracy (%), its 95% CI and the protocol.

    Returns:
        ``{"accuracy", "ci95", "episodes", "ways", "shots", "queries", "seed",
        "transductive", "within_alphabet", "tta"}`` with accuracy and ci95 in percent.
    """
    accs = episode_accuracies(model, dataset, ways, shots, queries, episodes, seed,
                              episodes_per_batch, device, amp, progress, within_alphabet, tta)
    return {
        "accuracy": 100.0 * float(accs.mean()) if accs.numel() else float("nan"),
        "ci95": 100.0 * confidence_interval(accs),
        "episodes": int(accs.numel()),
        "ways": ways,
        "shots": shots,
        "queries": queries,
        "seed": seed,
        "transductive": bool(model.transductive),
        "within_alphabet": within_alphabet,
        "tta": tta,
    }
