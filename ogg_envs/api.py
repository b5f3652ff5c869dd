"""The four building blocks of OpenGridGym, as public interfaces: Grid, Market, Participant and
Policy (the paper's Fig. 4; the fourth module, the environment, is ``ogg_envs.core``).

A researcher swaps any one of them without touching the others: a market never sees OpenDSS,
a grid never sees bids, a policy sees only its own participant, and the environment core wires
them together on two timescales (market rounds, then one grid step).

Grid
----
The physical feeder. ``ogg_envs.grid.OpenDSSGrid`` implements it::

    grid = OpenDSSGrid.from_feeder("ieee34")
    grid.add_generator("supplier_0", "840", kva=2400)   # a participant's injection point
    grid.reset()
    grid.apply(consumption_kw, {"supplier_0": 350.0})   # kW per topology bus, kW per generator
    pf = grid.solve()                                   # a PowerFlowResult
    grid.topology.H, grid.topology.limits_kw            # the radial model markets clear on

Market
------
A plain object: bids in, a ``Clearing`` out. It clears on a ``Topology`` (flow sensitivities
``H`` and branch limits), knows nothing of PettingZoo or OpenDSS, and carries no history that
changes a result (``reset`` forgets warm starts and caches)::

    market = CurveMarket(grid.topology, [MarketParticipant("s0", "840", "supply"), ...])
    clearing = market.clear(bids, MarketContext(hour=12))
    clearing.participant_prices, clearing.participant_quantities, clearing.congested

Participant
-----------
One record per market participant: where it is, its private truth (costs or values, never
shown to others), its public limits this hour and the market's public rules. The economics
(cost, marginal cost, value) are defined once in ``ogg_envs.economics`` and used by rewards,
scripted bidders, metrics and reproduction::

    p = Participant("supplier_0", "supplier", "840", "supply",
                    truth=Truth(cost_a=3.0, cost_b=0.005), limits=Limits(q_now=2000, q_max=2000))
    p.cost(100.0), p.marginal_cost(100.0)

Policy
------
One signature for scripted participants inside an environment and for leaderboard entries::

    action = policy(participant, observation, info)

``participant`` is the acting participant's own record (a copy under the leaderboard);
``info`` always holds ``rng`` (a seeded ``numpy.random.Generator``: use it for randomness)
and, where there is one, the environment's last ``infos[agent]``. Optional: ``adaptive =
False`` (the action depends only on the participant's record, so the environment computes it
once per grid step), ``batch(participants)`` (with ``adaptive = False``: the actions of several
participants at once, row k what the policy returns for ``participants[k]``; the environment
asks a policy object shared by several scripted participants once for all of them, and shares
one object of a group's default policy when it is not adaptive; ``ogg_envs.policies.curve``
has examples), ``update(participant, action, reward, info)`` (online learners) and ``reset()``
(start afresh).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ogg_envs import economics

__all__ = ["Grid", "Market", "MarketContext", "Clearing", "Deferred", "MarketClearingError",
           "congestion_threshold", "CongestionThreshold", "GridReport", "LossModel",
           "check_participants",
           "InvalidBidError", "Participant", "Truth", "Limits", "Policy", "SUPPLY", "DEMAND",
           "PROSUMER"]

SUPPLY, DEMAND, PROSUMER = "supply", "demand", "prosumer"


class MarketClearingError(RuntimeError):
    """A market could not clear an instance (every solver failed); reported, never hidden."""


class InvalidBidError(ValueError):
    """A bid the market cannot accept; the message names the participant. Markets raise it
    from ``clear`` and from ``repair`` (see ``Market``); environments raise it from ``step``
    with ``invalid_bids="raise"``."""


# ---------------------------------------------------------------------- Grid
@runtime_checkable
class Grid(Protocol):
    """The physical feeder: reset, apply a dispatch, solve, and the radial model of it.

    ``topology`` is an ``ogg_envs.grid.Topology`` (buses, branches, ``H``, ``limits_kw``);
    ``bus_load_kw`` the nominal consumption per topology bus; ``voltage_band`` the (low, high)
    per-unit band of the voltage checks. ``apply(consumption_kw, generation_kw)`` sets kW
    drawn per topology bus and kW produced per added generator; ``solve()`` returns a power-flow
    result with ``converged``, ``substation_kw``, ``losses_kw``, ``thermal_overloads`` and
    ``bus_voltage_violations()``. The environment core's AC report (``GridReport``) and
    ``ac_feedback`` also use ``net_injection_kw()`` (the dispatch as kW per topology bus) and
    ``branch_flows(result, branches)`` (AC kW + j kvar into topology branches, positive away
    from the source); ``OpenDSSGrid`` has both.
    """

    topology: Any
    voltage_band: tuple[float, float]

    @property
    def bus_load_kw(self) -> np.ndarray: ...

    def reset(self) -> None: ...

    def add_generator(self, name: str, bus: str, kw: float = 0.0,
                      kva: float | None = None) -> str: ...

    def apply(self, consumption_kw: np.ndarray, generation_kw=None) -> None: ...

    def solve(self): ...


@dataclass
class GridReport:
    """What the AC power flow of a grid step says about the market's lossless model.

    ``branches`` are the market-limited branches (a finite limit in the market, transformers
    included), in topology order; per branch: ``flow_kw``/``flow_kvar`` the AC power at its
    source-side end (positive away from the source), ``apparent_kva`` its magnitude,
    ``limit_kw`` the market's limit of the hour, ``loading`` = ``|flow_kw| / limit_kw`` and
    ``market_flow_kw`` the lossless model's ``H @ p`` at the same dispatch. ``overloaded``:
    the branches with ``loading > 1 + tol``. ``voltage_violations``: bus -> worst node
    voltage (pu) outside the band. ``cleared_source_kw`` is what the market's balance asks of
    the substation (consumption minus generation it dispatched); ``unscheduled_kw`` =
    ``substation_kw - cleared_source_kw``: the power the substation supplied beyond the
    cleared quantities (kWh in the hour). ``cleared_losses_kw``: the losses the market's
    balance scheduled (``Clearing.losses_kw``; 0 for a lossless clearing), included in
    ``cleared_source_kw``, so that with loss pricing ``unscheduled_kw`` is what the linearised
    losses missed. ``feedback_iterations``: re-clearings of the hour (``ac_feedback``,
    ``loss_pricing``). Numbers are NaN when the power flow did not converge.
    """

    converged: bool
    branches: tuple[str, ...]
    flow_kw: np.ndarray
    flow_kvar: np.ndarray
    apparent_kva: np.ndarray
    limit_kw: np.ndarray
    market_flow_kw: np.ndarray
    loading: np.ndarray
    overloaded: tuple[str, ...]
    voltage_violations: dict[str, float]
    losses_kw: float
    substation_kw: float
    cleared_source_kw: float
    unscheduled_kw: float
    feedback_iterations: int = 0
    tol: float = 0.005
    cleared_losses_kw: float = 0.0

    @property
    def within_limits(self) -> bool:
        """Every market-limited branch within ``limit x (1 + tol)`` (and converged)."""
        return self.converged and not self.overloaded

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready view (per-branch values keyed by branch name)."""
        per = {"flow_kw": self.flow_kw, "flow_kvar": self.flow_kvar,
               "apparent_kva": self.apparent_kva, "limit_kw": self.limit_kw,
               "market_flow_kw": self.market_flow_kw, "loading": self.loading}
        return {"converged": self.converged,
                "branches": {b: {k: float(v[i]) for k, v in per.items()}
                             for i, b in enumerate(self.branches)},
                "overloaded": list(self.overloaded),
                "voltage_violations": dict(self.voltage_violations),
                "losses_kw": self.losses_kw, "substation_kw": self.substation_kw,
                "cleared_source_kw": self.cleared_source_kw,
                "unscheduled_kw": self.unscheduled_kw,
                "cleared_losses_kw": self.cleared_losses_kw,
                "feedback_iterations": self.feedback_iterations, "tol": self.tol}


