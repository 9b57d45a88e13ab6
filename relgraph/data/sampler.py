"""The episode sampler: N-way K-shot Q-query episodes, reproducible from a seed.

Episode ``e`` of a sampler is a pure function of ``(seed, e)``: it does not depend on which
episodes were drawn before, on the number of DataLoader workers, on the process, or on the
machine. That is what makes evaluation sets fixed, training resumable at any step, and
distributed ranks draw distinct episodes from one seed.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from relgraph.data.base import FewShotDataset
from relgraph.data.episode import Episode

__all__ = ["EpisodeSampler", "episode_seed"]

_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def episode_seed(seed: int, episode: int) -> int:
    """The 63-bit seed of episode ``episode`` of a sampler seeded with ``seed``."""
    return _splitmix64(_splitmix64(seed & _MASK64) ^ (episode & _MASK64)) >> 1


class EpisodeSampler(torch.utils.data.Sampler[list[int]]):
    """Draws batches of N-way K-shot Q-query episodes from a :class:`FewShotDataset`.

    Iterating yields, for each batch, the flat list of dataset indices of its ``b`` episodes
    (episode-major, then class, then the ``k_shot`` supports and ``n_query`` queries), so the
    sampler can be a ``batch_sampler`` of a :class:`torch.utils.data.DataLoader` with
    :meth:`collate` as its ``collate_fn``. Sampling happens in the main process, so the
    episodes do not depend on ``num_workers``. :meth:`episodes` skips the DataLoader and reads
    batches straight from the dataset (fastest for in-memory data).

    Batch ``t`` holds episodes ``(t * world_size + rank) * b + 0..b-1``.

    Args:
        dataset: where to sample from.
        n_way: classes per episode.
        k_shot: support examples per class.
        n_query: query examples per class.
        episodes_per_batch: ``b``, episodes per batch.
        num_batches: batches per pass; ``None`` samples forever (training).
        seed: an int, or a :class:`torch.Generator` from which one int is drawn.
        start_batch: the first batch to yield (resume training where it stopped).
        rank, world_size: distributed training: each rank draws distinct episodes.
        within_alphabet: draw all classes of an episode from one alphabet (chosen uniformly
            among the alphabets with at least ``n_way`` usable classes).
        too_small: what to do with classes having fewer than ``k_shot + n_query`` examples:
            ``"error"`` (default) raises naming them, ``"skip"`` leaves them out with a warning.

    Raises:
        ValueError: at construction, when the request cannot be met (empty dataset, more ways
            than classes, classes too small, ...), saying what falls short.

    Example:
        >>> sampler = EpisodeSampler(ds, n_way=5, k_shot=1, n_query=15, num_batches=100, seed=0)
        >>> for episode in sampler.episodes(ds):
        ...     episode.support  # [1, 5, c, h, w]
    """

    def __init__(
        self,
        dataset: FewShotDataset,
        n_way: int,
        k_shot: int,
        n_query: int,
        episodes_per_batch: int = 1,
        num_batches: int | None = None,
        seed: int | torch.Generator = 0,
        start_batch: int = 0,
        rank: int = 0,
        world_size: int = 1,
        within_alphabet: bool = False,
        too_small: str = "error",
    ) -> None:
        for name, value, low in (("n_way", n_way, 1), ("k_shot", k_shot, 1),
                                 ("n_query", n_query, 0), ("episodes_per_batch",
                                                           episodes_per_batch, 1),
                                 ("world_size", world_size, 1), ("start_batch", start_batch, 0)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if num_batches is not None and (not isinstance(num_batches, int) or num_batches < 0):
            raise ValueError(f"num_batches must be None or an integer >= 0, got {num_batches!r}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must lie in 0..world_size-1 = 0..{world_size - 1}, got {rank}")
        if too_small not in ("error", "skip"):
            raise ValueError(f"too_small must be 'error' or 'skip', got {too_small!r}")
        if isinstance(seed, torch.Generator):
            seed = int(torch.randint(0, 2**62, (1,), generator=seed))
        if not isinstance(seed, int):
            raise ValueError(f"seed must be an int or a torch.Generator, got {type(seed).__name__}")
        if len(dataset) == 0 or dataset.num_classes == 0:
            raise ValueError("the dataset is empty: it has no examples to sample episodes from; "
                             "check its root path and filters (alphabets, split)")

        self.n_way, self.k_shot, self.n_query = n_way, k_shot, n_query
        self.episodes_per_batch = episodes_per_batch
        self.num_batches = num_batches
        self.seed = seed
        self.start_batch = start_batch
        self.rank, self.world_size = rank, world_size
        self.within_alphabet = within_alphabet

        need = k_shot + n_query
        counts = dataset.class_counts()
        small = [c for c in range(dataset.num_classes) if int(counts[c]) < need]
        if small:
            listed = ", ".join(f"{dataset.class_names[c]!r} has {int(counts[c])}"
                               for c in small[:5])
            more = f" (and {len(small) - 5} more)" if len(small) > 5 else ""
            message = (f"{len(small)} class(es) have fewer than k_shot + n_query = {need} "
                       f"examples: {listed}{more}. Lower k_shot/n_query, or pass "
                       "too_small='skip' to leave these classes out.")
            if too_small == "error":
                raise ValueError(message)
            warnings.warn(message.split(". Lower")[0] + "; they are skipped.", stacklevel=2)
        small_set = set(small)
        usable = [c for c in range(dataset.num_classes) if c not in small_set]
        if len(usable) < n_way:
            raise ValueError(f"n_way={n_way} but the dataset has only {len(usable)} class(es) "
                             f"with at least {need} examples (of {dataset.num_classes} in all); "
                             "lower n_way or use more data")

        # Flat storage: the usable classes' example indices, padded to the largest class.
        class_idx = dataset.class_indices()
        self._classes = torch.tensor(usable, dtype=torch.long)
        self._sizes = torch.tensor([len(class_idx[c]) for c in usable], dtype=torch.long)
        width = int(self._sizes.max())
        table = torch.full((len(usable), width), -1, dtype=torch.long)
        for row, c in enumerate(usable):
            table[row, : len(class_idx[c])] = class_idx[c]
        self._table = table
        self._targets = dataset.targets

        self._groups: list[Tensor] = []
        if within_alphabet:
            by_alphabet: dict[str, list[int]] = {}
            for row, c in enumerate(usable):
                by_alphabet.setdefault(dataset.class_alphabets[c], []).append(row)
            self._groups = [torch.tensor(rows) for _, rows in sorted(by_alphabet.items())
                            if len(rows) >= n_way]
            if not self._groups:
                largest = max(len(r) for r in by_alphabet.values())
                raise ValueError(f"within_alphabet=True needs an alphabet with at least n_way="
                                 f"{n_way} usable classes; the largest has {largest}")

    # -- sampling -------------------------------------------------------------------------
    @property
    def episode_size(self) -> int:
        """Examples per episode: ``n_way * (k_shot + n_query)``."""
        return self.n_way * (self.k_shot + self.n_query)

    def sample_episode(self, episode: int) -> Tensor:
        """Dataset indices of episode ``episode``: ``[n_way, k_shot + n_query]`` long.

        Row ``l`` holds label ``l``'s class: its first ``k_shot`` entries are supports, the
        rest queries. A pure function of ``(seed, episode)``.
        """
        g = torch.Generator().manual_seed(episode_seed(self.seed, episode))
        if self._groups:
            group = self._groups[int(torch.randint(len(self._groups), (1,), generator=g))]
            rows = group[torch.randperm(len(group), generator=g)[: self.n_way]]
        else:
            rows = torch.randperm(len(self._classes), generator=g)[: self.n_way]
        need = self.k_shot + self.n_query
        # A uniform random subset of each class: argsort of random keys, padding last.
        keys = torch.rand((self.n_way, self._table.shape[1]), generator=g)
        keys[torch.arange(self._table.shape[1]) >= self._sizes[rows, None]] = 2.0
        picks = torch.argsort(keys, dim=1)[:, :need]
        return torch.gather(self._table[rows], 1, picks)

    def batch_episodes(self, batch: int) -> list[int]:
        """The global episode numbers of batch ``batch`` on this rank."""
        first = (batch * self.world_size + self.rank) * self.episodes_per_batch
        return list(range(first, first + self.episodes_per_batch))

    def sample_batch(self, batch: int) -> Tensor:
        """Dataset indices of batch ``batch``: ``[b, n_way, k_shot + n_query]`` long."""
        return torch.stack([self.sample_episode(e) for e in self.batch_episodes(batch)])

    def __iter__(self) -> Iterator[list[int]]:
        batch = self.start_batch
        while self.num_batches is None or batch < self.num_batches:
            yield self.sample_batch(batch).reshape(-1).tolist()
            batch += 1

    def __len__(self) -> int:
        if self.num_batches is None:
            raise TypeError("this sampler is infinite (num_batches=None) and has no length")
        return max(0, self.num_batches - self.start_batch)

    # -- making episodes --------------------------------------------------------------------
    def make_episode(self, inputs: Tensor, class_ids: Tensor) -> Episode:
        """Build an :class:`Episode` from a batch's inputs in sampler order.

        Args:
            inputs: ``[b * n_way * (k_shot + n_query), *x]``.
            class_ids: ``[b, n_way]`` dataset classes.
        """
        b = class_ids.shape[0]
        n, k, q = self.n_way, self.k_shot, self.n_query
        x = inputs.reshape(b, n, k + q, *inputs.shape[1:])
        labels = torch.arange(n).reshape(1, n, 1)
        support = x[:, :, :k].reshape(b, n * k, *inputs.shape[1:])
        query = x[:, :, k:].reshape(b, n * q, *inputs.shape[1:])
        return Episode(
            support=support,
            support_labels=labels.expand(b, n, k).reshape(b, n * k).clone(),
            query=query,
            query_labels=labels.expand(b, n, q).reshape(b, n * q).clone(),
            class_ids=class_ids,
            n_way=n,
            k_shot=k,
        )

    def collate(self, items: Sequence[tuple[Tensor, int]]) -> Episode:
        """``collate_fn`` for a DataLoader using this sampler as ``batch_sampler``."""
        if len(items) % self.episode_size:
            raise ValueError(f"got {len(items)} items, not a multiple of the episode size "
                             f"{self.episode_size}; use this sampler as the batch_sampler")
        inputs = torch.stack([torch.as_tensor(x) for x, _ in items])
        targets = torch.tensor([int(y) for _, y in items])
        b = len(items) // self.episode_size
        class_ids = targets.reshape(b, self.n_way, -1)[:, :, 0].contiguous()
        return self.make_episode(inputs, class_ids)

    def episode_batch(self, dataset: FewShotDataset, batch: int) -> Episode:
        """Batch ``batch`` read straight from ``dataset`` (no DataLoader)."""
        return self.read(dataset, self.batch_episodes(batch))

    def read(self, dataset: FewShotDataset, episodes: Sequence[int]) -> Episode:
        """The episodes numbered ``episodes`` as one batch read from ``dataset``.

        Shapes:
            ``len(episodes) = b`` -> ``Episode`` with ``support [b, n*k, *x]``.
        """
        idx = torch.stack([self.sample_episode(int(e)) for e in episodes])
        inputs = dataset.get_batch(idx.reshape(-1))
        return self.make_episode(inputs, self._targets[idx[:, :, 0]])

    def episodes(self, dataset: FewShotDataset) -> Iterator[Episode]:
        """This sampler's batches as :class:`Episode` objects read from ``dataset``."""
        batch = self.start_batch
        while self.num_batches is None or batch < self.num_batches:
            yield self.episode_batch(dataset, batch)
            batch += 1

    def loader(self, dataset: FewShotDataset, num_workers: int = 0, pin_memory: bool = False,
               **kwargs: Any) -> torch.utils.data.DataLoader:
        """A :class:`~torch.utils.data.DataLoader` yielding :class:`Episode` batches.

        Episodes are the same for any ``num_workers``: sampling stays in the main process.
        """
        return torch.utils.data.DataLoader(dataset, batch_sampler=self, collate_fn=self.collate,
                                           num_workers=num_workers, pin_memory=pin_memory,
                                           **kwargs)

    def state_dict(self) -> dict[str, Any]:
        """What is needed to rebuild the same stream: the seed and the shape of episodes."""
        return {"seed": self.seed, "n_way": self.n_way, "k_shot": self.k_shot,
                "n_query": self.n_query, "episodes_per_batch": self.episodes_per_batch,
                "within_alphabet": self.within_alphabet}
