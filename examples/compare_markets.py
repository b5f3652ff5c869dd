"""Peer-to-peer or DLMP? One feeder, one set of participants, one day, three markets.

The paper's motivating question, asked with the toolkit: the IEEE 34 feeder with the
topology-power scenario's line limits, and one set of participants (the substation at the
source, four distributed generators along the main path, an inflexible consumer at every load
bus; ``ogg_envs.simulation.standard_participants``), everyone bidding its true curve. The same
bids are cleared by

* the **curve market** (welfare-maximising, nodal prices under the line limits),
* the **DSO's DLMP market** (the generators' curves as 20-block offers, the consumers as demand,
  the substation's offer as the source price),
* a **P2P market** (a market maker pairs each generator with the consumer it can serve most;
  a pair trades when the generator's ask is at most the consumer's bid; the rest comes from the
  substation, and nobody looks at the lines),

each in a ``ComposedEnv`` driven by ``Simulation`` for 24 hours, and OpenDSS solves every hour.
It prints, side by side: the average consumer price, the true welfare, the market's congested
branch-hours, the branch-hours whose AC flow exceeds its limit, losses and substation energy.

    python examples/compare_markets.py
"""

from __future__ import annotations

import numpy as np

from ogg_envs.api import Clearing, Market, MarketContext
from ogg_envs.grid import OpenDSSGrid
from ogg_envs.markets.curve_market import CurveMarket
from ogg_envs.markets.dlmp import DLMPMarket, Resource
from ogg_envs.markets.p2p import CONSUMER, PRODUCER, P2PMarket, P2PTerms
from ogg_envs.simulation import ComposedEnv, Simulation, standard_participants

LIMITS = {"852r-832": 800.0, "832-888": 350.0}  # the topology-power scenario's
PRICE_CAP = 20.0


class _OnCurves(Market):
    """Shared by the adapters below: the curve bids of one participant set, by role."""

    def __init__(self, participants):
        self.names = [p.name for p in participants]
        self.price_cap = PRICE_CAP
        self.sup = np.array([p.group == "supplier" for p in participants])
        self.con = np.array([p.group == "consumer" for p in participants])
        self.sub = [p.group for p in participants].index("substation")

    def _clearing(self, bids, price, q, inner, congested=()) -> Clearing:
        return Clearing(participants=tuple(self.names), participant_prices=price,
                        participant_quantities=q, congested=list(congested),
                        total_shed_kw=inner.total_shed_kw, welfare=inner.welfare,
                        feasible=inner.feasible, solver=inner.solver, bids=np.array(bids))


class DLMPOnCurves(_OnCurves):
    """The DSO's DC OPF: generators' curves as block offers (the curve's average over each
    of ``BLOCKS`` equal blocks), consumers as demand."""

    BLOCKS = 20

    def __init__(self, topology, participants):
        super().__init__(participants)
        self.bus = np.array([topology.bus_index[p.bus] for p in participants])
        gens = [Resource(p.name, p.bus, "generator") for p in participants if p.group == "supplier"]
        self.dlmp = DLMPMarket(topology, gens, n_blocks=self.BLOCKS, price_cap=PRICE_CAP,
                               load_buses=[p.bus for p in participants if p.group == "consumer"])
        self.dlmp.set_limits(LIMITS)
        self.n_bus = len(topology.buses)

    def reset(self) -> None:
        self.dlmp.reset()

    def clear(self, bids, context=None) -> Clearing:
        bids = np.asarray(bids, dtype=float)
        p_max, p_min, q_max, _ = bids[self.sup].T
        mid = (np.arange(self.BLOCKS) + 0.5) / self.BLOCKS  # block averages of the curve
        offers = p_min[:, None] + (p_max - p_min)[:, None] * mid[None, :]
        demand = np.bincount(self.bus[self.con], bids[self.con, 2], self.n_bus)
        c = self.dlmp.clear(offers, MarketContext(demand_kw=demand, capacity_kw=q_max,
                                                  source_price=bids[self.sub, 1]))
        q = np.zeros(len(self.names))
        q[self.sup] = c.participant_quantities
        served = 1.0 - np.divide(c.shed_kw, demand, out=np.zeros(self.n_bus), where=demand > 0)
        q[self.con] = bids[self.con, 2] * served[self.bus[self.con]]
        q[self.sub] = max(c.source_kw, 0.0)
        return self._clearing(bids, c.dlmp[self.bus], q, c, c.congested)


