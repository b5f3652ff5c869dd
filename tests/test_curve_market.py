"""The curve market: optimality, prices, budget identities, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from ogg_envs import api
from ogg_envs.grid import Branch, OpenDSSGrid, Topology
from ogg_envs.markets.curve_market import (
    FLAT_TILT,
    Bid,
    ClearingResult,
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
    assert res.total_curtailed_kw == 0.0 and res.solver == "daqp"
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


def test_shed_and_spill_are_cut_pro_rata_from_the_firm_parts_at_their_bus():
    """Shed kW at a bus come off its demands' firm parts in proportion to them (a demand
    without a firm part keeps what it got), spilled kW off its supplies' must-run parts; a
    shedding bus's price is the cap and a spilling bus's the floor, the clip counted in the
    congestion part of the price."""
    parts = [MarketParticipant("s1", "a", "supply"), MarketParticipant("s1b", "a", "supply"),
             MarketParticipant("d1", "c", "demand"), MarketParticipant("d2", "c", "demand"),
             MarketParticipant("d3", "c", "demand")]
    m = CurveMarket(line_topology(), parts, price_cap=20.0, price_floor=1.0)
    short = {"s1": Bid.flat(5.0, 60.0), "s1b": Bid.flat(6.0, 0.0),
             "d1": Bid.inelastic(100.0, 20.0), "d2": Bid.inelastic(50.0, 20.0),
             "d3": Bid(20.0, 10.0, 30.0, 0.0)}
    res = m.clear(short)
    shed = res.shed_kw["c"]
    assert shed == pytest.approx(90.0, abs=1e-3) and res.total_shed_kw == shed
    q = res.quantities
    assert q["d1"] == pytest.approx(100.0 - shed * 100.0 / 150.0, abs=1e-9)
    assert q["d2"] == pytest.approx(50.0 - shed * 50.0 / 150.0, abs=1e-9)
    assert q["d3"] == pytest.approx(0.0, abs=1e-3)  # no firm part, priced out by the cap
    assert res.prices["c"] == 20.0
    np.testing.assert_allclose(sum(res.price_components.values()), res.bus_prices, atol=1e-12)
    surplus = {"s1": Bid(5.0, 5.0, 200.0, 200.0), "s1b": Bid(6.0, 4.0, 150.0, 100.0),
               "d1": Bid.inelastic(40.0, 20.0), "d2": Bid.inelastic(10.0, 20.0),
               "d3": Bid(20.0, 10.0, 30.0, 0.0)}
    res = m.clear(surplus)
    spill = res.spilled_kw["a"]
    assert spill == pytest.approx(300.0 - 80.0, abs=1e-3) and res.total_curtailed_kw == spill
    q = res.quantities
    assert q["s1"] == pytest.approx(200.0 - spill * 200.0 / 300.0, abs=1e-9)
    assert q["s1b"] == pytest.approx(100.0 - spill * 100.0 / 300.0, abs=1e-9)
    assert q["d3"] == pytest.approx(30.0, abs=1e-3)
    np.testing.assert_array_equal(res.bus_prices, 1.0)
    np.testing.assert_allclose(sum(res.price_components.values()), res.bus_prices, atol=1e-12)
    assert res.feasible and res.total_shed_kw == 0.0


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


def test_the_result_cache_follows_the_congestion_tolerance():
    """The same bids return the last result object, unless ``congestion_tol`` changed: a
    flow under its limit is congested or not by the tolerance of the clearing."""
    m = CurveMarket(line_topology(np.inf), PARTS, price_cap=20.0)
    res = m.clear(BIDS)
    e = int(np.argmax(np.abs(res.flows)))
    assert abs(res.flows[e]) > 1.0
    limits = m.limits_kw
    limits[e] = 1.25 * abs(res.flows[e])  # not binding: the same clearing, 20 % under
    m.set_limits(limits)
    res = m.clear(BIDS)
    assert m.clear(BIDS) is res and res.branches[e] not in res.congested
    m.congestion_tol = 0.5
    assert res.branches[e] in m.clear(BIDS).congested
    m.congestion_tol = 1e-5
    assert res.branches[e] not in m.clear(BIDS).congested


# ---------------------------------------------------------------------- ties and degeneracy
TIE_PARTS = PARTS[:4] + [MarketParticipant("s1b", "a", "supply"),
                         MarketParticipant("s3", "c", "supply")]


def _kkt_violations(m: CurveMarket, arr: np.ndarray, res, tol: float = 1e-6) -> list[str]:
    """The optimality conditions of the regularised problem (module docstring), checked on a
    result that shed and spilled nothing: every bid is optimal for its owner at its bus's
    price (the marginal price of its curve as cleared equals the price inside its range and
    is on the right side of it at a bound), the feeder balances, every flow is within its
    limit, and prices differ across a branch only if it binds, in the direction of its flow."""
    bad = []
    curv, _ = m._regularised_coefficients(arr)
    p_max, p_min, q_max, q_min = arr.T
    q = res.participant_quantities
    lam = res.participant_prices
    marginal = np.where(m.is_supply, p_min + curv * (q - q_min), p_max - curv * (q - q_min))
    # supply: more is worth it while marginal < price; demand: while marginal > price
    gain = np.where(m.is_supply, lam - marginal, marginal - lam)
    at_lo, at_hi = q <= q_min + 1e-7, q >= q_max - 1e-7
    for i, name in enumerate(m.names):
        if (gain[i] > tol and not at_hi[i]) or (gain[i] < -tol and not at_lo[i]):
            bad.append(f"{name}: q={q[i]:.6f} marginal={marginal[i]:.6f} price={lam[i]:.6f}")
    inj = np.where(m.is_supply, q, -q)
    if abs(inj.sum()) > 1e-6:
        bad.append(f"imbalance {inj.sum()}")
    for br in m.topology.branches:
        flow, lim = res.flows_kw[br.name], m.limits_kw[m.topology.branch_index[br.name]]
        if abs(flow) > lim + 1e-6:
            bad.append(f"{br.name}: flow {flow} over {lim}")
        step = res.prices[br.child] - res.prices[br.parent]
        binding = abs(flow) >= lim - 1e-6
        if (not binding and abs(step) > tol) or (binding and step * np.sign(flow) < -tol):
            bad.append(f"{br.name}: price step {step} with flow {flow} (limit {lim})")
    return bad


def _objective(m: CurveMarket, arr: np.ndarray, x: np.ndarray) -> float:
    """The stated problem's objective at x (layout [q, shed, spill, p])."""
    slope, lin = m._curve_coefficients(arr)
    q, shed, spill = x[:len(m.names)], x[m._sl["shed"]], x[m._sl["spill"]]
    return float(0.5 * slope @ q**2 + lin @ q + m.price_cap * shed.sum()
                 - m.price_floor * spill.sum() + 0.5e-6 * (shed @ shed + spill @ spill))


