"""IEEE 123-node test feeder (4.16 kV, overhead and underground, four regulators).

Source data: IEEE PES Distribution System Analysis Subcommittee, *Distribution Test Feeders*,
"IEEE 123 Node Test Feeder" (W. H. Kersting): the line segment data (from, to, length in feet,
configuration), the twelve line configurations (phase impedance matrices in ohm/mile and shunt
susceptances in microsiemens/mile; configurations 2-6 are phase permutations of 1), the spot
loads as published per-phase kW/kvar with their model (constant PQ, current or impedance, wye
or delta), the shunt capacitors, the 150 kVA transformer 61-610, the switches (normally open:
151-300 and 54-94) and the four regulators with their published settings.

The network is modelled the way the standard OpenDSS test case ``IEEE123Master.dss`` (EPRI,
distributed with OpenDSS) models it, which is the model we validate against
(``tests/test_feeders_reference.py``):

* the source is bus 150 itself, a stiff 4.16 kV source at 1.00 pu (X = 0.1 milliohm);
* regulator 1 is one three-phase gang-operated unit (5000 kVA, X = 0.001 %) between 150 and
  150r; regulators 2-4 are single-phase 2000 kVA units (X = 0.01 %) at 9 (A), 25 (A, C) and 160
  (A, B, C), their load side a new bus ``<bus>r``; every regulator unit has a 1e-5 % load loss;
* closed switches are 1 milliohm lines; each normally open switch is a 1 milliohm line from
  its closed end to a bus of its own (``300_open``, ``94_open``), so the network stays radial
  and the open point's voltage can be seen.

With the regulators free, the controls move as in a plain solve of that model (the reference
solution); its driver ``Run_IEEE123Bus.DSS`` additionally limits each control to one tap per
iteration, which settles elsewhere (regulator 4 at 8/2/5 instead of 10/4/6).

Element names: lines are ``<bus1>_<bus2>`` (``Line.149_1``, ``Line.9r_14``, switches
``Line.150r_149``, ``Line.151_300_open``); loads are ``<bus>_spot[_<phases>]``, so the load's bus is
always ``name.split("_")[0]``. Regulator units are ``Transformer.reg1a``, ``reg2a``, ``reg3a``,
``reg3c``, ``reg4a`` .. ``reg4c`` with ``RegControl.creg1a`` ..; the transformer 61s-610 is
``xfm1``. ``dss_commands(locked_taps=True)`` sets the taps published with the IEEE results
(reg1 7; reg2 -1; reg3 0, -1; reg4 8, 1, 5) and holds them (like the second part of the
driver).
"""

from __future__ import annotations

import sys
from pathlib import Path

from . import _dss
from ._dss import fmt as _fmt
from ._dss import nodes as _nodes

NAME = "ieee123"
SOURCE_BUS = "150"
FEEDER_HEAD_BUS = "150"
DELTA = False  # 4-wire wye feeder: line-to-neutral voltages are meaningful

BASE_FREQUENCY_HZ = 60.0
VOLTAGE_BASES_KV = (4.16, 0.48)
FEEDER_KV = 4.16
LN_KV_LOAD = 2.4  # rating of the single-phase wye loads
LN_KV_CAPACITOR = 2.402  # rating of the single-phase capacitors
SOURCE = {"kv": 4.16, "pu": 1.00, "x_ohm": 0.0001}

# XFM-1, published: 150 kVA, 4.16 kV delta / 0.48 kV delta, R = 1.27 %, X = 2.72 %
# name: (kVA, bus HV, conn HV, kV HV, bus LV, conn LV, kV LV, %R per winding, %X HV-LV)
TRANSFORMERS = {"xfm1": (150, "61s", "delta", 4.16, "610", "delta", 0.48, 0.635, 2.72)}

