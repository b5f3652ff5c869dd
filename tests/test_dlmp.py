"""Tests of the DSO's DLMP market (ogg_envs.markets.dlmp) and opengridgym/dlmp-v0."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from pz_conformance import run_all

from ogg_envs.api import Clearing, InvalidBidError, Limits, MarketContext, Participant, Truth
from ogg_envs.envs import dlmp_v0
from ogg_envs.grid.topology import Branch, Topology
from ogg_envs.markets.dlmp import DLMPMarket, InvalidOfferError, Resource
from ogg_envs.policies.blocks import MarkupBidder, TruthfulBidder, true_block_prices


@pytest.fixture(scope="module")
def env37():
    """The default scenario's env (IEEE 37 feeder), reset at hour 12."""
    env = dlmp_v0.parallel_env(market_rounds=1)
    env.reset(seed=0)
    env.t = 12
    env.start_hour()
    return env


def random_offers(market: DLMPMarket, rng, low=4.5, high=9.0) -> np.ndarray:
    return rng.uniform(low, high, (len(market.names), market.n_blocks))


def inputs(env, rng):
    """Random offers and the env's data of its current hour."""
    return dict(offers=random_offers(env.market, rng), demand_kw=env.demand_kw.copy(),
                capacity_kw=env.capacity_kw.copy(), source_price=env.lmp_now,
                pv_kw=env.pv_kw.copy())


def context(d: dict) -> MarketContext:
    return MarketContext(demand_kw=d["demand_kw"], capacity_kw=d["capacity_kw"],
                         source_price=d["source_price"], pv_kw=d.get("pv_kw"))


def ctx(demand, capacity, source_price=5.0, pv=None) -> MarketContext:
    return MarketContext(demand_kw=demand, capacity_kw=capacity, source_price=source_price,
                         pv_kw=pv)


def clear(market, d, **changes):
    d = dict(d, **changes)
    return market.clear(d["offers"], context(d))


def small_market(limits=(math.inf, math.inf, math.inf), **kwargs) -> DLMPMarket:
    """root s -> a -> b, a -> c; a generator at b, DR at c, PV possible at b and c."""
    topo = Topology("s", [Branch("s-a", "s", "a", (), limits[0]),
                          Branch("a-b", "a", "b", (), limits[1]),
                          Branch("a-c", "a", "c", (), limits[2])])
    res = [Resource("generator_0", "b", "generator"), Resource("dr_0", "c", "dr")]
    return DLMPMarket(topo, res, n_blocks=2, price_cap=30.0, load_buses=["a", "b", "c"],
                      pv_buses=["b", "c"], **kwargs)


def vec(market, values: dict) -> np.ndarray:
    return market.bus_vector(values, "test")


# ---------------------------------------------------------------- PettingZoo conformance
def test_pettingzoo_conformance_and_pickling():
    run_all(dlmp_v0, horizon=3)
    run_all(dlmp_v0, horizon=6, market_rounds=1, learners="dr")


# ---------------------------------------------------------------- DLMPs are marginal costs
def test_dlmp_equals_finite_difference_of_optimal_cost(env37):
    """Every bus's DLMP is d(optimal cost)/d(demand at the bus), with congestion present."""
    market = env37.market
    rng = np.random.default_rng(7)
    checked = 0
    separated = 0
    for _ in range(3):
        d = inputs(env37, rng)
        base = clear(market, d)
        assert base.feasible and base.congested, "the instance must be congested"
        separated += len({round(v, 6) for v in base.dlmp.tolist()}) > 1
        delta = 1e-3
        for b in range(len(market.topology.buses)):
            if market.topology.buses[b] not in market.load_buses:
                continue
            costs = []
            for step in (-delta, delta):
                dem = d["demand_kw"].copy()
                dem[b] += step
                costs.append(clear(market, d, demand_kw=dem).cost)
            backward = (base.cost - costs[0]) / delta
            forward = (costs[1] - base.cost) / delta
            if abs(forward - backward) > 1e-7 * max(1.0, abs(forward)):
                continue  # degenerate here: the cost has a kink at this demand
            central = (costs[1] - costs[0]) / (2 * delta)
            assert base.dlmp[b] == pytest.approx(central, rel=1e-6), market.topology.buses[b]
            checked += 1
    assert checked >= 0.8 * 3 * len(market.load_buses)
    assert separated == 3


def test_dlmp_decomposes_into_energy_and_congestion(env37):
    rng = np.random.default_rng(3)
    res = clear(env37.market, inputs(env37, rng))
    np.testing.assert_allclose(res.energy + res.congestion, res.dlmp, atol=1e-9)
    topo = env37.topology
    assert res.energy == pytest.approx(env37.lmp_now)  # the feeder imports
    for b, bus in enumerate(topo.buses):  # congestion part = sum of branch prices on the path
        path = [topo.branch_index[e] for e in topo.path_to_root(bus)]
        assert res.congestion[b] == pytest.approx(res.branch_prices[path].sum(), abs=1e-9)
    congested = [topo.branch_index[e] for e in res.congested]
    assert np.all(res.branch_prices[congested] > 0)  # forward limits bind
    others = np.setdiff1d(np.arange(len(topo.branches)), congested)
    np.testing.assert_allclose(res.branch_prices[others], 0.0, atol=1e-9)


