"""Grid layer: isolation of engine contexts, dispatch, reset, errors, topology."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from ogg_envs.grid import FeederError, OpenDSSGrid, Topology
from ogg_envs.grid.opendss import PowerFlowResult, _bus_runs, _worst_per_bus, _worst_per_run


@pytest.fixture(scope="module")
def g34():
    return OpenDSSGrid.from_feeder("ieee34")


def _run(grid, factors):
    out = []
    for f in factors:
        grid.scale_loads(f)
        r = grid.solve()
        out.append(np.array(list(r.voltages_pu.values())))
    return out


def test_two_grids_in_one_process_do_not_interfere():
    factors_a = [0.5, 1.0, 1.3, 0.8]
    factors_b = [1.2, 0.3, 0.9, 1.1]
    alone_a = _run(OpenDSSGrid.from_feeder("ieee34"), factors_a)
    alone_b = _run(OpenDSSGrid.from_feeder("ieee37"), factors_b)
    a, b = OpenDSSGrid.from_feeder("ieee34"), OpenDSSGrid.from_feeder("ieee37")
    for k in range(4):  # interleaved, step by step
        va = _run(a, [factors_a[k]])[0]
        vb = _run(b, [factors_b[k]])[0]
        np.testing.assert_allclose(va, alone_a[k], atol=1e-9)
        np.testing.assert_allclose(vb, alone_b[k], atol=1e-9)
    assert a.dss.Circuit.Name() != b.dss.Circuit.Name()


def test_solve_result_contents(g34):
    g34.reset()
    r = g34.solve()
    assert r.converged
    assert "890.1" in r.voltages_pu and "890.ab" in r.voltages_ll_pu
    assert 0.9 < r.voltages_pu["890.1"] < 1.0
    assert r.substation_kw == pytest.approx(2047, rel=0.01)
    assert r.losses_kw == pytest.approx(273.5, rel=0.01)
    # the default band 0.95-1.05 flags the low voltages at the end of the feeder
    assert "890.1" in r.voltage_violations
    assert all(0 <= v < 200 for v in r.line_loading_pct.values())
    assert r.line_flows_kw["transformer.subxf"] == pytest.approx(r.substation_kw, rel=1e-3)


def test_dispatch_changes_flows_and_reset_restores(g34, monkeypatch):
    g34.reset()
    base = g34.solve()
    g34.scale_loads(0.5)
    half = g34.solve()
    assert half.substation_kw < 0.6 * base.substation_kw
    g34.scale_line_ratings(0.05)
    tight = g34.solve()
    assert tight.thermal_overloads, "5 % of the ampacity must overload the main line"
    rebuilt = []
    for method in ("_build", "_compile_file", "_run_commands", "_index"):
        monkeypatch.setattr(OpenDSSGrid, method, lambda *a, m=method, **k: rebuilt.append(m))
    elements = g34.dss.Circuit.NumCktElements()
    g34.reset()
    monkeypatch.undo()
    assert g34.dss.Circuit.NumCktElements() == elements
    again = g34.solve()
    assert again.substation_kw == pytest.approx(base.substation_kw, rel=1e-4)  # solver tol.
    assert again.thermal_overloads, "ratings are configuration: reset keeps them"
    g34.restore_ratings()
    assert not g34.solve().thermal_overloads
    assert not rebuilt, "reset must not recompile or re-index (compiling costs ms)"


def test_generator_injection_and_bus_consumption():
    g = OpenDSSGrid.from_feeder("ieee34")
    base = g.solve().substation_kw
    g.add_generator("dg", "848", kw=300.0)
    r = g.solve()
    # 300 kW less from the substation, plus the losses it saves on the way to 848
    assert 300.0 <= base - r.substation_kw <= 420.0
    g.set_bus_consumption("848", -100.0)  # net injection: loads off, generator 100 kW
    assert g.solve().converged
    with pytest.raises(ValueError, match="848"):
        g.set_bus_consumption("848", float("nan"))


def test_storage_state_of_charge():
    g = OpenDSSGrid.from_feeder("ieee34")
    g.add_storage("bat", "840", kw_rated=100, kwh_rated=200, soc=0.5)
    g.set_storage_kw("bat", 100, hours=1.0)
    assert g.storage["bat"]["soc"] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="state of charge"):
        g.set_storage_kw("bat", 50, hours=1.0)
    g.reset()
    assert g.storage["bat"]["soc"] == pytest.approx(0.5)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -5.0])
def test_bad_load_values_raise_naming_the_element(g34, value):
    name = g34.load_names[3]
    with pytest.raises(ValueError, match=name):
        g34.set_load_kw(name, value)
    kw = g34.base_load_kw.copy()
    kw[7] = value
    with pytest.raises(ValueError, match=g34.load_names[7]):
        g34.set_loads_kw(kw)


def test_unknown_names_list_valid_ones(g34):
    with pytest.raises(ValueError, match="valid buses:.*890"):
        g34.set_bus_consumption("999", 10.0)
    with pytest.raises(ValueError, match="valid loads"):
        g34.set_load_kw("nope", 1.0)


def test_missing_and_malformed_feeder_files(tmp_path):
    with pytest.raises(FeederError, match="not found"):
        OpenDSSGrid(tmp_path / "missing.dss")
    bad = tmp_path / "bad.dss"
    bad.write_text("clear\nnew circuit.x basekv=12.47\nnew line.l1 bus1=sourcebus bus2=b2 "
                   "linecode=doesnotexist length=1\n")
    with pytest.raises(FeederError) as exc:
        OpenDSSGrid(bad)
    assert "bad.dss" in str(exc.value)


def test_user_model_from_path(tmp_path):
    from ogg_envs.grid.feeders import ieee34

    master = ieee34.write_dss(tmp_path)
    g = OpenDSSGrid(master)
    assert g.solve().substation_kw == pytest.approx(2047, rel=0.01)
    assert g.bus_coords, "coordinates are read from the model's buscoords"


def test_non_convergence_is_reported_not_used():
    g = OpenDSSGrid.from_feeder("ieee34")
    g.dss.Solution.MaxIterations(3)
    g.scale_loads(8.0)
    r = g.solve()
    assert not r.converged
    assert np.isnan(r.substation_kw) and all(np.isnan(v) for v in r.voltages_pu.values())
    assert r.message
    g.dss.Solution.MaxIterations(100)
    g.reset()
    assert g.solve().converged, "a failed solve must not poison the next ones"


def test_pickle_round_trip():
    g = OpenDSSGrid.from_feeder("ieee34")
    g.add_generator("dg", "840", kw=50.0)
    g.scale_loads(0.7)
    clone = pickle.loads(pickle.dumps(g))
    assert clone.solve().substation_kw == pytest.approx(g.solve().substation_kw, rel=1e-9)


def test_topology_flow_sensitivities_match_a_lossless_power_flow(g34):
    topo = g34.topology
    assert isinstance(topo, Topology) and topo.root == "sourcebus"
    inj = np.zeros(len(topo.buses))
    for bus, idx in g34.loads_at_bus.items():
        inj[topo.bus_index[bus]] -= g34.base_load_kw[idx].sum()
    flows = dict(zip((b.name for b in topo.branches), topo.flows(inj)))
    g34.reset()
    r = g34.solve()
    # OpenDSS flows include losses and voltage-dependent loads: agree within 20 %
    assert flows["852r-832"] == pytest.approx(r.line_flows_kw["line.852r_832"], rel=0.2)
    assert flows["888-890"] == pytest.approx(450.0)
    assert set(topo.path_to_root("890")) >= {"888-890", "832-888", "852r-832", "800-802"}
    H = topo.H
    assert H.shape == (len(topo.branches), len(topo.buses))
    assert (H[:, topo.bus_index["sourcebus"]] == 0).all()


def test_draw_feeder(g34, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    ax = g34.draw({b: i for i, b in enumerate(g34.buses)}, label="test",
                  highlight_branches=["852r-832"])
    ax.figure.savefig(tmp_path / "feeder.png")
    assert (tmp_path / "feeder.png").stat().st_size > 1000


def test_branch_powers_are_opendss_own_and_turned_away_from_the_source():
    """Per element: terminal-1 kW and kvar are ``CktElement.Powers`` summed over its phase
    conductors. Per topology branch (``branch_flows``): the sum over its parallel elements,
    positive away from the source; the feeder's head carries the set kW plus the losses.
    ``net_injection_kw`` is the dispatch per topology bus."""
    g = OpenDSSGrid.from_feeder("ieee34")
    g.add_generator("dg", "848", kva=600)
    x = g.bus_load_kw * 1.1
    g.apply(x, {"dg": 250.0})
    pf = g.solve()
    dss = g.dss
    for el in g.branch_names:
        dss.Circuit.SetActiveElement(el)
        p = np.asarray(dss.CktElement.Powers())[: 2 * dss.CktElement.NumPhases()]
        assert pf.line_flows_kw[el] == pytest.approx(p[0::2].sum(), abs=1e-9)
        assert pf.line_flows_kvar[el] == pytest.approx(p[1::2].sum(), abs=1e-9)
    topo = g.topology
    p = g.net_injection_kw()
    expected = -x
    expected[topo.bus_index["848"]] += 250.0
    np.testing.assert_allclose(p, expected, atol=1e-9)
    s = g.branch_flows(pf)
    bank = next(br for br in topo.branches if len(br.elements) > 1)  # a regulator bank
    k = topo.branch_index[bank.name]
    assert s[k].real == pytest.approx(sum(pf.line_flows_kw[e] for e in bank.elements))
    linear = topo.flows(p)
    head = 0  # the feeder's head: everything is downstream, the losses on top of the loads
    assert s[head].real == pytest.approx(pf.substation_kw, rel=1e-6)
    assert s[head].real > linear[head] > 0
    assert s[head].real - linear[head] < 0.25 * linear[head]  # losses: 1-20 % of load
    only = g.branch_flows(pf, [bank.name])
    assert only[0] == s[k]


def _eager_fields(pf) -> dict:
    return {f: getattr(pf, f) for f in ("converged", "iterations", "voltages_pu",
                                        "voltages_ll_pu", "line_flows_kw", "line_flows_kvar",
                                        "line_loading_pct", "losses_kw", "losses_kvar",
                                        "substation_kw", "substation_kvar",
                                        "voltage_violations", "thermal_overloads", "message")}


def test_result_arrays_are_opendssdirects_own_numbers():
    """The grid reads OpenDSS's result buffers as arrays and builds the name-keyed dicts on
    first use: every number equals opendssdirect's list reads, bit for bit, and the
    violations and overloads follow the band and the ratings."""
    g = OpenDSSGrid.from_feeder("ieee34")
    g.dss.Lines.Name("812_814")
    g.dss.Lines.NormAmps(5.0)  # a rating the base case overloads
    g.scale_loads(1.2)
    pf = g.solve()
    dss = g.dss
    assert pf.voltages_pu == dict(zip(g.nodes, dss.Circuit.AllBusMagPu()))
    pct = dss.PDElements.AllPctNorm(False)
    rows = {n.lower(): k for k, n in enumerate(dss.PDElements.AllNames())}
    assert pf.line_loading_pct == {b: pct[rows[b]] for b in g.branch_names}
    assert (pf.losses_kw, pf.losses_kvar) == tuple(x / 1000.0 for x in dss.Circuit.Losses())
    assert (pf.substation_kw, pf.substation_kvar) == tuple(-x for x in dss.Circuit.TotalPower())
    assert all(type(pf.__dict__[f]) is float for f in ("losses_kw", "substation_kw"))
    low, high = g.voltage_band
    expected = {n: v for n, v in pf.voltages_pu.items()
                if not low - 1e-5 <= v <= high + 1e-5 and n.split(".")[0] not in g.source_buses}
    assert pf.voltage_violations == expected and list(pf.voltage_violations) == list(expected)
    assert pf.thermal_overloads == {b: p for b, p in pf.line_loading_pct.items()
                                    if p > 100.0 and b.startswith("line.")}
    assert "line.812_814" in pf.thermal_overloads and pf.line_loading_pct["transformer.xfm1"] > 100
    assert "transformer.xfm1" not in pf.thermal_overloads


def test_result_dicts_built_later_are_those_of_their_own_solve():
    """A result's dicts, first read after the grid has solved again, hold its own solve's
    numbers (an eagerly read twin says so); it pickles and compares like an eager one."""
    late, eager = OpenDSSGrid.from_feeder("ieee34"), OpenDSSGrid.from_feeder("ieee34")
    late.scale_loads(0.6)
    eager.scale_loads(0.6)
    first = late.solve()
    twin = _eager_fields(eager.solve())
    late.scale_loads(1.3)
    second = late.solve()
    assert _eager_fields(first) == twin
    assert second.voltages_pu != first.voltages_pu
    clone = pickle.loads(pickle.dumps(first))
    assert _eager_fields(clone) == twin and clone == first
    plain = PowerFlowResult(**_eager_fields(first))  # a plain result of the same dicts
    assert plain == first
    # branch_flows gives the same numbers from the result's arrays as from its dicts
    np.testing.assert_array_equal(late.branch_flows(clone), late.branch_flows(first))
    np.testing.assert_array_equal(late.branch_flows(plain), late.branch_flows(first))


def _dss_state(grid) -> tuple:
    """What an engine holds after a solve: node voltages, taps, iterations (opendssdirect)."""
    dss = grid.dss
    taps = []
    for name in dss.RegControls.AllNames() if dss.RegControls.Count() else []:
        dss.RegControls.Name(name)
        taps.append(dss.RegControls.TapNumber())
    return (tuple(dss.Circuit.AllBusVolts()), tuple(taps), dss.Solution.Iterations())


@pytest.mark.parametrize("feeder", ["ieee34", "ieee37"])
def test_whole_class_writes_give_the_element_setters_solutions(feeder):
    """Loads and generators are written in whole-class calls with the C-API setters'
    semantics: step after step (regulators moving, some steps changing only the generators or
    nothing, a reset between), the engine solves to the same numbers, bit for bit, as a grid
    writing element by element through the classic setters; it holds the values written."""
    grids = [OpenDSSGrid.from_feeder(feeder) for _ in range(2)]
    batch, elements = grids
    for g in grids:
        for bus in g.topology.buses[-2:]:
            g.add_generator(f"dg{bus}", bus, kva=800.0)
    assert batch._writer is not None  # rebuilt with the added generators
    elements._writer = None  # the element-by-element path
    rng = np.random.default_rng(3)
    for step in range(24):
        factors = rng.uniform(0.2, 1.6, len(batch.load_names))
        gen = rng.uniform(0.0, 600.0, 2)
        for g in grids:
            if step == 12:
                g.reset()
            if step % 4 != 1:  # every 4th step: the generators only
                g.scale_loads(factors)
            if step % 4 != 2:  # and the loads only
                g.set_generators_kw(gen, [f"dg{b}" for b in g.topology.buses[-2:]])
        a, b = batch.solve(), elements.solve()
        assert a.converged and b.converged
        assert _dss_state(batch) == _dss_state(elements), step
        assert _eager_fields(a) == _eager_fields(b), step
    dss, held = batch.dss, []
    for i in range(1, len(batch.load_names) + 1):
        dss.Loads.Idx(i)
        held.append((dss.Loads.Name().lower(), dss.Loads.kW(), dss.Loads.kvar()))
    assert held == list(zip(batch.load_names, batch.load_kw.tolist(),
                            batch._load_kvar.tolist()))
    for i in range(1, len(batch.load_names) + 1):  # the data derived from them too
        for g in grids:
            g.dss.Loads.Idx(i)
        assert batch.dss.Loads.PF() == elements.dss.Loads.PF()
        assert batch.dss.CktElement.Powers() == elements.dss.CktElement.Powers()
    for name, kw in batch.generator_kw.items():
        dss.Generators.Name(name)
        assert dss.Generators.kW() == kw


def test_line_to_line_voltages_are_those_of_opendssdirects_volts():
    """A wye feeder's line-to-line magnitudes (computed from the node voltages when first
    used) are |V_a - V_b| / (sqrt(3) V_base) of opendssdirect's own complex voltages."""
    g = OpenDSSGrid.from_feeder("ieee34")
    g.scale_loads(1.1)
    pf = g.solve()
    volts = np.array(g.dss.Circuit.AllBusVolts())
    v = dict(zip(g.nodes, volts[0::2] + 1j * volts[1::2]))
    names, diff, base = [], [], []
    for bus in g.buses:
        for (p, q), tag in (((1, 2), "ab"), ((2, 3), "bc"), ((3, 1), "ca")):
            if f"{bus}.{p}" in v and f"{bus}.{q}" in v:
                names.append(f"{bus}.{tag}")
                diff.append(v[f"{bus}.{p}"] - v[f"{bus}.{q}"])
                base.append(g.bus_kv_ln[bus] * 1000.0 * np.sqrt(3.0))
    expected = np.abs(np.array(diff)) / np.array(base)
    assert "voltages_ll_pu" not in vars(pf)  # not built before it is used
    assert pf.voltages_ll_pu == dict(zip(names, expected.tolist()))
    np.testing.assert_array_equal(g.read_arrays()["v_ll_pu"], expected)