def _instances(rng):
    """Random, structured, tied and degenerate bids for TIE_PARTS (name -> Bid)."""
    out = []
    for _ in range(6):  # random
        out.append({p.name: Bid(*np.sort(rng.uniform(0, 20, 2))[::-1],
                                *np.sort(rng.uniform(0, 400, 2))[::-1])
                    for p in TIE_PARTS})
    structured = {"s1": Bid(8.0, 2.0, 300.0, 0.0), "s2": Bid(12.0, 5.0, 400.0, 0.0),
                  "d1": Bid(15.0, 1.0, 300.0, 0.0), "d2": Bid(14.0, 3.0, 500.0, 100.0),
                  "s1b": Bid(9.0, 2.5, 200.0, 0.0), "s3": Bid(10.0, 6.0, 100.0, 0.0)}
    out.append(structured)
    out.append(dict(structured, s1=Bid.flat(4.0, 300.0), s1b=Bid.flat(4.0, 300.0),
                    s2=Bid.flat(4.0, 250.0), s3=Bid.flat(4.0, 100.0)))  # tied flat offers
    out.append(dict(structured, s1b=structured["s1"]))  # identical offers at one bus
    out.append(dict(structured, s2=Bid(0.0, 0.0, 0.0, 0.0), s3=Bid(5.0, 5.0, 0.0, 0.0),
                    d1=Bid(9.0, 9.0, 0.0, 0.0)))  # zero quantities
    out.append({p.name: Bid.flat(20.0, 300.0) if p.side == "supply" else
                Bid.inelastic(100.0, 20.0) for p in TIE_PARTS})  # everything at the cap
    out.append({"s1": Bid.flat(3.0, 500.0), "s1b": Bid.flat(3.0, 500.0),
                "s2": Bid(0.0, 0.0, 0.0, 0.0), "s3": Bid(0.0, 0.0, 0.0, 0.0),
                "d1": Bid.inelastic(50.0, 20.0),
                "d2": Bid.inelastic(150.0, 20.0)})  # the a-b line exactly at its limit
    return out