def test_uncongested_gives_source_lmp_everywhere(env37):
    market = env37.market
    saved = market.limits_kw
    rng = np.random.default_rng(11)
    try:
        market.set_limits(np.full(len(saved), np.inf))
        for _ in range(3):
            d = inputs(env37, rng)
            d["source_price"] = float(rng.uniform(3.0, 7.0))
            res = clear(market, d)
            assert res.congested == [] and res.source_kw > 0
            np.testing.assert_allclose(res.dlmp, d["source_price"], atol=1e-9)
            np.testing.assert_allclose(res.congestion, 0.0, atol=1e-9)
            # dispatched exactly the blocks offered below the LMP
            widths = np.repeat(d["capacity_kw"][:, None] / market.n_blocks, market.n_blocks, 1)
            expected = (widths * (d["offers"] < d["source_price"])).sum(axis=1)
            np.testing.assert_allclose(res.quantities, expected, atol=1e-7)
    finally:
        market.set_limits(saved)


# ---------------------------------------------------------------- the max(0, .) export rule
def test_export_earns_nothing_on_reverse_flow():
    m = small_market()
    demand = vec(m, {"a": 50.0, "b": 30.0, "c": 40.0})
    pv = vec(m, {"b": 200.0, "c": 100.0})  # 300 kW of PV for 120 kW of load: reverse flow
    res = m.clear([[2.0, 3.0], [8.0, 9.0]], ctx(demand, [100.0, 20.0], 5.0, pv))
    assert res.source_kw == pytest.approx(-180.0)
    assert res.flows_kw[0] == pytest.approx(-180.0)  # branch s-a carries power back
    assert res.import_cost == 0.0 and res.cost == pytest.approx(0.0, abs=1e-9)
    np.testing.assert_allclose(res.quantities, 0.0, atol=1e-9)  # nobody produces to export
    np.testing.assert_allclose(res.dlmp, 0.0, atol=1e-9)  # not -LMP: export is worth nothing
    assert res.curtailed_kw.sum() == 0.0 and res.feasible  # exporting beats curtailing
    for b in (1, 2, 3):  # the derivative of the optimal cost agrees
        dem = demand.copy()
        dem[b] += 1.0
        assert m.clear([[2.0, 3.0], [8.0, 9.0]], ctx(dem, [100.0, 20.0], 5.0, pv)).cost == \
            pytest.approx(0.0, abs=1e-9)
    cvx = m.clear_cvxpy([[2.0, 3.0], [8.0, 9.0]], ctx(demand, [100.0, 20.0], 5.0, pv))
    assert cvx.cost == pytest.approx(0.0, abs=1e-6)
    np.testing.assert_allclose(cvx.dlmp, 0.0, atol=1e-6)


def test_cheap_generator_serves_the_feeder_but_does_not_export():
    m = small_market()
    demand = vec(m, {"a": 50.0, "b": 30.0, "c": 40.0})
    # 400 kW offered at 2-3 ¢/kWh < LMP 5: it would export 280 kW if export earned the LMP.
    res = m.clear([[2.0, 3.0], [8.0, 9.0]], ctx(demand, [400.0, 0.0], 5.0))
    assert res.quantities[0] == pytest.approx(120.0)
    assert res.source_kw == pytest.approx(0.0, abs=1e-9)
    np.testing.assert_allclose(res.dlmp, 2.0, atol=1e-9)  # the marginal block, not the LMP
    assert res.energy == pytest.approx(2.0)
    assert res.cost == pytest.approx(2.0 * 120.0)


# ---------------------------------------------------------------- infeasible instances
def test_infeasible_limit_sheds_load_at_the_price_cap_and_reports_it():
    m = small_market(limits=(math.inf, 10.0, math.inf))
    demand = vec(m, {"a": 50.0, "b": 100.0, "c": 40.0})
    # bus b: 100 kW of demand, a 40 kW generator and a 10 kW line: 50 kW cannot be served.
    res = m.clear([[4.0, 4.5], [8.0, 9.0]], ctx(demand, [40.0, 20.0], 5.0))
    assert not res.feasible
    assert res.shed_kw[m.topology.bus_index["b"]] == pytest.approx(50.0)
    assert res.dlmp[m.topology.bus_index["b"]] == pytest.approx(30.0)  # the price cap
    assert res.dlmp[m.topology.bus_index["a"]] == pytest.approx(5.0)
    limits = [v for v in res.violated if v["constraint"] == "flow_limit"]
    assert [v["element"] for v in limits] == ["a-b"]
    assert limits[0]["excess_kw"] == pytest.approx(50.0)
    assert limits[0]["limit_kw"] == 10.0
    assert any(v["constraint"] == "nodal_balance" and v["element"] == "b" for v in res.violated)
    assert m.diagnose(vec(m, {"b": 50.0}), [40.0, 20.0]) == []  # 40 + 10 kW serve 50 kW


