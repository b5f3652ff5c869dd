"""Parameter-shared PPO (Stable-Baselines3) on an OpenGridGym market, CleanRL style.

    python -m ogg_envs.baselines.sb3_ppo --env topology-power --timesteps 100000 --seed 0
    opengridgym train topology-power --backend sb3 --algo ppo --timesteps 100000 --seed 0

Every learning agent of the parallel environment (e.g. the four suppliers of
topology-power-v0) acts through one shared network: SuperSuit turns the parallel env into a
vector env with one entry per agent (``pettingzoo_env_to_vec_env_v1``) and concatenates
``N_ENVS`` copies (``concat_vec_envs_v1``). Actions are normalised by ``normalized_bids_v0``
(every action is a valid bid, through the codec of the environment's registered spec).

``--env`` is any registered environment id (``opengridgym/topology-power-v0``, a user's
``mylab/pay-as-bid-v0``), its short name (``topology-power``) or a leaderboard task id. The
environment trains on its leaderboard task (``TASKS``, else the first known task of that
environment; ``scenarios/tasks``): topology-power's congested 832-888 transformer, p2p's 6
learners against 6 UCB prosumers, dlmp's four generators. After training, the policy is
evaluated with the leaderboard's runner on the task's own seeds (never seen in training)
against the baseline (``TASKS``, else the spec's ``truthful`` or first baseline). An
environment without a task trains on its default configuration, without evaluation.

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

TASKS = {  # env id -> the leaderboard task it trains on, and the baseline it is compared with
    "opengridgym/topology-power-v0": ("topology-power/congested-v0", "truthful"),
    "opengridgym/p2p-v0": ("p2p/multi-period-v0", "ucb"),
    "opengridgym/dlmp-v0": ("dlmp/37bus-day-v0", "truthful"),
}


def short_name(env_id: str) -> str:
    """A registered id's short name: ``opengridgym/topology-power-v0`` -> ``topology-power``;
    another namespace keeps it (``mylab/pay-as-bid-v0`` -> ``mylab_pay-as-bid``)."""
    namespace, _, name = env_id.partition("/")
    name = name.rsplit("-v", 1)[0]
    return name if namespace == "opengridgym" else f"{namespace}_{name}"


def resolve_env(env: str) -> tuple[str, str | None, str | None]:
    """``--env`` -> (environment id, task id or None, baseline or None).

    ``env`` is a registered id, its short name (``topology-power``, ``topology_power``) or a
    leaderboard task id. The task is ``env``'s own when it is a task id, else ``TASKS[id]``,
    else the first known task of the environment (``list_tasks``); the baseline is ``TASKS``'s,
    else the spec's ``truthful`` baseline, else its first one.
    """
    import ogg_envs
    from ogg_envs.leaderboard.tasks import TaskError, list_tasks, load_task

    task_id = None
    if env in ogg_envs.ENVIRONMENTS:
        env_id = env
    else:
        key = env.replace("_", "-")
        matches = [i for i in ogg_envs.ENVIRONMENTS if short_name(i) == key]
        if matches:
            env_id = matches[0]
        else:
            try:
                task = load_task(env)
            except TaskError:
                raise ValueError(
                    f"unknown env {env!r}; registered: "
                    + ", ".join(f"{i} ({short_name(i)})" for i in ogg_envs.ENVIRONMENTS)
                    + "; or a task id") from None
            env_id, task_id = task.env_id, task.id
    if task_id is None:
        if env_id in TASKS:
            task_id = TASKS[env_id][0]
        else:
            task_id = next((t for t in list_tasks() if load_task(t).env_id == env_id), None)
    baselines = ogg_envs.spec(env_id).baselines
    if env_id in TASKS and TASKS[env_id][0] == task_id:
        baseline = TASKS[env_id][1]
    else:
        baseline = "truthful" if "truthful" in baselines else (baselines[0] if baselines
                                                                else None)
    return env_id, task_id, baseline


def env_key(env: str) -> str:
    """The short name of ``--env``'s environment (run folders, results)."""
    return short_name(resolve_env(env)[0])


# ---------------------------------------------------------------------- environment
def training_setup(env: str):
    """``--env`` -> (environment id, its task or None, the baseline or None)."""
    from ogg_envs.leaderboard.tasks import load_task

    env_id, task_id, baseline = resolve_env(env)
    return env_id, (load_task(task_id) if task_id is not None else None), baseline


def make_env_of(env_id: str, task):
    """A factory of the parallel env to train on: the task's, or the env's default."""
    if task is not None:
        return task.make_env

    def make():
        import ogg_envs

        return ogg_envs.make(env_id, parallel=True)
    return make


