"""HiGHS (dual simplex) for a linear program in the package's standard form.

``HighsLP`` holds the constraint matrix (``set_row`` and ``set_values`` replace a row's or all
of its coefficients) and one ``highspy.Highs`` object. Each ``solve`` passes the whole LP
(matrix, costs, bounds) to that object with one ``passModel`` and solves **cold**. A warm start
would pick among tied optimal vertices by history; cold, the same data give the same vertex,
and on the markets' LPs (tens of columns) it costs the same as a warm solve (measured on the
IEEE 37 DLMP market: 0.23 ms either way).

Why the whole model each time: changing only costs and bounds and calling ``clearSolver`` (as
this module did) leaves state from earlier solves in HiGHS (scaling-related, by experiment:
with scaling off, or with ``simplex_scale_strategy`` 4, the difference vanished). One earlier
solve of other data was enough to change 16 of 48 clearings of the IEEE 37 LinDistFlow market
(band binding) in the last bits against a new object's. After ``passModel`` HiGHS holds only
the data just passed: every solve equals, bit for bit, a new ``HighsLP``'s first solve of the
same LP. Measured (interleaved A/B, busy 2-core machine): ~70 us more per clearing of the DC
market on IEEE 37 (0.67 -> 0.74 ms), none measurable on the LinDistFlow market (0.93 -> 0.89
ms); and ``set_values`` needs no new ``Highs`` object (~0.7 ms with a ``HighsLp`` filled
from Python).
"""

from __future__ import annotations

import highspy
import numpy as np
import scipy.sparse as sp

from . import MarketClearingError, Solution

__all__ = ["HighsLP"]

INF = highspy.kHighsInf
_COLWISE = int(highspy.MatrixFormat.kColwise)
_MINIMIZE = int(highspy.ObjSense.kMinimize)


# The HiGHS class this module runs. ``highspy.Highs()`` registers its Python callbacks in its
# constructor, before any option can be set, and that prints HiGHS's banner to stdout (once per
# process, from C++: no Python stream can catch it). The binding's own class underneath does
# not, and this module needs no callbacks; a highspy without it gets ``highspy.Highs``, banner
# and all. (Benchmarks time ``HIGHS.run``: the solver's own call.)
HIGHS = getattr(getattr(highspy, "_core", None), "_Highs", None) or highspy.Highs


def _quiet_highs():
    """A HiGHS object that prints nothing, not even HiGHS's banner (``HIGHS``)."""
    h = HIGHS()
    h.setOptionValue("output_flag", False)
    return h


