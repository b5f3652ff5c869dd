"""Tests of the LinDistFlow DLMP market (ogg_envs.markets.lindistflow), the feeder impedances
it is built from (ogg_envs.grid.impedance) and dlmp-v0's ``formulation="lindistflow"``."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
from pz_conformance import run_all

from ogg_envs.api import MarketContext
from ogg_envs.envs import dlmp_v0
from ogg_envs.grid import OpenDSSGrid
from ogg_envs.grid.feeders import ieee34
from ogg_envs.grid.impedance import feeder_impedances, regulator_ratios
from ogg_envs.grid.topology import Branch, Topology
from ogg_envs.markets.dlmp import DLMPMarket, Resource
from ogg_envs.markets.lindistflow import LinDistFlowMarket

# A tight lower band: it binds at IEEE 37's far load buses at hour 12, whose lowest voltage
# is about 1.006 pu without it (checked in the tests).
TIGHT = (1.01, 1.05)


@pytest.fixture(scope="module")
def env37():
    """dlmp-v0 on IEEE 37 with the LinDistFlow market, at hour 12 (regulators held)."""
    env = dlmp_v0.parallel_env(market_rounds=1, formulation="lindistflow")
    env.reset(seed=0)
    env.t = 12
    env.start_hour()
    return env


def market37(env, band=TIGHT, **kwargs) -> LinDistFlowMarket:
    """A LinDistFlow market on the env's feeder and participants, PV possible at every load
    bus (so that d cost / d PV gives the active-power DLMP), the env's line limits."""
    resources = [Resource(p.name, p.bus, p.group) for p in env.participants]
    args = dict(feeder_impedances(env.grid).market_args(), ratios=env.market.ratios)
    args.update(kwargs)
    m = LinDistFlowMarket(env.topology, resources, voltage_band=band,
                          band_buses=env.load_buses, load_buses=env.load_buses,
                          pv_buses=env.load_buses, **args)
    m.set_limits(env.line_limits())
    return m


def hour_data(env, rng):
    """Random offers and the env's hour, with PV spread over every load bus."""
    pv = np.zeros(len(env.topology.buses))
    pv[[env.topology.bus_index[b] for b in env.load_buses]] = env.pv_kw.sum() / len(
        env.load_buses)
    return dict(offers=rng.uniform(4.5, 9.0, (len(env.participants), env.n_blocks)),
                demand_kw=env.demand_kw.copy(), capacity_kw=env.capacity_kw.copy(),
                source_price=env.lmp_now, pv_kw=pv)


def clear(market, d, cvxpy=False, **changes):
    d = dict(d, **changes)
    ctx = MarketContext(demand_kw=d["demand_kw"], capacity_kw=d["capacity_kw"],
                        source_price=d["source_price"], pv_kw=d["pv_kw"])
    return market.clear_cvxpy(d["offers"], ctx) if cvxpy else market.clear(d["offers"], ctx)


def central_difference(market, d, key, b, delta=1e-3):
    """d(optimal cost)/d(d[key][b]), or None where the cost has a kink (degenerate)."""
    costs = []
    for step in (-delta, delta):
        v = d[key].copy()
        v[b] += step
        costs.append(clear(market, d, **{key: v}).cost)
    base = clear(market, d).cost
    backward, forward = (base - costs[0]) / delta, (costs[1] - base) / delta
    if abs(forward - backward) > 1e-6 * max(1.0, abs(forward)):
        return None
    return (costs[1] - costs[0]) / (2 * delta)


