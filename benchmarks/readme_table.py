"""Print the README's performance tables (Markdown) from the benchmarks' JSON.

    opengridgym bench --json results/bench/bench.json      # measure (on an idle machine)
    python benchmarks/readme_table.py results/bench/bench.json

The input is the file ``opengridgym bench --json`` writes (every benchmark's numbers) or one
benchmark's own ``--json`` file (several may be given). Prints the grid table, the environments'
table (clear time and env steps/s per action kind, each with its ratio to the floor: one bare
``grid.run_power_flow()`` of the same feeder, measured in the same run, and where a step's time
goes), each environment's goals against the run (``goals_table``) and its random-action
step against its throughput goal and, when present, the instruction counts (``--only
instructions``), the scale table and docs/scale-out.md's tables (``--only vec``, ``--only
rllib``); then the machine the numbers come from.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from _timing import goal_budget, goal_checks

ENVS = (("topology_power", "topology-power"), ("p2p", "p2p"), ("dlmp", "dlmp"))


def load(paths: list[Path]) -> dict[str, dict]:
    """Benchmark name -> its ``{"benchmark", "machine", "result"}`` record."""
    out = {}
    for path in paths:
        data = json.loads(Path(path).read_text())
        if "benchmarks" in data:  # opengridgym bench --json
            out.update(data["benchmarks"])
        elif "benchmark" in data:
            out[data["benchmark"]] = data
        else:
            raise SystemExit(f"error: {path}: not a benchmark JSON file (no 'benchmarks' or "
                             "'benchmark' key)")
    return out


def times(x: float) -> str:
    """A ratio to the floor: one decimal below 10."""
    return f"{x:.1f}" if x < 10 else f"{x:.0f}"


def grid_table(result: dict) -> list[str]:
    lines = ["| feeder | bare solve (floor) | grid step | grid step / floor | reset |",
             "|---|---:|---:|---:|---:|"]
    for r in result["feeders"]:
        lines.append(f"| {r['feeder']} | {r['floor_ms']:.3f} ms | {r['grid_step_ms']:.3f} ms | "
                     f"{r['grid_step_x_floor']:.1f}x | {r['reset_ms']:.3f} ms |")
    options = result.get("solver_options")
    if options:
        lines += ["", "| random dispatch (loads 0.2-1.6x) | OpenDSS, grid's solver options | "
                  "OpenDSS's default | ratio | control iterations / step |",
                  "|---|---:|---:|---:|---:|"]
        for r in options:
            lines.append(f"| {r['feeder']} | {r['options_ms']:.3f} ms | {r['default_ms']:.3f} ms "
                         f"| {r['ratio']:.2f}x | {r['control_iterations_per_step']:.1f} |")
    return lines


def env_table(records: dict[str, dict]) -> list[str]:
    lines = ["| environment (feeder, learners) | actions | clear p50 / p99 | env steps/s | "
             "agent steps/s | x floor: clear p50 / p99 / step | step: clearing + OpenDSS + "
             "rest |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for key, label in ENVS:
        if key not in records:
            continue
        r = records[key]["result"]
        head = (f"{label} ({r['feeder']}, {r['agents']}; floor {r['floor_ms']:.3f} ms)")
        for kind, a in r["actions"].items():
            x = a["x_floor"]
            lines.append(f"| {head} | {kind} | {a['clear_ms_p50']:.2f} / {a['clear_ms_p99']:.2f} "
                         f"ms | {a['steps_per_s']:,.0f} | {a['agent_steps_per_s']:,.0f} | "
                         f"{times(x['clear_p50'])} / {times(x['clear_p99'])} / "
                         f"{times(x['step'])} | {split(a)} |")
            head = ""
    return lines


def split(row: dict) -> str:
    """Where an env step's time goes (ms): the clearings (the solver's own calls in brackets,
    where the market has a solver), OpenDSS's solves, the rest."""
    ms = row.get("step_ms")
    if ms is None:  # a file from before the split was measured
        return "-"
    solver = f" ({ms['solver']:.2f})" if ms.get("solver") else ""
    return f"{ms['clear']:.2f}{solver} + {ms['opendss']:.2f} + {ms['rest']:.2f} ms"


def budget_table(records: dict[str, dict]) -> list[str]:
    """Each environment's random-action step against its throughput goal (``goal_budget``):
    the goal's time per step, what OpenDSS and the solver took of a step, and the rest."""
    lines = ["| environment | goal (random actions) | goal's step | OpenDSS + solver a step "
             "(share of the goal's step) | the rest of a step | time the goal leaves it |",
             "|---|---:|---:|---:|---:|---:|"]
    for key, label in ENVS:
        b = goal_budget(records[key]["result"]) if key in records else None
        if b is None:
            continue
        left = f"{b['python_budget_ms']:.2f} ms" if b["python_budget_ms"] > 0 else "none"
        lines.append(f"| {label} | {b['goal_steps_per_s']:,.0f} steps/s | "
                     f"{b['goal_step_ms']:.3f} ms | {b['engines_ms']:.3f} ms "
                     f"({b['engines_share']:.0%}) | {b['python_ms']:.3f} ms | {left} |")
    return lines if len(lines) > 2 else []


