"""Leaderboard: metric formulas on hand-computed cases, exact efficiency of truthful bidding,
task definitions (pinned, deterministic), failure recording, resume, quick mode end to end, and
a user's registered environment and task, entries and recorder from its spec."""

from __future__ import annotations

import copy
import csv
import dataclasses
import hashlib
import math
import re
import sys
import textwrap

import gymnasium
import numpy as np
import pettingzoo
import pytest

import ogg_envs
from ogg_envs import economics
from ogg_envs.api import DEMAND
from ogg_envs.leaderboard import (
    BASELINES,
    TASK_SHA256,
    TaskError,
    episode_options,
    evaluate,
    invalid_action_reason,
    list_tasks,
    load_task,
    make_recorder,
    mean_ci,
    read_rows,
    recorder_class,
    resolve_entry,
    run_leaderboard,
)
from ogg_envs.leaderboard import metrics as M
from ogg_envs.leaderboard import tasks as T
from ogg_envs.leaderboard.report import README_END, README_START, update_readme
from ogg_envs.markets.p2p import P2PTerms

# Each task's version and the sha256 of its file. A task file never changes: a change is a new
# version in a new file (and a new line here and in tasks.TASK_SHA256).
PINNED = {
    "topology-power/congested-v0":
        (0, "f0d61bdcc7dd650da3075c9f06b0636e246457c8d4319df0c9693f5a696ef5f3"),
    "p2p/multi-period-v0":
        (0, "e2402b9bb2ad8e69033f8f51b8e9c1ee8e8939806cd5133f1094df81fe3ee2f9"),
    "dlmp/37bus-day-v0":
        (0, "474faab77c0dd7cf313f7a0cea4336bf40fa7e8d89b8737b206adbb6afbaaee5"),
    "topology-power/congested-v1":
        (1, "cbaaae68ada5295a16f232aef4a1d153aeec7b39d7349173f965fefa6a545fd8"),
    "p2p/multi-period-v1":
        (1, "95ce9d571a31ffba9808412a142b6fcab3e66951de199ac2eacd631bc1e157ed"),
    "dlmp/37bus-day-v1":
        (1, "8b478827677d2623b3819da392c52b5ab292bcc340597c602f617878f202dde2"),
}
TOPO, P2P, DLMP, TOPO1, P2P1, DLMP1 = PINNED
SHIPPED = [TOPO, TOPO1, P2P, P2P1, DLMP, DLMP1]  # list_tasks' order: by environment, then id


# ---------------------------------------------------------------------- formulas by hand
def test_mean_ci_by_hand():
    mean, half, n = mean_ci([1.0, 2.0, 3.0, 4.0])
    # s = sqrt(5/3) = 1.290994; t_{0.975, 3} = 3.182446; half = t s / sqrt(4)
    assert (mean, n) == (2.5, 4)
    assert half == pytest.approx(3.182446 * 1.290994 / 2.0, rel=1e-6)
    assert mean_ci([5.0, 5.0, 5.0])[:2] == (5.0, 0.0)
    mean, half, n = mean_ci([2.0, math.nan])  # undefined seeds are dropped
    assert (mean, n) == (2.0, 1) and math.isnan(half)
    assert math.isnan(mean_ci([])[0])


def test_efficiency_by_hand():
    assert M.efficiency(3.0, 4.0) == 0.75
    assert M.efficiency(4.0, 4.0) == 1.0
    assert math.isnan(M.efficiency(1.0, 0.0))


def test_curve_welfare_and_profits_by_hand():
    """The curve recorder's economics (``ogg_envs.economics`` on the participants' truth)."""
    is_supply = np.array([True, False, False])
    truth = dict(a=np.array([3.0, 0.0, 0.0]), b=np.array([0.01, 0.0, 0.0]),
                 value_max=np.array([0.0, 12.0, 20.0]), value_min=np.array([0.0, 4.0, 20.0]),
                 q_now=np.array([200.0, 50.0, 10.0]))
    q = np.array([60.0, 50.0, 10.0])
    # supplier: 3*60 + 0.01*60^2/2 = 198; flexible: 12*50 - (8/50)*50^2/2 = 400; inflexible 200
    welfare = economics.welfare(is_supply, q, **truth)
    assert welfare == pytest.approx(400.0 + 200.0 - 198.0)
    profits = economics.profits(is_supply, np.full(3, 5.0), q, **truth)
    np.testing.assert_allclose(profits, [300.0 - 198.0, 400.0 - 250.0, 200.0 - 50.0])
    # surplus = sum of profits when payments balance revenues (no congestion)
    assert profits.sum() == pytest.approx(welfare)