# ---------------------------------------------------------------- (a) prices are marginal costs
def test_prices_equal_finite_differences_of_the_optimal_cost(env37):
    """With voltage limits binding: d cost / d demand_b = load_price_b (the load keeps its
    power factor) and d cost / d PV_b = -dlmp_b (PV injects active power only)."""
    market = market37(env37)
    rng = np.random.default_rng(5)
    topo = env37.topology
    checked = {"demand_kw": 0, "pv_kw": 0}
    for _ in range(2):
        d = hour_data(env37, rng)
        res = clear(market, d)
        assert res.feasible and res.at_voltage_limit, "the instance must be voltage-bound"
        assert np.abs(res.voltage).max() > 0.1  # the voltage part matters here
        for bus in env37.load_buses:
            b = topo.bus_index[bus]
            fd = central_difference(market, d, "demand_kw", b)
            if fd is not None:
                assert res.load_price[b] == pytest.approx(fd, rel=1e-6, abs=1e-7), bus
                checked["demand_kw"] += 1
            fd = central_difference(market, d, "pv_kw", b)
            if fd is not None:
                assert -res.dlmp[b] == pytest.approx(fd, rel=1e-6, abs=1e-7), bus
                checked["pv_kw"] += 1
    n = 2 * len(env37.load_buses)
    assert checked["demand_kw"] >= 0.8 * n and checked["pv_kw"] >= 0.8 * n
    # Where the load has reactive power and a voltage limit binds, the two prices differ.
    assert np.abs(res.load_price - res.dlmp).max() > 0.01


# ---------------------------------------------------------------- (b) decomposition
def test_decomposition_sums_to_the_price_and_voltage_part_follows_binding_limits(env37):
    rng = np.random.default_rng(2)
    d = hour_data(env37, rng)
    topo = env37.topology
    seen = set()
    for low in (0.95, 1.0, 1.008, 1.01, 1.012):
        market = market37(env37, band=(low, 1.05))
        res = clear(market, d)
        np.testing.assert_allclose(res.energy + res.congestion + res.voltage, res.dlmp,
                                   atol=1e-9)
        for b, bus in enumerate(topo.buses):  # congestion part: branch prices on the path
            path = [topo.branch_index[e] for e in topo.path_to_root(bus)]
            assert res.congestion[b] == pytest.approx(res.branch_prices[path].sum(), abs=1e-9)
        binding = bool(res.at_voltage_limit)
        assert (np.abs(res.voltage).max() > 1e-6) == binding, low
        assert (np.abs(res.dlmp_q).max() > 1e-6) == binding, low
        priced = {topo.buses[b] for b in np.flatnonzero(np.abs(res.voltage_prices) > 1e-9)}
        assert priced <= set(res.at_voltage_limit)  # complementary slackness
        if binding:  # lower limits bind: a kW withdrawn anywhere upstream costs more
            assert np.all(res.voltage_prices >= -1e-9)
            assert np.all(res.voltage >= -1e-9) and res.voltage.max() > 0
            at = [topo.bus_index[b] for b in res.at_voltage_limit]
            np.testing.assert_allclose(res.voltage_pu[at], low, atol=1e-6)
        else:
            assert res.voltage_pu[[topo.bus_index[b] for b in env37.load_buses]].min() > low
        seen.add(binding)
    assert seen == {True, False}


def test_loose_band_gives_the_dc_market(env37):
    """Voltage limits that never bind leave the DC OPF: same dispatch, same DLMPs."""
    market = market37(env37, band=(0.5, 1.5))
    resources = [Resource(p.name, p.bus, p.group) for p in env37.participants]
    dc = DLMPMarket(env37.topology, resources, n_blocks=env37.n_blocks,
                    load_buses=env37.load_buses, pv_buses=env37.load_buses)
    dc.set_limits(env37.line_limits())
    rng = np.random.default_rng(4)
    congested = 0
    for _ in range(5):
        d = hour_data(env37, rng)
        res = clear(market, d)
        ref = clear(dc, d)
        assert not res.at_voltage_limit
        np.testing.assert_allclose(res.dlmp, ref.dlmp, atol=1e-7)
        np.testing.assert_allclose(res.participant_quantities, ref.participant_quantities,
                                   atol=1e-6)
        np.testing.assert_array_equal(res.voltage, 0.0)
        congested += bool(res.congested)
    assert congested  # with congestion present


