"""Feeders at scale: the tree without a dense H, the markets' flow-conservation statements,
the grid's batch reads, the per-feeder scenarios, and the IEEE 8500-node feeder as a user's
feeder (from ``../shared/reference-feeders/ieee8500`` when it exists; skipped otherwise).

The IEEE 8500 tests are marked ``ieee8500`` (``-m "not ieee8500"`` leaves them out); each runs
one day with one market round and random actions.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import networkx as nx
import numpy as np
import pytest

import ogg_envs
from ogg_envs.api import MarketContext
from ogg_envs.grid import OpenDSSGrid, placement
from ogg_envs.grid import opendss as opendss_mod
from ogg_envs.grid.feeders import FEEDERS
from ogg_envs.markets import dlmp as dlmp_mod
from ogg_envs.markets.curve_market import CurveMarket, MarketParticipant
from ogg_envs.markets.dlmp import DLMPMarket, Resource

ENVS = ("opengridgym/topology-power-v0", "opengridgym/dlmp-v0", "opengridgym/p2p-v0")


def _reference_dir() -> Path:
    env = os.environ.get("OGG_REFERENCE_FEEDERS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "shared" / "reference-feeders"


IEEE8500 = _reference_dir() / "ieee8500" / "Master.dss"
needs_8500 = pytest.mark.skipif(not IEEE8500.is_file(),
                                reason=f"IEEE 8500 reference feeder not found ({IEEE8500})")


@pytest.fixture(scope="module", params=sorted(FEEDERS))
def grid(request):
    return OpenDSSGrid.from_feeder(request.param)


# --------------------------------------------------------------------------------------------
# Topology: the sensitivities without descendant sets, the incidence, subtree sums
# --------------------------------------------------------------------------------------------
def test_topology_H_and_tree_arrays_match_the_definition(grid):
    topo = grid.topology
    H = np.zeros((len(topo.branches), len(topo.buses)))
    for e, br in enumerate(topo.branches):
        for b in nx.descendants(topo.tree, br.child) | {br.child}:
            H[e, topo.bus_index[b]] = -1.0
    assert np.array_equal(topo.H, H)
    assert np.array_equal(topo.H_sparse.toarray(), H)
    for br in topo.branches:
        assert topo.downstream[br.name] == frozenset(
            nx.descendants(topo.tree, br.child) | {br.child})
    rng = np.random.default_rng(0)
    v = rng.normal(size=len(topo.buses))
    np.testing.assert_allclose(topo.subtree_sums(v), -H @ v, atol=1e-9)
    p = v - v.mean()  # a balanced injection: p = C f for f = H p
    np.testing.assert_allclose(topo.incidence @ (H @ p), p, atol=1e-9)
    cols = [topo.buses[-1], topo.buses[1]]
    assert np.array_equal(topo.H_columns(cols), H[:, [topo.bus_index[b] for b in cols]])


def test_topology_pickles_without_its_caches(grid):
    topo = grid.topology
    topo.H, topo.subtree_sums(np.ones(len(topo.buses)))  # fill the caches
    state = topo.__getstate__()
    assert not {"H", "H_sparse", "_subtree_solver", "downstream"} & set(state)
    again = pickle.loads(pickle.dumps(topo))
    assert np.array_equal(again.H, topo.H)


# --------------------------------------------------------------------------------------------
# The curve market: flow conservation per bus (zones) against the dense statement and CVXPY
# --------------------------------------------------------------------------------------------
def _curve_instance(name: str):
    g = OpenDSSGrid.from_feeder(name)
    topo, loads = g.topology, g.bus_load_kw
    parts = [MarketParticipant("sub", topo.root, "supply")]
    parts += [MarketParticipant(f"s{i}", b, "supply")
              for i, b in enumerate(placement.spread_along_main_path(topo, loads, 4))]
    parts += [MarketParticipant(f"d{i}", b, "demand")
              for i, b in enumerate(placement.load_buses(topo, loads))]
    below = topo.subtree_sums(loads)  # nominal load behind each branch
    return topo, loads, parts, {br.name: 0.5 * v + 20.0 for br, v in zip(topo.branches, below)}


def _random_bids(rng, parts, topo, loads, flat: bool, floor: float = 0.0):
    n = len(parts)
    sup = np.array([p.side == "supply" for p in parts])
    bus = np.array([topo.bus_index[p.bus] for p in parts])
    q = np.where(sup, rng.uniform(50, 800, n), loads[bus] * rng.uniform(0.5, 1.2, n))
    prices = np.sort(rng.uniform(floor, 20, (n, 2)), axis=1)[:, ::-1]
    if flat:
        prices[:, 1] = prices[:, 0]
    firm = q * rng.uniform(0, 1, n) * (rng.random(n) < 0.5)
    return np.c_[prices, q, firm]


def _objective(market, arr, x) -> float:
    """The cleared problem's objective (-welfare on the bids + shed/spill terms), x in the
    markets' layout [q, shed, spill, p]."""
    n = len(market.names)
    slope, lin = market._curve_coefficients(arr)
    q, shed, spill = x[:n], x[market._sl["shed"]], x[market._sl["spill"]]
    return float(0.5 * slope @ q**2 + lin @ q + market.price_cap * shed.sum()
                 - market.price_floor * spill.sum() + 0.5e-6 * (shed @ shed + spill @ spill))


