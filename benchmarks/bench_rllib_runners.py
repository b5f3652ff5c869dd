"""RLlib scale-out: agent steps/s of ``rllib_ppo`` with 0, 1 and 2 remote env runners.

For each runner count, a short training of ``baselines/rllib_ppo.py`` (its defaults: dlmp's
task, 8 envs per runner, 2,000 env steps per iteration, PPO updates in the driver; no
evaluation) on one local Ray instance of ``--num-cpus`` CPUs. After a first iteration (Ray's
actors start, the envs are built), the median over ``--iterations - 1`` rounds of:

* **sampling**: RLlib's sampling call, the one PPO's training step makes
  (``synchronous_parallel_sample`` of ``train_batch`` env steps on the algorithm's runners),
  timed alone: the agent steps RLlib returns over its wall time. (RLlib's own
  ``env_runner_sampling_timer`` is an exponential average with coefficient 0.01, still mostly
  the first iteration's start-up after a few iterations: not a per-iteration figure);
* **training**: a training iteration (sampling + PPO's update in the driver) timed whole: the
  env steps RLlib reports sampled in it, as agent steps, over its wall time.

0 runners samples in the driver; N runners are N Ray actors (processes) sampling
``train_batch / N`` env steps each, in parallel. The runners' share of the samples (rllib_ppo's
per-runner counts) is printed too: with runners, the driver samples nothing.
Needs the ``[rllib]`` extra. Run: ``python benchmarks/bench_rllib_runners.py [--quick] [--json
PATH] [--env dlmp] [--runners 0 1 2] [--iterations 5]`` (or ``opengridgym bench --only rllib``).
Ray writes its session files under ``RAY_TMPDIR`` (default ``/tmp/ray``).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

from _timing import benchmark_parser, write_json


def _episodes(data) -> list:
    """The episodes of a sample: a list of episodes, or of lists of them (one per runner)."""
    return [e for item in data for e in (_episodes(item) if isinstance(item, list) else [item])]


def measure(rllib_ppo, env: str, runners: int, iterations: int, train_batch: int) -> dict:
    """One warm-up iteration, then ``iterations - 1`` times: RLlib's sampling call timed alone,
    and a training iteration timed whole."""
    from ray.rllib.execution.rollout_ops import synchronous_parallel_sample
    from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED

    from ogg_envs.baselines import common

    _, task, _ = common.training_setup(env)
    args = rllib_ppo.Args(env=env, env_runners=runners, train_batch=train_batch, seed=0,
                          minibatch=min(500, train_batch))
    with tempfile.TemporaryDirectory() as out:
        rllib_ppo.keep_logs_under(Path(out) / "rllib_logs")
        t0 = time.perf_counter()
        algo, n_agents, _ = rllib_ppo.build(args, task)
        algo.train()  # Ray's actors started, the envs built and stepped once
        build_s = time.perf_counter() - t0
        sampling, training = [], []
        try:
            for _ in range(iterations - 1):
                # PPO's own sampling call (its metrics taken, so training's stay its own)
                t0 = time.perf_counter()
                episodes, _ = synchronous_parallel_sample(
                    worker_set=algo.env_runner_group, max_env_steps=train_batch, concat=False,
                    sample_timeout_s=algo.config.sample_timeout_s, _uses_new_env_runners=True,
                    _return_metrics=True)
                dt = time.perf_counter() - t0
                sampling.append(sum(e.agent_steps() for e in _episodes(episodes)) / dt)
                t0 = time.perf_counter()
                metrics = algo.train()
                wall = time.perf_counter() - t0
                results = metrics[ENV_RUNNER_RESULTS]
                training.append(results[NUM_ENV_STEPS_SAMPLED] * n_agents / wall)
            by_runner = results.get(rllib_ppo.STEPS_BY_RUNNER, {})
        finally:
            algo.stop()
    return {"runners": runners, "agents": n_agents, "start_s": build_s,
            "sampling_agent_steps_per_s": statistics.median(sampling),
            "training_agent_steps_per_s": statistics.median(training),
            "iterations_measured": len(sampling),
            "env_steps_by_runner": {str(k): int(v) for k, v in by_runner.items()}}


def main(argv=None) -> dict:
    parser = benchmark_parser(__doc__.splitlines()[0])
    parser.add_argument("--env", default="dlmp", help="environment or task (default dlmp)")
    parser.add_argument("--runners", type=int, nargs="+", default=[0, 1, 2],
                        help="env runner counts to measure (default 0 1 2)")
    parser.add_argument("--iterations", type=int, default=None,
                        help="iterations per runner count, the first not counted (default 5; "
                             "--quick 3)")
    parser.add_argument("--num-cpus", type=int, default=2,
                        help="CPUs of the local Ray instance (each runner reserves one)")
    options = parser.parse_args(argv)
    import ray

    from ogg_envs.baselines import common, rllib_ppo

    common.absorb_solver_banner()
    iterations = options.iterations or (3 if options.quick else 5)
    train_batch = 400 if options.quick else 2000
    ray.init(num_cpus=options.num_cpus, include_dashboard=False, log_to_driver=False)
    try:
        rows = [measure(rllib_ppo, options.env, n, iterations, train_batch)
                for n in options.runners]
    finally:
        ray.shutdown()
    print(f"RLlib PPO on {options.env}: {train_batch} env steps per iteration, 8 envs per "
          f"runner, Ray with {options.num_cpus} CPUs on a machine with {os.cpu_count()} "
          f"(load average {os.getloadavg()[0]:.2f}); median of {iterations - 1} rounds")
    print(f"{'runners':>7s} {'sampling agent st/s':>20s} {'training agent st/s':>20s}  "
          "env steps by runner (0: driver)")
    for r in rows:
        print(f"{r['runners']:7d} {r['sampling_agent_steps_per_s']:20,.0f} "
              f"{r['training_agent_steps_per_s']:20,.0f}  {r['env_steps_by_runner']}")
    base = {r["runners"]: r for r in rows}
    if 1 in base and 2 in base:
        ratio = (base[2]["sampling_agent_steps_per_s"]
                 / base[1]["sampling_agent_steps_per_s"])
        print(f"sampling, 2 runners / 1: {ratio:.2f}x (goal >= 1.6x)")
    result = {"env": options.env, "train_batch": train_batch, "num_cpus": options.num_cpus,
              "rows": rows}
    write_json(options.json, "rllib_runners", result)
    return result


if __name__ == "__main__":
    main()
