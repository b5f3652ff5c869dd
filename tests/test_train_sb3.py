"""Short real trainings with Stable-Baselines3 (parameter-shared PPO through SuperSuit)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

pytest.importorskip("stable_baselines3", reason="SB3 training needs the [train] extra")
pytest.importorskip("supersuit", reason="SB3 training needs the [train] extra")

import torch  # noqa: E402
from stable_baselines3 import PPO  # noqa: E402

from ogg_envs.baselines import common, sb3_ppo  # noqa: E402
from ogg_envs.cli import main  # noqa: E402
from ogg_envs.leaderboard.tasks import load_task  # noqa: E402
from ogg_envs.markets.curve_market import Bid  # noqa: E402

# A rollout of 2 env copies x 64 steps x the agents, so 1k agent steps are 1-2 PPO updates.
SMALL = {"n_envs": 2, "n_steps": 64, "batch_size": 128, "n_epochs": 2, "progress": False}
SMALL_CLI = ["--n-envs", "2", "--n-steps", "64", "--batch-size", "128", "--n-epochs", "2",
             "--no-progress"]


def _params(model):
    return {k: v.detach().clone() for k, v in model.policy.state_dict().items()}


def test_args_come_from_the_command_line_with_their_documentation(capsys):
    args = common.parse_args(sb3_ppo.Args, [
        "--env", "dlmp", "--net-arch", "32", "32", "32", "--no-normalize-reward",
        "--learning-rate", "1e-3", "--import", "a", "--import", "b", "--no-eval"])
    assert args == sb3_ppo.Args(env="dlmp", net_arch=[32, 32, 32], normalize_reward=False,
                                learning_rate=1e-3, imports=["a", "b"], eval=False)
    assert sb3_ppo.Args().net_arch == [64, 64] and sb3_ppo.Args().timesteps == 100_000
    with pytest.raises(SystemExit) as exit_:
        common.parse_args(sb3_ppo.Args, ["--timesteps", "0"])
    assert exit_.value.code == 2
    assert "--timesteps must be positive, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        common.parse_args(sb3_ppo.Args, ["--help"])
    out = capsys.readouterr().out
    for text in ("--n-steps", "rollout length per vector entry", "--feeder", "--force",
                 "(default: 0.95)"):
        assert text in " ".join(out.split())


@pytest.mark.parametrize("env", list(common.TASKS))
def test_training_runs_is_deterministic_and_the_model_acts(env, tmp_path):
    def run(seed, name, timesteps=1024):
        return sb3_ppo.run(sb3_ppo.Args(env=env, timesteps=timesteps, seed=seed, out=tmp_path,
                                        run_name=name, eval=False, **SMALL))

    a, b = run(3, "a"), run(3, "b")
    t = a["training"]
    # the trainer runs whole rollouts: what the progress bar counts up to, exactly
    assert t["agent_steps"] == common.rounded_up(1024, t["rollout_agent_steps"])
    assert t["rollout_agent_steps"] == 2 * 64 * t["n_agents"]
    assert a["curve"] and a["curve"] == b["curve"]
    for d in ("a", "b"):
        assert (tmp_path / d / "learning_curve.png").stat().st_size > 0
        assert any((tmp_path / d / "tb").rglob("events.out.tfevents*"))
    ma, mb = PPO.load(tmp_path / "a" / "model.zip"), PPO.load(tmp_path / "b" / "model.zip")
    pa, pb = _params(ma), _params(mb)
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    # another seed trains to different parameters (the check above can fail)
    c = run(4, "c", timesteps=256)
    pc = _params(PPO.load(tmp_path / "c" / "model.zip"))
    assert c["training"]["agent_steps"] >= 256
    assert not all(torch.equal(pa[k], pc[k]) for k in pa)
    # the loaded model acts in the task's env, and its actions are usable bids / arms
    task = load_task(common.TASKS[env][0])
    par = task.make_env()
    obs, _ = par.reset(seed=0)
    policy = sb3_ppo.LearnedPolicy(ma, par)
    while par.agents:
        actions = {}
        for agent in par.agents:
            participant = par.participant[agent].copy()
            info = {"action_space": par.action_space(agent)}
            actions[agent] = policy(participant, obs[agent], info)
            if env == "opengridgym/topology-power-v0":
                Bid.from_array(actions[agent]).check(agent, par.rules["price_cap"], 0.0,
                                                     participant.limits.q_now)
            assert par.action_space(agent).contains(
                np.asarray(actions[agent], dtype=par.action_space(agent).dtype))
        obs, rewards, _, _, infos = par.step(actions)
        assert all(np.isfinite(r) for r in rewards.values())
        assert not any("bid_repairs" in i for i in infos.values())


def test_cli_trains_evaluates_prints_the_table_and_keeps_earlier_runs(tmp_path, capsys):
    argv = ["train", "opengridgym/topology-power-v0", "--timesteps", "512", "--seed", "1",
            "--out", str(tmp_path), "--quick-eval", *SMALL_CLI]
    assert main(argv) == 0
    run_dir = tmp_path / "sb3_ppo_topology-power_s1"
    saved = json.loads((run_dir / "evaluation.json").read_text())
    rows = saved["evaluation"]
    assert set(rows) == {"ppo", "truthful"}
    assert all(np.isfinite(r["profit_usd_mean"]) for r in rows.values())
    assert saved["args"]["n_envs"] == 2 and saved["args"]["timesteps"] == 512
    out = capsys.readouterr().out
    table = out[out.index("| policy"):]
    assert "profit ($)" in table and "| ppo " in table and "| truthful " in table
    assert f"{rows['truthful']['profit_usd_mean']:,.2f}" in table
    assert f"results in {run_dir}" in out
    # the same run again is refused (nothing trains), --force replaces it
    model = (run_dir / "model.zip").read_bytes()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "holds an earlier run" in err and "--force" in err and "Traceback" not in err
    assert (run_dir / "model.zip").read_bytes() == model
    assert main(argv + ["--no-eval", "--force"]) == 0
    assert "not evaluated" in capsys.readouterr().out
    assert "evaluation" not in json.loads((run_dir / "evaluation.json").read_text())
    assert main(["train", "topology-power", "--algo", "sac"]) == 2
    assert "no trainer for --backend sb3 --algo sac" in capsys.readouterr().err


def test_env_resolution_and_an_env_without_a_task(tmp_path):
    """Short names, ids and task ids resolve through the registry; a registered environment
    without a task trains and is evaluated on its default configuration."""
    import pettingzoo

    import ogg_envs

    assert common.resolve_env("topology-power") == (
        "opengridgym/topology-power-v0", "topology-power/congested-v0", "truthful")
    assert common.resolve_env("p2p/multi-period-v0") == (
        "opengridgym/p2p-v0", "p2p/multi-period-v0", "ucb")
    assert common.resolve_env("opengridgym/dlmp-v0")[1] == "dlmp/37bus-day-v0"
    with pytest.raises(ValueError, match="unknown env"):
        common.resolve_env("no-such-market")
    env_id = "test/untasked-v0"
    ogg_envs.register(env_id, "ogg_envs.envs.topology_power_v0", codec="curve",
                      policies=ogg_envs.spec("opengridgym/topology-power-v0").policies,
                      baselines=("truthful",), replace=True)
    try:
        assert common.resolve_env(env_id) == (env_id, None, "truthful")
        result = sb3_ppo.run(sb3_ppo.Args(env=env_id, timesteps=256, seed=0, out=tmp_path,
                                          quick_eval=True, **SMALL))
        assert result["task"] == "test/untasked-v0 (default configuration)"
        assert set(result["evaluation"]) == {"ppo", "truthful"}
        assert result["evaluation"]["truthful"]["seeds"] == 2
        assert result["training"]["agent_steps"] == math.ceil(256 / 512) * 512
        assert (tmp_path / "sb3_ppo_test_untasked_s0" / "model.zip").is_file()
    finally:
        ogg_envs.ENVIRONMENTS.pop(env_id, None)
        pettingzoo.aec_registry.pop(env_id, None)
        pettingzoo.parallel_registry.pop(env_id, None)


def test_worker_processes_step_the_envs_reproducibly_and_end_with_the_run(tmp_path):
    """--num-cpus 2: SuperSuit steps the env copies in two worker processes; the same seed
    trains to the same parameters, the workers end with the run (no process is left to hang
    the interpreter's exit), and more processes than env copies are refused."""
    import multiprocessing
    import os

    args = sb3_ppo.Args(env="dlmp", n_envs=2, num_cpus=2)
    venv, n_agents = sb3_ppo.make_vec_env(load_task(common.TASKS["opengridgym/dlmp-v0"][0])
                                          .make_env, args)
    inner = venv
    while hasattr(inner, "venv"):
        inner = inner.venv
    try:
        pids = {p.pid for p in inner.procs}
        assert len(pids) == 2 and os.getpid() not in pids
        assert venv.num_envs == 2 * n_agents
    finally:
        venv.close()
    assert not multiprocessing.active_children()

    def run(name):
        return sb3_ppo.run(sb3_ppo.Args(env="dlmp", timesteps=256, seed=5, out=tmp_path,
                                        run_name=name, eval=False, num_cpus=2, **SMALL))

    a, b = run("a"), run("b")
    assert not multiprocessing.active_children()
    assert a["training"]["num_cpus"] == 2 and a["curve"] == b["curve"]
    pa = _params(PPO.load(tmp_path / "a" / "model.zip"))
    pb = _params(PPO.load(tmp_path / "b" / "model.zip"))
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    with pytest.raises(ValueError, match=r"--num-cpus \(3\) must be at most --n-envs \(2\)"):
        sb3_ppo.Args(n_envs=2, num_cpus=3)
    with pytest.raises(ValueError, match="--num-cpus must be positive"):
        sb3_ppo.Args(num_cpus=0)


def test_the_vector_env_drops_the_infos_unless_asked_to_keep_them():
    """PPO reads no infos: the trainer's vector env hands out none of the environment's
    (only the vector env's own keys); ``keep_infos`` passes them on."""
    make = load_task(common.TASKS["opengridgym/topology-power-v0"][0]).make_env
    seen = {}
    for keep in (False, True):
        venv, _ = sb3_ppo.make_vec_env(make, sb3_ppo.Args(n_envs=1, keep_infos=keep))
        try:
            venv.reset()
            actions = np.stack([venv.action_space.sample() for _ in range(venv.num_envs)])
            _, _, _, infos = venv.step(actions)
            seen[keep] = [set(info) for info in infos]
        finally:
            venv.close()
    assert all("price" in keys and "profit" in keys for keys in seen[True])
    assert not any(keys & {"price", "profit", "bid"} for keys in seen[False])
