"""Leaderboard benchmark runs: versioned tasks, honest metrics, one command.

    opengridgym leaderboard --out results/leaderboard            # every baseline, every task
    opengridgym leaderboard --tasks p2p/multi-period-v0 --entries ucb mine=my_pkg:MyPolicy \\
        --out results/leaderboard                                # add an entry (resumes)

``tasks`` loads the versioned task definitions (``scenarios/tasks/*.toml``, and users' tasks
registered with ``register_task``), ``entries`` resolves baselines, ``module:callable``
policies and saved models, ``metrics`` defines every metric and the recorders, ``runner``
evaluates and writes ``leaderboard.csv`` / ``.md`` / ``.png``. What applies to a task (its
recorder and metrics, the named policies of ``[others]``, the baselines) comes from its
environment's registered spec (``ogg_envs.register``). The metrics and the entry interface are
documented in ``docs/leaderboard.md``.
"""

from .entries import BASELINES, DEFAULT_ENTRIES, Entry, invalid_action_reason, resolve_entry
from .metrics import METRICS, RECORDERS, make_recorder, mean_ci, recorder_class
from .runner import CSV_COLUMNS, evaluate, read_rows, run_leaderboard
from .tasks import (
    TASK_SHA256,
    Task,
    TaskError,
    episode_options,
    list_tasks,
    load_task,
    register_task,
)

__all__ = ["BASELINES", "DEFAULT_ENTRIES", "Entry", "invalid_action_reason", "resolve_entry",
           "METRICS", "RECORDERS", "make_recorder", "recorder_class", "mean_ci", "CSV_COLUMNS",
           "evaluate", "read_rows", "run_leaderboard", "TASK_SHA256", "Task", "TaskError",
           "episode_options", "list_tasks", "load_task", "register_task"]
