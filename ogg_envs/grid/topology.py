"""The simplified grid model the markets use: a radial tree and its flow sensitivities.

On a radial feeder with the slack at the root, the active power on a branch is (losses
ignored) minus the net injection of everything downstream of it. With ``p`` the vector of net
bus injections (generation minus consumption, kW) this is the paper's eq. 1 / eq. 17:

    f = H @ p,   H[e, b] = -1 if bus b is downstream of branch e, else 0,

with ``f[e] > 0`` meaning power flowing away from the source through branch ``e``. Parallel
elements between the same two buses (a bank of single-phase regulators) form one branch.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from dataclasses import dataclass

import networkx as nx
import numpy as np
import scipy.sparse as sp

__all__ = ["Topology", "Branch", "LARGE_FEEDER_BUSES"]

# Above this many buses the markets state their problems with flow conservation per bus (the
# tree's incidence) instead of the dense sensitivities ``H``: IEEE 13, 34 and 37 are below it
# (their clearings are the dense statement's), IEEE 123 (132 buses) and larger feeders above.
LARGE_FEEDER_BUSES = 100


@dataclass(frozen=True)
class Branch:
    name: str  # "parent-child"
    parent: str
    child: str
    elements: tuple[str, ...]  # OpenDSS elements, e.g. ("line.l1",)
    limit_kw: float  # thermal limit, from ampacity (lines) or kVA rating (transformers)


class Topology:
    """Radial tree of a feeder: buses, branches, downstream sets, ``H`` and limits.

    Build it from an ``OpenDSSGrid`` (``Topology.from_grid``), from a list of branch elements
    (``Topology.from_elements``) or directly from a list of branches
    (``Topology(root, branches)``) to state a market on a hand-made network. It knows nothing
    of OpenDSS: the grid layer reads the elements, this class only builds the tree.
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
        # Tree arrays (topology order): the parent bus of every bus (-1 at the root) and of
        # every branch its parent and child bus. Everything below is computed from them in
        # O(buses + sum of depths), so an 8,500-node feeder builds in well under a second.
        bi = self.bus_index
        self.branch_parent = np.array([bi[br.parent] for br in self.branches], dtype=np.int64)
        self.branch_child = np.array([bi[br.child] for br in self.branches], dtype=np.int64)
        self.parent_index = np.full(len(self.buses), -1, dtype=np.int64)
        self.parent_index[self.branch_child] = self.branch_parent
        self.limits_kw = np.array([br.limit_kw for br in self.branches])
        self.coords = dict(coords or {})

    # The dense and sparse sensitivities and the downstream sets are built when first used:
    # a large feeder's market works on the tree itself (flow conservation per bus) and never
    # needs the (branches x buses) dense ``H``.
    @functools.cached_property
    def downstream(self) -> dict[str, frozenset[str]]:
        """Branch name -> the buses downstream of it (its child bus included)."""
        below: dict[str, frozenset[str]] = {}
        kids: dict[str, list[str]] = {b: [] for b in self.buses}
        for br in self.branches:
            kids[br.parent].append(br.child)
        sub: dict[str, frozenset[str]] = {}
        for b in reversed(self.buses):  # children before parents (breadth-first order)
            sub[b] = frozenset([b]).union(*(sub[c] for c in kids[b])) if kids[b] \
                else frozenset([b])
        for br in self.branches:
            below[br.name] = sub[br.child]
        return below

    @functools.cached_property
    def H_sparse(self) -> sp.csr_matrix:
        """``H`` as a sparse matrix (``H[e, b] = -1`` if bus b is downstream of branch e)."""
        e_of_child = np.full(len(self.buses), -1, dtype=np.int64)
        e_of_child[self.branch_child] = np.arange(len(self.branches))
        rows, cols = [], []
        bus = np.arange(1, len(self.buses))  # walk every bus up to the root, all at once
        at = bus.copy()
        while len(at):
            rows.append(e_of_child[at])
            cols.append(bus)
            at = self.parent_index[at]
            keep = at > 0
            bus, at = bus[keep], at[keep]
        rows = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
        cols = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
        return sp.csr_matrix((-np.ones(len(rows)), (rows, cols)),
                             shape=(len(self.branches), len(self.buses)))

    @functools.cached_property
    def H(self) -> np.ndarray:
        """The dense flow sensitivities, ``f = H @ p`` (branches x buses)."""
        return self.H_sparse.toarray()

    def H_columns(self, buses) -> np.ndarray:
        """Dense columns of ``H`` for some buses (branches x len(buses)), without building
        the whole dense matrix."""
        cols = [self.bus_index[b] for b in buses]
        return self.H_sparse[:, cols].toarray()

    @functools.cached_property
    def incidence(self) -> sp.csr_matrix:
        """Bus-branch incidence ``C`` (buses x branches): ``C[parent(e), e] = 1``,
        ``C[child(e), e] = -1``. With branch flows ``f`` (positive away from the source) the
        net injection of every bus is ``p = C @ f`` (flow conservation per bus, the paper's
        eq. 1 written on the tree), and ``f = H @ p`` whenever ``sum(p) = 0``."""
        E = len(self.branches)
        return sp.csr_matrix(
            (np.concatenate([np.ones(E), -np.ones(E)]),
             (np.concatenate([self.branch_parent, self.branch_child]),
              np.concatenate([np.arange(E), np.arange(E)]))),
            shape=(len(self.buses), E))

    def subtree_sums(self, values: np.ndarray) -> np.ndarray:
        """Per branch, the sum of ``values`` (per bus) over the buses downstream of it:
        ``-H @ values`` in O(buses), without ``H``."""
        s = self._subtree_solver.solve(np.asarray(values, dtype=float))
        return s[self.branch_child]

    @functools.cached_property
    def _subtree_solver(self):
        """``(I - P)`` factorised (``P[parent, child] = 1``; upper triangular in breadth-first
        order, so without fill-in): its solve gives every bus's subtree sum in O(buses)."""
        from scipy.sparse.linalg import splu

        B, E = len(self.buses), len(self.branches)
        A = sp.eye(B, format="csc") - sp.csc_matrix(
            (np.ones(E), (self.branch_parent, self.branch_child)), shape=(B, B))
        return splu(A, permc_spec="NATURAL", options={"SymmetricMode": False})

    _CACHED = ("downstream", "H_sparse", "H", "incidence", "_subtree_solver")

    def __getstate__(self):  # cached matrices and factorisations are rebuilt when used
        return {k: v for k, v in self.__dict__.items() if k not in self._CACHED}

    @classmethod
    def from_elements(cls, root: str,
                      elements: Iterable[tuple[str, str, str, float]],
                      coords: dict[str, tuple[float, float]] | None = None) -> Topology:
        """The radial tree of a list of branch elements ``(name, bus1, bus2, limit_kw)``.

        This is what ``OpenDSSGrid.branch_elements()`` returns, but any list will do, so a
        topology needs no power-flow engine::

            Topology.from_elements("s", [("line.a", "s", "b1", 500.0),
                                         ("line.b", "b1", "b2", float("inf"))])

        Elements whose two ends are the same bus are skipped; parallel elements between the
        same two buses form one branch whose limit is the sum of theirs. Each branch points
        away from ``root`` (breadth-first order from ``root``); branches are ordered by the
        breadth-first position of their downstream bus.

        Raises ``ValueError`` naming the buses of a loop when the elements do not form a tree,
        and naming the buses that no element connects to ``root``.
        """
        graph = nx.Graph()
        graph.add_node(root)
        ends: list[tuple[str, str, str, float]] = []
        for name, b1, b2, limit in elements:
            if b1 == b2:
                continue
            limit = float(limit)
            if math.isnan(limit) or limit < 0:
                raise ValueError(f"element {name}: limit must be >= 0 or inf, got {limit!r}")
            ends.append((name, b1, b2, limit))
            graph.add_edge(b1, b2)
        try:
            loop = nx.find_cycle(graph)
        except nx.NetworkXNoCycle:
            loop = None
        if loop:
            buses = " - ".join(u for u, _ in loop)
            raise ValueError(f"the network is not radial: loop through buses {buses} (open or "
                             "disable one of its elements, e.g. a normally-open tie switch)")
        order = {b: i for i, b in enumerate(nx.bfs_tree(graph, root))}
        cut = [b for b in graph if b not in order]
        if cut:
            raise ValueError(f"buses not connected to the root {root!r}: {', '.join(cut)}")
        groups: dict[tuple[str, str], list[str]] = {}
        limits: dict[tuple[str, str], float] = {}
        for name, b1, b2, limit in ends:
            parent, child = (b1, b2) if order[b1] < order[b2] else (b2, b1)
            groups.setdefault((parent, child), []).append(name)
            limits[(parent, child)] = limits.get((parent, child), 0.0) + limit
        branches = [Branch(f"{p}-{c}", p, c, tuple(els), limits[(p, c)])
                    for (p, c), els in groups.items()]
        branches.sort(key=lambda br: order[br.child])
        return cls(root, branches, coords=coords)

    @classmethod
    def from_grid(cls, grid) -> Topology:
        """The topology of an ``OpenDSSGrid`` (its ``branch_elements()``, rooted at the source)."""
        return cls.from_elements(grid.buses[0], grid.branch_elements(), grid.bus_coords)

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
        if len(self.buses) > LARGE_FEEDER_BUSES:  # subtree sums on a large feeder
            return -self.subtree_sums(injections_kw)
        return self.H @ injections_kw

    def __repr__(self) -> str:
        return (f"Topology(root={self.root!r}, {len(self.buses)} buses, "
                f"{len(self.branches)} branches)")