def test_nested_infeasibility_and_pv_curtailment():
    m = small_market(limits=(60.0, 10.0, 5.0))
    demand = vec(m, {"a": 50.0, "b": 100.0, "c": 0.0})
    pv = vec(m, {"c": 30.0})
    res = m.clear([[4.0, 4.5], [8.0, 9.0]], ctx(demand, [40.0, 0.0], 5.0, pv))
    found = {v["element"]: v for v in res.violated if v["constraint"] == "flow_limit"}
    assert set(found) == {"a-b", "a-c"}  # s-a can carry 60 = 50 (a) + 10 (to b) - 5 (from c)
    assert found["a-c"]["excess_kw"] == pytest.approx(25.0)  # 30 kW of PV, 5 kW of line
    assert res.curtailed_kw[m.topology.bus_index["c"]] == pytest.approx(25.0)
    assert res.dlmp[m.topology.bus_index["c"]] == pytest.approx(-1.0)  # -curtail_price
    assert not res.feasible
    m.set_limits({"s-a": 40.0})  # now the feeder head is short too
    found = {v["element"] for v in m.diagnose(demand, [40.0, 0.0], pv) if
             v["constraint"] == "flow_limit"}
    assert found == {"a-b", "a-c", "s-a"}


def test_everything_shed_never_crashes():
    m = small_market(limits=(0.0, 0.0, 0.0))
    demand = vec(m, {"a": 10.0, "b": 20.0, "c": 30.0})
    res = m.clear([[4.0, 4.5], [8.0, 9.0]], ctx(demand, [0.0, 0.0], 5.0))
    assert res.shed_kw.sum() == pytest.approx(60.0)
    assert not res.feasible and res.cost == pytest.approx(30.0 * 60.0)


# ---------------------------------------------------------------- fast path == CVXPY
@pytest.mark.parametrize("solver", ["HIGHS", "CLARABEL"])
def test_fast_path_equals_cvxpy_statement(env37, solver):
    market = env37.market
    rng = np.random.default_rng(5)
    tol = 1e-7 if solver == "HIGHS" else 1e-5
    for _ in range(4):
        d = inputs(env37, rng)
        fast = clear(market, d)
        ref = market.clear_cvxpy(d["offers"], context(d), solver=solver)
        assert fast.solver == "merit-order" and ref.solver == f"cvxpy-{solver.lower()}"
        assert fast.congested
        assert ref.cost == pytest.approx(fast.cost, rel=tol)
        np.testing.assert_allclose(ref.dlmp, fast.dlmp, atol=1e3 * tol)
        np.testing.assert_allclose(ref.congestion, fast.congestion, atol=1e3 * tol)
        assert ref.energy == pytest.approx(fast.energy, abs=1e3 * tol)
        np.testing.assert_allclose(ref.quantities, fast.quantities, atol=1e4 * tol)
        np.testing.assert_allclose(ref.flows_kw, fast.flows_kw, atol=1e4 * tol)


def test_market_survives_pickling_and_warm_start_is_exact(env37):
    import pickle

    market = env37.market
    rng = np.random.default_rng(9)
    cases = [inputs(env37, rng) for _ in range(3)]
    first = [clear(market, d) for d in cases]
    clone = pickle.loads(pickle.dumps(market))
    for d, res in zip(cases[::-1], first[::-1]):  # another order: another warm start
        again = clear(clone, d)
        np.testing.assert_allclose(again.dlmp, res.dlmp, atol=1e-9)
        assert again.cost == pytest.approx(res.cost, rel=1e-12)


def test_highs_then_cvxpy_fallback_when_the_fast_paths_fail(monkeypatch):
    m = small_market(limits=(math.inf, 10.0, math.inf))
    demand = vec(m, {"a": 50.0, "b": 100.0, "c": 40.0})
    hour = ctx(demand, [40.0, 20.0], 5.0)
    expected = m.clear([[4.0, 4.5], [8.0, 9.0]], hour)
    assert expected.solver == "merit-order"
    monkeypatch.setattr(m, "_solve_merit", lambda *a: (None, None, None))
    m.reset()  # (the same inputs again would be the last result)
    highs = m.clear([[4.0, 4.5], [8.0, 9.0]], hour)
    assert highs.solver == "highs"
    np.testing.assert_allclose(highs.dlmp, expected.dlmp, atol=1e-9)
    monkeypatch.setattr(m, "_solve_highs", lambda *a: (None, None, None))
    m.reset()
    res = m.clear([[4.0, 4.5], [8.0, 9.0]], hour)
    assert res.solver == "cvxpy-clarabel"
    np.testing.assert_allclose(res.dlmp, expected.dlmp, atol=1e-5)
    assert not res.feasible and not expected.feasible
    assert [v["element"] for v in res.violated if v["constraint"] == "flow_limit"] == ["a-b"]
    json.dumps(res.to_dict())  # JSON-ready


