"""Leaderboard metrics: the formulas (pure functions) and the per-task recorders.

``docs/leaderboard.md`` defines every metric with its formula; this module is that definition
in code. Money is in ¢ inside the formulas and reported in dollars (``_usd``); energy in kWh
(every grid step is one hour, so kW held for the step are kWh).

A *recorder* watches one evaluation run of a task (one seed, one or more consecutive
episodes): the runner calls ``before_step()`` before every ``env.step`` and
``after_step(rewards, infos)`` after it, and ``result()`` at the end gives the seed's metrics.
Recorders read the environment's public state (``last_clearing``, ``last_power_flow``, the
participants' records, ``truthful_bids()``) but never change it; the welfare-optimal reference
is cleared on a separate copy of the market. A task's recorder is its environment's
``EnvSpec.recorder`` (``make_recorder(spec, env, controlled)``): ``"curve"``, ``"dlmp"``,
``"p2p"`` (``RECORDERS``) or a class with this interface; the class attribute ``metrics``
lists the metrics it reports (the columns of its tasks' tables).
"""

from __future__ import annotations

import copy
import math

import numpy as np
from scipy import stats

from ogg_envs import economics

__all__ = [
    "METRICS", "RECORDERS", "mean_ci", "efficiency", "dlmp_true_welfare",
    "dlmp_congestion_rent", "p2p_utility_cost", "p2p_consumer_price", "CurveRecorder",
    "P2PRecorder", "DLMPRecorder", "recorder_class", "make_recorder",
]

# Every metric the leaderboard can report, in table order: name -> (label, unit). Which of them
# a task reports is its recorder's ``metrics`` (a metric that does not apply is left empty).
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


# ---------------------------------------------------------------------- DLMP market
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
    served = float(np.sum(demand_kw) - np.sum(shed_kw))
    true_cost = float(np.sum(economics.cost(quantities, cost_a, cost_b)))
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
def _truth(participants) -> tuple:
    """The participants' truth and limit this hour, in the argument order of
    ``economics.profits`` / ``welfare`` after the prices and quantities (``a, b, vmax, vmin,
    q_now``), from ``economics.truth_arrays`` (what the environments' ``truth`` is)."""
    t = economics.truth_arrays(participants)
    return t["a"], t["b"], t["vmax"], t["vmin"], t["q_now"]


class _Recorder:
    """Accumulates one seed's run (one or more episodes); see the module docstring.

    ``metrics``: the metrics the recorder reports (table order), the columns of its tasks.
    """

    metrics: list[str] = ["efficiency", "welfare_loss_usd", "profit_usd", "return",
                          "consumer_price"]

    def __init__(self, env, controlled: list[str]):
        self.env = env
        self.controlled = list(controlled)
        self.controlled_idx = [env.index[a] for a in self.controlled]
        self.episodes = 0
        self.s_real = 0.0  # realised surplus, ¢
        self.s_ref = 0.0  # surplus of the truthful welfare-optimal dispatch, ¢
        self.sums = dict.fromkeys(self.metrics, 0.0)
        self.price_num = self.price_den = 0.0

    def start_episode(self) -> None:
        self.episodes += 1

    def _final_round(self) -> bool:
        """Whether the coming step's clearing is the hour's final one (dispatched)."""
        return self.env.round == self.env.market_rounds - 1

    @staticmethod
    def _grid_step(infos: dict) -> bool:
        return bool(infos) and bool(next(iter(infos.values())).get("grid_step"))

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
    """Curve markets (topology-power-v0 and any env registered with ``recorder="curve"``): the
    final clearing of every hour against the truthful optimum.

    Reads ``env.truthful_bids()``, ``env.last_clearing`` (only the fields every
    ``ogg_envs.api.Clearing`` has: ``participant_prices``, ``participant_quantities``,
    ``bids``, ``congestion_rent``, ``total_shed_kw``, ``total_curtailed_kw``; so a user's
    market, e.g. pay-as-bid, is measured the same way), ``env.last_power_flow``,
    ``env.is_supply`` and the participants' records. Consumers pay their price for what they
    are served. The true surplus and profits are ``ogg_envs.economics.welfare`` and
    ``profits`` (what ``env.true_welfare`` / ``env.true_profits`` compute) on the participants'
    truth and limits of the hour, taken before the hour's final round: after that round the
    environment has already opened the next hour (new loads).
    """

    metrics = ["efficiency", "welfare_loss_usd", "profit_usd", "return", "consumer_price",
               "congestion_rent_usd", "voltage_violations", "overloads", "nonconverged",
               "shed_kwh", "curtailed_kwh"]

    def __init__(self, env, controlled):
        super().__init__(env, controlled)
        self.ref_market = copy.deepcopy(env.market)  # a separate solver for the reference
        self.ref_solves = 0
        self._hour = None

    def before_step(self) -> None:
        if self._final_round():
            env = self.env
            self._hour = (_truth(env.participants), env.truthful_bids())

    def after_step(self, rewards: dict, infos: dict) -> None:
        self._returns(rewards)
        if not self._grid_step(infos):
            return
        env = self.env
        truth, truthful = self._hour
        res = env.last_clearing
        q, p = res.participant_quantities, res.participant_prices
        if res.bids is not None and np.array_equal(res.bids, truthful):
            ref = res  # the same bids are the same clearing problem
        else:
            ref = self.ref_market.clear(truthful)
            self.ref_solves += 1
        sup = env.is_supply
        self.s_real += economics.welfare(sup, q, *truth)
        self.s_ref += economics.welfare(sup, ref.participant_quantities, *truth)
        profits = economics.profits(sup, p, q, *truth)
        self.sums["profit_usd"] += float(profits[self.controlled_idx].sum()) / 100.0
        self.price_num += float(p[~sup] @ q[~sup])  # what the consumers pay
        self.price_den += float(q[~sup].sum())
        self.sums["congestion_rent_usd"] += res.congestion_rent / 100.0
        self.sums["shed_kwh"] += float(res.total_shed_kw)
        self.sums["curtailed_kwh"] += float(res.total_curtailed_kw)
        self._physical(env.last_power_flow)


