"""Peer-to-peer negotiation market with a random market maker (the paper's second use case).

A plain object: roles, matching, negotiation outcomes, settlement and the feeder check, with no
PettingZoo in it. ``ogg_envs.envs.p2p_v0`` drives it. Prices are in ¢/kWh, energies in kWh per
grid step (one hour, so kWh and kW are the same numbers), money in ¢.

Roles
-----
Every grid step a prosumer is a **producer** if its net load (load − PV) is negative and a
**consumer** otherwise (``assign_roles``; zero net load counts as a consumer with nothing to
buy). Which net load decides is the environment's business (the realised hour in the
homogeneous case, the forecast over the contract window in the multi-period case).

Matching
--------
The market maker pairs producers with consumers. ``random_matching`` is the paper's rule: both
lists are shuffled and paired in order, ignoring location and quantity. ``max_weight_matching``
pairs them to maximise the total tradable energy (the weight of a pair is what the producer can
sell the consumer, see ``tradable_kwh``), among the matchings with the most pairs, so both rules
leave the same number ``|#producers − #consumers|`` of prosumers unmatched. Unmatched
prosumers do not negotiate; they trade with the utility.

Negotiation (one negotiation step)
----------------------------------
Each matched pair bids one price arm each, ``b_p`` (producer) and ``b_c`` (consumer). If
``b_p <= b_c`` the trade succeeds at the producer's price::

    r_p = b_p − c_service,      r_c = ub − b_p − c_service,

with ``ub`` the utility's retail price; otherwise both get ``−c_lose``. These per-kWh payoffs
are the rewards (``negotiation_outcome``). A pair negotiates ``steps`` times per grid step; its
contract for the grid step (``quantities``, kWh) is split into ``steps`` equal tranches and
each successful negotiation step sells one tranche at that step's ``b_p``. So the energy a pair
trades in a grid step is ``quantity × successes / steps``.

Settlement (``settle``), per prosumer and grid step
---------------------------------------------------
With ``x`` the prosumer's realised net export (PV − load, kWh; in the multi-period case PV
differs from its forecast), ``sold``/``bought`` its P2P energy and ``r = x − sold + bought``:

* ``r > 0``: the surplus is sold to the utility at ``feed_in_price`` (a producer that sold
  less than it had, or a consumer whose own PV covered more than forecast);
* ``r < 0``: the missing energy comes from the substation. Up to ``sold`` of it is a
  producer's **shortfall** (it contracted energy its PV did not deliver; the utility delivers
  it to the consumer and charges the producer ``imbalance_price``); the rest is the
  prosumer's own **deficit**, bought at the retail price ``ub``;
* P2P energy is paid at the agreed prices (the sum of ``b_p × tranche`` over the successful
  steps).

``bill = retail_kwh·ub + shortfall_kwh·imbalance_price − feed_in_kwh·feed_in_price + p2p_cost −
p2p_revenue`` (¢, positive: the prosumer pays).

Feasibility on the feeder (``TradeFeasibility``)
-----------------------------------------------
Every prosumer's realised net injection goes into the OpenDSS feeder (consumers as extra load
at their bus, producers as a generator there) on top of the background loads, and one power
flow is solved; its violations are reported as they are. The physical footprint of a trade is
the producer's export: the consumer's demand is on the feeder whoever supplies it. So a trade
can only cause a violation that injections cause — a line overloaded by reverse flow (towards
the substation) or a bus above the voltage band — and it is **infeasible** when

1. it is implicated: with the radial sensitivities ``H``, a trade of ``q`` kWh from bus ``a``
   to bus ``b`` changes the branch flows by ``(H[:, a] − H[:, b]) q``; it is implicated in a
   reverse-flow overload when it moves energy upstream across that line, and in an
   over-voltage at a bus when it moves energy upstream across a line on that bus's path to
   the substation; and
2. the violation is the trades' doing: it disappears in the power flow solved again without the
   implicated trades' energy (a trade "pushes the feeder out of its limits" only if the feeder
   is within them without it). Violations already there without the trades blame no trade.

The second power flow is solved only when some trade is implicated. With ``curtail=True`` the
infeasible trades are cancelled: the producer's inverter is curtailed by the trade's energy
(spilled, not paid) and the consumer buys it from the utility at ``ub``; the check is repeated
on the curtailed state, up to ``max_rounds`` times.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import networkx as nx
import numpy as np

__all__ = ["P2PTerms", "P2PMarket", "TradeFeasibility", "FeasibilityReport", "PRODUCER",
           "CONSUMER", "ROLE_NAMES", "assign_roles", "random_matching", "max_weight_matching",
           "tradable_kwh", "negotiation_outcome", "settle"]

PRODUCER, CONSUMER = 1, -1
ROLE_NAMES = {PRODUCER: "producer", CONSUMER: "consumer"}
MATCHINGS = ("random", "max_weight")


@dataclass(frozen=True)
class P2PTerms:
    """The market's prices (¢/kWh) and negotiation costs.

    ``arms``: the price levels a bid can take, strictly increasing. ``retail_price`` (ub): what
    the utility charges for energy from the substation. ``feed_in_price``: what it pays for
    surplus. ``imbalance_price``: what a producer pays per kWh of contracted energy it did not
    deliver. ``c_service``: the market maker's fee per kWh, paid by both sides of a trade.
    ``c_lose``: the cost of a failed negotiation step, for both sides.
    """

    arms: tuple[float, ...]
    retail_price: float
    feed_in_price: float
    imbalance_price: float
    c_service: float
    c_lose: float

    def __post_init__(self):
        arms = tuple(float(a) for a in np.asarray(self.arms, dtype=float).reshape(-1))
        object.__setattr__(self, "arms", arms)
        if len(arms) < 2:
            raise ValueError(f"arms: need at least 2 price levels, got {len(arms)}")
        if not all(math.isfinite(a) and a >= 0 for a in arms) or \
                any(b <= a for a, b in zip(arms, arms[1:])):
            raise ValueError(f"arms must be finite, >= 0 and strictly increasing, got "
                             f"{list(arms)}")
        for name in ("retail_price", "feed_in_price", "imbalance_price", "c_service", "c_lose"):
            v = float(getattr(self, name))
            if not math.isfinite(v) or v < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
            object.__setattr__(self, name, v)

    @property
    def n_arms(self) -> int:
        return len(self.arms)

    def reward_range(self) -> tuple[float, float]:
        """The lowest and highest reward a matched prosumer can get (either role)."""
        lo_arm, hi_arm = self.arms[0], self.arms[-1]
        fee, ub = self.c_service, self.retail_price
        lo = min(-self.c_lose, lo_arm - fee, ub - hi_arm - fee)
        hi = max(hi_arm - fee, ub - lo_arm - fee)
        return lo, hi


def assign_roles(net_load_kwh) -> np.ndarray:
    """``PRODUCER`` (+1) where net load (load − PV) is negative, else ``CONSUMER`` (−1)."""
    net = np.asarray(net_load_kwh, dtype=float)
    if not np.isfinite(net).all():
        raise ValueError("net loads must be finite")
    return np.where(net < 0, PRODUCER, CONSUMER).astype(np.int8)


def random_matching(roles: np.ndarray, rng: np.random.Generator):
    """The paper's market maker: shuffle producers and consumers and pair them in order.

    Returns ``(producers, consumers)``, index arrays of equal length ``min(#P, #C)``.
    """
    prod = rng.permutation(np.flatnonzero(roles == PRODUCER))
    cons = rng.permutation(np.flatnonzero(roles == CONSUMER))
    m = min(len(prod), len(cons))
    return prod[:m], cons[:m]


def tradable_kwh(surplus: np.ndarray, deficit: np.ndarray) -> np.ndarray:
    """What producer p can sell consumer c: ``sum_h min(surplus[h, p], deficit[h, c])``.

    ``surplus``/``deficit``: (hours, n) non-negative kWh per grid step of the contract window.
    Returns the (n, n) matrix ``W[p, c]``.
    """
    s = np.atleast_2d(surplus)[:, :, None]
    d = np.atleast_2d(deficit)[:, None, :]
    return np.minimum(s, d).sum(axis=0)


def max_weight_matching(roles: np.ndarray, weights: np.ndarray):
    """Pairs that maximise the total ``weights[p, c]`` among maximum-cardinality matchings."""
    prod = np.flatnonzero(roles == PRODUCER)
    cons = np.flatnonzero(roles == CONSUMER)
    n = len(roles)
    g = nx.Graph()
    for p in prod:
        for c in cons:
            g.add_edge(int(p), n + int(c), weight=float(weights[p, c]))
    pairs = sorted((min(u, v), max(u, v) - n) for u, v in nx.max_weight_matching(
        g, maxcardinality=True))
    return (np.array([p for p, _ in pairs], dtype=np.int64),
            np.array([c for _, c in pairs], dtype=np.int64))


def negotiation_outcome(b_p, b_c, terms: P2PTerms):
    """The paper's rule, vectorised: ``(success, r_p, r_c)`` for bids in ¢/kWh."""
    b_p = np.asarray(b_p, dtype=float)
    b_c = np.asarray(b_c, dtype=float)
    ok = b_p <= b_c
    r_p = np.where(ok, b_p - terms.c_service, -terms.c_lose)
    r_c = np.where(ok, terms.retail_price - b_p - terms.c_service, -terms.c_lose)
    return ok, r_p, r_c


class P2PMarket:
    """The market maker and the negotiations of one grid step.

    Use: ``match`` (when the contract window starts), ``open_grid_step(quantities)`` (each grid
    step), ``negotiate(arms)`` ``steps`` times, then read ``delivered_kwh`` and ``payments``.
    Per-prosumer arrays have length ``n``; per-pair arrays follow ``producers``/``consumers``.

    The hot path (``negotiate``) is a handful of vector operations on arrays prepared by
    ``match``: every prosumer knows the producer and the consumer of its pair (itself when
    unmatched) and the affine form of its reward, so no Python loop runs over pairs.
    """

    def __init__(self, n: int, terms: P2PTerms, steps: int, matching: str = "random"):
        if int(n) < 1:
            raise ValueError(f"a market needs at least one prosumer, got {n}")
        if int(steps) < 1:
            raise ValueError(f"negotiation steps must be >= 1, got {steps}")
        if matching not in MATCHINGS:
            raise ValueError(f"matching must be one of {MATCHINGS}, got {matching!r}")
        self.n, self.terms, self.steps, self.matching = int(n), terms, int(steps), matching
        self.prices = np.array(terms.arms)
        self.set_pairs(np.full(self.n, CONSUMER, dtype=np.int8), np.zeros(0, dtype=np.int64),
                       np.zeros(0, dtype=np.int64))

    def match(self, roles: np.ndarray, surplus: np.ndarray, deficit: np.ndarray,
              rng: np.random.Generator) -> None:
        """Pair producers with consumers by the market's rule (``surplus``/``deficit``:
        (hours, n) kWh of the contract window, used by the max-weight rule)."""
        if self.matching == "random":
            prod, cons = random_matching(roles, rng)
        else:
            prod, cons = max_weight_matching(roles, tradable_kwh(surplus, deficit))
        self.set_pairs(roles, prod, cons)

    def set_pairs(self, roles: np.ndarray, producers: np.ndarray, consumers: np.ndarray) -> None:
        """Install roles and pairs (``match`` does this; tests can set hand-made pairs)."""
        roles = np.asarray(roles, dtype=np.int8).copy()
        prod, cons = np.asarray(producers, dtype=np.int64), np.asarray(consumers, dtype=np.int64)
        if roles.shape != (self.n,) or prod.shape != cons.shape or \
                (roles[prod] != PRODUCER).any() or (roles[cons] != CONSUMER).any() or \
                len(set(prod.tolist()) | set(cons.tolist())) != 2 * len(prod):
            raise ValueError("pairs must join distinct producers with distinct consumers")
        self.roles, self.producers, self.consumers = roles, prod, cons
        n, t = self.n, self.terms
        self.partner = np.full(n, -1, dtype=np.int64)
        self.partner[prod], self.partner[cons] = cons, prod
        self.matched = self.partner >= 0
        self._prod_of, self._cons_of = np.arange(n), np.arange(n)
        self._prod_of[cons], self._cons_of[prod] = prod, cons
        # reward on success = gain0 + gain1 * b_p (0 for the unmatched); on failure: loss
        self._gain0, self._gain1 = np.zeros(n), np.zeros(n)
        self._gain0[prod], self._gain1[prod] = -t.c_service, 1.0
        self._gain0[cons], self._gain1[cons] = t.retail_price - t.c_service, -1.0
        self._loss = np.where(self.matched, -t.c_lose, 0.0)
        self.open_grid_step(np.zeros(len(prod)))

    def open_grid_step(self, quantities: np.ndarray) -> None:
        """Start a grid step: each pair's contract (kWh) and fresh negotiation counters."""
        q = np.asarray(quantities, dtype=float)
        if q.shape != self.producers.shape or not np.all(np.isfinite(q)) or np.any(q < 0):
            raise ValueError(f"quantities: {len(self.producers)} finite kWh >= 0 expected")
        self.quantities = q
        self.tranche = q / self.steps
        self.steps_done = 0
        self._succ = np.zeros(self.n)  # successful steps of each prosumer's pair
        self._paid = np.zeros(self.n)  # sum of agreed prices over those steps
        self.bids = np.zeros(self.n)  # last step: every prosumer's bid (¢/kWh)
        self.producer_bid = np.zeros(self.n)  # last step: the bid of its pair's producer
        self.traded = np.zeros(self.n, dtype=bool)  # last step: its pair traded

    def negotiate(self, arms: np.ndarray) -> np.ndarray:
        """One negotiation step: every prosumer's arm index -> every prosumer's reward.

        Unmatched prosumers' arms are ignored and their reward is 0.
        """
        if self.steps_done >= self.steps:
            raise RuntimeError(f"all {self.steps} negotiation steps of this grid step are done")
        bids = self.prices[arms]
        b_p = bids[self._prod_of]
        ok = b_p <= bids[self._cons_of]  # the unmatched compare their bid with itself: 0 gain
        rewards = np.where(ok, self._gain0 + self._gain1 * b_p, self._loss)
        traded = ok & self.matched
        self._succ += traded
        self._paid += traded * b_p
        self.steps_done += 1
        self.bids, self.producer_bid, self.traded = bids, b_p, traded
        return rewards

    # Views of the last step and of the grid step so far.
    @property
    def last_bid(self) -> np.ndarray:
        """Every prosumer's bid in the last step (¢/kWh; NaN if unmatched or none yet)."""
        done = self.matched & (self.steps_done > 0)
        return np.where(done, self.bids, np.nan)

    @property
    def last_price(self) -> np.ndarray:
        """The agreed price of each prosumer's last step (¢/kWh; NaN if no trade)."""
        return np.where(self.traded, self.producer_bid, np.nan)

    @property
    def last_outcome(self) -> np.ndarray:
        """+1 traded, -1 failed, 0 unmatched or no step yet (per prosumer)."""
        out = np.where(self.traded, 1, -1) * (self.matched & (self.steps_done > 0))
        return out.astype(np.int8)

    @property
    def successes(self) -> np.ndarray:
        """Successful steps of each pair so far this grid step."""
        return self._succ[self.producers].astype(np.int64)

    @property
    def delivered_kwh(self) -> np.ndarray:
        """Energy each pair has traded so far this grid step (kWh)."""
        return self.tranche * self._succ[self.producers]

    @property
    def payments(self) -> np.ndarray:
        """What each pair's consumer owes its producer so far this grid step (¢)."""
        return self.tranche * self._paid[self.producers]

    def success_rate(self) -> np.ndarray:
        """Share of successful steps so far this grid step, per prosumer (0 if unmatched)."""
        return self._succ / self.steps_done if self.steps_done else np.zeros(self.n)


def settle(n: int, producers: np.ndarray, consumers: np.ndarray, delivered: np.ndarray,
           payments: np.ndarray, net_export: np.ndarray, terms: P2PTerms) -> dict:
    """Money and energy of one grid step per prosumer (see the module docstring).

    ``delivered``/``payments``: per pair (kWh, ¢); ``net_export``: per prosumer, realised PV −
    load (kWh) after any curtailment. Returns arrays of length ``n``.
    """
    sold = np.bincount(producers, delivered, minlength=n)
    bought = np.bincount(consumers, delivered, minlength=n)
    revenue = np.bincount(producers, payments, minlength=n)
    cost = np.bincount(consumers, payments, minlength=n)
    r = np.asarray(net_export, dtype=float) - sold + bought
    missing = np.maximum(-r, 0.0)
    shortfall = np.minimum(missing, sold)
    retail = missing - shortfall
    feed_in = np.maximum(r, 0.0)
    bill = (retail * terms.retail_price + shortfall * terms.imbalance_price
            - feed_in * terms.feed_in_price + cost - revenue)
    return {"p2p_sold_kwh": sold, "p2p_bought_kwh": bought, "p2p_revenue": revenue,
            "p2p_cost": cost, "retail_kwh": retail, "shortfall_kwh": shortfall,
            "feed_in_kwh": feed_in, "bill": bill}


@dataclass
class FeasibilityReport:
    """What the feeder says about a grid step's trades (pair indices into the pair arrays).

    ``pf_agreed``: the power flow with every agreed trade; ``pf``: after curtailment (the same
    object when nothing was curtailed). ``infeasible``: pairs implicated in a violation of
    ``pf_agreed`` (or, after a curtailment round, of the re-solved flow); ``curtailed``: pairs
    cancelled; ``curtailed_kwh``: per prosumer, PV spilled; ``reasons``: pair -> violations.
    """

    pf_agreed: object
    pf: object
    infeasible: np.ndarray
    curtailed: np.ndarray
    curtailed_kwh: np.ndarray
    reasons: dict[int, list[str]] = field(default_factory=dict)


class TradeFeasibility:
    """Checks a grid step's trades on the OpenDSS feeder (see the module docstring).

    Args:
        grid: the ``OpenDSSGrid`` (its topology gives the sensitivities). One generator
            ``ogg_p2p_<bus>`` is added at every prosumer bus; every prosumer bus must have loads
            (a consumer's withdrawal is spread over them in proportion to their base kW).
        buses: each prosumer's bus.
        max_injection_kw: each prosumer's largest possible injection (sizes the generators).
    """

    def __init__(self, grid, buses: list[str], max_injection_kw: np.ndarray):
        topo = grid.topology
        self.grid = grid
        self.buses = [str(b).lower() for b in buses]
        n = len(self.buses)
        for b in self.buses:
            if b not in grid.loads_at_bus:
                raise ValueError(f"prosumer bus {b!r} has no load; buses with loads: "
                                 f"{', '.join(sorted(grid.loads_at_bus))}")
        cap = np.asarray(max_injection_kw, dtype=float)
        distinct = sorted(set(self.buses))
        self.generators = {}
        for b in distinct:
            kva = 2.0 * max(float(cap[[i for i, x in enumerate(self.buses) if x == b]].sum()), 1.0)
            name = f"p2p_{b}"
            if f"ogg_{name}" not in grid.generator_names:
                grid.add_generator(name, b, 0.0, kva=kva)
            self.generators[b] = f"ogg_{name}"
        gens = list(self.generators.values())
        self._gen_names = gens
        self._gen_map = np.zeros((len(gens), n))  # prosumer injections -> bus generators
        for i, b in enumerate(self.buses):
            self._gen_map[gens.index(self.generators[b]), i] = 1.0
        self._gen_set = np.full(len(gens), np.nan)  # last values written (skip unchanged)
        self._load_map = np.zeros((len(grid.load_names), n))
        for i, b in enumerate(self.buses):
            idx = grid.loads_at_bus[b]
            base = grid.base_load_kw[idx]
            share = base / base.sum() if base.sum() > 0 else np.full(len(idx), 1 / len(idx))
            self._load_map[idx, i] = share
        self._H = topo.H[:, [topo.bus_index[b] for b in self.buses]]  # (branches, n)
        self._branch_of = {el: e for e, br in enumerate(topo.branches) for el in br.elements}
        self._path = {}  # bus -> mask of the branches between it and the source
        for bus in topo.buses:
            mask = np.zeros(len(topo.branches), dtype=bool)
            mask[[topo.branch_index[b] for b in topo.path_to_root(bus)]] = True
            self._path[bus] = mask
        self.topology = topo

    def reset(self) -> None:
        """Reset the grid to its base case (and forget the generator values written)."""
        self.grid.reset()
        self._gen_set = np.full(len(self._gen_names), np.nan)

    def solve(self, background_kw: np.ndarray, withdraw_kw: np.ndarray, inject_kw: np.ndarray):
        """One power flow: background loads + prosumer withdrawals and injections (kW)."""
        self.grid.set_loads_kw(background_kw + self._load_map @ withdraw_kw)
        gen = np.maximum(self._gen_map @ inject_kw, 0.0)
        for k in np.flatnonzero(gen != self._gen_set):
            self.grid.set_generator_kw(self._gen_names[k], gen[k])
        self._gen_set = gen
        return self.grid.solve()

    def implicated(self, pf, producers: np.ndarray, consumers: np.ndarray,
                    energy: np.ndarray) -> dict[int, list[str]]:
        """Pairs (with energy > 0) implicated in an injection violation of ``pf``.

        Returns ``{pair: [violations]}`` with labels ``"overload <element>"`` (reverse-flow
        overloads) and ``"over-voltage <bus>"``.
        """
        reasons: dict[int, list[str]] = {}
        if len(producers) == 0 or not pf.converged:
            return reasons
        active = energy > 0
        S = self._H[:, producers] - self._H[:, consumers]  # flow change per kWh, (branches, m)

        def mark(hit: np.ndarray, label: str) -> None:
            for k in np.flatnonzero(hit & active):
                reasons.setdefault(int(k), []).append(label)

        for element in pf.thermal_overloads:
            e = self._branch_of.get(element)
            if e is not None and pf.line_flows_kw[element] < 0:  # reverse flow
                mark(S[e] < 0, f"overload {element}")
        high = self.grid.voltage_band[1]
        for bus, v in pf.bus_voltage_violations().items():
            mask = self._path.get(bus)
            if v > high and mask is not None and mask.any():
                mark((S[mask] < 0).any(axis=0), f"over-voltage {bus}")
        return reasons

    def _violations(self, pf) -> set[str]:
        """Labels of every violation of ``pf`` (as in ``implicated``)."""
        high = self.grid.voltage_band[1]
        out = {f"overload {el}" for el in pf.thermal_overloads}
        for bus, v in pf.bus_voltage_violations().items():
            out.add(f"over-voltage {bus}" if v > high else f"under-voltage {bus}")
        return out

    def check(self, background_kw: np.ndarray, withdraw_kw: np.ndarray, inject_kw: np.ndarray,
              producers: np.ndarray, consumers: np.ndarray, energy: np.ndarray, *,
              curtail: bool = False, max_rounds: int = 5) -> FeasibilityReport:
        """Solve with the agreed trades, find the infeasible ones, optionally curtail them."""
        n, m = len(self.buses), len(producers)
        inject = np.asarray(inject_kw, dtype=float).copy()
        energy = np.asarray(energy, dtype=float).copy()
        pf = pf_agreed = self.solve(background_kw, withdraw_kw, inject)
        infeasible = np.zeros(m, dtype=bool)
        curtailed = np.zeros(m, dtype=bool)
        spilled = np.zeros(n)
        reasons: dict[int, list[str]] = {}
        for _ in range(max_rounds):
            implicated = self.implicated(pf, producers, consumers, energy)
            if not implicated:
                break
            cand = np.zeros(m, dtype=bool)
            cand[list(implicated)] = True
            cut = np.minimum(np.bincount(producers[cand], energy[cand], minlength=n), inject)
            pf_without = self.solve(background_kw, withdraw_kw, inject - cut)
            caused = self._violations(pf) - self._violations(pf_without)
            confirmed = {k: [w for w in why if w in caused] for k, why in implicated.items()}
            confirmed = {k: why for k, why in confirmed.items() if why}
            if not confirmed:
                break
            for k, why in confirmed.items():
                infeasible[k] = True
                reasons.setdefault(k, []).extend(w for w in why if w not in reasons.get(k, []))
            if not curtail:
                break
            todo = np.zeros(m, dtype=bool)
            todo[list(confirmed)] = True
            if not (todo == cand).all():
                cut = np.minimum(np.bincount(producers[todo], energy[todo], minlength=n), inject)
                pf_without = self.solve(background_kw, withdraw_kw, inject - cut)
            inject -= cut
            spilled += cut
            curtailed |= todo
            energy[todo] = 0.0
            pf = pf_without
        return FeasibilityReport(pf_agreed, pf, np.flatnonzero(infeasible),
                                 np.flatnonzero(curtailed), spilled, reasons)
