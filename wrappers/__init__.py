"""Wrappers that put the OpenGridGym markets into standard action spaces for off-the-shelf
trainers (installed as ``ogg_envs.wrappers``).

* ``normalized_bids_v0(env)``: bid quadruples and cost curves as ``Box(-1, 1, (k,))``, valid
  by construction, by the ``codec`` of the environment's registered spec
  (``ogg_envs.wrappers.bids`` documents the parametrisations and their inverses);
* ``arms_as_box_v0(env)``: bandit arms as ``Box(-1, 1, (1,))`` for a common action type;
* ``no_infos_v0(env)``: an empty info dict per agent, for trainers that never read them (their
  vector envs would pickle, send and copy every one: ``ogg_envs.wrappers.infos``);
* single-agent Gymnasium views, registered on import under the ``opengridgym`` namespace
  (``gymnasium.make("opengridgym/TopologyPower-Supplier-v0")``, see
  ``ogg_envs.wrappers.single_agent``; a registered environment's ``gym_views`` too).
"""

from ogg_envs.wrappers.bids import (
    ArmCodec,
    BlockPriceCodec,
    CurveBidCodec,
    arms_as_box_v0,
    codec_for,
    normalized_bids_v0,
)
from ogg_envs.wrappers.infos import no_infos_v0
from ogg_envs.wrappers.single_agent import (
    GYM_IDS,
    SingleAgentMarketEnv,
    gym_views,
    register_gymnasium_envs,
)

register_gymnasium_envs()

__all__ = ["normalized_bids_v0", "arms_as_box_v0", "no_infos_v0", "CurveBidCodec",
           "BlockPriceCodec", "ArmCodec", "codec_for", "SingleAgentMarketEnv", "GYM_IDS",
           "gym_views", "register_gymnasium_envs"]
