"""Generate the bundled hourly profiles (``profiles/day_profiles.csv``); run once, offline.

Columns (hour 0-23 of a representative summer weekday):
  load_residential, load_commercial  per-unit multipliers of a load's nominal kW;
                                     smooth two-peak (residential) and daytime-plateau
                                     (commercial) shapes, normalised to a peak of 1.0.
  pv                                 per-unit AC output of a PV array (1.0 = rated), from the
                                     clear-sky sun elevation at 40°N on day 180 (solar time),
                                     with a 0.95 derate; the sky is clear.
  lmp_source                         ¢/kWh wholesale (transmission) price at the substation,
                                     a duck-curve shape between 2.6 and 7.4 ¢/kWh.

Stochastic scenarios draw multiplicative noise on top of these at run time from the
environment's seeded RNG; this file itself is deterministic.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

LATITUDE_DEG, DAY_OF_YEAR = 40.0, 180


def sun_elevation(hour: float) -> float:
    decl = math.radians(23.45) * math.sin(2 * math.pi * (284 + DAY_OF_YEAR) / 365)
    lat = math.radians(LATITUDE_DEG)
    hour_angle = math.radians(15.0 * (hour - 12.0))
    s = math.sin(lat) * math.sin(decl) + math.cos(lat) * math.cos(decl) * math.cos(hour_angle)
    return math.asin(max(-1.0, min(1.0, s)))


def pv(hour: float) -> float:
    elev = sun_elevation(hour + 0.5)  # middle of the hour
    if elev <= 0:
        return 0.0
    air_mass = 1.0 / (math.sin(elev) + 0.50572 * (math.degrees(elev) + 6.07995) ** -1.6364)
    clear_sky = 1.353 * 0.7 ** (air_mass ** 0.678) * math.sin(elev)  # kW/m², Meinel model
    return 0.95 * clear_sky / 1.0


def residential(hour: float) -> float:
    morning = 0.25 * math.exp(-((hour - 7.5) / 1.8) ** 2)
    evening = 0.55 * math.exp(-((hour - 19.0) / 2.6) ** 2)
    return 0.45 + morning + evening


def commercial(hour: float) -> float:
    day = 1.0 / (1 + math.exp(-(hour - 7.5) * 1.6)) - 1.0 / (1 + math.exp(-(hour - 18.5) * 1.4))
    return 0.35 + 0.65 * day


def lmp(hour: float) -> float:
    return 4.3 + 1.2 * math.cos(2 * math.pi * (hour - 3) / 24) * -1 \
        - 1.1 * math.exp(-((hour - 13) / 2.5) ** 2) + 2.2 * math.exp(-((hour - 19.5) / 1.6) ** 2)


def main() -> None:
    rows = []
    res = [residential(h) for h in range(24)]
    com = [commercial(h) for h in range(24)]
    for h in range(24):
        rows.append({
            "hour": h,
            "load_residential": round(res[h] / max(res), 4),
            "load_commercial": round(com[h] / max(com), 4),
            "pv": round(pv(h), 4),
            "lmp_source": round(lmp(h), 3),
        })
    out = Path(__file__).parent / "profiles" / "day_profiles.csv"
    out.parent.mkdir(exist_ok=True)
    with out.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
