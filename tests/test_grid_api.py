"""Public grid API: branch_elements/Topology.from_elements, apply(), placement, user feeders."""

from __future__ import annotations

import ast
import doctest
import inspect
import math
import os
import pickle
import re
from pathlib import Path
from types import SimpleNamespace

import networkx as nx
import numpy as np
import pytest

from ogg_envs.grid import Branch, FeederError, OpenDSSGrid, Topology, placement, topology
from ogg_envs.grid.feeders import ieee34

FIVE_BUS = Path(__file__).resolve().parents[1] / "examples" / "feeders" / "five_bus" / "master.dss"


@pytest.fixture(scope="module")
def grids():
    return {f: OpenDSSGrid.from_feeder(f) for f in ("ieee34", "ieee37")}


# ---------------------------------------------------------------- topology
def _old_topology(grid) -> Topology:
    """Topology.from_grid as it was before branch_elements(): reads the engine directly."""
    dss = grid.dss

    def element_limit_kw(name, parent_bus):
        dss.Circuit.SetActiveElement(name)
        nph = dss.CktElement.NumPhases()
        if name.startswith("transformer."):
            dss.Transformers.Name(name.split(".", 1)[1])
            dss.Transformers.Wdg(1)
            return float(dss.Transformers.kVA())
        kv_ln = grid.bus_kv_ln.get(parent_bus, 0.0)
        amps = grid.base_normamps.get(name, 0.0)
        return float(nph * kv_ln * amps) if kv_ln and amps else math.inf

    groups, limits, ends = {}, {}, {}
    graph = nx.Graph()
    for name in grid.branch_names:
        dss.Circuit.SetActiveElement(name)
        b1, b2 = (b.split(".")[0].lower() for b in dss.CktElement.BusNames()[:2])
        if b1 == b2:
            continue
        ends[name] = (b1, b2)
        graph.add_edge(b1, b2)
    root = grid.buses[0]
    order = {b: i for i, b in enumerate(nx.bfs_tree(graph, root))}
    for name, (b1, b2) in ends.items():
        parent, child = (b1, b2) if order[b1] < order[b2] else (b2, b1)
        groups.setdefault((parent, child), []).append(name)
        limits[(parent, child)] = limits.get((parent, child), 0.0) + element_limit_kw(name,
                                                                                      parent)
    branches = [Branch(f"{p}-{c}", p, c, tuple(els), limits[(p, c)])
                for (p, c), els in groups.items()]
    branches.sort(key=lambda br: order[br.child])
    return Topology(root, branches, coords=grid.bus_coords)


@pytest.mark.parametrize("feeder", ["ieee34", "ieee37"])
def test_topology_identical_to_the_old_computation(grids, feeder):
    grid = grids[feeder]
    old, new = _old_topology(grid), grid.topology
    assert new.root == old.root
    assert new.buses == old.buses
    assert new.branches == old.branches  # names, ends, elements and limits, in order
    np.testing.assert_array_equal(new.H, old.H)
    np.testing.assert_array_equal(new.limits_kw, old.limits_kw)
    assert new.coords == old.coords
    lim = {name: kw for name, _, _, kw in grid.branch_elements()}
    banks = [b for b in new.branches if len(b.elements) > 1]  # parallel regulators
    assert banks
    for b in banks:
        assert b.limit_kw == sum(lim[e] for e in b.elements)


def test_branch_elements_shape(grids):
    els = grids["ieee34"].branch_elements()
    assert len(els) == len(grids["ieee34"].branch_names)
    for name, b1, b2, lim in els:
        assert name.startswith(("line.", "transformer.")) and isinstance(lim, float)
        assert b1 == b1.lower() and "." not in b1 and "." not in b2
    assert ("transformer.subxf", "sourcebus", "800", 25000.0) in els


