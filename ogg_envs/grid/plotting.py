"""Drawing a feeder with a value per bus (prices, voltages) on its one-line layout."""

from __future__ import annotations

import numpy as np


def draw_feeder(grid_or_topology, values: dict[str, float] | None = None, *, ax=None,
                cmap: str = "viridis", label: str = "", title: str = "",
                vmin: float | None = None, vmax: float | None = None, annotate: bool = False,
                highlight_branches: list[str] | None = None):
    """Draw the radial tree at its bus coordinates, buses coloured by ``values``.

    Buses without a value are drawn small and grey. ``highlight_branches`` (branch names of the
    topology, e.g. congested lines) are drawn thick and red. Returns the matplotlib axes.
    """
    import matplotlib.pyplot as plt

    topo = getattr(grid_or_topology, "topology", grid_or_topology)
    coords = topo.coords
    if not coords:
        import networkx as nx

        coords = nx.kamada_kawai_layout(topo.tree.to_undirected())
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 6))
    hot = set(highlight_branches or [])
    for br in topo.branches:
        if br.parent in coords and br.child in coords:
            (x1, y1), (x2, y2) = coords[br.parent], coords[br.child]
            style = dict(color="crimson", lw=3.5, zorder=2) if br.name in hot else \
                dict(color="0.55", lw=1.2, zorder=1)
            ax.plot([x1, x2], [y1, y2], **style)
    values = {k.lower(): v for k, v in (values or {}).items()}
    plain = [b for b in topo.buses if b in coords and b not in values]
    if plain:
        xy = np.array([coords[b] for b in plain])
        ax.scatter(xy[:, 0], xy[:, 1], s=12, c="0.6", zorder=3)
    shown = [b for b in topo.buses if b in coords and b in values]
    if shown:
        xy = np.array([coords[b] for b in shown])
        sc = ax.scatter(xy[:, 0], xy[:, 1], s=70, c=[values[b] for b in shown], cmap=cmap,
                        vmin=vmin, vmax=vmax, edgecolors="k", linewidths=0.5, zorder=4)
        ax.figure.colorbar(sc, ax=ax, label=label, shrink=0.8)
        if annotate:
            for b, (x, y) in zip(shown, xy):
                ax.annotate(f"{b}\n{values[b]:.2f}", (x, y), fontsize=6, xytext=(3, 3),
                            textcoords="offset points")
    ax.set_title(title)
    ax.set_aspect("equal", adjustable="datalim")
    ax.axis("off")
    return ax