# ---------------------------------------------------------------- (d) reference vs fast path
def test_fast_path_equals_cvxpy_statement(env37):
    """The HiGHS path (flows and voltages eliminated) and the CVXPY statement (explicit
    flows, voltages and nodal balances) agree; the P- and Q-DLMPs read directly from the
    CVXPY nodal balances' duals equal the fast path's decomposed prices."""
    market = market37(env37)
    rng = np.random.default_rng(8)
    for _ in range(3):
        d = hour_data(env37, rng)
        fast = clear(market, d)
        ref = clear(market, d, cvxpy=True)
        assert fast.solver == "highs" and ref.solver == "cvxpy-highs"
        assert fast.at_voltage_limit
        assert fast.cost == pytest.approx(ref.cost, rel=1e-9)
        np.testing.assert_allclose(fast.participant_quantities, ref.participant_quantities,
                                   atol=1e-5)
        np.testing.assert_allclose(fast.voltage_pu, ref.voltage_pu, atol=1e-7)
        np.testing.assert_allclose(fast.dlmp, ref.dlmp, atol=1e-6)
        p_dlmp, q_dlmp = market.cvxpy_prices
        np.testing.assert_allclose(fast.dlmp, p_dlmp, atol=1e-6)
        np.testing.assert_allclose(fast.dlmp_q, q_dlmp, atol=1e-6)
        # and the CVXPY statement's voltages are its own (explicit v), not the fast path's
        v = market.cvxpy_problem()["v"].value
        np.testing.assert_allclose(np.sqrt(v), fast.voltage_pu, atol=1e-7)


# ---------------------------------------------------------------- the model itself
def test_sensitivities_match_the_branch_recursion():
    """``voltages`` (the eliminated form) equals the LinDistFlow recursion branch by branch,
    with regulator ratios, reactive power and shunt capacitors."""
    grid = OpenDSSGrid.from_feeder("ieee34")
    imp = feeder_impedances(grid)
    topo = grid.topology
    market = LinDistFlowMarket(topo, [], **imp.market_args())
    rng = np.random.default_rng(0)
    p = rng.uniform(-50, 200, len(topo.buses))
    q = rng.uniform(-30, 100, len(topo.buses))
    P, Q = topo.subtree_sums(p), topo.subtree_sums(q)
    v = np.zeros(len(topo.buses))
    v[0] = imp.source_pu ** 2
    for e, br in enumerate(topo.branches):  # parents before children
        i, j = topo.bus_index[br.parent], topo.bus_index[br.child]
        v[j] = imp.ratio[e] ** 2 * (v[i] - 2 * (imp.r_pu[e] * P[e] + imp.x_pu[e] * Q[e])
                                    / imp.s_base_kva)
    np.testing.assert_allclose(market.voltages(p, q), np.sqrt(v), rtol=1e-12)


def test_impedances_from_the_published_feeder_data():
    """Per-unit r, x from OpenDSS's YPrim equal the published configuration matrices (IEEE
    34), and a transformer's come from its %R, %X (IEEE 37's substation: 2500 kVA, 2 + j8 %)."""
    grid = OpenDSSGrid.from_feeder("ieee34")
    imp = feeder_impedances(grid)
    e = {name: i for i, name in enumerate(imp.branches)}
    z_base = 24.9 ** 2 * 1000 / imp.s_base_kva  # ohm, three-phase base
    Z = ieee34.LINE_CONFIGS["300"]["z"]
    z1 = (np.mean([Z[0][0], Z[1][1], Z[2][2]]) - np.mean([Z[1][0], Z[2][0], Z[2][1]]))
    z = z1 * 32230 / 5280 / z_base
    assert imp.r_pu[e["806-808"]] == pytest.approx(z.real, rel=1e-6)
    assert imp.x_pu[e["806-808"]] == pytest.approx(z.imag, rel=1e-6)
    # a single-phase lateral carries all its power on one phase: three times the drop
    z = 3 * ieee34.LINE_CONFIGS["303"]["z"][0][0] * 5804 / 5280 / z_base
    assert imp.r_pu[e["808-810"]] == pytest.approx(z.real, rel=1e-6)
    assert imp.x_pu[e["808-810"]] == pytest.approx(z.imag, rel=1e-6)
    assert set(imp.regulated) == {"814-814r", "852-852r"}
    assert imp.shunt_kvar.sum() == pytest.approx(750.0)  # 300 + 450 kvar at 844, 848
    taps = np.mean([1.0875, 1.025, 1.03125])  # regulator 1 as the base case leaves it
    assert imp.ratio[e["814-814r"]] == pytest.approx(taps, rel=1e-9)
    g37 = OpenDSSGrid.from_feeder("ieee37")
    imp37 = feeder_impedances(g37)
    k = imp37.branches.index("sourcebus-799")
    assert (imp37.r_pu[k], imp37.x_pu[k]) == pytest.approx((0.02 * 0.4, 0.08 * 0.4))
    assert imp37.ratio[k] == pytest.approx(1.0)


