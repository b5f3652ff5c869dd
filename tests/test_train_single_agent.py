"""Single-agent SB3 (PPO on a bid view, DQN on the bandit-arm view) runs, saves and evaluates."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("stable_baselines3", reason="training needs the [train] extra")


@pytest.mark.parametrize("gym_id, algo", [("opengridgym/TopologyPower-Supplier-v0", "PPO"),
                                          ("opengridgym/P2P-Prosumer-v0", "DQN")])
def test_single_agent_training_runs_and_evaluates(tmp_path, gym_id, algo):
    from stable_baselines3 import DQN, PPO

    from ogg_envs.baselines import sb3_single_agent as script

    args = script.Args(gym_id=gym_id, timesteps=1024, seed=0, out=tmp_path, run_name="run",
                       eval_seeds=[1000, 1001], progress=False)
    result = script.run(args)
    assert result["algo"] == algo and result["timesteps"] == 1024
    run_dir = tmp_path / "run"
    saved = json.loads((run_dir / "evaluation.json").read_text())
    assert saved["learned_mean_return"] == pytest.approx(result["learned_mean_return"])
    assert saved["baseline_mean_return"] != 0.0 and saved["eval_seeds"] == [1000, 1001]
    model = {"PPO": PPO, "DQN": DQN}[algo].load(run_dir / "model.zip")
    env = script.make_env(gym_id, 0)
    obs, _ = env.reset(seed=0)
    action, _ = model.predict(obs, deterministic=True)
    assert env.action_space.contains(action.astype(env.action_space.dtype)
                                     if hasattr(action, "astype") else action)


def test_the_script_refuses_an_earlier_run_and_an_unknown_view(tmp_path, capsys):
    from ogg_envs.baselines import sb3_single_agent as script

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "model.zip").write_bytes(b"earlier")
    with pytest.raises(SystemExit, match="holds an earlier run"):
        script.main(["--out", str(tmp_path), "--run-name", "run"])
    assert (tmp_path / "run" / "model.zip").read_bytes() == b"earlier"
    with pytest.raises(SystemExit, match="No-Such-View"):
        script.main(["--gym-id", "opengridgym/No-Such-View-v0", "--out", str(tmp_path)])
