"""dlmp-v0 benchmark: market clear time and parallel env steps/s against the floor.

On the default scenario (IEEE 37; 4 generators and 4 DR providers learning, 3 blocks each, 2
line limits, 3 market rounds per grid step), for random offers, structured ones (the registered
``markup`` baseline: true block costs + 30 %) and tied ones (every block of every learner at
the price cap, tying with shed load), as ``_timing.env_benchmark`` describes: clear p50/p99
(the exact merit order), env steps/s and their ratio to one bare ``grid.run_power_flow()``.
Also, on the same random offers, the same market clearing with HiGHS (called directly, cold:
``solver="highs"``, the path of lossy and large feeders) and the CVXPY statement of the
clearing (with Parameters, HiGHS and Clarabel), the readable reference the fast paths are
tested against.
Run: ``python benchmarks/bench_dlmp.py [--quick] [--json PATH]`` (or ``opengridgym bench --only
dlmp``).
"""

from __future__ import annotations

import time

import numpy as np
from _timing import benchmark_parser, env_benchmark, percentiles_ms, print_env_table, write_json

from ogg_envs.envs import dlmp_v0

ENV_ID = "opengridgym/dlmp-v0"
GOAL_STEPS_PER_S = 2_000  # random-action parallel steps/s the project aims at (issue #12)


def tied(env, agent, observation):
    """Every block of every learner at the price cap."""
    return np.full(env.n_blocks, env.price_cap, dtype=np.float32)


def clear_inputs(env, n: int, rng: np.random.Generator) -> list[tuple]:
    """``n`` clearings' inputs: offers around the true costs, random hours."""
    out = []
    env.reset(seed=0)
    for _ in range(n):
        env.t = int(rng.integers(env.horizon))
        env.start_hour()
        truthful = env.truthful_offers()
        offers = np.clip(truthful * rng.uniform(0.7, 1.6, truthful.shape), 0.0, env.price_cap)
        out.append((offers, env.context()))
    return out


def reference_clear_ms(n: int) -> dict[str, dict]:
    """Clear times (ms) of the fast path, of HiGHS and of the CVXPY statement, on the same
    inputs."""
    env = dlmp_v0.parallel_env()
    inputs = clear_inputs(env, n, np.random.default_rng(0))
    market, out = env.market, {}
    for name, solver, clear in (
            ("merit_order", "auto", market.clear), ("highs_direct", "highs", market.clear),
            ("cvxpy_highs", "auto", lambda o, c: market.clear_cvxpy(o, c, solver="HIGHS")),
            ("cvxpy_clarabel", "auto",
             lambda o, c: market.clear_cvxpy(o, c, solver="CLARABEL"))):
        market.solver = solver  # (the same market: merit order or HiGHS)
        clear(*inputs[0])  # the first call builds the problem
        times = []
        for offers, context in inputs[1:]:
            t0 = time.perf_counter()
            clear(offers, context)
            times.append(time.perf_counter() - t0)
        out[name] = percentiles_ms(times)
    return out


def main(argv=None) -> dict:
    args = benchmark_parser(__doc__.splitlines()[0]).parse_args(argv)
    result = env_benchmark(ENV_ID, tied, args.quick, goal_steps_per_s=GOAL_STEPS_PER_S)
    print_env_table(result)
    result["reference_clear_ms"] = ref = reference_clear_ms(40 if args.quick else 400)
    print("same random offers, clear p50 / p99 ms: " + "; ".join(
        f"{k} {v['p50']:.3f} / {v['p99']:.3f}" for k, v in ref.items()))
    write_json(args.json, "dlmp", result)
    return result


if __name__ == "__main__":
    main()
