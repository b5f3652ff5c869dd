"""The README's code runs as written.

Every ```python block runs, in order, in one namespace (as a reader pastes them into one
session, ``import ogg_envs`` first), in a folder where the example feeder sits where the README
puts a user's (``my_feeder/master.dss``); the scenario file of "Bring your own feeder" is written
where its first line says and the ``run`` command beside it runs on it.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from ogg_envs.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, re.S)


@pytest.fixture
def my_feeder(tmp_path, monkeypatch):
    shutil.copytree(ROOT / "examples" / "feeders" / "five_bus", tmp_path / "my_feeder")
    monkeypatch.chdir(tmp_path)
    return tmp_path / "my_feeder"


def test_the_readmes_python_blocks_run_in_order(my_feeder, capsys):
    blocks = _blocks("python")
    assert len(blocks) >= 6, "README.md lost its python examples"
    namespace: dict = {}
    exec("import ogg_envs", namespace)
    for i, code in enumerate(blocks):
        exec(compile(code, f"README.md, python block {i + 1}", "exec"), namespace)
        if "Simulation(" in code:  # the composed simulation: one row per hour of its day
            rows = namespace["log"].rows
            assert [r["episode_hour"] for r in rows] == list(range(namespace["env"].horizon))
        if "last_grid_report" in code:  # the AC-feedback block: a grid step has run
            assert namespace["env"].unwrapped.last_grid_report is not None
    assert "'price'" in capsys.readouterr().out  # the first block's infos["supplier_0"]
    assert namespace["env"].unwrapped.grid.name == "ieee123"  # the last block: its scenario


def test_the_readmes_scenario_file_runs_on_the_users_feeder(my_feeder, capsys):
    (toml,) = [b for b in _blocks("toml") if b.startswith("# my_feeder/")]
    path = Path(toml.splitlines()[0].removeprefix("# "))
    path.write_text(toml)
    command = next(line for b in _blocks("bash") for line in b.splitlines()
                   if line.startswith("opengridgym run") and str(path) in line)
    assert main(command.split()[1:]) == 0
    assert '"supplier_0"' in capsys.readouterr().out
