"""A voltage-aware DLMP market: the DSO's OPF on the linearised DistFlow model (LinDistFlow).

The DC market of ``ogg_envs.markets.dlmp`` knows only active power and line limits. This one
adds what Bai, Wang, Wang and Tan ("Distribution Locational Marginal Pricing (DLMP) for
Congestion Management and Voltage Support", IEEE Trans. Power Systems 33(4), 2018) add to it:
reactive power, squared voltage magnitudes and a voltage band, with Baran and Wu's linearised
DistFlow equations. It implements ``ogg_envs.api.Market`` with the same offers, the same
``MarketContext`` (``demand_kw``, ``capacity_kw``, ``source_price``, ``pv_kw``) and the same
result fields as ``DLMPMarket`` (whose input checks it uses, so both read a context alike),
plus each bus's voltage and a voltage component in every price. It knows nothing of OpenDSS:
``ogg_envs.grid.impedance.feeder_impedances(grid).market_args()`` gives it a feeder's data.

The model (lossless LinDistFlow, balanced equivalent of every branch)
---------------------------------------------------------------------
For branch e from bus i to bus j, with ``P_e``, ``Q_e`` the active and reactive power flowing
away from the source (kW, kvar), ``v`` the squared voltage magnitudes (pu²), ``r_e``, ``x_e``
the series impedance in pu on ``s_base_kva`` and ``a_e`` a fixed voltage ratio (a voltage
regulator's tap, held; 1 on a line)::

    P_e = sum of the net active withdrawals of the buses below e      (as in the DC market)
    Q_e = sum of the net reactive withdrawals of the buses below e
    v_j = a_e^2 (v_i - 2 (r_e P_e + x_e Q_e) / s_base),   v_root = source_pu^2

Reactive withdrawals: the loads keep their power factor (``load_tan_phi`` kvar per kW of each
bus), so a bus withdraws ``tan_phi_b (demand_b - shed_b - dr_b)`` kvar less its shunt
capacitors' ``shunt_kvar``; generators and PV run at unity power factor, and the source
supplies any reactive power at no cost. Losses are neglected unless the market is given a loss
model (``set_losses``, below).

The OPF: the DC market's (offers, ``lmp * max(0, P_source)``, shedding at ``price_cap``,
curtailment at ``curtail_price``, ``-limit_e <= P_e <= limit_e``) plus, for every bus of
``band_buses`` (default: all but the root)::

    low^2 <= v_b <= high^2                                    (voltage_band = (low, high))

Prices and their decomposition
------------------------------
``dlmp`` (P-DLMP, ¢/kWh) is the dual of a bus's active balance: the change of the optimal cost
per kW withdrawn at the bus with its reactive withdrawal held; ``dlmp_q`` (Q-DLMP, ¢/kvarh)
the same for reactive power. Stationarity splits them exactly::

    dlmp_b   = energy + congestion_b + voltage_b
    energy   = the price at the source bus (the dual of the power balance)
    congestion_b = sum_{e on the path of b} branch_price_e            (as in the DC market)
    voltage_b    = sum_j voltage_price_j dv_dp[j, b]
    dlmp_q_b     = sum_j voltage_price_j dv_dq[j, b]

with ``voltage_price_j`` the shadow price of bus j's band (> 0 when its lower limit binds, < 0
for its upper limit; ¢/h per pu² of v) and ``dv_dp[j, b]`` (``dv_dq``) the fall of ``v_j`` per
kW (kvar) withdrawn at bus b: ``2 sum_e (A_j / A_parent(e)) r_e / s_base`` over the branches
e above both j and b, with ``A`` the product of the ``a^2`` from the root. The voltage
component is nonzero only where a voltage limit binds. A kW of a bus's load (at its power
factor) costs ``load_price_b = dlmp_b + tan_phi_b * dlmp_q_b``: what the demand finite
difference measures, what consumers pay and what a DR provider's reduction is paid
(``participant_prices``); a generator is paid ``dlmp_b``. With a band that never binds every
price is the DC market's.

Losses (``set_losses``)
-----------------------
As in the DC market (``ogg_envs.markets.dlmp``, "Losses"; ``ogg_envs.api.LossModel``):
``set_losses(loss_factors, loss_kw, injections_kw)`` makes the power balance the linearised
lossy one, ``sum_b (1 - lf_b) p_b = L0 - lf . p0``: the source supplies ``L(p) = L0 + lf .
(p - p0)`` more than the net demand (in the CVXPY statement the root's flow balance withdraws
it), while flows and voltages stay LinDistFlow's lossless ones. Every P-DLMP gains a loss
component: ``dlmp_b = energy + loss_b + congestion_b + voltage_b`` with ``loss_b = -lf_b *
energy`` (``price_components``), and payments - revenues = congestion_rent + loss_surplus,
``loss_surplus = energy * (lf . p - L(p))`` (here ``congestion_rent`` is the branch and voltage
parts' rent: ``payments - revenues - loss_surplus``). ``set_losses(None)`` and ``reset()``
return to the lossless balance.

Infeasible instances
--------------------
As in the DC market the LP sheds load at ``price_cap`` (or curtails PV) rather than fail, and
where even that cannot hold the band (a regulator ratio that lifts a lightly loaded feeder
above it) a slack on the voltage rows, priced at ``voltage_penalty``, keeps it feasible. When
it sheds, curtails or uses the slack, a second solve without any of the three decides whether
that was needed; if so ``feasible=False`` and ``violated`` lists the DC market's (exact)
diagnosis of the branch limits, the voltage limits violated even so (``constraint =
"voltage_limit"``, ``excess_pu``) or, when neither, the voltage limits held at their bound by
shedding, and the relaxed nodal balances. Prices in such an hour carry the shed load's
``price_cap`` or the slack's penalty.

Solving
-------
The fast path eliminates flows and voltages (``v = v_fixed + dv_dp u + dv_dq u_q`` for the
injections ``u`` of the market's columns) and solves the LP with HiGHS
(``ogg_envs.markets.solvers.highs_lp``), whose structure is built once; each clearing sets
costs and bounds and solves **cold**, as the DC market does: the same data give the same
vertex whatever was cleared before (a warm start would pick among tied vertices by history):
about 0.9 ms per clearing on the IEEE 37 feeder (median on a busy 2-core machine; the DC
market: 0.7 ms). ``set_ratios`` recomputes only the sensitivities and the voltage rows'
coefficients (the one part of the matrix that depends on the ratios) and hands them to the
same ``HighsLP`` (``set_values``; ~0.3 ms where rebuilding the LP took ~1.3 ms): every
clearing equals, bit for bit, a new market's with those ratios.
``cvxpy_problem`` states the OPF as written above, with flows, voltages and nodal balances
explicit: the readable reference that the tests compare the fast path with, and the fallback
if HiGHS fails. The dense
sensitivities take O(buses²) memory: meant for feeders of up to a few hundred buses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import highspy
import numpy as np
import scipy.sparse as sp

from ..api import CongestionThreshold, LossModel, Market, MarketClearingError, MarketContext
from ..grid.topology import Topology
from .dlmp import (
    DR,
    AccountsLayout,
    DLMPMarket,
    DLMPResult,
    Resource,
    dlmp_accounts,
)
from .solvers import cvxpy_ref
from .solvers.highs_lp import HighsLP

__all__ = ["LinDistFlowMarket", "LinDistFlowResult", "Resource"]

_INF = highspy.kHighsInf


@dataclass(kw_only=True)
class LinDistFlowResult(DLMPResult):
    """A ``DLMPResult`` (same fields, same meaning) with the LinDistFlow model's additions.

    ``dlmp = energy + congestion + voltage`` per bus (here ``congestion`` is the branch part
    only); ``participant_prices`` are ``dlmp`` for generators and ``load_price`` for DR. The
    money accounts and ``price_components`` are computed when first read, by the DC market's
    ``dlmp_accounts`` (consumers paying ``load_price``, the voltage slack's penalty in
    ``cost``, ``congestion_rent = consumer_payments - producer_revenue - loss_surplus``).
    """

    voltage: np.ndarray  # per bus: the voltage component of dlmp, ¢/kWh
    dlmp_q: np.ndarray  # per bus: reactive DLMP, ¢/kvarh
    load_price: np.ndarray  # per bus: dlmp + tan_phi * dlmp_q, ¢ per kWh of load
    voltage_pu: np.ndarray  # per bus: LinDistFlow voltage magnitude, sqrt(v)
    voltage_prices: np.ndarray  # per bus: shadow price of its band (0 outside band_buses)
    at_voltage_limit: list[str]  # buses whose voltage is at a band edge
    flows_kvar: np.ndarray  # per branch, reactive flow away from the source
    source_kvar: float = 0.0

    def to_dict(self) -> dict:
        out = super().to_dict()
        out.update(
            voltage={b: float(v) for b, v in zip(self.buses, self.voltage)},
            dlmp_q={b: float(v) for b, v in zip(self.buses, self.dlmp_q)},
            voltage_pu=dict(zip(self.buses, self.voltage_pu.tolist())),
            at_voltage_limit=list(self.at_voltage_limit), source_kvar=self.source_kvar)
        return out


class LinDistFlowMarket(Market):
    """The DSO's LinDistFlow OPF with voltage-aware DLMPs; see the module docstring.

    Args:
        topology: the radial grid model; its branch limits are the active-power flow limits.
        resources: generators and DR providers (as for ``DLMPMarket``).
        r_pu, x_pu: per branch (topology branch order, or ``{branch: value}``), the series
            resistance and reactance in pu on ``s_base_kva`` (three-phase) and each bus's
            voltage base; ``ogg_envs.grid.impedance`` documents how a feeder's are computed.
        s_base_kva: the power base of ``r_pu``, ``x_pu``.
        ratios: per branch, the fixed voltage ratio child/parent in pu (regulator taps, held;
            default 1 everywhere).
        load_tan_phi: per bus, kvar per kW of its load (default 0: unity power factor).
        shunt_kvar: per bus, reactive injection of shunt capacitors (default none).
        source_pu: voltage magnitude of the root (the source), pu.
        voltage_band: (low, high) pu, the limits of ``|V|`` at ``band_buses``.
        band_buses: buses held in the band (default: every bus but the root).
        n_blocks, price_cap, curtail_price, load_buses, pv_buses, congestion_tol: as for
            ``DLMPMarket``.
        voltage_tol: a bus's voltage is reported at a limit within this many pu of it.
        voltage_penalty: ¢/h per pu² of ``v`` outside the band, the price of the voltage slack
            that keeps the LP feasible when no dispatch (shedding included) holds the band
            (default: ten times what shedding at a typical bus costs for the same effect
            there, ``10 price_cap / median_b dv_dp[b, b]``). Prices in an hour that needs the
            slack carry it: they can far exceed ``price_cap``.

    ``dc`` is a ``DLMPMarket`` on the same topology and resources: it reads and checks every
    clearing's inputs and diagnoses infeasible branch limits (its own LP is not solved).
    """

    def __init__(self, topology: Topology, resources: list[Resource], *, r_pu, x_pu,
                 s_base_kva: float = 1000.0, ratios=None, load_tan_phi=None, shunt_kvar=None,
                 source_pu: float = 1.0, voltage_band: tuple[float, float] = (0.95, 1.05),
                 band_buses: list[str] | None = None, n_blocks: int = 3,
                 price_cap: float = 30.0, curtail_price: float = 1.0,
                 load_buses: list[str] | None = None, pv_buses: list[str] | tuple = (),
                 congestion_tol: float = 1e-6, voltage_tol: float = 1e-6,
                 voltage_penalty: float | None = None):
        # The DC market checks resources, buses and prices and reads every context: the two
        # markets take the same inputs with the same errors.
        self.dc = DLMPMarket(topology, resources, n_blocks=n_blocks, price_cap=price_cap,
                             curtail_price=curtail_price, load_buses=load_buses,
                             pv_buses=pv_buses, congestion_tol=congestion_tol)
        self.topology = topology
        self.resources = list(resources)
        self.names = list(self.dc.names)
        self.n_blocks, self.price_cap = self.dc.n_blocks, self.dc.price_cap
        self.curtail_price, self.congestion_tol = self.dc.curtail_price, congestion_tol
        self.load_buses, self.pv_buses = self.dc.load_buses, self.dc.pv_buses
        if not (math.isfinite(s_base_kva) and s_base_kva > 0):
            raise ValueError(f"s_base_kva must be finite and > 0, got {s_base_kva!r}")
        self.s_base_kva = float(s_base_kva)
        self.r_pu = self._branch_values(r_pu, "r_pu", low=0.0)
        self.x_pu = self._branch_values(x_pu, "x_pu")
        self.ratios = self._branch_values(1.0 if ratios is None else ratios, "ratios",
                                          positive=True)
        self.load_tan_phi = self._bus_values(0.0 if load_tan_phi is None else load_tan_phi,
                                             "load_tan_phi")
        self.shunt_kvar = self._bus_values(0.0 if shunt_kvar is None else shunt_kvar,
                                           "shunt_kvar")
        low, high = (float(v) for v in voltage_band)
        if not (0 < low < high < math.inf):
            raise ValueError(f"voltage_band must be (low, high) with 0 < low < high, got "
                             f"{voltage_band!r}")
        if not (math.isfinite(source_pu) and source_pu > 0):
            raise ValueError(f"source_pu must be finite and > 0, got {source_pu!r}")
        self.voltage_band, self.source_pu = (low, high), float(source_pu)
        self.voltage_tol = float(voltage_tol)
        if band_buses is None:
            band_buses = [b for b in topology.buses if b != topology.root]
        unknown = [b for b in band_buses if str(b).lower() not in topology.bus_index]
        if unknown:
            raise ValueError(f"band_buses: unknown buses {unknown}; buses: "
                             f"{', '.join(topology.buses)}")
        self.band_buses = list(dict.fromkeys(str(b).lower() for b in band_buses))
        self._band_idx = np.array([topology.bus_index[b] for b in self.band_buses],
                                  dtype=np.int64)
        self._sensitivities()
        if voltage_penalty is None:  # shedding at a typical bus beats its violation tenfold
            own = np.diag(self.dv_dp)[self._band_idx]
            own = own[own > 0]
            voltage_penalty = 10.0 * self.price_cap / np.median(own) if len(own) else 1e9
        if not (math.isfinite(voltage_penalty) and voltage_penalty > 0):
            raise ValueError(f"voltage_penalty must be finite and > 0, got {voltage_penalty!r}")
        self.voltage_penalty = float(voltage_penalty)
        self._losses = None  # a LossModel (set_losses) or None: lossless
        self._threshold = CongestionThreshold()  # |flow| at which a branch is congested
        self._limits_changed()
        self._structure()
        self._build_highs()
        self._cvx = None

    # ------------------------------------------------------------------ data
    def _branch_values(self, values, what: str, low: float | None = None,
                       positive: bool = False) -> np.ndarray:
        topo = self.topology
        E = len(topo.branches)
        if isinstance(values, dict):
            out = np.full(E, 1.0 if what == "ratios" else 0.0)
            for name, v in values.items():
                if name not in topo.branch_index:
                    raise ValueError(f"{what}: unknown branch {name!r}; branches: "
                                     f"{', '.join(topo.branch_index)}")
                out[topo.branch_index[name]] = float(v)
        else:
            out = np.broadcast_to(np.asarray(values, dtype=float), (E,)).copy() \
                if np.ndim(values) == 0 else np.asarray(values, dtype=float).copy()
            if out.shape != (E,):
                raise ValueError(f"{what}: expected {E} values in topology branch order, got "
                                 f"shape {out.shape}")
        bad = ~np.isfinite(out)
        if low is not None:
            bad |= out < low
        if positive:
            bad |= out <= 0
        if bad.any():
            e = int(np.flatnonzero(bad)[0])
            need = "> 0" if positive else (f">= {low}" if low is not None else "finite")
            raise ValueError(f"{what}: branch {topo.branches[e].name} has {out[e]!r}; values "
                             f"must be finite and {need}")
        return out

    def _bus_values(self, values, what: str) -> np.ndarray:
        if np.ndim(values) == 0 and not isinstance(values, dict):
            values = np.full(len(self.topology.buses), float(values))
        out = self.dc.bus_vector(values, what).copy()
        if not np.isfinite(out).all():
            b = int(np.flatnonzero(~np.isfinite(out))[0])
            raise ValueError(f"{what}: bus {self.topology.buses[b]} has {out[b]!r}; values "
                             "must be finite")
        return out

    def _sensitivities(self) -> None:
        """``v = v_fixed - dv_dp @ p_withdrawal - dv_dq @ q_withdrawal`` (per kW, kvar).

        With ``A_b`` the product of ``a_e^2`` on the path of b, unrolling the recursion gives
        ``v_j = A_j v_root - 2 sum_{e on path j} (A_j / A_parent(e)) (r_e P_e + x_e Q_e)``.
        """
        topo = self.topology
        below = -topo.H  # below[e, b] = 1 if bus b is downstream of branch e
        A_path = [1.0] * len(topo.buses)
        # branches in breadth-first order of their child (Python floats: the same products,
        # ~5x faster than indexing numpy arrays one element at a time)
        for parent, child, ratio in zip(topo.branch_parent.tolist(), topo.branch_child.tolist(),
                                        self.ratios):
            A_path[child] = A_path[parent] * ratio ** 2  # numpy's scalar power, as always
        A = np.array(A_path)
        gain = below.T * A[:, None] / A[topo.branch_parent][None, :]  # (buses, branches)
        self.dv_dp = 2.0 * (gain * self.r_pu) @ below / self.s_base_kva
        self.dv_dq = 2.0 * (gain * self.x_pu) @ below / self.s_base_kva
        self.v_fixed = A * self.source_pu ** 2
        self._below = below

    def voltages(self, withdrawal_kw, withdrawal_kvar) -> np.ndarray:
        """LinDistFlow voltage magnitudes (pu, per bus) for net withdrawals per bus (kW and
        kvar, topology order; an injection is a negative withdrawal)."""
        p = self.dc.bus_vector(withdrawal_kw, "withdrawal_kw")
        q = self.dc.bus_vector(withdrawal_kvar, "withdrawal_kvar")
        v = self.v_fixed - self.dv_dp @ p - self.dv_dq @ q
        return np.sqrt(np.maximum(v, 0.0))

    # ------------------------------------------------------------------ LP structure
    def _structure(self) -> None:
        """Columns: blocks | shed | curtail | import | export (the DC market's). Rows: the
        power balance, one per branch limit, one per bus of the band. A column at bus b with
        sign s (+1 injects) moves branch e's flow by ``-s below[e, b]`` and the voltage of
        bus j by ``s dv_dp[j, b]`` (+ ``tan_phi_b dv_dq[j, b]`` for shedding and DR, which
        also withdraw the load's reactive power)."""
        topo = self.topology
        bi = topo.bus_index
        K = self.n_blocks
        res_bus = np.array([bi[r.bus] for r in self.resources], dtype=np.int64)
        self._res_bus = res_bus
        self.is_dr = np.array([r.kind == DR for r in self.resources], dtype=bool)
        load_idx = np.array([bi[b] for b in self.load_buses], dtype=np.int64)
        pv_idx = np.array([bi[b] for b in self.pv_buses], dtype=np.int64)
        self._load_idx, self._pv_idx = load_idx, pv_idx
        n, nL, nP = len(self.resources), len(load_idx), len(pv_idx)
        nb = n * K
        root = bi[topo.root]
        col_bus = np.concatenate([np.repeat(res_bus, K), load_idx, pv_idx, [root, root]])
        col_sign = np.concatenate([np.ones(nb + nL), -np.ones(nP), [1.0, -1.0]])
        reduces_load = np.concatenate([np.repeat(self.is_dr, K), np.ones(nL, dtype=bool),
                                       np.zeros(nP + 2, dtype=bool)])
        col_q = np.where(reduces_load, self.load_tan_phi[col_bus], 0.0)  # kvar per kW
        self._col_bus, self._col_sign, self._col_q = col_bus, col_sign, col_q
        nV = len(self._band_idx)
        dense = np.vstack([
            col_sign[None, :],
            self._below[:, col_bus] * col_sign[None, :],
            self._voltage_rows(),
        ])
        # Voltage slack: v + s_low >= low^2 and v - s_high <= high^2, at voltage_penalty.
        slack = np.zeros((dense.shape[0], 2 * nV))
        slack[1 + len(topo.branches):, :nV] = np.eye(nV)
        slack[1 + len(topo.branches):, nV:] = -np.eye(nV)
        A = sp.csc_matrix(np.hstack([dense, slack]))
        A.eliminate_zeros()
        A.sort_indices()
        self._A = A
        E = len(topo.branches)
        # Where the voltage rows' market-column entries sit in A.data (set_ratios moves them)
        entry_row = A.indices
        entry_col = np.repeat(np.arange(A.shape[1]), np.diff(A.indptr))
        in_block = (entry_row > E) & (entry_col < len(col_bus))
        self._v_pos = np.flatnonzero(in_block)
        self._v_at = (entry_row[in_block] - (1 + E), entry_col[in_block])
        self._ncol, self._nrow = len(col_bus) + 2 * nV, 1 + E + nV
        c_imp = nb + nL + nP
        self._cols = {"blocks": slice(0, nb), "shed": slice(nb, nb + nL),
                      "curtail": slice(nb + nL, c_imp), "import": c_imp, "export": c_imp + 1,
                      "v_low": slice(c_imp + 2, c_imp + 2 + nV),
                      "v_high": slice(c_imp + 2 + nV, c_imp + 2 + 2 * nV)}
        i32 = np.int32
        self._idx_slack = np.arange(c_imp + 2, c_imp + 2 + 2 * nV, dtype=i32)
        # what every result needs and never changes (the tuples are shared by every result)
        self._dr_res, self._gen_res = np.flatnonzero(self.is_dr), np.flatnonzero(~self.is_dr)
        self._dr_bus, self._gen_bus = res_bus[self._dr_res], res_bus[self._gen_res]
        self._root = root
        self._layout = AccountsLayout(self._dr_bus, self._dr_res, self._gen_bus, self._gen_res,
                                      root, len(topo.buses), self.price_cap,
                                      self.curtail_price, self.voltage_penalty)
        self._names_t = tuple(self.names)
        self._buses_t = tuple(topo.buses)
        self._branches_t = tuple(br.name for br in topo.branches)

    def _voltage_rows(self) -> np.ndarray:
        """The voltage rows' coefficients of the market's columns (band bus x column): the
        only part of the LP's matrix that depends on the ratios."""
        band, col_bus = self._band_idx, self._col_bus
        return (self.dv_dp[band][:, col_bus] * self._col_sign[None, :]
                + self.dv_dq[band][:, col_bus] * self._col_q[None, :])

    def _build_highs(self) -> None:
        """The fast path's LP (``solvers.highs_lp``, solved cold) and the parts of its data
        that never change: shed at the cap, curtailment at its price, the voltage slack at its
        penalty, the source and the slack unbounded."""
        self._lp = HighsLP(self._A)
        cost = np.zeros(self._ncol)
        cost[self._cols["shed"]] = self.price_cap
        cost[self._cols["curtail"]] = self.curtail_price
        cost[self._idx_slack] = self.voltage_penalty
        upper = np.zeros(self._ncol)
        upper[self._cols["import"]] = upper[self._cols["export"]] = _INF
        upper[self._idx_slack] = _INF
        self._cost0, self._lower0, self._upper0 = cost, np.zeros(self._ncol), upper
        if self._losses is not None:
            self._set_balance_row()

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_cvx"] = None
        return state

    def set_ratios(self, ratios) -> None:
        """New fixed voltage ratios per branch (e.g. regulator taps that moved); nothing if
        unchanged. Only what depends on them is recomputed: the sensitivities (``v_fixed``
        with them, so the voltage rows' bounds) and the voltage rows' coefficients, which
        replace the old ones in the same HiGHS model (``HighsLP.set_values``). Every clearing
        after it equals a new market's with these ratios; if a coefficient became zero or
        nonzero (sparsity changed) the LP is built anew. ``voltage_penalty`` is kept."""
        ratios = self._branch_values(ratios, "ratios", positive=True)
        if np.array_equal(ratios, self.ratios):
            return
        self.ratios = ratios
        self._sensitivities()
        self._cvx = None  # the CVXPY statement holds the ratios as constants
        block = self._voltage_rows()
        values = block[self._v_at]
        if np.count_nonzero(block) != values.size or not values.all():
            self._structure()
            self._build_highs()
            return
        data = self._lp.matrix.data.copy()
        data[self._v_pos] = values
        self._lp.set_values(data)
        self._A = self._lp.matrix

    # ------------------------------------------------------------------ limits
    def set_limits(self, limits_kw) -> None:
        """New branch limits (kW, branch order, or name -> kW; inf = none), checked and kept by
        ``dc`` (change them here, not through ``dc``: this market keeps its copy)."""
        self.dc.set_limits(limits_kw)
        self._limits_changed()
        if self._cvx is not None:
            self._cvx["limits"].value = self._finite(self._limits)

    def _limits_changed(self) -> None:
        """Keep what the limits decide until they change: the LP's row limits (the
        congestion threshold follows the new limits array)."""
        self._limits = self.dc.limits_kw
        self._row_limits = np.where(np.isfinite(self._limits), self._limits, _INF)

    @property
    def limits_kw(self) -> np.ndarray:
        return self.dc.limits_kw

    @staticmethod
    def _finite(limits: np.ndarray) -> np.ndarray:
        return np.where(np.isfinite(limits), limits, 1e9)

    # ------------------------------------------------------------------ losses
    def set_losses(self, loss_factors=None, loss_kw: float = 0.0, injections_kw=None) -> None:
        """Price losses: the power balance becomes ``sum_b (1 - lf_b) p_b = L0 - lf . p0``
        (module docstring, "Losses"; ``ogg_envs.api.LossModel``). ``loss_factors``: ``lf``
        per topology bus (``None``: lossless again), ``loss_kw``: ``L0``, ``injections_kw``:
        ``p0`` per bus (``None``: zeros). Checked before anything changes; it replaces one LP
        row's coefficients, rebuilding the matrix HiGHS is passed (about 0.3 ms on IEEE 37)."""
        losses = None if loss_factors is None else \
            LossModel.of(self.topology.buses, loss_factors, loss_kw, injections_kw)
        self._losses = losses
        self._set_balance_row()

    @property
    def losses(self) -> LossModel | None:
        """The loss model the market clears with (``set_losses``), or None: lossless."""
        return self._losses

    def _set_balance_row(self) -> None:
        weights = np.ones(len(self.topology.buses)) if self._losses is None else \
            self._losses.weights
        row = np.zeros(self._ncol)
        row[:len(self._col_bus)] = weights[self._col_bus] * self._col_sign
        self._lp.set_row(0, row)

    # ------------------------------------------------------------------ clearing
    def repair(self, offers, q_limit=None, *, names=None, strict: bool = False):
        """The DC market's ``repair`` (the same offers, the same rule)."""
        return self.dc.repair(offers, q_limit, names=names, strict=strict)

    def reset(self) -> None:
        """Back to the lossless balance; otherwise nothing to forget: every clearing solves
        cold, so none depends on the past."""
        if self._losses is not None:
            self.set_losses(None)
        self.dc.reset()

    def clear(self, offers, context: MarketContext | None = None) -> LinDistFlowResult:
        """Clear the market (fast path: HiGHS, cold; the same inputs always give the same
        vertex). ``offers`` and ``context`` as for ``DLMPMarket.clear``."""
        args = self._inputs(offers, context)
        x, duals, solver = self._solve_highs(*args)
        if x is None:
            x, duals, solver = self._solve_cvxpy(*args, solver="CLARABEL")
        return self._result(*args, x, duals, solver)

    def clear_cvxpy(self, offers, context: MarketContext | None = None, *,
                    solver: str = "HIGHS") -> LinDistFlowResult:
        """Clear with the CVXPY statement (the reference; slower than ``clear``)."""
        args = self._inputs(offers, context)
        x, duals, name = self._solve_cvxpy(*args, solver=solver)
        return self._result(*args, x, duals, name)

    def _inputs(self, offers, context):
        """The clearing's data, read and checked by the DC market (``read_inputs``)."""
        return self.dc.read_inputs(offers, context, "LinDistFlowMarket.clear")

    def _row_bounds(self, demand, pv) -> tuple[np.ndarray, np.ndarray]:
        net = demand - pv
        net_q = self.load_tan_phi * demand - self.shunt_kvar
        below = self._below @ net
        lim = self._row_limits
        # Voltages with no market injection; the rows hold the injections' part of v.
        band = self._band_idx
        v_none = (self.v_fixed - self.dv_dp @ net - self.dv_dq @ net_q)[band]
        low, high = self.voltage_band
        # the market's columns inject u_b = p_b + net_b: sum_b w_b u_b = constant + w . net
        total = net.sum() if self._losses is None else \
            self._losses.constant + float(self._losses.weights @ net)
        return (np.concatenate([[total], below - lim, low ** 2 - v_none]),
                np.concatenate([[total], below + lim, high ** 2 - v_none]))

    def _lp_data(self, offers, demand, cap, pv, lmp, dr_cap):
        """Costs, row bounds and column bounds of one clearing (``HighsLP.solve``'s order)."""
        K, cols = self.n_blocks, self._cols
        cost = self._cost0.copy()
        cost[cols["blocks"]] = offers.ravel()
        cost[cols["import"]] = lmp
        upper = self._upper0.copy()
        upper[cols["blocks"]] = np.repeat(cap / K, K)
        upper[cols["shed"]] = np.maximum(demand - dr_cap, 0.0)[self._load_idx]
        upper[cols["curtail"]] = pv[self._pv_idx]
        lo, hi = self._row_bounds(demand, pv)
        return cost, lo, hi, self._lower0, upper

    def _solve_highs(self, offers, demand, cap, pv, lmp, dr_cap):
        try:
            x, y = self._lp.solve_primal_rows(*self._lp_data(offers, demand, cap, pv, lmp,
                                                             dr_cap))
        except MarketClearingError:
            return None, None, None
        y = -y  # derivatives of the optimal cost (the solver package's opposite sign)
        E = len(self.topology.branches)
        voltage_prices = np.zeros(len(self.topology.buses))
        voltage_prices[self._band_idx] = y[1 + E:]
        return x, (float(y[0]), y[1:1 + E], voltage_prices), "highs"

    def _needs_relief(self, offers, demand, cap, pv, lmp, dr_cap) -> bool:
        """Whether the LP is infeasible without shedding, curtailment and voltage slack
        (solved again with all three held at 0)."""
        cost, lo, hi, lower, upper = self._lp_data(offers, demand, cap, pv, lmp, dr_cap)
        upper[self._cols["shed"]] = 0.0
        upper[self._cols["curtail"]] = 0.0
        upper[self._idx_slack] = 0.0
        try:
            self._lp.solve(cost, lo, hi, lower, upper)
        except MarketClearingError:
            return True
        return False

    # ------------------------------------------------------------------ the CVXPY statement
    def cvxpy_problem(self) -> dict:
        """The OPF in CVXPY with Parameters (built once, DPP): flows, voltages and nodal
        balances explicit, as in the module docstring."""
        if self._cvx is not None:
            return self._cvx
        import cvxpy as cp

        topo = self.topology
        B, E = len(topo.buses), len(topo.branches)
        n, K = len(self.names), self.n_blocks
        nL, nP = len(self.load_buses), len(self.pv_buses)
        x = cp.Variable((n, K), nonneg=True, name="blocks")
        shed = cp.Variable(nL, nonneg=True, name="shed")
        curtail = cp.Variable(nP, nonneg=True, name="curtail")
        source = cp.Variable(name="P_source")
        source_q = cp.Variable(name="Q_source")
        P = cp.Variable(E, name="P")  # kW away from the source
        Q = cp.Variable(E, name="Q")  # kvar away from the source
        v = cp.Variable(B, name="v")  # squared voltage magnitudes, pu²
        price = cp.Parameter((n, K), nonneg=True, name="offer_prices")
        width = cp.Parameter((n, K), nonneg=True, name="block_widths")
        lmp = cp.Parameter(nonneg=True, name="lmp")
        net_demand = cp.Parameter(B, name="net_demand")  # demand - pv, kW
        net_demand_q = cp.Parameter(B, name="net_demand_q")  # tan_phi demand - shunt, kvar
        shed_max = cp.Parameter(nL, nonneg=True, name="shed_max")
        pv_max = cp.Parameter(nP, nonneg=True, name="pv")
        limits = cp.Parameter(E, nonneg=True, name="limits")
        factors = cp.Parameter(B, name="loss_factors")  # lf (lossless: 0)
        constant = cp.Parameter(name="loss_constant")  # L0 - lf . p0 (lossless: 0)
        p = cp.Variable(B, name="p")  # net injection of every bus, kW
        M_res, M_shed, M_pv, e_root = self.dc.injection_incidence()
        tan_phi = self.load_tan_phi
        dr_kw = M_res[:, self.is_dr] @ cp.sum(x[self.is_dr], axis=1) if self.is_dr.any() \
            else np.zeros(B)
        injection = M_res @ cp.sum(x, axis=1) + M_shed @ shed - M_pv @ curtail + e_root * source
        injection_q = cp.multiply(tan_phi, M_shed @ shed + dr_kw) + e_root * source_q
        C = topo.incidence.toarray()  # (C @ flows)_b: out of bus b minus into it
        parent, child = topo.branch_parent, topo.branch_child
        cost = (lmp * cp.pos(source) + cp.sum(cp.multiply(price, x))
                + self.price_cap * cp.sum(shed) + self.curtail_price * cp.sum(curtail))
        balance = p == injection - net_demand  # dual: P-DLMP
        # Flows carry the injections; the root's balance also supplies the losses L(p).
        conservation = C @ P == p - e_root * (constant + factors @ p)
        balance_q = C @ Q == injection_q - net_demand_q  # dual: Q-DLMP
        drop = v[child] == cp.multiply(self.ratios ** 2, v[parent] - 2 * (
            cp.multiply(self.r_pu, P) + cp.multiply(self.x_pu, Q)) / self.s_base_kva)
        low, high = self.voltage_band
        band = self._band_idx
        s_low = cp.Variable(len(band), nonneg=True, name="s_low")  # voltage slack, pu²
        s_high = cp.Variable(len(band), nonneg=True, name="s_high")
        cost = cost + self.voltage_penalty * cp.sum(s_low + s_high)
        v_low = v[band] + s_low >= low ** 2
        v_high = v[band] - s_high <= high ** 2
        upper, lower = P <= limits, -P <= limits
        cons = [balance, conservation, balance_q, drop,
                v[topo.bus_index[topo.root]] == self.source_pu ** 2, v_low, v_high, upper,
                lower, x <= width, shed <= shed_max, curtail <= pv_max]
        prob = cp.Problem(cp.Minimize(cost), cons)
        self._cvx = dict(prob=prob, x=x, shed=shed, curtail=curtail, source=source, P=P, Q=Q,
                         v=v, s_low=s_low, s_high=s_high, price=price, width=width, lmp=lmp,
                         net_demand=net_demand, net_demand_q=net_demand_q, shed_max=shed_max,
                         pv=pv_max, limits=limits, balance=balance, balance_q=balance_q,
                         v_low=v_low, v_high=v_high, upper=upper, lower=lower,
                         factors=factors, constant=constant)
        limits.value = self._finite(self._limits)
        return self._cvx

    def _solve_cvxpy(self, offers, demand, cap, pv, lmp, dr_cap, solver: str = "HIGHS"):

        c = self.cvxpy_problem()
        K = self.n_blocks
        c["price"].value = offers
        c["width"].value = np.repeat((cap / K)[:, None], K, axis=1)
        c["lmp"].value = lmp
        c["net_demand"].value = demand - pv
        c["net_demand_q"].value = self.load_tan_phi * demand - self.shunt_kvar
        c["shed_max"].value = np.maximum(demand - dr_cap, 0.0)[self._load_idx]
        c["pv"].value = pv[self._pv_idx]
        losses = self._losses
        c["factors"].value = np.zeros(len(demand)) if losses is None else losses.factors
        c["constant"].value = 0.0 if losses is None else losses.constant
        cvxpy_ref.solve(c["prob"], solver)
        x = np.zeros(self._ncol)
        x[self._cols["blocks"]] = np.asarray(c["x"].value).ravel()
        x[self._cols["shed"]] = c["shed"].value
        x[self._cols["curtail"]] = c["curtail"].value
        s = float(c["source"].value)
        x[self._cols["import"]], x[self._cols["export"]] = max(s, 0.0), max(-s, 0.0)
        # The balances read "outflow - inflow == injection - withdrawal": their duals are the
        # marginal costs of withdrawal (checked against finite differences in the tests).
        dlmp = np.asarray(c["balance"].dual_value, dtype=float)
        root = self.topology.bus_index[self.topology.root]
        # the root's price is energy * (1 - lf_root): no branch or voltage above the root
        energy = float(dlmp[root]) / (1.0 - (0.0 if losses is None else losses.factors[root]))
        branch = (np.asarray(c["upper"].dual_value, dtype=float)
                  - np.asarray(c["lower"].dual_value, dtype=float))
        voltage_prices = np.zeros(len(self.topology.buses))
        voltage_prices[self._band_idx] = (np.asarray(c["v_low"].dual_value, dtype=float)
                                          - np.asarray(c["v_high"].dual_value, dtype=float))
        x[self._cols["v_low"]] = c["s_low"].value
        x[self._cols["v_high"]] = c["s_high"].value
        self._cvx_prices = (dlmp, np.asarray(c["balance_q"].dual_value, dtype=float))
        return x, (energy, branch, voltage_prices), f"cvxpy-{solver.lower()}"

    @property
    def cvxpy_prices(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The P- and Q-DLMPs of the last CVXPY solve, read directly from its nodal
        balances' duals (the result's prices are rebuilt from the limits' duals)."""
        return getattr(self, "_cvx_prices", None)

    # ------------------------------------------------------------------ results
    def _result(self, offers, demand, cap, pv, lmp, dr_cap, x, duals,
                solver) -> LinDistFlowResult:
        """The clearing's result: dispatch, prices, flows, voltages, congestion and
        feasibility now, the money accounts (the DC market's ``dlmp_accounts``) when first
        read."""
        topo = self.topology
        cols = self._cols
        B = len(self._buses_t)
        energy, branch_prices, voltage_prices = duals
        congestion = self._below.T @ branch_prices
        voltage = self.dv_dp.T @ voltage_prices
        losses = self._losses
        if losses is None:
            dlmp = energy + congestion + voltage
        else:
            loss = -losses.factors * energy
            dlmp = energy + loss + congestion + voltage
        dlmp_q = self.dv_dq.T @ voltage_prices
        load_price = dlmp + self.load_tan_phi * dlmp_q
        blocks = x[cols["blocks"]]
        q = blocks.reshape(-1, self.n_blocks).sum(axis=1)
        shed = np.zeros(B)
        shed[self._load_idx] = x[cols["shed"]]
        curt = np.zeros(B)
        curt[self._pv_idx] = x[cols["curtail"]]
        source = float(x[cols["import"]] - x[cols["export"]])
        dr_kw = np.bincount(self._dr_bus, q[self._dr_res], minlength=B)
        gen_kw = np.bincount(self._gen_bus, q[self._gen_res], minlength=B)
        # (the accounts keep no array of the caller's: demand and pv enter as these)
        baseline = demand - shed  # what consumers pay for; served = baseline - DR
        pv_taken = pv - curt
        withdrawal = baseline - dr_kw - gen_kw - pv_taken
        withdrawal_q = self.load_tan_phi * (baseline - dr_kw) - self.shunt_kvar
        flows = self._below @ withdrawal
        # net injections per bus, the source's at the root (for the loss accounts)
        injection = -withdrawal
        injection[self._root] += source
        losses_kw = 0.0 if losses is None else losses.losses(injection)
        flows_q = self._below @ withdrawal_q
        v = self.v_fixed - self.dv_dp @ withdrawal - self.dv_dq @ withdrawal_q
        vm = np.sqrt(np.maximum(v, 0.0))
        low, high = self.voltage_band
        tol = self.voltage_tol
        band_vm = vm[self._band_idx]
        edge = (band_vm <= low + tol) | (band_vm >= high - tol)
        at_limit = [self._buses_t[b] for b in self._band_idx[edge].tolist()]
        threshold = self._threshold(self._limits, self.congestion_tol)
        congested = [self._branches_t[e] for e in
                     np.flatnonzero(np.abs(flows) >= threshold).tolist()]
        shed_total, curt_total = float(shed.sum()), float(curt.sum())
        slack = x[cols["v_low"]] + x[cols["v_high"]]  # pu² outside the band, per band bus
        price_r = np.where(self.is_dr, load_price[self._res_bus], dlmp[self._res_bus])
        bids = offers.copy()
        res = LinDistFlowResult(
            participants=self._names_t, buses=self._buses_t, branches=self._branches_t,
            dlmp=dlmp, energy=energy, congestion=congestion, voltage=voltage, dlmp_q=dlmp_q,
            load_price=load_price, voltage_pu=vm, voltage_prices=voltage_prices,
            at_voltage_limit=at_limit, flows_kvar=flows_q, source_kvar=float(withdrawal_q.sum()),
            participant_quantities=q, flows_kw=flows, branch_prices=branch_prices,
            source_kw=source, congested=congested, shed_kw=shed, curtailed_kw=curt,
            total_shed_kw=shed_total, total_curtailed_kw=curt_total, solver=solver,
            participant_prices=price_r, bids=bids, losses_kw=losses_kw,
            _accounts=partial(
                dlmp_accounts, self._layout, offers=bids, blocks=blocks, q=q, dlmp=dlmp,
                price_r=price_r, energy=energy, congestion=congestion, baseline=baseline,
                pv_taken=pv_taken, source=source, lmp=lmp, shed_total=shed_total,
                curt_total=curt_total, losses=losses, net_injection=injection,
                losses_kw=losses_kw, load_price=load_price, voltage=voltage,
                voltage_slack=slack),
        )
        relaxed = shed_total > 1e-7 or curt_total > 1e-7 or slack.max(initial=0.0) > 1e-9
        if relaxed and self._needs_relief(offers, demand, cap, pv, lmp, dr_cap):
            res.feasible = False
            res.violated = self._diagnose(demand, cap, pv, at_limit, vm, slack)
            for b in np.flatnonzero(shed > 1e-7):
                res.violated.append(_violation(
                    "nodal_balance", topo.buses[b], shed[b],
                    f"nodal balance at bus {topo.buses[b]}: {shed[b]:.3f} kW of demand shed "
                    f"at the price cap ({self.price_cap} ¢/kWh)"))
            for b in np.flatnonzero(curt > 1e-7):
                res.violated.append(_violation(
                    "nodal_balance", topo.buses[b], curt[b],
                    f"nodal balance at bus {topo.buses[b]}: {curt[b]:.3f} kW of must-take PV "
                    "curtailed"))
        return res

    def _diagnose(self, demand, cap, pv, at_limit: list[str], vm: np.ndarray,
                  slack: np.ndarray) -> list[dict]:
        """The branch limits no dispatch meets (the DC market's exact diagnosis), the voltage
        limits violated even after shedding (voltage slack used) and, when neither, the
        voltage limits the relaxed dispatch holds at their bound."""
        out = self.dc.diagnose(demand, cap, pv)
        low, high = self.voltage_band
        for k in np.flatnonzero(slack > 1e-9):
            b = int(self._band_idx[k])
            bus = self.topology.buses[b]
            edge, limit = ("lower", low) if vm[b] < low else ("upper", high)
            out.append(dict(_violation(
                "voltage_limit", bus, 0.0,
                f"{edge} voltage limit at bus {bus} ({limit} pu): {vm[b]:.4f} pu even with "
                "load shed and PV curtailed (held regulator ratios)"),
                excess_pu=float(abs(vm[b] - limit))))
        if out:
            return out
        for bus in at_limit:
            b = self.topology.bus_index[bus]
            edge = "lower" if vm[b] < 0.5 * (low + high) else "upper"
            limit = low if edge == "lower" else high
            out.append(_violation(
                "voltage_limit", bus, 0.0,
                f"{edge} voltage limit at bus {bus} ({limit} pu): no dispatch of the offers "
                "holds it without shedding load or curtailing PV"))
        return out


def _violation(constraint: str, element: str, excess_kw: float, message: str) -> dict:
    return {"constraint": constraint, "element": element, "excess_kw": float(excess_kw),
            "message": message}