# --------------------------------------------------------------------------------------------
# Line configurations 1-12: Z (ohm/mile) and B (microsiemens/mile), lower triangle, rows in the
# order of the segment's phases.
# --------------------------------------------------------------------------------------------
LINE_CONFIGS = {
    "1": {
        "z": [
            [0.4576 + 1.0780j],
            [0.1560 + 0.5017j, 0.4666 + 1.0482j],
            [0.1535 + 0.3849j, 0.1580 + 0.4236j, 0.4615 + 1.0651j],
        ],
        "b": [[5.6764], [-1.8319, 5.9808], [-0.6982, -1.1645, 5.3970]],
    },
    "2": {
        "z": [
            [0.4666 + 1.0482j],
            [0.1580 + 0.4236j, 0.4615 + 1.0651j],
            [0.1560 + 0.5017j, 0.1535 + 0.3849j, 0.4576 + 1.0780j],
        ],
        "b": [[5.9808], [-1.1645, 5.3970], [-1.8319, -0.6982, 5.6764]],
    },
    "3": {
        "z": [
            [0.4615 + 1.0651j],
            [0.1535 + 0.3849j, 0.4576 + 1.0780j],
            [0.1580 + 0.4236j, 0.1560 + 0.5017j, 0.4666 + 1.0482j],
        ],
        "b": [[5.3970], [-0.6982, 5.6764], [-1.1645, -1.8319, 5.9808]],
    },
    "4": {
        "z": [
            [0.4615 + 1.0651j],
            [0.1580 + 0.4236j, 0.4666 + 1.0482j],
            [0.1535 + 0.3849j, 0.1560 + 0.5017j, 0.4576 + 1.0780j],
        ],
        "b": [[5.3970], [-1.1645, 5.9808], [-0.6982, -1.8319, 5.6764]],
    },
    "5": {
        "z": [
            [0.4666 + 1.0482j],
            [0.1560 + 0.5017j, 0.4576 + 1.0780j],
            [0.1580 + 0.4236j, 0.1535 + 0.3849j, 0.4615 + 1.0651j],
        ],
        "b": [[5.9808], [-1.8319, 5.6764], [-1.1645, -0.6982, 5.3970]],
    },
    "6": {
        "z": [
            [0.4576 + 1.0780j],
            [0.1535 + 0.3849j, 0.4615 + 1.0651j],
            [0.1560 + 0.5017j, 0.1580 + 0.4236j, 0.4666 + 1.0482j],
        ],
        "b": [[5.6764], [-0.6982, 5.3970], [-1.8319, -1.1645, 5.9808]],
    },
    "7": {
        "z": [
            [0.4576 + 1.0780j],
            [0.1535 + 0.3849j, 0.4615 + 1.0651j],
        ],
        "b": [[5.1153], [-1.0549, 5.1703]],
    },
    "8": {
        "z": [
            [0.4576 + 1.0780j],
            [0.1535 + 0.3849j, 0.4615 + 1.0651j],
        ],
        "b": [[5.1153], [-1.0549, 5.1703]],
    },
    "9": {
        "z": [
            [1.3292 + 1.3475j],
        ],
        "b": [[4.5192]],
    },
    "10": {
        "z": [
            [1.3292 + 1.3475j],
        ],
        "b": [[4.5192]],
    },
    "11": {
        "z": [
            [1.3292 + 1.3475j],
        ],
        "b": [[4.5192]],
    },
    "12": {
        "z": [
            [1.5209 + 0.7521j],
            [0.5198 + 0.2775j, 1.5329 + 0.7162j],
            [0.4924 + 0.2157j, 0.5198 + 0.2775j, 1.5209 + 0.7521j],
        ],
        "b": [[67.2226], [0.0000, 67.2226], [0.0000, 0.0000, 67.2226]],
    },
}