# ---------------------------------------------------------------- the Clearing interface
def random_tree_market(rng, n_buses: int = 14, **kwargs) -> DLMPMarket:
    """A random radial feeder, some branches limited, 4 generators, 3 DR providers, PV."""
    buses = ["s"] + [f"b{i}" for i in range(1, n_buses)]
    branches = []
    for i in range(1, n_buses):
        parent = buses[int(rng.integers(0, i))]
        limit = float(rng.uniform(20, 120)) if rng.random() < 0.6 else math.inf
        branches.append(Branch(f"{parent}-{buses[i]}", parent, buses[i], (), limit))
    res = [Resource(f"generator_{k}", buses[b], "generator")
           for k, b in enumerate(rng.integers(1, n_buses, 4))]
    res += [Resource(f"dr_{k}", buses[b], "dr") for k, b in enumerate(rng.integers(1, n_buses, 3))]
    return DLMPMarket(Topology("s", branches), res, n_blocks=3, price_cap=30.0,
                      pv_buses=buses[1:6], **kwargs)


def random_hour(m: DLMPMarket, rng) -> tuple[np.ndarray, MarketContext]:
    """Random offers (rounded a third of the time: ties, degenerate LPs) and hour data."""
    B = len(m.topology.buses)
    demand = np.zeros(B)
    demand[1:] = rng.uniform(0, 60, B - 1)
    cap = rng.uniform(0, 150, len(m.names))
    cap[m.is_dr] = rng.uniform(0, 0.3, m.is_dr.sum()) * demand[m.resource_bus_index[m.is_dr]]
    pv = np.zeros(B)
    pv_idx = [m.topology.bus_index[b] for b in m.pv_buses]
    pv[pv_idx] = rng.uniform(0, 40, len(pv_idx)) * (rng.random() < 0.5)
    offers = rng.uniform(0, 12, (len(m.names), m.n_blocks))
    if rng.random() < 0.3:
        offers = np.round(offers)
    return offers, ctx(demand, cap, float(rng.uniform(2, 8)), pv)


def test_result_is_a_clearing_with_the_core_fields():
    m = small_market(limits=(math.inf, 10.0, math.inf))
    demand = vec(m, {"a": 50.0, "b": 100.0, "c": 40.0})
    offers = np.array([[4.0, 4.5], [8.0, 9.0]])
    res = m.clear(offers, ctx(demand, [40.0, 20.0]))
    assert isinstance(res, Clearing) and res.participants == ("generator_0", "dr_0")
    assert res.names == res.participants
    at = [m.topology.bus_index["b"], m.topology.bus_index["c"]]
    np.testing.assert_array_equal(res.participant_prices, res.dlmp[at])
    assert res.quantities is res.participant_quantities
    with pytest.raises(AttributeError):
        res.quantities = np.zeros(2)
    assert res.total_shed_kw == pytest.approx(50.0) == res.shed_kw.sum()
    assert res.total_curtailed_kw == 0.0 and not res.feasible and res.solver == "merit-order"
    assert res.congested == ["a-b"] and res.price_of("generator_0") == pytest.approx(30.0)
    np.testing.assert_array_equal(res.bids, offers)
    offers[0, 0] = 7.0
    assert res.bids[0, 0] == 4.0  # a copy


def _check_surplus_identities(m: DLMPMarket, res, hour: MarketContext):
    demand, pv = m.bus_vector(hour.demand_kw, "d"), m.bus_vector(hour.pv_kw, "pv")
    q = res.participant_quantities
    dr = np.bincount(m.resource_bus_index[m.is_dr], q[m.is_dr], minlength=len(demand))
    gen = np.bincount(m.resource_bus_index[~m.is_dr], q[~m.is_dr], minlength=len(demand))
    served = demand - res.shed_kw - dr
    pv_taken = pv - res.curtailed_kw
    scale = max(1.0, abs(res.welfare))
    # welfare does not depend on the prices: the OPF's objective without the PV penalty
    offered = (res.cost - res.import_cost - m.price_cap * res.shed_kw.sum()
               - m.curtail_price * res.curtailed_kw.sum())
    assert res.welfare == pytest.approx(
        m.price_cap * (demand - res.shed_kw).sum() - offered - res.import_cost, abs=1e-9 * scale)
    assert res.welfare == pytest.approx(
        res.consumer_surplus + res.producer_surplus + res.congestion_rent, abs=1e-9 * scale)
    # the rent: congestion prices times withdrawals = branch prices times flows
    #         = what consumers pay - what resources, PV and the source are paid
    rent = float(res.congestion @ (served - gen - pv_taken))
    assert res.congestion_rent == pytest.approx(rent, abs=1e-9 * scale)
    assert res.congestion_rent == pytest.approx(float(res.branch_prices @ res.flows_kw),
                                                abs=1e-6 * scale)
    root = m.topology.bus_index[m.topology.root]
    paid = float(res.dlmp @ (demand - res.shed_kw))
    received = float(res.participant_prices @ q + res.dlmp @ pv_taken
                     + res.dlmp[root] * res.source_kw)
    assert (res.consumer_payments, res.producer_revenue) == (pytest.approx(paid),
                                                             pytest.approx(received))
    assert res.congestion_rent == pytest.approx(paid - received, abs=1e-6 * scale)
    assert res.consumer_surplus == pytest.approx(
        m.price_cap * (demand - res.shed_kw).sum() - paid, abs=1e-9 * scale)
    assert res.producer_surplus == pytest.approx(received - offered - res.import_cost,
                                                 abs=1e-9 * scale)


