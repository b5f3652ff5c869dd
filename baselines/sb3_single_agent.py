"""Single-agent Stable-Baselines3 on a Gymnasium view: one participant learns, the rest of the
market follows its baseline policies (``ogg_envs.wrappers.single_agent``).

PPO for the bid views (``Box(-1, 1, (k,))`` actions, valid by construction), DQN for the
bandit-arm view (``Discrete(n_arms)``). Reads top to bottom:

    python -m ogg_envs.baselines.sb3_single_agent --gym-id opengridgym/TopologyPower-Supplier-v0
    python -m ogg_envs.baselines.sb3_single_agent --gym-id opengridgym/P2P-Prosumer-v0

Writes ``model.zip``, ``learning_curve.png``, TensorBoard logs and ``evaluation.json`` (mean
episode return of the learned policy and of the baseline policy for the same participant, on
the same evaluation seeds) into ``--out/--run-name`` (default
``runs/sb3_single_<view>_s<seed>``; an earlier run there is kept unless ``--force``).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field

import gymnasium
import numpy as np
import torch
from stable_baselines3 import DQN, PPO
from stable_baselines3.common.monitor import Monitor

import ogg_envs  # noqa: F401  (registers the Gymnasium views)
from ogg_envs.baselines import common
from ogg_envs.wrappers.single_agent import baseline_returns


@dataclass
class Args:
    gym_id: str = "opengridgym/TopologyPower-Supplier-v0"
    """the Gymnasium view to train on (one participant learns, the others follow their
    baselines)"""
    seed: int = 0
    """seed of the network, the environment and the sampling"""
    timesteps: int = 20_000
    """agent steps to train (PPO rounds up to whole rollouts of n_steps)"""
    out: str = "runs"
    """the folder of runs"""
    run_name: str | None = None
    """this run's folder in --out (default sb3_single_<view>_s<seed>)"""
    force: bool = False
    """replace an earlier run in that folder"""
    eval_seeds: list[int] = field(default_factory=lambda: list(range(1000, 1010)))
    """seeds of the evaluation episodes (learned policy and baseline)"""
    progress: bool = True
    """show progress bars"""
    # ------------------------------------------------------------------ PPO (bid views)
    ppo_n_steps: int = 512
    """PPO's rollout length"""
    ppo_batch_size: int = 128
    """PPO's minibatch size"""
    ppo_learning_rate: float = 3e-4
    """PPO's step size"""
    ppo_gamma: float = 0.99
    """PPO's discount factor"""
    ppo_ent_coef: float = 0.0
    """PPO's entropy bonus"""
    # ------------------------------------------------------------------ DQN (arm view)
    dqn_learning_rate: float = 5e-4
    """DQN's step size"""
    dqn_buffer_size: int = 20_000
    """DQN's replay buffer"""
    dqn_learning_starts: int = 500
    """agent steps before DQN learns"""
    dqn_exploration_fraction: float = 0.3
    """share of training over which epsilon decays"""
    dqn_exploration_final_eps: float = 0.05
    """epsilon after the decay"""
    dqn_target_update_interval: int = 500
    """agent steps between target network updates"""

    def __post_init__(self):
        common.check_positive(self, "timesteps", "ppo_n_steps", "ppo_batch_size",
                              "dqn_buffer_size")


def make_env(gym_id: str, seed: int):
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


def plot_episodes(env: Monitor, path, title: str) -> None:
    """Each training episode's return and a running mean, against agent steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rewards = np.array(env.get_episode_rewards(), dtype=float)
    steps = np.cumsum(env.get_episode_lengths())
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(steps, rewards, alpha=0.4, label="episode")
    k = max(1, len(rewards) // 10)
    ax.plot(steps[k - 1:], np.convolve(rewards, np.ones(k) / k, mode="valid"),
            label=f"mean of {k}")
    ax.set_xlabel("agent steps")
    ax.set_ylabel("episode return (the view's reward)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(args: Args) -> dict:
    """Train, save, plot and evaluate as ``args`` says; returns what ``evaluation.json``
    holds."""
    view = args.gym_id.split("/")[-1].rsplit("-v", 1)[0]
    try:
        env = Monitor(make_env(args.gym_id, args.seed))
        run_dir = common.run_folder(args.out, args.run_name or f"sb3_single_{view}_s{args.seed}",
                                    args.force)
    except (ValueError, OSError, gymnasium.error.Error) as exc:
        raise common.SetupError(str(exc)) from exc
    torch.set_num_threads(1)
    if isinstance(env.action_space, gymnasium.spaces.Discrete):
        model = DQN("MlpPolicy", env, learning_rate=args.dqn_learning_rate,
                    buffer_size=args.dqn_buffer_size, learning_starts=args.dqn_learning_starts,
                    exploration_fraction=args.dqn_exploration_fraction,
                    exploration_final_eps=args.dqn_exploration_final_eps,
                    target_update_interval=args.dqn_target_update_interval, seed=args.seed,
                    verbose=0, tensorboard_log=str(run_dir / "tb"))
        total = args.timesteps
    else:
        model = PPO("MlpPolicy", env, n_steps=args.ppo_n_steps, batch_size=args.ppo_batch_size,
                    learning_rate=args.ppo_learning_rate, gamma=args.ppo_gamma,
                    ent_coef=args.ppo_ent_coef, seed=args.seed, verbose=0,
                    tensorboard_log=str(run_dir / "tb"))
        total = common.rounded_up(args.timesteps, args.ppo_n_steps)
    algo = type(model).__name__
    bar = common.StepProgress(total, desc=f"{algo} on {args.gym_id}", disable=not args.progress)
    t0 = time.perf_counter()
    model.learn(total_timesteps=args.timesteps, callback=bar)
    wall = time.perf_counter() - t0
    bar.close()
    model.save(run_dir / "model.zip")
    if env.get_episode_rewards():
        plot_episodes(env, run_dir / "learning_curve.png", f"{algo} on {args.gym_id}")

    seeds = list(args.eval_seeds)
    eval_env = make_env(args.gym_id, args.seed)
    learned = [episode_return(eval_env, lambda o: model.predict(o, deterministic=True)[0], s)
               for s in seeds]
    # The baseline: the same participant bidding with its default scripted policy.
    base = baseline_returns(make_env(args.gym_id, args.seed), seeds)
    result = {"gym_id": args.gym_id, "algo": algo, "timesteps": int(model.num_timesteps),
              "seed": args.seed, "wall_s": wall, "run_dir": str(run_dir), "args": asdict(args),
              "learned_mean_return": float(np.mean(learned)),
              "baseline_mean_return": float(np.mean(base)), "eval_seeds": seeds}
    (run_dir / "evaluation.json").write_text(json.dumps(result, indent=2, default=str))
    return result


def main(argv=None) -> dict:
    args = common.parse_args(Args, argv, description=__doc__.splitlines()[0])
    try:
        result = run(args)
    except common.SetupError as exc:
        sys.exit(f"error: {exc}")
    print(f"{result['algo']} on {args.gym_id}: {result['timesteps']:,} agent steps in "
          f"{result['wall_s']:.1f} s; mean return over {len(result['eval_seeds'])} evaluation "
          f"episodes: learned {result['learned_mean_return']:.2f}, baseline "
          f"{result['baseline_mean_return']:.2f}; results in {result['run_dir']}")
    return result


if __name__ == "__main__":
    main()
