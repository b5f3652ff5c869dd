"""The exact merit order on a radial feeder (``ogg_envs.markets.merit_order``) and the DLMP
market's use of it: the LP's optimum against an independent statement (SciPy's HiGHS on the
explicit flow LP), every optimality condition, prices as derivatives of the optimal cost, the
documented tie rule, and the DLMP market's merit-order path against its HiGHS path."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import linprog
from test_dlmp import random_hour, random_tree_market

from ogg_envs.api import MarketContext
from ogg_envs.envs import dlmp_v0
from ogg_envs.grid.topology import Branch, Topology
from ogg_envs.markets.dlmp import DLMPMarket, Resource
from ogg_envs.markets.merit_order import MeritOrder


def random_case(rng, n_buses: int, ties: bool = False):
    """A random tree, blocks at random buses (some negative prices, like taken PV), demand,
    limits (some tight) and the source's prices."""
    buses = ["s"] + [f"b{i}" for i in range(1, n_buses)]
    branches = []
    for i in range(1, n_buses):
        limit = float(rng.uniform(5, 80)) if rng.random() < 0.6 else math.inf
        branches.append(Branch(f"e{i}", buses[int(rng.integers(0, i))], buses[i], (), limit))
    topo = Topology("s", branches)
    n = int(rng.integers(3, 3 * n_buses))
    item_bus = rng.integers(0, n_buses, n)
    price = rng.uniform(-2, 20, n)
    if ties:
        price = np.round(price / 4) * 4
    length = rng.uniform(0, 40, n) * (rng.random(n) < 0.9)
    demand = rng.uniform(0, 50, n_buses) * (rng.random(n_buses) < 0.8)
    # every bus can always be served: a block at the cap (like shedding) covers its demand
    item_bus = np.concatenate([item_bus, np.arange(n_buses)])
    price = np.concatenate([price, np.full(n_buses, 30.0)])
    length = np.concatenate([length, np.maximum(demand, 0.0)])
    return topo, item_bus, price, length, demand, topo.limits_kw, float(rng.uniform(2, 12))


def scipy_optimum(topo, item_bus, price, length, demand, limits, import_price,
                  export_price=0.0) -> float:
    """The same LP, stated with explicit subtree sums and solved by SciPy's HiGHS."""
    n, B = len(price), len(topo.buses)
    below = -topo.H  # below[e, b] = 1 if bus b is downstream of branch e
    rows = below[:, item_bus]  # subtree injection of the blocks
    c = np.concatenate([price, [import_price, -export_price]])
    A_ub = np.vstack([np.hstack([rows, np.zeros((len(limits), 2))]),
                      -np.hstack([rows, np.zeros((len(limits), 2))])])
    d = below @ demand
    b_ub = np.concatenate([limits + d, limits - d])
    keep = np.isfinite(b_ub)
    A_eq = np.concatenate([np.ones(n), [1.0, -1.0]])[None, :]
    res = linprog(c, A_ub=A_ub[keep], b_ub=b_ub[keep], A_eq=A_eq, b_eq=[demand.sum()],
                  bounds=[(0, u) for u in length] + [(0, None), (0, None)], method="highs")
    assert res.status == 0
    assert B == len(demand)
    return float(res.fun)


@pytest.mark.parametrize("ties", [False, True])
def test_the_merit_order_is_the_lps_optimum_and_its_prices_are_duals(ties):
    rng = np.random.default_rng(21 + ties)
    for k in range(60):
        topo, bus, price, length, demand, limits, imp = random_case(rng, 3 + k % 12, ties)
        mo = MeritOrder(topo, bus)
        out = mo.solve(price, length, demand, limits, imp)
        cost = price @ out.x + imp * out.source_import
        expected = scipy_optimum(topo, bus, price, length, demand, limits, imp)
        assert cost == pytest.approx(expected, rel=1e-9, abs=1e-7), k
        assert mo.certificate(out, price, length, demand, limits, imp) == [], k


def test_no_dispatch_meeting_the_limits_returns_none():
    topo = Topology("s", [Branch("s-a", "s", "a", (), 10.0), Branch("a-b", "a", "b", (), 5.0)])
    mo = MeritOrder(topo, [2])  # one block at b
    limits = topo.limits_kw
    assert mo.solve([1.0], [20.0], np.array([0.0, 0.0, -8.0]), limits, 4.0) is None  # exports
    assert mo.solve([1.0], [2.0], np.array([0.0, 0.0, 9.0]), limits, 4.0) is None  # imports
    out = mo.solve([1.0], [4.0], np.array([0.0, 0.0, 9.0]), limits, 4.0)
    np.testing.assert_array_equal(out.x, [4.0])  # forced: b may import only 5 kW
    assert out.prices.tolist() == [4.0, 4.0, 4.0] and out.source_import == 5.0