def test_welfare_is_the_sum_of_surpluses_and_rent_is_branch_prices_times_flows():
    # congestion on a-c with demand response dispatched behind it, PV, an import
    m = small_market(limits=(math.inf, math.inf, 30.0))
    demand = vec(m, {"a": 50.0, "b": 30.0, "c": 45.0})
    hour = ctx(demand, [100.0, 20.0], 5.0, vec(m, {"b": 10.0}))
    res = m.clear([[2.0, 3.0], [8.0, 9.0]], hour)
    assert res.congested == ["a-c"] and res.quantities[1] == pytest.approx(15.0)
    assert res.dlmp[m.topology.bus_index["c"]] == pytest.approx(9.0)  # DR's marginal block
    assert res.congestion_rent == pytest.approx((9.0 - 5.0) * 30.0)
    _check_surplus_identities(m, res, hour)
    rng = np.random.default_rng(1)
    m = random_tree_market(rng)
    seen_rent = 0
    for _ in range(40):
        offers, hour = random_hour(m, rng)
        res = m.clear(offers, hour)
        _check_surplus_identities(m, res, hour)
        seen_rent += res.congestion_rent > 1.0
    assert seen_rent >= 10  # the check is not vacuous


def test_reset_starts_cold_like_a_fresh_market():
    rng = np.random.default_rng(4)
    for _ in range(3):
        seed = int(rng.integers(1 << 30))
        used = random_tree_market(np.random.default_rng(seed))
        for _ in range(20):
            used.clear(*random_hour(used, rng))
        offers, hour = random_hour(used, rng)
        used.reset()
        after = used.clear(offers, hour)
        fresh = random_tree_market(np.random.default_rng(seed)).clear(offers, hour)
        for key in ("participant_quantities", "shed_kw", "curtailed_kw", "flows_kw", "dlmp",
                    "branch_prices", "congestion"):
            np.testing.assert_allclose(getattr(after, key), getattr(fresh, key), rtol=0,
                                       atol=1e-9, err_msg=key)
        assert after.energy == pytest.approx(fresh.energy, abs=1e-9)
        assert after.source_kw == pytest.approx(fresh.source_kw, abs=1e-9)


# ---------------------------------------------------------------- invalid inputs and actions
def test_invalid_market_inputs_raise():
    m = small_market()
    demand = vec(m, {"a": 10.0, "b": 20.0})
    assert issubclass(InvalidOfferError, InvalidBidError)
    with pytest.raises(InvalidOfferError, match="dr_0"):
        m.clear([[1.0, 2.0], [np.nan, 1.0]], ctx(demand, [1, 1]))
    with pytest.raises(InvalidBidError, match="generator_0"):
        m.clear([[-1.0, 2.0], [1.0, 1.0]], ctx(demand, [1, 1]))
    with pytest.raises(InvalidOfferError, match="generator_0"):
        m.clear([[31.0, 2.0], [1.0, 1.0]], ctx(demand, [1, 1]))
    with pytest.raises(ValueError, match="source_price"):
        m.clear([[1.0, 2.0], [1.0, 1.0]], ctx(demand, [1, 1], -1.0))
    with pytest.raises(ValueError, match="demand response at bus c"):
        m.clear([[1.0, 2.0], [1.0, 1.0]], ctx(demand, [1, 5]))
    with pytest.raises(ValueError, match="not one of the market's load buses"):
        m.clear([[1.0, 2.0], [1.0, 1.0]], ctx(vec(m, {"s": 1.0}), [1, 0]))
    with pytest.raises(ValueError, match="capacity"):
        m.clear([[1.0, 2.0], [1.0, 1.0]], ctx(demand, [np.inf, 0]))


def test_context_must_give_demand_capacity_and_source_price():
    m = small_market()
    demand = vec(m, {"a": 10.0, "b": 20.0, "c": 5.0})
    offers = [[1.0, 2.0], [1.0, 1.0]]
    for missing in ("demand_kw", "capacity_kw", "source_price"):
        hour = ctx(demand, [1, 1])
        setattr(hour, missing, None)
        with pytest.raises(ValueError, match=missing):
            m.clear(offers, hour)
        with pytest.raises(ValueError, match=missing):
            m.clear_cvxpy(offers, hour)
    with pytest.raises(ValueError, match="demand_kw, capacity_kw, source_price"):
        m.clear(offers)
    # dicts by bus and by resource name; the hour and extras are not the market's business
    by_name = m.clear(offers, MarketContext(hour=7, demand_kw={"a": 10.0, "b": 20.0, "c": 5.0},
                                            capacity_kw={"dr_0": 1.0, "generator_0": 1.0},
                                            source_price=5.0, extra={"note": 1}))
    by_order = m.clear(offers, ctx(demand, [1.0, 1.0]))
    np.testing.assert_array_equal(by_name.dlmp, by_order.dlmp)
    with pytest.raises(ValueError, match="unknown participants"):
        m.clear(offers, ctx(demand, {"ghost": 1.0}))


