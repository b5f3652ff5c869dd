"""Benchmark of opengridgym/dlmp-v0: DSO clearing time and parallel env throughput.

    python benchmarks/bench_dlmp.py [--clears 3000] [--steps 6000]

Prints the median time of one DLMP clearing on the IEEE 37 feeder (default scenario: 4
generators and 4 DR providers, 3 blocks each, 2 line limits, random offers and hourly data of
the scenario's day) for the fast path (HiGHS called directly, warm-started) and for the CVXPY
statement with Parameters (HiGHS and Clarabel), and the parallel env's steps per second: every
step is a market clearing, every ``market_rounds``-th also an OpenDSS power flow (measured with
the default 3 and with 1).
Floor measured on a 2-core machine: 0.23 ms for HiGHS direct; goals: clear <= 0.45 ms and
>= 1,500 parallel env steps/s.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from ogg_envs.envs import dlmp_v0


def _clear_inputs(env, rng: np.random.Generator, n: int) -> list[tuple]:
    """``n`` clearings' inputs: random offers around the true costs, random hours."""
    out = []
    cap = env.price_cap
    for _ in range(n):
        env.t = int(rng.integers(env.horizon))
        env.start_hour()
        truthful = env.truthful_offers()
        offers = np.clip(truthful * rng.uniform(0.7, 1.6, truthful.shape), 0.0, cap)
        out.append((offers, env.context()))
    env.t = 0
    env.start_hour()
    return out


def bench_clear(env, n: int, rng: np.random.Generator) -> dict[str, float]:
    market = env.market
    inputs = _clear_inputs(env, rng, n)
    for offers, context in inputs[:50]:  # warm up
        market.clear(offers, context)
    times = []
    for offers, context in inputs:
        t0 = time.perf_counter()
        market.clear(offers, context)
        times.append(time.perf_counter() - t0)
    out = {"highs_direct_ms": 1e3 * float(np.median(times))}
    for solver in ("HIGHS", "CLARABEL"):
        times = []
        for offers, context in inputs[: max(n // 20, 20)]:
            t0 = time.perf_counter()
            market.clear_cvxpy(offers, context, solver=solver)
            times.append(time.perf_counter() - t0)
        out[f"cvxpy_{solver.lower()}_ms"] = 1e3 * float(np.median(times[1:]))
    return out


def bench_env(steps: int, seed: int = 0, **kwargs) -> float:
    """Parallel env steps per second (resets included), actions pre-sampled."""
    env = dlmp_v0.parallel_env(**kwargs)
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    actions = [{a: rng.uniform(0.0, 10.0, env.n_blocks).astype(np.float32)
                for a in env.possible_agents} for _ in range(256)]
    for i in range(50):  # warm up
        if not env.agents:
            env.reset()
        env.step(actions[i % 256])
    env.reset(seed=seed)
    t0 = time.perf_counter()
    for i in range(steps):
        if not env.agents:
            env.reset()
        env.step(actions[i % 256])
    return steps / (time.perf_counter() - t0)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clears", type=int, default=3000)
    parser.add_argument("--steps", type=int, default=6000)
    args = parser.parse_args(argv)
    env = dlmp_v0.parallel_env()
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    clear = bench_clear(env, args.clears, rng)
    sps = bench_env(args.steps)
    sps1 = bench_env(args.steps, market_rounds=1)
    print("dlmp-v0 on IEEE 37 (4 generators, 4 DR providers, 3 blocks, 2 line limits)")
    print(f"  clear, HiGHS direct (warm), median: {clear['highs_direct_ms']:.3f} ms "
          f"(floor 0.23 ms, goal <= 0.45 ms)")
    print(f"  clear, CVXPY + Parameters, HiGHS:   {clear['cvxpy_highs_ms']:.3f} ms")
    print(f"  clear, CVXPY + Parameters, Clarabel: {clear['cvxpy_clarabel_ms']:.3f} ms")
    print(f"  parallel env, default (3 market rounds per grid step): {sps:,.0f} steps/s "
          f"(goal >= 1,500)")
    print(f"  parallel env, market_rounds=1 (every step a clearing and a power flow): "
          f"{sps1:,.0f} steps/s")


if __name__ == "__main__":
    main()
