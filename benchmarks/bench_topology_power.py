"""topology-power-v0 benchmark: market clear time and parallel env steps/s against the floor.

On the default scenario (IEEE 34, 4 learning suppliers, 3 market rounds per grid step), for
random, structured (the registered ``markup`` baseline) and tied actions (every supplier offers
its capacity at the price cap, tying with shed load), as ``_timing.env_benchmark`` describes:
clear p50/p99, env steps/s and their ratio to one bare ``grid.run_power_flow()``. Also the AEC
agent turns/s with structured bids, and the clearing's QP on the same random bids solved by
each solver the market can use (``CurveMarket.solve_dense``: DAQP, the default; Clarabel; OSQP).
Run: ``python benchmarks/bench_topology_power.py [--quick] [--json PATH]`` (or ``opengridgym
bench --only topology``).
"""

from __future__ import annotations

import time

import numpy as np
from _timing import benchmark_parser, env_benchmark, percentiles_ms, print_env_table, write_json

from ogg_envs.envs import topology_power_v0
from ogg_envs.policies.curve import MarkupBidder

ENV_ID = "opengridgym/topology-power-v0"
GOAL_STEPS_PER_S = 1_500  # random-action parallel steps/s the project aims at (issue #12)
# and on random bids (issue #12): the clearing's p50 and p99 (ms), random-action throughput at
# least 0.6x the structured one, a random-action step within 4x the floor
GOALS = {"clear_ms_p50": 0.15, "clear_ms_p99": 0.5, "random_over_structured": 0.6,
         "step_x_floor": 4.0}


def tied(env, agent, observation):
    """The same price curve for every supplier: all it has, at the price cap."""
    return np.array([env.price_cap, env.price_cap, env.participant[agent].limits.q_now, 0.0])


def aec_turns_per_s(seconds: float) -> float:
    env = topology_power_v0.env()
    raw, markup = env.unwrapped, MarkupBidder(0.3)
    turns, busy, seed = 0, 0.0, 0
    while busy < seconds:
        seed += 1
        t0 = time.perf_counter()
        env.reset(seed=seed)
        for agent in env.agent_iter():
            _, _, term, trunc, _ = env.last()
            env.step(None if term or trunc else markup(raw.participant[agent]))
            turns += 1
        busy += time.perf_counter() - t0
    return turns / busy


def dense_solver_ms(n: int) -> dict[str, dict]:
    """p50/p99 ms of the clearing's QP per solver on ``n`` random-bid instances (every
    participant bidding uniformly random actions), and how many each failed."""
    env = topology_power_v0.parallel_env(market_rounds=1,
                                         learners=("supplier", "consumer", "substation"))
    bids, seed = [], 0
    while len(bids) < n:
        env.reset(seed=seed)
        spaces = {a: env.action_space(a) for a in env.agents}
        for k, a in enumerate(env.agents):
            spaces[a].seed(1000 * seed + k)
        while env.agents and len(bids) < n:
            env.step({a: spaces[a].sample() for a in env.agents})
            bids.append(env.unwrapped.last_clearing.bids)
        seed += 1
    market = env.unwrapped.market
    out = {}
    for solver in ("daqp", "clarabel", "osqp"):
        times, failed = [], 0
        for arr in bids:
            t0 = time.perf_counter()
            try:
                market.solve_dense(arr, solver)
            except Exception:  # noqa: BLE001 - a failure is counted, not fatal
                failed += 1
            times.append(time.perf_counter() - t0)
        out[solver] = {**percentiles_ms(times), "failed": failed, "n": len(bids)}
    return out


def main(argv=None) -> dict:
    args = benchmark_parser(__doc__.splitlines()[0]).parse_args(argv)
    result = env_benchmark(ENV_ID, tied, args.quick, goal_steps_per_s=GOAL_STEPS_PER_S)
    result["goals"] = GOALS
    print_env_table(result)
    result["aec_agent_turns_per_s"] = aec_turns_per_s(0.5 if args.quick else 3.0)
    print(f"AEC agent turns/s (markup bids): {result['aec_agent_turns_per_s']:,.0f}")
    result["dense_solver_ms"] = solvers = dense_solver_ms(40 if args.quick else 300)
    print("the clearing's QP on the same random bids, p50 / p99 ms (failed): " + "; ".join(
        f"{k} {v['p50']:.3f} / {v['p99']:.3f} ({v['failed']})" for k, v in solvers.items()))
    write_json(args.json, "topology_power", result)
    return result


if __name__ == "__main__":
    main()
