"""Welfare-maximising clearing of affine supply and demand curves on a radial feeder.

This is the market of the paper's first use case (El Helou et al., 2022, eqs. 1-8). It is a
plain object: bids in, prices and quantities out; it knows nothing of PettingZoo. It implements
``ogg_envs.api.Market``: ``clear(bids, context=None) -> ClearingResult`` (an
``ogg_envs.api.Clearing``) and ``reset()``.

What a bid means
----------------
Every participant bids a quadruple ``(p_max, p_min, q_max, q_min)``: prices in ¢/kWh,
quantities in kW held over the market interval (one hour: kW = kWh).

* **Supply** offers any quantity ``q`` in ``[q_min, q_max]`` along the non-decreasing line
  from ``(q_min, p_min)`` to ``(q_max, p_max)`` (eqs. 2-3): its marginal price at ``q`` is
  ``p_min + (p_max - p_min) (q - q_min) / (q_max - q_min)``. ``q_min > 0`` is a must-run
  minimum. ``p_max == p_min`` is a flat (price-taking) offer.
* **Demand** bids for any ``q`` in ``[q_min, q_max]`` along the non-increasing line from
  ``(q_min, p_max)`` to ``(q_max, p_min)`` (eqs. 4-5). ``q_min`` is its firm part.
  An **inelastic** bid is ``q_min == q_max``: that quantity at any price up to the cap.

A bid is *valid* when all four numbers are finite, ``price_floor <= p_min <= p_max <=
price_cap`` and ``0 <= q_min <= q_max`` (``<= q_limit + 1e-9`` where a participant's quantity
is limited this hour). That rule is written once (``CurveBidRule``), for one bid and for
arrays of them: ``Bid.check`` raises ``InvalidBidError`` (a ``ValueError`` naming the
participant) for an invalid bid; ``Bid.repair`` returns the nearest valid bid (prices swapped
if reversed and clipped into the band, quantities sorted and clipped into ``[0, q_limit]``)
with the list of fixes; ``CurveMarket.validate`` (every clearing) and ``CurveMarket.repair``
(the ``ogg_envs.api.Market`` method the environments apply with ``invalid_bids="repair"``:
``Bid.repair`` of every invalid row) check a whole round at once. NaN or infinite numbers are
never repaired. ``InvalidBidError`` and ``MarketClearingError`` are the ones of
``ogg_envs.api`` (re-exported here).

The clearing problem (eqs. 1, 6-7)
---------------------------------
maximise   sum_d U_d(q_d) - sum_s C_s(q_s) - price_cap * sum_b shed_b + price_floor * sum_b spill_b
subject to gen_b - dem_b + shed_b - spill_b = p_b          (nodal balance, dual = nodal price)
           sum_b p_b = 0                                     (lossless: the feeder is balanced)
           -f_max <= H p <= f_max                            (radial line-flow limits, eq. 1)
           q_min <= q <= q_max

``U_d`` and ``C_s`` are the integrals of the bid curves (extended flat to the left of
``q_min``). ``shed_b`` is firm demand that cannot be served: it is priced at ``price_cap``, so a
bus that sheds load has the cap as its price and nothing ever raises from the solver.
``spill_b`` is must-run supply that cannot be absorbed, valued at ``price_floor``. Prices are
reported in the band ``[price_floor, price_cap]``: when a bus sheds all its firm demand its
dual is only bounded below by the cap, and the cap is its price.

Losses (``set_losses``)
-----------------------
By default the feeder is lossless. ``set_losses(loss_factors, loss_kw, injections_kw)`` (an
``ogg_envs.api.LossModel``: marginal loss factors ``lf`` of a solved AC operating point, its
losses ``L0`` and injections ``p0``) replaces the balance by the linearised lossy one

           sum_b (1 - lf_b) p_b = L0 - sum_b lf_b p0_b      (sum_b p_b = L(p), the losses)

so the supply cleared covers the demand and ``L(p) = L0 + lf . (p - p0)`` (``losses_kw`` of
the result). Flows stay the lossless ``H p``. ``set_losses(None)`` and ``reset()`` return to
the lossless balance; with ``lf = 0`` and ``L0 = 0`` every result is the lossless one. Only
``formulation="dense"`` prices losses.

Prices, payments and the congestion rent (eq. 8)
------------------------------------------------
The nodal price ``lambda_b`` is the dual of bus b's balance: the cost of serving one more kW
there. Each participant is settled at its own bus's price. Without congestion every price is
the same and payments balance revenues exactly (eq. 8 as a budget-balance identity). With
congestion, consumers pay more than producers receive; the difference is the congestion rent
``sum_b lambda_b (dem_b - shed_b - gen_b + spill_b) = sum_e mu_e * |f_e|``, which accrues to the
network operator. We read eq. 8 that way: payments = revenues + congestion rent.

Stationarity splits every price (``price_components``, per bus) into

    lambda_b = energy + loss_b + congestion_b,    energy = -y_balance (the price at the root),
    loss_b = -lf_b * energy,    congestion_b = sum_{e on the path of b} mu_e

(``loss_b = 0`` without losses; the price of a bus that sheds all its firm demand is clipped to
the cap, the clip counted in its congestion part). With losses the settlement identity is

    payments - revenues = congestion_rent + loss_surplus,
    congestion_rent = sum_e mu_e * |f_e|,   loss_surplus = energy * (lf . p - L(p))

(multiply the decomposition by the withdrawals ``-p_b`` and use ``sum_b p_b = L(p)``): the
market pays the source ``energy * L(p)`` for the losses and collects ``energy * lf . p``
through the loss parts; with losses about quadratic in the flows ``lf . p ~ 2 L``, so the
loss surplus is about ``energy * L >= 0``, which accrues to the network operator like the rent.

Ties and the regularisation (why the same bids always clear the same way)
-------------------------------------------------------------------------
The problem above can have many optima: identical offers at the same price, flat offers at
different buses with the same price, shed load split over buses. A solver would then pick one
by its history (warm starts). The market instead clears a strictly convex version with a unique
optimum, so every solver, fresh or used, returns the same dispatch:

* every bid curve's price span is at least ``FLAT_TILT`` = 1e-5 ¢/kWh: a flat offer (or one
  flatter than that) is cleared as if its price rose (supply) or fell (demand) by ``FLAT_TILT``
  across its range ``[q_min, q_max]``. Tied offers at one price thus share the tie in
  proportion to their ranges (each clears the same fraction of its range; the zone solver of
  ``formulation="flow"`` splits ties by the same rule), and a price moves by at most
  ``FLAT_TILT`` against the unregularised problem;
* shed and spilled kW carry ``SLACK_REGULARISATION / 2 * kW²`` (1e-6 ¢/kWh per kW), which
  spreads shedding over buses uniquely and moves a shedding bus's price (clipped to the cap
  anyway) by 1e-6 ¢/kWh per kW shed.

Welfare and the flows differ from the unregularised optimum by at most ``FLAT_TILT`` times the
quantities involved; the tests check this against the CVXPY statement without regularisation
(objective and optimality conditions) and check the argmin against the regularised one.

Solving
-------
The problem is stated twice. The fast path (``formulation="dense"``) eliminates the bus
injections (``p = M z`` for the market's variables ``z = [q, shed, spill]``) and hands DAQP,
a dense dual active-set solver (``ogg_envs.markets.solvers.daqp_qp``), the QP with one
equality (the lossless balance, ``sum p = 0``) and one two-sided row per branch limit that can
bind (branches without a finite limit or without a participant downstream are left out, and of
branches in series that carry the same flow only the one with the smallest limit is kept, the
deepest of equal ones). Each solve starts from the same guess (shed and spill at zero), never
from the previous clearing. The nodal price of bus b is ``-(y_balance + sum_e H[e, b] y_e)``
from the duals. Fixed variables (inelastic bids, slack at buses without firm parts) are
substituted out before DAQP sees the problem. The clearing's hot path fills the QP's vectors
into one array from a template built with the participants, calls ``DenseQP.solve_diagonal``
(no bound duals) and re-uses the slack bounds in the accounts: every
number is the one the statement gives, bit for bit (tested). On IEEE 34 (33 bids, 66
variables of which about 37 free, 28 branch rows) DAQP needs about 15 active-set iterations
on uniformly random bids; the sparse solvers on the same statement (``solver="clarabel"`` or
``"osqp"``, cold) measured far slower, and OSQP's polished solution failed its accuracy check
on most random instances.
If DAQP fails, Clarabel solves the same statement. (Clarabel, an interior-point method, meets
the tie rule only to its tolerance: the tilt's curvature is tiny, so its split of a tie can be
kW off the rule, though the same for the same data.) ``CurveMarket.cvxpy_problem`` states the
problem in CVXPY with Parameters (compiled once): the readable reference used by the tests
(``clear_cvxpy``, with or without the regularisation) and the last fallback. Feeders above 100
buses use ``formulation="flow"`` (see the class). The result of the last clearing is cached
(same bids and limits: the same result object); ``reset()`` forgets it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property, partial
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from ..api import (
    Clearing,
    CongestionThreshold,
    Deferred,
    InvalidBidError,
    LossModel,
    Market,
    MarketClearingError,
    MarketContext,
    check_participants,
)
from ..grid.topology import LARGE_FEEDER_BUSES, Topology
from .radial import Items, RadialClearing
from .solvers import clarabel_qp, cvxpy_ref, daqp_qp, osqp_qp

__all__ = ["Bid", "CurveBidRule", "CurveMarket", "ClearingResult", "InvalidBidError",
           "MarketParticipant", "MarketClearingError"]

SUPPLY, DEMAND = "supply", "demand"
_CVX_SIGN = -1.0
# The tie-breaking regularisation (module docstring, "Ties and the regularisation").
FLAT_TILT = 1e-5  # ¢/kWh: the smallest price span of a bid curve as cleared
SLACK_REGULARISATION = 1e-6  # ¢/kWh per kW: curvature of the cost of shed and spilled kW
DENSE_SOLVERS = ("daqp", "clarabel", "osqp")
Q_TOLERANCE = 1e-9  # kW a valid bid's q_max may exceed its limit by (rounding)
_HUGE = np.finfo(float).max  # a bound that every finite number meets and inf does not


def _within(bids: np.ndarray, low, high) -> np.ndarray:
    """The validity rule of curve bids (module docstring), per row of ``bids`` (n, 4): column
    0 ``low[0] <= p_min <= p_max <= high[:, 0]``, column 1 ``low[1] <= q_min <= q_max <=
    high[:, 1]``. NaN fails every comparison; finite bounds make inf fail too."""
    upper, lower = bids[:, 0::2], bids[:, 1::2]  # (p_max, q_max) and (p_min, q_min)
    return (low <= lower) & (lower <= upper) & (upper <= high)


@dataclass(frozen=True)
class MarketParticipant:
    name: str
    bus: str
    side: str  # "supply" or "demand"


@dataclass(frozen=True)
class Bid:
    """An affine curve ``(p_max, p_min, q_max, q_min)``; see the module docstring."""

    p_max: float
    p_min: float
    q_max: float
    q_min: float

    @classmethod
    def from_array(cls, a) -> Bid:
        a = np.asarray(a, dtype=float).reshape(-1)
        if a.shape != (4,):
            raise ValueError(f"a bid has 4 numbers (p_max, p_min, q_max, q_min), got {a.shape}")
        return cls(float(a[0]), float(a[1]), float(a[2]), float(a[3]))

    @classmethod
    def inelastic(cls, quantity: float, price: float) -> Bid:
        return cls(price, price, quantity, quantity)

    @classmethod
    def flat(cls, price: float, q_max: float, q_min: float = 0.0) -> Bid:
        return cls(price, price, q_max, q_min)

    def as_array(self) -> np.ndarray:
        return np.array(self.numbers())

    def numbers(self) -> tuple[float, float, float, float]:
        """``(p_max, p_min, q_max, q_min)``."""
        return self.p_max, self.p_min, self.q_max, self.q_min

    def check(self, who: str, price_cap: float, price_floor: float = 0.0,
              q_limit: float = math.inf) -> Bid:
        """This bid, if valid (module docstring); else ``InvalidBidError`` naming ``who`` and
        what is wrong."""
        _check_finite(who, self.numbers())
        prices_ok, quantities_ok = _within(self.as_array()[None], (price_floor, 0.0),
                                           (price_cap, q_limit + Q_TOLERANCE))[0].tolist()
        if not prices_ok:
            raise InvalidBidError(
                f"{who}: bid prices need {price_floor} <= p_min <= p_max <= {price_cap}, got "
                f"p_min={self.p_min}, p_max={self.p_max}")
        if not quantities_ok:
            raise InvalidBidError(
                f"{who}: bid quantities need 0 <= q_min <= q_max <= {q_limit}, got "
                f"q_min={self.q_min}, q_max={self.q_max}")
        return self

    def repair(self, who: str, price_cap: float, price_floor: float = 0.0,
               q_limit: float = math.inf) -> tuple[Bid, list[str]]:
        """The nearest valid bid and what was changed. NaN/inf still raise."""
        numbers, fixes = _repaired(who, self.numbers(), price_cap, price_floor, q_limit)
        return Bid(*numbers), fixes

    # Curve evaluations (used for surplus accounting and plots).
    def slope(self) -> float:
        dq = self.q_max - self.q_min
        return (self.p_max - self.p_min) / dq if dq > 0 else 0.0

    def supply_price(self, q):
        return self.p_min + self.slope() * (np.asarray(q) - self.q_min)

    def demand_price(self, q):
        return self.p_max - self.slope() * (np.asarray(q) - self.q_min)

    def supply_cost(self, q: float) -> float:
        """Integral of the supply curve from 0 (flat at p_min left of q_min)."""
        x = q - self.q_min
        if x <= 0:
            return self.p_min * q
        return self.p_min * q + 0.5 * self.slope() * x * x

    def demand_value(self, q: float) -> float:
        """Integral of the demand curve from 0 (flat at p_max left of q_min)."""
        x = q - self.q_min
        if x <= 0:
            return self.p_max * q
        return self.p_max * q - 0.5 * self.slope() * x * x


def _repaired(who: str, numbers, price_cap: float, price_floor: float,
              q_limit: float) -> tuple[tuple[float, float, float, float], list[str]]:
    """``Bid.repair`` on the four numbers ``(p_max, p_min, q_max, q_min)`` (no ``Bid``
    objects: ``CurveBidRule.repair`` runs it for every invalid row of a round)."""
    _check_finite(who, numbers)
    fixes = []
    p_hi, p_lo, q_hi, q_lo = numbers
    if p_hi < p_lo:
        p_hi, p_lo = p_lo, p_hi
        fixes.append("p_max < p_min: swapped")
    if q_hi < q_lo:
        q_hi, q_lo = q_lo, q_hi
        fixes.append("q_max < q_min: swapped")
    clipped = (_clip(p_hi, price_floor, price_cap), _clip(p_lo, price_floor, price_cap),
               _clip(q_hi, 0.0, q_limit), _clip(q_lo, 0.0, q_limit))
    if clipped != (p_hi, p_lo, q_hi, q_lo):
        fixes.append("clipped into the price band / quantity limit")
    return clipped, fixes


def _check_finite(who: str, numbers) -> None:
    """``InvalidBidError`` naming ``who`` and the first of a bid's four numbers that is NaN
    or infinite."""
    if not all(map(math.isfinite, numbers)):
        for label, v in zip(("p_max", "p_min", "q_max", "q_min"), numbers):
            if not math.isfinite(v):
                raise InvalidBidError(f"{who}: bid {label} is {v!r}; bids must be finite "
                                      "numbers")


def _clip(v: float, low: float, high: float) -> float:
    """``min(max(v, low), high)``, the same number (signed zeros too) without the builtins'
    cost."""
    v = low if low > v else v
    return high if high < v else v


class CurveBidRule:
    """The validity rule of curve bids (module docstring) and its repair, for rounds of bids:
    what ``CurveMarket.validate`` and ``CurveMarket.repair`` apply (and an environment whose
    market takes curve bids without a repair of its own). ``names``: the participants, in the
    order of the rows. A round whose bids are all valid costs a few whole-array comparisons;
    only invalid rows go through ``Bid.check`` / ``Bid.repair``'s rule (a round has few:
    numpy's per-call cost would outweigh them)."""

    def __init__(self, names, price_cap: float, price_floor: float = 0.0):
        self.names = list(names)
        self.price_cap, self.price_floor = price_cap, price_floor
        self._low = np.array([max(price_floor, -_HUGE), 0.0])
        self._unlimited = self._high(None, len(self.names))
        self._limited = (None, None)  # the last q_limit's bytes and its bounds

    def _high(self, q_limit, rows: int) -> np.ndarray:
        """The (rows, 2) upper bounds of (p_max, q_max): the price cap and ``q_limit +
        Q_TOLERANCE`` (None or inf: every finite number)."""
        high = np.empty((rows, 2))
        high[:, 0] = min(self.price_cap, _HUGE)  # (an infinite cap still refuses inf)
        if q_limit is None:
            high[:, 1] = _HUGE
        else:
            np.add(q_limit, Q_TOLERANCE, out=high[:, 1])
            np.minimum(high[:, 1], _HUGE, out=high[:, 1])
        return high

    def _bounds(self, q_limit, rows: int) -> np.ndarray:
        if q_limit is None:
            return self._unlimited if rows == len(self.names) else self._unlimited[:rows]
        if type(q_limit) is not np.ndarray or q_limit.dtype != float or rows != len(self.names):
            return self._high(q_limit, rows)
        key = q_limit.tobytes()  # an environment's limits change by the hour, not the round
        if key != self._limited[0]:
            self._limited = (key, self._high(q_limit, rows))
        return self._limited[1]

    def invalid_rows(self, bids: np.ndarray, q_limit=None) -> list[int]:
        """The rows of ``bids`` (n, 4) that break the rule (``q_limit``: per row, or None)."""
        ok = _within(bids, self._low, self._bounds(q_limit, len(bids)))
        if np.logical_and.reduce(ok, axis=None):
            return []
        return (~np.logical_and.reduce(ok, axis=1)).nonzero()[0].tolist()

    def check(self, bids: np.ndarray, q_limit=None, names=None) -> None:
        """``InvalidBidError`` (``Bid.check``'s message) for the first invalid row."""
        self.repair(bids, q_limit, names=names, strict=True)

    def repair(self, bids: np.ndarray, q_limit=None, *, names=None,
               strict: bool = False) -> tuple[np.ndarray, dict[str, list[str]]]:
        """``ogg_envs.api.Market.repair`` for curve bids: ``bids`` (n, 4) floats, one row per
        participant (or per name of ``names``); ``q_limit`` per row or None. The same array
        when every bid is valid, else a copy with each invalid row replaced by ``Bid.repair``'s
        nearest valid bid, and ``Bid.repair``'s fixes per repaired participant. NaN/inf
        raise ``InvalidBidError``; so does with ``strict`` the first invalid row
        (``Bid.check``'s message)."""
        invalid = self.invalid_rows(bids, q_limit)
        if not invalid:
            return bids, {}
        names = self.names if names is None else names
        limits = [math.inf] * len(bids) if q_limit is None else q_limit
        if np.shape(limits) != (len(bids),):
            limits = np.broadcast_to(limits, (len(bids),))
        if strict:
            k = invalid[0]
            Bid(*bids[k].tolist()).check(names[k], self.price_cap, self.price_floor,
                                         float(limits[k]))
            raise AssertionError("Bid.check passed a bid the rule refused")  # one rule: never
        bids = bids.copy()
        repairs = {}
        for k in invalid:
            bids[k], repairs[names[k]] = _repaired(names[k], bids[k].tolist(), self.price_cap,
                                                   self.price_floor, float(limits[k]))
        return bids, repairs