class DLMPRecorder(_Recorder):
    """dlmp-v0 (``recorder="dlmp"``): the final DSO clearing of every hour against the truthful
    optimum, which is cleared on a copy of the market with ``env.context()`` of the hour and
    ``env.truthful_bids()`` (or is the realised clearing itself when its ``bids`` are the
    truthful ones)."""

    metrics = ["efficiency", "welfare_loss_usd", "profit_usd", "return", "consumer_price",
               "avg_dlmp", "congestion_rent_usd", "voltage_violations", "overloads",
               "nonconverged", "shed_kwh", "curtailed_kwh"]

    def __init__(self, env, controlled):
        super().__init__(env, controlled)
        self.ref_market = copy.deepcopy(env.market)
        self.is_gen = np.asarray(env.is_generator, dtype=bool)
        self.res_bus = np.array([env.topology.bus_index[p.bus] for p in env.participants],
                                dtype=np.int64)
        self.ref_solves = 0
        self.dlmp_sum = 0.0
        self.hours = 0
        self._hour = None

    def before_step(self) -> None:
        if self._final_round():
            env = self.env
            a, b, *_ = _truth(env.participants)
            self._hour = dict(context=copy.deepcopy(env.context()),
                              truthful=np.array(env.truthful_bids(), dtype=float),
                              cost_a=a, cost_b=b)

    def after_step(self, rewards: dict, infos: dict) -> None:
        self._returns(rewards)
        if not self._grid_step(infos):
            return
        env, h = self.env, self._hour
        ctx = h["context"]
        res = env.last_clearing
        if res.bids is not None and np.array_equal(res.bids, h["truthful"]):
            ref = res  # the same offers are the same OPF
        else:
            ref = self.ref_market.clear(h["truthful"], ctx)
            self.ref_solves += 1
        demand = np.asarray(ctx.demand_kw, dtype=float)
        pv = np.zeros_like(demand) if ctx.pv_kw is None else np.asarray(ctx.pv_kw, dtype=float)
        cap = env.rules["price_cap"]
        for target, r in (("real", res), ("ref", ref)):
            w = dlmp_true_welfare(demand_kw=demand, shed_kw=r.shed_kw, source_kw=r.source_kw,
                                  lmp=ctx.source_price, quantities=r.participant_quantities,
                                  cost_a=h["cost_a"], cost_b=h["cost_b"], value_of_load=cap)
            if target == "real":
                self.s_real += w
            else:
                self.s_ref += w
        q = res.participant_quantities
        profits = res.participant_prices * q - economics.cost(q, h["cost_a"], h["cost_b"])
        self.sums["profit_usd"] += float(profits[self.controlled_idx].sum()) / 100.0
        B = len(res.dlmp)
        bus = self.res_bus
        dr = np.bincount(bus[~self.is_gen], q[~self.is_gen], minlength=B)
        gen = np.bincount(bus[self.is_gen], q[self.is_gen], minlength=B)
        served = demand - res.shed_kw - dr
        withdrawal = served - gen - (pv - res.curtailed_kw)
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
    """p2p-v0 (``recorder="p2p"``): every hour's settlement against the same hour with every
    pair trading fully. Reads ``env.market`` (roles, pairs, tranche, steps), ``env.mode``,
    ``env.fixed_kwh``, ``env.realised_export``, ``env.terms``, ``env.last_settlement`` and
    ``env.last_report``."""

    metrics = ["efficiency", "welfare_loss_usd", "profit_usd", "return", "consumer_price",
               "trade_success", "voltage_violations", "overloads", "nonconverged",
               "infeasible_trades", "curtailed_kwh"]

    def __init__(self, env, controlled):
        super().__init__(env, controlled)
        self.matched_steps = 0
        self.successes = 0
        self._hour = None

    def before_step(self) -> None:
        from ogg_envs.markets.p2p import PRODUCER

        if self._final_round():
            env, mk = self.env, self.env.market
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
        if not self._grid_step(infos):
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


# The recorders by the names a spec's ``recorder`` may give (``ogg_envs.register``).
RECORDERS = {"curve": CurveRecorder, "dlmp": DLMPRecorder, "p2p": P2PRecorder}


def recorder_class(spec_or_name) -> type:
    """The recorder class of an ``EnvSpec`` (its ``recorder``), a registered environment id, a
    recorder name (``RECORDERS``) or a recorder class itself."""
    from ogg_envs.registry import EnvSpec, spec

    rec = spec_or_name
    if isinstance(rec, EnvSpec):
        rec = rec.recorder
    elif isinstance(rec, str) and rec not in RECORDERS and "/" in rec:
        rec = spec(rec).recorder
    if isinstance(rec, str):
        if rec not in RECORDERS:
            raise ValueError(f"unknown recorder {rec!r}; known: {', '.join(RECORDERS)} (or a "
                             "recorder class)")
        return RECORDERS[rec]
    if isinstance(rec, type):
        return rec
    raise TypeError(f"not a recorder: {spec_or_name!r}")


def make_recorder(spec_or_name, env, controlled):
    """The recorder of a task's environment (``recorder_class(spec_or_name)``) watching
    ``env`` for the ``controlled`` agents."""
    return recorder_class(spec_or_name)(env, controlled)