# ---------------------------------------------------------------- (c) against OpenDSS
def _bus_means(grid, pf) -> dict[str, float]:
    """Per bus, the mean over its phases of the voltage magnitude (line-to-line on a delta
    feeder), pu."""
    values = pf.voltages_ll_pu if grid.delta else pf.voltages_pu
    acc: dict[str, list[float]] = {}
    for node, v in values.items():
        acc.setdefault(node.split(".")[0], []).append(v)
    return {b: float(np.mean(v)) for b, v in acc.items()}


@pytest.mark.parametrize("feeder, mean_tol, max_tol", [("ieee34", 0.007, 0.015),
                                                        ("ieee37", 0.009, 0.010)])
def test_voltages_agree_with_opendss(feeder, mean_tol, max_tol):
    """The market's dispatch applied to OpenDSS (regulators held at the market's ratios):
    the LinDistFlow voltages agree with OpenDSS's (mean over phases) within the stated
    tolerance, at a light, a midday and an evening hour. Measured: IEEE 34 mean |dV| <= 0.0051,
    max 0.0118 pu; IEEE 37 mean <= 0.0079, max 0.0081 pu (lossless model: it reads high)."""
    env = dlmp_v0.parallel_env(market_rounds=1, formulation="lindistflow", feeder=feeder)
    env.reset(seed=0)
    grid, market, topo = env.grid, env.market, env.topology
    buses = [b for b in topo.buses if b != topo.root]
    for hour in (3, 12, 18):
        env.t = hour
        env.start_hour()
        res = market.clear(env.truthful_bids(), env.context())
        grid.apply(*env.dispatch(res))
        mode = grid.dss.Solution.ControlMode()
        grid.dss.Solution.ControlMode(-1)  # OFF: the taps stay at the market's ratios
        try:
            pf = grid.solve()
        finally:
            grid.dss.Solution.ControlMode(mode)
        assert pf.converged
        np.testing.assert_allclose(regulator_ratios(grid), market.ratios, rtol=1e-12)
        ac = _bus_means(grid, pf)
        dv = np.array([res.voltage_pu[topo.bus_index[b]] - ac[b] for b in buses])
        assert np.abs(dv).mean() < mean_tol, (hour, np.abs(dv).mean())
        assert np.abs(dv).max() < max_tol, (hour, np.abs(dv).max())


# ---------------------------------------------------------------- infeasible and hand-made
def small(band=(0.95, 1.05), r=0.05, **kwargs) -> LinDistFlowMarket:
    """s -> a -> b: a generator and a DR provider at b, loads at a and b (pf 0.9)."""
    topo = Topology("s", [Branch("s-a", "s", "a", (), math.inf),
                          Branch("a-b", "a", "b", (), math.inf)])
    res = [Resource("generator_0", "b", "generator"), Resource("dr_0", "b", "dr")]
    return LinDistFlowMarket(topo, res, r_pu=[r, r], x_pu=[r, r], n_blocks=1,
                             load_tan_phi={"a": 0.484, "b": 0.484}, voltage_band=band,
                             load_buses=["a", "b"], **kwargs)