def test_dlmp_welfare_and_rent_by_hand():
    w = M.dlmp_true_welfare(
        demand_kw=np.array([0.0, 100.0, 50.0]), shed_kw=np.array([0.0, 0.0, 10.0]),
        source_kw=80.0, lmp=4.0, quantities=np.array([20.0, 10.0]),
        cost_a=np.array([5.0, 7.0]), cost_b=np.array([0.01, 0.02]), value_of_load=30.0)
    # 30*140 - 4*80 - (5*20 + 0.005*400) - (7*10 + 0.01*100)
    assert w == pytest.approx(4200.0 - 320.0 - 102.0 - 71.0)
    exporting = M.dlmp_true_welfare(
        demand_kw=np.array([10.0]), shed_kw=np.zeros(1), source_kw=-5.0, lmp=4.0,
        quantities=np.array([15.0]), cost_a=np.array([1.0]), cost_b=np.zeros(1),
        value_of_load=30.0)
    assert exporting == pytest.approx(300.0 - 15.0)  # exports earn nothing
    assert M.dlmp_congestion_rent(np.array([0.0, 0.0, 2.0]),
                                  np.array([30.0, 10.0, 50.0])) == 100.0
    q = np.array([20.0, 10.0])  # DLMP q - true cost (the recorder's profit)
    profits = np.array([6.0, 8.0]) * q - economics.cost(q, np.array([5.0, 7.0]),
                                                        np.array([0.01, 0.02]))
    np.testing.assert_allclose(profits, [120.0 - 102.0, 80.0 - 71.0])


def test_dlmp_rent_equals_branch_prices_times_flows():
    """On a congested hour, sum_b congestion_b w_b = sum_e mu_e f_e (radial identity)."""
    task = load_task(DLMP)
    env = task.make_env()
    env.reset(seed=4001)
    rec = make_recorder(task.spec, env, env.possible_agents)
    assert isinstance(rec, M.DLMPRecorder)
    rec.start_episode()
    rents = []
    while env.t < 14:  # expensive DGs: the feeder imports and the laterals congest
        rec.before_step()
        before = rec.sums["congestion_rent_usd"]
        _, rewards, _, _, infos = env.step({a: np.full(3, 25.0) for a in env.agents})
        rec.after_step(rewards, infos)
        if infos[env.possible_agents[0]]["grid_step"]:
            rents.append((rec.sums["congestion_rent_usd"] - before) * 100.0)
    res = env.last_clearing
    assert res.congested and rents[-1] > 0
    assert rents[-1] == pytest.approx(float(res.branch_prices @ res.flows_kw), rel=1e-6)


def test_p2p_money_by_hand():
    terms = P2PTerms(arms=(4.0, 8.0), retail_price=12.0, feed_in_price=3.0,
                     imbalance_price=15.0, c_service=0.5, c_lose=1.0)
    money = {"retail_kwh": np.array([1.0, 0.0]), "shortfall_kwh": np.array([0.0, 0.5]),
             "feed_in_kwh": np.array([0.0, 2.0]), "p2p_cost": np.array([16.0, 0.0]),
             "p2p_bought_kwh": np.array([2.0, 0.0])}
    assert M.p2p_utility_cost(money, terms) == pytest.approx(12.0 + 7.5 - 6.0)
    assert M.p2p_consumer_price(money, terms) == pytest.approx((16.0 + 12.0, 3.0))


def test_invalid_action_reason():
    box = gymnasium.spaces.Box(0.0, np.array([20, 20, 100, 100], np.float32), (4,), np.float32)
    assert invalid_action_reason(box, np.array([5.0, 3.0, 50.0, 0.0])) is None
    assert invalid_action_reason(box, [20.0, 0.0, 100.0, 0.0]) is None
    assert "shape" in invalid_action_reason(box, np.zeros(3))
    assert "non-finite" in invalid_action_reason(box, [np.nan, 0, 0, 0])
    assert "outside" in invalid_action_reason(box, [21.0, 0, 0, 0])
    assert "outside" in invalid_action_reason(box, [0.0, -1.0, 0, 0])
    disc = gymnasium.spaces.Discrete(8)
    assert invalid_action_reason(disc, 3) is None
    assert invalid_action_reason(disc, np.int64(7)) is None
    assert invalid_action_reason(disc, np.array(2)) is None
    assert invalid_action_reason(disc, 8) is not None
    assert invalid_action_reason(disc, 2.0) is not None
    assert invalid_action_reason(disc, True) is not None


# ---------------------------------------------------------------------- efficiency 1.0
@pytest.mark.parametrize("task_id", [TOPO, DLMP])
def test_truthful_efficiency_is_exactly_one(task_id):
    task = load_task(task_id)
    row, per_seed = evaluate(resolve_entry("truthful"), task, quick=True)
    assert row["status"] == "ok", row["reason"]
    assert [s["efficiency"] for s in per_seed] == [1.0] * task.quick_seeds
    assert row["efficiency_mean"] == 1.0 and row["welfare_loss_usd_mean"] == 0.0
    # ... and bidding above cost is measurably worse (the metric can fail)
    row, per_seed = evaluate(resolve_entry("markup"), task, quick=True)
    assert all(0.9 < s["efficiency"] < 0.9999 for s in per_seed)
    assert row["welfare_loss_usd_mean"] > 1.0


