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
price_cap`` and ``0 <= q_min <= q_max``. ``Bid.check`` raises ``InvalidBidError`` (a
``ValueError`` naming the participant) for an invalid bid; ``Bid.repair`` returns the nearest
valid bid (prices swapped if reversed and clipped into the band, quantities sorted and clipped
at 0) with the list of fixes, which is what the environments do with non-NaN invalid actions.
NaN or infinite numbers are never repaired. ``InvalidBidError`` and ``MarketClearingError`` are
the ones of ``ogg_envs.api`` (re-exported here).

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

Prices, payments and the congestion rent (eq. 8)
------------------------------------------------
The nodal price ``lambda_b`` is the dual of bus b's balance: the cost of serving one more kW
there. Each participant is settled at its own bus's price. Without congestion every price is
the same and payments balance revenues exactly (eq. 8 as a budget-balance identity). With
congestion, consumers pay more than producers receive; the difference is the congestion rent
``sum_b lambda_b (dem_b - shed_b - gen_b + spill_b) = sum_e mu_e * |f_e|``, which accrues to the
network operator. We read eq. 8 that way: payments = revenues + congestion rent.

Solving
-------
The problem is stated twice. ``CurveMarket`` builds it once as an OSQP problem whose sparsity
never changes (the topology and the participants are fixed) and re-solves it per clearing with
new bid data, warm-started and polished (the fast path). ``CurveMarket.cvxpy_problem`` states
the same problem in CVXPY with Parameters (compiled once): it is the readable reference used by
the tests and the fallback when OSQP fails. ``reset()`` forgets the warm start and the result
cache, so that a clearing after it does not depend on what was cleared before.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import osqp
import scipy.sparse as sp

from ..api import (
    Clearing,
    InvalidBidError,
    Market,
    MarketClearingError,
    MarketContext,
    check_participants,
)
from ..grid.topology import LARGE_FEEDER_BUSES, Topology
from .radial import Items, RadialClearing

__all__ = ["Bid", "CurveMarket", "ClearingResult", "InvalidBidError", "MarketParticipant",
           "MarketClearingError"]

SUPPLY, DEMAND = "supply", "demand"
_CVX_SIGN = -1.0
_CLARABEL_SIGN = -1.0
# A vanishing quadratic cost on shed and spilled kW (¢/kWh per kW) makes their allocation over
# buses unique (otherwise any split at the same cost is optimal and the outcome would depend
# on the solver's history); it moves a shedding bus's price by 1e-6 ¢/kWh per kW shed.
SLACK_REGULARISATION = 1e-6
POLISH_TOL = 1e-6  # primal (kW) and dual (¢/kWh) residuals a polished OSQP solution must meet


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
        return np.array([self.p_max, self.p_min, self.q_max, self.q_min])

    def check(self, who: str, price_cap: float, price_floor: float = 0.0,
              q_limit: float = math.inf) -> Bid:
        for label, v in zip(("p_max", "p_min", "q_max", "q_min"), self.as_array()):
            if not math.isfinite(v):
                raise InvalidBidError(f"{who}: bid {label} is {v!r}; bids must be finite numbers")
        if not price_floor <= self.p_min <= self.p_max <= price_cap:
            raise InvalidBidError(
                f"{who}: bid prices need {price_floor} <= p_min <= p_max <= {price_cap}, got "
                f"p_min={self.p_min}, p_max={self.p_max}")
        if not 0.0 <= self.q_min <= self.q_max <= q_limit + 1e-9:
            raise InvalidBidError(
                f"{who}: bid quantities need 0 <= q_min <= q_max <= {q_limit}, got "
                f"q_min={self.q_min}, q_max={self.q_max}")
        return self

    def repair(self, who: str, price_cap: float, price_floor: float = 0.0,
               q_limit: float = math.inf) -> tuple[Bid, list[str]]:
        """The nearest valid bid and what was changed. NaN/inf still raise."""
        for label, v in zip(("p_max", "p_min", "q_max", "q_min"), self.as_array()):
            if not math.isfinite(v):
                raise InvalidBidError(f"{who}: bid {label} is {v!r}; bids must be finite numbers")
        fixes = []
        p_hi, p_lo = self.p_max, self.p_min
        if p_hi < p_lo:
            p_hi, p_lo = p_lo, p_hi
            fixes.append("p_max < p_min: swapped")
        q_hi, q_lo = self.q_max, self.q_min
        if q_hi < q_lo:
            q_hi, q_lo = q_lo, q_hi
            fixes.append("q_max < q_min: swapped")
        clipped = (min(max(p_hi, price_floor), price_cap), min(max(p_lo, price_floor), price_cap),
                   min(max(q_hi, 0.0), q_limit), min(max(q_lo, 0.0), q_limit))
        if clipped != (p_hi, p_lo, q_hi, q_lo):
            fixes.append("clipped into the price band / quantity limit")
        return Bid(*clipped), fixes

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