@pytest.mark.parametrize("limit", [150.0, np.inf])
def test_fast_path_is_the_optimum_of_the_regularised_problem(limit):
    rng = np.random.default_rng(5)
    m = CurveMarket(line_topology(limit), TIE_PARTS, price_cap=20.0)
    compared = 0
    for k, bids in enumerate(_instances(rng)):
        res = m.clear(bids)
        arr = m.bids_to_array(bids)
        assert res.solver == "daqp"
        if res.total_shed_kw == 0 and res.total_curtailed_kw == 0:
            assert not _kkt_violations(m, arr, res), (k, _kkt_violations(m, arr, res))
        # against the problem as stated (no regularisation, optimum maybe not unique): the
        # objective (-welfare on the bids, shed and spill at their prices) within what the
        # tilt can move it, 0.5 * FLAT_TILT * (q_max - q_min) per bid
        ref = m.clear_cvxpy(bids)
        gap = _objective(m, arr, m._solve(arr)[0]) - _objective(m, arr, m._solve_cvxpy(arr)[0])
        assert -1e-3 <= gap <= 0.5 * FLAT_TILT * float(np.sum(arr[:, 2] - arr[:, 3])) + 1e-3, k
        if k < 6 and res.total_shed_kw + res.total_curtailed_kw == 0:
            # random bids: prices unique, the argmin of the regularised reference the same
            # (where nothing is spilled: Clarabel splits spill over buses only to its tolerance)
            compared += 1
            reg = m.clear_cvxpy(bids, regularised=True)
            np.testing.assert_allclose(res.participant_prices, ref.participant_prices,
                                       atol=FLAT_TILT + 1e-5)
            np.testing.assert_allclose(res.participant_prices, reg.participant_prices,
                                       atol=1e-5)
            np.testing.assert_allclose(res.participant_quantities,
                                       reg.participant_quantities, atol=1e-3)
    assert compared >= 2


def test_ties_are_split_by_the_documented_rule():
    m = CurveMarket(line_topology(), TIE_PARTS, price_cap=20.0)
    bids = {"s1": Bid.flat(4.0, 300.0), "s1b": Bid.flat(4.0, 300.0), "s2": Bid.flat(4.0, 150.0),
            "s3": Bid.flat(4.0, 0.0), "d1": Bid.inelastic(200.0, 20.0),
            "d2": Bid.inelastic(175.0, 20.0)}
    res = m.clear(bids)
    q = res.quantities
    # identical offers at one bus clear the same; tied offers anywhere clear the same
    # fraction of their ranges (375 kW over 750 kW offered: half of each)
    assert q["s1"] == pytest.approx(q["s1b"], abs=1e-6)
    for name, offered in (("s1", 300.0), ("s1b", 300.0), ("s2", 150.0)):
        assert q[name] == pytest.approx(0.5 * offered, abs=1e-3)
    assert res.prices["a"] == pytest.approx(4.0, abs=FLAT_TILT)


def test_dense_solvers_agree_and_bad_solver_names_are_refused():
    rng = np.random.default_rng(9)
    markets = {s: CurveMarket(line_topology(150.0), PARTS, price_cap=20.0, solver=s)
               for s in ("daqp", "clarabel")}
    for _ in range(5):
        bids = random_bids(rng)
        a, b = (markets[s].clear(bids) for s in ("daqp", "clarabel"))
        np.testing.assert_allclose(a.participant_prices, b.participant_prices, atol=1e-5)
        assert a.solver == "daqp" and b.solver == "clarabel"
    with pytest.raises(ValueError, match="solver must be one of"):
        CurveMarket(line_topology(), PARTS, solver="gurobi")


