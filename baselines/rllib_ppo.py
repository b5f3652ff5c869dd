"""Multi-agent PPO (RLlib, new API stack) on an OpenGridGym market: one policy per group.

    python -m ogg_envs.baselines.rllib_ppo --env topology-power --timesteps 100000 \\
        --env-runners 2 --envs-per-runner 8
    opengridgym train topology-power --backend rllib --algo ppo --timesteps 100000

Needs the ``[rllib]`` extra (``ray[rllib]==2.60.0``, which pins ``gymnasium==1.2.2``: install it
in its own virtual environment); this file imports without it (Ray is imported where it is
used). ``--env``, ``--feeder`` and ``--scenario`` choose what it trains on exactly as in
``sb3_ppo`` (``common.training_setup``: the environment's leaderboard task, or that
configuration of it). The parallel env, with ``normalized_bids_v0`` actions and without the
infos PPO never reads (``no_infos_v0``: remote runners would ship them to the driver), goes to
RLlib through ``ParallelPettingZooEnv``; every agent group (the name prefix: ``supplier``,
``prosumer``, ``generator``, ``dr``) gets its own RLModule, shared by the agents of the group.
Env runners are how RLlib scales out (``--env-runners`` processes, on other machines of a Ray
cluster when ``ray.init`` connects to one, see ``docs/scale-out.md``), each stepping
``--envs-per-runner`` copies of the env.

Outputs in ``--out/--run-name`` (default ``runs/rllib_ppo_<env>_s<seed>``; an earlier run
there is kept unless ``--force``): ``checkpoint/``, TensorBoard logs in ``tb/``,
``learning_curve.png`` and ``evaluation.json`` (the leaderboard's metrics on the task's own
seeds, against the same baseline as ``sb3_ppo``). Ray itself writes under ``RAY_TMPDIR`` /
``HOME`` (the tests point both at a temporary folder).
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ogg_envs.baselines import common
from ogg_envs.wrappers import codec_for, no_infos_v0, normalized_bids_v0


@dataclass
class Args:
    # ------------------------------------------------------------------ what to train on
    env: str = "topology-power"
    """an environment id, its short name (topology-power, p2p, dlmp) or a leaderboard task id"""
    feeder: str | None = None
    """train and evaluate on this feeder (a bundled name or a master .dss) instead of the
    task's"""
    scenario: str | None = None
    """train and evaluate on this scenario TOML file instead of the task's"""
    imports: list[str] = field(default_factory=list, metadata={
        "flags": ("--import",), "argparse": {"action": "extend"}})
    """modules to import first (they register environments or tasks; the current folder is
    searched)"""
    seed: int = 0
    """seed of the networks, the environments and the sampling"""
    # ------------------------------------------------------------------ the run
    timesteps: int = 100_000
    """agent steps to train; rounded up to whole iterations of train_batch x agents"""
    out: str = "runs"
    """the folder of runs"""
    run_name: str | None = None
    """this run's folder in --out (default rllib_ppo_<env>_s<seed>)"""
    force: bool = False
    """replace an earlier run in that folder"""
    eval: bool = True
    """evaluate the trained policies against the baseline after training"""
    quick_eval: bool = False
    """evaluate on the task's quick seeds only"""
    progress: bool = True
    """show progress bars"""
    # ------------------------------------------------------------------ scale-out
    env_runners: int = 0
    """sampling processes (0: sample in the driver process, no extra processes)"""
    envs_per_runner: int = 8
    """env copies each runner steps"""
    num_cpus: int = 2
    """CPUs of the local Ray instance this script starts (when none is running and no
    --ray-address is given)"""
    ray_address: str | None = None
    """connect to this Ray cluster instead (auto: the cluster this machine belongs to; default:
    the RAY_ADDRESS environment variable, else a local Ray)"""
    # ------------------------------------------------------------------ PPO
    train_batch: int = 2000
    """env steps per training iteration"""
    minibatch: int = 500
    """minibatch size"""
    num_epochs: int = 5
    """passes over each training batch"""
    learning_rate: float = 3e-4
    """Adam's step size"""
    gamma: float = 0.99
    """discount factor"""
    gae_lambda: float = 0.95
    """GAE's lambda"""
    clip_param: float = 0.2
    """PPO's clipping range"""
    entropy_coeff: float = 0.0
    """entropy bonus"""
    net_arch: list[int] = field(default_factory=lambda: [64, 64])
    """hidden layers of each group's networks"""

    def __post_init__(self):
        common.check_positive(self, "timesteps", "envs_per_runner", "num_cpus", "train_batch",
                              "minibatch", "num_epochs", "learning_rate")
        if self.env_runners < 0:
            raise ValueError(f"--env-runners must be 0 or more, got {self.env_runners}")


