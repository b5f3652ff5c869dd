"""The examples run: a new market in one file (registered, run by the CLI, scored by the
leaderboard, PettingZoo-conformant) and the market comparison."""

from __future__ import annotations

import ast
import json
import runpy
from pathlib import Path

import pytest

import ogg_envs
from ogg_envs.cli import main as cli

ROOT = Path(__file__).resolve().parents[1]


def _code_lines(path: Path) -> int:
    """Lines of code without docstrings, comments and blank lines."""
    src = path.read_text()
    doc = set()
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) and \
                ast.get_docstring(node):
            d = node.body[0]
            doc |= set(range(d.lineno, d.end_lineno + 1))
    return sum(1 for i, line in enumerate(src.splitlines(), 1)
               if i not in doc and line.strip() and not line.strip().startswith("#"))


def test_pay_as_bid_is_one_short_file_and_passes_pettingzoo(capsys):
    assert _code_lines(ROOT / "examples" / "pay_as_bid.py") <= 60
    runpy.run_path(str(ROOT / "examples" / "pay_as_bid.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "Passed API test" in out and "Passed Parallel API test" in out


def test_pay_as_bid_runs_from_the_command_line(capsys):
    code = cli(["run", "examples/pay-as-bid-v0", "--import", "examples.pay_as_bid"])
    assert code == 0
    out = capsys.readouterr().out
    result = json.loads(out[out.index("{"):])
    assert result["env"] == "examples/pay-as-bid-v0" and result["rounds"] == 72


def test_pay_as_bid_is_scored_by_the_leaderboard(tmp_path):
    import examples.pay_as_bid  # noqa: F401  (registers the env and its task)
    from ogg_envs.leaderboard import run_leaderboard

    result = run_leaderboard(["examples/pay-as-bid-congested-v0"], ["truthful", "markup"],
                             tmp_path, quick=True, progress=False, log=lambda *a: None)
    rows = {r["entry"]: r for r in result["rows"]}
    assert all(r["status"] == "ok" for r in rows.values())
    # pay-as-bid pays a truthful supplier exactly its cost; a markup earns the markup
    assert abs(float(rows["truthful"]["profit_usd_mean"])) < 1e-6
    assert float(rows["markup"]["profit_usd_mean"]) > 10.0
    assert float(rows["truthful"]["efficiency_mean"]) == pytest.approx(1.0, abs=1e-9)
    assert float(rows["truthful"]["congestion_rent_usd_mean"]) == 0.0


def test_market_comparison_prints_the_three_markets(capsys):
    from examples.compare_markets import main

    rows = {r["market"]: r for r in main()}
    out = capsys.readouterr().out
    assert all(name in out for name in rows)
    curve, dlmp, p2p = (rows[k] for k in ("curve (nodal)", "DLMP (DSO OPF)", "P2P (bilateral)"))
    # truthful bids: the two nodal markets agree; P2P ignores the lines
    assert dlmp["true welfare $"] == pytest.approx(curve["true welfare $"], rel=0.005)
    assert curve["congested branch-h"] > 0 and p2p["congested branch-h"] == 0
    assert p2p["true welfare $"] < curve["true welfare $"]
    assert "examples/compare" not in " ".join(ogg_envs.ENVIRONMENTS)  # composed: not registered
