"""Reproduce the paper's use case 1 (topology-induced market power) on topology-power-v0.

The sequence, all at the peak hour of the default scenario's day, seed 0:

1. **Uncongested**: every participant bids truthfully; the substation's flat 4.3 ¢/kWh offer
   is marginal everywhere and the price is uniform.
2. **Congested**: the four distributed generators raise their offers (a 60 % markup on their
   true marginal cost, ``MarkupBidder``); they produce less, more power flows from the
   substation, the limits into the 832 area and into bus 890 bind and nodal prices split.
3. **Flexibility**: the congested case again with 8 % and with 75 % of the consumers
   price-responsive (``flexible_share``): flexible demand blunts the generators' market power.
   The "average consumer price" is the nominal-load-weighted average of the consumers' nodal
   prices (the paid-per-kWh average is reported too).

4. **Market vs AC**: the congested day (every hour, DG markup as in 2) cleared without and
   with AC-feasible clearing (``ac_feedback``): the market's lossless flow against OpenDSS's AC
   flow on the most loaded limited lines (``ogg_envs.reproduce.ac``).

Writes ``topology_power.json`` and the figures ``topology_power_curves.png`` (supply and demand
curves by price zone, as the paper's Figs. 5-6), ``topology_power_price_map.png`` (the prices on
the feeder drawing, binding limits in red), ``topology_power_flexibility.png`` (Fig. 7) and
``topology_power_ac_flows.png`` (market flow vs AC flow, without and with feedback);
``summary`` is the table the README quotes. ``feeder=`` or ``scenario=`` run the same sequence
on another feeder or scenario.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ogg_envs.envs import topology_power_v0
from ogg_envs.policies.curve import MarkupBidder, TruthfulBidder
from ogg_envs.reproduce import ac, table

MARKUP = 0.6
PAPER = {"uncongested": [4.3], "congested": [4.6, 4.8, 6.9],
         "flexibility": {"0.08": 6.64, "0.75": 5.28}}


def peak_hour(seed: int = 0, **env_kwargs) -> int:
    """The hour of the seed's day with the largest total consumer demand."""
    env = topology_power_v0.parallel_env(market_rounds=1, **env_kwargs)
    env.reset(seed=seed)
    return int(np.argmax(env.load_factor @ env.nominal_kw))


def clear_at_peak(supplier_policy, flexible_share: float | None = None, seed: int = 0,
                  **env_kwargs):
    """Run the env to the peak hour with the given supplier policy; return (env, clearing)."""
    env = topology_power_v0.parallel_env(market_rounds=1, flexible_share=flexible_share,
                                         **env_kwargs)
    env.reset(seed=seed)
    for _ in range(peak_hour(seed, **env_kwargs) + 1):
        env.step({a: supplier_policy(env.participant[a]) for a in env.agents})
    return env, env.last_clearing


def average_prices(env, res) -> tuple[float, float]:
    w = env.nominal_kw
    prices = np.array([res.prices[p.bus] for p in env.consumers])
    weighted = float(w @ prices / w.sum())
    return weighted, res.average_consumer_price()


def zones(res) -> dict[float, list[str]]:
    out: dict[float, list[str]] = {}
    for bus, price in res.prices.items():
        out.setdefault(round(price, 3), []).append(bus)
    return dict(sorted(out.items()))


