"""Few-shot methods: one file per paper, one interface, one registry."""

from relgraph.methods import (  # noqa: F401  (importing registers the methods)
    edge_gnn,
    gnn,
    maml,
    matching,
    mtl,
    protonet,
    pyg_conv,
    relation,
    transfer,
)
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
