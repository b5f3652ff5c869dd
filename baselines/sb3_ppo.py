"""Parameter-shared PPO (Stable-Baselines3) on an OpenGridGym market, CleanRL style.

    python -m ogg_envs.baselines.sb3_ppo --env topology-power --timesteps 100000 --seed 0
    opengridgym train topology-power --backend sb3 --algo ppo --timesteps 100000 --seed 0

Every learning agent of the parallel environment (e.g. the four suppliers of
topology-power-v0) acts through one shared network: SuperSuit turns the parallel env into a
vector env with one entry per agent (``pettingzoo_env_to_vec_env_v1``) and concatenates
``--n-envs`` copies (``concat_vec_envs_v1``). Actions are normalised by ``normalized_bids_v0``
(every action is a valid bid, through the codec of the environment's registered spec); the
environment's infos, which PPO never reads, are dropped where they are made (``no_infos_v0``),
so that no vector env pickles, sends and copies them (``--keep-infos`` keeps them, for callbacks
that read them).

``--env`` is any registered environment id (``opengridgym/topology-power-v0``, a user's
``mylab/pay-as-bid-v0`` with ``--import``), its short name (``topology-power``) or a
leaderboard task id. The run trains on the environment's leaderboard task (``common.TASKS``,
else its first task): topology-power's congested 832-888 transformer, p2p's 6 learners against
6 UCB prosumers, dlmp's four generators; then the leaderboard's runner evaluates the policy on
the task's own seeds (never seen in training) against the baseline (``common.TASKS``, else the
spec's ``truthful`` or first baseline). With ``--feeder`` or ``--scenario`` (or for an
environment without a task) it trains and evaluates on that configuration of the environment
instead (``common.EnvTask``).

Outputs in ``--out/--run-name`` (default ``runs/sb3_ppo_<env>_s<seed>``; an earlier run there
is kept unless ``--force``): ``model.zip``, TensorBoard logs in ``tb/``,
``learning_curve.png`` and ``evaluation.json``. Every hyperparameter is a field of ``Args``
and an option (``--help``).
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np
import supersuit as ss
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback, ConvertCallback
from stable_baselines3.common.vec_env import VecMonitor, VecNormalize
from supersuit.vector.sb3_vector_wrapper import SB3VecEnvWrapper

from ogg_envs.baselines import common
from ogg_envs.leaderboard.entries import decode_model_action
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
    """seed of the network, the environments and the sampling"""
    # ------------------------------------------------------------------ the run
    timesteps: int = 100_000
    """agent steps to train (each env copy gives one per learning agent and step); rounded up
    to whole rollouts of n_steps x n_envs x agents"""
    out: str = "runs"
    """the folder of runs"""
    run_name: str | None = None
    """this run's folder in --out (default sb3_ppo_<env>_s<seed>)"""
    force: bool = False
    """replace an earlier run in that folder"""
    eval: bool = True
    """evaluate the trained policy against the baseline after training"""
    quick_eval: bool = False
    """evaluate on the task's quick seeds only"""
    progress: bool = True
    """show progress bars"""
    # ------------------------------------------------------------------ PPO
    n_envs: int = 4
    """env copies stepped in lockstep"""
    num_cpus: int = 1
    """processes stepping the env copies: 1 steps them in this process (the envs are cheap to
    step); N >= 2 starts N worker processes (SuperSuit), each stepping n_envs / N copies"""
    keep_infos: bool = False
    """pass the environment's infos on to the vector env (for callbacks that read them); PPO
    does not, and shipping them costs sampling speed (no_infos_v0)"""
    n_steps: int = 128
    """rollout length per vector entry: a rollout is n_steps x n_envs x agents agent steps"""
    batch_size: int = 256
    """minibatch size"""
    n_epochs: int = 5
    """passes over each rollout"""
    learning_rate: float = 3e-4
    """Adam's step size"""
    gamma: float = 0.99
    """discount factor"""
    gae_lambda: float = 0.95
    """GAE's lambda"""
    clip_range: float = 0.2
    """PPO's clipping range"""
    ent_coef: float = 0.0
    """entropy bonus"""
    net_arch: list[int] = field(default_factory=lambda: [64, 64])
    """hidden layers of the policy and value networks"""
    normalize_reward: bool = True
    """scale rewards by a running estimate of the return's spread (VecNormalize)"""

    def __post_init__(self):
        common.check_positive(self, "timesteps", "n_envs", "num_cpus", "n_steps", "batch_size",
                              "n_epochs", "learning_rate")
        if self.num_cpus > self.n_envs:
            raise ValueError(f"--num-cpus ({self.num_cpus}) must be at most --n-envs "
                             f"({self.n_envs}): each process steps at least one env copy")


# ---------------------------------------------------------------------- environment
class SeededSB3VecEnv(SB3VecEnvWrapper):
    """SuperSuit's SB3 wrapper has no ``seed``: PPO(seed=...) calls it, then ``reset()``."""

    next_seed = None

    def seed(self, seed=None):
        self.next_seed = seed
        return [seed]

    def reset(self, seed=None, options=None):
        seed = self.next_seed if seed is None else seed
        self.next_seed = None
        observations, self.reset_infos = self.venv.reset(seed=seed, options=options)
        return observations


