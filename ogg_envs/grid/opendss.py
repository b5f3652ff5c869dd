"""The physical feeder: one OpenDSS engine per grid, driven by the markets' dispatch.

``OpenDSSGrid`` compiles a feeder once, keeps bulk index maps (nodes, loads, lines) and then
runs each grid step as "write dispatch, solve, bulk-read results" without any per-element
Python loop: whole-class writes of the loads and generators, whole-circuit reads. Every
instance owns its own engine context (``opendssdirect.NewContext()``), so several grids live
side by side in one process.

Sign conventions: loads consume positive kW; generators and storage inject positive kW
(storage charging is negative). Line flows are measured at a branch's first terminal, positive
in the direction from its upstream (source side) bus to its downstream bus.
"""

from __future__ import annotations

import math
import os
import time
import weakref
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import opendssdirect as odd
from dss import SparseSolverOptions, YMatrixModes

from .topology import Topology

# OpenDSS engines of grids that are gone, cleared and ready for the next grid. opendssdirect
# 0.9 never frees an engine context (its registries hold each one for good: about 2 MB per
# grid), so a process that builds many grids (tests, sweeps, vectorised trainers) reuses them.
_IDLE_ENGINES: list = []
# What garbage-collected grids left to free: (function, arguments) calls into their engines.
# Python collects garbage in whichever thread allocates (a trainer's logging thread, say), and
# a call into OpenDSS's engine from a thread that is not the engine's user crashed the process
# (a segmentation fault in a test run); so collection only queues them, and the next grid
# built, or closed, runs them in its own thread.
_TO_FREE: list = []


def _free_collected() -> None:
    while _TO_FREE:
        fn, args = _TO_FREE.pop(0)
        try:
            fn(*args)
        except Exception:  # noqa: BLE001 - an engine that cannot be cleared is not reused
            pass


def _engine():
    """A DSS engine of this process's own (never the global ``opendssdirect`` one)."""
    _free_collected()
    return _IDLE_ENGINES.pop() if _IDLE_ENGINES else odd.NewContext()


def _release(dss) -> None:
    dss.Text.Command("clear")
    _IDLE_ENGINES.append(dss)

__all__ = ["OpenDSSGrid", "PowerFlowResult", "FeederError"]


class FeederError(ValueError):
    """A feeder model that OpenDSS cannot compile or that lacks what the grid layer needs."""


@dataclass
class PowerFlowResult:
    """What one power flow says about the feeder.

    ``voltages_pu`` is keyed "bus.phase" (line-to-neutral, on the bus's L-N base);
    ``voltages_ll_pu`` is keyed "bus.ab" / "bus.bc" / "bus.ca" for three-phase buses. On a
    delta feeder (``grid.delta``) only the line-to-line values are meaningful and violations are
    judged on them. ``line_flows_kw``/``line_flows_kvar`` are each branch element's active and
    reactive power at its first terminal (what ``CktElement.Powers`` sums over its phase
    conductors). When ``converged`` is False every numerical field is NaN: a non-converged
    solution is never to be used as a state of the feeder.
    """

    converged: bool
    iterations: int
    voltages_pu: dict[str, float]
    voltages_ll_pu: dict[str, float]
    line_flows_kw: dict[str, float]
    line_loading_pct: dict[str, float]
    losses_kw: float
    losses_kvar: float
    substation_kw: float
    substation_kvar: float
    voltage_violations: dict[str, float] = field(default_factory=dict)
    thermal_overloads: dict[str, float] = field(default_factory=dict)
    message: str = ""
    line_flows_kvar: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Converged and no violation of any kind."""
        return self.converged and not self.voltage_violations and not self.thermal_overloads

    def bus_voltage_violations(self) -> dict[str, float]:
        """Worst violating node voltage per bus (bus name -> pu)."""
        return _worst_per_bus(self.voltage_violations)

    def bus_voltages(self) -> dict[str, float]:
        """Worst node voltage per bus (bus name -> pu): line to neutral, or line to line on a
        delta feeder (the voltages violations are judged on)."""
        return _worst_per_bus(self._judged_voltages())

    def summary(self) -> dict:
        return {
            "converged": self.converged,
            "losses_kw": self.losses_kw,
            "substation_kw": self.substation_kw,
            "n_voltage_violations": len(self.voltage_violations),
            "n_thermal_overloads": len(self.thermal_overloads),
            "min_voltage_pu": min(self._judged_voltages().values(), default=float("nan")),
            "max_loading_pct": max(self.line_loading_pct.values(), default=float("nan")),
        }

    def _judged_voltages(self) -> dict[str, float]:
        return self.voltages_ll_pu if self._delta else self.voltages_pu

    _delta: bool = False


def _worst_per_bus(node_voltages: dict[str, float]) -> dict[str, float]:
    """``"bus.node" -> pu`` to ``bus -> pu`` of its node furthest from 1 pu (the first such node
    on a tie; NaN stays NaN)."""
    return _worst_of([node.split(".")[0] for node in node_voltages], node_voltages.values())


def _worst_of(buses, voltages) -> dict[str, float]:
    """``_worst_per_bus`` of voltages whose buses are known: ``buses[i]`` is the bus of
    ``voltages[i]``."""
    out: dict[str, float] = {}
    for bus, v in zip(buses, voltages):
        worst = out.get(bus)
        if worst is None or abs(v - 1.0) > abs(worst - 1.0):
            out[bus] = v
    return out


def _bus_runs(names: list[str]):
    """``(buses, starts)`` of ``"bus.x"`` names that come in one run per bus (``buses`` in
    order of appearance, ``starts`` where each run begins), or None if a bus comes back."""
    buses = [n.split(".")[0] for n in names]
    starts = [i for i in range(len(buses)) if i == 0 or buses[i] != buses[i - 1]]
    run_buses = [buses[i] for i in starts]
    if not starts or len(set(run_buses)) != len(run_buses):
        return None
    return run_buses, np.array(starts, dtype=np.int64)


def _worst_per_run(values: np.ndarray, runs) -> dict[str, float]:
    """``_worst_per_bus`` of finite ``values`` laid out in ``_bus_runs``: per bus, its first
    value furthest from 1 pu."""
    buses, starts = runs
    dev = np.abs(values - 1.0)
    worst = np.repeat(np.maximum.reduceat(dev, starts), np.diff(starts, append=len(values)))
    first = np.minimum.reduceat(np.where(dev == worst, np.arange(len(values)), len(values)),
                                starts)
    return dict(zip(buses, values[first].tolist()))


def _line_to_line(volts: np.ndarray, pairs: np.ndarray, base: np.ndarray) -> np.ndarray:
    """Line-to-line magnitudes (pu) of node ``pairs`` from ``AllBusVolts`` (re, im pairs)."""
    if not len(pairs):
        return np.zeros(0)
    v = volts.view(np.complex128)
    return np.abs(v[pairs[:, 0]] - v[pairs[:, 1]]) / base


def _terminal_sums(powers: np.ndarray, gather: np.ndarray, segments: np.ndarray):
    """kW and kvar per branch from ``PDElements.AllPowers``: the conductors ``gather`` picks
    (terminal 1's phases), summed per branch (``segments``: where each branch's start)."""
    if not len(segments):
        return np.zeros(0), np.zeros(0)
    return (np.add.reduceat(powers[0::2][gather], segments),
            np.add.reduceat(powers[1::2][gather], segments))


def _finite_nonnegative(values: np.ndarray) -> bool:
    """Whether every value is finite and >= 0 (True for none): two reductions instead of a
    mask per test (a NaN fails ``min() >= 0``)."""
    return not values.size or (values.min() >= 0 and values.max() < math.inf)


def _raise_first_bad(values: np.ndarray, label) -> None:
    """``ValueError`` for the first value that is not finite or is negative, named by
    ``label(k)`` (nothing if there is none)."""
    bad = ~np.isfinite(values) | (values < 0)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{label(k)}: kW must be finite and >= 0, got {values[k]!r}")


def _check_finite(name: str, value: float, *, nonnegative: bool = False) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name}: dispatch value must be finite, got {value!r}")
    if nonnegative and value < 0:
        raise ValueError(f"{name}: dispatch value must be >= 0, got {value!r}")
    return value


# A feeder with at least this many loads reads its results through the DSS C-API's batch
# interface (one call reads every line) and reads the branch currents on first use. Every
# bundled feeder is below it: their numbers come from OpenDSS's own whole-circuit arrays
# (AllBusMagPu, AllPowers, AllPctNorm), unchanged. Every feeder writes its loads and
# generators through the batch interface (``_BatchIO.set_loads``).
BATCH_MIN_LOADS = 300

# DSS C-API setter flag "AvoidFullRecalc": a load's (or generator's) new kW/kvar updates its
# power, not its admittance (Yprim), exactly what ``dss.Loads.kW(...)`` does. Without it a
# batch write marks every element's Yprim invalid, the next solve rebuilds the system matrix
# with the new loads' admittances and iterates from another matrix: the same physics within
# the convergence tolerance, other numbers (up to 2e-3 relative on IEEE 34 with regulators
# moving). With it, the batch writes give the per-element setters' solutions bit for bit.
_AVOID_FULL_RECALC = 2


# DSS C-API sparse-solver options (``dss.SparseSolverOptions``) every grid sets. By default
# OpenDSS rebuilds the system matrix from scratch whenever an element changes (every
# regulator tap change, i.e. every control iteration of a random dispatch), recomputing every
# load's admittance; with these it updates the changed entries in place
# (ReuseSymbolicFactorization, which implies reusing the compressed matrix and enables the
# incremental update) and leaves an element's admittance alone until the element changes
# (AlwaysResetYPrimInvalid). A load's admittance only preconditions OpenDSS's fixed-point
# iteration (its injection current compensates it exactly), so the power flow converges to
# the same solution within the solution tolerance, not bit for bit (up to 0.6 V, 4e-5 pu, on
# IEEE 34 with regulators moving; as close to a tight-tolerance solve as the default's).
# ``reset`` rebuilds everything (``_rebuild_admittances``), so an episode's power flows still
# do not depend on what the engine solved before. ``benchmarks/bench_grid.py`` measures both
# settings.
SOLVER_OPTIONS = int(SparseSolverOptions.AlwaysResetYPrimInvalid
                     | SparseSolverOptions.ReuseSymbolicFactorization)


class _BatchIO:
    """Whole-class reads and writes of one engine through the DSS C-API batch functions.

    ``loads``/``generators``: every load and generator, in ``Loads``/``Generators`` index
    order (``load_names``/``generator_names`` say which they are); ``set_loads`` writes kW
    then kvar, ``set_generators`` kW, with the per-element setters' semantics
    (``_AVOID_FULL_RECALC``).
    ``branches``: the series elements of ``branch_names`` (lines, transformers, reactors),
    read per class: terminal-1 kW of each and the lines' loading.
    """

    def __init__(self, dss, branch_names: list[str]):
        au = dss._api_util
        self._ffi, self._lib, self._ctx = au.ffi, au.lib_unpatched, au.ctx
        self._circuit = au.lib  # the same functions with this engine's context filled in
        self._batches: list = []
        self.loads = self._batch("Load")
        self.generators = self._batch("Generator")
        # Per class: the batch, and where each of its elements sits in branch_names.
        pos = {n: i for i, n in enumerate(branch_names)}
        self.classes = []
        for cls, prefix in (("Line", "line."), ("Transformer", "transformer."),
                            ("Reactor", "reactor.")):
            names = [n for n in branch_names if n.startswith(prefix)]
            if not names:
                continue
            batch = self._batch(cls)
            if batch[1] != len(names):  # pragma: no cover - a class with disabled elements
                raise RuntimeError(f"batch of {cls}: {batch[1]} elements, {len(names)} named")
            self.classes.append((prefix, batch, np.array([pos[n] for n in names])))

    def _batch(self, cls: str):
        ptrptr = self._ffi.new("void***")
        cnt = self._ffi.new("int32_t[4]")
        self._lib.Batch_CreateByClassS(self._ctx, ptrptr, cnt, cls.encode())
        self._batches.append(ptrptr)
        return ptrptr[0], int(cnt[0])

    def names(self, batch) -> list[str]:
        """The (lower-case) names of a batch's elements, in its order."""
        ptrs, n = batch
        name = self._lib.Obj_GetName  # a pointer into the engine's own string: not to free
        return [self._ffi.string(name(ptrs[i])).decode().lower() for i in range(n)]

    def _set(self, batch, prop: bytes, values: np.ndarray) -> None:
        if not batch[1]:
            return
        v = np.ascontiguousarray(values, dtype=np.float64)
        self._lib.Batch_Float64ArrayS(batch[0], batch[1], prop, 0,  # 0: set the values
                                      self._ffi.from_buffer("double[]", v), _AVOID_FULL_RECALC)

    def set_loads(self, kw: np.ndarray, kvar: np.ndarray) -> None:
        """kW, then kvar, in one edit of each load: one recalculation of its data at the end
        (the per-load setters recalculate after each value; the same data either way)."""
        ptrs, n = self.loads
        self._lib.Batch_BeginEdit(ptrs, n)
        try:
            self._set(self.loads, b"kW", kw)
            self._set(self.loads, b"kvar", kvar)
        finally:
            self._lib.Batch_EndEdit(ptrs, n, 2)

    def set_generators(self, kw: np.ndarray) -> None:
        self._set(self.generators, b"kW", kw)

    def _floats(self, func, *args) -> np.ndarray:
        ffi = self._ffi
        ptr = ffi.new("double**")
        cnt = ffi.new("int32_t[4]")
        func(ptr, cnt, *args)
        out = np.frombuffer(ffi.buffer(ptr[0], cnt[0] * 8), dtype=np.float64).copy()
        self._lib.DSS_Dispose_PDouble(ptr)
        return out

    def currents(self, batch) -> np.ndarray:
        """Complex current (A) of every conductor of every terminal, element after element,
        as (re, im) pairs."""
        return self._floats(self._lib.Alt_CEBatch_Get_Currents, batch[0], batch[1])

    def circuit(self, what: str) -> np.ndarray:
        """A circuit-level array as numpy directly (``AllBusVolts``, ``Losses``,
        ``TotalPower``): the same numbers as ``dss.Circuit.<what>()``, without a list."""
        return self._floats(getattr(self._circuit, f"Circuit_Get_{what}"))

    def handover(self) -> list:
        """The calls that free the batches (to run in the engine's user's thread); this
        object frees nothing more."""
        calls = [(_dispose_batches, (self._lib, self._batches))] if self._batches else []
        self._batches = []
        return calls

    def close(self) -> None:
        for fn, args in self.handover():
            fn(*args)

    def __del__(self):  # possibly in another thread: only queue the calls (_TO_FREE)
        try:
            _TO_FREE.extend(self.handover())
        except Exception:  # pragma: no cover - interpreter shutdown
            pass