# ---------------------------------------------------------------------- Market
@dataclass
class MarketContext:
    """What a market needs to know about the hour besides the bids (all optional).

    ``demand_kw``/``pv_kw``: exogenous demand and must-take production per topology bus;
    ``capacity_kw``: what each participant can offer this hour (market participant order);
    ``source_price``: the price of energy at the substation (¢/kWh).
    """

    hour: int = 0
    demand_kw: np.ndarray | None = None
    pv_kw: np.ndarray | None = None
    capacity_kw: np.ndarray | None = None
    source_price: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


_LATER = object()  # a deferred field's value before it is computed


class Deferred:
    """A ``Clearing`` field computed when first read, as the field's default in a market's
    result class. The market hands the result ``_accounts``, a function returning the
    deferred fields' values; the first read of any of them calls it once
    (``Clearing.settle``). A value given to ``__init__`` is kept. The markets defer the
    accounts an environment does not read every round (surpluses, payments, price
    components): results must then be treated as read-only. ``default`` (a value, or a
    zero-argument callable making one) is the field's value on a result built without
    accounts and without it; with none, reading it raises ``AttributeError``. As a data
    descriptor, ``__init__`` hands it the value (``_LATER`` when none was given) and every
    read asks it.
    """

    def __init__(self, default=_LATER):
        self.default = default

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, obj, owner=None):
        if obj is None:
            return _LATER  # the default the dataclass machinery reads
        values = obj.__dict__
        if self.name not in values:
            obj.settle()
            if self.name not in values:
                if self.default is _LATER:
                    raise AttributeError(f"{type(obj).__name__}.{self.name} was not given "
                                         "and there are no accounts to compute it")
                default = self.default
                values[self.name] = default() if callable(default) else default
        return values[self.name]

    def __set__(self, obj, value):
        if value is not _LATER:
            obj.__dict__[self.name] = value



