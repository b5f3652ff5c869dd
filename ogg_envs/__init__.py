"""OpenGridGym: multi-agent RL environments for distribution electricity markets.

    import ogg_envs
    env = ogg_envs.make("opengridgym/topology-power-v0")              # AEC
    par = ogg_envs.make("opengridgym/topology-power-v0", parallel=True)
    par = ogg_envs.make("opengridgym/dlmp-v0", parallel=True, feeder="ieee34")

Importing the package registers every environment with PettingZoo, so
``pettingzoo.make("aec" | "parallel", "opengridgym/topology-power-v0")`` works too. The
building blocks (Grid, Market, Participant, Policy) are in ``ogg_envs.api``; the environment
core in ``ogg_envs.core``; ``ogg_envs.register`` adds a user's environment to every tool.
"""

from __future__ import annotations

from ogg_envs.registry import ENVIRONMENTS, EnvSpec, env_module, make, register, spec

__version__ = "0.2.0"

__all__ = ["make", "register", "spec", "env_module", "EnvSpec", "ENVIRONMENTS", "__version__"]


def _curve_baselines():
    from ogg_envs.policies import curve

    return {"random": curve.RandomBidder, "truthful": curve.TruthfulBidder,
            "markup": lambda: curve.MarkupBidder(0.3), "flat": curve.FlatOffer}


def _block_baselines():
    from ogg_envs.policies import blocks

    return {"random": blocks.RandomBidder, "truthful": blocks.TruthfulBidder,
            "markup": lambda: blocks.MarkupBidder(0.3)}


def _p2p_baselines():
    from ogg_envs.policies import p2p

    return {"random": p2p.RandomArm, "truthful": lambda: p2p.ReservationBidder(0.0),
            "markup": lambda: p2p.ReservationBidder(0.3),
            "ucb": lambda: p2p.PerParticipant("ucb"),
            "epsilon-greedy": lambda: p2p.PerParticipant("epsilon_greedy")}


register("opengridgym/topology-power-v0", "ogg_envs.envs.topology_power_v0", codec="curve",
         policies=_curve_baselines(), baselines=("random", "truthful", "markup"),
         recorder="curve",
         summary="welfare-maximising curve market with line limits (topology-induced market "
                 "power)")
register("opengridgym/p2p-v0", "ogg_envs.envs.p2p_v0", codec=None,
         policies=_p2p_baselines(), recorder="p2p",
         summary="peer-to-peer negotiation between PV prosumers with a market maker")
register("opengridgym/dlmp-v0", "ogg_envs.envs.dlmp_v0", codec="blocks",
         policies=_block_baselines(), recorder="dlmp",
         summary="the DSO's DC OPF with distribution locational marginal prices")

# Single-agent Gymnasium views (gymnasium.make("opengridgym/TopologyPower-Supplier-v0")) and the
# action wrappers; imported last, they only call back into make() at run time.
from ogg_envs import wrappers as _wrappers  # noqa: E402,F401
