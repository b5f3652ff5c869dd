"""Empty infos for trainers that never read them.

Every OpenGridGym environment reports a rich info dict per agent and step (price, quantity,
profit, the bid as cleared, congestion, and after each grid step the AC outcome). Analysis
needs them; PPO does not. A vector environment pays for them anyway: SuperSuit's worker
processes pickle every agent's info of every step, send it to the trainer's process, which
unpickles and deep-copies it; RLlib keeps them in its episodes and ships them from remote env
runners to the driver. ``no_infos_v0(env)`` hands every agent an empty dict instead (a new one
each step: vector envs add their own keys, such as ``terminal_observation``). Observations,
rewards, terminations and truncations are the environment's, unchanged, so a training run is
the same with or without it; only what nobody reads is gone.

    from ogg_envs.envs import topology_power_v0
    from ogg_envs.wrappers import no_infos_v0, normalized_bids_v0

    env = normalized_bids_v0(no_infos_v0(topology_power_v0.parallel_env()))
    obs, infos = env.reset(seed=0)  # infos == {agent: {} for agent in env.agents}

The trainers of ``ogg_envs.baselines`` (``sb3_ppo``, ``rllib_ppo``) wrap their environments so.
Parallel environments only: an AEC environment's infos are read where they are kept
(``env.infos``), and trainers step parallel ones.
"""

from __future__ import annotations

from pettingzoo import ParallelEnv
from pettingzoo.utils.wrappers import BaseParallelWrapper

__all__ = ["no_infos_v0"]


class _NoInfos(BaseParallelWrapper):
    def __init__(self, env: ParallelEnv):
        super().__init__(env)
        self.metadata = env.metadata

    def reset(self, seed=None, options=None):
        observations, infos = self.env.reset(seed=seed, options=options)
        return observations, {agent: {} for agent in infos}

    def step(self, actions):
        observations, rewards, terminations, truncations, infos = self.env.step(actions)
        return observations, rewards, terminations, truncations, {agent: {} for agent in infos}


def no_infos_v0(env: ParallelEnv) -> ParallelEnv:
    """``env`` (a parallel environment) with an empty info dict for every agent (module
    docstring)."""
    if not isinstance(env, ParallelEnv):
        raise TypeError(f"no_infos_v0 wraps a parallel environment, got {type(env).__name__} "
                        "(make one with parallel_env(), or ogg_envs.make(id, parallel=True))")
    return _NoInfos(env)
