"""Market flow against AC flow, with and without AC-feasible clearing (``ac_feedback``): the part
of ``opengridgym reproduce`` that every use case with branch limits shares.

``compare(make_env)`` plays one day twice, ``make_env(False)`` and ``make_env(True)`` (a
parallel env without learning agents), and keeps every grid step's ``GridReport``: per
market-limited branch the market's lossless flow and OpenDSS's AC flow. ``plot`` draws them
hour by hour on the most loaded lines; ``summary_rows`` is what the use case's summary table
adds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SHOWN = 2  # lines drawn: the most loaded ones in AC without feedback


def compare(make_env, seed: int = 0) -> dict:
    """Both runs of the day: per mode (``"off"``, ``"on"``) the hourly market and AC flows of
    every market-limited branch, the limits and the figures of merit."""
    out: dict = {}
    for mode, feedback in (("off", False), ("on", True)):
        env = make_env(feedback)
        env.reset(seed=seed)
        reports = []
        while not env.done:
            env.run_round({})
            if env.round == 0:  # the round ended a grid step
                reports.append(env.last_grid_report)
        first = reports[0]
        tol = first.tol
        loading = np.array([r.loading for r in reports]).reshape(len(reports), -1)
        out[mode] = {
            "branches": list(first.branches), "limit_kw": first.limit_kw.tolist(),
            "hours": [env.hour_of(t) for t in range(len(reports))],
            "market_flow_kw": np.array([r.market_flow_kw for r in reports]).T.tolist(),
            "ac_flow_kw": np.array([r.flow_kw for r in reports]).T.tolist(),
            "within_limits": float(np.mean([r.within_limits for r in reports])),
            "hours_over": int(sum(not r.within_limits for r in reports)),
            "worst_excess": float(np.max(loading, initial=0.0)) - 1.0,
            "extra_power_flows": float(np.mean([r.feedback_iterations for r in reports])),
            "unscheduled_kwh": float(sum(r.unscheduled_kw for r in reports)),
            "tol": tol,
        }
        if feedback is False:
            worst = np.max(loading, axis=0, initial=0.0)  # per branch, over the day
    out["shown"] = [out["off"]["branches"][k] for k in np.argsort(-worst)[:SHOWN]]
    return out


def plot(result: dict, path: Path, title: str) -> bool:
    """Market flow and AC flow per hour on the shown lines, without and with feedback, and the
    limit. False (nothing written) when the market limits no branch."""
    if not result["shown"]:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(result["shown"]), figsize=(6.2 * len(result["shown"]), 4.6),
                             squeeze=False)
    for ax, name in zip(axes[0], result["shown"]):
        for mode, color, label in (("off", "C3", "without feedback"),
                                   ("on", "C0", "with feedback")):
            r = result[mode]
            k = r["branches"].index(name)
            x = np.arange(len(r["hours"]))
            ax.plot(x, r["ac_flow_kw"][k], color=color, lw=2, label=f"AC flow, {label}")
            ax.plot(x, r["market_flow_kw"][k], color=color, lw=1.2, ls="--",
                    label=f"market flow, {label}")
        r = result["off"]
        limit = r["limit_kw"][r["branches"].index(name)]
        ax.axhline(limit, color="0.4", lw=3, alpha=0.4, zorder=0, label="market limit")
        ax.axhline(-limit, color="0.4", lw=3, alpha=0.4, zorder=0)
        hours = r["hours"]
        ticks = np.arange(0, len(hours), max(len(hours) // 8, 1))
        ax.set_xticks(ticks, [f"{hours[t]:02d}" for t in ticks])
        ax.set_xlabel("hour")
        ax.set_ylabel("active power, away from the source (kW)")
        over = {m: int(np.sum(np.abs(result[m]["ac_flow_kw"][result[m]["branches"].index(name)])
                              > limit * (1 + r["tol"]))) for m in ("off", "on")}
        ax.set_title(f"{name} (limit {limit:.0f} kW): hours over limit x {1 + r['tol']:g} in AC: "
                     f"{over['off']} without, {over['on']} with feedback", fontsize=9)
        lo = min(min(result[m]["ac_flow_kw"][result[m]["branches"].index(name)])
                 for m in ("off", "on"))
        ax.set_ylim(min(0.0, lo * 1.1), limit * 1.25)
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=5, fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def summary_rows(result: dict) -> list[list[str]]:
    """Rows ``[what, without feedback, with feedback]`` for a summary table."""
    off, on = result["off"], result["on"]

    def pct(x):
        return f"{100 * x:.1f} %"

    return [
        ["AC: hours with every limited line within limit x 1.005",
         pct(off["within_limits"]), pct(on["within_limits"])],
        ["AC: worst excess over a market limit", pct(off["worst_excess"]),
         pct(on["worst_excess"])],
        ["AC: extra power flows per grid step", f"{off['extra_power_flows']:.2f}",
         f"{on['extra_power_flows']:.2f}"],
        ["AC: substation supply beyond the cleared (kWh/day)",
         f"{off['unscheduled_kwh']:.0f}", f"{on['unscheduled_kwh']:.0f}"],
    ]
