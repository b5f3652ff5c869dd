"""The grid step's shortcuts give the general paths' answers, bit for bit: the report's loading
and overloads (limits of 0, a failed power flow), the worst violation per bus computed from a
result's arrays, the cached generator rows of ``apply`` and the result buffers' copies."""

from __future__ import annotations

import math

import numpy as np
import pytest

import ogg_envs
from ogg_envs.grid import OpenDSSGrid
from ogg_envs.grid.opendss import PowerFlowResult, _worst_of, _worst_per_bus


def _loading_as_before(flow_kw: np.ndarray, limit_kw: np.ndarray) -> np.ndarray:
    """The report's loading as it was computed before the shortcut (one np.where)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(limit_kw > 0, np.abs(flow_kw) / limit_kw,
                        np.where(np.abs(flow_kw) > 1e-9, math.inf, 0.0))


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@pytest.mark.parametrize("env_id", ["opengridgym/topology-power-v0", "opengridgym/dlmp-v0"])
def test_report_loading_and_overloads_with_zero_limits_and_a_failed_flow(env_id):
    env = ogg_envs.make(env_id, parallel=True)
    u = env.unwrapped
    env.reset(seed=0)
    while not u.last_grid_report:
        env.step({a: env.action_space(a).sample() for a in env.agents})
    limits = np.asarray(u.market.limits_kw, dtype=float)
    finite = np.flatnonzero(np.isfinite(limits))
    limits[finite[:3]] = 0.0  # limited to nothing: inf if anything flows
    limits[finite[3]] = 1e-3  # far over its limit: overloaded
    u.market.set_limits(limits)
    pf = u.last_power_flow
    rep = u.grid_report(pf)
    assert np.isinf(rep.loading[:3]).all()  # power flows through them
    assert _same(rep.loading, _loading_as_before(rep.flow_kw, rep.limit_kw))
    assert rep.overloaded == tuple(b for b, x in zip(rep.branches, rep.loading.tolist())
                                   if x > 1 + u.ac_tol)
    assert rep.branches[3] in rep.overloaded
    failed = u.grid._failed_result("a failed power flow")
    rep = u.grid_report(failed)
    assert np.isnan(rep.flow_kw).all() and np.isnan(rep.market_flow_kw).all()
    assert _same(rep.loading, _loading_as_before(rep.flow_kw, rep.limit_kw))
    assert rep.overloaded == () and (rep.loading[:3] == 0.0).all()


def test_report_without_limits_has_empty_branch_arrays():
    env = ogg_envs.make("opengridgym/p2p-v0", parallel=True)
    u = env.unwrapped
    env.reset(seed=0)
    while not u.last_grid_report:
        env.step({a: env.action_space(a).sample() for a in env.agents})
    for pf in (u.last_power_flow, u.grid._failed_result("failed")):
        rep = u.grid_report(pf)
        assert rep.branches == () and rep.overloaded == ()
        for arr, dtype in ((rep.flow_kw, float), (rep.flow_kvar, float),
                           (rep.apparent_kva, float), (rep.market_flow_kw, float),
                           (rep.loading, float), (rep.limit_kw, float)):
            assert arr.shape == (0,) and arr.dtype == dtype


@pytest.mark.parametrize("feeder", ["ieee34", "ieee37"])
def test_worst_violation_per_bus_from_arrays_is_the_dict_loop(feeder):
    """``bus_voltage_violations`` of a solve's result (from its arrays) is the general
    ``_worst_per_bus`` of its ``voltage_violations``: same buses, order and values."""
    g = OpenDSSGrid.from_feeder(feeder)
    rng = np.random.default_rng(2)
    seen = 0
    for _ in range(8):
        g.scale_loads(rng.uniform(0.1, 2.5, len(g.load_names)))
        pf = g.solve()
        fast = pf.bus_voltage_violations()
        general = PowerFlowResult.bus_voltage_violations(pf)
        assert list(fast.items()) == list(general.items())
        seen += len(fast)
    assert seen  # some solves violate the band


def test_worst_of_keeps_the_first_node_on_a_tie_and_nan():
    buses = ["a", "b", "b", "c", "c", "c"]
    values = [1.0, 0.75, 1.25, 1.5, 0.5, math.nan]
    names = ["a.1", "b.1", "b.2", "c.1", "c.2", "c.3"]
    assert _worst_of(buses, values) == {"a": 1.0, "b": 0.75, "c": 1.5}
    assert _worst_of(buses, values) == _worst_per_bus(dict(zip(names, values)))
    first_nan = _worst_of(["a", "a"], [math.nan, 0.5])
    assert math.isnan(first_nan["a"])
    assert _worst_of(["a", "a"], [0.5, math.nan]) == {"a": 0.5}


def test_apply_by_name_caches_rows_but_not_values_or_errors():
    g = OpenDSSGrid.from_feeder("ieee34")
    g.add_generator("pv1", "840", 0.0, kva=500.0)
    g.add_generator("pv2", "860", 0.0, kva=500.0)
    x = np.zeros(len(g.topology.buses))
    g.apply(x, {"pv1": 10.0, "pv2": 20.0})
    assert (g.generator_kw["ogg_pv1"], g.generator_kw["ogg_pv2"]) == (10.0, 20.0)
    g.apply(x, {"pv1": 11.0, "pv2": 21.0})  # the cached rows, new values
    assert (g.generator_kw["ogg_pv1"], g.generator_kw["ogg_pv2"]) == (11.0, 21.0)
    g.apply(x, {"pv2": 5.0, "OGG_PV1": 6.0})  # another order and spelling
    assert (g.generator_kw["ogg_pv1"], g.generator_kw["ogg_pv2"]) == (6.0, 5.0)
    with pytest.raises(ValueError, match="unknown generator 'pv3'"):
        g.apply(x, {"pv2": 1.0, "pv3": 1.0})
    with pytest.raises(ValueError, match="generator pv2: kW must be finite"):
        g.apply(x, {"pv2": -1.0, "OGG_PV1": 6.0})
    assert (g.generator_kw["ogg_pv1"], g.generator_kw["ogg_pv2"]) == (6.0, 5.0)
    g.add_generator("pv3", "848", 0.0, kva=500.0)  # a new index: rows found again
    g.apply(x, {"pv3": 7.0, "pv2": 8.0})
    assert (g.generator_kw["ogg_pv3"], g.generator_kw["ogg_pv2"]) == (7.0, 8.0)


def test_result_buffer_copies_are_opendssdirects_numbers():
    g = OpenDSSGrid.from_feeder("ieee37")
    g.scale_loads(1.3)
    g.solve()
    dss = g.dss
    vmag, volts, powers, pct, losses, total = g._arrays.solution()
    assert vmag.tolist() == dss.Circuit.AllBusMagPu()
    assert volts.tolist() == dss.Circuit.AllBusVolts()
    assert powers.tolist() == dss.PDElements.AllPowers()
    assert pct.tolist() == dss.PDElements.AllPctNorm(False)
    assert losses.tolist() == dss.Circuit.Losses()
    assert total.tolist() == dss.Circuit.TotalPower()
    again = g._arrays.solution()
    assert again[0] is not vmag and again[0].tolist() == vmag.tolist()  # fresh arrays
