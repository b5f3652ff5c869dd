"""Single-agent Gymnasium views: one learning participant, everyone else on baseline policies.

``gymnasium.make("opengridgym/TopologyPower-Supplier-v0")`` is a plain ``gymnasium.Env`` for
single-agent algorithms (SB3 PPO, SAC, DQN): the environment is built with ``learners=[agent]``
so every other participant acts through the environment's ``policies`` (truthful bidders, the
substation's flat offer, UCB prosumers...). One ``step`` is one market round (one negotiation
step in p2p); the episode ends (``truncated=True``) when the market's episode ends.

Registered ids (on ``import ogg_envs.wrappers``), with their default learning participant (an
environment registered with ``gym_views`` adds its own, see ``gym_views``):

================================================  ===================  =====================
id                                                agent                market
================================================  ===================  =====================
``opengridgym/TopologyPower-Supplier-v0``         ``supplier_3``       topology-power-v0
``opengridgym/TopologyPower-Consumer-v0``         ``consumer_0``       topology-power-v0
``opengridgym/P2P-Prosumer-v0``                   ``prosumer_0``       p2p-v0
``opengridgym/DLMP-Generator-v0``                 ``generator_0``      dlmp-v0
``opengridgym/DLMP-DR-v0``                        ``dr_0``             dlmp-v0
================================================  ===================  =====================

``supplier_3`` sits behind the 832-888 transformer: it is the supplier with topology-induced
market power. Any keyword is passed on: ``agent=`` picks another participant, ``normalize=``
(default True) applies ``normalized_bids_v0`` so that the action space is ``Box(-1, 1, (k,))``
and valid by construction (False: the raw physical bid), and everything else (``scenario``,
``market_rounds``, ``policies``, ...) goes to the market environment.
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np

import ogg_envs
from ogg_envs.wrappers.bids import normalized_bids_v0

__all__ = ["SingleAgentMarketEnv", "GYM_IDS", "gym_views", "register_gymnasium_envs",
           "baseline_returns"]

GYM_IDS = {
    "opengridgym/TopologyPower-Supplier-v0": ("opengridgym/topology-power-v0", "supplier_3"),
    "opengridgym/TopologyPower-Consumer-v0": ("opengridgym/topology-power-v0", "consumer_0"),
    "opengridgym/P2P-Prosumer-v0": ("opengridgym/p2p-v0", "prosumer_0"),
    "opengridgym/DLMP-Generator-v0": ("opengridgym/dlmp-v0", "generator_0"),
    "opengridgym/DLMP-DR-v0": ("opengridgym/dlmp-v0", "dr_0"),
}


class SingleAgentMarketEnv(gymnasium.Env):
    """One participant of a market env as a Gymnasium env (see the module docstring)."""

    # Class level: gymnasium.make reads it before building the env. A market's frames are
    # hourly, so 1 frame per second is the natural replay speed.
    metadata = {"render_modes": ["human", "rgb_array"], "render_fps": 1}

    def __init__(self, env_id: str, agent: str, normalize: bool = True,
                 render_mode: str | None = None, **env_kwargs: Any):
        if "learners" in env_kwargs:
            raise ValueError("SingleAgentMarketEnv sets learners itself; pass agent= instead")
        par = ogg_envs.make(env_id, parallel=True, learners=[agent], render_mode=render_mode,
                            **env_kwargs)
        self.market = par
        self.par_env = normalized_bids_v0(par) if normalize else par
        self.agent = agent
        self.render_mode = render_mode
        self.observation_space = self.par_env.observation_space(agent)
        self.action_space = self.par_env.action_space(agent)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self.action_space.seed(seed)
        obs, infos = self.par_env.reset(seed=seed, options=options)
        return obs[self.agent], infos[self.agent]

    def step(self, action):
        if not self.market.agents:
            raise RuntimeError("step() after the episode ended: call reset()")
        if isinstance(self.action_space, gymnasium.spaces.Discrete):
            action = int(np.asarray(action).reshape(-1)[0])
        obs, rewards, terms, truncs, infos = self.par_env.step({self.agent: action})
        a = self.agent
        return obs[a], rewards[a], bool(terms[a]), bool(truncs[a]), infos[a]

    def render(self):
        return self.par_env.render()

    def close(self):
        self.par_env.close()


def gym_views() -> dict[str, tuple[str, str, dict]]:
    """Every single-agent view: ``GYM_IDS`` and the ``gym_views`` of the registered specs
    (``ogg_envs.register(..., gym_views={"mylab/PayAsBid-Supplier-v0": {"agent":
    "supplier_0", ...}})``: the agent and any keyword for the view), as gym id -> (env id,
    agent, extra keywords)."""
    views = {gym_id: (env_id, agent, {}) for gym_id, (env_id, agent) in GYM_IDS.items()}
    for spec in ogg_envs.ENVIRONMENTS.values():
        for gym_id, kwargs in spec.gym_views.items():
            kwargs = dict(kwargs)
            if "agent" not in kwargs:
                raise ValueError(f"{spec.id}: gym view {gym_id!r} names no agent")
            views[gym_id] = (spec.id, kwargs.pop("agent"), kwargs)
    return views


def register_gymnasium_envs() -> None:
    """Register every view of ``gym_views()`` with Gymnasium (idempotent; call it again after
    registering an environment with ``gym_views``)."""
    for gym_id, (env_id, agent, extra) in gym_views().items():
        if gym_id not in gymnasium.registry:
            gymnasium.register(id=gym_id, entry_point=f"{__name__}:SingleAgentMarketEnv",
                               kwargs={"env_id": env_id, "agent": agent, **extra})


def baseline_returns(view, seeds) -> list[float]:
    """Episode returns of the view's participant when it follows its own default policy (the
    one the market would give it as a non-learner), on the raw market, for each seed.

    The policy is called like every policy (``ogg_envs.api.Policy``): ``policy(participant,
    observation, info)`` with a copy of the participant's record taken before the step and
    ``info`` = the market's last ``infos[agent]`` plus ``rng``; ``update(participant, action,
    reward, info)`` after the step with that step's info."""
    view = getattr(view, "unwrapped", view)
    market, agent = view.market, view.agent
    policy = market.participant[agent].policy
    if policy is None:
        raise ValueError(f"{agent} has no default policy in {type(market).__module__}")
    update = getattr(policy, "update", None)
    rng = np.random.default_rng(0)
    returns = []
    for seed in seeds:
        obs, infos = market.reset(seed=seed)
        if hasattr(policy, "reset"):
            policy.reset()
        total = 0.0
        while market.agents:
            participant = market.participant[agent].copy()
            action = policy(participant, obs[agent], {**infos.get(agent, {}), "rng": rng})
            obs, rewards, _, _, infos = market.step({agent: action})
            total += rewards[agent]
            if update is not None:
                update(participant, action, rewards[agent], {**infos[agent], "rng": rng})
        returns.append(total)
    return returns