@dataclass(kw_only=True)
class ClearingResult(Clearing):
    """Outcome of one clearing. Prices ¢/kWh, quantities kW, money ¢ per hour.

    The core fields are ``ogg_envs.api.Clearing``'s: ``participants`` (the market's order),
    ``participant_prices`` (the nodal price at each participant's bus),
    ``participant_quantities`` (cleared kW; demand: served kW), ``congested`` (branches at their
    limit), ``total_shed_kw``, ``total_curtailed_kw`` (= spilled must-run supply), the surpluses
    on the bids (``welfare = consumer_surplus + producer_surplus + congestion_rent``),
    ``feasible`` (False when firm demand was shed), ``solver`` and ``bids`` (the (n, 4) bid
    array as cleared). This market's own: arrays per bus (``buses`` order) and per branch
    (``branches`` order), and name-keyed views of them, built on first use: ``prices`` (bus ->
    nodal price), ``quantities`` (participant -> kW), ``flows_kw`` (branch -> kW),
    ``shed_kw`` and ``spilled_kw`` (bus -> kW, where more than 1e-6 kW). ``price_components``:
    ``energy``, ``loss`` and ``congestion`` per bus, summing to ``bus_prices``; ``losses_kw``
    and ``loss_surplus`` (module docstring, "Losses").

    The money accounts, ``loss_surplus``, ``price_components``, ``shed``, ``spilled`` and
    ``total_curtailed_kw`` are computed when first read (the environments read only prices,
    quantities, congestion, feasibility and ``losses_kw`` every round), from this clearing's
    own arrays: treat a result as read-only. Pickling, equality and ``repr`` see every
    number.
    """

    buses: tuple[str, ...]
    branches: tuple[str, ...]
    bus_prices: np.ndarray  # per bus: nodal price
    flows: np.ndarray  # per branch: kW, positive away from the source
    consumer_payments: float = Deferred()
    producer_revenue: float = Deferred()
    consumer_surplus: float = Deferred(0.0)
    producer_surplus: float = Deferred(0.0)
    congestion_rent: float = Deferred(0.0)
    loss_surplus: float = Deferred(0.0)
    welfare: float = Deferred(0.0)
    total_curtailed_kw: float = Deferred(0.0)
    price_components: dict[str, np.ndarray] = Deferred(dict)  # per bus
    shed: np.ndarray | None = Deferred(None)  # per bus: firm demand not served (None: none shed)
    spilled: np.ndarray | None = Deferred(None)  # per bus: must-run supply not absorbed
    solver: str = "daqp"
    _demand_names: frozenset = field(default=frozenset(), repr=False)

    @classmethod
    def _of_fields(cls, fields: dict) -> ClearingResult:
        """The result ``cls(**fields)`` is, for ``fields`` naming every field that is not
        ``Deferred``, in field order (what ``CurveMarket._result`` gives): ``__init__`` would
        store the same values in the same order and skip the deferred ones, but with a call
        per field (tested)."""
        result = cls.__new__(cls)
        result.__dict__.update(fields)
        return result

    @cached_property
    def prices(self) -> dict[str, float]:
        return dict(zip(self.buses, self.bus_prices.tolist()))

    @cached_property
    def quantities(self) -> dict[str, float]:
        return dict(zip(self.participants, self.participant_quantities.tolist()))

    @cached_property
    def flows_kw(self) -> dict[str, float]:
        return dict(zip(self.branches, self.flows.tolist()))

    @cached_property
    def shed_kw(self) -> dict[str, float]:
        return _positive(self.buses, self.shed)

    @cached_property
    def spilled_kw(self) -> dict[str, float]:
        return _positive(self.buses, self.spilled)

    def average_consumer_price(self) -> float:
        return self.consumer_payments / max(self.total_demand_kw, 1e-12)

    @property
    def total_demand_kw(self) -> float:
        return float(sum(q for n, q in self.quantities.items() if n in self._demand_names))


