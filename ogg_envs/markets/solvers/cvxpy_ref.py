"""CVXPY, for the markets' readable reference statements (``cvxpy_problem``/``clear_cvxpy``).

The markets state every problem once in CVXPY, with Parameters, as the reference the tests
compare their fast paths against (and a fallback); this solves such a problem and refuses
anything but an optimal status::

    solve(problem, "CLARABEL")      # or "HIGHS", "OSQP", ...
"""

from __future__ import annotations

from . import MarketClearingError

__all__ = ["solve"]


def solve(problem, solver: str) -> None:
    """``problem.solve(solver=solver)``; ``MarketClearingError`` naming the solver unless the
    status is optimal (or optimal within the solver's reduced accuracy)."""
    import cvxpy as cp

    try:
        problem.solve(solver=solver)
    except cp.error.SolverError as exc:
        raise MarketClearingError(f"CVXPY/{solver} failed: {exc}") from None
    if problem.status not in ("optimal", "optimal_inaccurate"):
        raise MarketClearingError(f"CVXPY/{solver} failed: status {problem.status}")
