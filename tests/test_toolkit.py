"""The composable toolkit: any market on any feeder, typed scenarios, the registry, composed
environments and the Simulation interface, and the rule that nothing reads private state."""

from __future__ import annotations

import ast
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from pz_conformance import run_all

import ogg_envs
from ogg_envs.envs import dlmp_v0, p2p_v0, topology_power_v0
from ogg_envs.grid import OpenDSSGrid
from ogg_envs.markets.curve_market import CurveMarket
from ogg_envs.scenario import ScenarioError, bundled_dir, load_scenario, parse_section
from ogg_envs.simulation import ComposedEnv, GridStepLog, Simulation, standard_participants

ROOT = Path(__file__).resolve().parents[1]
FIVE_BUS = str(ROOT / "examples" / "feeders" / "five_bus" / "master.dss")
MODULES = {"topology-power": topology_power_v0, "dlmp": dlmp_v0, "p2p": p2p_v0}


class _Module:
    """An env module with fixed keyword arguments (for the PettingZoo test helpers)."""

    def __init__(self, module, **kwargs):
        self.module, self.kwargs = module, kwargs

    def env(self, **kw):
        return self.module.env(**self.kwargs, **kw)

    def parallel_env(self, **kw):
        return self.module.parallel_env(**self.kwargs, **kw)


@pytest.mark.parametrize("feeder", ["ieee34", "ieee37", FIVE_BUS])
@pytest.mark.parametrize("market", list(MODULES))
def test_every_market_on_every_feeder_passes_pettingzoo(market, feeder):
    module = MODULES[market]
    run_all(_Module(module, feeder=feeder), horizon=3, **(
        {"negotiation_steps": 2} if market == "p2p" else {"market_rounds": 2}))
    env = module.parallel_env(feeder=feeder, horizon=3)
    env.reset(seed=1)
    while env.agents:
        _, _, _, _, infos = env.step({a: env.action_space(a).sample() for a in env.agents})
    assert all(info["converged"] for info in infos.values())
    assert env.last_power_flow.converged and env.last_clearing is not None
    buses = set(env.topology.buses)
    assert {p.bus for p in env.participants} <= buses


def test_default_placement_follows_the_documented_rule():
    from ogg_envs.grid import placement

    env = topology_power_v0.parallel_env(feeder="ieee37")
    topo, load = env.topology, env.grid.bus_load_kw
    assert env.participant["substation_0"].bus == topo.root
    main = placement.main_path(topo, load)
    assert all(p.bus in main for p in env.participants if p.group == "supplier")
    assert sorted(p.bus for p in env.consumers) == sorted(placement.load_buses(topo, load))
    # no scenario limits on another feeder: the thermal limits
    expected = placement.default_limits_kw(topo)
    limits = env.market.limits_kw
    for name, kw in expected.items():
        assert limits[topo.branch_index[name]] == pytest.approx(kw)


def test_feeder_path_is_the_callers_and_the_process_is_unchanged(tmp_path):
    cwd = os.getcwd()
    shutil.copytree(Path(FIVE_BUS).parent, tmp_path / "mine")
    os.chdir(tmp_path)
    try:
        env = dlmp_v0.parallel_env(feeder="mine/master.dss", horizon=2)
        assert os.getcwd() == str(tmp_path)
        env.reset(seed=0)
        assert env.grid.solve().converged
    finally:
        os.chdir(cwd)


def test_a_grid_object_is_a_feeder_too():
    grid = OpenDSSGrid(FIVE_BUS)
    env = dlmp_v0.parallel_env(feeder=grid, horizon=2)
    assert env.grid is grid and env.default_placement


