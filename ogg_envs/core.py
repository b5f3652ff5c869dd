"""The environment core shared by every OpenGridGym market (the paper's fourth module).

Two timescales, as in the OpenGridGym paper:

* a **market round** is one bid per active agent. In the parallel API it is one ``step``; in the
  AEC API it is one turn per agent, and the round is executed after the last turn. Every round
  ends with a tentative clearing that gives every participant a price and a quantity, and the
  rewards;
* after ``market_rounds`` rounds the last clearing is final: it is applied to the feeder and
  the power flow is solved. That is one *grid step*. An episode is ``horizon`` grid steps.

``MarketEnv`` owns everything the markets share: the scenario (typed, with constructor
overrides), the feeder (``feeder=`` swaps it), the participants and their policies (scripted
participants bid through one rule that honours ``policy.adaptive``), the timescales, mapping the
final clearing onto the feeder's loads and generators, the grid-step infos, branch paths, hour
features, reward normalisation and rendering. An environment module subclasses it and keeps
only what makes it itself, in these hooks (PettingZoo's MPE ``SimpleEnv`` is the model)::

    make_participants()          -> list[Participant]      who takes part, where
    make_market()                -> Market                 the market, on self.topology
    action_space_of(p), observation_space_of(p)            spaces of a learning participant
    start_episode(rng, options)                            the episode's random draws
    start_hour()                                           this hour's limits and data
    decode(agent, action)        -> bid                    ValueError naming the agent if bad
    market_step(bids)            -> (rewards, infos)       checked_bids, clear, pay (rewards
                                                            per participant)
    observe(name)                -> np.ndarray             any participant's observation

and optionally ``rounds_of(scenario)`` (market rounds when the scenario decides),
``bid_limits()`` (this hour's largest valid bid quantity per participant), ``bid_rule()`` (whose
repair applies), ``decode_rows(names, actions)`` (``decode`` of several participants' actions
at once: a parallel step's, a scripted policy's ``batch``), ``dispatch(clearing)`` (what goes
to the feeder), ``grid_step()``, ``grid_step_infos(pf)``, ``reset_info(name)``,
``render_text()`` and ``render_map(ax)``.

Everything is public (the paper's Fig. 4): ``env.grid``, ``env.market``, ``env.participants``
(and ``env.participant[name]``), ``env.scenario``, ``env.profiles``, and the read-only
``env.last_clearing``, ``env.last_power_flow`` and ``env.last_grid_report``. All agents
truncate together at the end of the episode (or after ``max_cycles`` rounds); nobody
terminates early, which keeps SuperSuit and RLlib simple.

Invalid bids
------------
The market owns the rule of what a valid bid is and its repair (``ogg_envs.api.Market``'s
optional ``repair``: the curve market's, the DLMP markets'); the core applies it, one way for
every environment, with the option ``invalid_bids``:

* ``"repair"`` (default): ``checked_bids`` hands a round's bids to the market's ``repair``,
  which replaces every finite but invalid bid by the nearest valid one;
  ``infos[agent]["bid_repairs"]`` lists what was changed (only for repaired agents).
* ``"raise"``: every bid is checked by the same rule when it is decoded (a parallel ``step``
  before anything changes, an AEC turn when it is given); an invalid one raises
  ``InvalidBidError`` (a ``ValueError``) naming the agent and what is wrong, nothing is
  stored, and a later valid step works.

NaN or inf numbers, a wrong shape or a non-numeric action always raise ``ValueError`` naming
the agent (``decode``). Quantities are limited by ``bid_limits()`` (topology-power and a
composed environment: each participant's ``limits.q_now`` this hour). A market without
``repair`` (P2P's arms are always valid) can only refuse: its first invalid bid raises
``InvalidBidError`` naming the market's class and the option ``invalid_bids="raise"``.

Market and physics
------------------
Markets clear on the feeder's lossless linear model (``f = H @ p``, limits in kW); OpenDSS's
AC flows differ (losses downstream of a branch, voltage-dependent loads). After every grid step
the core compares them in a ``GridReport`` (``ogg_envs.api``; ``env.last_grid_report``): for
every market-limited branch (a finite limit in the market, transformers included) the AC kW,
kvar and kVA, the market's limit and the loading ``|AC kW| / limit``; voltage violations per
bus; losses; and ``unscheduled_kw``, what the substation supplied beyond the cleared
quantities. Options every environment takes (keyword arguments of its constructor, handled
here once):

* ``ac_feedback=False``: AC-feasible clearing. After the hour's final clearing OpenDSS
  solves; while a market-limited branch carries more than ``limit x (1 + ac_tol)`` AC kW, the
  market's limits are corrected by the flow offsets of that solution (``AC kW - H @ p`` at the
  same dispatch, mostly the losses downstream; ``limit - max(offset, 0)`` through
  ``market.set_limits``) and the final round is cleared again with the same bids, up to
  ``ac_max_iterations`` times (each one more clearing and power flow). Limits are restored
  after the hour (nothing carries to the next hour or episode). Rewards, infos and settlement
  are the last (corrected) clearing's. Only markets with ``set_limits``/``limits_kw`` (the
  curve market, the DLMP market) are corrected; voltages are reported, not corrected (the
  linear model has none). Off by default: v0 environments reproduce the paper's clearings,
  and feedback costs up to ``ac_max_iterations`` extra clearings and power flows per grid
  step (``benchmarks/bench_ac_feedback.py`` measures both).
* ``loss_pricing=False``: loss-aware prices. After the hour's final clearing OpenDSS solves;
  the core computes the marginal loss factors of that solution
  (``ogg_envs.grid.loss_factors``), hands them with its losses and injections to
  ``market.set_losses`` (the balance becomes the linearised lossy one, ``sum_b (1 - lf_b) p_b
  = L0 - lf . p0``, and every nodal price gains a loss component, ``-lf_b x energy``; see the
  markets' "Losses") and clears the final round again with the same bids. It repeats, in the
  same loop and under the same cap as ``ac_feedback`` (both corrections go in together when
  both are on), while the losses the market scheduled (``Clearing.losses_kw``) miss OpenDSS's
  by more than ``ac_tol x`` the AC losses; from the second repricing on, the factors are the
  mean of the last two solutions' (the secant slope of losses about quadratic in the flows:
  tangents alone overshoot and oscillate where the loss prices move the dispatch far). On
  topology-power's peak hours, where loss prices halve the AC losses, the scheduled losses are
  within 3 % of OpenDSS's after the default 3 re-clearings, 0.5 % after 5; elsewhere one or two
  suffice. The market is lossless again after the hour.
  ``GridReport.cleared_losses_kw`` (and ``infos[agent]["cleared_losses_kw"]``) is what the
  market cleared for losses, counted in ``cleared_source_kw``: ``unscheduled_kw`` drops by
  the losses; what stays is what the linearisation missed and the loads' voltage dependence
  (OpenDSS's loads draw other than their set points off 1 pu: 8 to 15 kW on the bundled
  days, against 45 to 80 kW of losses). Markets with ``set_losses`` (the curve
  market on its dense formulation, the DLMP markets) take it; others raise ``ValueError`` at
  construction. Off by default (v0 environments reproduce the paper's lossless clearings);
  ``benchmarks/bench_ac_feedback.py`` measures its power flows, ``unscheduled_kw`` and cost.
* ``ac_tol=0.005``: the relative excess over a market limit that counts as an overload (in
  the feedback loop, ``thermal_overloads`` and ``GridReport.overloaded``), and the relative
  loss mismatch ``loss_pricing`` accepts.
* ``ac_max_iterations=3``: the feedback loop's cap (``ac_feedback`` and ``loss_pricing``).
* ``observe_ac=False``: two more observation entries for every agent (the space widens), the
  AC outcome of the last grid step: its bus's worst node voltage, ``(v - 1) / 0.1``, and the
  loading of the most loaded market-limited branch on its path minus 1 (0 at the limit), both
  clipped to [-1, 1]; 0 and -1 before the first grid step of an episode; a grid step whose
  power flow fails keeps the previous values (``infos[agent]["converged"]`` says so).
* ``ac_cost_weight=0.0``: rewards minus ``ac_cost_weight x infos[agent]["cost"]`` ($) in the
  round that ends a grid step; 0 leaves rewards as they are.

After a grid step ``infos[agent]`` holds ``converged``, ``voltage_violations`` (its bus),
``thermal_overloads`` (branches on its path over the market's limit x (1 + ac_tol), or over
OpenDSS's rating where the market sets none), ``path_loading`` (the largest loading of a
market-limited branch on its path, 0 without one), ``substation_kw``, ``losses_kw``,
``cleared_losses_kw``, ``unscheduled_kw``, ``ac_iterations`` (feedback re-clearings this hour)
and ``cost``, a
constrained-RL cost signal (as in safe-RL benchmarks): the sum over the market-limited
branches on its path of the relative excess ``max(loading - 1, 0)``, plus its bus's voltage
excess outside the band in pu; 1 when the power flow failed; 0 when all is within limits.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from itertools import compress
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
from pettingzoo import ParallelEnv
from pettingzoo.utils.conversions import parallel_to_aec_wrapper
from pettingzoo.utils.wrappers import OrderEnforcingWrapper

from ogg_envs.api import DEMAND, SUPPLY, GridReport, InvalidBidError, Participant
from ogg_envs.grid import placement
from ogg_envs.grid.loss_factors import marginal_loss_factors
from ogg_envs.scenario import Scenario, grid_from_scenario, load_profiles, load_scenario

HOURS_PER_DAY = 24
TEST_EVERY = 5  # every fifth profile day is held out (the test split)
# The AC options (module docstring): every environment forwards them to the core (**ac_options).
AC_OPTIONS = {"ac_feedback": False, "ac_tol": 0.005, "ac_max_iterations": 3,
              "observe_ac": False, "ac_cost_weight": 0.0, "loss_pricing": False}
AC_FEATURES = 2  # observation entries added by observe_ac

__all__ = ["MarketEnv", "MarketAEC", "Participant", "select_learners", "aec_from_parallel",
           "real_action", "clip_unit"]


def clip_unit(x: float) -> float:
    """``x`` clipped to [-1, 1] (NaN stays NaN), as ``np.clip`` does, for one number: the
    observations' rule, without numpy's per-call cost."""
    return min(max(x, -1.0), 1.0)


def select_learners(participants: Iterable[Participant], learners) -> list[str]:
    """Resolve ``learners`` (group names and/or participant names) to participant names.

    ``learners`` may be a string or a list of strings; each entry is either a group
    (``"supplier"``) or a name (``"consumer_3"``). An entry that matches nothing raises
    ``ValueError`` listing the valid groups and names. An empty list selects nobody (every
    participant follows its policy: a simulation without learning agents).
    """
    participants = list(participants)
    if isinstance(learners, str):
        learners = [learners]
    if len(learners) == 0:
        return []  # a pure simulation: every participant follows its policy
    groups = {p.group for p in participants}
    names = {p.name for p in participants}
    chosen: set[str] = set()
    for entry in learners:
        if entry in groups:
            chosen |= {p.name for p in participants if p.group == entry}
        elif entry in names:
            chosen.add(entry)
        else:
            raise ValueError(
                f"learners: {entry!r} is neither a group ({', '.join(sorted(groups))}) nor a "
                f"participant ({', '.join(p.name for p in participants)})"
            )
    if not chosen:
        raise ValueError("learners selects no participant")
    return [p.name for p in participants if p.name in chosen]


def real_action(agent: str, action, shape: tuple, what: str) -> np.ndarray:
    """An action as a float array of ``shape``: real numbers only (integers or floats; not
    strings, booleans or complex numbers), all finite. ``ValueError`` naming the agent
    otherwise."""
    if type(action) is np.ndarray and action.dtype.kind == "f" and action.shape == shape:
        a = action.astype(float)  # the usual case (sampled or policy actions): a copy
        if all(map(math.isfinite, a.tolist())):  # np.isfinite(a).all(), 10x faster when small
            return a
    try:
        a = np.asarray(action)
    except (TypeError, ValueError):
        a = np.asarray(None)
    if a.dtype.kind not in "iuf":
        raise ValueError(f"{agent}: action must be real numbers ({what}), got {action!r}")
    if a.shape != shape:
        raise ValueError(f"{agent}: action must have shape {shape} ({what}), got shape "
                         f"{a.shape}")
    a = a.astype(float)
    if not np.isfinite(a).all():
        raise ValueError(f"{agent}: action has non-finite numbers {a.tolist()}")
    return a


def real_rows(actions, count: int, shape: tuple | None) -> list[np.ndarray] | None:
    """``real_action`` of ``count`` actions at once (``actions``: an array or nested lists of
    shape ``(count, *shape)``; ``shape=None``: rows of any one shape): float rows, views of one
    new array, each equal to what ``real_action`` returns for it; None where any row would
    fail ``real_action`` (ask it row by row then: its error names the agent)."""
    if not isinstance(actions, np.ndarray) and any(
            isinstance(row, np.ndarray) and row.dtype.kind not in "iuf" for row in actions):
        return None  # (a boolean row among float rows would pass as numbers once stacked)
    try:
        a = np.asarray(actions)
    except (TypeError, ValueError):  # ragged rows
        return None
    if a.dtype.kind not in "iuf" or a.ndim < 1 or a.shape[0] != count or \
            (shape is not None and a.shape[1:] != tuple(shape)):
        return None
    a = a.astype(float)
    if not np.isfinite(a).all():
        return None
    return list(a)


class MarketAEC(parallel_to_aec_wrapper):
    """The AEC view of a market env: one turn per agent, the round runs after the last turn.

    Each turn's action is checked when it is given (``decode_checked``: with
    ``invalid_bids="raise"`` the market's rule too): a refused action raises ``ValueError``
    naming the agent, nothing is stored, and the same agent acts again.
    """

    def step(self, action):
        agent = self.agent_selection
        if not (self.terminations.get(agent) or self.truncations.get(agent)):
            self.env.unwrapped.decode_checked(agent, action)  # None too: only done agents pass
        super().step(action)

    def observe(self, agent):
        if agent not in self.possible_agents:
            raise KeyError(f"unknown agent {agent!r}; agents: {', '.join(self.possible_agents)}")
        return self._observations[agent]

    def last(self, observe: bool = True):
        _check_not_over(self)
        return super().last(observe)


def _check_not_over(aec) -> None:
    done = getattr(aec, "_cumulative_rewards", None)  # PettingZoo's own bookkeeping
    if done is not None and aec.agent_selection not in done:
        raise RuntimeError("the episode is over (every agent is done): call reset()")


class _OrderEnforcing(OrderEnforcingWrapper):
    def last(self, observe: bool = True):
        _check_not_over(self.env)
        return super().last(observe)


def aec_from_parallel(par_env: ParallelEnv):
    """The AEC view of a market env (``MarketAEC``) with PettingZoo's order enforcing."""
    return _OrderEnforcing(MarketAEC(par_env))


