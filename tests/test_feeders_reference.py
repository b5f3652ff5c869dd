"""Validate the bundled IEEE 13-, 34-, 37- and 123-node feeders against reference OpenDSS
solutions.

The reference data are the OpenDSS test-case models of the two feeders solved with
OpenDSSDirect.py (``solution.json`` in each feeder's folder). They live outside the project, in
``shared/reference-feeders`` beside the checkout, or wherever ``OGG_REFERENCE_FEEDERS`` points;
the tests that need them are skipped when the folder is missing. Our feeders are built from our
own tables (``ogg_envs.grid.feeders``) and solved with the settings the reference used; every
bus voltage must agree within 0.001 pu.
"""

from __future__ import annotations

import functools
import importlib
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest

odd = pytest.importorskip("opendssdirect")

V_TOL_PU = 1e-3
TAP_STEP = 0.00625


def _import_feeders():
    try:
        return importlib.import_module("ogg_envs.grid.feeders")
    except ModuleNotFoundError:  # package not installed: use the checkout this file lives in
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        return importlib.import_module("ogg_envs.grid.feeders")


feeders = _import_feeders()


def _reference_dir() -> Path:
    env = os.environ.get("OGG_REFERENCE_FEEDERS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "shared" / "reference-feeders"


@functools.cache
def _reference(name: str) -> dict:
    path = _reference_dir() / name / "solution.json"
    if not path.is_file():
        pytest.skip(
            f"reference solution {path} not found: put the reference feeders in "
            f"{_reference_dir()} or point OGG_REFERENCE_FEEDERS at them"
        )
    return json.loads(path.read_text())


def _reference_case(name: str, locked_taps: bool) -> dict:
    ref = _reference(name)
    if not locked_taps:
        return ref
    case = dict(ref["published_taps_case"])
    case.setdefault("solve_settings", ref["solve_settings"])  # IEEE 123: the same settings
    return case


def _bus_name(bus_spec: str) -> str:
    return bus_spec.split(".")[0].lower()


def _compile(name: str, locked_taps: bool = False):
    dss = odd.NewContext()
    for command in feeders.get_feeder(name).dss_commands(locked_taps=locked_taps):
        dss.Text.Command(command)
        if dss.Error.Number():  # pragma: no cover - only on a broken command
            raise AssertionError(f"OpenDSS rejected {command!r}: {dss.Error.Description()}")
    return dss


def _apply_solve_settings(dss, settings: dict) -> None:
    dss.Text.Command(f"set mode={settings['mode']}")
    dss.Text.Command(f"set tolerance={settings['tolerance_pu']}")
    dss.Text.Command(f"set maxiterations={settings['maxiterations']}")
    dss.Text.Command(f"set maxcontroliter={settings['maxcontroliter']}")


def _elements(dss, cls: str) -> list[str]:
    return [n for n in dss.Circuit.AllElementNames() if n.lower().startswith(cls.lower() + ".")]


def _terminal_power(dss, terminal: int = 1) -> tuple[float, float]:
    """kW, kvar into terminal ``terminal`` of the active element."""
    p = np.asarray(dss.CktElement.Powers()).reshape(-1, 2)
    n = dss.CktElement.NumConductors()
    p = p[(terminal - 1) * n : terminal * n]
    return float(p[:, 0].sum()), float(p[:, 1].sum())


def _tap_numbers(dss) -> dict[str, int]:
    taps = {}
    for element in _elements(dss, "Transformer"):
        unit = element.split(".", 1)[1].lower()
        if unit.startswith("reg"):
            dss.Transformers.Name(unit)
            dss.Transformers.Wdg(2)
            taps[unit] = round((dss.Transformers.Tap() - 1.0) / TAP_STEP)
    return taps


@functools.cache
def _solved(name: str, locked_taps: bool) -> dict:
    """Build our feeder, solve it with the reference settings and collect the results."""
    ref_case = _reference_case(name, locked_taps)
    dss = _compile(name, locked_taps)
    _apply_solve_settings(dss, ref_case["solve_settings"])
    dss.Solution.Solve()

    ln = dict(zip(dss.Circuit.AllNodeNames(), dss.Circuit.AllBusMagPu(), strict=True))
    ll = {}
    for bus in dss.Circuit.AllBusNames():
        dss.Circuit.SetActiveBus(bus)
        nodes = list(dss.Bus.Nodes())
        if sorted(nodes) != [1, 2, 3]:
            continue
        v = np.asarray(dss.Bus.Voltages()).reshape(-1, 2)
        v = dict(zip(nodes, v[:, 0] + 1j * v[:, 1], strict=True))
        base_ll = dss.Bus.kVBase() * 1000.0 * math.sqrt(3.0)
        ll[bus] = [abs(v[i] - v[j]) / base_ll for i, j in ((1, 2), (2, 3), (3, 1))]

    loads_by_bus: dict[str, np.ndarray] = {}
    load_nominal = np.zeros(2)
    for element in _elements(dss, "Load"):
        dss.Circuit.SetActiveElement(element)
        bus = _bus_name(dss.CktElement.BusNames()[0])
        loads_by_bus[bus] = loads_by_bus.get(bus, np.zeros(2)) + _terminal_power(dss)
        dss.Loads.Name(element.split(".", 1)[1])
        load_nominal += (dss.Loads.kW(), dss.Loads.kvar())

    line_flows = {}
    for element in _elements(dss, "Line"):
        dss.Circuit.SetActiveElement(element)
        key = tuple(_bus_name(b) for b in dss.CktElement.BusNames())
        line_flows[key] = _terminal_power(dss)

    return {
        "converged": dss.Solution.Converged(),
        "ln": ln,
        "ll": ll,
        "buses": set(dss.Circuit.AllBusNames()),
        "taps": _tap_numbers(dss),
        "losses": np.asarray(dss.Circuit.Losses()) / 1000.0,
        "source": -np.asarray(dss.Circuit.TotalPower()),
        "load_solved": sum(loads_by_bus.values()),
        "load_nominal": load_nominal,
        "loads_by_bus": loads_by_bus,
        "line_flows": line_flows,
        "counts": {
            "n_lines": len(_elements(dss, "Line")),
            "n_loads": len(_elements(dss, "Load")),
            "n_capacitors": len(_elements(dss, "Capacitor")),
            "n_regcontrols": len(_elements(dss, "RegControl")),
            "n_transformers": len(_elements(dss, "Transformer")),
        },
    }


CASES = [
    pytest.param("ieee34", False, id="ieee34-regulators-free"),
    pytest.param("ieee34", True, id="ieee34-published-taps"),
    pytest.param("ieee37", False, id="ieee37-regulators-free"),
    pytest.param("ieee13", False, id="ieee13-regulators-free"),
    pytest.param("ieee123", False, id="ieee123-regulators-free"),
    pytest.param("ieee123", True, id="ieee123-published-taps"),
]
FEEDER_NAMES = ["ieee13", "ieee34", "ieee37", "ieee123"]
HEAD_BUS = {"ieee13": "650", "ieee34": "800", "ieee37": "799", "ieee123": "150"}
SOURCE_BUS = {"ieee13": "sourcebus", "ieee34": "sourcebus", "ieee37": "sourcebus",
              "ieee123": "150"}


def _close(actual, expected, abs_tol: float, rel_tol: float) -> bool:
    actual, expected = np.asarray(actual, float), np.asarray(expected, float)
    return bool(np.all(np.abs(actual - expected) <= abs_tol + rel_tol * np.abs(expected)))


# --------------------------------------------------------------------------------------------
# Agreement with the reference solutions
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "locked_taps"), CASES)
def test_bus_voltages_match_reference(name, locked_taps):
    ref = _reference_case(name, locked_taps)
    ours = _solved(name, locked_taps)
    assert ours["converged"]
    deviations = []  # (|dV| pu, where, ours, reference)
    if feeders.get_feeder(name).DELTA:  # only line-to-line voltages are meaningful
        for bus, data in ref["buses"].items():
            if "V_pu_LL_ab_bc_ca" not in data:
                continue
            assert bus in ours["ll"], f"bus {bus} is missing or not three-phase"
            for pair, mine, theirs in zip(
                ("ab", "bc", "ca"), ours["ll"][bus], data["V_pu_LL_ab_bc_ca"], strict=True
            ):
                deviations.append((abs(mine - theirs), f"{bus}.{pair}", mine, theirs))
    else:
        for bus, data in ref["buses"].items():
            for node, theirs in zip(data["nodes"], data["V_pu_LN"], strict=True):
                node_name = f"{bus}.{node}"
                assert node_name in ours["ln"], f"node {node_name} is missing"
                mine = ours["ln"][node_name]
                deviations.append((abs(mine - theirs), node_name, mine, theirs))
    assert len(deviations) >= 40  # every node (IEEE 13 has 41; the others far more)
    deviations.sort(key=lambda d: d[0], reverse=True)
    worst = deviations[0]
    print(f"{name} locked_taps={locked_taps}: max |dV| = {worst[0]:.2e} pu at {worst[1]}")
    detail = ", ".join(f"{w}: {m:.6f} vs {t:.6f}" for _, w, m, t in deviations[:5])
    assert worst[0] <= V_TOL_PU, (
        f"max voltage deviation {worst[0]:.5f} pu at {worst[1]} exceeds {V_TOL_PU} pu "
        f"(worst: {detail})"
    )


