"""Exact clearing of monotone bid curves on a radial feeder, by zones (no dense ``H``).

This is the large-feeder path of ``CurveMarket`` (``formulation="flow"``). It solves the same
problem as the dense statement, written with flow conservation per bus (the paper's eq. 1 on
the tree: the net injection of a bus is what its branch flows carry away, ``p = C f``) and the
branch limits as bounds on ``f``, by solving the KKT conditions of that problem directly:

* every bid, shed and spill variable is an *item* whose injection responds monotonically to
  the price at its bus: ``g(λ) = a + k clip(λ - l, 0, u - l)`` (a ramp: an affine curve) or
  ``a + R [λ > t]`` (a step: a flat curve, any share of ``R`` at ``λ = t``);
* the tree is first **reduced** to the buses that matter: subtrees without items carry no flow
  (pruned), and a chain of item-less buses with one child each carries one flow (contracted
  into one branch whose limit is the chain's smallest);
* a **zone** is a connected part of the reduced tree once the branches held at their limit
  (*binding*) are cut; its buses share one price, the root of the zone's total injection plus
  the fixed flows through its cut branches: a monotone piecewise-linear function whose root
  every zone finds at once (one sort of all breakpoints, segmented cumulative sums);
* an active set over the branches: a branch whose flow exceeds its limit becomes binding (the
  deepest violations first: a limit downstream can relieve one upstream); a binding branch
  whose price difference has the wrong sign is released, and so are the binding branches
  below a zone that has nothing to balance their fixed flows with. When no branch is violated
  and every binding one has a non-negative shadow price, the point satisfies the KKT
  conditions of the convex problem: it is the optimum, and the zone prices are the duals of the
  nodal balances (the nodal prices).

The round count is bounded (``max_rounds``); ``solve`` returns ``None`` when it is reached and
the caller falls back to a general solver on the same sparse statement.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

__all__ = ["RadialClearing", "Items"]


class Items:
    """The priced items of one clearing, as arrays (one entry per item).

    ``bus``: its bus (topology index); ``base``: its injection below every breakpoint (kW,
    negative for withdrawals); a ramp rises by ``k`` kW per ¢/kWh from ``lo`` to ``hi``
    (¢/kWh); a step jumps by ``jump`` kW at ``at`` (¢/kWh). Unused parts are zero.
    """

    def __init__(self, bus, base, k, lo, hi, jump, at):
        self.bus = np.asarray(bus, dtype=np.int64)
        self.base = np.asarray(base, dtype=float)
        self.k = np.asarray(k, dtype=float)
        self.lo = np.asarray(lo, dtype=float)
        self.hi = np.asarray(hi, dtype=float)
        self.jump = np.asarray(jump, dtype=float)
        self.at = np.asarray(at, dtype=float)

    def injection(self, price: np.ndarray, share: np.ndarray) -> np.ndarray:
        """Each item's injection at its price (per item); a step exactly at its price takes
        ``share`` (per item, in [0, 1]) of its jump."""
        ramp = self.k * np.clip(price - self.lo, 0.0, np.maximum(self.hi - self.lo, 0.0))
        step = np.where(price > self.at, 1.0, np.where(price < self.at, 0.0, share))
        return self.base + ramp + self.jump * step


def _pointer_jump(top: np.ndarray) -> np.ndarray:
    while True:
        nxt = top[top]
        if np.array_equal(nxt, top):
            return top
        top = nxt


class RadialClearing:
    """Zone/active-set solver for one radial topology and a fixed set of item buses.

    Args:
        topology: an ``ogg_envs.grid.Topology``.
        item_buses: the buses (topology indices) where items can sit.
        max_rounds: active-set rounds before giving up (``solve`` returns ``None``).
    """

    def __init__(self, topology, item_buses, max_rounds: int = 200):
        B, E = len(topology.buses), len(topology.branches)
        parent = topology.parent_index
        self.B, self.E = B, E
        self.max_rounds = int(max_rounds)
        branch_above = np.full(B, -1, dtype=np.int64)
        branch_above[topology.branch_child] = np.arange(E)
        has = np.zeros(B, dtype=bool)
        has[np.asarray(item_buses, dtype=np.int64)] = True
        has[0] = True
        # Needed buses: an item at or below them.
        below = -(topology.H_sparse @ has.astype(float))  # per branch: item buses below it
        needed = np.zeros(B, dtype=bool)
        needed[0] = True
        needed[topology.branch_child[below > 0]] = True
        n_kids = np.bincount(parent[needed & (parent >= 0)], minlength=B)
        keep = has | (needed & (n_kids >= 2))  # the reduced tree's buses
        self.keep_idx = np.flatnonzero(keep)  # reduced bus r -> topology bus
        red = np.full(B, -1, dtype=np.int64)
        red[self.keep_idx] = np.arange(len(self.keep_idx))
        # Nearest kept bus at or above every bus (pointer jumping), the reduced parents.
        up = parent.copy()
        up[0] = 0
        self.top = _pointer_jump(np.where(keep, np.arange(B), up))
        self.top_needed = _pointer_jump(np.where(needed, np.arange(B), up))
        self.R = len(self.keep_idx)
        r_parent = red[self.top[up[self.keep_idx]]]
        r_parent[0] = -1
        self.r_parent = r_parent
        # Reduced branch r - 1 ends at kept bus r; its chain: the topology branches from r up
        # to (not including) its reduced parent.
        self.r_child = np.arange(1, self.R)
        self.r_up = r_parent[1:]
        chain_of = np.full(B, -1, dtype=np.int64)  # needed bus -> reduced branch of its chain
        below_kept = np.full(B, -1, dtype=np.int64)
        for j in range(B - 1, 0, -1):  # children before parents; construction only
            if not needed[j]:
                continue
            low = j if keep[j] else below_kept[j]
            if not keep[parent[j]]:
                below_kept[parent[j]] = low
            chain_of[j] = red[low] - 1
        self.chain_of_bus = chain_of
        self.needed, self.keep = needed, keep
        child = topology.branch_child
        self.branch_chain = np.where(needed[child], chain_of[child], -1)
        self.branch_child_bus = child
        # Subtree sums on the reduced tree: solve (I - P) s = v, P[parent, child] = 1, upper
        # triangular in breadth-first order (no fill-in), factorised once.
        self._subtree = None
        self.red = red

    def _sums(self, values: np.ndarray) -> np.ndarray:
        """Per reduced branch, the sum of ``values`` (per reduced bus) below it."""
        if self._subtree is None:
            from scipy.sparse.linalg import splu

            R = self.R
            A = sp.eye(R, format="csc") - sp.csc_matrix(
                (np.ones(R - 1), (self.r_up, self.r_child)), shape=(R, R))
            self._subtree = splu(A, permc_spec="NATURAL")
        return self._subtree.solve(values)[1:]

    def __getstate__(self):  # the factorisation is rebuilt when used
        return dict(self.__dict__, _subtree=None)

    def reduced_limits(self, limits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per reduced branch: the smallest limit of its chain and which topology branch has
        it (the deepest of equal ones)."""
        lim = np.asarray(limits, dtype=float)
        E = self.E
        cb = self.branch_chain
        valid = cb >= 0
        out = np.full(self.R - 1, np.inf)
        np.minimum.at(out, cb[valid], lim[valid])
        which = np.full(self.R - 1, -1, dtype=np.int64)
        is_min = valid.copy()
        is_min[valid] = lim[valid] == out[cb[valid]]
        e_idx = np.arange(E)[is_min]
        # Deepest: the largest breadth-first index of its child bus, i.e. the last seen.
        which[cb[is_min]] = e_idx  # later (deeper) branches overwrite earlier ones
        return out, which

    # ------------------------------------------------------------------ zones
    def _zones(self, binding: np.ndarray) -> np.ndarray:
        top = np.concatenate([[0], self.r_parent[1:]])
        cut = np.zeros(self.R, dtype=bool)
        cut[0] = True
        cut[self.r_child[binding != 0]] = True
        top[cut] = np.flatnonzero(cut)
        return _pointer_jump(top)

    @staticmethod
    def _zone_prices(items: Items, zone_of_item: np.ndarray, fixed: np.ndarray, nz: int):
        """Price and step share of every zone with items; zones that cannot balance."""
        ramp = items.k > 0
        step = items.jump > 0
        nr = int(ramp.sum())
        ev_zone = np.concatenate([zone_of_item[ramp], zone_of_item[ramp], zone_of_item[step]])
        ev_price = np.concatenate([items.lo[ramp], items.hi[ramp], items.at[step]])
        ev_slope = np.concatenate([items.k[ramp], -items.k[ramp], np.zeros(int(step.sum()))])
        ev_jump = np.concatenate([np.zeros(2 * nr), items.jump[step]])
        start = fixed + np.bincount(zone_of_item, items.base, minlength=nz)
        order = np.lexsort((ev_price, ev_zone))
        ev_zone, ev_price = ev_zone[order], ev_price[order]
        new = np.ones(len(ev_zone), dtype=bool)
        new[1:] = (ev_zone[1:] != ev_zone[:-1]) | (ev_price[1:] != ev_price[:-1])
        grp = np.cumsum(new) - 1
        g_zone, g_price = ev_zone[new], ev_price[new]
        g_slope = np.bincount(grp, ev_slope[order])
        g_jump = np.bincount(grp, ev_jump[order])
        first = np.ones(len(g_zone), dtype=bool)
        first[1:] = g_zone[1:] != g_zone[:-1]
        slope_after = _segmented_cumsum(g_slope, first)
        slope_before = np.where(first, 0.0, np.concatenate([[0.0], slope_after[:-1]]))
        dprice = np.where(first, 0.0, g_price - np.concatenate([[0.0], g_price[:-1]]))
        after = _segmented_cumsum(slope_before * dprice + g_jump, first) + start[g_zone]
        before = after - g_jump
        price = np.full(nz, np.nan)
        share = np.zeros(nz)
        cand = np.flatnonzero(after >= 0.0)
        if len(cand):
            cz = g_zone[cand]
            keep = np.ones(len(cand), dtype=bool)
            keep[1:] = cz[1:] != cz[:-1]
            cand, cz = cand[keep], cz[keep]
            b, s = before[cand], slope_before[cand]
            in_seg = b >= 0.0  # reached on the segment ending here (or already at the start)
            lam = np.where(in_seg & (s > 0), g_price[cand] - b / np.where(s > 0, s, 1.0),
                           g_price[cand])
            jump = g_jump[cand]
            frac = np.where(~in_seg, -b / np.where(jump > 0, jump, 1.0), 0.0)
            price[cz] = lam
            share[cz] = np.clip(frac, 0.0, 1.0)
        return price, share, start

    # ------------------------------------------------------------------ solve
    def solve(self, items: Items, limits: np.ndarray, tol: float = 1e-7):
        """Clear. ``limits`` per topology branch (kW, ``inf`` = none). Returns ``(injection per
        item, price per topology bus, rounds)`` or ``None`` when the active set does not
        settle."""
        lim, which = self.reduced_limits(limits)
        finite = np.isfinite(lim)
        scale = np.where(finite, lim, 0.0)
        r_bus = self.red[items.bus]
        binding = np.zeros(self.R - 1, dtype=np.int8)
        for rounds in range(1, self.max_rounds + 1):
            zone = self._zones(binding)
            zone_of_item = zone[r_bus]
            fixed = np.zeros(self.R)
            b_idx = np.flatnonzero(binding)
            if len(b_idx):
                f = binding[b_idx] * lim[b_idx]
                np.add.at(fixed, zone[self.r_child[b_idx]], f)
                np.add.at(fixed, zone[self.r_up[b_idx]], -f)
            zprice, zshare, start = self._zone_prices(items, zone_of_item, fixed, self.R)
            zones = np.unique(zone)
            bad = zones[np.isnan(zprice[zones])]
            if len(bad):
                # A zone that cannot balance: release the binding branches below it (their
                # fixed flows are what it cannot match); if none, give up.
                rel = np.isin(zone[self.r_up], bad) & (binding != 0)
                if not rel.any():
                    return None
                binding[rel] = 0
                continue
            inj = items.injection(zprice[zone_of_item], zshare[zone_of_item])
            p = np.bincount(r_bus, inj, minlength=self.R)
            flows = -self._sums(p)  # away from the source, per reduced branch
            bus_price = zprice[zone]
            over = (binding == 0) & finite & (np.abs(flows) > lim + tol * np.maximum(1.0, scale))
            mu = (bus_price[self.r_child] - bus_price[self.r_up]) * binding
            wrong = (binding != 0) & (mu < -1e-9)
            if not over.any() and not wrong.any():
                return inj, self._expand(bus_price, binding, which), rounds
            binding[wrong] = 0
            if over.any():
                mark = np.zeros(self.R)
                mark[self.r_child[over]] = 1.0
                below = self._sums(mark)  # violated reduced branches at or below each one
                deepest = over & (below <= 1.0 + 1e-9)
                binding[deepest] = np.sign(flows[deepest]).astype(np.int8)
        return None

    def _expand(self, r_price: np.ndarray, binding: np.ndarray, which: np.ndarray):
        """Prices of every topology bus from the reduced solution: a kept bus its own; a chain
        bus the price below it, unless the chain's binding branch is deeper than the bus (then
        the price above); a pruned bus (no flow below it) that of its nearest needed
        ancestor."""
        price = r_price[self.red[self.top]]  # nearest kept bus at or above: the price above
        chain_bus = np.flatnonzero(self.needed & ~self.keep)
        c = self.chain_of_bus[chain_bus]
        w = which[c]
        cw = self.branch_child_bus[np.maximum(w, 0)]
        bound = (binding[c] != 0) & (w >= 0)
        upstream_side = bound & (cw > chain_bus)  # the binding branch lies below this bus
        price[chain_bus] = np.where(upstream_side, price[chain_bus], r_price[c + 1])
        pruned = ~self.needed
        price[pruned] = price[self.top_needed[pruned]]
        return price


def _segmented_cumsum(values: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Cumulative sum restarting where ``first`` is True."""
    c = np.cumsum(values)
    starts = np.flatnonzero(first)
    if not len(starts):
        return c
    base = np.concatenate([[0.0], c[starts[1:] - 1]])
    return c - base[np.cumsum(first) - 1]