@dataclass(kw_only=True)
class ClearingResult(Clearing):
    """Outcome of one clearing. Prices ¢/kWh, quantities kW, money ¢ per hour.

    The core fields are ``ogg_envs.api.Clearing``'s: ``participants`` (the market's order),
    ``participant_prices`` (the nodal price at each participant's bus),
    ``participant_quantities`` (cleared kW; demand: served kW), ``congested`` (branches at their
    limit), ``total_shed_kw``, ``total_curtailed_kw`` (= spilled must-run supply), the surpluses
    on the bids (``welfare = consumer_surplus + producer_surplus + congestion_rent``),
    ``feasible`` (False when firm demand was shed), ``solver`` and ``bids`` (the (n, 4) bid
    array as cleared). The name-keyed views below are this market's own.
    """

    prices: dict[str, float]  # bus -> nodal price
    quantities: dict[str, float]  # participant -> cleared kW (demand: served kW)
    flows_kw: dict[str, float]  # branch -> kW (positive away from the source)
    consumer_payments: float
    producer_revenue: float
    shed_kw: dict[str, float] = field(default_factory=dict)  # bus -> firm demand not served
    spilled_kw: dict[str, float] = field(default_factory=dict)  # bus -> must-run not absorbed
    solver: str = "osqp"

    def average_consumer_price(self) -> float:
        return self.consumer_payments / max(self.total_demand_kw, 1e-12)

    @property
    def total_demand_kw(self) -> float:
        return float(sum(q for n, q in self.quantities.items() if n in self._demand_names))

    _demand_names: frozenset = field(default=frozenset(), repr=False)


