"""Scale benchmark: grid step, market clearing and parallel env step against feeder size.

Feeders: the bundled IEEE 13, 34, 37 and 123 and, when its files are there, the IEEE 8500-node
feeder (``../shared/reference-feeders/ieee8500/Master.dss`` or ``--ieee8500 PATH``) as a user's
feeder. Participants are the topology-power environment's, placed by the default rule (a
consumer at every load bus, four suppliers along the main path, the substation); market limits
are the branches' thermal ratings. Per feeder, median times of:

* **bare re-solve**: one more OpenDSS ``Solve`` of the converged case (nothing written, nothing
  read): the engine's floor;
* **grid step**: ``grid.apply(consumption)`` + ``grid.solve()`` (write the dispatch, solve,
  read what a step needs: voltages and their violations, the substation's totals; a
  ``PowerFlowResult``) for the dispatch already on the feeder: the grid layer's own cost over
  the floor. On a large feeder (IEEE 8500) the branch currents (flows, loadings, thermal
  overloads, losses) are read when first used; **+ branches** is the step with them read
  (on the bundled feeders they are always read: the two columns are the same work);
* **grid step, new hour**: the same for the next hour's loads (profile x 5 % noise), whose
  OpenDSS solve needs more iterations (and regulator moves): the *solve* column is that solve
  alone, the rest is the grid layer's;
* **reset**: ``grid.reset()``, once an episode: the base case, every control's pending actions,
  and every element's admittance recomputed and the system matrix built anew (what keeps an
  episode independent of the last with the grid's in-place solver options; on a large feeder
  the dearest part of it);
* **clearing**: ``CurveMarket.clear`` with every participant bidding truthfully, each hour of
  a day (formulation ``auto``: the dense statement up to 100 buses, flow conservation per
  bus solved by zones above: IEEE 123 and 8500);
* **env step**: one parallel ``step`` of ``topology-power-v0`` with ``market_rounds=1``
  (learners' random bids, everyone else's scripted bids, the clearing and the grid step).

Prints a table and writes ``<out>/scale.json`` and a log-log figure ``<out>/scale.png``.
Run: ``python benchmarks/bench_scale.py [--quick] [--out results/bench]`` (or ``opengridgym
bench --only scale``); the default run takes about 15 s, ``--quick`` about 8 s.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import ogg_envs
from ogg_envs.grid import OpenDSSGrid
from ogg_envs.policies.curve import truthful_bid

IEEE8500 = (Path(__file__).resolve().parents[2] / "shared" / "reference-feeders" / "ieee8500"
            / "Master.dss")


def median_ms(fn, n: int) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def bench_feeder(feeder: str, n: int, hours: int) -> dict:
    t0 = time.perf_counter()
    env = ogg_envs.make("opengridgym/topology-power-v0", parallel=True, feeder=feeder,
                        market_rounds=1)
    build_s = time.perf_counter() - t0
    grid: OpenDSSGrid = env.grid
    env.reset(seed=0)
    row = {"feeder": grid.name, "nodes": len(grid.nodes), "buses": len(grid.buses),
           "branches": len(env.topology.branches), "participants": len(env.participants),
           "make_s": build_s, "formulation": env.market.formulation}
    # Grid: floor, the same dispatch, the next hours' dispatch.
    base = grid.bus_load_kw
    grid.apply(base * 0.9)
    grid.solve()
    row["bare_resolve_ms"] = median_ms(grid.dss.Solution.Solve, n)
    row["grid_step_ms"] = median_ms(lambda: (grid.apply(base * 0.9), grid.solve()), n)
    row["grid_step_branches_ms"] = median_ms(
        lambda: (grid.apply(base * 0.9), grid.solve().line_flows_kw), n)
    rng = np.random.default_rng(0)
    shape = env.profiles["load_residential"]
    step_t, solve_t = [], []
    for k in range(hours):
        x = base * shape[k % len(shape)] * (1 + 0.05 * rng.standard_normal(len(base)))
        x = np.where(base > 0, np.maximum(x, 0.0), 0.0)
        t0 = time.perf_counter()
        grid.apply(x)
        pf = grid.solve()
        step_t.append(time.perf_counter() - t0)
        solve_t.append(grid.last_solve_s)  # OpenDSS's own share of the step
        assert pf.converged
        del pf  # a large feeder's result kept alive reads its branch currents at the next solve
    row["grid_step_new_hour_ms"] = 1e3 * float(np.median(step_t))
    row["new_hour_solve_ms"] = 1e3 * float(np.median(solve_t))
    # Reset (once an episode): base case, controls, every element's admittance rebuilt.
    row["reset_ms"] = median_ms(grid.reset, max(n // 20, 3))
    # Clearing: truthful bids, every hour of a day (no result cache hits: the bids change).
    clear_t = []
    env.reset(seed=0)
    for _ in range(min(hours, env.horizon)):
        bids = np.array([truthful_bid(p) if p.group != "substation" else
                         np.array([4.3, 4.3, p.limits.q_now, 0.0]) for p in env.participants])
        t0 = time.perf_counter()
        env.market.clear(bids)
        clear_t.append(time.perf_counter() - t0)
        env.step({a: env.action_space(a).sample() for a in env.agents})
    row["clear_ms"] = 1e3 * float(np.median(clear_t))
    # Parallel env steps (market_rounds=1: every step is also a grid step).
    env.reset(seed=1)
    step_t = []
    for _ in range(hours):
        if not env.agents:
            env.reset(seed=2)
        acts = {a: env.action_space(a).sample() for a in env.agents}
        t0 = time.perf_counter()
        env.step(acts)
        step_t.append(time.perf_counter() - t0)
    row["env_step_ms"] = 1e3 * float(np.median(step_t))
    return row


COLUMNS = [("feeder", "feeder", "s"), ("nodes", "nodes", "d"), ("participants", "particip.", "d"),
           ("bare_resolve_ms", "re-solve", ".3f"), ("grid_step_ms", "grid step", ".3f"),
           ("grid_step_branches_ms", "+ branches", ".3f"),
           ("new_hour_solve_ms", "new-hour solve", ".2f"),
           ("grid_step_new_hour_ms", "new-hour step", ".2f"), ("reset_ms", "reset", ".2f"),
           ("clear_ms", "clearing", ".2f"),
           ("env_step_ms", "env step", ".2f")]


def print_table(rows: list[dict]) -> None:
    widths = [max(len(h), 8) for _, h, _ in COLUMNS]
    print("  ".join(h.rjust(w) for (_, h, _), w in zip(COLUMNS, widths)) + "   (median ms)")
    for r in rows:
        print("  ".join(format(r[k], f).rjust(w) for (k, _, f), w in zip(COLUMNS, widths)))
    for r in rows:
        ratio = r["grid_step_ms"] / r["bare_resolve_ms"]
        full = r["grid_step_branches_ms"] / r["bare_resolve_ms"]
        over = r["grid_step_new_hour_ms"] - r["new_hour_solve_ms"]
        print(f"{r['feeder']}: grid step / bare re-solve = {ratio:.1f}x ({full:.1f}x with the "
              f"branch currents); grid layer on a new "
              f"hour {over:.2f} ms over its {r['new_hour_solve_ms']:.2f} ms solve; clearing "
              f"({r['formulation']}) {r['clear_ms']:.2f} ms for {r['participants']} "
              f"participants; make {r['make_s']:.1f} s")


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r["nodes"] for r in rows]
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for key, label, style in (("bare_resolve_ms", "OpenDSS re-solve (floor)", "k--"),
                              ("grid_step_ms", "grid step (same dispatch)", "o-"),
                              ("grid_step_new_hour_ms", "grid step (new hour)", "s-"),
                              ("reset_ms", "grid reset (once an episode)", "x:"),
                              ("clear_ms", "market clearing", "^-"),
                              ("env_step_ms", "parallel env step", "d-")):
        ax.loglog(x, [r[key] for r in rows], style, label=label)
    for r in rows:
        ax.annotate(r["feeder"], (r["nodes"], r["env_step_ms"]), textcoords="offset points",
                    xytext=(0, 6), ha="center", fontsize=7)
    ax.set_xlabel("OpenDSS nodes")
    ax.set_ylabel("median time (ms)")
    ax.set_title("topology-power-v0 against feeder size (participants by the default rule)",
                 fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions (about 8 s)")
    ap.add_argument("--ieee8500", type=Path, default=IEEE8500,
                    help="master file of the IEEE 8500-node feeder (skipped if absent)")
    ap.add_argument("--out", type=Path, default=Path("results") / "bench",
                    help="folder for scale.json and scale.png (default: results/bench)")
    args = ap.parse_args(argv)
    n, hours = (30, 12) if args.quick else (400, 96)
    feeders = ["ieee13", "ieee34", "ieee37", "ieee123"]
    if args.ieee8500.is_file():
        feeders.append(str(args.ieee8500))
    else:
        print(f"(IEEE 8500 not found at {args.ieee8500}: skipped)")
    rows = []
    for feeder in feeders:
        big = feeder.endswith(".dss")
        rows.append(bench_feeder(feeder, n // 4 if big else n, hours // 2 if big else hours))
    print_table(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scale.json").write_text(json.dumps(rows, indent=1))
    plot(rows, args.out / "scale.png")
    print(f"wrote {args.out / 'scale.json'} and {args.out / 'scale.png'}")
    return rows


if __name__ == "__main__":
    main()
