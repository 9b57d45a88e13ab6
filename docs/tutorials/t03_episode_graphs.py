"""
Episode graphs
==============

In relgraph every episode is a graph: one node per support and query example, edges between
the nodes that may exchange messages. Every metric and graph method (ProtoNet, Matching,
Relation, GNN, edge-labeling GNN, TPN, any PyG convolution) runs the same three steps::

    episode --embed--> node features --build--> EpisodeGraph --relate--> query logits

This tutorial builds a batch of :class:`~relgraph.graph.EpisodeGraph` objects, computes the
similarity *kernels* over all pairs of nodes, compares the *inductive* and *transductive*
message masks, turns the graphs into PyTorch Geometric and networkx graphs, and finally draws
an episode with the similarities of a briefly trained model as edge weights.
"""

# %%
# A batch of graphs
# -----------------
# Four 5-way 2-shot episodes with 3 queries per class from the ``glyphs`` test alphabets. For
# now the node features are the raw pixels (784 per image); :meth:`EpisodeGraph.build
# <relgraph.graph.EpisodeGraph.build>` takes any ``[b, s, d]`` support and ``[b, q, d]``
# query features with the support labels. Nodes are ordered supports first, then queries.
import matplotlib.pyplot as plt
import torch

from relgraph.data import EpisodeSampler, build_dataset
from relgraph.graph import (
    EpisodeGraph,
    LearnedKernel,
    cosine_similarity,
    draw_episode_graph,
    squared_euclidean,
    to_networkx,
    to_pyg,
)

torch.manual_seed(0)
test_set = build_dataset("glyphs", split="test")
sampler = EpisodeSampler(test_set, n_way=5, k_shot=2, n_query=3, seed=0)
episode = sampler.read(test_set, range(4))
pixels_support = episode.support.flatten(2)  # [b, s, 784]
pixels_query = episode.query.flatten(2)  # [b, q, 784]
graph = EpisodeGraph.build(pixels_support, episode.support_labels, pixels_query,
                           n_way=episode.n_way)
print(f"{graph.x.shape[0]} graphs of {graph.num_nodes} nodes: {graph.n_support} supports, "
      f"{graph.n_query} queries")
print("x       ", tuple(graph.x.shape), "node features [b, n, d]")
print("labels  ", graph.labels[0].tolist(), "(-1: unknown, the queries)")
print("is_query", graph.is_query[0].int().tolist())
print("mask    ", tuple(graph.mask.shape), "mask[b, i, j]: node i hears node j")

# %%
# The graph carries what a model may see, and nothing more: the queries' labels are not in
# it (the loss gets them separately). Heads read the labels as one-hot node features
# (:meth:`~relgraph.graph.EpisodeGraph.node_labels`) or as edge labels between supports
# (:meth:`~relgraph.graph.EpisodeGraph.edge_labels`: 1 same class, 0 different, 0.5 unknown).
print(graph.node_labels("uniform")[0, [0, 1, graph.query_start]])
print(graph.edge_labels()[0, :4, [0, 1, 2, graph.query_start]])

# %%
# Kernels
# -------
# A kernel scores every pair of nodes of every episode at once, ``[b, n, d] -> [b, n, n]``:
# :func:`~relgraph.graph.squared_euclidean` (ProtoNet's), :func:`~relgraph.graph.cosine_similarity`
# (Matching Networks'), or :class:`~relgraph.graph.LearnedKernel`, an MLP on ``|x_i - x_j|``
# (the GNN and edge-labeling GNN), here untrained.
sq = squared_euclidean(graph.x)
cos = cosine_similarity(graph.x)
learned = LearnedKernel(in_dim=graph.x.shape[-1], hidden=(32,)).eval()
with torch.no_grad():
    mlp = learned(graph.x)[..., 0]
print("squared_euclidean", tuple(sq.shape), " cosine", tuple(cos.shape),
      " learned", tuple(mlp.shape))

fig, axes = plt.subplots(1, 3, figsize=(11, 3.6))
for ax, (name, k) in zip(axes, [("-squared Euclidean", -sq), ("cosine", cos),
                                ("learned MLP (untrained)", mlp)], strict=True):
    im = ax.imshow(k[0], cmap="viridis")
    ax.axhline(graph.n_support - 0.5, color="white", lw=1)
    ax.axvline(graph.n_support - 0.5, color="white", lw=1)
    ax.set_title(name, fontsize=10)
    ax.set_xlabel("node j (10 supports | 15 queries)", fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.046)
axes[0].set_ylabel("node i")
fig.suptitle("kernels of episode 0 on raw pixels: supports in pairs of the same class")
fig.tight_layout()
plt.show()

# %%
# Inductive and transductive masks
# --------------------------------
# The message mask says who may hear whom. *Inductive* (the default): every node hears the
# supports and itself, never another query, so each query's prediction depends only on the
# support set and the query itself. *Transductive*: every node hears every node, so the
# queries of an episode can help classify each other (TPN, DPGN, the transductive GNNs).
transductive = EpisodeGraph.build(pixels_support, episode.support_labels, pixels_query,
                                  n_way=episode.n_way, transductive=True)
fig, axes = plt.subplots(1, 2, figsize=(8, 4))
for ax, g, name in ((axes[0], graph, "inductive"), (axes[1], transductive, "transductive")):
    ax.imshow(g.mask[0], cmap="Greys", vmin=0, vmax=1)
    ax.set_title(f"{name}: {int(g.mask[0].sum())} of {g.num_nodes ** 2} pairs", fontsize=10)
    ax.set_xlabel("sender j")
    ax.set_ylabel("receiver i")
fig.suptitle("black: node i may hear node j (supports 0-9, queries 10-24)")
fig.tight_layout()
plt.show()

