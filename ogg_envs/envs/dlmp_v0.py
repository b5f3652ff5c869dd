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
``[0, price_cap]`` are clipped into it (the market's ``repair``) and
``infos[agent]["bid_repairs"]`` says so; with ``"raise"`` they raise ``InvalidBidError`` (a
``ValueError``) naming the agent, before anything changes; the core applies either
(``ogg_envs.core``, "Invalid bids"). An offer at ``price_cap`` ties with shedding load; the
market runs the offer first (its tie rule: ``ogg_envs.markets.dlmp``, "Solving").

### Arguments
``env(scenario="dlmp", feeder=None, learners=("generator", "dr"), market_rounds=3,
horizon=None, policies=None, invalid_bids="repair", max_cycles=None, render_mode=None,
formulation="dc", **ac_options)``

* ``**ac_options``: the core's market-physics options (``ogg_envs.core``): ``ac_feedback``,
  ``ac_tol``, ``ac_max_iterations``, ``observe_ac``, ``ac_cost_weight``, ``loss_pricing`` (all off
  by default).
* ``scenario``: bundled name, path to a TOML file, or a dict (see ``scenarios/dlmp.toml`` and
  ``DLMPScenario`` below: line limits, generators, DR providers, PV, the source LMP column).
* ``feeder``: a bundled feeder name or the path to a master ``.dss``. A feeder other than the
  scenario's places the participants by the default rule (``ogg_envs.grid.placement``):
  generators spread along the main path, DR providers at the largest load buses, PV spread over
  the load buses; lines are limited at their thermal ratings.
* ``learners``: groups (``"generator"``, ``"dr"``) and/or participant names that are PettingZoo
  agents; everyone else acts through ``policies``.
* ``market_rounds``: market rounds per grid step. ``horizon``: grid steps per episode (default:
  the scenario's).
* ``policies``: ``{group or name: policy}`` for non-learning participants; default truthful
  offers (``ogg_envs.policies.blocks``); a policy is ``policy(participant, observation, info)``.
* ``formulation``: the DSO's OPF. ``"dc"`` (default, the paper's): the DC OPF of
  ``ogg_envs.markets.dlmp``. ``"lindistflow"``: the voltage-aware LinDistFlow OPF of
  ``ogg_envs.markets.lindistflow`` (reactive power at the loads' power factors, the scenario's
  ``[grid] voltage_band`` at every load bus, per-unit impedances from the feeder,
  ``ogg_envs.grid.impedance``); its DLMPs add a voltage component
  (``infos[agent]["voltage_price"]``) and a DR provider is paid the price of a kW of its
  bus's load. Its regulators are held at the taps OpenDSS gives them for each hour's demand
  and PV before the market dispatches (one extra power flow per hour).

### Observation
Sixteen float32 numbers in [-1, 1]. Time: ``sin`` and ``cos`` of the hour, episode progress,
round within the hour. Self: +1 generator / -1 DR, true marginal cost at zero and at full
capacity (/ price_cap), capacity this hour (/ its largest). What the DSO discloses: the source
LMP of this hour (/ price_cap) and, from the last clearing, the DLMP at the agent's bus and its
energy and congestion parts, the feeder's average and highest DLMP (all / price_cap), whether a
branch on the agent's path to the substation was congested (0/1); and the agent's own cleared
kW (/ its largest capacity). Before the first clearing of an episode those are 0. No agent sees
another's private data. With ``observe_ac=True`` (an option of every environment,
``ogg_envs.core``) two more entries (18): the AC outcome of the last grid step, its bus's
line-to-line voltage and the loading of the most loaded market-limited branch on its path.

