"""Leaderboard benchmark runs: versioned tasks, honest metrics, one command.

    opengridgym leaderboard --out results/leaderboard            # every baseline, every task
    opengridgym leaderboard --tasks p2p/multi-period-v0 --entries ucb mine=my_pkg:MyPolicy \\
        --out results/leaderboard                                # add an entry (resumes)

``tasks`` loads the versioned task definitions (``scenarios/tasks/*.toml``), ``entries``
resolves baselines, ``module:callable`` policies and saved models, ``metrics`` defines every
metric, ``runner`` evaluates and writes ``leaderboard.csv`` / ``.md`` / ``.png``. The metrics
and the entry interface are documented in ``docs/leaderboard.md``.
"""

from .entries import BASELINES, DEFAULT_ENTRIES, Entry, invalid_action_reason, resolve_entry
from .metrics import METRICS, TASK_METRICS, mean_ci
from .runner import CSV_COLUMNS, evaluate, read_rows, run_leaderboard
from .tasks import TASK_SHA256, Task, TaskError, list_tasks, load_task

__all__ = ["BASELINES", "DEFAULT_ENTRIES", "Entry", "invalid_action_reason", "resolve_entry",
           "METRICS", "TASK_METRICS", "mean_ci", "CSV_COLUMNS", "evaluate", "read_rows",
           "run_leaderboard", "TASK_SHA256", "Task", "TaskError", "list_tasks", "load_task"]
