"""Parameter-shared PPO (Stable-Baselines3) on an OpenGridGym market, CleanRL style.

    python -m ogg_envs.baselines.sb3_ppo --env topology-power --timesteps 100000 --seed 0
    opengridgym train topology-power --backend sb3 --algo ppo --timesteps 100000 --seed 0

Every learning agent of the parallel environment (e.g. the four suppliers of
topology-power-v0) acts through one shared network: SuperSuit turns the parallel env into a
vector env with one entry per agent (``pettingzoo_env_to_vec_env_v1``) and concatenates
``N_ENVS`` copies (``concat_vec_envs_v1``). Actions are normalised by ``normalized_bids_v0``
(every action is a valid bid). The environment of each ``--env`` is its leaderboard task
(``scenarios/tasks``): topology-power's congested 832-888 transformer, p2p's 6 learners
against 6 UCB prosumers, dlmp's four generators. After training, the policy is evaluated with
the leaderboard's runner on the task's own seeds (never seen in training) against the
baseline (truthful bidders; UCB in p2p).

Outputs in ``--out`` (default ``runs/sb3_ppo_<env>_s<seed>``): ``model.zip``, TensorBoard logs
in ``tb/``, ``learning_curve.png`` and ``evaluation.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

# ---------------------------------------------------------------------- hyperparameters
TIMESTEPS = 100_000  # agent steps (each copy of the env gives one per learning agent)
SEED = 0
N_ENVS = 4  # env copies stepped in lockstep (in-process: the env is cheap to step)
N_STEPS = 128  # rollout length per vector entry -> batch = N_STEPS * N_ENVS * n_agents
BATCH_SIZE = 256
N_EPOCHS = 5
LEARNING_RATE = 3e-4
GAMMA = 0.99
GAE_LAMBDA = 0.95
CLIP_RANGE = 0.2
ENT_COEF = 0.0
NET_ARCH = [64, 64]
NORMALIZE_REWARD = True  # rewards are in $ (hourly profits) or ¢/kWh; VecNormalize scales them
EVAL_QUICK = False  # True: the task's quick seeds only

TASKS = {  # --env -> the leaderboard task it trains on, and the baseline it is compared with
    "topology-power": ("topology-power/congested-v0", "truthful"),
    "p2p": ("p2p/multi-period-v0", "ucb"),
    "dlmp": ("dlmp/37bus-day-v0", "truthful"),
}


def env_key(env: str) -> str:
    """``topology-power``, ``opengridgym/topology-power-v0`` or a task id -> a TASKS key."""
    key = env.split("/")[-1] if env.startswith("opengridgym/") else env.split("/")[0]
    key = key.removesuffix("-v0").replace("_", "-")
    if key not in TASKS:
        raise ValueError(f"unknown env {env!r}; choose one of {', '.join(TASKS)}")
    return key


# ---------------------------------------------------------------------- environment
def make_vec_env(task, n_envs: int, normalize_reward: bool):
    """The task's parallel env, normalised actions, as an SB3 vector env (one entry/agent)."""
    import supersuit as ss
    from stable_baselines3.common.vec_env import VecMonitor, VecNormalize
    from supersuit.vector.sb3_vector_wrapper import SB3VecEnvWrapper

    from ogg_envs.wrappers import normalized_bids_v0

    class SeededSB3VecEnv(SB3VecEnvWrapper):
        """SuperSuit's SB3 wrapper has no ``seed``: PPO(seed=...) calls it, then reset()."""

        _next_seed = None

        def seed(self, seed=None):
            self._next_seed = seed
            return [seed]

        def reset(self, seed=None, options=None):
            seed = self._next_seed if seed is None else seed
            self._next_seed = None
            observations, self.reset_infos = self.venv.reset(seed=seed, options=options)
            return observations

    par = normalized_bids_v0(task.make_env())
    venv = ss.pettingzoo_env_to_vec_env_v1(par)
    venv = ss.concat_vec_envs_v1(venv, n_envs, num_cpus=0, base_class="gymnasium")
    venv = VecMonitor(SeededSB3VecEnv(venv))  # per-agent episode returns for the logs
    if normalize_reward:
        venv = VecNormalize(venv, norm_obs=False, norm_reward=True, gamma=GAMMA)
    return venv, len(par.possible_agents)


