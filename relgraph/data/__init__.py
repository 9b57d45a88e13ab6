"""Data: episodes, the episode sampler, and datasets (Omniglot, glyphs, folders, tensors,
features files, miniImageNet, tieredImageNet, CUB, CIFAR-FS, FC100, text)."""

from relgraph.data import (  # noqa: F401  (registers datasets)
    cifar,
    cub,
    features,
    folder,
    glyphs,
    imagenet,
    omniglot,
    tensors,
    text,
)
from relgraph.data.base import (
    ClassSubset,
    FewShotDataset,
    InMemoryDataset,
    RotatedClasses,
    resize_images,
)
from relgraph.data.catalog import DATASETS, build_dataset, list_datasets, register_dataset
from relgraph.data.download import DownloadError, download_file
from relgraph.data.episode import Episode
from relgraph.data.features import FeaturesDataset, read_features
from relgraph.data.folder import ImageFolderDataset
from relgraph.data.glyphs import GlyphsDataset
from relgraph.data.lake import LakeRun, evaluate_lake_runs, load_lake_runs
from relgraph.data.omniglot import Omniglot, download_omniglot, vinyals_split
from relgraph.data.resident import ResidentImages, resident_images
from relgraph.data.sampler import EpisodeSampler, episode_seed
from relgraph.data.tensors import TensorDataset
from relgraph.data.text import TextDataset

__all__ = [
    "ClassSubset",
    "DATASETS",
    "DownloadError",
    "Episode",
    "FeaturesDataset",
    "EpisodeSampler",
    "FewShotDataset",
    "GlyphsDataset",
    "ImageFolderDataset",
    "InMemoryDataset",
    "LakeRun",
    "Omniglot",
    "ResidentImages",
    "RotatedClasses",
    "TensorDataset",
    "TextDataset",
    "build_dataset",
    "download_file",
    "download_omniglot",
    "episode_seed",
    "evaluate_lake_runs",
    "list_datasets",
    "load_lake_runs",
    "read_features",
    "register_dataset",
    "resident_images",
    "resize_images",
    "vinyals_split",
]
