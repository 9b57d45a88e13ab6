"""Few-shot methods: one file per paper, one interface, one registry."""

from relgraph.methods import protonet  # noqa: F401  (registers)
from relgraph.methods.base import (
    METHODS,
    FewShotMethod,
    build_method,
    list_methods,
    register_method,
)
from relgraph.methods.protonet import ProtoNet, prototypes

__all__ = [
    "METHODS",
    "FewShotMethod",
    "ProtoNet",
    "build_method",
    "list_methods",
    "prototypes",
    "register_method",
]