def _colwise(A: sp.csc_matrix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Column starts (one per column), row indices and values, as ``passModel`` takes them."""
    return (np.ascontiguousarray(A.indptr[:-1], dtype=np.int32),
            np.ascontiguousarray(A.indices, dtype=np.int32), np.ascontiguousarray(A.data))


class HighsLP:
    """``min c'x, l <= Ax <= u, lb <= x <= ub`` with a fixed ``A`` (scipy sparse or dense)."""

    def __init__(self, A):
        A = sp.csc_matrix(A, dtype=float, copy=True)
        A.eliminate_zeros()
        A.sort_indices()
        self.shape = A.shape
        self._A = A
        self._rows_set = {}  # row -> its coefficients, where set_row replaced them
        self._passed = _colwise(A)  # A with the rows set_row replaced, as HiGHS takes it
        self._continuous = np.zeros(A.shape[1], dtype=np.int32)
        h = _quiet_highs()
        h.setOptionValue("presolve", "off")  # tiny LPs: presolve only costs
        h.setOptionValue("solver", "simplex")
        # "threads" stays 0 (any): HiGHS's thread scheduler is one per process, and a Highs
        # object asking for another size than the first one run (CVXPY's HiGHS, say) fails
        # every run. The dual simplex on these LPs is serial either way (same results).
        self._highs = h

    def __getstate__(self):  # the HiGHS object does not pickle; rebuilt from the matrix
        return {"A": self._A, "rows": self._rows_set}

    def __setstate__(self, state):
        self.__init__(state["A"])
        for i, values in state.get("rows", {}).items():
            self.set_row(i, values)

    @property
    def matrix(self) -> sp.csc_matrix:
        """The constraint matrix as given (CSC, sorted, no zeros; ``set_row`` not applied):
        ``set_values`` takes new values in the order of its ``data``. Do not modify it."""
        return self._A

    def set_values(self, values) -> None:
        """Replace the values of the matrix's entries (``matrix.data`` order; the sparsity
        stays, so none may be zero). Rows replaced by ``set_row`` keep their coefficients:
        the LP is ``HighsLP`` of the new matrix followed by the same ``set_row`` calls."""
        values = np.array(values, dtype=float).reshape(-1)
        A = self._A
        if values.shape != A.data.shape:
            raise ValueError(f"expected {A.nnz} values (one per entry), got {values.shape}")
        if not (np.isfinite(values).all() and values.all()):
            raise ValueError("values must be finite and nonzero (a zero would change the "
                             "sparsity: build a new HighsLP)")
        self._A = sp.csc_matrix((values, A.indices, A.indptr), shape=A.shape)
        self._update_passed()

    def set_row(self, i: int, values) -> None:
        """Replace the coefficients of row ``i`` (dense, one per column; zeros drop entries;
        a market's loss-weighted balance row)."""
        values = np.array(values, dtype=float).reshape(-1)
        if values.shape != (self.shape[1],):
            raise ValueError(f"row {i}: expected {self.shape[1]} coefficients, got "
                             f"{values.shape}")
        self._rows_set[i] = values
        self._update_passed()

    def _update_passed(self) -> None:
        if not self._rows_set:
            self._passed = _colwise(self._A)
            return
        dense = self._A.toarray()
        for i, values in self._rows_set.items():
            dense[i] = values
        A = sp.csc_matrix(dense)
        A.eliminate_zeros()
        A.sort_indices()
        self._passed = _colwise(A)

    def solve(self, c, l, u, lb, ub) -> Solution:
        """Solve cold; ``+-inf`` (or ``+-highspy.kHighsInf``) marks a missing side.

        Raises ``MarketClearingError`` unless HiGHS reports the LP optimal."""
        sol = self._run(c, l, u, lb, ub)
        # HiGHS's duals are derivatives of the optimal cost (c - A'y = reduced costs); this
        # package's convention has the opposite sign (c + A'y + z = 0). (getInfoValue: one
        # number, where getInfo copies every info record, ~10 us.)
        return Solution(x=np.array(sol.col_value), y=-np.array(sol.row_dual),
                        z=-np.array(sol.col_dual), status="optimal", solver="highs",
                        iterations=int(self._highs.getInfoValue("simplex_iteration_count")[1]))

    def solve_primal_rows(self, c, l, u, lb, ub) -> tuple[np.ndarray, np.ndarray]:
        """``solve``'s ``x`` and ``y`` only (no bound duals, no ``Solution``): a market's hot
        path, the same numbers."""
        sol = self._run(c, l, u, lb, ub)
        return np.array(sol.col_value), -np.array(sol.row_dual)

    def _run(self, c, l, u, lb, ub):
        """Pass the LP, solve it and return HiGHS's solution (raises unless optimal)."""
        h = self._highs
        m, n = self.shape
        start, index, value = self._passed
        f64 = np.float64
        # The whole model, every time: HiGHS keeps state across clearSolver (results then
        # differed from a new object's in the last bits); after passModel it holds only this.
        status = h.passModel(
            n, m, len(value), _COLWISE, _MINIMIZE, 0.0, np.asarray(c, dtype=f64),
            np.asarray(lb, dtype=f64), np.asarray(ub, dtype=f64), np.asarray(l, dtype=f64),
            np.asarray(u, dtype=f64), start, index, value, self._continuous)
        if status == highspy.HighsStatus.kError:
            raise MarketClearingError("HiGHS refused the LP's data")
        h.run()
        status = h.getModelStatus()
        if status != highspy.HighsModelStatus.kOptimal:
            raise MarketClearingError(f"HiGHS failed: {h.modelStatusToString(status)}")
        return h.getSolution()
