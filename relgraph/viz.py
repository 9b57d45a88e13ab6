"""Pictures: episodes (and, later, episode graphs and learning curves)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from torch import Tensor

from relgraph.data.episode import Episode
from relgraph.utils import atomic_path

__all__ = ["plot_episode", "save_figure"]


def save_figure(fig, path: str | os.PathLike[str], dpi: int = 120) -> Path:  # noqa: ANN001
    """Save a matplotlib figure atomically (temp file, then rename) and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=path.suffix.lstrip(".") or "png")
    plt.close(fig)
    return path


def _show(ax, image: Tensor) -> None:  # noqa: ANN001
    img = image.detach().float().cpu()
    if img.dim() == 3 and img.shape[0] == 1:
        ax.imshow(img[0].numpy(), cmap="gray_r", vmin=0, vmax=1)
    elif img.dim() == 3:
        ax.imshow(img.permute(1, 2, 0).clamp(0, 1).numpy())
    else:
        ax.imshow(img.reshape(1, -1).numpy(), aspect="auto")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_episode(
    episode: Episode,
    index: int = 0,
    class_names: Sequence[str] | None = None,
    max_queries: int = 5,
    predictions: Tensor | None = None,
    title: str | None = None,
):
    """Draw one episode of a batch: a row per class, supports then queries.

    Args:
        episode: a batch of image episodes (``support`` ``[b, n*k, c, h, w]``).
        index: which episode of the batch to draw.
        class_names: names of the dataset classes (indexed by ``episode.class_ids``).
        max_queries: queries drawn per class.
        predictions: optional ``[b, n*q]`` predicted labels; wrong ones are framed in red.
        title: figure title.

    Returns:
        The matplotlib figure (save it with :func:`save_figure`).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    n, k, q = episode.n_way, episode.k_shot, min(episode.n_query, max_queries)
    cols = k + q
    fig, axes = plt.subplots(n, cols, figsize=(1.1 * cols + 1.2, 1.1 * n + 0.4), squeeze=False)
    for label in range(n):
        for s in range(k):
            ax = axes[label, s]
            _show(ax, episode.support[index, label * k + s])
            for spine in ax.spines.values():
                spine.set_edgecolor("tab:blue")
                spine.set_linewidth(2)
        for j in range(q):
            ax = axes[label, k + j]
            qi = label * episode.n_query + j
            _show(ax, episode.query[index, qi])
            if predictions is not None:
                ok = int(predictions[index, qi]) == label
                for spine in ax.spines.values():
                    spine.set_edgecolor("tab:green" if ok else "tab:red")
                    spine.set_linewidth(2)
        cid = int(episode.class_ids[index, label])
        name = class_names[cid] if class_names is not None else str(cid)
        axes[label, 0].set_ylabel(name if len(name) <= 24 else name[:22] + "..", fontsize=7,
                                  rotation=0, ha="right", va="center")
    axes[0, 0].set_title("support", fontsize=8, loc="left")
    if q:
        axes[0, k].set_title("queries", fontsize=8, loc="left")
    fig.suptitle(title or f"{n}-way {k}-shot episode", fontsize=9)
    return fig