def congestion_threshold(limits_kw: np.ndarray, tol: float) -> np.ndarray:
    """The |flow| (kW) from which each branch counts as congested (``Clearing.congested``),
    the one rule of every market: ``limit * (1 - tol) - 1e-6``, and ``inf`` (never) for a
    branch without a limit.

        congestion_threshold(np.array([100.0, np.inf]), 1e-6)   # [99.999899, inf]
    """
    return np.where(np.isfinite(limits_kw), limits_kw * (1 - tol) - 1e-6, math.inf)


class CongestionThreshold:
    """``congestion_threshold`` kept until the limits array (by identity: a market installs a
    new one when its limits change) or the tolerance changes: what a market compares its flows
    with every clearing.

        threshold = CongestionThreshold()
        threshold(limits_kw, tol)   # computed once per limits array and tolerance
    """

    def __init__(self):
        self._key, self._value = None, None

    def __call__(self, limits_kw: np.ndarray, tol: float) -> np.ndarray:
        key = self._key
        if key is None or key[0] is not limits_kw or key[1] != tol:
            self._key, self._value = (limits_kw, tol), congestion_threshold(limits_kw, tol)
        return self._value


@dataclass(kw_only=True)
class Clearing:
    """The fields every clearing has (a market's own result class adds more).

    Prices ¢/kWh, power kW held for the hour, money ¢ per hour. Per-participant arrays follow
    the market's participant order (``participants``). ``welfare`` is the total surplus on the
    bids: ``consumer_surplus + producer_surplus + congestion_rent + loss_surplus`` (+ a market
    maker's fees, where there is one). A market that prices losses (``set_losses``, see
    ``LossModel``) reports ``losses_kw``, the losses its balance scheduled at its dispatch, and
    ``loss_surplus``, what the loss components of the prices collect beyond paying for them;
    both are 0 for a lossless clearing.
    """

    participants: tuple[str, ...]
    participant_prices: np.ndarray
    participant_quantities: np.ndarray
    congested: list[str]
    total_shed_kw: float = 0.0
    total_curtailed_kw: float = 0.0
    consumer_surplus: float = 0.0
    producer_surplus: float = 0.0
    congestion_rent: float = 0.0
    loss_surplus: float = 0.0
    losses_kw: float = 0.0
    welfare: float = 0.0
    feasible: bool = True
    solver: str = ""
    bids: np.ndarray | None = None  # the bids as cleared (a copy), participant order
    # what computes the ``Deferred`` fields (a dict of their values), until it has run
    _accounts: Callable[[], dict] | None = field(default=None, repr=False, compare=False)

    def settle(self) -> None:
        """Compute the ``Deferred`` fields now (values given to ``__init__`` are kept; once
        settled, nothing more happens)."""
        if self._accounts is not None:
            for name, value in self._accounts().items():
                self.__dict__.setdefault(name, value)
            self._accounts = None

    def __getstate__(self):  # a pickle holds the numbers, not the function computing them
        self.settle()
        return self.__dict__.copy()

    def price_of(self, name: str) -> float:
        return float(self.participant_prices[self.participants.index(name)])

    def quantity_of(self, name: str) -> float:
        return float(self.participant_quantities[self.participants.index(name)])


