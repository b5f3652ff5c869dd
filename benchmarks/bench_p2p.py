"""p2p-v0 benchmark: market clear time and parallel env steps/s against the floor.

On the default scenario (12 PV prosumers on IEEE 34, all learning; 10 negotiation steps per grid
step, one OpenDSS power flow per grid step), for random arms, structured actions (the
registered ``markup`` baseline: the reservation price shaded by 30 %) and tied actions (every
prosumer the highest arm), as ``_timing.env_benchmark`` describes: clear p50/p99 (one
negotiation step), env steps/s and their ratio to one bare ``grid.run_power_flow()``. Also the
AEC agent turns/s with random arms, and how a random-arm step's time splits between the
negotiation steps that end an hour (the grid step: the trade check's power flow, settlement,
the next hour's matching) and the others.
Run: ``python benchmarks/bench_p2p.py [--quick] [--json PATH]`` (or ``opengridgym bench --only
p2p``).
"""

from __future__ import annotations

import itertools
import time

import numpy as np
from _timing import benchmark_parser, env_benchmark, print_env_table, write_json

from ogg_envs.envs import p2p_v0

ENV_ID = "opengridgym/p2p-v0"
GOAL_STEPS_PER_S = 10_000  # random-action parallel steps/s the project aims at (issue #12)


def tied(env, agent, observation):
    """Every prosumer asks for the highest arm."""
    return env.action_space(agent).n - 1


def random_arms(env, seed: int):
    """Uniformly random arm indices of ``env``'s arms, drawn beforehand as Python ints and
    handed out in a cycle, so that the sampler is not timed."""
    n_arms = env.unwrapped.n_arms
    return itertools.cycle(np.random.default_rng(seed).integers(0, n_arms, 1 << 16).tolist())


def aec_turns_per_s(seconds: float) -> float:
    """AEC agent turns/s with random arms (``random_arms``)."""
    env = p2p_v0.env()
    arms = random_arms(env, 0)
    turns, seed, start = 0, 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        seed += 1
        env.reset(seed=seed)
        for _ in env.agent_iter():
            _, _, term, trunc, _ = env.last()
            if term or trunc:
                env.step(None)
                continue
            env.step(next(arms))
            turns += 1
    return turns / (time.perf_counter() - start)


def hour_split(seconds: float) -> dict:
    """Median and total time of the parallel steps that end an hour (the grid step runs in
    them) and of the other negotiation steps, random arms drawn beforehand."""
    env = p2p_v0.parallel_env()
    arms = random_arms(env, 1)
    times: dict[str, list[float]] = {"ending an hour": [], "the others": []}
    seed, spent = 0, 0.0
    while spent < seconds:
        seed += 1
        env.reset(seed=seed)
        while env.agents:
            actions = {a: next(arms) for a in env.agents}
            t0 = time.perf_counter()
            env.step(actions)
            dt = time.perf_counter() - t0
            spent += dt
            times["ending an hour" if env.round == 0 else "the others"].append(dt)
    return {kind: {"steps": len(t), "ms_p50": 1e3 * float(np.median(t)),
                   "share": sum(t) / spent} for kind, t in times.items()}


def main(argv=None) -> dict:
    args = benchmark_parser(__doc__.splitlines()[0]).parse_args(argv)
    result = env_benchmark(ENV_ID, tied, args.quick, goal_steps_per_s=GOAL_STEPS_PER_S)
    print_env_table(result)
    result["aec_agent_turns_per_s"] = aec_turns_per_s(0.5 if args.quick else 3.0)
    print(f"AEC agent turns/s (random arms): {result['aec_agent_turns_per_s']:,.0f}")
    result["hour_split"] = split = hour_split(0.5 if args.quick else 3.0)
    print("random-arm steps, median ms (share of the time): " + "; ".join(
        f"{kind} {v['ms_p50']:.3f} ({v['share']:.0%})" for kind, v in split.items()))
    write_json(args.json, "p2p", result)
    return result


if __name__ == "__main__":
    main()