def test_set_generators_kw_by_name_and_net_injection():
    g = OpenDSSGrid.from_feeder("ieee34")
    bus = g.topology.buses[-1]
    for name in ("a", "b"):  # two generators at one bus: their injections add up there
        g.add_generator(name, bus, kva=500.0)
    g.set_generators_kw([120.5, 30.25], ["b", "generator.ogg_a"])
    assert g.generator_kw == {"ogg_a": 30.25, "ogg_b": 120.5}
    for bad, match in (([-1.0, 0.0], "ogg_b.*>= 0"), ([0.0, np.nan], "ogg_a.*finite"),
                       ([1.0], "expected 2")):
        with pytest.raises(ValueError, match=match):
            g.set_generators_kw(bad, ["b", "a"])
    with pytest.raises(ValueError, match="unknown generator 'c'"):
        g.set_generators_kw([1.0], ["c"])
    assert g.generator_kw == {"ogg_a": 30.25, "ogg_b": 120.5}  # nothing changed
    g.scale_loads(np.random.default_rng(0).uniform(0.3, 1.2, len(g.load_names)))
    bi = g.topology.bus_index
    expected = np.zeros(len(g.topology.buses))  # the sums in element order, as np.add.at
    np.add.at(expected, [bi[g.load_bus[n]] for n in g.load_names], -g.load_kw)
    np.add.at(expected, [bi[g.generator_bus[n]] for n in g.generator_names],
              [g.generator_kw[n] for n in g.generator_names])
    np.testing.assert_array_equal(g.net_injection_kw(), expected)


