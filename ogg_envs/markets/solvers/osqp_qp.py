"""OSQP (ADMM, sparse) on the package's standard form, polished to an exact solution.

ADMM only has to find the active set (coarse tolerance); polishing then solves the KKT system
of that active set. The answer is accepted only if the polished point is primal and dual
feasible to ``POLISH_TOL``: then it is the optimum. Each call sets OSQP up afresh and solves
cold (no warm start, OSQP's step size from its default), so nothing carries over between
calls. On degenerate instances polishing often fails; the caller falls back to another solver.
"""

from __future__ import annotations

import numpy as np
import osqp
import scipy.sparse as sp

from . import MarketClearingError, Solution

__all__ = ["solve", "POLISH_TOL"]

POLISH_TOL = 1e-6  # primal and dual residuals a polished solution must meet
_INF = 1e30  # OSQP's infinity


def solve(P, q, A, l, u, lb, ub) -> Solution:
    """Solve ``min 0.5 x'Px + q'x, l <= Ax <= u, lb <= x <= ub`` (``P`` may be ``None``).

    Raises ``MarketClearingError`` when the polished solution is not accurate to
    ``POLISH_TOL``."""
    A = sp.csc_matrix(A)
    m, n = A.shape
    P = sp.csc_matrix((n, n)) if P is None else sp.triu(sp.csc_matrix(P)).tocsc()
    A_full = sp.vstack([A, sp.eye(n, format="csc")]).tocsc()
    lo = np.clip(np.concatenate([l, lb]), -_INF, _INF)
    hi = np.clip(np.concatenate([u, ub]), -_INF, _INF)
    solver = osqp.OSQP()
    solver.setup(P, np.asarray(q, dtype=float), A_full, lo, hi, verbose=False, eps_abs=1e-2,
                 eps_rel=1e-2, polishing=True, warm_starting=False, max_iter=4000,
                 polish_refine_iter=3)
    res = solver.solve(raise_error=False)
    info = res.info
    if not (info.status_polish == 1 and info.prim_res < POLISH_TOL
            and info.dual_res < POLISH_TOL):
        raise MarketClearingError(f"OSQP: no accurate polished solution ({info.status}, "
                                  f"polish status {info.status_polish})")
    y = np.asarray(res.y)
    return Solution(x=np.asarray(res.x), y=y[:m], z=y[m:], status="optimal", solver="osqp",
                    iterations=int(info.iter))
