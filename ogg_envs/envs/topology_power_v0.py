"""# Topology Power

``opengridgym/topology-power-v0`` — the paper's first use case: topology-induced market power.

| Import             | ``ogg_envs.make("opengridgym/topology-power-v0")``                     |
|--------------------|------------------------------------------------------------------------|
| Actions            | Continuous                                                             |
| Parallel API       | Yes                                                                    |
| Manual control     | No                                                                     |
| Agents             | the learners: by default ``supplier_0`` … ``supplier_3``               |
| Participants       | 28 consumers (one per load bus), 4 suppliers (DGs), 1 substation       |
| Action shape       | (4,) — a bid quadruple ``(p_max, p_min, q_max, q_min)``                |
| Action values      | ``[0, price_cap]`` ¢/kWh for prices, ``[0, q_limit]`` kW for quantities |
| Observation shape  | (12,)                                                                  |
| Observation values | ``[-1, 1]`` (normalised, see below)                                    |

Participants bid affine supply or demand curves into the congestion-constrained curve market
(``ogg_envs.markets.curve_market``, which documents exactly what a quadruple means). The market
maximises welfare subject to the IEEE 34 feeder's radial line-flow limits; when a limit binds,
nodal prices separate, and generators behind the congested line can raise prices.

### Timescales
Each ``step`` of the parallel env (one AEC turn per agent) is a **market round**: every
participant bids, the market clears tentatively, rewards are paid. After ``market_rounds``
rounds the last clearing is final: consumers' served kW become the feeder's loads, suppliers'
kW its generators, OpenDSS solves the power flow (one **grid step** = one hour). An episode is
``horizon`` hours of the scenario's day.

### Arguments
``env(scenario="topology_power", feeder=None, learners="supplier", market_rounds=3,
horizon=None, flexible_share=None, policies=None, invalid_bids="repair", max_cycles=None,
render_mode=None, **ac_options)``

* ``**ac_options``: the core's market-physics options (``ogg_envs.core``): ``ac_feedback``,
  ``ac_tol``, ``ac_max_iterations``, ``observe_ac``, ``ac_cost_weight``, ``loss_pricing`` (all off
  by default).
* ``scenario``: bundled name, TOML path or dict (see ``scenarios/topology_power.toml`` and
  ``TopologyPowerScenario`` below: every key, its default, and what it means).
* ``feeder``: a bundled feeder name or the path to a master ``.dss``. A feeder other than the
  scenario's places the participants by the default rule (``ogg_envs.grid.placement``: the
  substation at the source, the suppliers spread along the main path, a consumer at every load
  bus) and limits the lines at their thermal ratings.
* ``learners``: groups (``"supplier"``, ``"consumer"``, ``"substation"``) and/or participant
  names that are PettingZoo agents; everyone else acts through ``policies``.
* ``market_rounds``: market rounds per grid step (K). ``horizon``: grid steps per episode
  (default: the scenario's). ``flexible_share``: overrides the scenario's share of flexible
  consumers.
* ``policies``: ``{group or name: policy}`` for non-learning participants; defaults are truthful
  bidding for consumers and suppliers and a flat offer for the substation
  (``ogg_envs.policies.curve``); a policy is ``policy(participant, observation, info)``.
* ``invalid_bids``: ``"repair"`` (default) replaces a finite but invalid bid by the nearest valid
  one (the curve market's ``repair``, ``Bid.repair`` row by row: prices into ``[0, price_cap]``,
  quantities into ``[0, q_now]``; ``infos[agent]["bid_repairs"]`` lists what changed) or
  ``"raise"`` (``InvalidBidError``, a ``ValueError``, naming the agent, before anything
  changes); the core applies either (``ogg_envs.core``, "Invalid bids"). NaN/inf numbers or a
  wrong shape always raise ``ValueError`` naming the agent, before anything changes.

### Observation
Twelve float32 numbers, all in [-1, 1]: ``sin`` and ``cos`` of the hour, episode progress,
round within the hour, +1 supplier / -1 consumer, the agent's private true curve (marginal
cost or value at zero and at full quantity, / price_cap), its quantity limit this hour
(/ its largest) — these three as the hour's ``truth`` holds them, the numbers its rewards
use, taken at the hour's start — then the last clearing: price at its bus (/ price_cap), its
quantity (/ its largest), the average price over the participants' buses (/ price_cap), and
whether a branch on its path to the substation was congested (0/1). No agent sees another's
private data. With
``observe_ac=True`` (an option of every environment, ``ogg_envs.core``) two more entries (14):
the AC outcome of the last grid step, its bus's voltage and the loading of the most loaded
market-limited branch on its path.

### Rewards (eqs. 9-10), in dollars
Supplier: ``price * q - c(q)`` with its true cost ``c(q) = a q + b q²/2``. Consumer:
``u(q) - price * q`` with its true value ``u``. The reward of every market round is that
round's profit divided by ``market_rounds``, so an hour contributes one hour's profit to the
return whatever K is. ``infos[agent]`` carries ``price`` (¢/kWh at its bus), ``quantity`` (kW),
``profit`` ($ for the hour if this clearing is final), ``congested`` (branch names) and after a
grid step (OpenDSS's AC power flow, ``ogg_envs.core`` documents each): ``converged``,
``voltage_violations`` (its bus), ``thermal_overloads`` (branches on its path over the
market's limit x (1 + ``ac_tol``), or over OpenDSS's rating where the market sets none),
``path_loading``, ``substation_kw``, ``losses_kw``, ``unscheduled_kw`` (substation supply
beyond the cleared quantities), ``ac_iterations`` and ``cost`` (a constrained-RL cost: relative
limit excess on its path + voltage excess at its bus). ``env.unwrapped.last_grid_report`` has
every market-limited branch's AC flow against its limit. ``ac_feedback=True`` clears the final
round again until the AC flows respect the limits (rewards are then the corrected clearing's);
``loss_pricing=True`` clears it again with the AC solution's marginal loss factors, so nodal
prices gain a loss component (``last_clearing.price_components``: energy + loss + congestion)
and the cleared supply covers the losses; ``ac_cost_weight`` subtracts the cost from rewards.
All are off by default.

### Termination and truncation
No agent terminates early. All agents are truncated together after ``horizon`` grid steps or
``max_cycles`` market rounds.

### Version history
* v0: initial release (OpenGridGym 0.1); ``feeder=`` and typed scenarios (0.2).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import gymnasium
import numpy as np

from ogg_envs import economics
from ogg_envs.api import DEMAND, SUPPLY, Limits, Participant, Truth
from ogg_envs.core import MarketEnv, aec_from_parallel, clip_unit, real_action, real_rows
from ogg_envs.markets.curve_market import CurveMarket, MarketParticipant
from ogg_envs.policies.curve import FlatOffer, TruthfulBidder, truthful_bid
from ogg_envs.scenario import (
    MAX_KW,
    MAX_PRICE,
    Scenario,
    ScenarioError,
    check_price,
    per_item,
)

OBS_SIZE = 12


# ---------------------------------------------------------------------- scenario
@dataclass
class SubstationSection:
    """Exogenous supply at the substation: a flat offer at the wholesale price."""

    bus: str | None = None  # default: the feeder's source bus
    price: float = 4.3  # ¢/kWh
    capacity_kw: float = 2000.0

    def __post_init__(self):
        check_price(self.price, "[substation] price")
        if not 0.0 <= self.capacity_kw <= MAX_KW:
            raise ScenarioError(f"[substation] capacity_kw must be in [0, {MAX_KW:g}] kW, got "
                                f"{self.capacity_kw}")


@dataclass
class SuppliersSection:
    """Price-responsive distributed generators: true marginal cost ``cost_a + cost_b q``."""

    buses: list | None = None  # default: spread along the main path, one per cost_a entry
    capacity_kw: Any = 2000.0  # one value or one per supplier
    cost_a: Any = field(default_factory=lambda: [3.0, 3.2, 3.1, 3.4])  # ¢/kWh at zero output
    cost_b: Any = 0.005  # ¢/kWh per kW
    cost_noise: float = 0.0  # relative noise on cost_a, drawn per episode

    def __post_init__(self):
        if not 0 <= self.cost_noise <= 1:
            raise ScenarioError(f"[suppliers] cost_noise (a relative sd) must be in [0, 1], "
                                f"got {self.cost_noise}")


@dataclass
class ConsumersSection:
    """One consumer per load bus, nominal kW from the feeder's loads."""

    flexible_share: float = 0.08  # share of price-responsive consumers (the rest inelastic)
    value_max: list = field(default_factory=lambda: [11.0, 15.0])  # flexible: uniform range
    value_min: list = field(default_factory=lambda: [2.0, 4.0])  # of the value at full load
    residential_share: float = 0.6  # share of buses on the residential profile
    load_noise: float = 0.0  # relative noise on each hour's load, drawn per episode

    def __post_init__(self):
        if not 0.0 <= self.flexible_share <= 1.0:
            raise ScenarioError(f"[consumers] flexible_share must be in [0, 1], got "
                                f"{self.flexible_share}")
        if not 0.0 <= self.residential_share <= 1.0:
            raise ScenarioError(f"[consumers] residential_share must be in [0, 1], got "
                                f"{self.residential_share}")
        if not 0 <= self.load_noise <= 1:
            raise ScenarioError(f"[consumers] load_noise (a relative sd) must be in [0, 1], got "
                                f"{self.load_noise}")
        for key in ("value_max", "value_min"):
            lo_hi = getattr(self, key)
            if len(lo_hi) != 2 or not all(isinstance(v, (int, float)) and not isinstance(
                    v, bool) for v in lo_hi) or not 0 <= lo_hi[0] <= lo_hi[1] <= MAX_PRICE:
                raise ScenarioError(f"[consumers] {key} must be a range [low, high] with "
                                    f"0 <= low <= high, got {lo_hi}")