@pytest.mark.parametrize("feeder", ["ieee34", "ieee37"])
def test_bus_voltages_from_arrays_are_the_node_loops(feeder):
    """A result's worst voltage per bus (computed on its arrays) is ``_worst_per_bus`` of
    its node dicts: the same buses in the same order, the same first node on a tie."""
    g = OpenDSSGrid.from_feeder(feeder)
    rng = np.random.default_rng(1)
    for _ in range(5):
        g.scale_loads(rng.uniform(0.1, 1.8, len(g.load_names)))
        pf = g.solve()
        judged = pf.voltages_ll_pu if g.delta else pf.voltages_pu
        expected = _worst_per_bus(judged)
        assert list(pf.bus_voltages().items()) == list(expected.items())
    # ties: two nodes of a bus equally far from 1 pu on either side; the first one wins
    values = np.array([1.0, 0.75, 1.25, 1.5, 0.5, 0.875])  # exact: |v - 1| ties are ties
    names = ["a.1", "b.1", "b.2", "c.1", "c.2", "c.3"]
    runs = _bus_runs(names)
    assert _worst_per_run(values, runs) == _worst_per_bus(dict(zip(names, values.tolist())))
    assert _worst_per_run(values, runs) == {"a": 1.0, "b": 0.75, "c": 1.5}
    assert _bus_runs(["a.1", "b.1", "a.2"]) is None  # a bus that comes back