def test_set_limits_checks_before_changing_anything():
    m = CurveMarket(line_topology(150.0), PARTS, price_cap=20.0)
    before = m.limits_kw
    with pytest.raises(ValueError, match="unknown branch 'x-y'"):
        m.set_limits({"a-b": 10.0, "x-y": 5.0})
    with pytest.raises(ValueError, match=">= 0"):
        m.set_limits({"a-b": -1.0})
    np.testing.assert_array_equal(m.limits_kw, before)
    m.set_limits({"a-b": 100.0})
    assert m.clear(BIDS).flows_kw["a-b"] == pytest.approx(100.0, abs=1e-6)


# ---------------------------------------------------------------------- the solver plumbing
def _small_problem():
    """A QP with an equality row, two-sided and one-sided rows, bounds and a fixed variable;
    every kind of constraint binds at its optimum."""
    P = np.diag([1.0, 2.0, 0.5, 1.5])
    q = np.array([-4.0, -1.0, 2.0, -3.0])
    A = np.array([[1.0, 1.0, 1.0, 1.0], [1.0, -1.0, 0.0, 0.0], [0.0, 1.0, 1.0, 0.0]])
    l = np.array([3.0, -0.5, -np.inf])
    u = np.array([3.0, 0.5, 1.0])
    lb = np.array([0.0, 0.0, 0.2, 0.0])
    ub = np.array([np.inf, 2.0, 0.2, 0.8])
    return P, q, A, l, u, lb, ub


def test_solvers_share_one_convention_and_their_duals_are_derivatives():
    from ogg_envs.markets.solvers import clarabel_qp, daqp_qp, osqp_qp

    P, q, A, l, u, lb, ub = _small_problem()

    def value(l_, u_, lb_, ub_):
        x = daqp_qp.solve(P, q, A, l_, u_, lb_, ub_).x
        return 0.5 * x @ P @ x + q @ x

    ref = daqp_qp.solve(P, q, A, l, u, lb, ub)
    assert ref.solver == "daqp"
    np.testing.assert_allclose(P @ ref.x + q + A.T @ ref.y + ref.z, 0.0, atol=1e-9)
    h = 1e-4
    for i in range(len(u)):  # both sides of row i moved together: d value = -y_i
        e = np.zeros(len(u))
        e[i] = h
        fd = (value(l + e, u + e, lb, ub) - value(l - e, u - e, lb, ub)) / (2 * h)
        assert fd == pytest.approx(-ref.y[i], abs=1e-6), i
    for j in range(len(lb)):
        e = np.zeros(len(lb))
        e[j] = h
        fd = (value(l, u, lb + e, ub + e) - value(l, u, lb - e, ub - e)) / (2 * h)
        assert fd == pytest.approx(-ref.z[j], abs=1e-6), j
    assert np.count_nonzero(np.abs(ref.y) > 1e-6) >= 2  # rows bind (the test can fail)
    for module, tol in ((clarabel_qp, 1e-5), (osqp_qp, 1e-5)):
        sol = module.solve(P, q, A, l, u, lb, ub)
        np.testing.assert_allclose(sol.x, ref.x, atol=tol)
        np.testing.assert_allclose(sol.y, ref.y, atol=tol)
        np.testing.assert_allclose(sol.z, ref.z, atol=tol)


