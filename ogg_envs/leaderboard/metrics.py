"""Leaderboard metrics: the formulas (pure functions) and the per-task recorders.

``docs/leaderboard.md`` defines every metric with its formula; this module is that definition
in code. Money is in ¢ inside the formulas and reported in dollars (``_usd``); energy in kWh
(every grid step is one hour, so kW held for the step are kWh).

A *recorder* watches one evaluation run of a task (one seed, one or more consecutive
episodes): the runner calls ``before_step()`` before every ``env.step`` and
``after_step(rewards, infos)`` after it, and ``result()`` at the end gives the seed's metrics.
Recorders read the environment's state (the last clearing, the last power flow) but never
change it; the welfare-optimal reference is cleared on a separate copy of the market.
"""

from __future__ import annotations

import copy
import math

import numpy as np
from scipy import stats

__all__ = [
    "METRICS", "TASK_METRICS", "mean_ci", "efficiency", "curve_true_welfare",
    "curve_true_profits", "dlmp_true_welfare", "dlmp_true_profits", "dlmp_congestion_rent",
    "p2p_utility_cost", "p2p_consumer_price", "CurveRecorder", "P2PRecorder", "DLMPRecorder",
    "make_recorder",
]

# Every metric the leaderboard can report, in table order: name -> (label, unit)
METRICS = {
    "efficiency": ("market efficiency", "ratio"),
    "welfare_loss_usd": ("welfare loss", "$"),
    "profit_usd": ("controlled agents' profit", "$"),
    "return": ("controlled agents' return", "reward"),
    "consumer_price": ("average consumer price", "¢/kWh"),
    "trade_success": ("P2P trade success rate", "ratio"),
    "avg_dlmp": ("average DLMP", "¢/kWh"),
    "congestion_rent_usd": ("congestion rent", "$"),
    "voltage_violations": ("voltage violations", "bus-hours"),
    "overloads": ("thermal overloads", "element-hours"),
    "nonconverged": ("power flows not converged", "hours"),
    "infeasible_trades": ("infeasible P2P trades", "trade-hours"),
    "shed_kwh": ("load shed", "kWh"),
    "curtailed_kwh": ("generation curtailed", "kWh"),
}

# The metrics each kind of task reports (a metric that does not apply is left empty).
TASK_METRICS = {
    "curve": ["efficiency", "welfare_loss_usd", "profit_usd", "return", "consumer_price",
              "congestion_rent_usd", "voltage_violations", "overloads", "nonconverged",
              "shed_kwh", "curtailed_kwh"],
    "p2p": ["efficiency", "welfare_loss_usd", "profit_usd", "return", "consumer_price",
            "trade_success", "voltage_violations", "overloads", "nonconverged",
            "infeasible_trades", "curtailed_kwh"],
    "dlmp": ["efficiency", "welfare_loss_usd", "profit_usd", "return", "consumer_price",
             "avg_dlmp", "congestion_rent_usd", "voltage_violations", "overloads",
             "nonconverged", "shed_kwh", "curtailed_kwh"],
}


# ---------------------------------------------------------------------- statistics
def mean_ci(values, confidence: float = 0.95) -> tuple[float, float, int]:
    """Mean and half-width of the two-sided Student-t confidence interval over seeds.

    ``half = t_{(1+c)/2, n-1} * s / sqrt(n)`` with ``s`` the sample standard deviation
    (``ddof=1``). NaN values (a metric undefined on a seed) are dropped; with fewer than two
    values the half-width is NaN. Returns ``(mean, half_width, n)``.
    """
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    n = len(x)
    if n == 0:
        return math.nan, math.nan, 0
    mean = float(x.mean())
    if n < 2:
        return mean, math.nan, n
    s = float(x.std(ddof=1))
    return mean, float(stats.t.ppf(0.5 + confidence / 2, n - 1) * s / math.sqrt(n)), n


def efficiency(realised_surplus: float, optimal_surplus: float) -> float:
    """``realised / optimal`` total surplus (NaN when the optimal surplus is not positive)."""
    if not optimal_surplus > 0:
        return math.nan
    return realised_surplus / optimal_surplus


# ---------------------------------------------------------------------- curve market
def curve_true_profits(privates: list[dict], prices: np.ndarray,
                       quantities: np.ndarray) -> np.ndarray:
    """True profit (¢ per hour) of every participant of topology-power-v0 (eqs. 9-10).

    Supplier ``k``: ``price_k q_k - (a_k q_k + b_k q_k^2 / 2)``; consumer ``k``:
    ``u_k(q_k) - price_k q_k`` with ``u_k`` its true value (``topology_power_v0.true_value``).
    """
    from ogg_envs.envs.topology_power_v0 import true_value

    out = np.empty(len(privates))
    for k, pr in enumerate(privates):
        p, q = float(prices[k]), float(quantities[k])
        if pr["side"] == "supply":
            out[k] = p * q - (pr["cost_a"] * q + 0.5 * pr.get("cost_b", 0.0) * q * q)
        else:
            out[k] = true_value(pr, q) - p * q
    return out


