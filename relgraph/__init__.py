"""relgraph: graph-based relational few-shot learning. Every episode is a graph."""

import os as _os
import sys as _sys

from relgraph.threads import command_line_wait_policy as _wait_policy

# Before torch loads its OpenMP: the relgraph command's threads sleep when idle (see
# relgraph.threads.command_line_wait_policy); library users keep their own settings.
if _wait_policy(getattr(_sys, "orig_argv", _sys.argv), _sys.argv, _os.environ, _sys.modules):
    _os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

from relgraph.data import (  # noqa: E402
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
