"""Feature hallucinators: synthesise extra support examples of a class from its few supports.

A hallucinator works in the embedding space of a method (the backbone's vectors, or the
flattened feature maps for Relation Networks). Given the support embeddings of a batch of
episodes it returns ``m`` new examples per class with their labels; the method adds them to the
episode graph as extra **support** nodes (see
:class:`relgraph.generative.stage.SupportGenerator`).
Generation reads the support set only, never the queries.

Two hallucinators are registered:

- ``"vae"``, :class:`DeltaVAE`: a conditional VAE on pairs of examples of one class, in the
  spirit of the Delta-encoder (Schwartz et al., NeurIPS 2018), trained by its own objective on
  real features (detached from the backbone);
- ``"gan"``, :class:`GANHallucinator`: the generator of Wang, Girshick, Hebert & Hariharan
  (CVPR 2018, "Low-shot learning from imaginary data"), trained end to end through the few-shot
  classification loss, optionally with an adversarial critic.
"""

from __future__ import annotations

import abc
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn
from torch.func import functional_call

from relgraph.nn.precision import compute_dtype
from relgraph.registry import Registry

__all__ = [
    "HALLUCINATORS",
    "DeltaVAE",
    "GANHallucinator",
    "Hallucinator",
    "build_hallucinator",
    "generation_slots",
    "list_hallucinators",
    "register_hallucinator",
    "same_class_pairs",
]


def generation_slots(support_labels: Tensor, n_way: int, m: int) -> tuple[Tensor, Tensor, Tensor]:
    """Which support seeds each generated example, and with which noise round.

    Generated example ``j = 0..m-1`` of class ``c`` is seeded by the ``(j mod k_c)``-th support
    of class ``c`` (in episode order; ``k_c`` its number of supports) and uses the noise of
    round ``r = j // k_c``: the supports are cycled over, one round of noise at a time. The
    slots are listed by ``(round, support position)``, not by class, so relabelling the classes
    does not reorder them; when every ``k_c`` divides ``m``, the set of ``(support, round)``
    pairs does not depend on the order of the supports either.

    Args:
        support_labels: ``[b, s]`` labels in ``0..n_way-1``; every class needs a support.
        n_way: classes per episode.
        m: examples generated per class (``>= 0``).

    Returns:
        ``(anchor [b, n_way*m], rounds [b, n_way*m], labels [b, n_way*m])``: the index of the
        seed support in ``0..s-1``, the noise round in ``0..m-1`` and the class of every
        generated example.

    Shapes:
        ``[b, s] -> [b, n_way*m]`` x 3
    """
    if m < 0:
        raise ValueError(f"expected m >= 0 examples per class, got {m}")
    b, s = support_labels.shape
    device = support_labels.device
    onehot = F.one_hot(support_labels, n_way)  # [b, s, n]
    counts = onehot.sum(dim=1)  # [b, n]
    if m > 0 and bool((counts == 0).any()):
        raise ValueError(f"cannot generate examples of a class without support examples; "
                         f"support counts per class: {counts.tolist()}")
    rank = ((onehot.cumsum(dim=1) - 1) * onehot).sum(-1)  # [b, s]: rank within its class
    k = counts.gather(1, support_labels)  # [b, s]: shots of the support's class
    rounds = torch.arange(m, device=device).view(1, m, 1)
    valid = rounds * k.unsqueeze(1) + rank.unsqueeze(1) < m  # [b, m, s]
    # exactly n_way * m valid (round, support) cells per episode; keep them in (r, i) order
    order = torch.argsort((~valid).flatten(1).int(), dim=1, stable=True)
    cells = order[:, : n_way * m]
    anchor = cells % s
    return anchor, cells // s, support_labels.gather(1, anchor)


