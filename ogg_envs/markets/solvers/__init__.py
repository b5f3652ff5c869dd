"""Solver plumbing for the markets, apart from their economics: one thin module per solver.

Every module solves one standard form and reports in one convention, so a market states its
problem once and can switch solvers without touching its economics (qpsolvers-style)::

    minimise    0.5 x' P x + q' x          (P = None: a linear program)
    subject to  l <= A x <= u               (rows; l == u is an equality row)
                lb <= x <= ub               (variable bounds; +-inf for none)

and returns a ``Solution``: ``x`` the primal, ``y`` the duals of the rows and ``z`` those of
the bounds, signed so that stationarity reads ``P x + q + A' y + z = 0``: a dual is positive
where the upper side binds and negative where the lower side does (OSQP's and DAQP's
convention). ``-y[i]`` is then the derivative of the optimal objective with respect to both
sides of row i moved together (for an equality row, its right-hand side).

* ``daqp_qp``: DAQP, a dense dual active-set method; exact (to rounding) and fast on problems of
  tens to a hundred variables; needs ``P`` positive definite.
* ``clarabel_qp``: Clarabel, a sparse interior-point method; robust, for large sparse problems
  and as a fallback.
* ``osqp_qp``: OSQP (ADMM), sparse, polished to an exact active-set solution when it can be.
* ``highs_lp``: HiGHS's dual simplex for linear programs, built once and re-solved cold.
* ``cvxpy_ref``: CVXPY, for the markets' readable reference statements.

No module keeps state from one solve to the next that could change an answer: every solve
starts cold (or from a starting point that the caller derives from the instance alone), so the
same data always give the same solution. Failure raises ``ogg_envs.api.MarketClearingError``
with the solver's status.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...api import MarketClearingError

__all__ = ["Solution", "MarketClearingError"]


@dataclass(frozen=True)
class Solution:
    """A solver's answer in the package's convention (see the module docstring)."""

    x: np.ndarray  # primal
    y: np.ndarray  # duals of the rows of A
    z: np.ndarray  # duals of the variable bounds
    status: str
    solver: str
    iterations: int = 0