def test_topology_module_does_not_touch_opendss():
    tree = ast.parse(inspect.getsource(topology))
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            mods = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
            assert not any("opendss" in m or m == "opendss" for m in mods), mods
        if isinstance(node, ast.Attribute):
            assert node.attr != "dss", "Topology must not read grid.dss"
    # from_grid only needs buses, branch_elements() and bus_coords
    fake = SimpleNamespace(buses=["s", "a"], bus_coords={"s": (0, 0)},
                           branch_elements=lambda: [("line.x", "s", "a", 10.0)])
    t = Topology.from_grid(fake)
    assert t.buses == ["s", "a"] and t.coords == {"s": (0, 0)}


def test_from_elements_plain_tuples():
    inf = math.inf
    els = [
        ("transformer.sub", "src", "a", 1000.0),
        ("line.self", "a", "a", 5.0),  # same bus at both ends: skipped
        ("line.ab", "b", "a", 300.0),  # written child-first: still oriented away from src
        ("reg.1", "a", "c", 100.0),    # parallel pair a-c: one branch, limits summed
        ("reg.2", "c", "a", 150.0),
        ("line.cd", "c", "d", inf),
    ]
    t = Topology.from_elements("src", els, coords={"a": (1.0, 2.0)})
    assert t.buses == ["src", "a", "b", "c", "d"]
    assert [b.name for b in t.branches] == ["src-a", "a-b", "a-c", "c-d"]
    assert t.branches[2].elements == ("reg.1", "reg.2")
    np.testing.assert_array_equal(t.limits_kw, [1000.0, 300.0, 250.0, inf])
    assert t.H[3].tolist() == [0, 0, 0, 0, -1] and t.H[0].tolist() == [0, -1, -1, -1, -1]
    assert t.coords == {"a": (1.0, 2.0)}


def test_from_elements_rejects_loops_and_islands():
    with pytest.raises(ValueError, match="loop through buses") as exc:
        Topology.from_elements("s", [("l1", "s", "a", 1.0), ("l2", "a", "b", 1.0),
                                     ("l3", "b", "c", 1.0), ("l4", "c", "a", 1.0)])
    named = re.search(r"loop through buses (.*?) \(", str(exc.value)).group(1)
    assert set(named.split(" - ")) == {"a", "b", "c"}
    with pytest.raises(ValueError, match="not connected to the root 's': x, y"):
        Topology.from_elements("s", [("l1", "s", "a", 1.0), ("l2", "x", "y", 1.0)])
    with pytest.raises(ValueError, match="limit"):
        Topology.from_elements("s", [("l1", "s", "a", float("nan"))])


def test_open_and_disabled_elements_do_not_make_loops(grids):
    tie = "new line.tie bus1=890 bus2=840 phases=3 length=1 units=mi"
    spare = "new line.spare bus1=848 bus2=822 phases=3 length=1 units=mi"
    g = OpenDSSGrid(commands=ieee34.dss_commands() + [tie, "open line.tie 1", spare,
                                                        "disable line.spare"])
    ref = grids["ieee34"].topology
    assert g.topology.buses == ref.buses and g.topology.branches == ref.branches
    assert g.solve().converged
    names = [e[0] for e in g.branch_elements()]
    assert "line.tie" not in names and "line.spare" not in names
    with pytest.raises(FeederError, match=r"loop through buses .*890.*840|840.*890"):
        OpenDSSGrid(commands=ieee34.dss_commands() + [tie])


# ---------------------------------------------------------------- apply()
def _old_dispatch(grid, x, gen=None):
    """The path used before apply(): a (loads x buses) map, set_loads_kw, set_generators_kw."""
    topo = grid.topology
    M = np.zeros((len(grid.load_names), len(topo.buses)))
    for b, idx in grid.loads_at_bus.items():
        base = grid.base_load_kw[idx]
        M[idx, topo.bus_index[b]] = base / base.sum() if base.sum() > 0 else 1 / len(idx)
    grid.set_loads_kw(M @ x)
    if gen is not None:
        grid.set_generators_kw(gen)