@pytest.mark.parametrize("name", sorted(FEEDERS))
def test_flow_statement_clears_like_the_dense_one(name):
    topo, loads, parts, limits = _curve_instance(name)
    rng = np.random.default_rng(7)
    markets = {f: CurveMarket(topo, parts, price_cap=20.0, formulation=f)
               for f in ("dense", "flow")}
    for m in markets.values():
        m.set_limits(limits)
    lim = markets["flow"].limits_kw
    congested = compared = 0
    for trial in range(40):
        arr = _random_bids(rng, parts, topo, loads, flat=trial % 3 == 0)
        dense, flow = (markets[f].clear(arr) for f in ("dense", "flow"))
        assert flow.solver == "zones"
        # The zone solution is feasible and at least as good as the dense solver's (which
        # stops at its tolerances): the zone solver solves the KKT conditions exactly.
        flows = np.array(list(flow.flows_kw.values()))
        assert np.all(np.abs(flows) <= lim * (1 + 1e-9) + 1e-6)
        x_dense, x_flow = (markets[f]._solve(arr)[0] for f in ("dense", "flow"))
        best = _objective(markets["dense"], arr, x_dense)
        assert _objective(markets["flow"], arr, x_flow) <= best + 1e-7 * max(1.0, abs(best))
        congested += bool(flow.congested)
        if dense.total_shed_kw + dense.total_curtailed_kw > 1e-6 or trial % 3 == 0:
            continue  # shed/spill at the cap or flat bids: ties the solvers split differently
        # Otherwise the optimum is unique: the same prices, quantities and welfare.
        compared += 1
        np.testing.assert_allclose(flow.participant_prices, dense.participant_prices,
                                   atol=1e-4, err_msg=f"trial {trial}")
        np.testing.assert_allclose(flow.participant_quantities, dense.participant_quantities,
                                   atol=1e-3)
        assert flow.welfare == pytest.approx(dense.welfare, rel=1e-6, abs=1e-3)
        for br in set(flow.congested) ^ set(dense.congested):  # only degenerate ties differ
            i = list(dense.flows_kw).index(br)
            assert abs(abs(dense.flows_kw[br]) - lim[i]) <= 1e-3 * max(1.0, lim[i])
    assert congested >= 5 and compared >= 3  # the comparison saw congestion and optima


def test_flow_statement_agrees_with_the_cvxpy_statement():
    topo, loads, parts, limits = _curve_instance("ieee123")
    market = CurveMarket(topo, parts, price_cap=20.0, price_floor=1.0, formulation="flow")
    market.set_limits(limits)
    rng = np.random.default_rng(3)
    for _ in range(5):
        arr = _random_bids(rng, parts, topo, loads, flat=False, floor=1.0)
        flow, ref = market.clear(arr), market.clear_cvxpy(arr)
        np.testing.assert_allclose(flow.participant_prices, ref.participant_prices, atol=1e-5)
        assert flow.welfare == pytest.approx(ref.welfare, rel=1e-5, abs=1e-2)


