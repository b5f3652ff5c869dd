"""# P2P

``opengridgym/p2p-v0`` — the paper's second use case: PV-owning prosumers negotiate bilateral
trades that a market maker sets up; what is not traded comes from (or goes to) the utility.

| Import             | ``ogg_envs.make("opengridgym/p2p-v0")``                                |
|--------------------|------------------------------------------------------------------------|
| Actions            | Discrete                                                               |
| Parallel API       | Yes                                                                    |
| Manual control     | No                                                                     |
| Agents             | the learners; by default all: ``prosumer_0`` … ``prosumer_11``         |
| Participants       | 12 prosumers at load buses of the IEEE 34 feeder (scenario ``p2p``)    |
| Action shape       | () — an arm index                                                      |
| Action values      | ``Discrete(n_arms)``: arm k bids the price ``arms[k]`` ¢/kWh           |
| Observation shape  | (12,), or (13,) with ``reveal_opponent_bid=True``                      |
| Observation values | ``[-1, 1]`` (normalised, see below)                                    |

The market itself is ``ogg_envs.markets.p2p`` (roles, matching, the negotiation rule,
settlement and the feeder check are documented there).

### Roles and names
Agents are named ``prosumer_<i>`` whatever they do, so spaces never change. Each grid step a
prosumer is a **producer** or a **consumer** from its net load (load − PV): in the
homogeneous case from that hour's realised values, in the multi-period case from its forecast
over the contract window. The role is the first observation entry (+1 producer, −1 consumer)
and ``infos[agent]["role"]``.

### Timescales
One ``step`` of the parallel env (one AEC turn per agent) is a **negotiation step**: every
matched pair bids, the rule below pays the rewards. ``negotiation_steps`` (T) steps make a
grid step (one hour): the pairs' trades are delivered, every prosumer's net injection goes into
the OpenDSS power flow, infeasible trades are flagged (and optionally curtailed) and everyone is
settled. An episode is ``horizon`` hours from the scenario's ``start_hour`` (default 07:00–19:00).

* **Homogeneous case** (``mode="homogeneous"``, the paper's first setting): every hour the
  market maker matches producers and consumers at random and each pair negotiates over
  ``fixed_kwh`` (3 kWh): producers generate and consumers buy exactly that.
* **Multi-period case** (``mode="multi_period"``, the default): every ``periods`` hours the
  market maker matches on the prosumers' forecasts for the window; a pair keeps its partner for
  the window and negotiates, each hour, the energy its forecasts say can change hands that hour
  (``min`` of the producer's forecast surplus and the consumer's forecast deficit). Realised PV
  differs from the forecast; shortfalls, deficits and surpluses are settled with the utility.

A pair's hourly energy is split into T tranches; each successful negotiation step sells one at
the producer's bid. Unmatched prosumers (there are ``|#producers − #consumers|`` of them) buy
from and sell to the utility; their actions are ignored and their reward is 0.

### Arguments
``env(scenario="p2p", feeder=None, learners="prosumer", mode=None, negotiation_steps=None,
periods=None, arms=None, retail_price=None, c_service=None, c_lose=None, fixed_kwh=None,
matching=None, curtail_infeasible=None, reveal_opponent_bid=False, policies=None,
horizon=None, max_cycles=None, render_mode=None, **ac_options)``; ``None`` takes the scenario's
value (``P2PScenario`` below and ``scenarios/p2p.toml`` document every key).

* ``**ac_options``: the core's market-physics options (``ogg_envs.core``): ``ac_feedback``,
  ``ac_tol``, ``ac_max_iterations``, ``observe_ac``, ``ac_cost_weight`` (all off by default;
  ``ac_feedback`` needs branch limits, which the P2P market does not have).
* ``feeder``: a bundled feeder name or the path to a master ``.dss``; a feeder other than the
  scenario's places the prosumers by the default rule (spread over the load buses,
  ``ogg_envs.grid.placement``).

* ``learners``: the group ``"prosumer"`` and/or names; the others bid through ``policies``.
* ``negotiation_steps``: T; ``arms``: the price levels (¢/kWh, increasing); ``retail_price``:
  ub; ``c_service``, ``c_lose``: see the rewards. ``periods``: hours per contract window
  (multi-period case). ``matching``: ``"random"`` (the paper) or ``"max_weight"`` (pairs that
  maximise tradable energy). ``curtail_infeasible``: cancel the trades that cause injection
  violations (reverse-flow overloads, over-voltages) and curtail the producers' PV.
* ``policies``: ``{"prosumer" or name: spec}`` for non-learning prosumers: a bandit spec as in
  ``ogg_envs.policies.bandits.make_policy`` (``"ucb"`` — the default —, ``"epsilon_greedy"``,
  ``"fixed"``, a dict or a ``RolePolicy``; UCB's scale defaults to half the range of the
  rewards, ties are broken with the env's generator) or any policy
  ``policy(participant, observation, info)`` (e.g. ``ogg_envs.policies.p2p``). They learn
  across episodes;
  ``reset(seed=...)`` (or ``options={"reset_policies": True}``) starts them afresh.
* An action must be an integer arm index (``int``, a NumPy integer or a 0-d integer array) in
  ``[0, n_arms)``; anything else (a float, NaN, out of range) raises ``ValueError`` naming the
  agent before anything changes.

### Observation
Twelve float32 numbers: role (+1/−1), matched (1/0), ``sin`` and ``cos`` of the hour,
episode progress, negotiation step within the hour (/ T), the agent's own forecast net export
(PV − load) for this hour and for the rest of its window (/ its size; homogeneous: ±1), then
this hour's history: its last bid (/ the top arm), the last outcome (+1 trade, −1 failed, 0
none), the last agreed price (/ the top arm) and its share of successful steps this hour. With
``reveal_opponent_bid=True`` a 13th entry is the partner's last bid (/ the top arm), which the
paper's agents do not see. Nothing else about another prosumer is observed. With
``observe_ac=True`` (an option of every environment, ``ogg_envs.core``) two more entries: the
AC outcome of the last grid step, its bus's voltage and its path's loading (the P2P market sets
no branch limits, so that one stays -1).

### Rewards (the paper's rule, ¢/kWh)
For a matched pair with bids ``b_p`` (producer) and ``b_c`` (consumer): if ``b_p <= b_c`` the
trade succeeds, ``r_p = b_p − c_service`` and ``r_c = ub − b_p − c_service``; otherwise both
get ``−c_lose``. Unmatched prosumers get 0. The money of the hour (P2P payments, utility
purchases at ub, feed-in, imbalance charges) is reported in ``infos`` after each grid step, not
added to the reward.

### Infos
Every step: ``role``, ``matched``, ``partner`` (name or None), ``bid`` (¢/kWh; None if
unmatched), ``price`` (¢/kWh: the agreed price, or the utility price the prosumer falls back
to — ub for a consumer, feed-in for a producer), ``quantity`` (kWh traded P2P in this step),
``success``. After a grid step also ``converged``, ``voltage_violations`` (its bus),
``thermal_overloads`` (branches on its path to the substation), ``infeasible_trade`` /
``curtailed`` (its own trade),
``infeasible_trades``/``curtailed_trades`` (all, as (producer, consumer) pairs),
``traded_kwh``, ``bill`` (¢, positive: it pays) and ``settlement`` (the breakdown),
``substation_kw``, ``losses_kw``, ``unscheduled_kw``, ``path_loading`` (0: no market limits),
``ac_iterations`` (0) and ``cost`` (a constrained-RL cost: its bus's voltage excess outside the
band, and OpenDSS's own overloads are in ``thermal_overloads``; ``ogg_envs.core``).
``ac_feedback`` does not apply: the P2P market has no branch limits to correct.

### Termination and truncation
No agent terminates early. All agents are truncated together after ``horizon`` grid steps or
``max_cycles`` negotiation steps.

### Version history
* v0: initial release (OpenGridGym 0.1); ``feeder=`` and typed scenarios (0.2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import gymnasium
import numpy as np

from ogg_envs.api import PROSUMER, Participant
from ogg_envs.core import MarketEnv, aec_from_parallel
from ogg_envs.grid.trade_feasibility import TradeFeasibility
from ogg_envs.markets.p2p import (
    CONSUMER,
    PRODUCER,
    ROLE_NAMES,
    P2PMarket,
    P2PTerms,
    assign_roles,
    settle,
)
from ogg_envs.policies import bandits
from ogg_envs.scenario import Scenario, ScenarioError, per_item, profile_column

OBS_SIZE = 12
_ARM_TYPES = {int, np.int64}  # the arm types decode_rows takes (decode: any integer)
MODES = ("homogeneous", "multi_period")


# ---------------------------------------------------------------------- scenario
@dataclass
class BackgroundSection:
    """The feeder's own loads (not in the market)."""

    profile: str = "load_commercial"  # profile column multiplying their base kW each hour
    scale: float = 1.0  # extra multiplier (0 removes them)


