"""IEEE 13-node test feeder (4.16 kV, short and highly loaded, unbalanced).

Source data: IEEE PES Distribution System Analysis Subcommittee, *Distribution Test Feeders*,
"IEEE 13 Node Test Feeder" (W. H. Kersting): configuration matrices 601-607 in ohm/mile with
shunt susceptances in microsiemens/mile, segment lengths in feet, spot loads and the
distributed load 632-671 as published per-phase kW/kvar, the 500 kVA in-line transformer
633-634, the two shunt capacitors, and the substation regulator (three single-phase units,
line-drop compensation 3 + j9 ohm, 122 V on the 120 V base).

The network is modelled the way the standard OpenDSS test case ``IEEE13Nodeckt.dss`` (EPRI,
distributed with OpenDSS) models it, which is the model we validate against
(``tests/test_feeders_reference.py``):

* a stiff 115 kV source at 1.0001 pu (angle 30 deg, 20 000 / 21 000 MVA) feeding the published
  5000 kVA, 115 kV delta / 4.16 kV wye substation transformer with its impedance divided by
  1000 (X = 0.008 %, R = 0.0005 % per winding), so that bus 650 sits at the source voltage;
* the regulator between 650 and the new bus ``rg60`` (1666 kVA single-phase units,
  X = 0.01 %, load loss 0.01 %);
* the distributed load 632-671 lumped at the new bus 670, a third of the way along the segment
  (632-670 is 667 ft, 670-671 is 1333 ft);
* the switch 671-692 as a short line of 0.1 milliohm.

The OpenDSS file departs from the published line data in two places we do not follow: it
leaves the shunt capacitance of configurations 601-605 at OpenDSS's default and uses a
recomputed (2016) matrix for the cable configuration 606. The published data are used here;
on this 0.4-mile feeder the difference is under 1e-4 pu at every node (the validation
tolerance is 1e-3 pu).

Element names: lines are ``<bus1>_<bus2>`` (``Line.rg60_632``, ``Line.671_692`` for the
switch); loads are ``<bus>_spot[_<phases>]`` and ``670_dist[_<phase>]``, so the load's bus is
always ``name.split("_")[0]``. Regulator units are ``Transformer.reg1`` .. ``reg3`` (phases A,
B, C) with ``RegControl.creg1`` ..; the transformers are ``sub`` and ``xfm1`` (633-634).
``dss_commands(locked_taps=True)`` sets the taps published with the IEEE results (10, 8, 11)
and switches the controls off.
"""

from __future__ import annotations

import sys
from pathlib import Path

from . import _dss
from ._dss import fmt as _fmt
from ._dss import nodes as _nodes

NAME = "ieee13"
SOURCE_BUS = "sourcebus"
FEEDER_HEAD_BUS = "650"
DELTA = False  # 4-wire wye feeder: line-to-neutral voltages are meaningful

BASE_FREQUENCY_HZ = 60.0
VOLTAGE_BASES_KV = (115.0, 4.16, 0.48)
FEEDER_KV = 4.16
LOW_VOLTAGE_KV = 0.48
LOW_VOLTAGE_BUSES = {"634"}  # downstream of XFM-1
LN_KV = {4.16: 2.4, 0.48: 0.277}  # nominal line-to-neutral ratings of single-phase elements

# --------------------------------------------------------------------------------------------
# Source and transformers
# --------------------------------------------------------------------------------------------
SOURCE = {"kv": 115.0, "pu": 1.0001, "angle_deg": 30.0, "mvasc3": 20_000.0, "mvasc1": 21_000.0}

# name: (kVA, bus HV, conn HV, kV HV, bus LV, conn LV, kV LV, %R per winding, %X HV-LV)
TRANSFORMERS = {
    # published: 5000 kVA, 115 kV delta / 4.16 kV grounded wye, R = 1 %, X = 8 %; stiffened
    "sub": (5000, SOURCE_BUS, "delta", 115.0, "650", "wye", 4.16, 0.0005, 0.008),
    # XFM-1, published: 500 kVA, 4.16 kV grd wye / 0.48 kV grd wye, R = 1.1 %, X = 2 %
    "xfm1": (500, "633", "wye", 4.16, "634", "wye", 0.48, 0.55, 2.0),
}

