"""Market and physics: the AC report of every grid step (``GridReport``), AC-feasible clearing
(``ac_feedback``), the AC observation features and the cost signal (``ogg_envs.core``).

The congested days are the issue's: topology-power with the DGs marking their offers up well
above cost (the substation then feeds everything through 852r-832), dlmp-v0 with generator
offers near the price cap.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from pettingzoo.test import api_test, parallel_api_test
from pettingzoo.utils.conversions import parallel_to_aec

import ogg_envs
from ogg_envs.grid.opendss import PowerFlowResult
from ogg_envs.policies.curve import MarkupBidder


class NearCap:
    """A DLMP offer at 90 % of the price cap for every block."""

    adaptive = False

    def __call__(self, participant, observation=None, info=None):
        return np.full(participant.rules["n_blocks"], 0.9 * participant.rules["price_cap"])


def congested_env(env_id: str, **kw):
    if "topology" in env_id:
        policies = {"supplier": MarkupBidder(markup=2.0)}
    else:
        policies = {"generator": NearCap()}
    return ogg_envs.make(env_id, parallel=True, market_rounds=1, learners=[],
                         policies=policies, **kw)


def run_day(env, seed=0) -> list:
    """Every grid step's report of one day (no learning agents: the scripted bids)."""
    env.reset(seed=seed)
    reports = []
    while not env.done:
        env.run_round({})
        reports.append(env.last_grid_report)
    return reports


def worst_excess(reports) -> float:
    return max(float(np.max(r.loading, initial=0.0)) - 1.0 for r in reports)


# --------------------------------------------------------------------------------------------
# The report is OpenDSS's own numbers
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("env_id", ["opengridgym/topology-power-v0", "opengridgym/dlmp-v0"])
def test_report_equals_opendss_element_powers(env_id):
    env = congested_env(env_id)
    env.reset(seed=0)
    for _ in range(12):  # into the congested hours
        env.run_round({})
    rep, dss, topo = env.last_grid_report, env.grid.dss, env.topology
    assert rep.converged and len(rep.branches) > 3
    assert "transformer" in " ".join(el for b in rep.branches
                                     for el in topo.branches[topo.branch_index[b]].elements) \
        or "dlmp" in env_id  # IEEE 34's regulators are market-limited transformers
    for k, name in enumerate(rep.branches):
        br = topo.branches[topo.branch_index[name]]
        s = 0j
        for el in br.elements:  # terminal 1's phase conductors, turned away from the source
            dss.Circuit.SetActiveElement(el)
            nph = dss.CktElement.NumPhases()
            p = np.asarray(dss.CktElement.Powers())[: 2 * nph]
            bus1 = dss.CktElement.BusNames()[0].split(".")[0].lower()
            s += (1 if bus1 == br.parent else -1) * complex(p[0::2].sum(), p[1::2].sum())
        assert rep.flow_kw[k] == pytest.approx(s.real, rel=1e-9, abs=1e-9)
        assert rep.flow_kvar[k] == pytest.approx(s.imag, rel=1e-9, abs=1e-9)
        assert rep.apparent_kva[k] == pytest.approx(abs(s), rel=1e-9, abs=1e-9)
        assert rep.limit_kw[k] == env.market.limits_kw[topo.branch_index[name]]
        assert rep.loading[k] == pytest.approx(abs(s.real) / rep.limit_kw[k], rel=1e-9)
    assert rep.losses_kw == pytest.approx(dss.Circuit.Losses()[0] / 1000, rel=1e-9)
    assert rep.substation_kw == pytest.approx(-dss.Circuit.TotalPower()[0], rel=1e-9)


