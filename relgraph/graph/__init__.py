"""Episode graphs: build, edge labels, similarity kernels, and PyG / networkx views."""

from relgraph.graph.episode_graph import EpisodeGraph, message_mask
from relgraph.graph.kernels import LearnedKernel, cosine_similarity, squared_euclidean
from relgraph.graph.views import draw_episode_graph, knn_mask, to_networkx, to_pyg

__all__ = [
    "EpisodeGraph",
    "LearnedKernel",
    "cosine_similarity",
    "draw_episode_graph",
    "knn_mask",
    "message_mask",
    "squared_euclidean",
    "to_networkx",
    "to_pyg",
]
