"""Generative augmentation: hallucinated support examples as extra nodes of the episode graph.

See :mod:`relgraph.generative.hallucinators`, and the ``augment`` option of the relational heads:
:class:`relgraph.generative.stage.SupportGenerator` inserts the generated supports into the
episode graph.
"""

from relgraph.generative.hallucinators import (
    HALLUCINATORS,
    DeltaVAE,
    GANHallucinator,
    Hallucinator,
    build_hallucinator,
    generation_slots,
    list_hallucinators,
    register_hallucinator,
    same_class_pairs,
)
from relgraph.generative.viz import pca_2d, plot_generated_features

__all__ = [
    "HALLUCINATORS",
    "DeltaVAE",
    "GANHallucinator",
    "Hallucinator",
    "build_hallucinator",
    "generation_slots",
    "list_hallucinators",
    "pca_2d",
    "plot_generated_features",
    "register_hallucinator",
    "same_class_pairs",
]
