"""The environment core shared by every OpenGridGym market.

Two timescales, as in the OpenGridGym paper:

* a **market round** is one bid per active agent. In the parallel API it is one ``step``; in the
  AEC API it is one turn per agent, and the round is executed after the last turn. Every round
  ends with a *market step*: a tentative clearing that gives every participant a price and a
  quantity, and the rewards;
* after ``market_rounds`` rounds the market clears for real: the dispatch of the last clearing
  is applied to the OpenDSS feeder and the power flow is solved. That is one *grid step*. An
  episode is ``horizon`` grid steps (one per hour of the scenario's day by default).

A concrete environment subclasses :class:`MarketEnv` and implements the hooks at the bottom
(participants, spaces, how an action becomes a bid, the market step, the grid step, the
observation). Participants that are not learning agents act inside ``step`` through policies
from ``ogg_envs.baselines``. All agents truncate together at the end of the episode (or after
``max_cycles`` rounds); nobody terminates early, which keeps SuperSuit and RLlib simple.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import gymnasium
import numpy as np
from pettingzoo import ParallelEnv
from pettingzoo.utils.conversions import parallel_to_aec

from ogg_envs.scenario import check_horizon, load_profiles, load_scenario

__all__ = ["MarketEnv", "Participant", "select_learners", "aec_from_parallel"]


@dataclass
class Participant:
    """A market participant: a learning agent or an exogenous/scripted one.

    ``name`` is ``<group>_<index>`` (e.g. ``supplier_2``) so that trainers can group agents by
    prefix. ``private`` holds what only the participant knows (true cost or utility
    parameters); the environment uses it for rewards and scripted policies, never shows it to
    other agents.
    """

    name: str
    group: str
    bus: str
    private: dict[str, Any] = field(default_factory=dict)
    policy: Any = None  # for non-learning participants: a callable (participant, obs, rng)


def select_learners(participants: Iterable[Participant], learners) -> list[str]:
    """Resolve ``learners`` (group names and/or participant names) to participant names.

    ``learners`` may be a string or a list of strings; each entry is either a group
    (``"supplier"``) or a name (``"consumer_3"``). An entry that matches nothing raises
    ``ValueError`` listing the valid groups and names.
    """
    participants = list(participants)
    if isinstance(learners, str):
        learners = [learners]
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
        raise ValueError("learners selects no participant: at least one agent must learn")
    return [p.name for p in participants if p.name in chosen]


def aec_from_parallel(par_env: ParallelEnv):
    """The AEC view of a market env: one turn per agent, the round runs after the last turn.

    ``parallel_to_aec`` buffers each agent's bid and executes the round when the last agent
    has acted, which is exactly the market round; it also adds the order-enforcing wrapper.
    """
    return parallel_to_aec(par_env)


class MarketEnv(ParallelEnv):
    """Parallel-API base class of the three markets. See the module docstring."""

    metadata: dict[str, Any] = {"render_modes": ["human", "rgb_array"], "is_parallelizable": True}

    def __init__(self, *, scenario, market_rounds: int, horizon: int | None,
                 max_cycles: int | None, render_mode: str | None, default_horizon: int = 24,
                 invalid_bids: str | None = None):
        """Load the scenario (``self.scenario``, ``self.profiles``) and set the timescales.

        ``horizon=None`` takes the scenario's ``horizon`` (else ``default_horizon``).
        ``invalid_bids`` ("repair" or "raise"), for markets that repair bids, is validated and
        kept as ``self.invalid_bids``.
        """
        self.scenario = load_scenario(scenario)
        horizon = horizon or self.scenario.get("horizon", default_horizon)
        if invalid_bids is not None and invalid_bids not in ("repair", "raise"):
            raise ValueError(f"invalid_bids must be 'repair' or 'raise', got {invalid_bids!r}")
        self.invalid_bids = invalid_bids
        if int(market_rounds) < 1:
            raise ValueError(f"market_rounds must be >= 1, got {market_rounds}")
        if int(horizon) < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}")
        self.market_rounds = int(market_rounds)
        self.horizon = int(horizon)
        self.max_cycles = int(max_cycles) if max_cycles is not None else \
            self.market_rounds * self.horizon
        self.render_mode = render_mode
        self.agents: list[str] = []
        self._obs_spaces: dict[str, gymnasium.Space] = {}
        self._act_spaces: dict[str, gymnasium.Space] = {}
        self._np_random: np.random.Generator | None = None
        self._seed: int | None = None
        self.profiles = load_profiles(self.scenario)
        check_horizon(self.profiles, self.horizon)

    # ------------------------------------------------------------------ PettingZoo API
    def observation_space(self, agent: str) -> gymnasium.Space:
        return self._obs_spaces[agent]

    def action_space(self, agent: str) -> gymnasium.Space:
        return self._act_spaces[agent]

    def reset(self, seed: int | None = None, options: dict | None = None):
        if seed is not None or self._np_random is None:
            self._np_random = np.random.default_rng(seed)
            self._seed = seed
            for i, agent in enumerate(self.possible_agents):
                self._act_spaces[agent].seed(None if seed is None else seed + 7919 * (i + 1))
        self.agents = list(self.possible_agents)
        self.t = 0  # grid step (hour) within the episode
        self.round = 0  # market round within the grid step
        self.cycles = 0  # market rounds since reset
        self._start_episode(self._np_random, options or {})
        observations = {a: self._observe(a) for a in self.agents}
        infos = {a: self._reset_info(a) for a in self.agents}
        return observations, infos

    def step(self, actions: dict[str, Any]):
        if not self.agents:
            # SuperSuit 3.11 steps once with {} after the episode ended; nothing happens.
            return {}, {}, {}, {}, {}
        unknown = [a for a in actions if a not in self._obs_spaces]
        if unknown:
            raise ValueError(f"unknown agent id(s) {unknown}; agents are {self.agents}")
        missing = [a for a in self.agents if a not in actions]
        if missing:
            raise ValueError(f"a market round needs an action from every agent; missing "
                             f"{missing}")
        # Decode everything before any state changes: a bad action loses nothing.
        bids = {a: self._decode(a, actions[a]) for a in self.agents}
        bids.update(self._scripted_bids())
        rewards, infos = self._market_step(bids)
        self.round += 1
        self.cycles += 1
        for a in self.agents:
            infos[a]["grid_step"] = False
        if self.round == self.market_rounds:
            grid_infos = self._grid_step()
            for a in self.agents:
                infos[a].update(grid_infos.get(a, {}))
                infos[a]["grid_step"] = True
            self.round = 0
            self.t += 1
            if self.t < self.horizon:
                self._next_grid_step()
        end = self.t >= self.horizon or self.cycles >= self.max_cycles
        observations = {a: self._observe(a) for a in self.agents}
        terminations = dict.fromkeys(self.agents, False)
        truncations = dict.fromkeys(self.agents, bool(end))
        rewards = {a: float(rewards[a]) for a in self.agents}
        infos = {a: infos[a] for a in self.agents}
        if end:
            self.agents = []
        if self.render_mode == "human":
            self.render()
        return observations, rewards, terminations, truncations, infos

    def close(self) -> None:
        pass

    # ------------------------------------------------------------------ hooks
    def _start_episode(self, rng: np.random.Generator, options: dict) -> None:
        raise NotImplementedError

    def _decode(self, agent: str, action) -> Any:
        """Turn an action into a bid; ``ValueError`` naming the agent if it is unusable."""
        raise NotImplementedError

    def _scripted_bids(self) -> dict[str, Any]:
        """Bids of the participants that are not learning agents."""
        return {}

    def _market_step(self, bids: dict[str, Any]) -> tuple[dict[str, float], dict[str, dict]]:
        raise NotImplementedError

    def _grid_step(self) -> dict[str, dict]:
        raise NotImplementedError

    def _next_grid_step(self) -> None:
        """Called after a grid step when the episode goes on (``self.t`` is the new hour)."""

    def _observe(self, agent: str) -> np.ndarray:
        raise NotImplementedError

    def _reset_info(self, agent: str) -> dict:
        return {}