@pytest.mark.parametrize(("name", "locked_taps"), CASES)
def test_regulator_taps_match_reference(name, locked_taps):
    ref = _reference_case(name, locked_taps)
    assert _solved(name, locked_taps)["taps"] == ref["regulator_tap_numbers"]


@pytest.mark.parametrize(("name", "locked_taps"), CASES)
def test_losses_and_source_power_match_reference(name, locked_taps):
    ref = _reference_case(name, locked_taps)
    ours = _solved(name, locked_taps)
    for key, ref_key in (("losses", "total_losses_kW_kvar"), ("source", "source_power_kW_kvar")):
        if ref_key not in ref:  # IEEE 123's locked-tap case publishes voltages and taps only
            continue
        assert _close(ours[key], ref[ref_key], abs_tol=0.5, rel_tol=1e-3), (
            f"{key}: ours {ours[key]} kW/kvar, reference {ref[ref_key]}"
        )


@pytest.mark.parametrize("name", FEEDER_NAMES)
def test_bus_set_and_element_counts_match_reference(name):
    ref = _reference(name)
    ours = _solved(name, False)
    assert ours["buses"] == {b.lower() for b in ref["buses"]}
    for key, count in ours["counts"].items():
        assert count == ref[key], f"{key}: ours {count}, reference {ref[key]}"


