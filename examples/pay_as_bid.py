"""A new market in one short file: pay-as-bid on the topology-power feeder and participants.

Dispatch is the same network-constrained merit order as the curve market (the welfare-maximising
dispatch of the bids under the line limits), but nobody is paid the nodal price: every supplier
is paid its own offer for what it produces (the integral of its bid curve, so its price is the
average of its curve over its output), and consumers pay the average of those payments per kWh
they are served. Payments balance revenues (no congestion rent), and truthful bidding is no
longer a good idea: a supplier earns only what it asks.

The environment reuses topology-power-v0's participants, spaces, observations and rewards; only
the market changes. Registered, it works with every tool::

    python examples/pay_as_bid.py                       # PettingZoo's tests + one episode
    opengridgym run examples/pay-as-bid-v0 --import examples.pay_as_bid
    opengridgym leaderboard --import examples.pay_as_bid --tasks examples/pay-as-bid-congested-v0

``python -m`` or ``--import`` needs the repository root as the current directory.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import ogg_envs
from ogg_envs.api import Clearing, Market
from ogg_envs.envs import topology_power_v0
from ogg_envs.leaderboard.tasks import register_task
from ogg_envs.markets.curve_market import Bid, CurveMarket


class PayAsBidMarket(Market):
    """Merit-order dispatch under the line limits; suppliers paid as bid, consumers the
    average cost of supply."""

    def __init__(self, topology, participants, price_cap: float):
        self.dispatch = CurveMarket(topology, participants, price_cap=price_cap)
        self.names, self.price_cap = self.dispatch.names, price_cap
        self.is_supply = self.dispatch.is_supply

    def reset(self) -> None:
        self.dispatch.reset()

    def set_limits(self, limits_kw) -> None:
        self.dispatch.set_limits(limits_kw)

    def repair(self, bids, q_limit=None, **kw):
        """The curve market's rule (the same bids): an environment repairs or refuses with it."""
        return self.dispatch.repair(bids, q_limit, **kw)

    def clear(self, bids, context=None) -> Clearing:
        c = self.dispatch.clear(bids)
        q, sup = c.participant_quantities, self.is_supply
        asked = np.array([Bid.from_array(b).supply_cost(x) if s else 0.0
                          for b, x, s in zip(c.bids, q, sup)])  # ¢ each supplier is paid
        served = q[~sup].sum()
        average = asked.sum() / served if served > 0 else 0.0
        own = np.divide(asked, q, out=c.bids[:, 1].copy(), where=q > 1e-9)
        price = np.where(sup, own, average)
        value = np.array([Bid.from_array(b).demand_value(x) if not s else 0.0
                          for b, x, s in zip(c.bids, q, sup)])
        cs = float(value.sum() - average * served)
        return Clearing(participants=c.participants, participant_prices=price,
                        participant_quantities=q, congested=c.congested,
                        total_shed_kw=c.total_shed_kw, total_curtailed_kw=c.total_curtailed_kw,
                        consumer_surplus=cs, producer_surplus=0.0, congestion_rent=0.0,
                        welfare=cs, feasible=c.feasible, solver=c.solver, bids=c.bids)


class PayAsBidEnv(topology_power_v0.raw_env):
    metadata = dict(topology_power_v0.raw_env.metadata, name="pay_as_bid_v0")

    def make_market(self) -> Market:
        market = PayAsBidMarket(self.topology, self.participants, self.price_cap)
        market.set_limits(self.line_limits())
        return market


ogg_envs.register("examples/pay-as-bid-v0", PayAsBidEnv, codec="curve",
                  policies=ogg_envs.spec("opengridgym/topology-power-v0").policies,
                  baselines=("truthful", "markup"), recorder="curve",
                  summary="pay-as-bid merit order on the topology-power feeder (an example)",
                  replace=True)
register_task(Path(__file__).with_name("pay_as_bid_task.toml"),  # its leaderboard task
              sha256="2ccc2da92552fad5eb6fea74c8c682c63b5b17d479a4ac66e07ae9afa162bc25")

if __name__ == "__main__":
    from pettingzoo.test import api_test, parallel_api_test

    api_test(ogg_envs.make("examples/pay-as-bid-v0", horizon=2), num_cycles=20)
    parallel_api_test(ogg_envs.make("examples/pay-as-bid-v0", parallel=True, horizon=2))
    env = ogg_envs.make("examples/pay-as-bid-v0", parallel=True)
    env.reset(seed=0)
    while env.agents:
        _, rewards, *_ = env.step({a: env.action_space(a).sample() for a in env.agents})
    print("pay-as-bid: last clearing prices", np.round(env.last_clearing.participant_prices[:6], 2))
