"""Marginal loss factors of a solved feeder: the change of the total losses per kW injected.

The markets clear on a lossless model (``Topology``: flows ``H @ p``); OpenDSS's AC solution
has losses. Linearised around a solved operating point, the losses are

    L(p) ≈ L0 + sum_b lf_b (p_b - p0_b),      lf_b = dL / dp_b   (kW per kW, p = injection)

and ``lf`` is what a loss-aware market needs (``market.set_losses(lf, L0, p0)``, see
``ogg_envs.api.LossModel``): the balance ``sum_b p_b = L(p)`` and a nodal price with a loss
component ``-lf_b * energy``. An injection
at bus b relieves every branch on its path to the source, so ``lf_b <= 0`` downstream of
forward flows and ``lf_root = 0``.

Each phase of a branch loses ``r |S_k|^2 / V^2`` (phase k's apparent power ``S_k`` at the
source-side terminal); with the branch's losses ``loss_e`` shared over its n phases in that
proportion, a kW more through the branch, a third of it on each phase of a three-phase one,
adds ``c_e = 2 loss_e P_e / (n sum_k |S_k|^2)`` kW of losses (``2 loss_e P_e / S_e^2`` on a
balanced branch; small where the phases' flows cancel, as they do next to a generator on an
unbalanced feeder). An injection at b takes a kW off every branch above b::

    lf_b = - sum_{e on the path of b} c_e

with ``P_e`` OpenDSS's flow at the branch's source-side terminal and ``loss_e`` its losses
(parallel elements of one branch summed). This neglects the voltage dependence of the
loads and of the regulators: against finite
differences of OpenDSS's own losses (a 10 kW unity-power-factor injection at every third bus,
taps held) it is within 0.014 kW/kW on IEEE 34 (factors up to 0.27 there) and 0.012 on IEEE 37
(up to 0.12); ``tests/test_loss_factors.py`` holds it to 0.02.

Example::

    pf = grid.solve()
    lf = marginal_loss_factors(grid, pf)        # per grid.topology.buses
"""

from __future__ import annotations

import numpy as np

__all__ = ["marginal_loss_factors", "branch_loss_coefficients"]


def branch_loss_coefficients(grid, pf) -> np.ndarray:
    """``c_e`` (module docstring: kW of losses per kW more flowing through it) per topology
    branch, from a converged power flow ``pf`` that is the engine's last one."""
    if not pf.converged:
        raise ValueError("marginal loss factors need a converged power flow")
    dss = grid.dss
    names = [n.lower() for n in dss.Circuit.AllElementNames()]
    losses = np.asarray(dss.Circuit.AllElementLosses())[0::2]  # kW per element
    loss_of = dict(zip(names, losses.tolist()))
    phase_s2 = _phase_apparent_power_squared(dss)
    p_of = pf.line_flows_kw
    topo = grid.topology
    out = np.zeros(len(topo.branches))
    for k, br in enumerate(topo.branches):
        p = sum(p_of[e] for e in br.elements)
        n_s2 = sum(phase_s2[e] for e in br.elements)
        if n_s2 > 1e-9:
            out[k] = 2.0 * sum(loss_of.get(e, 0.0) for e in br.elements) * p / n_s2
    return out


def _phase_apparent_power_squared(dss) -> dict[str, float]:
    """``n sum_k |S_k|^2`` (kVA^2) of every power-delivery element at its first terminal,
    from one bulk read (``PDElements.AllPowers``: kW, kvar per conductor, terminal by
    terminal)."""
    names = [n.lower() for n in dss.PDElements.AllNames()]
    nterm = np.asarray(dss.PDElements.AllNumTerminals(), dtype=np.int64)
    ncond = np.asarray(dss.PDElements.AllNumConductors(), dtype=np.int64)
    nphase = np.asarray(dss.PDElements.AllNumPhases(), dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(nterm * ncond)[:-1]])
    pw = np.asarray(dss.PDElements.AllPowers())
    s2 = pw[0::2] ** 2 + pw[1::2] ** 2
    return {name: float(n * s2[a:a + n].sum())
            for name, a, n in zip(names, starts.tolist(), nphase.tolist())}


def marginal_loss_factors(grid, pf) -> np.ndarray:
    """``dL/dp_b`` (kW/kW) for every bus of ``grid.topology.buses``: see the module docstring."""
    coef = branch_loss_coefficients(grid, pf)
    # H[e, b] = -1 where b is below e, so coef @ H is minus the sum over the path of b.
    return np.asarray(coef @ grid.topology.H_sparse).ravel()
