"""Grid benchmark: median time of the bare solve (the floor), a grid step and a reset, per feeder.

The floor is one bare ``grid.run_power_flow()`` (the dispatch already on the feeder, solved
again), the figure every environment benchmark divides by. A grid step = set every load (kW
and kvar), ``run_power_flow()``, read all node voltages and branch flows (``read_arrays``, bulk
reads). Printed for the IEEE 34 feeder with regulator taps held and moving, and for IEEE 37.

**Solver options**: the grid sets DSS C-API's sparse-solver options
(``ogg_envs.grid.opendss.SOLVER_OPTIONS``: the system matrix updated in place when a regulator
moves, instead of rebuilt with every element's admittance). Their case is a random dispatch
(every load at 0.2-1.6x its base, drawn anew each step: the regulators move most steps, as in
an environment with random actions): the OpenDSS time of such steps with the grid's options
and with OpenDSS's default (0), two grids stepped in turns through the same dispatches.
Run: ``python benchmarks/bench_grid.py [--quick] [--json PATH]`` (or ``opengridgym bench --only
grid``).
"""

from __future__ import annotations

import os

import numpy as np
from _timing import benchmark_parser, floor_times, median_ms, write_json

from ogg_envs.grid import OpenDSSGrid


def bench(feeder: str, locked_taps: bool, n: int) -> dict:
    grid = OpenDSSGrid.from_feeder(feeder, locked_taps=locked_taps)
    rng = np.random.default_rng(0)
    factors = 0.8 + 0.2 * rng.random((n, len(grid.load_names)))
    k = iter(range(10**9))

    def step():
        grid.set_loads_kw(grid.base_load_kw * factors[next(k) % n])
        grid.run_power_flow()
        grid.read_arrays()

    def full_step():  # the public API, with the result object
        grid.set_loads_kw(grid.base_load_kw * factors[next(k) % n])
        grid.solve()

    for _ in range(50):
        step()
    floor_ms = 1e3 * float(np.median(floor_times(grid, n)))
    grid_step_ms = median_ms(step, n)
    return {
        "feeder": feeder + (" (taps held)" if locked_taps else " (regulators moving)"),
        "floor_ms": floor_ms,
        "grid_step_ms": grid_step_ms,
        "grid_step_x_floor": grid_step_ms / floor_ms,
        "solve_with_result_ms": median_ms(full_step, n // 4),
        "reset_ms": median_ms(grid.reset, n),
        "compile_ms": median_ms(lambda: OpenDSSGrid.from_feeder(feeder), 3 if n < 1000 else 10),
    }


def solver_options(feeder: str, n: int) -> dict:
    """OpenDSS's own time (``grid.solve_seconds``) of random-dispatch grid steps, median per
    step, with the grid's ``SOLVER_OPTIONS`` and with OpenDSS's default, stepped in turns."""
    grids = {"grid's": OpenDSSGrid.from_feeder(feeder), "default": OpenDSSGrid.from_feeder(feeder)}
    grids["default"].dss.YMatrix.SolverOptions(0)
    rng = np.random.default_rng(1)
    times = {k: [] for k in grids}
    control = {k: 0 for k in grids}
    for step in range(n):
        factors = rng.uniform(0.2, 1.6, len(grids["default"].load_names))
        for name, grid in grids.items():
            if step % 24 == 0:
                grid.reset()
            grid.set_loads_kw(grid.base_load_kw * factors)
            before = grid.solve_seconds
            grid.run_power_flow()
            times[name].append(grid.solve_seconds - before)
            control[name] += grid.dss.Solution.ControlIterations()
    ms = {k: 1e3 * float(np.median(v)) for k, v in times.items()}
    return {"feeder": feeder, "options_ms": ms["grid's"], "default_ms": ms["default"],
            "ratio": ms["grid's"] / ms["default"],
            "control_iterations_per_step": control["grid's"] / n}


def main(argv=None) -> dict:
    args = benchmark_parser(__doc__.splitlines()[0]).parse_args(argv)
    n = 200 if args.quick else 2000
    rows = [bench("ieee34", True, n), bench("ieee34", False, n), bench("ieee37", False, n)]
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print(f"{'feeder':34s} {'floor':>7s} {'grid step':>10s} {'x floor':>8s} {'solve()':>9s} "
          f"{'reset':>8s} {'compile':>8s}   (median ms)")
    for r in rows:
        print(f"{r['feeder']:34s} {r['floor_ms']:7.3f} {r['grid_step_ms']:10.3f} "
              f"{r['grid_step_x_floor']:8.1f} {r['solve_with_result_ms']:9.3f} "
              f"{r['reset_ms']:8.4f} {r['compile_ms']:8.2f}")
    print("(floor: one bare grid.run_power_flow(), the dispatch already on the feeder)")
    result = {"feeders": rows, "power_flow_steps_per_s": 1e3 / rows[0]["grid_step_ms"]}
    print(f"power-flow steps/s (ieee34, taps held): {result['power_flow_steps_per_s']:,.0f}")
    result["solver_options"] = [solver_options(f, n // 2) for f in ("ieee34", "ieee37")]
    print("solver options, random dispatch (loads 0.2-1.6x), OpenDSS time per step (median):")
    for r in result["solver_options"]:
        print(f"  {r['feeder']}: grid's options {r['options_ms']:.3f} ms, OpenDSS's default "
              f"{r['default_ms']:.3f} ms ({r['ratio']:.2f}x; "
              f"{r['control_iterations_per_step']:.1f} control iterations a step)")
    write_json(args.json, "grid", result)
    return result


if __name__ == "__main__":
    main()