# --------------------------------------------------------------------------------------------
# Line segments: (from bus, to bus, phases, configuration, length in feet), as published. A
# segment that leaves a regulator starts at the regulator's load side (``REGULATED``).
# --------------------------------------------------------------------------------------------
LINES = [
    ("149", "1", "abc", "1", 400),
    ("1", "2", "b", "10", 175),
    ("1", "3", "c", "11", 250),
    ("1", "7", "abc", "1", 300),
    ("3", "4", "c", "11", 200),
    ("3", "5", "c", "11", 325),
    ("5", "6", "c", "11", 250),
    ("7", "8", "abc", "1", 200),
    ("8", "12", "b", "10", 225),
    ("8", "9", "a", "9", 225),
    ("8", "13", "abc", "1", 300),
    ("9", "14", "a", "9", 425),
    ("13", "34", "c", "11", 150),
    ("13", "18", "abc", "2", 825),
    ("14", "11", "a", "9", 250),
    ("14", "10", "a", "9", 250),
    ("15", "16", "c", "11", 375),
    ("15", "17", "c", "11", 350),
    ("18", "19", "a", "9", 250),
    ("18", "21", "abc", "2", 300),
    ("19", "20", "a", "9", 325),
    ("21", "22", "b", "10", 525),
    ("21", "23", "abc", "2", 250),
    ("23", "24", "c", "11", 550),
    ("23", "25", "abc", "2", 275),
    ("25", "26", "ac", "7", 350),
    ("25", "28", "abc", "2", 200),
    ("26", "27", "ac", "7", 275),
    ("26", "31", "c", "11", 225),
    ("27", "33", "a", "9", 500),
    ("28", "29", "abc", "2", 300),
    ("29", "30", "abc", "2", 350),
    ("30", "250", "abc", "2", 200),
    ("31", "32", "c", "11", 300),
    ("34", "15", "c", "11", 100),
    ("35", "36", "ab", "8", 650),
    ("35", "40", "abc", "1", 250),
    ("36", "37", "a", "9", 300),
    ("36", "38", "b", "10", 250),
    ("38", "39", "b", "10", 325),
    ("40", "41", "c", "11", 325),
    ("40", "42", "abc", "1", 250),
    ("42", "43", "b", "10", 500),
    ("42", "44", "abc", "1", 200),
    ("44", "45", "a", "9", 200),
    ("44", "47", "abc", "1", 250),
    ("45", "46", "a", "9", 300),
    ("47", "48", "abc", "4", 150),
    ("47", "49", "abc", "4", 250),
    ("49", "50", "abc", "4", 250),
    ("50", "51", "abc", "4", 250),
    ("51", "151", "abc", "4", 500),
    ("52", "53", "abc", "1", 200),
    ("53", "54", "abc", "1", 125),
    ("54", "55", "abc", "1", 275),
    ("54", "57", "abc", "3", 350),
    ("55", "56", "abc", "1", 275),
    ("57", "58", "b", "10", 250),
    ("57", "60", "abc", "3", 750),
    ("58", "59", "b", "10", 250),
    ("60", "61", "abc", "5", 550),
    ("60", "62", "abc", "12", 250),
    ("62", "63", "abc", "12", 175),
    ("63", "64", "abc", "12", 350),
    ("64", "65", "abc", "12", 425),
    ("65", "66", "abc", "12", 325),
    ("67", "68", "a", "9", 200),
    ("67", "72", "abc", "3", 275),
    ("67", "97", "abc", "3", 250),
    ("68", "69", "a", "9", 275),
    ("69", "70", "a", "9", 325),
    ("70", "71", "a", "9", 275),
    ("72", "73", "c", "11", 275),
    ("72", "76", "abc", "3", 200),
    ("73", "74", "c", "11", 350),
    ("74", "75", "c", "11", 400),
    ("76", "77", "abc", "6", 400),
    ("76", "86", "abc", "3", 700),
    ("77", "78", "abc", "6", 100),
    ("78", "79", "abc", "6", 225),
    ("78", "80", "abc", "6", 475),
    ("80", "81", "abc", "6", 175),
    ("81", "82", "abc", "6", 250),
    ("81", "84", "c", "11", 675),
    ("82", "83", "abc", "6", 250),
    ("84", "85", "c", "11", 475),
    ("86", "87", "abc", "6", 450),
    ("87", "88", "a", "9", 175),
    ("87", "89", "abc", "6", 275),
    ("89", "90", "b", "10", 250),
    ("89", "91", "abc", "6", 225),
    ("91", "92", "c", "11", 300),
    ("91", "93", "abc", "6", 225),
    ("93", "94", "a", "9", 275),
    ("93", "95", "abc", "6", 300),
    ("95", "96", "b", "10", 200),
    ("97", "98", "abc", "3", 275),
    ("98", "99", "abc", "3", 550),
    ("99", "100", "abc", "3", 300),
    ("100", "450", "abc", "3", 800),
    ("197", "101", "abc", "3", 250),
    ("101", "102", "c", "11", 225),
    ("101", "105", "abc", "3", 275),
    ("102", "103", "c", "11", 325),
    ("103", "104", "c", "11", 700),
    ("105", "106", "b", "10", 225),
    ("105", "108", "abc", "3", 325),
    ("106", "107", "b", "10", 575),
    ("108", "109", "a", "9", 450),
    ("108", "300", "abc", "3", 1000),
    ("109", "110", "a", "9", 300),
    ("110", "111", "a", "9", 575),
    ("110", "112", "a", "9", 125),
    ("112", "113", "a", "9", 525),
    ("113", "114", "a", "9", 325),
    ("135", "35", "abc", "4", 375),
    ("152", "52", "abc", "1", 400),
    ("160", "67", "abc", "6", 350),
]

