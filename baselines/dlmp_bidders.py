"""Scripted bidders for the DSO's DLMP market (dlmp-v0).

A policy is a callable ``policy(participant, observation, rng) -> action`` where the action is
the offer of ``dlmp-v0``: ``n_blocks`` prices (¢/kWh), one per equal block of the
participant's capacity this hour (a generator's output, a DR provider's demand reduction; see
``ogg_envs.markets.dlmp``). Policies read the participant's private data
(``participant.private``: true marginal cost ``cost_a + cost_b * q``, ``cap_now`` = kW it can
offer this hour, ``n_blocks``, ``price_cap``), so the environment runs them for non-learning
participants and a user can run them as baseline agents (pass the env's
``participant[agent]``). ``adaptive = False`` tells the environment that the offer depends only
on the private data, so it is computed once per hour.
"""

from __future__ import annotations

import numpy as np

__all__ = ["TruthfulBidder", "MarkupBidder", "RandomBidder", "true_block_prices"]


def true_block_prices(private: dict) -> np.ndarray:
    """The true cost curve as block prices: the average true marginal cost over each block.

    With marginal cost ``a + b q`` and blocks of width ``w = cap_now / n_blocks``, block k's
    price is ``a + b (k + 1/2) w``, so the offered piecewise-linear cost equals the true cost
    ``a q + b q²/2`` at every block edge.
    """
    k = np.arange(private["n_blocks"])
    width = private["cap_now"] / private["n_blocks"]
    prices = private["cost_a"] + private["cost_b"] * (k + 0.5) * width
    return np.clip(prices, 0.0, private["price_cap"])


class TruthfulBidder:
    """Offer the true cost curve (``true_block_prices``): the competitive benchmark."""

    adaptive = False

    def __call__(self, participant, observation=None, rng=None) -> np.ndarray:
        return true_block_prices(participant.private)


class MarkupBidder:
    """The true curve with every price multiplied by ``1 + markup`` (capped at the price cap);
    ``withhold`` > 0 offers the top share of the blocks at the price cap instead (physical
    withholding)."""

    adaptive = False

    def __init__(self, markup: float = 0.3, withhold: float = 0.0):
        if not markup >= 0 or not 0 <= withhold < 1:
            raise ValueError(f"markup must be >= 0 and withhold in [0, 1), got {markup}, "
                             f"{withhold}")
        self.markup, self.withhold = float(markup), float(withhold)

    def __call__(self, participant, observation=None, rng=None) -> np.ndarray:
        pr = participant.private
        prices = np.minimum(true_block_prices(pr) * (1.0 + self.markup), pr["price_cap"])
        n_held = int(round(self.withhold * pr["n_blocks"]))
        if n_held:
            prices[pr["n_blocks"] - n_held:] = pr["price_cap"]
        return prices


class RandomBidder:
    """Uniformly random block prices in ``[0, price_cap]`` (uses the env's RNG)."""

    adaptive = True

    def __call__(self, participant, observation=None, rng=None) -> np.ndarray:
        rng = rng if rng is not None else np.random.default_rng()
        pr = participant.private
        return rng.uniform(0.0, pr["price_cap"], pr["n_blocks"])