def test_apply_matches_the_set_loads_kw_path():
    new_g, old_g = OpenDSSGrid.from_feeder("ieee34"), OpenDSSGrid.from_feeder("ieee34")
    for g in (new_g, old_g):  # two engines with the same history: solves comparable bit-wise
        g.add_generator("dg1", "848", kw=0.0, kva=600)
        g.add_generator("DG2", "840", kw=0.0, kva=600)
    assert new_g.added_generators == ["dg1", "DG2"]
    rng = np.random.default_rng(0)
    has = np.array([b in new_g.loads_at_bus for b in new_g.topology.buses])
    for _ in range(5):
        x = np.where(has, new_g.bus_load_kw * rng.uniform(0.3, 1.5, len(has)), 0.0)
        dg = rng.uniform(0, 300, 2)
        new_g.apply(x, dg)
        _old_dispatch(old_g, x, dg)  # generator_names order is added order here
        new, old = new_g.solve(), old_g.solve()
        for a in ("_load_kw", "_load_kvar", "_gen_kw"):
            np.testing.assert_allclose(getattr(new_g, a), getattr(old_g, a), rtol=0, atol=1e-9)
        assert new.substation_kw == pytest.approx(old.substation_kw, abs=1e-9)
        np.testing.assert_allclose(list(new.voltages_pu.values()),
                                   list(old.voltages_pu.values()), rtol=0, atol=1e-9)
        assert new_g._load_kw.sum() == pytest.approx(x.sum(), rel=1e-12)
    # base consumption reproduces the base loads, power factor included
    new_g.apply(new_g.bus_load_kw)
    np.testing.assert_allclose(new_g._load_kw, new_g.base_load_kw, rtol=1e-12)
    np.testing.assert_allclose(new_g._load_kvar, new_g.base_load_kvar, rtol=1e-12, atol=1e-12)


def test_apply_generation_forms_and_cache_rebuild():
    g = OpenDSSGrid.from_feeder("ieee34")
    x = g.bus_load_kw
    g.add_generator("pv", "848", kw=0.0, kva=500)
    g.apply(x, {"pv": 120.0})
    assert g._gen_kw[g.generator_names.index("ogg_pv")] == 120.0
    g.add_storage("bat", "840", kw_rated=100, kwh_rated=200)
    g.add_generator("wind", "890", kw=0.0, kva=500)  # re-index: the maps must follow
    assert g.added_generators == ["pv", "wind"], "batteries are not generators here"
    g.apply(x, {"ogg_wind": 50.0})  # prefixed name accepted; pv keeps its 120 kW
    gen = dict(zip(g.generator_names, g._gen_kw))
    assert gen["ogg_pv"] == 120.0 and gen["ogg_wind"] == 50.0
    g.apply(x, np.array([10.0, 20.0]))  # added_generators order
    gen = dict(zip(g.generator_names, g._gen_kw))
    assert (gen["ogg_pv"], gen["ogg_wind"], gen["ogg_storage_bat"]) == (10.0, 20.0, 0.0)
    g.apply(x * 0.5)  # None: generators unchanged
    assert dict(zip(g.generator_names, g._gen_kw)) == gen
    assert g.solve().converged
    with pytest.raises(ValueError, match="expected 2 values"):
        g.apply(x, np.array([1.0]))
    with pytest.raises(ValueError, match="unknown generator 'sun'.*pv"):
        g.apply(x, {"sun": 1.0})
    with pytest.raises(ValueError, match="generator wind"):
        g.apply(x, {"wind": -1.0})
    clone = pickle.loads(pickle.dumps(g))
    assert clone.added_generators == ["pv", "wind"]
    clone.apply(x, np.array([1.0, 2.0]))


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -5.0])
def test_apply_bad_values_name_the_bus_and_change_nothing(grids, value):
    g = grids["ieee34"]
    g.reset()
    x = g.bus_load_kw
    j = g.topology.bus_index["860"]
    x[j] = value
    before = g._load_kw.copy()
    with pytest.raises(ValueError, match="bus 860"):
        g.apply(x)
    np.testing.assert_array_equal(g._load_kw, before)


def test_apply_consumption_at_a_bus_without_load(grids):
    g = grids["ieee34"]
    x = g.bus_load_kw
    assert "812" not in g.loads_at_bus
    x[g.topology.bus_index["812"]] = 10.0
    with pytest.raises(ValueError, match="bus 812 has no load"):
        g.apply(x)
    with pytest.raises(ValueError, match="expected 37 values"):
        g.apply(x[:-1])