def test_market_flow_is_the_clearings_own_linear_flow():
    """``market_flow_kw`` (H @ p of the dispatch on the feeder) is the flow the curve market
    computed for its clearing; the cleared source supply is its balance."""
    env = congested_env("opengridgym/topology-power-v0")
    env.reset(seed=0)
    for _ in range(12):
        env.run_round({})
    rep, c = env.last_grid_report, env.last_clearing
    # The market places the substation at its participant's bus (800); on the feeder it feeds
    # through the source bus: the branches between them carry the feeder's flow only.
    upstream = set(env.topology.path_to_root(env.participant["substation_0"].bus))
    compared = 0
    for k, name in enumerate(rep.branches):
        if name not in upstream:
            assert rep.market_flow_kw[k] == pytest.approx(c.flows_kw[name], abs=1e-6)
            compared += 1
    assert compared >= len(rep.branches) - 1 and rep.overloaded
    q = c.participant_quantities
    served = q[~env.is_supply].sum()
    dg = sum(q[env.index[p.name]] for p in env.participants if "generator" in p.state)
    assert rep.cleared_source_kw == pytest.approx(served - dg, abs=1e-6)
    # The substation supplies the losses too: beyond what was cleared.
    assert rep.unscheduled_kw == pytest.approx(rep.substation_kw - rep.cleared_source_kw)
    assert rep.unscheduled_kw > 0.5 * rep.losses_kw


# --------------------------------------------------------------------------------------------
# AC-feasible clearing
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("env_id, kw", [
    ("opengridgym/topology-power-v0", {}), ("opengridgym/dlmp-v0", {}),
    ("opengridgym/dlmp-v0", {"formulation": "lindistflow"}),  # the loop serves any set_limits
])
def test_feedback_brings_congested_days_within_the_limits(env_id, kw):
    plain = run_day(congested_env(env_id, **kw))
    fb_env = congested_env(env_id, ac_feedback=True, **kw)
    limits = fb_env.market.limits_kw
    fed = run_day(fb_env)
    tol = fed[0].tol
    assert sum(not r.within_limits for r in plain) >= 5  # the issue: over in AC every peak
    assert worst_excess(plain) > 0.015
    assert all(r.within_limits for r in fed)
    assert worst_excess(fed) <= tol
    assert np.mean([r.feedback_iterations for r in fed]) <= 3
    assert sum(r.feedback_iterations for r in fed) >= 5  # it did correct something
    np.testing.assert_array_equal(fb_env.market.limits_kw, limits)  # restored every hour


@pytest.mark.parametrize("env_id", ["opengridgym/topology-power-v0", "opengridgym/dlmp-v0"])
def test_feedback_with_loss_pricing_corrects_limits_and_losses_together(env_id):
    """Both corrections in one loop under one cap: within the limits, losses scheduled, and
    the market's limits and lossless balance restored after every hour."""
    env = congested_env(env_id, ac_feedback=True, loss_pricing=True)
    limits = env.market.limits_kw
    fed = run_day(env)
    assert all(r.within_limits for r in fed)
    assert all(1 <= r.feedback_iterations <= 3 for r in fed)
    for r in fed:
        assert r.cleared_losses_kw == pytest.approx(r.losses_kw, rel=0.05)
        assert r.unscheduled_kw < 0.5 * r.losses_kw
    np.testing.assert_array_equal(env.market.limits_kw, limits)
    assert env.market.losses is None


def test_feedback_off_and_cap_zero_leave_clearings_alone():
    a = congested_env("opengridgym/topology-power-v0")
    b = congested_env("opengridgym/topology-power-v0", ac_feedback=True, ac_max_iterations=0)
    for ra, rb in zip(run_day(a), run_day(b)):
        np.testing.assert_array_equal(ra.flow_kw, rb.flow_kw)
        assert rb.feedback_iterations == 0


def test_feedback_rewards_are_the_final_clearings():
    env = ogg_envs.make("opengridgym/topology-power-v0", parallel=True, market_rounds=1,
                        ac_feedback=True)
    env.reset(seed=0)
    acts = {a: np.array([15.0, 15.0, env.participant[a].limits.q_now, 0.0], np.float32)
            for a in env.agents}
    for _ in range(12):
        _, rewards, _, _, infos = env.step(acts)
    c = env.last_clearing
    assert infos["supplier_0"]["ac_iterations"] >= 1
    profit = env.true_profits(c.participant_prices, c.participant_quantities) / 100.0
    for a, r in rewards.items():
        assert r == pytest.approx(profit[env.index[a]])
        assert infos[a]["quantity"] == pytest.approx(c.quantity_of(a))


