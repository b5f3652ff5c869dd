"""HiGHS (dual simplex) for a linear program in the package's standard form, built once.

``HighsLP`` passes the constraint matrix to HiGHS once (its sparsity never changes) and each
``solve`` changes every cost and bound and solves **cold**: the simplex basis of the previous
solve is dropped first. A warm start would pick among tied optimal vertices by history; cold,
the same data give the same vertex, and on the markets' LPs (tens of columns) it costs the same
as a warm solve (measured on the IEEE 37 DLMP market: 0.23 ms either way).
"""

from __future__ import annotations

import highspy
import numpy as np
import scipy.sparse as sp

from . import MarketClearingError, Solution

__all__ = ["HighsLP"]

INF = highspy.kHighsInf


class HighsLP:
    """``min c'x, l <= Ax <= u, lb <= x <= ub`` with a fixed ``A`` (scipy sparse or dense)."""

    def __init__(self, A):
        A = sp.csc_matrix(A)
        A.eliminate_zeros()
        A.sort_indices()
        self.shape = A.shape
        m, n = A.shape
        self._cols = np.arange(n, dtype=np.int32)
        self._rows = np.arange(m, dtype=np.int32)
        lp = highspy.HighsLp()
        lp.num_col_, lp.num_row_ = n, m
        lp.col_cost_, lp.col_lower_, lp.col_upper_ = np.zeros(n), np.zeros(n), np.zeros(n)
        lp.row_lower_, lp.row_upper_ = np.zeros(m), np.zeros(m)
        lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
        lp.a_matrix_.start_ = A.indptr
        lp.a_matrix_.index_ = A.indices
        lp.a_matrix_.value_ = A.data
        self._A = A
        self._rows_set = {}  # row -> its coefficients, where set_row replaced them
        self._build(lp)

    def _build(self, lp) -> None:
        h = highspy.Highs()
        h.setOptionValue("output_flag", False)
        h.setOptionValue("presolve", "off")  # tiny LPs: presolve only costs
        h.setOptionValue("solver", "simplex")
        h.setOptionValue("threads", 1)
        h.passModel(lp)
        self._highs = h

    def __getstate__(self):  # the HiGHS object does not pickle; rebuilt from the matrix
        return {"A": self._A, "rows": self._rows_set}

    def __setstate__(self, state):
        self.__init__(state["A"])
        for i, values in state.get("rows", {}).items():
            self.set_row(i, values)

    def set_row(self, i: int, values) -> None:
        """Replace the coefficients of row ``i`` (dense, one per column; zeros drop entries).
        Only the entries that change are passed to HiGHS (a market's loss-weighted balance
        row: tens of entries, about 3 us each)."""
        values = np.array(values, dtype=float).reshape(-1)
        if values.shape != (self.shape[1],):
            raise ValueError(f"row {i}: expected {self.shape[1]} coefficients, got "
                             f"{values.shape}")
        current = self._rows_set.get(i)
        if current is None:
            current = self._A[[i], :].toarray().ravel()
        for j in np.flatnonzero(values != current).tolist():
            self._highs.changeCoeff(int(i), j, float(values[j]))
        self._rows_set[i] = values

    def solve(self, c, l, u, lb, ub) -> Solution:
        """Solve cold; ``+-inf`` (or ``+-highspy.kHighsInf``) marks a missing side.

        Raises ``MarketClearingError`` unless HiGHS reports the LP optimal."""
        h = self._highs
        m, n = self.shape
        h.changeColsCost(n, self._cols, np.asarray(c, dtype=float))
        h.changeColsBounds(n, self._cols, np.asarray(lb, dtype=float),
                           np.asarray(ub, dtype=float))
        h.changeRowsBounds(m, self._rows, np.asarray(l, dtype=float), np.asarray(u, dtype=float))
        h.clearSolver()  # cold: the same data give the same vertex, whatever came before
        h.run()
        status = h.getModelStatus()
        if status != highspy.HighsModelStatus.kOptimal:
            raise MarketClearingError(f"HiGHS failed: {h.modelStatusToString(status)}")
        sol = h.getSolution()
        # HiGHS's duals are derivatives of the optimal cost (c - A'y = reduced costs); this
        # package's convention has the opposite sign (c + A'y + z = 0).
        return Solution(x=np.asarray(sol.col_value), y=-np.asarray(sol.row_dual),
                        z=-np.asarray(sol.col_dual), status="optimal", solver="highs",
                        iterations=int(h.getInfo().simplex_iteration_count))
