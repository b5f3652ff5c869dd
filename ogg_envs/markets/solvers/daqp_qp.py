"""DAQP (dual active-set, dense) on the package's standard form.

DAQP solves a strictly convex QP exactly up to rounding: it adds and drops constraints of the
active set and factorises only that set, so a problem of tens of variables solves in tens of
microseconds. ``P`` must be positive definite (a market makes it so with a documented tiny
regularisation). Each call is a fresh solve from the starting active set it is given (none by
default): nothing carries over from one call to the next that could change an answer.
"""

from __future__ import annotations

import daqp
import numpy as np

from . import MarketClearingError, Solution

__all__ = ["solve", "DenseQP"]

_EQUALITY, _ACTIVE, _AT_LOWER = 5, 1, 2  # DAQP's constraint sense flags
_EXIT = {-1: "infeasible", -2: "cycling", -3: "unbounded", -4: "iteration limit",
         -5: "nonconvex", -6: "overdetermined starting active set"}


def solve(P, q, A, l, u, lb, ub, *, start=None, iter_limit: int = 2000) -> Solution:
    """Solve ``min 0.5 x'Px + q'x, l <= Ax <= u, lb <= x <= ub`` once (``DenseQP(A).solve``;
    see there)."""
    return DenseQP(A, start).solve(P, q, l, u, lb, ub, iter_limit=iter_limit)


class DenseQP:
    """QPs with one constraint matrix ``A`` ((m, n), dense) and any data around it.

    ``start`` is the starting active set of every solve, (n + m,) of +1 (start with the upper
    side active), -1 (the lower side) or 0, bounds first, then rows; ``None``: none. It changes
    how many iterations a solve takes, not its answer (the optimum of a strictly convex QP is
    unique); it belongs to the problem's structure, never to earlier solves, so equal data give
    bit-for-bit equal results.

    Fixed variables (``lb == ub``) are substituted out before DAQP sees the problem (on the
    curve market this more than halves DAQP's time); the column split of ``A`` for each set of
    fixed variables is kept (a pure function of ``A`` and that set: it cannot change an answer).
    """

    _KEEP = 32  # column splits kept

    def __init__(self, A, start=None):
        self.A = np.ascontiguousarray(A, dtype=float)
        self.start = None if start is None else np.array(start, dtype=np.int8)
        self._splits = {}

    def _split(self, fixed: np.ndarray):
        key = fixed.tobytes()
        split = self._splits.get(key)
        if split is None:
            if len(self._splits) >= self._KEEP:
                self._splits.clear()
            free_idx, fixed_idx = np.flatnonzero(~fixed), np.flatnonzero(fixed)
            start = None if self.start is None else np.concatenate(
                [self.start[free_idx], self.start[len(fixed):]])
            split = (free_idx, fixed_idx, np.ascontiguousarray(self.A[:, free_idx]),
                     np.ascontiguousarray(self.A[:, fixed_idx]), start)
            self._splits[key] = split
        return split

    def solve(self, P, q, l, u, lb, ub, *, iter_limit: int = 2000) -> Solution:
        """Solve ``min 0.5 x'Px + q'x, l <= Ax <= u, lb <= x <= ub``; ``P`` is an (n, n) dense
        positive definite matrix, or its diagonal as an (n,) vector.

        Equality rows (``l == u``) enter DAQP as equality constraints. Raises
        ``MarketClearingError`` with DAQP's exit status when it fails.
        """
        P, q = np.asarray(P, dtype=float), np.asarray(q, dtype=float)
        l, u = np.asarray(l, dtype=float), np.asarray(u, dtype=float)
        lb, ub = np.asarray(lb, dtype=float), np.asarray(ub, dtype=float)
        fixed = lb == ub
        if not fixed.any():
            return _solve(P, q, self.A, l, u, lb, ub, self.start, iter_limit)
        free, fixed_idx, A_free, A_fixed, start_free = self._split(fixed)
        n = len(lb)
        x_fixed = lb[fixed_idx]
        shift = A_fixed @ x_fixed
        if P.ndim == 1:  # diagonal: free and fixed variables do not interact
            P_free, q_free, Px_fixed = P[free], q[free], P[fixed_idx] * x_fixed
        else:
            P_free = P[np.ix_(free, free)]
            q_free = q[free] + P[np.ix_(free, fixed_idx)] @ x_fixed
            Px_fixed = P[np.ix_(fixed_idx, fixed_idx)] @ x_fixed
        sol = _solve(P_free, q_free, A_free, l - shift, u - shift, lb[free], ub[free],
                     start_free, iter_limit)
        x = lb.copy()
        x[free] = sol.x
        z = np.zeros(n)
        z[free] = sol.z
        # the fixed variables' bound duals, from their stationarity
        z[fixed_idx] = -(Px_fixed + q[fixed_idx] + A_fixed.T @ sol.y)
        if P.ndim == 2:
            z[fixed_idx] -= P[np.ix_(fixed_idx, free)] @ sol.x
        return Solution(x=x, y=sol.y, z=z, status=sol.status, solver=sol.solver,
                        iterations=sol.iterations)


def _solve(P, q, A, l, u, lb, ub, start, iter_limit: int) -> Solution:
    if P.ndim == 1:
        P = np.diag(P)
    n = P.shape[0]
    bupper = np.concatenate([ub, u])
    blower = np.concatenate([lb, l])
    sense = np.zeros(len(bupper), dtype=np.int32)
    if start is not None:
        sense[start > 0] = _ACTIVE
        sense[start < 0] = _ACTIVE | _AT_LOWER
    sense[blower == bupper] = _EQUALITY
    x, _fval, flag, info = daqp.solve(P, q, A, bupper, blower, sense, iter_limit=iter_limit)
    if flag < 1:
        raise MarketClearingError(f"DAQP failed: {_EXIT.get(flag, flag)} (exit flag {flag})")
    lam = np.asarray(info["lam"])
    return Solution(x=np.asarray(x), y=lam[n:], z=lam[:n], status="optimal", solver="daqp",
                    iterations=int(info["iterations"]))
