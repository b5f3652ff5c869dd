"""Many environments for trainers: agent steps/s of the SB3 trainer's vector env, 1 and 2 processes.

``baselines/sb3_ppo.py`` turns the task's parallel env into an SB3 vector env with one entry
per agent and ``--n-envs`` copies (SuperSuit), stepped in the trainer's process
(``--num-cpus 1``) or by N worker processes (``--num-cpus N``). For each process count this
prints:

* **sampling**: that vector env stepped with random normalised actions (drawn beforehand), in
  agent steps/s (one vector step is ``n_envs x agents`` agent steps);
* **training**: ``sb3_ppo.run`` (PPO, the trainer's defaults but ``--timesteps``; no
  evaluation), agent steps/s over the whole ``learn`` (sampling, and PPO's updates in the
  trainer's process);
* **infos kept / dropped**: the sampling rate of the same vector env with the environment's
  infos kept (``--keep-infos``) and dropped (``no_infos_v0``), built and stepped in turns
  (1.5-second rounds, medians): an A/B that the machine's drift between runs does not blur.

Needs the ``[train]`` extra. Run: ``python benchmarks/bench_vec.py [--quick] [--json PATH]
[--env dlmp] [--n-envs 4]`` (or ``opengridgym bench --only vec``).
"""

from __future__ import annotations

import tempfile
import time

import numpy as np
from _timing import benchmark_parser, write_json


def sampling_rate(sb3_ppo, args, seconds: float) -> float:
    """Agent steps/s of the trainer's vector env with random actions."""
    from ogg_envs.baselines import common

    _, task, _ = common.training_setup(args.env)
    venv, _ = sb3_ppo.make_vec_env(task.make_env, args)
    try:
        venv.seed(args.seed)
        venv.reset()
        space = venv.action_space
        space.seed(0)
        pool = [np.stack([space.sample() for _ in range(venv.num_envs)]) for _ in range(64)]
        for actions in pool[:8]:  # warm up (and start the workers)
            venv.step(actions)
        steps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            venv.step(pool[steps % len(pool)])
            steps += 1
        elapsed = time.perf_counter() - t0
        return steps * venv.num_envs / elapsed
    finally:
        venv.close()


def infos_ab(sb3_ppo, args, rounds: int) -> dict[str, float]:
    """Median agent steps/s of the vector env with infos kept and dropped, built and stepped
    in turns (one at a time: a trainer holding two vector envs with worker processes would
    fork each into the other's workers)."""
    import dataclasses

    from ogg_envs.baselines import common

    _, task, _ = common.training_setup(args.env)
    rates = {"kept": [], "dropped": []}
    for k in range(rounds):
        for name in (("kept", "dropped") if k % 2 else ("dropped", "kept")):
            venv, _ = sb3_ppo.make_vec_env(task.make_env, dataclasses.replace(
                args, keep_infos=name == "kept"))
            try:
                venv.seed(args.seed)
                venv.reset()
                venv.action_space.seed(k)
                pool = [np.stack([venv.action_space.sample() for _ in range(venv.num_envs)])
                        for _ in range(64)]
                for actions in pool[:8]:  # warm up (and start the workers)
                    venv.step(actions)
                steps, t0 = 0, time.perf_counter()
                while time.perf_counter() - t0 < 1.5:
                    venv.step(pool[steps % len(pool)])
                    steps += 1
                rates[name].append(steps * venv.num_envs / (time.perf_counter() - t0))
            finally:
                venv.close()
    return {name: float(np.median(r)) for name, r in rates.items()}


def training_rate(sb3_ppo, args) -> float:
    """Agent steps/s of a PPO run (no evaluation), from the trainer's own result."""
    with tempfile.TemporaryDirectory() as out:
        args.out, args.eval, args.progress = out, False, False
        return sb3_ppo.run(args)["training"]["agent_steps_per_s"]


def main(argv=None) -> dict:
    parser = benchmark_parser(__doc__.splitlines()[0])
    parser.add_argument("--env", default="topology-power",
                        help="an environment, its short name or a task (default topology-power)")
    parser.add_argument("--n-envs", type=int, default=4, help="env copies (default 4)")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2],
                        help="process counts to measure (default 1 2)")
    options = parser.parse_args(argv)
    from ogg_envs.baselines import common, sb3_ppo

    common.absorb_solver_banner()
    seconds = 2.0 if options.quick else 10.0
    timesteps = 2_048 if options.quick else 20_480
    rows = {}
    for n in options.processes:
        args = sb3_ppo.Args(env=options.env, n_envs=options.n_envs, num_cpus=n,
                            timesteps=timesteps, seed=0)
        rows[n] = {"sampling_agent_steps_per_s": sampling_rate(sb3_ppo, args, seconds),
                   "training_agent_steps_per_s": training_rate(sb3_ppo, args),
                   "infos_agent_steps_per_s": infos_ab(sb3_ppo, args, 2 if options.quick else 6)}
        ab = rows[n]["infos_agent_steps_per_s"]
        print(f"--num-cpus {n}: sampling {rows[n]['sampling_agent_steps_per_s']:9,.0f} agent "
              f"steps/s; PPO training {rows[n]['training_agent_steps_per_s']:9,.0f} agent "
              f"steps/s; sampling in turns, infos kept {ab['kept']:,.0f} / dropped "
              f"{ab['dropped']:,.0f} ({ab['dropped'] / ab['kept'] - 1:+.0%})", flush=True)
    first = rows[options.processes[0]]
    for n in options.processes[1:]:
        print(f"{n} processes / {options.processes[0]}: sampling "
              f"{rows[n]['sampling_agent_steps_per_s'] / first['sampling_agent_steps_per_s']:.2f}"
              f"x, training "
              f"{rows[n]['training_agent_steps_per_s'] / first['training_agent_steps_per_s']:.2f}"
              "x")
    result = {"env": options.env, "n_envs": options.n_envs, "timesteps": timesteps,
              "processes": {str(n): r for n, r in rows.items()}}
    write_json(options.json, "vec", result)
    return result


if __name__ == "__main__":
    main()
