"""The leaderboard runner: every entry on every task, results appended as they come.

``run_leaderboard`` evaluates each (entry, task) pair that applies and is not in
``DIR/leaderboard.csv`` yet, appends one row per pair (flushed and synced to disk before the
next pair starts, so an interrupted run loses at most the pair in progress), then rewrites
``DIR/leaderboard.md`` and ``DIR/leaderboard.png`` from the whole CSV. Per-seed values go to
``DIR/runs/<entry>__<task>__<mode>.json``.

One evaluation (``evaluate``): for each of the task's seeds, a fresh environment, a fresh
policy (``Entry.make``), ``reset(seed=seed)`` and the task's number of consecutive episodes
(``reset()`` between them, so the environment's and the scripted participants' state carry on
as the task defines), each reset with the task's ``episode_options`` (the pinned held-out day
of a ``-v1`` task; none for a one-day task); the recorder of the task's environment (its
spec's ``recorder``, ``ogg_envs.leaderboard.metrics``) turns the run into the seed's metrics,
and the row holds their mean and 95 % confidence interval over the seeds. The policy is called as
``policy(participant, observation, info)`` with a copy of ``env.participant[agent]`` taken
before the step (``ogg_envs.api.Policy``; ``docs/leaderboard.md``). A policy that raises or
returns an invalid action stops that pair: the row says ``failed`` and why, and the runner
goes on with the next pair.
"""

from __future__ import annotations

import csv
import datetime
import json
import math
import os
import re
import time
import traceback
from pathlib import Path

import gymnasium
import numpy as np

import ogg_envs

from .entries import DEFAULT_ENTRIES, Entry, invalid_action_reason, resolve_entry
from .metrics import METRICS, make_recorder, mean_ci, recorder_class
from .tasks import Task, episode_options, list_tasks, load_task

__all__ = ["evaluate", "run_leaderboard", "read_rows", "CSV_COLUMNS", "PolicyFailure"]

CSV_COLUMNS = (["entry", "task", "task_version", "task_sha256", "mode", "status", "reason",
                "seeds", "episodes", "wall_s", "spec", "ogg_version", "finished_utc"]
               + [f"{m}_{s}" for m in METRICS for s in ("mean", "ci95")])


class PolicyFailure(Exception):
    """The entry's policy raised or returned an invalid action (the message says where)."""


def _policy_action(policy, participant, obs, info, space, where):
    agent = participant.name
    try:
        action = policy(participant, obs, info)
    except Exception as exc:
        raise PolicyFailure(f"{where}, {agent}: the policy raised {type(exc).__name__}: "
                            f"{exc}") from exc
    why = invalid_action_reason(space, action)
    if why is not None:
        raise PolicyFailure(f"{where}, {agent}: invalid action: {why}")
    if isinstance(space, gymnasium.spaces.Discrete):
        return int(action)
    return np.asarray(action, dtype=float)


def _run_seed(entry: Entry, task: Task, index: int, seed: int, episodes: int, bar=None) -> dict:
    """The ``index``-th seed: a fresh env and policy, ``episodes`` consecutive episodes ->
    metrics, plus ``days``: the profile day each episode ran on."""
    env = task.make_env()
    if hasattr(task, "check_days"):
        task.check_days(env)
    try:
        policy = entry.make(task, env)
    except Exception as exc:
        raise PolicyFailure(f"seed {seed}: the entry could not make its policy: "
                            f"{type(exc).__name__}: {exc}") from exc
    update = getattr(policy, "update", None)
    recorder = make_recorder(task.spec, env, env.possible_agents)
    rng = np.random.default_rng([seed, 1])  # the policy's own stream (info["rng"])
    spaces = {a: env.action_space(a) for a in env.possible_agents}
    days = []
    for episode in range(episodes):
        options = episode_options(task, index, episode)
        obs, infos = env.reset(seed=seed if episode == 0 else None, options=options)
        days.append(int(getattr(env, "day", 0)))
        recorder.start_episode()
        extra = {"task": task.id, "seed": seed, "episode": episode, "rng": rng}
        while env.agents:
            where = f"seed {seed}, episode {episode}, hour {env.t}, round {env.round}"
            actions, records = {}, {}
            for agent in env.agents:
                records[agent] = env.participant[agent].copy()
                info = {**infos.get(agent, {}), "action_space": spaces[agent], **extra}
                actions[agent] = _policy_action(policy, records[agent], obs[agent], info,
                                                spaces[agent], where)
            recorder.before_step()
            try:
                obs, rewards, _, _, infos = env.step(actions)
            except ValueError as exc:  # the environment rejected an action
                raise PolicyFailure(f"{where}: the environment rejected the actions: {exc}") \
                    from exc
            recorder.after_step(rewards, infos)
            if update is not None:
                for agent, action in actions.items():
                    info = {**infos[agent], "action_space": spaces[agent], **extra}
                    try:
                        update(records[agent], action, rewards[agent], info)
                    except Exception as exc:
                        raise PolicyFailure(f"{where}, {agent}: policy.update raised "
                                            f"{type(exc).__name__}: {exc}") from exc
        if bar is not None:
            bar.update(1)
    env.close()
    return {**recorder.result(), "days": days}


