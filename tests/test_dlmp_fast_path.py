"""The DLMP market's hot path (issue #12): the combined input check, the row limits kept
between clearings, ``HighsLP`` passing the whole LP on every solve and the accounts computed
when first read. Each must leave every result exactly what a fresh market gives, bit for
bit."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from test_dlmp import random_hour, random_tree_market, small_market, vec

from ogg_envs.api import MarketContext
from ogg_envs.markets.solvers.highs_lp import HighsLP


def _bits(value):
    """What makes two values the same bit for bit (0.0 is not -0.0; NaN is its payload)."""
    if isinstance(value, np.ndarray):
        return value.dtype, value.shape, value.tobytes()
    if isinstance(value, float):
        return np.float64(value).tobytes()
    if isinstance(value, dict):
        return {k: _bits(v) for k, v in value.items()}
    return value


def same_result(a, b) -> None:
    """Two clearings equal bit for bit (every field, every array; the fields a result
    computes when first read are read here)."""
    assert type(a) is type(b)
    for key in (f.name for f in dataclasses.fields(a) if f.compare):
        assert _bits(getattr(a, key)) == _bits(getattr(b, key)), key


@pytest.mark.parametrize("solver", ["auto", "highs"])
def test_rounds_sharing_an_hour_equal_fresh_markets(solver):
    """Like the env: several clearings per hour on one market (the merit order, or one
    HighsLP passed the whole LP each time), random, rounded (tied) and all-at-the-cap offers,
    limits changed on the way; every result equals a fresh market's on the same inputs,
    whatever came before."""
    rng = np.random.default_rng(12)
    m = random_tree_market(rng, solver=solver)
    limits = m.limits_kw
    for hour in range(30):
        if hour == 15:  # new limits must reach the row bounds and the congestion threshold
            limits = np.where(np.isfinite(limits), limits * 0.5, math.inf)
            m.set_limits(limits)
        offers, ctx = random_hour(m, rng)
        rounds = [offers, np.round(offers), np.full_like(offers, m.price_cap), offers]
        for o in rounds:
            fresh = random_tree_market(np.random.default_rng(12), solver=solver)
            fresh.set_limits(limits)
            same_result(m.clear(o, ctx), fresh.clear(o, ctx))


def test_congestion_tol_and_limits_changed_after_a_clearing_are_used():
    m = small_market(limits=(math.inf, 5.0, math.inf))
    hour = MarketContext(demand_kw=vec(m, {"a": 10.0, "b": 20.0}), capacity_kw=[24.0, 0.0],
                         source_price=9.0)
    offers = [[1.0, 2.0], [1.0, 1.0]]
    res = m.clear(offers, hour)  # the generator at b exports 4 kW to a, below the limit
    assert res.flows_kw[1] == pytest.approx(-4.0) and res.congested == []
    m.congestion_tol = 0.5  # from 2.5 kW on
    assert m.clear(offers, hour).congested == ["a-b"]
    m.congestion_tol = 1e-6
    m.set_limits([math.inf, 4.0, math.inf])
    assert m.clear(offers, hour).congested == ["a-b"]
    m.set_limits([math.inf, 3.0, math.inf])  # the row bounds follow: 3 kW exported
    res = m.clear(offers, hour)
    assert res.flows_kw[1] == pytest.approx(-3.0) and res.congested == ["a-b"]
    m.set_limits([math.inf, 100.0, math.inf])
    assert m.clear(offers, hour).congested == []


@pytest.mark.parametrize("bad, message", [
    (dict(offers=[[1.0, 2.0], [np.nan, 1.0]]), "dr_0"),
    (dict(offers=[[1.0, np.inf], [1.0, 1.0]]), "generator_0"),
    (dict(offers=[[30.000001, 1.0], [1.0, 1.0]]), "generator_0"),
    (dict(offers=[[-0.0001, 1.0], [1.0, 1.0]]), "generator_0"),
    (dict(lmp=np.nan), "source_price"),
    (dict(lmp=np.inf), "source_price"),
    (dict(demand={"a": np.nan}), "demand_kw must be finite"),
    (dict(demand={"a": np.inf}), "demand_kw must be finite"),
    (dict(demand={"a": -1.0}), "demand_kw must be finite"),
    (dict(demand={"s": 1e-300}), "not one of the market's load buses"),
    (dict(pv={"a": 1e-300}), "not one of the market's pv buses"),
    (dict(pv={"b": np.nan}), "pv_kw must be finite"),
    (dict(capacity=[np.nan, 0.0]), "capacity"),
    (dict(capacity=[1.0, -1e-300]), "capacity"),
    (dict(capacity=[1.0, 15.0]), "demand response at bus c"),
])
def test_every_invalid_input_still_raises_its_own_error(bad, message):
    """The combined check lets nothing through that the per-input checks refuse."""
    m = small_market()
    demand = {"a": 10.0, "b": 20.0, "c": 10.0, **bad.get("demand", {})}
    hour = MarketContext(demand_kw=vec(m, demand), capacity_kw=bad.get("capacity", [1.0, 5.0]),
                         source_price=bad.get("lmp", 5.0), pv_kw=vec(m, bad.get("pv", {})))
    with pytest.raises(ValueError, match=message):
        m.clear(bad.get("offers", [[1.0, 2.0], [1.0, 1.0]]), hour)


def test_valid_extremes_are_accepted():
    """Valid inputs on an edge (huge but finite, offers at 0 and at the cap, DR equal to the
    demand) pass as before."""
    m = small_market()
    huge = vec(m, {"a": 1e300, "c": 1.7e308})
    np.testing.assert_array_equal(
        m.validate(np.zeros((2, 2)), huge, np.array([1e300, 1.7e308]), np.zeros(4), 0.0),
        vec(m, {"c": 1.7e308}))
    edge = vec(m, {"c": 7.0})
    res = m.clear([[30.0, 30.0], [0.0, 0.0]], MarketContext(
        demand_kw=edge, capacity_kw=[0.0, 7.0], source_price=5.0))
    assert res.participant_quantities[1] == pytest.approx(7.0)


def _lp():
    A = np.array([[1.0, 1.0, 1.0, -1.0], [1.0, 0.0, -1.0, 0.0]])
    data = dict(c=np.array([1.0, 2.0, 2.0, 0.5]), l=np.array([3.0, -1.0]),
                u=np.array([3.0, 1.0]), lb=np.zeros(4), ub=np.array([2.0, 2.0, 2.0, 0.0]))
    return A, data


def test_highs_lp_data_held_or_passed_gives_the_same_bits():
    """Solves that repeat the last data, that change an array in place between calls or
    follow a failed solve equal a fresh ``HighsLP``'s on the same data."""
    A, d = _lp()
    lp = HighsLP(A)

    def check(**data):
        got, ref = lp.solve(**data), HighsLP(A).solve(**data)
        for part in ("x", "y", "z"):
            assert _bits(getattr(got, part)) == _bits(getattr(ref, part)), part

    check(**d)
    check(**dict(d, c=np.array([2.0, 2.0, 1.0, 0.5])))  # a tie (cols 1 and 2), bounds held
    d["ub"][3] = 4.0  # the same array, changed in place: must reach HiGHS
    check(**d)
    d["l"][0] = d["u"][0] = 1.0
    check(**d)
    with pytest.raises(Exception, match="HiGHS"):
        lp.solve(**dict(d, ub=np.full(4, -1.0)))  # infeasible
    check(**d)
    check(**dict(d, lb=np.zeros(4)))  # a new array, the same bytes


