"""Paired wall-clock A/B: this checkout's environment steps against another checkout's, in turns.

On a shared 2-core machine the wall clock moves by ±20-30 % within minutes and up to 2x from
hour to hour, so two tables measured apart cannot compare two releases. This benchmark runs
each checkout in a process of its own (``PYTHONPATH`` = that checkout), records one set of
learner actions per environment (uniform random, or ``tied``: every learner the same bid, each
environment benchmark's ``tied``), and steps the same actions from ``reset(seed)`` in both
processes in turns, ``--pairs`` times (the order alternating). It prints each side's median
steps/s and time a step spends outside OpenDSS's own solves (``grid.solve_seconds``), and the
ratio of the two sides pair by pair: its median and range. Without ``--against`` it compares
this checkout with itself: the pairs' own noise, the smallest change it can resolve.

Run: ``python benchmarks/bench_pairs.py [--against ROOT] [--env tp p2p dlmp] [--actions random
tied] [--feeder PATH] [--rounds K] [--pairs N] [--steps N] [--quick] [--json PATH]``
(``opengridgym bench --only pairs`` runs it against itself). ``ROOT``: e.g. a ``git worktree``
of an older commit.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _timing import benchmark_parser, write_json

ENV_IDS = {"tp": "opengridgym/topology-power-v0", "dlmp": "opengridgym/dlmp-v0",
           "p2p": "opengridgym/p2p-v0"}
TIED_FROM = {"tp": "bench_topology_power", "dlmp": "bench_dlmp", "p2p": "bench_p2p"}
REPO = Path(__file__).resolve().parents[1]


def worker(env_key: str, actions: str, steps: int, feeder: str | None, rounds: int | None):
    """What runs in each checkout's process: build the env, record ``steps`` actions, then
    for every line on stdin replay them from ``reset(seed=1)`` and print ``steps/s`` and the
    seconds per step spent outside OpenDSS's solves."""
    import ogg_envs

    kwargs = {} if feeder is None else {"feeder": feeder}
    if rounds is not None:
        kwargs["market_rounds"] = rounds
    env = ogg_envs.make(ENV_IDS[env_key], parallel=True, **kwargs)
    env.reset(seed=1)
    if actions == "tied":
        tied = __import__(TIED_FROM[env_key]).tied
        act = [{a: tied(env, a, None) for a in env.agents}] * steps
    else:
        spaces = {a: env.action_space(a) for a in env.agents}
        for k, space in enumerate(spaces.values()):
            space.seed(k)
        act = [{a: s.sample() for a, s in spaces.items()} for _ in range(steps)]
    grid = env.unwrapped.grid

    def replay() -> tuple[float, float]:
        env.reset(seed=1)
        solved, t0 = grid.solve_seconds, time.perf_counter()
        for a in act:
            if not env.agents:
                env.reset(seed=1)
            env.step(a)
        wall = time.perf_counter() - t0
        return steps / wall, (wall - (grid.solve_seconds - solved)) / steps

    replay()  # warm-up
    for _ in sys.stdin:
        print(*replay(), flush=True)


def pairs(roots: dict[str, Path], env_key: str, actions: str, n_pairs: int, steps: int,
          feeder: str | None, rounds: int | None) -> dict:
    """Both checkouts' workers stepped in turns; medians and pair-by-pair ratios (B over A)."""
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", env_key, actions,
               str(steps), feeder or "-", str(rounds or 0)]
    here = Path(__file__).parent  # (the workers import the benchmarks' ``tied``)
    procs = {side: subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=here,
        env=dict(os.environ, PYTHONPATH=f"{root}{os.pathsep}{here}"))
        for side, root in roots.items()}
    runs: dict[str, list] = {side: [] for side in roots}
    try:
        for k in range(n_pairs):
            for side in (list(roots) if k % 2 == 0 else list(roots)[::-1]):
                procs[side].stdin.write("go\n")
                procs[side].stdin.flush()
                line = procs[side].stdout.readline()
                if not line:
                    raise RuntimeError(f"the {side} worker ({roots[side]}) stopped")
                runs[side].append(tuple(map(float, line.split())))
    finally:
        for p in procs.values():
            p.stdin.close()
            p.wait()
    a, b = runs["base"], runs["this"]
    speed = [y[0] / x[0] for x, y in zip(a, b)]
    outside = [y[1] / x[1] for x, y in zip(a, b)]
    return {"env": ENV_IDS[env_key], "actions": actions, "feeder": feeder, "rounds": rounds,
            "pairs": n_pairs, "steps": steps,
            "base_steps_per_s": statistics.median(x[0] for x in a),
            "this_steps_per_s": statistics.median(x[0] for x in b),
            "base_outside_ms": 1e3 * statistics.median(x[1] for x in a),
            "this_outside_ms": 1e3 * statistics.median(x[1] for x in b),
            "speed_ratio": {"median": statistics.median(speed), "min": min(speed),
                            "max": max(speed)},
            "outside_ratio": {"median": statistics.median(outside), "min": min(outside),
                              "max": max(outside)}}


def main(argv=None) -> list[dict]:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        key, actions, steps, feeder, rounds = argv[1:6]
        worker(key, actions, int(steps), None if feeder == "-" else feeder, int(rounds) or None)
        return []
    parser = benchmark_parser(__doc__.splitlines()[0])
    parser.add_argument("--against", type=Path, default=REPO, metavar="ROOT",
                        help="the other checkout (default: this one, the pairs' own noise)")
    parser.add_argument("--env", nargs="+", choices=sorted(ENV_IDS), default=["tp", "p2p",
                                                                               "dlmp"])
    parser.add_argument("--actions", nargs="+", choices=("random", "tied"), default=["random"])
    parser.add_argument("--feeder", default=None, help="a feeder name or master .dss")
    parser.add_argument("--rounds", type=int, default=None, help="market rounds per grid step")
    parser.add_argument("--pairs", type=int, default=None, help="pairs (default 12; quick 4)")
    parser.add_argument("--steps", type=int, default=None,
                        help="steps a run (default 500; quick 100)")
    args = parser.parse_args(argv)
    n_pairs = args.pairs or (4 if args.quick else 12)
    steps = args.steps or (100 if args.quick else 500)
    roots = {"base": args.against.resolve(), "this": REPO}
    if args.feeder is not None and Path(args.feeder).is_file():  # (the workers run elsewhere)
        args.feeder = str(Path(args.feeder).resolve())
    print(f"this checkout ({REPO}) against {roots['base']}: {n_pairs} pairs of {steps} steps, "
          f"in turns; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    out = []
    for key in args.env:
        for actions in args.actions:
            r = pairs(roots, key, actions, n_pairs, steps, args.feeder, args.rounds)
            out.append(r)
            s, o = r["speed_ratio"], r["outside_ratio"]
            print(f"{r['env']} {actions}{' on ' + args.feeder if args.feeder else ''}: "
                  f"steps/s {r['this_steps_per_s']:,.0f} vs {r['base_steps_per_s']:,.0f}, "
                  f"outside OpenDSS {r['this_outside_ms']:.3f} vs {r['base_outside_ms']:.3f} "
                  f"ms a step; this / base per pair: steps/s {s['median']:.2f} "
                  f"({s['min']:.2f}-{s['max']:.2f}), outside OpenDSS {o['median']:.2f} "
                  f"({o['min']:.2f}-{o['max']:.2f})", flush=True)
    write_json(args.json, "pairs", {"against": str(roots["base"]), "rows": out})
    return out


if __name__ == "__main__":
    main()
