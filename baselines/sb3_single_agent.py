"""Single-agent Stable-Baselines3 on a Gymnasium view: one participant learns, the rest of the
market follows its baseline policies (``ogg_envs.wrappers.single_agent``).

PPO for the bid views (``Box(-1, 1, (k,))`` actions, valid by construction), DQN for the
bandit-arm view (``Discrete(n_arms)``). Reads top to bottom:

    python -m ogg_envs.baselines.sb3_single_agent --gym-id opengridgym/TopologyPower-Supplier-v0
    python -m ogg_envs.baselines.sb3_single_agent --gym-id opengridgym/P2P-Prosumer-v0

Writes ``model.zip``, ``learning_curve.png``, TensorBoard logs and ``evaluation.json`` (mean
episode return of the learned policy and of the baseline policy for the same participant, on
the same evaluation seeds) into ``--out``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

# ---------------------------------------------------------------- hyperparameters
GYM_ID = "opengridgym/TopologyPower-Supplier-v0"
TIMESTEPS = 20_000
SEED = 0
PPO_KWARGS = dict(n_steps=512, batch_size=128, learning_rate=3e-4, gamma=0.99, ent_coef=0.0)
DQN_KWARGS = dict(learning_rate=5e-4, buffer_size=20_000, learning_starts=500,
                  exploration_fraction=0.3, exploration_final_eps=0.05, target_update_interval=500)
EVAL_SEEDS = range(1000, 1010)


def make_env(gym_id: str, seed: int):
    import gymnasium

    import ogg_envs  # noqa: F401  (registers the views)

    env = gymnasium.make(gym_id)
    env.reset(seed=seed)
    return env


def episode_return(env, act, seed: int) -> float:
    obs, _ = env.reset(seed=seed)
    total, done = 0.0, False
    while not done:
        obs, reward, terminated, truncated, _ = env.step(act(obs))
        total += float(reward)
        done = terminated or truncated
    return total


def run(gym_id: str = GYM_ID, timesteps: int = TIMESTEPS, seed: int = SEED,
        out: str | Path = "runs/sb3_single") -> dict:
    import gymnasium
    import torch
    from stable_baselines3 import DQN, PPO
    from stable_baselines3.common.monitor import Monitor

    torch.set_num_threads(1)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    env = Monitor(make_env(gym_id, seed))
    discrete = isinstance(env.action_space, gymnasium.spaces.Discrete)
    algo, kwargs = (DQN, DQN_KWARGS) if discrete else (PPO, PPO_KWARGS)
    model = algo("MlpPolicy", env, seed=seed, verbose=0, tensorboard_log=str(out / "tb"),
                 **kwargs)
    model.learn(total_timesteps=timesteps, progress_bar=False)
    model.save(out / "model.zip")

    rewards = np.array(env.get_episode_rewards(), dtype=float)
    if len(rewards):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(np.cumsum(env.get_episode_lengths()), rewards, alpha=0.4, label="episode")
        k = max(1, len(rewards) // 10)
        ax.plot(np.cumsum(env.get_episode_lengths())[k - 1:],
                np.convolve(rewards, np.ones(k) / k, mode="valid"), label=f"mean of {k}")
        ax.set_xlabel("agent steps")
        ax.set_ylabel("episode return ($)")
        ax.set_title(f"{algo.__name__} on {gym_id}")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "learning_curve.png", dpi=120)
        plt.close(fig)

    eval_env = make_env(gym_id, seed)
    learned = [episode_return(eval_env, lambda o: model.predict(o, deterministic=True)[0], s)
               for s in EVAL_SEEDS]
    # The baseline: the same participant bidding with its default scripted policy.
    from ogg_envs.wrappers.single_agent import baseline_returns

    base = baseline_returns(make_env(gym_id, seed), EVAL_SEEDS)
    result = {"gym_id": gym_id, "algo": algo.__name__, "timesteps": timesteps, "seed": seed,
              "learned_mean_return": float(np.mean(learned)),
              "baseline_mean_return": float(np.mean(base)),
              "eval_seeds": list(EVAL_SEEDS)}
    (out / "evaluation.json").write_text(json.dumps(result, indent=2))
    return result


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gym-id", default=GYM_ID)
    p.add_argument("--timesteps", type=int, default=TIMESTEPS)
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument("--out", default="runs/sb3_single")
    a = p.parse_args(argv)
    result = run(a.gym_id, a.timesteps, a.seed, a.out)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
