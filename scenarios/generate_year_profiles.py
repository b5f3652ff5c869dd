"""Generate the bundled year of hourly profiles (``profiles/year.csv``); run once, offline.

    pip install "opengridgym[data]"          # pvlib (and pandas), for regenerating only
    python scenarios/generate_year_profiles.py [--loadshapes PATH]

Inputs (never downloaded; the environments read only the CSV this writes):

* **Load**: the 45 measured hourly load shapes of EPRI test circuit 7 (8,760 hours each,
  multipliers of the peak), distributed with OpenDSS as ``Loadshapes_ckt7.dss``; the project
  keeps a copy of that source file outside its tree (``../shared/reference-profiles``), or give
  ``--loadshapes``. The first definition is commented out in the source file; its numbers are
  measured data all the same and are used.
* **PV**: pvlib's own typical-meteorological-year weather file for Greensboro, NC
  (``pvlib/data/723170TYA.CSV``, TMY3, shipped inside the pvlib package), through pvlib's
  models: Perez transposition onto a fixed plane (30 deg tilt, facing south), the SAPM cell
  temperature model (open rack, glass/polymer), PVWatts DC (-0.4 %/K) and the PVWatts inverter
  (96 % nominal efficiency, DC/AC ratio 1.2) with 14 % system losses. ``pv`` is AC output per
  kW of inverter rating (1.0 = rated), hour by hour of the typical year.

Columns of ``year.csv`` (8,760 rows, hour 0 = 1 January 00:00, local standard time):

* ``hour``;
* ``shape_00`` .. ``shape_44``: the measured shapes, each divided by its own annual peak
  (per-unit multipliers of a consumer's nominal kW; a consumer's peak hour is 1.0). The
  environments give each consumer one of them (``MarketEnv.consumer_profile``);
* ``load_residential`` / ``load_commercial``: the mean of the shapes whose weekday midday
  load is below / above their evening load (the same two kinds of curve as the one-day set,
  for scenarios that name those columns), each divided by its annual peak;
* ``pv`` (above) and ``lmp_source``: a source price (¢/kWh) that follows the feeder's total
  load, 2.6 ¢/kWh at the year's lightest hour to 9.0 at its heaviest (convex: 2.6 + 6.4 x^2
  with x the normalised aggregate load). The measured data have no prices; this column is
  synthetic and only makes peak hours dearer, as in the one-day set.

Values are rounded to 4 decimals (3.0 MB). The output is deterministic; re-running it gives
the same file byte for byte.
"""

from __future__ import annotations

import argparse
import csv
import re
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_SHAPES = HERE.parents[1] / "shared" / "reference-profiles" / "epri_ckt7_loadshapes.dss"
HOURS = 8760


def read_loadshapes(path: Path) -> dict[str, np.ndarray]:
    """Every ``loadshape.<name> ... mult=( ... )`` of the file (commented ones included)."""
    text = path.read_text()
    shapes = {}
    for m in re.finditer(r"loadshape\.(\S+)\s+[^(]*?mult=\(([^)]*)\)", text, re.IGNORECASE):
        values = np.array([float(v) for v in re.split(r"[,\s]+", m.group(2).strip()) if v])
        if len(values) != HOURS:
            raise ValueError(f"loadshape {m.group(1)}: {len(values)} values, expected {HOURS}")
        shapes[m.group(1).lower()] = values
    if len(shapes) != 45:
        raise ValueError(f"{path}: found {len(shapes)} load shapes, expected 45")
    return shapes


def pv_per_kw() -> np.ndarray:
    """AC output per kW of inverter rating, hour by hour of pvlib's Greensboro TMY3 year."""
    import pvlib

    data_dir = Path(pvlib.__file__).parent / "data"
    weather, meta = pvlib.iotools.read_tmy3(data_dir / "723170TYA.CSV", map_variables=True)
    weather = weather.iloc[:HOURS]
    # TMY3 stamps each hour at its end: the sun of the middle of the hour.
    times = weather.index - np.timedelta64(30, "m")
    loc = pvlib.location.Location(meta["latitude"], meta["longitude"], altitude=meta["altitude"])
    sun = loc.get_solarposition(times)
    dni_extra = pvlib.irradiance.get_extra_radiation(times)
    poa = pvlib.irradiance.get_total_irradiance(
        surface_tilt=30.0, surface_azimuth=180.0, solar_zenith=sun["apparent_zenith"].values,
        solar_azimuth=sun["azimuth"].values, dni=weather["dni"].values,
        ghi=weather["ghi"].values, dhi=weather["dhi"].values, dni_extra=dni_extra.values,
        airmass=pvlib.atmosphere.get_relative_airmass(sun["apparent_zenith"].values),
        model="perez")
    params = pvlib.temperature.TEMPERATURE_MODEL_PARAMETERS["sapm"]["open_rack_glass_polymer"]
    cell = pvlib.temperature.sapm_cell(poa["poa_global"], weather["temp_air"].values,
                                       weather["wind_speed"].values, **params)
    dc_kw_per_kw_ac = 1.2
    dc = pvlib.pvsystem.pvwatts_dc(poa["poa_global"], cell, pdc0=dc_kw_per_kw_ac,
                                   gamma_pdc=-0.004)
    dc = dc * (1 - 0.14)  # PVWatts default system losses
    ac = pvlib.inverter.pvwatts(dc, pdc0=1.0 / 0.96, eta_inv_nom=0.96)
    return np.clip(np.nan_to_num(np.asarray(ac, dtype=float)), 0.0, 1.0)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--loadshapes", type=Path, default=DEFAULT_SHAPES)
    ap.add_argument("--out", type=Path, default=HERE / "profiles" / "year.csv")
    args = ap.parse_args(argv)
    shapes = read_loadshapes(args.loadshapes)
    names = sorted(shapes)
    norm = np.stack([shapes[n] / shapes[n].max() for n in names], axis=1)  # (8760, 45)
    # Residential-like: weekday midday (11-15 h) load below the evening (18-21 h) load.
    day = np.arange(HOURS) // 24
    hour = np.arange(HOURS) % 24
    weekday = (day % 7) < 5  # 1 January 2010-like week: the pattern matters, not the date
    midday = norm[weekday & (hour >= 11) & (hour <= 15)].mean(axis=0)
    evening = norm[weekday & (hour >= 18) & (hour <= 21)].mean(axis=0)
    residential = midday < evening
    res = norm[:, residential].mean(axis=1) if residential.any() else norm.mean(axis=1)
    com = norm[:, ~residential].mean(axis=1) if (~residential).any() else norm.mean(axis=1)
    total = sum(shapes[n] for n in names)
    x = (total - total.min()) / (total.max() - total.min())
    lmp = 2.6 + 6.4 * x ** 2
    pv = pv_per_kw()
    cols = {"hour": np.arange(HOURS)}
    for i in range(len(names)):
        cols[f"shape_{i:02d}"] = norm[:, i]
    cols["load_residential"] = res / res.max()
    cols["load_commercial"] = com / com.max()
    cols["pv"] = pv
    cols["lmp_source"] = lmp
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(list(cols))
        for i in range(HOURS):
            w.writerow([str(int(cols["hour"][i]))] + [f"{cols[k][i]:.4f}".rstrip("0").rstrip(".")
                                                     for k in list(cols)[1:]])
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB); shapes: "
          f"{', '.join(f'shape_{i:02d}={n}' for i, n in enumerate(names))}; residential-like: "
          f"{int(residential.sum())} of {len(names)}")


if __name__ == "__main__":
    main()