def test_highs_lp_is_cold_and_shares_the_convention():
    from ogg_envs.markets.solvers import clarabel_qp
    from ogg_envs.markets.solvers.highs_lp import HighsLP

    _, q, A, l, u, lb, ub = _small_problem()
    ub = np.minimum(ub, 5.0)
    lp = HighsLP(A)
    first = lp.solve(q, l, u, lb, ub)
    ref = clarabel_qp.solve(None, q, A, l, u, lb, ub)
    np.testing.assert_allclose(first.x, ref.x, atol=1e-6)
    np.testing.assert_allclose(q + A.T @ first.y + first.z, 0.0, atol=1e-9)
    def side(dual, lo, hi):  # the bound each dual prices (none where it is zero)
        return np.where(dual > 0, hi, np.where(dual < 0, lo, 0.0))

    dual_value = first.y @ side(first.y, l, u) + first.z @ side(first.z, lb, ub)
    assert dual_value == pytest.approx(-(q @ first.x), abs=1e-6)  # strong duality
    rng = np.random.default_rng(0)
    for _ in range(5):  # other problems in between leave nothing behind
        lp.solve(rng.uniform(-5, 5, 4), l, u, lb, ub)
    again = lp.solve(q, l, u, lb, ub)
    np.testing.assert_array_equal(again.x, first.x)
    np.testing.assert_array_equal(again.y, first.y)
    with pytest.raises(MarketClearingError, match="HiGHS"):
        lp.solve(q, l, u, lb, np.full(4, -1.0))  # lb > ub: infeasible


def test_diagonal_hot_path_is_bit_for_bit_the_plain_solve():
    """``DenseQP.solve_diagonal`` (stacked data, no bound duals) returns exactly ``solve``'s
    x and y; with ``P`` as its diagonal the bound duals of the substituted (fixed) variables
    still satisfy stationarity, and the dense-``P`` route agrees to rounding."""
    from ogg_envs.markets.solvers import daqp_qp

    P, q, A, l, u, lb, ub = _small_problem()
    d = np.diag(P).copy()
    assert np.count_nonzero(lb == ub) == 1  # the substitution runs
    qp = daqp_qp.DenseQP(A)
    full = qp.solve(d, q, l, u, lb, ub)
    x, y = qp.solve_diagonal(np.stack([d, q, lb, ub]), np.stack([u, l]))
    assert x.tobytes() == full.x.tobytes() and y.tobytes() == full.y.tobytes()
    np.testing.assert_allclose(d * full.x + q + A.T @ full.y + full.z, 0.0, atol=1e-9)
    dense = daqp_qp.solve(P, q, A, l, u, lb, ub)
    for a, b in ((full.x, dense.x), (full.y, dense.y), (full.z, dense.z)):
        np.testing.assert_allclose(a, b, atol=1e-9)
    free = np.stack([d, q, np.zeros(4), np.full(4, 5.0)])  # nothing fixed: no substitution
    x, y = qp.solve_diagonal(free, np.stack([u, l]))
    ref = qp.solve(d, q, l, u, free[2], free[3])
    assert x.tobytes() == ref.x.tobytes() and y.tobytes() == ref.y.tobytes()


@pytest.mark.parametrize("limit", [150.0, 120.0, np.inf])
def test_clear_is_bit_for_bit_the_readable_dense_statement(limit):
    """The clearing's hot path (stacked data, precomputed rows and slopes, no clip when the
    prices are in the band) gives exactly the numbers of the dense statement written out:
    ``_regularised_coefficients`` and ``_bounds`` solved by ``daqp_qp.solve``, prices from
    its duals, surpluses from the bids' curves."""
    from ogg_envs.markets.solvers import daqp_qp

    rng = np.random.default_rng(5)
    m = CurveMarket(line_topology(limit), TIE_PARTS, price_cap=20.0)
    n = len(m.names)
    instances = _instances(rng)
    instances.append({p.name: Bid(20.0, 20.0, 0.0, 0.0) if p.side == "supply" else
                      Bid.inelastic(80.0, 20.0) for p in TIE_PARTS})  # sheds: prices at the cap
    seen = set()
    for bids in instances:
        arr = m.bids_to_array(bids)
        res = m.clear(bids)
        _, qp, l, u, Ht, _ = m._dense_rows()
        curv, lin = m._regularised_coefficients(arr)
        lo, hi = m._bounds(arr)
        sol = daqp_qp.solve(np.r_[curv, m._slack_curv], np.r_[lin, m._f[n:]], qp.A, l, u,
                            lo, hi, start=qp.start)
        prices = np.clip(-sol.y[0] - Ht @ sol.y[1:], m.price_floor, m.price_cap)
        assert res.bus_prices.tobytes() == prices.tobytes()
        assert res.flows.tobytes() == (m.topology.H @ (m._M @ sol.x)).tobytes()
        served = res.participant_quantities
        if res.shed is None and res.spilled is None:
            assert served.tobytes() == np.maximum(sol.x[:n], 0.0).tobytes()
        slope, _ = m._curve_coefficients(arr)
        p_max, p_min, _, q_min = arr.T
        above = np.maximum(served - q_min, 0.0)
        half = 0.5 * slope * above * above
        bought = np.where(m.is_supply, 0.0, served)
        pay = float(res.participant_prices @ bought)
        assert res.consumer_payments == pay
        assert res.consumer_surplus == float(p_max @ bought - half @ (~m.is_supply)) - pay
        seen.add((bool(res.congested), res.total_shed_kw > 0))
    assert (False, True) in seen or (True, True) in seen  # a shedding case ran
    if limit < np.inf:
        assert (True, False) in seen  # and a congested one


