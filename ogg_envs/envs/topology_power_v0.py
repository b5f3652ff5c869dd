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
``env(scenario="topology_power", learners="supplier", market_rounds=3, horizon=None,
flexible_share=None, policies=None, invalid_bids="repair", max_cycles=None, render_mode=None)``

* ``scenario``: bundled name, TOML path or dict (see ``scenarios/topology_power.toml``).
* ``learners``: groups (``"supplier"``, ``"consumer"``, ``"substation"``) and/or participant
  names that are PettingZoo agents; everyone else acts through ``policies``.
* ``market_rounds``: market rounds per grid step (K). ``horizon``: grid steps per episode
  (default: the scenario's). ``flexible_share``: overrides the scenario's share of flexible
  consumers.
* ``policies``: ``{group or name: policy}`` for non-learning participants; defaults are truthful
  bidding for consumers and suppliers and a flat offer for the substation
  (``ogg_envs.baselines.curve_bidders``).
* ``invalid_bids``: ``"repair"`` (default) replaces a finite but invalid bid by the nearest valid
  one (``Bid.repair``; ``infos[agent]["bid_repairs"]`` lists what changed) or ``"raise"``
  (``ValueError``). NaN/inf numbers or a wrong shape always raise ``ValueError`` naming the
  agent, before anything changes.

### Observation
Twelve float32 numbers, all in [-1, 1]: ``sin`` and ``cos`` of the hour, episode progress,
round within the hour, +1 supplier / -1 consumer, the agent's private true curve (marginal
cost or value at zero and at full quantity, / price_cap), its quantity limit this hour
(/ its largest), then the last clearing: price at its bus (/ price_cap), its quantity (/ its
largest), the average price over the participants' buses (/ price_cap), and whether a branch
on its path to the substation was congested (0/1). No agent sees another's private data.

### Rewards (eqs. 9-10), in dollars
Supplier: ``price * q - c(q)`` with its true cost ``c(q) = a q + b q²/2``. Consumer:
``u(q) - price * q`` with its true value ``u``. The reward of every market round is that
round's profit divided by ``market_rounds``, so an hour contributes one hour's profit to the
return whatever K is. ``infos[agent]`` carries ``price`` (¢/kWh at its bus), ``quantity`` (kW),
``profit`` ($ for the hour if this clearing is final), ``congested`` (branch names) and after a
grid step ``converged``, ``voltage_violations`` (its bus), ``thermal_overloads`` (its path),
``substation_kw`` and ``losses_kw``.

### Termination and truncation
No agent terminates early. All agents are truncated together after ``horizon`` grid steps or
``max_cycles`` market rounds.