def test_a_feeder_without_loads_or_generators():
    """Empty load and generator classes: nothing to write, a float zero injection."""
    g = OpenDSSGrid(commands=["new circuit.t basekv=12.47 pu=1.0 phases=3 bus1=src",
                              "new line.l1 bus1=src bus2=b phases=3 length=1 units=km",
                              "set voltagebases=[12.47]", "calcvoltagebases"])
    assert g.load_names == [] and g.generator_names == []
    np.testing.assert_array_equal(g.net_injection_kw(), np.zeros(2))
    assert g.net_injection_kw().dtype == float
    assert g.solve().converged
    g.add_generator("x", "b", 10.0)
    assert g.solve().substation_kw == pytest.approx(-10.0, rel=1e-3)
    assert g.net_injection_kw().tolist() == [0.0, 10.0]


def test_solve_seconds_add_up_the_solves(g34):
    before = g34.solve_seconds
    g34.scale_loads(0.9)
    g34.solve()
    assert g34.last_solve_s > 0 and g34.solve_seconds == pytest.approx(before + g34.last_solve_s)


def test_a_closed_grid_writes_nothing_into_its_engines_next_circuit():
    a = OpenDSSGrid.from_feeder("ieee34")
    engine = a.dss
    a.close()
    b = OpenDSSGrid.from_feeder("ieee34")
    assert b.dss is engine  # the engine a handed back: what the test is about
    a.scale_loads(0.5)
    with pytest.raises(AttributeError):
        a.solve()
    dss = b.dss
    held = []
    for i in range(1, len(b.load_names) + 1):
        dss.Loads.Idx(i)
        held.append(dss.Loads.kW())
    assert held == b.base_load_kw.tolist()


