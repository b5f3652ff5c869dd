"""Clarabel (interior point, sparse) on the package's standard form.

An interior-point method has no warm start: every call is a fresh solve. It is robust on
degenerate and large sparse problems, to about 1e-8 (the tolerances set here), which is what
the markets use it for: the large-feeder fallback and the fallback of the dense fast path.
Equality rows and fixed variables become zero-cone rows; every finite side of the other rows
and bounds one non-negative-cone row.
"""

from __future__ import annotations

import clarabel
import numpy as np
import scipy.sparse as sp

from . import MarketClearingError, Solution

__all__ = ["solve"]

TOL = 1e-8  # Clarabel's gap and feasibility tolerances


def solve(P, q, A, l, u, lb, ub) -> Solution:
    """Solve ``min 0.5 x'Px + q'x, l <= Ax <= u, lb <= x <= ub`` (``P`` may be ``None``).

    ``P`` and ``A`` are scipy sparse or dense. Raises ``MarketClearingError`` unless Clarabel
    reports the problem solved (or almost solved)."""
    A = sp.csr_matrix(A)
    m, n = A.shape
    l, u = np.asarray(l, dtype=float), np.asarray(u, dtype=float)
    lb, ub = np.asarray(lb, dtype=float), np.asarray(ub, dtype=float)
    ident = sp.eye(n, format="csr")
    row_eq, col_eq = (l == u), (lb == ub)
    row_up, row_lo = ~row_eq & np.isfinite(u), ~row_eq & np.isfinite(l)
    col_up, col_lo = ~col_eq & np.isfinite(ub), ~col_eq & np.isfinite(lb)
    blocks = [A[row_eq], ident[col_eq], A[row_up], -A[row_lo], ident[col_up], -ident[col_lo]]
    b = np.concatenate([u[row_eq], ub[col_eq], u[row_up], -l[row_lo], ub[col_up], -lb[col_lo]])
    n_zero = int(row_eq.sum() + col_eq.sum())
    G = sp.vstack(blocks).tocsc()
    cones = [clarabel.NonnegativeConeT(len(b) - n_zero)]
    if n_zero:
        cones.insert(0, clarabel.ZeroConeT(n_zero))
    P = sp.csc_matrix((n, n)) if P is None else sp.triu(sp.csc_matrix(P)).tocsc()
    settings = clarabel.DefaultSettings()
    settings.verbose = False
    settings.tol_gap_abs = settings.tol_gap_rel = settings.tol_feas = TOL
    sol = clarabel.DefaultSolver(P, np.asarray(q, dtype=float), G, b, cones, settings).solve()
    status = str(sol.status)
    if status not in ("Solved", "AlmostSolved"):
        raise MarketClearingError(f"Clarabel failed: {status}")
    dual = np.asarray(sol.z)
    parts = np.split(dual, np.cumsum([blk.shape[0] for blk in blocks])[:-1])
    y, z = np.zeros(m), np.zeros(n)
    y[row_eq], z[col_eq] = parts[0], parts[1]
    y[row_up] += parts[2]
    y[row_lo] -= parts[3]
    z[col_up] += parts[4]
    z[col_lo] -= parts[5]
    return Solution(x=np.asarray(sol.x), y=y, z=z, status=status.lower(), solver="clarabel",
                    iterations=int(sol.iterations))
