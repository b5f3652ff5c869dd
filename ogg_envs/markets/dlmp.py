"""The DSO's DLMP market: a DC security-constrained OPF on a radial feeder (paper eqs. 12-18).

This is the market of the paper's third use case. It is a plain object: offers in, dispatch and
distribution locational marginal prices (DLMPs) out; it knows nothing of PettingZoo. It
implements ``ogg_envs.api.Market``: ``clear(offers, context) -> DLMPResult`` (an
``ogg_envs.api.Clearing``) and ``reset()``. The hour's data come in an
``ogg_envs.api.MarketContext``: ``demand_kw`` (per bus), ``capacity_kw`` (per resource),
``source_price`` (the source LMP) and optionally ``pv_kw`` (per bus).

Who takes part
--------------
* The **source**: the substation buys from the transmission system at ``lmp`` (¢/kWh, >= 0;
  ``context.source_price``)
  whatever the feeder imports. Power pushed back to the transmission system earns nothing: the
  import cost is ``lmp * max(0, P_source)``, modelled exactly (no export revenue).
* **Generators** (``kind="generator"``) produce ``P_g`` in ``[0, capacity]`` kW.
* **Demand-response providers** (``kind="dr"``) reduce the demand at their bus by
  ``P̄_d - P_d`` in ``[0, capacity]`` kW (``capacity`` is what they can shed this hour; it
  cannot exceed the demand at their bus).
* **Inflexible demand** ``demand_kw`` per bus (the baseline P̄_d, before any reduction) and
  optional **must-take PV** ``pv_kw`` per bus (exogenous production; curtailed only when the
  network cannot absorb it, see "Infeasible instances").

What an offer means: piecewise-linear cost curves
-------------------------------------------------
Every resource offers a cost curve as ``n_blocks`` prices (¢/kWh), one per block of equal width
``capacity / n_blocks``: block ``k`` covers ``[k, k+1] * capacity / n_blocks`` kW of production
(generators) or of demand reduction (DR). The curve is piecewise linear (the cost is the
integral of this step marginal cost), so the OPF stays a linear program, solved exactly with
its duals ("Solving" below). Blocks are dispatched cheapest first, so an offer whose prices
are not sorted means the same as its sorted version (the effective curve is always convex). A
valid price lies in ``[0, price_cap]``; ``InvalidOfferError`` (an ``ogg_envs.api.InvalidBidError``,
so a ``ValueError``, naming the resource) is raised for anything else, NaN and inf included.
``DLMPMarket.repair`` (the ``ogg_envs.api.Market`` method the environments apply with
``invalid_bids="repair"``) clips finite prices into ``[0, price_cap]`` by the same rule.

The optimisation (eqs. 12-18)
-----------------------------
    minimise    lmp * max(0, P_source) + sum_blocks price * x
                + price_cap * sum_b shed_b + curtail_price * sum_b curtail_b
    subject to  injection_b - p_b = demand_b - pv_b        (nodal balance, dual = DLMP_b)
                sum_b p_b = 0                               (lossless feeder, dual = energy part)
                -limit_e <= (H p)_e <= limit_e              (line flows f = H p and limits)
                0 <= x <= capacity / n_blocks               (generator and DR limits)
                0 <= shed_b <= demand_b - DR capacity_b,   0 <= curtail_b <= pv_b

with ``injection_b`` = generation + demand reduction + shed - curtailment at bus b, plus
``P_source`` at the root. ``H`` is the radial flow sensitivity of ``ogg_envs.grid.Topology``
(``H[e, b] = -1`` if bus b is downstream of branch e), so ``f_e > 0`` is flow away from the
source. The DSO dispatches by the offers; nobody's true cost enters the OPF.

Prices and their decomposition
------------------------------
The DLMP of bus b is the dual of its nodal balance: the change of the optimal cost per kW of
extra demand at b (checked against finite differences in the tests). Stationarity in ``p_b``
splits it exactly into

    DLMP_b = energy + congestion_b,    congestion_b = sum_{e on the path of b} mu_e

where ``energy`` is the dual of the lossless balance (the price at the source bus: ``lmp``
when the feeder imports, 0 when it exports, the marginal local offer when it is exactly
self-sufficient) and ``mu_e`` the shadow price of branch e's limit (``branch_prices``:
positive when the forward limit binds, negative for the reverse limit). Without congestion
every DLMP equals the energy price. At a degenerate vertex (e.g. a dispatch exactly at a block
edge) the DLMP is any value between the neighbouring marginal costs; the solver returns one.

Losses (``set_losses``)
-----------------------
By default the feeder is lossless. ``set_losses(loss_factors, loss_kw, injections_kw)`` (an
``ogg_envs.api.LossModel``: marginal loss factors ``lf`` of a solved AC operating point, its
losses ``L0`` and injections ``p0``) replaces the lossless balance by the linearised lossy one

    sum_b (1 - lf_b) p_b = L0 - sum_b lf_b p0_b              (sum_b p_b = L(p), the losses)

so the source imports the demand's energy plus ``L(p) = L0 + lf . (p - p0)`` (``losses_kw``
of the result); flows stay the lossless ``H p``. The DLMP then has a loss component::

    DLMP_b = energy + loss_b + congestion_b,    loss_b = -lf_b * energy

(``price_components`` of the result: ``energy``, ``loss``, ``congestion`` per bus; ``loss`` is
positive where an extra kW withdrawn adds losses, ``lf_b < 0``). ``set_losses(None)`` and
``reset()`` return to the lossless balance; with ``lf = 0`` and ``L0 = 0`` every result is the
lossless one (to solver tolerance).

Surpluses on the offers
-----------------------
With ``served_b = demand_b - shed_b - dr_b`` (what the feeder delivers at bus b; ``dr_b`` the
demand response dispatched there), ``gen_b`` the generation and ``pv_b`` the PV taken at b,
each participant is settled at its own bus's DLMP:

* consumers pay for their baseline demand less what is shed, ``sum_b DLMP_b (demand_b -
  shed_b)``, which is worth ``price_cap`` per kWh to them (inflexible demand is valued at the
  value of lost load): ``consumer_surplus = sum_b (price_cap - DLMP_b)(demand_b - shed_b)``;
* generators and DR providers are paid ``DLMP q`` and bear their offered cost (a DR provider is
  paid for each kW it takes off the baseline: the consumers' payment for that kW funds it), PV
  is paid ``DLMP_b pv_b`` at no cost, and the source earns ``DLMP_root * source_kw`` for its
  import cost: ``producer_surplus`` is the sum of these;
* the DSO keeps ``congestion_rent = sum_b congestion_b * (served_b - gen_b - pv_b) = sum_e
  branch_price_e * flow_e`` and, with losses, ``loss_surplus = energy * (lf . p - L(p))``:
  consumer payments - producer revenues = congestion_rent + loss_surplus. (Multiply the
  decomposition by every bus's net withdrawal ``-p_b``, the source's included, and use
  ``sum_b p_b = L(p)``: the source is paid ``energy * L(p)`` for the losses and the loss
  components collect ``energy * lf . p``, about twice that for losses quadratic in the flows.)

``welfare = consumer_surplus + producer_surplus + congestion_rent = price_cap * sum_b (demand_b
- shed_b) - offered cost - import cost``: the OPF's objective without the curtailment penalty,
independent of the prices.

Infeasible instances and the fallback
-------------------------------------
Limits that no dispatch meets (a subtree whose demand exceeds its local generation, DR and
import limit, or whose must-take PV exceeds its demand plus export limit) make eqs. 12-18
infeasible. The market never fails on them: shedding inflexible demand is always possible at
``price_cap`` per kWh (the value of lost load) and curtailing PV at ``curtail_price``, so the
LP above is always feasible and bounded. When it has to shed or curtail, the result has
``feasible=False`` and ``violated``: the exact set of branch limits that cannot be met, found
by propagating every subtree's feasible injection interval from the leaves up (each entry says
which limit, by how much, and why), plus the nodal balances that were relaxed. The DLMP of a
bus that sheds load is ``price_cap``; of a bus that curtails PV, ``-curtail_price``. An offer
at exactly ``price_cap`` ties with shedding; the merit order runs the offer first (HiGHS may
use either; "Solving").

Solving
-------
The problem is stated three times. On a lossless feeder (the default) ``clear`` runs the
**exact merit order** of ``ogg_envs.markets.merit_order``: every block, shed and taken PV
(curtailment's complement, at ``-curtail_price``) is a block of the tree LP, each branch limit
forces a subtree's cheapest blocks on or cuts its dearest ones, from the leaves up, and the
source runs what remains in price order against ``lmp``.
It is the LP's optimum up to rounding (no solver tolerance), its DLMPs the balances' duals,
and it is faster than a HiGHS run of the same LP (``benchmarks/bench_dlmp.py`` prints both
on the same offers on IEEE 37; scratch timings of the two paths on random offers measured
2.5-4x on IEEE 13, 34, 123 and 8500).

With losses (``set_losses``) or with ``solver="highs"``, ``DLMPMarket``
builds the LP once for HiGHS (``ogg_envs.markets.solvers.highs_lp``) with a structure that
never changes (topology and resources are fixed), with the bus injections ``p`` eliminated
(see ``DLMPMarket._structure``: the same optimum and the same duals, fewer rows; on feeders
above 100 buses the rows of branches in series that carry the same columns merged too,
``DLMPMarket._row_groups``); per clearing only costs, column bounds and row bounds change,
and HiGHS's dual simplex solves the whole LP, passed anew, **cold** (a warm start saves
nothing here, and DAQP on the LP with a vanishing quadratic term took longer and moved prices
by that term). ``DLMPMarket.cvxpy_problem`` states eqs. 12-18 as written above in CVXPY with
Parameters (compiled once, DPP), with the import cost literally ``lmp * cp.pos(P_source)``
and explicit nodal balances whose duals are the DLMPs: the readable reference used by the
tests and the fallback if the others ever fail. Solve it with an LP solver that gives
accurate duals (HiGHS or Clarabel; OSQP's duals are too inaccurate on this LP at default
tolerances). ``DLMPResult.solver`` says which path cleared (``"merit-order"``, ``"highs"``,
``"cvxpy-..."``).

Ties. An LP can have many optimal dispatches (equal offer prices, an offer at the cap against
shedding) and, at a degenerate vertex, many DLMPs. The merit order resolves them by a
documented rule (``ogg_envs.markets.merit_order``): blocks of equal price run in column order
(resources in order, their blocks in order, then shedding, then PV), so an offer at the cap
runs before load is shed; an offer at exactly the source LMP does not run while the feeder
imports. Where the DLMPs are not unique, the source bus's is the cost of one more kW there
(the next block's price or ``lmp``) and a subtree at its limit keeps its parent's price
wherever that is optimal. HiGHS (``solver="highs"``, losses) returns the vertex
its dual simplex reaches from a cold start on these data. Either way the result is a function
of the data alone: the same offers, context and limits give the same dispatch and prices
whatever was cleared before. The last result is kept for the same inputs (``clear``);
``reset()`` forgets it and has nothing else to forget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial
from typing import NamedTuple

import highspy
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
from .merit_order import MeritOrder
from .solvers import cvxpy_ref
from .solvers.highs_lp import HighsLP

__all__ = ["DLMPMarket", "DLMPResult", "Resource", "InvalidOfferError", "InvalidBidError",
           "MarketClearingError", "GENERATOR", "DR"]

GENERATOR, DR = "generator", "dr"
_INF = highspy.kHighsInf


class InvalidOfferError(InvalidBidError):
    """An offer the market cannot accept (names the resource)."""


@dataclass(frozen=True)
class Resource:
    """A bidder in the DSO market: a generator or a demand-response provider at a bus."""

    name: str
    bus: str
    kind: str  # "generator" or "dr"


@dataclass(kw_only=True)
class DLMPResult(Clearing):
    """Outcome of one clearing. Prices ¢/kWh, power kW (held one hour), money ¢ per hour.

    Arrays follow the market's orders: ``buses`` (topology order), ``participants`` (= the
    resource ``names``) and ``branches``. ``prices()`` and ``to_dict()`` give name-keyed views.
    The core fields are ``ogg_envs.api.Clearing``'s: ``participant_prices`` (the DLMP at each
    resource's bus), ``participant_quantities`` (generation or demand reduction, kW; also
    ``quantities``), ``congested``, ``total_shed_kw``, ``total_curtailed_kw``, the surpluses on
    the offers (see the module docstring), ``feasible``, ``solver`` and ``bids`` (the
    (n, n_blocks) offer prices as cleared). ``price_components``: ``energy``, ``loss`` and
    ``congestion`` per bus (plus ``voltage`` in the LinDistFlow market), summing to ``dlmp``;
    ``losses_kw`` and ``loss_surplus``: see the module docstring, "Losses".

    ``DLMPMarket`` and ``LinDistFlowMarket`` leave the money accounts (``cost``,
    ``import_cost``, the surpluses, payments and revenue, ``welfare``, ``loss_surplus``) and
    ``price_components`` to be computed when first read (``dlmp_accounts``; the environments
    read prices, quantities, congestion, shed, curtailment and the source every round), from
    this clearing's own arrays: treat a result as read-only. Pickling, equality and ``repr``
    see every number.
    """

    buses: tuple[str, ...]
    branches: tuple[str, ...]
    dlmp: np.ndarray  # per bus
    energy: float  # energy part (price at the source bus)
    congestion: np.ndarray  # per bus: dlmp - energy
    flows_kw: np.ndarray  # per branch, positive away from the source
    branch_prices: np.ndarray  # per branch: shadow price of its limit (¢/kWh per kW)
    source_kw: float  # net import at the substation (negative: export)
    # optimal objective: import cost + offered costs + shed/curtail penalties
    cost: float = Deferred()
    import_cost: float = Deferred()  # lmp * max(0, source_kw)
    shed_kw: np.ndarray  # per bus, inflexible demand not served
    curtailed_kw: np.ndarray  # per bus, must-take PV not taken
    consumer_payments: float = Deferred(0.0)  # sum_b DLMP_b (demand_b - shed_b)
    producer_revenue: float = Deferred(0.0)  # resources, PV and the source, at their DLMPs
    consumer_surplus: float = Deferred(0.0)
    producer_surplus: float = Deferred(0.0)
    congestion_rent: float = Deferred(0.0)
    loss_surplus: float = Deferred(0.0)
    welfare: float = Deferred(0.0)
    violated: list[dict] = field(default_factory=list)
    solver: str = "highs"
    price_components: dict[str, np.ndarray] = Deferred(dict)  # per bus

    @property
    def names(self) -> tuple[str, ...]:
        """The resources (= ``participants``)."""
        return self.participants

    @property
    def quantities(self) -> np.ndarray:
        """Per resource: generation or demand reduction, kW (= ``participant_quantities``)."""
        return self.participant_quantities

    def prices(self) -> dict[str, float]:
        """DLMP per bus."""
        return dict(zip(self.buses, self.dlmp.tolist()))

    def to_dict(self) -> dict:
        """A JSON-ready summary."""
        return {
            "dlmp": self.prices(),
            "energy": self.energy,
            "congestion": dict(zip(self.buses, self.congestion.tolist())),
            "loss": dict(zip(self.buses, self.price_components["loss"].tolist()))
            if "loss" in self.price_components else {},
            "losses_kw": self.losses_kw,
            "loss_surplus": self.loss_surplus,
            "dispatch_kw": dict(zip(self.names, self.quantities.tolist())),
            "source_kw": self.source_kw,
            "flows_kw": dict(zip(self.branches, self.flows_kw.tolist())),
            "congested": list(self.congested),
            "branch_prices": {b: float(v) for b, v in zip(self.branches, self.branch_prices)
                              if b in self.congested},
            "cost": self.cost,
            "import_cost": self.import_cost,
            "feasible": self.feasible,
            "violated": list(self.violated),
            "shed_kw": {b: float(v) for b, v in zip(self.buses, self.shed_kw) if v > 1e-9},
            "curtailed_kw": {b: float(v) for b, v in zip(self.buses, self.curtailed_kw)
                             if v > 1e-9},
            "solver": self.solver,
        }


class DLMPMarket(Market):
    """The DSO's DC OPF with DLMPs on a radial ``Topology``; see the module docstring.

    Args:
        topology: the radial grid model (``grid.topology`` or hand-made); its branch limits are
            the line-flow limits (``set_limits`` changes them; ``inf`` means none).
        resources: generators and DR providers (fixed for the market's life; may be empty).
        n_blocks: blocks per offer (the piecewise-linear cost curve's segments).
        price_cap: ¢/kWh; the highest valid offer price and the price of shed load.
        curtail_price: ¢/kWh paid (as a penalty) per kW of must-take PV curtailed; > 0 so that
            exporting (which earns nothing) is preferred to curtailing.
        load_buses: buses that may carry demand (default: every bus but the root).
        pv_buses: buses that may carry must-take PV (default: none).
        congestion_tol: relative slack under which a branch counts as congested.
        solver: ``"auto"`` (the exact merit order while the feeder is lossless, HiGHS with
            losses) or ``"highs"`` (HiGHS always; its ties are the vertex its dual simplex
            reaches); ``market.solver`` changes it later. See "Solving" in the module
            docstring.
    """

    def __init__(self, topology: Topology, resources: list[Resource], *, n_blocks: int = 3,
                 price_cap: float = 30.0, curtail_price: float = 1.0,
                 load_buses: list[str] | None = None, pv_buses: list[str] | tuple = (),
                 congestion_tol: float = 1e-6, solver: str = "auto"):
        self.solver = solver  # (checked first: the property names what is valid)
        if int(n_blocks) < 1:
            raise ValueError(f"n_blocks must be >= 1, got {n_blocks}")
        if not (math.isfinite(price_cap) and price_cap > 0):
            raise ValueError(f"price_cap must be finite and > 0, got {price_cap}")
        if not (math.isfinite(curtail_price) and curtail_price > 0):
            raise ValueError(f"curtail_price must be finite and > 0, got {curtail_price}")
        names = check_participants(topology, resources, "kind", (GENERATOR, DR))
        self.topology = topology
        self.resources = list(resources)
        self.names = names
        self.index = {n: i for i, n in enumerate(names)}
        self.n_blocks = int(n_blocks)
        self.price_cap = float(price_cap)
        self.curtail_price = float(curtail_price)
        self.congestion_tol = float(congestion_tol)
        bi = topology.bus_index
        if load_buses is None:
            load_buses = [b for b in topology.buses if b != topology.root]
        self.load_buses = list(dict.fromkeys(self._bus(b, "load_buses") for b in load_buses))
        self.pv_buses = list(dict.fromkeys(self._bus(b, "pv_buses") for b in pv_buses))
        self._res_bus = np.array([bi[r.bus] for r in resources], dtype=np.int64)
        self.is_dr = np.array([r.kind == DR for r in resources], dtype=bool)
        self._load_idx = np.array([bi[b] for b in self.load_buses], dtype=np.int64)
        self._pv_idx = np.array([bi[b] for b in self.pv_buses], dtype=np.int64)
        self._limits = topology.limits_kw.astype(float).copy()
        self._losses = None  # a LossModel (set_losses) or None: lossless
        self._structure()
        self._build_highs()
        self._cvx = None

    @property
    def solver(self) -> str:
        """``"auto"`` (the merit order while lossless, else HiGHS) or ``"highs"``; settable,
        e.g. to compare the two paths on one market (the last result is forgotten)."""
        return self._solver

    @solver.setter
    def solver(self, solver: str) -> None:
        if solver not in ("auto", "highs"):
            raise ValueError(f"solver must be 'auto' or 'highs', got {solver!r}")
        self._solver = solver
        self._cache = None

    @property
    def resource_bus_index(self) -> np.ndarray:
        """Each resource's bus as an index into ``topology.buses``."""
        return self._res_bus.copy()

    def _bus(self, bus: str, what: str) -> str:
        b = str(bus).lower()
        if b not in self.topology.bus_index:
            raise ValueError(f"{what}: unknown bus {bus!r}")
        return b

    # ------------------------------------------------------------------ LP structure
    def _structure(self) -> None:
        """Column and row layout of the fast path's LP, the constraint matrix in CSC form.

        The fast path eliminates the bus injections ``p`` of eqs. 12-18: with ``u_b`` the
        injection of the market's columns at bus b (generation + DR + shed - curtailment, plus
        the source at the root) and ``n_b = demand_b - pv_b``, nodal balance says
        ``p_b = u_b - n_b``, so the lossless balance is ``sum_b u_b = sum_b n_b`` (row 0, dual:
        the energy part) and branch e's limit is ``d_e - limit_e <= sum_{b below e} u_b <=
        d_e + limit_e`` with ``d_e = sum_{b below e} n_b`` (rows 1..E; duals: the branch
        prices). The nodal-balance dual is then, by the chain rule on ``n_b``,
        ``DLMP_b = y_0 + sum_{e above b} y_e`` - exactly the dual of bus b's balance in the
        formulation with ``p`` (the CVXPY statement keeps ``p`` and the nodal balances
        explicit; the tests check that both agree and that DLMPs are the derivatives of the
        optimal cost). Fewer rows and columns make each solve cheaper.
        """
        topo = self.topology
        B = len(topo.buses)
        n, K = len(self.resources), self.n_blocks
        nb, nL, nP = n * K, len(self.load_buses), len(self.pv_buses)
        # columns: blocks | shed | curtail | source import | source export
        c_shed, c_curt = nb, nb + nL
        c_imp = nb + nL + nP
        ncol = c_imp + 2
        root = topo.bus_index[topo.root]
        self._col_bus = np.concatenate([np.repeat(self._res_bus, K), self._load_idx,
                                        self._pv_idx, [root, root]]).astype(np.int64)
        self._col_sign = np.concatenate([np.ones(nb + nL), -np.ones(nP), [1.0, -1.0]])
        if B > LARGE_FEEDER_BUSES:  # a large feeder: never the dense (branches x buses) H
            self._below = (-topo.H_sparse).tocsc()
            rows = (self._below[:, self._col_bus] @ sp.diags(self._col_sign)).tocsr()
            self._row_groups(rows)
            A = sp.vstack([sp.csr_matrix(self._col_sign[None, :]), rows[self._row_first]]).tocsc()
            self._below_rows = self._below[self._row_first].tocsr()
        else:
            self._below = -topo.H  # below[e, b] = 1 if bus b is downstream of branch e
            dense = np.vstack([self._col_sign[None, :],
                               self._below[:, self._col_bus] * self._col_sign[None, :]])
            A = sp.csc_matrix(dense)
            self._row_members = None  # one row per branch
            self._below_rows = self._below
        A.eliminate_zeros()
        A.sort_indices()
        self._A = A
        self._ncol, self._nrow = ncol, A.shape[0]
        self._cols = {"blocks": slice(0, nb), "shed": slice(c_shed, c_shed + nL),
                      "curtail": slice(c_curt, c_curt + nP), "import": c_imp,
                      "export": c_imp + 1}
        self._not_load = np.ones(B, dtype=bool)
        self._not_load[self._load_idx] = False
        self._not_pv = np.ones(B, dtype=bool)
        self._not_pv[self._pv_idx] = False
        # the same masks as 0/1 weights: v @ w == 0 says "v is 0 there" for v >= 0
        self._not_load_w = self._not_load.astype(float)
        self._not_pv_w = self._not_pv.astype(float)
        self._block_owner = np.repeat(np.arange(n), K)  # the resource of each block column
        self._dr_res, self._gen_res = np.flatnonzero(self.is_dr), np.flatnonzero(~self.is_dr)
        self._dr_bus, self._gen_bus = self._res_bus[self._dr_res], self._res_bus[self._gen_res]
        self._root = root
        self._layout = AccountsLayout(self._dr_bus, self._dr_res, self._gen_bus, self._gen_res,
                                      root, B, self.price_cap, self.curtail_price)
        self._buses_t = tuple(topo.buses)
        self._names_t = tuple(self.names)
        self._branches_t = tuple(br.name for br in topo.branches)
        self._row_limits = self._highs_limits()
        self._threshold = CongestionThreshold()  # |flow| at which a branch is congested
        # the exact merit order (lossless clearings): blocks, shed and the PV taken
        # (curtailment's complement) are its blocks
        self._merit = MeritOrder(topo, self._col_bus[:c_imp])
        self._item_price = np.zeros(c_imp)
        self._item_price[self._cols["shed"]] = self.price_cap
        self._item_price[self._cols["curtail"]] = -self.curtail_price
        self._branch_ends = (topo.branch_child, topo.branch_parent)

    def _row_groups(self, rows: sp.csr_matrix) -> None:
        """A large feeder's branch rows, merged: branches in series with the same market
        columns below them (a service transformer and its triplex line, a chain of line
        sections) have the same row and, since every bus with demand or PV has a column, the
        same net demand below; their limits intersect to the smallest. One LP row per group
        (IEEE 8500: 2,249 rows for 4,875 branches; branches without columns, which no dispatch
        can load, none), whose dual is the branch price of the group's smallest limit, the
        deepest of equal ones (``_highs_limits``); the others' prices are zero, as the LP with
        every row gives them wherever its optimum is unique. Small feeders keep one row per
        branch (their clearings stay bit for bit what they were)."""
        rows.sort_indices()
        group_of: dict = {}
        members: list[list[int]] = []
        for e in range(rows.shape[0]):
            cols = slice(rows.indptr[e], rows.indptr[e + 1])
            if cols.start == cols.stop:
                continue  # nothing the market dispatches flows through it
            key = (rows.indices[cols].tobytes(), rows.data[cols].tobytes())
            if key not in group_of:
                group_of[key] = len(members)
                members.append([])
            members[group_of[key]].append(e)
        self._row_first = np.array([m[0] for m in members], dtype=np.int64)
        # the groups' branches one after the other, deepest first in each (BFS order reversed)
        self._row_members = np.array([e for m in members for e in reversed(m)], dtype=np.int64)
        sizes = np.array([len(m) for m in members], dtype=np.int64)
        self._row_starts = np.cumsum(sizes) - sizes

    def _build_highs(self) -> None:
        """The fast path's LP (``solvers.highs_lp``) and the parts of its data that never
        change: shed at the cap, curtailment at its price, the source unbounded."""
        self._lp = HighsLP(self._A)
        self._cost = np.zeros(self._ncol)
        self._cost[self._cols["shed"]] = self.price_cap
        self._cost[self._cols["curtail"]] = self.curtail_price
        self._col_lower = np.zeros(self._ncol)
        self._col_upper = np.zeros(self._ncol)
        self._col_upper[self._cols["import"]] = self._col_upper[self._cols["export"]] = _INF

    def _highs_limits(self) -> np.ndarray:
        """The limits as HiGHS's row bounds (no limit: HiGHS's infinity), one per LP row; with
        merged rows (``_row_groups``) each group's smallest, and which branch has it
        (``_row_branch``)."""
        limits = self._limits
        if self._row_members is not None and not len(self._row_starts):
            self._row_branch = np.zeros(0, dtype=np.int64)
            limits = np.zeros(0)
        elif self._row_members is not None:
            members, starts = self._row_members, self._row_starts
            member_limits = limits[members]
            smallest = np.minimum.reduceat(member_limits, starts)
            group = np.repeat(np.arange(len(starts)), np.diff(np.append(starts, len(members))))
            at = np.where(member_limits == smallest[group], np.arange(len(members)), len(members))
            self._row_branch = members[np.minimum.reduceat(at, starts)]  # the deepest smallest
            limits = smallest
        return np.where(np.isfinite(limits), limits, _INF)

    # ------------------------------------------------------------------ pickling
    def __getstate__(self):
        state = self.__dict__.copy()
        state["_cvx"] = None
        for key in ("_cache", "_passed", "_context", "_lengths"):
            state.pop(key, None)
        return state

    # ------------------------------------------------------------------ limits
    def set_limits(self, limits_kw: np.ndarray | dict[str, float]) -> None:
        """New branch limits (kW, branch order of the topology, or name -> kW; inf = none)."""
        new = self._limits.copy()
        if isinstance(limits_kw, dict):
            for name, lim in limits_kw.items():
                if name not in self.topology.branch_index:
                    raise ValueError(f"unknown branch {name!r}; branches: "
                                     f"{', '.join(self.topology.branch_index)}")
                new[self.topology.branch_index[name]] = float(lim)
        else:
            lim = np.asarray(limits_kw, dtype=float)
            if lim.shape != new.shape:
                raise ValueError(f"expected {new.shape[0]} limits, got {lim.shape}")
            new[:] = lim
        if np.any(np.isnan(new)) or np.any(new < 0):
            raise ValueError("branch limits must be >= 0 (inf for none)")
        self._limits = new
        self._row_limits = self._highs_limits()
        if self._cvx is not None:
            self._cvx["limits"].value = np.where(np.isfinite(new), new, 1e9)

    @property
    def limits_kw(self) -> np.ndarray:
        return self._limits.copy()

    # ------------------------------------------------------------------ losses
    def set_losses(self, loss_factors=None, loss_kw: float = 0.0, injections_kw=None) -> None:
        """Price losses: the balance becomes ``sum_b (1 - lf_b) p_b = L0 - lf . p0`` (module
        docstring, "Losses"; ``ogg_envs.api.LossModel``). ``loss_factors``: ``lf`` per
        topology bus (``None``: lossless again), ``loss_kw``: ``L0``, ``injections_kw``: ``p0``
        per bus (``None``: zeros). Checked before anything changes; it replaces one LP row's
        coefficients, rebuilding the matrix HiGHS is passed (about 0.3 ms on IEEE 37)."""
        losses = None if loss_factors is None else \
            LossModel.of(self._buses_t, loss_factors, loss_kw, injections_kw)
        self._losses = losses
        weights = np.ones(len(self._buses_t)) if losses is None else losses.weights
        self._lp.set_row(0, weights[self._col_bus] * self._col_sign)

    @property
    def losses(self) -> LossModel | None:
        """The loss model the market clears with (``set_losses``), or None: lossless."""
        return self._losses

    def _balance_rhs(self, net: np.ndarray) -> float:
        """The balance row's right-hand side for net demand ``net`` per bus: the market's
        columns inject ``u_b = p_b + net_b``, so ``sum_b w_b u_b = constant + w . net``."""
        if self._losses is None:
            return float(net.sum())
        return self._losses.constant + float(self._losses.weights @ net)

    # ------------------------------------------------------------------ inputs
    def bus_vector(self, values, what: str) -> np.ndarray:
        """Per-bus values (topology order) from an array or a ``{bus: kW}`` dict."""
        B = len(self.topology.buses)
        if isinstance(values, dict):
            out = np.zeros(B)
            for bus, v in values.items():
                b = str(bus).lower()
                if b not in self.topology.bus_index:
                    raise ValueError(f"{what}: unknown bus {bus!r}")
                out[self.topology.bus_index[b]] += float(v)
            return out
        out = np.asarray(values, dtype=float)
        if out.shape != (B,):
            raise ValueError(f"{what}: expected {B} values in topology bus order, got "
                             f"{out.shape}")
        return out

    def resource_vector(self, values, what: str) -> np.ndarray:
        """Per-resource values (resource order) from an array or a ``{name: kW}`` dict."""
        if isinstance(values, dict):
            values = self.in_order(values, what)
        out = np.asarray(values, dtype=float).reshape(-1)
        if out.shape != (len(self.names),):
            raise ValueError(f"{what}: expected {len(self.names)} values, got {out.shape}")
        return out

    def offers_to_array(self, offers) -> np.ndarray:
        """Offers as an (n, n_blocks) array in resource order (array, list or dict)."""
        n, K = len(self.names), self.n_blocks
        if isinstance(offers, dict):
            offers = self.in_order(offers, "offers")
        arr = np.asarray(offers, dtype=float).reshape(-1, K) if n else np.zeros((0, K))
        if arr.shape != (n, K):
            raise ValueError(f"expected {n} offers of {K} block prices, got {arr.shape}")
        return arr

    def _valid_prices(self, offers: np.ndarray) -> np.ndarray:
        """The validity rule of offers, per block price: in ``[0, price_cap]`` (NaN fails)."""
        return (offers >= 0) & (offers <= self.price_cap)

    def _all_valid(self, offers: np.ndarray) -> bool:
        """``_valid_prices(offers).all()`` in two reductions (a NaN makes both NaN)."""
        return (np.minimum.reduce(offers, axis=None, initial=0.0) >= 0
                and np.maximum.reduce(offers, axis=None, initial=0.0) <= self.price_cap)

    def _invalid_offer(self, name: str, prices: np.ndarray) -> InvalidOfferError:
        return InvalidOfferError(f"{name}: offer prices must be finite and in [0, "
                                 f"{self.price_cap}] ¢/kWh, got {prices.tolist()}")

    def repair(self, offers, q_limit=None, *, names=None,
               strict: bool = False) -> tuple[np.ndarray, dict[str, list[str]]]:
        """The nearest valid offers and what was changed (``ogg_envs.api.Market.repair``):
        finite prices clipped into ``[0, price_cap]``. ``offers``: an (n, n_blocks) array in
        resource order (or what ``offers_to_array`` takes), or rows for ``names``;
        ``q_limit`` is ignored (capacities come with the context). The same array when every
        price is valid, else a clipped copy, with ``["prices clipped into [0, price_cap]
        ¢/kWh"]`` per repaired resource. NaN/inf raise ``InvalidOfferError`` naming the
        resource; so does with ``strict`` the first invalid offer."""
        if type(offers) is not np.ndarray or offers.dtype != float:
            offers = self.offers_to_array(offers) if names is None else \
                np.asarray(offers, dtype=float).reshape(-1, self.n_blocks)
        if self._all_valid(offers):
            repaired, changes = offers, {}
        else:
            ok = self._valid_prices(offers)
            rows = self.names if names is None else names
            invalid = np.flatnonzero(~ok.all(axis=1)).tolist()
            for k in invalid:
                if strict or not np.isfinite(offers[k]).all():
                    raise self._invalid_offer(rows[k], offers[k])
            fix = [f"prices clipped into [0, {self.price_cap}] ¢/kWh"]
            repaired = np.clip(offers, 0.0, self.price_cap)
            changes = {rows[k]: list(fix) for k in invalid}
        if names is None:  # valid now: ``clear`` skips its check of these very offers
            self._passed = (repaired.tobytes(), self.price_cap)
        return repaired, changes

    def validate(self, offers: np.ndarray, demand: np.ndarray, capacity: np.ndarray,
                 pv: np.ndarray, lmp: float) -> np.ndarray:
        """Raise ``InvalidOfferError`` / ``ValueError`` for inputs the market cannot take.

        Returns the DR capacity per bus (what shedding is bounded by). Comparisons are written
        so that NaN fails them: ``x >= 0`` is False for NaN. Valid inputs pass one combined
        check (``_accepts``); anything else goes through the checks below, which name it.
        """
        dr_cap = self._dr_capacity(capacity)
        if self._accepts(offers, demand, capacity, pv, lmp, dr_cap):
            return dr_cap
        valid = self._valid_prices(offers).all(axis=1)
        if not valid.all():
            i = int(np.flatnonzero(~valid)[0])
            raise self._invalid_offer(self.names[i], offers[i])
        if not (lmp >= 0 and lmp < math.inf):
            raise ValueError(f"source_price (the source LMP) must be finite and >= 0 ¢/kWh "
                             f"(max(0, P_source) is convex only then), got {lmp!r}")
        for label, v, outside in (("demand_kw", demand, self._not_load),
                                  ("pv_kw", pv, self._not_pv)):
            if not ((v >= 0) & (v < math.inf)).all():
                raise ValueError(f"{label} must be finite and >= 0, got {v.tolist()}")
            if v[outside].any():
                b = self.topology.buses[int(np.flatnonzero(outside & (v != 0))[0])]
                raise ValueError(f"{label}: bus {b} is not one of the market's "
                                 f"{'load' if label == 'demand_kw' else 'pv'} buses")
        if not ((capacity >= 0) & (capacity < math.inf)).all():
            i = int(np.flatnonzero(~((capacity >= 0) & (capacity < math.inf)))[0])
            raise ValueError(f"{self.names[i]}: capacity must be finite and >= 0, got "
                             f"{capacity[i]!r}")
        if (dr_cap > demand * (1 + 1e-12) + 1e-9).any():
            b = int(np.flatnonzero(dr_cap > demand * (1 + 1e-12) + 1e-9)[0])
            raise ValueError(f"demand response at bus {self.topology.buses[b]} can reduce "
                             f"{dr_cap[b]:.6g} kW but the demand there is {demand[b]:.6g} kW")
        return dr_cap

    def _accepts(self, offers, demand, capacity, pv, lmp, dr_cap) -> bool:
        """Whether ``validate`` would pass every input (a few whole-array operations instead of
        one check per input: this runs on every clearing). False on any doubt; ``validate``
        then decides and names the culprit."""
        if not (lmp >= 0 and lmp < math.inf):
            return False
        # every value >= 0 and every offer <= the cap (NaN fails a min), then all finite
        values = np.concatenate((offers.ravel(), self.price_cap - offers.ravel(), demand, pv,
                                 capacity))
        if not (np.minimum.reduce(values) >= 0 and np.maximum.reduce(values) < math.inf):
            return False
        # nonnegative, so a zero weighted sum means zero at every weighted bus
        return (demand @ self._not_load_w == 0 and pv @ self._not_pv_w == 0
                and not np.logical_or.reduce(dr_cap > demand * (1 + 1e-12) + 1e-9))

    def _dr_capacity(self, capacity: np.ndarray) -> np.ndarray:
        """Demand-response capacity per bus (= ``_bus_sum(capacity, is_dr)``)."""
        return np.bincount(self._dr_bus, capacity[self._dr_res], minlength=len(self._buses_t))

    def _bus_sum(self, values: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return np.bincount(self._res_bus[mask], values[mask], minlength=len(self.topology.buses))

    # ------------------------------------------------------------------ clearing
    _cache = None  # (limits, loss model, inputs, result) of the last clearing

    def reset(self) -> None:
        """Back to the lossless balance, and forget the last result and the last inputs found
        valid. Nothing else to forget: every clearing solves cold, so none depends on the
        past (what is kept between clearings is keyed on the exact bytes of its inputs)."""
        self._cache = self._passed = self._context = self._lengths = None
        if self._losses is not None:
            self.set_losses(None)

    def clear(self, offers, context: MarketContext | None = None) -> DLMPResult:
        """Clear the market (the exact merit order or HiGHS's simplex, cold: module docstring,
        "Solving"; the same inputs always give the same result, whatever was cleared before).
        The same offers, context, limits, loss model and ``congestion_tol`` as the previous
        call return the previous result object (an environment's rounds often repeat their
        offers within an hour; treat results as read-only).

        Args:
            offers: block prices, (n, n_blocks) array in resource order or ``{name: prices}``.
            context: the hour's data (``ogg_envs.api.MarketContext``), required:
                ``demand_kw`` inflexible baseline demand per bus (array in topology order or
                ``{bus: kW}``), ``capacity_kw`` per resource its capacity this hour (DR: kW it
                can reduce; array in resource order or ``{name: kW}``), ``source_price`` the
                source LMP (¢/kWh, >= 0) and optionally ``pv_kw`` must-take PV per bus (default
                none). A missing required field raises ``ValueError`` naming it.
        """
        args, key = self._read(offers, context, "DLMPMarket.clear")
        inputs = (*key, self.congestion_tol)  # (dr_cap follows capacity)
        cache = self._cache  # (set_limits installs a new array, set_losses a new model)
        if cache is not None and cache[0] is self._limits and cache[1] is self._losses \
                and cache[2] == inputs:
            return cache[3]
        x = None
        if self._solver == "auto" and self._losses is None:
            x, y, solver = self._solve_merit(*args)
        if x is None:
            x, y, solver = self._solve_highs(*args)
        if x is None:
            x, y, solver = self._solve_cvxpy(*args, solver="CLARABEL")
        result = self._result(*args, x, y, solver)
        self._cache = (self._limits, self._losses, inputs, result)
        return result

    def clear_cvxpy(self, offers, context: MarketContext | None = None, *,
                    solver: str = "HIGHS") -> DLMPResult:
        """Clear with the CVXPY statement (reference path, slower than ``clear``)."""
        args = self._inputs(offers, context)
        x, y, name = self._solve_cvxpy(*args, solver=solver)
        return self._result(*args, x, y, name)

    def _inputs(self, offers, context: MarketContext | None):
        return self.read_inputs(offers, context, "DLMPMarket.clear")

    def read_inputs(self, offers, context: MarketContext | None, who: str) -> tuple:
        """A clearing's data, read and checked: ``(offers (n, n_blocks), demand per bus,
        capacity per resource, pv per bus, source price, DR capacity per bus)``. A missing
        context field or invalid input raises ``ValueError`` naming it (and ``who``, the
        method the data came to). The LinDistFlow market reads its data through this too.
        The DR capacity is read-only: the clearings of one context share it."""
        return self._read(offers, context, who)[0]

    _passed = None  # (bytes, price cap) of the last offers ``repair`` returned (valid)
    _context = None  # (bytes, DR capacity per bus) of the last context ``validate`` passed

    def _read(self, offers, context: MarketContext | None, who: str) -> tuple:
        """``read_inputs``'s data and their bytes, ``(offers, (demand, capacity, pv, source
        price))``. A context byte for byte the last one validated (an hour's rounds share
        theirs) is not checked again, nor are offers that just passed ``repair``."""
        required = ("demand_kw", "capacity_kw", "source_price")
        missing = [f for f in required if getattr(context, f, None) is None]
        if missing:
            raise ValueError(f"{who}: the context must give {', '.join(missing)} "
                             f"(a MarketContext with demand_kw per bus, capacity_kw per "
                             f"resource and source_price, the source LMP)")
        arr = self.offers_to_array(offers)
        demand = self.bus_vector(context.demand_kw, "demand_kw")
        pv = self.bus_vector(context.pv_kw, "pv_kw") if context.pv_kw is not None else \
            np.zeros(len(self.topology.buses))
        cap = self.resource_vector(context.capacity_kw, "capacity_kw")
        lmp = float(context.source_price)
        offer_key, context_key = arr.tobytes(), (demand.tobytes(), cap.tobytes(), pv.tobytes(),
                                                 lmp)
        known = self._context
        if known is not None and known[0] == context_key and (
                self._passed == (offer_key, self.price_cap) or self._all_valid(arr)):
            dr_cap = known[1]
        else:
            dr_cap = self.validate(arr, demand, cap, pv, lmp)
            dr_cap.flags.writeable = False
            self._context = (context_key, dr_cap)
        return (arr, demand, cap, pv, lmp, dr_cap), (offer_key, context_key)

    def injection_incidence(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Bus incidence of each kind of injection, as the CVXPY statements use it:
        ``(resources (B, n), shed (B, load buses), pv (B, pv buses), the root (B,))``."""
        B, n = len(self.topology.buses), len(self.names)
        nL, nP = len(self._load_idx), len(self._pv_idx)
        M_res = np.zeros((B, n))
        M_res[self._res_bus, np.arange(n)] = 1.0
        M_shed = np.zeros((B, nL))
        M_shed[self._load_idx, np.arange(nL)] = 1.0
        M_pv = np.zeros((B, nP))
        M_pv[self._pv_idx, np.arange(nP)] = 1.0
        e_root = np.zeros(B)
        e_root[self.topology.bus_index[self.topology.root]] = 1.0
        return M_res, M_shed, M_pv, e_root

    def _solve_merit(self, offers, demand, cap, pv, lmp, dr_cap):
        """The exact merit order (``ogg_envs.markets.merit_order``) on the lossless LP:
        ``(x, (energy, branch prices, DLMPs, congestion parts), "merit-order")`` in the
        columns of ``_structure``, or ``(None, None, None)`` if it finds no dispatch."""
        cols = self._cols
        price = self._item_price.copy()
        price[cols["blocks"]] = offers.ravel()
        length = self._item_lengths(demand, cap, pv, dr_cap)
        out = self._merit.solve(price, length, demand, self._limits, lmp)
        if out is None:
            return None, None, None
        x = np.empty(self._ncol)
        x[:len(price)] = out.x
        x[cols["curtail"]] = length[cols["curtail"]] - out.x[cols["curtail"]]
        x[cols["import"]], x[cols["export"]] = out.source_import, out.source_export
        dlmp = out.prices
        child, parent = self._branch_ends
        return x, (out.energy, dlmp[child] - dlmp[parent], dlmp, dlmp - out.energy), \
            "merit-order"

    _lengths = None  # (the DR capacity array, the item lengths) of the last clearing

    def _item_lengths(self, demand, cap, pv, dr_cap) -> np.ndarray:
        """The upper bounds (kW) of the columns before the source's, in ``_cols`` order:
        every offer block, the shed and the PV (curtailed in the LP, taken in the merit order:
        either up to the PV there), the merit order's item lengths. They depend on the context
        alone: kept while ``dr_cap`` is the very (read-only) array ``_read`` hands out for one
        context, so for the clearings of an hour."""
        kept = self._lengths
        if kept is not None and kept[0] is dr_cap:
            return kept[1]
        cols = self._cols
        length = np.empty(len(self._item_price))
        length[cols["blocks"]] = (cap / self.n_blocks)[self._block_owner]
        length[cols["shed"]] = np.maximum(demand - dr_cap, 0.0)[self._load_idx]
        length[cols["curtail"]] = pv[self._pv_idx]  # the PV taken, at -curtail_price
        length.flags.writeable = False
        self._lengths = (dr_cap, length)
        return length

    def _solve_highs(self, offers, demand, cap, pv, lmp, dr_cap):
        """HiGHS on the LP of ``_structure``, cold: ``(x, (energy, branch prices, DLMPs,
        congestion parts), "highs")``, or ``(None, None, None)`` if it fails."""
        cols = self._cols
        cost = self._cost.copy()
        cost[cols["blocks"]] = offers.ravel()
        cost[cols["import"]] = lmp
        upper = self._col_upper.copy()
        upper[:len(self._item_price)] = self._item_lengths(demand, cap, pv, dr_cap)
        net = demand - pv
        below = self._below_rows @ net
        row_lower, row_upper = np.empty(self._nrow), np.empty(self._nrow)
        row_lower[0] = row_upper[0] = self._balance_rhs(net)
        np.subtract(below, self._row_limits, out=row_lower[1:])
        np.add(below, self._row_limits, out=row_upper[1:])
        try:
            x, y = self._lp.solve_primal_rows(cost, row_lower, row_upper, self._col_lower,
                                              upper)
        except MarketClearingError:
            return None, None, None
        # DLMP_b = energy * (1 - lf_b) + sum of the branch prices above b (see _structure):
        # net demand at b enters the balance's right-hand side with weight 1 - lf_b. The
        # prices are derivatives of the optimal cost, the opposite sign of the solver
        # package's duals.
        energy, branch = -float(y[0]), -y[1:]
        if self._row_members is not None:  # merged rows: each group's price to its branch
            branch = np.zeros(len(self._limits))
            branch[self._row_branch] = -y[1:]
        congestion = self._below.T @ branch
        if self._losses is None:
            dlmp = energy + congestion
        else:
            dlmp = energy - self._losses.factors * energy + congestion
        return x, (energy, branch, dlmp, congestion), "highs"

    # ------------------------------------------------------------------ the CVXPY statement
    def cvxpy_problem(self) -> dict:
        """The same OPF in CVXPY with Parameters (built once, DPP, then re-used)."""
        if self._cvx is not None:
            return self._cvx
        import cvxpy as cp

        topo = self.topology
        B, E = len(topo.buses), len(topo.branches)
        n, K = len(self.names), self.n_blocks
        nL, nP = len(self.load_buses), len(self.pv_buses)
        # Decision variables.
        x = cp.Variable((n, K), nonneg=True, name="blocks")  # kW in each offer block
        shed = cp.Variable(nL, nonneg=True, name="shed")
        curtail = cp.Variable(nP, nonneg=True, name="curtail")
        source = cp.Variable(name="P_source")  # net import at the substation
        p = cp.Variable(B, name="p")  # net injection of every bus
        # Data of one clearing.
        price = cp.Parameter((n, K), nonneg=True, name="offer_prices")
        width = cp.Parameter((n, K), nonneg=True, name="block_widths")
        lmp = cp.Parameter(nonneg=True, name="lmp")
        net_demand = cp.Parameter(B, name="net_demand")  # demand - pv
        shed_max = cp.Parameter(nL, nonneg=True, name="shed_max")
        pv_max = cp.Parameter(nP, nonneg=True, name="pv")
        limits = cp.Parameter(E, nonneg=True, name="limits")
        weights = cp.Parameter(B, name="loss_weights")  # 1 - lf (lossless: 1)
        constant = cp.Parameter(name="loss_constant")  # L0 - lf . p0 (lossless: 0)
        M_res, M_shed, M_pv, e_root = self.injection_incidence()
        injection = (M_res @ cp.sum(x, axis=1) + M_shed @ shed - M_pv @ curtail
                     + e_root * source)
        cost = (lmp * cp.pos(source)  # eq. 12: export earns nothing
                + cp.sum(cp.multiply(price, x))  # generators' and DR providers' offers
                + self.price_cap * cp.sum(shed) + self.curtail_price * cp.sum(curtail))
        flow = topo.H @ p  # eq. 17
        balance = injection - p == net_demand  # nodal balance: dual = DLMP
        system = weights @ p == constant  # sum p = L(p) (lossless: 0); dual = energy part
        upper = flow <= limits
        lower = -flow <= limits
        cons = [balance, system, upper, lower, x <= width, shed <= shed_max,
                curtail <= pv_max]
        prob = cp.Problem(cp.Minimize(cost), cons)
        self._cvx = dict(prob=prob, x=x, shed=shed, curtail=curtail, source=source, p=p,
                         price=price, width=width, lmp=lmp, net_demand=net_demand,
                         shed_max=shed_max, pv=pv_max, limits=limits, balance=balance,
                         system=system, upper=upper, lower=lower, weights=weights,
                         constant=constant)
        limits.value = np.where(np.isfinite(self._limits), self._limits, 1e9)
        return self._cvx

    def _solve_cvxpy(self, offers, demand, cap, pv, lmp, dr_cap, solver: str = "HIGHS"):

        c = self.cvxpy_problem()
        K = self.n_blocks
        c["price"].value = offers
        c["width"].value = np.repeat((cap / K)[:, None], K, axis=1)
        c["lmp"].value = lmp
        c["net_demand"].value = demand - pv
        c["shed_max"].value = np.maximum(demand - dr_cap, 0.0)[self._load_idx]
        c["pv"].value = pv[self._pv_idx]
        losses = self._losses
        c["weights"].value = np.ones(len(demand)) if losses is None else losses.weights
        c["constant"].value = 0.0 if losses is None else losses.constant
        cvxpy_ref.solve(c["prob"], solver)
        # Same layout as the HiGHS path. CVXPY's equality duals have the opposite sign of
        # HiGHS's row duals (checked against finite differences in the tests).
        x = np.zeros(self._ncol)
        x[self._cols["blocks"]] = np.asarray(c["x"].value).ravel()
        x[self._cols["shed"]] = c["shed"].value
        x[self._cols["curtail"]] = c["curtail"].value
        s = float(c["source"].value)
        x[self._cols["import"]], x[self._cols["export"]] = max(s, 0.0), max(-s, 0.0)
        dlmp = -np.asarray(c["balance"].dual_value, dtype=float)
        energy = -float(c["system"].dual_value)
        branch = (np.asarray(c["upper"].dual_value, dtype=float)
                  - np.asarray(c["lower"].dual_value, dtype=float))
        return x, (energy, branch, dlmp, self._below.T @ branch), f"cvxpy-{solver.lower()}"

    # ------------------------------------------------------------------ results
    def _result(self, offers, demand, cap, pv, lmp, dr_cap, x, duals, solver) -> DLMPResult:
        """The clearing's result: dispatch, prices, flows, congestion and feasibility now, the
        money accounts (``dlmp_accounts``) when first read."""
        topo = self.topology
        cols = self._cols
        energy, branch_prices, dlmp, congestion = duals  # congestion: below.T @ branch_prices
        blocks = x[cols["blocks"]]
        q = np.add.reduce(blocks.reshape(-1, self.n_blocks), axis=1)  # (.sum's numbers)
        B = len(self._buses_t)
        shed = np.zeros(B)
        shed[self._load_idx] = x[cols["shed"]]
        curt = np.zeros(B)
        curt[self._pv_idx] = x[cols["curtail"]]
        imported, exported = x[cols["import"]:cols["export"] + 1].tolist()
        source = imported - exported
        injection = np.bincount(self._col_bus, self._col_sign * x, minlength=B)
        net_injection = injection - demand + pv
        flows = topo.flows(net_injection)
        losses = self._losses
        losses_kw = 0.0 if losses is None else losses.losses(net_injection)
        shed_total, curt_total = float(np.add.reduce(shed)), float(np.add.reduce(curt))
        at_limit = np.abs(flows) >= self._threshold(self._limits, self.congestion_tol)
        congested = [self._branches_t[e] for e in at_limit.nonzero()[0].tolist()]
        bids = offers.copy()
        # (the accounts keep no array of the caller's: demand and pv enter as these)
        baseline = demand - shed  # what consumers pay for; served = baseline - DR
        pv_taken = pv - curt
        price_r = dlmp[self._res_bus]
        res = DLMPResult(
            participants=self._names_t, buses=self._buses_t, branches=self._branches_t,
            dlmp=dlmp, energy=energy, congestion=congestion, participant_quantities=q,
            flows_kw=flows, branch_prices=branch_prices, source_kw=source,
            congested=congested, shed_kw=shed, curtailed_kw=curt,
            total_shed_kw=shed_total, total_curtailed_kw=curt_total, solver=solver,
            participant_prices=price_r, bids=bids, losses_kw=losses_kw,
            _accounts=partial(
                dlmp_accounts, self._layout, offers=bids, blocks=blocks, q=q, dlmp=dlmp,
                price_r=price_r, energy=energy, congestion=congestion, baseline=baseline,
                pv_taken=pv_taken, source=source, lmp=lmp, shed_total=shed_total,
                curt_total=curt_total, losses=losses, net_injection=net_injection,
                losses_kw=losses_kw),
        )
        if shed_total > 1e-7 or curt_total > 1e-7:
            res.violated = self.diagnose(demand, cap, pv)
        if res.violated:  # (shedding without violation is a tie with an offer at the cap)
            res.feasible = False
            for b in np.flatnonzero(shed > 1e-7):
                res.violated.append(_violation(
                    "nodal_balance", topo.buses[b], shed[b],
                    f"nodal balance at bus {topo.buses[b]}: {shed[b]:.3f} kW of demand shed "
                    f"at the price cap ({self.price_cap} ¢/kWh)"))
            for b in np.flatnonzero(curt > 1e-7):
                res.violated.append(_violation(
                    "nodal_balance", topo.buses[b], curt[b],
                    f"nodal balance at bus {topo.buses[b]}: {curt[b]:.3f} kW of must-take PV "
                    f"curtailed"))
        return res

    _bottom_up = None  # diagnose's walk up the tree, built at its first use

    def diagnose(self, demand_kw, capacity_kw, pv_kw=None) -> list[dict]:
        """The branch limits that no dispatch can meet (empty list: eqs. 12-18 are feasible).

        Exact on a radial feeder: every subtree's net injection can take any value in an
        interval (all local generation and DR off .. all on; PV must be taken, nothing is
        shed); intervals add up the tree, and each branch clips its subtree's interval to
        ``[-limit, limit]``. A branch whose interval misses ``[-limit, limit]`` is violated
        (the fallback then holds it at its limit, and the diagnosis goes on upwards).
        """
        topo = self.topology
        demand = self.bus_vector(demand_kw, "demand_kw")
        pv = self.bus_vector(pv_kw, "pv_kw") if pv_kw is not None else np.zeros_like(demand)
        cap = np.asarray(capacity_kw, dtype=float)
        flex = self._bus_sum(cap, np.ones(len(cap), dtype=bool))
        lo = (pv - demand).tolist()  # everything flexible off (Python floats: one per bus)
        hi = (pv - demand + flex).tolist()  # all generation and demand response on
        limits = self._limits.tolist()
        if self._bottom_up is None:  # (bus, its branch, the branch's source-side bus)
            walk = []
            for b in reversed(topo.buses[1:]):  # children before parents (BFS order reversed)
                e = topo.branch_index[topo.parent_branch[b]]
                walk.append((topo.bus_index[b], e, topo.bus_index[topo.branches[e].parent]))
            self._bottom_up = walk
        out = []
        for i, e, parent in self._bottom_up:
            L = limits[e]
            if hi[i] < -L:
                br = topo.branches[e]
                out.append(_violation(
                    "flow_limit", br.name, -hi[i] - L,
                    f"flow limit of branch {br.name} ({L:.1f} kW): the demand downstream "
                    f"exceeds its generation and demand response by {-hi[i]:.1f} kW, "
                    f"{-hi[i] - L:.1f} kW more than the limit", limit_kw=L))
                lo[i] = hi[i] = -L
            elif lo[i] > L:
                br = topo.branches[e]
                out.append(_violation(
                    "flow_limit", br.name, lo[i] - L,
                    f"reverse-flow limit of branch {br.name} ({L:.1f} kW): the must-take PV "
                    f"downstream exceeds its demand by {lo[i]:.1f} kW, {lo[i] - L:.1f} kW more "
                    f"than the limit", limit_kw=L))
                lo[i] = hi[i] = L
            else:
                lo[i], hi[i] = max(lo[i], -L), min(hi[i], L)
            lo[parent] += lo[i]
            hi[parent] += hi[i]
        return out


class AccountsLayout(NamedTuple):
    """What ``dlmp_accounts`` needs of a market's structure (fixed for its life)."""

    dr_bus: np.ndarray  # the bus of each DR resource
    dr_res: np.ndarray  # the DR resources (indices)
    gen_bus: np.ndarray  # the bus of each generator
    gen_res: np.ndarray  # the generators (indices)
    root: int
    n_buses: int
    price_cap: float
    curtail_price: float
    voltage_penalty: float = 0.0  # ¢/h per pu² of voltage slack (LinDistFlow)


def dlmp_accounts(layout: AccountsLayout, offers, blocks, q, dlmp, price_r, energy, congestion,
                  baseline, pv_taken, source, lmp, shed_total, curt_total, losses,
                  net_injection, losses_kw, load_price=None, voltage=None,
                  voltage_slack=None) -> dict:
    """The deferred fields of a ``DLMPResult`` (the DC and the LinDistFlow markets' ``_result``
    leave them to this): cost, surpluses on the offers (module docstring, "Surpluses on the
    offers"), payments, price components and the loss surplus. ``baseline``: demand less shed
    per bus; ``pv_taken``: PV less curtailment; ``losses``: the loss model or None
    (``net_injection``: the bus injections, ``losses_kw``: their losses); ``price_r``: each
    resource's price.

    The LinDistFlow market also passes ``load_price`` (what a kW of load pays per bus; default
    ``dlmp``), ``voltage`` (the voltage component of ``dlmp``, added to ``price_components``)
    and ``voltage_slack`` (pu² outside the band per band bus, costing
    ``layout.voltage_penalty``). With a voltage component the congestion rent is what the
    payments leave after the revenue and the loss surplus (branch and voltage parts, reactive
    power included); without, it is the branch prices' rent on the net withdrawals."""
    B = layout.n_buses
    loss = np.zeros(B) if losses is None else -losses.factors * energy
    loss_surplus = 0.0
    if losses is not None:
        loss_surplus = energy * (float(losses.factors @ net_injection) - losses_kw)
    import_cost = lmp * max(source, 0.0)
    offered = float(offers.ravel() @ blocks)
    cost = (import_cost + offered
            + layout.price_cap * shed_total + layout.curtail_price * curt_total)
    if voltage_slack is not None:
        cost += layout.voltage_penalty * float(voltage_slack.sum())
    payments = float((dlmp if load_price is None else load_price) @ baseline)
    revenue = float(price_r @ q + dlmp @ pv_taken + dlmp[layout.root] * source)
    if voltage is None:
        withdrawal = (baseline - np.bincount(layout.dr_bus, q[layout.dr_res], minlength=B)
                      - np.bincount(layout.gen_bus, q[layout.gen_res], minlength=B)
                      - pv_taken)
        congestion_rent = float(congestion @ withdrawal)
    else:
        congestion_rent = payments - revenue - loss_surplus
    value = layout.price_cap * float(baseline.sum())
    energy_part = np.empty(B)
    energy_part.fill(energy)  # = np.full(B, energy), without its Python layer
    components = {"energy": energy_part, "loss": loss, "congestion": congestion}
    if voltage is not None:
        components["voltage"] = voltage
    return dict(cost=cost, import_cost=import_cost, consumer_surplus=value - payments,
                producer_surplus=revenue - offered - import_cost,
                congestion_rent=congestion_rent,
                welfare=value - offered - import_cost, consumer_payments=payments,
                producer_revenue=revenue, loss_surplus=loss_surplus,
                price_components=components)


def _violation(constraint: str, element: str, excess_kw: float, message: str,
               limit_kw: float | None = None) -> dict:
    v = {"constraint": constraint, "element": element, "excess_kw": float(excess_kw),
         "message": message}
    if limit_kw is not None:
        v["limit_kw"] = float(limit_kw)
    return v