def test_reset_after_a_failed_solve_solves_as_a_fresh_grid():
    """A failed power flow does not poison the next episode: after ``reset`` it converges in
    a fresh grid's iterations to a fresh grid's numbers, to 1e-6 kW. Not bit for bit: what
    the failed solve left in OpenDSS's system matrix moves them by 7e-9 kW (known)."""
    def step(grid):
        grid.scale_loads(1.2)
        pf = grid.solve()
        return pf.converged, pf.substation_kw, pf.losses_kw, pf.iterations

    fresh = OpenDSSGrid.from_feeder("ieee34")
    reference = step(fresh)
    used = OpenDSSGrid.from_feeder("ieee34")
    used.scale_loads(60.0)
    assert not used.solve().converged  # far beyond what the feeder can carry
    used.reset()
    converged, kw, losses, iterations = step(used)
    assert converged and iterations == reference[3]
    np.testing.assert_allclose([kw, losses], reference[1:3], rtol=0, atol=1e-6)


def _volts_and_taps(grid):
    dss = grid.dss
    return np.array(dss.Circuit.AllBusVolts()), grid._read_taps()


@pytest.mark.parametrize("feeder", ["ieee34", "ieee37"])
def test_reset_forgets_what_the_engine_solved(feeder):
    """With the grid's sparse-solver options (``SOLVER_OPTIONS``) OpenDSS updates its system
    matrix in place and keeps element admittances between solves; ``reset`` rebuilds them, so
    after wildly different dispatches (regulators moving) the same episode solves bit for bit
    as on a new grid."""
    rng = np.random.default_rng(7)
    fresh, used = OpenDSSGrid.from_feeder(feeder), OpenDSSGrid.from_feeder(feeder)
    n = len(fresh.load_names)
    for _ in range(4):
        used.set_loads_kw(used.base_load_kw * rng.uniform(0.1, 1.7, n))
        assert used.solve().converged
    used.reset()
    fresh.reset()
    for _ in range(8):
        factors = rng.uniform(0.2, 1.5, n)
        states = []
        for g in (fresh, used):
            g.set_loads_kw(g.base_load_kw * factors)
            assert g.run_power_flow()
            states.append(_volts_and_taps(g))
        assert np.array_equal(states[0][0], states[1][0]) and states[0][1] == states[1][1]