# --------------------------------------------------------------------------------------------
# Line configurations: phase impedance matrix Z (ohm/mile) and shunt susceptance B
# (microsiemens/mile), lower triangle, rows in the order of the configuration's phases below.
# --------------------------------------------------------------------------------------------
LINE_CONFIGS = {
    "601": {  # overhead, phases A B C
        "z": [
            [0.3465 + 1.0179j],
            [0.1560 + 0.5017j, 0.3375 + 1.0478j],
            [0.1580 + 0.4236j, 0.1535 + 0.3849j, 0.3414 + 1.0348j],
        ],
        "b": [[6.2998], [-1.9958, 5.9597], [-1.2595, -0.7417, 5.6386]],
    },
    "602": {  # overhead, phases A B C
        "z": [
            [0.7526 + 1.1814j],
            [0.1580 + 0.4236j, 0.7475 + 1.1983j],
            [0.1560 + 0.5017j, 0.1535 + 0.3849j, 0.7436 + 1.2112j],
        ],
        "b": [[5.6990], [-1.0817, 5.1795], [-1.6905, -0.6588, 5.4246]],
    },
    "603": {  # overhead, phases C B
        "z": [[1.3238 + 1.3569j], [0.2066 + 0.4591j, 1.3294 + 1.3471j]],
        "b": [[4.6658], [-0.8999, 4.7097]],
    },
    "604": {  # overhead, phases A C
        "z": [[1.3238 + 1.3569j], [0.2066 + 0.4591j, 1.3294 + 1.3471j]],
        "b": [[4.6658], [-0.8999, 4.7097]],
    },
    "605": {"z": [[1.3292 + 1.3475j]], "b": [[4.5193]]},  # overhead, phase C
    "606": {  # underground concentric-neutral cable, phases A B C
        "z": [
            [0.7982 + 0.4463j],
            [0.3192 + 0.0328j, 0.7891 + 0.4041j],
            [0.2849 - 0.0143j, 0.3192 + 0.0328j, 0.7982 + 0.4463j],
        ],
        "b": [[96.8897], [0.0, 96.8897], [0.0, 0.0, 96.8897]],
    },
    "607": {"z": [[1.3425 + 0.5124j]], "b": [[88.9912]]},  # underground tape-shield, phase A
}

# --------------------------------------------------------------------------------------------
# Line segments: (from bus, to bus, phases in the configuration's order, configuration, feet).
# The regulator sits at the head of 650-632 (its load side is bus rg60); the distributed load
# of 632-671 splits that segment at bus 670.
# --------------------------------------------------------------------------------------------
LINES = [
    ("rg60", "632", "abc", "601", 2000),
    ("632", "670", "abc", "601", 667),
    ("670", "671", "abc", "601", 1333),
    ("671", "680", "abc", "601", 1000),
    ("632", "633", "abc", "602", 500),
    ("632", "645", "cb", "603", 500),
    ("645", "646", "cb", "603", 300),
    ("692", "675", "abc", "606", 500),
    ("671", "684", "ac", "604", 300),
    ("684", "611", "c", "605", 300),
    ("684", "652", "a", "607", 800),
]
SWITCHES = [("671", "692")]  # normally closed
SWITCH_OHMS = 1e-4

# --------------------------------------------------------------------------------------------
# Loads: (bus, type, phase A, phase B, phase C) with per-phase (kW, kvar); for delta loads the
# three entries are phases AB, BC, CA. Y/D = wye/delta; PQ / I / Z = constant power / current /
# impedance.
# --------------------------------------------------------------------------------------------
SPOT_LOADS = [
    ("634", "Y-PQ", (160, 110), (120, 90), (120, 90)),
    ("645", "Y-PQ", (0, 0), (170, 125), (0, 0)),
    ("646", "D-Z", (0, 0), (230, 132), (0, 0)),
    ("652", "Y-Z", (128, 86), (0, 0), (0, 0)),
    ("671", "D-PQ", (385, 220), (385, 220), (385, 220)),
    ("675", "Y-PQ", (485, 190), (68, 60), (290, 212)),
    ("692", "D-I", (0, 0), (0, 0), (170, 151)),
    ("611", "Y-I", (0, 0), (0, 0), (170, 80)),
]
# Distributed load 632-671, lumped at 670: (bus, type, phase A, B, C)
DISTRIBUTED_LOADS = [("670", "Y-PQ", (17, 10), (66, 38), (117, 68))]

