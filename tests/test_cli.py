"""The opengridgym command and the topology-power reproduction."""

from __future__ import annotations

import json
import sys
import textwrap

import ogg_envs
from ogg_envs.cli import main


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


def test_reproduce_topology_power_shows_the_papers_effects(tmp_path):
    assert main(["reproduce", "topology-power", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "topology-power.json").read_text())
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
