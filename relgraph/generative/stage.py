"""Generated supports as a graph-building stage: insert hallucinated support nodes.

:class:`SupportGenerator` sits between the embedding and the episode graph: it appends
``per_class`` generated examples per class to the support embeddings (flagged, optionally
down-weighted), and gives the hallucinator's own training loss. Heads never see it; they see
the extra support nodes in the :class:`~relgraph.graph.EpisodeGraph`.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from relgraph.data.sampler import episode_seed
from relgraph.generative.hallucinators import HALLUCINATORS

__all__ = ["SupportGenerator", "build_support_generator"]

#: Salts separating the training noise of generation and of the hallucinator's own loss.
_GENERATE_SALT, _AUX_SALT = 0x6E4_E7A7E, 0xA0C_1055


class SupportGenerator(nn.Module):
    """Append generated support examples to a batch of episodes' support embeddings.

    Generation reads the support set only. In eval mode its noise comes from a fresh
    generator seeded with ``seed`` at every call, so evaluating the same episodes twice gives
    the same result and a query's prediction still depends only on the support set and that
    query. In training mode the noise of step ``t`` comes from a generator seeded with
    ``(seed, t)``, ``t`` being the buffer ``step`` (like BatchNorm's ``num_batches_tracked``: a
    counter of training passes, saved in checkpoints), so training is reproducible and resumes
    exactly.

    Args:
        hallucinator: the generator (see :mod:`relgraph.generative.hallucinators`).
        per_class: examples generated per class, ``m >= 0``.
        weight: weight of a generated example relative to a given one, ``> 0``.
        seed: seed of the generation noise.

    Shapes:
        ``forward(support [b, s, d], labels [b, s], n_way)`` -> ``support [b, s + n*m, d]``,
        ``labels [b, s + n*m]``, ``is_generated [b, s + n*m]`` bool, ``weights [b, s + n*m]``.
    """

    def __init__(self, hallucinator: nn.Module, per_class: int = 5, weight: float = 1.0,
                 seed: int = 0) -> None:
        super().__init__()
        self.hallucinator = hallucinator
        self.per_class = int(per_class)
        self.weight = float(weight)
        self.seed = int(seed)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def _generator(self, salt: int) -> torch.Generator:
        if not self.training:
            return torch.Generator().manual_seed(self.seed)
        return torch.Generator().manual_seed(episode_seed(self.seed ^ salt, int(self.step)))

    def forward(self, support: Tensor, labels: Tensor, n_way: int
                ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The supports followed by the generated ones (see the class docstring); in training
        mode this advances the pass counter ``step``."""
        generator = self._generator(_GENERATE_SALT)
        if self.training:
            with torch.no_grad():
                self.step += 1
        real_flags = torch.zeros(labels.shape, dtype=torch.bool, device=support.device)
        real_weights = torch.ones(labels.shape, dtype=support.dtype, device=support.device)
        if self.per_class == 0:
            return support, labels, real_flags, real_weights
        fake, fake_labels = self.hallucinator(support, labels, n_way, self.per_class, generator)
        fake_flags = torch.ones(fake_labels.shape, dtype=torch.bool, device=support.device)
        return (torch.cat([support, fake.to(support.dtype)], dim=1),
                torch.cat([labels, fake_labels], dim=1),
                torch.cat([real_flags, fake_flags], dim=1),
                torch.cat([real_weights, torch.full_like(fake_flags, self.weight,
                                                         dtype=support.dtype)], dim=1))

    def loss(self, support: Tensor, labels: Tensor, query: Tensor,
             query_labels: Tensor) -> Tensor:
        """The hallucinator's own loss on the episode's real features (0 in eval mode, so
        evaluation never reads query labels).

        Shapes:
            ``[b, s, d], [b, s], [b, q, d], [b, q] -> []``
        """
        if not self.training:
            return support.new_zeros((), dtype=torch.float32)
        return self.hallucinator.aux_loss(support, labels, query, query_labels,
                                          self._generator(_AUX_SALT)).float()

    def extra_repr(self) -> str:
        return f"per_class={self.per_class}, weight={self.weight:g}, seed={self.seed}"


def build_support_generator(augment: Mapping[str, Any] | None, dim: int
                            ) -> SupportGenerator | None:
    """The :class:`SupportGenerator` described by a method's ``augment`` argument.

    Args:
        augment: ``None`` (no generation) or a mapping with

            - ``hallucinator``: a registered name (``"vae"``, ``"gan"``), required;
            - ``per_class``: examples generated per class, ``m >= 0`` (default 5);
            - ``weight``: weight of a generated example relative to a real one, ``> 0``
              (default 1.0; how each method uses it is in its docstring);
            - ``seed``: seed of the generation noise (default 0): evaluation uses it as is,
              training mixes it with the step counter;
            - any other key: an argument of the hallucinator (e.g. ``beta``, ``critic``).
        dim: the feature size the hallucinator works in.

    Raises:
        ValueError: a malformed ``augment`` (the message names the key and allowed values).
    """
    if augment is None:
        return None
    if not isinstance(augment, Mapping):
        raise ValueError(f"method_args.augment must be a mapping such as {{hallucinator: "
                         f"vae, per_class: 5}}, got {augment!r}")
    args = dict(augment)
    name = args.pop("hallucinator", None)
    if not isinstance(name, str):
        raise ValueError(f"method_args.augment needs hallucinator: one of "
                         f"{', '.join(HALLUCINATORS.list())}; got {name!r}")
    if name not in HALLUCINATORS:
        raise ValueError(f"method_args.augment.hallucinator: unknown hallucinator {name!r}; "
                         f"choose one of: {', '.join(HALLUCINATORS.list())}")
    per_class = args.pop("per_class", 5)
    weight = args.pop("weight", 1.0)
    seed = args.pop("seed", 0)
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 0:
        raise ValueError(f"method_args.augment.per_class must be an integer >= 0 (examples "
                         f"generated per class), got {per_class!r}")
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight <= 0:
        raise ValueError(f"method_args.augment.weight must be a number > 0 (a generated "
                         f"example's weight relative to a real one), got {weight!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"method_args.augment.seed must be an integer, got {seed!r}")
    factory = HALLUCINATORS.get(name)
    try:
        hallucinator = factory(dim=dim, **args)
    except TypeError as exc:
        accepted = [p for p in inspect.signature(factory).parameters if p != "dim"]
        raise ValueError(f"method_args.augment: hallucinator {name!r} got an unknown "
                         f"argument ({exc}); besides hallucinator, per_class, weight and "
                         f"seed it accepts: {', '.join(accepted)}") from exc
    return SupportGenerator(hallucinator, per_class, weight, seed)