def _dispose_batches(lib, batches) -> None:
    for ptrptr in batches:
        lib.Batch_Dispose(ptrptr[0])


class _ResultArrays:
    """Array reads of one engine straight from the DSS C-API's result buffer (the "GR"
    functions opendssdirect itself calls), as numpy without a Python list in between: the same
    float64 numbers as ``dss.Circuit.AllBusMagPu()`` and the like."""

    def __init__(self, dss):
        au = dss._api_util
        self._lib, self._ffi = au.lib, au.ffi  # lib: this engine's context bound
        self._ptr, self._cnt = au.gr_float64_pointers
        self._check = dss.Circuit._check_for_error
        self._calls: dict = {}
        self._solution_reads = [(self._call(f), args) for f, args in (
            ("Circuit_Get_AllBusVmagPu_GR", ()), ("Circuit_Get_AllBusVolts_GR", ()),
            ("PDElements_Get_AllPowers_GR", ()), ("PDElements_Get_AllPctNorm_GR", (False,)),
            ("Circuit_Get_Losses_GR", ()), ("Circuit_Get_TotalPower_GR", ()))]
        self.iterations = self._lib.Solution_Get_Iterations

    def _call(self, func: str):
        call = self._calls.get(func)
        if call is None:
            call = self._calls[func] = getattr(self._lib, func)
        return call

    def _result(self) -> np.ndarray:
        """A copy of the result buffer (the next read overwrites it) as a new array."""
        n = self._cnt[0]
        out = np.empty(n)
        if n:
            self._ffi.memmove(out, self._ptr[0], n * 8)
        return out

    def read(self, func: str, *args) -> np.ndarray:
        """``func`` (e.g. ``"Circuit_Get_Losses_GR"``) called, its result as a new array."""
        self._call(func)(*args)
        self._check()
        return self._result()

    def solution(self, totals: bool = True) -> list[np.ndarray]:
        """What a result is made of, read in one go (and checked for an engine error once):
        ``AllBusVmagPu``, ``AllBusVolts`` (re, im pairs), ``PDElements.AllPowers`` (kW, kvar
        per conductor and terminal), ``PDElements.AllPctNorm`` and, with ``totals``,
        ``Losses`` (W, var) and ``TotalPower`` (kW, kvar)."""
        out, result = [], self._result
        for call, args in self._solution_reads[:None if totals else 4]:
            call(*args)
            out.append(result())
        self._check()
        return out


class _LazyPowerFlowResult(PowerFlowResult):
    """A power-flow result whose name-keyed dicts are built when first used. Of a feeder
    below ``BATCH_MIN_LOADS``: every number is read at solve time as arrays; the dicts, a wye
    feeder's line-to-line magnitudes and the branch flows' sums over phases (``_flows``) are
    computed from those arrays when first used. Of a large feeder: voltages, voltage
    violations and totals are read at solve time; the name-keyed dicts (``voltages_pu``,
    ``voltages_ll_pu``) are built when first used, and the branch currents (behind
    ``line_flows_kw``, ``line_flows_kvar``, ``line_loading_pct``, ``thermal_overloads``,
    ``losses_kw``, ``losses_kvar`` and the arrays ``_flows``) are read from the engine when one
    of them is first used, their dicts built when each is. The grid makes its last such
    result read the currents (``settle``) before the engine changes (the next solve, an added
    element, ``close``)."""

    def __getattr__(self, name: str):
        lazy = self.__dict__.get("_lazy")
        if lazy is None or name not in lazy["build"]:
            raise AttributeError(name)
        value = lazy["build"][name]()
        object.__setattr__(self, name, value)
        return value

    def bus_voltages(self) -> dict[str, float]:
        worst = self.__dict__.get("_lazy", {}).get("bus_voltages")
        return worst() if worst is not None else super().bus_voltages()

    bus_voltages.__doc__ = PowerFlowResult.bus_voltages.__doc__

    def bus_voltage_violations(self) -> dict[str, float]:
        worst = self.__dict__.get("_lazy", {}).get("bus_voltage_violations")
        return worst() if worst is not None else super().bus_voltage_violations()

    bus_voltage_violations.__doc__ = PowerFlowResult.bus_voltage_violations.__doc__

    def __eq__(self, other):  # equal to a plain result with the same fields, as before
        if not isinstance(other, PowerFlowResult):
            return NotImplemented
        names = [f.name for f in fields(PowerFlowResult)]
        return [getattr(self, n) for n in names] == [getattr(other, n) for n in names]

    __hash__ = None  # mutable, like a dataclass with eq

    def settle(self) -> None:
        """Read from the engine now what is still to be read (a large feeder's branch
        currents), before it solves again; the name-keyed dicts are built from what was read
        when first used."""
        read = self.__dict__.get("_lazy", {}).get("read")
        if read is not None:
            read()

    def __getstate__(self):  # a pickle holds the dicts, not the builders
        for name in _LAZY_FIELDS:
            getattr(self, name)
        state = dict(self.__dict__)
        state.pop("_lazy", None)
        state.pop("_flows", None)  # arrays of the grid that solved it: not its to carry
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)