def plot_curves(env, res, ax, title: str) -> None:
    """Aggregate supply and demand curves of each price zone, with the zone's clearing point."""
    bids = res.bids
    grid_p = np.linspace(0, env.price_cap, 400)
    for k, (price, buses) in enumerate(zones(res).items()):
        members = [i for i, p in enumerate(env.participants) if p.bus in buses]
        if not members:
            continue
        supply = np.zeros_like(grid_p)
        demand = np.zeros_like(grid_p)
        for i in members:
            p_max, p_min, q_max, q_min = bids[i]
            width = q_max - q_min
            if env.is_supply[i]:  # quantity offered at each price
                share = np.clip((grid_p - p_min) / (p_max - p_min), 0, 1) if p_max > p_min \
                    else (grid_p >= p_min).astype(float)
                supply += np.where(grid_p >= p_min, q_min + share * width, 0.0)
            else:  # quantity wanted at each price
                share = np.clip((p_max - grid_p) / (p_max - p_min), 0, 1) if p_max > p_min \
                    else (grid_p <= p_max).astype(float)
                demand += q_min + share * width
        color = f"C{k}"
        served = sum(res.participant_quantities[i] for i in members if not env.is_supply[i])
        produced = sum(res.participant_quantities[i] for i in members if env.is_supply[i])
        imported = served - produced  # over the zone's boundary lines (at their limits)
        label = f"zone {price:.2f} ¢: supply"
        if imported > 1:
            label += f" + {imported:.0f} kW import"
        elif imported < -1:
            label += f" − {-imported:.0f} kW export"
        ax.plot(supply + imported, grid_p, color=color, lw=2, label=label)
        ax.plot(demand, grid_p, color=color, lw=2, ls="--", label="demand")
        ax.scatter([served], [price], color=color, zorder=5, s=40)
    ax.set_xlabel("kW")
    ax.set_ylabel("¢/kWh")
    ax.set_ylim(0, 12)
    ax.set_title(title)
    ax.legend(fontsize=7)