@pytest.mark.parametrize("name", FEEDER_NAMES)
def test_total_load_matches_reference(name):
    ref = _reference(name)
    ours = _solved(name, False)
    assert _close(ours["load_nominal"], ref["load_total_nominal_kW_kvar"], 1e-6, 0.0), (
        f"nominal load {ours['load_nominal']} vs {ref['load_total_nominal_kW_kvar']}"
    )
    assert _close(ours["load_solved"], ref["load_total_solved_kW_kvar"], 0.5, 1e-3), (
        f"solved load {ours['load_solved']} vs {ref['load_total_solved_kW_kvar']}"
    )


@pytest.mark.parametrize("name", FEEDER_NAMES)
def test_load_per_bus_matches_reference(name):
    ref = _reference(name)
    ours = _solved(name, False)["loads_by_bus"]
    expected: dict[str, np.ndarray] = {}
    for load in ref["loads"]:
        bus = _bus_name(load["bus"])
        expected[bus] = expected.get(bus, np.zeros(2)) + (load["kW"], load["kvar"])
    assert set(ours) == set(expected)
    assert set(ours) == set(feeders.get_feeder(name).LOAD_BUSES)
    bad = {
        bus: (ours[bus].round(3).tolist(), expected[bus].round(3).tolist())
        for bus in expected
        if not _close(ours[bus], expected[bus], abs_tol=0.05, rel_tol=1e-3)
    }
    assert not bad, f"solved kW/kvar per load bus (ours, reference): {bad}"


@pytest.mark.parametrize("name", FEEDER_NAMES)
def test_line_flows_match_reference(name):
    ref = _reference(name)
    ours = _solved(name, False)["line_flows"]
    expected = {}
    for branch, data in ref["branches"].items():
        if branch.lower().startswith("line."):
            key = (_bus_name(data["bus1"]), _bus_name(data["bus2"]))
            expected[key] = (sum(data["kW_term1"]), sum(data["kvar_term1"]))
    assert set(ours) == set(expected)
    bad = {
        key: (np.round(ours[key], 2).tolist(), np.round(expected[key], 2).tolist())
        for key in expected
        if not _close(ours[key], expected[key], abs_tol=0.5, rel_tol=2e-3)
    }
    assert not bad, f"kW/kvar into each line (ours, reference): {bad}"


# --------------------------------------------------------------------------------------------
# Feeder module API (no reference data needed)
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", FEEDER_NAMES)
def test_feeder_module_api(name):
    feeder = feeders.get_feeder(name)
    assert feeders.FEEDERS[name] is feeder
    assert feeder.NAME == name
    assert isinstance(feeder.DELTA, bool) and feeder.DELTA == (name == "ieee37")
    assert feeder.SOURCE_BUS == SOURCE_BUS[name]
    assert feeder.FEEDER_HEAD_BUS == HEAD_BUS[name]
    commands = feeder.dss_commands()
    assert commands[0].lower() == "clear"
    assert commands[-2].lower().startswith("set voltagebases=")
    assert commands[-1].lower() == "calcvoltagebases"
    assert not any(c.lower().startswith(("solve", "buscoords")) for c in commands)
    assert feeder.LOAD_BUSES == sorted(set(feeder.LOAD_BUSES))


def test_get_feeder_rejects_unknown_names():
    with pytest.raises(ValueError, match="ieee123, ieee13, ieee34, ieee37"):
        feeders.get_feeder("ieee8500")


