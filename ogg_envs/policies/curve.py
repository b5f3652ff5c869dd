"""Scripted bidders for the curve markets (topology-power-v0 and any market whose bid is the
affine curve ``(p_max, p_min, q_max, q_min)`` in ¢/kWh and kW).

Policies follow ``ogg_envs.api.Policy``: ``policy(participant, observation, info) -> bid``.
They read the participant's own record only: ``side``, its private truth (``truth.cost_a``,
``truth.cost_b`` or ``truth.value_max``, ``truth.value_min``), its limit this hour
(``limits.q_now``) and the market's rules (``rules["price_cap"]``)::

    from ogg_envs.policies.curve import MarkupBidder
    env = ogg_envs.make("opengridgym/topology-power-v0", policies={"supplier": MarkupBidder(0.6)},
                        learners="consumer_0")
"""

from __future__ import annotations

import numpy as np

from ogg_envs.api import SUPPLY

__all__ = ["TruthfulBidder", "FlatOffer", "MarkupBidder", "RandomBidder", "truthful_bid",
           "truthful_bids"]


def truthful_bid(participant) -> np.ndarray:
    """The true curve as a bid: a supplier its marginal cost ``a + b q`` on ``[0, q_now]``; a
    consumer its marginal value from ``value_max`` to ``value_min`` on ``[0, q_now]``, or
    ``q_now`` inelastically at its value when the two are equal (an inflexible consumer)."""
    return truthful_bids([participant])[0]


def truthful_bids(participants) -> np.ndarray:
    """``truthful_bid`` of several participants, one row each (an (n, 4) array)."""
    numbers = []  # row after row, flat (numpy converts a flat list faster than rows)
    for p in participants:
        q, t = p.limits.q_now, p.truth
        if p.side == SUPPLY:
            numbers += (t.cost_a + t.cost_b * q, t.cost_a, q, 0.0)
        elif t.value_max > t.value_min:
            numbers += (t.value_max, t.value_min, q, 0.0)
        else:
            numbers += (t.value_max, t.value_max, q, q)
    return np.array(numbers, dtype=float).reshape(-1, 4)


class TruthfulBidder:
    """Bid the true curve (``truthful_bid``): the competitive benchmark."""

    adaptive = False

    def __call__(self, participant, observation=None, info=None) -> np.ndarray:
        return truthful_bid(participant)

    def batch(self, participants) -> np.ndarray:
        return truthful_bids(participants)


class FlatOffer:
    """Offer everything available at one price (default: its true marginal cost at zero; the
    substation: the wholesale price)."""

    adaptive = False

    def __init__(self, price: float | None = None):
        self.price = price

    def __call__(self, participant, observation=None, info=None) -> np.ndarray:
        return self.batch([participant])[0]

    def batch(self, participants) -> np.ndarray:
        return np.array([(p.truth.cost_a if self.price is None else self.price,) * 2
                         + (p.limits.q_now, 0.0) for p in participants],
                        dtype=float).reshape(-1, 4)


class MarkupBidder:
    """Truthful curve with prices multiplied by ``1 + markup`` (suppliers) and quantity
    withheld by ``withhold`` (share of capacity); consumers bid truthfully. Prices are capped
    at the market's price cap."""

    adaptive = False

    def __init__(self, markup: float = 0.5, withhold: float = 0.0):
        if markup < 0 or not 0 <= withhold < 1:
            raise ValueError("markup must be >= 0 and withhold in [0, 1)")
        self.markup, self.withhold = markup, withhold

    def __call__(self, participant, observation=None, info=None) -> np.ndarray:
        return self.batch([participant])[0]

    def batch(self, participants) -> np.ndarray:
        bids = truthful_bids(participants)
        supply = np.array([p.side == SUPPLY for p in participants], dtype=bool)
        cap = np.array([p.rules["price_cap"] for p in participants], dtype=float)[supply]
        bids[supply, :2] = np.minimum(bids[supply, :2] * (1 + self.markup), cap[:, None])
        bids[supply, 2] *= 1 - self.withhold
        return bids


class RandomBidder:
    """A valid random bid: prices uniform in ``[0, price_cap]``, quantities in ``[0, q_now]``
    (drawn from ``info["rng"]``)."""

    adaptive = True

    def __call__(self, participant, observation=None, info=None) -> np.ndarray:
        rng = (info or {}).get("rng") or np.random.default_rng()
        p = np.sort(rng.uniform(0, participant.rules["price_cap"], 2))[::-1]
        q = np.sort(rng.uniform(0, participant.limits.q_now, 2))[::-1]
        return np.array([p[0], p[1], q[0], q[1]])
