"""The grid step's quick checks decide as the full checks they stand in front of: valid
dispatch passes (and is written as before), every kind of invalid value still raises the full
check's error naming the culprit, and nothing is written then; ``TradeFeasibility.check``'s
early return for an hour without implicated trades reports what its loop reported."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ogg_envs.grid import OpenDSSGrid
from ogg_envs.grid.trade_feasibility import FeasibilityReport, TradeFeasibility


@pytest.fixture(scope="module")
def grid():
    g = OpenDSSGrid.from_feeder("ieee34")
    g.add_generator("pv1", "860", 0.0, kva=100.0)
    g.add_generator("pv2", "840", 0.0, kva=100.0)
    yield g
    g.close()


def _consumption(grid) -> np.ndarray:
    """A valid consumption: each bus's base load (0 where there is none)."""
    return grid.bus_load_kw * 0.8


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, -1.0])
def test_apply_refuses_a_bad_consumption_at_a_bus_with_loads(grid, bad):
    x = _consumption(grid)
    j = int(np.flatnonzero(x > 0)[3])
    x[j] = bad
    before = grid.load_kw
    with pytest.raises(ValueError, match=f"bus {grid.topology.buses[j]}: consumption must be "
                                         "finite and >= 0"):
        grid.apply(x)
    np.testing.assert_array_equal(grid.load_kw, before)


@pytest.mark.parametrize("value", [1e-300, 5e-324, 3.0, 1e308, math.inf, math.nan])
def test_apply_refuses_consumption_at_a_bus_without_loads(grid, value):
    x = _consumption(grid)
    j = int(np.flatnonzero(grid.bus_load_kw == 0)[0])
    x[j] = value
    expected = "has no load" if math.isfinite(value) else "consumption must be finite"
    with pytest.raises(ValueError, match=f"bus {grid.topology.buses[j]}"):
        try:
            grid.apply(x)
        except ValueError as exc:
            assert expected in str(exc)
            raise


def test_apply_takes_zeros_and_minus_zero_at_buses_without_loads(grid):
    x = _consumption(grid)
    x[np.flatnonzero(grid.bus_load_kw == 0)] = -0.0
    grid.apply(x, {"pv1": 5.0, "pv2": -0.0})
    m = grid._apply_maps()
    np.testing.assert_array_equal(grid.load_kw, m["load_share"] * x[m["load_pos"]])


@pytest.mark.parametrize("bad", [math.nan, math.inf, -2.0])
def test_apply_refuses_a_bad_generation_and_names_the_generator(grid, bad):
    with pytest.raises(ValueError, match="generator pv2: kW must be finite and >= 0"):
        grid.apply(_consumption(grid), {"pv1": 1.0, "pv2": bad})
    with pytest.raises(ValueError, match="generator pv1: kW must be finite and >= 0"):
        grid.apply(_consumption(grid), np.array([bad, 1.0]))


@pytest.mark.parametrize("bad", [math.nan, math.inf, -3.0])
def test_set_loads_kw_names_the_first_bad_load(grid, bad):
    kw = grid.base_load_kw.copy()
    kw[[4, 7]] = bad
    with pytest.raises(ValueError, match=f"load {grid.load_names[4]}: kW must be finite and "
                                         ">= 0"):
        grid.set_loads_kw(kw)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -3.0])
def test_named_set_generators_kw_raises_set_generator_kws_error(grid, bad):
    names = ["pv1", "pv2"]
    with pytest.raises(ValueError) as named:
        grid.set_generators_kw(np.array([1.0, bad]), names)
    with pytest.raises(ValueError) as single:
        grid.set_generator_kw("pv2", bad)
    assert str(named.value) == str(single.value)
    with pytest.raises(ValueError, match="expected 2 generator values"):
        grid.set_generators_kw(np.array([1.0]), names)
    grid.set_generators_kw(np.array([1.5, 0.0]), names)
    assert grid.generator_kw["ogg_pv1"] == 1.5


def _check_by_the_loop(tf, *args, **kwargs) -> FeasibilityReport:
    """``check`` as it was before its early return: the loop's bookkeeping on no finding."""
    n, m = len(tf.buses), len(args[3])
    pf = tf.solve(*args[:3])
    assert not tf.implicated(pf, args[3], args[4], np.asarray(args[5], dtype=float))
    return FeasibilityReport(pf, pf, np.flatnonzero(np.zeros(m, dtype=bool)),
                             np.flatnonzero(np.zeros(m, dtype=bool)), np.zeros(n), {})


def test_trade_check_without_implicated_trades_reports_as_the_loop_did():
    g = OpenDSSGrid.from_feeder("ieee34")
    try:
        buses = ["860", "840", "844", "848"]
        tf = TradeFeasibility(g, buses, np.full(4, 50.0))
        args = (g.base_load_kw * 0.5, np.array([0.0, 5.0, 0.0, 8.0]),
                np.array([6.0, 0.0, 9.0, 0.0]), np.array([0, 2]), np.array([1, 3]),
                np.array([5.0, 8.0]))
        tf.reset()  # (each solve starts from the base case)
        fast = tf.check(*args, curtail=True)
        tf.reset()
        slow = _check_by_the_loop(tf, *args)
        for field in ("infeasible", "curtailed", "curtailed_kwh"):
            a, b = getattr(fast, field), getattr(slow, field)
            assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
        assert fast.reasons == slow.reasons == {}
        assert fast.pf is fast.pf_agreed
        assert fast.pf == slow.pf
        none = tf.check(*args, max_rounds=0)  # no round: nothing found, as before
        assert len(none.infeasible) == 0 and none.pf is none.pf_agreed
    finally:
        g.close()