def test_voltage_support_by_dispatch_shedding_and_slack():
    m = small()
    ctx = MarketContext(demand_kw={"a": 100.0, "b": 400.0}, capacity_kw=[300.0, 100.0],
                        source_price=5.0)
    cheap = m.clear([[8.0], [9.0]], ctx)  # dearer than the source: run only for voltage
    assert cheap.feasible and cheap.at_voltage_limit == ["b"]
    assert cheap.voltage_pu[2] == pytest.approx(0.95, abs=1e-9)
    assert 0 < cheap.participant_quantities[0] < 300
    assert cheap.dlmp[2] == pytest.approx(8.0)  # the marginal generator sets b's price
    assert cheap.dlmp[2] == pytest.approx(cheap.energy + cheap.voltage[2])
    # DR is paid the price of a kW of load at b (active and reactive relief)
    assert cheap.participant_prices[1] == pytest.approx(cheap.load_price[2])
    assert cheap.welfare == pytest.approx(cheap.consumer_surplus + cheap.producer_surplus
                                          + cheap.congestion_rent)
    # without enough local support the band needs shedding: infeasible, reported
    short = m.clear([[8.0], [9.0]], MarketContext(
        demand_kw={"a": 100.0, "b": 400.0}, capacity_kw=[20.0, 10.0], source_price=5.0))
    assert not short.feasible and short.total_shed_kw > 0
    kinds = {v["constraint"] for v in short.violated}
    assert kinds == {"voltage_limit", "nodal_balance"}
    # the shed kW of load (with its kvar) sets the price of load at b
    assert short.load_price[2] == pytest.approx(m.price_cap)
    assert short.dlmp[2] < m.price_cap  # a kW without kvar is worth less there
    # a band no dispatch holds (a source above it, light load): the slack, reported
    hopeless = small(source_pu=1.1)
    res = hopeless.clear([[8.0], [9.0]], MarketContext(
        demand_kw={"a": 1.0, "b": 1.0}, capacity_kw=[0.0, 0.0], source_price=5.0))
    assert not res.feasible and res.total_shed_kw == 0
    assert {v["element"] for v in res.violated if v["constraint"] == "voltage_limit"
            and "upper voltage limit" in v["message"]} == {"a", "b"}
    assert res.voltage_pu[1] > 1.09 and np.all(res.voltage_prices[1:] < 0)


def test_pickling_reset_and_warm_start_are_exact(env37):
    market = market37(env37)
    rng = np.random.default_rng(1)
    data = [hour_data(env37, rng) for _ in range(3)]
    first = [clear(market, d) for d in data]
    clone = pickle.loads(pickle.dumps(market))
    market.reset()
    for d, ref in zip(data, first):
        for m in (clone, market):
            res = clear(m, d)
            assert res.cost == pytest.approx(ref.cost, rel=1e-12)
            np.testing.assert_allclose(res.dlmp, ref.dlmp, atol=1e-9)


