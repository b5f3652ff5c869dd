"""Drawing a feeder with a value per bus (prices, voltages) on its one-line layout."""

from __future__ import annotations

import numpy as np

# Where a label may go relative to its point: (dx, dy) in marker radii (plus a point),
# horizontal and vertical alignment; tried in this order, the first that overlaps nothing wins.
_OFFSETS = [(1, 1, "left", "bottom"), (1, -1, "left", "top"), (-1, 1, "right", "bottom"),
            (-1, -1, "right", "top"), (0, 1.2, "center", "bottom"),
            (0, -1.2, "center", "top"), (1.2, 0, "left", "center"), (-1.2, 0, "right", "center")]


def _add_labels(ax, items, markers, marker_pt: float, segments) -> None:
    """Add an artist that places the ``(x, y, text)`` labels when the figure is drawn (so in
    its final layout): each goes to the first of ``_OFFSETS`` where it overlaps no placed
    label, no marker (``markers``: data points, ``marker_pt`` across) and no line
    (``segments``: pairs of data points), else to the first that overlaps only lines; a label
    that fits nowhere is left out."""
    from matplotlib.artist import Artist
    from matplotlib.text import Text
    from matplotlib.transforms import Bbox, IdentityTransform

    def put(text, px, py, offset, unit, renderer):
        dx, dy, ha, va = offset
        text.set_position((px + dx * unit, py + dy * unit))
        text.set_horizontalalignment(ha)
        text.set_verticalalignment(va)
        return text.get_window_extent(renderer)

    def draw(renderer):
        to_px = ax.transData.transform
        pt = renderer.points_to_pixels(1.0)
        r = marker_pt * pt / 2
        taken = [Bbox.from_extents(x - r, y - r, x + r, y + r)
                 for x, y in to_px(np.asarray(markers, dtype=float).reshape(-1, 2))]
        lines = [Bbox.from_extents(min(a[0], b[0]) - pt, min(a[1], b[1]) - pt,
                                   max(a[0], b[0]) + pt, max(a[1], b[1]) + pt)
                 for a, b in (to_px(np.asarray(seg, dtype=float)) for seg in segments)]
        for x, y, label in items:
            text = Text(0, 0, label, fontsize=6, color="0.15", figure=ax.figure,
                        transform=IdentityTransform())
            px, py = to_px((x, y))
            for avoid in (taken + lines, taken):
                boxes = (put(text, px, py, offset, r + pt, renderer) for offset in _OFFSETS)
                box = next((b for b in boxes if not any(b.overlaps(o) for o in avoid)), None)
                if box is not None:
                    text.draw(renderer)
                    taken.append(box)
                    break

    artist = Artist()
    artist.draw = draw  # an artist drawn by this function
    artist.set_zorder(6)
    artist.set_in_layout(False)
    ax.add_artist(artist)


def draw_feeder(grid_or_topology, values: dict[str, float] | None = None, *, ax=None,
                cmap: str = "viridis", label: str = "", title: str = "",
                vmin: float | None = None, vmax: float | None = None, annotate: bool = False,
                bus_labels: bool = False, highlight_branches: list[str] | None = None):
    """Draw the radial tree at its bus coordinates, buses coloured by ``values``.

    Buses without a value are drawn small and grey. ``highlight_branches`` (branch names of the
    topology, e.g. congested lines) are drawn thick and red over the buses (name them in the
    title).
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
    segments = []
    for br in topo.branches:
        if br.parent in coords and br.child in coords:
            (x1, y1), (x2, y2) = coords[br.parent], coords[br.child]
            segments.append(((x1, y1), (x2, y2)))
            if br.name in hot:  # over the bus markers, so a short branch stays visible
                ax.plot([x1, x2], [y1, y2], color="crimson", lw=3.5, zorder=5,
                        solid_capstyle="butt")
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
        labels = [(*coords[b], f"{b}\n{values[b]:.2f}" if annotate and b in values else b)
                  for b in buses]
        _add_labels(ax, labels, xy_all, marker_pt, segments)
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