# %%
# The PyTorch Geometric view
# --------------------------
# :func:`~relgraph.graph.to_pyg` turns the batch into a :class:`torch_geometric.data.Batch`,
# one graph per episode, the edges following the mask (``edge_index[:, e] = (sender,
# receiver)``) with the kernel value as ``edge_attr``; ``knn`` keeps each node's most similar
# neighbours only. Any PyG layer runs on it, so a graph network over episodes is a PyG model.
from torch_geometric.nn import GCNConv  # noqa: E402

batch = to_pyg(graph, similarity=cos)
print(batch)
print("edges per graph:", batch.num_edges // batch.num_graphs,
      "| with knn=3:", to_pyg(graph, similarity=cos, knn=3).num_edges // batch.num_graphs)
print("first episode:", batch.to_data_list()[0])
conv = GCNConv(graph.x.shape[-1], 16)
out = conv(batch.x, batch.edge_index, batch.edge_attr.clamp_min(0))
print("GCNConv output", tuple(out.shape), "= b * n nodes x 16")

# %%
# The networkx view
# -----------------
# :func:`~relgraph.graph.to_networkx` gives one episode as an undirected
# :class:`networkx.Graph` with node roles, labels and edge weights, for graph algorithms and
# plots. (The inductive graph has no query-query edges.)
import networkx as nx  # noqa: E402

g = to_networkx(graph, index=0, similarity=cos, query_labels=episode.query_labels)
print(g)
print("node 0: ", g.nodes[0], "| node 10:", g.nodes[10])
print("edge (0, 1):", g.edges[0, 1], "| query-query edge (10, 11):", g.has_edge(10, 11))
print("heaviest edges:", sorted(g.edges(data="weight"), key=lambda e: -e[2])[:3])
print("mean weighted degree of supports vs queries:",
      round(sum(d for i, d in g.degree(weight="weight") if i < 10) / 10, 2),
      round(sum(d for i, d in g.degree(weight="weight") if i >= 10) / 15, 2))
print("connected:", nx.is_connected(g))

# %%
# A trained model's graph
# -----------------------
# Now a model: ProtoNet on a Conv4 backbone, trained for 150 episodes with a plain PyTorch
# loop (the engine's :func:`~relgraph.engine.train` adds validation, checkpoints and resume;
# see tutorial 1). ``model.loss`` embeds, builds the graph and relates in one call.
from relgraph.backbones import build_backbone  # noqa: E402
from relgraph.methods import build_method  # noqa: E402

train_set = build_dataset("glyphs", split="train")
model = build_method("protonet", build_backbone("conv4", in_channels=1, image_size=28))
optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
train_sampler = EpisodeSampler(train_set, n_way=10, k_shot=1, n_query=5, num_batches=150,
                               seed=0)
model.train()
for step, train_episode in enumerate(train_sampler.episodes(train_set)):
    loss, logits = model.loss(train_episode)
    optimiser.zero_grad()
    loss.backward()
    optimiser.step()
    if step % 50 == 0 or step == 149:
        acc = (logits.argmax(-1) == train_episode.query_labels).float().mean()
        print(f"step {step:3d}  loss {loss.item():.3f}  training accuracy {acc:.0%}")

# %%
# The three steps, one at a time: :meth:`~relgraph.methods.RelationalHead.graph` embeds the
# test episodes and builds their graphs (node features are now 64-d embeddings),
# :meth:`~relgraph.methods.RelationalHead.relate` gives the query logits.
model.eval()
with torch.no_grad():
    learned_graph = model.graph(episode)
    logits = model.relate(learned_graph)
print("node features", tuple(learned_graph.x.shape), "| logits", tuple(logits.shape))
for name, x in (("pixels", graph.x), ("trained embedding", learned_graph.x)):
    c = cosine_similarity(x)[0]
    same = (graph.labels[0, :10, None] == graph.labels[0, None, :10]) & ~torch.eye(10, dtype=bool)
    print(f"{name:18s} mean cosine of support pairs: same class {c[:10, :10][same].mean():.2f}"
          f", different classes {c[:10, :10][~same & ~torch.eye(10, dtype=bool)].mean():.2f}")

# %%
# The drawing: supports are discs in their class colour, queries squares filled with the
# predicted class and outlined with the true one (red ring: wrong). Each node's three most
# similar neighbours are joined, the width and opacity of a line growing with the cosine
# similarity, and the spring layout pulls similar nodes together. On raw pixels (left) the
# classes mix; in the trained embedding (right) they form clusters around their supports.
names = [test_set.class_names[int(c)].split("/")[-1].title()
         for c in episode.class_ids[0]]
fig, axes = plt.subplots(1, 2, figsize=(13, 5.6))
draw_episode_graph(graph, index=0, similarity=cosine_similarity(graph.x), ax=axes[0],
                   query_labels=episode.query_labels, title="raw pixels")
draw_episode_graph(learned_graph, index=0, similarity=cosine_similarity(learned_graph.x),
                   predictions=logits, query_labels=episode.query_labels,
                   class_names=names, ax=axes[1])
axes[0].get_legend().remove()
fig.tight_layout()
plt.show()

# %%
# What the full run gives
# -----------------------
# The heads that propagate over these graphs, trained for minutes on Omniglot, are compared in
# ``experiments/results/omniglot_small1.md`` (the GNN and edge-labeling GNN against ProtoNet,
# paired on the same 1,000 episodes) and their speed on large episodes in
# ``experiments/results/bench_relational.md``. The documentation's "Episode graphs" and
# "Transductive and semi-supervised" pages describe the graph in full: generated supports,
# unlabelled nodes and the message masks of each head.
