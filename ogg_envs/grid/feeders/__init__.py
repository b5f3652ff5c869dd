"""Bundled distribution test feeders, written from the published IEEE test-feeder data.

Each feeder module holds the published data as Python tables plus a builder that turns them
into OpenDSS commands, with the same public API:

* ``NAME``, ``SOURCE_BUS``, ``FEEDER_HEAD_BUS``, ``DELTA`` (only line-to-line voltages are
  meaningful), ``LOAD_BUSES``, ``BUS_COORDS`` (schematic layout for drawing);
* ``dss_commands(*, locked_taps=False)``: the OpenDSS commands from ``clear`` to
  ``calcvoltagebases`` (no ``solve``);
* ``write_dss(folder)``: the same feeder as ``master.dss`` + ``buscoords.csv``.

Load names start with their bus (``<bus>_spot...`` / ``<bus>_dist...``): the bus of a load is
``name.split("_")[0]``. The feeders are validated against the standard OpenDSS solutions of the
IEEE test cases by ``tests/test_feeders_reference.py``.
"""

from __future__ import annotations

from types import ModuleType

from . import ieee13, ieee34, ieee37, ieee123

FEEDERS: dict[str, ModuleType] = {"ieee13": ieee13, "ieee34": ieee34, "ieee37": ieee37,
                                  "ieee123": ieee123}


def get_feeder(name: str) -> ModuleType:
    """The feeder module called ``name`` (``"ieee13"``, ``"ieee34"``, ``"ieee37"`` or
    ``"ieee123"``)."""
    try:
        return FEEDERS[name]
    except KeyError:
        valid = ", ".join(sorted(FEEDERS))
        raise ValueError(f"unknown feeder {name!r}; valid feeders: {valid}") from None


__all__ = ["FEEDERS", "get_feeder", "ieee13", "ieee34", "ieee37", "ieee123"]