# ---------------------------------------------------------------------- typed scenarios
@pytest.mark.parametrize("data,match", [
    ({"grid": {"limit_kw": {}}}, "did you mean limits_kw"),
    ({"consumers": {"flexible_shar": 0.1}}, "did you mean flexible_share"),
    ({"suppliers": {"cost_nosie": 0.1}}, "did you mean cost_noise"),
    ({"price_cpa": 3.0}, "did you mean price_cap"),
    ({"suppliers": {"buses": ["822", "840"], "cost_a": [3.0, 3.1, 3.2]}},
     "expected one value or 2"),
    ({"suppliers": {"capacity_kw": -5.0}}, ">= 0"),
    ({"consumers": {"value_max": [15.0, 11.0]}}, "low <= high"),
    ({"consumers": {"flexible_share": "many"}}, "must be a number"),
    ({"grid": {"rating_scale": 0.0}}, "rating_scale must be > 0"),
])
def test_bad_scenarios_are_refused_naming_the_key(data, match):
    with pytest.raises(ScenarioError, match=match):
        topology_power_v0.parallel_env(scenario=data)


def test_missing_required_key_is_named():
    @dataclass
    class Section:
        bus: str
        kw: float = 1.0

    with pytest.raises(ScenarioError, match="missing key 'bus'"):
        parse_section(Section, {"kw": 2.0}, "[thing]")


def test_constructor_arguments_override_the_scenario():
    env = topology_power_v0.parallel_env(flexible_share=0.5)
    assert env.scenario.consumers.flexible_share == 0.5
    env = p2p_v0.parallel_env(negotiation_steps=4, retail_price=13.0)
    assert env.market_rounds == 4 and env.scenario.market.retail_price == 13.0
    assert env.rules["retail_price"] == 13.0
    with pytest.raises(TypeError, match="flexible_shar"):
        topology_power_v0.parallel_env(flexible_shar=0.5)


def test_a_copied_bundled_scenario_keeps_working(tmp_path):
    shutil.copy(bundled_dir() / "dlmp.toml", tmp_path / "mine.toml")
    sc = load_scenario(tmp_path / "mine.toml", dlmp_v0.DLMPScenario)
    env = dlmp_v0.parallel_env(scenario=str(tmp_path / "mine.toml"), horizon=2)
    assert sc.grid.limits_kw and env.profiles["hour"].size == 24
    sc = load_scenario({"profiles": "day_profiles"}, dlmp_v0.DLMPScenario)
    with pytest.raises(ScenarioError, match="no bundled profile set 'no_such_set'"):
        dlmp_v0.parallel_env(scenario={"profiles": "no_such_set"})


# ---------------------------------------------------------------------- registry
def test_one_registry_for_make_pettingzoo_and_tools():
    import pettingzoo

    spec = ogg_envs.register("test/topology-copy-v0", topology_power_v0.raw_env, codec="curve",
                             policies=ogg_envs.spec("opengridgym/topology-power-v0").policies,
                             baselines=("truthful",), replace=True)
    par = pettingzoo.make("parallel", "test/topology-copy-v0", horizon=2)
    assert par.possible_agents == ogg_envs.make("opengridgym/topology-power-v0",
                                                parallel=True).possible_agents
    assert ogg_envs.env_module("test/topology-copy-v0") is topology_power_v0
    assert spec.baselines == ("truthful",)
    with pytest.raises(ValueError, match="already registered"):
        ogg_envs.register("test/topology-copy-v0", topology_power_v0.raw_env)
    with pytest.raises(ValueError, match="not among the policies"):
        ogg_envs.register("test/other-v0", topology_power_v0.raw_env, baselines=("nope",))


# ---------------------------------------------------------------------- composition
def test_composed_environment_and_simulation_with_callbacks():
    grid = OpenDSSGrid(FIVE_BUS)
    env = ComposedEnv(grid, lambda topo, parts: CurveMarket(topo, parts, price_cap=20.0),
                      standard_participants(grid, n_suppliers=2), horizon=24)
    log = GridStepLog()
    Simulation(env, callbacks=[log]).run(seed=0)
    assert len(log.rows) == 24 and all(r["converged"] for r in log.rows)
    prices = [r["avg_consumer_price"] for r in log.rows]
    assert all(3.0 <= p <= 20.0 for p in prices)
    # the consumers follow the residential profile: more is served at the evening peak
    imported = [r["substation_kw"] for r in log.rows]
    assert max(imported) > 1.5 * min(imported)


