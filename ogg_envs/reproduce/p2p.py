"""Reproduce the paper's P2P result (use case 2, Figs. 8-9): every prosumer learns with UCB.

All twelve prosumers of the bundled ``p2p`` scenario are agents of ``opengridgym/p2p-v0`` in
the multi-period setting; each is driven by a ``RolePolicy`` of two UCB bandits (eq. 11), one
for the hours it is a producer and one for the hours it is a consumer, from
``ogg_envs.policies.bandits``. Episodes follow each other without resetting the bandits (the
weather of each day is drawn anew from the environment's generator).

A **negotiation step** is one env step in which at least one pair negotiates (steps without any
pair — hours with no producer — are not counted). Per negotiation step we record the mean
reward and the mean bid (¢/kWh) of the matched producers and of the matched consumers and the
share of pairs that traded. Outputs in ``out``:

* ``p2p_rewards.png`` (Fig. 8 style) and ``p2p_actions.png`` (Fig. 9 style): moving averages
  over 200 negotiation steps, producers versus consumers. Rewards are the paper's negotiation
  payoffs, in ¢ per kWh traded (``opengridgym/p2p-v0``'s rewards), not dollars;
* ``p2p.json``: the setting, the trade success rate, and per role the mean reward and mean bid
  over the first and the last 1,000 negotiation steps, plus whether (and from which step on)
  consumers bid at or above producers and both roles' rewards are positive (moving averages;
  the step is 0-based and 199, the end of the first full window, is the earliest possible).

The paper reports that after about 2,000 negotiation steps consumers bid at or above producers
and the rewards turn positive; ``p2p.json`` says whether this run shows it, and ``summary`` is
the table the README quotes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ogg_envs.envs.p2p_v0 import parallel_env
from ogg_envs.policies.bandits import make_policy
from ogg_envs.reproduce import table

WINDOW = 200  # moving average (negotiation steps)
SPAN = 1000  # first / last negotiation steps summarised in p2p.json


def simulate(steps: int, *, seed: int = 0, delta: float = 0.05, progress: bool = True,
             **env_kwargs) -> dict[str, np.ndarray]:
    """Run all-UCB prosumers for ``steps`` negotiation steps; per-step records as arrays."""
    env = parallel_env(**{"mode": "multi_period", **env_kwargs})
    # UCB's scale: half the range of the rewards (eq. 11 with rewards of unit spread).
    policies = {a: make_policy({"kind": "ucb", "delta": delta}, env.n_arms,
                               env.terms.reward_range()) for a in env.possible_agents}
    # Each bandit breaks ties at random with its own stream.
    rngs = {a: np.random.default_rng([seed, i]) for i, a in enumerate(env.possible_agents)}
    rec = {k: np.full(steps, np.nan) for k in (
        "producer_reward", "consumer_reward", "producer_bid", "consumer_bid", "success_rate")}
    obs, infos = env.reset(seed=seed)
    done = 0
    bar = tqdm(total=steps, desc="p2p negotiation steps", disable=not progress, mininterval=0.5)
    while done < steps:
        roles = {a: env.participant[a].state["role"] for a in env.agents}
        actions = {a: policies[a].bandits[roles[a]].select(rngs[a]) for a in env.agents}
        obs, rewards, _, _, infos = env.step(actions)
        sums = {"producer": [0.0, 0.0, 0], "consumer": [0.0, 0.0, 0]}
        trades = 0
        for a, info in infos.items():
            if not info["matched"]:
                continue
            policies[a].bandits[roles[a]].update(actions[a], rewards[a])
            s = sums[roles[a]]
            s[0] += rewards[a]
            s[1] += info["bid"]
            s[2] += 1
            trades += info["success"] and roles[a] == "producer"
        pairs = sums["producer"][2]
        if pairs:
            for role in ("producer", "consumer"):
                r, b, k = sums[role]
                rec[f"{role}_reward"][done] = r / k
                rec[f"{role}_bid"][done] = b / k
            rec["success_rate"][done] = trades / pairs
            done += 1
            bar.update(1)
        if not env.agents:
            obs, infos = env.reset()
    bar.close()
    env.close()
    return rec


def moving_average(x: np.ndarray, window: int = WINDOW) -> np.ndarray:
    """Trailing mean over ``window`` steps (shorter at the start)."""
    c = np.cumsum(np.insert(np.asarray(x, dtype=float), 0, 0.0))
    n = np.arange(1, len(x) + 1)
    lo = np.maximum(n - window, 0)
    return (c[n] - c[lo]) / (n - lo)


def _from_step_on(condition: np.ndarray) -> int | None:
    """First index after which ``condition`` holds to the end (None if it fails at the end)."""
    if not len(condition) or not condition[-1]:
        return None
    bad = np.flatnonzero(~condition)
    return int(bad[-1] + 1) if len(bad) else 0


def summarise(rec: dict[str, np.ndarray], span: int = SPAN) -> dict:
    def block(sl: slice) -> dict:
        return {
            "success_rate": float(np.mean(rec["success_rate"][sl])),
            "producer_mean_reward": float(np.mean(rec["producer_reward"][sl])),
            "consumer_mean_reward": float(np.mean(rec["consumer_reward"][sl])),
            "producer_mean_bid": float(np.mean(rec["producer_bid"][sl])),
            "consumer_mean_bid": float(np.mean(rec["consumer_bid"][sl])),
        }

    first, last = block(slice(0, span)), block(slice(-span, None))
    ma = {k: moving_average(v) for k, v in rec.items()}
    bids_cross = ma["consumer_bid"] >= ma["producer_bid"]
    positive = (ma["producer_reward"] > 0) & (ma["consumer_reward"] > 0)
    # Moving averages need a full window before they mean anything.
    bids_cross[:WINDOW - 1] = False
    positive[:WINDOW - 1] = False
    return {
        "negotiation_steps": int(len(rec["success_rate"])),
        "trade_success_rate": float(np.mean(rec["success_rate"])),
        f"first_{span}": first,
        f"last_{span}": last,
        "finding": {
            "consumers_bid_at_or_above_producers_last": last["consumer_mean_bid"]
            >= last["producer_mean_bid"],
            "rewards_positive_last": last["producer_mean_reward"] > 0
            and last["consumer_mean_reward"] > 0,
            "consumer_bid_ge_producer_bid_from_step": _from_step_on(bids_cross),
            "both_rewards_positive_from_step": _from_step_on(positive),
        },
    }


def plot(rec: dict[str, np.ndarray], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.arange(1, len(rec["success_rate"]) + 1)
    files = []
    for key, ylabel, name in (("reward", "reward (¢ per kWh traded)", "p2p_rewards.png"),
                              ("bid", "bid price (¢/kWh)", "p2p_actions.png")):
        fig, ax = plt.subplots(figsize=(7, 4))
        for role, colour in (("producer", "tab:orange"), ("consumer", "tab:blue")):
            ax.plot(steps, moving_average(rec[f"{role}_{key}"]), color=colour, label=f"{role}s")
        if key == "reward":
            ax.axhline(0.0, color="0.5", lw=0.8)
        ax.set_xlabel("negotiation step")
        ax.set_ylabel(ylabel)
        what = "rewards" if key == "reward" else "actions"
        ax.set_title(f"P2P market, all-UCB prosumers: {what}\n(moving averages over {WINDOW} "
                     "negotiation steps)", fontsize=10)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / name, dpi=120)
        plt.close(fig)
        files.append(name)
    return files


def run(out: Path, quick: bool = False, progress: bool = True, *, steps: int | None = None,
        seed: int = 0, delta: float = 0.05, **env_kwargs) -> dict:
    """Run the reproduction, write the figures and ``out/p2p.json``, return the JSON content.

    ``quick`` runs 2,500 negotiation steps (for CI) instead of 20,000; ``env_kwargs`` go to the
    environment (``feeder=``, ``scenario=``).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    steps = int(steps or (2500 if quick else 20000))
    if steps < 2 * SPAN:
        raise ValueError(f"need at least {2 * SPAN} negotiation steps, got {steps}")
    start = time.perf_counter()
    rec = simulate(steps, seed=seed, delta=delta, progress=progress, **env_kwargs)
    probe = parallel_env(**{"mode": "multi_period", **env_kwargs})
    result = {
        "use_case": "p2p",
        "setting": {
            "env": "opengridgym/p2p-v0", "scenario": probe.scenario.name,
            "mode": probe.mode, "prosumers": len(probe.possible_agents),
            "negotiation_steps_per_hour": probe.market_rounds, "periods": probe.periods,
            "arms": list(probe.terms.arms), "retail_price": probe.terms.retail_price,
            "c_service": probe.terms.c_service, "c_lose": probe.terms.c_lose,
            "policy": f"UCB (eq. 11), delta={delta}, one bandit per role, scale = half the "
                      f"reward range {probe.terms.reward_range()}, random tie-breaking",
            "seed": seed,
            "moving_average": WINDOW,
            **({"env_kwargs": env_kwargs} if env_kwargs else {}),
        },
        **summarise(rec),
    }
    result["figures"] = plot(rec, out)
    result["runtime_s"] = round(time.perf_counter() - start, 2)
    (out / "p2p.json").write_text(json.dumps(result, indent=2))
    return result