def test_truthful_p2p_market_is_fully_efficient():
    """With every prosumer bidding its reservation price, every pair trades every step."""
    task = load_task(P2P)
    every = dataclasses.replace(task, controlled=tuple(f"prosumer_{i}" for i in range(12)))
    row, per_seed = evaluate(resolve_entry("truthful"), every, quick=True)
    assert row["status"] == "ok", row["reason"]
    assert [s["efficiency"] for s in per_seed] == [1.0] * task.quick_seeds
    assert row["trade_success_mean"] == 1.0
    row, per_seed = evaluate(resolve_entry("random"), every, quick=True)
    assert row["efficiency_mean"] < 0.9 and row["trade_success_mean"] < 0.8
    for s in per_seed:
        # with every prosumer controlled, their bill savings (P2P payments included) add up to
        # the community's realised surplus (payments cancel): two independent accounts agree
        realised = s["efficiency"] / (1 - s["efficiency"]) * s["welfare_loss_usd"]
        assert s["profit_usd"] == pytest.approx(realised, rel=1e-9)


def _act(policy, env, info=None):
    """Every agent's action from ``policy(participant copy, observation, info)``."""
    return {a: policy(env.participant[a].copy(), None, dict(info or {"rng": None}))
            for a in env.agents}


@pytest.mark.parametrize("entry", ["truthful", "markup"])
def test_curve_recorder_against_an_independent_account(entry):
    """The recorder's sums equal an account kept here: surplus with the hour's participant
    records (copied before the hour's final round, one participant at a time through
    ``Participant.value`` / ``cost``), the reference from a fresh solve of the truthful bids on
    another market object, profits as the environment reports them."""
    task = load_task(TOPO)
    env = task.make_env()
    env.reset(seed=task.seeds[0])
    fresh = copy.deepcopy(env.market)
    rec = make_recorder(task.spec, env, env.possible_agents)
    assert isinstance(rec, M.CurveRecorder)
    rec.start_episode()
    policy = resolve_entry(entry).make(task, env)
    realised = reference = profit = 0.0
    hours = 0

    def surplus(records, q):
        return sum(p.value(x) if p.side == DEMAND else -p.cost(x) for p, x in zip(records, q))

    while env.agents:
        records = [p.copy() for p in env.participants]
        truthful = env.truthful_bids()
        actions = _act(policy, env)
        rec.before_step()
        _, rewards, _, _, infos = env.step(actions)
        rec.after_step(rewards, infos)
        if infos[env.possible_agents[0]]["grid_step"]:
            realised += surplus(records, env.last_clearing.participant_quantities)
            reference += surplus(records, fresh.clear(truthful).participant_quantities)
            profit += sum(info["profit"] for info in infos.values())
            hours += 1
    assert hours == env.horizon
    assert rec.s_real == pytest.approx(realised, rel=1e-9)
    assert rec.s_ref == pytest.approx(reference, rel=1e-7)
    assert rec.result()["profit_usd"] == pytest.approx(profit, rel=1e-9)
    assert (rec.ref_solves == 0) == (entry == "truthful")


def test_dlmp_recorder_profit_matches_the_environment():
    task = load_task(DLMP)
    env = task.make_env()
    env.reset(seed=task.seeds[1])
    rec = make_recorder(task.spec, env, env.possible_agents)
    rec.start_episode()
    policy = resolve_entry("markup").make(task, env)
    profit = 0.0
    while env.agents:
        actions = _act(policy, env)
        rec.before_step()
        _, rewards, _, _, infos = env.step(actions)
        rec.after_step(rewards, infos)
        if infos[env.possible_agents[0]]["grid_step"]:
            profit += sum(info["profit"] for info in infos.values())
    assert rec.result()["profit_usd"] == pytest.approx(profit, rel=1e-9)
    assert rec.ref_solves == env.horizon


def test_recorders_and_metrics_come_from_the_spec():
    for task_id, cls in ((TOPO, M.CurveRecorder), (P2P, M.P2PRecorder), (DLMP, M.DLMPRecorder)):
        spec = load_task(task_id).spec
        assert recorder_class(spec) is cls and recorder_class(spec.id) is cls
        assert set(cls.metrics) <= set(M.METRICS)
    assert recorder_class(M.CurveRecorder) is M.CurveRecorder
    assert "trade_success" in M.P2PRecorder.metrics and "avg_dlmp" in M.DLMPRecorder.metrics
    with pytest.raises(ValueError, match="unknown recorder"):
        recorder_class("nonsense")