# Switches: (bus 1, bus 2, phases, state). Closed ones are short lines; an open one is a short
# line from bus 1 to ``<bus 2>_open``, a bus of its own.
SWITCHES = [
    ("150r", "149", "abc", "closed"),
    ("13", "152", "abc", "closed"),
    ("18", "135", "abc", "closed"),
    ("60", "160", "abc", "closed"),
    ("97", "197", "abc", "closed"),
    ("61", "61s", "abc", "closed"),
    ("151", "300", "abc", "open"),
    ("54", "94", "a", "open"),
]
SWITCH_OHMS = 1e-3
SWITCH_LENGTH_KFT = 0.001

# --------------------------------------------------------------------------------------------
# Spot loads: (bus, type, phase A, phase B, phase C) with per-phase (kW, kvar); for delta loads
# the entries are phases AB, BC, CA. Y/D = wye/delta; PQ / I / Z = constant power / current /
# impedance.
# --------------------------------------------------------------------------------------------
SPOT_LOADS = [
    ("1", "Y-PQ", (40, 20), (0, 0), (0, 0)),
    ("2", "Y-PQ", (0, 0), (20, 10), (0, 0)),
    ("4", "Y-PQ", (0, 0), (0, 0), (40, 20)),
    ("5", "Y-I", (0, 0), (0, 0), (20, 10)),
    ("6", "Y-Z", (0, 0), (0, 0), (40, 20)),
    ("7", "Y-PQ", (20, 10), (0, 0), (0, 0)),
    ("9", "Y-PQ", (40, 20), (0, 0), (0, 0)),
    ("10", "Y-I", (20, 10), (0, 0), (0, 0)),
    ("11", "Y-Z", (40, 20), (0, 0), (0, 0)),
    ("12", "Y-PQ", (0, 0), (20, 10), (0, 0)),
    ("16", "Y-PQ", (0, 0), (0, 0), (40, 20)),
    ("17", "Y-PQ", (0, 0), (0, 0), (20, 10)),
    ("19", "Y-PQ", (40, 20), (0, 0), (0, 0)),
    ("20", "Y-I", (40, 20), (0, 0), (0, 0)),
    ("22", "Y-Z", (0, 0), (40, 20), (0, 0)),
    ("24", "Y-PQ", (0, 0), (0, 0), (40, 20)),
    ("28", "Y-I", (40, 20), (0, 0), (0, 0)),
    ("29", "Y-Z", (40, 20), (0, 0), (0, 0)),
    ("30", "Y-PQ", (0, 0), (0, 0), (40, 20)),
    ("31", "Y-PQ", (0, 0), (0, 0), (20, 10)),
    ("32", "Y-PQ", (0, 0), (0, 0), (20, 10)),
    ("33", "Y-I", (40, 20), (0, 0), (0, 0)),
    ("34", "Y-Z", (0, 0), (0, 0), (40, 20)),
    ("35", "D-PQ", (40, 20), (0, 0), (0, 0)),
    ("37", "Y-Z", (40, 20), (0, 0), (0, 0)),
    ("38", "Y-I", (0, 0), (20, 10), (0, 0)),
    ("39", "Y-PQ", (0, 0), (20, 10), (0, 0)),
    ("41", "Y-PQ", (0, 0), (0, 0), (20, 10)),
    ("42", "Y-PQ", (20, 10), (0, 0), (0, 0)),
    ("43", "Y-Z", (0, 0), (40, 20), (0, 0)),
    ("45", "Y-I", (20, 10), (0, 0), (0, 0)),
    ("46", "Y-PQ", (20, 10), (0, 0), (0, 0)),
    ("47", "Y-I", (35, 25), (35, 25), (35, 25)),
    ("48", "Y-Z", (70, 50), (70, 50), (70, 50)),
    ("49", "Y-PQ", (35, 25), (70, 50), (35, 20)),
    ("50", "Y-PQ", (0, 0), (0, 0), (40, 20)),
    ("51", "Y-PQ", (20, 10), (0, 0), (0, 0)),
    ("52", "Y-PQ", (40, 20), (0, 0), (0, 0)),
    ("53", "Y-PQ", (40, 20), (0, 0), (0, 0)),
    ("55", "Y-Z", (20, 10), (0, 0), (0, 0)),
    ("56", "Y-PQ", (0, 0), (20, 10), (0, 0)),
    ("58", "Y-I", (0, 0), (20, 10), (0, 0)),
    ("59", "Y-PQ", (0, 0), (20, 10), (0, 0)),
    ("60", "Y-PQ", (20, 10), (0, 0), (0, 0)),
    ("62", "Y-Z", (0, 0), (0, 0), (40, 20)),
    ("63", "Y-PQ", (40, 20), (0, 0), (0, 0)),
    ("64", "Y-I", (0, 0), (75, 35), (0, 0)),
    ("65", "D-Z", (35, 25), (35, 25), (70, 50)),
    ("66", "Y-PQ", (0, 0), (0, 0), (75, 35)),
    ("68", "Y-PQ", (20, 10), (0, 0), (0, 0)),
    ("69", "Y-PQ", (40, 20), (0, 0), (0, 0)),
    ("70", "Y-PQ", (20, 10), (0, 0), (0, 0)),
    ("71", "Y-PQ", (40, 20), (0, 0), (0, 0)),
    ("73", "Y-PQ", (0, 0), (0, 0), (40, 20)),
    ("74", "Y-Z", (0, 0), (0, 0), (40, 20)),
    ("75", "Y-PQ", (0, 0), (0, 0), (40, 20)),
    ("76", "D-I", (105, 80), (70, 50), (70, 50)),
    ("77", "Y-PQ", (0, 0), (40, 20), (0, 0)),
    ("79", "Y-Z", (40, 20), (0, 0), (0, 0)),
    ("80", "Y-PQ", (0, 0), (40, 20), (0, 0)),
    ("82", "Y-PQ", (40, 20), (0, 0), (0, 0)),
    ("83", "Y-PQ", (0, 0), (0, 0), (20, 10)),
    ("84", "Y-PQ", (0, 0), (0, 0), (20, 10)),
    ("85", "Y-PQ", (0, 0), (0, 0), (40, 20)),
    ("86", "Y-PQ", (0, 0), (20, 10), (0, 0)),
    ("87", "Y-PQ", (0, 0), (40, 20), (0, 0)),
    ("88", "Y-PQ", (40, 20), (0, 0), (0, 0)),
    ("90", "Y-I", (0, 0), (40, 20), (0, 0)),
    ("92", "Y-PQ", (0, 0), (0, 0), (40, 20)),
    ("94", "Y-PQ", (40, 20), (0, 0), (0, 0)),
    ("95", "Y-PQ", (0, 0), (20, 10), (0, 0)),
    ("96", "Y-PQ", (0, 0), (20, 10), (0, 0)),
    ("98", "Y-PQ", (40, 20), (0, 0), (0, 0)),
    ("99", "Y-PQ", (0, 0), (40, 20), (0, 0)),
    ("100", "Y-Z", (0, 0), (0, 0), (40, 20)),
    ("102", "Y-PQ", (0, 0), (0, 0), (20, 10)),
    ("103", "Y-PQ", (0, 0), (0, 0), (40, 20)),
    ("104", "Y-PQ", (0, 0), (0, 0), (40, 20)),
    ("106", "Y-PQ", (0, 0), (40, 20), (0, 0)),
    ("107", "Y-PQ", (0, 0), (40, 20), (0, 0)),
    ("109", "Y-PQ", (40, 20), (0, 0), (0, 0)),
    ("111", "Y-PQ", (20, 10), (0, 0), (0, 0)),
    ("112", "Y-I", (20, 10), (0, 0), (0, 0)),
    ("113", "Y-Z", (40, 20), (0, 0), (0, 0)),
    ("114", "Y-PQ", (20, 10), (0, 0), (0, 0)),
]

