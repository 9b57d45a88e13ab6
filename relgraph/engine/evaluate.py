"""Evaluation on fixed, seeded episodes: mean accuracy with its 95% confidence interval.

For the relational heads (methods with ``caches_embeddings``) evaluation embeds every distinct
example of the evaluated episodes once, then relates all episodes on the cached features
(:meth:`~relgraph.methods.RelationalHead.forward_features`): in eval mode an example's
embedding does not depend on its episode, so the episodes and the accuracy are the same as
when each episode is embedded on its own (``cache=False``), and 10,000 episodes cost a few
thousand backbone calls instead of 800,000. Methods that adapt to each episode (MAML,
fine-tuning, ...) embed every episode on its own, automatically.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from relgraph.data.base import FewShotDataset
from relgraph.data.episode import Episode
from relgraph.data.resident import resident_images
from relgraph.data.sampler import EpisodeSampler
from relgraph.engine.tta import VIEWS, with_tta
from relgraph.methods.base import FewShotMethod

__all__ = ["evaluate", "choose_tta", "confidence_interval", "episode_accuracies",
           "embed_dataset", "evaluation_mode"]

#: Examples per backbone call when embedding the distinct examples of an evaluation.
EMBED_CHUNK = 512


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


def autocast_enabled(device: torch.device | str, amp: bool | str) -> bool:
    """Whether ``amp`` autocasts on ``device``: any ``amp`` on CUDA, only ``"bfloat16"`` on
    the CPU (fast with AMX / AVX-512 bf16 units), never elsewhere."""
    kind = torch.device(device).type
    return bool(amp) and (kind == "cuda" or (kind == "cpu" and amp == "bfloat16"))


def method_amp(model: torch.nn.Module, device: torch.device | str, amp: bool | str
               ) -> bool | str:
    """``amp`` for ``model``: ``False`` (float32, with a warning) where it would autocast to
    float16 a method that takes gradient steps inside its forward pass
    (``float16_autocast = False``: MAML and its family, MTL, Baseline and fine-tuning), whose
    unscaled inner gradients turn non-finite in float16; ``amp`` otherwise."""
    if (getattr(model, "float16_autocast", True) or not autocast_enabled(device, amp)
            or amp == "bfloat16"):
        return amp
    warnings.warn(f"{type(model).__name__} takes gradient steps inside its forward pass, whose "
                  "gradients are not loss-scaled: float16 autocast would make them non-finite, "
                  "so it runs in float32; set amp_dtype: bfloat16 (train.amp_dtype, or "
                  "--amp bfloat16) for mixed precision", stacklevel=3)
    return False


def autocast_context(device: torch.device, amp: bool | str):  # noqa: ANN201
    """Autocast when ``amp``: on CUDA ``True`` or ``"float16"`` for fp16, ``"bfloat16"`` for
    bf16; on the CPU only ``"bfloat16"`` (fast on CPUs with AMX / AVX-512 bf16 units); a no-op
    elsewhere (and for ``False``).

    Raises:
        ValueError: ``amp`` is another string.
    """
    if isinstance(amp, str):
        if amp not in ("float16", "bfloat16"):
            raise ValueError(f"amp: expected a bool, 'float16' or 'bfloat16', got {amp!r}")
        dtype = getattr(torch, amp)
    else:
        dtype = torch.float16
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype,
                          enabled=autocast_enabled(device, amp))


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
    amp: bool | str = False,
    progress: bool = False,
    within_alphabet: bool = False,
    tta: int = 1,
    cache: bool = True,
    unlabelled: int = 0,
    distractors: int = 0,
    label: str = "",
    random_queries: bool = False,
    too_small: str = "error",
) -> Tensor:
    """Accuracy of ``model`` on each of ``episodes`` fixed episodes: ``[episodes]`` float.

    The model is put in ``eval()`` mode (BatchNorm uses running statistics, so in an
    inductive method no query influences another) and restored to its mode afterwards.
    Episode ``e`` is the same for every model and every ``episodes_per_batch``. ``tta > 1``
    averages each image's embedding over that many fixed warps
    (:mod:`relgraph.engine.tta`; per image, so inductive methods stay inductive).

    ``unlabelled`` / ``distractors`` make semi-supervised episodes (``U`` unlabelled examples
    of each episode class and of ``D`` distractor classes, see
    :class:`~relgraph.data.EpisodeSampler`): the same supports and queries, plus unlabelled
    nodes that heads with ``uses_unlabelled`` read and the others ignore.

    With ``cache`` (default) and a model whose embeddings do not depend on the episode
    (``model.caches_embeddings``), every distinct example is embedded once
    (:func:`embed_dataset`) and the episodes are related on the cached features; otherwise
    each batch of episodes is read and embedded on its own. ``label`` starts the progress
    bars' descriptions (e.g. ``"test 5-way 1-shot"``).

    A dataset held in memory is read through :class:`~relgraph.data.resident.ResidentImages`
    on ``device`` (the same examples, one gather per batch on the device).

    ``random_queries`` keeps, in each episode, a random number of its queries per class (1 to
    ``queries``, seeded per episode, :meth:`~relgraph.data.EpisodeSampler.random_query_counts`):
    unbalanced query sets, on which a transductive method cannot lean on the class balance.
    Episodes are then evaluated one at a time.

    ``too_small``: classes with fewer than ``shots + queries`` examples stop with an error
    naming them (``"error"``, default) or are left out of the episodes (``"skip"``, a
    warning), as in :class:`~relgraph.data.EpisodeSampler`.
    """
    prefix = f"{label}: " if label else ""
    device = torch.device(device)
    amp = method_amp(model, device, amp)
    dataset = resident_images(dataset, device)  # in memory: read by index on the device
    sampler = EpisodeSampler(dataset, ways, shots, queries, seed=seed,
                             within_alphabet=within_alphabet, n_unlabelled=unlabelled,
                             n_distractors=distractors, too_small=too_small)
    was_training = model.training
    model.eval()
    accs = []
    if random_queries:
        episodes_per_batch = 1
    starts = range(0, episodes, episodes_per_batch)

    def scored(episode: Episode, start: int) -> Episode:
        if not random_queries:
            return episode
        counts = sampler.random_query_counts(start)
        keep = torch.cat([c * queries + torch.arange(int(n)) for c, n in enumerate(counts)])
        keep = keep.to(episode.query.device)
        return replace(episode, query=episode.query[:, keep],
                       query_labels=episode.query_labels[:, keep])

    try:
        if cache and getattr(model, "caches_embeddings", False):
            index = torch.stack([sampler.episode_indices(e) for e in range(episodes)]) \
                if episodes else torch.zeros(0, sampler.episode_size, dtype=torch.long)
            distinct, where = torch.unique(index, return_inverse=True)
            with autocast_context(device, amp), with_tta(model, tta):
                features = embed_dataset(model, dataset, distinct, device, progress,
                                         desc=f"{prefix}embed")
            bar = tqdm(starts, desc=f"{prefix}relate", unit="batch", disable=not progress,
                       leave=False)
            for start in bar:
                rows = where[start:start + episodes_per_batch]  # [b, episode size]
                flat = features[rows.reshape(-1).to(features.device)]
                classes = sampler.class_ids(index[start:start + rows.shape[0]])
                # labels on the features' device too (a support generator gathers with them)
                episode = scored(sampler.make_episode(flat, classes).to(features.device), start)
                with autocast_context(device, amp):
                    logits = model.forward_features(episode.support, episode.support_labels,
                                                    episode.query, episode.n_way,
                                                    episode.unlabelled)
                correct = (logits.argmax(-1) == episode.query_labels.to(device)).float()
                accs.append(correct.mean(dim=1).cpu())
        else:
            bar = tqdm(starts, desc=f"{prefix}evaluate", unit="batch", disable=not progress,
                       leave=False)
            for start in bar:
                ids = range(start, min(start + episodes_per_batch, episodes))
                episode = scored(sampler.read(dataset, ids).to(device), start)
                with autocast_context(device, amp), with_tta(model, tta):
                    logits = model(episode)
                correct = (logits.argmax(-1) == episode.query_labels).float()
                accs.append(correct.mean(dim=1).cpu())
    finally:
        model.train(was_training)
    return torch.cat(accs) if accs else torch.zeros(0)


@torch.no_grad()
def embed_dataset(model: FewShotMethod, dataset: FewShotDataset, indices: Tensor,
                  device: torch.device | str = "cpu", progress: bool = False,
                  desc: str = "embed") -> Tensor:
    """Embed the examples ``indices`` of ``dataset`` as ``model`` reads them, once each.

    The embedding step of a relational head (its backbone, or its feature maps, flattened)
    on ``EMBED_CHUNK`` examples at a time; the model should be in eval mode.

    Shapes:
        ``indices [m]`` -> ``[m, d]`` on ``device``.
    """
    device = torch.device(device)
    parts = []
    bar = tqdm(indices.split(EMBED_CHUNK), desc=desc, unit="chunk", disable=not progress,
               leave=False)
    for part in bar:
        x = dataset.get_batch(part).to(device)
        parts.append(model.embed_inputs(x.unsqueeze(0))[0])
    if not parts:
        return torch.zeros(0, 0, device=device)
    return torch.cat(parts)


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
    amp: bool | str = False,
    progress: bool = False,
    within_alphabet: bool = False,
    tta: int = 1,
    cache: bool = True,
    unlabelled: int = 0,
    distractors: int = 0,
    label: str = "",
    random_queries: bool = False,
    too_small: str = "error",
) -> dict[str, Any]:
    """Evaluate on fixed episodes; returns accuracy (%), its 95% CI and the protocol.

    Returns:
        ``{"accuracy", "ci95", "episodes", "ways", "shots", "queries", "seed",
        "transductive", "within_alphabet", "tta", "embedding_cache", "unlabelled",
        "distractors", "mode"}`` with accuracy and ci95 in percent.
    """
    accs = episode_accuracies(model, dataset, ways, shots, queries, episodes, seed,
                              episodes_per_batch, device, amp, progress, within_alphabet, tta,
                              cache, unlabelled, distractors, label, random_queries,
                              too_small)
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
        "embedding_cache": bool(cache and getattr(model, "caches_embeddings", False)),
        "unlabelled": unlabelled,
        "distractors": distractors,
        "mode": evaluation_mode(model, unlabelled, distractors),
        "query_counts": f"random 1-{queries} per class" if random_queries
        else "balanced",
    }


def choose_tta(
    model: FewShotMethod,
    dataset: FewShotDataset,
    choices: tuple[int, ...] | list[int] = (1, 5, 9),
    **evaluate_kwargs: Any,
) -> dict[str, Any]:
    """Choose the test-time augmentation (views per image) on validation episodes.

    Every choice is scored by :func:`evaluate` on the same episodes (``evaluate_kwargs``:
    ``ways``, ``shots``, ``queries``, ``episodes``, ``seed``, ``device``, ...); the most
    accurate wins, the fewest views on a tie. Pass a *validation* split: a choice made on the
    test split makes its test number worthless.

    Example:
        >>> pick = choose_tta(model, val, (1, 5, 9), ways=20, shots=5)  # doctest: +SKIP
        >>> evaluate(model, test, ways=20, shots=5, tta=pick["chosen"])  # doctest: +SKIP

    Args:
        model: a trained method whose ``supports_tta`` is true (every method but those that
            fine-tune per episode without views of their own: ``mtl``, ``finetune``; MAML,
            first-order MAML and Reptile average their adapted embeddings over the views).
        dataset: the validation split.
        choices: the view counts to try, each 1 to ``len(VIEWS)`` = 9 (1 = no augmentation).

    Returns:
        ``{"chosen": N, "accuracy": {N: acc, ...}, "ci95": {N: ci, ...}, "episodes",
        "ways", "shots", "queries", "seed"}`` with accuracies and CIs in percent.
    """
    if "tta" in evaluate_kwargs:
        raise TypeError("choose_tta tries every view count in `choices`; do not pass tta")
    views = sorted({int(n) for n in choices})
    if not views or views[0] < 1 or views[-1] > len(VIEWS):
        raise ValueError(f"choices must be view counts from 1 to {len(VIEWS)}, "
                         f"got {list(choices)}")
    if not getattr(model, "supports_tta", True):
        raise ValueError(f"{type(model).__name__} adapts to each episode and does not support "
                         "test-time augmentation; evaluate it with tta=1")
    results = {n: evaluate(model, dataset, tta=n, **evaluate_kwargs) for n in views}
    accuracy = {n: r["accuracy"] for n, r in results.items()}
    first = results[views[0]]
    return {"chosen": max(views, key=lambda n: (accuracy[n], -n)), "accuracy": accuracy,
            "ci95": {n: r["ci95"] for n, r in results.items()},
            **{k: first[k] for k in ("episodes", "ways", "shots", "queries", "seed")}}


def evaluation_mode(model: FewShotMethod, unlabelled: int = 0, distractors: int = 0) -> str:
    """What a query's prediction may depend on, in words: ``"inductive"`` (the supports and
    itself), ``"transductive"`` (all queries of its episode), and with unlabelled examples
    ``"semi-supervised (U=.., D=..)"``, or ``"... (unlabelled examples ignored)"`` for a method
    that does not read them."""
    mode = "transductive" if model.transductive else "inductive"
    if not unlabelled:
        return mode
    if not getattr(model, "uses_unlabelled", False):
        return f"{mode} (unlabelled examples ignored: U={unlabelled}, D={distractors})"
    return f"{mode}, semi-supervised (U={unlabelled}, D={distractors})"