# ---------------------------------------------------------------------- task definitions
def test_tasks_are_pinned_and_load():
    # the shipped tasks (a user's registered tasks, e.g. the examples', come after them)
    assert [t for t in list_tasks() if t in TASK_SHA256] == SHIPPED
    assert list_tasks()[:6] == SHIPPED
    assert TASK_SHA256 == {k: h for k, (_, h) in PINNED.items()}
    for task_id, (version, digest) in PINNED.items():
        task = load_task(task_id)
        assert (task.version, task.sha256) == (version, digest)
        assert task_id.endswith(f"-v{version}")
        assert hashlib.sha256(open(task.path, "rb").read()).hexdigest() == digest
        assert task.seeds and len(set(task.seeds)) == len(task.seeds)
        env = task.make_env()
        assert set(env.possible_agents) <= {p.name for p in env.participants}
        assert 0 < len(env.possible_agents) < len(env.participants)  # others exist


def test_changed_task_file_is_refused(tmp_path, monkeypatch):
    original = load_task(TOPO)
    text = open(original.path).read()
    same = tmp_path / "same.toml"
    same.write_text(text)
    assert load_task(str(same)).sha256 == original.sha256  # an exact copy is the task
    edited = tmp_path / "edited.toml"
    edited.write_text(text.replace("episodes = 1 ", "episodes = 2 "))
    with pytest.raises(TaskError, match="changed"):
        load_task(str(edited))
    load_task(str(edited), verify=False)  # drafting is allowed, unverified
    # a pinned data file that changed is refused too
    bad = tmp_path / "bad_pin.toml"
    bad.write_text(text.replace("4ccf13a27d58", "000000000000"))
    monkeypatch.setitem(T.TASK_SHA256, TOPO, hashlib.sha256(bad.read_bytes()).hexdigest())
    with pytest.raises(TaskError, match="profiles/day_profiles.csv changed"):
        load_task(str(bad))


# ---------------------------------------------------------------------- held-out days (-v1)
HELD_OUT = [TOPO1, P2P1, DLMP1]
YEAR_SHA256 = "928ac4d93ee5e51a175c20e0255bc151b116500915fdb7910700feed2fe4cbf6"


def _splits(env) -> tuple[set, set]:
    return set(env.split_days("test").tolist()), set(env.split_days("train").tolist())