def _positive(names, values) -> dict[str, float]:
    if values is None:
        return {}
    return {names[b]: float(values[b]) for b in np.flatnonzero(values > 1e-6)}


class _Layout(NamedTuple):
    """What ``_curve_accounts`` needs of a market's structure (fixed for its life)."""

    demand: np.ndarray  # per participant: 1.0 for demand, else 0.0
    supply: np.ndarray  # per participant: 1.0 for supply, else 0.0
    shed_buses: np.ndarray  # the bus of each shed variable
    spill_buses: np.ndarray  # the bus of each spill variable
    n_buses: int


def _curve_accounts(layout: _Layout, bids, served, price_p, energy, congestion, prices,
                    unclipped, loss, losses, injections, losses_kw, slack) -> dict:
    """The deferred fields of a ``ClearingResult`` (``CurveMarket._result`` leaves them to
    this): the surpluses on the bids, payments, the price components, shed and spilled kW
    per bus, and the loss surplus. ``unclipped``, ``loss``: see
    ``CurveMarket._nodal_prices``; ``losses``: the loss
    model or None (``injections``: the bus injections, ``losses_kw``: their losses);
    ``slack``: the solver's shed then spilled kW (negative rounding counts as 0), or None when
    nothing was cut."""
    B = layout.n_buses
    shed = spill = None
    total_spilled = 0.0
    if slack is not None:
        slack = np.maximum(slack, 0.0)
        ns = len(layout.shed_buses)
        shed, spill = np.zeros(B), np.zeros(B)
        shed[layout.shed_buses] = slack[:ns]
        spill[layout.spill_buses] = slack[ns:]
        total_spilled = float(spill[spill > 1e-6].sum())
    if unclipped is not None:  # the clip counted in the congestion parts
        congestion = congestion + (prices - unclipped)
    energies = np.empty(B)
    energies.fill(energy)
    components = {"energy": energies, "loss": np.zeros(B) if loss is None else loss,
                  "congestion": congestion}
    p_max, p_min, q_min = bids[:, 0], bids[:, 1], bids[:, 3]
    dq = bids[:, 2] - q_min  # the bids' curve slopes (``_curve_coefficients``)
    slope = np.divide(p_max - p_min, dq, out=np.zeros(len(dq)), where=dq > 1e-12)
    above = np.maximum(served - q_min, 0.0)
    half = 0.5 * slope * above * above  # the curve integrals beyond the firm part
    bought = served * layout.demand
    sold = served - bought
    pay = float(price_p @ bought)
    rev = float(price_p @ sold)
    loss_surplus = 0.0
    if losses is not None:  # module docstring, "Losses"
        loss_surplus = energy * (float(losses.factors @ injections) - losses_kw)
    cs = float(p_max @ bought - half @ layout.demand) - pay
    ps = rev - float(p_min @ sold + half @ layout.supply)
    return dict(welfare=cs + ps + (pay - rev), consumer_surplus=cs, producer_surplus=ps,
                congestion_rent=pay - rev - loss_surplus, loss_surplus=loss_surplus,
                price_components=components, consumer_payments=pay,
                producer_revenue=rev, shed=shed, spilled=spill,
                total_curtailed_kw=total_spilled)