@dataclass
class MarketSection:
    """The P2P market's rules (every key can be overridden by the argument of its name)."""

    mode: str = "multi_period"  # "homogeneous" (fixed_kwh per hour) or "multi_period"
    negotiation_steps: int = 10  # T: negotiation steps per grid step
    periods: int = 3  # multi-period: hours per contract window
    fixed_kwh: float = 3.0  # homogeneous: what every producer sells / consumer buys per hour
    matching: str = "random"  # "random" (the paper) or "max_weight"
    arms: list = field(default_factory=lambda: [4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0])
    retail_price: float = 12.0  # ub, ¢/kWh
    feed_in_price: float = 3.0
    imbalance_price: float | None = None  # default: the retail price
    c_service: float = 0.5  # market maker's fee per kWh, each side of a successful trade
    c_lose: float = 1.0  # cost of a failed negotiation step, each side
    curtail_infeasible: bool = False  # cancel trades behind injection violations

    def __post_init__(self):
        if self.mode not in MODES:
            raise ScenarioError(f"[market] mode must be one of {MODES}, got {self.mode!r}")
        if self.negotiation_steps < 1:
            raise ScenarioError(f"[market] negotiation_steps must be >= 1, got "
                                f"{self.negotiation_steps}")
        if self.periods < 1:
            raise ScenarioError(f"[market] periods must be >= 1, got {self.periods}")
        if not (math.isfinite(self.fixed_kwh) and self.fixed_kwh > 0):
            raise ScenarioError(f"[market] fixed_kwh must be > 0, got {self.fixed_kwh}")


