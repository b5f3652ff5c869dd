"""Baseline policies for the peer-to-peer market (p2p-v0), in the ``ogg_envs.api.Policy`` form.

They read the market's public rules (``participant.rules``: ``arms``, ``retail_price``,
``feed_in_price``, ``c_service``, ...) and the participant's role this hour
(``participant.state["role"]``)::

    from ogg_envs.policies.p2p import ReservationBidder
    env = ogg_envs.make("opengridgym/p2p-v0", learners="prosumer_0",
                        policies={"prosumer": ReservationBidder(0.1)})
"""

from __future__ import annotations

import numpy as np

from ogg_envs.policies.bandits import make_policy

__all__ = ["ReservationBidder", "RandomArm", "PerParticipant", "reward_range"]


def reward_range(rules: dict) -> tuple[float, float]:
    """The lowest and highest reward a matched prosumer can get (either role)."""
    lo_arm, hi_arm = rules["arms"][0], rules["arms"][-1]
    fee, ub = rules["c_service"], rules["retail_price"]
    return (min(-rules["c_lose"], lo_arm - fee, ub - hi_arm - fee),
            max(hi_arm - fee, ub - lo_arm - fee))


class ReservationBidder:
    """Bid the reservation price, shaded by ``markup``.

    A producer's outside option is selling to the utility at the feed-in price, and a trade
    costs it the service fee, so its reservation price is ``feed_in + c_service``; a consumer's
    is ``retail - c_service``. The producer bids the lowest arm at or above
    ``(feed_in + c_service) (1 + markup)``, the consumer the highest arm at or below
    ``(retail - c_service) / (1 + markup)``. With ``markup=0`` (truthful) every matched pair
    trades in every step. The bid depends only on the role and the rules (``adaptive =
    False``): the environment asks once per grid step.
    """

    adaptive = False

    def __init__(self, markup: float = 0.0):
        self.markup = float(markup)

    def __call__(self, participant, observation=None, info=None) -> int:
        r = participant.rules
        arms = np.asarray(r["arms"], dtype=float)
        if participant.state["role"] == "producer":
            target = (r["feed_in_price"] + r["c_service"]) * (1 + self.markup)
            ok = np.flatnonzero(arms >= target - 1e-12)
            return int(ok[0]) if ok.size else len(arms) - 1
        target = (r["retail_price"] - r["c_service"]) / (1 + self.markup)
        ok = np.flatnonzero(arms <= target + 1e-12)
        return int(ok[-1]) if ok.size else 0


class RandomArm:
    """A uniformly random arm (drawn from ``info["rng"]``)."""

    def __call__(self, participant, observation=None, info=None) -> int:
        return int(info["rng"].integers(len(participant.rules["arms"])))


class PerParticipant:
    """The paper's learners as one policy for many participants: a fresh bandit pair
    (``ogg_envs.policies.bandits.make_policy(spec)``, one bandit per role) per participant,
    learning from the steps in which it is matched."""

    def __init__(self, spec="ucb"):
        self.spec = spec
        self.policies: dict = {}

    def _policy(self, participant):
        if participant.name not in self.policies:
            rules = participant.rules
            self.policies[participant.name] = make_policy(self.spec, len(rules["arms"]),
                                                          reward_range(rules))
        return self.policies[participant.name]

    def __call__(self, participant, observation=None, info=None) -> int:
        return self._policy(participant)(participant, observation, info)

    def update(self, participant, action, reward: float, info=None) -> None:
        if (info or {}).get("matched", True):
            self._policy(participant).update(participant, int(action), reward, info)

    def reset(self) -> None:
        self.policies.clear()
