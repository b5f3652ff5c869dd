"""Scenarios: which feeder, who participates where, line limits and the day's profiles.

A scenario is a TOML file (bundled ones live in the top-level ``scenarios/`` folder, installed
as ``ogg_envs.scenarios``). Common keys, read by every environment::

    name = "topology-power/default"      # id, also used by the benchmark tasks
    feeder = "ieee34"                    # bundled feeder name, or a path to a master .dss
    horizon = 24                         # grid steps per episode (hours)
    profiles = "profiles/day_profiles.csv"   # hourly columns, see generate_profiles.py
    [grid]
    rating_scale = 1.0                   # multiplies every line ampacity (OpenDSS and market)
    voltage_band = [0.95, 1.05]
    [grid.limits_kw]                     # market line limits (branch "parent-child" -> kW)
    "852r-832" = 900.0

Each environment documents its own further sections (participants, prices, noise). A path
relative to the scenario file (profiles) is resolved against the file's folder.
"""

from __future__ import annotations

import csv
import tomllib
from importlib import resources
from pathlib import Path

import numpy as np

__all__ = ["load_scenario", "load_profiles", "bundled_scenarios"]


def _bundled_dir() -> Path:
    return Path(str(resources.files("ogg_envs.scenarios")))


def bundled_scenarios() -> list[str]:
    """Names of the bundled scenario files (without .toml)."""
    return sorted(p.stem for p in _bundled_dir().glob("*.toml"))


def load_scenario(scenario: str | Path | dict) -> dict:
    """A scenario as a dict: a bundled name (``"topology_power"``), a path, or a dict."""
    if isinstance(scenario, dict):
        data = dict(scenario)
        data.setdefault("_dir", str(_bundled_dir()))
        return data
    path = Path(scenario)
    if not path.suffix:
        path = _bundled_dir() / f"{scenario}.toml"
    if not path.is_file():
        raise ValueError(f"scenario {scenario!r} not found; bundled scenarios: "
                         f"{', '.join(bundled_scenarios())}")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"scenario {path}: invalid TOML: {exc}") from None
    data["_dir"] = str(path.parent)
    return data


def load_profiles(scenario: dict) -> dict[str, np.ndarray]:
    """The scenario's hourly profiles as arrays (column name -> values)."""
    rel = scenario.get("profiles", "profiles/day_profiles.csv")
    path = Path(rel) if Path(rel).is_absolute() else Path(scenario["_dir"]) / rel
    if not path.is_file():
        raise ValueError(f"profiles file not found: {path}")
    with path.open() as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"profiles file {path} is empty")
    cols = {k: np.array([float(r[k]) for r in rows]) for k in rows[0]}
    for k, v in cols.items():
        if not np.isfinite(v).all():
            raise ValueError(f"profiles file {path}: column {k} has non-finite values")
    return cols


def grid_from_scenario(scenario: dict, default_feeder: str = "ieee34"):
    """The scenario's feeder as an ``OpenDSSGrid`` with its voltage band and line ratings.

    ``feeder`` is a bundled name or a path to a master ``.dss`` (relative paths are read from
    the scenario's folder); ``[grid] rating_scale`` multiplies every line ampacity (kept across
    ``grid.reset``, see ``OpenDSSGrid.scale_line_ratings``).
    """
    from ogg_envs.grid import OpenDSSGrid

    g = scenario.get("grid", {})
    kw = dict(voltage_band=tuple(g.get("voltage_band", (0.95, 1.05))))
    feeder = str(scenario.get("feeder", default_feeder))
    if feeder.endswith(".dss"):
        path = Path(feeder) if Path(feeder).is_absolute() else Path(scenario["_dir"]) / feeder
        grid = OpenDSSGrid(path, **kw)
    else:
        grid = OpenDSSGrid.from_feeder(feeder, **kw)
    scale = float(g.get("rating_scale", 1.0))
    if scale != 1.0:
        grid.scale_line_ratings(scale)
    return grid


def check_horizon(profiles: dict[str, np.ndarray], horizon: int) -> None:
    hours = len(profiles["hour"])
    if hours < horizon:
        raise ValueError(f"horizon {horizon} is longer than the profiles ({hours} hours)")
