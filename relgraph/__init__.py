"""relgraph: graph-based relational few-shot learning. Every episode is a graph."""

from relgraph.data import (
    Episode,
    EpisodeSampler,
    FewShotDataset,
    build_dataset,
    list_datasets,
)

__version__ = "0.1.0"

__all__ = [
    "Episode",
    "EpisodeSampler",
    "FewShotDataset",
    "build_dataset",
    "list_datasets",
    "__version__",
]