def test_invalid_actions_in_the_env():
    env = dlmp_v0.parallel_env(horizon=2)
    env.reset(seed=1)
    good = {a: np.full(3, 5.0, dtype=np.float32) for a in env.agents}
    for bad_value in (np.nan, np.inf, -np.inf):
        bad = dict(good, dr_2=np.array([5.0, bad_value, 5.0]))
        with pytest.raises(ValueError, match="dr_2"):
            env.step(bad)
    with pytest.raises(ValueError, match="generator_1"):
        env.step(dict(good, generator_1=np.ones(4)))
    with pytest.raises(ValueError, match="missing"):
        env.step({a: v for a, v in good.items() if a != "dr_0"})
    assert env.t == 0 and env.cycles == 0  # nothing happened
    _, _, _, _, infos = env.step(dict(good, generator_0=np.array([-3.0, 5.0, 99.0])))
    assert "bid_repairs" in infos["generator_0"] and "bid_repairs" not in infos["dr_0"]
    np.testing.assert_allclose(infos["generator_0"]["bid"], [0.0, 5.0, env.price_cap])
    strict = dlmp_v0.parallel_env(horizon=2, invalid_bids="raise")
    strict.reset(seed=1)
    with pytest.raises(ValueError, match="generator_0"):
        strict.step(dict(good, generator_0=np.array([-3.0, 5.0, 5.0])))
    with pytest.raises(ValueError, match="invalid_bids"):
        dlmp_v0.parallel_env(invalid_bids="ignore")


# ---------------------------------------------------------------- the environment
def test_truthful_day_dispatch_applied_to_opendss():
    env = dlmp_v0.parallel_env(market_rounds=2)
    env.reset(seed=0)
    policy = TruthfulBidder()
    grid = env.grid
    congested_hours = 0
    while env.agents:
        demand = env.demand_kw.copy()
        actions = {a: policy(env.participant[a]) for a in env.agents}
        _, rewards, terms, truncs, infos = env.step(actions)
        res = env.last_clearing
        for agent, info in infos.items():
            k = env.index[agent]
            q, price = res.quantities[k], res.participant_prices[k]
            true_cost = env.participant[agent].cost(q)
            assert rewards[agent] == pytest.approx((price * q - true_cost) / 100 / 2)
            assert info["price"] == price and info["quantity"] == q
            assert rewards[agent] >= -1e-9  # truthful offers never lose money
        assert not any(terms.values())
        if not infos["dr_0"]["grid_step"]:
            continue
        congested_hours += bool(res.congested)
        info = infos["generator_0"]
        assert info["converged"] and res.feasible
        assert abs(info["substation_kw"] - info["dc_source_kw"]) < 0.1 * demand.sum()
        for k, p in enumerate(env.participants):  # the dispatch is in the OpenDSS model
            if p.group == "generator":
                assert grid.generator_kw[f"ogg_{p.name}"] == pytest.approx(res.quantities[k])
        served = grid.load_kw.sum()
        dr = res.quantities[~env.is_generator].sum()
        assert served == pytest.approx(demand.sum() - dr, rel=1e-9)
    assert all(truncs.values()) and env.agents == []
    assert congested_hours >= 3


def test_dispatch_names_every_generator_and_pv_unit():
    """The grid step's generation: each generator's cleared kW under its name, then every PV
    unit's output after curtailment (pro rata at its bus) as pv_0, pv_1, ..."""
    env = dlmp_v0.parallel_env(market_rounds=1)
    env.reset(seed=0)
    env.t = 12
    env.start_hour()
    env.step({a: np.full(3, 5.0, dtype=np.float32) for a in env.agents})
    res = env.last_clearing
    res.curtailed_kw = np.zeros_like(res.curtailed_kw)
    pv_bus = env.topology.bus_index[env.pv_buses[0]]
    res.curtailed_kw[pv_bus] = 0.25 * env.pv_kw[pv_bus]  # a quarter of that bus's PV
    served, generation = env.dispatch(res)
    generators = [(k, p.name) for k, p in enumerate(env.participants) if p.group == "generator"]
    pv_names = [f"pv_{k}" for k in range(len(env.pv_buses))]
    assert list(generation) == [name for _, name in generators] + pv_names
    for k, name in generators:
        assert type(generation[name]) is float and generation[name] == res.quantities[k]
    for k, bus in enumerate(env.pv_buses):
        share = 0.75 if bus == env.pv_buses[0] else 1.0
        assert generation[f"pv_{k}"] == pytest.approx(share * env.pv_out_kw[k], rel=1e-12)
    assert served.shape == (len(env.topology.buses),) and (served >= 0).all()


def test_observation_entries_clipped_then_rounded_to_float32():
    """Every observation entry is its float64 value (module docstring) clipped to [-1, 1]
    and rounded to float32, bit for bit, also where a value is outside the range."""
    env = dlmp_v0.parallel_env(market_rounds=2)
    env.reset(seed=3)
    env.step({a: np.full(3, 6.0, dtype=np.float32) for a in env.agents})
    env.lmp_now = 1.5 * env.price_cap  # outside the range: clipped to 1
    env._obs = None
    res, cap = env.last_clearing, env.price_cap
    hour = env.hour_of(env.t)
    for k, p in enumerate(env.participants):
        q_max = p.limits.q_max
        expected = np.array([
            math.sin(2 * math.pi * hour / 24), math.cos(2 * math.pi * hour / 24),
            min(env.t / env.horizon, 1.0), env.round / env.market_rounds,
            1.0 if p.group == "generator" else -1.0, p.truth.cost_a / cap,
            (p.truth.cost_a + p.truth.cost_b * env.capacity_kw[k]) / cap,
            env.capacity_kw[k] / q_max, env.lmp_now / cap, res.participant_prices[k] / cap,
            res.energy / cap, res.congestion[env.topology.bus_index[p.bus]] / cap,
            float(res.dlmp.mean()) / cap, float(res.dlmp.max()) / cap,
            float(env.congested_on_path(p.name)), res.participant_quantities[k] / q_max])
        obs = env.observe(p.name)
        assert obs.dtype == np.float32 and obs[8] == 1.0
        np.testing.assert_array_equal(obs, np.clip(expected, -1.0, 1.0).astype(np.float32))


