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
``env(scenario="p2p", learners="prosumer", mode=None, negotiation_steps=None, periods=None,
arms=None, retail_price=None, c_service=None, c_lose=None, fixed_kwh=None, matching=None,
curtail_infeasible=None, reveal_opponent_bid=False, policies=None, horizon=None,
max_cycles=None, render_mode=None)``; ``None`` takes the scenario's value
(``scenarios/p2p.toml`` documents every key).

* ``learners``: the group ``"prosumer"`` and/or names; the others bid through ``policies``.
* ``negotiation_steps``: T; ``arms``: the price levels (¢/kWh, increasing); ``retail_price``:
  ub; ``c_service``, ``c_lose``: see the rewards. ``periods``: hours per contract window
  (multi-period case). ``matching``: ``"random"`` (the paper) or ``"max_weight"`` (pairs that
  maximise tradable energy). ``curtail_infeasible``: cancel the trades that cause injection
  violations (reverse-flow overloads, over-voltages) and curtail the producers' PV.
* ``policies``: ``{"prosumer" or name: spec}`` for non-learning prosumers, a spec as in
  ``ogg_envs.baselines.bandits.make_policy`` (``"ucb"`` — the default —, ``"epsilon_greedy"``,
  ``"fixed"``, a dict, a factory or a ``RolePolicy``; UCB's scale defaults to half the range
  of the rewards, ties are broken with the env's generator). They learn across episodes;
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
paper's agents do not see. Nothing else about another prosumer is observed.

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
``substation_kw``, ``losses_kw``.

### Termination and truncation
No agent terminates early. All agents are truncated together after ``horizon`` grid steps or
``max_cycles`` negotiation steps.

### Version history
* v0: initial release (OpenGridGym 0.1).
"""

from __future__ import annotations

import math

import gymnasium
import numpy as np

from ogg_envs.baselines.bandits import make_policy
from ogg_envs.core import MarketEnv, Participant, aec_from_parallel, select_learners
from ogg_envs.markets.p2p import (
    CONSUMER,
    PRODUCER,
    ROLE_NAMES,
    P2PMarket,
    P2PTerms,
    TradeFeasibility,
    assign_roles,
    settle,
)
from ogg_envs.scenario import grid_from_scenario, load_scenario

OBS_SIZE = 12
MODES = ("homogeneous", "multi_period")


def env(**kwargs):
    """The AEC environment (one turn per agent; the negotiation step runs after the last)."""
    return aec_from_parallel(raw_env(**kwargs))


def parallel_env(**kwargs):
    return raw_env(**kwargs)


class raw_env(MarketEnv):
    metadata = {"render_modes": ["human", "rgb_array"], "name": "p2p_v0",
                "is_parallelizable": True}

    def __init__(self, scenario="p2p", learners="prosumer", mode: str | None = None,
                 negotiation_steps: int | None = None, periods: int | None = None,
                 arms=None, retail_price: float | None = None, c_service: float | None = None,
                 c_lose: float | None = None, fixed_kwh: float | None = None,
                 matching: str | None = None, curtail_infeasible: bool | None = None,
                 reveal_opponent_bid: bool = False, policies: dict | None = None,
                 horizon: int | None = None, max_cycles: int | None = None,
                 render_mode: str | None = None):
        scenario = load_scenario(scenario)  # loaded once; the core keeps it as self.scenario
        mk = scenario.get("market", {})

        def pick(value, key, default):
            return value if value is not None else mk.get(key, default)

        super().__init__(scenario=scenario,
                         market_rounds=int(pick(negotiation_steps, "negotiation_steps", 10)),
                         horizon=horizon, default_horizon=12, max_cycles=max_cycles,
                         render_mode=render_mode)
        sc = self.scenario
        self.mode = pick(mode, "mode", "multi_period")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        self.periods = int(pick(periods, "periods", 3)) if self.mode == "multi_period" else 1
        if self.periods < 1:
            raise ValueError(f"periods must be >= 1, got {self.periods}")
        self.fixed_kwh = float(pick(fixed_kwh, "fixed_kwh", 3.0))
        if not (math.isfinite(self.fixed_kwh) and self.fixed_kwh > 0):
            raise ValueError(f"fixed_kwh must be > 0, got {self.fixed_kwh}")
        self.curtail = bool(pick(curtail_infeasible, "curtail_infeasible", False))
        self.reveal = bool(reveal_opponent_bid)
        retail = float(pick(retail_price, "retail_price", 12.0))
        self.terms = P2PTerms(
            arms=tuple(pick(arms, "arms", [4, 5, 6, 7, 8, 9, 10, 11])), retail_price=retail,
            feed_in_price=float(mk.get("feed_in_price", 3.0)),
            imbalance_price=float(mk.get("imbalance_price", retail)),
            c_service=float(pick(c_service, "c_service", 0.5)),
            c_lose=float(pick(c_lose, "c_lose", 1.0)))
        self.n_arms = self.terms.n_arms
        self._top = self.terms.arms[-1]
        self.start_hour = int(sc.get("start_hour", 0))
        self._build_grid()
        self._build_prosumers()
        self.market = P2PMarket(len(self.participants), self.terms, self.market_rounds,
                                str(pick(matching, "matching", "random")))
        self.possible_agents = select_learners(self.participants, learners)
        self._build_policies(policies or {})
        size = OBS_SIZE + int(self.reveal)
        for agent in self.possible_agents:
            self._obs_spaces[agent] = gymnasium.spaces.Box(-1.0, 1.0, (size,), np.float32)
            self._act_spaces[agent] = gymnasium.spaces.Discrete(self.n_arms)

    # ------------------------------------------------------------------ construction
    def _build_grid(self) -> None:
        self.grid = grid_from_scenario(self.scenario, "ieee34")
        bg = self.scenario.get("background", {})
        self._bg_profile = self._column(bg.get("profile", "load_commercial"))
        self._bg_scale = float(bg.get("scale", 1.0))

    def _column(self, name: str) -> np.ndarray:
        if name not in self.profiles:
            raise ValueError(f"profile column {name!r} not in the profiles file; columns: "
                             f"{', '.join(self.profiles)}")
        return self.profiles[name]

    def _build_prosumers(self) -> None:
        pr = self.scenario["prosumers"]
        buses = [str(b) for b in pr["buses"]]
        n = len(buses)
        if n < 2:
            raise ValueError("p2p needs at least 2 prosumers")

        def per(key, default):
            v = pr.get(key, default)
            arr = np.broadcast_to(np.asarray(v, dtype=object), (n,))
            return list(arr)

        self.pv_kw = np.array(per("pv_kw", 5.0), dtype=float)
        self.load_kw = np.array(per("load_kw", 4.0), dtype=float)
        self.cloud = np.array(per("cloud", 0.2), dtype=float)
        if (self.pv_kw < 0).any() or (self.load_kw < 0).any() or \
                not ((0 <= self.cloud) & (self.cloud <= 1)).all():
            raise ValueError("prosumers: pv_kw and load_kw must be >= 0, cloud in [0, 1]")
        self._load_shape = np.stack([self._column(c) for c in per("load_profile",
                                                                   "load_residential")], 1)
        self._pv_shape = self._column("pv")
        self.cloud_noise = float(pr.get("cloud_noise", 0.1))
        self.forecast_error = float(pr.get("forecast_error", 0.15))
        self.load_noise = float(pr.get("load_noise", 0.05))
        self.participants = [
            Participant(f"prosumer_{i}", "prosumer", b, {"role": "consumer"})
            for i, b in enumerate(buses)]
        self.participant = {p.name: p for p in self.participants}
        self._idx = {p.name: i for i, p in enumerate(self.participants)}
        self._names = [p.name for p in self.participants]
        if self.mode == "homogeneous":
            self._size = np.full(n, self.fixed_kwh)
            cap = np.full(n, self.fixed_kwh)
        else:
            self._size = np.maximum(np.maximum(self.pv_kw, self.load_kw), 1e-6)
            cap = self.pv_kw
        self.feasibility = TradeFeasibility(self.grid, buses, cap)
        topo = self.grid.topology
        self._path = {p.name: set(topo.path_to_root(p.bus)) for p in self.participants}
        self._element_branch = {el: br.name for br in topo.branches for el in br.elements}

    def _build_policies(self, specs: dict) -> None:
        for key in specs:
            if key != "prosumer" and key not in self.participant:
                raise ValueError(f"policies: unknown group or participant {key!r}")
        learners = set(self.possible_agents)
        self._scripted = [p for p in self.participants if p.name not in learners]
        for p in self.participants:  # learners get theirs too: it is their baseline
            spec = specs.get(p.name, specs.get("prosumer", "ucb"))
            p.policy = make_policy(spec, self.n_arms, self.terms.reward_range())
        self._scripted_idx = np.array([self._idx[p.name] for p in self._scripted], dtype=int)

    # ------------------------------------------------------------------ episode
    def reset(self, seed: int | None = None, options: dict | None = None):
        if seed is not None or (options or {}).get("reset_policies", False):
            for p in self._scripted:
                if hasattr(p.policy, "reset"):
                    p.policy.reset()
        return super().reset(seed=seed, options=options)

    def _start_episode(self, rng: np.random.Generator, options: dict) -> None:
        """Draw the day's weather, forecasts and loads; start the first hour."""
        n, H = len(self.participants), self.horizon
        hours = (self.start_hour + np.arange(H)) % len(self._pv_shape)
        self._hours = hours
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
        self.feasibility.reset()
        self._rng = rng
        self._arms = np.zeros(len(self.participants), dtype=np.int64)
        self.last_report = None
        self.last_settlement = None
        self._begin_hour()

    def _begin_hour(self) -> None:
        """Roles, matching (at window starts) and this hour's contracts."""
        t, mk = self.t, self.market
        if self.mode == "homogeneous":
            roles = assign_roles(-self.realised_export[t])
            flat = np.full((1, len(roles)), self.fixed_kwh)
            mk.match(roles, flat * (roles == PRODUCER), flat * (roles == CONSUMER), self._rng)
            mk.open_grid_step(np.full(len(mk.producers), self.fixed_kwh))
            self._fc_now = np.where(roles == PRODUCER, 1.0, -1.0)
            self._fc_window = self._fc_now
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
            self._fc_now = np.clip(f / self._size, -1.0, 1.0)
            rest = self.forecast_export[t:end].sum(axis=0)
            self._fc_window = np.clip(rest / (self.periods * self._size), -1.0, 1.0)
        self._hour_caches()

    def _hour_caches(self) -> None:
        """What stays fixed during the hour's negotiation steps, prepared once."""
        mk = self.market
        for p, role in zip(self.participants, mk.roles.tolist()):
            p.private["role"] = ROLE_NAMES[role]
        self._role_name = [ROLE_NAMES[r] for r in mk.roles.tolist()]
        self._partner_name = [self._names[j] if j >= 0 else None for j in mk.partner.tolist()]
        self._matched_list = mk.matched.tolist()
        self._matched_f = mk.matched.astype(float)
        self._fallback = np.where(mk.roles == PRODUCER, self.terms.feed_in_price,
                                  self.terms.retail_price).tolist()
        tranche = np.zeros(mk.n)
        tranche[mk.producers] = tranche[mk.consumers] = mk.tranche
        self._tranche = tranche
        hour = self._hours[self.t]
        base = np.zeros((mk.n, OBS_SIZE + int(self.reveal)), dtype=np.float32)
        base[:, 0] = mk.roles
        base[:, 1] = mk.matched
        base[:, 2] = math.sin(2 * math.pi * hour / 24)
        base[:, 3] = math.cos(2 * math.pi * hour / 24)
        base[:, 4] = self.t / self.horizon
        base[:, 6] = self._fc_now
        base[:, 7] = self._fc_window
        self._obs_base = base
        self._obs_cache_key = None

    def _next_grid_step(self) -> None:
        self._begin_hour()

    # ------------------------------------------------------------------ actions
    def _decode(self, agent: str, action) -> int:
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

    def _scripted_bids(self) -> dict[str, int]:
        rng = self._rng
        return {p.name: p.policy(p, None, rng) for p in self._scripted
                if self.market.matched[self._idx[p.name]]}

    # ------------------------------------------------------------------ negotiation step
    def _market_step(self, bids: dict[str, int]):
        arms, idx, mk = self._arms, self._idx, self.market
        for name, a in bids.items():
            arms[idx[name]] = a
        rewards = mk.negotiate(arms)
        for p, k in zip(self._scripted, self._scripted_idx):
            if mk.matched[k]:
                p.policy.update(p, int(arms[k]), float(rewards[k]))
        # One info dict per agent, from plain lists (cheap).
        rew, bid, b_p = rewards.tolist(), mk.bids.tolist(), mk.producer_bid.tolist()
        traded, qty = mk.traded.tolist(), (self._tranche * mk.traded).tolist()
        matched, fallback = self._matched_list, self._fallback
        out_rewards, infos = {}, {}
        for agent in self.agents:
            k = idx[agent]
            ok = traded[k]
            out_rewards[agent] = rew[k]
            infos[agent] = {
                "role": self._role_name[k], "matched": matched[k],
                "partner": self._partner_name[k], "bid": bid[k] if matched[k] else None,
                "success": ok, "price": b_p[k] if ok else fallback[k], "quantity": qty[k],
            }
        self._obs_cache_key = None
        return out_rewards, infos

    # ------------------------------------------------------------------ grid step
    def _grid_step(self) -> dict[str, dict]:
        t, mk = self.t, self.market
        if self.mode == "homogeneous":
            x = np.where(mk.roles == PRODUCER, self.fixed_kwh, -self.fixed_kwh)
        else:
            x = self.realised_export[t]
        delivered = mk.delivered_kwh.copy()
        payments = mk.payments.copy()
        report = self.feasibility.check(
            self._bg_kw[t], np.maximum(-x, 0.0), np.maximum(x, 0.0), mk.producers,
            mk.consumers, delivered, curtail=self.curtail)
        delivered[report.curtailed] = 0.0
        payments[report.curtailed] = 0.0
        money = settle(mk.n, mk.producers, mk.consumers, delivered, payments,
                       x - report.curtailed_kwh, self.terms)
        self.last_report, self.last_settlement = report, money
        pf = report.pf
        names = self._names
        pair = [(names[p], names[c]) for p, c in zip(mk.producers.tolist(),
                                                   mk.consumers.tolist())]
        infeasible = tuple(pair[k] for k in report.infeasible)
        curtailed = tuple(pair[k] for k in report.curtailed)
        bad = {n for pr in infeasible for n in pr}
        cut = {n for pr in curtailed for n in pr}
        bus_viol = pf.bus_voltage_violations()
        overloaded = {self._element_branch.get(el, el) for el in pf.thermal_overloads}
        traded = (money["p2p_sold_kwh"] + money["p2p_bought_kwh"]).tolist()
        columns = {key: v.tolist() for key, v in money.items()}
        infos = {}
        for agent in self.agents:
            k, bus = self._idx[agent], self.participant[agent].bus
            infos[agent] = {
                "converged": pf.converged,
                "voltage_violations": {bus: bus_viol[bus]} if bus in bus_viol else {},
                "thermal_overloads": sorted(self._path[agent] & overloaded),
                "infeasible_trade": agent in bad, "curtailed": agent in cut,
                "infeasible_trades": infeasible, "curtailed_trades": curtailed,
                "traded_kwh": traded[k], "bill": columns["bill"][k],
                "settlement": {key: col[k] for key, col in columns.items()},
                "substation_kw": pf.substation_kw, "losses_kw": pf.losses_kw,
            }
        return infos

    # ------------------------------------------------------------------ observation
    def _observe(self, agent: str) -> np.ndarray:
        if self._obs_cache_key != self.cycles:
            self._obs = self._build_obs()
            self._obs_cache_key = self.cycles
        return self._obs[self._idx[agent]]

    def _build_obs(self) -> np.ndarray:
        """All prosumers' observations as one fresh (n, size) array (rows are handed out)."""
        mk, top = self.market, self._top
        obs = self._obs_base.copy()
        obs[:, 5] = self.round / self.market_rounds
        if mk.steps_done:
            matched = self._matched_f
            obs[:, 8] = mk.bids * matched / top
            obs[:, 9] = (2.0 * mk.traded - 1.0) * matched
            obs[:, 10] = mk.traded * mk.producer_bid / top
            obs[:, 11] = mk.success_rate()
            if self.reveal:
                obs[:, 12] = mk.bids[np.maximum(mk.partner, 0)] * matched / top
        return obs

    def _reset_info(self, agent: str) -> dict:
        k = self._idx[agent]
        return {"bus": self.participant[agent].bus, "group": "prosumer",
                "role": self._role_name[k], "matched": bool(self.market.matched[k]),
                "partner": self._partner_name[k]}

    # ------------------------------------------------------------------ rendering
    def render(self):
        if self.render_mode is None:
            return None
        mk = self.market
        if self.render_mode == "human":
            if self.round == 0 and self.last_report is not None:  # a grid step just ended
                rep, money = self.last_report, self.last_settlement
                print(f"hour {self._hours[self.t - 1]:02d} grid step: "
                      f"{money['p2p_sold_kwh'].sum():.1f} kWh traded P2P, "
                      f"{money['retail_kwh'].sum():.1f} kWh from the substation, "
                      f"{len(rep.infeasible)} infeasible / {len(rep.curtailed)} curtailed "
                      f"trades, {len(rep.pf.thermal_overloads)} overloads, "
                      f"{len(rep.pf.voltage_violations)} voltage violations")
            else:
                hour = self._hours[min(self.t, self.horizon - 1)]
                print(f"hour {hour:02d} step {self.round}: {len(mk.producers)} pairs, "
                      f"{int(mk.traded[mk.producers].sum())} traded, "
                      f"{int((mk.roles == PRODUCER).sum())} producers / "
                      f"{int((mk.roles == CONSUMER).sum())} consumers")
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        net: dict[str, float] = {}
        for p, role in zip(self.participants, mk.roles.tolist()):
            net[p.bus] = net.get(p.bus, 0.0) + role
        hot = []
        if self.last_report is not None:
            hot = [self._element_branch.get(el, el) for el in self.last_report.pf.thermal_overloads]
        fig, ax = plt.subplots(figsize=(7, 5))
        self.grid.draw(net, ax=ax, label="producers − consumers", highlight_branches=hot,
                       title=f"hour {self._hours[min(self.t, self.horizon - 1)]}")
        fig.canvas.draw()
        img = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
        plt.close(fig)
        return img