# OpenDSS load models: 1 constant PQ, 2 constant Z, 5 constant current magnitude.
LOAD_MODELS = {"PQ": 1, "Z": 2, "I": 5}

# Shunt capacitors: bus -> (kvar on phase A, B, C)
CAPACITORS = {"83": (200, 200, 200), "88": (50, 0, 0), "90": (0, 50, 0), "92": (0, 0, 50)}

# --------------------------------------------------------------------------------------------
# Regulators (published settings; volts on the 120 V base, ohms of line-drop compensation).
# --------------------------------------------------------------------------------------------
REGULATORS = {
    "reg1": {"bus": "150", "phases": "abc", "gang": True, "vreg": 120.0, "band": 2.0,
             "ptratio": 20, "ctprim": 700, "r": {"a": 3.0}, "x": {"a": 7.5}},
    "reg2": {"bus": "9", "phases": "a", "gang": False, "vreg": 120.0, "band": 2.0,
             "ptratio": 20, "ctprim": 50, "r": {"a": 0.4}, "x": {"a": 0.4}},
    "reg3": {"bus": "25", "phases": "ac", "gang": False, "vreg": 120.0, "band": 1.0,
             "ptratio": 20, "ctprim": 50, "r": {"a": 0.4, "c": 0.4}, "x": {"a": 0.4, "c": 0.4}},
    "reg4": {"bus": "160", "phases": "abc", "gang": False, "vreg": 124.0, "band": 2.0,
             "ptratio": 20, "ctprim": 300, "r": {"a": 0.6, "b": 1.4, "c": 0.2},
             "x": {"a": 1.3, "b": 2.6, "c": 1.4}},
}
REGULATED = {reg["bus"]: reg["bus"] + "r" for reg in REGULATORS.values()}
# The published segments that start on a regulator's load side (regulator 1 feeds switch
# 150-149, in SWITCHES).
REGULATED_SEGMENTS = {("9", "14"), ("25", "26"), ("160", "67")}
GANG_KVA, GANG_XHL_PERCENT = 5000, 0.001
UNIT_KVA, UNIT_XHL_PERCENT, UNIT_KV = 2000, 0.01, 2.402
REGULATOR_LOADLOSS_PERCENT = 0.00001
TAP_STEP = 0.00625
PUBLISHED_TAPS = {"reg1a": 7, "reg2a": -1, "reg3a": 0, "reg3c": -1, "reg4a": 8, "reg4b": 1,
                  "reg4c": 5}

