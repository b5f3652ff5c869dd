"""Per-unit series impedances, regulator ratios and load power factors of a feeder's branches:
what a LinDistFlow market (``ogg_envs.markets.lindistflow``) needs to know of the grid.

``feeder_impedances(grid)`` reads an ``OpenDSSGrid`` (through its public attributes and its
engine ``grid.dss``) and returns a ``FeederImpedances``: per branch of ``grid.topology`` (its
branch order) the balanced, positive-sequence equivalent ``r_pu``, ``x_pu`` and the voltage
ratio ``ratio`` (child over parent, per unit), and per bus of the topology the loads'
``tan(phi)`` (kvar per kW) and the shunt capacitors' kvar.

Per-unit system
---------------
Power on ``s_base_kva`` (three-phase; default 1,000 kVA), voltages on each bus's own base
(``grid.bus_kv_ln``; line-to-line on a delta feeder, which has the same ratios). ``r_pu`` and
``x_pu`` are defined by the drop they cause in the linearised DistFlow equation
``v_child = ratio^2 (v_parent - 2 (r_pu P + x_pu Q))`` with ``v`` the squared voltage magnitude
(pu) and ``P``, ``Q`` the branch's three-phase flows in pu of ``s_base_kva``, when the flow is
shared equally by the branch's phases:

* a **line** of ``n`` phases: its series impedance matrix ``Z`` (ohm) is the inverse of the
  off-diagonal block of ``CktElement.YPrim`` (shunt admittances sit on the diagonal blocks
  only). With balanced currents on its phases (phase b lagging a by 120 degrees, c by 240)
  phase k sees the drop ``z_k I_k`` with ``z_k = sum_m Z[k, m] I_m / I_k``; ``z`` is their
  mean (``Zs - Zm`` for a three-phase line, the self impedance for a single-phase one) and
  ``r + j x = z s_base / (n V_ln^2)``, each phase carrying ``P / n``. Lines in parallel in one
  branch combine as parallel admittances.
* a **transformer** (or a bank of single-phase units, e.g. a regulator bank): its ``%R``
  (both windings) and ``%X`` (``XHL``) on the kVA of its units together:
  ``r + j x = (%R + j %X) / 100 * s_base / sum(kVA)``. A line in the same branch as
  transformers (the phase-B jumper across IEEE 37's open-delta regulator bank) is left out.

Voltage ratios
--------------
A branch of lines has ratio 1. A branch of transformers has the mean over its units of
``(tap2 kV2 / (tap1 kV1)) * (base1 / base2)``, with the taps as they stand in the engine now:
after a solve, regulators' taps are where their controls moved them. Call
``feeder_impedances`` after ``grid.solve()`` to hold the regulators at that operating point;
``regulated`` names the branches whose transformers have a ``RegControl``;
``regulator_ratios(grid)`` reads the ratios alone again (cheaply) after the taps moved. The
per-phase taps of a regulator bank differ on an unbalanced feeder: the balanced model uses
their mean.

What is left out
----------------
Line charging (shunt capacitance), the source's own impedance (``source_pu`` is the source's
set point, ``Vsources.PU``), and the voltage dependence of loads and capacitors (a capacitor
counts with its nominal kvar times the share of its steps in service).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["FeederImpedances", "feeder_impedances", "regulator_ratios"]

# Balanced currents: phase p (1, 2, 3) carries I * _ALPHA**(-(p - 1)) (b lags a by 120 deg).
_ALPHA = np.exp(2j * np.pi / 3)


@dataclass(frozen=True)
class FeederImpedances:
    """The LinDistFlow data of a feeder (see the module docstring). Per-branch arrays follow
    ``branches`` (the topology's branch order), per-bus arrays ``buses``."""

    branches: tuple[str, ...]
    buses: tuple[str, ...]
    r_pu: np.ndarray
    x_pu: np.ndarray
    ratio: np.ndarray
    load_tan_phi: np.ndarray  # kvar per kW of each bus's loads (0 where none)
    shunt_kvar: np.ndarray  # capacitor kvar per bus at nominal voltage
    source_pu: float
    s_base_kva: float
    regulated: tuple[str, ...]  # branches holding voltage regulators

    def market_args(self) -> dict:
        """The keyword arguments ``LinDistFlowMarket`` takes for this feeder."""
        return dict(r_pu=self.r_pu, x_pu=self.x_pu, ratios=self.ratio,
                    load_tan_phi=self.load_tan_phi, shunt_kvar=self.shunt_kvar,
                    source_pu=self.source_pu, s_base_kva=self.s_base_kva)


def feeder_impedances(grid, s_base_kva: float = 1000.0) -> FeederImpedances:
    """The per-unit LinDistFlow data of ``grid`` (an ``OpenDSSGrid``) on its topology."""
    if not (math.isfinite(s_base_kva) and s_base_kva > 0):
        raise ValueError(f"s_base_kva must be finite and > 0, got {s_base_kva!r}")
    topo = grid.topology
    regulators = _regulated_transformers(grid.dss)
    E = len(topo.branches)
    r, x, ratio = np.zeros(E), np.zeros(E), np.ones(E)
    regulated = []
    for e, br in enumerate(topo.branches):
        xfs = [el for el in br.elements if el.startswith("transformer.")]
        if xfs:
            z, ratio[e] = _transformer_bank(grid, xfs, br.parent, br.child)
            z = z * s_base_kva
            if any(el.split(".", 1)[1] in regulators for el in xfs):
                regulated.append(br.name)
        else:
            z = _parallel([_line_z_pu(grid, el, br.parent, s_base_kva) for el in br.elements])
        r[e], x[e] = z.real, z.imag
    B = len(topo.buses)
    kw, kvar = np.zeros(B), np.zeros(B)
    for name, i in zip(grid.load_names, range(len(grid.load_names))):
        b = topo.bus_index[grid.load_bus[name]]
        kw[b] += grid.base_load_kw[i]
        kvar[b] += grid.base_load_kvar[i]
    tan_phi = np.divide(kvar, kw, out=np.zeros(B), where=kw > 0)
    return FeederImpedances(
        branches=tuple(br.name for br in topo.branches), buses=tuple(topo.buses), r_pu=r,
        x_pu=x, ratio=ratio, load_tan_phi=tan_phi, shunt_kvar=_capacitor_kvar(grid),
        source_pu=float(grid.dss.Vsources.PU()) if grid.dss.Vsources.Count() else 1.0,
        s_base_kva=float(s_base_kva), regulated=tuple(regulated))


def regulator_ratios(grid) -> np.ndarray:
    """Every branch's voltage ratio (``FeederImpedances.ratio``) with the taps as they stand
    in ``grid``'s engine now, in topology branch order."""
    topo = grid.topology
    ratio = np.ones(len(topo.branches))
    for e, br in enumerate(topo.branches):
        xfs = [el for el in br.elements if el.startswith("transformer.")]
        if xfs:
            ratio[e] = _transformer_bank(grid, xfs, br.parent, br.child)[1]
    return ratio


def _line_z_pu(grid, element: str, bus: str, s_base_kva: float) -> complex:
    """A line's (or series reactor's) balanced per-phase impedance in the model's pu."""
    dss = grid.dss
    dss.Circuit.SetActiveElement(element)
    el = dss.CktElement
    n = el.NumPhases()
    y = np.asarray(el.YPrim(), dtype=float).view(complex)
    size = int(round(math.sqrt(y.size)))
    Y = y.reshape(size, size)
    nc = el.NumConductors()
    Z = np.linalg.inv(-Y[:n, nc:nc + n])  # series impedance of the phase conductors (ohm)
    phases = np.array(el.NodeOrder()[:n])
    shift = _ALPHA ** (-(phases[None, :] - phases[:, None]))  # I_m / I_k, balanced currents
    z = complex(np.mean((Z * shift).sum(axis=1)))
    kv_ln = grid.bus_kv_ln[bus]
    return z * s_base_kva / (1000.0 * n * kv_ln ** 2)


def _transformer_bank(grid, elements: list[str], parent: str, child: str
                      ) -> tuple[complex, float]:
    """Per kVA of s_base: the bank's (R + jX)/100 over its total kVA; and its mean voltage
    ratio (child over parent, pu), winding 1 taken on the parent's side."""
    t = grid.dss.Transformers
    total_kva, z_kva, ratios = 0.0, 0.0j, []
    for el in elements:
        t.Name(el.split(".", 1)[1])
        t.Wdg(1)
        kva, kv1, tap1, r_pct = t.kVA(), t.kV(), t.Tap(), t.R()
        bus1 = _bus_of(grid, el, 0)
        t.Wdg(2)
        kv2, tap2, r_pct = t.kV(), t.Tap(), r_pct + t.R()
        z_kva += complex(r_pct, t.Xhl()) / 100.0 * kva  # sum of per-unit z times kVA
        total_kva += kva
        ratio = (tap2 * kv2) / (tap1 * kv1) * grid.bus_kv_ln[parent] / grid.bus_kv_ln[child]
        ratios.append(ratio if bus1 == parent else 1.0 / ratio)
    # Units in parallel, each z_u on its own kVA: the bank's z on sum(kVA) is the kVA-weighted
    # mean of theirs (the same z for every unit, as in a bank, gives that z).
    return z_kva / total_kva / total_kva, float(np.mean(ratios))


def _bus_of(grid, element: str, terminal: int) -> str:
    grid.dss.Circuit.SetActiveElement(element)
    return grid.dss.CktElement.BusNames()[terminal].split(".")[0].lower()


def _parallel(zs: list[complex]) -> complex:
    if len(zs) == 1:
        return zs[0]
    return 1.0 / sum(1.0 / z for z in zs)


def _regulated_transformers(dss) -> set[str]:
    out = set()
    if dss.RegControls.Count():
        for name in dss.RegControls.AllNames():
            dss.RegControls.Name(name)
            out.add(dss.RegControls.Transformer().lower())
    return out


def _capacitor_kvar(grid) -> np.ndarray:
    """Nominal kvar of the shunt capacitors in service, per topology bus."""
    dss, topo = grid.dss, grid.topology
    out = np.zeros(len(topo.buses))
    if not dss.Capacitors.Count():
        return out
    for name in dss.Capacitors.AllNames():
        dss.Capacitors.Name(name)
        if not dss.CktElement.Enabled():
            continue
        states = list(dss.Capacitors.States()) or [1]
        bus = dss.CktElement.BusNames()[0].split(".")[0].lower()
        if bus in topo.bus_index:
            out[topo.bus_index[bus]] += dss.Capacitors.kvar() * sum(states) / len(states)
    return out