class CurveMarket(Market):
    """The congestion-constrained curve market on a radial ``Topology``.

    Args:
        topology: the radial grid model (``grid.topology``, or hand-made); its branch limits are
            the line-flow limits (``set_limits`` changes them).
        participants: ``MarketParticipant`` list (name, bus, side); fixed for the market's life.
        price_cap: ¢/kWh; the highest valid bid price and the price of shed load.
        price_floor: ¢/kWh; the lowest valid bid price and the value of spilled must-run supply.
        congestion_tol: relative slack under which a branch counts as congested.
        formulation: ``"dense"`` (the statement above with ``H``, solved by OSQP),
            ``"flow"`` (flow conservation per bus on the tree, solved exactly by zones:
            ``ogg_envs.markets.radial``; no dense ``H``) or ``"auto"`` (``"flow"`` on feeders
            with more than ``LARGE_FEEDER_BUSES`` (100) buses, IEEE 123 and larger, else
            ``"dense"``). Both give the same clearing up to the dense solvers' tolerance.
    """

    def __init__(self, topology: Topology, participants: list[MarketParticipant], *,
                 price_cap: float = 100.0, price_floor: float = 0.0,
                 congestion_tol: float = 1e-5, formulation: str = "auto"):
        if not participants:
            raise ValueError("a market needs participants")
        if not price_floor < price_cap:
            raise ValueError("price_floor must be below price_cap")
        names = check_participants(topology, participants, "side", (SUPPLY, DEMAND))
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
        if formulation not in ("auto", "dense", "flow"):
            raise ValueError(f"formulation must be 'auto', 'dense' or 'flow', got "
                             f"{formulation!r}")
        if formulation == "auto":
            formulation = "flow" if len(topology.buses) > LARGE_FEEDER_BUSES else "dense"
        self.formulation = formulation
        self._branch_names_t = tuple(br.name for br in topology.branches)
        self._setup()
        self._cvx = None

    # ------------------------------------------------------------------ problem structure
    def _setup(self) -> None:
        """Build the fast-path QP once. Variables x = [q, shed, spill, p]; rows: nodal balance
        (its duals are the prices), sum(p) = 0, branch flows H p, variable bounds. The sparsity
        never changes; each clearing only updates numbers."""
        n, B = len(self.participants), len(self.topology.buses)
        E = len(self.topology.branches)
        self._shed_buses = sorted({int(b) for b, s in zip(self._bus_of, self.is_supply) if not s})
        self._spill_buses = sorted({int(b) for b, s in zip(self._bus_of, self.is_supply) if s})
        ns, nsp = len(self._shed_buses), len(self._spill_buses)
        nb = n + ns + nsp  # bounded variables
        self._sl = {"q": slice(0, n), "shed": slice(n, n + ns), "spill": slice(n + ns, nb),
                    "p": slice(nb, nb + B)}
        nx_ = nb + B
        if self.formulation == "flow":  # flow conservation per bus: no H, no OSQP
            self._setup_flow(n, B, ns, nsp, nb)
            return
        M = sp.lil_matrix((B, nx_))  # gen - dem + shed - spill at each bus
        M[self._bus_of, np.arange(n)] = np.where(self.is_supply, 1.0, -1.0)
        M[self._shed_buses, n + np.arange(ns)] = 1.0
        M[self._spill_buses, n + ns + np.arange(nsp)] = -1.0
        self._M = M[:, :nb].toarray()
        A_bal = sp.hstack([M[:, :nb].tocsr(), -sp.eye(B)])
        A_sum = sp.hstack([sp.csr_matrix((1, nb)), sp.csr_matrix(np.ones((1, B)))])
        A_flow = sp.hstack([sp.csr_matrix((E, nb)), sp.csr_matrix(self.topology.H)])
        A_box = sp.eye(nb, nx_)
        self._A = sp.vstack([A_bal, A_sum, A_flow, A_box]).tocsc()
        self._rows = {"bal": slice(0, B), "sum": slice(B, B + 1),
                      "flow": slice(B + 1, B + 1 + E), "box": slice(B + 1 + E, B + 1 + E + nb)}
        self._nx, self._nb = nx_, nb
        self._P = sp.csc_matrix((np.ones(nb), (np.arange(nb), np.arange(nb))), shape=(nx_, nx_))
        self._Px = np.full(nb, SLACK_REGULARISATION)
        self._q = np.zeros(nx_)
        self._q[self._sl["shed"]] = self.price_cap
        self._q[self._sl["spill"]] = -self.price_floor  # spilled kW are worth the floor
        self._l = np.zeros(self._A.shape[0])
        self._u = np.zeros(self._A.shape[0])
        self._set_flow_bounds()
        self._solver = osqp.OSQP()
        self._rho0 = 0.1  # OSQP's initial rho (adapted during solves; reset() restores it)
        self._solver.setup(self._P, self._q, self._A, self._l, self._u, verbose=False,
                           eps_abs=1e-2, eps_rel=1e-2, polishing=True, warm_starting=True,
                           max_iter=4000, polish_refine_iter=3, rho=self._rho0)
        self._clarabel = None
        self._cache = None

    def __getstate__(self):
        state = self.__dict__.copy()
        for key in ("_solver", "_clarabel", "_cvx", "_A", "_P", "_l", "_u", "_q"):
            state.pop(key, None)  # solver objects do not pickle; rebuilt from the data
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._cvx = None
        self._setup()

    def _set_flow_bounds(self) -> None:
        if self.formulation == "flow":  # read from self._limits at each clearing
            return
        lim = np.where(np.isfinite(self._limits), self._limits, 1e20)
        self._l[self._rows["flow"]] = -lim
        self._u[self._rows["flow"]] = lim

    def set_limits(self, limits_kw: np.ndarray | dict[str, float]) -> None:
        """New branch limits (kW, branch order of the topology, or name -> kW)."""
        if isinstance(limits_kw, dict):
            for name, lim in limits_kw.items():
                if name not in self.topology.branch_index:
                    raise ValueError(f"unknown branch {name!r}")
                self._limits[self.topology.branch_index[name]] = float(lim)
        else:
            lim = np.asarray(limits_kw, dtype=float)
            if lim.shape != self._limits.shape:
                raise ValueError(f"expected {self._limits.shape[0]} limits, got {lim.shape}")
            self._limits[:] = lim
        if np.any(self._limits < 0) or np.any(np.isnan(self._limits)):
            raise ValueError("branch limits must be >= 0 (inf for none)")
        self._set_flow_bounds()
        if self._cvx is not None:
            self._cvx["limits"].value = np.where(np.isfinite(self._limits), self._limits, 1e9)

    @property
    def limits_kw(self) -> np.ndarray:
        return self._limits.copy()

    # ------------------------------------------------------------------ clearing
    def bids_to_array(self, bids) -> np.ndarray:
        """Bids as an (n, 4) array in participant order (from an array, list or dict)."""
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
        p_max, p_min, q_max, q_min = arr.T
        ok = (np.isfinite(arr).all(axis=1) & (self.price_floor <= p_min) & (p_min <= p_max)
              & (p_max <= self.price_cap) & (0 <= q_min) & (q_min <= q_max))
        if not ok.all():
            i = int(np.flatnonzero(~ok)[0])
            Bid.from_array(arr[i]).check(self.names[i], self.price_cap, self.price_floor)

    def reset(self) -> None:
        """Forget the warm start and the result cache: the next clearing starts cold, as in a
        freshly constructed market (same participants and limits)."""
        if self.formulation == "flow":  # the zone solver starts cold every time
            self._clarabel = None
            self._cache = None
            return
        self._solver.warm_start(x=np.zeros(self._nx), y=np.zeros(self._A.shape[0]))
        self._solver.update_settings(rho=self._rho0)  # OSQP adapts rho from solve to solve
        self._clarabel = None
        self._cache = None

    def clear(self, bids, context: MarketContext | None = None) -> ClearingResult:
        """Clear the market for ``bids`` (dict name -> Bid/array, or a list/array in order).

        ``context`` is accepted for the ``Market`` interface and ignored: everything this
        market needs is in the bids and its branch limits (``set_limits``). The same bids and
        limits as the previous call return the previous result object (treat results as
        read-only)."""
        arr = self.bids_to_array(bids)
        self.validate(arr)
        cache = self._cache
        if cache is not None and np.array_equal(cache[0], arr) and \
                np.array_equal(cache[1], self._limits):
            return cache[2]
        x, prices, solver = self._solve(arr)
        # When all firm demand of a bus is shed, its price is only bounded below by the cap
        # (the shed variable sits at its bound); no marginal value lies outside the band.
        prices = np.clip(prices, self.price_floor, self.price_cap)
        result = self._result(arr, x, prices, solver)
        self._cache = (arr.copy(), self._limits.copy(), result)
        return result

    def _curve_coefficients(self, arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """-welfare per participant as 0.5*slope*q^2 + lin*q (+ const), from the bids."""
        p_max, p_min, q_max, q_min = arr.T
        dq = q_max - q_min
        slope = np.divide(p_max - p_min, dq, out=np.zeros(len(dq)), where=dq > 1e-12)
        lin = np.where(self.is_supply, p_min - slope * q_min, -(p_max + slope * q_min))
        return slope, lin

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

    def _solve(self, arr: np.ndarray):
        if self.formulation == "flow":
            return self._solve_flow(arr)
        n = len(self.names)
        slope, lin = self._curve_coefficients(arr)
        self._q[:n] = lin
        self._Px[:n] = slope
        box = self._rows["box"]
        self._l[box], self._u[box] = self._bounds(arr)
        self._solver.update(q=self._q, l=self._l, u=self._u, Px=self._Px)
        # ADMM only has to find the active set (coarse tolerance); polishing then solves the
        # KKT system of that active set exactly. The answer is accepted only if the polished
        # point is primal and dual feasible to 1e-6 (kW and ¢/kWh): then it is the optimum.
        for _attempt in range(2):
            res = self._solver.solve(raise_error=False)
            info = res.info
            if (info.status_polish == 1 and info.prim_res < POLISH_TOL
                    and info.dual_res < POLISH_TOL):
                # The price is the cost of one more kW of demand at the bus: -dual of balance.
                return res.x, -res.y[self._rows["bal"]], "osqp"
            # A warm start at a (nearly) optimal point can leave the active set ambiguous:
            # retry once from cold.
            self._solver.warm_start(x=np.zeros(self._nx), y=np.zeros(self._A.shape[0]))
        # Degenerate instances (ties between bids) can defeat polishing; an interior-point
        # solve of the same compiled data is accurate there.
        return self._solve_clarabel(arr)

    @staticmethod
    def _big_flow(arr: np.ndarray) -> float:
        """A finite stand-in for 'no limit': more than any flow the bids can cause."""
        return 2.0 * float(arr[:, 2].sum()) + 1.0

    def _solve_clarabel(self, arr: np.ndarray):
        import clarabel

        lo, hi = self._bounds(arr)
        hi = np.maximum(hi, lo + 1e-7)  # interior-point methods dislike fixed variables
        eq, flow = slice(0, self._rows["sum"].stop), self._rows["flow"]
        lim = np.minimum(self._u[flow], self._big_flow(arr))
        b = np.concatenate([np.zeros(eq.stop), lim, lim, hi, -lo])
        if self._clarabel is None:
            A_flow = self._A[flow]
            eye = sp.eye(self._nb, self._nx, format="csc")
            A = sp.vstack([self._A[eq], A_flow, -A_flow, eye, -eye]).tocsc()
            settings = clarabel.DefaultSettings()
            settings.verbose = False
            settings.presolve_enable = False  # keep the data updatable
            settings.tol_gap_abs = settings.tol_gap_rel = settings.tol_feas = 1e-8
            cones = [clarabel.ZeroConeT(eq.stop), clarabel.NonnegativeConeT(len(b) - eq.stop)]
            P = self._P.copy()
            P.data[:] = self._Px
            self._clarabel = clarabel.DefaultSolver(P, self._q.copy(), A, b, cones, settings)
        else:
            self._clarabel.update(P=self._Px.copy(), q=self._q.copy(), b=b)
        sol = self._clarabel.solve()
        if str(sol.status) not in ("Solved", "AlmostSolved"):
            return self._solve_cvxpy(arr)
        z = np.asarray(sol.z)
        return np.asarray(sol.x), _CLARABEL_SIGN * z[self._rows["bal"]], "clarabel"

    # ------------------------------------------------------------------ large feeders
    def _setup_flow(self, n: int, B: int, ns: int, nsp: int, nb: int) -> None:
        """The flow-conservation statement (``formulation="flow"``): variables ``[q, shed,
        spill, f]`` with one balance row per bus, ``gen - dem + shed - spill = C f`` (``C`` the
        tree's incidence; the rows' duals are the nodal prices) and ``-limit <= f <= limit``.
        The zone solver (``ogg_envs.markets.radial``) solves its KKT conditions exactly;
        Clarabel on the same sparse statement is the fallback. Results use the layout of the
        dense path (``x = [q, shed, spill, p]``)."""
        self._nx, self._nb = nb + B, nb
        self._rows = {"bal": slice(0, B)}
        M = sp.csr_matrix((np.concatenate([np.where(self.is_supply, 1.0, -1.0),
                                           np.ones(ns), -np.ones(nsp)]),
                           (np.concatenate([self._bus_of, self._shed_buses,
                                            self._spill_buses]).astype(np.int64),
                            np.arange(nb))), shape=(B, nb))
        self._M = M  # sparse: M @ x[:nb] is the bus injection
        self._radial = RadialClearing(self.topology, np.concatenate(
            [self._bus_of, self._shed_buses, self._spill_buses]).astype(np.int64))
        self._clarabel = None
        self._cache = None

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
        return x, prices, "zones"

    def _solve_flow_clarabel(self, arr: np.ndarray):
        """Clarabel on the sparse flow statement (the fallback of the zone solver)."""
        import clarabel

        n, nb, B = len(self.names), self._nb, len(self.topology.buses)
        E = len(self.topology.branches)
        lo, hi = self._bounds(arr)
        hi = np.maximum(hi, lo + 1e-7)
        lim = np.minimum(self._limits, self._big_flow(arr))
        slope, lin = self._curve_coefficients(arr)
        Px = np.concatenate([slope, np.full(nb - n, SLACK_REGULARISATION), np.zeros(E)])
        q = np.zeros(nb + E)
        q[:n] = lin
        q[self._sl["shed"]] = self.price_cap
        q[self._sl["spill"]] = -self.price_floor
        b = np.concatenate([np.zeros(B), hi, lim, -lo, lim])
        if self._clarabel is None:
            A_eq = sp.hstack([self._M, -self.topology.incidence]).tocsc()
            eye = sp.eye(nb + E, format="csc")
            A = sp.vstack([A_eq, eye, -eye]).tocsc()
            P = sp.diags(np.ones(nb + E)).tocsc()
            P.data[:] = Px
            settings = clarabel.DefaultSettings()
            settings.verbose = False
            settings.presolve_enable = False
            settings.tol_gap_abs = settings.tol_gap_rel = settings.tol_feas = 1e-8
            cones = [clarabel.ZeroConeT(B), clarabel.NonnegativeConeT(2 * (nb + E))]
            self._clarabel = clarabel.DefaultSolver(P, q, A, b, cones, settings)
        else:
            self._clarabel.update(P=Px, q=q, b=b)
        sol = self._clarabel.solve()
        if str(sol.status) not in ("Solved", "AlmostSolved"):
            raise MarketClearingError(f"the zone solver and Clarabel both failed "
                                      f"({sol.status})")
        xs = np.asarray(sol.x)
        x = np.zeros(self._nx)
        x[:nb] = xs[:nb]
        x[self._sl["p"]] = self._M @ x[:nb]
        return x, _CLARABEL_SIGN * np.asarray(sol.z)[:B], "clarabel-flow"

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
        # Curve integrals as 0.5*slope*q^2 + lin*q (+ a constant); the same data as the OSQP path.
        slope = cp.Parameter(n, nonneg=True, name="slope")
        lin = cp.Parameter(n, name="lin")
        q_lo = cp.Parameter(n, nonneg=True, name="q_min")
        q_hi = cp.Parameter(n, nonneg=True, name="q_max")
        shed_max = cp.Parameter(B, nonneg=True, name="shed_max")
        spill_max = cp.Parameter(B, nonneg=True, name="spill_max")
        limits = cp.Parameter(len(self.topology.branches), nonneg=True, name="limits")
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
        balance = [cp.sum(inj) == 0]
        flow = self.topology.H @ inj
        cons = balance + [flow <= limits, -flow <= limits, q >= q_lo, q <= q_hi,
                          shed <= shed_max, spill <= spill_max]
        prob = cp.Problem(cp.Minimize(neg_welfare), cons)
        self._cvx = dict(prob=prob, q=q, shed=shed, spill=spill, slope=slope, lin=lin,
                         q_min=q_lo, q_max=q_hi, shed_max=shed_max,
                         spill_max=spill_max, limits=limits, flow=flow, balance=balance[0],
                         upper=cons[1], lower=cons[2])
        limits.value = np.where(np.isfinite(self._limits), self._limits, 1e9)
        return self._cvx

    def clear_cvxpy(self, bids, solver: str = "CLARABEL") -> ClearingResult:
        """Clear with the CVXPY statement (reference path; slower than ``clear``)."""
        arr = self.bids_to_array(bids)
        self.validate(arr)
        x, prices, name = self._solve_cvxpy(arr, solver)
        return self._result(arr, x, np.clip(prices, self.price_floor, self.price_cap), name)

    def _solve_cvxpy(self, arr: np.ndarray, solver: str = "CLARABEL"):
        import cvxpy as cp

        c = self.cvxpy_problem()
        n, B = len(self.names), len(self.topology.buses)
        p_max, p_min, q_max, q_min = arr.T
        slope, lin = self._curve_coefficients(arr)
        c["slope"].value, c["lin"].value = slope, lin
        c["q_min"].value, c["q_max"].value = q_min, np.maximum(q_max, q_min + 1e-7)
        c["limits"].value = np.minimum(self._limits, self._big_flow(arr))
        c["shed_max"].value = np.bincount(self._bus_of[~self.is_supply], q_min[~self.is_supply],
                                          minlength=B)
        c["spill_max"].value = np.bincount(self._bus_of[self.is_supply], q_min[self.is_supply],
                                           minlength=B)
        try:
            c["prob"].solve(solver=solver)
        except cp.error.SolverError as exc:
            raise MarketClearingError(f"OSQP and {solver} both failed: {exc}") from None
        if c["prob"].status not in ("optimal", "optimal_inaccurate"):
            raise MarketClearingError(f"OSQP and {solver} both failed: status "
                                      f"{c['prob'].status}")
        # Nodal price (envelope theorem): lambda_b = -nu - H[:, b] . (mu_up - mu_down).
        nu = float(c["balance"].dual_value)
        mu = np.asarray(c["upper"].dual_value) - np.asarray(c["lower"].dual_value)
        prices = _CVX_SIGN * (nu + self.topology.H.T @ mu)
        x = np.zeros(self._nx)
        x[:n] = c["q"].value
        shed, spill = np.asarray(c["shed"].value), np.asarray(c["spill"].value)
        x[self._sl["shed"]] = shed[self._shed_buses]
        x[self._sl["spill"]] = spill[self._spill_buses]
        x[self._sl["p"]] = self._M @ x[:self._nb]
        return x, prices, f"cvxpy-{solver.lower()}"

    # ------------------------------------------------------------------ accounting
    def _result(self, arr: np.ndarray, x: np.ndarray, prices_bus: np.ndarray,
                solver: str) -> ClearingResult:
        n, topo = len(self.names), self.topology
        q = np.maximum(x[:n], 0.0)
        B = len(topo.buses)
        shed = np.zeros(B)
        shed[self._shed_buses] = np.maximum(x[self._sl["shed"]], 0.0)
        spill = np.zeros(B)
        spill[self._spill_buses] = np.maximum(x[self._sl["spill"]], 0.0)
        served = q.copy()
        if shed.max(initial=0.0) > 1e-9 or spill.max(initial=0.0) > 1e-9:
            # Shed and spilled energy is taken pro rata from the firm parts at the bus.
            firm = arr[:, 3]
            # Per participant: what its bus cut from its side, and its side's firm total there.
            cut = np.where(self.is_supply, spill[self._bus_of], shed[self._bus_of])
            group = self._bus_of * 2 + self.is_supply
            total_firm = np.bincount(group, firm, minlength=2 * B)[group]
            take = (cut > 1e-9) & (total_firm > 0)
            served[take] -= (np.minimum(cut, total_firm) * firm / np.where(
                take, total_firm, 1.0))[take]
        served = np.maximum(served, 0.0)
        price_p = prices_bus[self._bus_of]
        flows = topo.flows(x[self._sl["p"]])
        lim = self._limits
        at_limit = np.isfinite(lim) & (np.abs(flows) >= lim * (1 - self.congestion_tol) - 1e-6)
        congested = [topo.branches[e].name for e in np.flatnonzero(at_limit)]
        p_max, p_min, q_max, q_min = arr.T
        slope, _ = self._curve_coefficients(arr)
        above = np.maximum(served - q_min, 0.0)
        value = np.where(served <= q_min, p_max * served, p_max * served - 0.5 * slope * above**2)
        cost = p_min * served + 0.5 * slope * above**2
        dem, sup = ~self.is_supply, self.is_supply
        pay = float(price_p[dem] @ served[dem])
        rev = float(price_p[sup] @ served[sup])
        cs = float(np.sum(value[dem]) - pay)
        ps = float(rev - np.sum(cost[sup]))
        shed_kw = {topo.buses[b]: float(shed[b]) for b in np.flatnonzero(shed > 1e-6)}
        spilled_kw = {topo.buses[b]: float(spill[b]) for b in np.flatnonzero(spill > 1e-6)}
        return ClearingResult(
            participants=tuple(self.names),
            prices=dict(zip(topo.buses, prices_bus.tolist())),
            quantities=dict(zip(self.names, served.tolist())),
            flows_kw=dict(zip(self._branch_names_t, flows.tolist())),
            congested=congested,
            welfare=float(cs + ps + (pay - rev)),
            consumer_surplus=float(cs),
            producer_surplus=float(ps),
            congestion_rent=pay - rev,
            consumer_payments=pay,
            producer_revenue=rev,
            shed_kw=shed_kw,
            spilled_kw=spilled_kw,
            total_shed_kw=float(sum(shed_kw.values())),
            total_curtailed_kw=float(sum(spilled_kw.values())),
            feasible=not shed_kw,
            solver=solver,
            participant_prices=price_p,
            participant_quantities=served,
            bids=arr.copy(),
            _demand_names=self._demand_names,
        )
