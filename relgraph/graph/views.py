"""Views of episode graphs: PyTorch Geometric batches, networkx graphs and drawings.

Edges follow the message direction: ``mask[b, i, j]`` (node ``i`` receives from node ``j``)
becomes the PyG edge ``j -> i`` (``edge_index[:, e] = (j, i)``, source then target).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from relgraph.graph.episode_graph import EpisodeGraph

if TYPE_CHECKING:
    import networkx as nx
    from torch_geometric.data import Batch

__all__ = ["knn_mask", "to_pyg", "to_networkx", "draw_episode_graph"]


def knn_mask(mask: Tensor, similarity: Tensor, k: int) -> Tensor:
    """Keep, for every node, its ``k`` most similar allowed neighbours (and its self-loop).

    Args:
        mask: ``[b, n, n]`` bool, the allowed edges (row ``i`` the nodes ``i`` receives from).
        similarity: ``[b, n, n]``, higher is closer.
        k: neighbours kept per node (fewer where fewer are allowed), self excluded.

    Shapes:
        ``[b, n, n], [b, n, n] -> [b, n, n]`` bool, a subset of ``mask``.
    """
    if k < 1:
        raise ValueError(f"expected knn >= 1, got {k}")
    if similarity.shape != mask.shape:
        raise ValueError(f"expected similarity of shape {tuple(mask.shape)}, got "
                         f"{tuple(similarity.shape)}")
    n = mask.shape[-1]
    eye = torch.eye(n, dtype=torch.bool, device=mask.device)
    others = mask & ~eye
    k = min(k, max(n - 1, 1))
    scores = similarity.detach().float().masked_fill(~others, float("-inf"))
    top = scores.topk(k, dim=-1).indices
    keep = torch.zeros_like(mask).scatter_(-1, top, True) & others
    return keep | (mask & eye)


def _check_similarity(graph: EpisodeGraph, similarity: Tensor | None) -> None:
    if similarity is not None and similarity.shape != graph.mask.shape:
        raise ValueError(f"expected similarity of shape {tuple(graph.mask.shape)} [b, n, n], "
                         f"got {tuple(similarity.shape)}")


def to_pyg(graph: EpisodeGraph, similarity: Tensor | None = None,
           knn: int | None = None) -> Batch:
    """The episode graphs as a :class:`torch_geometric.data.Batch`, one graph per episode.

    Args:
        graph: the episode graphs.
        similarity: ``[b, n, n]`` edge weights, stored as ``edge_attr`` (``[E]``).
        knn: keep, for every node, only its ``knn`` most similar neighbours among the allowed
            edges (self-loops in the mask are kept); needs ``similarity``. Default: every
            allowed edge (fully connected, minus the edges the mask forbids).

    Each graph has ``x [n, d]``, ``y [n]`` (the labels the graph carries: supports' classes,
    -1 for queries and unlabelled nodes), ``node_labels [n, n_way]`` (one-hot for supports,
    zero elsewhere), ``is_query [n]``, ``is_generated [n]`` (generated supports),
    ``edge_index [2, E]`` (``source -> target``: node ``target`` receives from ``source``) and,
    with ``similarity``, ``edge_attr [E]``. Built without a loop over episodes: the edges of all
    graphs come from one :func:`torch_geometric.utils.dense_to_sparse` of the batched mask, and
    ``batch.to_data_list()`` gives the episodes back.

    Shapes:
        ``x [b, n, d]``, ``mask [b, n, n]`` -> a batch of ``b`` graphs, ``b * n`` nodes.
    """
    from torch_geometric.data import Batch
    from torch_geometric.utils import dense_to_sparse

    _check_similarity(graph, similarity)
    mask = graph.mask
    if knn is not None:
        if similarity is None:
            raise ValueError("knn needs a similarity to choose the nearest neighbours")
        mask = knn_mask(mask, similarity, knn)
    b, n = mask.shape[:2]
    edge_index, _ = dense_to_sparse(mask.to(torch.uint8))  # rows: (b*n + target, b*n + source)
    target, source = edge_index
    device = mask.device
    counts = mask.reshape(b, -1).sum(-1)
    batch = Batch(x=graph.x.reshape(b * n, -1), y=graph.labels.reshape(-1),
                  node_labels=graph.node_labels("zero").reshape(b * n, -1),
                  is_query=graph.is_query.reshape(-1),
                  is_generated=graph.is_generated.reshape(-1),
                  edge_index=torch.stack([source, target]),
                  batch=torch.arange(b, device=device).repeat_interleave(n),
                  ptr=torch.arange(b + 1, device=device) * n)
    node_ptr = torch.arange(b + 1, device=device) * n
    edge_ptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
    slices = {"x": node_ptr, "y": node_ptr, "node_labels": node_ptr, "is_query": node_ptr,
              "is_generated": node_ptr, "edge_index": edge_ptr}
    inc = {key: torch.zeros(b, dtype=torch.long, device=device) for key in slices}
    inc["edge_index"] = node_ptr[:-1]
    if similarity is not None:
        e_of = target // n  # the episode of every edge
        batch.edge_attr = similarity[e_of, target % n, source % n]
        slices["edge_attr"] = edge_ptr
        inc["edge_attr"] = inc["x"]
    batch._num_graphs = b
    batch._slice_dict = {k: v.cpu() for k, v in slices.items()}
    batch._inc_dict = {k: v.cpu() for k, v in inc.items()}
    return batch


def _predicted_labels(predictions: Tensor | None, index: int, q: int) -> list[int] | None:
    if predictions is None:
        return None
    p = predictions[index].detach()
    if p.dim() == 2:  # logits [q, n_way]
        p = p.argmax(-1)
    if p.shape != (q,):
        raise ValueError(f"expected predictions [b, {q}] (labels) or [b, {q}, n_way] (logits), "
                         f"got {tuple(predictions.shape)}")
    return [int(v) for v in p]


def _true_labels(graph: EpisodeGraph, index: int, query_labels: Tensor | None) -> list[int]:
    """Node labels of episode ``index``: the graph's (-1 for queries), with the queries'
    true labels filled in from ``query_labels [b, q]`` when given."""
    labels = graph.labels[index].clone()
    if query_labels is not None:
        if tuple(query_labels.shape) != (graph.x.shape[0], graph.n_query):
            raise ValueError(f"expected query_labels of shape "
                             f"{(graph.x.shape[0], graph.n_query)}, got "
                             f"{tuple(query_labels.shape)}")
        labels[graph.query_start:] = query_labels[index].to(labels.device)
    return [int(v) for v in labels.tolist()]


def to_networkx(graph: EpisodeGraph, index: int = 0, similarity: Tensor | None = None,
                predictions: Tensor | None = None,
                query_labels: Tensor | None = None) -> nx.Graph:
    """Episode ``index`` as an undirected :class:`networkx.Graph`.

    Nodes ``0..n-1`` (supports first) carry ``role`` (``"support"``, ``"query"`` or
    ``"unlabelled"``), ``generated`` (a generated support), ``label`` (the class in
    ``0..n_way-1``; -1 for queries unless ``query_labels`` is given, the graph has none) and
    ``prediction`` (queries, when ``predictions`` is
    given; ``None`` otherwise). There is an edge between ``i != j`` when either may message the
    other, with ``weight`` the similarity (1.0 without one).

    Args:
        graph: the episode graphs.
        index: which episode of the batch.
        similarity: ``[b, n, n]`` edge weights.
        predictions: ``[b, q]`` predicted labels or ``[b, q, n_way]`` logits of the queries.
        query_labels: ``[b, q]`` the queries' true labels (for pictures; the graph has none).
    """
    import networkx as nx

    _check_similarity(graph, similarity)
    s, q, n = graph.n_support, graph.n_query, graph.num_nodes
    start = graph.query_start
    preds = _predicted_labels(predictions, index, q)
    labels = _true_labels(graph, index, query_labels)
    generated = graph.is_generated[index].tolist()
    g = nx.Graph()
    for i in range(n):
        query = i >= start
        role = "support" if i < s else "query" if query else "unlabelled"
        g.add_node(i, role=role, generated=bool(generated[i]), label=labels[i],
                   prediction=preds[i - start] if (query and preds is not None) else None)
    mask = graph.mask[index]
    edges = torch.triu(mask | mask.T, diagonal=1).nonzero().tolist()
    sim = similarity[index].detach().float().cpu() if similarity is not None else None
    for i, j in edges:
        g.add_edge(i, j, weight=float(sim[i, j]) if sim is not None else 1.0)
    return g


def draw_episode_graph(graph: EpisodeGraph, index: int = 0, similarity: Tensor | None = None,
                       predictions: Tensor | None = None,
                       class_names: Sequence[str] | None = None, ax=None,  # noqa: ANN001
                       top_edges: int = 3, layout: str = "spring", seed: int = 0,
                       title: str | None = None, query_labels: Tensor | None = None):
    """Draw episode ``index``: supports coloured by class, queries by prediction.

    Supports are filled circles in their class colour (generated supports smaller, with a
    dashed outline). Queries are squares with a white face
    and their true class colour as outline, or, with ``predictions``, filled with the predicted
    class colour, a red ring marking the wrong ones. Each node's ``top_edges`` most similar
    neighbours are joined by lines whose width and opacity grow with the similarity. The layout
    is seeded, so the same graph always gives the same picture.

    Args:
        graph: the episode graphs.
        index: which episode of the batch.
        similarity: ``[b, n, n]``; default: cosine similarity of the node features.
        predictions: ``[b, q]`` predicted labels or ``[b, q, n_way]`` logits of the queries.
        class_names: names of the ``n_way`` classes of this episode (legend).
        ax: a matplotlib axis to draw on (default: a new figure).
        top_edges: edges drawn per node (the strongest ones).
        layout: ``"spring"`` (similar nodes close together) or ``"circular"``.
        seed: seed of the spring layout.
        title: axis title (default: the episode's shape and, with predictions and
            ``query_labels``, accuracy).
        query_labels: ``[b, q]`` the queries' true labels (the outline colour; the graph does
            not carry them). Without them query outlines are grey.

    Returns:
        The matplotlib figure (save it with :func:`relgraph.viz.save_figure`).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import networkx as nx
    from matplotlib.lines import Line2D

    from relgraph.graph.kernels import cosine_similarity

    if layout not in ("spring", "circular"):
        raise ValueError(f"layout must be 'spring' or 'circular', got {layout!r}")
    if similarity is None:
        similarity = cosine_similarity(graph.x.detach().float())
    g = to_networkx(graph, index, similarity, predictions, query_labels)
    s, n, n_way = graph.n_support, graph.num_nodes, graph.n_way
    q = graph.n_query
    if class_names is not None and len(class_names) != n_way:
        raise ValueError(f"expected {n_way} class names, got {len(class_names)}")

    # the strongest edges of every node, for the layout and the drawing
    mask = graph.mask[index]
    sim = similarity[index].detach().float().cpu()
    keep = knn_mask(mask.unsqueeze(0).cpu(), sim.unsqueeze(0), top_edges)[0]
    keep = torch.triu(keep | keep.T, diagonal=1)
    shown = [(i, j) for i, j in keep.nonzero().tolist()]
    weights = torch.tensor([float(sim[i, j]) for i, j in shown]) if shown else torch.zeros(0)
    lo, hi = (float(weights.min()), float(weights.max())) if len(shown) else (0.0, 1.0)
    strength = (weights - lo) / (hi - lo) if hi > lo else torch.ones_like(weights)

    if layout == "spring":
        skeleton = nx.Graph()
        skeleton.add_nodes_from(range(n))
        skeleton.add_weighted_edges_from(
            (i, j, 0.2 + float(w)) for (i, j), w in zip(shown, strength, strict=True))
        pos = nx.spring_layout(skeleton, seed=seed, k=1.6 / n ** 0.5, iterations=200)
    else:
        pos = nx.circular_layout(range(n))

    if ax is None:
        fig, ax = plt.subplots(figsize=(6.4, 5.6))
    else:
        fig = ax.figure
    cmap = plt.get_cmap("tab10" if n_way <= 10 else "tab20")
    colour = [cmap(k % cmap.N) for k in range(n_way)]

    for (i, j), w in zip(shown, strength, strict=True):
        (x0, y0), (x1, y1) = pos[i], pos[j]
        ax.plot([x0, x1], [y0, y1], color="0.35", lw=0.4 + 2.2 * float(w),
                alpha=0.12 + 0.6 * float(w), zorder=1, solid_capstyle="round")

    labels = _true_labels(graph, index, query_labels)
    fake = graph.is_generated[index].tolist()
    xy = torch.stack([torch.as_tensor(pos[i], dtype=torch.float32) for i in range(n)])
    real = [i for i in range(s) if not fake[i]]
    made = [i for i in range(s) if fake[i]]
    ax.scatter(xy[real, 0], xy[real, 1], s=230, c=[colour[labels[i]] for i in real],
               edgecolors="black", linewidths=1.2, zorder=3)
    if made:
        ax.scatter(xy[made, 0], xy[made, 1], s=110, c=[colour[labels[i]] for i in made],
                   edgecolors="black", linewidths=1.0, linestyles="--", zorder=3)
    start = graph.query_start
    queries = range(start, n)
    preds = [g.nodes[i]["prediction"] for i in queries]
    outline = [colour[labels[i]] if labels[i] >= 0 else "0.5" for i in queries]
    if start > s:  # unlabelled nodes
        ax.scatter(xy[s:start, 0], xy[s:start, 1], s=90, c="0.75", edgecolors="0.3",
                   linewidths=1.0, zorder=3)
    if predictions is None:
        ax.scatter(xy[start:, 0], xy[start:, 1], s=110, marker="s", c="white",
                   edgecolors=outline, linewidths=2.0, zorder=3)
    else:
        wrong = [i for i, p in zip(queries, preds, strict=True) if labels[i] >= 0
                 and p != labels[i]]
        if wrong:
            ax.scatter(xy[wrong, 0], xy[wrong, 1], s=330, facecolors="none",
                       edgecolors="red", linewidths=2.0, zorder=2)
        ax.scatter(xy[start:, 0], xy[start:, 1], s=110, marker="s",
                   c=[colour[p] for p in preds], edgecolors=outline, linewidths=2.0, zorder=3)

    names = [class_names[k] if class_names is not None else f"class {k}" for k in range(n_way)]
    names = [m if len(m) <= 30 else m[:12] + "\u2026" + m[-17:] for m in names]
    handles = [Line2D([], [], marker="o", ls="", color=colour[k], markeredgecolor="black",
                      markersize=9, label=names[k]) for k in range(n_way)]
    handles.append(Line2D([], [], marker="o", ls="", color="0.6", markeredgecolor="black",
                          markersize=9, label="support"))
    if made:
        handles.append(Line2D([], [], marker="o", ls="", color="0.6", markeredgecolor="black",
                              markersize=6, label="generated support"))
    face = "0.6" if predictions is not None else "white"
    handles.append(Line2D([], [], marker="s", ls="", color=face, markeredgecolor="0.3",
                          markeredgewidth=2, markersize=8,
                          label="query (fill: predicted, edge: true)" if predictions is not None
                          else "query (edge: true class)"))
    if predictions is not None:
        handles.append(Line2D([], [], marker="o", ls="", markerfacecolor="none",
                              markeredgecolor="red", markeredgewidth=2, markersize=13,
                              label="wrong"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8,
              frameon=False)
    ax.text(1.02, 0.0, f"edges: each node's {top_edges} most similar\nneighbours; width and "
            "opacity\ngrow with the similarity", transform=ax.transAxes, fontsize=7,
            color="0.4", va="bottom")
    if title is None:
        k_shot = len(real) // n_way if n_way else 0
        title = f"{n_way}-way {k_shot}-shot episode, {q} queries"
        if made:
            title += f", {len(made)} generated supports"
        if start > s:
            title += f", {start - s} unlabelled"
        if predictions is not None and query_labels is not None:
            correct = sum(int(p == labels[i]) for i, p in zip(queries, preds, strict=True))
            title += f": {correct}/{q} correct"
    ax.set_title(title, fontsize=10)
    ax.set_axis_off()
    ax.set_aspect("equal")
    ax.margins(0.08)
    return fig