def curve_true_welfare(privates: list[dict], quantities: np.ndarray) -> float:
    """Total surplus (¢ per hour) under true costs and values: ``sum_d u_d(q_d) - sum_s
    c_s(q_s)`` (payments are transfers and cancel)."""
    from ogg_envs.envs.topology_power_v0 import true_value

    total = 0.0
    for pr, q in zip(privates, np.asarray(quantities, dtype=float).tolist()):
        if pr["side"] == "supply":
            total -= pr["cost_a"] * q + 0.5 * pr.get("cost_b", 0.0) * q * q
        else:
            total += true_value(pr, q)
    return total


# ---------------------------------------------------------------------- DLMP market
def dlmp_true_profits(prices: np.ndarray, quantities: np.ndarray, cost_a: np.ndarray,
                      cost_b: np.ndarray) -> np.ndarray:
    """True profit (¢ per hour) of every resource: ``DLMP q - (a q + b q^2 / 2)``."""
    q = np.asarray(quantities, dtype=float)
    return np.asarray(prices, dtype=float) * q - (cost_a + 0.5 * cost_b * q) * q


def dlmp_true_welfare(*, demand_kw: np.ndarray, shed_kw: np.ndarray, source_kw: float,
                      lmp: float, quantities: np.ndarray, cost_a: np.ndarray,
                      cost_b: np.ndarray, value_of_load: float) -> float:
    """Total surplus (¢ per hour) of a DLMP hour under true costs.

    ``VoLL * (sum_b demand_b - sum_b shed_b) - lmp * max(0, P_source) - sum_r (a_r q_r +
    b_r q_r^2 / 2)``: inflexible demand is worth the value of lost load (the market's price
    cap, the price at which it sheds), imports cost the source LMP, generators their true
    cost and DR providers their true discomfort. It is the OPF's objective with true costs in
    place of the offers.
    """
    q = np.asarray(quantities, dtype=float)
    served = float(np.sum(demand_kw) - np.sum(shed_kw))
    true_cost = float(np.sum((cost_a + 0.5 * cost_b * q) * q))
    return value_of_load * served - lmp * max(float(source_kw), 0.0) - true_cost


def dlmp_congestion_rent(congestion: np.ndarray, withdrawal_kw: np.ndarray) -> float:
    """The DSO's congestion rent (¢ per hour): ``sum_b congestion_b * w_b`` with ``w_b`` the
    net withdrawal at bus b (demand served minus local injections). Equal to
    ``sum_e mu_e f_e`` (branch shadow prices times flows) on a radial feeder."""
    return float(np.dot(congestion, withdrawal_kw))


# ---------------------------------------------------------------------- P2P market
def p2p_utility_cost(money: dict, terms) -> float:
    """What the prosumers together pay the utility in a grid step (¢): ``sum_i (retail_i ub +
    shortfall_i imbalance - feed_in_i feed_in_price)``. P2P payments are transfers between
    prosumers and do not enter."""
    return float(np.sum(money["retail_kwh"] * terms.retail_price
                        + money["shortfall_kwh"] * terms.imbalance_price
                        - money["feed_in_kwh"] * terms.feed_in_price))


def p2p_consumer_price(money: dict, terms) -> tuple[float, float]:
    """(what prosumers paid for the energy they bought, kWh bought) in a grid step: P2P
    purchases at the agreed prices plus retail purchases at ub."""
    paid = float(np.sum(money["p2p_cost"]) + np.sum(money["retail_kwh"]) * terms.retail_price)
    kwh = float(np.sum(money["p2p_bought_kwh"]) + np.sum(money["retail_kwh"]))
    return paid, kwh