def goals_table(records: dict[str, dict]) -> list[str]:
    """Every environment's goals (issue #12, ``goal_checks``) against this run."""
    lines = ["| environment | goal | this run | met |", "|---|---|---:|---|"]
    for key, label in ENVS:
        if key in records:
            lines += [f"| {label} | {goal} | {got} | {'yes' if met else '**no**'} |"
                      for goal, got, met in goal_checks(records[key]["result"])]
    return lines if len(lines) > 2 else []


def scale_table(rows: list[dict]) -> list[str]:
    lines = ["| feeder | nodes | participants | OpenDSS re-solve | grid step | new hour: solve "
             "/ grid step | reset | clearing | parallel env step |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {Path(r['feeder']).stem} | {r['nodes']:,} | {r['participants']:,} | "
                     f"{r['bare_resolve_ms']:.3f} | {r['grid_step_ms']:.2f} | "
                     f"{r['new_hour_solve_ms']:.2f} / {r['grid_step_new_hour_ms']:.2f} | "
                     f"{r['reset_ms']:.2f} | {r['clear_ms']:.2f} | {r['env_step_ms']:.1f} |")
    return lines


def vec_table(result: dict) -> list[str]:
    lines = ["| `--num-cpus` | sampling (agent steps/s) | PPO training (agent steps/s) |",
             "|---:|---:|---:|"]
    for n, r in result["processes"].items():
        lines.append(f"| {n} | {r['sampling_agent_steps_per_s']:,.0f} | "
                     f"{r['training_agent_steps_per_s']:,.0f} |")
    return lines


def runners_table(result: dict) -> list[str]:
    lines = ["| env runners | sampling (agent steps/s) | training, end to end (agent steps/s) | "
             "env steps sampled per runner (0: driver) |", "|---:|---:|---:|---|"]
    for r in result["rows"]:
        counts = ", ".join(f"{k}: {v:,}" for k, v in sorted(r["env_steps_by_runner"].items()))
        lines.append(f"| {r['runners']} | {r['sampling_agent_steps_per_s']:,.0f} | "
                     f"{r['training_agent_steps_per_s']:,.0f} | {counts} |")
    return lines


def instructions_table(result: dict) -> list[str]:
    """bench_instructions' counts: thousands of instructions per env step, by where they ran,
    for this checkout and the one it was compared with (if any)."""
    parts = ("OpenDSS", "solver", "numpy", "Python", "C library", "other")
    lines = ["| environment | code | instructions / step | " + " | ".join(parts) + " |",
             "|---|---|---:|" + "---:|" * len(parts)]
    for key, rows in result.items():
        for label, r in rows.items():
            cells = " | ".join(f"{r['parts'].get(p, 0) / 1e3:,.0f}k" for p in parts)
            name = {"tp": "topology-power"}.get(key, key)
            lines.append(f"| {name} | {label} | {r['total'] / 1e3:,.0f}k | {cells} |")
    return lines


def extras_line(records: dict[str, dict]) -> str:
    extras = []
    for key, label in ENVS:
        result = records.get(key, {}).get("result", {})
        if "aec_agent_turns_per_s" in result:
            extras.append(f"{label} AEC agent turns/s {result['aec_agent_turns_per_s']:,.0f}")
    split = records.get("p2p", {}).get("result", {}).get("hour_split")
    if split:
        end, rest = split["ending an hour"], split["the others"]
        extras.append(f"p2p random-arm steps that end an hour {end['ms_p50']:.2f} ms median "
                      f"({end['share']:.0%} of the time), the others {rest['ms_p50']:.3f} ms")
    if "dlmp" in records:
        ref = records["dlmp"]["result"]["reference_clear_ms"]
        extras.append("dlmp clear on random offers, merit order / HiGHS direct / CVXPY "
                      f"reference (HiGHS): {ref['merit_order']['p50']:.2f} / "
                      f"{ref['highs_direct']['p50']:.2f} / {ref['cvxpy_highs']['p50']:.2f} ms")
    return "; ".join(extras) + "." if extras else ""


def machine_line(records: dict[str, dict]) -> str:
    machines = [r["machine"] for r in records.values() if "machine" in r]
    if not machines:
        return ""
    m, dates = machines[0], sorted(m["date"] for m in machines)
    loads = [m["load_average_1min"] for m in machines]
    return (f"(measured {dates[0]} to {dates[-1]} on {m['cpus']} CPUs, {m['platform']}, Python "
            f"{m['python']}; 1-minute load average {min(loads)} to {max(loads)})")


def tables(records: dict[str, dict]) -> str:
    parts = []
    if "grid" in records:
        parts.append("\n".join(grid_table(records["grid"]["result"])))
    if any(key in records for key, _ in ENVS):
        parts += ["\n".join(env_table(records)), extras_line(records),
                  "\n".join(goals_table(records)), "\n".join(budget_table(records))]
    if "instructions" in records:
        parts.append("\n".join(instructions_table(records["instructions"]["result"])))
    if "scale" in records:
        parts.append("\n".join(scale_table(records["scale"]["result"])))
    if "vec" in records:  # docs/scale-out.md's tables
        parts.append("\n".join(vec_table(records["vec"]["result"])))
    if "rllib_runners" in records:
        parts.append("\n".join(runners_table(records["rllib_runners"]["result"])))
    parts.append(machine_line(records))
    return "\n\n".join(p for p in parts if p)


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("json", nargs="+", type=Path, help="opengridgym bench --json output(s)")
    text = tables(load(ap.parse_args(argv).json))
    print(text)
    return text


if __name__ == "__main__":
    main()