### Rewards, in dollars
``DLMP × quantity − true cost`` for the round's clearing: a generator's output ``q`` at true
cost ``a q + b q²/2``; a DR provider's reduction ``r`` at true discomfort ``a r + b r²/2``,
divided by ``market_rounds`` so an hour contributes one hour's profit whatever the number of
rounds. ``infos[agent]``: ``price`` (DLMP at its bus, ¢/kWh), ``energy_price``,
``congestion_price``, ``quantity`` (kW), ``profit`` ($ for the hour if this clearing is final),
``congested`` (branches on its path), ``feasible`` (False if the hour needed the load-shedding
fallback), ``bid`` (the block prices used); after a grid step (OpenDSS's AC power flow,
``ogg_envs.core`` documents each) ``converged``, ``voltage_violations`` (its bus),
``thermal_overloads`` (branches on its path over the market's limit x (1 + ``ac_tol``), or
over OpenDSS's rating where the market sets none), ``path_loading``, ``substation_kw`` and
``losses_kw`` next to ``dc_source_kw`` (the market's lossless estimate), ``unscheduled_kw``
(the substation's supply beyond the cleared quantities), ``ac_iterations`` and ``cost`` (a
constrained-RL cost: relative limit excess on its path + voltage excess at its bus).
``env.unwrapped.last_grid_report`` has every market-limited branch's AC flow against its
limit. ``ac_feedback=True`` runs the market's OPF (DC or LinDistFlow) again with limits
corrected by the AC flow offsets until the AC flows respect them (DLMPs and rewards are then the
corrected clearing's); ``loss_pricing=True`` runs it again with the AC solution's marginal loss
factors, so every DLMP gains a loss component (``last_clearing.price_components``: energy +
loss + congestion (+ voltage)) and the cleared supply covers the losses; ``ac_cost_weight``
subtracts the cost from rewards. All are off by default.

### Termination and truncation
No agent terminates early. All agents are truncated together after ``horizon`` grid steps or
``max_cycles`` market rounds.

### Version history
* v0: initial release (OpenGridGym 0.1); ``feeder=`` and typed scenarios (0.2).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gymnasium
import numpy as np

from ogg_envs import economics
from ogg_envs.api import SUPPLY, Limits, MarketContext, Participant, Truth
from ogg_envs.core import MarketEnv, aec_from_parallel, real_action
from ogg_envs.grid.impedance import feeder_impedances, regulator_ratios
from ogg_envs.markets.dlmp import DR, GENERATOR, DLMPMarket, Resource
from ogg_envs.markets.lindistflow import LinDistFlowMarket
from ogg_envs.policies.blocks import TruthfulBidder, true_block_prices
from ogg_envs.scenario import (
    MAX_KW,
    MAX_PRICE,
    Scenario,
    ScenarioError,
    check_price,
    per_item,
    profile_column,
)

OBS_SIZE = 16
GROUPS = ("generator", "dr")
FORMULATIONS = ("dc", "lindistflow")


# ---------------------------------------------------------------------- scenario
@dataclass
class SourceSection:
    """The transmission system at the substation: the hourly source LMP (¢/kWh)."""

    lmp: list | None = None  # 24 hourly values, or None: the profile column below
    lmp_column: str = "lmp_source"
    lmp_scale: float = 1.0


@dataclass
class LoadsSection:
    residential_share: float = 0.6  # share of load buses on the residential profile
    load_noise: float = 0.0  # relative noise on each bus's hourly load, drawn per episode

    def __post_init__(self):
        if not 0.0 <= self.residential_share <= 1.0 or not 0 <= self.load_noise <= 1:
            raise ScenarioError("[loads] residential_share and load_noise (a relative sd) must "
                                f"be in [0, 1], got {self.residential_share}, {self.load_noise}")


@dataclass
class GeneratorsSection:
    """Distributed generators: true marginal cost ``cost_a + cost_b q``."""

    buses: list | None = None  # default: spread along the main path, one per cost_a entry
    capacity_kw: Any = field(default_factory=lambda: [250.0, 200.0, 300.0, 300.0])
    cost_a: Any = field(default_factory=lambda: [5.8, 4.6, 4.4, 4.8])  # ¢/kWh at zero output
    cost_b: Any = field(default_factory=lambda: [0.008, 0.01, 0.006, 0.006])  # ¢/kWh per kW
    cost_noise: float = 0.0  # relative noise on cost_a, drawn per episode


@dataclass
class DemandResponseSection:
    """DR providers: true marginal discomfort ``cost_a + cost_b r`` of reducing ``r`` kW."""

    buses: list | None = None  # default: the load buses with the largest load
    share: Any = field(default_factory=lambda: [0.2, 0.3, 0.4, 0.3])  # of the bus's demand
    cost_a: Any = field(default_factory=lambda: [7.0, 6.5, 6.0, 6.8])
    cost_b: Any = field(default_factory=lambda: [0.01, 0.03, 0.05, 0.04])
    cost_noise: float = 0.0


@dataclass
class PVSection:
    """Must-take rooftop PV: capacity x the ``pv`` profile."""

    buses: list | None = None  # default: spread over the load buses, one per capacity entry
    capacity_kw: Any = field(default_factory=lambda: [100.0, 80.0, 80.0, 60.0])


@dataclass
class ReproduceSection:
    """The hours ``opengridgym reproduce dlmp`` draws (Fig. 10), with truthful offers."""

    seed: int = 0
    uncongested_hour: int = 3
    congested_hour: int = 12


@dataclass
class DLMPScenario(Scenario):
    feeder: str = "ieee37"
    price_cap: float = 30.0  # highest offer price; price of shed load (value of lost load)
    curtail_price: float = 1.0  # penalty per kW of must-take PV curtailed
    n_blocks: int = 3  # blocks per offer (piecewise-linear cost curves)
    source: SourceSection = field(default_factory=SourceSection)
    loads: LoadsSection = field(default_factory=LoadsSection)
    generators: GeneratorsSection = field(default_factory=GeneratorsSection)
    demand_response: DemandResponseSection = field(default_factory=DemandResponseSection)
    pv: PVSection = field(default_factory=PVSection)
    reproduce: ReproduceSection = field(default_factory=ReproduceSection)

    def __post_init__(self):
        super().__post_init__()
        if not 1 <= self.n_blocks <= 100:
            raise ScenarioError(f"n_blocks must be in [1, 100], got {self.n_blocks}")
        check_price(self.price_cap, "price_cap", low=1e-9)
        check_price(self.curtail_price, "curtail_price", low=1e-9)


# ---------------------------------------------------------------------- environment
def env(**kwargs):
    """The AEC environment (one turn per agent; the round runs after the last turn)."""
    return aec_from_parallel(raw_env(**kwargs))


def parallel_env(**kwargs):
    return raw_env(**kwargs)


class raw_env(MarketEnv):
    metadata = {"render_modes": ["human", "rgb_array"], "name": "dlmp_v0",
                "is_parallelizable": True}
    Scenario = DLMPScenario
    default_scenario = "dlmp"
    default_policies = {"generator": TruthfulBidder, "dr": TruthfulBidder}

    def __init__(self, scenario="dlmp", learners=GROUPS, market_rounds: int = 3,
                 horizon: int | None = None, policies: dict | None = None,
                 invalid_bids: str = "repair", max_cycles: int | None = None,
                 render_mode: str | None = None, feeder: str | None = None,
                 formulation: str = "dc", **ac_options):
        if formulation not in FORMULATIONS:
            raise ValueError(f"formulation must be one of {FORMULATIONS}, got {formulation!r}")
        self.formulation = formulation
        super().__init__(**ac_options, scenario=scenario, feeder=feeder, learners=learners,
                         policies=policies, market_rounds=market_rounds, horizon=horizon,
                         max_cycles=max_cycles, render_mode=render_mode,
                         invalid_bids=invalid_bids)

    @property
    def rules(self) -> dict:
        return dict(super().rules, n_blocks=self.n_blocks)

    # ------------------------------------------------------------------ construction
    def make_participants(self) -> list[Participant]:
        sc, grid, topo = self.scenario, self.grid, self.topology
        self.price_cap, self.n_blocks = sc.price_cap, sc.n_blocks
        self.lmp = self._source_lmp()
        self.load_buses = [b for b in topo.buses if b in grid.loads_at_bus]
        self._load_bus = np.array([topo.bus_index[b] for b in self.load_buses], dtype=np.int64)
        self.nominal_kw = grid.bus_load_kw  # per bus, topology order
        peak = max(self.profiles["load_residential"].max(),
                   self.profiles["load_commercial"].max())
        parts: list[Participant] = []
        cost_a0, cost_noise = [], []
        for sec, key in ((sc.generators, "generators"), (sc.demand_response, "demand_response")):
            if not 0 <= sec.cost_noise <= 1:
                raise ScenarioError(f"[{key}] cost_noise (a relative sd) must be in [0, 1], got "
                                    f"{sec.cost_noise}")
        for group, sec, rule, key in ((GENERATOR, sc.generators, "main_path", "generators"),
                                      (DR, sc.demand_response, "largest_load",
                                       "demand_response")):
            count = _count(sec, self.default_placement)
            buses = self.place(sec.buses, count, rule, f"[{key}]")
            per = f"entry of [{key}] buses" if sec.buses is not None else "participant"
            a = per_item(sec.cost_a, count, f"[{key}] cost_a", low=0.0, high=MAX_PRICE, per=per)
            b = per_item(sec.cost_b, count, f"[{key}] cost_b", low=0.0, high=MAX_PRICE, per=per)
            size = per_item(sec.capacity_kw if group == GENERATOR else sec.share, count,
                            f"[{key}] {'capacity_kw' if group == GENERATOR else 'share'}",
                            low=0.0, high=MAX_KW if group == GENERATOR else 1.0, per=per)
            for i, bus in enumerate(buses):
                p = Participant(f"{group}_{i}", group, bus, SUPPLY,
                                truth=Truth(cost_a=a[i], cost_b=b[i]))
                if group == GENERATOR:
                    p.limits = Limits(size[i], size[i])
                    self.add_generator(p, kva=size[i] * 1.2)
                else:
                    if bus not in grid.loads_at_bus:
                        raise ScenarioError(f"[demand_response]: bus {bus} has no load")
                    nominal = self.nominal_kw[topo.bus_index[bus]]
                    p.state["share"] = float(size[i])
                    p.limits = Limits(size[i] * nominal,
                                      size[i] * nominal * peak * (1 + 3 * sc.loads.load_noise))
                parts.append(p)
                cost_a0.append(a[i])
                cost_noise.append(sec.cost_noise)
        if not parts:
            raise ScenarioError("the scenario has no generators and no demand-response providers")
        share: dict[str, float] = {}
        for p in parts:
            if p.group == DR:
                share[p.bus] = share.get(p.bus, 0.0) + p.state["share"]
        for bus, s in share.items():
            if not 0.0 <= s <= 1.0:
                raise ScenarioError(f"demand response at bus {bus}: shares add up to {s}, "
                                    "outside [0, 1]")
        self.cost_a0, self.cost_noise = np.array(cost_a0), np.array(cost_noise)
        pv = sc.pv
        n_pv = _count(pv, self.default_placement, keys=("capacity_kw",))
        self.pv_buses = self.place(pv.buses, n_pv, "load", "[pv]")
        self.pv_capacity_kw = per_item(pv.capacity_kw, n_pv, "[pv] capacity_kw", low=0.0,
                                       high=MAX_KW, per="entry of [pv] buses")
        self._pv_bus = np.array([topo.bus_index[b] for b in self.pv_buses], dtype=np.int64)
        for k, bus in enumerate(self.pv_buses):
            grid.add_generator(f"pv_{k}", bus, 0.0, kva=max(self.pv_capacity_kw[k], 1.0) * 1.2)
        self.is_generator = np.array([p.group == GENERATOR for p in parts])
        self._kind_sign = np.where(self.is_generator, 1.0, -1.0)  # observation entry 4
        self._generator_names = [p.name for p in parts if p.group == GENERATOR]
        self._pv_names = [f"pv_{k}" for k in range(n_pv)]
        self._bus = np.array([topo.bus_index[p.bus] for p in parts], dtype=np.int64)
        self._q_max = np.array([p.limits.q_max for p in parts])
        return parts

    def _source_lmp(self) -> np.ndarray:
        src = self.scenario.source
        if src.lmp is not None:
            lmp = np.asarray(src.lmp, dtype=float)
            if lmp.shape != (self.n_hours,):
                raise ScenarioError(f"[source] lmp: expected {self.n_hours} hourly values, got "
                                    f"{lmp.size}")
        else:
            lmp = profile_column(self.profiles, src.lmp_column, "[source] lmp_column").copy()
        lmp = lmp * src.lmp_scale
        if not (np.isfinite(lmp).all() and (lmp >= 0).all()):
            raise ScenarioError("[source] lmp (or the lmp_column) x lmp_scale must be finite "
                                "and >= 0 every hour")
        return lmp

    def make_market(self) -> DLMPMarket | LinDistFlowMarket:
        resources = [Resource(p.name, p.bus, p.group) for p in self.participants]
        kwargs = dict(n_blocks=self.n_blocks, price_cap=self.price_cap,
                      curtail_price=self.scenario.curtail_price, load_buses=self.load_buses,
                      pv_buses=self.pv_buses)
        if self.formulation == "lindistflow":
            market = LinDistFlowMarket(self.topology, resources,
                                       **feeder_impedances(self.grid).market_args(),
                                       voltage_band=self.scenario.grid.voltage_band,
                                       band_buses=self.load_buses, **kwargs)
        else:
            market = DLMPMarket(self.topology, resources, **kwargs)
        market.set_limits(self.line_limits())
        return market

    def action_space_of(self, p: Participant) -> gymnasium.Space:
        return gymnasium.spaces.Box(0.0, self.price_cap, (self.n_blocks,), np.float32)

    def observation_space_of(self, p: Participant) -> gymnasium.Space:
        return gymnasium.spaces.Box(-1.0, 1.0, (OBS_SIZE,), np.float32)

    # ------------------------------------------------------------------ episode
    def start_episode(self, rng: np.random.Generator, options: dict) -> None:
        loads = self.scenario.loads
        residential = rng.random(len(self.load_buses)) < loads.residential_share
        draws = self.draw_hourly([self.consumer_profile(j, residential[j])
                                  for j in range(len(self.load_buses))], loads.load_noise, rng)
        # public: the episode's hourly load factors, (episode rows, buses in topology order)
        self.load_factor = np.zeros((len(draws), len(self.topology.buses)))
        self.load_factor[:, self._load_bus] = np.maximum(draws, 0.0)
        for k, p in enumerate(self.participants):
            shock = 1 + self.cost_noise[k] * rng.standard_normal()
            p.truth.cost_a = max(self.cost_a0[k] * shock, 0.0)
        self._cost_a = np.array([p.truth.cost_a for p in self.participants])
        self._cost_b = np.array([p.truth.cost_b for p in self.participants])

    def start_hour(self) -> None:
        h = self.hour_of(self.t)
        self.demand_kw = self.nominal_kw * self.load_factor[self.row_of(self.t)]
        self.pv_out_kw = self.pv_capacity_kw * max(float(self.profiles["pv"][h]), 0.0)
        self.pv_kw = np.bincount(self._pv_bus, self.pv_out_kw,
                                 minlength=len(self.topology.buses))
        self.lmp_now = float(self.lmp[h])
        for k, p in enumerate(self.participants):
            if p.group == DR:
                p.limits.q_now = p.state["share"] * self.demand_kw[self._bus[k]]
        self.capacity_kw = np.array([p.limits.q_now for p in self.participants])
        self._obs = self._obs_hour = None
        if self.formulation == "lindistflow":
            self._hold_regulators()

    def _hold_regulators(self) -> None:
        """The LinDistFlow market's voltage ratios: the regulator taps OpenDSS chooses for
        this hour's demand and PV with no market dispatch (kept if that does not converge)."""
        generation = dict.fromkeys(self.grid.added_generators, 0.0)
        generation.update(zip(self._pv_names, self.pv_out_kw.tolist()))
        self.grid.apply(self.demand_kw, generation)
        if self.grid.run_power_flow():
            self.market.set_ratios(regulator_ratios(self.grid))

    def context(self) -> MarketContext:
        """What the DSO knows about this hour besides the offers."""
        return MarketContext(hour=self.hour_of(self.t), demand_kw=self.demand_kw,
                             capacity_kw=self.capacity_kw, source_price=self.lmp_now,
                             pv_kw=self.pv_kw)

    # ------------------------------------------------------------------ actions
    def decode(self, agent: str, action) -> np.ndarray:
        return real_action(agent, action, (self.n_blocks,), "block prices, ¢/kWh")

    # ------------------------------------------------------------------ market round
    def market_step(self, bids):
        offers, repairs = self.checked_bids(np.array([bids[name] for name in self.names],
                                                     dtype=float))
        res = self.market.clear(offers, self.context())
        self.set_clearing(res)
        self._last_when = (self.t, self.round, self.lmp_now)
        self._obs = None
        profit = self.true_profits(res.participant_prices, res.participant_quantities) / 100.0
        infos = self.clearing_infos(res, profit, offers, repairs)
        congestion = res.congestion[self._bus].tolist()
        voltage = res.voltage[self._bus].tolist() if self.formulation == "lindistflow" \
            else None
        index = self.index
        for agent, info in infos.items():
            info["energy_price"] = res.energy
            info["congestion_price"] = congestion[index[agent]]
            if voltage is not None:
                info["voltage_price"] = voltage[index[agent]]
        return self.per_round(profit), infos

    def true_profits(self, prices: np.ndarray, quantities: np.ndarray) -> np.ndarray:
        """True profits (¢ per hour) of every participant at the given prices and quantities."""
        q = np.asarray(quantities, dtype=float)
        return prices * q - economics.cost(q, self._cost_a, self._cost_b)

    # ------------------------------------------------------------------ grid step
    def dispatch(self, clearing):
        """Generators' kW, PV after curtailment (pro rata at a bus), and each bus's demand
        less its shed load and DR reductions."""
        q = clearing.participant_quantities
        B = len(self.topology.buses)
        dr = ~self.is_generator
        served = self.demand_kw - clearing.shed_kw - np.bincount(self._bus[dr], q[dr],
                                                                 minlength=B)
        generation = dict(zip(self._generator_names, q[self.is_generator].tolist()))
        pv_bus = self.pv_kw[self._pv_bus]
        taken = np.divide(pv_bus - clearing.curtailed_kw[self._pv_bus], pv_bus,
                          out=np.zeros(len(pv_bus)), where=pv_bus > 0)
        generation.update(zip(self._pv_names,
                              (self.pv_out_kw * np.clip(taken, 0.0, 1.0)).tolist()))
        return np.maximum(served, 0.0), generation

    def grid_step_infos(self, pf) -> dict[str, dict]:
        source = self.last_clearing.source_kw
        return {a: {"dc_source_kw": source} for a in self.agents}

    # ------------------------------------------------------------------ observation
    def observe(self, name: str) -> np.ndarray:
        return self.observe_all()[self.index[name]].copy()

    def observe_all(self) -> np.ndarray:
        if self._obs is None:
            self._obs = self._observe_all()
        return self._obs

    _obs_hour = None  # (what _hour_columns' array was made of: key, costs; the array)

    def _hour_columns(self) -> np.ndarray:
        """The observation entries that stay fixed for the hour (all but the round's, 3, and
        the clearing's, 9 to 15), unclipped, as rows in participant order: made again only
        when the grid step ``t`` (after the episode's last one too, where the hour features
        move on), the source LMP, the price cap or the capacities (by value) or the cost
        arrays (by identity: an episode draws new ones) change."""
        key = (self.t, self.lmp_now, self.price_cap, self.capacity_kw.tobytes())
        costs = (self._cost_a, self._cost_b)
        kept = self._obs_hour
        if kept is not None and kept[0] == key and kept[1][0] is costs[0] and \
                kept[1][1] is costs[1]:
            return kept[2]
        cap = self.price_cap
        obs = np.empty((len(self.names), OBS_SIZE))
        obs[:, 0:4] = self.hour_features()
        obs[:, 4] = self._kind_sign
        obs[:, 5] = self._cost_a / cap
        obs[:, 6] = (self._cost_a + self._cost_b * self.capacity_kw) / cap
        obs[:, 7] = self.capacity_kw / self._q_max
        obs[:, 8] = self.lmp_now / cap
        self._obs_hour = (key, costs, obs)
        return obs

    def _observe_all(self) -> np.ndarray:
        """Every participant's observation (rows in participant order); see the docstring."""
        cap = self.price_cap
        obs = self._hour_columns().copy()
        obs[:, 3] = self.round / self.market_rounds  # (hour_features' round entry)
        res = self.last_clearing
        if res is None:
            obs[:, 9:16] = 0.0
        else:
            obs[:, 9] = res.participant_prices / cap
            obs[:, 10] = res.energy / cap
            obs[:, 11] = res.congestion[self._bus] / cap
            dlmp = res.dlmp
            obs[:, 12] = float(np.add.reduce(dlmp)) / len(dlmp) / cap  # dlmp.mean()'s number
            obs[:, 13] = float(np.maximum.reduce(dlmp)) / cap
            obs[:, 14] = [self.congested_on_path(n) for n in self.names] if res.congested \
                else 0.0
            obs[:, 15] = res.participant_quantities / self._q_max
        np.maximum(obs, -1.0, out=obs)  # np.clip's numbers, without its layer
        return np.minimum(obs, 1.0, out=obs).astype(np.float32)

    def reset_info(self, name: str) -> dict:
        p = self.participant[name]
        return {"bus": p.bus, "group": p.group, "capacity_kw": p.limits.q_now,
                "source_lmp": self.lmp_now}

    # ------------------------------------------------------------------ rendering
    def render_text(self) -> str:
        res = self.last_clearing
        hour, rnd, lmp = self._last_when
        levels = sorted({round(v, 2) for v in res.dlmp.tolist()})
        return (f"hour {hour} round {rnd}: source LMP {lmp:.2f}, DLMPs {levels} ¢/kWh, "
                f"congested {res.congested or 'none'}")

    def render_map(self, ax) -> None:
        res = self.last_clearing
        hour, rnd, lmp = self._last_when
        self.grid.draw(res.prices(), ax=ax, label="DLMP (¢/kWh)",
                       title=f"hour {hour} round {rnd}: source LMP {lmp:.2f} ¢/kWh",
                       highlight_branches=res.congested)

    # ------------------------------------------------------------------ analysis helpers
    def truthful_bids(self) -> np.ndarray:
        """Everyone's true cost curves as offers for the current hour."""
        return np.array([true_block_prices(p) for p in self.participants])

    truthful_offers = truthful_bids


def _count(section, default_placement: bool, keys=("cost_a", "cost_b", "capacity_kw",
                                                    "share")) -> int:
    """How many participants a section describes: its buses, else its longest list."""
    if section.buses is not None and not default_placement:
        return len(section.buses)
    sizes = [np.size(getattr(section, k)) for k in keys if hasattr(section, k)]
    return max(sizes) if sizes else 0