def test_deferred_accounts_are_the_same_numbers_however_they_are_reached():
    """A result computes its money accounts, price components, shed and spilled kW when
    first read: a copy pickled before any of them was read, and one rebuilt by
    ``dataclasses.replace``, report the same numbers bit for bit; values given to the
    constructor are kept as given."""
    import dataclasses
    import pickle

    deferred = ("consumer_payments", "producer_revenue", "consumer_surplus",
                "producer_surplus", "congestion_rent", "loss_surplus", "welfare",
                "total_curtailed_kw", "price_components", "shed", "spilled")
    rng = np.random.default_rng(11)
    m = CurveMarket(line_topology(limit=150.0), PARTS, price_cap=20.0)
    short = dict(BIDS, s1=Bid(8.0, 2.0, 0.0, 0.0), s2=Bid(12.0, 5.0, 0.0, 0.0))
    spill = dict(BIDS, s1=Bid(8.0, 2.0, 900.0, 900.0))
    cut = 0
    for bids in [BIDS, short, spill] + [random_bids(rng) for _ in range(20)]:
        res = m.clear(bids)
        m.reset()  # (the cache would return the same object)
        unread = pickle.loads(pickle.dumps(m.clear(bids)))
        cut += res.shed is not None
        for name in deferred:
            a, b = getattr(res, name), getattr(unread, name)
            if isinstance(a, dict):
                assert all(a[k].tobytes() == b[k].tobytes() for k in a) and a.keys() == b.keys()
            elif isinstance(a, np.ndarray):
                assert a.tobytes() == b.tobytes()
            else:
                assert a == b, name
        assert res.welfare == pytest.approx(res.consumer_surplus + res.producer_surplus
                                            + res.congestion_rent, abs=1e-9)
        copy = dataclasses.replace(res)
        assert copy.welfare == res.welfare and copy.shed is res.shed
    assert cut >= 2  # shedding and spilling results ran
    given = dataclasses.replace(m.clear(BIDS), welfare=1.5, shed=None)
    assert given.welfare == 1.5 and given.shed is None
    assert f"welfare={res.welfare!r}" in repr(res)


def test_deferred_accounts_run_once_pickle_as_numbers_and_default_as_before():
    """The accounts run once, on the first read; a pickle of an unread result holds the
    numbers, not the function computing them; a result built by hand without accounts reads
    the defaults a result had before the accounts were deferred (0, None, {}) and raises for
    a field that had none."""
    import pickle

    m = CurveMarket(line_topology(limit=150.0), PARTS, price_cap=20.0)
    res = m.clear(BIDS)
    accounts, runs = res._accounts, []
    res._accounts = lambda: runs.append(1) or accounts()
    welfare = res.welfare
    res.settle()
    assert res.consumer_surplus is not None and res.welfare == welfare and runs == [1]
    m.reset()
    unread = m.clear(BIDS)
    data = pickle.dumps(unread)
    assert b"_curve_accounts" not in data
    again = pickle.loads(data)
    assert again.welfare == welfare and again.price_components.keys() == {
        "energy", "loss", "congestion"}
    bare = ClearingResult(participants=res.participants, congested=[],
                          participant_prices=res.participant_prices,
                          participant_quantities=res.participant_quantities,
                          buses=res.buses, branches=res.branches, bus_prices=res.bus_prices,
                          flows=res.flows, consumer_payments=1.0)
    assert bare.consumer_payments == 1.0  # given values are kept
    assert (bare.welfare, bare.shed, bare.price_components) == (0.0, None, {})
    with pytest.raises(AttributeError, match="producer_revenue was not given"):
        bare.producer_revenue  # noqa: B018 - the read is the test