def summary(result: dict) -> str:
    """Trade success, rewards and bids of both roles early and late, and when the paper's
    finding holds (the numbers the README quotes)."""
    n = f"{SPAN:,}"
    first, last = result[f"first_{SPAN}"], result[f"last_{SPAN}"]
    rows = [["trade success", f"{first['success_rate']:.3f}", f"{last['success_rate']:.3f}"]]
    for role in ("producer", "consumer"):
        rows.append([f"{role} reward (¢/kWh)", f"{first[f'{role}_mean_reward']:.2f}",
                     f"{last[f'{role}_mean_reward']:.2f}"])
    for role in ("producer", "consumer"):
        rows.append([f"{role} bid (¢/kWh)", f"{first[f'{role}_mean_bid']:.2f}",
                     f"{last[f'{role}_mean_bid']:.2f}"])
    f, s = result["finding"], result["setting"]

    def since(step):
        return "never (at the end)" if step is None else f"from step {step:,} on"

    where = f", {s['env_kwargs']}" if s.get("env_kwargs") else ""
    bids = since(f["consumer_bid_ge_producer_bid_from_step"])
    positive = since(f["both_rewards_positive_from_step"])
    return (f"Use case 2 - peer-to-peer negotiation ({s['prosumers']} UCB prosumers, "
            f"{result['negotiation_steps']:,} negotiation steps, seed {s['seed']}{where})\n"
            + table(["", f"first {n} steps", f"last {n} steps"], rows)
            + f"\nconsumers bid at or above producers: {bids}; both rewards positive: "
            f"{positive}\n(moving averages over {s['moving_average']} steps; the paper: after "
            "about 2,000 steps)\nMarket vs AC: ac_feedback does not apply (the P2P market sets no "
            "branch limits; every hour's trades are checked on the OpenDSS feeder instead)")


if __name__ == "__main__":
    import sys

    print(json.dumps(run(Path(sys.argv[1] if len(sys.argv) > 1 else "p2p_out")), indent=2))
