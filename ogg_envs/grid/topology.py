"""The simplified grid model the markets use: a radial tree and its flow sensitivities.

On a radial feeder with the slack at the root, the active power on a branch is (losses
ignored) minus the net injection of everything downstream of it. With ``p`` the vector of net
bus injections (generation minus consumption, kW) this is the paper's eq. 1 / eq. 17:

    f = H @ p,   H[e, b] = -1 if bus b is downstream of branch e, else 0,

with ``f[e] > 0`` meaning power flowing away from the source through branch ``e``. Parallel
elements between the same two buses (a bank of single-phase regulators) form one branch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import networkx as nx
import numpy as np

__all__ = ["Topology", "Branch"]


@dataclass(frozen=True)
class Branch:
    name: str  # "parent-child"
    parent: str
    child: str
    elements: tuple[str, ...]  # OpenDSS elements, e.g. ("line.l1",)
    limit_kw: float  # thermal limit, from ampacity (lines) or kVA rating (transformers)


class Topology:
    """Radial tree of a feeder: buses, branches, downstream sets, ``H`` and limits.

    Build it from an ``OpenDSSGrid`` (``Topology.from_grid``) or directly from a list of
    branches (``Topology(root, branches)``) to state a market on a hand-made network.
    """

    def __init__(self, root: str, branches: list[Branch],
                 coords: dict[str, tuple[float, float]] | None = None):
        self.root = root
        self.branches = list(branches)
        self.tree = nx.DiGraph()
        self.tree.add_node(root)
        for br in self.branches:
            self.tree.add_edge(br.parent, br.child, branch=br.name)
        if not nx.is_arborescence(self.tree):
            raise ValueError("the network is not radial (a tree rooted at the source)")
        self.buses: list[str] = [root] + [n for n in nx.bfs_tree(self.tree, root) if n != root]
        self.bus_index = {b: i for i, b in enumerate(self.buses)}
        self.branch_index = {br.name: i for i, br in enumerate(self.branches)}
        self.parent_branch: dict[str, str] = {br.child: br.name for br in self.branches}
        self.downstream: dict[str, frozenset[str]] = {
            br.name: frozenset(nx.descendants(self.tree, br.child) | {br.child})
            for br in self.branches
        }
        H = np.zeros((len(self.branches), len(self.buses)))
        for e, br in enumerate(self.branches):
            for b in self.downstream[br.name]:
                H[e, self.bus_index[b]] = -1.0
        self.H = H
        self.limits_kw = np.array([br.limit_kw for br in self.branches])
        self.coords = dict(coords or {})

    @classmethod
    def from_grid(cls, grid) -> Topology:
        dss = grid.dss
        groups: dict[tuple[str, str], list[str]] = {}
        limits: dict[tuple[str, str], float] = {}
        graph = nx.Graph()
        ends = {}
        for name in grid.branch_names:
            dss.Circuit.SetActiveElement(name)
            b1, b2 = (b.split(".")[0].lower() for b in dss.CktElement.BusNames()[:2])
            if b1 == b2:
                continue
            ends[name] = (b1, b2)
            graph.add_edge(b1, b2)
        root = grid.buses[0]
        order = {b: i for i, b in enumerate(nx.bfs_tree(graph, root))}
        for name, (b1, b2) in ends.items():
            parent, child = (b1, b2) if order[b1] < order[b2] else (b2, b1)
            groups.setdefault((parent, child), []).append(name)
            limits[(parent, child)] = limits.get((parent, child), 0.0) + _element_limit_kw(
                grid, name, parent)
        branches = [Branch(f"{p}-{c}", p, c, tuple(els), limits[(p, c)])
                    for (p, c), els in groups.items()]
        branches.sort(key=lambda br: order[br.child])
        return cls(root, branches, coords=grid.bus_coords)

    def with_limits(self, limits_kw: dict[str, float] | np.ndarray) -> Topology:
        """A copy with other branch limits (array in branch order, or name -> kW)."""
        if isinstance(limits_kw, dict):
            new = self.limits_kw.copy()
            for name, lim in limits_kw.items():
                new[self.branch_index[name]] = lim
        else:
            new = np.asarray(limits_kw, dtype=float)
        branches = [Branch(b.name, b.parent, b.child, b.elements, float(lim))
                    for b, lim in zip(self.branches, new)]
        return Topology(self.root, branches, self.coords)

    def path_to_root(self, bus: str) -> list[str]:
        """Branch names from ``bus`` up to the root."""
        out, b = [], bus
        while b in self.parent_branch:
            br = self.parent_branch[b]
            out.append(br)
            b = self.branches[self.branch_index[br]].parent
        return out

    def flows(self, injections_kw: np.ndarray) -> np.ndarray:
        """Branch flows (kW, positive away from the source) for bus injections (bus order)."""
        return self.H @ injections_kw

    def __repr__(self) -> str:
        return (f"Topology(root={self.root!r}, {len(self.buses)} buses, "
                f"{len(self.branches)} branches)")


def _element_limit_kw(grid, name: str, parent_bus: str) -> float:
    dss = grid.dss
    dss.Circuit.SetActiveElement(name)
    nph = dss.CktElement.NumPhases()
    if name.startswith("transformer."):
        dss.Transformers.Name(name.split(".", 1)[1])
        dss.Transformers.Wdg(1)
        return float(dss.Transformers.kVA())
    kv_ln = grid.bus_kv_ln.get(parent_bus, 0.0)
    amps = grid.base_normamps.get(name, 0.0)
    return float(nph * kv_ln * amps) if kv_ln and amps else math.inf
