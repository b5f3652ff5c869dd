"""The opengridgym command and the topology-power reproduction."""

from __future__ import annotations

import importlib.util
import json
import sys
import textwrap
from pathlib import Path

import daqp
import numpy as np
import pytest

import ogg_envs
from ogg_envs.cli import main

_DAQP_SOLVE = daqp.solve  # the library's own function (benchmarks wrap it for a while)


def test_list_names_every_environment_with_its_full_summary(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for env_id in ("topology-power-v0", "p2p-v0", "dlmp-v0"):
        assert f"opengridgym/{env_id}" in out
    for spec in ogg_envs.ENVIRONMENTS.values():
        assert " ".join(spec.summary.split()) in out  # never cut mid-sentence


def test_run_one_episode(capsys):
    assert main(["run", "opengridgym/topology-power-v0", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    summary = json.loads(out[out.index("{"):])
    assert summary["rounds"] == 72 and set(summary["returns"]) == {
        f"supplier_{i}" for i in range(4)}


def test_run_an_unknown_environment_exits_2_with_the_list(capsys):
    assert main(["run", "opengridgym/no-such-env-v0"]) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    assert "unknown environment 'opengridgym/no-such-env-v0'" in captured.err
    for env_id in ogg_envs.ENVIRONMENTS:
        assert env_id in captured.err


def test_run_passes_feeder_and_scenario_and_imports_a_users_environment(
        tmp_path, monkeypatch, capsys):
    """``--import`` a module from the current folder that registers an environment, then run
    it with a scenario file and another feeder."""
    import pettingzoo

    (tmp_path / "cli_user_env.py").write_text(textwrap.dedent("""
        import ogg_envs

        ogg_envs.register("test/cli-copy-v0", "ogg_envs.envs.topology_power_v0",
                          codec="curve", summary="a user's copy", replace=True)
    """))
    (tmp_path / "short.toml").write_text('name = "short"\nhorizon = 2\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    monkeypatch.delitem(sys.modules, "cli_user_env", raising=False)
    try:
        assert main(["run", "test/cli-copy-v0", "--import", "cli_user_env", "--scenario",
                     "short.toml", "--feeder", "ieee37"]) == 0
        out = capsys.readouterr().out
        summary = json.loads(out[out.index("{"):])
        assert summary["env"] == "test/cli-copy-v0"
        assert summary["rounds"] == 2 * 3  # the scenario's 2 hours, 3 market rounds each
        env = ogg_envs.make("test/cli-copy-v0", parallel=True, scenario="short.toml",
                            feeder="ieee37")
        assert env.scenario.feeder == "ieee37" and env.horizon == 2
    finally:
        ogg_envs.ENVIRONMENTS.pop("test/cli-copy-v0", None)
        pettingzoo.aec_registry.pop("test/cli-copy-v0", None)
        pettingzoo.parallel_registry.pop("test/cli-copy-v0", None)


def test_bad_feeder_and_missing_import_exit_2(capsys):
    assert main(["run", "opengridgym/topology-power-v0", "--feeder", "no_such_feeder"]) == 2
    assert "no_such_feeder" in capsys.readouterr().err
    assert main(["run", "opengridgym/topology-power-v0", "--import", "no_such_mod_xyz"]) == 2
    assert "no_such_mod_xyz" in capsys.readouterr().err


def test_train_an_unknown_environment_exits_2(capsys):
    assert main(["train", "no-such-market"]) == 2
    assert "unknown env 'no-such-market'" in capsys.readouterr().err


def test_reproduce_topology_power_shows_the_papers_effects(tmp_path, capfd):
    assert main(["reproduce", "topology-power", "--out", str(tmp_path)]) == 0
    out = capfd.readouterr().out
    # a table to read, not JSON; the numbers the README quotes
    assert "{" not in out and "Use case 1 - topology-induced market power" in out
    assert "| average consumer price, 8 % flexible  |           6.64 |" in out
    data = json.loads((tmp_path / "topology_power.json").read_text())
    assert f"{data['flexibility']['0.75']:.2f} |" in out
    unc = set(round(p, 4) for p in data["uncongested"]["prices"].values())
    assert unc == {4.3}, "truthful bids at the peak: the wholesale price everywhere"
    con = data["congested"]
    assert con["congested"] and max(con["prices"].values()) > 5.0
    assert abs(min(con["prices"].values()) - 4.3) < 1e-4, "upstream stays at the wholesale price"
    flex = data["flexibility"]
    assert flex["0.75"] < flex["0.08"] - 0.3, "flexible demand blunts market power"
    for name in ("curves", "price_map", "flexibility"):
        assert (tmp_path / f"topology_power_{name}.png").stat().st_size > 10_000


def test_leaderboard_list_shows_tasks_and_baselines(capsys):
    assert main(["leaderboard", "--list"]) == 0
    out = capsys.readouterr().out
    assert "topology-power/congested-v0" in out and "entry ucb" in out
    assert "PerParticipant(spec='ucb')" in out


FIVE_BUS = str(Path(__file__).resolve().parents[1] / "examples" / "feeders" / "five_bus"
               / "master.dss")


def test_every_subcommand_once_with_a_users_feeder(tmp_path, capfd):
    """list, run, reproduce, bench, train and leaderboard, quick, on a user's .dss where the
    subcommand makes an environment; solver banners never reach the terminal."""
    assert main(["list"]) == 0
    assert main(["run", "opengridgym/dlmp-v0", "--feeder", FIVE_BUS]) == 0
    out = capfd.readouterr().out
    assert json.loads(out[out.index("{"):])["env"] == "opengridgym/dlmp-v0"

    assert main(["reproduce", "all", "--quick", "--feeder", FIVE_BUS, "--out",
                 str(tmp_path / "rep"), "--no-progress"]) == 0
    captured = capfd.readouterr()
    for n in (1, 2, 3):
        assert f"Use case {n} - " in captured.out
    assert "'feeder': " in captured.out and "five_bus" in captured.out
    assert "Running HiGHS" not in captured.out + captured.err
    for name in ("topology_power", "p2p", "dlmp"):
        data = json.loads((tmp_path / "rep" / f"{name}.json").read_text())
        for figure in data["figures"]:
            assert (tmp_path / "rep" / figure).stat().st_size > 5_000

    assert main(["bench", "--only", "grid", "--quick"]) == 0
    assert "== [1/1] bench_grid.py" in capfd.readouterr().out

    if importlib.util.find_spec("stable_baselines3") is not None:
        assert main(["train", "topology-power", "--feeder", FIVE_BUS, "--timesteps", "64",
                     "--out", str(tmp_path / "runs"), "--quick-eval", "--no-progress",
                     "--n-envs", "1", "--n-steps", "16", "--batch-size", "32",
                     "--n-epochs", "1"]) == 0
        out = capfd.readouterr().out
        assert "five_bus" in out and "| truthful " in out
        saved = json.loads((tmp_path / "runs" / "sb3_ppo_topology-power_s0" /
                            "evaluation.json").read_text())
        assert saved["args"]["feeder"] == FIVE_BUS and set(saved["evaluation"]) == {
            "ppo", "truthful"}

    assert main(["leaderboard", "--quick", "--tasks", "topology-power/congested-v0",
                 "--entries", "truthful", "--out", str(tmp_path / "lb"), "--no-progress"]) == 0
    assert "1 evaluated" in capfd.readouterr().out


def test_bad_arguments_exit_non_zero_with_a_message_and_no_traceback(capsys):
    def fails(argv, code, *texts):
        try:
            assert main(argv) == code
        except SystemExit as exc:  # argparse's own usage errors
            assert exc.code == code
        captured = capsys.readouterr()
        assert "Traceback" not in captured.out + captured.err
        for text in texts:
            assert text in captured.err, (argv, captured.err)

    fails(["train", "topology-power", "--timesteps", "0"], 2, "--timesteps", "must be positive")
    fails(["train", "topology-power", "--timesteps", "many"], 2, "positive integer")
    fails(["train", "no-such-market"], 2, "unknown env 'no-such-market'")
    if importlib.util.find_spec("stable_baselines3") is not None:
        fails(["train", "topology-power", "--feeder", "no_such_feeder", "--no-eval"], 2,
              "no_such_feeder")
    fails(["reproduce", "no-such-use-case"], 2, "invalid choice: 'no-such-use-case'")
    fails(["reproduce", "dlmp", "--feeder", "no_such_feeder", "--no-progress"], 2,
          "no_such_feeder")
    fails(["run", "opengridgym/p2p-v0", "--scenario", "no_such.toml"], 2, "no_such.toml")
    fails(["run", "opengridgym/p2p-v0", "--no-such-option"], 2, "unrecognized arguments")
    fails(["bench", "--only", "no-such-benchmark"], 2, "no benchmark matches")
    fails(["leaderboard", "--tasks", "no/such-task-v0", "--out", "/tmp/unused"], 2,
          "unknown task 'no/such-task-v0'")
    if importlib.util.find_spec("ray") is None:  # a missing extra: the install command
        fails(["train", "topology-power", "--backend", "rllib"], 1,
              "pip install 'opengridgym[rllib]'")


def test_training_scripts_import_without_their_frameworks_checks():
    """rllib_ppo imports (and parses its arguments) without Ray; the CLI checks the extra."""
    from ogg_envs.baselines import common, rllib_ppo

    args = common.parse_args(rllib_ppo.Args, ["--env-runners", "2", "--envs-per-runner", "4"])
    assert (args.env_runners, args.envs_per_runner, args.train_batch) == (2, 4, 2000)
    assert common.missing_extra("sb3", "ppo") is None or "opengridgym[train]" in \
        common.missing_extra("sb3", "ppo")


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load_benchmark_module(name: str):
    """A module of benchmarks/ (not a package), loaded from its file."""
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_quick_writes_the_numbers_and_the_readme_table_reads_them(tmp_path, capfd,
                                                                       monkeypatch):
    path = tmp_path / "bench.json"
    assert main(["bench", "--only", "grid", "--quick", "--json", str(path)]) == 0
    out = capfd.readouterr().out
    assert "floor" in out and f"wrote {path}" in out
    data = json.loads(path.read_text())
    assert data["quick"] is True and set(data["benchmarks"]) == {"grid"}
    rows = data["benchmarks"]["grid"]["result"]["feeders"]
    assert [r["feeder"] for r in rows] == ["ieee34 (taps held)", "ieee34 (regulators moving)",
                                           "ieee37 (regulators moving)"]
    for r in rows:  # a grid step is the floor's solve plus writing loads and reading results
        assert 0 < r["floor_ms"] < r["grid_step_ms"]
        assert r["grid_step_x_floor"] == r["grid_step_ms"] / r["floor_ms"]
    monkeypatch.setitem(sys.modules, "_timing", _load_benchmark_module("_timing"))
    table = _load_benchmark_module("readme_table").main([str(path)])
    assert table.startswith("| feeder | bare solve (floor) |")
    assert f"| ieee34 (taps held) | {rows[0]['floor_ms']:.3f} ms |" in table
    assert "2 CPUs" in table or "CPUs" in table


def test_env_benchmark_times_solved_clears_apart_from_the_markets_cache(monkeypatch):
    """Structured (markup) bids repeat within an hour: with 3 market rounds, 2 of every 3
    clears are the market's result cache and are not timed; random bids never repeat."""
    timing = _load_benchmark_module("_timing")
    env = ogg_envs.make("opengridgym/topology-power-v0", parallel=True)
    assert env.market_rounds == 3
    env_id = "opengridgym/topology-power-v0"
    structured = timing.run_env(env, timing.structured_actions(env_id), seconds=0.3,
                                warmup_steps=0)
    hours = structured["steps"] / 3
    assert structured["clears"] == int(np.ceil(hours))
    assert abs(structured["cached_share"] - 2 / 3) < 0.05
    assert "clear" not in vars(env.market)  # the timing wrapper is gone
    rand = timing.run_env(env, timing.random_actions, seconds=0.3, warmup_steps=0)
    assert rand["cached_share"] == 0 and rand["clears"] == rand["steps"]
    assert 0 < rand["clear_ms_p50"] <= rand["clear_ms_p99"]
    # where a step's time goes: the clearing part counts every timed clear (at least half of
    # them last the median or more), the OpenDSS part the solves (every grid step solves), and
    # the rest is what is left of the step
    split = rand["step_ms"]
    assert split["clear"] >= 0.5 * rand["clears"] * rand["clear_ms_p50"] / rand["steps"]
    assert split["clear"] < 1e3 / rand["steps_per_s"]
    assert split["opendss"] >= rand["steps"] // 3 * 1e-3 / rand["steps"]  # > 1 us a solve
    assert split["rest"] > 0
    # the solver's own calls (DAQP) are part of the clearings, and the library is unwrapped
    assert 0 < split["solver"] < split["clear"]
    assert 0 < rand["solver_ms_p50"] < rand["clear_ms_p50"]
    assert daqp.solve is _DAQP_SOLVE
    # env_benchmark runs the kinds in turns: slices of two runs on the one env, each run's
    # figures its own slices' (the structured one still hits the cache 2 times in 3)
    runs = {"structured": timing.EnvRun(env, timing.structured_actions(env_id), warmup_steps=0),
            "random": timing.EnvRun(env, timing.random_actions, warmup_steps=0)}
    for _ in range(2):
        for run in runs.values():
            steps = run.steps
            run.run(0.1)
            assert run.steps > steps
    structured, rand = runs["structured"].summary(), runs["random"].summary()
    assert rand["cached_share"] == 0 and rand["clears"] == rand["steps"]
    assert abs(structured["cached_share"] - 2 / 3) < 0.1
    assert "clear" not in vars(env.market) and daqp.solve is _DAQP_SOLVE
    # tied bids: every learner the same offer (bench_topology_power.tied), a valid bid
    env.reset(seed=0)
    monkeypatch.setitem(sys.modules, "_timing", timing)  # what `import _timing` finds
    bench = _load_benchmark_module("bench_topology_power")
    bids = {a: bench.tied(env, a, None) for a in env.agents}
    assert len({tuple(b[:2]) for b in bids.values()}) == 1 and bids["supplier_0"][0] == \
        env.price_cap
    _, _, _, _, infos = env.step(bids)
    assert not any("bid_repairs" in i for i in infos.values())
    assert ogg_envs.spec(env_id).policies["markup"]().markup == 0.3


def test_solver_clock_times_the_solvers_calls_and_restores_them():
    """SolverClock wraps DAQP's and HiGHS's calls for its block only; a DLMP market clearing
    with HiGHS runs it inside it."""
    from ogg_envs.api import MarketContext
    from ogg_envs.grid.topology import Branch, Topology
    from ogg_envs.markets.dlmp import DLMPMarket, Resource
    from ogg_envs.markets.solvers import highs_lp

    timing = _load_benchmark_module("_timing")
    run = highs_lp.HIGHS.run
    market = DLMPMarket(Topology("s", [Branch("s-a", "s", "a", (), 20.0)]),
                        [Resource("g", "a", "generator")], solver="highs")
    hour = MarketContext(demand_kw=[0.0, 30.0], capacity_kw=[40.0], source_price=5.0)
    with timing.SolverClock() as clock:
        assert highs_lp.HIGHS.run is not run and daqp.solve is not _DAQP_SOLVE
        market.clear([[1.0, 2.0, 3.0]], hour)
    assert clock.seconds > 0
    assert highs_lp.HIGHS.run is run and daqp.solve is _DAQP_SOLVE
    seconds = clock.seconds
    market.clear([[1.0, 2.0, 4.0]], hour)  # outside: not timed
    assert clock.seconds == seconds


def test_goal_budget_sets_the_engines_against_the_goals_step(monkeypatch):
    """A random step of 1 ms (1,000 steps/s) against a goal of 2,000 steps/s (0.5 ms):
    OpenDSS 0.1 ms and the solver 0.2 ms take 60 % of the goal's step, and the other 0.7 ms
    of the step are 3.5x the 0.2 ms left; the README's table shows it."""
    timing = _load_benchmark_module("_timing")
    monkeypatch.setitem(sys.modules, "_timing", timing)  # what `import _timing` finds
    row = {"steps_per_s": 1000.0, "step_ms": {"clear": 0.5, "solver": 0.2, "opendss": 0.1,
                                              "rest": 0.4}}
    result = {"goal_steps_per_s": 2000, "actions": {"random": row}}
    b = timing.goal_budget(result)
    assert b["goal_step_ms"] == 0.5 and abs(b["engines_ms"] - 0.3) < 1e-12
    assert abs(b["engines_share"] - 0.6) < 1e-12 and abs(b["python_ms"] - 0.7) < 1e-12
    assert abs(b["python_budget_ms"] - 0.2) < 1e-12 and abs(b["python_over"] - 3.5) < 1e-9
    assert timing.goal_budget({"goal_steps_per_s": None, "actions": {"random": row}}) is None
    table = _load_benchmark_module("readme_table").budget_table({"dlmp": {"result": result}})
    assert table[-1] == "| dlmp | 2,000 steps/s | 0.500 ms | 0.300 ms (60%) | 0.700 ms | 0.20 ms |"


def test_p2p_benchmark_splits_the_steps_that_end_an_hour_from_the_others(monkeypatch):
    """Ten negotiation steps make an hour: one step in ten runs the grid step; the two kinds'
    shares are of one total."""
    monkeypatch.setitem(sys.modules, "_timing", _load_benchmark_module("_timing"))
    split = _load_benchmark_module("bench_p2p").hour_split(0.2)
    end, rest = split["ending an hour"], split["the others"]
    assert end["steps"] > 0 and abs(rest["steps"] - 9 * end["steps"]) <= 9
    assert abs(end["share"] + rest["share"] - 1.0) < 1e-9 and end["ms_p50"] > 0


def test_goal_checks_judge_each_goal_on_its_own_figure(monkeypatch):
    """Issue #12's goals against a run: throughput, the clearing's p50 and p99, random over
    structured throughput and the step over the floor, each met or not by its own number (a
    figure on either side of its goal), and the README's goals table says which."""
    timing = _load_benchmark_module("_timing")
    monkeypatch.setitem(sys.modules, "_timing", timing)
    random = {"steps_per_s": 1800.0, "clear_ms_p50": 0.16, "clear_ms_p99": 0.3,
              "x_floor": {"step": 3.5}}
    result = {"goal_steps_per_s": 1500, "actions": {"random": random,
                                                    "structured": {"steps_per_s": 3200.0}},
              "goals": {"clear_ms_p50": 0.15, "clear_ms_p99": 0.5,
                        "random_over_structured": 0.6, "step_x_floor": 4.0}}
    checks = timing.goal_checks(result)
    assert [met for _, _, met in checks] == [True, False, True, False, True]
    assert checks[1] == ("random bids' clear p50 <= 0.15 ms", "0.160 ms", False)
    assert checks[3] == ("random / structured steps/s >= 0.6", "0.56", False)
    assert timing.goal_checks({"actions": {"random": random}}) == []  # no goals: none judged
    table = _load_benchmark_module("readme_table").goals_table(
        {"topology_power": {"result": result}})
    assert table[2] == "| topology-power | random actions >= 1,500 steps/s | 1,800 | yes |"
    assert table[3] == "| topology-power | random bids' clear p50 <= 0.15 ms | 0.160 ms | **no** |"
    assert len(table) == 2 + len(checks)


def test_instruction_counts_are_split_by_where_they_ran(capsys, monkeypatch):
    """bench_instructions reads a callgrind profile into parts: a cost line counts for the
    object its code is in, inlined files included (``fi=``), a call's inclusive cost (the line
    after ``calls=``) is not counted again, and the parts add up to the summary; its driver
    replays a recorded episode."""
    monkeypatch.setitem(sys.modules, "_timing", _load_benchmark_module("_timing"))
    bench = _load_benchmark_module("bench_instructions")
    profile = "\n".join([
        "events: Ir", "summary: 1000",
        "ob=(1) /x/lib/libpython3.11.so.1.0", "fl=(1) ceval.c", "fn=(1) eval",
        "10 300",
        "cob=(2) /x/libklusolvex-39b5efc9.so", "cfn=(2) klu", "calls=1 5",
        "11 250",  # the call's inclusive cost: counted where the callee's own lines are
        "fi=(2) object.h", "12 100",  # inlined into libpython: still Python
        "fe=(1)", "+1 50",
        "ob=(2)", "fl=(3) klu.c", "fn=(2)", "5 250",
        "ob=(3) /x/daqp.cpython-311.so", "fl=(4) a.c", "fn=(3) solve", "1 200",
        "ob=(4) /usr/lib/x86_64-linux-gnu/libc.so.6", "fn=(4) memcpy", "* 93",
        "ob=(5) /x/libunknown.so", "fn=(5) mystery", "-1 7",
    ])
    assert bench.split(profile) == {"Python": 450, "OpenDSS": 250, "solver": 200,
                                    "C library": 93, "other": 7}
    with pytest.raises(ValueError, match="add up to"):
        bench.split(profile.replace("summary: 1000", "summary: 999"))
    bench.drive("p2p", 1)
    assert int(capsys.readouterr().out.split()[-1]) > 0  # the steps replayed
    row = {"steps": 10, "total": 3.5e6, "parts": {"OpenDSS": 1.4e6, "Python": 2.1e6}}
    table = _load_benchmark_module("readme_table").instructions_table({"tp": {"new": row}})
    assert table[-1] == "| topology-power | new | 3,500k | 1,400k | 0k | 0k | 2,100k | 0k | 0k |"


def test_bench_pairs_steps_two_checkouts_in_turns(tmp_path, capsys, monkeypatch):
    """bench_pairs against this very checkout: both sides step the same recorded actions in
    turns and report steps/s and pair-by-pair ratios (here the pairs' own noise, around 1)."""
    monkeypatch.setitem(sys.modules, "_timing", _load_benchmark_module("_timing"))
    rows = _load_benchmark_module("bench_pairs").main(
        ["--env", "p2p", "--actions", "random", "tied", "--pairs", "2", "--steps", "30",
         "--json", str(tmp_path / "pairs.json")])
    assert [r["actions"] for r in rows] == ["random", "tied"]
    for r in rows:
        assert r["base_steps_per_s"] > 0 and r["this_steps_per_s"] > 0 and r["pairs"] == 2
        assert 0.2 < r["speed_ratio"]["median"] < 5.0
        assert r["speed_ratio"]["min"] <= r["speed_ratio"]["median"] <= r["speed_ratio"]["max"]
    assert "this / base per pair" in capsys.readouterr().out
    assert json.loads((tmp_path / "pairs.json").read_text())["benchmark"] == "pairs"