# OpenDSS load models: 1 constant PQ, 2 constant Z, 5 constant current magnitude.
LOAD_MODELS = {"PQ": 1, "Z": 2, "I": 5}

# Shunt capacitors: bus -> (kvar on phase A, B, C)
CAPACITORS = {"675": (200, 200, 200), "611": (0, 0, 100)}

# Regulator: three single-phase wye units at 650 (published settings).
REGULATOR = {
    "segment": ("650", "632"),
    "phases": "abc",
    "vreg": 122.0,
    "band": 2.0,
    "ptratio": 20,
    "ctprim": 700,
    "r": 3.0,
    "x": 9.0,
}
REGULATED_BUS = "rg60"
REGULATOR_KVA = 1666
REGULATOR_XHL_PERCENT = 0.01
REGULATOR_LOADLOSS_PERCENT = 0.01
TAP_STEP = 0.00625
PUBLISHED_TAPS = (10, 8, 11)  # phases A, B, C

# --------------------------------------------------------------------------------------------
# Bus coordinates for drawing (the published one-line layout).
# --------------------------------------------------------------------------------------------
BUS_COORDS: dict[str, tuple[float, float]] = {
    "sourcebus": (200.0, 400.0),
    "650": (200.0, 350.0),
    "rg60": (200.0, 300.0),
    "646": (0.0, 250.0),
    "645": (100.0, 250.0),
    "632": (200.0, 250.0),
    "633": (350.0, 250.0),
    "634": (400.0, 250.0),
    "670": (200.0, 200.0),
    "611": (0.0, 100.0),
    "684": (100.0, 100.0),
    "671": (200.0, 100.0),
    "692": (250.0, 100.0),
    "675": (400.0, 100.0),
    "652": (100.0, 0.0),
    "680": (200.0, 0.0),
}

PHASES = "abc"
_NODE = _dss.NODE
_DELTA_PAIRS = _dss.DELTA_PAIRS

LOAD_BUSES: list[str] = sorted({row[0] for row in SPOT_LOADS + DISTRIBUTED_LOADS})


# --------------------------------------------------------------------------------------------
# Builder
# --------------------------------------------------------------------------------------------
def _bus_kv(bus: str) -> float:
    return LOW_VOLTAGE_KV if bus in LOW_VOLTAGE_BUSES else FEEDER_KV


def _load_commands(name: str, bus: str, load_type: str, per_phase: tuple) -> list[str]:
    """One 3-phase load if balanced on all phases, else one single-phase load per phase (wye:
    phase to neutral; delta: across the phase pair)."""
    conn_code, kind = load_type.split("-")
    model = LOAD_MODELS[kind]
    kv_ll = _bus_kv(bus)
    delta = conn_code == "D"
    if len(set(per_phase)) == 1 and per_phase[0] != (0, 0):
        kw, kvar = (3 * v for v in per_phase[0])
        return [f"new load.{name} bus1={bus} phases=3 conn={'delta' if delta else 'wye'} "
                f"kv={_fmt(kv_ll)} kw={_fmt(kw)} kvar={_fmt(kvar)} model={model}"]
    commands = []
    for i, (kw, kvar) in enumerate(per_phase):
        if kw == 0 and kvar == 0:
            continue
        if delta:
            phases, conn, kv = _DELTA_PAIRS[i], "delta", kv_ll
        else:
            phases, conn, kv = PHASES[i], "wye", LN_KV[kv_ll]
        commands.append(
            f"new load.{name}_{phases} bus1={bus}{_nodes(phases)} phases=1 conn={conn} "
            f"kv={kv:.6g} kw={_fmt(kw)} kvar={_fmt(kvar)} model={model}")
    return commands


