"""IEEE 37-node test feeder (4.8 kV, 3-wire delta, all underground).

Source data: IEEE PES Distribution System Analysis Subcommittee, *Distribution Test Feeders*,
"IEEE 37 Node Test Feeder" (W. H. Kersting): an actual feeder in California, 4.8 kV
ungrounded delta, underground cables, heavily unbalanced delta-connected spot loads. Line
impedances below are the published configuration matrices in ohm/mile and shunt susceptances in
microsiemens/mile; segment lengths are the published ones in feet; loads are the published
per-phase kW/kvar.

The network is modelled the way the standard OpenDSS test case ``ieee37.dss`` (EPRI, distributed
with OpenDSS) models it, which is the model we validate against
(``tests/test_feeders_reference.py``):

* a 230 kV source at 1.00 pu (200 000 / 210 000 MVA three-/single-phase short-circuit levels)
  and the published 2500 kVA, 230 kV delta / 4.8 kV delta substation transformer (R 2 %, X 8 %);
* the substation regulator is an open-delta bank of two single-phase units, between phases A-B
  and C-B, with the published line-drop compensation 1.5 + j3 ohm rotated by -/+ 30 degrees
  (the A-B unit lags, the C-B unit leads: R, X = -0.201, 3.348 and 2.799, 1.848), and a
  1 milliohm jumper on phase B across the bank;
* loads keep the OpenDSS default ``vminpu`` (0.95), like the reference model; constant-current
  loads use OpenDSS load model 4 (P proportional to V, Q to V^2), as the reference model does.

Only line-to-line voltages are meaningful on this 3-wire delta feeder (``DELTA = True``).
``dss_commands(locked_taps=True)`` raises ``ValueError``: no taps are published for a locked-tap
case of this feeder.

Element names: lines are ``<bus1>_<bus2>`` (e.g. ``Line.701_702``, ``Line.799r_701``, and the
regulator jumper ``Line.799_799r``); loads are ``<bus>_spot[_<phases>]`` (e.g. ``701_spot_ab``,
``728_spot``), so the load's bus is always ``name.split("_")[0]``. Regulator units are
``Transformer.reg1a`` and ``reg1c`` with ``RegControl.creg1a`` / ``creg1c``; the transformers are
``subxf`` (substation) and ``xfm1`` (4.8/0.48 kV transformer to bus 775).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

from . import _dss
from ._dss import fmt as _fmt
from ._dss import nodes as _nodes

NAME = "ieee37"
SOURCE_BUS = "sourcebus"
FEEDER_HEAD_BUS = "799"
DELTA = True  # 3-wire delta feeder: only line-to-line voltages are meaningful

BASE_FREQUENCY_HZ = 60.0
VOLTAGE_BASES_KV = (230.0, 4.8, 0.48)
FEEDER_KV = 4.8

# --------------------------------------------------------------------------------------------
# Source and transformers
# --------------------------------------------------------------------------------------------
SOURCE = {"kv": 230.0, "pu": 1.00, "mvasc3": 200_000.0, "mvasc1": 210_000.0}

# name: (kVA, bus HV, conn HV, kV HV, bus LV, conn LV, kV LV, %R per winding, %X HV-LV)
TRANSFORMERS = {
    # substation, published: 2500 kVA, 230 kV delta / 4.8 kV delta, R = 2 %, X = 8 %
    "subxf": (2500, SOURCE_BUS, "delta", 230.0, "799", "delta", 4.8, 1.0, 8.0),
    # XFM-1 (709-775), published: 500 kVA, 4.8 kV delta / 0.48 kV delta, R = 0.09 %, X = 1.81 %
    "xfm1": (500, "709", "delta", 4.8, "775", "delta", 0.48, 0.045, 1.81),
}

# --------------------------------------------------------------------------------------------
# Line configurations (underground cables): phase impedance matrix Z (ohm/mile, R + jX) and
# shunt susceptance B (microsiemens/mile), lower triangle row by row, phases A, B, C.
# --------------------------------------------------------------------------------------------
LINE_CONFIGS = {
    "721": {
        "z": [
            [0.2926 + 0.1973j],
            [0.0673 - 0.0368j, 0.2646 + 0.1900j],
            [0.0337 - 0.0417j, 0.0673 - 0.0368j, 0.2926 + 0.1973j],
        ],
        "b": [[159.7919], [0.0, 159.7919], [0.0, 0.0, 159.7919]],
    },
    "722": {
        "z": [
            [0.4751 + 0.2973j],
            [0.1629 - 0.0326j, 0.4488 + 0.2678j],
            [0.1234 - 0.0607j, 0.1629 - 0.0326j, 0.4751 + 0.2973j],
        ],
        "b": [[127.8306], [0.0, 127.8306], [0.0, 0.0, 127.8306]],
    },
    "723": {
        "z": [
            [1.2936 + 0.6713j],
            [0.4871 + 0.2111j, 1.3022 + 0.6326j],
            [0.4585 + 0.1521j, 0.4871 + 0.2111j, 1.2936 + 0.6713j],
        ],
        "b": [[74.8405], [0.0, 74.8405], [0.0, 0.0, 74.8405]],
    },
    "724": {
        "z": [
            [2.0952 + 0.7758j],
            [0.5204 + 0.2738j, 2.1068 + 0.7398j],
            [0.4926 + 0.2123j, 0.5204 + 0.2738j, 2.0952 + 0.7758j],
        ],
        "b": [[60.2483], [0.0, 60.2483], [0.0, 0.0, 60.2483]],
    },
}

# --------------------------------------------------------------------------------------------
# Line segments: (from bus, to bus, phases, configuration, length in feet). All three-phase.
# The transformer 709-775 (XFM-1) is in TRANSFORMERS.
# --------------------------------------------------------------------------------------------
LINES = [
    ("701", "702", "abc", "722", 960),
    ("702", "705", "abc", "724", 400),
    ("702", "713", "abc", "723", 360),
    ("702", "703", "abc", "722", 1320),
    ("703", "727", "abc", "724", 240),
    ("703", "730", "abc", "723", 600),
    ("704", "714", "abc", "724", 80),
    ("704", "720", "abc", "723", 800),
    ("705", "742", "abc", "724", 320),
    ("705", "712", "abc", "724", 240),
    ("706", "725", "abc", "724", 280),
    ("707", "724", "abc", "724", 760),
    ("707", "722", "abc", "724", 120),
    ("708", "733", "abc", "723", 320),
    ("708", "732", "abc", "724", 320),
    ("709", "731", "abc", "723", 600),
    ("709", "708", "abc", "723", 320),
    ("710", "735", "abc", "724", 200),
    ("710", "736", "abc", "724", 1280),
    ("711", "741", "abc", "723", 400),
    ("711", "740", "abc", "724", 200),
    ("713", "704", "abc", "723", 520),
    ("714", "718", "abc", "724", 520),
    ("720", "707", "abc", "724", 920),
    ("720", "706", "abc", "723", 600),
    ("727", "744", "abc", "723", 280),
    ("730", "709", "abc", "723", 200),
    ("733", "734", "abc", "723", 560),
    ("734", "737", "abc", "723", 640),
    ("734", "710", "abc", "724", 520),
    ("737", "738", "abc", "723", 400),
    ("738", "711", "abc", "723", 400),
    ("744", "728", "abc", "724", 200),
    ("744", "729", "abc", "724", 280),
    ("799", "701", "abc", "721", 1850),  # regulator at 799
]

# --------------------------------------------------------------------------------------------
# Spot loads, all delta: (bus, type, (kW, kvar) on phase 1 = AB, phase 2 = BC, phase 3 = CA).
# Type: PQ / I / Z = constant power / current / impedance.
# --------------------------------------------------------------------------------------------
SPOT_LOADS = [
    ("701", "D-PQ", (140, 70), (140, 70), (350, 175)),
    ("712", "D-PQ", (0, 0), (0, 0), (85, 40)),
    ("713", "D-PQ", (0, 0), (0, 0), (85, 40)),
    ("714", "D-I", (17, 8), (21, 10), (0, 0)),
    ("718", "D-Z", (85, 40), (0, 0), (0, 0)),
    ("720", "D-PQ", (0, 0), (0, 0), (85, 40)),
    ("722", "D-I", (0, 0), (140, 70), (21, 10)),
    ("724", "D-Z", (0, 0), (42, 21), (0, 0)),
    ("725", "D-PQ", (0, 0), (42, 21), (0, 0)),
    ("727", "D-PQ", (0, 0), (0, 0), (42, 21)),
    ("728", "D-PQ", (42, 21), (42, 21), (42, 21)),
    ("729", "D-I", (42, 21), (0, 0), (0, 0)),
    ("730", "D-Z", (0, 0), (0, 0), (85, 40)),
    ("731", "D-Z", (0, 0), (85, 40), (0, 0)),
    ("732", "D-PQ", (0, 0), (0, 0), (42, 21)),
    ("733", "D-I", (85, 40), (0, 0), (0, 0)),
    ("734", "D-PQ", (0, 0), (0, 0), (42, 21)),
    ("735", "D-PQ", (0, 0), (0, 0), (85, 40)),
    ("736", "D-Z", (0, 0), (42, 21), (0, 0)),
    ("737", "D-I", (140, 70), (0, 0), (0, 0)),
    ("738", "D-PQ", (126, 62), (0, 0), (0, 0)),
    ("740", "D-PQ", (0, 0), (0, 0), (85, 40)),
    ("741", "D-I", (0, 0), (0, 0), (42, 21)),
    ("742", "D-Z", (8, 4), (85, 40), (0, 0)),
    ("744", "D-PQ", (42, 21), (0, 0), (0, 0)),
]

# OpenDSS load models: 1 constant PQ, 2 constant Z; the reference OpenDSS model represents the
# published constant-current loads with model 4 (P ~ V, Q ~ V^2), and so do we.
LOAD_MODELS = {"PQ": 1, "Z": 2, "I": 4}

# --------------------------------------------------------------------------------------------
# Regulator: open delta (units A-B and C-B) at 799, on segment 799-701; published settings
# in volts on the 120 V base and ohms of line-drop compensation.
# --------------------------------------------------------------------------------------------
REGULATOR = {
    "name": "reg1",
    "segment": ("799", "701"),
    "units": {"a": "ab", "c": "cb"},
    "vreg": 122.0,
    "band": 2.0,
    "ptratio": 40,
    "ctprim": 350,
    "r": 1.5,
    "x": 3.0,
}
REGULATOR_KVA = 2000  # rating of each single-phase unit in the OpenDSS model
REGULATOR_XHL_PERCENT = 1.0
# Open delta: the A-B unit sees a current lagging its voltage by 30 degrees, the C-B unit one
# leading by 30 degrees, so the compensator impedance is rotated by +30 / -30 degrees.
_LDC_ROTATION_DEG = {"a": +30.0, "c": -30.0}
JUMPER_OHMS = 1e-3  # phase B is carried straight through the open-delta bank

# --------------------------------------------------------------------------------------------
# Bus coordinates for drawing (our own schematic layout): the substation is at the left, the
# longest path 799-701-702-703-730-709-708-733-734-737-738-711-740 runs left to right at y = 0
# and the laterals go up or down from it.
# --------------------------------------------------------------------------------------------
BUS_COORDS: dict[str, tuple[float, float]] = {
    "sourcebus": (-2.0, 0.0),
    "799": (-1.0, 0.0),
    "799r": (-0.5, 0.0),
    "701": (0.0, 0.0),
    "702": (1.0, 0.0),
    "705": (1.0, 1.0),
    "742": (1.0, 2.0),
    "712": (0.0, 1.0),
    "713": (1.0, -1.0),
    "704": (1.0, -2.0),
    "714": (0.0, -2.0),
    "718": (-1.0, -2.0),
    "720": (1.0, -3.0),
    "707": (2.0, -3.0),
    "724": (3.0, -3.0),
    "722": (2.0, -4.0),
    "706": (1.0, -4.0),
    "725": (1.0, -5.0),
    "703": (2.0, 0.0),
    "727": (2.0, 1.0),
    "744": (2.0, 2.0),
    "728": (3.0, 2.0),
    "729": (2.0, 3.0),
    "730": (3.0, 0.0),
    "709": (4.0, 0.0),
    "775": (4.0, 1.0),
    "731": (4.0, -1.0),
    "708": (5.0, 0.0),
    "732": (5.0, -1.0),
    "733": (6.0, 0.0),
    "734": (7.0, 0.0),
    "710": (7.0, -1.0),
    "735": (8.0, -1.0),
    "736": (7.0, -2.0),
    "737": (8.0, 0.0),
    "738": (9.0, 0.0),
    "711": (10.0, 0.0),
    "741": (10.0, 1.0),
    "740": (11.0, 0.0),
}

_NODE = _dss.NODE
_DELTA_PAIRS = _dss.DELTA_PAIRS

LOAD_BUSES: list[str] = sorted({bus for bus, *_ in SPOT_LOADS})


# --------------------------------------------------------------------------------------------
# Builder
# --------------------------------------------------------------------------------------------
def _load_commands(bus: str, load_type: str, per_phase: tuple) -> list[str]:
    """One 3-phase load if balanced on all phases, else one single-phase load per phase pair."""
    conn_code, kind = load_type.split("-")
    if conn_code != "D":
        raise ValueError(f"the 37-node feeder has delta loads only, got {load_type} at {bus}")
    model = LOAD_MODELS[kind]
    if len(set(per_phase)) == 1 and per_phase[0] != (0, 0):
        kw, kvar = (3 * v for v in per_phase[0])
        return [
            f"new load.{bus}_spot bus1={bus} phases=3 conn=delta kv={_fmt(FEEDER_KV)} "
            f"kw={_fmt(kw)} kvar={_fmt(kvar)} model={model}"
        ]
    commands = []
    for pair, (kw, kvar) in zip(_DELTA_PAIRS, per_phase, strict=True):
        if kw == 0 and kvar == 0:
            continue
        commands.append(
            f"new load.{bus}_spot_{pair} bus1={bus}{_nodes(pair)} phases=1 conn=delta "
            f"kv={_fmt(FEEDER_KV)} kw={_fmt(kw)} kvar={_fmt(kvar)} model={model}"
        )
    return commands


def _linecode(name: str, config: dict) -> str:
    return _dss.linecode_command(name, config, BASE_FREQUENCY_HZ)


def dss_commands(*, locked_taps: bool = False) -> list[str]:
    """OpenDSS commands that define the feeder, from ``clear`` to ``calcvoltagebases``.

    No ``solve`` and no bus coordinates. ``locked_taps=True`` raises ``ValueError``: the
    regulator of this feeder is always left to its controls.
    """
    if locked_taps:
        raise ValueError("ieee37 has no published locked-tap case; use locked_taps=False")
    cmds = [
        "clear",
        f"set defaultbasefrequency={_fmt(BASE_FREQUENCY_HZ)}",
        f"new circuit.{NAME} bus1={SOURCE_BUS} basekv={_fmt(SOURCE['kv'])} "
        f"pu={_fmt(SOURCE['pu'])} mvasc3={_fmt(SOURCE['mvasc3'])} "
        f"mvasc1={_fmt(SOURCE['mvasc1'])}",
    ]
    for name, (kva, bus_h, conn_h, kv_h, bus_l, conn_l, kv_l, r_pct, x_pct) in TRANSFORMERS.items():
        cmds.append(
            f"new transformer.{name} phases=3 windings=2 xhl={_fmt(x_pct)} "
            f"wdg=1 bus={bus_h} conn={conn_h} kv={_fmt(kv_h)} kva={_fmt(kva)} %r={_fmt(r_pct)} "
            f"wdg=2 bus={bus_l} conn={conn_l} kv={_fmt(kv_l)} kva={_fmt(kva)} %r={_fmt(r_pct)}"
        )
    cmds += [_linecode(name, cfg) for name, cfg in LINE_CONFIGS.items()]

    reg = REGULATOR
    reg_from, reg_to = reg["segment"]
    reg_bus = reg_from + "r"
    for frm, to, phases, config, length_ft in LINES:
        bus1 = reg_bus if (frm, to) == (reg_from, reg_to) else frm
        cmds.append(
            f"new line.{bus1}_{to} phases={len(phases)} bus1={bus1}{_nodes(phases)} "
            f"bus2={to}{_nodes(phases)} linecode={config} length={_fmt(length_ft)} units=ft"
        )

    for ph, pair in reg["units"].items():
        unit = f"{reg['name']}{ph}"
        nodes = "".join("." + _NODE[p] for p in pair)
        angle = math.radians(_LDC_ROTATION_DEG[ph])
        ldc = complex(reg["r"], reg["x"]) * complex(math.cos(angle), math.sin(angle))
        cmds.append(
            f"new transformer.{unit} phases=1 windings=2 bank={reg['name']} "
            f"buses=[{reg_from}{nodes} {reg_bus}{nodes}] conns=[delta delta] "
            f"kvs=[{_fmt(FEEDER_KV)} {_fmt(FEEDER_KV)}] kvas=[{REGULATOR_KVA} {REGULATOR_KVA}] "
            f"xhl={_fmt(REGULATOR_XHL_PERCENT)}"
        )
        cmds.append(
            f"new regcontrol.c{unit} transformer={unit} winding=2 vreg={_fmt(reg['vreg'])} "
            f"band={_fmt(reg['band'])} ptratio={reg['ptratio']} ctprim={reg['ctprim']} "
            f"r={ldc.real:.3f} x={ldc.imag:.3f}"
        )
    # Phase B passes straight through the open-delta bank (a 1 milliohm jumper, 1 ft long).
    cmds.append(
        f"new line.{reg_from}_{reg_bus} phases=1 bus1={reg_from}.2 bus2={reg_bus}.2 "
        f"r1={_fmt(JUMPER_OHMS)} r0={_fmt(JUMPER_OHMS)} x1=0 x0=0 c1=0 c0=0 length=1 units=ft"
    )

    for bus, load_type, *per_phase in SPOT_LOADS:
        cmds += _load_commands(bus, load_type, tuple(per_phase))

    cmds += _dss.voltage_base_commands(VOLTAGE_BASES_KV)
    return cmds


def write_dss(folder) -> Path:
    """Write ``master.dss`` and ``buscoords.csv`` into ``folder``; return the master path.

    ``compile <folder>/master.dss`` then ``solve`` gives the same circuit as ``dss_commands()``.
    """
    return _dss.write_dss(sys.modules[__name__], folder)
