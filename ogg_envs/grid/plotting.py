"""Drawing a feeder with a value per bus (prices, voltages) on its one-line layout."""

from __future__ import annotations

import numpy as np

# Where a label may go relative to its point: (dx, dy) in points, horizontal and vertical
# alignment; tried in this order, the first one that overlaps nothing drawn so far wins.
_OFFSETS = [(4, 4, "left", "bottom"), (4, -4, "left", "top"), (-4, 4, "right", "bottom"),
            (-4, -4, "right", "top"), (0, 7, "center", "bottom"), (0, -7, "center", "top"),
            (8, 0, "left", "center"), (-8, 0, "right", "center")]


def _label_artist(ax, items, markers, marker_pt: float, segments):
    """An artist that places text labels when the figure is drawn (so in the final layout):
    each ``(x, y, text, colour, must)`` label goes to the first of ``_OFFSETS`` where it
    overlaps no placed label, no marker (``markers``: data points, ``marker_pt`` across) and no
    line (``segments``: pairs of data points), else to the first that overlaps only lines; a
    label that fits nowhere is left out unless ``must``, which takes the first offset."""
    from matplotlib.artist import Artist
    from matplotlib.text import Text
    from matplotlib.transforms import Bbox, IdentityTransform

    class BusLabels(Artist):
        def __init__(self):
            super().__init__()
            self.set_zorder(6)
            self.texts = [Text(0, 0, text, fontsize=6, color=colour,
                               fontweight="bold" if must else "normal")
                          for _, _, text, colour, must in items]

        def draw(self, renderer):
            to_px = self.axes.transData.transform
            pt = renderer.points_to_pixels(1.0)
            r = marker_pt * pt / 2
            taken = [Bbox.from_extents(x - r, y - r, x + r, y + r)
                     for x, y in to_px(np.asarray(markers, dtype=float).reshape(-1, 2))]
            lines = [Bbox.from_extents(min(a[0], b[0]) - pt, min(a[1], b[1]) - pt,
                                       max(a[0], b[0]) + pt, max(a[1], b[1]) + pt)
                     for a, b in (to_px(np.asarray(seg, dtype=float)) for seg in segments)]
            for (x, y, _, _, must), text in zip(items, self.texts):
                text.set_figure(self.figure)
                text.set_transform(IdentityTransform())
                px, py = to_px((x, y))
                placed = None
                for avoid in (taken + lines, taken):
                    for offset in _OFFSETS:
                        box = put(text, px, py, offset, pt, renderer)
                        if not any(box.overlaps(b) for b in avoid):
                            placed = box
                            break
                    if placed is not None:
                        break
                if placed is None and must:
                    placed = put(text, px, py, _OFFSETS[0], pt, renderer)
                if placed is not None:
                    text.draw(renderer)
                    taken.append(placed)

    def put(text, px, py, offset, pt, renderer):
        dx, dy, ha, va = offset
        text.set_position((px + dx * pt, py + dy * pt))
        text.set_horizontalalignment(ha)
        text.set_verticalalignment(va)
        return text.get_window_extent(renderer)

    artist = BusLabels()
    ax.add_artist(artist)
    return artist


def draw_feeder(grid_or_topology, values: dict[str, float] | None = None, *, ax=None,
                cmap: str = "viridis", label: str = "", title: str = "",
                vmin: float | None = None, vmax: float | None = None, annotate: bool = False,
                bus_labels: bool = False, highlight_branches: list[str] | None = None):
    """Draw the radial tree at its bus coordinates, buses coloured by ``values``.

    Buses without a value are drawn small and grey. ``highlight_branches`` (branch names of the
    topology, e.g. congested lines) are drawn thick and red over the buses, with their names.
    ``annotate`` labels every bus with its name and value, ``bus_labels`` with its name; labels
    are placed where they overlap nothing when the figure is drawn, and a bus label that fits
    nowhere is left out. Markers shrink where buses are close. Returns the matplotlib axes.
    """
    import matplotlib.pyplot as plt

    topo = getattr(grid_or_topology, "topology", grid_or_topology)
    coords = topo.coords
    if not coords:
        import networkx as nx

        coords = nx.kamada_kawai_layout(topo.tree.to_undirected())
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 6))
    buses = [b for b in topo.buses if b in coords]
    xy_all = np.array([coords[b] for b in buses], dtype=float).reshape(-1, 2)
    marker_pt = _marker_diameter(ax, xy_all)
    hot = set(highlight_branches or [])
    labels, segments = [], []
    for br in topo.branches:
        if br.parent in coords and br.child in coords:
            (x1, y1), (x2, y2) = coords[br.parent], coords[br.child]
            segments.append(((x1, y1), (x2, y2)))
            if br.name in hot:  # over the bus markers, so a short branch stays visible
                ax.plot([x1, x2], [y1, y2], color="crimson", lw=3.5, zorder=5,
                        solid_capstyle="butt")
                labels.append(((x1 + x2) / 2, (y1 + y2) / 2, br.name, "crimson", True))
            else:
                ax.plot([x1, x2], [y1, y2], color="0.55", lw=1.2, zorder=1)
    values = {k.lower(): v for k, v in (values or {}).items()}
    plain = [b for b in buses if b not in values]
    if plain:
        xy = np.array([coords[b] for b in plain])
        ax.scatter(xy[:, 0], xy[:, 1], s=min(12.0, marker_pt ** 2), c="0.6", zorder=3)
    shown = [b for b in buses if b in values]
    if shown:
        xy = np.array([coords[b] for b in shown])
        sc = ax.scatter(xy[:, 0], xy[:, 1], s=marker_pt ** 2, c=[values[b] for b in shown],
                        cmap=cmap, vmin=vmin, vmax=vmax, edgecolors="k", linewidths=0.5,
                        zorder=4)
        ax.figure.colorbar(sc, ax=ax, label=label, shrink=0.8)
    if annotate or bus_labels:
        for b in buses:
            text = f"{b}\n{values[b]:.2f}" if annotate and b in values else b
            labels.append((*coords[b], text, "0.15", False))
    if labels:
        _label_artist(ax, labels, xy_all, marker_pt, segments)
    ax.set_title(title)
    ax.set_aspect("equal", adjustable="datalim")
    ax.margins(0.06)
    ax.axis("off")
    return ax


def _marker_diameter(ax, xy: np.ndarray, largest: float = 8.4) -> float:
    """A bus marker's diameter in points: ``largest``, or less where the two closest buses
    would overlap (estimated from the axes' size now; 70 % of their distance)."""
    if len(xy) < 2:
        return largest
    d = np.sqrt(((xy[:, None, :] - xy[None, :, :]) ** 2).sum(-1))
    closest = d[d > 0].min() if (d > 0).any() else 1.0
    span = np.ptp(xy, axis=0)
    box = ax.get_position()
    width_pt = box.width * ax.figure.get_figwidth() * 72
    height_pt = box.height * ax.figure.get_figheight() * 72
    scale = min(width_pt / max(span[0], 1e-9), height_pt / max(span[1], 1e-9))
    return float(np.clip(0.7 * closest * scale, 3.0, largest))
