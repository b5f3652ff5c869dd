"""Feasibility of a P2P grid step's trades on the OpenDSS feeder (``TradeFeasibility``).

The P2P market (``ogg_envs.markets.p2p``) knows nothing of the feeder; this module is the grid
side of its use case. It works on a P2P market's pairs (``producers``/``consumers`` index
arrays) and each pair's energy, with prosumers at feeder buses.

Every prosumer's realised net injection goes into the OpenDSS feeder (consumers as extra load
at their bus, producers as a generator there) on top of the background loads, and one power
flow is solved; its violations are reported as they are. The physical footprint of a trade is
the producer's export: the consumer's demand is on the feeder whoever supplies it. So a trade
can only cause a violation that injections cause — a line overloaded by reverse flow (towards
the substation) or a bus above the voltage band — and it is **infeasible** when

1. it is implicated: with the radial sensitivities ``H``, a trade of ``q`` kWh from bus ``a``
   to bus ``b`` changes the branch flows by ``(H[:, a] − H[:, b]) q``; it is implicated in a
   reverse-flow overload when it moves energy upstream across that line, and in an
   over-voltage at a bus when it moves energy upstream across a line on that bus's path to
   the substation; and
2. the violation is the trades' doing: it disappears in the power flow solved again without the
   implicated trades' energy (a trade "pushes the feeder out of its limits" only if the feeder
   is within them without it). Violations already there without the trades blame no trade.

The second power flow is solved only when some trade is implicated. With ``curtail=True`` the
infeasible trades are cancelled: the producer's inverter is curtailed by the trade's energy
(spilled, not paid) and the consumer buys it from the utility at the retail price ``ub``; the
check is repeated on the curtailed state, up to ``max_rounds`` times.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["TradeFeasibility", "FeasibilityReport"]


@dataclass
class FeasibilityReport:
    """What the feeder says about a grid step's trades (pair indices into the pair arrays).

    ``pf_agreed``: the power flow with every agreed trade; ``pf``: after curtailment (the same
    object when nothing was curtailed). ``infeasible``: pairs implicated in a violation of
    ``pf_agreed`` (or, after a curtailment round, of the re-solved flow); ``curtailed``: pairs
    cancelled; ``curtailed_kwh``: per prosumer, PV spilled; ``reasons``: pair -> violations.
    """

    pf_agreed: object
    pf: object
    infeasible: np.ndarray
    curtailed: np.ndarray
    curtailed_kwh: np.ndarray
    reasons: dict[int, list[str]] = field(default_factory=dict)


class TradeFeasibility:
    """Checks a grid step's trades on the OpenDSS feeder (see the module docstring).

    Args:
        grid: the ``OpenDSSGrid`` (its topology gives the sensitivities). One generator
            ``ogg_p2p_<bus>`` is added at every prosumer bus; every prosumer bus must have loads
            (a consumer's withdrawal is spread over them in proportion to their base kW).
        buses: each prosumer's bus.
        max_injection_kw: each prosumer's largest possible injection (sizes the generators).
    """

    def __init__(self, grid, buses: list[str], max_injection_kw: np.ndarray):
        topo = grid.topology
        self.grid = grid
        self.buses = [str(b).lower() for b in buses]
        n = len(self.buses)
        for b in self.buses:
            if b not in grid.loads_at_bus:
                raise ValueError(f"prosumer bus {b!r} has no load; buses with loads: "
                                 f"{', '.join(sorted(grid.loads_at_bus))}")
        cap = np.asarray(max_injection_kw, dtype=float)
        distinct = sorted(set(self.buses))
        self.generators = {}
        for b in distinct:
            kva = 2.0 * max(float(cap[[i for i, x in enumerate(self.buses) if x == b]].sum()), 1.0)
            name = f"p2p_{b}"
            if f"ogg_{name}" not in grid.generator_names:
                grid.add_generator(name, b, 0.0, kva=kva)
            self.generators[b] = f"ogg_{name}"
        gens = list(self.generators.values())
        self._gen_names = gens
        self._gen_map = np.zeros((len(gens), n))  # prosumer injections -> bus generators
        for i, b in enumerate(self.buses):
            self._gen_map[gens.index(self.generators[b]), i] = 1.0
        self._load_map = np.zeros((len(grid.load_names), n))
        for i, b in enumerate(self.buses):
            idx = grid.loads_at_bus[b]
            base = grid.base_load_kw[idx]
            share = base / base.sum() if base.sum() > 0 else np.full(len(idx), 1 / len(idx))
            self._load_map[idx, i] = share
        self._H = topo.H_columns(self.buses)  # (branches, n), without the whole dense H
        self._branch_of = {el: e for e, br in enumerate(topo.branches) for el in br.elements}
        self._path = {}  # bus -> mask of the branches between it and the source (when used)
        self.topology = topo

    def _path_mask(self, bus: str):
        if bus not in self._path:
            if bus not in self.topology.bus_index:
                return None
            mask = np.zeros(len(self.topology.branches), dtype=bool)
            mask[[self.topology.branch_index[b] for b in self.topology.path_to_root(bus)]] = True
            self._path[bus] = mask
        return self._path[bus]

    def reset(self) -> None:
        """Reset the grid to its base case."""
        self.grid.reset()

    def solve(self, background_kw: np.ndarray, withdraw_kw: np.ndarray, inject_kw: np.ndarray):
        """One power flow: background loads + prosumer withdrawals and injections (kW)."""
        self.grid.set_loads_kw(background_kw + self._load_map @ withdraw_kw)
        self.grid.set_generators_kw(np.maximum(self._gen_map @ inject_kw, 0.0), self._gen_names)
        return self.grid.solve()

    def implicated(self, pf, producers: np.ndarray, consumers: np.ndarray,
                    energy: np.ndarray) -> dict[int, list[str]]:
        """Pairs (with energy > 0) implicated in an injection violation of ``pf``.

        Returns ``{pair: [violations]}`` with labels ``"overload <element>"`` (reverse-flow
        overloads) and ``"over-voltage <bus>"``.
        """
        reasons: dict[int, list[str]] = {}
        if len(producers) == 0 or not pf.converged or not (pf.thermal_overloads
                                                           or pf.voltage_violations):
            return reasons
        active = energy > 0
        S = self._H[:, producers] - self._H[:, consumers]  # flow change per kWh, (branches, m)

        def mark(hit: np.ndarray, label: str) -> None:
            for k in np.flatnonzero(hit & active):
                reasons.setdefault(int(k), []).append(label)

        for element in pf.thermal_overloads:
            e = self._branch_of.get(element)
            if e is not None and pf.line_flows_kw[element] < 0:  # reverse flow
                mark(S[e] < 0, f"overload {element}")
        high = self.grid.voltage_band[1]
        for bus, v in pf.bus_voltage_violations().items():
            mask = self._path_mask(bus)
            if v > high and mask is not None and mask.any():
                mark((S[mask] < 0).any(axis=0), f"over-voltage {bus}")
        return reasons

    def _violations(self, pf) -> set[str]:
        """Labels of every violation of ``pf`` (as in ``implicated``)."""
        high = self.grid.voltage_band[1]
        out = {f"overload {el}" for el in pf.thermal_overloads}
        for bus, v in pf.bus_voltage_violations().items():
            out.add(f"over-voltage {bus}" if v > high else f"under-voltage {bus}")
        return out

    def check(self, background_kw: np.ndarray, withdraw_kw: np.ndarray, inject_kw: np.ndarray,
              producers: np.ndarray, consumers: np.ndarray, energy: np.ndarray, *,
              curtail: bool = False, max_rounds: int = 5) -> FeasibilityReport:
        """Solve with the agreed trades, find the infeasible ones, optionally curtail them."""
        n, m = len(self.buses), len(producers)
        inject = np.asarray(inject_kw, dtype=float).copy()
        energy = np.asarray(energy, dtype=float).copy()
        pf = pf_agreed = self.solve(background_kw, withdraw_kw, inject)
        implicated = self.implicated(pf, producers, consumers, energy) if max_rounds > 0 else {}
        if not implicated:  # the usual hour: no trade to check (the loop below would find none)
            none = np.zeros(0, dtype=np.intp)
            return FeasibilityReport(pf, pf, none, none.copy(), np.zeros(n), {})
        infeasible = np.zeros(m, dtype=bool)
        curtailed = np.zeros(m, dtype=bool)
        spilled = np.zeros(n)
        reasons: dict[int, list[str]] = {}
        for round_ in range(max_rounds):
            if round_:  # (the first round's were found above)
                implicated = self.implicated(pf, producers, consumers, energy)
                if not implicated:
                    break
            cand = np.zeros(m, dtype=bool)
            cand[list(implicated)] = True
            cut = np.minimum(np.bincount(producers[cand], energy[cand], minlength=n), inject)
            pf_without = self.solve(background_kw, withdraw_kw, inject - cut)
            caused = self._violations(pf) - self._violations(pf_without)
            confirmed = {k: [w for w in why if w in caused] for k, why in implicated.items()}
            confirmed = {k: why for k, why in confirmed.items() if why}
            if not confirmed:
                break
            for k, why in confirmed.items():
                infeasible[k] = True
                reasons.setdefault(k, []).extend(w for w in why if w not in reasons.get(k, []))
            if not curtail:
                break
            todo = np.zeros(m, dtype=bool)
            todo[list(confirmed)] = True
            if not (todo == cand).all():
                cut = np.minimum(np.bincount(producers[todo], energy[todo], minlength=n), inject)
                pf_without = self.solve(background_kw, withdraw_kw, inject - cut)
            inject -= cut
            spilled += cut
            curtailed |= todo
            energy[todo] = 0.0
            pf = pf_without
        return FeasibilityReport(pf_agreed, pf, np.flatnonzero(infeasible),
                                 np.flatnonzero(curtailed), spilled, reasons)
