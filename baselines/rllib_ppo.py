"""Multi-agent PPO (RLlib, new API stack) on an OpenGridGym market: one policy per group.

    python -m ogg_envs.baselines.rllib_ppo --env topology-power --timesteps 100000 \\
        --env-runners 2 --envs-per-runner 8
    opengridgym train topology-power --backend rllib --algo ppo --timesteps 100000

Needs the ``[rllib]`` extra (``ray[rllib]==2.60.0``, which pins ``gymnasium==1.2.2``; install it
in its own virtual environment if that clashes). ``--env`` is resolved like ``sb3_ppo``'s
(``sb3_ppo.resolve_env``: any registered id, its short name or a task id). The parallel env of
its leaderboard task (or the environment's default one, without evaluation, if it has no
task), with ``normalized_bids_v0`` actions, goes to RLlib through
``ParallelPettingZooEnv``; every agent group (the name prefix: ``supplier``, ``prosumer``,
``generator``, ``dr``) gets its own RLModule, shared by the agents of the group. Env runners
are how RLlib scales out (``--env-runners`` processes, on other machines of a Ray cluster when
``ray.init`` connects to one), each stepping ``--envs-per-runner`` copies of the env.

Outputs in ``--out`` (default ``runs/rllib_ppo_<env>_s<seed>``): ``checkpoint/``, TensorBoard
logs in ``tb/``, ``learning_curve.png`` and ``evaluation.json`` (the leaderboard's metrics on
the task's own seeds, against the same baseline as ``sb3_ppo``). Ray itself writes under
``RAY_TMPDIR`` / ``HOME`` (the tests point both at a temporary folder).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

# ---------------------------------------------------------------------- hyperparameters
TIMESTEPS = 100_000  # agent steps
SEED = 0
ENV_RUNNERS = 0  # 0: sample in the driver process (one machine, no extra processes)
ENVS_PER_RUNNER = 8
TRAIN_BATCH = 2000  # env steps per training iteration
MINIBATCH = 500
NUM_EPOCHS = 5
LEARNING_RATE = 3e-4
GAMMA = 0.99
LAMBDA = 0.95
CLIP_PARAM = 0.2
ENTROPY_COEFF = 0.0
NET_ARCH = [64, 64]
NUM_CPUS = 2
EVAL_QUICK = False


def group_of(agent_id: str) -> str:
    return agent_id.rsplit("_", 1)[0]


# ---------------------------------------------------------------------- setup
def keep_logs_under(path: Path) -> None:
    """Make RLlib's per-run log folder a subfolder of ``path`` instead of ``~/ray_results``.

    An Algorithm is a Tune Trainable; outside Tune it creates its log folder under
    ``ray.tune.trainable.trainable.DEFAULT_STORAGE_PATH``, which Ray computes from ``HOME``
    when it is imported, and no argument of ``build_algo`` moves it. Setting the constant is
    the only way to keep a run's files in its ``--out`` folder.
    """
    import ray.tune.trainable.trainable as trainable

    path.mkdir(parents=True, exist_ok=True)
    trainable.DEFAULT_STORAGE_PATH = str(path)


def _make_par(env_id: str, task_id: str | None):
    """The parallel env to train on: the task's, or the environment's default one."""
    import ogg_envs
    from ogg_envs.leaderboard.tasks import load_task

    if task_id is not None:
        return load_task(task_id).make_env()
    return ogg_envs.make(env_id, parallel=True)


def build(env_id: str, task_id: str | None, seed: int, env_runners: int,
          envs_per_runner: int):
    """Register the env with Ray and build the PPO algorithm (one RLModule per group)."""
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.multi_rl_module import MultiRLModuleSpec
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec
    from ray.rllib.env.wrappers.pettingzoo_env import ParallelPettingZooEnv
    from ray.tune.registry import register_env

    from ogg_envs.wrappers import normalized_bids_v0

    def make(_config=None):
        return ParallelPettingZooEnv(normalized_bids_v0(_make_par(env_id, task_id)))

    name = f"opengridgym_{(task_id or env_id).replace('/', '_')}"
    register_env(name, make)
    agents = _make_par(env_id, task_id).possible_agents
    groups = sorted({group_of(a) for a in agents})
    config = (
        PPOConfig()
        .environment(name)
        .framework("torch")
        .env_runners(num_env_runners=env_runners, num_envs_per_env_runner=envs_per_runner)
        .learners(num_learners=0)
        .multi_agent(policies=set(groups),
                     policy_mapping_fn=lambda agent_id, episode=None, **kw: group_of(agent_id))
        .rl_module(rl_module_spec=MultiRLModuleSpec(rl_module_specs={
            g: RLModuleSpec(model_config={"fcnet_hiddens": NET_ARCH}) for g in groups}))
        .training(train_batch_size_per_learner=TRAIN_BATCH, minibatch_size=MINIBATCH,
                  num_epochs=NUM_EPOCHS, lr=LEARNING_RATE, gamma=GAMMA, lambda_=LAMBDA,
                  clip_param=CLIP_PARAM, entropy_coeff=ENTROPY_COEFF)
        .debugging(seed=seed)
    )
    return config.build_algo(), len(agents), groups


# ---------------------------------------------------------------------- evaluation
class RLModulePolicy:
    """Trained RLModules as a leaderboard policy (``policy(participant, observation, info)``):
    the agent's group module, deterministic action, decoded like in training (the codec of
    ``env``'s spec, ``ogg_envs.wrappers.codec_for``)."""

    def __init__(self, modules: dict, env):
        from ogg_envs.wrappers import codec_for

        self.modules = modules
        self.codecs = {a: codec_for(env, a) for a in env.possible_agents}

    def __call__(self, participant, observation, info: dict):
        import torch
        from ray.rllib.core.columns import Columns

        agent = participant.name
        module = self.modules[group_of(agent)]
        with torch.no_grad():
            out = module.forward_inference(
                {Columns.OBS: torch.as_tensor(np.asarray(observation, np.float32)[None])})
        dist = module.get_inference_action_dist_cls().from_logits(
            out[Columns.ACTION_DIST_INPUTS]).to_deterministic()
        action = dist.sample()[0].numpy()
        codec = self.codecs[agent]
        if hasattr(info["action_space"], "n"):
            return int(np.asarray(action).reshape(-1)[0])
        if codec is None:  # the action passes through (the env has no codec)
            return np.asarray(action, dtype=float)
        return codec.decode(action, participant.limits.q_now, who=agent)