@dataclass
class ProsumersSection:
    """One entry per prosumer (a scalar applies to all)."""

    buses: list | None = None  # default: spread over the load buses, one per pv_kw entry
    pv_kw: Any = 5.0  # rated PV (AC)
    load_kw: Any = 4.0  # peak load
    load_profile: Any = "load_residential"  # profile column(s) of the load
    cloud: Any = 0.2  # mean cloud cover of each location (0 clear .. 1 overcast)
    cloud_noise: float = 0.1  # sd of the hourly cloud cover around the mean (shared per bus)
    forecast_error: float = 0.15  # relative sd of realised PV around its forecast
    load_noise: float = 0.05  # relative sd of the hourly load around its profile
    count: int = 12  # prosumers when neither buses nor per-prosumer lists say

    def __post_init__(self):
        for key in ("cloud_noise", "forecast_error", "load_noise"):
            if not 0 <= getattr(self, key) <= 1:
                raise ScenarioError(f"[prosumers] {key} (a relative sd) must be in [0, 1], got "
                                    f"{getattr(self, key)}")
        if self.count < 2:
            raise ScenarioError(f"[prosumers] count must be >= 2, got {self.count}")


@dataclass
class P2PScenario(Scenario):
    feeder: str = "ieee34"
    horizon: int = 12
    start_hour: int = 7
    background: BackgroundSection = field(default_factory=BackgroundSection)
    market: MarketSection = field(default_factory=MarketSection)
    prosumers: ProsumersSection = field(default_factory=ProsumersSection)


# ---------------------------------------------------------------------- environment
def env(**kwargs):
    """The AEC environment (one turn per agent; the negotiation step runs after the last)."""
    return aec_from_parallel(raw_env(**kwargs))


def parallel_env(**kwargs):
    return raw_env(**kwargs)