# ---------------------------------------------------------------------- recorders
class _Recorder:
    """Accumulates one seed's run (one or more episodes); see the module docstring."""

    kind = ""

    def __init__(self, env, controlled: list[str]):
        self.env = env
        self.controlled = list(controlled)
        self.episodes = 0
        self.s_real = 0.0  # realised surplus, ¢
        self.s_ref = 0.0  # surplus of the truthful welfare-optimal dispatch, ¢
        self.sums = dict.fromkeys(TASK_METRICS[self.kind], 0.0)
        self.price_num = self.price_den = 0.0

    def start_episode(self) -> None:
        self.episodes += 1

    def _physical(self, pf) -> None:
        if pf is None:
            return
        if not pf.converged:
            self.sums["nonconverged"] += 1
            return
        self.sums["voltage_violations"] += len(pf.bus_voltage_violations())
        self.sums["overloads"] += len(pf.thermal_overloads)

    def _returns(self, rewards: dict) -> None:
        self.sums["return"] += float(sum(rewards.get(a, 0.0) for a in self.controlled))

    def result(self) -> dict[str, float]:
        """The seed's metrics: efficiency over all its hours, the rest per episode."""
        n = max(self.episodes, 1)
        out = {k: v / n for k, v in self.sums.items()}
        out["efficiency"] = efficiency(self.s_real, self.s_ref)
        out["welfare_loss_usd"] = (self.s_ref - self.s_real) / 100.0 / n
        out["consumer_price"] = self.price_num / self.price_den if self.price_den > 0 \
            else math.nan
        return self._finish(out)

    def _finish(self, out: dict) -> dict:
        return out


class CurveRecorder(_Recorder):
    """topology-power-v0: the final clearing of every hour against the truthful optimum."""

    kind = "curve"

    def __init__(self, env, controlled):
        super().__init__(env, controlled)
        self.ref_market = copy.deepcopy(env.market)  # a separate solver for the reference
        self.controlled_idx = [env.names.index(a) for a in self.controlled]
        self.ref_solves = 0
        self._hour = None

    def before_step(self) -> None:
        env = self.env
        if env.round == env.market_rounds - 1:  # this step's clearing is the hour's final one
            self._hour = ([dict(p.private) for p in env.participants], env.truthful_bids())

    def after_step(self, rewards: dict, infos: dict) -> None:
        self._returns(rewards)
        if not infos or not next(iter(infos.values())).get("grid_step"):
            return
        env = self.env
        privates, truthful = self._hour
        res = env._last
        q, p = res.participant_quantities, res.participant_prices
        bids = getattr(env, "_last_bids", None)
        if bids is not None and np.array_equal(bids, truthful):
            ref = res  # the same bids are the same clearing problem
        else:
            ref = self.ref_market.clear(truthful)
            self.ref_solves += 1
        self.s_real += curve_true_welfare(privates, q)
        self.s_ref += curve_true_welfare(privates, ref.participant_quantities)
        profits = curve_true_profits(privates, p, q)
        self.sums["profit_usd"] += float(profits[self.controlled_idx].sum()) / 100.0
        self.price_num += res.consumer_payments
        self.price_den += float(q[~env.is_supply].sum())
        self.sums["congestion_rent_usd"] += res.congestion_rent / 100.0
        self.sums["shed_kwh"] += float(sum(res.shed_kw.values()))
        self.sums["curtailed_kwh"] += float(sum(res.spilled_kw.values()))
        self._physical(env._last_pf)


class DLMPRecorder(_Recorder):
    """dlmp-v0: the final DSO clearing of every hour against the truthful optimum."""

    kind = "dlmp"

    def __init__(self, env, controlled):
        super().__init__(env, controlled)
        self.ref_market = copy.deepcopy(env.market)
        self.controlled_idx = [env.names.index(a) for a in self.controlled]
        self.is_gen = np.array([p.group == "generator" for p in env.participants])
        self.res_bus = np.array([env.topology.bus_index[p.bus] for p in env.participants],
                                dtype=np.int64)
        self.ref_solves = 0
        self.dlmp_sum = 0.0
        self.hours = 0
        self._hour = None

    def before_step(self) -> None:
        env = self.env
        if env.round == env.market_rounds - 1:
            parts = env.participants
            self._hour = dict(
                demand=env.demand_kw.copy(), cap=env.capacity_kw.copy(), lmp=env.lmp_now,
                pv=env.pv_kw.copy(), truthful=env.truthful_offers(),
                cost_a=np.array([p.private["cost_a"] for p in parts]),
                cost_b=np.array([p.private["cost_b"] for p in parts]),
                # offers of non-adaptive scripted participants, fixed for the hour once made
                scripted=dict(getattr(env, "_scripted_cache", None) or {}))

    def _offers(self, infos: dict) -> np.ndarray | None:
        """The offers of the final clearing, if all of them are known (else None)."""
        cache = self._hour["scripted"]
        rows = []
        for name in self.env.names:
            if name in infos:
                rows.append(np.asarray(infos[name]["bid"], dtype=float))
            elif name in cache:
                rows.append(np.asarray(cache[name], dtype=float))
            else:
                return None
        return np.array(rows)

    def after_step(self, rewards: dict, infos: dict) -> None:
        self._returns(rewards)
        if not infos or not next(iter(infos.values())).get("grid_step"):
            return
        env, h = self.env, self._hour
        res = env.last_clearing
        offers = self._offers(infos)
        if offers is not None and np.array_equal(offers, h["truthful"]):
            ref = res
        else:
            ref = self.ref_market.clear(h["truthful"], demand_kw=h["demand"],
                                        capacity_kw=h["cap"], lmp=h["lmp"], pv_kw=h["pv"])
            self.ref_solves += 1
        cap = env.price_cap
        for target, r in (("real", res), ("ref", ref)):
            w = dlmp_true_welfare(demand_kw=h["demand"], shed_kw=r.shed_kw,
                                  source_kw=r.source_kw, lmp=h["lmp"], quantities=r.quantities,
                                  cost_a=h["cost_a"], cost_b=h["cost_b"], value_of_load=cap)
            if target == "real":
                self.s_real += w
            else:
                self.s_ref += w
        q = res.quantities
        profits = dlmp_true_profits(res.resource_prices, q, h["cost_a"], h["cost_b"])
        self.sums["profit_usd"] += float(profits[self.controlled_idx].sum()) / 100.0
        B = len(res.dlmp)
        bus = self.res_bus
        dr = np.bincount(bus[~self.is_gen], q[~self.is_gen], minlength=B)
        gen = np.bincount(bus[self.is_gen], q[self.is_gen], minlength=B)
        served = h["demand"] - res.shed_kw - dr
        withdrawal = served - gen - (h["pv"] - res.curtailed_kw)
        self.price_num += float(np.dot(res.dlmp, served))
        self.price_den += float(served.sum())
        self.dlmp_sum += float(res.dlmp.mean())
        self.hours += 1
        self.sums["congestion_rent_usd"] += dlmp_congestion_rent(res.congestion,
                                                                 withdrawal) / 100.0
        self.sums["shed_kwh"] += float(res.shed_kw.sum())
        self.sums["curtailed_kwh"] += float(res.curtailed_kw.sum())
        self._physical(env.last_power_flow)

    def _finish(self, out: dict) -> dict:
        out["avg_dlmp"] = self.dlmp_sum / self.hours if self.hours else math.nan
        return out