def same_class_pairs(labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Every ordered pair ``(i, j)``, ``i != j``, of examples of the same class of an episode.

    Args:
        labels: ``[b, N]`` class of every example.

    Returns:
        ``(episode, i, j)``, each ``[P]`` long.
    """
    same = labels.unsqueeze(2) == labels.unsqueeze(1)
    same &= ~torch.eye(labels.shape[1], dtype=torch.bool, device=labels.device)
    e, i, j = same.nonzero(as_tuple=True)
    return e, i, j


def _mlp(dims: list[int]) -> nn.Sequential:
    """``Linear -> LeakyReLU`` between the widths, a plain ``Linear`` last."""
    layers: list[nn.Module] = []
    for a, h in zip(dims[:-2], dims[1:-1], strict=True):
        layers += [nn.Linear(a, h), nn.LeakyReLU(0.2)]
    layers.append(nn.Linear(dims[-2], dims[-1]))
    return nn.Sequential(*layers)


class Hallucinator(nn.Module, abc.ABC):
    """Base of the hallucinators: ``m`` new examples per class from a class's supports.

    :meth:`forward` chooses the seed supports and the noise (:func:`generation_slots`) and calls
    :meth:`generate`. The noise holds one vector :math:`z_r \\sim \\mathcal N(0, I)` per round
    ``r``, shared by every class and every episode of the batch and drawn on the CPU from
    ``generator`` (``None``: torch's global generator; the methods always pass a seeded one,
    see :class:`relgraph.generative.stage.SupportGenerator`). So, with a seeded generator,
    an episode's generated examples depend only on its support set: not on its queries, not on
    the other episodes of the batch, not on the device, and not on how its classes are
    numbered.

    Args:
        dim: feature size ``d``.
        noise_dim: size of the noise vectors :math:`z`.

    Shapes:
        - :meth:`forward`: ``support [b, s, d], support_labels [b, s]`` ->
          ``([b, n_way*m, d], [b, n_way*m])``
        - :meth:`generate`: ``anchor [b, g, d], noise [b, g, noise_dim] -> [b, g, d]``
        - :meth:`aux_loss`: real ``support [b, s, d]``, ``query [b, q, d]`` -> scalar
    """

    def __init__(self, dim: int, noise_dim: int) -> None:
        super().__init__()
        if dim < 1 or noise_dim < 1:
            raise ValueError(f"expected feature size dim >= 1 and noise_dim >= 1, got {dim} and "
                             f"{noise_dim}")
        self.dim = int(dim)
        self.noise_dim = int(noise_dim)

    def forward(self, support: Tensor, support_labels: Tensor, n_way: int, m: int,
                generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Generate ``m`` examples per class (class balanced) from the support embeddings.

        Args:
            support: ``[b, s, d]`` support embeddings.
            support_labels: ``[b, s]`` labels in ``0..n_way-1``.
            n_way: classes per episode.
            m: examples per class.
            generator: a CPU :class:`torch.Generator` for the noise; ``None`` uses the global
                generator.

        Returns:
            ``(generated [b, n_way*m, d], labels [b, n_way*m])``.
        """
        if support.dim() != 3 or support.shape[-1] != self.dim:
            raise ValueError(f"expected support embeddings [b, s, {self.dim}], got "
                             f"{tuple(support.shape)}")
        if support_labels.shape != support.shape[:2]:
            raise ValueError(f"expected support_labels {tuple(support.shape[:2])}, got "
                             f"{tuple(support_labels.shape)}")
        anchor_idx, rounds, labels = generation_slots(support_labels, n_way, m)
        noise = torch.randn(m, self.noise_dim, generator=generator)
        noise = noise.to(device=support.device, dtype=support.dtype)[rounds]  # [b, g, z]
        anchor = support.gather(1, anchor_idx.unsqueeze(-1).expand(-1, -1, support.shape[-1]))
        return self.generate(anchor, noise), labels

    @abc.abstractmethod
    def generate(self, anchor: Tensor, noise: Tensor) -> Tensor:
        """New examples from seed examples and noise: ``[b, g, d], [b, g, z] -> [b, g, d]``."""

    def aux_loss(self, support: Tensor, support_labels: Tensor, query: Tensor,
                 query_labels: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """The hallucinator's own training loss on an episode's real features (default 0).

        Called on training episodes only; the queries are used as more labelled real examples
        of their classes (training data), never at evaluation. ``generator`` (CPU) draws any
        noise the loss needs; ``None`` uses the global generator.

        Shapes:
            ``[b, s, d], [b, s], [b, q, d], [b, q] -> []``
        """
        return support.new_zeros(())

    def extra_repr(self) -> str:
        return f"dim={self.dim}, noise_dim={self.noise_dim}"


HALLUCINATORS: Registry[Hallucinator] = Registry("hallucinator")
register_hallucinator = HALLUCINATORS.register


def build_hallucinator(name: str, dim: int, **kwargs: Any) -> Hallucinator:
    """Build the hallucinator registered as ``name`` for features of size ``dim``.

    Unknown names raise ``KeyError`` listing the choices.
    """
    return HALLUCINATORS.get(name)(dim=dim, **kwargs)


def list_hallucinators() -> list[str]:
    """Names of the registered hallucinators."""
    return HALLUCINATORS.list()


@register_hallucinator("vae")
class DeltaVAE(Hallucinator):
    """A pairwise conditional VAE in the spirit of the Delta-encoder (Schwartz et al. 2018).

    It learns how two examples of one class differ. The encoder reads a pair :math:`(x_a, x_b)`
    of real features of the same class and outputs a Gaussian posterior over a small code
    :math:`z` (the "delta"); the decoder applies the code to :math:`x_b`:

    .. math::
        q(z \\mid x_a, x_b) = \\mathcal N\\big(\\mu(x_a, x_b), \\operatorname{diag}
            \\sigma^2(x_a, x_b)\\big), \\qquad
        \\hat x_a = D(z, x_b) = x_b + \\operatorname{MLP}([z, x_b])

    trained on all ordered pairs of same-class examples (supports and queries) of the training
    episodes by

    .. math::
        \\mathcal L = \\frac{1}{d}\\, \\mathbb E_{(a, b)}\\Big[\\lVert \\hat x_a - x_a
            \\rVert^2 + \\beta\\, \\mathrm{KL}\\big(q(z \\mid x_a, x_b) \\,\\|\\,
            \\mathcal N(0, I)\\big)\\Big]

    (the usual VAE objective, divided by the feature size :math:`d` only so that its size
    is comparable to a classification loss in the logged training loss).

    The features are **detached** in :meth:`aux_loss`: this objective trains the VAE only and
    never moves the backbone. To generate, :math:`z \\sim \\mathcal N(0, I)` is decoded onto a
    support :math:`x` of the new class, :math:`x' = x + \\operatorname{MLP}([z, x])`; the decoded
    offset is computed without gradient, so the classification loss reaches the backbone
    through :math:`x` but does not train the VAE.

    (The Delta-encoder samples codes by encoding real pairs of base classes; sampling the
    prior is the VAE reading of it. Its pairs come from the base classes of the training
    episodes, so the variation it learns is the base classes'.)

    Args:
        dim: feature size ``d``.
        latent_dim: size of the code :math:`z` (the paper's bottleneck is small). Default 16.
        hidden: hidden width of the encoder and decoder MLPs. Default 256.
        beta: weight :math:`\\beta` of the KL term. Default 1.0.

    Shapes:
        see :class:`Hallucinator`.
    """

    def __init__(self, dim: int, latent_dim: int = 16, hidden: int = 256,
                 beta: float = 1.0) -> None:
        super().__init__(dim, latent_dim)
        if hidden < 1:
            raise ValueError(f"expected hidden >= 1, got {hidden}")
        if beta < 0:
            raise ValueError(f"expected beta >= 0, got {beta}")
        self.beta = float(beta)
        self.encoder = _mlp([2 * dim, hidden, 2 * latent_dim])
        self.decoder = _mlp([dim + latent_dim, hidden, dim])

    def encode(self, x_a: Tensor, x_b: Tensor) -> tuple[Tensor, Tensor]:
        """Posterior mean and log-variance of the code of the pair.

        Shapes:
            ``[..., d], [..., d] -> [..., z], [..., z]``
        """
        mu, logvar = self.encoder(torch.cat([x_a, x_b], dim=-1)).chunk(2, dim=-1)
        return mu, logvar.clamp(-10.0, 10.0)

    def decode(self, z: Tensor, x_b: Tensor) -> Tensor:
        """:math:`D(z, x_b) = x_b + \\operatorname{MLP}([z, x_b])`.

        Shapes:
            ``[..., z], [..., d] -> [..., d]``
        """
        return x_b + self.decoder(torch.cat([z, x_b], dim=-1))

    def generate(self, anchor: Tensor, noise: Tensor) -> Tensor:
        with torch.no_grad():
            delta = self.decode(noise, anchor) - anchor
        return anchor + delta

    def aux_loss(self, support: Tensor, support_labels: Tensor, query: Tensor,
                 query_labels: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Reconstruction plus :math:`\\beta` KL on the same-class pairs (features detached).

        0 when the episodes hold no two examples of one class.
        """
        x = torch.cat([support, query], dim=1).detach()
        x = x.to(compute_dtype(x))  # float32 under autocast, float64 stays
        labels = torch.cat([support_labels, query_labels], dim=1)
        e, i, j = same_class_pairs(labels)
        if e.numel() == 0:
            return x.new_zeros(())
        x_a, x_b = x[e, i], x[e, j]
        mu, logvar = self.encode(x_a, x_b)
        eps = torch.randn(mu.shape, generator=generator).to(mu)
        z = mu + eps * (0.5 * logvar).exp()
        recon = (self.decode(z, x_b) - x_a).pow(2).sum(-1).mean()
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1).mean()
        return (recon + self.beta * kl) / self.dim

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, beta={self.beta}"


@register_hallucinator("gan")
class GANHallucinator(Hallucinator):
    """The hallucinator of Wang et al. (CVPR 2018), trained through the classification loss.

    A generator maps a seed example :math:`x` of a class and noise :math:`z` to a new example
    of that class, residually:

    .. math:: G(x, z) = x + \\operatorname{MLP}([x, z]), \\qquad z \\sim \\mathcal N(0, I)

    (the MLP's last layer starts at zero, so :math:`G` starts by copying its seed). The
    generated examples join the support set and the method's classification loss on the
    queries is back-propagated into :math:`G` (and, through :math:`x`, into the backbone as
    usual): :math:`G` learns to produce the examples that help the few-shot classifier, the
    meta-learned hallucination of the paper.

    **Critic** (``critic=True``, optional; the paper does not need one): an MLP
    :math:`D` scores features as real or generated, and :meth:`aux_loss` adds the
    non-saturating GAN losses, weighted by ``adv_weight``:

    .. math::
        \\mathcal L_D = -\\log \\sigma(D(x)) - \\log\\big(1 - \\sigma(D(\\tilde x))\\big),
        \\qquad
        \\mathcal L_G = -\\log \\sigma\\big(\\bar D(\\tilde x)\\big)

    with :math:`x` the episode's real features (supports and queries, detached),
    :math:`\\tilde x = G(\\operatorname{sg}(x_s), z)` generated from the detached supports, and
    :math:`\\bar D` the critic with its parameters detached. Both terms are summed into the one
    training loss and updated by the one optimiser step: :math:`\\mathcal L_D` reaches only the
    critic (it sees detached generated features) and :math:`\\mathcal L_G` only the generator
    (it sees a detached critic), so each player descends its own objective; the backbone
    receives nothing from the adversarial terms.

    Args:
        dim: feature size ``d``.
        noise_dim: size of :math:`z`; default ``dim``.
        hidden: hidden width of the generator MLP (two hidden layers, as the paper). Default 256.
        critic: add the adversarial critic. Default ``False``.
        critic_hidden: hidden width of the critic MLP. Default 256.
        adv_weight: weight of the adversarial losses. Default 0.1.
        adv_per_class: generated examples per class shown to the critic. Default 5.

    Shapes:
        see :class:`Hallucinator`.
    """

    def __init__(self, dim: int, noise_dim: int | None = None, hidden: int = 256,
                 critic: bool = False, critic_hidden: int = 256, adv_weight: float = 0.1,
                 adv_per_class: int = 5) -> None:
        super().__init__(dim, dim if noise_dim is None else noise_dim)
        if hidden < 1 or critic_hidden < 1:
            raise ValueError(f"expected hidden >= 1 and critic_hidden >= 1, got {hidden} and "
                             f"{critic_hidden}")
        if adv_weight < 0 or adv_per_class < 1:
            raise ValueError(f"expected adv_weight >= 0 and adv_per_class >= 1, got "
                             f"{adv_weight} and {adv_per_class}")
        self.generator = _mlp([dim + self.noise_dim, hidden, hidden, dim])
        last = self.generator[-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.adv_weight = float(adv_weight)
        self.adv_per_class = int(adv_per_class)
        self.critic = _mlp([dim, critic_hidden, 1]) if critic else None

    def generate(self, anchor: Tensor, noise: Tensor) -> Tensor:
        return anchor + self.generator(torch.cat([anchor, noise], dim=-1))

    def aux_loss(self, support: Tensor, support_labels: Tensor, query: Tensor,
                 query_labels: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``adv_weight * (L_D + L_G)`` with the critic, else 0 (see the class docstring)."""
        if self.critic is None or self.adv_weight == 0:
            return support.new_zeros(())
        n_way = int(support_labels.max()) + 1
        dtype = compute_dtype(support)  # float32 under autocast, float64 stays
        real = rearrange(torch.cat([support, query], dim=1).detach().to(dtype), "b n d -> (b n) d")
        fake, _ = self(support.detach().to(dtype), support_labels, n_way, self.adv_per_class,
                       generator)
        fake = rearrange(fake, "b g d -> (b g) d")
        d_real = self.critic(real)
        d_fake = self.critic(fake.detach())
        loss_d = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
        frozen = {k: v.detach() for k, v in self.critic.named_parameters()}
        loss_g = F.softplus(-functional_call(self.critic, frozen, (fake,))).mean()
        return self.adv_weight * (loss_d + loss_g)

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, critic={self.critic is not None}, "
                f"adv_weight={self.adv_weight}")