def test_flow_statement_falls_back_to_clarabel_on_the_same_statement():
    topo, loads, parts, limits = _curve_instance("ieee34")
    market = CurveMarket(topo, parts, price_cap=20.0, formulation="flow")
    market.set_limits(limits)
    arr = _random_bids(np.random.default_rng(1), parts, topo, loads, flat=False)
    zones = market.clear(arr)
    market._radial.max_rounds = 0  # the zone solver gives up at once
    market.reset()
    fallback = market.clear(arr)
    assert fallback.solver == "clarabel-flow"
    np.testing.assert_allclose(fallback.participant_prices, zones.participant_prices,
                               atol=1e-5)


def test_auto_formulation_keeps_the_dense_statement_below_100_buses():
    for name in FEEDERS:
        topo, _, parts, _ = _curve_instance(name)
        expected = "flow" if name == "ieee123" else "dense"
        assert CurveMarket(topo, parts).formulation == expected, name
    with pytest.raises(ValueError, match="formulation"):
        CurveMarket(topo, parts, formulation="sparse")


def test_market_pickles_with_the_flow_statement():
    topo, loads, parts, limits = _curve_instance("ieee13")
    market = CurveMarket(topo, parts, price_cap=20.0, formulation="flow")
    market.set_limits(limits)
    arr = _random_bids(np.random.default_rng(2), parts, topo, loads, flat=False)
    first = market.clear(arr)
    again = pickle.loads(pickle.dumps(market)).clear(arr)
    np.testing.assert_allclose(again.participant_prices, first.participant_prices, atol=1e-12)


def test_dlmp_sparse_statement_matches_the_dense_one(monkeypatch):
    g = OpenDSSGrid.from_feeder("ieee37")
    topo = g.topology
    res = [Resource(f"g{i}", b, "generator") for i, b in enumerate(["738", "731", "722"])]
    res += [Resource("d0", "701", "dr")]
    demand = g.bus_load_kw
    ctx = MarketContext(demand_kw=demand, capacity_kw=np.array([250.0, 200, 300, 100]),
                        source_price=4.0)
    offers = np.array([[5.0, 6, 7], [4.5, 5, 9], [4.1, 4.4, 6], [6, 7, 8]])
    dense = DLMPMarket(topo, res, load_buses=[b for b in topo.buses if demand[
        topo.bus_index[b]] > 0], solver="highs")
    dense.set_limits({"730-709": 380.0, "734-737": 180.0})
    monkeypatch.setattr(dlmp_mod, "LARGE_FEEDER_BUSES", 0)  # the large-feeder path
    sparse = DLMPMarket(topo, res, load_buses=dense.load_buses, solver="highs")
    merit = DLMPMarket(topo, res, load_buses=dense.load_buses)  # the merit order
    sparse.set_limits({"730-709": 380.0, "734-737": 180.0})
    merit.set_limits({"730-709": 380.0, "734-737": 180.0})
    a, b, c = dense.clear(offers, ctx), sparse.clear(offers, ctx), merit.clear(offers, ctx)
    assert a.congested and set(a.congested) == set(b.congested) == set(c.congested)
    for other in (b, c):
        np.testing.assert_allclose(other.dlmp, a.dlmp, atol=1e-9)
        np.testing.assert_allclose(other.flows_kw, a.flows_kw, atol=1e-9)
    assert (a.solver, b.solver, c.solver) == ("highs", "highs", "merit-order")


