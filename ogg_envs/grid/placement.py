"""Default placement of market participants on a radial feeder.

When a scenario names no buses, OpenGridGym places the market participants on any feeder by
one documented rule, computed from the feeder's tree and its nominal load only:

* **Consumers**: one per bus with nominal load (> 0 kW), in the topology's order
  (breadth-first from the substation).
* **Substation / supplier of last resort**: the root of the tree (the source bus).
* **Distributed generators**: spread evenly along the *main path*. The main path starts at
  the substation and, at every bus, continues to the child whose downstream part of the
  feeder carries the most nominal load (ties go to the child that comes first in the topology
  order), until it reaches a leaf. With ``m`` buses on the main path after the substation,
  generator ``k`` of ``n`` (k = 1..n) sits ``ceil(k * m / n)`` branches from the substation, so
  the last one is at the end of the main path and no two share a bus. If the main path is
  shorter than ``n``, the remaining generators go to the other buses, most downstream load
  first; a feeder with fewer than ``n`` buses besides the substation is an error.
* **Line limits of the market**: the branches' thermal limits (ampacity x voltage x phases for
  lines, kVA rating for transformers); a branch whose rating is unknown has no limit.

The functions here are pure: they take a ``Topology`` and the nominal load per bus
(``OpenDSSGrid.bus_load_kw``, an array in ``topology.buses`` order) and never touch OpenDSS.
The examples below use this small tree (``s`` is the substation)::

    s -- b1 -- b2        b2: 100 kW
          \\
           b3 -- b4     b3: 40 kW, b4: 30 kW

>>> from ogg_envs.grid import Topology
>>> topo = Topology.from_elements("s", [
...     ("line.a", "s", "b1", 500.0), ("line.b", "b1", "b2", 300.0),
...     ("line.c", "b1", "b3", float("inf")), ("line.d", "b3", "b4", 80.0)])
>>> topo.buses
['s', 'b1', 'b2', 'b3', 'b4']
>>> load = [0.0, 0.0, 100.0, 40.0, 30.0]
"""

from __future__ import annotations

import math

import numpy as np

from .topology import Topology

__all__ = ["load_buses", "main_path", "spread_along_main_path", "source_bus",
           "default_limits_kw", "downstream_load_kw"]


def _loads(topology: Topology, bus_load_kw) -> np.ndarray:
    load = np.asarray(bus_load_kw, dtype=float)
    if load.shape != (len(topology.buses),):
        raise ValueError(f"bus_load_kw: expected {len(topology.buses)} values (one per topology "
                         f"bus, in topology order), got shape {load.shape}")
    if not np.isfinite(load).all():
        j = int(np.flatnonzero(~np.isfinite(load))[0])
        raise ValueError(f"bus {topology.buses[j]}: nominal load must be finite")
    return load


def _children(topology: Topology) -> dict[str, list[str]]:
    kids: dict[str, list[str]] = {b: [] for b in topology.buses}
    for br in topology.branches:
        kids[br.parent].append(br.child)
    for b in kids:
        kids[b].sort(key=topology.bus_index.__getitem__)
    return kids


def downstream_load_kw(topology: Topology, bus_load_kw) -> np.ndarray:
    """Nominal load of each bus plus everything downstream of it (topology order).

    >>> downstream_load_kw(topo, load).tolist()
    [170.0, 170.0, 100.0, 70.0, 30.0]
    """
    load = _loads(topology, bus_load_kw)
    sub = load.copy()
    idx = topology.bus_index
    for br in sorted(topology.branches, key=lambda b: idx[b.child], reverse=True):
        sub[idx[br.parent]] += sub[idx[br.child]]
    return sub


def load_buses(topology: Topology, bus_load_kw) -> list[str]:
    """Buses with nominal load > 0, in topology order: one consumer goes to each.

    >>> load_buses(topo, load)
    ['b2', 'b3', 'b4']
    """
    load = _loads(topology, bus_load_kw)
    return [b for b, kw in zip(topology.buses, load) if kw > 0]


def main_path(topology: Topology, bus_load_kw) -> list[str]:
    """From the root to a leaf, always into the child with the most downstream load.

    Ties go to the child first in topology order.

    >>> main_path(topo, load)
    ['s', 'b1', 'b2']
    """
    sub = downstream_load_kw(topology, bus_load_kw)
    kids = _children(topology)
    idx = topology.bus_index
    path = [topology.root]
    while kids[path[-1]]:
        # max() keeps the first of equal keys, and the children are in topology order
        path.append(max(kids[path[-1]], key=lambda c: sub[idx[c]]))
    return path


def spread_along_main_path(topology: Topology, bus_load_kw, n: int) -> list[str]:
    """``n`` distinct buses evenly spaced along the main path, the root excluded.

    With ``m`` non-root buses on the main path, the k-th bus (k = 1..n) is the one
    ``ceil(k * m / n)`` branches from the root. If ``m < n`` the rest are the other non-root
    buses, most downstream load first (ties in topology order). Raises ``ValueError`` if the
    feeder has fewer than ``n`` non-root buses.

    >>> spread_along_main_path(topo, load, 1)
    ['b2']
    >>> spread_along_main_path(topo, load, 2)
    ['b1', 'b2']
    >>> spread_along_main_path(topo, load, 4)
    ['b1', 'b2', 'b3', 'b4']
    """
    n = int(n)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    available = len(topology.buses) - 1
    if n > available:
        raise ValueError(f"cannot place {n} participants on distinct buses: the feeder has "
                         f"only {available} buses besides the source bus {topology.root!r}")
    path = main_path(topology, bus_load_kw)[1:]
    m = len(path)
    if m >= n:
        return [path[-(-k * m // n) - 1] for k in range(1, n + 1)]
    sub = downstream_load_kw(topology, bus_load_kw)
    on_path = set(path)
    rest = [b for b in topology.buses[1:] if b not in on_path]
    rest.sort(key=lambda b: (-sub[topology.bus_index[b]], topology.bus_index[b]))
    return path + rest[:n - m]


def source_bus(topology: Topology) -> str:
    """The root of the tree: where the substation (supplier of last resort) sits.

    >>> source_bus(topo)
    's'
    """
    return topology.root


def default_limits_kw(topology: Topology) -> dict[str, float]:
    """The market's default line limits: the branches' thermal limits, by branch name.

    Branches with an unknown rating (``inf``) have no limit and are left out.

    >>> default_limits_kw(topo)
    {'s-b1': 500.0, 'b1-b2': 300.0, 'b3-b4': 80.0}
    """
    return {br.name: float(lim) for br, lim in zip(topology.branches, topology.limits_kw)
            if math.isfinite(lim)}
