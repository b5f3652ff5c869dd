"""The participants' true economics, defined once (vectorised over participants).

Every function takes NumPy arrays or floats. Money in ¢, prices in ¢/kWh, power in kW held for
one hour (kW = kWh). Rewards, scripted bidders, leaderboard metrics and reproduction all call
these (through ``ogg_envs.api.Participant`` or directly on arrays)::

    cost(100.0, a=3.0, b=0.005)            # 325.0 ¢: 3.0 * 100 + 0.005 * 100**2 / 2
    value(50.0, 12.0, 4.0, q_now=100.0)    # 500.0 ¢: 12 * 50 - 0.5 * (8 / 100) * 50**2

* Supply (a generator's output, a DR provider's demand reduction): marginal cost ``a + b q``,
  cost ``a q + b q²/2``.
* Demand (a consumer): marginal value falls linearly from ``value_max`` at 0 to ``value_min``
  at ``q_now`` (its demand this hour) and is 0 beyond (it wants no more); an inflexible
  consumer has ``value_max == value_min`` (the price cap in topology-power-v0).
"""

from __future__ import annotations

import numpy as np

__all__ = ["cost", "marginal_cost", "value", "marginal_value", "profits", "welfare",
           "truth_arrays", "HourProfits"]


def cost(q, a, b):
    """True cost ``a q + b q²/2`` (¢ per hour)."""
    q = np.asarray(q, dtype=float)
    return a * q + 0.5 * b * q**2


def marginal_cost(q, a, b):
    """True marginal cost ``a + b q`` (¢/kWh)."""
    return a + b * np.asarray(q, dtype=float)


def _slope(value_max, value_min, q_now):
    q_now = np.asarray(q_now, dtype=float)
    diff = np.asarray(value_max, dtype=float) - value_min
    return np.divide(diff, q_now, out=np.zeros(np.broadcast(diff, q_now).shape),
                     where=q_now > 0)


def value(q, value_max, value_min, q_now):
    """True value (¢ per hour) of consuming ``q`` kW: the integral of the marginal value up to
    ``min(q, q_now)``; 0 when ``q_now`` is 0."""
    q_now = np.asarray(q_now, dtype=float)
    q = np.minimum(np.asarray(q, dtype=float), q_now)
    slope = _slope(value_max, value_min, q_now)
    out = np.where(q_now > 0, value_max * q - 0.5 * slope * q**2, 0.0)
    return out if out.ndim else float(out)


def marginal_value(q, value_max, value_min, q_now):
    """True marginal value (¢/kWh) at ``q`` kW (0 beyond ``q_now``)."""
    q = np.asarray(q, dtype=float)
    out = np.where(q <= q_now, value_max - _slope(value_max, value_min, q_now) * q, 0.0)
    return out if out.ndim else float(out)


def profits(is_supply, price, q, a, b, value_max, value_min, q_now):
    """True profit (¢ per hour) of every participant: supply ``price q - cost(q)``, demand
    ``value(q) - price q`` (arrays in participant order)."""
    price = np.asarray(price, dtype=float)
    q = np.asarray(q, dtype=float)
    supply = price * q - cost(q, a, b)
    demand = value(q, value_max, value_min, q_now) - price * q
    return np.where(is_supply, supply, demand)


class HourProfits:
    """``profits`` for one hour's truth (arrays in participant order), called once per market
    round: what does not depend on the clearing is prepared once, and both sides share one
    formula, so a call makes a third of the numpy calls of ``profits``, with the same
    numbers, bit for bit::

        profit = HourProfits(is_supply, a, b, vmax, vmin, q_now)
        profit(prices, quantities)   # == profits(is_supply, prices, quantities, a, b, ...)

    Both sides' curves are ``c1 x + c2 x²`` of ``x = min(q, cap)`` (supply: ``a``,
    ``b / 2``, no cap; demand: ``value_max``, minus half the value curve's slope, up to
    ``q_now``; ``x - y`` is exactly ``x + (-y)``), and the profit is ``sign (price q) -
    sign (curve)`` with ``sign`` +1 for supply (``price q - cost``) and -1 for demand
    (``value - price q``; negating is exact).
    """

    def __init__(self, is_supply, a, b, value_max, value_min, q_now):
        is_supply = np.asarray(is_supply, dtype=bool)
        q_now = np.asarray(q_now, dtype=float)
        half_slope = 0.5 * _slope(value_max, value_min, q_now)
        self._cap = np.where(is_supply, np.inf, q_now)
        self._c1 = np.where(is_supply, np.asarray(a, dtype=float),
                            np.asarray(value_max, dtype=float))
        self._c2 = np.where(is_supply, 0.5 * np.asarray(b, dtype=float), -half_slope)
        self._sign = np.where(is_supply, 1.0, -1.0)
        counts = is_supply | (q_now > 0)  # a demand that wants nothing has no value
        self._counts = None if counts.all() else counts

    def __call__(self, price: np.ndarray, q: np.ndarray) -> np.ndarray:
        x = np.minimum(q, self._cap)
        curve = self._c1 * x
        curve += self._c2 * (x * x)
        if self._counts is not None:
            curve = np.where(self._counts, curve, 0.0)
        sign = self._sign
        return sign * (price * q) - sign * curve


def welfare(is_supply, q, a, b, value_max, value_min, q_now) -> float:
    """Total true surplus (¢ per hour): the demand's value minus the supply's cost (payments
    are transfers and cancel)."""
    q = np.asarray(q, dtype=float)
    gain = np.where(is_supply, -cost(q, a, b), value(q, value_max, value_min, q_now))
    return float(np.sum(gain))


def truth_arrays(participants) -> dict[str, np.ndarray]:
    """Everyone's truth and limit this hour as arrays in participant order: ``is_supply``,
    ``a``, ``b``, ``vmax``, ``vmin``, ``q_now`` (the arguments of ``profits`` and
    ``welfare``)."""
    parts = list(participants)
    truths = [p.truth for p in parts]
    # one (5, n) array from five flat lists (cheaper than from n rows of 5)
    a, b, vmax, vmin, q_now = np.array([[t.cost_a for t in truths], [t.cost_b for t in truths],
                                        [t.value_max for t in truths],
                                        [t.value_min for t in truths],
                                        [p.limits.q_now for p in parts]], dtype=float)
    return {"is_supply": np.array([p.side != "demand" for p in parts], dtype=bool),
            "a": a, "b": b, "vmax": vmax, "vmin": vmin, "q_now": q_now}