@pytest.mark.parametrize("name", ["ieee37", "ieee123"])
def test_dlmp_merged_rows_clear_like_one_row_per_branch(name, monkeypatch):
    """The large-feeder LP merges the rows of branches in series that carry the same market
    columns (fewer rows than branches): with random limits on every branch (below the demand
    downstream where a generator there can make up for it: many bind, no ties), random offers
    and demand, it clears like the LP with one row per branch:
    dispatch, DLMPs, flows, branch prices (the smallest limit of a group carries its price),
    congestion and what is infeasible (where nothing is shed: shedding at the cap ties across
    buses, and the two LPs may split a tie differently)."""
    g = OpenDSSGrid.from_feeder(name)
    topo = g.topology
    rng = np.random.default_rng(5)
    load_buses = [b for b in topo.buses if g.bus_load_kw[topo.bus_index[b]] > 0]
    res = [Resource(f"g{i}", b, "generator")
           for i, b in enumerate(rng.choice(topo.buses[1:], 4, replace=False))]
    res += [Resource(f"d{i}", b, "dr") for i, b in enumerate(load_buses[:3])]
    markets = {}
    for label, threshold in (("per branch", 10**9), ("merged", 0)):
        monkeypatch.setattr(dlmp_mod, "LARGE_FEEDER_BUSES", threshold)
        markets[label] = DLMPMarket(topo, res, load_buses=load_buses, solver="highs")
    merged, full = markets["merged"], markets["per branch"]
    assert merged._nrow < full._nrow == 1 + len(topo.branches)
    below = -topo.H
    generator_below = below[:, [topo.bus_index[r.bus] for r in res[:4]]].sum(axis=1) > 0
    congested = shed = 0
    for _ in range(40):
        demand = g.bus_load_kw * rng.uniform(0.5, 1.5)
        share = np.where(generator_below, rng.uniform(0.7, 1.3, len(topo.branches)),
                         rng.uniform(1.0, 1.5, len(topo.branches)))
        limits = below @ demand * share + 1.0
        cap = rng.uniform(200.0, 800.0, len(res))
        cap[4:] = np.minimum(cap[4:], demand[[topo.bus_index[b] for b in load_buses[:3]]])
        ctx = MarketContext(demand_kw=demand, capacity_kw=cap, source_price=4.0)
        offers = np.sort(rng.uniform(0.0, 25.0, (len(res), 3)), axis=1)
        a, b = (m.set_limits(limits) or m.clear(offers, ctx) for m in (full, merged))
        limits_violated = [[v for v in r.violated if v["constraint"] == "flow_limit"]
                           for r in (a, b)]
        assert b.feasible == a.feasible and limits_violated[0] == limits_violated[1]
        np.testing.assert_allclose(b.dlmp, a.dlmp, atol=1e-7)
        if a.total_shed_kw > 1e-7 or b.total_shed_kw > 1e-7:
            shed += 1
            continue
        congested += bool(a.congested)
        np.testing.assert_allclose(b.participant_quantities, a.participant_quantities,
                                   atol=1e-6)
        np.testing.assert_allclose(b.flows_kw, a.flows_kw, atol=1e-6)
        np.testing.assert_allclose(b.branch_prices, a.branch_prices, atol=1e-7)
        assert set(b.congested) == set(a.congested)
    assert congested >= 25 and shed < 5


# --------------------------------------------------------------------------------------------
# The grid's batch path (large feeders) gives the per-element path's numbers
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["ieee34", "ieee123"])
def test_batch_reads_and_writes_match_the_element_path(name, monkeypatch):
    slow = OpenDSSGrid.from_feeder(name)
    monkeypatch.setattr(opendss_mod, "BATCH_MIN_LOADS", 1)
    fast = OpenDSSGrid.from_feeder(name)
    assert fast._batch is not None and slow._batch is None
    for g in (slow, fast):
        g.add_generator("dg", g.topology.buses[-1], kva=500)
    rng = np.random.default_rng(0)
    for _ in range(3):
        x = slow.bus_load_kw * rng.uniform(0.5, 1.3, len(slow.topology.buses))
        for g in (slow, fast):
            g.apply(x, {"dg": 120.0})
        a, b = slow.solve(), fast.solve()
        assert type(b).__name__ == "_LazyPowerFlowResult"
        for key in ("voltages_pu", "voltages_ll_pu", "line_flows_kw", "line_flows_kvar",
                    "line_loading_pct"):
            da, db = getattr(a, key), getattr(b, key)
            assert list(da) == list(db)
            np.testing.assert_allclose(list(db.values()), list(da.values()), rtol=1e-9,
                                       atol=1e-9, err_msg=key)
        assert b.losses_kw == pytest.approx(a.losses_kw, rel=1e-9)
        assert b.losses_kvar == pytest.approx(a.losses_kvar, rel=1e-9)
        assert b.substation_kw == pytest.approx(a.substation_kw, rel=1e-12)
        assert set(b.voltage_violations) == set(a.voltage_violations)
        assert set(b.thermal_overloads) == set(a.thermal_overloads)
    again = pickle.loads(pickle.dumps(b))  # a result pickles with its dicts
    assert again.voltages_pu == b.voltages_pu