def _control_state(grid) -> tuple[dict, list]:
    """Where the controls left the feeder: regulator taps and capacitor steps."""
    return grid._read_taps(), grid._read_capacitors()


def _tight_solves_agree(grid, steps: int, low: float, high: float, seed: int,
                        tolerances: float = 1.0) -> int:
    """Random dispatches on ``grid`` (controls acting) against a second engine of the same
    feeder solving the same loads at the same taps and capacitor steps (controls off) to
    1e-12: every node's voltage within ``tolerances`` times the solution tolerance. Returns
    how many steps moved a control."""
    rng = np.random.default_rng(seed)
    tight = OpenDSSGrid(**grid._init_args)
    dss = tight.dss
    dss.Solution.ControlMode(-1)  # controls stay where they are set below
    dss.Solution.Convergence(1e-12)
    dss.Solution.MaxIterations(200)
    n, moved, base = len(grid.load_names), 0, _control_state(grid)
    for _ in range(steps):
        factors = rng.uniform(low, high, n)
        grid.set_loads_kw(grid.base_load_kw * factors)
        assert grid.run_power_flow()
        volts = np.array(grid.dss.Circuit.AllBusVolts())
        taps, caps = state = _control_state(grid)
        moved += state != base
        tight.set_loads_kw(tight.base_load_kw * factors)
        for key, tap in taps.items():
            xf, wdg = key.split("|")
            dss.Transformers.Name(xf)
            dss.Transformers.Wdg(int(wdg))
            dss.Transformers.Tap(tap)
        for name, states in caps:
            dss.Capacitors.Name(name)
            dss.Capacitors.States(list(states))
        assert tight.run_power_flow()
        exact = np.array(dss.Circuit.AllBusVolts())
        v, v0 = volts[0::2] + 1j * volts[1::2], exact[0::2] + 1j * exact[1::2]
        assert np.max(np.abs(v - v0) / np.abs(v0)) <= tolerances * grid.dss.Solution.Convergence()
    tight.close()
    return moved


