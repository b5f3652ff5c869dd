"""Typed scenarios: which feeder, who participates where, line limits and the hourly profiles.

A scenario is a TOML file (the bundled ones live in the top-level ``scenarios/`` folder,
installed as ``ogg_envs.scenarios``), a path, or a dict. Each environment declares its schema
as dataclasses — one per TOML section, each default stated once — and ``load_scenario`` reads
a file into them: an unknown key is refused with a suggestion (``[grid] limit_kw`` -> "did you
mean limits_kw?"), a missing required key or section is named, and environment arguments
override the scenario the same way everywhere (``env(flexible_share=0.5)`` is the scenario's
``[consumers] flexible_share``). Keys every environment shares::

    name = "topology-power/default"      # label
    feeder = "ieee34"                    # bundled feeder name, or a path to a master .dss
    horizon = 24                         # grid steps per episode (hours)
    start_hour = 0                       # profile hour of the first grid step
    profiles = "day_profiles"            # a bundled profile set, or a CSV path (see below)
    [grid]
    rating_scale = 1.0                   # multiplies every line ampacity (OpenDSS and market)
    voltage_band = [0.95, 1.05]
    [grid.limits_kw]                     # market line limits (branch "parent-child" -> kW)
    "852r-832" = 900.0

``profiles`` is either the name of a bundled profile set (``"day_profiles"``, see
``scenarios/profiles/``) or a CSV path, relative to the scenario file's folder; a relative path
that does not exist there but does among the bundled files is the bundled file, so a copied
bundled scenario keeps working anywhere.

Example::

    from ogg_envs.scenario import load_scenario
    from ogg_envs.envs.topology_power_v0 import TopologyPowerScenario
    sc = load_scenario("topology_power", TopologyPowerScenario, {"consumers.flexible_share": 0.5})
    sc.consumers.flexible_share   # 0.5
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import functools
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

__all__ = ["ScenarioError", "Scenario", "GridSection", "load_scenario", "load_profiles",
           "bundled_scenarios", "bundled_dir", "per_item", "parse_section", "grid_from_scenario",
           "MAX_PRICE", "MAX_KW", "check_price"]


class ScenarioError(ValueError):
    """A scenario that cannot be used (unknown or missing key, wrong type or value)."""


def bundled_dir() -> Path:
    return Path(str(resources.files("ogg_envs.scenarios")))


def bundled_scenarios() -> list[str]:
    """Names of the bundled scenario files (without .toml)."""
    return sorted(p.stem for p in bundled_dir().glob("*.toml"))


# ---------------------------------------------------------------------- sections
@dataclass
class GridSection:
    rating_scale: float = 1.0
    voltage_band: tuple[float, float] = (0.95, 1.05)
    limits_kw: dict[str, float] = field(default_factory=dict)

    def __post_init__(self):
        if not (math.isfinite(self.rating_scale) and self.rating_scale > 0):
            raise ScenarioError(f"[grid] rating_scale must be > 0, got {self.rating_scale}")
        band = tuple(float(v) for v in self.voltage_band)
        if len(band) != 2 or not 0 < band[0] < band[1]:
            raise ScenarioError(f"[grid] voltage_band must be [low, high] with 0 < low < high, "
                                f"got {list(self.voltage_band)}")
        self.voltage_band = band
        for name, kw in self.limits_kw.items():
            if not isinstance(kw, (int, float)) or isinstance(kw, bool) or not kw >= 0:
                raise ScenarioError(f"[grid.limits_kw] {name!r} must be a number >= 0 (kW), "
                                    f"got {kw!r}")
        self.limits_kw = {str(k).lower(): float(v) for k, v in self.limits_kw.items()}


@dataclass
class Scenario:
    """The keys every environment's scenario has; an environment subclasses it with its own
    sections (and its own defaults for these)."""

    name: str = ""
    feeder: str = "ieee34"
    horizon: int = 24
    start_hour: int = 0
    profiles: str = "day_profiles"
    grid: GridSection = field(default_factory=GridSection)
    source_dir: str = ""  # the scenario file's folder (set by load_scenario, not a TOML key)

    def __post_init__(self):
        if self.horizon < 1:
            raise ScenarioError(f"horizon must be >= 1, got {self.horizon}")
        if self.start_hour < 0:
            raise ScenarioError(f"start_hour must be >= 0, got {self.start_hour}")

    def path(self, rel: str) -> Path:
        """A path named by the scenario: absolute, relative to its file's folder, or bundled."""
        p = Path(rel)
        if p.is_absolute():
            return p
        here = Path(self.source_dir or bundled_dir()) / p
        if here.exists():
            return here
        bundled = bundled_dir() / p
        return bundled if bundled.exists() else here


_NOT_KEYS = {"source_dir"}


def _fields(cls) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls) if f.name not in _NOT_KEYS}