def test_bad_input_names_what_is_wrong():
    topo = Topology("s", [Branch("s-a", "s", "a", (), 10.0)])
    mo = MeritOrder(topo, [1, 1])
    demand, limits = np.array([0.0, 5.0]), topo.limits_kw
    with pytest.raises(ValueError, match="expected 2 prices and lengths"):
        mo.solve([1.0], [1.0, 1.0], demand, limits, 4.0)
    with pytest.raises(ValueError, match="2 net demands"):
        mo.solve([1.0, 2.0], [1.0, 1.0], [5.0], limits, 4.0)
    with pytest.raises(ValueError, match="must not exceed import_price"):
        mo.solve([1.0, 2.0], [1.0, 1.0], demand, limits, 4.0, export_price=5.0)
    with pytest.raises(ValueError, match="lengths must be >= 0"):
        mo.solve([1.0, 2.0], [1.0, -1.0], demand, limits, 4.0)
    assert mo.solve([1.0, 2.0], [1.0, 1.0], demand, limits, 4.0).x.tolist() == [1.0, 1.0]


def test_the_certificate_catches_a_wrong_price_and_a_wrong_dispatch():
    rng = np.random.default_rng(3)
    topo, bus, price, length, demand, limits, imp = random_case(rng, 8)
    mo = MeritOrder(topo, bus)
    out = mo.solve(price, length, demand, limits, imp)
    wrong = out._replace(prices=out.prices + np.where(np.arange(len(out.prices)) == 3, 1.0, 0))
    assert mo.certificate(wrong, price, length, demand, limits, imp)
    j = int(np.argmax(length))
    x = out.x.copy()
    x[j] = length[j] - x[j]  # another dispatch of the same total is not balanced
    moved = out._replace(x=x)
    assert x[j] != out.x[j] and mo.certificate(moved, price, length, demand, limits, imp)


def test_prices_are_the_cost_of_one_more_kw_of_demand():
    rng = np.random.default_rng(5)
    checked = 0
    for _ in range(12):
        topo, bus, price, length, demand, limits, imp = random_case(rng, 10)
        mo = MeritOrder(topo, bus)
        out = mo.solve(price, length, demand, limits, imp)
        base = price @ out.x + imp * out.source_import
        for b in range(len(demand)):
            more = demand.copy()
            more[b] += 1e-4
            bumped = mo.solve(price, length, more, limits, imp)
            slope = (price @ bumped.x + imp * bumped.source_import - base) / 1e-4
            assert slope == pytest.approx(out.prices[b], abs=1e-5)
            checked += 1
    assert checked == 120


def test_ties_follow_the_documented_rule():
    """Equal offers run in resource order; an offer at the cap runs before load is shed; an
    offer at exactly the source price does not run while the feeder imports."""
    topo = Topology("s", [Branch("s-a", "s", "a", (), 20.0)])
    res = [Resource("generator_0", "a", "generator"), Resource("generator_1", "a", "generator")]
    m = DLMPMarket(topo, res, n_blocks=1, price_cap=30.0)
    demand = m.bus_vector({"a": 50.0}, "demand_kw")
    hour = MarketContext(demand_kw=demand, capacity_kw=[40.0, 40.0], source_price=5.0)
    r = m.clear([[7.0], [7.0]], hour)  # 30 kW above the import limit: generator_0 first
    np.testing.assert_array_equal(r.quantities, [30.0, 0.0])
    assert r.dlmp[1] == 7.0 and r.energy == 5.0 and r.feasible
    r = m.clear([[30.0], [30.0]], hour)  # at the cap: offers run, nothing is shed
    np.testing.assert_array_equal(r.quantities, [30.0, 0.0])
    assert r.total_shed_kw == 0.0
    r = m.clear([[7.0], [9.0]], MarketContext(demand_kw=m.bus_vector({"a": 15.0}, "d"),
                                              capacity_kw=[40.0, 40.0], source_price=7.0))
    np.testing.assert_array_equal(r.quantities, [0.0, 0.0])  # the source first at a tie
    assert r.source_kw == 15.0 and r.energy == 7.0


