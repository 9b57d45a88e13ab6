"""Episode graphs: build, class aggregation, similarity kernels, and PyG / networkx views."""

from relgraph.graph.classes import class_aggregate, prototypes
from relgraph.graph.episode_graph import UNLABELLED, EpisodeGraph, message_mask
from relgraph.graph.kernels import LearnedKernel, cosine_similarity, squared_euclidean
from relgraph.graph.views import draw_episode_graph, knn_mask, to_networkx, to_pyg

__all__ = [
    "UNLABELLED",
    "EpisodeGraph",
    "LearnedKernel",
    "class_aggregate",
    "cosine_similarity",
    "draw_episode_graph",
    "knn_mask",
    "message_mask",
    "prototypes",
    "squared_euclidean",
    "to_networkx",
    "to_pyg",
]
