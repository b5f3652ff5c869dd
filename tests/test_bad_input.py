"""Bad input never passes silently, and the environment survives it (every case of the issue
gets a defined outcome: a clear error before any state changes, or a documented repair)."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

import ogg_envs
from ogg_envs.envs import dlmp_v0, p2p_v0, topology_power_v0
from ogg_envs.grid import FeederError, OpenDSSGrid
from ogg_envs.scenario import ScenarioError

SMALL = dict(horizon=2, market_rounds=2)


# ---------------------------------------------------------------------- scenarios
@pytest.mark.parametrize("module,data,match", [
    (dlmp_v0, {"sourc": {}}, "did you mean source"),
    (dlmp_v0, {"loads": {"load_noise": -0.1}}, "load_noise"),
    (dlmp_v0, {"generators": {"buses": ["738"], "capacity_kw": [1.0, 2.0]}}, "one value or 1"),
    (dlmp_v0, {"demand_response": {"cost_b": -1.0}}, ">= 0"),
    (p2p_v0, {"market": {"negotiation_steps": -2}}, "negotiation_steps must be >= 1"),
    (p2p_v0, {"market": {"retail_price": 3.0}}, "lowest arm"),
    (p2p_v0, {"prosumers": {"forecast_error": -1.0}}, "forecast_error"),
    (p2p_v0, {"market": {"mode": "auction"}}, "mode must be one of"),
])
def test_bad_scenarios_name_the_key(module, data, match):
    with pytest.raises(ScenarioError, match=match):
        module.parallel_env(scenario=data)


def test_a_scenario_error_leaves_the_process_alone(tmp_path):
    cwd, opts = os.getcwd(), np.get_printoptions()
    filters = list(warnings.filters)
    with pytest.raises(ScenarioError):
        topology_power_v0.parallel_env(scenario={"grid": {"limit_kw": {}}})
    ogg_envs.make("opengridgym/dlmp-v0", feeder=str(
        os.path.join(os.path.dirname(__file__), "..", "examples", "feeders", "five_bus",
                     "master.dss")))
    assert os.getcwd() == cwd and np.get_printoptions() == opts
    assert list(warnings.filters) == filters


# ---------------------------------------------------------------------- feeders
@pytest.mark.parametrize("text,match", [
    ("", "defines no circuit"),
    ("! only a comment\n// and another\n", "defines no circuit"),
    ("clear\nnew circuit.nb basekv=12.47 pu=1.0 bus1=src\n"
     "new line.l1 bus1=src bus2=b1 phases=3 r1=0.1 x1=0.2 length=1\n"
     "new load.ld1 bus1=b1 phases=3 kv=12.47 kw=500 kvar=100\n", "without a voltage base"),
    ("clear\nnew circuit.isl basekv=12.47 pu=1.0 bus1=src\n"
     "new line.l1 bus1=src bus2=b1 phases=3 r1=0.1 x1=0.2 length=1\n"
     "new load.ld1 bus1=b1 phases=3 kv=12.47 kw=500 kvar=100\n"
     "new load.ld2 bus1=island phases=3 kv=12.47 kw=100 kvar=10\n"
     "set voltagebases=[12.47]\ncalcvoltagebases\n", "not connected to the source"),
])
def test_unusable_feeders_are_refused_naming_the_file(tmp_path, text, match):
    path = tmp_path / "feeder.dss"
    path.write_text(text)
    cwd = os.getcwd()
    with pytest.raises(FeederError, match=match) as err:
        OpenDSSGrid(path)
    assert str(path) in str(err.value) and os.getcwd() == cwd
    with pytest.raises(FeederError, match=match):
        dlmp_v0.parallel_env(feeder=str(path))


# ---------------------------------------------------------------------- AEC
def test_aec_refuses_a_bad_action_on_its_turn_and_the_agent_acts_again():
    env = topology_power_v0.env(**SMALL)
    env.reset(seed=0)
    first = env.agent_selection
    with pytest.raises(ValueError, match=first):
        env.step(np.array([np.nan, 1.0, 1.0, 0.0]))
    assert env.agent_selection == first  # nothing stored, same agent again
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(3))
    for _agent in env.agent_iter():
        _, _, term, trunc, _ = env.last()
        env.step(None if term or trunc else np.array([6.0, 4.0, 100.0, 0.0]))
    with pytest.raises(RuntimeError, match="call reset"):
        env.last()
    with pytest.raises(KeyError, match="unknown agent 'mallory'"):
        env.observe("mallory")
    with pytest.raises(KeyError, match="unknown agent 'mallory'"):
        env.action_space("mallory")
    env.reset(seed=0)
    assert env.agent_selection == first  # usable again


def test_aec_raise_mode_checks_the_bid_on_its_turn():
    env = dlmp_v0.env(invalid_bids="raise", **SMALL)
    env.reset(seed=0)
    agent = env.agent_selection
    with pytest.raises(ValueError, match=agent):
        env.step(np.array([1.0, 2.0, 99.0]))  # above the price cap
    env.step(np.array([1.0, 2.0, 3.0]))
    assert env.agent_selection != agent


# ---------------------------------------------------------------------- parallel
@pytest.mark.parametrize("bad", [["1", "1", "1", "1"], "a", np.array([True, False, True, True]),
                                 np.array([1 + 1j, 1, 1, 1]), [[1, 2], [3]], None, object()])
def test_non_numeric_actions_are_refused_naming_the_agent(bad):
    env = topology_power_v0.parallel_env(**SMALL)
    env.reset(seed=0)
    acts = {a: np.array([6.0, 4.0, 100.0, 0.0]) for a in env.agents}
    acts["supplier_1"] = bad
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no ComplexWarning either: refused before converting
        with pytest.raises(ValueError, match="supplier_1"):
            env.step(acts)
    assert env.cycles == 0


def test_out_of_order_calls_are_refused():
    env = topology_power_v0.parallel_env(**SMALL)
    with pytest.raises(RuntimeError, match="reset"):
        env.step({})
    env.reset(seed=0)
    with pytest.raises(TypeError, match="dict"):
        env.step([np.zeros(4)] * 4)
    while env.agents:
        env.step({a: np.array([6.0, 4.0, 100.0, 0.0]) for a in env.agents})
    assert env.step({}) == ({}, {}, {}, {}, {})  # SuperSuit's one extra call is harmless
    with pytest.raises(RuntimeError, match="episode is over"):
        env.step({"supplier_0": np.zeros(4)})
    p2p = p2p_v0.parallel_env(negotiation_steps=2, horizon=2)
    p2p.reset(seed=0)
    with pytest.raises(ValueError, match="prosumer_0"):
        p2p.step(dict({a: 0 for a in p2p.agents}, prosumer_0=1.5))


# ---------------------------------------------------------------------- markets
def test_a_negative_price_floor_values_spilled_energy_at_the_floor():
    from ogg_envs.grid.topology import Branch, Topology
    from ogg_envs.markets.curve_market import CurveMarket, MarketParticipant

    topo = Topology("a", [Branch("a-b", "a", "b", ("line.x",), float("inf"))])
    parts = [MarketParticipant("s", "a", "supply"), MarketParticipant("d", "b", "demand")]
    market = CurveMarket(topo, parts, price_cap=20.0, price_floor=-5.0)
    # 300 kW must-run; demand worth down to -3 ¢/kWh absorbs all of it: nothing is spilled
    res = market.clear(np.array([[1.0, 1.0, 300.0, 300.0], [10.0, -3.0, 400.0, 0.0]]))
    assert not res.spilled_kw and res.participant_quantities[1] == pytest.approx(300.0)
    # demand stops at 200 kW: 100 kW spilled, and the price is the floor (not minus it)
    res = market.clear(np.array([[1.0, 1.0, 300.0, 300.0], [10.0, 2.0, 200.0, 0.0]]))
    assert res.spilled_kw["a"] == pytest.approx(100.0)
    np.testing.assert_allclose(res.participant_prices, -5.0, atol=1e-6)
    ref = market.clear_cvxpy(np.array([[1.0, 1.0, 300.0, 300.0], [10.0, 2.0, 200.0, 0.0]]))
    np.testing.assert_allclose(ref.participant_prices, -5.0, atol=1e-5)


def test_fuzz_sample_finds_no_undocumented_outcome(capsys):
    """CI's sample of benchmarks/fuzz_bad_input.py (about 10^3 cases)."""
    from benchmarks.fuzz_bad_input import main

    assert main(["--quick"]) == 0, capsys.readouterr().out
    out = capsys.readouterr().out
    assert "undocumented: 0" in out and int(out.split(" cases")[0].replace(",", "")) >= 1000