def evaluate(entry: Entry, task: Task, *, quick: bool = False, bar=None) -> tuple[dict, list]:
    """Evaluate one entry on one task: (the CSV row, the per-seed metrics)."""
    seeds, episodes = task.plan(quick)
    row = {"entry": entry.name, "task": task.id, "task_version": task.version,
           "task_sha256": task.sha256, "mode": "quick" if quick else "full", "status": "ok",
           "reason": "", "seeds": len(seeds), "episodes": episodes, "spec": entry.spec,
           "ogg_version": ogg_envs.__version__}
    per_seed: list[dict] = []
    t0 = time.perf_counter()
    try:
        for index, seed in enumerate(seeds):
            m = _run_seed(entry, task, index, seed, episodes, bar)
            m["seed"] = seed
            per_seed.append(m)
    except PolicyFailure as exc:
        row["status"], row["reason"] = "failed", str(exc)
    except Exception as exc:  # the environment or the runner broke: recorded, not fatal
        tb = traceback.extract_tb(exc.__traceback__)[-1]
        row["status"] = "error"
        row["reason"] = (f"{type(exc).__name__}: {exc} ({Path(tb.filename).name}:"
                         f"{tb.lineno})")
    row["wall_s"] = round(time.perf_counter() - t0, 3)
    row["finished_utc"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    if row["status"] == "ok":
        for name in recorder_class(task.spec).metrics:
            mean, half, _ = mean_ci([s[name] for s in per_seed])
            row[f"{name}_mean"], row[f"{name}_ci95"] = mean, half
    return row, per_seed


# ---------------------------------------------------------------------- the CSV
def read_rows(path: Path) -> list[dict]:
    """The rows of a leaderboard CSV (empty list if there is none)."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return []
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames != CSV_COLUMNS:
            raise ValueError(f"{path} has other columns than this version of the runner "
                             "writes; use another --out directory")
        return list(reader)


def _fmt_cell(v) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else repr(float(v))
    return "" if v is None else str(v)


def _append_row(path: Path, row: dict) -> None:
    new = not path.is_file() or path.stat().st_size == 0
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow({k: _fmt_cell(row.get(k)) for k in CSV_COLUMNS})
        f.flush()
        os.fsync(f.fileno())


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def _key(row: dict) -> tuple:
    return (row["entry"], row["task"], row["task_sha256"], row["mode"])


# ---------------------------------------------------------------------- the run
def run_leaderboard(tasks=None, entries=None, out="leaderboard", *, quick: bool = False,
                    progress: bool = True, retry_failed: bool = False, readme=None,
                    log=print) -> dict:
    """Evaluate ``entries`` (specs or ``Entry``; default: the baselines) on ``tasks`` (ids;
    default: every task) into ``out``; see the module docstring.

    Pairs already in the CSV (same entry name, task hash and mode) are skipped; with
    ``retry_failed`` the failed ones are run again (the newest row counts). Returns
    ``{"evaluated": [(entry, task)...], "skipped": [...], "rows": [the rows of this mode],
    "wall_s": seconds}``.
    """
    from tqdm import tqdm

    from .report import update_readme, write_figure, write_markdown

    t0 = time.perf_counter()
    task_list = [load_task(t) for t in (tasks or list_tasks())]
    entry_list = [e if isinstance(e, Entry) else resolve_entry(e)
                  for e in (entries or list(DEFAULT_ENTRIES))]
    names = [e.name for e in entry_list]
    if len(set(names)) != len(names):
        raise ValueError(f"entry names must be unique, got {names}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "leaderboard.csv"
    mode = "quick" if quick else "full"
    existing = {_key(r): r for r in read_rows(csv_path)}
    todo, skipped = [], []
    for task in task_list:
        for entry in entry_list:
            if not entry.applies(task.env_id):
                continue
            old = existing.get((entry.name, task.id, task.sha256, mode))
            if old is not None and (old["status"] == "ok" or not retry_failed):
                skipped.append((entry.name, task.id))
            else:
                todo.append((entry, task))
    if skipped:
        log(f"resuming: {len(skipped)} entry x task pair(s) already in {csv_path}")
    total = sum(len(t.plan(quick)[0]) * t.plan(quick)[1] for _, t in todo)
    evaluated = []
    with tqdm(total=total, unit="episode", disable=not progress, dynamic_ncols=True) as bar:
        for entry, task in todo:
            bar.set_description(f"{entry.name} on {task.id}")
            row, per_seed = evaluate(entry, task, quick=quick, bar=bar)
            _append_row(csv_path, row)
            runs = out / "runs"
            runs.mkdir(exist_ok=True)
            (runs / f"{_slug(entry.name)}__{_slug(task.id)}__{mode}.json").write_text(
                json.dumps({"row": row, "per_seed": per_seed}, indent=1, default=float))
            evaluated.append((entry.name, task.id))
            if row["status"] != "ok":
                bar.write(f"{entry.name} on {task.id}: {row['status']}: {row['reason']}")
    rows = [r for r in {_key(r): r for r in read_rows(csv_path)}.values() if r["mode"] == mode]
    table = write_markdown(rows, out / "leaderboard.md", mode=mode)
    write_figure(rows, out / "leaderboard.png")
    if readme is not None:
        update_readme(Path(readme), table)
    return {"evaluated": evaluated, "skipped": skipped, "rows": rows,
            "wall_s": time.perf_counter() - t0}
