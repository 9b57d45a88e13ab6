"""Pictures of generated features: real and hallucinated examples of a few classes in 2-D."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["pca_2d", "plot_generated_features"]


def pca_2d(fit: Tensor, *others: Tensor) -> tuple[Tensor, ...]:
    """Project features onto the first two principal axes of ``fit`` (exact SVD).

    The axes' signs are fixed (largest coordinate positive), so the picture is reproducible.

    Args:
        fit: ``[N, d]`` features defining the axes (centred on their mean).
        others: more ``[M, d]`` features projected onto the same axes.

    Returns:
        ``fit`` and each of ``others`` in 2-D: ``[N, 2], [M, 2], ...``.
    """
    if fit.dim() != 2 or fit.shape[0] < 2:
        raise ValueError(f"expected at least 2 feature vectors [N, d] to fit the axes, got "
                         f"{tuple(fit.shape)}")
    x = fit.detach().double().cpu()
    mean = x.mean(0, keepdim=True)
    _, _, vh = torch.linalg.svd(x - mean, full_matrices=False)
    axes = vh[:2].T  # [d, 2]
    if axes.shape[1] < 2:
        axes = torch.cat([axes, axes.new_zeros(axes.shape[0], 2 - axes.shape[1])], dim=1)
    flip = torch.sign(axes.gather(0, axes.abs().argmax(0, keepdim=True)))
    axes = axes * torch.where(flip == 0, torch.ones_like(flip), flip)
    out = [((t.detach().double().cpu() - mean) @ axes).float() for t in (fit, *others)]
    return tuple(out)


def plot_generated_features(real: Tensor, real_labels: Tensor, generated: Tensor,
                            generated_labels: Tensor, support: Tensor | None = None,
                            support_labels: Tensor | None = None,
                            class_names: Sequence[str] | None = None, ax=None,  # noqa: ANN001
                            title: str | None = None):
    """Real and generated features of a few classes on the real features' two principal axes.

    Real examples are dots, the supports that seeded the generation (optional) large circles
    and the generated examples crosses, all coloured by class.

    Args:
        real: ``[N, d]`` real features (e.g. every image of the classes shown).
        real_labels: ``[N]`` their classes in ``0..C-1``.
        generated: ``[G, d]`` generated features.
        generated_labels: ``[G]`` their classes.
        support: ``[S, d]`` the supports generation started from.
        support_labels: ``[S]`` their classes.
        class_names: ``C`` names for the legend.
        ax: a matplotlib axis (default: a new figure).
        title: the axis title.

    Returns:
        The matplotlib figure (save it with :func:`relgraph.viz.save_figure`).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    if real.shape[0] != real_labels.shape[0] or generated.shape[0] != generated_labels.shape[0]:
        raise ValueError(f"expected one label per feature vector, got {real.shape[0]} real "
                         f"vectors with {real_labels.shape[0]} labels and {generated.shape[0]} "
                         f"generated with {generated_labels.shape[0]}")
    if (support is None) != (support_labels is None):
        raise ValueError("pass support and support_labels together (or neither)")
    extra = [support] if support is not None else []
    real2, gen2, *sup2 = pca_2d(real, generated, *extra)
    classes = sorted(set(real_labels.tolist()) | set(generated_labels.tolist()))
    if class_names is not None and len(class_names) < len(classes):
        raise ValueError(f"expected {len(classes)} class names, got {len(class_names)}")
    if ax is None:
        fig, ax = plt.subplots(figsize=(7.6, 4.8), layout="constrained")  # room for the legend
    else:
        fig = ax.figure
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    handles = []
    for pos, c in enumerate(classes):
        colour = cmap(pos % cmap.N)
        name = class_names[pos] if class_names is not None else f"class {c}"
        name = name if len(name) <= 30 else name[:12] + "\u2026" + name[-17:]
        r = real2[real_labels.cpu() == c]
        g = gen2[generated_labels.cpu() == c]
        ax.scatter(r[:, 0], r[:, 1], s=14, color=colour, alpha=0.55)
        ax.scatter(g[:, 0], g[:, 1], s=34, color=colour, marker="x", linewidths=1.4)
        if sup2:
            s = sup2[0][support_labels.cpu() == c]
            ax.scatter(s[:, 0], s[:, 1], s=140, facecolors="none", edgecolors=colour,
                       linewidths=2.0)
        handles.append(Line2D([], [], marker="s", ls="", color=colour, markersize=7,
                              label=name))
    handles.append(Line2D([], [], marker="o", ls="", color="0.5", alpha=0.55, markersize=4,
                          label="real"))
    handles.append(Line2D([], [], marker="x", ls="", color="0.3", markersize=6,
                          markeredgewidth=1.4, label="generated"))
    if sup2:
        handles.append(Line2D([], [], marker="o", ls="", markerfacecolor="none",
                              markeredgecolor="0.3", markeredgewidth=2.0, markersize=10,
                              label="seed support"))
    ax.set_xlabel("PC 1 (of the real features)")
    ax.set_ylabel("PC 2")
    ax.grid(alpha=0.3)
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0),
              frameon=False)
    if title is not None:
        ax.set_title(title, fontsize=10)
    return fig