@pytest.mark.parametrize("n_buses", [6, 14, 30])
def test_the_dlmp_markets_merit_order_path_equals_its_highs_path(n_buses):
    """Random trees, hours and offers (rounded a third of the time: ties): the same optimal
    cost always; without ties, the same dispatch and DLMPs."""
    untied = 0
    for seed in range(8):
        fast = random_tree_market(np.random.default_rng(seed), n_buses)
        slow = random_tree_market(np.random.default_rng(seed), n_buses, solver="highs")
        rng = np.random.default_rng(100 + seed)
        for _ in range(10):
            offers, hour = random_hour(fast, rng)
            a, b = fast.clear(offers, hour), slow.clear(offers, hour)
            assert (a.solver, b.solver) == ("merit-order", "highs")
            assert a.cost == pytest.approx(b.cost, rel=1e-9, abs=1e-6)
            assert a.feasible == b.feasible
            if len(np.unique(offers)) == offers.size:
                np.testing.assert_allclose(a.quantities, b.quantities, atol=1e-7)
                np.testing.assert_allclose(a.dlmp, b.dlmp, atol=1e-7)
                untied += 1
    assert untied > 40


def test_with_losses_the_dlmp_market_clears_with_highs():
    m = random_tree_market(np.random.default_rng(4))
    offers, hour = random_hour(m, np.random.default_rng(5))
    assert m.clear(offers, hour).solver == "merit-order"
    B = len(m.topology.buses)
    m.set_losses(np.full(B, -0.01), 2.0, np.zeros(B))
    assert m.clear(offers, hour).solver == "highs"
    m.reset()
    assert m.clear(offers, hour).solver == "merit-order"
    with pytest.raises(ValueError, match="solver must be 'auto' or 'highs'"):
        random_tree_market(np.random.default_rng(4), solver="daqp")


def test_the_solver_can_be_switched_on_one_market():
    m = random_tree_market(np.random.default_rng(6))
    offers, hour = random_hour(m, np.random.default_rng(7))
    first = m.clear(offers, hour)
    m.solver = "highs"  # the same inputs clear again, with HiGHS (the last result forgotten)
    again = m.clear(offers, hour)
    assert (first.solver, again.solver) == ("merit-order", "highs")
    assert again.cost == pytest.approx(first.cost, rel=1e-9)
    with pytest.raises(ValueError, match="solver must be 'auto' or 'highs', got 'daqp'"):
        m.solver = "daqp"
    assert m.solver == "highs" and m.clear(offers, hour) is again


def test_tied_and_degenerate_offers_reach_the_cvxpy_statements_optimum():
    """Offers all equal, all at the cap (tying with shedding), all zero, all at the source's
    price, and rounded (ties across resources): the merit order's cost is the CVXPY
    statement's (HiGHS) on the IEEE 37 market, whose two limits bind."""
    env37 = dlmp_v0.parallel_env(market_rounds=1)
    env37.reset(seed=0)
    env37.t = 12
    env37.start_hour()
    market = env37.market
    ctx = MarketContext(demand_kw=env37.demand_kw.copy(), capacity_kw=env37.capacity_kw.copy(),
                        source_price=env37.lmp_now, pv_kw=env37.pv_kw.copy())
    shape = (len(market.names), market.n_blocks)
    rng = np.random.default_rng(11)
    cases = [np.full(shape, 6.0), np.full(shape, market.price_cap), np.zeros(shape),
             np.full(shape, env37.lmp_now), np.round(rng.uniform(0, 12, shape) / 3) * 3]
    for offers in cases:
        fast = market.clear(offers, ctx)
        ref = market.clear_cvxpy(offers, ctx, solver="HIGHS")
        assert fast.solver == "merit-order"
        assert fast.cost == pytest.approx(ref.cost, rel=1e-8)
        assert fast.feasible == ref.feasible


def test_a_used_merit_order_solves_like_a_fresh_one():
    """What one instance keeps between solves (the upward pass of the last lengths, net
    demand and limits: a market's rounds in an hour share them) changes no answer: new
    prices on the same data, other data, and the first data again give bit for bit a fresh
    instance's result."""
    rng = np.random.default_rng(21)
    for _ in range(20):
        topo, item_bus, price, length, demand, limits, imp = random_case(rng, 12, ties=True)
        used = MeritOrder(topo, item_bus)
        for data in ((price, length, demand), (rng.permutation(price), length, demand),
                     (price, length * 0.5, demand * 0.7), (price, length, demand)):
            got = used.solve(*data, limits, imp)
            want = MeritOrder(topo, item_bus).solve(*data, limits, imp)
            if want is None:
                assert got is None
                continue
            for a, b in zip(got, want):
                assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
