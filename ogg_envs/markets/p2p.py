"""Peer-to-peer negotiation market with a random market maker (the paper's second use case).

A plain object: roles, matching, negotiation outcomes and settlement, with no PettingZoo and
no OpenDSS in it. ``ogg_envs.envs.p2p_v0`` drives it. Prices are in ¢/kWh, energies in kWh per
grid step (one hour, so kWh and kW are the same numbers), money in ¢.

``P2PMarket`` implements ``ogg_envs.api.Market``: ``clear(arms, context=None) -> P2PClearing``
is one negotiation step (``negotiate``) reported as an ``ogg_envs.api.Clearing``, and
``reset()`` forgets the pairs and counters. ``match``, ``open_grid_step`` and ``set_pairs``
set up the grid step the negotiation steps belong to.

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

As a clearing (``P2PMarket.clear``), a negotiation step's surpluses are measured against the
utility, the prosumers' outside option: a traded tranche saves its consumer ``ub − b_p −
c_service`` per kWh (``consumer_surplus``) and earns its producer ``b_p − feed_in_price −
c_service`` per kWh more than feeding in (``producer_surplus``); the market maker's fees
``2 c_service`` per kWh traded complete ``welfare`` (there is no congestion rent).

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

The feeder
----------
The market knows nothing of the feeder. Whether the agreed trades fit on it (power flow,
overloads and over-voltages they cause, curtailment) is checked by
``ogg_envs.grid.trade_feasibility.TradeFeasibility``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import networkx as nx
import numpy as np

from ..api import Clearing, InvalidBidError, Market, MarketClearingError, MarketContext

__all__ = ["P2PTerms", "P2PMarket", "P2PClearing", "PRODUCER", "CONSUMER", "ROLE_NAMES",
           "assign_roles", "random_matching", "max_weight_matching", "tradable_kwh",
           "negotiation_outcome", "settle", "InvalidBidError", "MarketClearingError"]

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


class P2PClearing(Clearing):
    """One negotiation step as a clearing (``P2PMarket.clear``); prices ¢/kWh, energy kWh.

    Core fields (``ogg_envs.api.Clearing``, per prosumer in the market's order):
    ``participant_prices`` is the price each prosumer faces this step: the agreed price (its
    pair's producer bid) where its pair traded, else the utility's (retail for consumers,
    feed-in for producers); ``participant_quantities`` the kWh it traded this step (its pair's
    tranche, or 0); ``bids`` every prosumer's bid price. ``congested`` is empty and
    ``congestion_rent`` 0: the market does not see the feeder. The surpluses are per step,
    against trading with the utility (see the module docstring); ``welfare`` adds the market
    maker's fees. ``rewards`` are what ``negotiate`` returns; ``traded`` (= ``success``): the
    prosumer's pair traded.

    A negotiation step is cheap and environments read only ``rewards``, so everything else is
    computed on first use from the step's arrays (which no later step modifies).
    """

    solver = "negotiation"

    def __init__(self, *, participants: tuple[str, ...], rewards: np.ndarray,
                 traded: np.ndarray, bids: np.ndarray, producer_bid: np.ndarray,
                 tranche_of: np.ndarray, fallback: np.ndarray, producers: np.ndarray,
                 terms: P2PTerms):
        self.participants, self.rewards, self.traded, self.bids = (participants, rewards,
                                                                   traded, bids)
        self._producer_bid, self._tranche_of, self._fallback = producer_bid, tranche_of, fallback
        self._producers, self._terms = producers, terms

    @property
    def congested(self) -> list[str]:
        return []

    @property
    def success(self) -> np.ndarray:
        """Same as ``traded``."""
        return self.traded

    @cached_property
    def participant_prices(self) -> np.ndarray:
        return np.where(self.traded, self._producer_bid, self._fallback)

    @cached_property
    def participant_quantities(self) -> np.ndarray:
        return self._tranche_of * self.traded

    @cached_property
    def _surpluses(self) -> tuple[float, float, float]:
        t = self._terms
        sold = self.participant_quantities[self._producers]  # per pair: kWh traded this step
        kwh = float(sold.sum())
        paid = float(self._producer_bid[self._producers] @ sold)
        cs = (t.retail_price - t.c_service) * kwh - paid
        ps = paid - (t.feed_in_price + t.c_service) * kwh
        return cs, ps, cs + ps + 2.0 * t.c_service * kwh

    @property
    def consumer_surplus(self) -> float:
        return self._surpluses[0]

    @property
    def producer_surplus(self) -> float:
        return self._surpluses[1]

    @property
    def welfare(self) -> float:
        return self._surpluses[2]


class P2PMarket(Market):
    """The market maker and the negotiations of one grid step.

    Use: ``match`` (when the contract window starts), ``open_grid_step(quantities)`` (each grid
    step), ``negotiate(arms)`` (or ``clear(arms)``, the same step reported as a ``P2PClearing``)
    ``steps`` times, then read ``delivered_kwh`` and ``payments``. ``reset()`` returns to the
    freshly constructed state (no pairs, counters at zero). Per-prosumer arrays have length
    ``n`` and follow ``names`` (default ``prosumer_<i>``); per-pair arrays follow
    ``producers``/``consumers``. ``price_cap`` is the highest arm. Per prosumer, set with the
    pairs: ``roles``, ``partner`` (-1 unmatched), ``matched``, ``fallback_price`` (the
    utility's price it falls back to: feed-in for producers, retail for consumers); with the
    grid step: ``tranche_of`` (its pair's tranche, kWh; 0 unmatched).

    The hot path (``negotiate``) is a handful of vector operations on arrays prepared by
    ``match``: every prosumer knows the producer and the consumer of its pair (itself when
    unmatched) and the affine form of its reward, so no Python loop runs over pairs.
    """

    def __init__(self, n: int, terms: P2PTerms, steps: int, matching: str = "random",
                 names: list[str] | None = None):
        if int(n) < 1:
            raise ValueError(f"a market needs at least one prosumer, got {n}")
        if int(steps) < 1:
            raise ValueError(f"negotiation steps must be >= 1, got {steps}")
        if matching not in MATCHINGS:
            raise ValueError(f"matching must be one of {MATCHINGS}, got {matching!r}")
        self.n, self.terms, self.steps, self.matching = int(n), terms, int(steps), matching
        names = [f"prosumer_{i}" for i in range(self.n)] if names is None else \
            [str(x) for x in names]
        if len(names) != self.n or len(set(names)) != self.n:
            raise ValueError(f"names: {self.n} distinct names expected, got {names}")
        self.names = names
        self.index = {name: i for i, name in enumerate(names)}
        self.price_cap = float(terms.arms[-1])
        self.prices = np.array(terms.arms)
        self._n_arms = terms.n_arms
        self._names_t = tuple(names)
        self.reset()

    def reset(self) -> None:
        """The freshly constructed state: every prosumer an unmatched consumer, no pairs, no
        negotiation step done."""
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
        # The utility's price each prosumer falls back to (feed-in or retail), ¢/kWh.
        self.fallback_price = np.where(roles == PRODUCER, t.feed_in_price, t.retail_price)
        self.open_grid_step(np.zeros(len(prod)))

    def open_grid_step(self, quantities: np.ndarray) -> None:
        """Start a grid step: each pair's contract (kWh) and fresh negotiation counters."""
        q = np.asarray(quantities, dtype=float)
        if q.shape != self.producers.shape or \
                (q.size and not (q.min() >= 0 and math.isfinite(q.max()))):
            raise ValueError(f"quantities: {len(self.producers)} finite kWh >= 0 expected")
        self.quantities = q
        self.tranche = q / self.steps
        self.steps_done = 0
        n = self.n
        self._succ = np.zeros(n)  # successful steps of each prosumer's pair
        self._paid = np.zeros(n)  # sum of agreed prices over those steps
        self.bids = np.zeros(n)  # last step: every prosumer's bid (¢/kWh)
        self.producer_bid = np.zeros(n)  # last step: the bid of its pair's producer
        self.traded = np.zeros(n, dtype=bool)  # last step: its pair traded
        # Each prosumer's tranche (kWh per successful step; 0 unmatched), for every clearing.
        self.tranche_of = np.zeros(n)
        self.tranche_of[self.producers] = self.tranche_of[self.consumers] = self.tranche

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

    def arms_to_array(self, arms) -> np.ndarray:
        """Arm indices in prosumer order (array/list, or ``{name: arm}`` naming everyone).

        Raises ``InvalidBidError`` naming the prosumer for an arm that is not an integer in
        ``[0, n_arms)``."""
        if isinstance(arms, dict):
            arms = self.in_order(arms, "bids")
        if type(arms) is np.ndarray and arms.dtype == np.int64 and arms.shape == (self.n,) \
                and max(arms.view(np.uint64).tolist(), default=0) < self._n_arms:
            # The environments' hot path (as unsigned, a negative arm is huge; a list's max
            # costs a fraction of numpy's reduction machinery on a dozen numbers).
            return arms
        if isinstance(arms, np.ndarray) and arms.ndim != 1:
            raise ValueError(f"expected {self.n} arm indices, got shape {arms.shape}")
        raw = arms.tolist() if isinstance(arms, np.ndarray) else list(arms)
        if len(raw) != self.n:
            raise ValueError(f"expected {self.n} arm indices, got {len(raw)}")
        for i, a in enumerate(raw):
            if isinstance(a, bool | np.bool_) or not isinstance(a, int | np.integer) \
                    or not 0 <= a < self.terms.n_arms:
                raise InvalidBidError(f"{self.names[i]}: a bid is an arm index in "
                                      f"0..{self.terms.n_arms - 1}, got {a!r}")
        return np.array(raw, dtype=np.int64)

    def clear(self, arms, context: MarketContext | None = None) -> P2PClearing:
        """One negotiation step (``negotiate``) reported as a clearing (``context`` is ignored:
        the pairs and contracts are set by ``match``/``set_pairs`` and ``open_grid_step``)."""
        rewards = self.negotiate(self.arms_to_array(arms))
        return P2PClearing(participants=self._names_t, rewards=rewards, traded=self.traded,
                           bids=self.bids, producer_bid=self.producer_bid,
                           tranche_of=self.tranche_of, fallback=self.fallback_price,
                           producers=self.producers, terms=self.terms)

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

