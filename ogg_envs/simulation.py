"""The paper's user interface for studies without RL (Section III-D): compose an environment
from a grid, a market and participants with scripted policies, and run it with callbacks that
record data mid-simulation. It is the same environment core as the registered environments
(``ComposedEnv`` is a ``MarketEnv``), not a second simulator beside it.

Example — a curve market on the IEEE 34 feeder, every participant truthful, one day::

    from ogg_envs.grid import OpenDSSGrid, placement
    from ogg_envs.markets.curve_market import CurveMarket
    from ogg_envs.simulation import ComposedEnv, GridStepLog, Simulation, standard_participants

    grid = OpenDSSGrid.from_feeder("ieee34")
    env = ComposedEnv(grid, lambda topo, parts: CurveMarket(topo, parts, price_cap=20.0),
                      standard_participants(grid))
    log = GridStepLog()
    Simulation(env, callbacks=[log]).run(seed=0)
    log.rows[12]["avg_consumer_price"], log.rows[12]["losses_kw"]

``ComposedEnv(grid, market, participants)``: ``market`` is a ``Market`` or a factory
``market(topology, participants) -> Market``; ``participants`` are ``ogg_envs.api.Participant``
records with their policies (``participant.policy``). A demand-side participant with
``state["nominal_kw"]`` and ``state["profile"]`` (a profile column) wants ``nominal_kw x
profile[hour]`` each hour; every supply participant away from the source gets a generator on
the feeder. ``context(env) -> MarketContext`` gives markets that need more than bids (DLMP:
demand, capacity, source price) what they need. Pass ``learners=[...]`` and
``action_space=`` to train agents in it like any PettingZoo environment.

Invalid bids (``invalid_bids=``, as in every environment: ``ogg_envs.core``, "Invalid bids"):
with ``"repair"`` (default) the market's ``repair`` replaces a finite but invalid bid by the
nearest valid one (the curve market: prices into ``[price_floor, price_cap]``, quantities into
``[0, limits.q_now]`` of the hour; the DLMP markets: prices into ``[0, price_cap]``) and
``infos[agent]["bid_repairs"]`` lists what changed; with ``"raise"`` an invalid bid raises
``InvalidBidError`` naming the agent before anything changes. An action space wider than the
market's rules (``Box(0, 2000, (4,))`` for a curve market capped at 20 ¢/kWh) is thus usable
as is. A market without ``repair`` can only refuse (its first invalid bid says so).

The core's AC options (``ac_feedback=True`` for AC-feasible clearing of a market with branch
limits, ``ac_tol``, ``ac_max_iterations``, ``observe_ac``, ``ac_cost_weight``,
``loss_pricing`` for a market with ``set_losses``; ``ogg_envs.core``) are keyword arguments of
``ComposedEnv`` too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import gymnasium
import numpy as np

from ogg_envs import economics
from ogg_envs.api import DEMAND, SUPPLY, Limits, Market, MarketContext, Participant, Truth
from ogg_envs.core import MarketEnv, real_action, real_rows
from ogg_envs.grid import placement
from ogg_envs.policies.curve import FlatOffer, TruthfulBidder
from ogg_envs.scenario import Scenario

__all__ = ["ComposedEnv", "Simulation", "GridStepLog", "standard_participants"]

OBS_SIZE = 6


def standard_participants(grid, *, n_suppliers: int = 4, cost_a=(3.0, 3.2, 3.1, 3.4),
                          cost_b: float = 0.005, capacity_kw: float = 2000.0,
                          substation_price: float = 4.3, value: float = 20.0,
                          profile: str = "load_residential") -> list[Participant]:
    """The default rule's participants on any feeder (``ogg_envs.grid.placement``): the
    substation at the source (a flat offer), ``n_suppliers`` generators along the main path
    (truthful), one inflexible consumer per load bus (valued at ``value`` ¢/kWh, following
    ``profile``), all with truthful policies."""
    topo, loads = grid.topology, grid.bus_load_kw
    parts = [Participant("substation_0", "substation", placement.source_bus(topo), SUPPLY,
                         truth=Truth(cost_a=substation_price),
                         limits=Limits(1e4, 1e4), policy=FlatOffer())]
    costs = np.resize(np.asarray(cost_a, dtype=float), n_suppliers)
    for i, bus in enumerate(placement.spread_along_main_path(topo, loads, n_suppliers)):
        parts.append(Participant(f"supplier_{i}", "supplier", bus, SUPPLY,
                                 truth=Truth(cost_a=float(costs[i]), cost_b=cost_b),
                                 limits=Limits(capacity_kw, capacity_kw),
                                 policy=TruthfulBidder()))
    for j, bus in enumerate(placement.load_buses(topo, loads)):
        nominal = float(loads[topo.bus_index[bus]])
        parts.append(Participant(f"consumer_{j}", "consumer", bus, DEMAND,
                                 truth=Truth(value_max=value, value_min=value),
                                 limits=Limits(nominal, nominal),
                                 state={"nominal_kw": nominal, "profile": profile},
                                 policy=TruthfulBidder()))
    return parts


class ComposedEnv(MarketEnv):
    """An environment composed from a grid, a market and participants (module docstring).

    Actions and bids are whatever the market takes (one row per participant); rewards are true
    profits (``Participant.profit``) in dollars per round; the observation is the hour features
    plus the participant's last price (/ the market's price cap) and quantity (/ its largest).
    """

    metadata = {"render_modes": ["human", "rgb_array"], "name": "composed",
                "is_parallelizable": True}

    def __init__(self, grid, market: Market | Callable, participants: Iterable[Participant], *,
                 context: Callable[[ComposedEnv], MarketContext] | None = None,
                 learners=(), action_space: Callable | None = None, market_rounds: int = 1,
                 horizon: int = 24, scenario: Scenario | None = None,
                 render_mode: str | None = None, invalid_bids: str = "repair",
                 **ac_options):
        self._given = list(participants)
        self._market = market
        self._context = context
        self._action_space = action_space
        if learners and action_space is None:
            raise ValueError("learning agents need action_space=: a function "
                             "participant -> gymnasium.Space")
        sc = scenario if scenario is not None else Scenario(horizon=horizon)
        super().__init__(scenario=sc, feeder=grid, learners=learners,
                         policies={p.name: p.policy for p in self._given if p.policy},
                         market_rounds=market_rounds, horizon=horizon,
                         render_mode=render_mode, invalid_bids=invalid_bids, **ac_options)

    def make_participants(self) -> list[Participant]:
        root = self.topology.root
        for p in self._given:
            if p.side == SUPPLY and p.bus != root and "generator" not in p.state:
                self.add_generator(p, kva=max(p.limits.q_max, 1.0) * 1.2)
        return self._given

    def make_market(self) -> Market:
        if isinstance(self._market, Market):
            return self._market
        return self._market(self.topology, self._given)

    def action_space_of(self, p: Participant) -> gymnasium.Space:
        return self._action_space(p)

    def observation_space_of(self, p: Participant) -> gymnasium.Space:
        return gymnasium.spaces.Box(-1.0, 1.0, (OBS_SIZE,), np.float32)

    def start_hour(self) -> None:
        h = self.hour_of(self.t)
        for p in self.participants:
            column = p.state.get("profile")
            if column is not None:
                p.limits.q_now = min(p.state["nominal_kw"] * float(self.profiles[column][h]),
                                     p.limits.q_max)
        self.truth = t = economics.truth_arrays(self.participants)
        self._profits = economics.HourProfits(t["is_supply"], t["a"], t["b"], t["vmax"],
                                              t["vmin"], t["q_now"])

    def context(self) -> MarketContext:
        if self._context is not None:
            return self._context(self)
        return MarketContext(hour=self.hour_of(self.t))

    def decode(self, agent: str, action):
        return real_action(agent, action, np.shape(action), "the market's bid")

    def decode_rows(self, names: list[str], actions) -> list | None:
        return real_rows(actions, len(names), None)  # (None: decode names the culprit)

    def bid_limits(self) -> np.ndarray:
        """This hour's ``limits.q_now`` per participant: a valid bid's largest quantity."""
        return self.truth["q_now"]

    def market_step(self, bids):
        arr, repairs = self.checked_bids(np.array([bids[n] for n in self.names], dtype=float),
                                         self.bid_limits())
        clearing = self.market.clear(arr, self.context())
        self.set_clearing(clearing)
        profit = self.true_profits(clearing.participant_prices,
                                   clearing.participant_quantities) / 100.0
        return self.per_round(profit), self.clearing_infos(clearing, profit, arr, repairs)

    def true_profits(self, prices, quantities) -> np.ndarray:
        """True profits (¢ per hour) of every participant (``ogg_envs.economics``; this
        hour's ``HourProfits``, the numbers of ``economics.profits``)."""
        return self._profits(prices, quantities)

    def true_welfare(self, quantities) -> float:
        """Total true surplus (¢ per hour) of the participants at these quantities."""
        t = self.truth
        return economics.welfare(t["is_supply"], quantities, t["a"], t["b"], t["vmax"],
                                 t["vmin"], t["q_now"])

    def observe(self, name: str) -> np.ndarray:
        p, k = self.participant[name], self.index[name]
        cap = getattr(self.market, "price_cap", 100.0)
        last = self.last_clearing
        price = 0.0 if last is None else float(last.participant_prices[k]) / cap
        qty = 0.0 if last is None else float(last.participant_quantities[k]) / \
            max(p.limits.q_max, 1e-9)
        obs = np.array([*self.hour_features(), price, qty], dtype=np.float32)
        return np.clip(obs, -1.0, 1.0)


class GridStepLog:
    """A callback that records one row per grid step: hour, average consumer price (¢/kWh,
    paid per kWh served), welfare on the bids ($), congestion rent ($), congested branches,
    shed kW, the power flow's losses and substation kW, convergence, and from the AC report
    (``env.last_grid_report``) the substation's supply beyond the cleared quantities, the
    largest loading of a market-limited branch, the branches over their limit and the feedback
    re-clearings."""

    def __init__(self):
        self.rows: list[dict[str, Any]] = []

    def on_grid_step(self, env, clearing, power_flow) -> None:
        demand = ~env.is_supply
        q = clearing.participant_quantities
        served = float(q[demand].sum())
        paid = float(clearing.participant_prices[demand] @ q[demand])
        self.rows.append({
            "episode_hour": env.t - 1, "avg_consumer_price": paid / served if served else
            math.nan, "welfare_usd": clearing.welfare / 100.0,
            "congestion_rent_usd": clearing.congestion_rent / 100.0,
            "congested": list(clearing.congested), "shed_kw": clearing.total_shed_kw,
            "losses_kw": power_flow.losses_kw, "substation_kw": power_flow.substation_kw,
            "converged": power_flow.converged})
        report = env.last_grid_report
        if report is not None:
            self.rows[-1].update(
                unscheduled_kw=report.unscheduled_kw,
                max_loading=float(np.max(report.loading, initial=0.0)),
                overloaded=list(report.overloaded),
                feedback_iterations=report.feedback_iterations)


class Simulation:
    """Run an environment with every participant on its policy, calling callbacks.

    A callback is any object with some of ``on_round(env, clearing)``,
    ``on_grid_step(env, clearing, power_flow)`` and ``on_episode_end(env)``. Learning agents,
    if the environment has any, act through their own participant's policy (their baseline).
    Works with every ``MarketEnv`` (composed or registered)::

        Simulation(ogg_envs.make("opengridgym/dlmp-v0", parallel=True), [GridStepLog()]).run()
    """

    def __init__(self, env: MarketEnv, callbacks: Iterable = ()):
        self.env = getattr(env, "unwrapped", env)
        self.callbacks = list(callbacks)

    def _emit(self, event: str, *args) -> None:
        for cb in self.callbacks:
            fn = getattr(cb, event, None)
            if fn is not None:
                fn(self.env, *args)

    def run(self, seed: int | None = 0, episodes: int = 1) -> MarketEnv:
        env = self.env
        for episode in range(episodes):
            obs, _ = env.reset(seed=seed if episode == 0 else None)
            info = {"rng": np.random.default_rng(seed)}
            while not env.done:
                if env.agents:
                    actions = {a: env.participant[a].policy(env.participant[a], obs[a], info)
                               for a in env.agents}
                    obs, *_ = env.step(actions)
                else:
                    env.run_round({})
                self._emit("on_round", env.last_clearing)
                if env.round == 0:
                    self._emit("on_grid_step", env.last_clearing, env.last_power_flow)
            self._emit("on_episode_end")
        return env
