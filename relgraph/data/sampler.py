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


#: Salt of the random query counts of unbalanced evaluation episodes.
_QUERY_COUNT_SALT = 0x9E_C0_A7

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
        n_unlabelled: ``U``, unlabelled examples per episode class (semi-supervised episodes,
            Ren et al. 2018): drawn beside the supports and queries, their labels hidden from
            the model. Default 0.
        n_distractors: ``D``, distractor classes per episode: ``U`` unlabelled examples each
            from ``D`` further classes that are not among the episode's ``n_way``. Default 0.

    **Semi-supervised episodes** draw ``n_way + D`` classes and ``k_shot + n_query + U``
    examples of each episode class (``U`` of each distractor class) from the same random
    stream, so an episode's supports and queries are the same with or without its unlabelled
    examples (when every class has ``k_shot + n_query + U`` examples): methods can be compared
    paired on the same episodes with and without them.

    Raises:
        ValueError: at construction, when the request cannot be met (empty dataset, more ways
            than classes, classes too small, ...), saying what falls short.

    Example:
        Ten classes of 20 examples (feature vectors of size 3 here; images work the same):

        >>> import torch
        >>> from relgraph.data import TensorDataset
        >>> ds = TensorDataset(torch.randn(200, 3), torch.arange(200) % 10)
        >>> sampler = EpisodeSampler(ds, n_way=5, k_shot=1, n_query=15, episodes_per_batch=4,
        ...                          num_batches=100, seed=0)
        >>> for episode in sampler.episodes(ds):
        ...     break
        >>> episode.support.shape, episode.query.shape  # [b, n_way * k_shot, ...]
        (torch.Size([4, 5, 3]), torch.Size([4, 75, 3]))
        >>> episode.support_labels[0]
        tensor([0, 1, 2, 3, 4])
        >>> torch.equal(sampler.read(ds, [0, 1, 2, 3]).query, episode.query)  # a pure function
        True
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
        n_unlabelled: int = 0,
        n_distractors: int = 0,
    ) -> None:
        for name, value, low in (("n_way", n_way, 1), ("k_shot", k_shot, 1),
                                 ("n_query", n_query, 0), ("episodes_per_batch",
                                                           episodes_per_batch, 1),
                                 ("world_size", world_size, 1), ("start_batch", start_batch, 0),
                                 ("n_unlabelled", n_unlabelled, 0),
                                 ("n_distractors", n_distractors, 0)):
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
        self.n_unlabelled, self.n_distractors = n_unlabelled, n_distractors
        if n_distractors and not n_unlabelled:
            raise ValueError(f"n_distractors={n_distractors} needs n_unlabelled >= 1 (the "
                             "distractor classes contribute n_unlabelled examples each)")

        need = k_shot + n_query + n_unlabelled
        what = "k_shot + n_query" + (" + n_unlabelled" if n_unlabelled else "")
        counts = dataset.class_counts()
        small = [c for c in range(dataset.num_classes) if int(counts[c]) < need]
        if small:
            listed = ", ".join(f"{dataset.class_names[c]!r} has {int(counts[c])}"
                               for c in small[:5])
            more = f" (and {len(small) - 5} more)" if len(small) > 5 else ""
            message = (f"{len(small)} class(es) have fewer than {what} = {need} "
                       f"examples: {listed}{more}. Lower k_shot/n_query, or pass "
                       "too_small='skip' to leave these classes out.")
            if too_small == "error":
                raise ValueError(message)
            warnings.warn(message.split(". Lower")[0] + "; they are skipped.", stacklevel=2)
        small_set = set(small)
        usable = [c for c in range(dataset.num_classes) if c not in small_set]
        classes = n_way + n_distractors
        if len(usable) < classes:
            asked = f"n_way={n_way}" + (f" + n_distractors={n_distractors}" if n_distractors
                                        else "")
            raise ValueError(f"{asked} but the dataset has only {len(usable)} class(es) "
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
        self._ragged = bool((self._sizes < width).any())  # classes of different sizes
        self._targets = dataset.targets

        self._groups: list[Tensor] = []
        if within_alphabet:
            by_alphabet: dict[str, list[int]] = {}
            for row, c in enumerate(usable):
                by_alphabet.setdefault(dataset.class_alphabets[c], []).append(row)
            self._groups = [torch.tensor(rows) for _, rows in sorted(by_alphabet.items())
                            if len(rows) >= classes]
            if not self._groups:
                largest = max(len(r) for r in by_alphabet.values())
                raise ValueError(f"within_alphabet=True needs an alphabet with at least "
                                 f"{classes} usable classes (n_way + n_distractors); the "
                                 f"largest has {largest}")

    # -- sampling -------------------------------------------------------------------------
    @property
    def episode_size(self) -> int:
        """Examples per episode: ``n_way * (k_shot + n_query) + (n_way + D) * U``."""
        return (self.n_way * (self.k_shot + self.n_query)
                + (self.n_way + self.n_distractors) * self.n_unlabelled)

    @property
    def num_unlabelled(self) -> int:
        """Unlabelled examples per episode ``u = (n_way + D) * U``."""
        return (self.n_way + self.n_distractors) * self.n_unlabelled

    def _draw(self, episode: int) -> Tensor:
        """Dataset indices ``[n_way + D, k_shot + n_query + U]`` of episode ``episode``: the
        episode classes' rows first, then the distractors' (only their first ``U`` entries
        are used)."""
        g = torch.Generator().manual_seed(episode_seed(self.seed, episode))
        classes = self.n_way + self.n_distractors
        if self._groups:
            group = self._groups[int(torch.randint(len(self._groups), (1,), generator=g))]
            rows = group[torch.randperm(len(group), generator=g)[:classes]]
        else:
            rows = torch.randperm(len(self._classes), generator=g)[:classes]
        need = self.k_shot + self.n_query + self.n_unlabelled
        # A uniform random subset of each class: argsort of random keys, padding last.
        keys = torch.rand((classes, self._table.shape[1]), generator=g)
        if self._ragged:
            keys[torch.arange(self._table.shape[1]) >= self._sizes[rows, None]] = 2.0
        picks = torch.argsort(keys, dim=1)[:, :need]
        return torch.gather(self._table[rows], 1, picks)

    def sample_episode(self, episode: int) -> Tensor:
        """Dataset indices of episode ``episode``: ``[n_way, k_shot + n_query]`` long.

        Row ``l`` holds label ``l``'s class: its first ``k_shot`` entries are supports, the
        rest queries. A pure function of ``(seed, episode)``.
        """
        return self._draw(episode)[:self.n_way, :self.k_shot + self.n_query]

    def random_query_counts(self, episode: int) -> Tensor:
        """Queries to keep per class in episode ``episode`` for unbalanced query sets:
        ``[n_way]`` in ``1..n_query``, uniform and seeded by ``(seed, episode)`` (independent of
        the examples drawn, so the kept queries are the first ones of the balanced episode)."""
        g = torch.Generator().manual_seed(episode_seed(self.seed ^ _QUERY_COUNT_SALT, episode))
        return torch.randint(1, self.n_query + 1, (self.n_way,), generator=g)

    def sample_unlabelled(self, episode: int) -> tuple[Tensor, Tensor]:
        """The unlabelled examples of episode ``episode``: dataset indices ``[u]`` and their
        hidden labels ``[u]`` (``0..n_way-1``, or -1 for a distractor class); ``u = 0``
        without semi-supervised episodes."""
        if not self.n_unlabelled:
            empty = torch.zeros(0, dtype=torch.long)
            return empty, empty
        drawn = self._draw(episode)
        own = drawn[:self.n_way, self.k_shot + self.n_query:]
        distract = drawn[self.n_way:, :self.n_unlabelled]
        return (torch.cat([own.reshape(-1), distract.reshape(-1)]),
                self.sample_unlabelled_labels())

    def episode_indices(self, episode: int) -> Tensor:
        """All dataset indices of episode ``episode`` in batch layout: ``[episode_size]``,
        the labelled ``[n_way, k_shot + n_query]`` block flattened, then the unlabelled ones."""
        labelled = self.sample_episode(episode).reshape(-1)
        if not self.n_unlabelled:
            return labelled
        return torch.cat([labelled, self.sample_unlabelled(episode)[0]])

    def batch_episodes(self, batch: int) -> list[int]:
        """The global episode numbers of batch ``batch`` on this rank."""
        first = (batch * self.world_size + self.rank) * self.episodes_per_batch
        return list(range(first, first + self.episodes_per_batch))

    def sample_batch(self, batch: int) -> Tensor:
        """Dataset indices of batch ``batch``: ``[b, n_way, k_shot + n_query]`` long (the
        labelled examples; see :meth:`sample_unlabelled` for the others)."""
        return torch.stack([self.sample_episode(e) for e in self.batch_episodes(batch)])

    def __iter__(self) -> Iterator[list[int]]:
        batch = self.start_batch
        while self.num_batches is None or batch < self.num_batches:
            yield torch.cat([self.episode_indices(e)
                             for e in self.batch_episodes(batch)]).tolist()
            batch += 1

    def __len__(self) -> int:
        if self.num_batches is None:
            raise TypeError("this sampler is infinite (num_batches=None) and has no length")
        return max(0, self.num_batches - self.start_batch)

    # -- making episodes --------------------------------------------------------------------
    def make_episode(self, inputs: Tensor, class_ids: Tensor) -> Episode:
        """Build an :class:`Episode` from a batch's inputs in sampler order.

        Args:
            inputs: ``[b * episode_size, *x]``, per episode the ``n_way * (k_shot + n_query)``
                labelled examples (class by class), then the ``u`` unlabelled ones.
            class_ids: ``[b, n_way]`` dataset classes.
        """
        b = class_ids.shape[0]
        n, k, q = self.n_way, self.k_shot, self.n_query
        shape = inputs.shape[1:]
        per_episode = inputs.reshape(b, self.episode_size, *shape)
        x = per_episode[:, :n * (k + q)].reshape(b, n, k + q, *shape)
        labels = torch.arange(n).reshape(1, n, 1)
        unlabelled = unlabelled_labels = None
        if self.n_unlabelled:
            unlabelled = per_episode[:, n * (k + q):]
            unlabelled_labels = self.sample_unlabelled_labels().expand(b, -1).clone()
        return Episode(
            support=x[:, :, :k].reshape(b, n * k, *shape),
            support_labels=labels.expand(b, n, k).reshape(b, n * k).clone(),
            query=x[:, :, k:].reshape(b, n * q, *shape),
            query_labels=labels.expand(b, n, q).reshape(b, n * q).clone(),
            class_ids=class_ids,
            n_way=n,
            k_shot=k,
            unlabelled=unlabelled,
            unlabelled_labels=unlabelled_labels,
        )

    def sample_unlabelled_labels(self) -> Tensor:
        """The hidden labels of an episode's unlabelled examples, in order: ``[u]``
        (``0..n_way-1`` class by class, then -1 for the distractors')."""
        u = self.n_unlabelled
        return torch.cat([torch.arange(self.n_way).repeat_interleave(u),
                          torch.full((self.n_distractors * u,), -1, dtype=torch.long)])

    def collate(self, items: Sequence[tuple[Tensor, int]]) -> Episode:
        """``collate_fn`` for a DataLoader using this sampler as ``batch_sampler``."""
        if len(items) % self.episode_size:
            raise ValueError(f"got {len(items)} items, not a multiple of the episode size "
                             f"{self.episode_size}; use this sampler as the batch_sampler")
        inputs = torch.stack([torch.as_tensor(x) for x, _ in items])
        targets = torch.tensor([int(y) for _, y in items])
        b = len(items) // self.episode_size
        labelled = targets.reshape(b, self.episode_size)[:, :self.n_way * (self.k_shot
                                                                          + self.n_query)]
        class_ids = labelled.reshape(b, self.n_way, -1)[:, :, 0].contiguous()
        return self.make_episode(inputs, class_ids)

    def episode_batch(self, dataset: FewShotDataset, batch: int) -> Episode:
        """Batch ``batch`` read straight from ``dataset`` (no DataLoader)."""
        return self.read(dataset, self.batch_episodes(batch))

    def read(self, dataset: FewShotDataset, episodes: Sequence[int]) -> Episode:
        """The episodes numbered ``episodes`` as one batch read from ``dataset``.

        Shapes:
            ``len(episodes) = b`` -> ``Episode`` with ``support [b, n*k, *x]``.
        """
        idx = torch.stack([self.episode_indices(int(e)) for e in episodes])  # [b, size]
        inputs = dataset.get_batch(idx.reshape(-1))
        return self.make_episode(inputs, self.class_ids(idx))

    def class_ids(self, indices: Tensor) -> Tensor:
        """The dataset classes of episodes given by their indices in batch layout.

        Shapes:
            ``[b, episode_size]`` (from :meth:`episode_indices`) -> ``[b, n_way]``
        """
        labelled = indices[:, :self.n_way * (self.k_shot + self.n_query)]
        return self._targets[labelled.reshape(len(indices), self.n_way, -1)[:, :, 0]]

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
        A dataset that computes its inputs on first use (text features: ``inputs()``) computes
        them here, once, before the workers start, instead of once in every worker.
        """
        if num_workers > 0 and callable(getattr(dataset, "inputs", None)):
            dataset.inputs()
        return torch.utils.data.DataLoader(dataset, batch_sampler=self, collate_fn=self.collate,
                                           num_workers=num_workers, pin_memory=pin_memory,
                                           **kwargs)

    def state_dict(self) -> dict[str, Any]:
        """What is needed to rebuild the same stream: the seed and the shape of episodes."""
        return {"seed": self.seed, "n_way": self.n_way, "k_shot": self.k_shot,
                "n_query": self.n_query, "episodes_per_batch": self.episodes_per_batch,
                "within_alphabet": self.within_alphabet, "n_unlabelled": self.n_unlabelled,
                "n_distractors": self.n_distractors}