def make_vec_env(make_env, n_envs: int, normalize_reward: bool):
    """``make_env()`` (a parallel env: the task's), normalised actions, as an SB3 vector env
    (one entry per agent)."""
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

    par = normalized_bids_v0(make_env())
    venv = ss.pettingzoo_env_to_vec_env_v1(par)
    venv = ss.concat_vec_envs_v1(venv, n_envs, num_cpus=0, base_class="gymnasium")
    venv = VecMonitor(SeededSB3VecEnv(venv))  # per-agent episode returns for the logs
    if normalize_reward:
        venv = VecNormalize(venv, norm_obs=False, norm_reward=True, gamma=GAMMA)
    return venv, len(par.possible_agents)


# ---------------------------------------------------------------------- training
def train(make_env, timesteps: int, seed: int, out: Path, progress: bool = True):
    """Train PPO on ``make_env()`` (e.g. ``task.make_env``); returns the model and the
    learning curve (agent steps, mean episode return per agent)."""
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from tqdm.auto import tqdm

    torch.set_num_threads(1)
    venv, n_agents = make_vec_env(make_env, N_ENVS, NORMALIZE_REWARD)

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
    """A trained model as a leaderboard policy (``policy(participant, observation, info)``):
    shared network, deterministic action, decoded by the same parametrisation as in training
    (the codec of ``env``'s spec, ``ogg_envs.wrappers.codec_for``)."""

    def __init__(self, model, env):
        from ogg_envs.wrappers import codec_for

        self.model = model
        self.codecs = {a: codec_for(env, a) for a in env.possible_agents}

    def __call__(self, participant, observation, info: dict):
        from ogg_envs.leaderboard.entries import decode_model_action

        action, _ = self.model.predict(np.asarray(observation), deterministic=True)
        return decode_model_action(self.model.action_space, action, participant, info,
                                   self.codecs[participant.name])


def evaluate(task, model, baseline: str | None, quick: bool):
    """The leaderboard's metrics of the learned policy and of the baseline (if any), same
    seeds."""
    from ogg_envs.leaderboard.entries import Entry, resolve_entry
    from ogg_envs.leaderboard.runner import evaluate as run

    learned = Entry("ppo", "sb3_ppo", None, lambda task, env: LearnedPolicy(model, env))
    rows = {}
    for entry in [learned] + ([resolve_entry(baseline)] if baseline else []):
        row, _ = run(entry, task, quick=quick)
        if row["status"] != "ok":
            raise RuntimeError(f"evaluation of {entry.name} failed: {row['reason']}")
        rows[entry.name] = {k: v for k, v in row.items() if k.endswith(("_mean", "_ci95"))}
        rows[entry.name]["seeds"] = row["seeds"]
    return rows


def import_modules(names) -> None:
    """Import user modules (``--import``), the current folder included."""
    from ogg_envs.leaderboard.entries import import_user_module

    for name in names or []:
        import_user_module(name)


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
    quick = EVAL_QUICK if quick is None else quick
    env_id, task, baseline = training_setup(env)
    key = short_name(env_id)
    out = Path(out or f"runs/sb3_ppo_{key}_s{seed}")
    out.mkdir(parents=True, exist_ok=True)
    model, points, stats = train(make_env_of(env_id, task), timesteps, seed, out, progress)
    model.save(out / "model.zip")
    where = task.id if task is not None else env_id
    plot_curve(points, out / "learning_curve.png", f"PPO (shared) on {where}")
    result = {"env": key, "env_id": env_id, "task": task.id if task is not None else None,
              "seed": seed, "training": stats, "curve": points, "baseline": baseline}
    if evaluate_policy and task is not None:
        result["evaluation"] = evaluate(task, model, baseline, quick)
    (out / "evaluation.json").write_text(json.dumps(result, indent=2))
    return result


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="topology-power",
                        help="an environment id, its short name or a task id")
    parser.add_argument("--import", dest="imports", action="append", default=[],
                        metavar="MODULE", help="import MODULE first (registers environments)")
    parser.add_argument("--timesteps", type=int, default=TIMESTEPS)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--out", default=None)
    parser.add_argument("--quick-eval", action="store_true", help="the task's quick seeds")
    parser.add_argument("--no-eval", action="store_true")
    args = parser.parse_args(argv)
    import_modules(args.imports)
    result = run(args.env, args.timesteps, args.seed, args.out,
                 evaluate_policy=not args.no_eval, quick=args.quick_eval or None)
    print_result(result)
    return result


def print_result(result: dict) -> None:
    """The training's size and speed, then each evaluated policy's profit and return."""
    t = result["training"]
    where = result["task"] or result["env_id"]
    iterations = f", {t['iterations']} iterations" if "iterations" in t else ""
    print(f"{where}: {t['agent_steps']} agent steps in {t['wall_s']:.1f} s "
          f"({t['agent_steps_per_s']:.0f} agent steps/s{iterations})")
    for name, row in result.get("evaluation", {}).items():
        extra = (f", trade success {row['trade_success_mean']:.3f}"
                 if "trade_success_mean" in row else "")
        print(f"  {name:10s} profit {row['profit_usd_mean']:9.2f} $ ± {row['profit_usd_ci95']:.2f}"
              f", return {row['return_mean']:9.2f}{extra}")


if __name__ == "__main__":
    main()