### Version history
* v0: initial release (OpenGridGym 0.1).
"""

from __future__ import annotations

import math

import gymnasium
import numpy as np

from ogg_envs.baselines.curve_bidders import FlatOffer, TruthfulBidder
from ogg_envs.core import MarketEnv, Participant, aec_from_parallel, select_learners
from ogg_envs.markets.curve_market import Bid, CurveMarket, InvalidBidError, MarketParticipant
from ogg_envs.scenario import grid_from_scenario

OBS_SIZE = 12


def env(**kwargs):
    """The AEC environment (one turn per agent; the round runs after the last turn)."""
    return aec_from_parallel(raw_env(**kwargs))


def parallel_env(**kwargs):
    return raw_env(**kwargs)


class raw_env(MarketEnv):
    metadata = {"render_modes": ["human", "rgb_array"], "name": "topology_power_v0",
                "is_parallelizable": True}

    def __init__(self, scenario="topology_power", learners="supplier", market_rounds: int = 3,
                 horizon: int | None = None, flexible_share: float | None = None,
                 policies: dict | None = None, invalid_bids: str = "repair",
                 max_cycles: int | None = None, render_mode: str | None = None):
        super().__init__(scenario=scenario, market_rounds=market_rounds, horizon=horizon,
                         max_cycles=max_cycles, render_mode=render_mode,
                         invalid_bids=invalid_bids)
        sc = self.scenario
        self.price_cap = float(sc.get("price_cap", 20.0))
        self.flexible_share = float(flexible_share if flexible_share is not None
                                    else sc["consumers"].get("flexible_share", 0.08))
        if not 0.0 <= self.flexible_share <= 1.0:
            raise ValueError(f"flexible_share must be in [0, 1], got {self.flexible_share}")
        self._build_grid()
        self._build_participants()
        self.possible_agents = select_learners(self.participants, learners)
        self._learner_set = set(self.possible_agents)
        self._build_policies(policies or {})
        self._build_market()
        for agent in self.possible_agents:
            p = self.participant[agent]
            self._obs_spaces[agent] = gymnasium.spaces.Box(-1.0, 1.0, (OBS_SIZE,), np.float32)
            hi = np.array([self.price_cap, self.price_cap, p.private["q_limit"],
                           p.private["q_limit"]], dtype=np.float32)
            self._act_spaces[agent] = gymnasium.spaces.Box(0.0, hi, (4,), np.float32)

    # ------------------------------------------------------------------ construction
    def _build_grid(self) -> None:
        self.grid = grid_from_scenario(self.scenario, "ieee34")
        self.topology = self.grid.topology

    def _build_participants(self) -> None:
        sc, grid = self.scenario, self.grid
        parts: list[Participant] = []
        sub = sc["substation"]
        parts.append(Participant("substation_0", "substation", str(sub["bus"]), {
            "side": "supply", "cost_a": float(sub["price"]), "cost_b": 0.0,
            "q_limit": float(sub["capacity_kw"]), "q_now": float(sub["capacity_kw"])}))
        sup = sc["suppliers"]
        cost_a = np.broadcast_to(np.asarray(sup["cost_a"], dtype=float), (len(sup["buses"]),))
        for i, bus in enumerate(sup["buses"]):
            cap = float(sup["capacity_kw"])
            parts.append(Participant(f"supplier_{i}", "supplier", str(bus), {
                "side": "supply", "cost_a0": float(cost_a[i]), "cost_a": float(cost_a[i]),
                "cost_b": float(sup["cost_b"]), "q_limit": cap, "q_now": cap}))
            grid.add_generator(f"supplier_{i}", str(bus), 0.0, kva=cap * 1.2)
        self.consumer_buses = sorted(grid.loads_at_bus)
        peak = max(self.profiles["load_residential"].max(), self.profiles["load_commercial"].max())
        noise = float(sc["consumers"].get("load_noise", 0.0))
        for j, bus in enumerate(self.consumer_buses):
            nominal = float(grid.base_load_kw[grid.loads_at_bus[bus]].sum())
            parts.append(Participant(f"consumer_{j}", "consumer", bus, {
                "side": "demand", "nominal_kw": nominal, "flexible": False,
                "q_limit": nominal * peak * (1.0 + 3 * noise), "q_now": nominal}))
        self.participants = parts
        self.participant = {p.name: p for p in parts}
        self.names = [p.name for p in parts]
        self.is_supply = np.array([p.private["side"] == "supply" for p in parts])
        # Served kW of each consumer -> each OpenDSS load (shares of the bus's base kW).
        grid_gen = {g: i for i, g in enumerate(grid.generator_names)}
        self._load_map = np.zeros((len(grid.load_names), len(parts)))
        self._gen_map = np.zeros((len(grid.generator_names), len(parts)))
        for k, p in enumerate(parts):
            if p.group == "consumer":
                idx = grid.loads_at_bus[p.bus]
                base = grid.base_load_kw[idx]
                self._load_map[idx, k] = base / base.sum()
            elif p.group == "supplier":
                self._gen_map[grid_gen[f"ogg_{p.name}"], k] = 1.0
        self._path = {p.name: set(self.topology.path_to_root(p.bus)) for p in parts}
        self._element_branch = {el: br.name for br in self.topology.branches
                                for el in br.elements}

    def _build_policies(self, overrides: dict) -> None:
        defaults = {"substation": FlatOffer(), "supplier": TruthfulBidder(),
                    "consumer": TruthfulBidder()}
        for key in overrides:
            if key not in defaults and key not in self.participant:
                raise ValueError(f"policies: unknown group or participant {key!r}")
        for p in self.participants:
            p.policy = overrides.get(p.name, overrides.get(p.group, defaults[p.group]))
        self._scripted = [p for p in self.participants if p.name not in self._learner_set]

    def _build_market(self) -> None:
        mps = [MarketParticipant(p.name, p.bus, p.private["side"]) for p in self.participants]
        self.market = CurveMarket(self.topology, mps, price_cap=self.price_cap)
        limits = self.market.limits_kw
        for name, kw in self.scenario.get("grid", {}).get("limits_kw", {}).items():
            if name not in self.topology.branch_index:
                raise ValueError(f"scenario limits_kw: unknown branch {name!r}; branches: "
                                 f"{', '.join(self.topology.branch_index)}")
            limits[self.topology.branch_index[name]] = float(kw)
        self.market.set_limits(limits)
        self._idx = {n: i for i, n in enumerate(self.names)}

    # ------------------------------------------------------------------ episode
    def _start_episode(self, rng: np.random.Generator, options: dict) -> None:
        sc = self.scenario
        cons = sc["consumers"]
        n_cons = len(self.consumer_buses)
        n_flex = int(round(self.flexible_share * n_cons))
        # Nested draws: a larger flexible_share makes more of the same consumers flexible, and
        # everything else about the instance stays the same (for comparative statics).
        flexible = set(rng.permutation(n_cons)[:n_flex].tolist())
        residential = rng.random(n_cons) < float(cons.get("residential_share", 0.6))
        noise = float(cons.get("load_noise", 0.0))
        hours = len(self.profiles["hour"])
        self._load_factor = np.zeros((hours, n_cons))
        for j in range(n_cons):
            col = "load_residential" if residential[j] else "load_commercial"
            self._load_factor[:, j] = self.profiles[col] * (1 + noise * rng.standard_normal(hours))
        vmax = rng.uniform(*cons.get("value_max", [11.0, 15.0]), size=n_cons)
        vmin = rng.uniform(*cons.get("value_min", [2.0, 4.0]), size=n_cons)
        cost_noise = float(sc["suppliers"].get("cost_noise", 0.0))
        j = 0
        for p in self.participants:
            if p.group == "consumer":
                p.private["flexible"] = j in flexible
                flex = p.private["flexible"]
                p.private["value_max"] = float(vmax[j]) if flex else self.price_cap
                p.private["value_min"] = float(vmin[j]) if flex else self.price_cap
                p.private["column"] = j
                j += 1
            elif p.group == "supplier":
                shock = 1 + cost_noise * rng.standard_normal()
                p.private["cost_a"] = p.private["cost_a0"] * shock
        self.grid.reset()
        self._last = None  # last clearing
        self._last_pf = None
        self._prev_price = np.zeros(len(self.names))
        self._prev_qty = np.zeros(len(self.names))
        self._prev_avg = 0.0
        self._prev_congested: set[str] = set()
        self._rng = rng
        self._start_hour()

    def _start_hour(self) -> None:
        h = self.t % len(self.profiles["hour"])
        for p in self.participants:
            if p.group == "consumer":
                q = p.private["nominal_kw"] * max(self._load_factor[h, p.private["column"]], 0.0)
                p.private["q_now"] = min(q, p.private["q_limit"])
        self._scripted_cache = None
        self._refresh_truth()

    # ------------------------------------------------------------------ actions
    def _decode(self, agent: str, action) -> np.ndarray:
        a = np.asarray(action, dtype=float)
        if a.shape != (4,):
            raise ValueError(f"{agent}: action must have shape (4,) (p_max, p_min, q_max, "
                             f"q_min), got shape {a.shape}")
        if not np.isfinite(a).all():
            raise ValueError(f"{agent}: action has non-finite numbers {a.tolist()}")
        return a

    def _scripted_bids(self) -> dict[str, np.ndarray]:
        if self._scripted_cache is None:
            self._scripted_cache = {
                p.name: np.asarray(p.policy(p, None, self._rng), dtype=float)
                for p in self._scripted
            }
        return self._scripted_cache

    def _validated(self, name: str, a: np.ndarray) -> tuple[np.ndarray, list[str]]:
        p = self.participant[name]
        p_max, p_min, q_max, q_min = a
        limit = p.private["q_now"]
        if 0.0 <= p_min <= p_max <= self.price_cap and 0.0 <= q_min <= q_max <= limit + 1e-9:
            return a, []
        bid = Bid.from_array(a)
        if self.invalid_bids == "raise":
            try:
                bid.check(name, self.price_cap, 0.0, limit)
            except InvalidBidError as exc:
                raise ValueError(str(exc)) from None
        fixed, fixes = bid.repair(name, self.price_cap, 0.0, limit)
        return fixed.as_array(), fixes

    # ------------------------------------------------------------------ market step
    def _market_step(self, bids):
        arr = np.empty((len(self.names), 4))
        for name, a in bids.items():
            arr[self._idx[name]] = a
        p_max, p_min, q_max, q_min = arr.T
        valid = ((0.0 <= p_min) & (p_min <= p_max) & (p_max <= self.price_cap) & (0.0 <= q_min)
                 & (q_min <= q_max) & (q_max <= self._truth["q_now"] + 1e-9))
        repairs = {}
        for k in np.flatnonzero(~valid):
            arr[k], fixes = self._validated(self.names[k], arr[k])
            repairs[self.names[k]] = fixes
        res = self.market.clear(arr)
        self._last = res
        self._last_bids = arr
        price = res.participant_prices
        qty = res.participant_quantities
        profit = self._profits(price, qty) / 100.0  # ¢ -> $
        self._prev_price, self._prev_qty = price, qty
        self._prev_avg = float(np.mean(price))  # over the participants' buses
        self._prev_congested = set(res.congested)
        rewards, infos = {}, {}
        for agent in self.agents:
            k = self._idx[agent]
            rewards[agent] = profit[k] / self.market_rounds
            infos[agent] = {
                "price": float(price[k]), "quantity": float(qty[k]), "profit": float(profit[k]),
                "congested": sorted(self._path[agent] & self._prev_congested),
                "bid": arr[k].copy(),
            }
            if agent in repairs:
                infos[agent]["bid_repairs"] = repairs[agent]
        return rewards, infos

    def _refresh_truth(self) -> None:
        """Everyone's true curve for the hour as arrays (participant order), for the profits."""
        def column(key: str) -> np.ndarray:
            return np.array([p.private.get(key, 0.0) for p in self.participants], dtype=float)

        self._truth = {"a": column("cost_a"), "b": column("cost_b"),
                       "vmax": column("value_max"), "vmin": column("value_min"),
                       "q_now": column("q_now")}

    def _profits(self, price: np.ndarray, qty: np.ndarray) -> np.ndarray:
        """True profits (¢) of every participant for the hour (eqs. 9-10)."""
        t = self._truth
        supply_profit = price * qty - (t["a"] * qty + 0.5 * t["b"] * qty**2)
        q = np.minimum(qty, t["q_now"])
        slope = np.divide(t["vmax"] - t["vmin"], t["q_now"], out=np.zeros_like(q),
                          where=t["q_now"] > 0)
        value = np.where(t["q_now"] > 0, t["vmax"] * q - 0.5 * slope * q**2, 0.0)
        return np.where(self.is_supply, supply_profit, value - price * qty)

    # ------------------------------------------------------------------ grid step
    def _grid_step(self):
        qty = self._last.participant_quantities
        self.grid.set_loads_kw(self._load_map @ qty)
        self.grid.set_generators_kw(self._gen_map @ qty)
        pf = self.grid.solve()
        self._last_pf = pf
        bus_viol = pf.bus_voltage_violations()
        overloaded = {name: pct for name, pct in pf.thermal_overloads.items()}
        overload_branches = {self._element_branch.get(el, el) for el in overloaded}
        infos = {}
        for agent in self.agents:
            p = self.participant[agent]
            infos[agent] = {
                "converged": pf.converged,
                "voltage_violations": {p.bus: bus_viol[p.bus]} if p.bus in bus_viol else {},
                "thermal_overloads": sorted(self._path[agent] & overload_branches),
                "substation_kw": pf.substation_kw,
                "losses_kw": pf.losses_kw,
            }
        return infos

    def _next_grid_step(self) -> None:
        self._start_hour()

    # ------------------------------------------------------------------ observation
    def _observe(self, agent: str) -> np.ndarray:
        p = self.participant[agent]
        pr = p.private
        k = self._idx[agent]
        hours = len(self.profiles["hour"])
        h = self.t % hours
        cap = self.price_cap
        if pr["side"] == "supply":
            sign = 1.0
            c0, c1 = pr["cost_a"], pr["cost_a"] + pr.get("cost_b", 0.0) * pr["q_now"]
        else:
            sign = -1.0
            c0, c1 = pr.get("value_max", cap), pr.get("value_min", cap)
        obs = np.array([
            math.sin(2 * math.pi * h / 24), math.cos(2 * math.pi * h / 24),
            min(self.t / self.horizon, 1.0), self.round / self.market_rounds, sign,
            c0 / cap, c1 / cap, pr["q_now"] / pr["q_limit"],
            self._prev_price[k] / cap, self._prev_qty[k] / pr["q_limit"], self._prev_avg / cap,
            1.0 if self._path[agent] & self._prev_congested else 0.0,
        ], dtype=np.float32)
        return np.clip(obs, -1.0, 1.0)

    def _reset_info(self, agent: str) -> dict:
        p = self.participant[agent]
        return {"bus": p.bus, "group": p.group, "q_limit_now": p.private["q_now"]}

    # ------------------------------------------------------------------ rendering
    def render(self):
        if self.render_mode is None or self._last is None:
            return None
        if self.render_mode == "human":
            res = self._last
            levels = sorted({round(v, 2) for v in res.prices.values()})
            print(f"hour {self.t} round {self.round}: prices {levels} ¢/kWh, congested "
                  f"{res.congested or 'none'}, welfare {res.welfare / 100:.2f} $")
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 5))
        self.grid.draw(self._last.prices, ax=ax, label="¢/kWh", title=f"hour {self.t}",
                       highlight_branches=self._last.congested)
        fig.canvas.draw()
        img = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
        plt.close(fig)
        return img

    # ------------------------------------------------------------------ analysis helpers
    def truthful_bids(self) -> np.ndarray:
        """Everyone's truthful bids for the current hour (for efficiency benchmarks)."""
        tb = TruthfulBidder()
        return np.array([tb(p, None, None) if p.group != "substation" else
                         FlatOffer()(p, None, None) for p in self.participants])

    def true_welfare(self, quantities: np.ndarray, prices: np.ndarray) -> float:
        """Realised total surplus (¢) under the participants' true costs and values."""
        return float(self._profits(prices, quantities).sum()
                     + np.sum(prices[~self.is_supply] * quantities[~self.is_supply])
                     - np.sum(prices[self.is_supply] * quantities[self.is_supply]))


def true_value(private: dict, q: float) -> float:
    """A consumer's true value (¢) of ``q`` kW for an hour: linear marginal value from
    ``value_max`` at 0 to ``value_min`` at its current load (inflexible: price_cap flat)."""
    q_now = private["q_now"]
    vmax, vmin = private["value_max"], private["value_min"]
    if q_now <= 0:
        return 0.0
    q = min(q, q_now)
    return vmax * q - 0.5 * (vmax - vmin) / q_now * q * q