def test_same_seed_same_trajectory_with_feedback():
    def episode(env, seed):
        obs, _ = env.reset(seed=seed)
        out = [obs]
        while env.agents:
            o, r, _, _, i = env.step({a: env.action_space(a).sample() for a in env.agents})
            out.append((o, r, {a: (x["cost"], x["ac_iterations"]) for a, x in i.items()}))
        return out

    kw = dict(parallel=True, market_rounds=1, horizon=14, ac_feedback=True, observe_ac=True)
    env = ogg_envs.make("opengridgym/topology-power-v0", **kw)
    first = episode(env, 5)
    episode(env, 6)  # whatever the instance did before
    again = episode(env, 5)
    fresh = episode(ogg_envs.make("opengridgym/topology-power-v0", **kw), 5)
    assert repr(first) == repr(again) == repr(fresh)


# --------------------------------------------------------------------------------------------
# Agents are told: infos, cost, observation
# --------------------------------------------------------------------------------------------
def test_infos_cost_and_thermal_checks_on_the_market_limit():
    env = ogg_envs.make("opengridgym/topology-power-v0", parallel=True, market_rounds=1,
                        learners="consumer", policies={"supplier": MarkupBidder(markup=2.0)})
    env.reset(seed=0)
    acts = {a: env.action_space(a).high for a in env.agents}  # consumers bid the cap
    seen = False
    for _ in range(14):
        _, _, _, _, infos = env.step(acts)
    rep = env.last_grid_report
    assert rep.overloaded
    low, high = env.grid.voltage_band
    for a, info in infos.items():
        on_path = [k for k, b in enumerate(rep.branches) if b in env.paths[a]]
        excess = sum(max(rep.loading[k] - 1, 0) for k in on_path)
        v = info["voltage_violations"].get(env.participant[a].bus)
        excess += max(low - v, v - high) if v is not None else 0.0
        assert info["cost"] == pytest.approx(excess)
        assert info["path_loading"] == pytest.approx(max((rep.loading[k] for k in on_path),
                                                         default=0.0))
        over = sorted(set(rep.overloaded) & env.paths[a])
        assert [b for b in info["thermal_overloads"] if b in rep.branches] == over
        seen |= bool(over) and info["cost"] > 0
        assert info["unscheduled_kw"] == rep.unscheduled_kw
    assert seen  # consumers behind 852r-832 see the overload and pay its cost
    # OpenDSS's own ratings are far above the market's limit: the old check saw nothing.
    branch_of = {el: br.name for br in env.topology.branches for el in br.elements}
    assert not {branch_of[e] for e in env.last_power_flow.thermal_overloads} \
        & set(rep.overloaded)


def test_cost_weight_changes_rewards_by_the_cost():
    kw = dict(parallel=True, market_rounds=1, learners="consumer",
              policies={"supplier": MarkupBidder(markup=2.0)})
    plain = ogg_envs.make("opengridgym/topology-power-v0", **kw)
    weighted = ogg_envs.make("opengridgym/topology-power-v0", ac_cost_weight=7.0, **kw)
    for env in (plain, weighted):
        env.reset(seed=0)
    acts = {a: plain.action_space(a).high for a in plain.agents}
    total = 0.0
    for _ in range(14):
        _, r0, *_ = plain.step(acts)
        _, r1, _, _, info = weighted.step(acts)
        for a in r0:
            assert r1[a] == pytest.approx(r0[a] - 7.0 * info[a]["cost"])
            total += info[a]["cost"]
    assert total > 0