_LAZY_FIELDS = ("voltages_pu", "voltages_ll_pu", "line_flows_kw", "line_flows_kvar",
                "line_loading_pct", "thermal_overloads", "losses_kw", "losses_kvar")


class OpenDSSGrid:
    """A feeder compiled into its own OpenDSS engine.

    Build one from a bundled feeder (``OpenDSSGrid.from_feeder("ieee34")``) or from any
    OpenDSS model (``OpenDSSGrid("path/to/master.dss")``). The model must define the circuit
    and its voltage bases; the grid compiles it once and solves the base case.

    Args:
        master: path to the master ``.dss`` file.
        commands: alternatively, the OpenDSS commands that build the circuit.
        voltage_band: (low, high) pu band outside which a node voltage is a violation.
        bus_coords: bus -> (x, y) for drawing; read from a ``buscoords`` file if the model has one.
        locked_taps: hold regulator taps where the model left them (``controlmode=off``).
        delta: whether only line-to-line voltages are meaningful (3-wire delta feeder).
        name: label of the feeder.
    """

    def __init__(
        self,
        master: str | Path | None = None,
        *,
        commands: list[str] | None = None,
        voltage_band: tuple[float, float] = (0.95, 1.05),
        bus_coords: dict[str, tuple[float, float]] | None = None,
        locked_taps: bool = False,
        delta: bool = False,
        name: str | None = None,
        tolerance: float = 1e-4,
        max_iterations: int = 100,
    ):
        if (master is None) == (commands is None):
            raise ValueError("give exactly one of `master` (a .dss path) or `commands`")
        low, high = voltage_band
        if not (0 < low < high):
            raise ValueError(f"voltage_band must satisfy 0 < low < high, got {voltage_band}")
        self._init_args = dict(
            master=str(Path(master).resolve()) if master is not None else None,  # cwd-proof
            commands=list(commands) if commands is not None else None,
            voltage_band=(float(low), float(high)),
            bus_coords=dict(bus_coords) if bus_coords else None,
            locked_taps=locked_taps,
            delta=delta,
            name=name,
            tolerance=tolerance,
            max_iterations=max_iterations,
        )
        self._added: list[tuple[str, tuple, dict]] = []  # replayed after unpickling
        self._build()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_feeder(cls, feeder: str, **kwargs) -> OpenDSSGrid:
        """One of the bundled feeders: ``"ieee13"``, ``"ieee34"``, ``"ieee37"`` or ``"ieee123"``."""
        from .feeders import get_feeder

        module = get_feeder(feeder)
        locked = kwargs.pop("locked_taps", False)
        kwargs.setdefault("bus_coords", module.BUS_COORDS)
        kwargs.setdefault("delta", module.DELTA)
        kwargs.setdefault("name", module.NAME)
        return cls(commands=module.dss_commands(locked_taps=locked), locked_taps=locked, **kwargs)

    def _build(self) -> None:
        a = self._init_args
        self.name = a["name"]
        self.voltage_band = a["voltage_band"]
        self.delta = a["delta"]
        self.locked_taps = a["locked_taps"]
        # OpenDSS moves the process's working directory: a new engine context goes to its data
        # path and `compile`/`redirect` to the model's folder (so that relative file names in
        # the model resolve). Ours must not move.
        cwd = os.getcwd()
        try:
            self.dss = _engine()
            self.dss.Basic.AllowForms(False)
            if a["master"] is not None:
                self._compile_file(Path(a["master"]))
            else:
                self._run_commands(a["commands"], source="<commands>")
        finally:
            os.chdir(cwd)
        source = a["master"] or "<commands>"
        try:
            circuit = self.dss.Circuit.Name()
        except Exception:  # DSSException #8888: "There is no active circuit!"
            circuit = ""
        if not circuit:
            raise FeederError(f"{source}: the model defines no circuit (it needs a "
                              "'New Circuit.<name> ...' command)")
        self.name = self.name or circuit
        self.dss.Solution.Convergence(a["tolerance"])
        self.dss.Solution.MaxIterations(a["max_iterations"])
        self.dss.Solution.MaxControlIterations(30)
        self.dss.YMatrix.SolverOptions(SOLVER_OPTIONS)
        if self.locked_taps:
            self.dss.Solution.ControlMode(-1)  # OFF: taps stay where they are
        self.bus_coords = dict(a["bus_coords"] or self._read_bus_coords())
        base = self._solve_raw()
        if not base[0]:
            raise FeederError(f"{self.name}: the base case does not converge ({base[1]})")
        self._index()
        no_base = [b for b, kv in self.bus_kv_ln.items() if not kv > 0]
        if no_base:
            raise FeederError(
                f"{source}: buses without a voltage base ({', '.join(no_base[:5])}"
                f"{', ...' if len(no_base) > 5 else ''}): per-unit voltages would be "
                "meaningless; add 'Set VoltageBases=[...]' and 'CalcVoltageBases' to the model")
        self._base_taps = self._read_taps()
        self._base_capacitors = self._read_capacitors()
        try:
            self.topology = Topology.from_grid(self)
        except ValueError as exc:
            raise FeederError(f"{self.name}: {exc}") from None
        islanded = sorted(b for b in self.loads_at_bus if b not in self.topology.bus_index)
        if islanded:
            raise FeederError(f"{source}: loads at buses not connected to the source "
                              f"({', '.join(islanded[:5])}): an islanded load cannot be served")
        self.added_generators: list[str] = []
        for method, args, kwargs in list(self._added):
            getattr(self, method)(*args, _record=False, **kwargs)

    def _compile_file(self, path: Path) -> None:
        if not path.is_file():
            raise FeederError(f"feeder file not found: {path}")
        try:
            self.dss.Text.Command(f'compile "{path}"')
        except Exception as exc:  # DSSException carries OpenDSS's own message
            raise FeederError(f"OpenDSS could not compile {path}: {exc}") from None
        self._source = str(path)

    def _run_commands(self, commands: list[str], source: str) -> None:
        for i, cmd in enumerate(commands):
            try:
                self.dss.Text.Command(cmd)
            except Exception as exc:
                raise FeederError(f"OpenDSS rejected command {i} of {source} ({cmd!r}): {exc}") \
                    from None
        self._source = source

    def _read_bus_coords(self) -> dict[str, tuple[float, float]]:
        coords = {}
        for bus in self.dss.Circuit.AllBusNames():
            self.dss.Circuit.SetActiveBus(bus)
            if self.dss.Bus.Coorddefined():
                coords[bus] = (self.dss.Bus.X(), self.dss.Bus.Y())
        return coords

    def _index(self) -> None:
        """Bulk-read index maps, built once per compile (and after elements are added)."""
        dss = self.dss
        self.buses: list[str] = [b.lower() for b in dss.Circuit.AllBusNames()]
        self.nodes: list[str] = [n.lower() for n in dss.Circuit.AllNodeNames()]
        self._bus_set = set(self.buses)
        # Bus voltage bases (kV L-N) per node, for line-to-line magnitudes.
        base_by_bus = {}
        for bus in self.buses:
            dss.Circuit.SetActiveBus(bus)
            base_by_bus[bus] = dss.Bus.kVBase()
        self.bus_kv_ln = base_by_bus
        node_pos = {n: i for i, n in enumerate(self.nodes)}
        pairs, ll_names, ll_base = [], [], []
        for bus in self.buses:
            for (p, q), tag in (((1, 2), "ab"), ((2, 3), "bc"), ((3, 1), "ca")):
                i, j = node_pos.get(f"{bus}.{p}"), node_pos.get(f"{bus}.{q}")
                if i is not None and j is not None:
                    pairs.append((i, j))
                    ll_names.append(f"{bus}.{tag}")
                    ll_base.append(base_by_bus[bus] * 1000.0 * math.sqrt(3.0))
        self._ll_pairs = np.array(pairs, dtype=np.int64).reshape(-1, 2)
        self._ll_names = ll_names
        self._node_runs, self._ll_runs = _bus_runs(self.nodes), _bus_runs(ll_names)
        self._node_bus = [n.split(".")[0] for n in self.nodes]  # each node's bus
        self._ll_bus = [n.split(".")[0] for n in ll_names]
        self._ll_base = np.array(ll_base)
        self.source_buses = {self.buses[0]}
        # Loads.
        self.load_names: list[str] = [n.lower() for n in dss.Loads.AllNames()] \
            if dss.Loads.Count() else []
        self.load_bus: dict[str, str] = {}
        kw, kvar = [], []
        for i, name in enumerate(self.load_names, start=1):
            dss.Loads.Idx(i)
            kw.append(dss.Loads.kW())
            kvar.append(dss.Loads.kvar())
            self.load_bus[name] = dss.CktElement.BusNames()[0].split(".")[0].lower()
        self.base_load_kw = np.array(kw, dtype=float)
        self.base_load_kvar = np.array(kvar, dtype=float)
        self._load_kw = self.base_load_kw.copy()
        self._load_kvar = self.base_load_kvar.copy()
        self._load_idx = {n: i for i, n in enumerate(self.load_names)}
        self._kvar_ratio = None  # _load_kvar_ratio, once per index
        self.loads_at_bus: dict[str, list[int]] = {}
        for i, name in enumerate(self.load_names):
            self.loads_at_bus.setdefault(self.load_bus[name], []).append(i)
        # Generators (including those added by the markets).
        self.generator_names: list[str] = [n.lower() for n in dss.Generators.AllNames()] \
            if dss.Generators.Count() else []
        self.generator_bus: dict[str, str] = {}
        gkw = []
        for i, name in enumerate(self.generator_names, start=1):
            dss.Generators.Idx(i)
            gkw.append(dss.Generators.kW())
            self.generator_bus[name] = dss.CktElement.BusNames()[0].split(".")[0].lower()
        self.base_gen_kw = np.array(gkw, dtype=float)
        self._gen_kw = self.base_gen_kw.copy()
        self._gen_idx = {n: i for i, n in enumerate(self.generator_names)}
        self._gen_rows = None  # _generator_rows' last answer
        # Power-delivery elements: lines and transformers, measured at terminal 1.
        pd_names = [n.lower() for n in dss.PDElements.AllNames()]
        nterm = np.array(dss.PDElements.AllNumTerminals(), dtype=np.int64)
        ncond = np.array(dss.PDElements.AllNumConductors(), dtype=np.int64)
        nphase = np.array(dss.PDElements.AllNumPhases(), dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(nterm * ncond)[:-1]])
        branch_rows, self.branch_names, phases = [], [], []
        for k, name in enumerate(pd_names):
            if name.startswith(("line.", "transformer.", "reactor.")):  # series elements
                branch_rows.append(k)
                self.branch_names.append(name)
                phases.append(nphase[k])
        self._branch_rows = np.array(branch_rows, dtype=np.int64)
        self._branch_start = starts[self._branch_rows]
        self._branch_phases = np.array(phases, dtype=np.int64)
        # Sum the phase powers of terminal 1 with one reduceat over a gathered index vector.
        gather, seg = [], []
        for s, p in zip(self._branch_start, self._branch_phases):
            seg.append(len(gather))
            gather.extend(range(s, s + p))
        self._flow_gather = np.array(gather, dtype=np.int64)
        self._flow_segments = np.array(seg, dtype=np.int64)
        if not hasattr(self, "base_normamps"):  # ratings as compiled; kept across re-indexing
            self.base_normamps = {}
            for name in self.branch_names:
                if name.startswith("line."):
                    dss.Lines.Name(name[5:])
                    self.base_normamps[name] = dss.Lines.NormAmps()
            self._normamps = dict(self.base_normamps)
        self._apply_cache = None  # bus -> load map of apply(), rebuilt on first use
        self._arrays = _ResultArrays(dss)
        self._is_line_branch = np.array([n.startswith("line.") for n in self.branch_names],
                                        dtype=bool)
        # Whose voltages are judged against the band: every node (or LL pair) but the source's.
        self._judged_node = np.array([b not in self.source_buses for b in self._node_bus],
                                     dtype=bool)
        self._judged_ll = np.array([b not in self.source_buses for b in self._ll_bus],
                                   dtype=bool)
        self._branch_pos = {n: i for i, n in enumerate(self.branch_names)}
        self._flow_plan = None  # branch_flows' gather plan, rebuilt for the new index
        self._batch = None
        self._node_base = self._is_line = None
        self._writer = self._dispatch_writer()
        if len(self.load_names) >= BATCH_MIN_LOADS:  # a large feeder: whole-class reads
            self._index_batches(nterm, ncond)

    def _dispatch_writer(self) -> _BatchIO | None:
        """The whole-class writer of the loads and generators, if the engine's batches hold
        them in ``load_names``/``generator_names`` order (else None: written one by one)."""
        try:
            writer = _BatchIO(self.dss, [])
        except (AttributeError, RuntimeError):  # pragma: no cover - an engine without batches
            return None
        if writer.names(writer.loads) != self.load_names or \
                writer.names(writer.generators) != self.generator_names:
            return None  # pragma: no cover - e.g. a disabled element in a class
        return writer

    def _index_batches(self, nterm: np.ndarray, ncond: np.ndarray) -> None:
        """What a large feeder's batch reads need: per element class, where its terminal-1
        phase conductors sit in the class's current array and which node each one is on."""
        try:
            batch = _BatchIO(self.dss, self.branch_names)
        except (AttributeError, RuntimeError):  # pragma: no cover - an engine without batches
            return
        key = (tuple(self.branch_names), tuple(self.nodes))
        layout = getattr(self, "_batch_layout", None)
        if layout is not None and layout[0] == key:  # re-indexed after adding a generator
            self._batch_reads = [(prefix, b, *rest) for (prefix, b, _), (_p, _b, *rest)
                                 in zip(batch.classes, self._batch_reads)]
            self._batch = batch
            return
        dss, el = self.dss, self.dss.CktElement
        node_pos = {n: i for i, n in enumerate(self.nodes)}
        ground = len(self.nodes)  # a node 0 conductor: index of an appended 0 V
        self._batch_reads = []
        if len(getattr(self, "_branch_normamps", ())) != len(self.branch_names):
            self._branch_normamps = np.zeros(len(self.branch_names))
            fill_amps = True
        else:
            fill_amps = False
        for prefix, b, pos in batch.classes:
            rows = self._branch_rows[pos]
            size = nterm[rows] * ncond[rows]
            starts = np.concatenate([[0], np.cumsum(size)[:-1]])
            gather, seg, nodes = [], [], []  # nodes: of every conductor of every terminal
            for k, s, ph, nt, nc in zip(pos, starts, self._branch_phases[pos], nterm[rows],
                                        ncond[rows]):
                seg.append(len(gather))
                gather.extend(range(s, s + ph))
                dss.Circuit.SetActiveElement(self.branch_names[k])
                if el.Enabled():
                    buses = [x.split(".")[0].lower() for x in el.BusNames()]
                    order = el.NodeOrder()
                    nodes.extend(node_pos[f"{buses[c // nc]}.{n}"] if n else ground
                                 for c, n in enumerate(order))
                else:  # switched off: no current, no nodes
                    nodes.extend([ground] * (nt * nc))
                if fill_amps:
                    self._branch_normamps[k] = el.NormalAmps()
            gather = np.array(gather, dtype=np.int64)
            nodes = np.array(nodes, dtype=np.int64)
            self._batch_reads.append((prefix, b, pos, gather, np.array(seg, dtype=np.int64),
                                      nodes[gather], nodes))
        self._batch = batch
        self._batch_layout = (key,)

    def _read_taps(self) -> dict[str, float]:
        taps = {}
        dss = self.dss
        if dss.RegControls.Count():
            for name in dss.RegControls.AllNames():
                dss.RegControls.Name(name)
                xf, wdg = dss.RegControls.Transformer(), dss.RegControls.Winding()
                dss.Transformers.Name(xf)
                dss.Transformers.Wdg(wdg)
                taps[f"{xf}|{wdg}"] = dss.Transformers.Tap()
        return taps

    def _read_capacitors(self) -> list[tuple[str, list[int]]]:
        """Every capacitor's steps (in or out), which capacitor controls switch."""
        dss, out = self.dss, []
        for i in range(1, dss.Capacitors.Count() + 1):
            dss.Capacitors.Idx(i)
            out.append((dss.Capacitors.Name(), list(dss.Capacitors.States())))
        return out

    def branch_elements(self) -> list[tuple[str, str, str, float]]:
        """Every line, transformer and series reactor in service, as ``(element, bus1, bus2,
        limit_kW)``.

        ``element`` is e.g. ``"line.l1"`` or ``"transformer.reg1a"``; ``bus1``/``bus2`` are
        its first two terminals' buses (lower case, no node suffix). The thermal limit is, for
        a line (or reactor), its compiled ampacity (``normamps``) x the L-N voltage base of
        ``bus1`` x its phases; for a transformer, the kVA of winding 1; ``inf`` when unknown
        (no ampacity or no voltage base). Elements that are disabled, or with a terminal whose
        phase conductors are all open (an open switch), are left out: they connect nothing.
        This is all ``Topology.from_grid`` reads of the engine.
        """
        dss = self.dss
        el = dss.CktElement
        out = []
        for name in self.branch_names:
            dss.Circuit.SetActiveElement(name)
            if not el.Enabled():
                continue
            nph = el.NumPhases()
            if any(all(el.IsOpen(t, p) for p in range(1, nph + 1))
                   for t in range(1, el.NumTerminals() + 1)):
                continue
            b1, b2 = (b.split(".")[0].lower() for b in el.BusNames()[:2])
            if name.startswith("transformer."):
                dss.Transformers.Name(name.split(".", 1)[1])
                dss.Transformers.Wdg(1)
                limit = float(dss.Transformers.kVA())
            else:  # a line, or a series reactor (its own normamps)
                kv_ln = self.bus_kv_ln.get(b1, 0.0)
                amps = self.base_normamps.get(name, 0.0) if name.startswith("line.") \
                    else el.NormalAmps()
                limit = float(nph * kv_ln * amps) if kv_ln and amps else math.inf
            out.append((name, b1, b2, limit))
        return out

    # ------------------------------------------------------------------ pickling
    def close(self) -> None:
        """Hand the OpenDSS engine back for reuse (the grid is unusable afterwards). When the
        grid is garbage-collected instead, the next grid built hands it back (``_TO_FREE``);
        calling this frees it sooner."""
        if "dss" in self.__dict__:
            self._settle_last()
        for fn, args in self._engine_release():
            fn(*args)
        _free_collected()

    def __del__(self):  # possibly in another thread: only queue the engine calls
        try:
            _TO_FREE.extend(self._engine_release())
        except Exception:  # noqa: BLE001 - interpreter shutdown: nothing left to release
            pass

    def _engine_release(self) -> list:
        """The calls that free this grid's engine, once: its batches' pointers (they point at
        the circuit's elements: none outlives the circuit, the engine may hold another grid's
        next), then the engine itself, cleared for the next grid."""
        dss = self.__dict__.pop("dss", None)
        if dss is None:
            return []
        calls = []
        for io in (self.__dict__.get("_writer"), self.__dict__.get("_batch")):
            if io is not None:
                calls += io.handover()
        self._writer = self._batch = None
        return calls + [(_release, (dss,))]

    def __getstate__(self):
        return {
            "init_args": self._init_args,
            "added": self._added,
            "load_kw": self._load_kw,
            "load_kvar": self._load_kvar,
            "gen_kw": self._gen_kw,
            "normamps": self._normamps,
        }

    def __setstate__(self, state):
        self._init_args = state["init_args"]
        self._added = state["added"]
        self._build()
        self._load_kw = np.array(state["load_kw"])
        self._load_kvar = np.array(state["load_kvar"])
        self._gen_kw = np.array(state["gen_kw"])
        for name, amps in state["normamps"].items():
            self._set_normamps(name, amps)

    # ------------------------------------------------------------------ dispatch
    def _check_bus(self, bus: str) -> str:
        b = str(bus).lower()
        if b not in self._bus_set:
            raise ValueError(f"unknown bus {bus!r}; valid buses: {', '.join(self.buses)}")
        return b

    def set_load_kw(self, load: str, kw: float, kvar: float | None = None) -> None:
        """Set one load's consumption; kvar keeps the load's base power factor if omitted."""
        name = str(load).lower()
        if name.startswith("load."):
            name = name[5:]
        if name not in self._load_idx:
            raise ValueError(f"unknown load {load!r}; valid loads: {', '.join(self.load_names)}")
        i = self._load_idx[name]
        kw = _check_finite(f"load {name}", kw, nonnegative=True)
        if kvar is None:
            base = self.base_load_kw[i]
            kvar = kw * self.base_load_kvar[i] / base if base else 0.0
        self._load_kw[i] = kw
        self._load_kvar[i] = _check_finite(f"load {name} kvar", kvar)

    def set_loads_kw(self, kw: np.ndarray, kvar: np.ndarray | None = None) -> None:
        """Set every load at once, in ``load_names`` order (the fast path)."""
        kw = np.asarray(kw, dtype=float)
        if kw.shape != self.base_load_kw.shape:
            raise ValueError(f"expected {self.base_load_kw.shape[0]} load values, got {kw.shape}")
        if not _finite_nonnegative(kw):
            _raise_first_bad(kw, lambda i: f"load {self.load_names[i]}")
        if kvar is None:
            kvar = kw * self._load_kvar_ratio()
        else:
            kvar = np.asarray(kvar, dtype=float)
            if kvar.shape != kw.shape or not np.isfinite(kvar).all():
                raise ValueError("kvar must be finite and shaped like kw")
        self._load_kw[:] = kw
        self._load_kvar[:] = kvar

    def _load_kvar_ratio(self) -> np.ndarray:
        """Each load's base kvar/kW (0 where its base kW is 0): kvar at its base power factor."""
        if self._kvar_ratio is None:
            with np.errstate(divide="ignore", invalid="ignore"):
                self._kvar_ratio = np.where(self.base_load_kw > 0,
                                            self.base_load_kvar / self.base_load_kw, 0)
        return self._kvar_ratio

    def scale_loads(self, factor: float | np.ndarray) -> None:
        """Set every load to ``factor`` times its base value (scalar or per load)."""
        f = np.broadcast_to(np.asarray(factor, dtype=float), self.base_load_kw.shape)
        self.set_loads_kw(self.base_load_kw * f, self.base_load_kvar * f)

    def set_bus_consumption(self, bus: str, kw: float) -> None:
        """Net consumption of a bus, shared over its loads in proportion to their base kW.

        A negative value is net injection: it needs a generator at the bus (see
        ``add_generator``); the loads then go to zero and the generator supplies the rest.
        """
        b = self._check_bus(bus)
        kw = _check_finite(f"bus {b}", kw)
        idx = self.loads_at_bus.get(b, [])
        gens = [g for g, gb in self.generator_bus.items() if gb == b and g.startswith("ogg_")]
        if kw >= 0:
            if not idx:
                raise ValueError(f"bus {b} has no load; buses with loads: "
                                 f"{', '.join(sorted(self.loads_at_bus))}")
            base = self.base_load_kw[idx]
            share = base / base.sum() if base.sum() > 0 else np.full(len(idx), 1 / len(idx))
            for i, s in zip(idx, share):
                self.set_load_kw(self.load_names[i], kw * s)
            for g in gens:
                self.set_generator_kw(g, 0.0)
        else:
            if not gens:
                raise ValueError(f"bus {b}: net injection needs a generator there "
                                 "(OpenDSSGrid.add_generator)")
            for i in idx:
                self.set_load_kw(self.load_names[i], 0.0)
            for g in gens:
                self.set_generator_kw(g, -kw / len(gens))

    @property
    def load_kw(self) -> np.ndarray:
        """The kW of every load now (``load_names`` order; a copy)."""
        return self._load_kw.copy()

    @property
    def generator_kw(self) -> dict[str, float]:
        """The kW of every generator now, by element name (``generator_names``)."""
        return dict(zip(self.generator_names, self._gen_kw.tolist()))

    @property
    def bus_load_kw(self) -> np.ndarray:
        """Nominal (base) load per bus, kW, in ``topology.buses`` order (0 where no load)."""
        return self._apply_maps()["bus_load_kw"].copy()

    def _apply_maps(self) -> dict:
        """The maps ``apply`` uses, built once per index and topology."""
        cache = self._apply_cache
        if cache is not None and cache["topology"] is self.topology:
            return cache
        buses = self.topology.buses
        pos = self.topology.bus_index
        # Each load takes a fixed share of its bus's consumption: kW = share * x[bus] (a gather;
        # the same numbers as the matrix product with the (loads x buses) share matrix).
        load_share = np.zeros(len(self.load_names))
        load_pos = np.zeros(len(self.load_names), dtype=np.int64)
        has_load = np.zeros(len(buses), dtype=bool)
        bus_load = np.zeros(len(buses))
        for bus, idx in self.loads_at_bus.items():
            if bus not in pos:
                raise FeederError(f"{self.name}: bus {bus} of load {self.load_names[idx[0]]} "
                                  "is not on the feeder's tree")
            j = pos[bus]
            base = self.base_load_kw[idx]
            total = base.sum()
            load_share[idx] = base / total if total > 0 else 1.0 / len(idx)
            load_pos[idx] = j
            has_load[j] = True
            bus_load[j] = total
        kvar_ratio = self._load_kvar_ratio()  # as set_loads_kw without kvar
        gen_rows = {}
        for name in self.generator_names:
            gen_rows[name] = gen_rows[f"generator.{name}"] = self._gen_idx[name]
        for name in self.added_generators:  # unprefixed names win over a feeder's own
            gen_rows[name.lower()] = self._gen_idx[f"ogg_{name}".lower()]
        added_rows = np.array([self._gen_idx[f"ogg_{n}".lower()] for n in self.added_generators],
                              dtype=np.int64)
        self._apply_cache = dict(topology=self.topology, load_share=load_share,
                                 load_pos=load_pos, has_load=has_load,
                                 no_load=(~has_load).astype(float),
                                 bus_load_kw=bus_load, kvar_ratio=kvar_ratio, gen_rows=gen_rows,
                                 added_rows=added_rows)
        return self._apply_cache

    def apply(self, consumption_kw: np.ndarray,
              generation_kw: dict[str, float] | np.ndarray | None = None) -> None:
        """Write one grid step's dispatch: consumption per bus and (optionally) generation.

        Args:
            consumption_kw: total kW drawn at each bus, in ``topology.buses`` order. A bus's
                value is shared over its loads in proportion to their base kW (equally if
                those are all 0); every load keeps its base power factor. A bus without loads
                must get 0.
            generation_kw: ``None`` (generators unchanged), ``{name: kW}`` with the names given
                to ``add_generator`` (``"ogg_<name>"`` and the feeder's own generators are
                accepted too), or an array in ``added_generators`` order. Generators not named
                keep their value.

        Raises ``ValueError`` naming the bus (or generator) for a NaN, infinite or negative
        value, or for consumption at a bus without loads; nothing changes then. Call ``solve``
        to run the power flow.
        """
        m = self._apply_maps()
        x = np.asarray(consumption_kw, dtype=float)
        if x.shape != m["has_load"].shape:
            raise ValueError(f"consumption_kw: expected {m['has_load'].shape[0]} values (one "
                             f"per topology bus), got shape {x.shape}")
        # (the full check only when the quick one fails: at a bus without loads, a finite
        # value >= 0 adds to the dot product exactly when it is not 0)
        if not (_finite_nonnegative(x) and x.dot(m["no_load"]) == 0.0):
            bad = ~np.isfinite(x) | (x < 0) | ((x != 0) & ~m["has_load"])
            if bad.any():
                j = int(np.flatnonzero(bad)[0])
                bus = self.topology.buses[j]
                if m["has_load"][j] or not np.isfinite(x[j]) or x[j] < 0:
                    raise ValueError(f"bus {bus}: consumption must be finite and >= 0, got "
                                     f"{x[j]!r}")
                raise ValueError(f"bus {bus} has no load, so its consumption must be 0 (got "
                                 f"{x[j]!r}); buses with loads: "
                                 f"{', '.join(sorted(self.loads_at_bus))}")
        rows = vals = None
        if generation_kw is not None:
            if isinstance(generation_kw, dict):
                labels = list(generation_kw)
                rows = self._named_rows(labels, m)
                vals = np.array(list(generation_kw.values()), dtype=float)
            else:
                vals = np.asarray(generation_kw, dtype=float)
                rows = m["added_rows"]
                if vals.shape != rows.shape:
                    raise ValueError(f"generation_kw: expected {rows.shape[0]} values (one per "
                                     f"added generator: {self.added_generators}), got shape "
                                     f"{vals.shape}")
                labels = self.added_generators
            if not _finite_nonnegative(vals):
                _raise_first_bad(vals, lambda k: f"generator {labels[k]}")
        kw = np.multiply(m["load_share"], x[m["load_pos"]], out=self._load_kw)
        np.multiply(kw, m["kvar_ratio"], out=self._load_kvar)
        if rows is not None:
            self._gen_kw[rows] = vals

    def _named_rows(self, names: list, maps: dict) -> np.ndarray:
        """Rows of generators named as ``apply`` takes them (cached for the last names)."""
        key = tuple(names)
        cached = maps.get("named_rows")
        if cached is None or cached[0] != key:
            rows = []
            for name in key:
                row = maps["gen_rows"].get(str(name).lower())
                if row is None:
                    valid = ", ".join(self.added_generators + self.generator_names) or "none"
                    raise ValueError(f"unknown generator {name!r}; valid: {valid}")
                rows.append(row)
            cached = maps["named_rows"] = (key, np.array(rows, dtype=np.int64))
        return cached[1]

    def add_generator(self, name: str, bus: str, kw: float = 0.0, kva: float | None = None,
                      pf: float = 1.0, *, _record: bool = True) -> str:
        """A distributed generator (constant P at power factor ``pf``) at ``bus``.

        Returns the element name (``ogg_<name>``). Added elements survive ``reset``.
        """
        b = self._check_bus(bus)
        kw = _check_finite(f"generator {name}", kw, nonnegative=True)
        el = f"ogg_{name}".lower()
        if el in self._gen_idx:
            raise ValueError(f"generator {name!r} already exists")
        self._settle_last()  # the circuit changes: the last result reads its currents now
        nph, kv = self._bus_phases_kv(b)
        kva = kva if kva is not None else max(kw, 1.0) * 1.2
        nodes = ".".join(map(str, self.dss.Bus.Nodes()))  # e.g. 810.2: not node 1 by default
        conn = "delta" if self.delta and nph > 1 else "wye"  # an ungrounded feeder has no neutral
        self.dss.Text.Command(
            f"new generator.{el} bus1={b}.{nodes} phases={nph} kv={kv:.6g} kw={kw:.6g} "
            f"pf={pf:.6g} kva={kva:.6g} conn={conn} model=1 vminpu=0.7 vmaxpu=1.3"
        )
        if _record:
            self._added.append(("add_generator", (name, bus), dict(kw=kw, kva=kva, pf=pf)))
        self.added_generators.append(name)
        self._reindex_preserving_dispatch()
        return el

    def add_storage(self, name: str, bus: str, kw_rated: float, kwh_rated: float,
                    soc: float = 0.5, *, _record: bool = True) -> str:
        """A battery at ``bus``; dispatch it with ``set_storage_kw`` (discharge > 0).

        The state of charge is tracked by the grid layer per grid step of ``hours``.
        """
        b = self._check_bus(bus)
        kw_rated = _check_finite(f"storage {name} kW rating", kw_rated, nonnegative=True)
        kwh_rated = _check_finite(f"storage {name} kWh rating", kwh_rated, nonnegative=True)
        if not 0.0 <= soc <= 1.0:
            raise ValueError(f"storage {name}: soc must be in [0, 1], got {soc}")
        el = self.add_generator(f"storage_{name}", b, 0.0, kva=kw_rated * 1.2, _record=False)
        self.added_generators.pop()  # a battery is dispatched with set_storage_kw
        if _record:
            self._added.append(("add_storage", (name, bus), dict(kw_rated=kw_rated,
                                                                 kwh_rated=kwh_rated, soc=soc)))
        if not hasattr(self, "storage"):
            self.storage = {}
        self.storage[name] = {"element": el, "kw_rated": kw_rated, "kwh_rated": kwh_rated,
                              "soc0": soc, "soc": soc}
        return el

    def set_storage_kw(self, name: str, kw: float, hours: float = 1.0) -> None:
        """Discharge (> 0) or charge (< 0) a battery for one grid step of ``hours``."""
        st = getattr(self, "storage", {}).get(name)
        if st is None:
            raise ValueError(f"unknown storage {name!r}; valid: "
                             f"{', '.join(getattr(self, 'storage', {})) or 'none'}")
        kw = _check_finite(f"storage {name}", kw)
        if abs(kw) > st["kw_rated"] + 1e-9:
            raise ValueError(f"storage {name}: |{kw}| kW exceeds its rating {st['kw_rated']}")
        soc = st["soc"] - kw * hours / st["kwh_rated"] if st["kwh_rated"] else st["soc"]
        if soc < -1e-9 or soc > 1 + 1e-9:
            raise ValueError(f"storage {name}: {kw} kW for {hours} h takes the state of charge "
                             f"to {soc:.3f}, outside [0, 1]")
        st["soc"] = min(max(soc, 0.0), 1.0)
        self._gen_kw[self._gen_idx[st["element"]]] = kw

    def set_generator_kw(self, generator: str, kw: float) -> None:
        row = self._generator_row(generator)
        self._gen_kw[row] = _check_finite(f"generator {self.generator_names[row]}", kw,
                                          nonnegative=True)

    def _generator_row(self, generator: str) -> int:
        """Where a generator sits in ``generator_names``: its element name, with or without
        ``generator.``, or the name given to ``add_generator`` when no feeder generator has
        it."""
        name = str(generator).lower()
        if name.startswith("generator."):
            name = name[10:]
        if name not in self._gen_idx and f"ogg_{name}" in self._gen_idx:
            name = f"ogg_{name}"
        if name not in self._gen_idx:
            raise ValueError(f"unknown generator {generator!r}; valid: "
                             f"{', '.join(self.generator_names) or 'none'}")
        return self._gen_idx[name]

    def set_generators_kw(self, kw: np.ndarray, names=None) -> None:
        """Set every generator at once, in ``generator_names`` order; or, given ``names`` (a
        list of generators as ``set_generator_kw`` takes them), those, in that order, with
        ``set_generator_kw``'s checks (finite, >= 0)."""
        kw = np.asarray(kw, dtype=float)
        rows = slice(None) if names is None else self._generator_rows(names)
        size = len(self._gen_kw) if names is None else len(rows)
        if kw.shape != (size,):
            raise ValueError(f"expected {size} generator values, got {kw.shape}")
        if names is None:
            bad = ~np.isfinite(kw)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise ValueError(f"generator {self.generator_names[i]}: kW must be finite")
        elif not _finite_nonnegative(kw):
            i = int(np.flatnonzero(~(np.isfinite(kw) & (kw >= 0)))[0])
            self.set_generator_kw(names[i], kw[i])  # raises set_generator_kw's error
        self._gen_kw[rows] = kw

    def _generator_rows(self, names) -> np.ndarray:
        """Where generators ``names`` sit in ``generator_names`` (cached for the last list)."""
        key = tuple(names)
        cached = self._gen_rows
        if cached is None or cached[0] != key:
            rows = [self._generator_row(name) for name in key]
            cached = self._gen_rows = (key, np.array(rows, dtype=np.int64))
        return cached[1]

    def scale_line_ratings(self, factor: float, lines: list[str] | None = None) -> None:
        """Set the ampacity of some (default: all) lines to ``factor`` times the compiled one.

        Ratings are configuration, not dispatch: ``reset`` keeps them; ``restore_ratings``
        returns to the compiled values."""
        factor = _check_finite("line rating factor", factor, nonnegative=True)
        names = self.base_normamps if lines is None else [self._line_name(n) for n in lines]
        for name in names:
            self._set_normamps(name, self.base_normamps[name] * factor)

    def restore_ratings(self) -> None:
        """All line ratings back to the values the model was compiled with."""
        for name, amps in self.base_normamps.items():
            if self._normamps[name] != amps:
                self._set_normamps(name, amps)

    def _line_name(self, line: str) -> str:
        n = str(line).lower()
        n = n if n.startswith("line.") else f"line.{n}"
        if n not in self.base_normamps:
            raise ValueError(f"unknown line {line!r}; valid: {', '.join(self.base_normamps)}")
        return n

    def _set_normamps(self, name: str, amps: float) -> None:
        self.dss.Lines.Name(name[5:])
        self.dss.Lines.NormAmps(amps)
        if getattr(self, "_batch", None) is not None:
            self._branch_normamps[self.branch_names.index(name)] = amps
        self._normamps[name] = amps

    def _bus_phases_kv(self, bus: str) -> tuple[int, float]:
        self.dss.Circuit.SetActiveBus(bus)
        nph = len(self.dss.Bus.Nodes())
        kv_ln = self.dss.Bus.kVBase()
        kv = kv_ln * math.sqrt(3.0) if nph > 1 else kv_ln
        return nph, kv

    def _reindex_preserving_dispatch(self) -> None:
        self._written = None
        load_kw, load_kvar = self._load_kw.copy(), self._load_kvar.copy()
        gen = dict(zip(self.generator_names, self._gen_kw))
        self._index()
        self._load_kw, self._load_kvar = load_kw, load_kvar
        for name, kw in gen.items():
            self._gen_kw[self._gen_idx[name]] = kw

    # ------------------------------------------------------------------ reset and solve
    def reset(self) -> None:
        """Back to the base case: base loads, generators at their base output, batteries at
        their initial charge, regulator taps and capacitor steps where the compile's base
        solve left them, every control (regulators, capacitors, switches, inverters) without
        pending actions or timers (OpenDSS's ``Reset Controls``), every element's admittance
        and the system matrix rebuilt (``_rebuild_admittances``), and the next solve starting
        from OpenDSS's own initial guess, not from the last solution's voltages (so an
        episode's power flows do not depend on what the engine solved before; after a solve
        that failed to converge, to about 1e-8 kW only: it leaves its mark in OpenDSS's
        state).

        Elements added with ``add_generator``/``add_storage`` and line ratings set with
        ``scale_line_ratings`` stay (they are configuration); nothing is recompiled.
        """
        self._settle_last()  # the taps change: the last result reads what it has not yet
        self._load_kw[:] = self.base_load_kw
        self._load_kvar[:] = self.base_load_kvar
        self._gen_kw[:] = self.base_gen_kw
        for st in getattr(self, "storage", {}).values():
            st["soc"] = st["soc0"]
        dss = self.dss
        dss.Text.Command("reset controls")  # every control: no pending action or timer
        for key, tap in self._base_taps.items():
            xf, wdg = key.split("|")
            dss.Transformers.Name(xf)
            dss.Transformers.Wdg(int(wdg))
            dss.Transformers.Tap(tap)
        for name, states in self._base_capacitors:
            dss.Capacitors.Name(name)
            dss.Capacitors.States(states)
        dss.YMatrix.SolutionInitialized(False)
        self._rebuild_admittances()
        self._diverged = False  # (a failed solve's restart from a direct solution: not now)

    def _rebuild_admittances(self) -> None:
        """Write the (base) dispatch, recompute every element's admittance (Yprim) and build
        the system matrix from them, as a new engine has them: with ``SOLVER_OPTIONS`` the
        matrix is otherwise updated in place and loads keep the admittance of an earlier
        solve, so a power flow would depend on what the engine solved before. A change of the
        solution frequency is what makes OpenDSS recompute them all; the frequency itself
        ends where it was."""
        self._write_dispatch()
        solution = self.dss.Solution
        f = solution.Frequency()
        solution.Frequency(f * (1 + 1e-6))
        solution.Frequency(f)
        self.dss.YMatrix.BuildYMatrixD(int(YMatrixModes.WholeMatrix), False)

    def _write_dispatch(self) -> None:
        """Write the loads and generators, if any of their values changed since the last
        write: all loads in two whole-class calls (kW, then kvar) and all generators in one
        (``_BatchIO``, with the per-element setters' semantics: the same solutions bit for
        bit), checked for an engine error once at the end. Without a writer (an engine whose
        batches do not hold them in index order) element by element, only the changed ones,
        through the same C-API setters as ``dss.Loads.kW(...)`` called directly."""
        kw, kvar, gkw = self._load_kw, self._load_kvar, self._gen_kw
        now = (kw.tobytes(), kvar.tobytes(), gkw.tobytes())  # a cheap exact comparison
        written = self._written
        if written is None:
            loads = gens = True
        else:
            loads = now[0] != written[0] or now[1] != written[1]
            gens = now[2] != written[2]
            if not (loads or gens):
                return
        if self._writer is not None:
            if loads:
                self._writer.set_loads(kw, kvar)
            if gens:
                self._writer.set_generators(gkw)
        else:
            self._write_elements(written)
        self.dss.Loads._check_for_error()  # raises the engine's error, if any, as opendssdirect
        self._written = now

    _written = None  # the bytes of the last values written: load kW, load kvar, generator kW

    def _write_elements(self, written) -> None:
        """``_write_dispatch`` element by element: the values that changed since ``written``
        (all of them when it is None or of another shape), in index order (index, kW, kvar)."""
        last = None if written is None else [np.frombuffer(b) for b in written]
        if last is None or last[0].shape != self._load_kw.shape \
                or last[2].shape != self._gen_kw.shape:
            changed_loads = range(len(self.load_names))
            changed_gens = range(len(self.generator_names))
        else:
            changed_loads = np.flatnonzero((last[0] != self._load_kw)
                                           | (last[1] != self._load_kvar)).tolist()
            changed_gens = np.flatnonzero(last[2] != self._gen_kw).tolist()
        kw, kvar, gkw = self._load_kw.tolist(), self._load_kvar.tolist(), self._gen_kw.tolist()
        lib = self.dss._api_util.lib  # C-API functions with this engine's context bound
        set_idx, set_kw, set_kvar = lib.Loads_Set_idx, lib.Loads_Set_kW, lib.Loads_Set_kvar
        for i in changed_loads:
            set_idx(i + 1)
            set_kw(kw[i])
            set_kvar(kvar[i])
        set_idx, set_kw = lib.Generators_Set_idx, lib.Generators_Set_kW
        for i in changed_gens:
            set_idx(i + 1)
            set_kw(gkw[i])

    # Diagnostics: seconds OpenDSS itself spent in the last solve, and in every solve so far.
    last_solve_s: float = 0.0
    solve_seconds: float = 0.0

    def _solve_raw(self) -> tuple[bool, str]:
        t0 = time.perf_counter()
        try:
            if getattr(self, "_diverged", False):
                # OpenDSS iterates from the last voltages; after a failure restart from a
                # direct (admittance-model) solution instead of the diverged state.
                self.dss.Solution.SolveDirect()
            self.dss.Solution.Solve()
            self.last_solve_s = time.perf_counter() - t0
            self.solve_seconds += self.last_solve_s
        except Exception as exc:
            self.solve_seconds += time.perf_counter() - t0
            self._diverged = True
            return False, str(exc)
        if not self.dss.Solution.Converged():
            self._diverged = True
            return False, f"no convergence in {self.dss.Solution.Iterations()} iterations"
        self._diverged = False
        return True, ""

    def run_power_flow(self) -> bool:
        """Write the dispatch and solve, without building a result (the bare step that
        ``solve`` and the benchmarks' floor share); True if it converged. Read the numbers
        with ``read_arrays``."""
        self._settle_last()
        self._write_dispatch()
        return self._solve_raw()[0]

    _last_lazy = None  # weak reference to the last large-feeder result (not read in full)

    def _settle_last(self) -> None:
        """Let the last large-feeder result read what it has not read yet, while the engine
        still holds its solution (before a solve, a rating change or closing)."""
        ref, self._last_lazy = self._last_lazy, None
        res = ref() if ref is not None else None
        if res is not None:
            res.settle()

    def solve(self) -> PowerFlowResult:
        """Apply the current dispatch and run one power flow."""
        self._settle_last()
        self._write_dispatch()
        converged, message = self._solve_raw()
        if not converged:
            return self._failed_result(message)
        if self._batch is not None:
            return self._read_result_batch()
        return self._read_result()

    def _failed_result(self, message: str) -> PowerFlowResult:
        nan = float("nan")
        res = PowerFlowResult(
            converged=False,
            iterations=int(self.dss.Solution.Iterations()),
            voltages_pu=dict.fromkeys(self.nodes, nan),
            voltages_ll_pu=dict.fromkeys(self._ll_names, nan),
            line_flows_kw=dict.fromkeys(self.branch_names, nan),
            line_loading_pct=dict.fromkeys(self.branch_names, nan),
            losses_kw=nan, losses_kvar=nan, substation_kw=nan, substation_kvar=nan,
            message=message, line_flows_kvar=dict.fromkeys(self.branch_names, nan),
        )
        res._delta = self.delta
        return res

    def read_arrays(self) -> dict[str, np.ndarray]:
        """The raw bulk reads of the last solve, as arrays (nodes, LL pairs, branches)."""
        vmag, volts, powers, pct = self._arrays.solution(totals=False)
        flows, kvar = _terminal_sums(powers, self._flow_gather, self._flow_segments)
        return {"v_pu": vmag, "v_ll_pu": _line_to_line(volts, self._ll_pairs, self._ll_base),
                "flow_kw": flows, "flow_kvar": kvar, "loading_pct": pct[self._branch_rows]}

    def _read_result(self) -> PowerFlowResult:
        """The result of the last solve: every number read now as arrays, the violations and
        overloads found on them; what only some grid steps use is computed from those arrays
        when first used (``_LazyPowerFlowResult``): the name-keyed dicts, the line-to-line
        voltages of a wye feeder and the branch flows."""
        vmag, volts, powers, pct, losses, total = self._arrays.solution()
        pct = pct[self._branch_rows]
        low, high = self.voltage_band
        tol = 1e-5  # the source holds the head bus at exactly the band's edge (1.05 pu)
        pairs, ll_base, gather, seg = self._ll_pairs, self._ll_base, self._flow_gather, \
            self._flow_segments
        branches, nodes, ll_names = self.branch_names, self.nodes, self._ll_names
        if self.delta:
            vll = _line_to_line(volts, pairs, ll_base)
            judged, names, judged_bus, runs = vll, ll_names, self._judged_ll, self._ll_runs
            buses = self._ll_bus
        else:
            vll = None
            judged, names, judged_bus, runs = vmag, nodes, self._judged_node, self._node_runs
            buses = self._node_bus
        out = (((judged < low - tol) | (judged > high + tol)) & judged_bus).nonzero()[0]
        at = out.tolist()
        violations = judged[out].tolist() if at else []
        over = ((pct > 100.0) & self._is_line_branch).nonzero()[0].tolist()
        flows = []  # (kW, kvar) per branch, summed over terminal 1's phases when first used

        def branch_flows() -> tuple[np.ndarray, np.ndarray]:
            if not flows:
                flows.extend(_terminal_sums(powers, gather, seg))
            return flows[0], flows[1]

        def bus_voltages() -> dict[str, float]:  # PowerFlowResult.bus_voltages, on arrays
            if runs is None or not np.isfinite(judged).all():
                return _worst_of(buses, judged.tolist())
            return _worst_per_run(judged, runs)

        res = _LazyPowerFlowResult.__new__(_LazyPowerFlowResult)
        res.__dict__.update(
            converged=True, iterations=int(self._arrays.iterations()),
            losses_kw=float(losses[0]) / 1000.0, losses_kvar=float(losses[1]) / 1000.0,
            substation_kw=-float(total[0]), substation_kvar=-float(total[1]), message="",
            _delta=self.delta,
            voltage_violations=dict(zip([names[k] for k in at], violations)),
            thermal_overloads=dict(zip([branches[k] for k in over], pct[over].tolist()))
            if over else {},
            _lazy={"build": {
                "voltages_pu": lambda: dict(zip(nodes, vmag.tolist())),
                "voltages_ll_pu": lambda: dict(zip(ll_names, (
                    _line_to_line(volts, pairs, ll_base) if vll is None else vll).tolist())),
                "line_flows_kw": lambda: dict(zip(branches, branch_flows()[0].tolist())),
                "line_flows_kvar": lambda: dict(zip(branches, branch_flows()[1].tolist())),
                "line_loading_pct": lambda: dict(zip(branches, pct.tolist())),
                "_flows": branch_flows,
            }, "bus_voltages": bus_voltages,
               "bus_voltage_violations": lambda: _worst_of([buses[k] for k in at], violations)})
        return res

    def _read_result_batch(self) -> PowerFlowResult:
        """``_read_result`` for a large feeder (``_LazyPowerFlowResult``): the voltages, their
        violations and the substation's totals now; the branch currents when a branch
        quantity or the losses are first used. On IEEE 8500 computing the currents costs about
        twice the re-solve, whether read in one batch per element class or summed inside
        OpenDSS by ``Circuit.Losses``: a grid step that needs only voltages skips it."""
        dss = self.dss
        volts = self._batch.circuit("AllBusVolts").view(np.complex128)
        v0 = np.append(volts, 0.0)  # + a 0 V "node" for conductors on ground
        v = v0[:-1]
        if self._node_base is None:  # V base (volts L-N) of every node, once per index
            self._node_base = np.array([self.bus_kv_ln[n.split(".")[0]] * 1000.0
                                        for n in self.nodes])
        with np.errstate(divide="ignore", invalid="ignore"):
            vmag = np.where(self._node_base > 0, np.abs(v) / self._node_base, 0.0)
        total = self._batch.circuit("TotalPower")
        low, high = self.voltage_band
        tol = 1e-5
        pairs, ll_base = self._ll_pairs, self._ll_base

        def line_to_line() -> np.ndarray:
            if not len(pairs):
                return np.zeros(0)
            return np.abs(v[pairs[:, 0]] - v[pairs[:, 1]]) / ll_base

        judged, names = (line_to_line(), self._ll_names) if self.delta else (vmag, self.nodes)
        out = np.flatnonzero((judged < low - tol) | (judged > high + tol))
        if self._is_line is None:
            self._is_line = np.array([n.startswith("line.") for n in self.branch_names])
        branch = self._branch_reader(v0, self._branch_normamps.copy(), self._is_line)
        branches = self.branch_names
        res = _LazyPowerFlowResult.__new__(_LazyPowerFlowResult)
        res.__dict__.update(
            converged=True, iterations=int(dss.Solution.Iterations()),
            substation_kw=-float(total[0]), substation_kvar=-float(total[1]), message="",
            _delta=self.delta,
            voltage_violations={names[k]: float(judged[k]) for k in out
                                if names[k].split(".")[0] not in self.source_buses},
            _lazy={"build": {
                "voltages_pu": lambda: dict(zip(self.nodes, vmag.tolist())),
                "voltages_ll_pu": lambda: dict(zip(self._ll_names, line_to_line().tolist())),
                "losses_kw": lambda: branch()["losses_kw"],
                "losses_kvar": lambda: branch()["losses_kvar"],
                "line_flows_kw": lambda: dict(zip(branches, branch()["flows"][0].tolist())),
                "line_flows_kvar": lambda: dict(zip(branches, branch()["flows"][1].tolist())),
                "line_loading_pct": lambda: dict(zip(branches, branch()["pct"].tolist())),
                "thermal_overloads": lambda: branch()["thermal_overloads"],
                "_flows": lambda: branch()["flows"],
            }, "read": branch})
        self._last_lazy = weakref.ref(res)
        return res

    def _branch_reader(self, v0: np.ndarray, normamps: np.ndarray, is_line: np.ndarray):
        """A function that reads the branch currents of the engine's solution once and
        returns what a result's branch fields are made of: terminal-1 kW and kvar = V conj(I)
        over the phase conductors (``flows``, arrays in ``branch_names`` order), loading = the
        largest of their currents over the normal rating (``pct``; what OpenDSS's Powers and
        pctNorm give, from one computation of the currents), the overloaded lines and the
        losses: what flows into the series elements through all their terminals (what
        ``Circuit.Losses`` sums). The name-keyed dicts are built from these arrays when first
        used (thousands of branches on a large feeder; most steps use none)."""
        done: dict = {}

        def read() -> dict:
            if done:
                return done
            s1 = np.zeros(len(self.branch_names), dtype=complex)
            amps = np.zeros(len(self.branch_names))
            losses = 0.0j
            for _prefix, b, pos, gather, seg, node, all_nodes in self._batch_reads:
                i_all = self._batch.currents(b).view(np.complex128)
                losses += (v0[all_nodes] * i_all.conj()).sum()  # V conj(I), every conductor
                i1 = i_all[gather]
                s1[pos] = np.add.reduceat(v0[node] * i1.conj(), seg) / 1000.0
                amps[pos] = np.maximum.reduceat(np.abs(i1), seg)
            with np.errstate(divide="ignore", invalid="ignore"):
                pct = np.where(normamps > 0, 100.0 * amps / normamps, 0.0)
            names = self.branch_names
            done.update(
                losses_kw=losses.real / 1000.0, losses_kvar=losses.imag / 1000.0,
                flows=(s1.real.copy(), s1.imag.copy()), pct=pct,
                thermal_overloads={names[k]: float(pct[k])
                                   for k in np.flatnonzero((pct > 100.0) & is_line)})
            return done

        return read

    # ------------------------------------------------------------------ the market's view
    def net_injection_kw(self) -> np.ndarray:
        """Generation minus consumption written on the feeder, kW per topology bus: the
        loads' and generators' (and batteries') set points of the current dispatch, the ``p``
        of the markets' lossless model ``f = H @ p`` at that dispatch."""
        cached = getattr(self, "_injection_map", None)
        if cached is None or cached[0] is not self.topology or \
                len(cached[2]) != len(self._load_kw) + len(self._gen_kw):
            bi, sink = self.topology.bus_index, len(self.topology.buses)  # sink: off the tree
            cached = self._injection_map = (self.topology, sink + 1, np.array(
                [bi.get(self.load_bus[n], sink) for n in self.load_names]
                + [bi.get(self.generator_bus[n], sink) for n in self.generator_names],
                dtype=np.int64))
        _topology, size, at = cached
        if not len(at):  # (bincount of no weights counts in integers)
            return np.zeros(size - 1)
        # One pass in element order (loads, then generators): np.add.at's sums, bit for bit.
        return np.bincount(at, np.concatenate([-self._load_kw, self._gen_kw]),
                           minlength=size)[:-1]

    def branch_flows(self, result: PowerFlowResult, branches=None) -> np.ndarray:
        """AC power into topology branches at their source-side end, kW + j kvar (complex),
        positive away from the source, summed over a branch's parallel elements (a bank of
        single-phase regulators): the per-element terminal-1 powers of ``result``
        (``line_flows_kw``/``line_flows_kvar``) turned where an element's first terminal is
        its downstream bus. ``branches``: topology branch names (default: all, in order)."""
        topo = self.topology
        names = tuple(br.name for br in topo.branches) if branches is None else tuple(branches)
        plan = getattr(self, "_flow_plan", None)
        if plan is None or plan[0] != names:  # which elements, where, which way: once
            rows, elements, signs = [], [], []
            for j, name in enumerate(names):
                br = topo.branches[topo.branch_index[name]]
                for el in br.elements:
                    rows.append(j)
                    elements.append(el)
                    signs.append(self._element_sign(el, br.parent))
            plan = (names, np.array(rows, dtype=np.int64), elements, np.array(signs))
            self._flow_plan = plan
        rows, elements, signs = plan[1:4]
        flows = getattr(result, "_flows", None)  # a small feeder's arrays (branch_names order)
        if flows is not None and len(flows[0]) == len(self.branch_names):
            if len(plan) == 4:
                plan = self._flow_plan = (*plan, np.array([self._branch_pos[e]
                                                           for e in elements], dtype=np.int64))
            at = plan[4]
            s = signs * (flows[0][at] + 1j * flows[1][at])
        else:
            kw, kvar = result.line_flows_kw, result.line_flows_kvar
            s = signs * (np.array([kw[e] for e in elements], dtype=float)
                         + 1j * np.array([kvar[e] for e in elements], dtype=float))
        out = np.zeros(len(names), dtype=complex)
        np.add.at(out, rows, s)
        return out

    def _element_sign(self, element: str, parent: str) -> float:
        """+1 if ``element``'s first terminal is on ``parent`` (the source side), else -1."""
        self.dss.Circuit.SetActiveElement(element)
        bus1 = self.dss.CktElement.BusNames()[0].split(".")[0].lower()
        return 1.0 if bus1 == parent else -1.0

    # ------------------------------------------------------------------ drawing
    def draw(self, values: dict[str, float] | None = None, **kwargs):
        """Draw the feeder with a colour per bus; see ``ogg_envs.grid.plotting.draw_feeder``."""
        from .plotting import draw_feeder

        return draw_feeder(self, values, **kwargs)

    def __repr__(self) -> str:
        return (f"OpenDSSGrid({self.name!r}: {len(self.buses)} buses, {len(self.load_names)} "
                f"loads, {len(self.generator_names)} generators, {len(self.branch_names)} "
                "branches)")