# ---------------------------------------------------------------------- training
def train(task, timesteps: int, seed: int, out: Path, progress: bool = True):
    """Train PPO; returns the model and the learning curve (agent steps, mean episode
    return per agent)."""
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from tqdm.auto import tqdm

    torch.set_num_threads(1)
    venv, n_agents = make_vec_env(task, N_ENVS, NORMALIZE_REWARD)

    class Curve(BaseCallback):
        """Records (agent steps, mean return of the episodes finished in the rollout)."""

        def __init__(self):
            super().__init__()
            self.points, self._returns = [], []

        def _on_step(self) -> bool:
            for info in self.locals["infos"]:
                if "episode" in info:
                    self._returns.append(info["episode"]["r"])
            return True

        def _on_rollout_end(self) -> None:
            if self._returns:
                self.points.append((self.num_timesteps, float(np.mean(self._returns))))
                self._returns = []

    model = PPO("MlpPolicy", venv, n_steps=N_STEPS, batch_size=BATCH_SIZE, n_epochs=N_EPOCHS,
                learning_rate=LEARNING_RATE, gamma=GAMMA, gae_lambda=GAE_LAMBDA,
                clip_range=CLIP_RANGE, ent_coef=ENT_COEF, seed=seed, device="cpu",
                policy_kwargs={"net_arch": NET_ARCH}, tensorboard_log=str(out / "tb"),
                verbose=0)
    class Progress(BaseCallback):
        """A tqdm bar over agent steps (SB3's own bar needs ``rich``)."""

        def _on_training_start(self) -> None:
            self.bar = tqdm(total=timesteps, unit="agent step", disable=not progress)

        def _on_step(self) -> bool:
            self.bar.update(self.training_env.num_envs)
            return True

        def _on_training_end(self) -> None:
            self.bar.close()

    curve = Curve()
    t0 = time.perf_counter()
    model.learn(total_timesteps=timesteps, callback=[curve, Progress()], tb_log_name="ppo")
    wall = time.perf_counter() - t0
    venv.close()
    stats = {"agent_steps": int(model.num_timesteps), "n_agents": n_agents, "wall_s": wall,
             "agent_steps_per_s": model.num_timesteps / wall}
    return model, curve.points, stats


# ---------------------------------------------------------------------- evaluation
class LearnedPolicy:
    """A trained model as a leaderboard policy: shared network, deterministic action, decoded
    by the same parametrisation as in training (``ogg_envs.wrappers.bids``)."""

    def __init__(self, model):
        self.model = model

    def __call__(self, agent: str, observation, info: dict):
        from ogg_envs.leaderboard.entries import decode_model_action

        action, _ = self.model.predict(np.asarray(observation), deterministic=True)
        return decode_model_action(self.model.action_space, action, agent, info)


def evaluate(task, model, baseline: str, quick: bool):
    """The leaderboard's metrics of the learned policy and of the baseline, same seeds."""
    from ogg_envs.leaderboard.entries import Entry, resolve_entry
    from ogg_envs.leaderboard.runner import evaluate as run

    learned = Entry("ppo", "sb3_ppo", None, lambda task, rules: LearnedPolicy(model))
    rows = {}
    for entry in (learned, resolve_entry(baseline)):
        row, _ = run(entry, task, quick=quick)
        if row["status"] != "ok":
            raise RuntimeError(f"evaluation of {entry.name} failed: {row['reason']}")
        rows[entry.name] = {k: v for k, v in row.items() if k.endswith(("_mean", "_ci95"))}
        rows[entry.name]["seeds"] = row["seeds"]
    return rows


def plot_curve(points, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    if points:
        x, y = zip(*points)
        ax.plot(x, y, marker=".")
    ax.set_xlabel("agent steps")
    ax.set_ylabel("episode return per agent (raw reward)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------- main
def run(env: str, timesteps: int = TIMESTEPS, seed: int = SEED, out: str | None = None,
        evaluate_policy: bool = True, quick: bool | None = None, progress: bool = True) -> dict:
    """Train, save, plot and evaluate (``quick=None``: ``EVAL_QUICK``); returns the results."""
    from ogg_envs.leaderboard.tasks import load_task

    quick = EVAL_QUICK if quick is None else quick
    key = env_key(env)
    task_id, baseline = TASKS[key]
    task = load_task(task_id)
    out = Path(out or f"runs/sb3_ppo_{key}_s{seed}")
    out.mkdir(parents=True, exist_ok=True)
    model, points, stats = train(task, timesteps, seed, out, progress)
    model.save(out / "model.zip")
    plot_curve(points, out / "learning_curve.png", f"PPO (shared) on {task_id}")
    result = {"env": key, "task": task_id, "seed": seed, "training": stats,
              "curve": points, "baseline": baseline}
    if evaluate_policy:
        result["evaluation"] = evaluate(task, model, baseline, quick)
    (out / "evaluation.json").write_text(json.dumps(result, indent=2))
    return result


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="topology-power", help=", ".join(TASKS))
    parser.add_argument("--timesteps", type=int, default=TIMESTEPS)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--out", default=None)
    parser.add_argument("--quick-eval", action="store_true", help="the task's quick seeds")
    parser.add_argument("--no-eval", action="store_true")
    args = parser.parse_args(argv)
    result = run(args.env, args.timesteps, args.seed, args.out,
                 evaluate_policy=not args.no_eval, quick=args.quick_eval or None)
    t = result["training"]
    print(f"{result['task']}: {t['agent_steps']} agent steps in {t['wall_s']:.1f} s "
          f"({t['agent_steps_per_s']:.0f} agent steps/s)")
    for name, row in result.get("evaluation", {}).items():
        extra = (f", trade success {row['trade_success_mean']:.3f}"
                 if "trade_success_mean" in row else "")
        print(f"  {name:10s} profit {row['profit_usd_mean']:9.2f} $ ± {row['profit_usd_ci95']:.2f}"
              f", return {row['return_mean']:9.2f}{extra}")
    return result


if __name__ == "__main__":
    main()
