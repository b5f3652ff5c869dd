"""The README's leaderboard table is what the shipped code produces.

The section between the README's leaderboard markers says what it is: the run's mode in its
heading (``(quick run)`` or ``(full run)``), one section per task, one row per entry, and an
``Entries:`` line naming what each entry that is not a baseline is (a saved model's path). The
test evaluates every (entry, task) pair the section claims again, with the leaderboard's own
runner, into a fresh folder and a copy of the README; the section it writes must equal the
committed one character for character, numbers formatted as in the table. A table that is not
regenerated after a change to the environments, markets or metrics fails here; regenerate it
with the commands in ``docs/leaderboard.md`` ("The README table").

The committed PPO models (``docs/models``) must also evaluate the same twice in a row, and the
table must cover every shipped task (the held-out-day ``-v1`` tasks included), every baseline
that applies to it and every committed model.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest

from ogg_envs.leaderboard import (
    BASELINES,
    TASK_SHA256,
    evaluate,
    load_task,
    resolve_entry,
    run_leaderboard,
)
from ogg_envs.leaderboard.report import README_END, README_START

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MODELS = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs" / "models").glob("*.zip"))


def _section(text: str) -> str:
    start, end = text.find(README_START), text.find(README_END)
    assert 0 <= start < end, "README.md has no leaderboard markers"
    return text[start + len(README_START):end]


def _claims(section: str) -> tuple[str, dict[str, list[str]]]:
    """(mode, task id -> the entries of its rows as ``name=spec`` or a baseline's name)."""
    mode = re.search(r"^### OpenGridGym leaderboard \((quick|full) run\)$", section, re.M)
    assert mode, "the table's heading must say (quick run) or (full run)"
    claims: dict[str, list[str]] = {}
    for block in re.split(r"^#### ", section, flags=re.M)[1:]:
        task_id = block.splitlines()[0].strip()
        names = re.findall(r"^\| `([^`]+)` \|", block, re.M)
        line = re.search(r"^Entries: (.*)\.$", block, re.M)
        specs = dict(re.findall(r"`([^`]+)` = `([^`]+)`", line.group(1))) if line else {}
        claims[task_id] = [f"{n}={specs[n]}" if n in specs else n for n in names]
    return mode.group(1), claims


MODE, CLAIMS = _claims(_section(README.read_text()))


def test_the_table_covers_every_task_baseline_and_model():
    assert list(CLAIMS) and set(CLAIMS) == set(TASK_SHA256)
    for task_id, entries in CLAIMS.items():
        env_id = load_task(task_id).env_id
        applies = [b for b in BASELINES if env_id in BASELINES[b]]
        assert [e for e in entries if "=" not in e] == applies, task_id
    shown = {e.split("=", 1)[1] for entries in CLAIMS.values() for e in entries if "=" in e}
    assert set(MODELS) <= shown, "every committed model has its rows"


def test_the_readme_table_is_what_the_code_produces(tmp_path, monkeypatch):
    if any(e.endswith(".zip") for entries in CLAIMS.values() for e in entries):
        pytest.importorskip("stable_baselines3")
    monkeypatch.chdir(ROOT)  # the table's model paths are relative to the repository
    copy = tmp_path / "README.md"
    copy.write_text(README.read_text())
    for task_id, entries in CLAIMS.items():
        result = run_leaderboard([task_id], entries, tmp_path / "lb", quick=MODE == "quick",
                                 progress=False, readme=copy, log=lambda *a: None)
        assert len(result["evaluated"]) == len(entries)
    assert _section(copy.read_text()).splitlines() == _section(README.read_text()).splitlines()


@pytest.mark.parametrize("model", MODELS)
def test_committed_models_evaluate_the_same_twice_in_a_row(model):
    pytest.importorskip("stable_baselines3")
    tasks = [t for t, entries in CLAIMS.items() if any(e.endswith("=" + model) for e in entries)]
    assert tasks, f"{model} is in no task of the table"
    entry = resolve_entry(str(ROOT / model))
    # the model's held-out-day task, two of its days
    task = dataclasses.replace(load_task(tasks[-1]), quick_seeds=2, quick_episodes=1)
    first_row, first = evaluate(entry, task, quick=True)
    again_row, again = evaluate(entry, task, quick=True)
    assert first_row["status"] == again_row["status"] == "ok", first_row["reason"]
    np.testing.assert_equal(again, first)