def test_invalid_inputs_name_what_is_wrong():
    topo = Topology("s", [Branch("s-a", "s", "a", (), math.inf)])
    with pytest.raises(ValueError, match="r_pu: expected 1 values"):
        LinDistFlowMarket(topo, [], r_pu=[0.1, 0.2], x_pu=[0.1])
    with pytest.raises(ValueError, match="r_pu: branch s-a"):
        LinDistFlowMarket(topo, [], r_pu=[-0.1], x_pu=[0.1])
    with pytest.raises(ValueError, match="x_pu: unknown branch 'a-b'"):
        LinDistFlowMarket(topo, [], r_pu=[0.1], x_pu={"a-b": 0.1})
    with pytest.raises(ValueError, match="ratios: branch s-a"):
        LinDistFlowMarket(topo, [], r_pu=[0.1], x_pu=[0.1], ratios=[0.0])
    with pytest.raises(ValueError, match="voltage_band"):
        LinDistFlowMarket(topo, [], r_pu=[0.1], x_pu=[0.1], voltage_band=(1.05, 0.95))
    with pytest.raises(ValueError, match="band_buses: unknown buses"):
        LinDistFlowMarket(topo, [], r_pu=[0.1], x_pu=[0.1], band_buses=["zz"])
    with pytest.raises(ValueError, match="load_tan_phi: bus a"):
        LinDistFlowMarket(topo, [], r_pu=[0.1], x_pu=[0.1], load_tan_phi=[0.0, math.nan])
    m = LinDistFlowMarket(topo, [], r_pu=[0.1], x_pu=[0.1])
    with pytest.raises(ValueError, match="LinDistFlowMarket.clear: .* source_price"):
        m.clear([], MarketContext(demand_kw=[0.0, 1.0], capacity_kw=[]))
    with pytest.raises(ValueError, match="DLMPMarket.clear: .* source_price"):
        m.dc.clear([], MarketContext(demand_kw=[0.0, 1.0], capacity_kw=[]))
    with pytest.raises(ValueError, match="formulation must be one of"):
        dlmp_v0.parallel_env(formulation="ac")


# ---------------------------------------------------------------- the environment
def test_env_prices_follow_the_voltage_model_and_equal_dc_when_it_does_not_bind():
    """Same seed and actions: the LinDistFlow env pays what the DC env pays in hours whose
    voltage limits do not bind (the default scenario's band on IEEE 37), and reports the
    voltage part."""
    envs = [dlmp_v0.parallel_env(market_rounds=1, horizon=6, formulation=f)
            for f in ("dc", "lindistflow")]
    for e in envs:
        e.reset(seed=3)
    rng = np.random.default_rng(0)
    while envs[0].agents:
        actions = {a: rng.uniform(0, 12, 3) for a in envs[0].agents}
        (_, r_dc, *_), (_, r_ldf, _, _, infos) = (e.step(actions) for e in envs)
        res = envs[1].last_clearing
        assert not res.at_voltage_limit
        for a in r_dc:
            assert r_ldf[a] == pytest.approx(r_dc[a], rel=1e-9, abs=1e-12)
            assert infos[a]["voltage_price"] == 0.0
    assert envs[1].market.ratios[1] != 1.0  # the regulator is in the model


def test_pettingzoo_conformance():
    run_all(dlmp_v0, horizon=2, formulation="lindistflow")


# ---------------------------------------------------------------- deferred accounts
DEFERRED = ("cost", "import_cost", "consumer_payments", "producer_revenue", "consumer_surplus",
            "producer_surplus", "congestion_rent", "loss_surplus", "welfare", "price_components")


def test_accounts_are_computed_once_when_first_read(env37):
    """A result leaves its money accounts and price components to the DC market's
    ``dlmp_accounts``: nothing of them exists until one is read (the fields the env reads every
    round compute none), then all of them, once."""
    market = market37(env37)
    res = clear(market, hour_data(env37, np.random.default_rng(30)))
    assert not any(name in vars(res) for name in DEFERRED)
    accounts, runs = res._accounts, []
    res._accounts = lambda: runs.append(1) or accounts()
    _ = (res.dlmp, res.energy, res.congestion, res.voltage, res.participant_prices,
         res.participant_quantities, res.congested, res.total_shed_kw, res.source_kw,
         res.losses_kw, res.voltage_pu, res.at_voltage_limit)
    assert runs == [] and not any(name in vars(res) for name in DEFERRED)
    welfare = res.welfare
    assert runs == [1] and all(name in vars(res) for name in DEFERRED)
    res.to_dict()
    pickle.dumps(res)
    assert runs == [1] and res.welfare == welfare
    unread = pickle.dumps(clear(market, hour_data(env37, np.random.default_rng(30))))
    assert b"dlmp_accounts" not in unread  # the numbers, not the function computing them


