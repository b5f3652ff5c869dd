"""Throughput of opengridgym/p2p-v0: AEC agent turns/s and parallel steps/s.

    python benchmarks/bench_p2p.py [--seconds 3] [--repeats 3] [--negotiation-steps 10]
                                   [--mode multi_period|homogeneous]

The bundled scenario (12 prosumers, IEEE 34): one OpenDSS power flow per grid step (every
``negotiation_steps`` negotiation steps), none inside a negotiation step. Actions are drawn
beforehand (uniform arms, as Python ints) so the loop measures the environment, not the
sampler. Each measurement runs whole episodes for about ``--seconds``; the best and the median
of ``--repeats`` runs are printed (the machine may be shared). The time spent in grid steps
(power flow, feasibility check, settlement) is measured separately.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

from ogg_envs.envs import p2p_v0


def _actions(n: int = 1 << 16) -> list[int]:
    return np.random.default_rng(0).integers(0, 8, n).tolist()


def aec_turns_per_s(seconds: float, **kwargs) -> float:
    env = p2p_v0.env(**kwargs)
    env.reset(seed=0)
    acts, k, turns = _actions(), 0, 0
    mask = len(acts) - 1
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in env.agent_iter():
            _, _, term, trunc, _ = env.last()
            if term or trunc:
                env.step(None)
                continue
            env.step(acts[k & mask])
            k += 1
            turns += 1
        env.reset()
    return turns / (time.perf_counter() - start)


def parallel_steps_per_s(seconds: float, **kwargs) -> tuple[float, int, float]:
    """(steps/s, agents, share of the time spent in grid steps)."""
    env = p2p_v0.parallel_env(**kwargs)
    grid_time = [0.0]
    inner = env.grid_step

    def timed_grid_step():
        t = time.perf_counter()
        out = inner()
        grid_time[0] += time.perf_counter() - t
        return out

    env.grid_step = timed_grid_step  # the core calls self.grid_step()
    env.reset(seed=0)
    agents = list(env.possible_agents)
    acts = _actions()
    batches = [dict(zip(agents, acts[i:i + len(agents)]))
               for i in range(0, len(acts) - len(agents), len(agents))]
    steps = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        env.reset()
        while env.agents:
            env.step(batches[steps % len(batches)])
            steps += 1
    elapsed = time.perf_counter() - start
    return steps / elapsed, len(agents), grid_time[0] / elapsed


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--negotiation-steps", type=int, default=None)
    ap.add_argument("--mode", choices=p2p_v0.MODES, default=None)
    args = ap.parse_args(argv)
    kwargs = {k: v for k, v in (("negotiation_steps", args.negotiation_steps),
                                ("mode", args.mode)) if v is not None}
    probe = p2p_v0.parallel_env(**kwargs)
    print(f"p2p-v0: {len(probe.possible_agents)} prosumers, mode={probe.mode}, "
          f"{probe.market_rounds} negotiation steps per grid step, horizon {probe.horizon}; "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    aec = [aec_turns_per_s(args.seconds, **kwargs) for _ in range(args.repeats)]
    par = [parallel_steps_per_s(args.seconds, **kwargs) for _ in range(args.repeats)]
    steps = [p[0] for p in par]
    n_agents = par[0][1]
    result = {
        "aec_agent_turns_per_s": {"best": max(aec), "median": statistics.median(aec)},
        "parallel_steps_per_s": {"best": max(steps), "median": statistics.median(steps)},
        "parallel_agent_steps_per_s": {"best": max(steps) * n_agents,
                                       "median": statistics.median(steps) * n_agents},
        "grid_step_time_share": statistics.median(p[2] for p in par),
    }
    print(f"AEC agent turns/s:     best {max(aec):9,.0f}   median {statistics.median(aec):9,.0f}"
          f"   (goal >= 50,000)")
    print(f"parallel steps/s:      best {max(steps):9,.0f}   median "
          f"{statistics.median(steps):9,.0f}   ({n_agents} agents per step)")
    print(f"time in grid steps:    {100 * result['grid_step_time_share']:.0f} % of the parallel "
          "run (OpenDSS power flow, feasibility check, settlement)")
    return result


if __name__ == "__main__":
    main()