def make_vec_env(make_env, args: Args):
    """``make_env()`` (a parallel env: the task's) with normalised actions as an SB3 vector env
    with one entry per agent and ``args.n_envs`` copies, stepped by ``args.num_cpus`` processes;
    returns it and the number of agents. Close it (``venv.close()``): worker processes keep a
    Python that has not closed it from exiting.

    With worker processes, SuperSuit seeds worker ``i``'s ``j``-th copy with ``seed + i + j``
    (in one process: copy ``j`` with ``seed + j``), so a run is reproducible for a given
    ``num_cpus`` but differs from the same seed with another."""
    env = make_env()
    par = normalized_bids_v0(env if args.keep_infos else no_infos_v0(env))
    venv = ss.pettingzoo_env_to_vec_env_v1(par)
    num_cpus = 0 if args.num_cpus == 1 else args.num_cpus  # 0: SuperSuit's in-process concat
    venv = ss.concat_vec_envs_v1(venv, args.n_envs, num_cpus=num_cpus, base_class="gymnasium")
    with warnings.catch_warnings():  # SB3 notes that SuperSuit's vector env has no render_mode
        warnings.filterwarnings("ignore", message="The `render_mode` attribute")
        venv = VecMonitor(SeededSB3VecEnv(venv))  # per-agent episode returns for the curve
        if args.normalize_reward:
            venv = VecNormalize(venv, norm_obs=False, norm_reward=True, gamma=args.gamma)
    return venv, len(par.possible_agents)


class LearningCurve(BaseCallback):
    """Per rollout: (agent steps so far, mean raw return of the episodes finished in it)."""

    def __init__(self):
        super().__init__()
        self.points, self.returns = [], []

    def _on_step(self) -> bool:
        self.returns += [info["episode"]["r"] for info in self.locals["infos"]
                         if "episode" in info]
        return True

    def _on_rollout_end(self) -> None:
        if self.returns:
            self.points.append((self.num_timesteps, float(np.mean(self.returns))))
            self.returns = []


# ---------------------------------------------------------------------- evaluation
class LearnedPolicy:
    """A trained model as a leaderboard policy (``policy(participant, observation, info)``):
    shared network, deterministic action, decoded by the same parametrisation as in training
    (the codec of ``env``'s spec, ``ogg_envs.wrappers.codec_for``)."""

    def __init__(self, model, env):
        self.model = model
        self.codecs = {a: codec_for(env, a) for a in env.possible_agents}

    def __call__(self, participant, observation, info: dict):
        action, _ = self.model.predict(np.asarray(observation), deterministic=True)
        return decode_model_action(self.model.action_space, action, participant, info,
                                   self.codecs[participant.name])


# ---------------------------------------------------------------------- main
def run(args: Args) -> dict:
    """Train, save, plot and evaluate as ``args`` says; returns what ``evaluation.json``
    holds. A run that cannot start raises ``common.SetupError`` before training."""
    env_id, task, baseline, run_dir = common.setup(args, "sb3_ppo")
    torch.set_num_threads(1)
    venv, n_agents = make_vec_env(task.make_env, args)
    try:
        model = PPO("MlpPolicy", venv, n_steps=args.n_steps, batch_size=args.batch_size,
                    n_epochs=args.n_epochs, learning_rate=args.learning_rate, gamma=args.gamma,
                    gae_lambda=args.gae_lambda, clip_range=args.clip_range,
                    ent_coef=args.ent_coef, seed=args.seed, device="cpu",
                    policy_kwargs={"net_arch": args.net_arch},
                    tensorboard_log=str(run_dir / "tb"), verbose=0)
        rollout = args.n_steps * args.n_envs * n_agents
        bar = common.StepProgress(common.rounded_up(args.timesteps, rollout),
                                  desc=f"PPO on {task.id}", disable=not args.progress)
        curve = LearningCurve()
        t0 = time.perf_counter()
        model.learn(total_timesteps=args.timesteps, callback=[curve, ConvertCallback(bar)],
                    tb_log_name="ppo")
        wall = time.perf_counter() - t0
        bar.close()
    finally:
        venv.close()  # worker processes (--num-cpus >= 2) end here, also on an error
    model.save(run_dir / "model.zip")
    common.plot_curve(curve.points, run_dir / "learning_curve.png", f"PPO (shared) on {task.id}",
                      common.reward_unit(env_id))

    result = {
        "trainer": "sb3 PPO (shared network)", "env": common.short_name(env_id),
        "env_id": env_id, "task": task.id, "seed": args.seed, "baseline": baseline,
        "run_dir": str(run_dir), "args": asdict(args),
        "training": {"agent_steps": int(model.num_timesteps), "n_agents": n_agents,
                     "rollout_agent_steps": rollout, "num_cpus": args.num_cpus, "wall_s": wall,
                     "agent_steps_per_s": model.num_timesteps / wall},
        "curve": curve.points,
    }
    if args.eval:
        result["evaluation"] = common.evaluate(
            task, lambda task, env: LearnedPolicy(model, env), baseline, args.quick_eval,
            progress=args.progress)
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
