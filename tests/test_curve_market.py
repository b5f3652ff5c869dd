"""The curve market: optimality, prices, budget identities, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from ogg_envs import api
from ogg_envs.grid import Branch, OpenDSSGrid, Topology
from ogg_envs.markets.curve_market import (
    Bid,
    CurveMarket,
    InvalidBidError,
    MarketClearingError,
    MarketParticipant,
)


def line_topology(limit=np.inf):
    """root - a - b - c, a radial line; limit on the a-b branch."""
    branches = [Branch("root-a", "root", "a", (), np.inf), Branch("a-b", "a", "b", (), limit),
                Branch("b-c", "b", "c", (), np.inf)]
    return Topology("root", branches)


PARTS = [MarketParticipant("s1", "a", "supply"), MarketParticipant("s2", "c", "supply"),
         MarketParticipant("d1", "a", "demand"), MarketParticipant("d2", "c", "demand"),
         MarketParticipant("probe", "c", "demand")]
BIDS = {"s1": Bid(8.0, 2.0, 600.0, 0.0), "s2": Bid(12.0, 5.0, 400.0, 0.0),
        "d1": Bid(15.0, 1.0, 300.0, 0.0), "d2": Bid(14.0, 3.0, 500.0, 100.0),
        "probe": Bid(0.0, 0.0, 0.0, 0.0)}


def supply_at(bid, p):
    if p < bid.p_min:
        return bid.q_min
    if bid.p_max == bid.p_min:
        return bid.q_max
    return min(bid.q_min + (p - bid.p_min) / bid.slope(), bid.q_max)


def demand_at(bid, p):
    if p > bid.p_max:
        return bid.q_min
    if bid.p_max == bid.p_min:
        return bid.q_max
    return min(bid.q_min + (bid.p_max - p) / bid.slope(), bid.q_max)


def test_uncongested_price_is_the_intersection_of_aggregate_curves():
    m = CurveMarket(line_topology(), PARTS, price_cap=20.0)
    res = m.clear(BIDS)
    lo, hi = 0.0, 20.0  # independent: bisection on aggregate excess demand
    for _ in range(200):
        p = 0.5 * (lo + hi)
        excess = sum(demand_at(BIDS[n], p) for n in ("d1", "d2")) - \
            sum(supply_at(BIDS[n], p) for n in ("s1", "s2"))
        lo, hi = (p, hi) if excess > 0 else (lo, p)
    assert not res.congested
    for price in res.prices.values():
        assert price == pytest.approx(p, abs=1e-5)
    for n in ("s1", "s2"):
        assert res.quantities[n] == pytest.approx(supply_at(BIDS[n], p), abs=1e-3)
    assert res.consumer_payments == pytest.approx(res.producer_revenue, rel=1e-6)
    assert res.congestion_rent == pytest.approx(0.0, abs=1e-3)


def _welfare_with_probe(m, kw):
    bids = dict(BIDS, probe=Bid.inelastic(kw, 0.0))  # valued at 0: welfare change = -cost
    return m.clear(bids).welfare


def test_nodal_prices_equal_finite_difference_marginal_welfare():
    m = CurveMarket(line_topology(limit=150.0), PARTS, price_cap=20.0)
    res = m.clear(dict(BIDS, probe=Bid.inelastic(5.0, 0.0)))
    assert res.congested == ["a-b"]
    assert res.prices["c"] > res.prices["a"] + 0.5, "congestion separates the prices"
    h = 0.5
    fd = -(_welfare_with_probe(m, 5.0 + h) - _welfare_with_probe(m, 5.0 - h)) / (2 * h)
    assert res.prices["c"] == pytest.approx(fd, rel=1e-4)


def test_congestion_rent_equals_payments_minus_revenue_and_line_duals():
    m = CurveMarket(line_topology(limit=150.0), PARTS, price_cap=20.0)
    res = m.clear(BIDS)
    assert res.consumer_payments - res.producer_revenue == pytest.approx(res.congestion_rent)
    # rent = price difference across the congested line times its flow
    flow = res.flows_kw["a-b"]
    assert abs(flow) == pytest.approx(150.0, rel=1e-5)
    assert res.congestion_rent == pytest.approx((res.prices["b"] - res.prices["a"]) * flow,
                                                rel=1e-4)
    assert res.welfare == pytest.approx(res.consumer_surplus + res.producer_surplus
                                        + res.congestion_rent)


def test_fast_path_agrees_with_the_cvxpy_statement_on_random_instances():
    rng = np.random.default_rng(7)
    m = CurveMarket(line_topology(limit=120.0), PARTS, price_cap=20.0)
    for _ in range(20):
        bids = {}
        for p in PARTS:
            pr = np.sort(rng.uniform(0, 20, 2))
            q = np.sort(rng.uniform(0, 400, 2))
            bids[p.name] = Bid(pr[1], pr[0], q[1], q[0] * (p.side == "demand") * 0.3)
        fast, ref = m.clear(bids), m.clear_cvxpy(bids)
        for bus in fast.prices:
            assert fast.prices[bus] == pytest.approx(ref.prices[bus], abs=1e-4)
        assert fast.welfare == pytest.approx(ref.welfare, rel=1e-5, abs=1e-2)


def test_no_supply_sheds_load_at_the_price_cap():
    m = CurveMarket(line_topology(), PARTS, price_cap=20.0)
    bids = dict(BIDS, s1=Bid(8.0, 2.0, 0.0, 0.0), s2=Bid(12.0, 5.0, 0.0, 0.0))
    res = m.clear(bids)
    assert res.shed_kw["c"] == pytest.approx(100.0, abs=1e-4)  # d2's firm 100 kW
    assert res.prices["c"] == pytest.approx(20.0, abs=1e-3)
    assert res.quantities["d2"] == pytest.approx(0.0, abs=1e-4)


def test_more_elastic_demand_never_raises_the_average_price():
    grid = OpenDSSGrid.from_feeder("ieee34")
    parts = [MarketParticipant("sub", "800", "supply"),
             MarketParticipant("dg", "890", "supply")]
    buses = sorted(grid.loads_at_bus)
    parts += [MarketParticipant(f"d{i}", b, "demand") for i, b in enumerate(buses)]
    m = CurveMarket(grid.topology, parts, price_cap=20.0)
    m.set_limits({"832-888": 200.0, "852r-832": 900.0})
    load = {b: grid.base_load_kw[grid.loads_at_bus[b]].sum() for b in buses}
    weights = np.array([load[b] for b in buses])
    prices, nodal = [], []
    for share in np.linspace(0, 1, 6):
        bids = {"sub": Bid.flat(4.3, 3000.0), "dg": Bid(14.0, 6.0, 800.0, 0.0)}
        for i, b in enumerate(buses):
            flexible = i < share * len(buses)
            bids[f"d{i}"] = Bid(12.0, 3.0, load[b], 0.0) if flexible else \
                Bid.inelastic(load[b], 20.0)
        res = m.clear(bids)
        bus_prices = np.array([res.prices[b] for b in buses])
        nodal.append(bus_prices)
        prices.append(float(weights @ bus_prices / weights.sum()))
    # No nodal price rises, so neither does the load-weighted average price. (The average
    # paid per kWh served can rise: flexible consumers at cheap buses buy less.)
    for a, b in zip(nodal, nodal[1:]):
        assert (b <= a + 1e-6).all()
    assert all(b <= a + 1e-6 for a, b in zip(prices, prices[1:])), prices
    assert prices[-1] < prices[0] - 0.1


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_bids_raise_naming_the_participant(bad):
    m = CurveMarket(line_topology(), PARTS, price_cap=20.0)
    with pytest.raises(InvalidBidError, match="d2"):
        m.clear(dict(BIDS, d2=Bid(bad, 3.0, 500.0, 100.0)))
    with pytest.raises(InvalidBidError, match="d2"):
        Bid(1.0, 1.0, bad, 0.0).repair("d2", 20.0)


def test_invalid_bids_are_rejected_or_repaired_as_documented():
    m = CurveMarket(line_topology(), PARTS, price_cap=20.0)
    reversed_bid = Bid(2.0, 8.0, 100.0, 300.0)
    with pytest.raises(InvalidBidError, match="s1.*p_min <= p_max"):
        m.clear(dict(BIDS, s1=reversed_bid))
    fixed, fixes = reversed_bid.repair("s1", 20.0)
    assert fixed == Bid(8.0, 2.0, 300.0, 100.0) and len(fixes) == 2
    capped, fixes = Bid(50.0, 1.0, 10.0, 0.0).repair("s1", 20.0)
    assert capped.p_max == 20.0 and fixes
    with pytest.raises(ValueError, match="unknown participants"):
        m.clear(dict(BIDS, ghost=Bid(1, 1, 1, 1)))
    with pytest.raises(ValueError, match="no bid from"):
        m.clear({k: v for k, v in BIDS.items() if k != "s1"})


def random_bids(rng) -> dict:
    bids = {}
    for p in PARTS:
        pr = np.sort(rng.uniform(0, 20, 2))
        q = np.sort(rng.uniform(0, 400, 2))
        bids[p.name] = Bid(pr[1], pr[0], q[1], q[0] * (p.side == "demand") * 0.3)
    return bids


def test_result_is_a_clearing_with_the_core_fields():
    assert InvalidBidError is api.InvalidBidError
    assert MarketClearingError is api.MarketClearingError
    m = CurveMarket(line_topology(limit=150.0), PARTS, price_cap=20.0)
    assert isinstance(m, api.Market)
    res = m.clear(BIDS)
    assert isinstance(res, api.Clearing) and res.participants == tuple(m.names)
    assert res.congested == ["a-b"] and res.feasible and res.total_shed_kw == 0.0
    assert res.total_curtailed_kw == 0.0 and res.solver in ("osqp", "clarabel")
    for k, name in enumerate(m.names):
        bus = PARTS[k].bus
        assert res.price_of(name) == res.prices[bus]
        assert res.quantity_of(name) == res.quantities[name]
    np.testing.assert_array_equal(res.bids, m.bids_to_array(BIDS))
    # the context is ignored by this market
    again = m.clear(BIDS, api.MarketContext(hour=5, source_price=99.0))
    np.testing.assert_array_equal(again.participant_prices, res.participant_prices)
    # shed load: infeasible, with the total shed reported
    shed = m.clear(dict(BIDS, s1=Bid(8.0, 2.0, 0.0, 0.0), s2=Bid(12.0, 5.0, 0.0, 0.0)))
    assert not shed.feasible and shed.total_shed_kw == pytest.approx(100.0, abs=1e-4)
    # must-run supply nobody takes is spilled (curtailed)
    spill = m.clear(dict(BIDS, s1=Bid(8.0, 2.0, 900.0, 900.0)))
    assert spill.total_curtailed_kw == pytest.approx(sum(spill.spilled_kw.values()))
    assert spill.total_curtailed_kw > 0 and spill.feasible


def test_reset_forgets_the_past():
    rng = np.random.default_rng(11)
    fixed = dict(BIDS, probe=Bid.inelastic(5.0, 0.0))
    for limit in (150.0, 120.0, np.inf):
        used = CurveMarket(line_topology(limit), PARTS, price_cap=20.0)
        for _ in range(20):
            used.clear(random_bids(rng))
        used.reset()
        after = used.clear(fixed)
        fresh = CurveMarket(line_topology(limit), PARTS, price_cap=20.0).clear(fixed)
        np.testing.assert_allclose(after.participant_prices, fresh.participant_prices, rtol=0,
                                   atol=1e-9)
        np.testing.assert_allclose(after.participant_quantities, fresh.participant_quantities,
                                   rtol=0, atol=1e-9)
        assert after.solver == fresh.solver
        # the cache is gone too: the same bids give a new result object after a reset
        used.reset()
        assert used.clear(fixed) is not after