def _nearest_valid(bid, cap, floor, q_limit):
    """The documented repair, written out for one bid in plain Python (the tests' oracle):
    reversed ranges swapped, then prices clipped into [floor, cap], quantities into
    [0, q_limit]; the fixes in the documented words."""
    p_hi, p_lo, q_hi, q_lo = bid
    fixes = []
    if p_hi < p_lo:
        p_hi, p_lo = p_lo, p_hi
        fixes.append("p_max < p_min: swapped")
    if q_hi < q_lo:
        q_hi, q_lo = q_lo, q_hi
        fixes.append("q_max < q_min: swapped")
    out = [min(max(p_hi, floor), cap), min(max(p_lo, floor), cap),
           min(max(q_hi, 0.0), q_limit), min(max(q_lo, 0.0), q_limit)]
    if out != [p_hi, p_lo, q_hi, q_lo]:
        fixes.append("clipped into the price band / quantity limit")
    return out, fixes


def test_market_repair_is_bid_repair_row_by_row_on_random_bids():
    """``CurveMarket.repair`` gives exactly ``Bid.repair``'s bids and fixes for every invalid
    row (per-row quantity limits included), both equal to the documented repair written out
    for one bid (``_nearest_valid``), leaves valid rows and the input alone, agrees with
    ``Bid.check`` on which bids are valid, and ``strict`` raises ``Bid.check``'s message."""
    m = CurveMarket(line_topology(), PARTS, price_cap=20.0, price_floor=-2.0)
    rng = np.random.default_rng(7)
    repaired = 0
    for _ in range(300):
        bids = rng.uniform(-5, 30, (len(PARTS), 4)) * rng.choice([0.0, 1.0, 20.0], (len(PARTS), 4))
        limit = rng.uniform(0, 400, len(PARTS))
        limit[rng.random(len(PARTS)) < 0.2] = np.inf
        at_limit = rng.random(len(PARTS)) < 0.3  # q_max at the limit and a hair above it
        bids[at_limit, 2] = limit[at_limit] + rng.choice([0.0, 5e-10, 1e-6], at_limit.sum())
        bids[~np.isfinite(bids)] = 1.0
        given = bids.copy()
        out, fixes = m.repair(bids, limit)
        np.testing.assert_array_equal(bids, given)  # never in place
        for k, name in enumerate(m.names):
            bid, expected = Bid.from_array(given[k]).repair(name, 20.0, -2.0, limit[k])
            try:
                Bid.from_array(given[k]).check(name, 20.0, -2.0, limit[k])
                valid = True
            except InvalidBidError:
                valid = False
            assert valid == (name not in fixes)
            if valid:
                assert np.array_equal(out[k], given[k])
            else:
                repaired += 1
                oracle, oracle_fixes = _nearest_valid(given[k].tolist(), 20.0, -2.0, limit[k])
                assert fixes[name] == expected == oracle_fixes
                assert np.array_equal(out[k], bid.as_array())
                assert out[k].tolist() == oracle
        if fixes:
            first = m.names[min(m.index[n] for n in fixes)]
            with pytest.raises(InvalidBidError, match=f"^{first}: bid"):
                m.repair(bids, limit, strict=True)
        again, none = m.repair(out, limit, strict=True)  # repaired bids are valid: kept as is
        assert again is out and none == {}
        m.clear(out)
    assert repaired > 300
    # one row, for a named participant (an environment's check of one agent's bid)
    one, fixes = m.repair(np.array([[3.0, 5.0, 50.0, 0.0]]), [40.0], names=["d2"])
    assert one.tolist() == [[5.0, 3.0, 40.0, 0.0]] and list(fixes) == ["d2"]
    with pytest.raises(InvalidBidError, match="d2: bid quantities need 0 <= q_min <= q_max <= 40"):
        m.repair(np.array([[5.0, 3.0, 50.0, 0.0]]), [40.0], names=["d2"], strict=True)


