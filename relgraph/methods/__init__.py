"""Few-shot methods: one file per paper, one interface, one registry.

The relational heads (:class:`RelationalHead`) relate the nodes of an episode graph; the
gradient-based methods (:class:`GradientMetaLearner`, :class:`Baseline` and its variants,
:class:`MTL`) adapt to each episode by gradient steps.
"""

from relgraph.methods import (  # noqa: F401  (importing registers the methods)
    dpgn,
    edge_gnn,
    gnn,
    maml,
    matching,
    mtl,
    protonet,
    pyg_conv,
    relation,
    tpn,
    transfer,
)
from relgraph.methods.base import (
    METHODS,
    FewShotMethod,
    build_method,
    list_methods,
    method_class,
    register_method,
    register_variant,
)
from relgraph.methods.dpgn import DPGN
from relgraph.methods.edge_gnn import EdgeLabelingGNN
from relgraph.methods.gnn import GNN
from relgraph.methods.head import RelationalHead
from relgraph.methods.maml import GradientMetaLearner
from relgraph.methods.matching import MatchingNet
from relgraph.methods.mtl import MTL
from relgraph.methods.protonet import ProtoNet, prototypes
from relgraph.methods.pyg_conv import PyGConvMethod
from relgraph.methods.relation import RelationNet
from relgraph.methods.tpn import TPN
from relgraph.methods.transfer import Baseline

__all__ = [
    "DPGN",
    "GNN",
    "METHODS",
    "MTL",
    "Baseline",
    "EdgeLabelingGNN",
    "FewShotMethod",
    "GradientMetaLearner",
    "MatchingNet",
    "ProtoNet",
    "PyGConvMethod",
    "RelationNet",
    "RelationalHead",
    "TPN",
    "build_method",
    "list_methods",
    "method_class",
    "prototypes",
    "register_method",
    "register_variant",
]