# --------------------------------------------------------------------------------------------
# Bus coordinates for drawing (the published layout; the regulators' load-side buses and the
# open switches' buses are placed halfway along their segment).
# --------------------------------------------------------------------------------------------
BUS_COORDS: dict[str, tuple[float, float]] = {
    "1": (700, 1500),
    "2": (700, 1675),
    "3": (700, 1250),
    "4": (700, 1050),
    "5": (1025, 1250),
    "6": (1275, 1150),
    "7": (1000, 1500),
    "8": (1200, 1500),
    "9": (1200, 1725),
    "9r": (1200, 1937.5),
    "10": (1450, 2150),
    "11": (950, 2150),
    "12": (1200, 1275),
    "13": (1500, 1500),
    "14": (1200, 2150),
    "15": (1500, 1250),
    "16": (1500, 875),
    "17": (1850, 1250),
    "18": (1500, 2325),
    "19": (1250, 2325),
    "20": (925, 2325),
    "21": (1500, 2625),
    "22": (975, 2625),
    "23": (1500, 2875),
    "24": (950, 2875),
    "25": (1500, 3150),
    "25r": (1325, 3150),
    "26": (1150, 3150),
    "27": (875, 3150),
    "28": (1500, 3350),
    "29": (1500, 3650),
    "30": (1850, 3650),
    "31": (1150, 3375),
    "32": (1150, 3675),
    "33": (875, 3650),
    "34": (1500, 1350),
    "35": (1975, 2325),
    "36": (2075, 2000),
    "37": (1775, 2000),
    "38": (2325, 2000),
    "39": (2650, 2000),
    "40": (1975, 2575),
    "41": (2300, 2575),
    "42": (1975, 2825),
    "43": (2475, 2825),
    "44": (1975, 3025),
    "45": (2175, 3025),
    "46": (2475, 3025),
    "47": (1975, 3275),
    "48": (1825, 3275),
    "49": (2225, 3275),
    "50": (2475, 3275),
    "51": (2725, 3275),
    "52": (2000, 1500),
    "53": (2200, 1500),
    "54": (2325, 1500),
    "55": (2600, 1500),
    "56": (2875, 1500),
    "57": (2325, 1850),
    "58": (2075, 1850),
    "59": (1825, 1850),
    "60": (3075, 1850),
    "61": (3075, 1300),
    "61s": (3175, 1300),
    "610": (3275, 1300),
    "62": (3075, 2100),
    "63": (3075, 2275),
    "64": (3075, 2625),
    "65": (2650, 2625),
    "66": (2650, 2300),
    "67": (3525, 1850),
    "68": (3725, 1850),
    "69": (4000, 1850),
    "70": (4325, 1850),
    "71": (4600, 1850),
    "72": (3525, 1575),
    "73": (3800, 1575),
    "74": (4150, 1575),
    "75": (4550, 1575),
    "76": (3525, 1375),
    "77": (3925, 1375),
    "78": (4025, 1375),
    "79": (4250, 1375),
    "80": (4025, 900),
    "81": (4025, 425),
    "82": (4025, 175),
    "83": (4275, 175),
    "84": (4700, 425),
    "85": (4700, 900),
    "86": (3255, 725),
    "87": (3050, 1125),
    "88": (2950, 1300),
    "89": (2775, 1125),
    "90": (2775, 900),
    "91": (2550, 1125),
    "92": (2550, 825),
    "93": (2325, 1125),
    "94": (2325, 850),
    "95": (2025, 1125),
    "96": (2025, 925),
    "97": (3525, 2100),
    "98": (3800, 2100),
    "99": (4350, 2100),
    "100": (4650, 2100),
    "101": (3525, 2450),
    "102": (3750, 2450),
    "103": (4075, 2450),
    "104": (4775, 2450),
    "105": (3525, 2725),
    "106": (3750, 2725),
    "107": (4325, 2725),
    "108": (3525, 3050),
    "109": (3975, 3050),
    "110": (4275, 3050),
    "111": (4275, 3625),
    "112": (4275, 2925),
    "113": (4800, 2925),
    "114": (5125, 2925),
    "135": (1600, 2325),
    "149": (300, 1500),
    "150": (100, 1500),
    "150r": (200, 1500),
    "151": (3187, 3928),
    "152": (1600, 1500),
    "160": (3175, 1850),
    "160r": (3350, 1850),
    "197": (3525, 2200),
    "250": (2050, 3650),
    "300": (3245, 4010),
    "450": (5450, 2100),
    "300_open": (3216, 3969),
    "94_open": (2325, 1175),
}

