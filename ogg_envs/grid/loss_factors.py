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

import weakref

import numpy as np

__all__ = ["marginal_loss_factors", "branch_loss_coefficients"]


def branch_loss_coefficients(grid, pf) -> np.ndarray:
    """``c_e`` (module docstring: kW of losses per kW more flowing through it) per topology
    branch, from a converged power flow ``pf`` that is the engine's last one. Two bulk reads
    (``Circuit.AllElementLosses``, ``PDElements.AllPowers``), gathered by a plan built once
    per feeder index."""
    if not pf.converged:
        raise ValueError("marginal loss factors need a converged power flow")
    plan = _plan(grid)
    dss = grid.dss
    losses = np.asarray(dss.Circuit.AllElementLosses())[0::2][plan["loss_at"]]  # kW
    pw = np.asarray(dss.PDElements.AllPowers())
    p1 = np.add.reduceat(pw[0::2][plan["conductors"]], plan["starts"])  # kW at terminal 1
    s2 = np.add.reduceat(pw[0::2][plan["conductors"]] ** 2 + pw[1::2][plan["conductors"]] ** 2,
                         plan["starts"]) * plan["phases"]  # n sum_k |S_k|^2
    n = plan["n_branches"]
    by = plan["branch_of"]
    loss, p, n_s2 = (np.bincount(by, w, minlength=n) for w in (losses, p1, s2))
    out = np.zeros(n)
    ok = n_s2 > 1e-9
    out[ok] = 2.0 * loss[ok] * p[ok] / n_s2[ok]
    return out


_PLANS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _plan(grid) -> dict:
    """Where each topology branch's elements sit in the two bulk reads: their losses in
    ``AllElementLosses`` and their first terminal's phase conductors in ``AllPowers``. Rebuilt
    when the grid re-indexes (an added element) or gets another topology."""
    cached = _PLANS.get(grid)
    if cached is not None and cached[0] is grid.branch_names and cached[1] is grid.topology:
        return cached[2]
    dss = grid.dss
    element = {n.lower(): k for k, n in enumerate(dss.Circuit.AllElementNames())}
    pd_names = [n.lower() for n in dss.PDElements.AllNames()]
    nterm = np.asarray(dss.PDElements.AllNumTerminals(), dtype=np.int64)
    ncond = np.asarray(dss.PDElements.AllNumConductors(), dtype=np.int64)
    nphase = np.asarray(dss.PDElements.AllNumPhases(), dtype=np.int64)
    first = np.concatenate([[0], np.cumsum(nterm * ncond)[:-1]])
    pd = {n: k for k, n in enumerate(pd_names)}
    branch_of, loss_at, conductors, starts, phases = [], [], [], [], []
    for e, br in enumerate(grid.topology.branches):
        for name in br.elements:
            k = pd[name]
            branch_of.append(e)
            loss_at.append(element[name])
            starts.append(len(conductors))
            conductors.extend(range(first[k], first[k] + nphase[k]))
            phases.append(nphase[k])
    plan = {"branch_of": np.array(branch_of, dtype=np.int64),
            "loss_at": np.array(loss_at, dtype=np.int64),
            "conductors": np.array(conductors, dtype=np.int64),
            "starts": np.array(starts, dtype=np.int64),
            "phases": np.array(phases, dtype=float), "n_branches": len(grid.topology.branches)}
    _PLANS[grid] = (grid.branch_names, grid.topology, plan)
    return plan


def marginal_loss_factors(grid, pf) -> np.ndarray:
    """``dL/dp_b`` (kW/kW) for every bus of ``grid.topology.buses``: see the module docstring."""
    coef = branch_loss_coefficients(grid, pf)
    # H[e, b] = -1 where b is below e, so coef @ H is minus the sum over the path of b.
    return np.asarray(coef @ grid.topology.H_sparse).ravel()