def test_policies_and_learner_selection():
    env = dlmp_v0.parallel_env(learners="generator_2", policies={"dr": MarkupBidder(0.5)},
                               horizon=2, market_rounds=1)
    obs, _ = env.reset(seed=4)
    assert env.agents == ["generator_2"] and obs["generator_2"].shape == (16,)
    env.step({"generator_2": np.full(3, 4.0)})
    p = env.participant["dr_1"]
    assert p.policy.markup == 0.5
    with pytest.raises(ValueError, match="policies"):
        dlmp_v0.parallel_env(policies={"consumer": TruthfulBidder()})
    with pytest.raises(ValueError, match="learners"):
        dlmp_v0.parallel_env(learners="substation")


def test_truthful_blocks_match_true_cost_at_block_edges():
    participant = Participant("generator_0", "generator", "701", "supply",
                              truth=Truth(cost_a=5.0, cost_b=0.02), limits=Limits(300.0, 300.0),
                              rules={"n_blocks": 3, "price_cap": 30.0})
    prices = true_block_prices(participant)
    edges = np.arange(4) * 100.0
    offered = np.concatenate([[0.0], np.cumsum(prices * 100.0)])
    np.testing.assert_allclose(offered, 5.0 * edges + 0.01 * edges ** 2)
    assert np.all(MarkupBidder(0.2)(participant) == pytest.approx(prices * 1.2))
    held = MarkupBidder(0.0, withhold=0.34)(participant)
    assert held[-1] == 30.0 and held[0] == pytest.approx(prices[0])


def test_reproduce_writes_maps_and_dlmps(tmp_path):
    from ogg_envs.reproduce import dlmp as reproduce

    data = reproduce.run(tmp_path, quick=True)
    saved = json.loads((tmp_path / "dlmp.json").read_text())
    assert saved["checks"] == data["checks"] and all(data["checks"].values())
    unc, con = saved["uncongested"], saved["congested"]
    assert len(unc["dlmp"]) == len(con["dlmp"]) == 39
    np.testing.assert_allclose(list(unc["dlmp"].values()), unc["source_lmp"], atol=1e-9)
    assert len(con["price_levels"]) >= 2
    assert min(con["dlmp"].values()) == pytest.approx(con["source_lmp"], abs=1e-9)
    assert (tmp_path / "dlmp_map.png").stat().st_size > 10_000


def test_market_repair_is_the_documented_clip_on_random_offers():
    """``DLMPMarket.repair`` (and the LinDistFlow market's, which delegates) clips finite
    prices into [0, price_cap] exactly as ``np.clip``, names every repaired resource, leaves
    valid offers (and its input) alone, refuses NaN/inf and with ``strict`` any invalid
    offer, with the message ``clear`` gives."""
    from ogg_envs.markets.lindistflow import LinDistFlowMarket

    m = small_market()
    topo = Topology("s", [Branch("s-a", "s", "a", (), math.inf)])
    ldf = LinDistFlowMarket(topo, [Resource("generator_0", "a", "generator"),
                                   Resource("dr_0", "a", "dr")], r_pu=[0.05], x_pu=[0.05],
                            n_blocks=2, price_cap=30.0, load_buses=["a"])
    rng = np.random.default_rng(3)
    clipped_rounds = 0
    for _ in range(200):
        offers = rng.uniform(-10, 45, (2, 2)) * rng.choice([0.0, 1.0], (2, 2))
        given = offers.copy()
        out, fixes = m.repair(offers)
        np.testing.assert_array_equal(offers, given)
        np.testing.assert_array_equal(out, np.clip(given, 0.0, 30.0))
        bad = ~((given >= 0) & (given <= 30.0)).all(axis=1)
        assert sorted(fixes) == sorted(np.array(m.names)[bad].tolist())
        assert all(f == ["prices clipped into [0, 30.0] ¢/kWh"] for f in fixes.values())
        assert ldf.repair(offers)[1] == fixes
        np.testing.assert_array_equal(ldf.repair(offers)[0], out)
        if not fixes:
            assert out is offers
        else:
            clipped_rounds += 1
            first = m.names[int(np.flatnonzero(bad)[0])]
            with pytest.raises(InvalidOfferError, match=f"^{first}: offer prices must be"):
                m.repair(offers, strict=True)
    assert 20 < clipped_rounds < 200
    for bad_value in (np.nan, np.inf, -np.inf):
        with pytest.raises(InvalidOfferError, match="dr_0"):
            m.repair(np.array([[5.0, 5.0], [5.0, bad_value]]))
    one, fixes = m.repair(np.array([[-1.0, 40.0]]), names=["dr_0"])
    assert one.tolist() == [[0.0, 30.0]] and list(fixes) == ["dr_0"]