def test_simulation_drives_a_registered_env_through_its_policies():
    env = ogg_envs.make("opengridgym/dlmp-v0", parallel=True, horizon=3)
    log = GridStepLog()
    Simulation(env, [log]).run(seed=2)
    assert len(log.rows) == 3
    again = GridStepLog()
    Simulation(ogg_envs.make("opengridgym/dlmp-v0", parallel=True, horizon=3), [again]).run(2)
    assert [r["welfare_usd"] for r in log.rows] == [r["welfare_usd"] for r in again.rows]


# ---------------------------------------------------------------------- public API only
_OWNERS = ("ogg_envs/envs/", "ogg_envs/core.py", "ogg_envs/markets/", "ogg_envs/grid/",
           "ogg_envs/simulation.py", "ogg_envs/scenario.py", "ogg_envs/registry.py")


def _private_reads(path: Path) -> list[str]:
    """``x._name`` where ``x`` is not ``self``/``cls`` (and ``_name`` is not a dunder)."""
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") \
                and not node.attr.startswith("__"):
            base = node.value
            if isinstance(base, ast.Name) and base.id in ("self", "cls", "np", "os", "sys"):
                continue
            if isinstance(base, ast.Call):  # super()._x
                continue
            out.append(f"{path.relative_to(ROOT)}:{node.lineno} .{node.attr}")
    return out


def test_no_module_outside_an_env_reads_private_attributes():
    files = [p for folder in ("ogg_envs", "wrappers", "baselines", "benchmarks", "examples")
             for p in (ROOT / folder).rglob("*.py")]
    offenders = []
    for path in files:
        rel = str(path.relative_to(ROOT))
        if rel.startswith(_OWNERS):
            continue
        offenders += _private_reads(path)
    assert not offenders, "\n".join(offenders)


def test_pay_as_bid_example_is_a_registered_market():
    from pettingzoo.test import parallel_api_test

    import examples.pay_as_bid as example

    env = ogg_envs.make("examples/pay-as-bid-v0", parallel=True, horizon=2)
    parallel_api_test(env, num_cycles=10)
    env.reset(seed=0)
    acts = {a: np.array([6.0, 5.0, 500.0, 0.0]) for a in env.agents}
    _, rewards, _, _, infos = env.step(acts)
    c = env.last_clearing
    sup = env.is_supply
    q = c.participant_quantities
    # budget balance: consumers pay exactly what suppliers are paid
    paid = float(c.participant_prices[~sup] @ q[~sup])
    received = float(c.participant_prices[sup] @ q[sup])
    assert paid == pytest.approx(received, rel=1e-9)
    assert isinstance(env.market, example.PayAsBidMarket)


def test_the_building_blocks_implement_the_public_interfaces():
    from ogg_envs.api import Clearing, Grid, Market

    for module in MODULES.values():
        env = module.parallel_env(horizon=2)
        assert isinstance(env.grid, Grid) and isinstance(env.market, Market)
        env.reset(seed=0)
        env.step({a: env.action_space(a).sample() for a in env.agents})
        c = env.last_clearing
        assert isinstance(c, Clearing) and c.participants == tuple(env.names)
        assert c.participant_prices.shape == c.participant_quantities.shape == (len(env.names),)
        with pytest.raises(AttributeError):
            env.last_clearing = None  # read-only
    env = topology_power_v0.parallel_env(horizon=2)
    with pytest.raises(KeyError, match="unknown agent 'mallory'"):
        env.action_space("mallory")