@pytest.mark.parametrize("task_id", HELD_OUT)
def test_v1_tasks_evaluate_held_out_days_only(task_id):
    """Every day a -v1 task evaluates, over its full plan, is a held-out test day of the year
    (never a training day), the days cover every season, and no day repeats where the plan
    has room for distinct days."""
    task = load_task(task_id)
    assert task.split == "test" and task.pins == {"profiles/year.csv": YEAR_SHA256}
    env = task.make_env()
    test, train = _splits(env)
    assert env.n_days == 365 and len(test) == 73 and not test & train
    task.check_days(env)
    planned = [episode_options(task, i, e)["day"]
               for i in range(len(task.seeds)) for e in range(task.episodes)]
    assert set(planned) <= test and not set(planned) & train
    assert len(set(planned)) == min(len(planned), len(test))
    assert {d * 4 // 365 for d in planned} == {0, 1, 2, 3}  # every quarter of the year
    # quick mode evaluates the same days: the first episodes of the first seeds
    seeds, _ = task.plan(quick=True)
    assert [episode_options(task, i, 0)["day"] for i in range(len(seeds))] == \
        [planned[i * task.episodes] for i in range(len(seeds))]


@pytest.mark.parametrize("task_id", [DLMP1, P2P1])
def test_the_runner_runs_the_pinned_days(task_id):
    """The days the environment actually ran (``env.day`` after each reset, recorded per seed)
    are the task's pinned test days, consecutive episodes included."""
    task = dataclasses.replace(load_task(task_id), quick_seeds=2, quick_episodes=2)
    row, per_seed = evaluate(resolve_entry("truthful"), task, quick=True)
    assert row["status"] == "ok", row["reason"]
    want = [[episode_options(task, i, e)["day"] for e in range(2)] for i in range(2)]
    assert [s["days"] for s in per_seed] == want
    test, _ = _splits(task.make_env())
    assert {d for s in per_seed for d in s["days"]} <= test
    # a one-day (-v0) task passes no options: its episodes are what they always were
    assert episode_options(load_task(DLMP), 0, 0) is None


def _peak_and_quiet_day(task, env) -> tuple[int, int]:
    """Among the task's days: the one with the highest and the one with the lowest daily peak
    of the year's measured load shapes taken together (the consumers follow them)."""
    shapes = sorted(c for c in env.profiles if c.startswith("shape_"))
    load = sum(env.profiles[c] for c in shapes).reshape(-1, 24).max(axis=1)
    days = sorted(set(task.days), key=lambda d: load[d])
    return days[-1], days[0]


@pytest.mark.parametrize("task_id", [TOPO1, DLMP1])
def test_v1_congestion_appears_on_peak_days_and_the_metrics_move(task_id):
    """Under truthful bids the -v1 limits bind on the peak held-out day and not on the quietest
    one: congestion rent there, none here, and the consumer price and profit move with the
    day."""
    task = load_task(task_id)
    peak, quiet = _peak_and_quiet_day(task, task.make_env())
    two = dataclasses.replace(task, days=(peak, quiet), quick_seeds=2)
    row, per_seed = evaluate(resolve_entry("truthful"), two, quick=True)
    assert row["status"] == "ok", row["reason"]
    on_peak, on_quiet = per_seed
    assert on_peak["congestion_rent_usd"] > 0.05  # prices split: money changes hands
    assert abs(on_quiet["congestion_rent_usd"]) < 1e-6
    assert on_peak["consumer_price"] > on_quiet["consumer_price"] + 0.05
    assert on_peak["profit_usd"] != pytest.approx(on_quiet["profit_usd"], rel=0.05)


@pytest.mark.parametrize("task_id", HELD_OUT)
def test_training_resets_never_draw_a_test_day(task_id):
    """A trainer resets the task's environment without options (with or without a seed): it
    draws training days only, and many of them."""
    env = load_task(task_id).make_env()
    test, _ = _splits(env)
    days = []
    for seed in range(60):
        env.reset(seed=seed)
        days.append(env.day)
        env.reset()
        days.append(env.day)
    assert not set(days) & test and len(set(days)) > 50


def test_sb3_training_on_a_v1_task_never_sees_a_test_day(monkeypatch):
    """``opengridgym train dlmp/37bus-day-v1`` (SB3 PPO): the vector environment it trains on,
    auto-resets included, only ever runs training days."""
    pytest.importorskip("supersuit")
    sb3_ppo = pytest.importorskip("ogg_envs.baselines.sb3_ppo")
    from ogg_envs.baselines import common

    _, task, _ = common.training_setup(DLMP1)
    assert task.id == DLMP1
    cls = type(task.make_env())
    seen, reset = [], cls.reset

    def recording_reset(self, *args, **kwargs):
        out = reset(self, *args, **kwargs)
        seen.append(self.day)
        return out

    monkeypatch.setattr(cls, "reset", recording_reset)
    venv, _ = sb3_ppo.make_vec_env(task.make_env, sb3_ppo.Args(env=DLMP1, n_envs=2))
    venv.seed(0)
    venv.reset()
    steps = 2 * 24 * task.env_kwargs["market_rounds"] + 1  # two episodes, then one more reset
    for _ in range(steps):
        venv.step(np.stack([venv.action_space.sample() for _ in range(venv.num_envs)]))
    venv.close()
    test, _ = _splits(task.make_env())
    assert len(seen) >= 2 * 3 and not set(seen) & test


def test_task_days_are_checked(tmp_path):
    text = open(load_task(DLMP1).path).read()
    bad_split = tmp_path / "split.toml"
    bad_split.write_text(text.replace('split = "test"', 'split = "holdout"'))
    with pytest.raises(TaskError, match="split must be one of train, test, all"):
        load_task(str(bad_split), verify=False)
    no_split = tmp_path / "no_split.toml"
    no_split.write_text(text.replace('split = "test"', ""))
    with pytest.raises(TaskError, match="days need the split"):
        load_task(str(no_split), verify=False)
    bad_days = tmp_path / "days.toml"
    bad_days.write_text(text.replace("days = [4,", "days = [-4,"))
    with pytest.raises(TaskError, match="days must be a list of whole numbers"):
        load_task(str(bad_days), verify=False)
    # a training day listed as a test day is refused before anything runs
    task = dataclasses.replace(load_task(DLMP1), days=(4, 5))
    with pytest.raises(TaskError, match=r"days \[5\] are not 'test' days"):
        task.check_days(task.make_env())
    row, _ = evaluate(resolve_entry("truthful"), dataclasses.replace(task, days=(5,)),
                      quick=True)
    assert row["status"] == "error" and "are not 'test' days" in row["reason"]
    # a task that only names its split: each episode's day is drawn from it with the seed
    drawn = dataclasses.replace(task, days=())
    assert episode_options(drawn, 3, 0) == {"split": "test"}
    _, per_seed = evaluate(resolve_entry("truthful"), drawn, quick=True)
    test, _ = _splits(task.make_env())
    assert all(s["days"][0] in test for s in per_seed)


def test_the_cli_lists_the_held_out_tasks(capsys):
    from ogg_envs.cli import main

    assert main(["list", "--scenarios"]) == 0
    out = capsys.readouterr().out
    for task_id in SHIPPED:
        assert task_id in out
    assert re.search(r"^dlmp/37bus-day-v1 .* profiles/year.csv +24 +20 test days$", out, re.M)
    assert re.search(r"^p2p/multi-period-v1 .* 73 test days$", out, re.M)
    assert main(["leaderboard", "--list"]) == 0
    listed = re.findall(r"^task +(\S+)", capsys.readouterr().out, re.M)
    from ogg_envs.leaderboard.tasks import USER_TASKS  # tasks other tests registered

    assert [t for t in listed if t not in USER_TASKS] == SHIPPED


def test_tasks_are_deterministic():
    task = load_task(DLMP)
    a, _ = task.make_env().reset(seed=4001)
    b, _ = task.make_env().reset(seed=4001)
    for agent in a:
        np.testing.assert_array_equal(a[agent], b[agent])
    for task_id, entry in ((DLMP, "random"), (P2P, "ucb")):
        _, first = evaluate(resolve_entry(entry), load_task(task_id), quick=True)
        _, again = evaluate(resolve_entry(entry), load_task(task_id), quick=True)
        assert first == again


# ---------------------------------------------------------------------- runner
POLICIES = textwrap.dedent("""
    import numpy as np

    class Raises:
        def __call__(self, participant, observation, info):
            if participant.limits.q_now > 0 and info["seed"] == 4002:
                raise RuntimeError("boom")
            return np.full(3, 10.0)

    def wrong_shape(participant, observation, info):
        return np.zeros(2)

    def above_cap(participant, observation, info):
        return np.full(3, 1e6)

    def interrupt(participant, observation, info):
        raise KeyboardInterrupt

    class Greedy:  # stateful user policy with the optional update hook
        def __init__(self):
            self.seen = 0

        def __call__(self, participant, observation, info):
            return np.full(3, participant.rules["price_cap"] * 0.2)

        def update(self, participant, action, reward, info):
            assert participant.name.startswith("generator") and "rng" in info
            self.seen += 1
""")


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "lb_user_policies.py").write_text(POLICIES)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "lb_user_policies"