def test_raise_mode_refuses_before_anything_changes_and_the_env_stays_usable():
    env = dlmp_v0.parallel_env(horizon=2, invalid_bids="raise")
    env.reset(seed=1)
    good = {a: np.full(3, 5.0) for a in env.agents}
    with pytest.raises(InvalidBidError, match="generator_2: offer prices must be finite and in"):
        env.step(dict(good, generator_2=np.array([5.0, 31.0, 5.0])))
    assert env.cycles == 0 and env.last_clearing is None
    _, _, _, _, infos = env.step(good)
    assert env.cycles == 1 and not any("bid_repairs" in i for i in infos.values())


def test_inputs_found_valid_are_checked_again_when_they_change():
    """The market skips re-checking an hour's context (and offers that just passed
    ``repair``) only while they are byte for byte what it checked: the same arrays changed in
    place, or offers other than the repaired ones, are checked again before anything is
    cleared, and the market still clears like a fresh one afterwards."""
    rng = np.random.default_rng(8)
    seed = int(rng.integers(1 << 30))
    m = random_tree_market(np.random.default_rng(seed))
    offers, hour = random_hour(m, rng)
    repaired, _ = m.repair(offers)
    m.clear(repaired, hour)
    assert not m.read_inputs(repaired, hour, "test")[5].flags.writeable  # (shared by the hour)
    load_bus = int(np.flatnonzero(hour.demand_kw)[0])
    kw = hour.demand_kw[load_bus]
    hour.demand_kw[load_bus] = -1.0  # the validated context, changed in place
    with pytest.raises(ValueError, match="demand_kw must be finite and >= 0"):
        m.clear(repaired, hour)
    hour.demand_kw[load_bus] = math.nan
    with pytest.raises(ValueError, match="demand_kw must be finite and >= 0"):
        m.clear(repaired, hour)
    hour.demand_kw[load_bus] = kw  # valid again
    repaired[0, 0] = math.nan  # the offers that passed repair, changed in place
    with pytest.raises(InvalidOfferError, match=m.names[0]):
        m.clear(repaired, hour)
    above = repaired.copy()
    above[0, 0] = m.price_cap + 1.0  # other offers, after a context found valid
    with pytest.raises(InvalidOfferError, match=m.names[0]):
        m.clear(above, hour)
    above[0, 0] = 1.0
    fresh = random_tree_market(np.random.default_rng(seed)).clear(above, hour)
    used = m.clear(above, hour)
    for key in ("participant_quantities", "dlmp", "shed_kw", "curtailed_kw", "flows_kw"):
        assert getattr(used, key).tobytes() == getattr(fresh, key).tobytes(), key


def test_observations_carry_the_hour_features_of_every_step_to_the_last():
    """The hour's fixed observation entries are made once per grid step (``_hour_columns``),
    and the hour features' hour part is kept across rounds: every step's observations still
    hold ``hour_features()`` of that step, the episode's last too (its grid step ``t`` moves
    on to the horizon without a new hour), and the next episode's first ones."""
    env = dlmp_v0.parallel_env(horizon=3, market_rounds=2)
    raw = env.unwrapped
    for seed in (0, 1):
        obs, _ = env.reset(seed=seed)
        while True:
            features = np.float32(np.clip(raw.hour_features(), -1.0, 1.0))
            h = raw.hour_of(raw.t)
            assert raw.hour_features() == (math.sin(2 * math.pi * h / 24),
                                           math.cos(2 * math.pi * h / 24),
                                           min(raw.t / raw.horizon, 1.0),
                                           raw.round / raw.market_rounds)
            for row in obs.values():
                assert row[:4].tobytes() == features.tobytes()
            if not env.agents:
                break
            obs = env.step({a: env.action_space(a).sample() for a in env.agents})[0]
        assert raw.t == raw.horizon


def test_the_hour_columns_follow_capacities_and_costs_changed_mid_hour():
    """The hour's fixed observation entries are kept by what they are made of: capacities
    changed in place or new cost arrays show in the next observations, each on its own."""
    env = dlmp_v0.parallel_env(market_rounds=3)
    env.reset(seed=2)
    env.step({a: np.full(3, 6.0, dtype=np.float32) for a in env.agents})
    cap = env.price_cap

    def check():
        env._obs = None
        obs = env.observe_all()
        for k in range(3):
            a, b, q = env._cost_a[k], env._cost_b[k], env.capacity_kw[k]
            expected = np.float32(np.clip([a / cap, (a + b * q) / cap, q / env._q_max[k]],
                                          -1.0, 1.0))
            assert obs[k, 5:8].tobytes() == expected.tobytes(), k

    env.capacity_kw[0] *= 0.5
    check()
    env._cost_a = env._cost_a * np.where(np.arange(len(env._cost_a)) == 1, 2.0, 1.0)
    check()
    env._cost_b = env._cost_b * np.where(np.arange(len(env._cost_b)) == 2, 3.0, 1.0)
    check()
