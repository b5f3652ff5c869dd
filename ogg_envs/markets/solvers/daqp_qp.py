"""DAQP (dual active-set, dense) on the package's standard form.

DAQP solves a strictly convex QP exactly up to rounding: it adds and drops constraints of the
active set and factorises only that set, so a problem of tens of variables solves in tens of
microseconds. ``P`` must be positive definite (a market makes it so with a documented tiny
regularisation). Each call is a fresh solve from the starting active set it is given (none by
default): nothing carries over from one call to the next that could change an answer.
"""

from __future__ import annotations

from typing import NamedTuple

import daqp
import numpy as np

from . import MarketClearingError, Solution

__all__ = ["solve", "DenseQP"]

_EQUALITY, _ACTIVE, _AT_LOWER = np.int32(5), 1, 2  # DAQP's constraint sense flags
_EXIT = {-1: "infeasible", -2: "cycling", -3: "unbounded", -4: "iteration limit",
         -5: "nonconvex", -6: "overdetermined starting active set"}


class _Split(NamedTuple):
    """A ``DenseQP``'s reduced problem for one set of fixed variables: a pure function of
    ``A``, the starting active set and that set, plus the arrays each solve fills in."""

    free: np.ndarray  # indices of the free variables
    fixed: np.ndarray  # indices of the fixed ones
    A_free: np.ndarray  # A[:, free], C-contiguous
    A_fixed: np.ndarray  # A[:, fixed], C-contiguous
    sense: np.ndarray  # DAQP's starting flags: the free variables' bounds, then the rows
    H: np.ndarray  # (k, k) diagonal Hessian: zero off the diagonal, the diagonal per solve
    H_diagonal: np.ndarray  # a view of H's diagonal
    bounds: np.ndarray  # (2, k + m) rows upper, lower (free variables, then rows), per solve


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
    fixed variables is kept (a pure function of ``A`` and that set: it cannot change an answer),
    with the arrays that ``solve_diagonal`` fills in for DAQP (so one ``DenseQP`` solves one
    problem at a time: give each thread its own).

    ``solve`` takes any data; ``solve_diagonal`` is the hot path of a market that clears many
    problems: a diagonal ``P`` and the vectors stacked in one array, no bound duals.
    """

    _KEEP = 32  # column splits kept

    def __init__(self, A, start=None):
        self.A = np.ascontiguousarray(A, dtype=float)
        self.start = None if start is None else np.array(start, dtype=np.int8)
        # DAQP's sense flags for the starting active set (bounds, then rows)
        self._sense = np.zeros(sum(self.A.shape), dtype=np.int32)
        if self.start is not None:
            self._sense[self.start > 0] = _ACTIVE
            self._sense[self.start < 0] = _ACTIVE | _AT_LOWER
        self._splits = {}

    def __getstate__(self):  # (a copy rebuilds the splits: a copied view would not be one)
        return {**self.__dict__, "_splits": {}}

    def _split(self, fixed: np.ndarray) -> _Split:
        """The reduced problem's structure (``_Split``) for the fixed-variable mask ``fixed``."""
        key = fixed.tobytes()
        split = self._splits.get(key)
        if split is None:
            if len(self._splits) >= self._KEEP:
                self._splits.clear()
            free_idx, fixed_idx = (~fixed).nonzero()[0], fixed.nonzero()[0]
            sense = np.concatenate([self._sense[free_idx], self._sense[len(fixed):]])
            k = len(free_idx)
            H = np.zeros((k, k))
            # (np.take gives C-contiguous columns; A[:, idx] does not)
            split = _Split(free_idx, fixed_idx, np.take(self.A, free_idx, axis=1),
                           np.take(self.A, fixed_idx, axis=1), sense, H,
                           H.reshape(-1)[::k + 1], np.empty((2, k + self.A.shape[0])))
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
        if P.ndim == 1:
            x, lam, iterations, split = self._solve_diagonal(
                np.stack([P, q, lb, ub]), np.stack([u, l]), iter_limit)
            if split is None:
                y, z = lam[len(x):], lam[:len(x)]
            else:
                free, fixed_idx, A_fixed = split.free, split.fixed, split.A_fixed
                y = lam[len(free):]
                z = np.zeros(len(x))
                z[free] = lam[:len(free)]
                # the fixed variables' bound duals, from their stationarity
                z[fixed_idx] = -(P[fixed_idx] * x[fixed_idx] + q[fixed_idx] + A_fixed.T @ y)
            return Solution(x=x, y=y, z=z, status="optimal", solver="daqp",
                            iterations=iterations)
        fixed = lb == ub
        if not fixed.any():
            return _solve(P, q, self.A, l, u, lb, ub, self._sense, iter_limit)
        free, fixed_idx, A_free, A_fixed, sense = self._split(fixed)[:5]
        x_fixed = lb[fixed_idx]
        shift = A_fixed @ x_fixed
        q_free = q[free] + P[np.ix_(free, fixed_idx)] @ x_fixed
        sol = _solve(P[np.ix_(free, free)], q_free, A_free, l - shift, u - shift, lb[free],
                     ub[free], sense, iter_limit)
        x = lb.copy()
        x[free] = sol.x
        z = np.zeros(len(lb))
        z[free] = sol.z
        # the fixed variables' bound duals, from their stationarity
        z[fixed_idx] = -(P[np.ix_(fixed_idx, fixed_idx)] @ x_fixed + q[fixed_idx]
                         + A_fixed.T @ sol.y)
        z[fixed_idx] -= P[np.ix_(fixed_idx, free)] @ sol.x
        return Solution(x=x, y=sol.y, z=z, status=sol.status, solver=sol.solver,
                        iterations=sol.iterations)

    def solve_diagonal(self, data: np.ndarray, ul: np.ndarray, *, iter_limit: int = 2000):
        """``solve`` for a diagonal ``P``, with the data stacked: ``data`` (4, n) float rows
        ``[P diagonal, q, lb, ub]``, ``ul`` (2, m) rows ``[u, l]``. Returns ``(x, y)`` only
        (no bound duals), bit-for-bit those of ``solve``."""
        x, lam, _, split = self._solve_diagonal(data, ul, iter_limit)
        return x, lam[len(x) if split is None else len(split[0]):]

    def _solve_diagonal(self, data, ul, iter_limit):
        """``(x, DAQP's duals (bounds of the free variables, then rows), iterations, split or
        None when no variable is fixed)``. The reduced problem's ``H`` and bounds are written
        into the split's own arrays (DAQP only reads them; each solve overwrites every entry
        it reads)."""
        lb = data[2]
        split = self._split(lb == data[3])  # (cached: cheaper than asking fixed.any())
        free, fixed_idx, bounds = split.free, split.fixed, split.bounds
        k = len(free)
        reduced = data.take(free, axis=1)  # the free variables' [P diagonal, q, lb, ub]
        split.H_diagonal[:] = reduced[0]
        bounds[:, :k] = reduced[3:1:-1]  # rows ub, lb; u, l
        if len(fixed_idx):
            # (ndarray.dot: the BLAS call of ``@`` on these contiguous arrays, called faster)
            np.subtract(ul, split.A_fixed.dot(lb[fixed_idx]), out=bounds[:, k:])
        else:
            bounds[:, k:] = ul
        x_free, lam, iterations = _daqp(split.H, reduced[1], split.A_free, bounds, split.sense,
                                        iter_limit)
        if not len(fixed_idx):
            return x_free, lam, iterations, None
        x = lb.copy()
        x[free] = x_free
        return x, lam, iterations, split