@dataclass(frozen=True)
class LossModel:
    """The feeder's losses linearised around a solved AC operating point, for a market's
    balance (``market.set_losses``; ``ogg_envs.grid.loss_factors`` computes the factors).

    With ``p`` the net injections per topology bus (kW, generation minus consumption; the
    source's at the root), ``L0`` the AC losses and ``p0`` the injections of the solution the
    factors ``lf_b = dL/dp_b`` came from, the losses are ``L(p) = L0 + lf . (p - p0)`` and the
    lossy balance ``sum_b p_b = L(p)`` reads

        sum_b (1 - lf_b) p_b = L0 - lf . p0 = constant

    ``weights`` is ``1 - lf`` and ``constant`` the right-hand side; ``losses(p)`` is ``L(p)``,
    what the balance schedules at a dispatch. Every weight must be positive (``lf_b < 1``: a
    kW injected at b cannot add a kW of losses). ``LossModel.of`` checks its inputs and names
    the bad one (the bus) before any market state changes.
    """

    factors: np.ndarray  # lf per bus
    loss_kw: float  # L0
    injections_kw: np.ndarray  # p0 per bus

    @classmethod
    def of(cls, buses, loss_factors, loss_kw: float, injections_kw=None) -> LossModel:
        """Checked copies of the inputs (``buses``: the topology's bus names, their order);
        ``injections_kw=None`` means ``p0 = 0``."""
        buses = list(buses)
        lf = np.array(loss_factors, dtype=float).reshape(-1)
        if lf.shape != (len(buses),):
            raise ValueError(f"loss_factors: expected {len(buses)} values in topology bus "
                             f"order, got shape {lf.shape}")
        bad = ~np.isfinite(lf) | (lf >= 1.0)
        if bad.any():
            b = int(np.flatnonzero(bad)[0])
            raise ValueError(f"loss_factors: bus {buses[b]} has {lf[b]!r}; loss factors must "
                             f"be finite and < 1 (kW of losses per kW injected)")
        p0 = np.zeros(len(buses)) if injections_kw is None else \
            np.array(injections_kw, dtype=float).reshape(-1)
        if p0.shape != (len(buses),):
            raise ValueError(f"injections_kw: expected {len(buses)} values in topology bus "
                             f"order, got shape {p0.shape}")
        if not np.isfinite(p0).all():
            b = int(np.flatnonzero(~np.isfinite(p0))[0])
            raise ValueError(f"injections_kw: bus {buses[b]} has {p0[b]!r}; must be finite")
        if isinstance(loss_kw, bool) or not isinstance(loss_kw, (int, float, np.number)) \
                or not (math.isfinite(loss_kw) and loss_kw >= 0):
            raise ValueError(f"loss_kw must be a finite number >= 0 (the AC losses, kW), got "
                             f"{loss_kw!r}")
        lf.flags.writeable = False
        p0.flags.writeable = False
        return cls(lf, float(loss_kw), p0)

    @property
    def weights(self) -> np.ndarray:
        """``1 - lf`` per bus: the lossy balance's coefficients."""
        return 1.0 - self.factors

    @property
    def constant(self) -> float:
        """``L0 - lf . p0``: the lossy balance's right-hand side."""
        return self.loss_kw - float(self.factors @ self.injections_kw)

    def losses(self, injections_kw) -> float:
        """``L(p) = L0 + lf . (p - p0)``, the losses the lossy balance schedules at ``p``."""
        return self.constant + float(self.factors @ np.asarray(injections_kw, dtype=float))


class Market:
    """Base class of the markets: ``reset()`` and ``clear(bids, context) -> Clearing``.

    ``bids`` is an array with one row per participant (market participant order) or a dict
    ``name -> bid``; what a row means is the market's own documentation. A subclass sets
    ``self.names`` (participant order) and ``self.price_cap`` and implements ``clear``; a
    market with line limits also implements ``set_limits`` and ``limits_kw``; a market that
    prices losses implements ``set_losses(loss_factors, loss_kw, injections_kw)`` (``None``:
    lossless, the default; see ``LossModel``).

    Invalid bids: ``clear`` raises ``InvalidBidError`` naming the participant for a bid it
    cannot accept. A market whose bids can be repaired also implements (optional)

        repair(bids, q_limit=None, *, names=None, strict=False) -> (bids, {name: [changes]})

    its validity rule and the nearest valid bids (the curve market: reversed ranges swapped,
    prices clipped into ``[price_floor, price_cap]``, quantities into ``[0, q_limit]``; the
    DLMP markets: prices clipped into ``[0, price_cap]``). ``bids`` is an array with one row
    per participant (market order), or per name of ``names``; ``q_limit`` the largest valid
    quantity of each row (this hour's ``Limits.q_now``, which an environment knows and the
    market does not; ``None``: no limit; markets without bid quantities ignore it). Returns
    the same array when every bid is valid, else a repaired copy, with what was changed per
    participant (only the repaired ones). NaN or infinite numbers are never repaired: they
    raise ``InvalidBidError`` naming the participant, and so does, with ``strict=True``, the
    first invalid bid (what ``clear`` would say of it). ``MarketEnv.checked_bids`` applies
    it (``invalid_bids="repair"`` or ``"raise"``); an environment whose market has no
    ``repair`` can only refuse invalid bids (``invalid_bids="raise"``).
    """

    names: list[str]
    price_cap: float

    def reset(self) -> None:
        """Forget warm starts and caches: the next clearing does not depend on the past."""

    def in_order(self, values: dict, what: str = "bids") -> list:
        """``{name: value}`` naming every participant, as a list in participant order;
        ``ValueError`` naming unknown (``"unknown participants"``) or missing (``"no value
        from"``) ones."""
        unknown = sorted(set(values) - set(self.names))
        if unknown:
            raise ValueError(f"{what}: unknown participants {unknown}; participants: "
                             f"{self.names}")
        missing = [n for n in self.names if n not in values]
        if missing:
            raise ValueError(f"{what}: no bid from {missing}" if what in ("bids", "offers")
                             else f"{what}: no value from {missing}")
        return [values[n] for n in self.names]

    def clear(self, bids, context: MarketContext | None = None) -> Clearing:
        raise NotImplementedError


