"""Timing helpers shared by the benchmarks (``benchmarks/bench_*.py``).

The environment benchmarks all report the same figures, on the environment's default scenario,
for three kinds of learner actions:

* **random**: uniform ``action_space(agent).sample()`` (the env seeds its spaces on reset);
* **structured**: the environment's registered ``markup`` baseline policy
  (``ogg_envs.spec(env_id).policies["markup"]``), asked like the leaderboard asks it;
* **tied**: every learner submits the same bid, at the price cap (ties with shed load: the
  degenerate case of the markets' solvers);

and for each: the market clear time (p50 and p99 of the ``market.clear`` calls made inside the
env's steps; a call that returns the previous result object unchanged is the market's result
cache and is counted apart), the parallel env steps/s (the time spent in ``reset`` and ``step``
only: making the actions is not the env's cost) and each figure's **ratio to the floor**, one
bare ``grid.run_power_flow()`` of the env's own feeder (the converged case re-solved), measured
in the same run, interleaved with the env runs so that a busy machine shifts both alike. It
also splits a step's time into the market's clearings (cache hits included), OpenDSS's own
solves (``grid.solve_seconds``) and the rest (the environment's Python: bids, rewards,
observations, infos, dispatch and reading the power flow), and times the optimisation
solver's own calls inside the clearings (``SolverClock``: DAQP's ``daqp.solve``, the ``run``
of HiGHS's class ``highs_lp.HIGHS``). Where a benchmark names its throughput goal
(``goal_steps_per_s``), it prints the goal's time budget per step beside what OpenDSS and the
solver alone already take of it: the part no change to the environment's Python could remove.

``--quick`` (a few seconds per benchmark, what CI runs) and ``--json PATH`` (write the numbers;
``benchmarks/readme_table.py`` turns the files into the README's table) are every benchmark's
options (``benchmark_parser``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import numpy as np

import ogg_envs
from ogg_envs.baselines.common import absorb_solver_banner

ACTION_KINDS = ("random", "structured", "tied")


def benchmark_parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the options every benchmark has: ``--quick`` and ``--json``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true",
                        help="short measurements (a few seconds; CI runs this)")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH",
                        help="also write the numbers to PATH (JSON)")
    return parser


def machine() -> dict:
    """What the numbers were measured on (the load average says how busy it was)."""
    return {"cpus": os.cpu_count(), "load_average_1min": round(os.getloadavg()[0], 2),
            "python": platform.python_version(), "platform": platform.platform(terse=True),
            "date": time.strftime("%Y-%m-%d %H:%M:%S")}


def write_json(path: Path | None, name: str, result: dict) -> None:
    """Write ``{"benchmark": name, "machine": ..., "result": result}`` to ``path`` (if given)."""
    if path is None:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"benchmark": name, "machine": machine(), "result": result},
                               indent=1, default=float))
    print(f"wrote {path}")


def median_ms(fn: Callable[[], object], n: int) -> float:
    """Median wall time of ``fn()`` over ``n`` calls, in ms."""
    times = np.empty(n)
    for i in range(n):
        t0 = time.perf_counter()
        fn()
        times[i] = time.perf_counter() - t0
    return 1e3 * float(np.median(times))


def percentiles_ms(seconds) -> dict:
    """p50 and p99 (ms) of a list of durations in seconds, and how many there were."""
    if len(seconds) == 0:
        return {"p50": float("nan"), "p99": float("nan"), "n": 0}
    p50, p99 = np.percentile(np.asarray(seconds), [50, 99])
    return {"p50": 1e3 * float(p50), "p99": 1e3 * float(p99), "n": len(seconds)}


def floor_times(grid, n: int) -> list[float]:
    """``n`` timings (seconds) of one bare ``grid.run_power_flow()``: the dispatch already on
    the feeder, solved again. The floor every other figure is compared with."""
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        grid.run_power_flow()
        out.append(time.perf_counter() - t0)
    return out


# ---------------------------------------------------------------------- learner actions
def structured_actions(env_id: str, policy: str = "markup"):
    """``act(env, agent, observation)`` asking the registered ``policy`` baseline, one
    instance per agent (some baselines keep per-participant state)."""
    factory = ogg_envs.spec(env_id).policies[policy]
    policies: dict = {}
    rng = np.random.default_rng(0)

    def act(env, agent, observation):
        if agent not in policies:
            policies[agent] = factory()
        info = {"rng": rng, "action_space": env.action_space(agent)}
        return policies[agent](env.participant[agent], observation, info)

    return act


def random_actions(env, agent, observation):
    return env.action_space(agent).sample()


# ---------------------------------------------------------------------- env runs
class SolverClock:
    """Times the optimisation solvers' own calls while in a ``with`` block: ``daqp.solve``
    (the curve market's QP) and the ``run`` of HiGHS's class (``highs_lp.HIGHS``: the
    LinDistFlow market's LP, and the DLMP market's with losses or ``solver="highs"``; its
    lossless clearing is the merit order, Python, which this does not count), wrapped for the
    block and restored after it. ``seconds``: their total so far."""

    def __init__(self):
        self.seconds = 0.0
        self._saved = []

    def _wrap(self, owner, name: str) -> None:
        call = getattr(owner, name)

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return call(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t0

        self._saved.append((owner, name, call))
        setattr(owner, name, timed)

    def __enter__(self):
        import daqp

        from ogg_envs.markets.solvers import highs_lp

        self._wrap(daqp, "solve")
        self._wrap(highs_lp.HIGHS, "run")
        return self

    def __exit__(self, *exc):
        while self._saved:
            owner, name, call = self._saved.pop()
            setattr(owner, name, call)


class _TimedClear:
    """Wraps a market's ``clear``: the time of each call that solved (not a cache hit), and
    the solver's share of it (``clock``)."""

    def __init__(self, clear, clock: SolverClock):
        self.clear, self.times, self.cached, self.last = clear, [], 0, None
        self.clock, self.solver_times = clock, []
        self.total = 0.0  # seconds in every call, cache hits included

    def __call__(self, *args, **kwargs):
        s0 = self.clock.seconds
        t0 = time.perf_counter()
        result = self.clear(*args, **kwargs)
        dt = time.perf_counter() - t0
        self.total += dt
        if result is self.last:  # the market's result cache: same bids, same result object
            self.cached += 1
        else:
            self.times.append(dt)
            self.solver_times.append(self.clock.seconds - s0)
        self.last = result
        return result


class EnvRun:
    """Steps the parallel ``env`` with ``act(env, agent, observation)`` actions, in slices
    (``run``) that other runs' slices can be interleaved with, so that a machine that speeds up
    or slows down for a few seconds moves every kind of action alike; ``summary``: steps/s over
    the time spent in ``reset`` and ``step``, agent steps/s, and the clear times, over all the
    slices."""

    def __init__(self, env, act, seed: int = 0, warmup_steps: int = 30):
        self.env, self.act, self.episode = env, act, seed
        self.clock = SolverClock()
        self.timed = _TimedClear(env.market.clear, self.clock)
        self.steps = self.agent_steps = 0
        self.env_time = self.solve_s = 0.0
        with self._clear_timed():
            obs, _ = env.reset(seed=seed)
            for _ in range(warmup_steps):
                if not env.agents:
                    obs, _ = env.reset()
                obs = env.step({a: act(env, a, obs[a]) for a in env.agents})[0]
        self.timed.times.clear()
        self.timed.solver_times.clear()
        self.timed.cached, self.timed.total = 0, 0.0

    @contextmanager
    def _clear_timed(self):
        market = self.env.market
        market.clear = self.timed  # an instance attribute shadows the method; removed below
        try:
            yield
        finally:
            del market.clear

    def run(self, seconds: float) -> None:
        """About ``seconds`` more of env time, in whole new episodes (each with a new seed)
        but the last, which the slice's end cuts short."""
        env, act = self.env, self.act
        solve_s0, spent = env.grid.solve_seconds, 0.0
        with self._clear_timed(), self.clock:
            while spent < seconds:
                self.episode += 1
                t0 = time.perf_counter()
                obs, _ = env.reset(seed=self.episode)
                spent += time.perf_counter() - t0
                while env.agents and spent < seconds:
                    actions = {a: act(env, a, obs[a]) for a in env.agents}
                    t0 = time.perf_counter()
                    obs = env.step(actions)[0]
                    spent += time.perf_counter() - t0
                    self.steps += 1
                    self.agent_steps += len(actions)
        self.env_time += spent
        self.solve_s += env.grid.solve_seconds - solve_s0  # OpenDSS, resets' solves included

    def summary(self) -> dict:
        timed, steps = self.timed, self.steps
        clear = percentiles_ms(timed.times)
        solver = percentiles_ms(timed.solver_times)
        solved = len(timed.times)
        per_step = {"clear": 1e3 * timed.total / steps, "opendss": 1e3 * self.solve_s / steps,
                    "solver": 1e3 * self.clock.seconds / steps}  # (solver: part of the clearings)
        per_step["rest"] = 1e3 * self.env_time / steps - per_step["clear"] - per_step["opendss"]
        return {"steps_per_s": steps / self.env_time,
                "agent_steps_per_s": self.agent_steps / self.env_time,
                "steps": steps, "clear_ms_p50": clear["p50"], "clear_ms_p99": clear["p99"],
                "solver_ms_p50": solver["p50"], "clears": solved,
                "cached_share": timed.cached / max(solved + timed.cached, 1),
                "step_ms": per_step}


def run_env(env, act, seconds: float, warmup_steps: int = 30, seed: int = 0) -> dict:
    """``EnvRun``'s figures for one slice of about ``seconds`` of env time."""
    run = EnvRun(env, act, seed, warmup_steps)
    run.run(seconds)
    return run.summary()


def env_benchmark(env_id: str, tied, quick: bool, make_kwargs: dict | None = None,
                  kinds=ACTION_KINDS, goal_steps_per_s: float | None = None) -> dict:
    """The three action kinds on ``ogg_envs.make(env_id, parallel=True, **make_kwargs)`` (the
    default scenario), run in turns (``slices`` of each, so that the ratios between kinds do
    not depend on which seconds each ran in) with floor measurements between them; every
    figure with its ratio to the floor (``x_floor``). ``tied(env, agent, observation)`` makes
    the tied bid; ``goal_steps_per_s``: the random-action throughput the environment aims at
    (recorded with the result; ``print_env_table`` sets the step's parts against it)."""
    seconds, slices, floor_n = (0.6, 2, 300) if quick else (4.0, 8, 2000)
    acts = {"random": random_actions, "structured": structured_actions(env_id), "tied": tied}
    absorb_solver_banner()  # HiGHS's banner would land in the table
    env = ogg_envs.make(env_id, parallel=True, **(make_kwargs or {}))
    runs = {kind: EnvRun(env, acts[kind]) for kind in kinds}
    floor: list[float] = []
    for _ in range(slices):  # kinds in turns, the floor between them
        for kind in kinds:
            env.reset(seed=0)
            floor += floor_times(env.grid, floor_n // (slices * len(kinds) + 1))
            runs[kind].run(seconds / slices)
    floor += floor_times(env.grid, floor_n // (slices * len(kinds) + 1))
    floor_ms = 1e3 * float(np.median(floor))
    rows = {kind: run.summary() for kind, run in runs.items()}
    for row in rows.values():
        row["x_floor"] = {"clear_p50": row["clear_ms_p50"] / floor_ms,
                          "clear_p99": row["clear_ms_p99"] / floor_ms,
                          "step": 1e3 / row["steps_per_s"] / floor_ms}
    return {"env": env_id, "feeder": env.scenario.feeder, "scenario": env.default_scenario,
            "agents": len(env.possible_agents), "market_rounds": env.market_rounds,
            "floor_ms": floor_ms, "actions": rows, "goal_steps_per_s": goal_steps_per_s}


def print_env_table(result: dict) -> None:
    """The env benchmark's figures as a table, with the floor they are compared with."""
    print(f"{result['env']} on {result['feeder']} (scenario {result['scenario']}, "
          f"{result['agents']} learners, {result['market_rounds']} market rounds per grid "
          f"step); load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print(f"floor: one bare grid.run_power_flow() = {result['floor_ms']:.3f} ms (median)")
    head = (f"{'actions':11s} {'clear p50':>10s} {'clear p99':>10s} {'env steps/s':>12s} "
            f"{'agent st/s':>11s}   {'x floor: p50':>12s} {'p99':>6s} {'step':>6s}  cached")
    print(head)
    for kind, r in result["actions"].items():
        x = r["x_floor"]
        print(f"{kind:11s} {r['clear_ms_p50']:7.3f} ms {r['clear_ms_p99']:7.3f} ms "
              f"{r['steps_per_s']:12,.0f} {r['agent_steps_per_s']:11,.0f}   {x['clear_p50']:12.1f} "
              f"{x['clear_p99']:6.1f} {x['step']:6.1f}  {100 * r['cached_share']:5.0f} %")
    print("(clear: market.clear inside the env's steps, cache hits excluded; step: 1 / "
          "steps/s; x floor: that time / the floor)")
    rows = result["actions"].items()
    solver = any(r["step_ms"]["solver"] > 0 for _, r in rows)  # (P2P's market has none)
    print("where a step's time goes, ms per env step: " + "; ".join(
        f"{kind} {r['step_ms']['clear']:.3f} clearing"
        + (f" (the solver's own calls {r['step_ms']['solver']:.3f})" if solver else "")
        + f" + {r['step_ms']['opendss']:.3f} OpenDSS solve + {r['step_ms']['rest']:.3f} the rest"
        for kind, r in rows))
    r = result["actions"].get("random")
    if solver and r is not None and r["clears"]:
        print(f"random clear p50 {r['clear_ms_p50']:.3f} ms, of which the solver's own call "
              f"{r['solver_ms_p50']:.3f} ms (p50 of its share per clearing)")
    budget = goal_budget(result)
    if budget is not None:
        engines = "OpenDSS's solves and the solver's calls" if solver else "OpenDSS's solves"
        left = (f"against the {budget['python_budget_ms']:.3f} ms left "
                f"({budget['python_over']:.1f}x)" if budget["python_budget_ms"] > 0 else
                "with no time left: the goal is out of reach of any change to it")
        print(f"goal {budget['goal_steps_per_s']:,.0f} random-action steps/s = "
              f"{budget['goal_step_ms']:.3f} ms a step: {engines} take "
              f"{budget['engines_ms']:.3f} ms of it ({budget['engines_share']:.0%}); the rest of "
              f"the step took {budget['python_ms']:.3f} ms {left}")
    checks = goal_checks(result)
    if checks:
        print("goals (issue #12), this run: " + "; ".join(
            f"{goal}: {got}, {'met' if met else 'NOT met'}" for goal, got, met in checks))


def goal_checks(result: dict) -> list[tuple[str, str, bool]]:
    """The env benchmark's goals (issue #12) against this run, as ``(goal, measured, met)``:
    the random-action throughput (``goal_steps_per_s``) and the benchmark's other ``goals``
    (``clear_ms_p50``, ``clear_ms_p99``: the clearing of random bids; ``random_over_structured``:
    random-action over structured throughput; ``step_x_floor``: a random-action step over the
    floor)."""
    r, s = result["actions"].get("random"), result["actions"].get("structured")
    if r is None:
        return []
    goals = dict(result.get("goals", {}))
    checks = []
    if result.get("goal_steps_per_s"):
        goal = result["goal_steps_per_s"]
        checks.append((f"random actions >= {goal:,.0f} steps/s", f"{r['steps_per_s']:,.0f}",
                       r["steps_per_s"] >= goal))
    for key, what in (("clear_ms_p50", "p50"), ("clear_ms_p99", "p99")):
        if key in goals:
            checks.append((f"random bids' clear {what} <= {goals[key]:g} ms",
                           f"{r[key]:.3f} ms", r[key] <= goals[key]))
    if "random_over_structured" in goals and s is not None:
        ratio = r["steps_per_s"] / s["steps_per_s"]
        checks.append((f"random / structured steps/s >= {goals['random_over_structured']:g}",
                       f"{ratio:.2f}", ratio >= goals["random_over_structured"]))
    if "step_x_floor" in goals:
        x = r["x_floor"]["step"]
        checks.append((f"random-action step <= {goals['step_x_floor']:g}x the floor",
                       f"{x:.1f}x", x <= goals["step_x_floor"]))
    return checks


def goal_budget(result: dict) -> dict | None:
    """The random-action step against its goal (``goal_steps_per_s``): the goal's time per
    step, what OpenDSS's solves and the solver's calls took of a step (``engines_ms``: no
    change to the environment's Python removes it), and the rest of the step (the Python and
    numpy around them) against the time the goal leaves it. None without a goal."""
    goal, r = result.get("goal_steps_per_s"), result["actions"].get("random")
    if not goal or r is None:
        return None
    ms = r["step_ms"]
    step_ms, goal_ms = 1e3 / r["steps_per_s"], 1e3 / goal
    engines = ms["opendss"] + ms["solver"]
    left = goal_ms - engines
    return {"goal_steps_per_s": goal, "goal_step_ms": goal_ms, "step_ms": step_ms,
            "engines_ms": engines, "engines_share": engines / goal_ms,
            "python_ms": step_ms - engines, "python_budget_ms": left,
            "python_over": (step_ms - engines) / left if left > 0 else float("inf")}