def run(out: Path, quick: bool = False, progress: bool = True, **env_kwargs) -> dict:
    """Clear the four cases, write ``topology_power.json`` and the figures; returns the JSON
    content. ``quick`` changes nothing (the use case is four clearings)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    truthful, markup = TruthfulBidder(), MarkupBidder(MARKUP)
    bar = tqdm(total=6, desc="topology-power", unit="step", disable=not progress)
    bar.set_postfix_str("uncongested (truthful)")
    env_u, res_u = clear_at_peak(truthful, **env_kwargs)
    bar.update()
    bar.set_postfix_str(f"congested (+{MARKUP:.0%})")
    env_c, res_c = clear_at_peak(markup, **env_kwargs)
    bar.update()
    flex = {}
    for share in (0.08, 0.75):
        bar.set_postfix_str(f"{share:.0%} flexible")
        env_f, res_f = clear_at_peak(markup, flexible_share=share, **env_kwargs)
        weighted, paid = average_prices(env_f, res_f)
        flex[f"{share:.2f}"] = {"average_price": weighted, "average_paid": paid,
                                "congested": res_f.congested}
        bar.update()
    bar.set_postfix_str("market vs AC")
    ac_result = ac.compare(lambda feedback: topology_power_v0.parallel_env(
        market_rounds=1, learners=[], policies={"supplier": MarkupBidder(MARKUP)},
        ac_feedback=feedback, **env_kwargs))
    bar.update()
    bar.set_postfix_str("figures")

    result = {
        "hour": peak_hour(**env_kwargs),
        "supplier_markup": MARKUP,
        "uncongested": {"prices": res_u.prices, "congested": res_u.congested,
                        "average_price": average_prices(env_u, res_u)[0],
                        "welfare_dollars": res_u.welfare / 100},
        "congested": {"prices": res_c.prices, "congested": res_c.congested,
                      "price_levels": sorted(zones(res_c)),
                      "congestion_rent_dollars": res_c.congestion_rent / 100,
                      "average_price": average_prices(env_c, res_c)[0],
                      "welfare_dollars": res_c.welfare / 100},
        "flexibility": {k: v["average_price"] for k, v in flex.items()},
        "flexibility_detail": flex,
        "paper": PAPER,
        "figures": ["topology_power_curves.png", "topology_power_price_map.png",
                    "topology_power_flexibility.png"],
        "ac_feedback": ac_result,
    }
    if ac.plot(ac_result, out / "topology_power_ac_flows.png",
               f"topology-power, DG offers +{MARKUP:.0%} all day: market (lossless) flow vs "
               f"OpenDSS AC flow"):
        result["figures"].append("topology_power_ac_flows.png")
    if env_kwargs:
        result["env_kwargs"] = env_kwargs
    (out / "topology_power.json").write_text(json.dumps(result, indent=2))

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    plot_curves(env_u, res_u, axes[0], "Uncongested: truthful bids (cf. paper Fig. 5)")
    plot_curves(env_c, res_c, axes[1], f"Congested: DG offers +{MARKUP:.0%} (cf. paper Fig. 6)")
    fig.tight_layout()
    fig.savefig(out / "topology_power_curves.png", dpi=130)
    plt.close(fig)

    vmin = min(min(res_u.prices.values()), min(res_c.prices.values()))
    vmax = max(res_c.prices.values())
    fig, axes = plt.subplots(2, 1, figsize=(12, 8))
    levels = " / ".join(f"{p:.2f}" for p in zones(res_u))
    env_u.grid.draw(res_u.prices, ax=axes[0], label="¢/kWh", vmin=vmin, vmax=vmax,
                    bus_labels=True,
                    title=f"Uncongested: truthful bids, price {levels} ¢/kWh")
    levels = " / ".join(f"{p:.2f}" for p in zones(res_c))
    env_c.grid.draw(res_c.prices, ax=axes[1], label="¢/kWh", vmin=vmin, vmax=vmax,
                    bus_labels=True, highlight_branches=res_c.congested,
                    title=f"Congested: DG offers +{MARKUP:.0%}, prices {levels} ¢/kWh; at "
                          f"their limits (red): {', '.join(res_c.congested) or 'none'}")
    fig.tight_layout()
    fig.savefig(out / "topology_power_price_map.png", dpi=130)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    labels = ["8 % flexible", "75 % flexible"]
    ours = [flex["0.08"]["average_price"], flex["0.75"]["average_price"]]
    paper = [PAPER["flexibility"]["0.08"], PAPER["flexibility"]["0.75"]]
    x = np.arange(2)
    ax.bar(x - 0.18, ours, 0.36, label="OpenGridGym (ours)")
    ax.bar(x + 0.18, paper, 0.36, label="paper", alpha=0.6)
    for xi, v in zip(x - 0.18, ours):
        ax.text(xi, v + 0.05, f"{v:.2f}", ha="center", fontsize=8)
    ax.set_xticks(x, labels)
    ax.set_ylabel("average consumer price (¢/kWh)")
    ax.set_title("Demand flexibility vs market power (cf. paper Fig. 7)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "topology_power_flexibility.png", dpi=130)
    plt.close(fig)
    bar.update()
    bar.close()
    return result


def summary(result: dict) -> str:
    """The use case's numbers next to the paper's, as the README quotes them."""
    unc, con = result["uncongested"], result["congested"]
    levels = sorted({round(p, 2) for p in unc["prices"].values()})
    uniform = (f"{levels[0]:.2f} everywhere" if len(levels) == 1
               else f"{levels[0]:.2f} to {levels[-1]:.2f}")
    binding = ", ".join(con["congested"]) or "none"
    paper, flex = result["paper"], result["flexibility"]
    rows = [
        ["uncongested prices (¢/kWh)", "4.3 everywhere", uniform],
        ["congested price levels (¢/kWh)", ", ".join(f"{p:g}" for p in paper["congested"][:2])
         + f", ~{paper['congested'][2]:g}",
         ", ".join(f"{p:.2f}" for p in con["price_levels"])],
        ["lines at their limits", "", binding],
        ["congestion rent ($)", "", f"{con['congestion_rent_dollars']:.2f}"],
        ["average consumer price, 8 % flexible", f"{paper['flexibility']['0.08']:.2f}",
         f"{flex['0.08']:.2f}"],
        ["average consumer price, 75 % flexible", f"{paper['flexibility']['0.75']:.2f}",
         f"{flex['0.75']:.2f}"],
    ]
    where = f", {result['env_kwargs']}" if result.get("env_kwargs") else ""
    text = (f"Use case 1 - topology-induced market power (peak hour {result['hour']}, DG markup "
            f"{result['supplier_markup']:.0%}{where})\n"
            + table(["", "paper", "OpenGridGym"], rows))
    if "ac_feedback" in result:
        text += ("\nMarket vs AC over the congested day (ac_feedback):\n"
                 + table(["", "without feedback", "with feedback"],
                         ac.summary_rows(result["ac_feedback"])))
    return text