class P2PRecorder(_Recorder):
    """p2p-v0: every hour's settlement against the same hour with every pair trading fully."""

    kind = "p2p"

    def __init__(self, env, controlled):
        super().__init__(env, controlled)
        names = [p.name for p in env.participants]
        self.controlled_idx = [names.index(a) for a in self.controlled]
        self.matched_steps = 0
        self.successes = 0
        self._hour = None

    def before_step(self) -> None:
        from ogg_envs.markets.p2p import PRODUCER

        env, mk = self.env, self.env.market
        if env.round == env.market_rounds - 1:
            if env.mode == "homogeneous":
                x = np.where(mk.roles == PRODUCER, env.fixed_kwh, -env.fixed_kwh)
            else:
                x = env.realised_export[env.t].copy()
            self._hour = dict(producers=mk.producers.copy(), consumers=mk.consumers.copy(),
                              full=mk.tranche * float(mk.steps), x=x.astype(float))

    def after_step(self, rewards: dict, infos: dict) -> None:
        from ogg_envs.markets.p2p import settle

        self._returns(rewards)
        for a in self.controlled:
            info = infos.get(a)
            if info is not None and info.get("matched"):
                self.matched_steps += 1
                self.successes += bool(info.get("success"))
        if not infos or not next(iter(infos.values())).get("grid_step"):
            return
        env, h = self.env, self._hour
        terms, money, report = env.terms, env.last_settlement, env.last_report
        n = len(env.participants)
        x = h["x"] - report.curtailed_kwh
        zeros = np.zeros(len(h["producers"]))
        none = settle(n, h["producers"], h["consumers"], zeros, zeros, x, terms)
        full = settle(n, h["producers"], h["consumers"], h["full"], zeros, x, terms)
        c0 = p2p_utility_cost(none, terms)
        self.s_real += c0 - p2p_utility_cost(money, terms)
        self.s_ref += c0 - p2p_utility_cost(full, terms)
        saving = none["bill"][self.controlled_idx] - money["bill"][self.controlled_idx]
        self.sums["profit_usd"] += float(saving.sum()) / 100.0
        paid, kwh = p2p_consumer_price(money, terms)
        self.price_num += paid
        self.price_den += kwh
        self.sums["infeasible_trades"] += len(report.infeasible)
        self.sums["curtailed_kwh"] += float(np.sum(report.curtailed_kwh))
        self._physical(report.pf)

    def _finish(self, out: dict) -> dict:
        out["trade_success"] = self.successes / self.matched_steps if self.matched_steps \
            else math.nan
        return out


def make_recorder(kind: str, env, controlled):
    """The recorder of a task kind (``"curve"``, ``"p2p"``, ``"dlmp"``)."""
    return {"curve": CurveRecorder, "p2p": P2PRecorder, "dlmp": DLMPRecorder}[kind](
        env, controlled)