@pytest.mark.parametrize("cap", [20.0, np.inf])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_market_repair_never_repairs_non_finite_numbers(bad, cap):
    """NaN and inf are refused, also by a market without a finite price cap."""
    m = CurveMarket(line_topology(), PARTS, price_cap=cap)
    bids = np.array([b.as_array() for b in BIDS.values()])
    for column in range(4):
        broken = bids.copy()
        broken[3, column] = bad
        label = ("p_max", "p_min", "q_max", "q_min")[column]
        with pytest.raises(InvalidBidError, match=f"d2: bid {label} is {bad!r}; bids must be "
                                                  "finite numbers"):  # (plain nan/inf)
            m.repair(broken)
        with pytest.raises(InvalidBidError, match="d2"):
            m.clear(broken)
        assert m.repair(bids)[1] == {}  # clear skips its check of these very bids only
        with pytest.raises(InvalidBidError, match="d2"):
            m.clear(broken)
    m.clear(bids)


def test_dense_qp_reused_or_copied_solves_like_a_fresh_one():
    """``DenseQP.solve_diagonal`` writes each problem into arrays it keeps per set of fixed
    variables: a used instance, and a copy or pickle of one, must still give a fresh
    instance's answer bit for bit, whatever was solved before and whichever set is fixed."""
    import copy
    import pickle

    from ogg_envs.markets.solvers import daqp_qp

    P, q, A, l, u, lb, ub = _small_problem()
    d = np.diag(P).copy()
    l[0] = u[0] = 1.0  # (a balance every choice of fixed variable below can meet)
    rng = np.random.default_rng(3)
    problems = []
    for k in range(12):
        lo, hi = lb.copy(), np.minimum(ub, 5.0)
        fixed = k % 4  # each variable fixed in turn (a different split each time)
        lo[fixed] = hi[fixed] = 0.1 * (k % 3)
        problems.append((np.stack([d * rng.uniform(0.5, 2.0, 4), q + rng.normal(0, 0.5, 4),
                                   lo, hi]), np.stack([u, l])))
    used = daqp_qp.DenseQP(A)
    for data, ul in problems:  # fills every split's arrays
        used.solve_diagonal(data.copy(), ul)
    for other in (used, copy.deepcopy(used), pickle.loads(pickle.dumps(used))):
        for data, ul in problems[::-1]:
            x, y = other.solve_diagonal(data.copy(), ul)
            fx, fy = daqp_qp.DenseQP(A).solve_diagonal(data.copy(), ul)
            assert x.tobytes() == fx.tobytes() and y.tobytes() == fy.tobytes()


def test_results_hold_what_their_init_would_hold():
    """``CurveMarket._result`` builds its result without ``__init__``
    (``ClearingResult._of_fields``): the same fields, values and order as
    ``ClearingResult(**fields)`` would hold, and every field that is not ``Deferred`` is given
    (a field added to ``Clearing`` must be added there too), spilled, shed or neither."""
    import dataclasses
    import inspect

    deferred = {f.name for f in dataclasses.fields(ClearingResult)
                if isinstance(inspect.getattr_static(ClearingResult, f.name, None),
                               api.Deferred)}
    plain = [f.name for f in dataclasses.fields(ClearingResult) if f.name not in deferred]
    m = CurveMarket(line_topology(limit=150.0), PARTS, price_cap=20.0)
    for bids in (BIDS, dict(BIDS, s1=Bid(8.0, 2.0, 900.0, 900.0)),
                 dict(BIDS, s1=Bid(8.0, 2.0, 0.0, 0.0), s2=Bid(12.0, 5.0, 0.0, 0.0))):
        res = m.clear(bids)
        held = dict(res.__dict__)
        assert list(held) == plain
        rebuilt = ClearingResult(**held)
        assert list(rebuilt.__dict__) == plain
        assert all(rebuilt.__dict__[k] is v for k, v in held.items())
