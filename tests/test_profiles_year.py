"""The bundled year of hourly data (``scenarios/profiles/year.csv``) and episodes as days.

The CSV is derived offline by ``scenarios/generate_year_profiles.py`` from the 45 measured
EPRI load shapes (``../shared/reference-profiles``) and pvlib's TMY3 weather; the regeneration
test runs when both are available and skips otherwise.
"""

from __future__ import annotations

import csv
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import ogg_envs
from ogg_envs.scenario import bundled_dir

ROOT = Path(__file__).resolve().parents[1]
YEAR = bundled_dir() / "profiles" / "year.csv"
SHAPES = ROOT.parent / "shared" / "reference-profiles" / "epri_ckt7_loadshapes.dss"


@pytest.fixture(scope="module")
def year():
    with YEAR.open() as f:
        rows = list(csv.DictReader(f))
    return {k: np.array([float(r[k]) for r in rows]) for k in rows[0]}


def test_year_profiles_are_bundled_and_sane(year):
    assert YEAR.stat().st_size < 4e6  # a few MB at most
    assert len(year["hour"]) == 8760 and np.array_equal(year["hour"], np.arange(8760))
    shapes = [c for c in year if c.startswith("shape_")]
    assert len(shapes) == 45
    for c in shapes + ["load_residential", "load_commercial"]:
        assert year[c].min() >= 0 and year[c].max() == pytest.approx(1.0, abs=1e-4), c
    # The 45 measured shapes are different curves, not copies.
    corr = np.corrcoef(np.stack([year[c] for c in shapes]))
    assert corr[np.triu_indices(45, 1)].max() < 0.9999
    pv = year["pv"]
    assert 0 <= pv.min() and pv.max() <= 1.0
    night = (year["hour"] % 24 < 4) | (year["hour"] % 24 > 21)
    assert pv[night].max() == 0.0
    assert 0.12 < pv.mean() < 0.25  # a plausible AC capacity factor for North Carolina
    summer, winter = pv[172 * 24:173 * 24].sum(), pv[355 * 24:356 * 24].sum()
    assert summer > 0 and winter > 0 and summer != winter
    assert 2.0 <= year["lmp_source"].min() < year["lmp_source"].max() <= 10.0


@pytest.mark.skipif(importlib.util.find_spec("pvlib") is None or not SHAPES.is_file(),
                    reason="needs pvlib (pip install 'opengridgym[data]') and "
                           "../shared/reference-profiles")
def test_the_generator_rebuilds_the_bundled_file_exactly(tmp_path):
    out = tmp_path / "year.csv"
    subprocess.run([sys.executable, str(ROOT / "scenarios" / "generate_year_profiles.py"),
                    "--loadshapes", str(SHAPES), "--out", str(out)], check=True,
                   capture_output=True)
    assert out.read_bytes() == YEAR.read_bytes()


# --------------------------------------------------------------------------------------------
# Episodes are days
# --------------------------------------------------------------------------------------------
def _day_of_dlmp(env, day: int):
    env.reset(seed=0, options={"day": day})
    demand, pv = [], []
    while env.agents:
        demand.append(float(env.demand_kw.sum()))
        pv.append(float(env.pv_out_kw.sum()))
        env.step({a: env.action_space(a).sample() for a in env.agents})
    return np.array(demand), np.array(pv)


def test_two_days_give_visibly_different_loads_and_pv():
    env = ogg_envs.make("opengridgym/dlmp-v0", parallel=True, scenario="dlmp_ieee13",
                        market_rounds=1)
    winter = _day_of_dlmp(env, 15)
    summer = _day_of_dlmp(env, 196)
    assert env.day == 196 and env.hour_of(0) == 196 * 24
    d_load = np.abs(winter[0] - summer[0]).mean() / winter[0].mean()
    d_pv = abs(winter[1].sum() - summer[1].sum()) / max(winter[1].sum(), summer[1].sum())
    assert d_load > 0.05, d_load
    assert d_pv > 0.10 or np.abs(winter[1] - summer[1]).max() > 0.2 * winter[1].max(), d_pv
    again = _day_of_dlmp(env, 15)  # the same day again: the same data (same seed)
    np.testing.assert_array_equal(again[0], winter[0])
    np.testing.assert_array_equal(again[1], winter[1])


def test_each_consumer_gets_its_own_measured_shape():
    env = ogg_envs.make("opengridgym/topology-power-v0", parallel=True,
                        scenario="topology_power_ieee123")
    cols = [env.consumer_profile(j) for j in range(len(env.consumers))]
    assert len(set(cols)) == min(45, len(cols))
    env.reset(seed=1, options={"day": 40})
    rows = env.episode_rows()
    assert np.array_equal(rows, np.arange(40 * 24, 41 * 24))
    factors = env.load_factor  # (episode rows, consumers): different curves per consumer
    assert np.unique(np.round(factors.argmax(axis=0))).size > 3
    day_env = ogg_envs.make("opengridgym/topology-power-v0", parallel=True)
    assert {day_env.consumer_profile(j, r) for j, r in ((0, True), (1, False))} == {
        "load_residential", "load_commercial"}


def test_day_option_is_checked_and_pins_the_day():
    env = ogg_envs.make("opengridgym/topology-power-v0", parallel=True,
                        scenario="topology_power_ieee13", market_rounds=1)
    assert env.n_days == 365
    env.reset(seed=0, options={"day": 364})
    assert env.day == 364 and env.hour == 364 * 24
    for bad in (-1, 365, 2.0, "3", True):
        with pytest.raises(ValueError, match="day"):
            env.reset(seed=0, options={"day": bad})
    bundled = ogg_envs.make("opengridgym/topology-power-v0", parallel=True)
    assert bundled.n_days == 1
    bundled.reset(seed=0, options={"day": 0})
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        bundled.reset(seed=0, options={"day": 200})  # no longer silently ignored


def test_training_draws_never_reach_the_held_out_days():
    env = ogg_envs.make("opengridgym/p2p-v0", parallel=True, scenario="p2p_ieee13")
    train, test = set(env.split_days("train")), set(env.split_days("test"))
    assert not train & test and len(train | test) == 365 and len(test) == 73
    drawn = set()
    for seed in range(150):
        env.reset(seed=seed)
        drawn.add(env.day)
    assert drawn <= train and len(drawn) > 60
    env.reset(seed=3, options={"split": "test"})
    assert env.day in test
    env.reset(seed=11)
    first = env.day
    env.reset(seed=11)
    assert env.day == first  # the day is part of the seeded episode
    with pytest.raises(ValueError, match="split"):
        env.reset(seed=0, options={"split": "validation"})


def test_one_day_profiles_keep_their_episodes():
    for env_id in ("opengridgym/topology-power-v0", "opengridgym/dlmp-v0",
                   "opengridgym/p2p-v0"):
        env = ogg_envs.make(env_id, parallel=True)
        env.reset(seed=0)
        assert env.day == 0 and env.n_days == 1
        assert [env.hour_of(t) for t in range(env.horizon)] == [
            (env.scenario.start_hour + t) % 24 for t in range(env.horizon)]
        assert np.array_equal(env.episode_rows(), np.arange(24))