def test_deferred_accounts_equal_read_before_or_after_pickling(env37):
    """A result read at once, one pickled before anything was read and one whose caller
    overwrote its offers, demand, capacity and PV in place before the first read report the
    same numbers bit for bit: binding voltage limits, shedding and losses included."""
    from test_dlmp_fast_path import same_result

    market = market37(env37)
    B = len(env37.topology.buses)
    rng = np.random.default_rng(31)
    shed = 0
    for k in range(12):
        if k == 6:
            market.set_losses(rng.uniform(-0.03, 0.06, B), 30.0)
        d = hour_data(env37, rng)
        if k % 3 == 2:  # more than the feeder can carry: shedding at the cap
            d["demand_kw"] *= 2.5
        read = clear(market, d)
        read.to_dict()
        unread = pickle.loads(pickle.dumps(clear(market, d)))
        overwritten = clear(market, d)
        for array in (d["offers"], d["demand_kw"], d["capacity_kw"], d["pv_kw"]):
            array[...] = 7.0
        same_result(read, unread)
        same_result(read, overwritten)
        assert read.to_dict() == overwritten.to_dict() == unread.to_dict()
        shed += read.total_shed_kw > 0
    assert shed


def test_accounts_keep_the_lindistflow_economics(env37):
    """The shared accounting keeps this market's economics (module docstring): consumers pay
    ``load_price`` on their baseline, resources are paid ``participant_prices``, PV and the
    source the DLMP; the congestion rent is what payments leave after revenue and the loss
    surplus; the price components (voltage included) sum to the DLMP; and the voltage slack's
    penalty is part of ``cost``."""
    market = market37(env37)
    topo = env37.topology
    B, root = len(topo.buses), topo.bus_index[topo.root]
    res_bus = market.dc.resource_bus_index
    rng = np.random.default_rng(32)
    voltage_rent = 0
    for k in range(8):
        if k == 4:
            market.set_losses(rng.uniform(-0.03, 0.06, B), 30.0, rng.normal(0, 40, B))
        d = hour_data(env37, rng)
        res = clear(market, d)
        q = res.participant_quantities
        baseline = d["demand_kw"] - res.shed_kw
        pv_taken = d["pv_kw"] - res.curtailed_kw
        payments = float(res.load_price @ baseline)
        revenue = float(res.participant_prices @ q + res.dlmp @ pv_taken
                        + res.dlmp[root] * res.source_kw)
        assert res.consumer_payments == payments and res.producer_revenue == revenue
        assert res.consumer_surplus == market.price_cap * float(baseline.sum()) - payments
        assert res.congestion_rent == payments - revenue - res.loss_surplus
        withdrawal = (baseline - pv_taken - np.bincount(res_bus, q, minlength=B))
        injection = -withdrawal
        injection[root] += res.source_kw
        if market.losses is None:
            assert res.loss_surplus == 0.0
        else:
            lf = market.losses.factors
            assert res.loss_surplus == pytest.approx(
                res.energy * (lf @ injection - res.losses_kw), rel=1e-9)
        parts = res.price_components
        assert list(parts) == ["energy", "loss", "congestion", "voltage"]
        assert parts["voltage"] is res.voltage and parts["congestion"] is res.congestion
        np.testing.assert_allclose(sum(parts.values()), res.dlmp, rtol=0, atol=1e-9)
        # the branch prices' rent alone misses the voltage parts' where the band binds
        branch_rent = float(res.congestion @ withdrawal)
        voltage_rent += abs(res.congestion_rent - branch_rent) > 1e-3
    assert voltage_rent
    # a band no dispatch holds: the slack's penalty is in the cost
    hopeless = small(source_pu=1.1)
    res = hopeless.clear([[8.0], [9.0]], MarketContext(
        demand_kw={"a": 1.0, "b": 1.0}, capacity_kw=[0.0, 0.0], source_price=5.0))
    high = hopeless.voltage_band[1]
    slack = np.maximum(res.voltage_pu[1:] ** 2 - high ** 2, 0.0).sum()
    assert slack > 0
    assert res.cost == pytest.approx(res.import_cost + hopeless.voltage_penalty * slack,
                                     rel=1e-9)