PHASES = "abc"
_NODE = _dss.NODE
_DELTA_PAIRS = _dss.DELTA_PAIRS

LOAD_BUSES: list[str] = sorted({bus for bus, *_ in SPOT_LOADS})


# --------------------------------------------------------------------------------------------
# Builder
# --------------------------------------------------------------------------------------------
def _load_commands(bus: str, load_type: str, per_phase: tuple) -> list[str]:
    """One 3-phase load if balanced on all phases, else one single-phase load per phase (wye:
    phase to neutral; delta: across the phase pair)."""
    conn_code, kind = load_type.split("-")
    model = LOAD_MODELS[kind]
    delta = conn_code == "D"
    if len(set(per_phase)) == 1 and per_phase[0] != (0, 0):
        kw, kvar = (3 * v for v in per_phase[0])
        return [f"new load.{bus}_spot bus1={bus} phases=3 conn={'delta' if delta else 'wye'} "
                f"kv={_fmt(FEEDER_KV)} kw={_fmt(kw)} kvar={_fmt(kvar)} model={model}"]
    commands = []
    for i, (kw, kvar) in enumerate(per_phase):
        if kw == 0 and kvar == 0:
            continue
        if delta:
            phases, conn, kv = _DELTA_PAIRS[i], "delta", FEEDER_KV
        else:
            phases, conn, kv = PHASES[i], "wye", LN_KV_LOAD
        commands.append(
            f"new load.{bus}_spot_{phases} bus1={bus}{_nodes(phases)} phases=1 conn={conn} "
            f"kv={_fmt(kv)} kw={_fmt(kw)} kvar={_fmt(kvar)} model={model}")
    return commands


