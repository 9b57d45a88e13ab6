"""Reusable dense layers of the relational heads, batched over episodes (PyG-style).

For a generic dense graph convolution use PyG's own (e.g.
:class:`torch_geometric.nn.DenseGraphConv`); these are the layers of the papers' heads.
"""

from relgraph.nn.dpgn import (
    DistributionToPoint,
    PairSimilarity,
    PointToDistribution,
    SetPairSimilarity,
    normalised_edge_update,
)
from relgraph.nn.edge_labeling import EdgeUpdate, NodeUpdate, pair_index
from relgraph.nn.gnn import ClassGraphConv
from relgraph.nn.pairwise import pair_mlp, symmetric_pairs, use_fused
from relgraph.nn.relation import RelationModule

__all__ = ["ClassGraphConv", "DistributionToPoint", "EdgeUpdate", "NodeUpdate", "PairSimilarity",
           "PointToDistribution", "RelationModule", "SetPairSimilarity",
           "normalised_edge_update", "pair_index", "pair_mlp", "symmetric_pairs", "use_fused"]
