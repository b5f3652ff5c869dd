"""AC feedback benchmark: how far the markets' lossless clearings are from OpenDSS's AC flows on
congested days, with and without AC-feasible clearing (``ac_feedback=True``) and loss-aware
prices (``loss_pricing=True``, ``ogg_envs.core``).

Congested days, as in the issue: ``topology-power-v0`` (IEEE 34) with every DG marking its
offer up to three times its cost (``MarkupBidder(2.0)``: the substation then feeds the feeder
through 852r-832), and ``dlmp-v0`` (IEEE 37) with every generator offering at 90 % of the price
cap; one market round per grid step, no learning agents, one day per seed. Modes: ``off``
(lossless clearing, no correction), ``feedback`` (``ac_feedback``), ``losses``
(``loss_pricing``) and ``both``. Per use case and mode:

* **within limits**: the share of grid steps with every market-limited branch's AC active
  power within its limit x 1.005 (the goal with feedback: >= 99 %), and the worst excess;
* **extra power flows**: re-clearings (each one more clearing and OpenDSS solve, and with
  ``loss_pricing`` the loss factors) per grid step (goal <= 3 on average);
* **unscheduled kWh**: the substation's supply beyond the cleared quantities, per grid step
  (``GridReport.unscheduled_kw``), next to the AC losses and what the market cleared for losses
  (``cleared_losses_kw``): loss pricing takes the losses out of it; what stays is the loads'
  voltage dependence (OpenDSS's loads draw other than their set points off 1 pu);
* **grid step ms**: mean time of a grid step (``run_round``: scripted bids, clearing, power
  flow, report; the median too in the JSON), and the throughput cost of each mode (its mean
  time / the mean time of ``off``).

Run: ``python benchmarks/bench_ac_feedback.py [--quick] [--json PATH]`` (or ``opengridgym bench
--only ac_feedback``); about 10 s, ``--quick`` about 3 s.
"""

from __future__ import annotations

import time

import numpy as np
from _timing import benchmark_parser, machine, write_json

import ogg_envs
from ogg_envs.baselines.common import absorb_solver_banner
from ogg_envs.policies.curve import MarkupBidder

WITHIN = 0.005


class NearCap:
    """A DLMP offer at 90 % of the price cap for every block (a generator near the cap)."""

    adaptive = False

    def __call__(self, participant, observation=None, info=None):
        return np.full(participant.rules["n_blocks"], 0.9 * participant.rules["price_cap"])


USE_CASES = {
    "topology-power (DGs x3 cost)": ("opengridgym/topology-power-v0",
                                     lambda: {"supplier": MarkupBidder(markup=2.0)}),
    "dlmp (generators at 0.9 cap)": ("opengridgym/dlmp-v0", lambda: {"generator": NearCap()}),
}


MODES = {"off": {}, "feedback": {"ac_feedback": True}, "losses": {"loss_pricing": True},
         "both": {"ac_feedback": True, "loss_pricing": True}}


def run(env_id: str, policies, options: dict, seeds: range) -> dict:
    env = ogg_envs.make(env_id, parallel=True, market_rounds=1, learners=[],
                        policies=policies(), **options)
    within, excess, extra, unscheduled, times, congested = [], [], [], [], [], 0
    losses, cleared_losses = [], []
    for seed in seeds:
        env.reset(seed=seed)
        while not env.done:
            t0 = time.perf_counter()
            env.run_round({})
            times.append(time.perf_counter() - t0)
            rep = env.last_grid_report
            ok = rep.converged and bool((rep.loading <= 1 + WITHIN).all())
            within.append(ok)
            excess.append(float(np.max(rep.loading, initial=0.0)) - 1.0)
            extra.append(rep.feedback_iterations)
            unscheduled.append(rep.unscheduled_kw)
            losses.append(rep.losses_kw)
            cleared_losses.append(rep.cleared_losses_kw)
            congested += bool(env.last_clearing.congested)
    return {"grid_steps": len(within), "congested_steps": congested,
            "within_limits": float(np.mean(within)), "worst_excess": max(excess),
            "extra_power_flows": float(np.mean(extra)), "max_extra_power_flows": max(extra),
            "unscheduled_kwh": float(np.mean(unscheduled)),
            "max_abs_unscheduled_kwh": float(np.max(np.abs(unscheduled))),
            "losses_kwh": float(np.mean(losses)),
            "cleared_losses_kwh": float(np.mean(cleared_losses)),
            "grid_step_ms": 1e3 * float(np.mean(times)),
            "grid_step_median_ms": 1e3 * float(np.median(times))}


def main(argv=None) -> dict:
    args = benchmark_parser(__doc__.splitlines()[0]).parse_args(argv)
    seeds = range(2) if args.quick else range(6)
    absorb_solver_banner()  # HiGHS's banner would land in the table
    result = {}
    print(f"{'use case':30s} {'mode':>8s} {'steps':>5s} {'congested':>9s} {'within':>7s} "
          f"{'worst excess':>12s} {'extra PF':>8s} {'unsched. kWh':>12s} {'loss kWh':>8s} "
          f"{'cleared':>7s} {'step ms':>8s}")
    for name, (env_id, policies) in USE_CASES.items():
        rows = {}
        for mode, options in MODES.items():
            r = run(env_id, policies, options, seeds)
            rows[mode] = r
            print(f"{name:30s} {mode:>8s} {r['grid_steps']:5d} "
                  f"{r['congested_steps']:9d} {100 * r['within_limits']:6.1f}% "
                  f"{100 * r['worst_excess']:+11.2f}% {r['extra_power_flows']:8.2f} "
                  f"{r['unscheduled_kwh']:12.1f} {r['losses_kwh']:8.1f} "
                  f"{r['cleared_losses_kwh']:7.1f} {r['grid_step_ms']:8.2f}")
        rows["on"] = rows["feedback"]  # (the key of earlier versions)
        for mode in ("feedback", "losses", "both"):
            rows[f"{mode}_cost"] = rows[mode]["grid_step_ms"] / rows["off"]["grid_step_ms"]
        rows["throughput_cost"] = rows["feedback_cost"]
        print(f"{'':30s} grid step time x{rows['feedback_cost']:.2f} with feedback, "
              f"x{rows['losses_cost']:.2f} with loss pricing, x{rows['both_cost']:.2f} with both")
        result[name] = rows
    result["machine"] = machine()
    write_json(args.json, "ac_feedback", result)
    return result


if __name__ == "__main__":
    main()