def _csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_failures_are_recorded_and_the_run_goes_on(tmp_path, user_module):
    out = tmp_path / "lb"
    result = run_leaderboard(
        [DLMP], [f"boom={user_module}:Raises", f"shape={user_module}:wrong_shape",
                 f"cap={user_module}:above_cap", "truthful", f"greedy={user_module}:Greedy"],
        out, quick=True, progress=False, log=lambda *a: None)
    rows = {r["entry"]: r for r in _csv(out / "leaderboard.csv")}
    assert len(result["evaluated"]) == 5 and len(rows) == 5
    assert rows["boom"]["status"] == "failed"
    assert "seed 4002" in rows["boom"]["reason"] and "RuntimeError: boom" in rows["boom"]["reason"]
    assert rows["boom"]["efficiency_mean"] == ""  # no partial results pass as a score
    assert rows["shape"]["status"] == "failed" and "invalid action" in rows["shape"]["reason"]
    assert "shape" in rows["shape"]["reason"]
    assert rows["cap"]["status"] == "failed" and "outside" in rows["cap"]["reason"]
    assert rows["truthful"]["status"] == "ok" and float(rows["truthful"]["efficiency_mean"]) == 1
    assert rows["greedy"]["status"] == "ok"
    table = (out / "leaderboard.md").read_text()
    assert "failed: seed 4002" in table and "`truthful` | ok" in table


def test_resume_skips_done_pairs_and_never_loses_rows(tmp_path, user_module):
    out = tmp_path / "lb"
    quiet = dict(quick=True, progress=False, log=lambda *a: None)
    first = run_leaderboard([DLMP], ["truthful"], out, **quiet)
    assert first["evaluated"] == [("truthful", DLMP)]
    line = (out / "leaderboard.csv").read_text().splitlines()[1]
    # an interrupted run keeps every row finished before the interruption
    with pytest.raises(KeyboardInterrupt):
        run_leaderboard([DLMP], ["truthful", "markup", f"stop={user_module}:interrupt",
                                 "random"], out, **quiet)
    assert [r["entry"] for r in read_rows(out / "leaderboard.csv")] == ["truthful", "markup"]
    again = run_leaderboard([DLMP], ["truthful", "markup", "random"], out, **quiet)
    assert again["evaluated"] == [("random", DLMP)]
    assert sorted(again["skipped"]) == [("markup", DLMP), ("truthful", DLMP)]
    assert (out / "leaderboard.csv").read_text().splitlines()[1] == line
    assert len(read_rows(out / "leaderboard.csv")) == 3
    # failed pairs are skipped too, unless asked to retry them
    run_leaderboard([DLMP], [f"shape={user_module}:wrong_shape"], out, **quiet)
    skip = run_leaderboard([DLMP], [f"shape={user_module}:wrong_shape"], out, **quiet)
    assert skip["evaluated"] == []
    retry = run_leaderboard([DLMP], [f"shape={user_module}:wrong_shape"], out,
                            retry_failed=True, **quiet)
    assert retry["evaluated"] == [("shape", DLMP)]