def test_bus_load_kw(grids):
    for g in grids.values():
        load = g.bus_load_kw
        assert load.shape == (len(g.topology.buses),)
        assert load.sum() == pytest.approx(g.base_load_kw.sum())
        for b, idx in g.loads_at_bus.items():
            assert load[g.topology.bus_index[b]] == pytest.approx(g.base_load_kw[idx].sum())
        load[:] = -1  # a copy: the grid's own is untouched
        assert (g.bus_load_kw >= 0).all()


# ---------------------------------------------------------------- placement
def test_placement_doctests():
    topo = Topology.from_elements("s", [
        ("line.a", "s", "b1", 500.0), ("line.b", "b1", "b2", 300.0),
        ("line.c", "b1", "b3", float("inf")), ("line.d", "b3", "b4", 80.0)])
    res = doctest.testmod(placement, extraglobs={"topo": topo,
                                                 "load": [0.0, 0.0, 100.0, 40.0, 30.0]})
    assert res.attempted >= 8 and res.failed == 0


def _five_bus():
    return OpenDSSGrid(FIVE_BUS)


@pytest.mark.parametrize("feeder", ["ieee34", "ieee37", "five_bus"])
def test_placement_rule_on_feeders(grids, feeder):
    g = _five_bus() if feeder == "five_bus" else grids[feeder]
    t, load = g.topology, g.bus_load_kw
    consumers = placement.load_buses(t, load)
    assert set(consumers) == set(g.loads_at_bus)
    assert consumers == [b for b in t.buses if b in g.loads_at_bus]  # topology order
    assert placement.source_bus(t) == t.root == g.buses[0]
    path = placement.main_path(t, load)
    assert path[0] == t.root and not [br for br in t.branches if br.parent == path[-1]]
    for a, b in zip(path, path[1:]):
        assert t.parent_branch[b] == f"{a}-{b}"
    for n in (1, 2, 3, 4):
        dgs = placement.spread_along_main_path(t, load, n)
        assert len(dgs) == n == len(set(dgs)) and t.root not in dgs
        if n <= len(path) - 1:
            assert set(dgs) <= set(path)
            assert dgs[-1] == path[-1]
    limits = placement.default_limits_kw(t)
    finite = {b.name: b.limit_kw for b in t.branches if math.isfinite(b.limit_kw)}
    assert limits == finite


def test_placement_on_five_bus_by_hand():
    g = _five_bus()
    t, load = g.topology, g.bus_load_kw
    assert placement.load_buses(t, load) == ["b2", "b4", "b3", "b5"]
    assert placement.main_path(t, load) == ["sourcebus", "b1", "b2", "b3"]
    assert placement.spread_along_main_path(t, load, 3) == ["b1", "b2", "b3"]
    assert placement.spread_along_main_path(t, load, 5) == ["b1", "b2", "b3", "b4", "b5"]
    with pytest.raises(ValueError, match="only 5 buses"):
        placement.spread_along_main_path(t, load, 6)
    assert placement.default_limits_kw(t)["b4-b5"] == pytest.approx(540.0, rel=1e-3)
    with pytest.raises(ValueError, match="expected 6 values"):
        placement.main_path(t, load[:-1])


# ---------------------------------------------------------------- user feeder
def test_five_bus_compiles_from_anywhere_and_keeps_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    g = OpenDSSGrid(os.path.relpath(FIVE_BUS, tmp_path))
    assert os.getcwd() == str(tmp_path), "compile must not move the process's cwd"
    r = g.solve()
    assert r.converged and r.ok
    v = list(r.voltages_pu.values())
    assert 0.95 <= min(v) and max(v) <= 1.05
    assert 1500 <= g.base_load_kw.sum() <= 2000
    assert len(g.topology.buses) == 6 and g.topology.root == "sourcebus"
    assert set(g.bus_coords) == set(g.topology.buses)
    assert os.getcwd() == str(tmp_path)
    with pytest.raises(FeederError):
        OpenDSSGrid(tmp_path / "missing.dss")
    assert os.getcwd() == str(tmp_path)