class P2POnCurves(_OnCurves):
    """Bilateral trades between generators and consumers (max-weight market maker, one
    negotiation step, price arms every 0.5 ¢/kWh); the substation supplies the rest."""

    ARMS = tuple(np.arange(2.0, 20.01, 0.5))

    def __init__(self, topology, participants):
        super().__init__(participants)
        self.traders = np.flatnonzero(self.sup | self.con)
        self.p2p = P2PMarket(len(self.traders), P2PTerms(
            arms=self.ARMS, retail_price=PRICE_CAP, feed_in_price=0.0, imbalance_price=PRICE_CAP,
            c_service=0.0, c_lose=0.0), steps=1, matching="max_weight")

    def reset(self) -> None:
        self.p2p.reset()

    def clear(self, bids, context=None) -> Clearing:
        full = np.asarray(bids, dtype=float)
        sub_price = float(full[self.sub, 1])
        bids = full[self.traders]
        is_sup = self.sup[self.traders]
        roles = np.where(is_sup, PRODUCER, CONSUMER)
        size = bids[:, 2]
        self.p2p.match(roles, (size * is_sup)[None, :], (size * ~is_sup)[None, :], None)
        mk = self.p2p
        mk.open_grid_step(np.minimum(size[mk.producers], size[mk.consumers]))
        arms = np.asarray(self.ARMS)
        ask = np.searchsorted(arms, bids[:, 1] - 1e-9)  # sellers: lowest arm >= marginal cost
        offer = np.searchsorted(arms, bids[:, 0] + 1e-9) - 1  # buyers: highest arm <= value
        c = mk.clear(np.clip(np.where(is_sup, ask, offer), 0, len(arms) - 1))
        traded = c.participant_quantities
        n = len(self.names)
        q, price = np.zeros(n), np.zeros(n)
        q[self.traders] = np.where(is_sup, traded, size)
        paid = np.where(traded > 0, c.participant_prices, 0.0)
        price[self.traders] = np.where(is_sup, paid, np.divide(
            paid * traded + sub_price * (size - traded), size, out=np.full(len(size), sub_price),
            where=size > 0))
        q[self.sub] = float(size[~is_sup].sum() - traded[is_sup].sum())
        price[self.sub] = sub_price
        return self._clearing(full, price, q, c)


class Tally:
    """Callback: the day's totals from each grid step (prices, welfare, congestion, AC)."""

    def __init__(self):
        self.paid = self.served = self.welfare = 0.0
        self.congested = self.overlimit = 0
        self.losses = self.substation = 0.0

    def on_grid_step(self, env, clearing, pf) -> None:
        q, price, con = clearing.participant_quantities, clearing.participant_prices, ~env.is_supply
        self.paid += float(price[con] @ q[con])
        self.served += float(q[con].sum())
        self.welfare += env.true_welfare(q) / 100.0
        self.congested += len(clearing.congested)
        for name, limit in LIMITS.items():
            branch = env.topology.branches[env.topology.branch_index[name]]
            flow = sum(pf.line_flows_kw[el] for el in branch.elements)
            self.overlimit += abs(flow) > limit * 1.005
        self.losses += pf.losses_kw
        self.substation += pf.substation_kw


def run_market(name: str, make_market, seed: int = 0) -> dict:
    grid = OpenDSSGrid.from_feeder("ieee34")
    env = ComposedEnv(grid, make_market, standard_participants(grid), horizon=24)
    tally = Tally()
    Simulation(env, [tally]).run(seed=seed)
    return {"market": name, "consumer price ¢/kWh": tally.paid / tally.served,
            "true welfare $": tally.welfare, "congested branch-h": tally.congested,
            "AC over limit branch-h": tally.overlimit, "losses kWh": tally.losses,
            "substation kWh": tally.substation}


def curve_market(topology, participants):
    market = CurveMarket(topology, participants, price_cap=PRICE_CAP)
    market.set_limits(LIMITS)
    return market


MARKETS = {"curve (nodal)": curve_market, "DLMP (DSO OPF)": DLMPOnCurves,
           "P2P (bilateral)": P2POnCurves}


def main() -> list[dict]:
    rows = [run_market(name, make) for name, make in MARKETS.items()]
    keys = list(rows[0])
    print(" | ".join(f"{k:>22s}" for k in keys))
    for r in rows:
        print(" | ".join(f"{r[k]:>22.2f}" if isinstance(r[k], float) else f"{r[k]!s:>22s}"
                         for k in keys))
    return rows


if __name__ == "__main__":
    main()
