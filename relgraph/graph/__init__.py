"""Episode graphs: build, edge labels, similarity kernels, and PyG / networkx views."""

from relgraph.graph.episode_graph import EpisodeGraph, message_mask
from relgraph.graph.kernels import LearnedKernel, cosine_similarity, squared_euclidean

__all__ = [
    "EpisodeGraph",
    "LearnedKernel",
    "cosine_similarity",
    "message_mask",
    "squared_euclidean",
]