def test_deferred_accounts_ignore_later_changes_to_the_callers_arrays():
    """A result computes its money accounts and price components when first read, from its
    own arrays: a result read at once, one pickled before anything was read, and one whose
    caller overwrote its offers, demand, capacity and PV arrays in place before the first
    read all report the same numbers bit for bit (``to_dict`` included)."""
    import pickle

    rng = np.random.default_rng(21)
    m = random_tree_market(rng)
    for _ in range(25):
        offers, c = random_hour(m, rng)
        read = m.clear(offers, c)
        read.to_dict()  # everything computed now
        unread = pickle.loads(pickle.dumps(m.clear(offers, c)))
        overwritten = m.clear(offers, c)
        for array in (offers, c.demand_kw, c.capacity_kw, c.pv_kw):
            array[...] = 7.0
        same_result(read, unread)
        same_result(read, overwritten)
        assert read.to_dict() == overwritten.to_dict() == unread.to_dict()


def test_highs_hot_path_returns_the_plain_solves_numbers():
    """``HighsLP.solve_primal_rows`` (the market's hot path: no bound duals, no Solution)
    gives ``solve``'s ``x`` and ``y`` bit for bit, on the market's own LPs."""
    rng = np.random.default_rng(8)
    m = random_tree_market(rng, solver="highs")
    lp, seen = m._lp, []

    def recorded(*data):  # the market's LP data, kept
        seen.append([np.array(v) for v in data])
        return HighsLP.solve_primal_rows(lp, *data)

    lp.solve_primal_rows = recorded
    for _ in range(20):
        m.clear(*random_hour(m, rng))
    del lp.solve_primal_rows
    assert len(seen) == 20
    for data in seen:
        x, y = lp.solve_primal_rows(*data)
        sol = lp.solve(*data)
        assert x.tobytes() == sol.x.tobytes() and y.tobytes() == sol.y.tobytes()