def _suggest(key: str, valid) -> str:
    close = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def _convert(value, hint, where: str):
    origin = typing.get_origin(hint)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if origin in (typing.Union, types.UnionType) and len(args) == 1:
        hint, origin = args[0], typing.get_origin(args[0])  # "X | None": None is the default
    if hint is list or origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ScenarioError(f"{where} must be a list, got {value!r}")
        if origin is tuple and len(value) != len(typing.get_args(hint)):
            raise ScenarioError(f"{where} must be a list of {len(typing.get_args(hint))}, got "
                                f"{value!r}")
        if origin is tuple and not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                       and math.isfinite(v) for v in value):
            raise ScenarioError(f"{where} must be finite numbers, got {value!r}")
        return list(value)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ScenarioError(f"{where} must be a table (section), got {value!r}")
        return parse_section(hint, value, where)
    if hint is bool:
        if not isinstance(value, bool):
            raise ScenarioError(f"{where} must be true or false, got {value!r}")
        return value
    if hint in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ScenarioError(f"{where} must be a number, got {value!r}")
        if not math.isfinite(float(value)):
            raise ScenarioError(f"{where} must be finite, got {value!r}")
        if hint is int and float(value) != int(value):
            raise ScenarioError(f"{where} must be a whole number, got {value!r}")
        return hint(value)
    if hint is str:
        if not isinstance(value, str):
            raise ScenarioError(f"{where} must be a string, got {value!r}")
        return value
    if origin is dict:
        if not isinstance(value, dict):
            raise ScenarioError(f"{where} must be a table, got {value!r}")
        return dict(value)
    return value  # lists, unions ("a number or a list"): checked by the section itself