def test_ieee34_locked_taps_add_published_taps():
    commands = feeders.ieee34.dss_commands(locked_taps=True)
    assert "set controlmode=off" in commands
    assert len(commands) == len(feeders.ieee34.dss_commands()) + 7
    with pytest.raises(ValueError):
        feeders.ieee37.dss_commands(locked_taps=True)


@pytest.mark.parametrize("name", FEEDER_NAMES)
def test_load_names_start_with_their_bus(name):
    dss = _compile(name)
    load_buses = set()
    for element in _elements(dss, "Load"):
        dss.Circuit.SetActiveElement(element)
        bus = _bus_name(dss.CktElement.BusNames()[0])
        assert element.split(".", 1)[1].split("_")[0] == bus, element
        load_buses.add(bus)
    assert sorted(load_buses) == feeders.get_feeder(name).LOAD_BUSES


def _segments_cross(p1, p2, q1, q2) -> bool:
    """Whether segments p1-p2 and q1-q2 intersect or overlap (shared end points excepted)."""
    p1, p2, q1, q2 = (np.asarray(p, float) for p in (p1, p2, q1, q2))

    def orient(a, b, c):
        cross = (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
        return float(np.sign(round(cross, 12)))

    def on_segment(a, b, c):  # c on segment a-b, c not an end point of it
        inside = np.all(np.minimum(a, b) <= c) and np.all(c <= np.maximum(a, b))
        return bool(inside) and not (np.allclose(c, a) or np.allclose(c, b))

    shared = [(a, b) for a in (p1, p2) for b in (q1, q2) if np.allclose(a, b)]
    o1, o2, o3, o4 = orient(p1, p2, q1), orient(p1, p2, q2), orient(q1, q2, p1), orient(q1, q2, p2)
    if shared:  # joined at a bus: only a collinear overlap counts
        return o1 == o2 == 0 and (
            on_segment(p1, p2, q1)
            or on_segment(p1, p2, q2)
            or on_segment(q1, q2, p1)
            or on_segment(q1, q2, p2)
        )
    if o1 != o2 and o3 != o4 and 0 not in (o1, o2, o3, o4):
        return True
    return (
        (o1 == 0 and on_segment(p1, p2, q1))
        or (o2 == 0 and on_segment(p1, p2, q2))
        or (o3 == 0 and on_segment(q1, q2, p1))
        or (o4 == 0 and on_segment(q1, q2, p2))
    )


@pytest.mark.parametrize("name", FEEDER_NAMES)
def test_bus_coordinates_draw_a_clean_one_line_diagram(name):
    feeder = feeders.get_feeder(name)
    dss = _compile(name)
    coords = {bus.lower(): xy for bus, xy in feeder.BUS_COORDS.items()}
    assert set(coords) == set(dss.Circuit.AllBusNames())
    assert len(set(coords.values())) == len(coords), "two buses share a position"
    edges = set()
    for element in dss.Circuit.AllElementNames():
        dss.Circuit.SetActiveElement(element)
        buses = {_bus_name(b) for b in dss.CktElement.BusNames()}
        if len(buses) == 2 and not element.lower().startswith("vsource."):
            edges.add(tuple(sorted(buses)))
    edges = sorted(edges)
    crossings = [
        (e, f)
        for i, e in enumerate(edges)
        for f in edges[i + 1 :]
        if _segments_cross(coords[e[0]], coords[e[1]], coords[f[0]], coords[f[1]])
    ]
    assert not crossings, f"branches drawn across each other: {crossings}"


@pytest.mark.parametrize("name", FEEDER_NAMES)
def test_write_dss_compiles_to_the_same_feeder(name, tmp_path, monkeypatch):
    feeder = feeders.get_feeder(name)
    master = feeder.write_dss(tmp_path / name)
    assert master == tmp_path / name / "master.dss"
    assert (tmp_path / name / "buscoords.csv").is_file()
    monkeypatch.chdir(tmp_path)  # OpenDSS `compile` changes the working directory
    from_file = odd.NewContext()
    from_file.Text.Command(f"compile [{master}]")
    from_file.Solution.Solve()
    direct = _compile(name)
    direct.Solution.Solve()
    assert from_file.Circuit.AllNodeNames() == direct.Circuit.AllNodeNames()
    np.testing.assert_allclose(
        from_file.Circuit.AllBusMagPu(), direct.Circuit.AllBusMagPu(), atol=1e-9
    )
    from_file.Circuit.SetActiveBus(feeder.FEEDER_HEAD_BUS)
    assert from_file.Bus.Coorddefined()
    assert (from_file.Bus.X(), from_file.Bus.Y()) == pytest.approx(
        feeder.BUS_COORDS[feeder.FEEDER_HEAD_BUS]
    )
