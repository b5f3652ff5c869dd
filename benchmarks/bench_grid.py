"""Grid benchmark: median time of one grid step and of a reset, per feeder.

A grid step = set every load (kW and kvar), solve, read all node voltages and branch flows
(bulk reads). Printed for the IEEE 34 feeder with regulator taps held and moving, and for
IEEE 37. Run: ``python benchmarks/bench_grid.py`` (or ``opengridgym bench --only grid``).
"""

from __future__ import annotations

import time

import numpy as np

from ogg_envs.grid import OpenDSSGrid


def median_ms(fn, n: int) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def bench(feeder: str, locked_taps: bool, n: int = 2000) -> dict:
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
    return {
        "feeder": feeder + (" (taps held)" if locked_taps else " (regulators moving)"),
        "grid step ms": median_ms(step, n),
        "solve() with result ms": median_ms(full_step, n // 4),
        "reset ms": median_ms(grid.reset, n),
        "compile ms": median_ms(lambda: OpenDSSGrid.from_feeder(feeder), 10),
    }


def main() -> list[dict]:
    rows = [bench("ieee34", True), bench("ieee34", False), bench("ieee37", False)]
    print(f"{'feeder':34s} {'grid step':>10s} {'solve()':>9s} {'reset':>8s} {'compile':>8s}"
          "   (median ms)")
    for r in rows:
        print(f"{r['feeder']:34s} {r['grid step ms']:10.3f} {r['solve() with result ms']:9.3f} "
              f"{r['reset ms']:8.4f} {r['compile ms']:8.2f}")
    steps = 1e3 / rows[0]["grid step ms"]
    print(f"power-flow steps/s (ieee34, taps held): {steps:,.0f}")
    return rows


if __name__ == "__main__":
    main()