def evaluate(task, modules: dict, baseline: str | None, quick: bool) -> dict:
    from ogg_envs.leaderboard.entries import Entry, resolve_entry
    from ogg_envs.leaderboard.runner import evaluate as run

    learned = Entry("ppo", "rllib_ppo", None, lambda task, env: RLModulePolicy(modules, env))
    rows = {}
    for entry in [learned] + ([resolve_entry(baseline)] if baseline else []):
        row, _ = run(entry, task, quick=quick)
        if row["status"] != "ok":
            raise RuntimeError(f"evaluation of {entry.name} failed: {row['reason']}")
        rows[entry.name] = {k: v for k, v in row.items() if k.endswith(("_mean", "_ci95"))}
        rows[entry.name]["seeds"] = row["seeds"]
    return rows


# ---------------------------------------------------------------------- main
def run(env: str, timesteps: int = TIMESTEPS, seed: int = SEED, out: str | None = None,
        env_runners: int = ENV_RUNNERS, envs_per_runner: int = ENVS_PER_RUNNER,
        evaluate_policy: bool = True, quick: bool | None = None, progress: bool = True) -> dict:
    """Train, save, plot and evaluate (``quick=None``: ``EVAL_QUICK``); returns the results."""
    import ray
    from ray.rllib.utils.metrics import (
        ENV_RUNNER_RESULTS,
        EPISODE_RETURN_MEAN,
        NUM_AGENT_STEPS_SAMPLED_LIFETIME,
    )
    from tensorboardX import SummaryWriter
    from tqdm.auto import tqdm

    from ogg_envs.baselines.sb3_ppo import plot_curve, resolve_env, short_name
    from ogg_envs.leaderboard.tasks import load_task

    quick = EVAL_QUICK if quick is None else quick
    env_id, task_id, baseline = resolve_env(env)
    key = short_name(env_id)
    out = Path(out or f"runs/rllib_ppo_{key}_s{seed}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(num_cpus=NUM_CPUS, include_dashboard=False, log_to_driver=False)
    try:
        keep_logs_under(out / "rllib_logs")
        algo, n_agents, groups = build(env_id, task_id, seed, env_runners, envs_per_runner)
        iterations = max(1, math.ceil(timesteps / (TRAIN_BATCH * n_agents)))
        writer = SummaryWriter(str(out / "tb"))
        points, steps = [], 0
        t0 = time.perf_counter()
        for it in tqdm(range(iterations), unit="iteration", disable=not progress):
            result = algo.train()
            runners = result.get(ENV_RUNNER_RESULTS, {})
            sampled = runners.get(NUM_AGENT_STEPS_SAMPLED_LIFETIME, steps)  # {agent: steps}
            steps = int(sum(sampled.values()) if isinstance(sampled, dict) else sampled)
            ret = runners.get(EPISODE_RETURN_MEAN)
            if ret is not None and np.isfinite(ret):
                # RLlib's episode return sums all agents: per agent, like sb3_ppo's curve
                points.append((steps, float(ret) / n_agents))
                writer.add_scalar("episode_return_per_agent", float(ret) / n_agents, steps)
            writer.add_scalar("agent_steps", steps, it)
        wall = time.perf_counter() - t0
        writer.close()
        algo.save_to_path(str(out / "checkpoint"))
        plot_curve(points, out / "learning_curve.png",
                   f"RLlib PPO (per group) on {task_id or env_id}")
        stats = {"iterations": iterations, "agent_steps": steps, "n_agents": n_agents,
                 "groups": groups, "env_runners": env_runners,
                 "envs_per_runner": envs_per_runner, "wall_s": wall,
                 "agent_steps_per_s": steps / wall}
        result = {"env": key, "env_id": env_id, "task": task_id, "seed": seed,
                  "training": stats, "curve": points, "baseline": baseline}
        if evaluate_policy and task_id is not None:
            modules = {g: algo.get_module(g) for g in groups}
            result["evaluation"] = evaluate(load_task(task_id), modules, baseline, quick)
        algo.stop()
    finally:
        if started_ray:
            ray.shutdown()
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
    parser.add_argument("--env-runners", type=int, default=ENV_RUNNERS)
    parser.add_argument("--envs-per-runner", type=int, default=ENVS_PER_RUNNER)
    parser.add_argument("--quick-eval", action="store_true", help="the task's quick seeds")
    parser.add_argument("--no-eval", action="store_true")
    args = parser.parse_args(argv)
    from ogg_envs.baselines.sb3_ppo import import_modules, print_result

    import_modules(args.imports)
    result = run(args.env, args.timesteps, args.seed, args.out, args.env_runners,
                 args.envs_per_runner, evaluate_policy=not args.no_eval,
                 quick=args.quick_eval or None)
    print_result(result)
    return result


if __name__ == "__main__":
    main()