def dss_commands(*, locked_taps: bool = False) -> list[str]:
    """OpenDSS commands that define the feeder, from ``clear`` to ``calcvoltagebases``.

    No ``solve`` and no bus coordinates. With ``locked_taps=True`` the regulator taps are set to
    the published values (10, 8, 11 steps of 0.625 %) and control is switched off.
    """
    cmds = [
        "clear",
        f"set defaultbasefrequency={_fmt(BASE_FREQUENCY_HZ)}",
        f"new circuit.{NAME} bus1={SOURCE_BUS} basekv={_fmt(SOURCE['kv'])} "
        f"pu={_fmt(SOURCE['pu'])} angle={_fmt(SOURCE['angle_deg'])} "
        f"mvasc3={_fmt(SOURCE['mvasc3'])} mvasc1={_fmt(SOURCE['mvasc1'])}",
    ]
    for name, (kva, bus_h, conn_h, kv_h, bus_l, conn_l, kv_l, r_pct, x_pct) in TRANSFORMERS.items():
        cmds.append(
            f"new transformer.{name} phases=3 windings=2 xhl={_fmt(x_pct)} "
            f"wdg=1 bus={bus_h} conn={conn_h} kv={_fmt(kv_h)} kva={_fmt(kva)} %r={_fmt(r_pct)} "
            f"wdg=2 bus={bus_l} conn={conn_l} kv={_fmt(kv_l)} kva={_fmt(kva)} %r={_fmt(r_pct)}"
        )
    reg = REGULATOR
    kv_unit = LN_KV[FEEDER_KV]
    for i, ph in enumerate(reg["phases"], start=1):
        unit, node = f"reg{i}", _NODE[ph]
        cmds.append(
            f"new transformer.{unit} phases=1 windings=2 bank=reg1 "
            f"buses=[{reg['segment'][0]}.{node} {REGULATED_BUS}.{node}] conns=[wye wye] "
            f"kvs=[{_fmt(kv_unit)} {_fmt(kv_unit)}] kvas=[{REGULATOR_KVA} {REGULATOR_KVA}] "
            f"xhl={_fmt(REGULATOR_XHL_PERCENT)} %loadloss={_fmt(REGULATOR_LOADLOSS_PERCENT)}")
        cmds.append(
            f"new regcontrol.c{unit} transformer={unit} winding=2 vreg={_fmt(reg['vreg'])} "
            f"band={_fmt(reg['band'])} ptratio={reg['ptratio']} ctprim={reg['ctprim']} "
            f"r={_fmt(reg['r'])} x={_fmt(reg['x'])}")
    cmds += [_dss.linecode_command(name, cfg, BASE_FREQUENCY_HZ)
             for name, cfg in LINE_CONFIGS.items()]
    for frm, to, phases, config, length_ft in LINES:
        cmds.append(
            f"new line.{frm}_{to} phases={len(phases)} bus1={frm}{_nodes(phases)} "
            f"bus2={to}{_nodes(phases)} linecode={config} length={_fmt(length_ft)} units=ft")
    for frm, to in SWITCHES:
        cmds.append(
            f"new line.{frm}_{to} phases=3 bus1={frm} bus2={to} switch=y "
            f"r1={_fmt(SWITCH_OHMS)} r0={_fmt(SWITCH_OHMS)} x1=0 x0=0 c1=0 c0=0")
    for bus, kvar_per_phase in CAPACITORS.items():
        cmds += _dss.capacitor_commands(bus, kvar_per_phase, _bus_kv(bus), LN_KV[_bus_kv(bus)],
                                        phase_sep="_")
    for bus, load_type, *per_phase in SPOT_LOADS:
        cmds += _load_commands(f"{bus}_spot", bus, load_type, tuple(per_phase))
    for bus, load_type, *per_phase in DISTRIBUTED_LOADS:
        cmds += _load_commands(f"{bus}_dist", bus, load_type, tuple(per_phase))
    if locked_taps:
        for i, tap in enumerate(PUBLISHED_TAPS, start=1):
            cmds.append(f"edit transformer.reg{i} wdg=2 tap={_fmt(1 + tap * TAP_STEP)}")
        cmds.append("set controlmode=off")
    cmds += _dss.voltage_base_commands(VOLTAGE_BASES_KV)
    return cmds


def write_dss(folder) -> Path:
    """Write ``master.dss`` and ``buscoords.csv`` into ``folder``; return the master path.

    ``compile <folder>/master.dss`` then ``solve`` gives the same circuit as ``dss_commands()``.
    """
    return _dss.write_dss(sys.modules[__name__], folder)