def test_quick_mode_end_to_end(tmp_path):
    from ogg_envs.cli import main

    out = tmp_path / "lb"
    readme = tmp_path / "README.md"
    readme.write_text(f"# X\n\n{README_START}\nold\n{README_END}\n\nrest\n")
    assert main(["leaderboard", "--quick", "--out", str(out), "--no-progress",
                 "--tasks", TOPO, P2P, DLMP, "--readme", str(readme)]) == 0
    rows = read_rows(out / "leaderboard.csv")
    pairs = {(r["entry"], r["task"]) for r in rows}
    expected = {(e, t) for t in (TOPO, P2P, DLMP) for e in ("random", "truthful", "markup")}
    expected |= {("ucb", P2P), ("epsilon-greedy", P2P)}
    assert pairs == expected
    assert all(r["status"] == "ok" and r["mode"] == "quick" for r in rows)
    for r in rows:
        assert math.isfinite(float(r["efficiency_mean"])) and r["profit_usd_mean"] != ""
    table = (out / "leaderboard.md").read_text()
    for task_id in (TOPO, P2P, DLMP):
        assert f"### {task_id}" in table
    assert (out / "leaderboard.png").stat().st_size > 10_000
    text = readme.read_text()
    assert "old" not in text and "#### dlmp/37bus-day-v0" in text and text.endswith("rest\n")
    assert update_readme(tmp_path / "README.md", "x") is True
    (tmp_path / "plain.md").write_text("no markers\n")
    assert update_readme(tmp_path / "plain.md", "x") is False


def test_saved_sb3_model_entry(tmp_path):
    sb3 = pytest.importorskip("stable_baselines3")

    class Dummy(gymnasium.Env):
        observation_space = gymnasium.spaces.Box(-1, 1, (16,), np.float32)
        action_space = gymnasium.spaces.Box(-1, 1, (3,), np.float32)

        def reset(self, seed=None, options=None):
            return np.zeros(16, np.float32), {}

        def step(self, action):
            return np.zeros(16, np.float32), 0.0, True, False, {}

    path = tmp_path / "tiny.zip"
    sb3.PPO("MlpPolicy", Dummy(), n_steps=8, batch_size=8, seed=0, device="cpu").save(path)
    entry = resolve_entry(f"tiny={path}")
    row, per_seed = evaluate(entry, load_task(DLMP), quick=True)
    assert row["status"] == "ok", row["reason"]
    assert 0.9 < row["efficiency_mean"] <= 1.0
    row, _ = evaluate(entry, load_task(TOPO), quick=True)  # 12 observations, not 16
    assert row["status"] == "failed" and "observation" in row["reason"]


def test_entry_resolution_errors():
    with pytest.raises(ValueError, match="not a baseline"):
        resolve_entry("nonsense")
    with pytest.raises(ValueError, match="cannot import"):
        resolve_entry("no_such_module_xyz:f")
    with pytest.raises(ValueError, match="no attribute"):
        resolve_entry("numpy:no_such_function_xyz")
    with pytest.raises(ValueError, match="no such model"):
        resolve_entry("missing_model.zip")
    assert not resolve_entry("ucb").applies("opengridgym/topology-power-v0")
    assert resolve_entry("ucb").applies("opengridgym/p2p-v0")
    assert resolve_entry("mine=numpy:zeros").name == "mine"
    # a named policy of an environment that is not one of its baselines is an entry too
    flat = resolve_entry("flat")
    assert flat.applies("opengridgym/topology-power-v0") and not flat.applies("opengridgym/p2p-v0")
    assert "flat" not in BASELINES


# ---------------------------------------------------------------------- user code
def test_module_callable_from_the_current_folder_needs_no_pythonpath(tmp_path, monkeypatch):
    (tmp_path / "cwd_entry_mod.py").write_text("def act(participant, observation, info):\n"
                                               "    return info['action_space'].sample()\n")
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    monkeypatch.delitem(sys.modules, "cwd_entry_mod", raising=False)
    monkeypatch.chdir(tmp_path)
    entry = resolve_entry("mine=cwd_entry_mod:act")
    assert entry.name == "mine" and entry.envs is None
    assert entry.make(None, None).__module__ == "cwd_entry_mod"


COPY_ID, COPY_TASK = "test/curve-copy-v0", "test/curve-copy-congested-v0"