def check_participants(topology, participants, kind: str, kinds: tuple[str, ...]) -> list[str]:
    """The names of a market's participants, after checking what every market needs: unique
    names, ``getattr(p, kind)`` among ``kinds``, a bus of the topology. Raises ``ValueError``
    naming the participant."""
    names = [p.name for p in participants]
    if len(set(names)) != len(names):
        raise ValueError("participant names must be unique")
    for p in participants:
        if getattr(p, kind) not in kinds:
            raise ValueError(f"{p.name}: {kind} must be one of {kinds}, got "
                             f"{getattr(p, kind)!r}")
        if p.bus not in topology.bus_index:
            raise ValueError(f"{p.name}: unknown bus {p.bus!r}; buses: "
                             f"{', '.join(topology.buses)}")
    return names


# ---------------------------------------------------------------------- Participant
@dataclass
class Truth:
    """Private truth: a supplier's (or DR provider's) true cost ``a q + b q²/2``, a
    consumer's true marginal value, linear from ``value_max`` at 0 to ``value_min`` at its
    demand this hour. Never observed by anyone else."""

    cost_a: float = 0.0
    cost_b: float = 0.0
    value_max: float = 0.0
    value_min: float = 0.0


@dataclass
class Limits:
    """Public limits: ``q_now`` kW it can offer (or wants) this hour, ``q_max`` the largest
    over the episode (observation scaling, action bounds)."""

    q_now: float = 0.0
    q_max: float = 0.0


@dataclass
class Participant:
    """A market participant: a learning agent or a scripted one.

    ``name`` is ``<group>_<index>`` (``supplier_2``) so trainers can group agents by prefix.
    ``side`` is ``"supply"``, ``"demand"`` or ``"prosumer"``; ``rules`` is the market's public
    rules (price cap, blocks, arms, ...), shared by every participant of an environment;
    ``state`` holds what an environment tells a participant about itself besides its limits
    (e.g. its P2P role this hour). ``policy`` acts for it when it is not a learning agent.
    """

    name: str
    group: str
    bus: str
    side: str
    truth: Truth = field(default_factory=Truth)
    limits: Limits = field(default_factory=Limits)
    rules: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    policy: Any = None

    # The economics, defined once (ogg_envs.economics), for this participant.
    def cost(self, q):
        return economics.cost(q, self.truth.cost_a, self.truth.cost_b)

    def marginal_cost(self, q):
        return economics.marginal_cost(q, self.truth.cost_a, self.truth.cost_b)

    def value(self, q):
        t = self.truth
        return economics.value(q, t.value_max, t.value_min, self.limits.q_now)

    def marginal_value(self, q):
        t = self.truth
        return economics.marginal_value(q, t.value_max, t.value_min, self.limits.q_now)

    def profit(self, price, q):
        """True profit (¢ per hour) at ``price`` (¢/kWh) for ``q`` kW."""
        if self.side == DEMAND:
            return self.value(q) - price * q
        return price * q - self.cost(q)

    def copy(self) -> Participant:
        """An independent copy without the policy (what a leaderboard policy is handed)."""
        return replace(self, truth=replace(self.truth), limits=replace(self.limits),
                       rules=dict(self.rules), state=dict(self.state), policy=None)

    def as_dict(self) -> dict[str, Any]:
        """A flat, JSON-ready view (name, group, bus, side, truth, limits, state)."""
        out = {"name": self.name, "group": self.group, "bus": self.bus, "side": self.side}
        out.update(vars(self.truth))
        out.update(vars(self.limits))
        out.update(self.state)
        return out


# ---------------------------------------------------------------------- Policy
@runtime_checkable
class Policy(Protocol):
    """``policy(participant, observation, info) -> action`` (see the module docstring)."""

    def __call__(self, participant: Participant, observation, info: dict): ...
