"""topology-power-v0 benchmark: market clear, parallel env steps/s, AEC turns/s, grid steps/s.

* market clear: median time of ``CurveMarket.clear`` on the default instance (33 bids, 36
  branch limits) at every hour of the day, truthful and with 60 % supplier markups;
* parallel env steps/s: one step = all learners' bids + a market step (+ a grid step every
  ``market_rounds`` steps), learners bidding as scripted markup bidders, and with uniformly
  random (often degenerate) bids;
* AEC agent turns/s: the same through the AEC API;
* grid steps/s: market_rounds=1, so every step also solves the OpenDSS power flow.
Run: ``python benchmarks/bench_topology_power.py`` (or ``opengridgym bench --only topology``).
"""

from __future__ import annotations

import time

import numpy as np

from ogg_envs.envs import topology_power_v0
from ogg_envs.policies.curve import MarkupBidder, TruthfulBidder


def clear_times(env, policy, seeds=range(5)) -> list[float]:
    """Each hour's clearing of several days, timed once (warm-started from the previous hour;
    identical repeated bids would hit the market's result cache instead)."""
    times = []
    for seed in seeds:
        env.reset(seed=seed)
        while env.agents:
            bids = np.array([policy(p) if p.group != "substation" else
                             np.array([4.3, 4.3, p.limits.q_now, 0.0])
                             for p in env.participants])
            t0 = time.perf_counter()
            env.market.clear(bids)
            times.append(time.perf_counter() - t0)
            env.step({a: policy(env.participant[a]) for a in env.agents})
    return times


def parallel_rate(env, act, seconds: float = 3.0) -> float:
    steps, t_end = 0, time.perf_counter() + seconds
    t0 = time.perf_counter()
    while time.perf_counter() < t_end:
        env.reset(seed=steps)
        while env.agents:
            env.step({a: act(env, a) for a in env.agents})
            steps += 1
    return steps / (time.perf_counter() - t0)


def aec_rate(env, seconds: float = 3.0) -> float:
    turns, t_end = 0, time.perf_counter() + seconds
    t0 = time.perf_counter()
    markup = MarkupBidder(0.6)
    raw = env.unwrapped
    while time.perf_counter() < t_end:
        env.reset(seed=turns)
        for agent in env.agent_iter():
            _, _, term, trunc, _ = env.last()
            env.step(None if term or trunc else markup(raw.participant[agent]))
            turns += 1
    return turns / (time.perf_counter() - t0)


def main() -> dict:
    env = topology_power_v0.parallel_env(market_rounds=1)
    t_truth = clear_times(env, TruthfulBidder())
    t_mark = clear_times(env, MarkupBidder(0.6))
    env = topology_power_v0.parallel_env(market_rounds=3)
    markup = MarkupBidder(0.6)
    out = {
        "clear ms (truthful, median)": 1e3 * np.median(t_truth),
        "clear ms (60% markup, median)": 1e3 * np.median(t_mark),
        "clear ms (p95, both)": 1e3 * np.percentile(t_truth + t_mark, 95),
        "parallel steps/s (markup bids, K=3)": parallel_rate(
            env, lambda e, a: markup(e.participant[a])),
        "parallel steps/s (random bids, K=3)": parallel_rate(
            env, lambda e, a: e.action_space(a).sample()),
        "AEC agent turns/s (markup bids, K=3)": aec_rate(topology_power_v0.env(market_rounds=3)),
        "grid steps/s (K=1: clear + OpenDSS each step)": parallel_rate(
            topology_power_v0.parallel_env(market_rounds=1),
            lambda e, a: markup(e.participant[a])),
    }
    for key, value in out.items():
        print(f"{key:48s} {value:10.3f}")
    return out


if __name__ == "__main__":
    main()