@dataclass
class TopologyPowerScenario(Scenario):
    feeder: str = "ieee34"
    price_cap: float = 20.0  # highest bid price; price of shed load; value of inflexible demand
    substation: SubstationSection = field(default_factory=SubstationSection)
    suppliers: SuppliersSection = field(default_factory=SuppliersSection)
    consumers: ConsumersSection = field(default_factory=ConsumersSection)

    def __post_init__(self):
        super().__post_init__()
        check_price(self.price_cap, "price_cap", low=1e-9)


# ---------------------------------------------------------------------- environment
def env(**kwargs):
    """The AEC environment (one turn per agent; the round runs after the last turn)."""
    return aec_from_parallel(raw_env(**kwargs))


def parallel_env(**kwargs):
    return raw_env(**kwargs)


class raw_env(MarketEnv):
    metadata = {"render_modes": ["human", "rgb_array"], "name": "topology_power_v0",
                "is_parallelizable": True}
    Scenario = TopologyPowerScenario
    default_scenario = "topology_power"
    overrides = {"flexible_share": "consumers.flexible_share"}
    default_policies = {"substation": FlatOffer, "supplier": TruthfulBidder,
                        "consumer": TruthfulBidder}
    _hourly = (None, None)  # the hour's truth and the observation entries taken from it

    def __init__(self, scenario="topology_power", learners="supplier", market_rounds: int = 3,
                 horizon: int | None = None, flexible_share: float | None = None,
                 policies: dict | None = None, invalid_bids: str = "repair",
                 max_cycles: int | None = None, render_mode: str | None = None,
                 feeder: str | None = None, **ac_options):
        super().__init__(**ac_options, scenario=scenario, feeder=feeder, learners=learners,
                         policies=policies, market_rounds=market_rounds, horizon=horizon,
                         max_cycles=max_cycles, render_mode=render_mode,
                         invalid_bids=invalid_bids, flexible_share=flexible_share)

    # ------------------------------------------------------------------ construction
    def make_participants(self) -> list[Participant]:
        sc, grid = self.scenario, self.grid
        self.price_cap = sc.price_cap
        sub, sup = sc.substation, sc.suppliers
        sub_bus = self.place(None if sub.bus is None else [sub.bus], 1, "source",
                             "[substation]")[0]
        parts = [Participant("substation_0", "substation", sub_bus, SUPPLY,
                             truth=Truth(cost_a=sub.price),
                             limits=Limits(sub.capacity_kw, sub.capacity_kw))]
        count = len(sup.buses) if sup.buses is not None and not self.default_placement \
            else np.size(sup.cost_a)
        buses = self.place(sup.buses, count, "main_path", "[suppliers]")
        per = "entry of [suppliers] buses" if sup.buses is not None else "supplier"
        self.cost_a0 = per_item(sup.cost_a, count, "[suppliers] cost_a", low=0.0,
                                high=MAX_PRICE, per=per)
        cost_b = per_item(sup.cost_b, count, "[suppliers] cost_b", low=0.0, high=MAX_PRICE,
                          per=per)
        cap = per_item(sup.capacity_kw, count, "[suppliers] capacity_kw", low=0.0, high=MAX_KW,
                       per=per)
        for i, bus in enumerate(buses):
            p = Participant(f"supplier_{i}", "supplier", bus, SUPPLY,
                            truth=Truth(cost_a=self.cost_a0[i], cost_b=cost_b[i]),
                            limits=Limits(cap[i], cap[i]))
            self.add_generator(p, kva=cap[i] * 1.2)
            parts.append(p)
        loads = grid.bus_load_kw
        self.consumer_buses = sorted(b for b in self.topology.buses
                                     if loads[self.topology.bus_index[b]] > 0)
        peak = max(self.profiles["load_residential"].max(),
                   self.profiles["load_commercial"].max())
        noise = sc.consumers.load_noise
        self.nominal_kw = np.array([loads[self.topology.bus_index[b]]
                                    for b in self.consumer_buses])
        for j, bus in enumerate(self.consumer_buses):
            nominal = self.nominal_kw[j]
            parts.append(Participant(f"consumer_{j}", "consumer", bus, DEMAND,
                                     limits=Limits(nominal, nominal * peak * (1.0 + 3 * noise))))
        self.consumers = [p for p in parts if p.group == "consumer"]
        self._consumer_q_max = np.array([p.limits.q_max for p in self.consumers])
        return parts

    def make_market(self) -> CurveMarket:
        mps = [MarketParticipant(p.name, p.bus, p.side) for p in self.participants]
        market = CurveMarket(self.topology, mps, price_cap=self.price_cap)
        market.set_limits(self.line_limits())
        return market

    def action_space_of(self, p: Participant) -> gymnasium.Space:
        hi = np.array([self.price_cap, self.price_cap, p.limits.q_max, p.limits.q_max],
                      dtype=np.float32)
        return gymnasium.spaces.Box(0.0, hi, (4,), np.float32)

    def observation_space_of(self, p: Participant) -> gymnasium.Space:
        return gymnasium.spaces.Box(-1.0, 1.0, (OBS_SIZE,), np.float32)

    # ------------------------------------------------------------------ episode
    def start_episode(self, rng: np.random.Generator, options: dict) -> None:
        cons = self.scenario.consumers
        n_cons = len(self.consumers)
        n_flex = int(round(cons.flexible_share * n_cons))
        # Nested draws: a larger flexible_share makes more of the same consumers flexible, and
        # everything else about the instance stays the same (for comparative statics).
        flexible = set(rng.permutation(n_cons)[:n_flex].tolist())
        residential = rng.random(n_cons) < cons.residential_share
        # public: the episode's hourly load factors, (episode rows, consumers)
        self.load_factor = self.draw_hourly(
            [self.consumer_profile(j, residential[j]) for j in range(n_cons)],
            cons.load_noise, rng)
        vmax = rng.uniform(*cons.value_max, size=n_cons)
        vmin = rng.uniform(*cons.value_min, size=n_cons)
        noise = self.scenario.suppliers.cost_noise
        for j, p in enumerate(self.consumers):
            p.state["flexible"] = j in flexible
            p.truth.value_max = float(vmax[j]) if j in flexible else self.price_cap
            p.truth.value_min = float(vmin[j]) if j in flexible else self.price_cap
        for i, p in enumerate(q for q in self.participants if q.group == "supplier"):
            p.truth.cost_a = self.cost_a0[i] * (1 + noise * rng.standard_normal())

    def start_hour(self) -> None:
        factor = self.load_factor[self.row_of(self.t)]
        q_now = np.minimum(self.nominal_kw * np.maximum(factor, 0.0), self._consumer_q_max)
        for p, q in zip(self.consumers, q_now.tolist()):
            p.limits.q_now = q
        self.truth = t = economics.truth_arrays(self.participants)
        self._profits = economics.HourProfits(self.is_supply, t["a"], t["b"], t["vmax"],
                                              t["vmin"], t["q_now"])

    # ------------------------------------------------------------------ actions
    def decode(self, agent: str, action) -> np.ndarray:
        return real_action(agent, action, (4,), "p_max, p_min, q_max, q_min")

    def decode_rows(self, names: list[str], actions) -> list | None:
        return real_rows(actions, len(names), (4,))  # (None: decode names the culprit)

    def bid_limits(self) -> np.ndarray:
        """This hour's ``q_now`` per participant: a valid bid's largest ``q_max``."""
        return self.truth["q_now"]

    # ------------------------------------------------------------------ market round
    @cached_property
    def _rows_in_order(self):
        """``bids (name -> row) -> the rows in participant order``, in one call (a tuple; the
        row itself where there is one participant)."""
        return operator.itemgetter(*self.names)

    def market_step(self, bids):
        # Every row is decode's (4,) float64 array: their bytes, joined in participant order,
        # are the (n, 4) array (read-only; repair and clear copy what they change or keep).
        n = len(self.names)
        rows = self._rows_in_order(bids)
        arr = np.frombuffer(b"".join(rows if n > 1 else (rows,)), dtype=float).reshape(n, 4)
        arr, repairs = self.checked_bids(arr, self.truth["q_now"])
        res = self.market.clear(arr)
        self.set_clearing(res)
        prices = res.participant_prices
        self._avg_price = float(np.add.reduce(prices)) / len(prices)  # over the participants
        profit = self.true_profits(prices, res.participant_quantities) / 100.0
        return self.per_round(profit), self.clearing_infos(res, profit, arr, repairs)

    def true_profits(self, prices: np.ndarray, quantities: np.ndarray) -> np.ndarray:
        """True profits (¢ per hour) of every participant (eqs. 9-10)."""
        return self._profits(prices, quantities)

    # ------------------------------------------------------------------ observation
    def observe(self, name: str) -> np.ndarray:
        k = self.index[name]
        last = self._last_clearing
        if last is None:
            price = qty = avg = 0.0
        else:
            cap, q_max = self.price_cap, self.participant[name].limits.q_max
            price = last.participant_prices.item(k) / cap
            qty = last.participant_quantities.item(k) / q_max
            avg = self._avg_price / cap
            # Clipped to [-1, 1] in Python, before the float32 rounding (the same numbers as
            # np.clip after it: rounding is monotone); most values need no clip.
            price = price if -1.0 <= price <= 1.0 else clip_unit(price)
            qty = qty if -1.0 <= qty <= 1.0 else clip_unit(qty)
            avg = avg if -1.0 <= avg <= 1.0 else clip_unit(avg)
        # (the hour features and the congestion flag are within [-1, 1] by construction)
        return np.array((*self.hour_features(), *self._hourly_entries(k), price, qty, avg,
                         float(self.congested_on_path(name))), dtype=np.float32)

    def _hourly_entries(self, k: int) -> tuple[float, float, float, float]:
        """Participant ``k``'s observation entries 4-7 this hour (clipped like the others): +1
        supplier / -1 consumer, its true curve at zero and at full quantity (/ price_cap)
        and its quantity limit (/ its largest), from the hour's ``truth``; kept for the hour
        (``truth`` is a new dict every hour)."""
        truth, kept = self._hourly
        if truth is not self.truth:
            truth, kept = self._hourly = (self.truth, {})
        entries = kept.get(k)
        if entries is None:
            a, q_now, cap = truth["a"].item(k), truth["q_now"].item(k), self.price_cap
            if truth["is_supply"].item(k):
                sign, c0, c1 = 1.0, a, a + truth["b"].item(k) * q_now
            else:
                sign, c0, c1 = -1.0, truth["vmax"].item(k), truth["vmin"].item(k)
            values = (sign, c0 / cap, c1 / cap, q_now / self.participants[k].limits.q_max)
            entries = kept[k] = tuple(v if -1.0 <= v <= 1.0 else clip_unit(v) for v in values)
        return entries

    # ------------------------------------------------------------------ rendering
    def render_text(self) -> str:
        res = self.last_clearing
        levels = sorted({round(v, 2) for v in res.participant_prices.tolist()})
        return (f"hour {self.t} round {self.round}: prices {levels} ¢/kWh, congested "
                f"{res.congested or 'none'}, welfare {res.welfare / 100:.2f} $")

    def render_map(self, ax) -> None:
        res = self.last_clearing
        if not hasattr(res, "prices"):  # a market without nodal prices: the core's map
            return super().render_map(ax)
        self.grid.draw(res.prices, ax=ax, label="¢/kWh", title=f"hour {self.t}",
                       highlight_branches=res.congested)

    # ------------------------------------------------------------------ analysis helpers
    def truthful_bids(self) -> np.ndarray:
        """Everyone's truthful bids for the current hour (the efficiency benchmark)."""
        return np.array([truthful_bid(p) for p in self.participants])

    def true_welfare(self, quantities: np.ndarray) -> float:
        """Realised total surplus (¢) under the participants' true costs and values."""
        t = self.truth
        return economics.welfare(self.is_supply, quantities, t["a"], t["b"], t["vmax"],
                                 t["vmin"], t["q_now"])