def dss_commands(*, locked_taps: bool = False) -> list[str]:
    """OpenDSS commands that define the feeder, from ``clear`` to ``calcvoltagebases``.

    No ``solve`` and no bus coordinates. With ``locked_taps=True`` the regulator taps are set to
    the published values and the controls may not move them (``maxtapchange=0``), like the
    second part of ``Run_IEEE123Bus.DSS``.
    """
    cmds = [
        "clear",
        f"set defaultbasefrequency={_fmt(BASE_FREQUENCY_HZ)}",
        f"new circuit.{NAME} bus1={SOURCE_BUS} basekv={_fmt(SOURCE['kv'])} "
        f"pu={_fmt(SOURCE['pu'])} r1=0 x1={_fmt(SOURCE['x_ohm'])} r0=0 "
        f"x0={_fmt(SOURCE['x_ohm'])}",
    ]
    loss = _fmt(REGULATOR_LOADLOSS_PERCENT)
    for name, reg in REGULATORS.items():
        bus, out = reg["bus"], REGULATED[reg["bus"]]
        units = ["a"] if reg["gang"] else list(reg["phases"])
        for ph in units:
            unit = f"{name}{ph}"
            if reg["gang"]:
                cmds.append(
                    f"new transformer.{unit} phases=3 windings=2 buses=[{bus} {out}] "
                    f"conns=[wye wye] kvs=[{_fmt(FEEDER_KV)} {_fmt(FEEDER_KV)}] "
                    f"kvas=[{GANG_KVA} {GANG_KVA}] xhl={_fmt(GANG_XHL_PERCENT)} "
                    f"%loadloss={loss} ppm=0")
            else:
                node = _NODE[ph]
                cmds.append(
                    f"new transformer.{unit} phases=1 windings=2 bank={name} "
                    f"buses=[{bus}.{node} {out}.{node}] conns=[wye wye] "
                    f"kvs=[{_fmt(UNIT_KV)} {_fmt(UNIT_KV)}] kvas=[{UNIT_KVA} {UNIT_KVA}] "
                    f"xhl={_fmt(UNIT_XHL_PERCENT)} %loadloss={loss} ppm=0")
            cmds.append(
                f"new regcontrol.c{unit} transformer={unit} winding=2 vreg={_fmt(reg['vreg'])} "
                f"band={_fmt(reg['band'])} ptratio={reg['ptratio']} ctprim={reg['ctprim']} "
                f"r={_fmt(reg['r'][ph])} x={_fmt(reg['x'][ph])}")
    cmds += [_dss.linecode_command(name, cfg, BASE_FREQUENCY_HZ)
             for name, cfg in LINE_CONFIGS.items()]
    for frm, to, phases, config, length_ft in LINES:
        bus1 = REGULATED[frm] if (frm, to) in REGULATED_SEGMENTS else frm
        cmds.append(
            f"new line.{bus1}_{to} phases={len(phases)} bus1={bus1}{_nodes(phases)} "
            f"bus2={to}{_nodes(phases)} linecode={config} length={_fmt(length_ft)} units=ft")
    for frm, to, phases, state in SWITCHES:
        bus2 = f"{to}_open" if state == "open" else to
        cmds.append(
            f"new line.{frm}_{bus2} phases={len(phases)} bus1={frm}{_nodes(phases)} "
            f"bus2={bus2}{_nodes(phases)} switch=yes r1={_fmt(SWITCH_OHMS)} "
            f"r0={_fmt(SWITCH_OHMS)} x1=0 x0=0 c1=0 c0=0 length={_fmt(SWITCH_LENGTH_KFT)}")
    for name, (kva, bus_h, conn_h, kv_h, bus_l, conn_l, kv_l, r_pct, x_pct) in TRANSFORMERS.items():
        cmds.append(
            f"new transformer.{name} phases=3 windings=2 xhl={_fmt(x_pct)} "
            f"wdg=1 bus={bus_h} conn={conn_h} kv={_fmt(kv_h)} kva={_fmt(kva)} %r={_fmt(r_pct)} "
            f"wdg=2 bus={bus_l} conn={conn_l} kv={_fmt(kv_l)} kva={_fmt(kva)} %r={_fmt(r_pct)}")
    for bus, kvar_per_phase in CAPACITORS.items():
        cmds += _dss.capacitor_commands(bus, kvar_per_phase, FEEDER_KV, LN_KV_CAPACITOR)
    for bus, load_type, *per_phase in SPOT_LOADS:
        cmds += _load_commands(bus, load_type, tuple(per_phase))
    if locked_taps:
        for unit, tap in PUBLISHED_TAPS.items():
            cmds.append(f"edit transformer.{unit} wdg=2 tap={_fmt(1 + tap * TAP_STEP)}")
            cmds.append(f"edit regcontrol.c{unit} maxtapchange=0")
    cmds.append("set maxcontroliter=30")
    cmds += _dss.voltage_base_commands(VOLTAGE_BASES_KV)
    return cmds


def write_dss(folder) -> Path:
    """Write ``master.dss`` and ``buscoords.csv`` into ``folder``; return the master path.

    ``compile <folder>/master.dss`` then ``solve`` gives the same circuit as ``dss_commands()``.
    """
    return _dss.write_dss(sys.modules[__name__], folder)
