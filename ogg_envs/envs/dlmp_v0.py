"""# DLMP

``opengridgym/dlmp-v0`` — the paper's third use case: the distribution system operator's DLMP
market on the IEEE 37-node feeder.

| Import             | ``ogg_envs.make("opengridgym/dlmp-v0")``                                |
|--------------------|-------------------------------------------------------------------------|
| Actions            | Continuous                                                              |
| Parallel API       | Yes                                                                     |
| Manual control     | No                                                                      |
| Agents             | the learners: by default ``generator_0..3`` and ``dr_0..3``             |
| Participants       | 4 generators, 4 demand-response (DR) providers (agents or scripted)     |
| Exogenous          | the source (hourly LMP), 25 inflexible load buses, 4 must-take PV       |
| Action shape       | (n_blocks,) = (3,) — block prices of a piecewise-linear cost curve      |
| Action values      | ``[0, price_cap]`` ¢/kWh (``price_cap`` = 30 in the default scenario)   |
| Observation shape  | (16,)                                                                   |
| Observation values | ``[-1, 1]`` (normalised, see below)                                     |

Generators and DR providers offer cost curves to the DSO, which runs a DC security-constrained
OPF (paper eqs. 12-18: the source LMP on imports only, the offers, the radial line-flow limits
of the feeder) and pays everyone the distribution locational marginal price (DLMP) at their bus.
``ogg_envs.markets.dlmp`` documents the market exactly (what an offer means, the decomposition
of a DLMP into energy and congestion parts, the load-shedding fallback of infeasible hours).

### Market and timescales
Each ``step`` of the parallel env (one AEC turn per agent) is a **market round**: every agent
offers, the DSO clears (a tentative clearing that the agents observe and may answer), rewards
are paid. After ``market_rounds`` rounds (default 3, as in ``topology-power-v0``; 1 makes every
clearing final) the last clearing is final: generators' kW become OpenDSS generators at
their buses, DR reductions (and any shed load) come off the bus loads, PV is injected, and
OpenDSS solves the 37-node feeder (one **grid step** = one hour). An episode is ``horizon``
hours of the scenario's day; the source LMP follows the scenario's profile.

### Actions: piecewise-linear cost curves
An action is ``n_blocks`` prices (¢/kWh), one per equal block of the agent's capacity this
hour: a generator's output, a DR provider's demand reduction (its share of its bus's current
demand). The DSO dispatches blocks cheapest first, so unsorted prices mean the same as sorted
ones. Invalid actions: NaN or inf, or a wrong shape, raise ``ValueError`` naming the agent
before anything changes. With ``invalid_bids="repair"`` (default) finite prices outside
``[0, price_cap]`` are clipped into it and ``infos[agent]["bid_repairs"]`` says so; with
``"raise"`` they raise ``ValueError``. An offer at ``price_cap`` ties with shedding load.

### Arguments
``env(scenario="dlmp", learners=("generator", "dr"), market_rounds=3, horizon=None,
policies=None, invalid_bids="repair", max_cycles=None, render_mode=None)``

* ``scenario``: bundled name, path to a TOML file, or a dict (see ``scenarios/dlmp.toml``:
  line limits, generators, DR providers, PV, the source LMP column).
* ``learners``: groups (``"generator"``, ``"dr"``) and/or participant names that are PettingZoo
  agents; everyone else acts through ``policies``.
* ``market_rounds``: market rounds per grid step. ``horizon``: grid steps per episode (default:
  the scenario's).
* ``policies``: ``{group or name: policy}`` for non-learning participants; default truthful
  offers (``ogg_envs.baselines.dlmp_bidders``).

### Observation
Sixteen float32 numbers in [-1, 1]. Time: ``sin`` and ``cos`` of the hour, episode progress,
round within the hour. Self: +1 generator / -1 DR, true marginal cost at zero and at full
capacity (/ price_cap), capacity this hour (/ its largest). What the DSO discloses: the source
LMP of this hour (/ price_cap) and, from the last clearing, the DLMP at the agent's bus and its
energy and congestion parts, the feeder's average and highest DLMP (all / price_cap), whether a
branch on the agent's path to the substation was congested (0/1); and the agent's own cleared
kW (/ its largest capacity). Before the first clearing of an episode those are 0. No agent sees
another's private data.

### Rewards, in dollars
``DLMP × quantity − true cost`` for the round's clearing: a generator's output ``q`` at true
cost ``a q + b q²/2``; a DR provider's reduction ``r`` at true discomfort ``a r + b r²/2``,
divided by ``market_rounds`` so an hour contributes one hour's profit whatever the number of
rounds. ``infos[agent]``: ``price`` (DLMP at its bus, ¢/kWh), ``energy_price``,
``congestion_price``, ``quantity`` (kW), ``profit`` ($ for the hour if this clearing is final),
``congested`` (branches on its path), ``feasible`` (False if the hour needed the load-shedding
fallback), ``bid`` (the block prices used); after a grid step ``converged``,
``voltage_violations`` (its bus), ``thermal_overloads`` (its path), ``substation_kw`` and
``losses_kw`` (AC power flow) next to ``dc_source_kw`` (the market's lossless estimate).

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

from ogg_envs.baselines.dlmp_bidders import TruthfulBidder, true_block_prices
from ogg_envs.core import MarketEnv, Participant, aec_from_parallel, select_learners
from ogg_envs.markets.dlmp import DR, GENERATOR, DLMPMarket, Resource
from ogg_envs.scenario import grid_from_scenario

OBS_SIZE = 16
GROUPS = ("generator", "dr")


def env(**kwargs):
    """The AEC environment (one turn per agent; the round runs after the last turn)."""
    return aec_from_parallel(raw_env(**kwargs))


def parallel_env(**kwargs):
    return raw_env(**kwargs)


class raw_env(MarketEnv):
    metadata = {"render_modes": ["human", "rgb_array"], "name": "dlmp_v0",
                "is_parallelizable": True}

    def __init__(self, scenario="dlmp", learners=GROUPS, market_rounds: int = 3,
                 horizon: int | None = None, policies: dict | None = None,
                 invalid_bids: str = "repair", max_cycles: int | None = None,
                 render_mode: str | None = None):
        super().__init__(scenario=scenario, market_rounds=market_rounds, horizon=horizon,
                         max_cycles=max_cycles, render_mode=render_mode,
                         invalid_bids=invalid_bids)
        sc = self.scenario
        self.price_cap = float(sc.get("price_cap", 30.0))
        self.n_blocks = int(sc.get("n_blocks", 3))
        self.hours = len(self.profiles["hour"])
        self._lmp = self._source_lmp()
        self._build_grid()
        self._build_participants()
        self.possible_agents = select_learners(self.participants, learners)
        self._learner_set = set(self.possible_agents)
        self._build_policies(policies or {})
        self._build_market()
        for agent in self.possible_agents:
            self._obs_spaces[agent] = gymnasium.spaces.Box(-1.0, 1.0, (OBS_SIZE,), np.float32)
            self._act_spaces[agent] = gymnasium.spaces.Box(0.0, self.price_cap,
                                                           (self.n_blocks,), np.float32)

    # ------------------------------------------------------------------ construction
    def _source_lmp(self) -> np.ndarray:
        src = self.scenario.get("source", {})
        if "lmp" in src:
            lmp = np.asarray(src["lmp"], dtype=float)
            if lmp.shape != (self.hours,):
                raise ValueError(f"source.lmp: expected {self.hours} hourly values, got "
                                 f"{lmp.shape}")
        else:
            col = src.get("lmp_column", "lmp_source")
            if col not in self.profiles:
                raise ValueError(f"source.lmp_column {col!r} is not a profile column "
                                 f"({', '.join(self.profiles)})")
            lmp = self.profiles[col].copy()
        lmp = lmp * float(src.get("lmp_scale", 1.0))
        if not (np.isfinite(lmp).all() and (lmp >= 0).all()):
            raise ValueError("the source LMP must be finite and >= 0 every hour")
        return lmp

    def _build_grid(self) -> None:
        self.grid = grid_from_scenario(self.scenario, "ieee37")
        self.topology = self.grid.topology

    def _build_participants(self) -> None:
        sc, grid, topo = self.scenario, self.grid, self.topology
        self.load_buses = [b for b in topo.buses if b in grid.loads_at_bus]
        self._nominal = np.zeros(len(topo.buses))  # nominal kW per bus (topology order)
        for bus in self.load_buses:
            self._nominal[topo.bus_index[bus]] = grid.base_load_kw[grid.loads_at_bus[bus]].sum()
        parts: list[Participant] = []
        common = {"n_blocks": self.n_blocks, "price_cap": self.price_cap}
        for group, key in (("generator", "generators"), ("dr", "demand_response")):
            sec = sc.get(key, {})
            buses = [str(b).lower() for b in sec.get("buses", [])]
            size = len(buses)
            a = _per_item(sec, "cost_a", size, key)
            b = _per_item(sec, "cost_b", size, key)
            for i, bus in enumerate(buses):
                if bus not in topo.bus_index:
                    raise ValueError(f"scenario {key}: unknown bus {bus!r}")
                pr = dict(common, side=group, cost_a0=float(a[i]), cost_a=float(a[i]),
                          cost_b=float(b[i]), cost_noise=float(sec.get("cost_noise", 0.0)))
                if group == "generator":
                    pr["capacity_kw"] = float(_per_item(sec, "capacity_kw", size, key)[i])
                    pr["cap_max"] = pr["cap_now"] = pr["capacity_kw"]
                    grid.add_generator(f"generator_{i}", bus, 0.0, kva=pr["capacity_kw"] * 1.2)
                else:
                    if bus not in grid.loads_at_bus:
                        raise ValueError(f"scenario demand_response: bus {bus} has no load")
                    pr["share"] = float(_per_item(sec, "share", size, key)[i])
                    peak = max(self.profiles["load_residential"].max(),
                               self.profiles["load_commercial"].max())
                    noise = float(sc.get("loads", {}).get("load_noise", 0.0))
                    nominal = self._nominal[topo.bus_index[bus]]
                    pr["cap_max"] = pr["share"] * nominal * peak * (1 + 3 * noise)
                    pr["cap_now"] = pr["share"] * nominal
                parts.append(Participant(f"{group}_{i}", group, bus, pr))
        if not parts:
            raise ValueError("the scenario has no generators and no demand-response providers")
        share = {}
        for p in parts:
            if p.group == "dr":
                share[p.bus] = share.get(p.bus, 0.0) + p.private["share"]
        for bus, s in share.items():
            if not 0.0 <= s <= 1.0:
                raise ValueError(f"demand response at bus {bus}: shares add up to {s}, "
                                 "outside [0, 1]")
        pv = sc.get("pv", {})
        self.pv_buses = [str(b).lower() for b in pv.get("buses", [])]
        for bus in self.pv_buses:
            if bus not in topo.bus_index:
                raise ValueError(f"scenario pv: unknown bus {bus!r}")
        self._pv_cap = _per_item(pv, "capacity_kw", len(self.pv_buses), "pv") \
            if self.pv_buses else np.zeros(0)
        self._pv_bus = np.array([topo.bus_index[b] for b in self.pv_buses], dtype=np.int64)
        for k, bus in enumerate(self.pv_buses):
            grid.add_generator(f"pv_{k}", bus, 0.0, kva=max(self._pv_cap[k], 1.0) * 1.2)
        self.participants = parts
        self.participant = {p.name: p for p in parts}
        self.names = [p.name for p in parts]
        self._idx = {n: i for i, n in enumerate(self.names)}
        self._is_gen = np.array([p.group == "generator" for p in parts])
        self._dr_mask = ~self._is_gen
        self._dr_bus = np.array([topo.bus_index[p.bus] for p in parts if p.group == "dr"],
                                dtype=np.int64)
        self._cap_max = np.array([p.private["cap_max"] for p in parts])
        self._path = {p.name: set(topo.path_to_root(p.bus)) for p in parts}
        # Maps from market quantities to OpenDSS elements.
        gen_idx = {g: i for i, g in enumerate(grid.generator_names)}
        self._gen_el = np.array([gen_idx[f"ogg_{p.name}"] for p in parts if p.group ==
                                 "generator"], dtype=np.int64)
        self._pv_el = np.array([gen_idx[f"ogg_pv_{k}"] for k in range(len(self.pv_buses))],
                               dtype=np.int64)
        self._load_map = np.zeros((len(grid.load_names), len(topo.buses)))
        for bus in self.load_buses:
            idx = grid.loads_at_bus[bus]
            base = grid.base_load_kw[idx]
            self._load_map[idx, topo.bus_index[bus]] = base / base.sum() if base.sum() > 0 \
                else 1.0 / len(idx)
        self._element_branch = {el: br.name for br in topo.branches for el in br.elements}

    def _build_policies(self, overrides: dict) -> None:
        for key in overrides:
            if key not in GROUPS and key not in self.participant:
                raise ValueError(f"policies: unknown group or participant {key!r}; groups "
                                 f"{GROUPS}, participants {self.names}")
        for p in self.participants:
            p.policy = overrides.get(p.name, overrides.get(p.group, TruthfulBidder()))
        self._scripted = [p for p in self.participants if p.name not in self._learner_set]

    def _build_market(self) -> None:
        sc = self.scenario
        resources = [Resource(p.name, p.bus, GENERATOR if p.group == "generator" else DR)
                     for p in self.participants]
        self.market = DLMPMarket(self.topology, resources, n_blocks=self.n_blocks,
                                 price_cap=self.price_cap,
                                 curtail_price=float(sc.get("curtail_price", 1.0)),
                                 load_buses=self.load_buses, pv_buses=self.pv_buses)
        limits = sc.get("grid", {}).get("limits_kw", {})
        for name in limits:
            if name not in self.topology.branch_index:
                raise ValueError(f"scenario limits_kw: unknown branch {name!r}; branches: "
                                 f"{', '.join(self.topology.branch_index)}")
        self.market.set_limits({k: float(v) for k, v in limits.items()})

    # ------------------------------------------------------------------ episode
    def _start_episode(self, rng: np.random.Generator, options: dict) -> None:
        loads = self.scenario.get("loads", {})
        topo = self.topology
        n_load = len(self.load_buses)
        residential = rng.random(n_load) < float(loads.get("residential_share", 0.6))
        noise = float(loads.get("load_noise", 0.0))
        self._load_factor = np.zeros((self.hours, len(topo.buses)))
        for j, bus in enumerate(self.load_buses):
            col = "load_residential" if residential[j] else "load_commercial"
            factor = self.profiles[col] * (1 + noise * rng.standard_normal(self.hours))
            self._load_factor[:, topo.bus_index[bus]] = np.maximum(factor, 0.0)
        for p in self.participants:
            pr = p.private
            pr["cost_a"] = max(pr["cost_a0"] * (1 + pr["cost_noise"] * rng.standard_normal()),
                               0.0)
        self._cost_a = np.array([p.private["cost_a"] for p in self.participants])
        self._cost_b = np.array([p.private["cost_b"] for p in self.participants])
        self.grid.reset()
        self._rng = rng
        self.last_clearing = None
        self._prev = np.zeros((len(self.names), 4))  # price, energy, congestion, quantity
        self._prev_avg = self._prev_max = 0.0
        self._prev_congested: set[str] = set()
        self._obs_cache = None
        self._start_hour()

    def _start_hour(self) -> None:
        h = self.t % self.hours
        self.demand_kw = self._nominal * self._load_factor[h]
        self._pv_out = self._pv_cap * max(float(self.profiles["pv"][h]), 0.0) \
            if len(self._pv_cap) else self._pv_cap
        self.pv_kw = np.bincount(self._pv_bus, self._pv_out, minlength=len(self.topology.buses))
        self.lmp_now = float(self._lmp[h])
        caps = np.empty(len(self.participants))
        for k, p in enumerate(self.participants):
            pr = p.private
            if p.group == "dr":
                pr["cap_now"] = pr["share"] * self.demand_kw[self.topology.bus_index[p.bus]]
            caps[k] = pr["cap_now"]
        self.capacity_kw = caps
        self._scripted_cache: dict[str, np.ndarray] = {}
        self._obs_cache = None

    # ------------------------------------------------------------------ actions
    def _decode(self, agent: str, action) -> np.ndarray:
        a = np.asarray(action, dtype=float)
        if a.shape != (self.n_blocks,):
            raise ValueError(f"{agent}: action must have shape ({self.n_blocks},) (block "
                             f"prices, ¢/kWh), got shape {a.shape}")
        if not np.isfinite(a).all():
            raise ValueError(f"{agent}: action has non-finite numbers {a.tolist()}")
        return a

    def _scripted_bids(self) -> dict[str, np.ndarray]:
        out = {}
        for p in self._scripted:
            if p.name in self._scripted_cache:
                out[p.name] = self._scripted_cache[p.name]
                continue
            obs = self._observe(p.name)
            bid = np.asarray(p.policy(p, obs, self._rng), dtype=float)
            if bid.shape != (self.n_blocks,) or not np.isfinite(bid).all():
                raise ValueError(f"policy of {p.name} returned an invalid offer {bid!r}")
            if not getattr(p.policy, "adaptive", True):
                self._scripted_cache[p.name] = bid
            out[p.name] = bid
        return out

    # ------------------------------------------------------------------ market step
    def _market_step(self, bids):
        offers = np.array([bids[name] for name in self.names], dtype=float)
        cap = self.price_cap
        repairs = {}
        ok = (offers >= 0) & (offers <= cap)
        if not ok.all():
            for k in np.flatnonzero(~ok.all(axis=1)):
                name = self.names[k]
                if self.invalid_bids == "raise":
                    raise ValueError(f"{name}: offer prices must be in [0, {cap}] ¢/kWh, got "
                                     f"{offers[k].tolist()}")
                repairs[name] = [f"prices clipped into [0, {cap}] ¢/kWh"]
            offers = np.clip(offers, 0.0, cap)
        res = self.market.clear(offers, demand_kw=self.demand_kw, capacity_kw=self.capacity_kw,
                                lmp=self.lmp_now, pv_kw=self.pv_kw)
        self.last_clearing = res
        self._last_when = (self.t, self.round, self.lmp_now)
        price = res.resource_prices
        qty = res.quantities
        profit = (price * qty - (self._cost_a + 0.5 * self._cost_b * qty) * qty) / 100.0  # $
        congestion = res.congestion[self.market._res_bus]
        self._prev = np.column_stack([price, np.full(len(qty), res.energy), congestion, qty])
        self._prev_avg = float(res.dlmp.mean())
        self._prev_max = float(res.dlmp.max())
        self._prev_congested = set(res.congested)
        self._obs_cache = None
        price_l, qty_l, profit_l = price.tolist(), qty.tolist(), profit.tolist()
        cong_l = congestion.tolist()
        rewards, infos = {}, {}
        for agent in self.agents:
            k = self._idx[agent]
            rewards[agent] = profit_l[k] / self.market_rounds
            infos[agent] = {
                "price": price_l[k], "energy_price": res.energy, "congestion_price": cong_l[k],
                "quantity": qty_l[k], "profit": profit_l[k],
                "congested": sorted(self._path[agent] & self._prev_congested)
                if self._prev_congested else [],
                "feasible": res.feasible, "bid": offers[k].copy(),
            }
            if agent in repairs:
                infos[agent]["bid_repairs"] = repairs[agent]
        return rewards, infos

    def true_profits(self, prices: np.ndarray, quantities: np.ndarray) -> np.ndarray:
        """True profits (¢ per hour) of every participant at the given prices and quantities."""
        q = np.asarray(quantities, dtype=float)
        return prices * q - (self._cost_a + 0.5 * self._cost_b * q) * q

    # ------------------------------------------------------------------ grid step
    def _grid_step(self):
        res = self.last_clearing
        grid = self.grid
        qty = res.quantities
        B = len(self.topology.buses)
        served = self.demand_kw - res.shed_kw - np.bincount(
            self._dr_bus, qty[self._dr_mask], minlength=B)
        grid.set_loads_kw(self._load_map @ np.maximum(served, 0.0))
        gen_kw = np.zeros(len(grid.generator_names))
        gen_kw[self._gen_el] = qty[self._is_gen]
        if len(self._pv_el):  # curtailment shared pro rata by the arrays at a bus
            pv_bus = self.pv_kw[self._pv_bus]
            taken = np.divide(pv_bus - res.curtailed_kw[self._pv_bus], pv_bus,
                              out=np.zeros(len(pv_bus)), where=pv_bus > 0)
            gen_kw[self._pv_el] = self._pv_out * np.clip(taken, 0.0, 1.0)
        grid.set_generators_kw(gen_kw)
        pf = grid.solve()
        self.last_power_flow = pf
        bus_viol = pf.bus_voltage_violations() if pf.voltage_violations else {}
        overloads = {self._element_branch.get(el, el) for el in pf.thermal_overloads}
        infos = {}
        for agent in self.agents:
            p = self.participant[agent]
            infos[agent] = {
                "converged": pf.converged,
                "voltage_violations": {p.bus: bus_viol[p.bus]} if p.bus in bus_viol else {},
                "thermal_overloads": sorted(self._path[agent] & overloads) if overloads else [],
                "substation_kw": pf.substation_kw,
                "losses_kw": pf.losses_kw,
                "dc_source_kw": res.source_kw,
            }
        return infos

    def _next_grid_step(self) -> None:
        self._start_hour()

    # ------------------------------------------------------------------ observation
    def _observe(self, agent: str) -> np.ndarray:
        if self._obs_cache is None or self._obs_key != (self.t, self.round):
            self._obs_cache = self._observe_all()
            self._obs_key = (self.t, self.round)
        return self._obs_cache[self._idx[agent]].copy()

    def _observe_all(self) -> np.ndarray:
        """Every participant's observation (rows in participant order); see the docstring."""
        n = len(self.names)
        cap = self.price_cap
        h = self.t % self.hours
        obs = np.empty((n, OBS_SIZE))
        obs[:, 0] = math.sin(2 * math.pi * h / 24)
        obs[:, 1] = math.cos(2 * math.pi * h / 24)
        obs[:, 2] = min(self.t / self.horizon, 1.0)
        obs[:, 3] = self.round / self.market_rounds
        obs[:, 4] = np.where(self._is_gen, 1.0, -1.0)
        obs[:, 5] = self._cost_a / cap
        obs[:, 6] = (self._cost_a + self._cost_b * self.capacity_kw) / cap
        obs[:, 7] = self.capacity_kw / self._cap_max
        obs[:, 8] = self.lmp_now / cap
        obs[:, 9:12] = self._prev[:, :3] / cap
        obs[:, 12] = self._prev_avg / cap
        obs[:, 13] = self._prev_max / cap
        if self._prev_congested:
            obs[:, 14] = [1.0 if self._path[nm] & self._prev_congested else 0.0
                          for nm in self.names]
        else:
            obs[:, 14] = 0.0
        obs[:, 15] = self._prev[:, 3] / self._cap_max
        return np.clip(obs, -1.0, 1.0).astype(np.float32)

    def _reset_info(self, agent: str) -> dict:
        p = self.participant[agent]
        return {"bus": p.bus, "group": p.group, "capacity_kw": p.private["cap_now"],
                "source_lmp": self.lmp_now}

    # ------------------------------------------------------------------ rendering
    def render(self):
        if self.render_mode is None or self.last_clearing is None:
            return None
        res = self.last_clearing
        hour, rnd, lmp = self._last_when
        if self.render_mode == "human":
            levels = sorted({round(v, 2) for v in res.dlmp.tolist()})
            print(f"hour {hour} round {rnd}: source LMP {lmp:.2f}, DLMPs {levels} ¢/kWh, "
                  f"congested {res.congested or 'none'}")
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 5))
        self.grid.draw(res.prices(), ax=ax, label="DLMP (¢/kWh)",
                       title=f"hour {hour} round {rnd}: source LMP {lmp:.2f} ¢/kWh",
                       highlight_branches=res.congested)
        fig.canvas.draw()
        img = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
        plt.close(fig)
        return img

    # ------------------------------------------------------------------ analysis helpers
    def truthful_offers(self) -> np.ndarray:
        """Everyone's true cost curves as offers for the current hour."""
        return np.array([true_block_prices(p.private) for p in self.participants])


def _per_item(section: dict, key: str, size: int, where: str) -> np.ndarray:
    """A scenario value given once or per item, as an array of ``size``."""
    if key not in section:
        raise ValueError(f"scenario [{where}] needs {key!r}")
    arr = np.asarray(section[key], dtype=float)
    if arr.ndim == 0:
        return np.full(size, float(arr))
    if arr.shape != (size,):
        raise ValueError(f"scenario [{where}] {key}: expected one value or {size}, got "
                         f"{arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"scenario [{where}] {key}: values must be finite")
    return arr