@pytest.mark.parametrize("feeder", ["ieee13", "ieee34", "ieee37", "ieee123"])
def test_power_flows_are_those_of_a_tight_solve_at_the_same_taps(feeder):
    """What the solver options (``SOLVER_OPTIONS``: the system matrix updated in place) trade
    is iterations, not physics: every power flow of random dispatches with regulators moving
    is within the solution tolerance (1e-4 relative, per node) of a solve of the same loads
    and taps iterated to 1e-12. A matrix updated with a stale element (a transformer at an
    old tap) would be off by far more."""
    assert _tight_solves_agree(OpenDSSGrid.from_feeder(feeder), 12, 0.2, 1.6, seed=11) >= 6


def test_a_grid_collected_in_another_thread_leaves_its_engine_alone(monkeypatch):
    """Python may collect a grid in any thread (a trainer's logging thread did, and OpenDSS
    crashed the process with a segmentation fault): collection only queues the engine's
    release; the next grid built releases it (clears it for reuse) in its own thread."""
    import gc
    import threading

    from ogg_envs.grid import opendss

    calls = []
    real = opendss._release
    monkeypatch.setattr(opendss, "_release",
                        lambda dss: (calls.append(threading.get_ident()), real(dss)))
    grid = OpenDSSGrid.from_feeder("ieee13")
    engine = grid.dss
    grid.cycle = grid  # only the cycle collector frees it
    del grid
    worker = threading.Thread(target=gc.collect)
    worker.start()
    worker.join()
    assert calls == []  # nothing ran in the collecting thread
    again = OpenDSSGrid.from_feeder("ieee13")
    assert calls == [threading.get_ident()]
    assert again.dss is engine  # released, cleared and reused
    assert again.solve().converged


def test_a_release_that_fails_does_not_stop_the_next_grid(monkeypatch):
    """A queued release whose engine call fails drops that engine; the grid being built does
    not inherit the error."""
    from ogg_envs.grid import opendss

    def broken():
        raise RuntimeError("engine gone")

    monkeypatch.setattr(opendss, "_TO_FREE", [(broken, ())])
    assert OpenDSSGrid.from_feeder("ieee13").solve().converged
    assert (broken, ()) not in opendss._TO_FREE