def group_of(agent_id: str) -> str:
    return agent_id.rsplit("_", 1)[0]


# Per-runner sample counts, in the training results' env-runner metrics (where RLlib adds up the
# runners' metrics): which process sampled how much. 0 is the driver's own runner.
STEPS_BY_RUNNER = "env_steps_by_runner"


def count_runner_steps(*, env_runner, metrics_logger, samples, **kwargs) -> None:
    """RLlib's ``on_sample_end`` callback, run in each env runner: add the env steps it just
    sampled under its ``worker_index``."""
    steps = sum(episode.env_steps() for episode in samples)
    metrics_logger.log_value((STEPS_BY_RUNNER, str(env_runner.worker_index)), steps,
                             reduce="lifetime_sum")


# ---------------------------------------------------------------------- setup
def keep_logs_under(path: Path) -> None:
    """Make RLlib's per-run log folder a subfolder of ``path`` instead of ``~/ray_results``.

    An Algorithm is a Tune Trainable; outside Tune it creates its log folder under
    ``ray.tune.trainable.trainable.DEFAULT_STORAGE_PATH``, which Ray computes from ``HOME``
    when it is imported, and no argument of ``build_algo`` moves it. Setting the constant is
    the only way to keep a run's files in its run folder.
    """
    import ray.tune.trainable.trainable as trainable

    path.mkdir(parents=True, exist_ok=True)
    trainable.DEFAULT_STORAGE_PATH = str(path)


def build(args: Args, task):
    """Register the task's env with Ray and build the PPO algorithm (one RLModule per group);
    returns it, the number of agents and the groups."""
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.multi_rl_module import MultiRLModuleSpec
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec
    from ray.rllib.env.wrappers.pettingzoo_env import ParallelPettingZooEnv
    from ray.tune.registry import register_env

    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"opengridgym_{task.id}")
    register_env(name, lambda _config=None: ParallelPettingZooEnv(
        normalized_bids_v0(no_infos_v0(task.make_env()))))  # (PPO reads no infos)
    agents = task.make_env().possible_agents
    groups = sorted({group_of(a) for a in agents})
    config = (
        PPOConfig()
        .environment(name)
        .framework("torch")
        .env_runners(num_env_runners=args.env_runners,
                     num_envs_per_env_runner=args.envs_per_runner)
        .learners(num_learners=0)
        .multi_agent(policies=set(groups),
                     policy_mapping_fn=lambda agent_id, episode=None, **kw: group_of(agent_id))
        .rl_module(rl_module_spec=MultiRLModuleSpec(rl_module_specs={
            g: RLModuleSpec(model_config={"fcnet_hiddens": args.net_arch}) for g in groups}))
        .training(train_batch_size_per_learner=args.train_batch, minibatch_size=args.minibatch,
                  num_epochs=args.num_epochs, lr=args.learning_rate, gamma=args.gamma,
                  lambda_=args.gae_lambda, clip_param=args.clip_param,
                  entropy_coeff=args.entropy_coeff)
        .callbacks(on_sample_end=count_runner_steps)
        .debugging(seed=args.seed)
    )
    return config.build_algo(), len(agents), groups


# ---------------------------------------------------------------------- evaluation
class RLModulePolicy:
    """Trained RLModules as a leaderboard policy (``policy(participant, observation, info)``):
    the agent's group module, deterministic action, decoded like in training (the codec of
    ``env``'s spec, ``ogg_envs.wrappers.codec_for``)."""

    def __init__(self, modules: dict, env):
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


