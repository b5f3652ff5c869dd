"""Scripted bidders for the curve market (topology-power-v0).

A policy is a callable ``policy(participant, observation, rng) -> action`` where the action is
the bid quadruple ``(p_max, p_min, q_max, q_min)`` in ¢/kWh and kW. Policies read the
participant's private data (``participant.private``: ``side``, true cost ``cost_a``/``cost_b``
or value ``value_max``/``value_min``, ``q_now`` = what it can produce or wants this hour), so
the environment can run them for non-learning participants and a user can run them as
baseline agents (pass the env's ``participant[agent]``).
"""

from __future__ import annotations

import numpy as np


class TruthfulBidder:
    """Bid the true curve: a supplier its marginal cost ``a + b q`` on ``[0, q_now]``; a
    flexible consumer its marginal value from ``value_max`` to ``value_min`` on ``[0, q_now]``;
    an inflexible consumer ``q_now`` inelastically at its value."""

    adaptive = False

    def __call__(self, participant, observation=None, rng=None) -> np.ndarray:
        pr = participant.private
        q = pr["q_now"]
        if pr["side"] == "supply":
            a, b = pr["cost_a"], pr.get("cost_b", 0.0)
            return np.array([a + b * q, a, q, 0.0])
        if pr.get("flexible", False):
            return np.array([pr["value_max"], pr["value_min"], q, 0.0])
        return np.array([pr["value_max"], pr["value_max"], q, q])


class FlatOffer:
    """Offer everything available at one price (the substation: the wholesale price)."""

    adaptive = False

    def __init__(self, price: float | None = None):
        self.price = price

    def __call__(self, participant, observation=None, rng=None) -> np.ndarray:
        pr = participant.private
        price = pr["cost_a"] if self.price is None else self.price
        return np.array([price, price, pr["q_now"], 0.0])


class MarkupBidder:
    """Truthful curve with prices multiplied by ``1 + markup`` (suppliers) and quantity
    withheld by ``withhold`` (share of capacity); consumers bid truthfully. Prices are capped
    at ``price_cap``."""

    adaptive = False

    def __init__(self, markup: float = 0.5, withhold: float = 0.0, price_cap: float = 20.0):
        if markup < 0 or not 0 <= withhold < 1:
            raise ValueError("markup must be >= 0 and withhold in [0, 1)")
        self.markup, self.withhold, self.price_cap = markup, withhold, price_cap

    def __call__(self, participant, observation=None, rng=None) -> np.ndarray:
        bid = TruthfulBidder()(participant)
        if participant.private["side"] != "supply":
            return bid
        bid[:2] = np.minimum(bid[:2] * (1 + self.markup), self.price_cap)
        bid[2] *= 1 - self.withhold
        return bid


class RandomBidder:
    """A valid random bid: prices uniform in ``[0, price_cap]``, quantities in ``[0, q_now]``."""

    adaptive = True

    def __init__(self, price_cap: float = 20.0):
        self.price_cap = price_cap

    def __call__(self, participant, observation=None, rng=None) -> np.ndarray:
        rng = rng if rng is not None else np.random.default_rng()
        p = np.sort(rng.uniform(0, self.price_cap, 2))[::-1]
        q = np.sort(rng.uniform(0, participant.private["q_now"], 2))[::-1]
        return np.array([p[0], p[1], q[0], q[1]])
