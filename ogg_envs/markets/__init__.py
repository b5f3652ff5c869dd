"""The markets: plain objects implementing ``ogg_envs.api.Market`` (bids in, a ``Clearing`` out).

* ``curve_market.CurveMarket``: affine supply and demand curves cleared with nodal prices
  (``clear(bids, context=None) -> ClearingResult``);
* ``dlmp.DLMPMarket``: the DSO's DC OPF with DLMPs (``clear(offers, context) -> DLMPResult``,
  the context giving demand, capacities and the source price);
* ``lindistflow.LinDistFlowMarket``: the DSO's LinDistFlow OPF, DLMPs with a voltage component
  (the same offers and context as ``DLMPMarket``);
* ``p2p.P2PMarket``: peer-to-peer negotiation with a market maker (``clear(arms,
  context=None) -> P2PClearing``, one negotiation step).

All raise ``ogg_envs.api.InvalidBidError`` for a bid they cannot accept and
``ogg_envs.api.MarketClearingError`` when no solver clears an instance. The optimisation
markets state their problem once and call the solvers through ``ogg_envs.markets.solvers``
(one thin module per solver, one standard form and dual convention), except the DLMP market's
lossless clearing, which is exact by construction (``merit_order.MeritOrder``: the merit order
on a radial feeder with branch limits); every clearing is solved cold or from a start derived
from its own data, and ties are broken by documented rules, so
the same bids give the same clearing whatever the market cleared before. The classes are loaded
on first use (``from ogg_envs.markets import CurveMarket``), so importing one market does not
import the others' solvers.
"""

from __future__ import annotations

import importlib

from ..api import Clearing, InvalidBidError, Market, MarketClearingError, MarketContext

_LAZY = {"CurveMarket": "curve_market", "ClearingResult": "curve_market",
         "DLMPMarket": "dlmp", "DLMPResult": "dlmp",
         "LinDistFlowMarket": "lindistflow", "LinDistFlowResult": "lindistflow",
         "P2PMarket": "p2p", "P2PClearing": "p2p",
         "MeritOrder": "merit_order", "MeritOrderResult": "merit_order"}

__all__ = ["Market", "MarketContext", "Clearing", "InvalidBidError", "MarketClearingError",
           *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