@pytest.fixture
def curve_copy(tmp_path, monkeypatch):
    """topology-power-v0 registered again as a user's environment (codec "curve", two
    baselines) with a user's task: the congested task pointed at it, pinned by
    ``register_task``."""
    base = ogg_envs.spec("opengridgym/topology-power-v0")
    spec = ogg_envs.register(COPY_ID, "ogg_envs.envs.topology_power_v0", codec="curve",
                             policies=base.policies, baselines=("truthful", "markup"),
                             recorder="curve", summary="a registered copy", replace=True)
    monkeypatch.setattr(T, "USER_TASKS", {})
    text = open(load_task(TOPO).path).read()
    text = re.sub(r'(?m)^id = ".*"$', f'id = "{COPY_TASK}"', text)
    text = re.sub(r'(?m)^env = ".*"$', f'env = "{COPY_ID}"', text)
    path = tmp_path / "user_task.toml"
    path.write_text(text)
    assert T.register_task(path, hashlib.sha256(path.read_bytes()).hexdigest()) == COPY_TASK
    yield spec
    ogg_envs.ENVIRONMENTS.pop(COPY_ID, None)
    pettingzoo.aec_registry.pop(COPY_ID, None)
    pettingzoo.parallel_registry.pop(COPY_ID, None)


def test_a_registered_user_environment_gets_a_task_entries_and_metrics(curve_copy, tmp_path):
    from ogg_envs.wrappers import CurveBidCodec, codec_for, normalized_bids_v0

    # the wrapper's parametrisation comes from the spec's codec
    par = normalized_bids_v0(ogg_envs.make(COPY_ID, parallel=True, horizon=1))
    assert isinstance(codec_for(par, "supplier_0"), CurveBidCodec)
    par.reset(seed=0)
    _, _, _, _, infos = par.step({a: np.zeros(4, np.float32) for a in par.agents})
    assert not any("bid_repairs" in i for i in infos.values())
    # the task, the baselines and the metrics come from the spec
    assert COPY_TASK in list_tasks() and list_tasks()[:6] == SHIPPED
    assert COPY_ID in BASELINES["truthful"] and COPY_ID not in BASELINES["random"]
    task = load_task(COPY_TASK)
    assert task.spec is curve_copy and task.data_dir == str(tmp_path.resolve())
    row, per_seed = evaluate(resolve_entry("truthful"), task, quick=True)
    assert row["status"] == "ok", row["reason"]
    assert [s["efficiency"] for s in per_seed] == [1.0] * task.quick_seeds
    assert set(per_seed[0]) - {"seed", "days"} == set(M.CurveRecorder.metrics)
    # the same numbers as the shipped task: the same environment and scenario
    _, shipped = evaluate(resolve_entry("truthful"), load_task(TOPO), quick=True)
    assert per_seed == shipped
    # default entries: the spec's baselines only
    result = run_leaderboard([COPY_TASK], None, tmp_path / "lb", quick=True, progress=False,
                             log=lambda *a: None)
    assert sorted(e for e, _ in result["evaluated"]) == ["markup", "truthful"]
    assert f"### {COPY_TASK}" in (tmp_path / "lb" / "leaderboard.md").read_text()
    # a changed user task is refused like a shipped one
    path = T.USER_TASKS[COPY_TASK][0]
    path.write_text(path.read_text().replace("episodes = 1 ", "episodes = 2 "))
    with pytest.raises(TaskError, match="changed"):
        load_task(COPY_TASK)


def test_the_policy_gets_a_copy_of_its_participant(tmp_path, monkeypatch):
    """What a policy does to its participant record never reaches the environment."""
    (tmp_path / "lb_mutating.py").write_text(textwrap.dedent("""
        from ogg_envs.policies.curve import truthful_bid

        class Mutates:
            def __call__(self, participant, observation, info):
                bid = truthful_bid(participant)
                participant.truth.cost_a = 1e6
                participant.limits.q_now = -5.0
                participant.rules["price_cap"] = 0.0
                return bid
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    row, per_seed = evaluate(resolve_entry("m=lb_mutating:Mutates"), load_task(TOPO),
                             quick=True)
    assert row["status"] == "ok", row["reason"]
    assert [s["efficiency"] for s in per_seed] == [1.0] * 2  # it bid truthfully throughout


def test_the_documented_example_policy_is_truthful_or_better(tmp_path, monkeypatch):
    """docs/leaderboard.md's example entry runs as written and earns at least the truthful
    profit without bidding below cost."""
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "leaderboard.md").read_text()
    section = doc[doc.index("### Your policy"):]
    code = section[section.index("```python") + len("```python"):]
    (tmp_path / "doc_example_policy.py").write_text(code[:code.index("```")])
    monkeypatch.syspath_prepend(str(tmp_path))
    task = load_task(TOPO)
    mine, _ = evaluate(resolve_entry("mine=doc_example_policy:MyPolicy"), task, quick=True)
    truthful, _ = evaluate(resolve_entry("truthful"), task, quick=True)
    assert mine["status"] == "ok", mine["reason"]
    assert mine["profit_usd_mean"] > truthful["profit_usd_mean"]
    assert 0.99 < mine["efficiency_mean"] <= 1.0