@pytest.mark.parametrize("module", list(MODULES.values()))
def test_a_reused_instance_replays_a_seed_exactly(module):
    """Same seed, same trajectory, whatever the instance did before (markets reset their
    solvers' warm starts with the episode)."""
    def episode(env, seed, rng=None):
        env.reset(seed=seed)
        out = []
        while env.agents:
            acts = {}
            for a in env.agents:
                sp = env.action_space(a)
                if hasattr(sp, "n"):
                    acts[a] = int(rng.integers(sp.n)) if rng is not None else sp.n - 1
                else:
                    acts[a] = rng.uniform(sp.low, sp.high) if rng is not None else sp.high
            _, rewards, _, _, infos = env.step(acts)
            out.append([rewards[a] for a in env.possible_agents])
        return np.array(out)

    kw = {"horizon": 6}
    fresh = episode(module.parallel_env(**kw), 5)
    used = module.parallel_env(**kw)
    rng = np.random.default_rng(0)
    for seed in range(3):
        episode(used, seed, rng)
    np.testing.assert_array_equal(episode(used, 5), fresh)


def test_grids_hand_their_engines_back():
    """opendssdirect never frees an engine context (about 2 MB each); grids that are gone
    hand theirs to the next grid, so building many keeps memory flat."""
    import gc

    def rss_mb() -> float:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024

    for _ in range(5):
        OpenDSSGrid.from_feeder("ieee34")
    gc.collect()
    before = rss_mb()
    for _ in range(60):
        env = topology_power_v0.parallel_env(horizon=1)
        env.reset(seed=0)
        del env
    gc.collect()
    assert rss_mb() - before < 40.0  # ~120 MB if every grid kept its engine


def test_real_action_accepts_finite_reals_and_names_the_agent_otherwise():
    from ogg_envs.core import real_action

    for given in (np.array([1.0, 2.0], dtype=np.float32), np.array([1.0, 2.0]), [1, 2]):
        a = real_action("x_0", given, (2,), "two prices")
        assert a.dtype == np.float64 and a.tolist() == [1.0, 2.0] and a is not given
    big = np.array([1.7e308, 1.7e308])  # finite, though their sum is not
    assert real_action("x_0", big, (2,), "two prices").tolist() == big.tolist()
    for bad in (np.nan, np.inf, -np.inf):
        for dtype in (np.float32, np.float64):
            with pytest.raises(ValueError, match="x_0: action has non-finite numbers"):
                real_action("x_0", np.array([1.0, bad], dtype=dtype), (2,), "two prices")
    with pytest.raises(ValueError, match="x_0: action must have shape"):
        real_action("x_0", np.zeros(3), (2,), "two prices")
    with pytest.raises(ValueError, match="x_0: action must be real numbers"):
        real_action("x_0", np.array([True, False]), (2,), "two prices")


def test_real_rows_are_real_action_row_by_row_or_nothing():
    """``real_rows`` (a scripted batch's decode) gives each row exactly what ``real_action``
    returns for it, and None whenever ``real_action`` would refuse a row (or the rows do not
    make one array of the expected count and shape)."""
    from ogg_envs.core import real_action, real_rows

    good = [np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32), [[1, 2], [3, 4]],
            np.array([[1.7e308, -1.7e308], [0.0, -0.0]])]
    for given in good:
        for shape in ((2,), None):
            rows = real_rows(given, 2, shape)
            assert [r.dtype for r in rows] == [np.float64, np.float64]
            for row, one in zip(rows, given):
                assert row.tobytes() == real_action("x_0", np.asarray(one), (2,), "p").tobytes()
    bad = [np.array([[1.0, np.nan], [1.0, 2.0]]), np.array([[1.0, 2.0], [np.inf, 2.0]]),
           np.array([[True, False], [True, True]]), [[1.0, 2.0], [1.0]], [["a", "b"], ["c", "d"]],
           np.zeros((3, 2)), np.zeros((2, 3)),
           [np.array([True, False]), np.array([1.0, 2.0])]]  # real_action refuses the first
    for given in bad:
        assert real_rows(given, 2, (2,)) is None, given
    assert real_rows(np.zeros((2, 3)), 2, None) is not None  # any one shape, when not given