def test_large_feeder_result_reads_its_branches_before_the_engine_moves_on(monkeypatch):
    """Branch currents are read on first use; a result still alive when the grid solves again
    (or adds an element) reads them first, so it keeps its own solution's numbers."""
    slow = OpenDSSGrid.from_feeder("ieee34")
    monkeypatch.setattr(opendss_mod, "BATCH_MIN_LOADS", 1)
    fast = OpenDSSGrid.from_feeder("ieee34")
    x = slow.bus_load_kw * 1.2
    for g in (slow, fast):
        g.apply(x)
    a, b = slow.solve(), fast.solve()
    assert "line_flows_kw" not in vars(b) and "losses_kw" not in vars(b)  # not read yet
    fast.apply(x * 0.5)
    fast.solve()  # another solution: b reads its own currents first (its dicts come later)
    assert "line_flows_kw" not in vars(b)
    np.testing.assert_allclose(list(b.line_flows_kw.values()),
                               list(a.line_flows_kw.values()), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(fast.branch_flows(b), slow.branch_flows(a), rtol=1e-9, atol=1e-9)
    assert b.losses_kw == pytest.approx(a.losses_kw, rel=1e-9)
    assert set(b.thermal_overloads) == set(a.thermal_overloads)
    twin = OpenDSSGrid.from_feeder("ieee34")  # the same history, read at once
    for load in (x, x * 0.5, x * 0.5):
        twin.apply(load)
        expected = twin.solve().line_flows_kvar
    c = fast.solve()
    fast.add_generator("late", fast.topology.buses[-1], kva=100)
    fast.apply(x * 2.0)
    fast.solve()  # another dispatch, with the generator: c keeps its own solution's numbers
    assert list(c.line_flows_kvar.values()) == list(expected.values())


# --------------------------------------------------------------------------------------------
# Every market runs a day on every bundled feeder; congestion on peak days only
# --------------------------------------------------------------------------------------------
def _run_day(env, seed=0, options=None, policy=None):
    env.reset(seed=seed, options=options)
    congested = steps = 0
    while env.agents:
        acts = {a: (policy(env.participant[a]) if policy else env.action_space(a).sample())
                for a in env.agents}
        env.step(acts)
        c = env.last_clearing
        congested += bool(getattr(c, "congested", []))
        steps += 1
    return steps, congested


@pytest.mark.parametrize("env_id", ENVS)
@pytest.mark.parametrize("feeder", sorted(FEEDERS))
def test_every_market_runs_a_day_on_every_bundled_feeder(env_id, feeder):
    kw = {} if "p2p" in env_id else {"market_rounds": 1}
    env = ogg_envs.make(env_id, parallel=True, feeder=feeder, **kw)
    steps, _ = _run_day(env)
    assert steps >= env.horizon
    assert env.last_power_flow is not None and env.last_power_flow.converged


PER_FEEDER = [f"{m}_{f}" for m, feeders in (("topology_power", ("ieee13", "ieee37", "ieee123")),
                                             ("dlmp", ("ieee13", "ieee34", "ieee123")),
                                             ("p2p", ("ieee13", "ieee37", "ieee123")))
              for f in feeders]


def test_every_bundled_feeder_has_a_scenario_for_each_market():
    from ogg_envs.scenario import bundled_scenarios

    names = set(bundled_scenarios())
    assert set(PER_FEEDER) <= names
    for market, default_feeder in (("topology_power", "ieee34"), ("dlmp", "ieee37"),
                                   ("p2p", "ieee34")):
        covered = {default_feeder} | {n.split("_")[-1] for n in names
                                      if n.startswith(market + "_ieee")}
        assert covered == set(FEEDERS), market


def _peak_and_median_day(env):
    """The year's day with the highest and a median daily peak of the consumers' total."""
    shapes = sorted(c for c in env.profiles if c.startswith("shape_"))
    total = sum(env.profiles[c] for c in shapes)
    daily = total.reshape(-1, 24).max(axis=1)
    return int(np.argmax(daily)), int(np.argsort(daily)[len(daily) // 2])


@pytest.mark.parametrize("scenario", [s for s in PER_FEEDER if not s.startswith("p2p")])
def test_per_feeder_scenarios_congest_on_peak_days_only(scenario):
    from ogg_envs.policies import blocks, curve

    dlmp = scenario.startswith("dlmp")
    env_id = "opengridgym/dlmp-v0" if dlmp else "opengridgym/topology-power-v0"
    env = ogg_envs.make(env_id, parallel=True, scenario=scenario, market_rounds=1)
    policy = blocks.true_block_prices if dlmp else curve.truthful_bid
    limited = next(iter(env.scenario.grid.limits_kw))
    # The limited branch's own peak day (the consumers behind it) and a median day.
    down = env.topology.downstream[limited]
    if dlmp:
        cols = [env.consumer_profile(j) for j, b in enumerate(env.load_buses) if b in down]
        kw = [env.nominal_kw[env.topology.bus_index[b]] for b in env.load_buses if b in down]
    else:
        cols = [env.consumer_profile(j) for j, p in enumerate(env.consumers) if p.bus in down]
        kw = [env.nominal_kw[j] for j, p in enumerate(env.consumers) if p.bus in down]
    load = sum(k * env.profiles[c] for k, c in zip(kw, cols))
    daily = load.reshape(-1, 24).max(axis=1)
    peak, median = int(np.argmax(daily)), int(np.argsort(daily)[len(daily) // 2])
    _, on_peak = _run_day(env, options={"day": peak}, policy=policy)
    _, on_median = _run_day(env, options={"day": median}, policy=policy)
    assert on_peak >= 1, f"{scenario}: no congestion on the peak day {peak}"
    assert on_median == 0, f"{scenario}: congestion on the median day {median}"


def test_list_scenarios_names_every_bundled_scenario(capsys):
    from ogg_envs.cli import main
    from ogg_envs.scenario import bundled_scenarios

    assert main(["list", "--scenarios"]) == 0
    out = capsys.readouterr().out
    for name in bundled_scenarios():
        assert name in out
    assert "dlmp_ieee123" in out and "opengridgym/dlmp-v0" in out and "year" in out


# --------------------------------------------------------------------------------------------
# IEEE 8500 as a user's feeder
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def grid8500():
    if not IEEE8500.is_file():
        pytest.skip(f"IEEE 8500 reference feeder not found ({IEEE8500})")
    return OpenDSSGrid(IEEE8500)


@pytest.mark.ieee8500
@needs_8500
def test_ieee8500_maps_secondaries_and_service_transformers_onto_the_tree(grid8500):
    g = grid8500
    topo = g.topology
    assert len(topo.buses) == len(g.buses) == 4876  # every bus is on the tree
    assert set(g.loads_at_bus) <= set(topo.bus_index)  # loads on triplex secondaries
    kinds = {el.split(".")[0] for br in topo.branches for el in br.elements}
    assert kinds == {"line", "transformer", "reactor"}
    # A load's path to the source: triplex line, then its center-tap service transformer.
    bus = next(iter(g.loads_at_bus))
    path = topo.path_to_root(bus)
    first, second = (topo.branches[topo.branch_index[p]].elements for p in path[:2])
    assert first[0].startswith("line.tpx") and second[0].startswith("transformer.")
    assert np.isfinite(topo.limits_kw).all()
    assert g._batch is not None  # the large-feeder path
    assert g.bus_load_kw.sum() == pytest.approx(10773, rel=1e-3)
    pf = g.solve()
    assert pf.converged
    assert pf.substation_kw == pytest.approx(11983.7, rel=2e-3)
    assert pf.losses_kw == pytest.approx(1210.3, rel=2e-3)


@pytest.mark.ieee8500
@needs_8500
def test_ieee8500_power_flows_with_capacitors_switching_are_tight_solves():
    """IEEE 8500's capacitor controls and regulators act on random dispatches; with the grid's
    solver options (the system matrix updated in place) every power flow is within the
    solution tolerance of a tight solve at the same taps and capacitor steps. Within twice
    it: OpenDSS's criterion bounds the change between iterations, not the error, and on this
    feeder its default settings are 1.16e-4 off too (measured); a stale matrix entry (a tap
    or a capacitor step missed) would be off by far more."""
    from test_grid import _tight_solves_agree

    assert _tight_solves_agree(OpenDSSGrid(IEEE8500), 4, 0.3, 1.3, seed=5, tolerances=2) >= 2


@pytest.mark.ieee8500
@needs_8500
def test_ieee8500_reset_forgets_switched_capacitors():
    """``reset`` puts IEEE 8500's capacitors back (steps where the base solve left them, their
    controls without pending actions or timers): after load levels that switched them, the
    same dispatches solve bit for bit as on a new grid, capacitor steps included (before the
    reset restored them, 70 V apart)."""
    fresh, used = OpenDSSGrid(IEEE8500), OpenDSSGrid(IEEE8500)
    base = used._read_capacitors()
    for factor in (0.5, 1.2, 0.4):
        used.scale_loads(factor)
        assert used.solve().converged
    assert used._read_capacitors() != base  # the controls switched some
    for grid in (fresh, used):
        grid.reset()
    assert used._read_capacitors() == base
    for factor in (0.9, 0.5, 1.1):
        volts = []
        for grid in (fresh, used):
            grid.scale_loads(factor)
            assert grid.solve().converged
            volts.append((grid.dss.Circuit.AllBusVolts(), grid._read_capacitors()))
        assert volts[0] == volts[1], factor


@pytest.mark.ieee8500
@needs_8500
def test_ieee8500_clearing_with_1200_participants(grid8500):
    topo, loads = grid8500.topology, grid8500.bus_load_kw
    parts = [MarketParticipant("sub", topo.root, "supply")]
    parts += [MarketParticipant(f"s{i}", b, "supply")
              for i, b in enumerate(placement.spread_along_main_path(topo, loads, 4))]
    parts += [MarketParticipant(f"d{i}", b, "demand")
              for i, b in enumerate(placement.load_buses(topo, loads))]
    assert len(parts) > 1150
    market = CurveMarket(topo, parts, price_cap=20.0)
    assert market.formulation == "flow"
    market.set_limits(placement.default_limits_kw(topo))
    arr = _random_bids(np.random.default_rng(0), parts, topo, loads, flat=False)
    zones = market.clear(arr)
    assert zones.solver == "zones"
    market._radial.max_rounds = 0
    market.reset()
    ref = market.clear(arr)  # Clarabel on the same sparse statement
    assert ref.solver == "clarabel-flow"
    np.testing.assert_allclose(zones.participant_prices, ref.participant_prices, atol=1e-4)
    market._radial.max_rounds = 200
    x_zones, x_ref = market._solve(arr)[0], market._solve_flow_clarabel(arr)[0]
    best = _objective(market, arr, x_ref)
    assert _objective(market, arr, x_zones) <= best + 1e-9 * abs(best)


@pytest.mark.ieee8500
@needs_8500
def test_ieee8500_dlmp_merit_order_equals_highs():
    """The DLMP market's merit order on the large feeder (1,205 blocks, 4,875 branches at
    their ratings) reaches HiGHS's optimum on its merged-row LP, random offers and hours."""
    env = ogg_envs.make("opengridgym/dlmp-v0", parallel=True, feeder=str(IEEE8500))
    env.reset(seed=0)
    m = env.market
    rng = np.random.default_rng(3)
    for hour in range(6):
        env.t = hour * 3
        env.start_hour()
        offers = rng.uniform(0.0, m.price_cap, (len(m.names), m.n_blocks))
        m.solver = "auto"
        a = m.clear(offers, env.context())
        m.solver = "highs"
        b = m.clear(offers, env.context())
        assert (a.solver, b.solver) == ("merit-order", "highs")
        assert a.cost == pytest.approx(b.cost, rel=1e-9)
        np.testing.assert_allclose(a.dlmp, b.dlmp, atol=1e-7)


@pytest.mark.ieee8500
@needs_8500
@pytest.mark.parametrize("env_id", ENVS)
def test_every_market_runs_a_day_on_ieee8500(env_id):
    kw = {} if "p2p" in env_id else {"market_rounds": 1}
    env = ogg_envs.make(env_id, parallel=True, feeder=str(IEEE8500), **kw)
    assert env.topology.buses[0] == "sourcebus" and len(env.topology.buses) == 4876
    steps, _ = _run_day(env)
    assert steps >= env.horizon
    pf = env.last_power_flow
    assert pf is not None and pf.converged
    if "topology" in env_id:
        assert len(env.participants) > 1150  # a consumer at every load bus