def _daqp(H, f, A, bounds, sense, iter_limit: int):
    """One DAQP call: ``bounds`` (2, n + m) rows upper, lower (variable bounds, then rows);
    ``sense`` the starting active set's flags (equal bounds become equalities here). Returns
    ``(x, duals (bounds, then rows), iterations)``. DAQP reads the arrays' buffers as they
    are: each must be C-contiguous (a strided view is silently misread)."""
    bupper, blower = bounds[0], bounds[1]
    sense = sense.copy()
    sense[blower == bupper] = _EQUALITY
    x, _fval, flag, info = daqp.solve(H, f, A, bupper, blower, sense, iter_limit=iter_limit)
    if flag < 1:
        raise MarketClearingError(f"DAQP failed: {_EXIT.get(flag, flag)} (exit flag {flag})")
    return x, info["lam"], int(info["iterations"])


def _solve(P, q, A, l, u, lb, ub, sense, iter_limit: int) -> Solution:
    n = P.shape[0]
    x, lam, iterations = _daqp(P, q, A, np.stack([np.concatenate([ub, u]),
                                                  np.concatenate([lb, l])]), sense, iter_limit)
    return Solution(x=x, y=lam[n:], z=lam[:n], status="optimal", solver="daqp",
                    iterations=iterations)