# ---------------------------------------------------------------------- main
def run(args: Args) -> dict:
    """Train, save, plot and evaluate as ``args`` says; returns what ``evaluation.json``
    holds. A run that cannot start raises ``common.SetupError`` before Ray starts."""
    import ray
    from ray.rllib.utils.metrics import (
        ENV_RUNNER_RESULTS,
        EPISODE_RETURN_MEAN,
        NUM_AGENT_STEPS_SAMPLED_LIFETIME,
    )
    from tensorboardX import SummaryWriter

    env_id, task, baseline, run_dir = common.setup(args, "rllib_ppo")
    run_dir = run_dir.resolve()
    started_ray = not ray.is_initialized()
    address = args.ray_address or os.environ.get("RAY_ADDRESS")
    if started_ray and address:  # a cluster: its machines' CPUs run the env runners
        ray.init(address=address, log_to_driver=False)
    elif started_ray:
        ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
    try:
        keep_logs_under(run_dir / "rllib_logs")
        algo, n_agents, groups = build(args, task)
        iteration = args.train_batch * n_agents
        iterations = math.ceil(args.timesteps / iteration)
        writer = SummaryWriter(str(run_dir / "tb"))
        bar = common.StepProgress(iterations, desc=f"RLlib PPO on {task.id}",
                                  disable=not args.progress, unit="iteration")
        points, steps, by_runner = [], 0, {}
        t0 = time.perf_counter()
        for it in range(iterations):
            metrics = algo.train()
            runners = metrics.get(ENV_RUNNER_RESULTS, {})
            by_runner = runners.get(STEPS_BY_RUNNER, by_runner)
            sampled = runners.get(NUM_AGENT_STEPS_SAMPLED_LIFETIME, steps)  # {agent: steps}
            steps = int(sum(sampled.values()) if isinstance(sampled, dict) else sampled)
            bar.update_to(it + 1, note=f"{steps:,} agent steps")
            ret = runners.get(EPISODE_RETURN_MEAN)
            if ret is not None and np.isfinite(ret):
                # RLlib's episode return sums all agents: per agent, like sb3_ppo's curve
                points.append((steps, float(ret) / n_agents))
                writer.add_scalar("episode_return_per_agent", float(ret) / n_agents, steps)
            writer.add_scalar("agent_steps", steps, it)
        wall = time.perf_counter() - t0
        bar.close()
        writer.close()
        algo.save_to_path(str(run_dir / "checkpoint"))
        common.plot_curve(points, run_dir / "learning_curve.png",
                          f"RLlib PPO (per group) on {task.id}", common.reward_unit(env_id))
        result = {
            "trainer": "RLlib PPO (one policy per group)", "env": common.short_name(env_id),
            "env_id": env_id, "task": task.id, "seed": args.seed, "baseline": baseline,
            "run_dir": str(run_dir), "args": asdict(args),
            "training": {"iterations": iterations, "agent_steps": steps, "n_agents": n_agents,
                         "groups": groups, "env_runners": args.env_runners,
                         "envs_per_runner": args.envs_per_runner, "wall_s": wall,
                         "agent_steps_per_s": steps / wall,
                         "env_steps_by_runner": {int(k): int(v) for k, v in by_runner.items()}},
            "curve": points,
        }
        if args.eval:
            modules = {g: algo.get_module(g) for g in groups}
            result["evaluation"] = common.evaluate(
                task, lambda task, env: RLModulePolicy(modules, env), baseline,
                args.quick_eval, progress=args.progress)
        algo.stop()
    finally:
        if started_ray:
            ray.shutdown()
    (run_dir / "evaluation.json").write_text(json.dumps(result, indent=2, default=str))
    return result


def main(argv=None) -> dict:
    args = common.parse_args(Args, argv, description=__doc__.splitlines()[0])
    common.absorb_solver_banner()
    try:
        result = run(args)
    except common.SetupError as exc:
        sys.exit(f"error: {exc}")
    common.print_result(result)
    return result


if __name__ == "__main__":
    main()