def test_dispatch_is_kw_as_floats_even_when_nobody_consumes():
    env = ogg_envs.make("opengridgym/topology-power-v0", parallel=True)
    env.reset(seed=0)
    env.step({a: env.action_space(a).sample() for a in env.agents})
    raw = env.unwrapped
    consumption, generation = raw.dispatch(raw.last_clearing)
    assert consumption.dtype == float and consumption.sum() > 0 and generation
    raw._demand_rows, raw._demand_buses = raw._demand_rows[:0], raw._demand_buses[:0]
    consumption, _ = raw.dispatch(raw.last_clearing)  # a market of suppliers only
    assert consumption.dtype == float and not consumption.any()


# ---------------------------------------------------------------------- invalid bids
def _composed(invalid_bids="repair", market=None, horizon=24):
    import gymnasium

    grid = OpenDSSGrid(FIVE_BUS)
    market = market or (lambda topo, parts: CurveMarket(topo, parts, price_cap=20.0))
    return ComposedEnv(grid, market, standard_participants(grid, n_suppliers=2),
                       learners=["supplier"], horizon=horizon, invalid_bids=invalid_bids,
                       action_space=lambda p: gymnasium.spaces.Box(0, 2000, (4,), np.float32))


def test_composed_env_repairs_random_actions_by_the_markets_rule():
    """A learner's random actions (prices far above the cap, ranges reversed) are repaired by
    the curve market's rule, ``Bid.repair`` with the hour's q_now, for a whole episode."""
    from ogg_envs.markets.curve_market import Bid

    env = _composed()
    env.reset(seed=0)
    repaired = 0
    while env.agents:
        acts = {a: env.action_space(a).sample() for a in env.agents}
        q_now = {a: env.participant[a].limits.q_now for a in env.agents}
        _, _, _, _, infos = env.step(acts)
        for a, action in acts.items():
            bid, fixes = Bid.from_array(action).repair(a, 20.0, 0.0, q_now[a])
            assert infos[a].get("bid_repairs") == (fixes or None)
            np.testing.assert_array_equal(env.last_clearing.bids[env.index[a]],
                                          bid.as_array() if fixes else action)
            repaired += bool(fixes)
    assert env.t == 24 and repaired > 40


def test_composed_env_raise_mode_names_the_agent_and_stays_usable():
    from ogg_envs.api import InvalidBidError

    env = _composed("raise", horizon=2)
    env.reset(seed=0)
    good = {a: np.array([6.0, 4.0, 100.0, 0.0]) for a in env.agents}
    with pytest.raises(InvalidBidError, match="supplier_1: bid prices need"):
        env.step(dict(good, supplier_1=np.array([600.0, 4.0, 100.0, 0.0])))
    assert env.cycles == 0 and env.last_clearing is None  # nothing happened
    _, _, _, _, infos = env.step(good)
    assert env.cycles == 1 and not any("bid_repairs" in i for i in infos.values())


def test_a_market_without_repair_says_it_cannot_repair():
    from ogg_envs.api import Market

    class NoRepair(Market):  # a curve market's clearing, without its repair
        def __init__(self, topo, parts):
            self.inner = CurveMarket(topo, parts, price_cap=20.0)
            self.names, self.price_cap = self.inner.names, 20.0

        def clear(self, bids, context=None):
            return self.inner.clear(bids, context)

    env = _composed(market=NoRepair, horizon=2)
    env.reset(seed=0)
    good = {a: np.array([6.0, 4.0, 100.0, 0.0]) for a in env.agents}
    with pytest.raises(ValueError, match=r"supplier_0: bid prices.*NoRepair has no repair\(\)"
                                         r".*invalid_bids='raise'"):
        env.step(dict(good, supplier_0=np.array([4.0, 6.0, 100.0, 0.0])))
    assert env.cycles == 0
    env.step(good)  # valid bids clear as before
    strict = _composed("raise", market=NoRepair, horizon=2)
    strict.reset(seed=0)
    with pytest.raises(ValueError, match="supplier_0") as err:
        strict.step(dict(good, supplier_0=np.array([4.0, 6.0, 100.0, 0.0])))
    assert "no repair" not in str(err.value)  # refusing is what "raise" asks for
