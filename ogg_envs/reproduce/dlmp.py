"""Reproduce the paper's DLMP use case (Fig. 10): DLMP maps of the IEEE 37 feeder.

``run(out)`` plays the default ``dlmp`` scenario's day with every generator and DR provider
offering its true cost curve (the truthful baseline), one market clearing per hour, with the
scenario's ``[reproduce]`` seed, and draws the DLMP of every bus on the feeder's one-line
diagram for an uncongested and a congested hour (``[reproduce]`` ``uncongested_hour`` and
``congested_hour``). It writes

* ``out/dlmp_map.png``: the two maps side by side on one colour scale, congested branches red
  (Fig. 10);
* ``out/dlmp_day.png`` (not with ``quick``): source LMP and the lowest/highest DLMP per hour;
* ``out/dlmp_ac_flows.png``: the truthful day cleared without and with AC-feasible clearing
  (``ac_feedback``): the market's lossless flow against OpenDSS's AC flow on the most loaded
  limited lines (``ogg_envs.reproduce.ac``);
* ``out/dlmp.json``: for both hours the DLMP of every bus with its energy and congestion
  parts, the congested branches and their shadow prices, the dispatch, and the checks the
  paper's figure illustrates: uncongested, every DLMP equals the source LMP; congested, the
  prices separate along the congested path (buses downstream of a congested branch pay
  more).

``summary`` is the table the README quotes; ``feeder=`` or ``scenario=`` run the same day on
another feeder or scenario (its ``[reproduce]`` hours).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ogg_envs.envs import dlmp_v0
from ogg_envs.policies.blocks import TruthfulBidder
from ogg_envs.reproduce import ac, table


def play_truthful_day(scenario="dlmp", seed: int = 0, progress: bool = False, **env_kwargs):
    """Clear every hour of the scenario's day with truthful offers.

    Returns the env and one ``(hour, source LMP, demand kW, DLMPResult, PowerFlowResult)`` per
    hour.
    """
    env = dlmp_v0.parallel_env(scenario=scenario, market_rounds=1, **env_kwargs)
    env.reset(seed=seed)
    policy = TruthfulBidder()
    results = []
    with tqdm(total=env.horizon, desc="dlmp", unit="hour", disable=not progress) as bar:
        while env.agents:
            hour, lmp, demand = env.t, env.lmp_now, float(env.demand_kw.sum())
            env.step({a: policy(env.participant[a]) for a in env.agents})
            results.append((hour, lmp, demand, env.last_clearing, env.last_power_flow))
            bar.update()
    return env, results


def _hour_summary(env, hour: int, lmp: float, demand: float, res, pf) -> dict:
    topo = env.topology
    prices = res.prices()
    tol = 1e-6 * max(1.0, lmp)
    separated = []
    for name in res.congested:
        br = topo.branches[topo.branch_index[name]]
        below = topo.downstream[name]
        inside = [prices[b] for b in below]
        outside = prices[br.parent]
        separated.append({"branch": name, "upstream_dlmp": outside,
                          "downstream_dlmp_min": min(inside), "downstream_dlmp_max": max(inside),
                          "shadow_price": float(res.branch_prices[topo.branch_index[name]])})
    return {
        "hour": hour,
        "source_lmp": lmp,
        "dlmp": prices,
        "energy": res.energy,
        "congestion": dict(zip(res.buses, res.congestion.tolist())),
        "congested": list(res.congested),
        "separation": separated,
        "price_levels": sorted({round(v, 4) for v in res.dlmp.tolist()}),
        "all_equal_source_lmp": bool(np.all(np.abs(res.dlmp - lmp) <= tol)),
        "dispatch_kw": dict(zip(res.participants, res.participant_quantities.tolist())),
        "source_kw": res.source_kw,
        "demand_kw": demand,
        "feasible": res.feasible,
        "power_flow": {"converged": pf.converged, "substation_kw": pf.substation_kw,
                       "losses_kw": pf.losses_kw,
                       "n_voltage_violations": len(pf.voltage_violations)},
    }


def run(out: Path, quick: bool = False, progress: bool = True, **env_kwargs) -> dict:
    """Write the DLMP maps and ``out/dlmp.json``; returns the JSON content. ``env_kwargs``
    (``feeder=``, ``scenario=``) go to the environment."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    env_kwargs = {"scenario": "dlmp", **env_kwargs}
    sc = dlmp_v0.parallel_env(**env_kwargs).scenario
    rep = sc.reproduce
    seed = rep.seed
    hours = {"uncongested": rep.uncongested_hour, "congested": rep.congested_hour}
    env, results = play_truthful_day(seed=seed, progress=progress, **env_kwargs)
    by_hour = {r[0]: r for r in results}
    summary = {label: _hour_summary(env, *by_hour[h]) for label, h in hours.items()}
    unc, con = summary["uncongested"], summary["congested"]
    checks = {
        "uncongested_all_equal_source_lmp": unc["all_equal_source_lmp"] and not unc["congested"],
        "congested_has_congestion": bool(con["congested"]),
        "congested_prices_separate_downstream": bool(con["separation"]) and all(
            s["downstream_dlmp_min"] > s["upstream_dlmp"] + 1e-9 for s in con["separation"]),
    }
    data = {
        "scenario": sc.name or "dlmp",
        **({"env_kwargs": env_kwargs} if env_kwargs != {"scenario": "dlmp"} else {}),
        "seed": seed,
        "offers": "truthful (true cost curves, ogg_envs.policies.blocks.TruthfulBidder)",
        "units": {"price": "¢/kWh", "power": "kW"},
        "line_limits_kw": {k: float(v) for k, v in sc.grid.limits_kw.items()},
        "uncongested": unc,
        "congested": con,
        "checks": checks,
        "day": [{"hour": h, "source_lmp": lmp, "dlmp_min": float(res.dlmp.min()),
                 "dlmp_max": float(res.dlmp.max()), "congested": list(res.congested)}
                for h, lmp, _, res, _ in results],
    }
    # Fig. 10: both hours on one colour scale.
    vals = np.concatenate([list(unc["dlmp"].values()), list(con["dlmp"].values())])
    vmin, vmax = float(vals.min()), float(vals.max())
    if vmax - vmin < 1e-6:
        vmin, vmax = vmin - 0.5, vmax + 0.5
    fig, axes = plt.subplots(1, 2, figsize=(14, 6))
    for ax, (label, s) in zip(axes, (("uncongested", unc), ("congested", con))):
        env.grid.draw(s["dlmp"], ax=ax, cmap="plasma", label="DLMP (¢/kWh)", vmin=vmin,
                      vmax=vmax, highlight_branches=s["congested"], annotate=not quick,
                      title=f"{label} hour {s['hour']}: source LMP {s['source_lmp']:.2f} ¢/kWh"
                            + (f", congested {', '.join(s['congested'])}" if s["congested"]
                               else ""))
    fig.suptitle("DLMPs on the IEEE 37-node feeder (truthful offers)")
    fig.tight_layout()
    fig.savefig(out / "dlmp_map.png", dpi=80 if quick else 150)
    plt.close(fig)
    figures = ["dlmp_map.png"]
    if not quick:
        fig, ax = plt.subplots(figsize=(8, 4))
        hrs = [d["hour"] for d in data["day"]]
        ax.plot(hrs, [d["source_lmp"] for d in data["day"]], "k-", label="source LMP")
        ax.fill_between(hrs, [d["dlmp_min"] for d in data["day"]],
                        [d["dlmp_max"] for d in data["day"]], alpha=0.35,
                        label="DLMP range over buses")
        ax.set_xlabel("hour")
        ax.set_ylabel("¢/kWh")
        ax.legend()
        ax.set_title("Source LMP and DLMPs over the day")
        fig.tight_layout()
        fig.savefig(out / "dlmp_day.png", dpi=120)
        plt.close(fig)
        figures.append("dlmp_day.png")
    ac_result = ac.compare(lambda feedback: dlmp_v0.parallel_env(
        market_rounds=1, learners=[], ac_feedback=feedback, **env_kwargs), seed=seed)
    data["ac_feedback"] = ac_result
    if ac.plot(ac_result, out / "dlmp_ac_flows.png",
               "dlmp, truthful offers: market (lossless DC OPF) flow vs OpenDSS AC flow"):
        figures.append("dlmp_ac_flows.png")
    data["figures"] = figures
    (out / "dlmp.json").write_text(json.dumps(data, indent=2))
    return data