def parse_section(cls, data: dict, where: str = "scenario"):
    """``data`` (a TOML table) as the dataclass ``cls``: unknown keys are refused with a
    suggestion, missing required keys are named, values are type-checked."""
    if not isinstance(data, dict):
        raise ScenarioError(f"{where} must be a table, got {data!r}")
    fields = _fields(cls)
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise ScenarioError(f"{where}: unknown key {key!r}{_suggest(key, fields)} "
                                f"(valid: {', '.join(fields)})")
        if not dataclasses.is_dataclass(hints[key]):
            label = f"{where} {key}"
        else:
            label = f"[{key}]" if where == "scenario" else f"{where[:-1]}.{key}]"
        kwargs[key] = _convert(value, hints[key], label)
    missing = [k for k, f in fields.items() if k not in kwargs
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        what = "section" if dataclasses.is_dataclass(hints[missing[0]]) else "key"
        raise ScenarioError(f"{where}: missing {what} {missing[0]!r}")
    try:
        return cls(**kwargs)
    except ScenarioError:
        raise
    except (TypeError, ValueError) as exc:
        raise ScenarioError(f"{where}: {exc}") from None


def _override(data: dict, dotted: str, value) -> None:
    node = data
    *parents, last = dotted.split(".")
    for p in parents:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ScenarioError(f"[{p}] must be a table (section), got {node!r}")
    node[last] = value


def load_scenario(scenario, schema: type = Scenario, overrides: dict | None = None):
    """A scenario as the dataclass ``schema``: a bundled name (``"topology_power"``), a TOML
    path, a dict, or an already loaded scenario. ``overrides`` maps dotted keys
    (``"consumers.flexible_share"``) to values that replace the scenario's."""
    if isinstance(scenario, Scenario):
        data, source_dir = _to_dict(scenario), scenario.source_dir
    elif isinstance(scenario, dict):
        data = {k: v for k, v in scenario.items() if k != "_dir"}
        source_dir = str(scenario.get("_dir", bundled_dir()))
    else:
        path = Path(scenario)
        if not path.suffix:
            path = bundled_dir() / f"{scenario}.toml"
        if not path.is_file():
            raise ScenarioError(f"scenario {str(scenario)!r} not found; bundled scenarios: "
                                f"{', '.join(bundled_scenarios())} (or a path to a .toml file)")
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ScenarioError(f"scenario {path}: invalid TOML: {exc}") from None
        source_dir = str(path.resolve().parent)
    data = _deepcopy(data)
    for key, value in (overrides or {}).items():
        if value is not None:
            _override(data, key, value)
    sc = parse_section(schema, data)
    sc.source_dir = source_dir
    return sc


def _deepcopy(d):
    return {k: _deepcopy(v) if isinstance(v, dict) else v for k, v in d.items()}


def _to_dict(obj) -> dict:
    out = {}
    for k in _fields(type(obj)):
        v = getattr(obj, k)
        out[k] = _to_dict(v) if dataclasses.is_dataclass(v) else v
    return out


def per_item(value, size: int, where: str, *, low: float | None = None,
             high: float | None = None, per: str = "item") -> np.ndarray:
    """A scenario value given once or once per item, as a float array of ``size``
    (``per`` says what the items are, e.g. "entry of buses")."""
    if isinstance(value, bool) or (isinstance(value, list) and any(
            isinstance(v, bool) or not isinstance(v, (int, float)) for v in value)):
        raise ScenarioError(f"{where}: expected a number or a list of numbers, got {value!r}")
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise ScenarioError(f"{where}: expected a number or a list of numbers, got "
                            f"{value!r}") from None
    if arr.ndim == 0:
        arr = np.full(size, float(arr))
    elif arr.shape != (size,):
        raise ScenarioError(f"{where}: expected one value or {size} (one per {per}), got "
                            f"{arr.size}")
    if not np.isfinite(arr).all():
        raise ScenarioError(f"{where}: values must be finite, got {arr.tolist()}")
    if low is not None and (arr < low).any():
        raise ScenarioError(f"{where}: values must be >= {low}, got {arr.tolist()}")
    if high is not None and (arr > high).any():
        raise ScenarioError(f"{where}: values must be <= {high:g} (a larger one is a unit "
                            f"mistake), got {arr.tolist()}")
    return arr


MAX_PRICE = 1e4  # ¢/kWh ($100/kWh): any price above it is a unit mistake
MAX_KW = 1e7  # kW (10 GW): no participant of a distribution feeder is larger


@functools.lru_cache(maxsize=8)
def _read_profiles(path: str, mtime_ns: int, size: int) -> dict[str, np.ndarray]:
    """A profiles CSV as read-only columns, parsed once per process and file version (a year
    of data takes seconds to parse; every environment built on it shares the arrays)."""
    with open(path) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ScenarioError(f"profiles file {path} is empty")
    try:
        cols = {k: np.array([float(r[k]) for r in rows]) for k in rows[0]}
    except (TypeError, ValueError) as exc:
        raise ScenarioError(f"profiles file {path}: {exc}") from None
    for k, v in cols.items():
        if not np.isfinite(v).all():
            raise ScenarioError(f"profiles file {path}: column {k} has non-finite values")
        v.flags.writeable = False
    return cols


def load_profiles(scenario: Scenario) -> dict[str, np.ndarray]:
    """The scenario's hourly profiles (column name -> read-only values)."""
    rel = scenario.profiles
    if "/" not in rel and "\\" not in rel and not rel.endswith(".csv"):
        path = bundled_dir() / "profiles" / f"{rel}.csv"
        if not path.is_file():
            names = sorted(p.stem for p in (bundled_dir() / "profiles").glob("*.csv"))
            raise ScenarioError(f"profiles: no bundled profile set {rel!r}; bundled: "
                                f"{', '.join(names)} (or give a CSV path)")
    else:
        path = scenario.path(rel)
    if not path.is_file():
        raise ScenarioError(f"profiles file not found: {path}")
    stat = path.stat()
    cols = dict(_read_profiles(str(path.resolve()), stat.st_mtime_ns, stat.st_size))
    if "hour" not in cols:
        raise ScenarioError(f"profiles file {path} has no 'hour' column")
    if len(cols["hour"]) < scenario.horizon:
        raise ScenarioError(f"horizon {scenario.horizon} is longer than the profiles "
                            f"({len(cols['hour'])} hours)")
    return cols


def profile_column(profiles: dict[str, np.ndarray], name: str, where: str) -> np.ndarray:
    if name not in profiles:
        raise ScenarioError(f"{where}: profile column {name!r} is not in the profiles; columns: "
                            f"{', '.join(profiles)}")
    return profiles[name]


def grid_from_scenario(scenario: Scenario):
    """The scenario's feeder as an ``OpenDSSGrid`` with its voltage band and line ratings.

    ``feeder`` is a bundled name or a path to a master ``.dss`` (relative to the scenario's
    folder); ``[grid] rating_scale`` multiplies every line ampacity (kept across resets).
    """
    from ogg_envs.grid import OpenDSSGrid
    from ogg_envs.grid.feeders import FEEDERS

    kw = dict(voltage_band=scenario.grid.voltage_band)
    feeder = str(scenario.feeder)
    if feeder.endswith(".dss"):
        grid = OpenDSSGrid(scenario.path(feeder), **kw)
    elif feeder in FEEDERS:
        grid = OpenDSSGrid.from_feeder(feeder, **kw)
    else:
        raise ScenarioError(f"feeder {feeder!r}: not a bundled feeder ({', '.join(FEEDERS)}) "
                            "nor a path to a master .dss file")
    if scenario.grid.rating_scale != 1.0:
        grid.scale_line_ratings(scenario.grid.rating_scale)
    return grid


def check_price(value: float, where: str, *, low: float = 0.0) -> float:
    """A price (¢/kWh) in ``[low, MAX_PRICE]``, or ``ScenarioError`` naming it."""
    if not low <= value <= MAX_PRICE:
        raise ScenarioError(f"{where} must be in [{low:g}, {MAX_PRICE:g}] ¢/kWh, got {value!r}")
    return value
