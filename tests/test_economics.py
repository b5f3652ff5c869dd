"""The participants' true economics (``ogg_envs.economics``): the curves' closed forms, and the
per-hour profit evaluator the environments call every round against ``profits``."""

from __future__ import annotations

import numpy as np

from ogg_envs import economics


def test_cost_and_value_closed_forms():
    assert economics.cost(100.0, a=3.0, b=0.005) == 325.0
    assert economics.value(50.0, 12.0, 4.0, q_now=100.0) == 500.0
    assert economics.value(150.0, 12.0, 4.0, q_now=100.0) == 800.0  # nothing beyond q_now
    assert economics.value(10.0, 12.0, 4.0, q_now=0.0) == 0.0


def test_hour_profits_equal_profits_bit_for_bit():
    rng = np.random.default_rng(7)
    for _ in range(200):
        n = int(rng.integers(1, 40))
        is_supply = rng.random(n) < 0.4
        a, b = rng.uniform(0, 10, n), rng.uniform(0, 0.05, n)
        vmax = rng.uniform(5, 20, n)
        vmin = np.where(rng.random(n) < 0.5, vmax, rng.uniform(0, 5, n))  # some inflexible
        q_now = np.where(rng.random(n) < 0.2, 0.0, rng.uniform(0, 500, n))  # some want none
        hour = economics.HourProfits(is_supply, a, b, vmax, vmin, q_now)
        for _ in range(3):  # several rounds of one hour
            price = rng.uniform(-5, 30, n)
            q = np.where(rng.random(n) < 0.3, q_now, rng.uniform(0, 600, n))
            expected = economics.profits(is_supply, price, q, a, b, vmax, vmin, q_now)
            assert np.array_equal(hour(price, q), expected)