def summary(data: dict) -> str:
    """Both hours' source LMP, DLMP levels and congested lines, how the prices separate
    around each congested line, and the checks (the numbers the README quotes)."""
    rows = []
    for label in ("uncongested", "congested"):
        s = data[label]
        levels = s["price_levels"]
        rows.append([f"{label} (hour {s['hour']})", f"{s['source_lmp']:.2f}",
                     f"{levels[0]:.3f} everywhere" if len(levels) == 1
                     else ", ".join(f"{p:.3f}" for p in levels),
                     ", ".join(s["congested"]) or "none"])
    where = f", {data['env_kwargs']}" if data.get("env_kwargs") else ""
    lines = [f"Use case 3 - DLMPs (scenario {data['scenario']}{where}, truthful offers, seed "
             f"{data['seed']})",
             table(["hour", "source LMP (¢/kWh)", "DLMPs (¢/kWh)", "lines at their limits"],
                   rows)]
    for sep in data["congested"]["separation"]:
        lo, hi = sep["downstream_dlmp_min"], sep["downstream_dlmp_max"]
        below = f"{lo:.3f}" if abs(hi - lo) < 5e-4 else f"{lo:.3f} to {hi:.3f}"
        lines.append(f"  {sep['branch']}: {sep['upstream_dlmp']:.3f} upstream, {below} "
                     f"downstream (shadow price {sep['shadow_price']:.3f} ¢/kWh)")
    checks = {"uncongested_all_equal_source_lmp": "uncongested hour, every DLMP = source LMP",
              "congested_has_congestion": "congested hour has congestion",
              "congested_prices_separate_downstream": "prices rise beyond each congested line"}
    lines += [f"check: {text}: {'yes' if data['checks'][k] else 'NO'}"
              for k, text in checks.items()]
    if "ac_feedback" in data:
        lines += ["Market vs AC over the day (ac_feedback):",
                  table(["", "without feedback", "with feedback"],
                        ac.summary_rows(data["ac_feedback"]))]
    return "\n".join(lines)
