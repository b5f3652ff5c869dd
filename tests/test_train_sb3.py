"""Short real trainings with Stable-Baselines3 (parameter-shared PPO through SuperSuit)."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("stable_baselines3", reason="SB3 training needs the [train] extra")
pytest.importorskip("supersuit", reason="SB3 training needs the [train] extra")

import torch  # noqa: E402
from stable_baselines3 import PPO  # noqa: E402

from ogg_envs.baselines import sb3_ppo  # noqa: E402
from ogg_envs.baselines.train_cli import train  # noqa: E402
from ogg_envs.leaderboard.tasks import load_task  # noqa: E402
from ogg_envs.markets.curve_market import Bid  # noqa: E402

TIMESTEPS = 1024


@pytest.fixture(autouse=True)
def small_rollouts(monkeypatch):
    """A rollout of 2 env copies x 64 steps x the agents, so 1k steps are 1-2 PPO updates."""
    monkeypatch.setattr(sb3_ppo, "N_ENVS", 2)
    monkeypatch.setattr(sb3_ppo, "N_STEPS", 64)
    monkeypatch.setattr(sb3_ppo, "BATCH_SIZE", 128)
    monkeypatch.setattr(sb3_ppo, "N_EPOCHS", 2)


def _params(model):
    return {k: v.detach().clone() for k, v in model.policy.state_dict().items()}


@pytest.mark.parametrize("env", list(sb3_ppo.TASKS))
def test_training_runs_is_deterministic_and_the_model_acts(env, tmp_path):
    a = sb3_ppo.run(env, TIMESTEPS, seed=3, out=tmp_path / "a", evaluate_policy=False,
                    progress=False)
    b = sb3_ppo.run(env, TIMESTEPS, seed=3, out=tmp_path / "b", evaluate_policy=False,
                    progress=False)
    assert a["training"]["agent_steps"] >= TIMESTEPS
    assert a["curve"] and a["curve"] == b["curve"]
    for d in ("a", "b"):
        assert (tmp_path / d / "learning_curve.png").stat().st_size > 0
        assert any((tmp_path / d / "tb").rglob("events.out.tfevents*"))
    ma, mb = PPO.load(tmp_path / "a" / "model.zip"), PPO.load(tmp_path / "b" / "model.zip")
    pa, pb = _params(ma), _params(mb)
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    # another seed trains to different parameters (the check above can fail)
    c = sb3_ppo.run(env, 256, seed=4, out=tmp_path / "c", evaluate_policy=False,
                    progress=False)
    pc = _params(PPO.load(tmp_path / "c" / "model.zip"))
    assert c["training"]["agent_steps"] >= 256
    assert not all(torch.equal(pa[k], pc[k]) for k in pa)
    # the loaded model acts in the task's env, and its actions are usable bids / arms
    task = load_task(sb3_ppo.TASKS[env][0])
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


def test_cli_dispatch_trains_and_evaluates_against_the_baseline(tmp_path, monkeypatch):
    monkeypatch.setattr(sb3_ppo, "EVAL_QUICK", True)
    result = train("opengridgym/topology-power-v0", backend="sb3", algo="ppo", timesteps=512,
                   seed=1, out=tmp_path)
    run_dir = tmp_path / "sb3_ppo_topology-power_s1"
    saved = json.loads((run_dir / "evaluation.json").read_text())
    assert saved["evaluation"] == result["evaluation"]
    rows = result["evaluation"]
    assert set(rows) == {"ppo", "truthful"}
    assert all(np.isfinite(r["profit_usd_mean"]) for r in rows.values())
    with pytest.raises(ValueError, match="no trainer"):
        train("topology-power", backend="sb3", algo="sac", timesteps=1, seed=0, out=tmp_path)


def test_env_resolution_and_an_env_without_a_task(tmp_path):
    """Short names, ids and task ids resolve through the registry; a registered environment
    without a task trains on its default configuration, without evaluation."""
    import pettingzoo

    import ogg_envs

    assert sb3_ppo.resolve_env("topology-power") == (
        "opengridgym/topology-power-v0", "topology-power/congested-v0", "truthful")
    assert sb3_ppo.resolve_env("p2p/multi-period-v0") == (
        "opengridgym/p2p-v0", "p2p/multi-period-v0", "ucb")
    assert sb3_ppo.resolve_env("opengridgym/dlmp-v0")[1] == "dlmp/37bus-day-v0"
    with pytest.raises(ValueError, match="unknown env"):
        sb3_ppo.resolve_env("no-such-market")
    env_id = "test/untasked-v0"
    ogg_envs.register(env_id, "ogg_envs.envs.topology_power_v0", codec="curve",
                      policies=ogg_envs.spec("opengridgym/topology-power-v0").policies,
                      baselines=("truthful",), replace=True)
    try:
        assert sb3_ppo.resolve_env(env_id) == (env_id, None, "truthful")
        result = train(env_id, backend="sb3", algo="ppo", timesteps=256, seed=0, out=tmp_path)
        assert result["task"] is None and "evaluation" not in result
        assert result["training"]["agent_steps"] >= 256
        assert (tmp_path / "sb3_ppo_test_untasked_s0" / "model.zip").is_file()
    finally:
        ogg_envs.ENVIRONMENTS.pop(env_id, None)
        pettingzoo.aec_registry.pop(env_id, None)
        pettingzoo.parallel_registry.pop(env_id, None)