class MarketEnv(ParallelEnv):
    """Parallel-API base class of the markets. See the module docstring.

    Class attributes an environment sets: ``Scenario`` (its scenario schema),
    ``default_scenario`` (bundled name), ``overrides`` (constructor argument -> dotted scenario
    key), ``default_policies`` (group -> policy factory for non-learning participants) and
    ``default_learners``.
    """

    metadata: dict[str, Any] = {"render_modes": ["human", "rgb_array"], "is_parallelizable": True}
    Scenario: type = Scenario
    default_scenario: str | None = None
    overrides: dict[str, str] = {}
    default_policies: dict[str, Any] = {}
    default_learners: Any = ()

    def __init__(self, *, scenario=None, feeder=None, learners=None,
                 policies: dict | None = None, market_rounds: int | None = 1,
                 horizon: int | None = None, max_cycles: int | None = None,
                 render_mode: str | None = None, invalid_bids: str = "repair",
                 ac_feedback: bool | None = None, ac_tol: float | None = None,
                 ac_max_iterations: int | None = None, observe_ac: bool | None = None,
                 ac_cost_weight: float | None = None, loss_pricing: bool | None = None,
                 **overrides):
        given = dict(ac_feedback=ac_feedback, ac_tol=ac_tol, ac_max_iterations=ac_max_iterations,
                     observe_ac=observe_ac, ac_cost_weight=ac_cost_weight,
                     loss_pricing=loss_pricing)
        self._set_ac_options({k: v for k, v in given.items() if v is not None})
        if invalid_bids not in ("repair", "raise"):
            raise ValueError(f"invalid_bids must be 'repair' or 'raise', got {invalid_bids!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}, "
                             f"got {render_mode!r}")
        if market_rounds is not None and int(market_rounds) < 1:
            raise ValueError(f"market_rounds must be >= 1, got {market_rounds}")
        if horizon is not None and int(horizon) < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        dotted = {}
        for arg, value in overrides.items():
            if arg not in self.overrides:
                raise TypeError(f"{type(self).__module__}: unknown argument {arg!r}; valid "
                                f"scenario overrides: {', '.join(self.overrides) or 'none'}")
            dotted[self.overrides[arg]] = value
        sc = load_scenario(scenario if scenario is not None else self.default_scenario,
                           self.Scenario, dotted)
        # A feeder other than the scenario's own drops the scenario's bus names and line
        # limits (they belong to its feeder): participants are then placed by the default rule.
        given_grid = feeder if feeder is not None and not isinstance(feeder, (str, Path)) \
            else None
        self.default_placement = feeder is not None and (given_grid is not None
                                                         or str(feeder) != sc.feeder)
        if feeder is not None and given_grid is None:
            # A path given here is the caller's (relative to the working directory).
            sc.feeder = str(Path(feeder).resolve()) if str(feeder).endswith(".dss") \
                else str(feeder)
        if horizon is not None:
            sc.horizon = int(horizon)
        self.scenario = sc
        self.profiles = load_profiles(sc)
        self.invalid_bids = invalid_bids
        self.market_rounds = int(market_rounds) if market_rounds is not None \
            else self.rounds_of(sc)
        self.horizon = sc.horizon
        self.max_cycles = int(max_cycles) if max_cycles is not None else \
            self.market_rounds * self.horizon
        self.render_mode = render_mode
        self.n_hours = len(self.profiles["hour"])
        self.grid = given_grid if given_grid is not None else grid_from_scenario(sc)
        self.topology = self.grid.topology
        self.participants: list[Participant] = self.make_participants()
        self.participant = {p.name: p for p in self.participants}
        self.names = [p.name for p in self.participants]
        self.index = {n: i for i, n in enumerate(self.names)}
        self.is_supply = np.array([p.side == SUPPLY for p in self.participants])
        self.paths = {p.name: frozenset(self.topology.path_to_root(p.bus))
                      for p in self.participants}
        self._element_branch = {el: br.name for br in self.topology.branches
                                for el in br.elements}
        self._map_dispatch()
        self.possible_agents = select_learners(
            self.participants, self.default_learners if learners is None else learners)
        self._attach_policies(policies or {})
        self.market = self.make_market()
        self._bid_rule = self.bid_rule()
        self._strict = invalid_bids == "raise"
        for p in self.participants:
            p.rules = self.rules
        self._agent_index = np.array([self.index[a] for a in self.possible_agents], dtype=int)
        # every participant learns, in participant order: rows need no reordering
        self._agents_are_participants = self.possible_agents == self.names
        self._obs_spaces = {a: self._with_ac_features(self.observation_space_of(
            self.participant[a]), a) for a in self.possible_agents}
        if self.ac_feedback and not (hasattr(self.market, "set_limits")
                                     and hasattr(self.market, "limits_kw")):
            raise ValueError(f"ac_feedback=True needs a market with branch limits (set_limits "
                             f"and limits_kw); {type(self.market).__name__} has none")
        if self.loss_pricing:
            self._check_loss_pricing()
        self._act_spaces = {a: self.action_space_of(self.participant[a])
                            for a in self.possible_agents}
        self.agents: list[str] = []
        self._np_random: np.random.Generator | None = None
        self._last_clearing = None
        self._last_power_flow = None
        self._last_grid_report = None

    def _set_ac_options(self, given: dict) -> None:
        opts = {**AC_OPTIONS, **given}
        for key in ("ac_feedback", "observe_ac", "loss_pricing"):
            if not isinstance(opts[key], (bool, np.bool_)):
                raise ValueError(f"{key} must be True or False, got {opts[key]!r}")
        tol, cap, weight = opts["ac_tol"], opts["ac_max_iterations"], opts["ac_cost_weight"]
        if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 0 <= tol < 1:
            raise ValueError(f"ac_tol must be a number in [0, 1) (relative excess over a "
                             f"limit, e.g. 0.005), got {tol!r}")
        if isinstance(cap, bool) or not isinstance(cap, (int, np.integer)) or cap < 0:
            raise ValueError(f"ac_max_iterations must be a whole number >= 0, got {cap!r}")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) \
                or not math.isfinite(weight) or weight < 0:
            raise ValueError(f"ac_cost_weight must be a finite number >= 0 ($ per unit of "
                             f"cost), got {weight!r}")
        self.ac_feedback, self.observe_ac = bool(opts["ac_feedback"]), bool(opts["observe_ac"])
        self.loss_pricing = bool(opts["loss_pricing"])
        self.ac_tol, self.ac_max_iterations = float(tol), int(cap)
        self.ac_cost_weight = float(weight)

    def _check_loss_pricing(self) -> None:
        """``loss_pricing=True`` needs a market that prices losses: ``set_losses`` is tried
        once (lossless factors) and undone; its refusal names the reason."""
        if not hasattr(self.market, "set_losses"):
            raise ValueError(f"loss_pricing=True needs a market that prices losses "
                             f"(set_losses); {type(self.market).__name__} has none")
        try:
            self.market.set_losses(np.zeros(len(self.topology.buses)), 0.0)
        except ValueError as exc:
            raise ValueError(f"loss_pricing=True: {exc}") from None
        self.market.set_losses(None)

    # ------------------------------------------------------------------ public state
    @property
    def last_clearing(self):
        """The last clearing (the market's ``Clearing``), or None before the first round."""
        return self._last_clearing

    @property
    def last_power_flow(self):
        """The power flow of the last grid step, or None before the first one."""
        return self._last_power_flow

    @property
    def last_grid_report(self) -> GridReport | None:
        """The last grid step's AC outcome against the market's model (``GridReport``), or
        None before the first one."""
        return self._last_grid_report

    @property
    def rules(self) -> dict:
        """The market's public rules (price cap, blocks, arms, ...): known to everyone."""
        return {"price_cap": getattr(self.market, "price_cap", math.nan),
                "market_rounds": self.market_rounds, "horizon": self.horizon}

    @property
    def hour(self) -> int:
        """The profile hour (row) of the current grid step."""
        return self.hour_of(min(self.t, self.horizon - 1))

    def hour_of(self, t: int) -> int:
        """The profile row of grid step ``t``: ``start_hour + 24 * day + t`` (wrapping
        around the profiles)."""
        return (self.scenario.start_hour + HOURS_PER_DAY * self.day + t) % self.n_hours

    # ------------------------------------------------------------------ days
    day: int = 0  # the episode's profile day (``reset(options={"day": d})``)

    @property
    def n_days(self) -> int:
        """Days in the profiles (1 for the bundled one-day set, 365 for ``year``)."""
        return max(self.n_hours // HOURS_PER_DAY, 1)

    def split_days(self, split: str) -> np.ndarray:
        """The profile days of a split: ``"test"`` is every fifth day (day % 5 == 4: 73 of
        365, spread over every season and weekday), held out; ``"train"`` the others;
        ``"all"`` every day. A one-day profile set has its one day in every split."""
        days = np.arange(self.n_days)
        if self.n_days == 1 or split == "all":
            return days
        if split not in ("train", "test"):
            raise ValueError(f"options['split'] must be 'train', 'test' or 'all', got {split!r}")
        test = days % TEST_EVERY == TEST_EVERY - 1
        return days[test] if split == "test" else days[~test]

    def _choose_day(self, options: dict) -> int:
        """``options["day"]`` pins the episode's day; otherwise a profile set of several days
        draws one from ``options.get("split", "train")`` with the episode's RNG (a one-day set
        draws nothing: its episodes are what they always were)."""
        if "day" in options:
            d = options["day"]
            if isinstance(d, (bool, np.bool_)) or not isinstance(d, (int, np.integer)) \
                    or not 0 <= d < self.n_days:
                raise ValueError(f"options['day'] must be a whole number in [0, {self.n_days}) "
                                 f"(profiles {self.scenario.profiles!r} have {self.n_days} "
                                 f"day(s)), got {d!r}")
            return int(d)
        if self.n_days == 1:
            return 0
        days = self.split_days(options.get("split", "train"))
        return int(days[self._rng.integers(len(days))])

    def episode_rows(self) -> np.ndarray:
        """The profile rows an episode's hourly draws cover: every row of a one-day set (as
        always), the rows of the episode's grid steps on a longer one."""
        if self.n_hours <= HOURS_PER_DAY:
            return np.arange(self.n_hours)
        return np.unique([self.hour_of(t) for t in range(self.horizon)])

    def consumer_profile(self, k: int, residential: bool = True) -> str:
        """The profile column of the ``k``-th consumer: with measured per-consumer shapes
        (``shape_*`` columns, as in the ``year`` set) the k-th of them, in turn; otherwise
        ``load_residential`` or ``load_commercial``."""
        if self._shapes is None:
            self._shapes = sorted(c for c in self.profiles if c.startswith("shape_"))
        if self._shapes:
            return self._shapes[k % len(self._shapes)]
        return "load_residential" if residential else "load_commercial"

    _shapes: list[str] | None = None

    def draw_hourly(self, columns: list[str], noise: float, rng) -> np.ndarray:
        """Each column's profile over the episode's rows times ``1 + noise * N(0, 1)`` (one
        column after the other), as a (rows, columns) array: row ``r`` is profile row
        ``episode_rows()[r]``, and ``row_of(t)`` finds grid step ``t``'s. Only the episode's
        rows are drawn, so a year of profiles costs a day's worth per reset."""
        rows = self.episode_rows()
        self._row_pos = {int(r): i for i, r in enumerate(rows.tolist())}
        out = np.empty((len(rows), len(columns)))
        for j, col in enumerate(columns):
            out[:, j] = self.profiles[col][rows] * (1 + noise * rng.standard_normal(len(rows)))
        return out

    def row_of(self, t: int) -> int:
        """Grid step ``t``'s row in the arrays ``draw_hourly`` returned this episode."""
        return self._row_pos[self.hour_of(t)]

    # ------------------------------------------------------------------ PettingZoo API
    def observation_space(self, agent: str) -> gymnasium.Space:
        return self._space(self._obs_spaces, agent)

    def action_space(self, agent: str) -> gymnasium.Space:
        return self._space(self._act_spaces, agent)

    def _space(self, spaces: dict, agent: str) -> gymnasium.Space:
        try:
            return spaces[agent]
        except KeyError:
            raise KeyError(f"unknown agent {agent!r}; agents: {', '.join(spaces)}") from None

    def reset(self, seed: int | None = None, options: dict | None = None):
        options = options or {}
        if seed is not None or self._np_random is None:
            self._np_random = np.random.default_rng(seed)
            for i, agent in enumerate(self.possible_agents):
                self._act_spaces[agent].seed(None if seed is None else seed + 7919 * (i + 1))
        if seed is not None or options.get("reset_policies", False):
            for p in self._scripted:
                if hasattr(p.policy, "reset"):
                    p.policy.reset()
        self.agents = list(self.possible_agents)
        self.t = 0  # grid step (hour) within the episode
        self.round = 0  # market round within the grid step
        self.cycles = 0  # market rounds since reset
        self._rng = self._np_random
        self._last_clearing = None
        self._last_power_flow = None
        self._last_grid_report = None
        self._ac_obs: dict[str, tuple[float, float]] = {}
        self.day = self._choose_day(options)
        self.grid.reset()
        self.market.reset()
        self.start_episode(self._rng, options)
        self._begin_hour()
        observations = self.observations()
        infos = {a: self.reset_info(a) for a in self.agents}
        return observations, infos

    def step(self, actions: dict[str, Any]):
        if self._np_random is None:
            raise RuntimeError("call reset() before step()")
        if not isinstance(actions, dict):
            raise TypeError(f"actions must be a dict agent -> action, got "
                            f"{type(actions).__name__}")
        if not self.agents:
            if actions:
                raise RuntimeError("the episode is over: call reset()")
            # SuperSuit 3.11 steps once with {} after the episode ended; nothing happens.
            return {}, {}, {}, {}, {}
        agents = self.agents
        everyone = len(agents) == len(self._agent_index)  # nobody left early: the usual case
        if not (everyone and actions.keys() == self._obs_spaces.keys()):
            self._check_agents(actions)
        # Decode everything before any state changes: a bad action loses nothing.
        bids = dict(zip(agents, self._decode_all(agents, list(map(actions.__getitem__,
                                                                  agents)))))
        rewards, infos = self.run_round(bids)
        end = self.done
        observations = self.observations()
        terminations = dict.fromkeys(agents, False)
        truncations = dict.fromkeys(agents, bool(end))
        if everyone:
            if not self._agents_are_participants:
                rewards = rewards[self._agent_index]
            rewards = dict(zip(agents, rewards.tolist()))
        else:
            rewards = {a: float(rewards[self.index[a]]) for a in agents}
        infos = dict(zip(agents, map(infos.__getitem__, agents)))
        if end:
            self.agents = []
        if self.render_mode == "human":
            self.render()
        return observations, rewards, terminations, truncations, infos

    def _decode_all(self, agents: list[str], actions: list) -> list:
        """The agents' bids from their actions (same order): ``decode_rows`` at once where
        the environment can, else ``decode`` agent by agent (with ``invalid_bids="raise"``
        ``decode_checked``, which judges each bid), whose errors name the agent."""
        if not self._strict:
            bids = self.decode_rows(agents, actions)
            if bids is not None:
                return bids
        return list(map(self.decode_checked if self._strict else self.decode, agents, actions))

    def _check_agents(self, actions: dict) -> None:
        """``ValueError`` for an action of an unknown agent or an agent without one."""
        unknown = [a for a in actions if a not in self._obs_spaces]
        if unknown:
            raise ValueError(f"unknown agent id(s) {unknown}; agents are {self.agents}")
        missing = [a for a in self.agents if a not in actions]
        if missing:
            raise ValueError(f"a market round needs an action from every agent; missing "
                             f"{missing}")

    def close(self) -> None:
        pass

    @property
    def done(self) -> bool:
        """Whether the episode is over (``horizon`` grid steps or ``max_cycles`` rounds)."""
        return self.t >= self.horizon or self.cycles >= self.max_cycles

    def run_round(self, bids: dict[str, Any]) -> tuple[np.ndarray, dict[str, dict]]:
        """One market round with the agents' decoded bids (the scripted participants add
        theirs), then a grid step if it was the hour's last round. Returns every participant's
        reward (participant order) and the agents' infos. ``step`` calls it; so does a
        ``Simulation`` without learning agents."""
        if self._scripted:  # (the caller's dict stays as it is)
            bids = {**bids, **self.scripted_bids()}
        try:
            rewards, infos = self.market_step(bids)
        except InvalidBidError as exc:
            if self._bid_rule is not None or self._strict:
                raise
            raise InvalidBidError(
                f"{exc} ({type(self.market).__name__} has no repair(): it cannot repair "
                f"invalid bids, so invalid_bids='repair' cannot be honoured; pass "
                f"invalid_bids='raise' to refuse them, or give the market a repair method "
                f"(ogg_envs.api.Market))") from None
        final = self.round + 1 == self.market_rounds
        pf = iterations = None
        if final and (self.ac_feedback or self.loss_pricing):
            pf, rewards, infos, iterations = self._clear_with_feedback(bids, rewards, infos)
        self._update_policies(bids, rewards)
        self.round += 1
        self.cycles += 1
        for a in self.agents:
            infos[a]["grid_step"] = False
        if final:
            grid_infos = self._grid_step(pf, iterations or 0)
            rewards = np.array(rewards, dtype=float)
            for a in self.agents:
                infos[a].update(grid_infos[a])
                infos[a]["grid_step"] = True
                if self.ac_cost_weight:
                    rewards[self.index[a]] -= self.ac_cost_weight * grid_infos[a]["cost"]
            self.round = 0
            self.t += 1
            if self.t < self.horizon:
                self._begin_hour()
        return rewards, infos

    # ------------------------------------------------------------------ participants
    def _attach_policies(self, overrides: dict) -> None:
        groups = {p.group for p in self.participants}
        for key in overrides:
            if key not in groups and key not in self.participant:
                raise ValueError(f"policies: unknown group or participant {key!r}; groups: "
                                 f"{', '.join(sorted(groups))}; participants: "
                                 f"{', '.join(self.names)}")
        shared = {}  # a group's default policy when it is not adaptive: one object for all
        for p in self.participants:  # learners get one too: it is their baseline
            spec = overrides.get(p.name, overrides.get(p.group))
            policy = self.make_policy(p, spec)
            if spec is None and policy is not None and not getattr(policy, "adaptive", True):
                policy = shared.setdefault((p.group, type(policy)), policy)
            p.policy = policy
        learners = set(self.possible_agents)
        self._scripted = [p for p in self.participants if p.name not in learners]
        self._static = [p for p in self._scripted if not getattr(p.policy, "adaptive", True)]
        self._adaptive = [p for p in self._scripted if getattr(p.policy, "adaptive", True)]
        self._updating = [p for p in self._scripted if hasattr(p.policy, "update")]
        by_policy: dict[int, tuple] = {}  # the static participants that share a policy object
        for p in self._static:
            by_policy.setdefault(id(p.policy), (p.policy, []))[1].append(p)
        self._static_groups = list(by_policy.values())

    def make_policy(self, participant: Participant, spec):
        """The policy object for a participant from a ``policies`` entry (None: default)."""
        if spec is None:
            factory = self.default_policies.get(participant.group)
            return factory() if factory is not None else None
        if not callable(spec):
            raise ValueError(f"policies: {participant.name}: {spec!r} is not a policy "
                             "(a callable policy(participant, observation, info))")
        return spec

    def add_generator(self, p: Participant, kva: float) -> None:
        """Give a supplying participant an injection point (a generator) on the feeder."""
        self.grid.add_generator(p.name, p.bus, 0.0, kva=kva)
        p.state["generator"] = p.name
        if hasattr(self, "_generators"):  # after construction: dispatch must know it
            self._map_dispatch()

    def _map_dispatch(self) -> None:
        """What ``dispatch`` puts on the feeder: the demand side's quantities at their buses,
        the others' at their generators (participant rows and bus indices)."""
        demand = [k for k, p in enumerate(self.participants) if p.side == DEMAND]
        self._demand_rows = np.array(demand, dtype=int)
        self._demand_buses = np.array([self.topology.bus_index[self.participants[k].bus]
                                       for k in demand], dtype=int)
        self._generators = [(k, p.state["generator"]) for k, p in enumerate(self.participants)
                            if p.side != DEMAND and "generator" in p.state]

    def place(self, given: list | None, count: int, rule: str, where: str) -> list[str]:
        """Buses of ``count`` participants: the scenario's (``given``) or the default rule's
        (``ogg_envs.grid.placement``): ``"source"`` (the source bus), ``"main_path"`` (spread
        along the main feeder path), ``"load"`` (spread evenly over the load buses, several per bus
        when there are more participants than load buses) or ``"largest_load"`` (the load
        buses with the most load, one each)."""
        topo, loads = self.topology, self.grid.bus_load_kw
        if given is not None and not self.default_placement:
            buses = [str(b).lower() for b in given]
            for b in buses:
                if b not in topo.bus_index:
                    raise ValueError(f"scenario {where}: unknown bus {b!r}; buses of "
                                     f"{self.scenario.feeder}: {', '.join(topo.buses)}")
            return buses
        if rule == "source":
            return [placement.source_bus(topo)] * count
        if rule == "main_path":
            return placement.spread_along_main_path(topo, loads, count)
        load_buses = placement.load_buses(topo, loads)
        if rule == "largest_load":
            load_buses = sorted(load_buses, key=lambda b: -loads[topo.bus_index[b]])
        if rule == "load":  # evenly spread; round-robin when there are more than buses
            if count > len(load_buses):
                return [load_buses[i % len(load_buses)] for i in range(count)]
            step = len(load_buses) / count
            return [load_buses[int(i * step)] for i in range(count)]
        if count > len(load_buses):
            raise ValueError(f"{where}: {count} participants but the feeder has only "
                             f"{len(load_buses)} load buses")
        return load_buses[:count]

    def line_limits(self) -> dict[str, float]:
        """The market's line limits: the scenario's ``[grid.limits_kw]``, or by default the
        branches' thermal limits (``placement.default_limits_kw``)."""
        given = self.scenario.grid.limits_kw
        if given and not self.default_placement:
            for name in given:
                if name not in self.topology.branch_index:
                    raise ValueError(f"scenario [grid.limits_kw]: unknown branch {name!r}; "
                                     f"branches: {', '.join(self.topology.branch_index)}")
            return dict(given)
        return placement.default_limits_kw(self.topology)

    # ------------------------------------------------------------------ rounds
    def _begin_hour(self) -> None:
        self._static_bids: dict[str, Any] | None = None
        self._features = None
        self.start_hour()

    def is_bidding(self, participant: Participant) -> bool:
        """Whether a participant bids in this round (P2P: only the matched ones)."""
        return True

    def scripted_bids(self) -> dict[str, Any]:
        """Bids of the participants that are not learning agents, through their policies.

        A policy with ``adaptive = False`` depends only on its participant's record, so it is
        asked once per grid step (without an observation; several participants that share it
        at once, ``_ask_static``); others are asked every round with their observation. Every
        bid goes through ``decode`` like an agent's action (``decode_rows`` for a batch).
        """
        if not self._scripted:
            return {}
        info = {"rng": self._rng}
        if self._static_bids is None:
            self._static_bids = self._ask_static(info)
        out = dict(self._static_bids)
        for p in self._adaptive:
            if self.is_bidding(p):
                out[p.name] = self._ask(p, self.observe(p.name), info)
        return out

    def _ask_static(self, info: dict) -> dict[str, Any]:
        """The bids of the bidding participants whose policies are not adaptive, once per
        grid step: a policy object that several of them share and that has ``batch``
        (``ogg_envs.api``, "Policy") is asked once for all of them and its rows decoded at
        once (``decode_rows``); anything else, and anything those refuse, one participant at a
        time through ``decode`` (whose errors name the participant). The same bids either
        way."""
        asked = {}
        for policy, members in self._static_groups:
            bidding = [p for p in members if self.is_bidding(p)]
            batch = getattr(policy, "batch", None)
            rows = None
            if batch is not None and len(bidding) > 1 and not self._strict:
                rows = self.decode_rows([p.name for p in bidding], batch(bidding))
            if rows is not None:
                asked.update(zip([p.name for p in bidding], rows))
            else:
                for p in bidding:
                    asked[p.name] = self._ask(p, None, info)
        return {p.name: asked[p.name] for p in self._static if p.name in asked}

    def decode_rows(self, names: list[str], actions) -> list | None:
        """Several participants' actions at once (row k for ``names[k]``; a parallel step's
        actions as a list, a scripted policy's ``batch``), each exactly what ``decode`` makes of
        it, or None where this environment cannot or will not decode them at once (the
        default; anything ``decode`` would refuse): the caller then decodes row by row, and
        ``decode``'s error names the participant. Not asked with ``invalid_bids="raise"``
        (every bid is judged one by one then)."""
        return None

    def _ask(self, p: Participant, observation, info: dict):
        try:
            decode = self.decode_checked if self._strict else self.decode
            return decode(p.name, p.policy(p, observation, info))
        except ValueError as exc:
            raise ValueError(f"the policy of {p.name} returned an invalid bid: {exc}") from None

    def _update_policies(self, bids: dict, rewards: np.ndarray) -> None:
        if not self._updating:
            return
        info = {"rng": self._rng}
        for p in self._updating:
            if p.name in bids:
                p.policy.update(p, bids[p.name], float(rewards[self.index[p.name]]), info)

    # ------------------------------------------------------------------ invalid bids
    def bid_rule(self):
        """The rule ``checked_bids`` applies: the market's ``repair`` (``ogg_envs.api.Market``),
        or None when it has none (module docstring, "Invalid bids"). Asked once, at
        construction."""
        return getattr(self.market, "repair", None)

    def bid_limits(self) -> np.ndarray | None:
        """This hour's largest valid bid quantity per participant (participant order), the
        ``q_limit`` of the market's repair; None (the default): none beyond the market's."""
        return None

    def checked_bids(self, bids: np.ndarray, q_limit=None, names=None):
        """A round's bids (an array, one row per participant, or per name of ``names``) as
        the market takes them, and what was repaired (``{name: [changes]}``, the agents'
        ``infos[agent]["bid_repairs"]``): with ``invalid_bids="repair"`` the market's nearest
        valid bids; with ``"raise"`` the bids themselves, or ``InvalidBidError`` naming the
        first invalid one. ``q_limit``: each row's largest valid quantity (``bid_limits``).
        A market without ``repair``: the bids as given (its ``clear`` judges them)."""
        rule = self._bid_rule
        if rule is None:
            return bids, {}
        return rule(bids, q_limit, names=names, strict=self._strict)

    def decode_checked(self, agent: str, action):
        """``decode``, then with ``invalid_bids="raise"`` the market's rule on this one bid
        (``InvalidBidError`` naming the agent): every bid is judged before anything
        changes."""
        bid = self.decode(agent, action)
        if self._strict and self._bid_rule is not None:
            limits = self.bid_limits()
            k = self.index[agent]
            self.checked_bids(np.reshape(bid, (1, -1)),
                              None if limits is None else limits[k:k + 1], names=(agent,))
        return bid

    def per_round(self, hourly: np.ndarray) -> np.ndarray:
        """An hour's profit as the reward of one round: an hour contributes one hour's profit
        to the return whatever the number of rounds."""
        return hourly / self.market_rounds

    def set_clearing(self, clearing) -> None:
        """Record a round's clearing (``last_clearing``)."""
        self._last_clearing = clearing
        self._congested = frozenset(clearing.congested)

    def clearing_infos(self, clearing, profit_usd: np.ndarray, bids: np.ndarray,
                       repairs: dict) -> dict[str, dict]:
        """The infos every curve-like market reports per agent after a round."""
        price = clearing.participant_prices.tolist()
        qty = clearing.participant_quantities.tolist()
        profit = profit_usd.tolist()
        congested = set(clearing.congested)
        own = np.array(bids, dtype=float)  # one copy for the round: the agents get its rows
        bid_of = own.__getitem__ if own.ndim > 1 else lambda k: np.array(own[k])
        infos = {}
        for agent in self.agents:
            k = self.index[agent]
            infos[agent] = {
                "price": price[k], "quantity": qty[k], "profit": profit[k],
                "congested": sorted(self.paths[agent] & congested) if congested else [],
                "feasible": clearing.feasible, "bid": bid_of(k),
            }
            if agent in repairs:
                infos[agent]["bid_repairs"] = repairs[agent]
        return infos

    def congested_on_path(self, name: str) -> bool:
        """Whether the last clearing congested a branch between ``name`` and the source."""
        return self._last_clearing is not None and not self.paths[name].isdisjoint(
            self._congested)

    def hour_features(self) -> tuple[float, float, float, float]:
        """``sin`` and ``cos`` of the hour of day, episode progress and the round within the
        hour: the first four observation entries of every environment."""
        kept = self._features  # ((t, round), features), the hour's part reused every round
        if kept is None or kept[0] != (self.t, self.round):
            if kept is not None and kept[0][0] == self.t:
                hour = kept[1][:3]
            else:
                h = self.hour_of(self.t)
                hour = (math.sin(2 * math.pi * h / 24), math.cos(2 * math.pi * h / 24),
                        min(self.t / self.horizon, 1.0))
            kept = self._features = ((self.t, self.round),
                                     (*hour, self.round / self.market_rounds))
        return kept[1]

    # ------------------------------------------------------------------ grid step
    def dispatch(self, clearing) -> tuple[np.ndarray, dict[str, float]]:
        """What the final clearing puts on the feeder: kW consumed per topology bus (the
        demand side's quantities at their buses) and kW per participant generator."""
        q = clearing.participant_quantities
        consumption = np.bincount(self._demand_buses, q[self._demand_rows],
                                  minlength=len(self.topology.buses))  # summed in row order
        consumption = consumption.astype(float, copy=False)  # (int when nobody consumes)
        return consumption, {name: float(q[k]) for k, name in self._generators}

    def grid_step(self):
        """Apply the final clearing to the feeder and solve it; the power flow."""
        consumption, generation = self.dispatch(self._last_clearing)
        self.grid.apply(consumption, generation)
        return self.grid.solve()

    def _clear_with_feedback(self, bids: dict, rewards, infos):
        """The AC corrections of the hour's final round (``ac_feedback``, ``loss_pricing``;
        module docstring): solve; while a market-limited branch is over ``limit x (1 +
        ac_tol)`` (``ac_feedback``) correct the market's limits by the AC flow offsets, and
        while the losses the clearing scheduled miss OpenDSS's by more than ``ac_tol`` of them
        (``loss_pricing``) hand the market this solution's loss model (from the second one
        on with the secant factors: the mean of the last two solutions'); clear again with the
        same bids, up to ``ac_max_iterations`` times, or until nothing would change. Returns
        the last power flow, rewards, infos and the number of re-clearings; the hour's limits
        and the lossless market are restored whatever happens."""
        limits = np.asarray(self.market.limits_kw, dtype=float) if self.ac_feedback else None
        idx = np.flatnonzero(np.isfinite(limits)) if self.ac_feedback else np.zeros(0, int)
        names = [self.topology.branches[i].name for i in idx]
        pf, current, iterations, priced = self.grid_step(), limits, 0, False
        try:
            while iterations < self.ac_max_iterations and pf.converged:
                corrected = None
                if len(idx):
                    ac = self.grid.branch_flows(pf, names).real
                    if (np.abs(ac) > limits[idx] * (1 + self.ac_tol)).any():
                        linear = self.topology.flows(self.grid.net_injection_kw())[idx]
                        offset = np.maximum(np.abs(ac) - np.abs(linear), 0.0)
                        corrected = limits.copy()
                        corrected[idx] = np.maximum(limits[idx] - offset, 0.0)
                        if np.allclose(corrected, current, rtol=0.0, atol=1e-6):
                            corrected = None  # the same limits would clear the same way
                scheduled = getattr(self._last_clearing, "losses_kw", 0.0)
                reprice = self.loss_pricing and \
                    abs(pf.losses_kw - scheduled) > self.ac_tol * abs(pf.losses_kw)
                if corrected is None and not reprice:
                    break
                if corrected is not None:
                    self.market.set_limits(corrected)
                    current = corrected
                if reprice:
                    factors = marginal_loss_factors(self.grid, pf)
                    if priced:  # the secant slope between the last two solutions
                        factors = 0.5 * (factors + self.market.losses.factors)
                    self.market.set_losses(factors, pf.losses_kw, self.grid.net_injection_kw())
                    priced = True
                rewards, infos = self.market_step(bids)
                pf = self.grid_step()
                iterations += 1
        finally:
            if current is not limits:
                self.market.set_limits(limits)
            if priced:
                self.market.set_losses(None)
        return pf, rewards, infos, iterations

    def grid_report(self, pf, iterations: int = 0) -> GridReport:
        """The AC outcome of a power flow against the market's model (``GridReport``)."""
        limits = np.asarray(getattr(self.market, "limits_kw", ()), dtype=float)
        idx, names = self._limited_branches(limits)
        p = self.grid.net_injection_kw()
        cleared_losses = float(getattr(self._last_clearing, "losses_kw", 0.0))
        cleared = cleared_losses - float(p.sum())
        lim = limits[idx]
        if not len(idx):  # a market without limits (P2P): no branch to load
            s, linear, loading = np.zeros(0, dtype=complex), np.zeros(0), np.zeros(0)
        else:
            if pf.converged:
                s = self.grid.branch_flows(pf, names)
                linear = self.topology.flows(p)[idx]
            else:
                s = np.full(len(idx), complex(math.nan, math.nan))
                linear = np.full(len(idx), math.nan)
            flow = np.abs(s.real)
            loading = np.where(flow > 1e-9, math.inf, 0.0)  # where a branch's limit is 0
            np.divide(flow, lim, out=loading, where=lim > 0)
        over = tuple(compress(names, (loading > 1 + self.ac_tol).tolist()))
        return GridReport(
            converged=pf.converged, branches=names, flow_kw=s.real, flow_kvar=s.imag,
            apparent_kva=np.abs(s), limit_kw=lim, market_flow_kw=linear, loading=loading,
            overloaded=over,
            voltage_violations=pf.bus_voltage_violations() if pf.voltage_violations else {},
            losses_kw=pf.losses_kw, substation_kw=pf.substation_kw, cleared_source_kw=cleared,
            unscheduled_kw=pf.substation_kw - cleared, feedback_iterations=iterations,
            tol=self.ac_tol, cleared_losses_kw=cleared_losses)

    _limited = None  # the last _limited_branches answer, with what it was computed for
    _on_path = None  # the last _path_positions answer, with the names it is for

    def _limited_branches(self, limits: np.ndarray) -> tuple[np.ndarray, tuple]:
        """The branches the market limits (finite ``limits``): their topology indices and
        names, recomputed only when which branches are limited changes, not every hour."""
        finite = np.isfinite(limits).tobytes()
        cached = self._limited
        if cached is None or cached[0] != finite or cached[1] is not self.topology:
            idx = np.flatnonzero(np.isfinite(limits))
            cached = (finite, self.topology, idx,
                      tuple(self.topology.branches[i].name for i in idx))
            self._limited = cached
        return cached[2:]

    def _path_positions(self, names: tuple) -> dict[str, list[int]]:
        """Per participant, where the branches of its path sit in ``names`` (a grid report's
        limited branches), in the order of its path's set (the order the cost sums in)."""
        if self._on_path is None or self._on_path[0] != names:
            at = {n: k for k, n in enumerate(names)}
            self._on_path = (names, {a: [at[b] for b in path if b in at]
                                     for a, path in self.paths.items()})
        return self._on_path[1]

    def _grid_step(self, pf=None, iterations: int = 0) -> dict[str, dict]:
        if pf is None:
            pf = self.grid_step()
        self._last_power_flow = pf
        report = self.grid_report(pf, iterations)
        self._last_grid_report = report
        bus_viol = report.voltage_violations
        on_path = self._path_positions(report.branches)
        # Thermal checks: the market's limit where it sets one, OpenDSS's rating elsewhere.
        overloads = set(report.overloaded)
        if pf.thermal_overloads:
            overloads |= {self._element_branch.get(el, el) for el in pf.thermal_overloads} \
                - set(report.branches)
        loading = report.loading.tolist()
        excess = np.maximum(report.loading - 1.0, 0.0).tolist()  # each branch's share of a cost
        low, high = self.grid.voltage_band
        voltages = pf.bus_voltages() if self.observe_ac else {}
        extra = self.grid_step_infos(pf)
        infos = {}
        for agent in self.agents:
            bus = self.participant[agent].bus
            on = on_path[agent]  # often empty (P2P): then no list to build
            worst = max(map(loading.__getitem__, on)) if on else 0.0
            if not pf.converged:
                cost = 1.0
            else:
                cost = sum(map(excess.__getitem__, on)) if on else 0  # sum of none: the int 0
                if bus in bus_viol:
                    cost += max(low - bus_viol[bus], bus_viol[bus] - high, 0.0)
            infos[agent] = {
                "converged": pf.converged,
                "voltage_violations": {bus: bus_viol[bus]} if bus in bus_viol else {},
                "thermal_overloads": sorted(self.paths[agent] & overloads) if overloads else [],
                "path_loading": worst,
                "substation_kw": pf.substation_kw,
                "losses_kw": pf.losses_kw,
                "cleared_losses_kw": report.cleared_losses_kw,
                "unscheduled_kw": report.unscheduled_kw,
                "ac_iterations": iterations,
                "cost": cost,
            }
            infos[agent].update(extra.get(agent, {}))
            if self.observe_ac and pf.converged:  # a failed power flow keeps the last ones
                v = voltages.get(bus, 1.0)
                self._ac_obs[agent] = (float(clip_unit((v - 1.0) / 0.1)),
                                       float(clip_unit(worst - 1.0)))
        return infos

    # ------------------------------------------------------------------ observation
    def observations(self) -> dict[str, np.ndarray]:
        """Every agent's observation (``observation``); from the rows of ``observe_all`` in
        one go where the environment builds them at once."""
        rows = None if self.observe_ac else self.observe_all()
        if rows is None:  # (without AC features an observation is observe's)
            observe = self.observation if self.observe_ac else self.observe
            return dict(zip(self.agents, map(observe, self.agents)))
        if len(self.agents) == len(self._agent_index):  # nobody left early: the usual case
            rows = rows.copy() if self._agents_are_participants else rows[self._agent_index]
            return dict(zip(self.agents, rows))  # (rows of one new array)
        return {a: rows[self.index[a]].copy() for a in self.agents}

    def observe_all(self) -> np.ndarray | None:
        """Every participant's observation as rows in participant order (each row what
        ``observe`` returns), where the environment builds them at once; None (the default):
        ``observe`` is asked agent by agent. Parallel steps hand out these rows without
        asking ``observe``: an environment that changes ``observe`` changes this too."""
        return None

    def observation(self, name: str) -> np.ndarray:
        """An agent's observation: ``observe(name)``, followed with ``observe_ac`` by the AC
        features of the last grid step (module docstring)."""
        obs = self.observe(name)
        if not self.observe_ac:
            return obs
        ac = self._ac_obs.get(name, (0.0, -1.0))
        return np.concatenate([obs, np.asarray(ac, dtype=obs.dtype)])

    def _with_ac_features(self, space: gymnasium.Space, agent: str) -> gymnasium.Space:
        if not self.observe_ac:
            return space
        if not isinstance(space, gymnasium.spaces.Box) or len(space.shape) != 1:
            raise ValueError(f"observe_ac=True needs flat Box observations; {agent} has "
                             f"{space}")
        one = np.ones(AC_FEATURES, dtype=space.dtype)
        return gymnasium.spaces.Box(np.concatenate([space.low, -one]),
                                    np.concatenate([space.high, one]),
                                    (space.shape[0] + AC_FEATURES,), space.dtype)

    def grid_step_infos(self, pf) -> dict[str, dict]:
        """Environment-specific infos after a grid step (agent -> dict)."""
        return {}

    # ------------------------------------------------------------------ rendering
    def render(self):
        if self.render_mode is None or self._last_clearing is None:
            return None
        if self.render_mode == "human":
            print(self.render_text())
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 5))
        self.render_map(ax)
        fig.canvas.draw()
        img = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
        plt.close(fig)
        return img

    def render_text(self) -> str:
        c = self._last_clearing
        return (f"hour {self.t} round {self.round}: congested {c.congested or 'none'}, "
                f"welfare {c.welfare / 100:.2f} $")

    def render_map(self, ax) -> None:
        c = self._last_clearing
        prices = {}
        for p, v in zip(self.participants, c.participant_prices.tolist()):
            prices[p.bus] = v
        self.grid.draw(prices, ax=ax, label="¢/kWh", title=f"hour {self.t}",
                       highlight_branches=c.congested)

    def reset_info(self, name: str) -> dict:
        p = self.participant[name]
        return {"bus": p.bus, "group": p.group, "q_limit_now": p.limits.q_now}

    # ------------------------------------------------------------------ hooks
    def rounds_of(self, scenario) -> int:
        """Market rounds per grid step when the constructor leaves it to the scenario."""
        return 1

    def make_participants(self) -> list[Participant]:
        raise NotImplementedError

    def make_market(self):
        raise NotImplementedError

    def action_space_of(self, participant: Participant) -> gymnasium.Space:
        raise NotImplementedError

    def observation_space_of(self, participant: Participant) -> gymnasium.Space:
        raise NotImplementedError

    def start_episode(self, rng: np.random.Generator, options: dict) -> None:
        """The episode's random draws (private truth, noise); the grid is already reset."""

    def start_hour(self) -> None:
        """This hour's limits and data (``self.t`` is the grid step)."""

    def decode(self, agent: str, action):
        """Turn an action into a bid; ``ValueError`` naming the agent if it is unusable."""
        raise NotImplementedError

    def market_step(self, bids: dict[str, Any]) -> tuple[np.ndarray, dict[str, dict]]:
        """Clear the round (``set_clearing``); rewards of every participant (participant
        order) and the infos of the agents."""
        raise NotImplementedError

    def observe(self, name: str) -> np.ndarray:
        raise NotImplementedError
