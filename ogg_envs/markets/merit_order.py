"""Exact merit-order clearing of priced blocks on a radial feeder with branch limits.

The linear program of a DC market on a tree (the DLMP market's, ``ogg_envs.markets.dlmp``)::

    minimise    sum_i price_i x_i + import_price * import - export_price * export
    subject to  0 <= x_i <= length_i                    (block i injects x_i kW at its bus)
                -limit_e <= s_e <= limit_e              (s_e: net injection of the subtree
                                                         below branch e)
                s_root + import - export = 0            (the source balances the feeder)

with ``s`` the blocks' injections less the fixed demand per bus (``net_demand``; negative
where a bus injects), ``import, export >= 0`` and ``export_price <= import_price``. Example::

    >>> mo = MeritOrder(topology, item_buses=[3, 5])
    >>> out = mo.solve(price, length, net_demand, limits, import_price=4.0)
    >>> out.x, out.prices        # dispatch per block, the price at every bus

How it solves it, exactly
-------------------------
The cheapest way to make a subtree inject ``s`` kW is to run its blocks cheapest first: its
cost is convex and piecewise linear in ``s``, its segments the subtree's blocks in price order.
A branch limit only narrows the range of ``s``: it *forces* the subtree's cheapest blocks on
(up to what the subtree must inject to import no more than the limit) and *cuts* its dearest
ones (beyond what it may export). Walking the buses from the leaves up (``MeritOrder.solve``:
one pass, each subtree's forced and cut blocks fixed before its parent's), what remains is one
merit order in which any dispatch meets every limit: the source's, run at the root against
the import and export prices. This is the LP's optimum, with no tolerance but rounding.

Prices (the duals of the nodal balances; the DLMPs of the DLMP market): the root's is the
cost of one more kW there: ``import_price`` while importing, ``export_price`` while
exporting, else the marginal block's price (or, with none part-run, the next block's or
``import_price``, whichever is lower). A subtree held at a limit has its own price: the
dearest forced block's (import limit) or the cheapest cut block's (export limit), and never
on the wrong side of its parent's price; elsewhere a bus has its parent's price.
``MeritOrder.certificate`` checks every optimality condition of a solution (the tests run it
on each).

Ties, by a documented rule: blocks of equal price run in index order (the lower index first,
and is cut last); a block priced exactly at ``import_price`` does not run while the source
imports, nor one at ``export_price`` while it exports. Where the prices are not unique (a
dispatch exactly at a block's edge or a limit met exactly), the root's is the cost of one more
kW (above) and a subtree's its parent's wherever that is optimal: congestion is priced only
when it has to be. The same data always give the same dispatch and prices.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["MeritOrder", "MeritOrderResult"]

_ROUNDING = 1e-9  # a subtree within this share of its limit is at it (sums of kW round)


class MeritOrderResult(NamedTuple):
    """``x`` per block (kW), ``source_import`` and ``source_export`` (kW, >= 0), ``prices``
    per bus (the nodal balances' duals), ``energy`` (the root's price) and ``subtree_kw``."""

    x: np.ndarray
    source_import: float
    source_export: float
    prices: np.ndarray
    energy: float
    subtree_kw: np.ndarray  # per bus: its subtree's net injection (the flow up its branch)


class MeritOrder:
    """The tree of one ``ogg_envs.grid.Topology`` and the buses of its blocks (fixed).

    Args:
        topology: the radial feeder (buses in breadth-first order, the root first).
        item_buses: the bus (topology index) of every block, in block order.
    """

    def __init__(self, topology, item_buses):
        B = len(topology.buses)
        parent = topology.parent_index.tolist()
        branch_of = [-1] * B
        for e, child in enumerate(topology.branch_child.tolist()):
            branch_of[child] = e
        # Depth-first entry order: bus b's subtree is the range [first[b], end[b]).
        children: list[list[int]] = [[] for _ in range(B)]
        for b in range(1, B):
            children[parent[b]].append(b)
        first, end, clock, stack = [0] * B, [0] * B, 0, [(0, False)]
        while stack:
            b, done = stack.pop()
            if done:
                end[b] = clock
                continue
            first[b] = clock
            clock += 1
            stack.append((b, True))
            stack.extend((c, False) for c in reversed(children[b]))
        self.n_buses = B
        self._first_a, self._end_a = np.array(first), np.array(end)
        # the upward pass: (bus, its parent), children before parents, and their branches
        self._up = [(b, parent[b]) for b in range(B - 1, 0, -1)]
        self._up_branch = np.array([branch_of[b] for b, _ in self._up], dtype=np.int64)
        self._dfs = np.argsort(self._first_a)  # depth-first position -> bus
        self._parent = parent
        self._branch_of = branch_of
        self._first, self._end = first, end
        self._bus = np.asarray(item_buses, dtype=np.int64)
        self._pos = [first[b] for b in self._bus.tolist()]  # each block's place in that order

    def solve(self, price, length, net_demand, limits, import_price: float,
              export_price: float = 0.0) -> MeritOrderResult | None:
        """Clear (module docstring). ``price``, ``length`` per block; ``net_demand`` per
        bus; ``limits`` per branch (``inf``: none). Returns ``None`` when no dispatch meets
        the limits (the caller decides what then); raises ``ValueError`` on inputs of the
        wrong size, a negative length or an export price above the import price."""
        n, B = len(self._pos), self.n_buses
        s, length = np.asarray(price, dtype=float), np.asarray(length, dtype=float)
        net_demand = np.asarray(net_demand)
        if s.shape != (n,) or length.shape != (n,) or net_demand.shape != (B,):
            raise ValueError(f"MeritOrder.solve: expected {n} prices and lengths (one per "
                             f"block) and {B} net demands (one per bus), got {s.shape}, "
                             f"{length.shape} and {net_demand.shape}")
        if not export_price <= import_price:
            self._bad_input(export_price, import_price)
        net_demand = np.asarray(net_demand, dtype=float)
        plan = self._upward_plan(length, net_demand, np.asarray(limits, dtype=float),
                                 export_price, import_price)
        if plan is None:  # a subtree exports more than its limit with every block off
            return None
        steps, cur, rem, limits = plan
        order = s.argsort(kind="stable").tolist()  # the merit order, ties by index
        s = s.tolist()
        rem = rem.copy()  # what each block has left
        on = [0.0] * n  # what runs: forced on by a limit, then the source's merit order
        pos = self._pos
        held = {}  # bus -> (forced: dearest forced price | None, cut: cheapest cut | None)
        for b, a, z, force_kw, cut_kw in steps:  # the subtrees at a limit, children first
            forced = cut = None
            if force_kw is not None:  # import limit: its cheapest blocks must run
                need = force_kw
                for j in order:
                    r = rem[j]
                    if r > 0.0 and a <= pos[j] < z:
                        t = r if r < need else need
                        rem[j] = r - t
                        on[j] += t
                        need -= t
                        forced = s[j]
                        if need <= 0.0:
                            break
                if need > 0.0:
                    return None
            if cut_kw is not None:  # export limit: its dearest blocks cannot run
                need = cut_kw
                for j in reversed(order):
                    r = rem[j]
                    if r > 0.0 and a <= pos[j] < z:
                        t = r if r < need else need
                        rem[j] = r - t
                        need -= t
                        cut = s[j]
                        if need <= 0.0:
                            break
            held[b] = (forced, cut)
        # The root: the rest in merit order against the source.
        marginal = import_price  # the price of the first block left (partly) idle
        for j in order:
            r = rem[j]
            if r <= 0.0:
                continue
            sj = s[j]
            if sj < export_price:  # worth running even to export
                on[j] += r
                cur += r
            elif cur >= 0.0 or sj >= import_price:
                marginal = sj
                break
            elif r <= -cur:
                on[j] += r
                cur += r
            else:
                on[j] += -cur
                cur = 0.0
                marginal = sj
                break
        imp, exp = max(-cur, 0.0), max(cur, 0.0)
        # Prices: the cost of one more kW of demand at each bus.
        if imp > 0.0:
            energy = import_price
        elif exp > 0.0:
            energy = export_price
        else:  # the next block to run, or the source
            energy = min(marginal, import_price)
        x = np.array(on)
        sub = self.subtree_sums(np.bincount(self._bus, x, minlength=B) - net_demand)
        at_dfs = np.empty(B)
        at_dfs.fill(energy)  # (np.full's numbers, without its Python layer)
        if not held:
            return MeritOrderResult(x, imp, exp, at_dfs, energy, sub)
        # A subtree at a limit it holds has its own price, and so has everything below it
        # unless it holds a limit itself: one price per depth-first range, parents first.
        parent, branch_of, first, end = self._parent, self._branch_of, self._first, self._end
        for b in sorted(held):
            forced, cut = held[b]
            L = limits[branch_of[b]]
            slack = _ROUNDING * max(L, 1.0)
            if cut is not None and sub[b] >= L - slack:  # at its export limit
                at_dfs[first[b]:end[b]] = min(at_dfs[first[parent[b]]], cut)
            elif forced is not None and sub[b] <= -L + slack:  # at its import limit
                at_dfs[first[b]:end[b]] = max(at_dfs[first[parent[b]]], forced)
        return MeritOrderResult(x, imp, exp, at_dfs[self._first_a], energy, sub)

    _plan = None  # (lengths, net demand and limits as bytes, their upward plan)

    def _upward_plan(self, length, net_demand, limits, export_price, import_price):
        """What the upward pass does regardless of the prices, kept for the same lengths, net
        demand and limits (a market's rounds in one hour share them): ``(steps, the root's
        injection with every free block off, the lengths as a list, the limits as a
        list)``, or ``None`` if a subtree exports more than its limit with every block off.
        ``steps``: per subtree outside its limits, children first, ``(bus, its depth-first
        range, kW its cheapest blocks must run or None, kW its dearest blocks must not run
        or None)``. Which blocks those are is the prices' part (``solve``)."""
        key = (length.tobytes(), net_demand.tobytes(), limits.tobytes())
        kept = self._plan
        if kept is not None and kept[0] == key:
            return kept[1]
        if not np.minimum.reduce(length, initial=0.0) >= 0.0:
            self._bad_input(export_price, import_price)
        lo = (-net_demand).tolist()  # subtree injection, all off
        tot = np.bincount(self._bus, length, minlength=self.n_buses).tolist()  # what it can add
        first, end = self._first, self._end
        steps, plan = [], None
        for (b, p), L in zip(self._up, limits[self._up_branch].tolist()):  # children first
            low, total = lo[b], tot[b]
            if low < -L or low + total > L:
                force_kw = cut_kw = None
                if low < -L:  # import limit: its cheapest blocks must run
                    force_kw = -L - low
                    total -= force_kw
                    low = -L
                if low > L:  # exports more than its limit with every block off
                    break
                if low + total > L:  # export limit: its dearest blocks cannot run
                    cut_kw = low + total - L
                    total = L - low
                steps.append((b, first[b], end[b], force_kw, cut_kw))
            lo[p] += low
            tot[p] += total
        else:
            plan = (steps, lo[0], length.tolist(), limits.tolist())
        self._plan = (key, plan)
        return plan

    @staticmethod
    def _bad_input(export_price, import_price):
        raise ValueError(f"MeritOrder.solve: export_price ({export_price}) must not exceed "
                         f"import_price ({import_price}) and lengths must be >= 0")

    def subtree_sums(self, per_bus: np.ndarray) -> np.ndarray:
        """Per bus, the sum of ``per_bus`` over its subtree (``per_bus`` in topology order)."""
        cs = np.zeros(len(per_bus) + 1)
        np.add.accumulate(per_bus[self._dfs], out=cs[1:])  # (np.cumsum's numbers)
        return cs[self._end_a] - cs[self._first_a]

    def certificate(self, result: MeritOrderResult, price, length, net_demand, limits,
                    import_price: float, export_price: float = 0.0, tol: float = 1e-7) -> list:
        """The optimality conditions ``result`` violates (empty: it is optimal, its prices
        are duals): bounds, limits and balance (primal), each block's price against its bus's
        (running blocks cost at most, idle ones at least, the bus price), each branch's price
        difference against its flow (a subtree dearer than its parent imports at its limit, a
        cheaper one exports at it), and the source against the root's price."""
        x, lam = result.x, result.prices
        price, length = np.asarray(price, dtype=float), np.asarray(length, dtype=float)
        out = []
        if (x < -tol).any() or (x > length + tol).any():
            out.append("a block outside [0, length]")
        inj = np.bincount(self._bus, x, minlength=self.n_buses) - net_demand
        sub = inj.copy()
        for b in range(self.n_buses - 1, 0, -1):
            sub[self._parent[b]] += sub[b]
        if abs(sub[0] + result.source_import - result.source_export) > tol:
            out.append("the source does not balance the feeder")
        at = lam[self._bus]
        running, idle = x > tol, x < length - tol
        if (running & (price > at + tol)).any() or (idle & (price < at - tol)).any():
            out.append("a block on the wrong side of its bus's price")
        for b in range(1, self.n_buses):
            L, diff = limits[self._branch_of[b]], lam[b] - lam[self._parent[b]]
            if abs(sub[b]) > L + tol:
                out.append(f"bus {b}'s branch over its limit")
            if (diff > tol and sub[b] > -L + tol) or (diff < -tol and sub[b] < L - tol):
                out.append(f"bus {b}'s branch priced without being at its limit")
        e = result.energy
        if e != lam[0] or e > import_price + tol or e < export_price - tol or \
                (result.source_import > tol and e < import_price - tol) or \
                (result.source_export > tol and e > export_price + tol):
            out.append("the root's price against the source")
        return out