class raw_env(MarketEnv):
    metadata = {"render_modes": ["human", "rgb_array"], "name": "p2p_v0",
                "is_parallelizable": True}
    Scenario = P2PScenario
    default_scenario = "p2p"
    overrides = {k: f"market.{k}" for k in (
        "mode", "negotiation_steps", "periods", "arms", "retail_price", "c_service", "c_lose",
        "fixed_kwh", "matching", "curtail_infeasible")}

    def __init__(self, scenario="p2p", learners="prosumer", mode: str | None = None,
                 negotiation_steps: int | None = None, periods: int | None = None,
                 arms=None, retail_price: float | None = None, c_service: float | None = None,
                 c_lose: float | None = None, fixed_kwh: float | None = None,
                 matching: str | None = None, curtail_infeasible: bool | None = None,
                 reveal_opponent_bid: bool = False, policies: dict | None = None,
                 horizon: int | None = None, max_cycles: int | None = None,
                 render_mode: str | None = None, feeder: str | None = None, **ac_options):
        self.reveal = bool(reveal_opponent_bid)
        super().__init__(**ac_options, scenario=scenario, feeder=feeder, learners=learners,
                         policies=policies, market_rounds=None, horizon=horizon,
                         max_cycles=max_cycles, render_mode=render_mode, mode=mode,
                         negotiation_steps=negotiation_steps, periods=periods, arms=arms,
                         retail_price=retail_price, c_service=c_service, c_lose=c_lose,
                         fixed_kwh=fixed_kwh, matching=matching,
                         curtail_infeasible=curtail_infeasible)

    def rounds_of(self, scenario: P2PScenario) -> int:
        return scenario.market.negotiation_steps

    @property
    def rules(self) -> dict:
        t = self.terms
        return dict(super().rules, arms=list(t.arms), retail_price=t.retail_price,
                    feed_in_price=t.feed_in_price, imbalance_price=t.imbalance_price,
                    c_service=t.c_service, c_lose=t.c_lose,
                    negotiation_steps=self.market_rounds, mode=self.mode)

    # ------------------------------------------------------------------ construction
    def make_participants(self) -> list[Participant]:
        sc, mk = self.scenario, self.scenario.market
        self.mode = mk.mode
        self.periods = mk.periods if self.mode == "multi_period" else 1
        self.fixed_kwh = mk.fixed_kwh
        self.curtail = mk.curtail_infeasible
        try:
            self.terms = P2PTerms(
                arms=tuple(mk.arms), retail_price=mk.retail_price,
                feed_in_price=mk.feed_in_price,
                imbalance_price=mk.retail_price if mk.imbalance_price is None
                else mk.imbalance_price, c_service=mk.c_service, c_lose=mk.c_lose)
        except ValueError as exc:
            raise ScenarioError(f"[market] {exc}") from None
        if self.terms.retail_price - self.terms.c_service <= self.terms.arms[0]:
            raise ScenarioError(
                f"[market] retail_price {self.terms.retail_price} less the service fee "
                f"c_service {self.terms.c_service} is not above the lowest arm "
                f"{self.terms.arms[0]}: no consumer would ever gain from a trade")
        self.n_arms = self.terms.n_arms
        self._top = self.terms.arms[-1]
        bg = sc.background
        self._bg_profile = profile_column(self.profiles, bg.profile, "[background] profile")
        self._bg_scale = bg.scale
        pr = sc.prosumers
        lists = [np.size(v) for v in (pr.pv_kw, pr.load_kw, pr.cloud)
                 if not isinstance(v, (int, float))]
        count = len(pr.buses) if pr.buses is not None and not self.default_placement \
            else max(lists, default=pr.count)
        buses = self.place(pr.buses, count, "load", "[prosumers]")
        n = len(buses)
        if n < 2:
            raise ScenarioError(f"[prosumers] buses: p2p needs at least 2 prosumers, got {n}")
        self.pv_kw = per_item(pr.pv_kw, n, "[prosumers] pv_kw", low=0.0)
        self.load_kw = per_item(pr.load_kw, n, "[prosumers] load_kw", low=0.0)
        self.cloud = per_item(pr.cloud, n, "[prosumers] cloud", low=0.0)
        if (self.cloud > 1).any():
            raise ScenarioError(f"[prosumers] cloud must be in [0, 1], got {self.cloud}")
        columns = [pr.load_profile] * n if isinstance(pr.load_profile, str) else pr.load_profile
        if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
            raise ScenarioError(f"[prosumers] load_profile: a profile column name or one per "
                                f"prosumer, got {pr.load_profile!r}")
        if len(columns) != n:
            raise ScenarioError(f"[prosumers] load_profile: expected one column or {n}, got "
                                f"{len(columns)}")
        self._load_shape = np.stack([profile_column(self.profiles, c, "[prosumers] "
                                                    "load_profile") for c in columns], 1)
        self._pv_shape = profile_column(self.profiles, "pv", "p2p")
        self.cloud_noise, self.forecast_error = pr.cloud_noise, pr.forecast_error
        self.load_noise = pr.load_noise
        parts = [Participant(f"prosumer_{i}", "prosumer", b, PROSUMER,
                             state={"role": "consumer"}) for i, b in enumerate(buses)]
        if self.mode == "homogeneous":
            self._size = np.full(n, self.fixed_kwh)
            cap = np.full(n, self.fixed_kwh)
        else:
            self._size = np.maximum(np.maximum(self.pv_kw, self.load_kw), 1e-6)
            cap = self.pv_kw
        self.feasibility = TradeFeasibility(self.grid, buses, cap)
        return parts

    def make_market(self) -> P2PMarket:
        return P2PMarket(len(self.participants), self.terms, self.market_rounds,
                         self.scenario.market.matching, names=self.names)

    def make_policy(self, participant: Participant, spec):
        spec = "ucb" if spec is None else spec
        if isinstance(spec, (str, dict, bandits.RolePolicy)):
            return bandits.make_policy(spec, self.n_arms, self.terms.reward_range())
        return super().make_policy(participant, spec)

    def action_space_of(self, p: Participant) -> gymnasium.Space:
        return gymnasium.spaces.Discrete(self.n_arms)

    def observation_space_of(self, p: Participant) -> gymnasium.Space:
        return gymnasium.spaces.Box(-1.0, 1.0, (OBS_SIZE + int(self.reveal),), np.float32)

    # ------------------------------------------------------------------ episode
    def start_episode(self, rng: np.random.Generator, options: dict) -> None:
        """Draw the day's weather, forecasts and loads."""
        n, H = len(self.participants), self.horizon
        hours = np.array([self.hour_of(t) for t in range(H)])
        self.hours = hours
        # Weather is local: prosumers at the same bus share one cloud draw per hour.
        buses = sorted({p.bus for p in self.participants})
        where = np.array([buses.index(p.bus) for p in self.participants])
        clouds = self.cloud + self.cloud_noise * rng.standard_normal((H, len(buses)))[:, where]
        pv_fc = self.pv_kw * self._pv_shape[hours, None] * (1 - np.clip(clouds, 0.0, 1.0))
        error = np.maximum(1 + self.forecast_error * rng.standard_normal((H, n)), 0.0)
        pv_real = pv_fc * error
        load = self.load_kw * self._load_shape[hours] * \
            np.maximum(1 + self.load_noise * rng.standard_normal((H, n)), 0.0)
        self.forecast_export = pv_fc - load  # kWh per hour; the load forecast is exact
        self.realised_export = pv_real - load
        self._bg_kw = np.outer(self._bg_profile[hours] * self._bg_scale, self.grid.base_load_kw)
        # (the core has just reset the grid: TradeFeasibility.reset would only do it again)
        self._arms = np.zeros(n, dtype=np.int64)
        self.last_report = None
        self.last_settlement = None

    def start_hour(self) -> None:
        """Roles, matching (at window starts) and this hour's contracts."""
        t, mk = self.t, self.market
        if self.mode == "homogeneous":
            roles = assign_roles(-self.realised_export[t])
            flat = np.full((1, len(roles)), self.fixed_kwh)
            mk.match(roles, flat * (roles == PRODUCER), flat * (roles == CONSUMER), self._rng)
            mk.open_grid_step(np.full(len(mk.producers), self.fixed_kwh))
            fc_now = fc_window = np.where(roles == PRODUCER, 1.0, -1.0)
        else:
            start = t - t % self.periods
            end = min(start + self.periods, self.horizon)
            if t == start:
                window = self.forecast_export[start:end]
                roles = assign_roles(-window.sum(axis=0))
                surplus = np.maximum(window, 0.0) * (roles == PRODUCER)
                deficit = np.maximum(-window, 0.0) * (roles == CONSUMER)
                mk.match(roles, surplus, deficit, self._rng)
            f = self.forecast_export[t]
            mk.open_grid_step(np.minimum(np.maximum(f[mk.producers], 0.0),
                                         np.maximum(-f[mk.consumers], 0.0)))
            fc_now = np.clip(f / self._size, -1.0, 1.0)
            rest = self.forecast_export[t:end].sum(axis=0)
            fc_window = np.clip(rest / (self.periods * self._size), -1.0, 1.0)
        if mk.partner is not self._paired:  # new pairs (a new contract window)
            self._pair_caches()
        base = self._pair_base.copy()
        sin, cos, _, _ = self.hour_features()
        base[:, 2], base[:, 3], base[:, 4] = sin, cos, self.t / self.horizon
        base[:, 6] = fc_now
        base[:, 7] = fc_window
        self._obs_base = base
        self._obs_key = None

    _paired = None  # the market's partner array the pair caches were built for

    def _pair_caches(self) -> None:
        """What stays fixed while the pairs do (a contract window), prepared once: roles,
        partners and fallback prices as lists, one row per agent for the step infos, and the
        observation columns of the roles."""
        mk = self.market
        roles = mk.roles.tolist()
        for p, role in zip(self.participants, roles):
            p.state["role"] = ROLE_NAMES[role]
        self._role_name = [ROLE_NAMES[r] for r in roles]
        self._partner_name = [self.names[j] if j >= 0 else None for j in mk.partner.tolist()]
        self._matched_list = mk.matched.tolist()
        self._matched_f = mk.matched.astype(float)
        self._failed_f = -self._matched_f  # a failed trade's outcome (-1; -0 unmatched)
        fallback = mk.fallback_price.tolist()
        # Agents do not change during an episode (nobody terminates early).
        self._agent_k = [(a, self.index[a]) for a in self.agents]
        self._agent_rows = [(a, k, self._role_name[k], self._matched_list[k],
                             self._partner_name[k], fallback[k]) for a, k in self._agent_k]
        base = np.zeros((mk.n, OBS_SIZE + int(self.reveal)), dtype=np.float32)
        base[:, 0] = mk.roles
        base[:, 1] = mk.matched
        self._pair_base = base
        self._paired = mk.partner

    # ------------------------------------------------------------------ actions
    def decode(self, agent: str, action) -> int:
        if type(action) is int:
            a = action
        elif isinstance(action, np.integer):
            a = int(action)
        elif isinstance(action, np.ndarray) and action.shape == () and \
                np.issubdtype(action.dtype, np.integer):
            a = int(action)
        else:
            raise ValueError(f"{agent}: action must be an integer arm index in "
                             f"[0, {self.n_arms}), got {action!r}")
        if not 0 <= a < self.n_arms:
            raise ValueError(f"{agent}: action {a} is outside the arms [0, {self.n_arms})")
        return a

    def decode_rows(self, names: list[str], actions) -> list[int] | None:
        """``decode`` of several prosumers' actions at once where every one is a Python or
        NumPy int64 arm index in range (sampled or policy actions); None otherwise."""
        if not set(map(type, actions)) <= _ARM_TYPES:
            return None
        arms = list(map(int, actions))
        if arms and not (min(arms) >= 0 and max(arms) < self.n_arms):
            return None
        return arms

    def is_bidding(self, participant: Participant) -> bool:
        return self._matched_list[self.index[participant.name]]

    # ------------------------------------------------------------------ negotiation step
    def market_step(self, bids: dict[str, int]):
        arms = self._arms
        if len(bids) == len(arms) and list(bids) == self.names:  # everyone, in order
            arms[:] = list(bids.values())  # (one assignment: a dozen cost twice as much)
        else:
            idx = self.index
            for name, a in bids.items():
                arms[idx[name]] = a
        clearing = self.market.clear(arms)
        self.set_clearing(clearing)
        mk = self.market
        # One info dict per agent, from plain lists and the rows prepared with the pairs.
        bid, b_p = mk.bids.tolist(), mk.producer_bid.tolist()
        traded, qty = mk.traded.tolist(), (mk.tranche_of * mk.traded).tolist()
        infos = {agent: {"role": role, "matched": matched, "partner": partner,
                         "bid": bid[k] if matched else None, "success": traded[k],
                         "price": b_p[k] if traded[k] else fallback, "quantity": qty[k]}
                 for agent, k, role, matched, partner, fallback in self._agent_rows}
        self._obs_key = None
        return clearing.rewards, infos

    # ------------------------------------------------------------------ grid step
    def grid_step(self):
        """Deliver the trades, check them on the feeder (``TradeFeasibility``), settle."""
        t, mk = self.t, self.market
        if self.mode == "homogeneous":
            x = np.where(mk.roles == PRODUCER, self.fixed_kwh, -self.fixed_kwh)
        else:
            x = self.realised_export[t]
        delivered = mk.delivered_kwh  # fresh arrays
        payments = mk.payments
        report = self.feasibility.check(
            self._bg_kw[t], np.maximum(-x, 0.0), np.maximum(x, 0.0), mk.producers,
            mk.consumers, delivered, curtail=self.curtail)
        delivered[report.curtailed] = 0.0
        payments[report.curtailed] = 0.0
        money = settle(mk.n, mk.producers, mk.consumers, delivered, payments,
                       x - report.curtailed_kwh, self.terms)
        self.last_report, self.last_settlement = report, money
        return report.pf

    def grid_step_infos(self, pf) -> dict[str, dict]:
        mk, names = self.market, self.names
        report, money = self.last_report, self.last_settlement
        pair = [(names[p], names[c]) for p, c in zip(mk.producers.tolist(),
                                                   mk.consumers.tolist())]
        infeasible = tuple(pair[k] for k in report.infeasible)
        curtailed = tuple(pair[k] for k in report.curtailed)
        bad = {n for pr in infeasible for n in pr}
        cut = {n for pr in curtailed for n in pr}
        traded = (money["p2p_sold_kwh"] + money["p2p_bought_kwh"]).tolist()
        bill = money["bill"].tolist()
        keys = tuple(money)
        rows = list(zip(*(v.tolist() for v in money.values())))  # one tuple per prosumer
        infos = {}
        for agent, k in self._agent_k:
            infos[agent] = {
                "infeasible_trade": agent in bad, "curtailed": agent in cut,
                "infeasible_trades": infeasible, "curtailed_trades": curtailed,
                "traded_kwh": traded[k], "bill": bill[k],
                "settlement": dict(zip(keys, rows[k])),
            }
        return infos

    # ------------------------------------------------------------------ observation
    def observe(self, name: str) -> np.ndarray:
        return self.observe_all()[self.index[name]]

    def observe_all(self) -> np.ndarray:
        if self._obs_key != self.cycles:
            self._obs = self._build_obs()
            self._obs_key = self.cycles
        return self._obs

    def _build_obs(self) -> np.ndarray:
        """All prosumers' observations as one fresh (n, size) array (rows are handed out)."""
        mk, top = self.market, self._top
        obs = self._obs_base.copy()
        obs[:, 5] = self.round / self.market_rounds
        if mk.steps_done:
            matched = self._matched_f
            obs[:, 8] = mk.bids * matched / top
            obs[:, 9] = np.where(mk.traded, matched, self._failed_f)  # +-1 (matched), -0
            obs[:, 10] = mk.traded * mk.producer_bid / top
            obs[:, 11] = mk.success_rate()
            if self.reveal:
                obs[:, 12] = mk.bids[np.maximum(mk.partner, 0)] * matched / top
        return obs

    def reset_info(self, name: str) -> dict:
        k = self.index[name]
        return {"bus": self.participant[name].bus, "group": "prosumer",
                "role": self._role_name[k], "matched": self._matched_list[k],
                "partner": self._partner_name[k]}

    # ------------------------------------------------------------------ rendering
    def render_text(self) -> str:
        mk = self.market
        if self.round == 0 and self.last_report is not None:  # a grid step just ended
            rep, money = self.last_report, self.last_settlement
            return (f"hour {self.hour_of(self.t - 1):02d} grid step: "
                    f"{money['p2p_sold_kwh'].sum():.1f} kWh traded P2P, "
                    f"{money['retail_kwh'].sum():.1f} kWh from the substation, "
                    f"{len(rep.infeasible)} infeasible / {len(rep.curtailed)} curtailed "
                    f"trades, {len(rep.pf.thermal_overloads)} overloads, "
                    f"{len(rep.pf.voltage_violations)} voltage violations")
        return (f"hour {self.hour:02d} step {self.round}: {len(mk.producers)} pairs, "
                f"{int(mk.traded[mk.producers].sum())} traded, "
                f"{int((mk.roles == PRODUCER).sum())} producers / "
                f"{int((mk.roles == CONSUMER).sum())} consumers")

    def render_map(self, ax) -> None:
        mk = self.market
        net: dict[str, float] = {}
        for p, role in zip(self.participants, mk.roles.tolist()):
            net[p.bus] = net.get(p.bus, 0.0) + role
        hot = []
        if self.last_report is not None:
            hot = [self._element_branch.get(el, el)
                   for el in self.last_report.pf.thermal_overloads]
        self.grid.draw(net, ax=ax, label="producers − consumers", highlight_branches=hot,
                       title=f"hour {self.hour}")