def test_observe_ac_widens_the_space_and_reports_the_last_grid_step():
    env = ogg_envs.make("opengridgym/dlmp-v0", parallel=True, market_rounds=2, observe_ac=True)
    base = ogg_envs.make("opengridgym/dlmp-v0", parallel=True, market_rounds=2)
    a = env.possible_agents[0]
    assert env.observation_space(a).shape[0] == base.observation_space(a).shape[0] + 2
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(obs[a][-2:], [0.0, -1.0])
    for _ in range(2 * 13):
        obs, _, _, _, infos = env.step({x: env.action_space(x).sample() for x in env.agents})
    assert infos[a]["grid_step"]
    pf = env.last_power_flow
    bus = env.participant[a].bus
    assert env.grid.delta  # IEEE 37: line-to-line voltages are the judged ones
    v = max((x for n, x in pf.voltages_ll_pu.items() if n.split(".")[0] == bus),
            key=lambda x: abs(x - 1))
    assert obs[a][-2] == pytest.approx(np.clip((v - 1) / 0.1, -1, 1), abs=1e-6)
    assert obs[a][-1] == pytest.approx(np.clip(infos[a]["path_loading"] - 1, -1, 1), abs=1e-6)
    assert env.observation_space(a).contains(obs[a])


@pytest.mark.parametrize("env_id", ["opengridgym/topology-power-v0", "opengridgym/dlmp-v0"])
def test_pettingzoo_conformance_with_the_options_on(env_id):
    kw = dict(horizon=3, market_rounds=2, ac_feedback=True, observe_ac=True,
              ac_cost_weight=1.0)
    api_test(ogg_envs.make(env_id, **kw), num_cycles=30)
    api_test(parallel_to_aec(ogg_envs.make(env_id, parallel=True, **kw)), num_cycles=30)
    parallel_api_test(ogg_envs.make(env_id, parallel=True, **kw), num_cycles=30)


def test_p2p_reports_but_has_no_limits_to_feed_back():
    env = ogg_envs.make("opengridgym/p2p-v0", parallel=True, horizon=2, observe_ac=True)
    env.reset(seed=0)
    while env.agents:
        *_, infos = env.step({a: env.action_space(a).sample() for a in env.agents})
    rep = env.last_grid_report
    assert rep.converged and rep.branches == () and math.isfinite(rep.unscheduled_kw)
    with pytest.raises(ValueError, match="ac_feedback=True needs a market with branch limits"):
        ogg_envs.make("opengridgym/p2p-v0", ac_feedback=True)


@pytest.mark.parametrize("bad, match", [
    (dict(ac_feedback="yes"), "ac_feedback must be True or False"),
    (dict(observe_ac=1), "observe_ac must be True or False"),
    (dict(ac_tol=-0.1), "ac_tol must be a number in"),
    (dict(ac_tol=float("nan")), "ac_tol must be a number in"),
    (dict(ac_max_iterations=1.5), "ac_max_iterations must be a whole number"),
    (dict(ac_cost_weight=float("inf")), "ac_cost_weight must be a finite number"),
])
def test_bad_options_name_the_key(bad, match):
    with pytest.raises(ValueError, match=match):
        ogg_envs.make("opengridgym/topology-power-v0", **bad)


# --------------------------------------------------------------------------------------------
# reproduce: market flow vs AC flow, without and with feedback
# --------------------------------------------------------------------------------------------
def test_reproduce_compares_market_and_ac_flows(tmp_path):
    from ogg_envs.envs import topology_power_v0
    from ogg_envs.reproduce import ac

    def make(feedback, **kw):
        return topology_power_v0.parallel_env(
            market_rounds=1, learners=[], policies={"supplier": MarkupBidder(0.6)},
            ac_feedback=feedback, **kw)

    result = ac.compare(make)
    off, on = result["off"], result["on"]
    assert result["shown"][0] == "852r-832"  # the line
    assert off["hours_over"] > 0 and on["hours_over"] == 0
    assert on["within_limits"] == 1.0 and off["worst_excess"] > on["worst_excess"]
    k = off["branches"].index("852r-832")
    assert max(off["market_flow_kw"][k]) == pytest.approx(off["limit_kw"][k], rel=1e-6)
    assert max(off["ac_flow_kw"][k]) > off["limit_kw"][k] * 1.02
    assert ac.plot(result, tmp_path / "flows.png", "t") and (tmp_path / "flows.png").stat().st_size
    rows = ac.summary_rows(result)
    assert rows[0][1:] == [f"{100 * off['within_limits']:.1f} %", "100.0 %"]
    # A market that limits no branch (P2P): nothing to show, no figure.
    bare = ac.compare(lambda feedback: ogg_envs.make("opengridgym/p2p-v0", parallel=True,
                                                     learners=[], horizon=2))
    assert bare["shown"] == [] and bare["off"]["branches"] == []
    assert bare["off"]["within_limits"] == 1.0
    assert not ac.plot(bare, tmp_path / "none.png", "t") and not (tmp_path / "none.png").exists()


