"""IEEE 34-node test feeder (24.9 kV, OpenDSS "Mod 1" conventions).

Source data: IEEE PES Distribution System Analysis Subcommittee, *Distribution Test Feeders*,
"IEEE 34 Node Test Feeder" (W. H. Kersting), including the later correction that moves the
858-864 lateral and its load from phase B to phase A. Line impedances below are the published
configuration matrices in ohm/mile and shunt susceptances in microsiemens/mile; segment lengths
are the published ones in feet; loads are the published per-phase kW/kvar.

The network is modelled the way the standard OpenDSS test case ``ieee34Mod1.dss`` (EPRI,
distributed with OpenDSS) models it, which is the model we validate against
(``tests/test_feeders_reference.py``):

* a stiff 69 kV source at 1.05 pu (angle 30 deg, 200 000 MVA short-circuit level) feeding a
  substation transformer with a tiny leakage impedance (25 MVA, X = 0.01 %, R = 2 x 0.0005 %)
  instead of the published 2.5 MVA, 1 + j8 % unit, so that bus 800 sits at 1.05 pu;
* each distributed load is lumped as two halves, one at each end of its segment;
* every load keeps its model down to 0.85 pu (``vminpu=0.85``) before OpenDSS turns it into a
  constant impedance;
* the two regulators are banks of three single-phase, wye-connected units with line-drop
  compensation (free to move by default; ``dss_commands(locked_taps=True)`` fixes them at the
  taps published with the IEEE results, 12/5/5 and 13/11/12).

Element names: lines are ``<bus1>_<bus2>`` (e.g. ``Line.800_802``, ``Line.814r_850``); loads are
``<bus>_spot[_<phases>]`` for spot loads and ``<bus>_dist_<other end>_<phases>`` for the half of a
distributed load that sits at ``<bus>``, so the load's bus is always ``name.split("_")[0]``.
Regulator units are ``Transformer.reg1a`` ... ``reg2c`` with ``RegControl.creg1a`` ...;
the transformers are ``subxf`` (substation) and ``xfm1`` (24.9/4.16 kV in-line transformer).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

from . import _dss
from ._dss import fmt as _fmt
from ._dss import nodes as _nodes

NAME = "ieee34"
SOURCE_BUS = "sourcebus"
FEEDER_HEAD_BUS = "800"
DELTA = False  # 4-wire wye feeder: line-to-neutral voltages are meaningful

BASE_FREQUENCY_HZ = 60.0
VOLTAGE_BASES_KV = (69.0, 24.9, 4.16, 0.48)
FEEDER_KV = 24.9
LOW_VOLTAGE_KV = 4.16
LOW_VOLTAGE_BUSES = {"888", "890"}  # downstream of the 24.9/4.16 kV transformer XFM-1

# --------------------------------------------------------------------------------------------
# Source and substation (Mod-1 "stiff source" conventions)
# --------------------------------------------------------------------------------------------
SOURCE = {"kv": 69.0, "pu": 1.05, "angle_deg": 30.0, "mvasc3": 200_000.0}

# name: (kVA, bus HV, conn HV, kV HV, bus LV, conn LV, kV LV, %R per winding, %X HV-LV)
TRANSFORMERS = {
    # published: 2500 kVA, 69 kV delta / 24.9 kV grounded wye, 1 + j8 %; Mod-1 stiffens it
    "subxf": (25_000, SOURCE_BUS, "delta", 69.0, "800", "wye", 24.9, 0.0005, 0.01),
    # XFM-1, published: 500 kVA, 24.9 kV grd wye / 4.16 kV grd wye, R = 1.9 %, X = 4.08 %
    "xfm1": (500, "832", "wye", 24.9, "888", "wye", 4.16, 0.95, 4.08),
}

# --------------------------------------------------------------------------------------------
# Line configurations: phase impedance matrix Z (ohm/mile, R + jX) and shunt susceptance
# matrix B (microsiemens/mile), lower triangle row by row, phases in the order of `PHASES`.
# --------------------------------------------------------------------------------------------
LINE_CONFIGS = {
    "300": {
        "z": [
            [1.3368 + 1.3343j],
            [0.2101 + 0.5779j, 1.3238 + 1.3569j],
            [0.2130 + 0.5015j, 0.2066 + 0.4591j, 1.3294 + 1.3471j],
        ],
        "b": [[5.3350], [-1.5313, 5.0979], [-0.9943, -0.6212, 4.8880]],
    },
    "301": {
        "z": [
            [1.9300 + 1.4115j],
            [0.2327 + 0.6442j, 1.9157 + 1.4281j],
            [0.2359 + 0.5691j, 0.2288 + 0.5238j, 1.9219 + 1.4209j],
        ],
        "b": [[5.1207], [-1.4364, 4.9055], [-0.9402, -0.5951, 4.7154]],
    },
    "302": {"z": [[2.7995 + 1.4855j]], "b": [[4.2251]]},  # phase A
    "303": {"z": [[2.7995 + 1.4855j]], "b": [[4.2251]]},  # phase B
    "304": {"z": [[1.9217 + 1.4212j]], "b": [[4.3637]]},  # phase B
}

# --------------------------------------------------------------------------------------------
# Line segments: (from bus, to bus, phases, configuration, length in feet)
# The in-line transformer 832-888 (XFM-1) is in TRANSFORMERS.
# --------------------------------------------------------------------------------------------
LINES = [
    ("800", "802", "abc", "300", 2580),
    ("802", "806", "abc", "300", 1730),
    ("806", "808", "abc", "300", 32230),
    ("808", "810", "b", "303", 5804),
    ("808", "812", "abc", "300", 37500),
    ("812", "814", "abc", "300", 29730),
    ("814", "850", "abc", "301", 10),  # regulator 1 at 814
    ("816", "818", "a", "302", 1710),
    ("816", "824", "abc", "301", 10210),
    ("818", "820", "a", "302", 48150),
    ("820", "822", "a", "302", 13740),
    ("824", "826", "b", "303", 3030),
    ("824", "828", "abc", "301", 840),
    ("828", "830", "abc", "301", 20440),
    ("830", "854", "abc", "301", 520),
    ("832", "858", "abc", "301", 4900),
    ("834", "860", "abc", "301", 2020),
    ("834", "842", "abc", "301", 280),
    ("836", "840", "abc", "301", 860),
    ("836", "862", "abc", "301", 280),
    ("842", "844", "abc", "301", 1350),
    ("844", "846", "abc", "301", 3640),
    ("846", "848", "abc", "301", 530),
    ("850", "816", "abc", "301", 310),
    ("852", "832", "abc", "301", 10),  # regulator 2 at 852
    ("854", "856", "b", "303", 23330),
    ("854", "852", "abc", "301", 36830),
    ("858", "864", "a", "303", 1620),  # phase A per the published error report (was B)
    ("858", "834", "abc", "301", 5830),
    ("860", "836", "abc", "301", 2680),
    ("862", "838", "b", "304", 4860),
    ("888", "890", "abc", "300", 10560),
]

# --------------------------------------------------------------------------------------------
# Loads. Type: Y/D = wye (phase-neutral) / delta (phase-phase); PQ / I / Z = constant power /
# current / impedance. Per-phase (kW, kvar) for phase 1, 2, 3 (A, B, C for wye; AB, BC, CA
# for delta).
# --------------------------------------------------------------------------------------------
SPOT_LOADS = [
    ("860", "Y-PQ", (20, 16), (20, 16), (20, 16)),
    ("840", "Y-I", (9, 7), (9, 7), (9, 7)),
    ("844", "Y-Z", (135, 105), (135, 105), (135, 105)),
    ("848", "D-PQ", (20, 16), (20, 16), (20, 16)),
    ("890", "D-I", (150, 75), (150, 75), (150, 75)),
    ("830", "D-Z", (10, 5), (10, 5), (25, 10)),
]

# Distributed loads along a segment: (from bus, to bus, type, phase 1, phase 2, phase 3)
DISTRIBUTED_LOADS = [
    ("802", "806", "Y-PQ", (0, 0), (30, 15), (25, 14)),
    ("808", "810", "Y-I", (0, 0), (16, 8), (0, 0)),
    ("818", "820", "Y-Z", (34, 17), (0, 0), (0, 0)),
    ("820", "822", "Y-PQ", (135, 70), (0, 0), (0, 0)),
    ("816", "824", "D-I", (0, 0), (5, 2), (0, 0)),
    ("824", "826", "Y-I", (0, 0), (40, 20), (0, 0)),
    ("824", "828", "Y-PQ", (0, 0), (0, 0), (4, 2)),
    ("828", "830", "Y-PQ", (7, 3), (0, 0), (0, 0)),
    ("854", "856", "Y-PQ", (0, 0), (4, 2), (0, 0)),
    ("832", "858", "D-Z", (7, 3), (2, 1), (6, 3)),
    ("858", "864", "Y-PQ", (2, 1), (0, 0), (0, 0)),  # phase A per the error report
    ("858", "834", "D-PQ", (4, 2), (15, 8), (13, 7)),
    ("834", "860", "D-Z", (16, 8), (20, 10), (110, 55)),
    ("860", "836", "D-PQ", (30, 15), (10, 6), (42, 22)),
    ("836", "840", "D-I", (18, 9), (22, 11), (0, 0)),
    ("862", "838", "Y-PQ", (0, 0), (28, 14), (0, 0)),
    ("842", "844", "Y-PQ", (9, 5), (0, 0), (0, 0)),
    ("844", "846", "Y-PQ", (0, 0), (25, 12), (20, 11)),
    ("846", "848", "Y-PQ", (0, 0), (23, 11), (0, 0)),
]

# OpenDSS load models: 1 constant PQ, 2 constant Z, 5 constant current magnitude.
LOAD_MODELS = {"PQ": 1, "Z": 2, "I": 5}
LOAD_VMINPU = 0.85

# Where the OpenDSS Mod-1 model departs from the published tables we follow the model, so that
# our power flow matches the standard OpenDSS solution (the published data above stay as they
# are; these are the only two departures):
#  * 808-810 (Y-I): OpenDSS load model 4 (P proportional to V, Q to V^2) instead of model 5;
#  * 832-858 (D-Z): each half is connected from one phase to ground (bus 832.1, 832.2, 832.3
#    and the same at 858) while keeping its 24.9 kV phase-to-phase rating, so that it draws
#    about one third of its nominal power.
MOD1_LOAD_MODEL = {("808", "810"): 4}
MOD1_PHASE_TO_GROUND_DELTA = {("832", "858")}

# --------------------------------------------------------------------------------------------
# Shunt capacitors: bus -> (kvar on phase A, B, C)
# --------------------------------------------------------------------------------------------
CAPACITORS = {"844": (100, 100, 100), "848": (150, 150, 150)}

# --------------------------------------------------------------------------------------------
# Regulators: three single-phase wye-connected units per bank (published settings, in volts on
# the 120 V base, ohms of line-drop compensation, identical on the three phases).
# --------------------------------------------------------------------------------------------
REGULATORS = {
    "reg1": {
        "segment": ("814", "850"),
        "phases": "abc",
        "vreg": 122.0,
        "band": 2.0,
        "ptratio": 120,
        "ctprim": 100,
        "r": 2.7,
        "x": 1.6,
    },
    "reg2": {
        "segment": ("852", "832"),
        "phases": "abc",
        "vreg": 124.0,
        "band": 2.0,
        "ptratio": 120,
        "ctprim": 100,
        "r": 2.5,
        "x": 1.5,
    },
}
REGULATOR_KVA = 20_000  # Mod-1 rating of each single-phase unit
REGULATOR_XHL_PERCENT = 1.0
TAP_STEP = 0.00625  # 5/8 % per step, 32 steps over +-10 %
PUBLISHED_TAPS = {"reg1": (12, 5, 5), "reg2": (13, 11, 12)}  # taps on phases A, B, C

# --------------------------------------------------------------------------------------------
# Bus coordinates for drawing (our own schematic layout, after the published one-line
# diagram): the main trunk runs left to right at y = 0, laterals go up or down from it.
# --------------------------------------------------------------------------------------------
BUS_COORDS: dict[str, tuple[float, float]] = {
    "sourcebus": (-1.5, 0.0),
    "800": (0.0, 0.0),
    "802": (1.0, 0.0),
    "806": (2.0, 0.0),
    "808": (3.0, 0.0),
    "810": (3.0, -1.0),
    "812": (4.0, 0.0),
    "814": (5.0, 0.0),
    "814r": (5.5, 0.0),
    "850": (6.0, 0.0),
    "816": (7.0, 0.0),
    "818": (7.0, 1.0),
    "820": (7.0, 2.0),
    "822": (7.0, 3.0),
    "824": (8.0, 0.0),
    "826": (8.0, -1.0),
    "828": (9.0, 0.0),
    "830": (10.0, 0.0),
    "854": (11.0, 0.0),
    "856": (11.0, -1.0),
    "852": (12.0, 0.0),
    "852r": (12.5, 0.0),
    "832": (13.0, 0.0),
    "888": (13.0, -1.0),
    "890": (13.0, -2.0),
    "858": (14.0, 0.0),
    "864": (14.0, 1.0),
    "834": (15.0, 0.0),
    "842": (15.0, 1.0),
    "844": (15.0, 2.0),
    "846": (15.0, 3.0),
    "848": (15.0, 4.0),
    "860": (16.0, 0.0),
    "836": (17.0, 0.0),
    "840": (18.0, 0.0),
    "862": (17.0, -1.0),
    "838": (17.0, -2.0),
}

PHASES = "abc"
_NODE = _dss.NODE
_DELTA_PAIRS = _dss.DELTA_PAIRS

LOAD_BUSES: list[str] = sorted(
    {bus for bus, *_ in SPOT_LOADS} | {bus for seg in DISTRIBUTED_LOADS for bus in seg[:2]}
)


# --------------------------------------------------------------------------------------------
# Builder
# --------------------------------------------------------------------------------------------
def _regulated_from_bus() -> dict[tuple[str, str], str]:
    """Segment -> the bus on the load side of its regulator (e.g. 814 -> 814r)."""
    return {reg["segment"]: reg["segment"][0] + "r" for reg in REGULATORS.values()}


def _bus_kv(bus: str) -> float:
    return LOW_VOLTAGE_KV if bus in LOW_VOLTAGE_BUSES else FEEDER_KV


def _load_commands(
    name: str, bus: str, load_type: str, per_phase: tuple, model: int, ground_delta: bool
) -> list[str]:
    """One 3-phase load if balanced on all phases, else one single-phase load per phase."""
    delta = load_type.startswith("D-")
    kv_ll = _bus_kv(bus)
    common = f"model={model} vminpu={_fmt(LOAD_VMINPU)}"
    if len(set(per_phase)) == 1 and per_phase[0] != (0, 0):
        kw, kvar = (3 * v for v in per_phase[0])
        conn = "delta" if delta else "wye"
        return [
            f"new load.{name} bus1={bus} phases=3 conn={conn} kv={_fmt(kv_ll)} "
            f"kw={_fmt(kw)} kvar={_fmt(kvar)} {common}"
        ]
    commands = []
    for i, (kw, kvar) in enumerate(per_phase):
        if kw == 0 and kvar == 0:
            continue
        if delta and ground_delta:  # Mod-1 quirk: delta-rated load from one phase to ground
            phases, nodes, conn, kv = PHASES[i], _nodes(PHASES[i]) + ".0", "delta", kv_ll
        elif delta:
            phases, conn, kv = _DELTA_PAIRS[i], "delta", kv_ll
            nodes = _nodes(phases)
        else:
            phases, conn, kv = PHASES[i], "wye", kv_ll / math.sqrt(3.0)
            nodes = _nodes(phases)
        commands.append(
            f"new load.{name}_{phases} bus1={bus}{nodes} phases=1 conn={conn} "
            f"kv={kv:.6g} kw={_fmt(kw)} kvar={_fmt(kvar)} {common}"
        )
    return commands


def _linecode(name: str, config: dict) -> str:
    return _dss.linecode_command(name, config, BASE_FREQUENCY_HZ)


def dss_commands(*, locked_taps: bool = False) -> list[str]:
    """OpenDSS commands that define the feeder, from ``clear`` to ``calcvoltagebases``.

    No ``solve`` and no bus coordinates. With ``locked_taps=True`` the regulator taps are set to
    the published values (reg1 12/5/5, reg2 13/11/12 steps of 0.625 %) and regulator control is
    switched off (``set controlmode=off``), like the second part of ``Run_IEEE34Mod1.dss``.
    """
    cmds = [
        "clear",
        f"set defaultbasefrequency={_fmt(BASE_FREQUENCY_HZ)}",
        f"new circuit.{NAME} bus1={SOURCE_BUS} basekv={_fmt(SOURCE['kv'])} "
        f"pu={_fmt(SOURCE['pu'])} angle={_fmt(SOURCE['angle_deg'])} "
        f"mvasc3={_fmt(SOURCE['mvasc3'])}",
    ]
    for name, (kva, bus_h, conn_h, kv_h, bus_l, conn_l, kv_l, r_pct, x_pct) in TRANSFORMERS.items():
        cmds.append(
            f"new transformer.{name} phases=3 windings=2 xhl={_fmt(x_pct)} "
            f"wdg=1 bus={bus_h} conn={conn_h} kv={_fmt(kv_h)} kva={_fmt(kva)} %r={_fmt(r_pct)} "
            f"wdg=2 bus={bus_l} conn={conn_l} kv={_fmt(kv_l)} kva={_fmt(kva)} %r={_fmt(r_pct)}"
        )
    cmds += [_linecode(name, cfg) for name, cfg in LINE_CONFIGS.items()]

    regulated = _regulated_from_bus()
    for frm, to, phases, config, length_ft in LINES:
        bus1 = regulated.get((frm, to), frm)
        cmds.append(
            f"new line.{bus1}_{to} phases={len(phases)} bus1={bus1}{_nodes(phases)} "
            f"bus2={to}{_nodes(phases)} linecode={config} length={_fmt(length_ft)} units=ft"
        )

    for bus, kvar_per_phase in CAPACITORS.items():
        cmds.append(
            f"new capacitor.c{bus} bus1={bus} phases=3 kvar={_fmt(sum(kvar_per_phase))} "
            f"kv={_fmt(_bus_kv(bus))}"
        )

    kv_unit = FEEDER_KV / math.sqrt(3.0)
    for reg_name, reg in REGULATORS.items():
        frm, _to = reg["segment"]
        for ph in reg["phases"]:
            unit = f"{reg_name}{ph}"
            node = _NODE[ph]
            cmds.append(
                f"new transformer.{unit} phases=1 windings=2 bank={reg_name} "
                f"buses=[{frm}.{node} {frm}r.{node}] conns=[wye wye] "
                f"kvs=[{kv_unit:.6g} {kv_unit:.6g}] kvas=[{REGULATOR_KVA} {REGULATOR_KVA}] "
                f"xhl={_fmt(REGULATOR_XHL_PERCENT)}"
            )
            cmds.append(
                f"new regcontrol.c{unit} transformer={unit} winding=2 vreg={_fmt(reg['vreg'])} "
                f"band={_fmt(reg['band'])} ptratio={reg['ptratio']} ctprim={reg['ctprim']} "
                f"r={_fmt(reg['r'])} x={_fmt(reg['x'])}"
            )

    for bus, load_type, *per_phase in SPOT_LOADS:
        model = LOAD_MODELS[load_type.split("-")[1]]
        cmds += _load_commands(f"{bus}_spot", bus, load_type, tuple(per_phase), model, False)
    for frm, to, load_type, *per_phase in DISTRIBUTED_LOADS:
        model = MOD1_LOAD_MODEL.get((frm, to), LOAD_MODELS[load_type.split("-")[1]])
        ground_delta = (frm, to) in MOD1_PHASE_TO_GROUND_DELTA
        half = tuple((kw / 2, kvar / 2) for kw, kvar in per_phase)
        for bus, other in ((frm, to), (to, frm)):
            cmds += _load_commands(f"{bus}_dist_{other}", bus, load_type, half, model, ground_delta)

    if locked_taps:
        for reg_name, taps in PUBLISHED_TAPS.items():
            for ph, tap in zip(REGULATORS[reg_name]["phases"], taps, strict=True):
                cmds.append(f"edit transformer.{reg_name}{ph} wdg=2 tap={_fmt(1 + tap * TAP_STEP)}")
        cmds.append("set controlmode=off")

    cmds += _dss.voltage_base_commands(VOLTAGE_BASES_KV)
    return cmds


def write_dss(folder) -> Path:
    """Write ``master.dss`` and ``buscoords.csv`` into ``folder``; return the master path.

    ``compile <folder>/master.dss`` then ``solve`` gives the same circuit as ``dss_commands()``.
    """
    return _dss.write_dss(sys.modules[__name__], folder)