def test_the_three_markets_share_one_congestion_threshold():
    """The DC, LinDistFlow and curve markets count a branch as congested by one rule
    (``congestion_threshold``: ``limit (1 - tol) - 1e-6``, never without a limit): the same
    limits and ``congestion_tol`` give each the same thresholds, bit for bit, after new limits
    and a new tolerance too; and each market's results flag exactly the branches whose flow
    reaches them."""
    from ogg_envs.api import CongestionThreshold, congestion_threshold
    from ogg_envs.markets.curve_market import CurveMarket, MarketParticipant
    from ogg_envs.markets.lindistflow import LinDistFlowMarket

    rng = np.random.default_rng(40)
    dc = random_tree_market(rng)
    topo = dc.topology
    ldf = LinDistFlowMarket(topo, dc.resources, r_pu=1e-3, x_pu=1e-3, n_blocks=3,
                            price_cap=30.0, pv_buses=dc.pv_buses)
    sides = [MarketParticipant("supply_0", topo.root, "supply")]
    sides += [MarketParticipant(f"demand_{b}", bus, "demand")
              for b, bus in enumerate(topo.buses[1:])]
    curve = CurveMarket(topo, sides, price_cap=30.0)
    limits = dc.limits_kw
    assert np.isinf(limits).any() and np.isfinite(limits).any()
    congested = 0
    for step, (scale, tol) in enumerate([(1.0, 1e-5), (0.5, 1e-5), (0.5, 0.3), (0.2, 0.0)]):
        new = np.where(np.isfinite(limits), limits * scale, math.inf)
        expected = congestion_threshold(new, tol)
        assert np.isinf(expected[np.isinf(new)]).all()
        for m in (dc, ldf, curve):
            if step % 2:  # the tolerance changed after a clearing, then the limits
                m.congestion_tol = tol
                m.set_limits(new)
            else:
                m.set_limits(new)
                m.congestion_tol = tol
        for _ in range(5):
            offers, c = random_hour(dc, rng)
            bids = np.zeros((len(sides), 4))
            bids[0] = (30.0, 0.0, 2000.0, 0.0)
            bids[1:, 0] = rng.uniform(5, 30, len(sides) - 1)
            bids[1:, 2] = rng.uniform(0, 60, len(sides) - 1)
            results = [(dc.clear(offers, c), "flows_kw"), (ldf.clear(offers, c), "flows_kw"),
                       (curve.clear(bids), "flows")]
            for res, flows in results:
                at = np.abs(getattr(res, flows)) >= expected
                assert res.congested == [topo.branches[e].name for e in np.flatnonzero(at)]
                congested += bool(res.congested)
    assert congested >= 10
    # the cache: kept for the same limits array and tolerance, recomputed for a new either
    threshold = CongestionThreshold()
    first = threshold(limits, 1e-5)
    assert threshold(limits, 1e-5) is first
    assert first.tobytes() == congestion_threshold(limits, 1e-5).tobytes()
    assert threshold(limits, 0.3).tobytes() == congestion_threshold(limits, 0.3).tobytes()
    assert threshold(limits.copy(), 0.3) is not threshold(limits, 0.3)


def test_the_same_inputs_return_the_last_result_and_anything_new_clears_again():
    """The last clearing is kept: the same offers, context, limits, loss model and
    congestion tolerance return the same result object (an env's rounds that repeat their
    offers); new offers, a new hour, new limits, losses or tolerance, and ``reset``, clear
    again, each equal to a fresh market's clearing of its inputs."""
    rng = np.random.default_rng(3)
    m = random_tree_market(rng)
    offers, ctx = random_hour(m, rng)
    first = m.clear(offers, ctx)
    again = m.clear(offers.copy(), dataclasses.replace(ctx, demand_kw=ctx.demand_kw.copy()))
    assert again is first

    def fresh():
        market = random_tree_market(np.random.default_rng(3))
        market.set_limits(m.limits_kw)
        return market

    other, ctx2 = random_hour(m, rng)
    for o, c in ((other, ctx), (offers, ctx2)):
        res = m.clear(o, c)
        assert res is not first
        same_result(res, fresh().clear(o, c))
    m.clear(offers, ctx)
    m.set_limits(m.limits_kw * 0.5)
    halved = m.clear(offers, ctx)
    assert halved is not first
    same_result(halved, fresh().clear(offers, ctx))
    m.congestion_tol = 0.5
    assert m.clear(offers, ctx) is not halved
    m.congestion_tol = 1e-6
    lossless = m.clear(offers, ctx)
    m.set_losses(np.full(len(m.topology.buses), 0.02), 3.0)
    lossy = m.clear(offers, ctx)
    assert lossy is not lossless and lossy.losses_kw != lossless.losses_kw
    m.reset()
    after = m.clear(offers, ctx)
    assert after is not lossless
    same_result(after, lossless)