def _worst_by_bus(judged: dict) -> dict:
    """Per bus, the node voltage furthest from 1 pu (the first such node on a tie)."""
    out: dict = {}
    for node, v in judged.items():
        bus = node.split(".")[0]
        if bus not in out or abs(v - 1.0) > abs(out[bus] - 1.0):
            out[bus] = v
    return out


@pytest.mark.parametrize("env_id", ["opengridgym/topology-power-v0", "opengridgym/dlmp-v0"])
def test_observed_bus_voltage_is_the_worst_node_of_the_bus(env_id):
    """The AC observation's bus voltage is its bus's worst node (line to line on IEEE 37's
    delta feeder) of the last grid step; ``bus_voltages`` keeps the first node on a tie and NaN
    of a failed solve."""
    env = ogg_envs.make(env_id, parallel=True, market_rounds=1, observe_ac=True)
    env.reset(seed=3)
    agent = env.agents[0]
    bus = env.participant[agent].bus
    for _ in range(6):
        obs, *_ = env.step({a: env.action_space(a).sample() for a in env.agents})
        pf = env.last_power_flow
        judged = pf.voltages_ll_pu if env.grid.delta else pf.voltages_pu
        assert pf.bus_voltages() == _worst_by_bus(judged)
        want = np.clip((_worst_by_bus(judged)[bus] - 1.0) / 0.1, -1.0, 1.0)
        assert obs[agent][-2] == np.float32(want)
    names = list(judged)
    for values in ([0.75, 1.25, 1.0, 1.0], [1.0, float("nan"), 0.5, 1.0]):
        ties = dict(zip(names, values + [1.0] * (len(names) - 4)))
        fake = PowerFlowResult(converged=True, iterations=1, voltages_pu=ties,
                               voltages_ll_pu=ties, line_flows_kw={}, line_loading_pct={},
                               losses_kw=0.0, losses_kvar=0.0, substation_kw=0.0,
                               substation_kvar=0.0)
        got, want = fake.bus_voltages(), _worst_by_bus(ties)
        assert got.keys() == want.keys()
        assert all(got[b] == want[b] or (math.isnan(got[b]) and math.isnan(want[b]))
                   for b in want)


def test_path_costs_follow_limits_that_change_between_hours():
    """Which branches the market limits is looked up once per set of limits: when the set
    changes, each agent's path loading and cost follow the new report."""
    env = ogg_envs.make("opengridgym/topology-power-v0", parallel=True, market_rounds=1,
                        learners="consumer", policies={"supplier": MarkupBidder(markup=2.0)})
    env.reset(seed=0)
    acts = {a: env.action_space(a).high for a in env.agents}
    base = np.asarray(env.market.limits_kw, dtype=float)
    rng = np.random.default_rng(0)
    seen = set()
    for hour in range(12):
        limits = base.copy()
        if hour % 3:
            limits[rng.random(len(limits)) < 0.5] = np.inf  # a different subset every hour
        env.market.set_limits(limits)
        _, _, _, _, infos = env.step(acts)
        rep = env.last_grid_report
        seen.add(rep.branches)
        for a, info in infos.items():
            on_path = [k for k, b in enumerate(rep.branches) if b in env.paths[a]]
            assert info["path_loading"] == max((rep.loading[k] for k in on_path), default=0.0)
            excess = sum(max(rep.loading[k] - 1, 0) for k in on_path)
            v = info["voltage_violations"].get(env.participant[a].bus)
            excess += max(env.grid.voltage_band[0] - v, v - env.grid.voltage_band[1]) \
                if v is not None else 0.0
            assert info["cost"] == pytest.approx(excess, abs=1e-12)
    assert len(seen) >= 5