class CurveMarket(Market):
    """The congestion-constrained curve market on a radial ``Topology``.

    Args:
        topology: the radial grid model (``grid.topology``, or hand-made); its branch limits are
            the line-flow limits (``set_limits`` changes them).
        participants: ``MarketParticipant`` list (name, bus, side); fixed for the market's life.
        price_cap: ¢/kWh; the highest valid bid price and the price of shed load.
        price_floor: ¢/kWh; the lowest valid bid price and the value of spilled must-run supply.
        congestion_tol: relative slack under which a branch counts as congested.
        formulation: ``"dense"`` (the statement above with ``H``, solved by ``solver``),
            ``"flow"`` (flow conservation per bus on the tree, solved exactly by zones:
            ``ogg_envs.markets.radial``; no dense ``H``; Clarabel on the same sparse statement
            as its fallback) or ``"auto"`` (``"flow"`` on feeders with more than
            ``LARGE_FEEDER_BUSES`` (100) buses, IEEE 123 and larger, else ``"dense"``). Both
            clear ties by the same rule and agree up to ``FLAT_TILT`` and solver tolerances.
        solver: the dense statement's solver, one of ``DENSE_SOLVERS``: ``"daqp"`` (default,
            the fast path), ``"clarabel"`` or ``"osqp"`` (sparse, cold; kept for comparison).
            A failing solver falls back to Clarabel, then to the CVXPY statement.
    """

    _passed = None  # the bytes of the last bids ``repair`` found valid

    def __init__(self, topology: Topology, participants: list[MarketParticipant], *,
                 price_cap: float = 100.0, price_floor: float = 0.0,
                 congestion_tol: float = 1e-5, formulation: str = "auto",
                 solver: str = "daqp"):
        if not participants:
            raise ValueError("a market needs participants")
        if not price_floor < price_cap:
            raise ValueError("price_floor must be below price_cap")
        names = check_participants(topology, participants, "side", (SUPPLY, DEMAND))
        if formulation not in ("auto", "dense", "flow"):
            raise ValueError(f"formulation must be 'auto', 'dense' or 'flow', got "
                             f"{formulation!r}")
        if solver not in DENSE_SOLVERS:
            raise ValueError(f"solver must be one of {DENSE_SOLVERS}, got {solver!r}")
        self.topology = topology
        self.participants = list(participants)
        self.names = names
        self.index = {n: i for i, n in enumerate(names)}
        self.price_cap = float(price_cap)
        self.price_floor = float(price_floor)
        self.congestion_tol = congestion_tol
        self.is_supply = np.array([p.side == SUPPLY for p in participants])
        self._bus_of = np.array([topology.bus_index[p.bus] for p in participants])
        self._demand_names = frozenset(n for n, s in zip(names, self.is_supply) if not s)
        self._limits = topology.limits_kw.astype(float).copy()
        if formulation == "auto":
            formulation = "flow" if len(topology.buses) > LARGE_FEEDER_BUSES else "dense"
        self.formulation = formulation
        self.solver = solver
        self._branch_names_t = tuple(br.name for br in topology.branches)
        self._buses_t = tuple(topology.buses)
        self._names_t = tuple(names)
        self._losses = None  # a LossModel (set_losses) or None: lossless
        self.bid_rule = CurveBidRule(names, self.price_cap, self.price_floor)
        self._setup()
        self._cvx = None

    # ------------------------------------------------------------------ problem structure
    def _setup(self) -> None:
        """The fixed structure of the fast path. Variables ``z = [q, shed, spill]`` (the
        solvers' layout; results use ``x = [q, shed, spill, p]``); ``M`` maps ``z`` to the bus
        injections ``p``. Only numbers change from one clearing to the next."""
        n, B = len(self.participants), len(self.topology.buses)
        self._shed_buses = sorted({int(b) for b, s in zip(self._bus_of, self.is_supply) if not s})
        self._spill_buses = sorted({int(b) for b, s in zip(self._bus_of, self.is_supply) if s})
        ns, nsp = len(self._shed_buses), len(self._spill_buses)
        nb = n + ns + nsp  # bounded variables
        self._sl = {"q": slice(0, n), "shed": slice(n, n + ns), "spill": slice(n + ns, nb),
                    "p": slice(nb, nb + B)}
        self._nx, self._nb = nb + B, nb
        self._slack_curv = np.full(nb - n, SLACK_REGULARISATION)
        self._f = np.zeros(nb)  # linear costs: shed at the cap, spill at the floor
        self._f[self._sl["shed"]] = self.price_cap
        self._f[self._sl["spill"]] = -self.price_floor
        self._demand_f = (~self.is_supply).astype(float)
        self._supply_f = self.is_supply.astype(float)
        # firm (q_min) kW of each shed/spill variable's side at its bus: the slack's upper bound
        slack_bus = np.array(self._shed_buses + self._spill_buses, dtype=np.int64)
        slack_side = np.r_[np.zeros(ns, dtype=bool), np.ones(nsp, dtype=bool)]
        slack_at = {key: k for k, key in enumerate(zip(slack_bus.tolist(), slack_side.tolist()))}
        self._slack_of = np.array([slack_at[key] for key in zip(  # each one's slack variable
            self._bus_of.tolist(), self.is_supply.tolist())], dtype=np.int64)
        members = [[] for _ in range(ns + nsp)]  # each slack variable's participants, in order
        for i, j in enumerate(self._slack_of.tolist()):
            members[j].append(i)
        self._slack_members = tuple(map(tuple, members))
        self._shed_idx = np.array(self._shed_buses, dtype=np.int64)
        self._spill_idx = np.array(self._spill_buses, dtype=np.int64)
        self._layout = _Layout(self._demand_f, self._supply_f, self._shed_idx, self._spill_idx,
                               B)
        # rows [P diagonal, q, lb, ub] of the dense QP (daqp_qp.DenseQP.solve_diagonal): the
        # slack's curvature, costs and zero lower bounds; each clearing fills in the rest
        self._dense_template = np.zeros((4, nb))
        self._dense_template[0] = np.r_[np.ones(n), self._slack_curv]
        self._dense_template[1, n:] = self._f[n:]
        # a curve's price at its firm quantity, signed as a cost (supply: p_min, demand:
        # -p_max), as entries of the flattened (n, 4) bid array and their signs
        self._own_price = np.arange(n) * 4 + self.is_supply
        self._cost_sign = np.where(self.is_supply, 1.0, -1.0)
        self._threshold = CongestionThreshold()  # |flow| at which a branch is congested
        self._cache = None
        self._dense = None
        if self.formulation == "flow":  # flow conservation per bus: no H
            self._setup_flow(n, B, ns, nsp, nb)
            return
        M = np.zeros((B, nb))  # gen - dem + shed - spill at each bus
        M[self._bus_of, np.arange(n)] = np.where(self.is_supply, 1.0, -1.0)
        M[self._shed_buses, n + np.arange(ns)] = 1.0
        M[self._spill_buses, n + ns + np.arange(nsp)] = -1.0
        self._M = M
        self._balance_row = M.sum(axis=0)  # sum of all injections
        G = self.topology.H @ M  # branch flows caused by z
        self._G = G
        # A branch whose flow cannot change (nothing downstream), or always equals the balance
        # (everything downstream: its flow is zero), never binds; branches in series with the
        # same participants downstream carry the same flow (identical rows of G).
        self._row_useful = np.abs(G).sum(axis=1) > 0
        # (a branch above every participant carries -sum p: zero on the lossless balance only)
        self._row_all_below = np.all(G == -self._balance_row, axis=1)
        self._row_group = np.unique(G, axis=0, return_inverse=True)[1].reshape(-1)

    def _dense_rows(self):
        """The dense statement's rows for the current limits (rebuilt after ``set_limits``):
        the balance row, then one row per branch that can bind; of identical rows the smallest
        limit, the deepest (last) of equal ones. Returns ``(kept branches, the DAQP problem
        over A, l, u, H[kept].T, starting active set)``."""
        if self._dense is None:
            lim = self._limits
            balance, rhs = self._balance_row, 0.0
            if self._losses is not None:
                balance, rhs = self._losses.weights @ self._M, self._losses.constant
            useful = self._row_useful.copy()
            if rhs == 0.0 and np.array_equal(balance, self._balance_row):
                useful &= ~self._row_all_below
            cand = np.flatnonzero(useful & np.isfinite(lim))
            cand = cand[np.lexsort((-cand, lim[cand], self._row_group[cand]))]
            group = self._row_group[cand]
            first = np.ones(len(cand), dtype=bool)
            first[1:] = group[1:] != group[:-1]
            rows = np.sort(cand[first])
            A = np.vstack([balance, self._G[rows]])
            L = lim[rows]
            n, nb = len(self.names), self._nb
            start = np.zeros(nb + len(A), dtype=np.int8)
            start[n:nb] = -1  # shed and spill start at zero (a guess from the structure only)
            l, u = np.concatenate([[rhs], -L]), np.concatenate([[rhs], L])
            self._dense = (rows, daqp_qp.DenseQP(A, start), l, u,
                           np.ascontiguousarray(self.topology.H[rows].T), start)
            self._dense_ul = np.stack([u, l])
        return self._dense

    def __getstate__(self):
        state = self.__dict__.copy()
        for key in ("_cvx", "_dense", "_dense_ul", "_cache", "_threshold", "_passed"):
            state.pop(key, None)  # CVXPY objects do not pickle; the rest is rebuilt when used
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._cvx = None
        self._setup()

    def set_limits(self, limits_kw: np.ndarray | dict[str, float]) -> None:
        """New branch limits (kW, branch order of the topology, or name -> kW; inf = none).
        Checked before anything changes; cheap (the solver's rows follow at the next
        clearing)."""
        new = self._limits.copy()
        if isinstance(limits_kw, dict):
            for name, lim in limits_kw.items():
                if name not in self.topology.branch_index:
                    raise ValueError(f"unknown branch {name!r}; branches: "
                                     f"{', '.join(self._branch_names_t)}")
                new[self.topology.branch_index[name]] = float(lim)
        else:
            lim = np.asarray(limits_kw, dtype=float)
            if lim.shape != new.shape:
                raise ValueError(f"expected {new.shape[0]} limits, got {lim.shape}")
            new[:] = lim
        if np.any(new < 0) or np.any(np.isnan(new)):
            raise ValueError("branch limits must be >= 0 (inf for none)")
        self._limits = new
        self._dense = None
        if self._cvx is not None:
            self._cvx["limits"].value = np.where(np.isfinite(new), new, 1e9)

    @property
    def limits_kw(self) -> np.ndarray:
        return self._limits.copy()

    def set_losses(self, loss_factors=None, loss_kw: float = 0.0, injections_kw=None) -> None:
        """Price losses: the balance becomes ``sum_b (1 - lf_b) p_b = L0 - lf . p0`` (module
        docstring, "Losses"; ``ogg_envs.api.LossModel``). ``loss_factors``: ``lf`` per
        topology bus (``None``: lossless again), ``loss_kw``: ``L0``, ``injections_kw``: ``p0``
        per bus (``None``: zeros). Checked before anything changes; cheap (the balance row
        follows at the next clearing)."""
        if loss_factors is None:
            losses = None
        else:
            losses = LossModel.of(self._buses_t, loss_factors, loss_kw, injections_kw)
            if self.formulation != "dense":
                raise ValueError(f"loss pricing needs formulation='dense'; this market "
                                 f"clears with formulation={self.formulation!r}")
        self._losses = losses
        self._dense = None
        self._cache = None

    @property
    def losses(self) -> LossModel | None:
        """The loss model the market clears with (``set_losses``), or None: lossless."""
        return self._losses

    # ------------------------------------------------------------------ clearing
    def bids_to_array(self, bids) -> np.ndarray:
        """Bids as a new (n, 4) array in participant order (from an array, list or dict)."""
        if type(bids) is np.ndarray and bids.shape == (len(self.names), 4):
            return bids.astype(float)  # the environments' hot path (a copy)
        if isinstance(bids, dict):
            rows = self.in_order(bids, "bids")
        else:
            rows = list(bids)
        arr = np.array([r.as_array() if isinstance(r, Bid) else np.asarray(r, dtype=float)
                        for r in rows], dtype=float)
        if arr.shape != (len(self.names), 4):
            raise ValueError(f"expected {len(self.names)} bids of 4 numbers, got {arr.shape}")
        return arr

    def validate(self, arr: np.ndarray) -> None:
        """Raise ``InvalidBidError`` naming the first participant with an invalid bid (the
        rule of ``bid_rule``, without quantity limits: the market does not know them)."""
        if self.bid_rule.invalid_rows(arr):
            self.bid_rule.check(arr)

    def repair(self, bids, q_limit=None, *, names=None,
               strict: bool = False) -> tuple[np.ndarray, dict[str, list[str]]]:
        """The nearest valid bids and what was changed (``ogg_envs.api.Market.repair``):
        every invalid row replaced by ``Bid.repair``'s bid (reversed ranges swapped, prices
        clipped into ``[price_floor, price_cap]``, quantities into ``[0, q_limit]``);
        ``q_limit``: each row's largest valid quantity (this hour's ``q_now``), or None.
        ``bids``: an (n, 4) array (or what ``bids_to_array`` takes), or rows for ``names``.
        NaN/inf raise ``InvalidBidError``; so does with ``strict`` the first invalid bid."""
        if names is not None:
            bids = np.asarray(bids, dtype=float).reshape(-1, 4)
        elif type(bids) is not np.ndarray or bids.shape != (len(self.names), 4) \
                or bids.dtype != float:
            bids = self.bids_to_array(bids)
        bids, repairs = self.bid_rule.repair(bids, q_limit, names=names, strict=strict)
        if names is None:
            # valid now (repaired rows by Bid.repair, the others by the rule with their
            # quantity limits), so valid for ``validate`` too (the same rule without them):
            # ``clear`` skips its check of these very bids, the round's usual next step
            self._passed = bids.tobytes()
        return bids, repairs

    def reset(self) -> None:
        """Forget the result cache and any loss model (lossless again). No solver keeps a
        warm start, so a clearing never depends on what was cleared before; after ``reset``
        even the result object is new."""
        self._cache = None
        if self._losses is not None:
            self._losses = None
            self._dense = None

    def clear(self, bids, context: MarketContext | None = None) -> ClearingResult:
        """Clear the market for ``bids`` (dict name -> Bid/array, or a list/array in order).

        ``context`` is accepted for the ``Market`` interface and ignored: everything this
        market needs is in the bids and its branch limits (``set_limits``). The same bids,
        limits and ``congestion_tol`` as the previous call return the previous result object
        (treat results as read-only)."""
        arr = self.bids_to_array(bids)
        key = arr.tobytes()
        if key != self._passed:  # (bids that just passed ``repair`` need no second check)
            self.validate(arr)
        cache = self._cache  # (set_limits always installs a new limits array)
        if cache is not None and cache[1] is self._limits and cache[0] == key \
                and cache[3] == self.congestion_tol:
            return cache[2]
        result = self._result(arr, *self._solve(arr))
        self._cache = (key, self._limits, result, self.congestion_tol)
        return result

    def _nodal_prices(self, energy: float, congestion: np.ndarray, raw=None):
        """``(prices, unclipped, loss)``: the nodal prices (module docstring) from the
        balance's dual (``energy``) and the branch rows' (``congestion`` per bus); ``raw``: the
        prices themselves where a solver gave them (the flow formulation; lossless). When all
        firm demand of a bus is shed, its price is only bounded below by the cap (the shed
        variable sits at its bound): the prices are clipped into the band, and ``unclipped``
        is what they were (None when the clip moved nothing). ``loss``: the loss parts per
        bus (None when lossless). ``_curve_accounts`` splits the prices into their parts."""
        given = raw is not None
        loss = None
        if self._losses is None:
            raw = raw if given else energy + congestion
        else:
            loss = -self._losses.factors * energy
            raw = energy + loss + congestion
        if np.minimum.reduce(raw) >= self.price_floor and np.maximum.reduce(raw) <= self.price_cap:
            return (raw.copy() if given else raw), None, loss  # what np.clip would return
        prices = np.maximum(raw, self.price_floor)  # (np.clip's numbers)
        np.minimum(prices, self.price_cap, out=prices)
        return prices, raw, loss

    def _curve_coefficients(self, arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """-welfare per participant as 0.5*slope*q^2 + lin*q (+ const), from the bids."""
        p_max, p_min, q_max, q_min = arr.T
        dq = q_max - q_min
        slope = np.divide(p_max - p_min, dq, out=np.zeros(len(dq)), where=dq > 1e-12)
        lin = np.where(self.is_supply, p_min - slope * q_min, -(p_max + slope * q_min))
        return slope, lin

    def _regularised_coefficients(self, arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """As ``_curve_coefficients`` for the curves as cleared: every price span at least
        ``FLAT_TILT`` (a fixed quantity, ``q_min == q_max``, gets curvature 1: it is fixed)."""
        p_max, p_min, q_max, q_min = arr.T
        dq = q_max - q_min
        curv = np.divide(np.maximum(p_max - p_min, FLAT_TILT), dq, out=np.ones(len(dq)),
                         where=dq > 1e-12)
        return curv, np.where(self.is_supply, p_min, -p_max) - curv * q_min

    def _bounds(self, arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Variable bounds: q in [q_min, q_max]; shed up to the firm demand at a bus, spill up
        to the must-run supply there."""
        n, B = len(self.names), len(self.topology.buses)
        q_min = arr[:, 3]
        lo, hi = np.zeros(self._nb), np.zeros(self._nb)
        lo[:n], hi[:n] = q_min, arr[:, 2]
        dem, sup = ~self.is_supply, self.is_supply
        hi[self._sl["shed"]] = np.bincount(self._bus_of[dem], q_min[dem], B)[self._shed_buses]
        hi[self._sl["spill"]] = np.bincount(self._bus_of[sup], q_min[sup], B)[self._spill_buses]
        return lo, hi

    def _dense_data(self, arr: np.ndarray) -> np.ndarray:
        """The dense statement's vectors for a checked bid array, stacked as
        ``daqp_qp.DenseQP.solve_diagonal`` takes them: rows ``[P diagonal, q, lb, ub]`` over
        ``z = [q, shed, spill]`` (the curves as cleared: ``_regularised_coefficients``, the
        same numbers)."""
        n = len(self.names)
        p_max, p_min, q_max, q_min = arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3]
        data = self._dense_template.copy()  # the slack's entries; 1 where a curve is fixed
        span, dq = p_max - p_min, q_max - q_min
        ramp = dq > 1e-12
        curv = data[0, :n]
        np.divide(np.maximum(span, FLAT_TILT), dq, out=curv, where=ramp)
        price = arr.take(self._own_price)
        price *= self._cost_sign  # (exact: the same numbers as np.where(supply, p_min, -p_max))
        np.subtract(price, curv * q_min, out=data[1, :n])
        data[2:, :n] = arr[:, 3:1:-1].T  # q_min, q_max
        data[3, n:] = self._firm_of_slack(q_min)  # the slack's upper bounds (_bounds)
        return data

    def _solve(self, arr: np.ndarray):
        """``(x, nodal prices, solver name, firm)``, ``x = [q, shed, spill, p]``; ``firm``: the
        firm kW of each slack variable's side where the solve computed them, else None
        (``_result``)."""
        if self.formulation == "flow":
            return self._solve_flow(arr) + (None,)
        _, qp, _, _, Ht, _ = self._dense_rows()
        for name in dict.fromkeys((self.solver, "clarabel")):
            try:
                if name == "daqp":  # the hot path: no bound duals, no Solution
                    data = self._dense_data(arr)
                    z, y = qp.solve_diagonal(data, self._dense_ul)
                    firm = data[3, len(self.names):]
                else:
                    sol = self.solve_dense(arr, name)
                    z, y, name, firm = sol.x, sol.y, sol.solver, None
            except MarketClearingError:
                continue
            # The price is the cost of one more kW of demand at the bus: it moves the balance
            # row (by its weight, 1 - lf_b) and every kept branch row above the bus
            # (H[e, b] = -1): price = energy * (1 - lf_b) + congestion_b.
            # (ndarray.dot: the BLAS call of ``@`` on these contiguous arrays, called faster)
            return np.concatenate([z, self._M.dot(z)]), (-float(y[0]), -Ht.dot(y[1:])), name, \
                firm
        return self._solve_cvxpy(arr, regularised=True) + (None,)

    def solve_dense(self, arr: np.ndarray, solver: str = "daqp"):
        """Solve the dense statement (``formulation="dense"``) for a checked (n, 4) bid array
        with ``solver`` (one of ``DENSE_SOLVERS``); an ``ogg_envs.markets.solvers.Solution``
        over ``z = [q, shed, spill]``, rows ``[balance, kept branches]``. Raises
        ``MarketClearingError`` when the solver fails."""
        _, qp, l, u, _, _ = self._dense_rows()
        P, f, lo, hi = self._dense_data(arr)
        if solver == "daqp":
            return qp.solve(P, f, l, u, lo, hi)
        module = {"clarabel": clarabel_qp, "osqp": osqp_qp}[solver]
        return module.solve(sp.diags(P), f, qp.A, l, u, lo, hi)

    @staticmethod
    def _big_flow(arr: np.ndarray) -> float:
        """A finite stand-in for 'no limit': more than any flow the bids can cause."""
        return 2.0 * float(arr[:, 2].sum()) + 1.0

    # ------------------------------------------------------------------ large feeders
    def _setup_flow(self, n: int, B: int, ns: int, nsp: int, nb: int) -> None:
        """The flow-conservation statement (``formulation="flow"``): variables ``[q, shed,
        spill, f]`` with one balance row per bus, ``gen - dem + shed - spill = C f`` (``C`` the
        tree's incidence; the rows' duals are the nodal prices) and ``-limit <= f <= limit``.
        The zone solver (``ogg_envs.markets.radial``) solves its KKT conditions exactly;
        Clarabel on the same sparse statement is the fallback. Results use the layout of the
        dense path (``x = [q, shed, spill, p]``)."""
        M = sp.csr_matrix((np.concatenate([np.where(self.is_supply, 1.0, -1.0),
                                           np.ones(ns), -np.ones(nsp)]),
                           (np.concatenate([self._bus_of, self._shed_buses,
                                            self._spill_buses]).astype(np.int64),
                            np.arange(nb))), shape=(B, nb))
        self._M = M  # sparse: M @ x[:nb] is the bus injection
        self._radial = RadialClearing(self.topology, np.concatenate(
            [self._bus_of, self._shed_buses, self._spill_buses]).astype(np.int64))
        self._flow_A = sp.hstack([M, -self.topology.incidence]).tocsr()  # balance per bus

    def _flow_items(self, arr: np.ndarray) -> Items:
        """Every variable of the clearing as a monotone injection curve of its bus's price
        (participants, then shed, then spill: the order of ``x``)."""
        B = len(self.topology.buses)
        p_max, p_min, q_max, q_min = arr.T
        slope, _ = self._curve_coefficients(arr)
        dq = np.maximum(q_max - q_min, 0.0)
        sup = self.is_supply
        ramp = slope > 0
        k = np.where(ramp, 1.0 / np.where(ramp, slope, 1.0), 0.0)
        base = np.where(sup, q_min, -q_max)
        at = np.where(sup, p_min, p_max)  # a flat curve's price
        jump = np.where(ramp, 0.0, dq)
        reg = SLACK_REGULARISATION
        firm_dem = np.bincount(self._bus_of[~sup], q_min[~sup], B)[self._shed_buses]
        firm_sup = np.bincount(self._bus_of[sup], q_min[sup], B)[self._spill_buses]
        ns, nsp = len(self._shed_buses), len(self._spill_buses)
        cap, floor = self.price_cap, self.price_floor
        return Items(
            bus=np.concatenate([self._bus_of, self._shed_buses, self._spill_buses]),
            base=np.concatenate([base, np.zeros(ns), -firm_sup]),
            k=np.concatenate([k, np.full(ns + nsp, 1.0 / reg)]),
            lo=np.concatenate([p_min, np.full(ns, cap), floor - reg * firm_sup]),
            hi=np.concatenate([p_max, cap + reg * firm_dem, np.full(nsp, floor)]),
            jump=np.concatenate([jump, np.zeros(ns + nsp)]),
            at=np.concatenate([at, np.zeros(ns + nsp)]),
        )

    def _solve_flow(self, arr: np.ndarray):
        n = len(self.names)
        items = self._flow_items(arr)
        out = self._radial.solve(items, self._limits)
        if out is None:
            return self._solve_flow_clarabel(arr)
        inj, prices, _rounds = out
        x = np.zeros(self._nx)
        x[:n] = np.abs(inj[:n])
        x[self._sl["shed"]] = inj[self._sl["shed"]]
        x[self._sl["spill"]] = -inj[self._sl["spill"]]
        x[self._sl["p"]] = self._M @ x[:self._nb]
        return x, self._split_prices(prices), "zones"

    def _solve_flow_clarabel(self, arr: np.ndarray):
        """Clarabel on the sparse flow statement (the fallback of the zone solver), with the
        same tie-breaking regularisation as the dense statement."""
        n, nb, B = len(self.names), self._nb, len(self.topology.buses)
        lo, hi = self._bounds(arr)
        curv, lin = self._regularised_coefficients(arr)
        E = len(self.topology.branches)
        P = sp.diags(np.concatenate([curv, self._slack_curv, np.zeros(E)]))
        f = np.concatenate([self._f, np.zeros(E)])
        f[:n] = lin
        zero = np.zeros(B)
        try:
            sol = clarabel_qp.solve(P, f, self._flow_A, zero, zero,
                                    np.concatenate([lo, -self._limits]),
                                    np.concatenate([hi, self._limits]))
        except MarketClearingError as exc:
            raise MarketClearingError(f"the zone solver and Clarabel both failed ({exc})") \
                from None
        x = np.zeros(self._nx)
        x[:nb] = sol.x[:nb]
        x[self._sl["p"]] = self._M @ x[:nb]
        return x, self._split_prices(-sol.y), "clarabel-flow"

    def _split_prices(self, prices: np.ndarray):
        """``(energy, congestion per bus, prices)`` of lossless nodal prices: the root's price
        and the rest (the root is above every branch)."""
        energy = float(prices[self.topology.bus_index[self.topology.root]])
        return energy, prices - energy, prices

    # ------------------------------------------------------------------ the CVXPY statement
    def cvxpy_problem(self):
        """The same problem in CVXPY with Parameters (built once, then re-used)."""
        if self._cvx is not None:
            return self._cvx
        import cvxpy as cp

        n, B = len(self.names), len(self.topology.buses)
        q = cp.Variable(n, name="q")
        shed = cp.Variable(B, nonneg=True, name="shed")
        spill = cp.Variable(B, nonneg=True, name="spill")
        # Curve integrals as 0.5*slope*q^2 + lin*q (+ a constant): the bids' own slopes, or
        # the regularised ones of the fast path (``clear_cvxpy(..., regularised=True)``).
        slope = cp.Parameter(n, nonneg=True, name="slope")
        lin = cp.Parameter(n, name="lin")
        q_lo = cp.Parameter(n, nonneg=True, name="q_min")
        q_hi = cp.Parameter(n, nonneg=True, name="q_max")
        shed_max = cp.Parameter(B, nonneg=True, name="shed_max")
        spill_max = cp.Parameter(B, nonneg=True, name="spill_max")
        limits = cp.Parameter(len(self.topology.branches), nonneg=True, name="limits")
        # the balance sum_b w_b p_b = c: w = 1 - lf, c = L0 - lf . p0 (lossless: 1 and 0)
        weights = cp.Parameter(B, name="loss_weights")
        constant = cp.Parameter(name="loss_constant")
        sup = np.flatnonzero(self.is_supply)
        dem = np.flatnonzero(~self.is_supply)
        Ms = np.zeros((B, n))
        Ms[self._bus_of[sup], sup] = 1.0
        Md = np.zeros((B, n))
        Md[self._bus_of[dem], dem] = 1.0
        # -welfare = supply cost - demand value (+ shed at the cap, spill at the floor)
        neg_welfare = (0.5 * cp.sum(cp.multiply(slope, cp.square(q))) + lin @ q
                       + self.price_cap * cp.sum(shed) - self.price_floor * cp.sum(spill)
                       + 0.5 * SLACK_REGULARISATION * (cp.sum_squares(shed)
                                                       + cp.sum_squares(spill)))
        inj = Ms @ q - Md @ q + shed - spill
        balance = [weights @ inj == constant]
        flow = self.topology.H @ inj
        cons = balance + [flow <= limits, -flow <= limits, q >= q_lo, q <= q_hi,
                          shed <= shed_max, spill <= spill_max]
        prob = cp.Problem(cp.Minimize(neg_welfare), cons)
        self._cvx = dict(prob=prob, q=q, shed=shed, spill=spill, slope=slope, lin=lin,
                         q_min=q_lo, q_max=q_hi, shed_max=shed_max,
                         spill_max=spill_max, limits=limits, flow=flow, balance=balance[0],
                         weights=weights, constant=constant,
                         upper=cons[1], lower=cons[2])
        limits.value = np.where(np.isfinite(self._limits), self._limits, 1e9)
        return self._cvx

    def clear_cvxpy(self, bids, solver: str = "CLARABEL", *,
                    regularised: bool = False) -> ClearingResult:
        """Clear with the CVXPY statement (reference path; slower than ``clear``): the problem
        as stated (``regularised=False``, whose optimum may not be unique) or with the fast
        path's tie-breaking regularisation (module docstring), whose optimum is."""
        arr = self.bids_to_array(bids)
        self.validate(arr)
        x, duals, name = self._solve_cvxpy(arr, solver, regularised=regularised)
        return self._result(arr, x, duals, name)

    def _solve_cvxpy(self, arr: np.ndarray, solver: str = "CLARABEL",
                     regularised: bool = False):

        c = self.cvxpy_problem()
        n, B = len(self.names), len(self.topology.buses)
        p_max, p_min, q_max, q_min = arr.T
        coefficients = self._regularised_coefficients if regularised else \
            self._curve_coefficients
        c["slope"].value, c["lin"].value = coefficients(arr)
        c["q_min"].value, c["q_max"].value = q_min, np.maximum(q_max, q_min + 1e-7)
        c["limits"].value = np.minimum(self._limits, self._big_flow(arr))
        c["shed_max"].value = np.bincount(self._bus_of[~self.is_supply], q_min[~self.is_supply],
                                          minlength=B)
        c["spill_max"].value = np.bincount(self._bus_of[self.is_supply], q_min[self.is_supply],
                                           minlength=B)
        losses = self._losses
        c["weights"].value = np.ones(B) if losses is None else losses.weights
        c["constant"].value = 0.0 if losses is None else losses.constant
        cvxpy_ref.solve(c["prob"], solver)
        # Nodal price (envelope theorem): lambda_b = -nu w_b - H[:, b] . (mu_up - mu_down):
        # energy -nu (times the balance weight 1 - lf_b: energy + loss) and congestion.
        nu = float(c["balance"].dual_value)
        mu = np.asarray(c["upper"].dual_value) - np.asarray(c["lower"].dual_value)
        x = np.zeros(self._nx)
        x[:n] = c["q"].value
        shed, spill = np.asarray(c["shed"].value), np.asarray(c["spill"].value)
        x[self._sl["shed"]] = shed[self._shed_buses]
        x[self._sl["spill"]] = spill[self._spill_buses]
        x[self._sl["p"]] = self._M @ x[:self._nb]
        return x, (_CVX_SIGN * nu, _CVX_SIGN * (self.topology.H.T @ mu)), \
            f"cvxpy-{solver.lower()}"

    # ------------------------------------------------------------------ accounting
    def _result(self, arr: np.ndarray, x: np.ndarray, duals, solver: str,
                firm=None) -> ClearingResult:
        """The clearing's result: prices, quantities, flows, congestion and feasibility now,
        the other accounts (``_curve_accounts``) when first read. ``arr`` becomes the
        result's ``bids`` (callers pass their own copy); ``firm``: see ``_solve``."""
        n, nb = len(self.names), self._nb
        prices_bus, raw, loss = self._nodal_prices(*duals)
        q = np.maximum(x[:n], 0.0)
        served, total_shed = q, 0.0
        slack = x[n:nb]  # shed, then spilled kW (>= 0 up to the solver's rounding)
        cut = (slack > 1e-9).nonzero()[0].tolist()  # the slack variables that shed or spill
        if cut:
            served = self._cut_firm(arr, q, slack, cut, firm)
            total_shed = self._total_shed(slack, cut)
        price_p = prices_bus.take(self._bus_of)
        flows = self.topology.flows(x[nb:])
        threshold = self._threshold(self._limits, self.congestion_tol)
        at_limit = (np.abs(flows) >= threshold).nonzero()[0]
        congested = [self._branch_names_t[e] for e in at_limit.tolist()]
        losses, losses_kw, p = self._losses, 0.0, None
        if losses is not None:  # module docstring, "Losses"
            p = x[self._sl["p"]]
            losses_kw = losses.losses(p)
        accounts = partial(
            _curve_accounts, self._layout, bids=arr, served=served, price_p=price_p,
            energy=duals[0], congestion=duals[1],
            prices=prices_bus, unclipped=raw, loss=loss, losses=losses, injections=p,
            losses_kw=losses_kw, slack=slack if cut else None)
        return ClearingResult._of_fields({  # (every field, in the order __init__ sets them)
            "participants": self._names_t,
            "participant_prices": price_p,
            "participant_quantities": served,
            "congested": congested,
            "total_shed_kw": total_shed,
            "losses_kw": losses_kw,
            "feasible": total_shed == 0.0,
            "solver": solver,
            "bids": arr,
            "_accounts": accounts,
            "buses": self._buses_t,
            "branches": self._branch_names_t,
            "bus_prices": prices_bus,
            "flows": flows,
            "_demand_names": self._demand_names,
        })

    def _firm_of_slack(self, q_min: np.ndarray) -> np.ndarray:
        """The firm kW (``q_min``) of each shed and spill variable's side at its bus (summed
        in participant order; a large feeder has thousands of both, so no dense map)."""
        return np.bincount(self._slack_of, q_min, minlength=self._nb - len(self.names))

    def _cut_firm(self, arr: np.ndarray, q: np.ndarray, slack: np.ndarray, cut: list[int],
                  firm_kw=None) -> np.ndarray:
        """Served kW per participant when the clearing shed or spilled (``slack``: the shed,
        then spilled kW; ``cut``: the slack variables above 1e-9 kW, a few): what a bus cuts
        is taken pro rata from the firm parts of its side there. ``firm_kw``:
        ``_firm_of_slack(q_min)`` where already known."""
        if firm_kw is None:
            firm_kw = self._firm_of_slack(arr[:, 3])
        served = q.copy()  # (q >= 0: np.maximum's numbers)
        for j in cut:
            total_firm = firm_kw.item(j)  # its side's firm kW at its bus
            if total_firm > 0:
                kw = slack.item(j)
                share = kw if kw < total_firm else total_firm
                for i in self._slack_members[j]:
                    kw = q.item(i) - share * arr.item(i, 3) / total_firm
                    served[i] = kw if kw > 0.0 or kw != kw else 0.0  # np.maximum(kw, 0.0)
        return served

    def _total_shed(self, slack: np.ndarray, cut: list[int]) -> float:
        """The firm demand shed (kW, counting buses above 1e-6 kW) from the slack variables
        (see ``_cut_firm``)."""
        ns = len(self._shed_buses)  # (the shed variables come first, and ``cut`` is sorted)
        if cut[0] >= ns:
            return 0.0
        shed = np.maximum(slack[:ns], 0.0)
        return float(np.add.reduce(shed[shed > 1e-6]))
