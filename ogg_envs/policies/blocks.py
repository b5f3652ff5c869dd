"""Scripted bidders for block-offer markets (dlmp-v0): ``n_blocks`` prices (¢/kWh), one per
equal block of the participant's capacity this hour (a generator's output, a DR provider's
demand reduction; see ``ogg_envs.markets.dlmp``).

Policies follow ``ogg_envs.api.Policy``: ``policy(participant, observation, info) -> prices``,
reading the participant's true cost ``truth.cost_a + truth.cost_b * q``, its capacity this hour
``limits.q_now`` and the rules ``rules["n_blocks"]``, ``rules["price_cap"]``.
``adaptive = False`` tells the environment that the offer depends only on the participant's
record, so it is computed once per hour::

    from ogg_envs.policies.blocks import MarkupBidder
    env = ogg_envs.make("opengridgym/dlmp-v0", learners="dr",
                        policies={"generator": MarkupBidder(0.3)})
"""

from __future__ import annotations

import numpy as np

from ogg_envs import economics

__all__ = ["TruthfulBidder", "MarkupBidder", "RandomBidder", "true_block_prices"]


def true_block_prices(participant) -> np.ndarray:
    """The true cost curve as block prices: the average true marginal cost over each block.

    With marginal cost ``a + b q`` and blocks of width ``w = q_now / n_blocks``, block k's
    price is ``a + b (k + 1/2) w``, so the offered piecewise-linear cost equals the true cost
    ``a q + b q²/2`` at every block edge.
    """
    n, cap = participant.rules["n_blocks"], participant.rules["price_cap"]
    width = participant.limits.q_now / n
    t = participant.truth
    prices = economics.marginal_cost((np.arange(n) + 0.5) * width, t.cost_a, t.cost_b)
    return np.clip(prices, 0.0, cap)


class TruthfulBidder:
    """Offer the true cost curve (``true_block_prices``): the competitive benchmark."""

    adaptive = False

    def __call__(self, participant, observation=None, info=None) -> np.ndarray:
        return true_block_prices(participant)


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

    def __call__(self, participant, observation=None, info=None) -> np.ndarray:
        n, cap = participant.rules["n_blocks"], participant.rules["price_cap"]
        prices = np.minimum(true_block_prices(participant) * (1.0 + self.markup), cap)
        n_held = int(round(self.withhold * n))
        if n_held:
            prices[n - n_held:] = cap
        return prices


class RandomBidder:
    """Uniformly random block prices in ``[0, price_cap]`` (drawn from ``info["rng"]``)."""

    adaptive = True

    def __call__(self, participant, observation=None, info=None) -> np.ndarray:
        rng = (info or {}).get("rng") or np.random.default_rng()
        return rng.uniform(0.0, participant.rules["price_cap"], participant.rules["n_blocks"])
