"""Single-agent SB3 (PPO on a bid view, DQN on the bandit-arm view) runs, saves and evaluates."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("stable_baselines3", reason="training needs the [train] extra")


@pytest.mark.parametrize("gym_id, algo", [("opengridgym/TopologyPower-Supplier-v0", "PPO"),
                                          ("opengridgym/P2P-Prosumer-v0", "DQN")])
def test_single_agent_training_runs_and_evaluates(tmp_path, gym_id, algo, monkeypatch):
    from stable_baselines3 import DQN, PPO

    from ogg_envs.baselines import sb3_single_agent as script

    monkeypatch.setattr(script, "EVAL_SEEDS", range(2))
    result = script.run(gym_id, timesteps=1024, seed=0, out=tmp_path)
    assert result["algo"] == algo
    saved = json.loads((tmp_path / "evaluation.json").read_text())
    assert saved["learned_mean_return"] == pytest.approx(result["learned_mean_return"])
    assert saved["baseline_mean_return"] != 0.0
    model = {"PPO": PPO, "DQN": DQN}[algo].load(tmp_path / "model.zip")
    env = script.make_env(gym_id, 0)
    obs, _ = env.reset(seed=0)
    action, _ = model.predict(obs, deterministic=True)
    assert env.action_space.contains(action.astype(env.action_space.dtype)
                                     if hasattr(action, "astype") else action)
