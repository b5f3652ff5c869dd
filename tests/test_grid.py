"""Grid layer: isolation of engine contexts, dispatch, reset, errors, topology."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from ogg_envs.grid import FeederError, OpenDSSGrid, Topology
from ogg_envs.grid.opendss import PowerFlowResult


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
