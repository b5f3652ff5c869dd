"""Versioned benchmark tasks: what a leaderboard entry is evaluated on.

A task is a TOML file in ``scenarios/tasks/`` (installed as ``ogg_envs/scenarios/tasks``): the
environment id, the full scenario (inline, not a reference to a bundled scenario that could
change), the environment arguments, the evaluation seeds and the number of consecutive
episodes per seed, which participants the submitted policy controls (``controlled``) and what
the others do (``others``), and ``[pins]``: the sha256 of every data file the scenario reads.

**Held-out days.** On a profile set of several days (the bundled ``year``: 365) the
environment's ``reset(seed)`` draws a day from the training split (``MarketEnv.split_days``);
a task evaluated on the held-out days says so with ``split = "test"`` and lists the days it
evaluates in ``days``: episode ``e`` of the ``i``-th seed runs on ``days[(i * episodes + e) %
len(days)]`` (``episode_options``; quick mode uses the same days, a prefix per seed), passed
on as ``reset(options={"day": d})``, so the days are part of the pinned file and results stay
comparable whatever the environment's random draws. The runner refuses a listed day that is
not in the split. A task with ``split`` and no ``days`` lets the environment draw each
episode's day from that split with the seed's RNG. Trainers reset without options, so they
only ever see training days.

A task cannot change silently. Its file's sha256 is pinned in ``TASK_SHA256`` below (and the
tests check it): editing a task file makes ``load_task`` refuse it. To change a task, copy it to
a file with the next version (``...-v1``), change the copy and pin the new file's hash; old
results stay comparable with the old version, and every result row records the task's version
and hash. A pinned data file that changed (e.g. regenerated profiles) is refused the same way.

A task's environment is any registered id (``ogg_envs.register``): the task finds the
environment's spec (``Task.spec``), and with it the recorder (the metrics), the named policies
of ``[others]`` and the baselines that apply. A user's task (for a user's environment, say)
lives in the user's own folder and is pinned by the code that registers it::

    ogg_envs.register("mylab/pay-as-bid-v0", ...)
    ogg_envs.leaderboard.register_task("tasks/mylab__pay-as-bid-day-v0.toml",
                                       sha256="<sha256sum of the file>")

after which ``load_task("mylab/pay-as-bid-day-v0")`` and ``opengridgym leaderboard --import
mylab.envs`` know it like a shipped task. Its relative data paths (scenario profiles, feeders,
``[pins]``) are relative to its file's folder, or bundled files.
"""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import ogg_envs

__all__ = ["Task", "TaskError", "load_task", "list_tasks", "task_files", "register_task",
           "episode_options", "TASK_SHA256", "USER_TASKS", "SPLITS"]

# sha256 of each task file, by task id. A new version of a task gets a new entry; an existing
# entry never changes.
TASK_SHA256 = {
    "topology-power/congested-v0":
        "f0d61bdcc7dd650da3075c9f06b0636e246457c8d4319df0c9693f5a696ef5f3",
    "p2p/multi-period-v0":
        "e2402b9bb2ad8e69033f8f51b8e9c1ee8e8939806cd5133f1094df81fe3ee2f9",
    "dlmp/37bus-day-v0":
        "474faab77c0dd7cf313f7a0cea4336bf40fa7e8d89b8737b206adbb6afbaaee5",
    # -v1: the same markets on a year of measured load, evaluated on held-out test days.
    "topology-power/congested-v1":
        "cbaaae68ada5295a16f232aef4a1d153aeec7b39d7349173f965fefa6a545fd8",
    "p2p/multi-period-v1":
        "95ce9d571a31ffba9808412a142b6fcab3e66951de199ac2eacd631bc1e157ed",
    "dlmp/37bus-day-v1":
        "8b478827677d2623b3819da392c52b5ab292bcc340597c602f617878f202dde2",
}

# Tasks registered by users (``register_task``): task id -> (file, pinned sha256).
USER_TASKS: dict[str, tuple[Path, str]] = {}

_REQUIRED = ("id", "version", "env", "controlled", "seeds", "episodes", "scenario")

SPLITS = ("train", "test", "all")  # the environment's day splits (MarketEnv.split_days)


class TaskError(ValueError):
    """A task that cannot be used: unknown, malformed, or changed without a new version."""


def _scenarios_dir() -> Path:
    return Path(str(resources.files("ogg_envs.scenarios")))


def _tasks_dir() -> Path:
    return _scenarios_dir() / "tasks"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def task_files() -> dict[str, Path]:
    """Task id -> its file, for every task file shipped (verified or not) and every task
    registered with ``register_task``."""
    out: dict[str, Path] = {}
    for path in sorted(_tasks_dir().glob("*.toml")):
        try:
            task_id = tomllib.loads(path.read_text())["id"]
        except (tomllib.TOMLDecodeError, KeyError) as exc:
            raise TaskError(f"task file {path.name}: cannot read its id ({exc})") from None
        if task_id in out:
            raise TaskError(f"task id {task_id!r} is defined twice ({out[task_id].name}, "
                            f"{path.name})")
        out[task_id] = path
    for task_id, (path, _) in USER_TASKS.items():
        out.setdefault(task_id, path)
    return out


def register_task(path, sha256: str) -> str:
    """Make a user's task file known by its id, pinned to ``sha256`` (the hash of the file as
    the user's code expects it; ``load_task`` refuses the file once it differs). Returns the
    task's id. Its environment must be registered (``ogg_envs.register``) before it is loaded.
    """
    path = Path(path).resolve()
    if not path.is_file():
        raise TaskError(f"register_task: no such task file {path}")
    try:
        task_id = str(tomllib.loads(path.read_text())["id"])
    except (tomllib.TOMLDecodeError, KeyError) as exc:
        raise TaskError(f"task file {path}: cannot read its id ({exc})") from None
    shipped = _tasks_dir() / path.name
    if task_id in TASK_SHA256 and path != shipped.resolve():
        raise TaskError(f"task id {task_id!r} is a shipped task; give yours another id")
    USER_TASKS[task_id] = (path, str(sha256).lower())
    return task_id


def list_tasks() -> list[str]:
    """Ids of the known tasks, by environment (in registration order: topology-power, p2p,
    dlmp, then the users'), then by id."""
    envs = list(ogg_envs.ENVIRONMENTS)
    rank = {}
    for task_id, path in task_files().items():
        env_id = tomllib.loads(path.read_text()).get("env", "")
        rank[task_id] = (envs.index(env_id) if env_id in envs else len(envs), task_id)
    return sorted(rank, key=rank.get)


class EvaluationPlan:
    """What every task-like object (a ``Task``, the trainers' ``EnvTask``) shares: its
    environment's spec and its evaluation seeds. Needs ``env_id``, ``seeds``, ``episodes``,
    ``quick_seeds`` and ``quick_episodes``."""

    @property
    def spec(self):
        """The ``ogg_envs.registry.EnvSpec`` of the task's environment."""
        return ogg_envs.spec(self.env_id)

    def plan(self, quick: bool = False) -> tuple[tuple[int, ...], int]:
        """The evaluation seeds and the episodes per seed (full or quick mode)."""
        if quick:
            return self.seeds[: self.quick_seeds], self.quick_episodes
        return self.seeds, self.episodes


@dataclass(frozen=True)
class Task(EvaluationPlan):
    """A loaded, verified benchmark task (see the module docstring)."""

    id: str
    version: int
    env_id: str
    description: str
    controlled: tuple[str, ...]
    seeds: tuple[int, ...]
    episodes: int
    quick_seeds: int
    quick_episodes: int
    env_kwargs: dict[str, Any]
    others: dict[str, Any]
    scenario: dict[str, Any]
    sha256: str
    path: str
    pins: dict[str, str] = field(default_factory=dict)
    data_dir: str = ""  # the folder relative data paths start from ("": the bundled one)
    split: str = ""  # the day split evaluated ("test": held-out days; "": the env's default)
    days: tuple[int, ...] = ()  # the profile days evaluated, in order (see episode_options)

    def check_days(self, env) -> None:
        """Raise ``TaskError`` unless every listed day is a day of the task's split in
        ``env``'s profiles (``env.split_days``)."""
        if not self.days:
            return
        allowed = set(env.split_days(self.split).tolist())
        wrong = [d for d in self.days if d not in allowed]
        if wrong:
            raise TaskError(f"task {self.id!r}: days {wrong} are not {self.split!r} days of its "
                            f"profiles ({env.n_days} days)")

    def make_env(self):
        """A fresh parallel environment of the task (the policy's agents are its agents)."""
        kwargs = dict(self.env_kwargs)
        kwargs["scenario"] = dict(self.scenario, _dir=self.data_dir or str(_scenarios_dir()))
        kwargs["learners"] = list(self.controlled)
        kwargs["policies"] = _other_policies(self.spec, self.others)
        return ogg_envs.make(self.env_id, parallel=True, **kwargs)


def episode_options(task, seed_index: int, episode: int) -> dict | None:
    """The ``reset`` options of episode ``episode`` of the task's ``seed_index``-th seed:
    ``{"day": days[(seed_index * episodes + episode) % len(days)]}`` for a task that lists its
    days, ``{"split": split}`` for one that only names its split, else None (the environment's
    own default). Any task-like object works (``split`` and ``days`` default to none)."""
    days, split = getattr(task, "days", ()), getattr(task, "split", "")
    if days:
        return {"day": int(days[(seed_index * task.episodes + episode) % len(days)])}
    return {"split": split} if split else None


def _other_policies(spec, others: dict[str, Any]) -> dict[str, Any]:
    """The task's ``[others]`` -> the environment's ``policies`` argument: a name among the
    spec's ``policies`` becomes a fresh policy from its factory; anything else (e.g. a p2p
    bandit spec such as ``"ucb"`` or ``{"kind": "ucb", "delta": 0.01}``) goes to the
    environment unchanged, whose ``make_policy`` accepts it or says why not."""
    out = {}
    for who, value in others.items():
        if isinstance(value, str) and value in spec.policies:
            out[who] = spec.policies[value]()
        else:
            out[who] = value
    return out


def _data_file(data_dir: Path, rel: str) -> Path:
    """A task's data file: relative to ``data_dir``, or the bundled file of that name."""
    here = data_dir / rel
    return here if here.is_file() or data_dir == _scenarios_dir() else _scenarios_dir() / rel


def load_task(task_id: str, *, verify: bool = True) -> Task:
    """Load a known task by id (``"topology-power/congested-v0"``; shipped or registered with
    ``register_task``) or a task file by path.

    ``verify`` (default) checks the file's sha256 against its pin (``TASK_SHA256`` or
    ``register_task``'s) and every pinned data file's sha256; a mismatch raises ``TaskError``.
    A task file given by path that is not pinned is refused unless ``verify=False`` (for
    drafting new tasks).
    """
    files = task_files()
    if task_id in files:
        path = files[task_id]
    elif Path(task_id).suffix == ".toml" and Path(task_id).is_file():
        path = Path(task_id)
    else:
        raise TaskError(f"unknown task {task_id!r}; tasks: {', '.join(files)}")
    digest = _sha256(path)
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise TaskError(f"task file {path}: invalid TOML: {exc}") from None
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise TaskError(f"task file {path}: missing {', '.join(missing)}")
    tid = str(data["id"])
    version = int(data["version"])
    if not tid.endswith(f"-v{version}"):
        raise TaskError(f"task {tid!r}: the id must end in -v{version} (its version)")
    if data["env"] not in ogg_envs.ENVIRONMENTS:
        raise TaskError(f"task {tid!r}: unknown env {data['env']!r}; registered: "
                        f"{', '.join(ogg_envs.ENVIRONMENTS)} (a user's environment must be "
                        "registered first, e.g. opengridgym leaderboard --import MODULE)")
    shipped = path.resolve().parent == _tasks_dir().resolve()
    data_dir = _scenarios_dir() if shipped else path.resolve().parent
    if verify:
        pinned = TASK_SHA256.get(tid)
        if pinned is None and tid in USER_TASKS:
            pinned = USER_TASKS[tid][1]
        if pinned is None:
            raise TaskError(f"task {tid!r} has no pinned hash in TASK_SHA256 (sha256 {digest})")
        if digest != pinned:
            raise TaskError(
                f"task {tid!r} ({path.name}) changed: sha256 {digest}, pinned {pinned}. A task "
                f"never changes in place: restore it and add the change as version "
                f"{version + 1} in a new file")
        for rel, want in data.get("pins", {}).items():
            dep = _data_file(data_dir, rel)
            if not dep.is_file():
                raise TaskError(f"task {tid!r}: pinned data file {rel} is missing")
            got = _sha256(dep)
            if got != want:
                raise TaskError(f"task {tid!r}: data file {rel} changed (sha256 {got}, pinned "
                                f"{want}); the task needs a new version")
    seeds = tuple(int(s) for s in data["seeds"])
    if not seeds or len(set(seeds)) != len(seeds):
        raise TaskError(f"task {tid!r}: seeds must be a non-empty list of distinct integers")
    episodes = int(data["episodes"])
    quick_seeds = int(data.get("quick_seeds", min(2, len(seeds))))
    quick_episodes = int(data.get("quick_episodes", 1))
    if episodes < 1 or not 1 <= quick_seeds <= len(seeds) or quick_episodes < 1:
        raise TaskError(f"task {tid!r}: episodes, quick_seeds and quick_episodes must be >= 1 "
                        "(quick_seeds at most the number of seeds)")
    split, days = str(data.get("split", "")), data.get("days", [])
    if split and split not in SPLITS:
        raise TaskError(f"task {tid!r}: split must be one of {', '.join(SPLITS)}, got {split!r}")
    if not isinstance(days, list) or not all(isinstance(d, int) and not isinstance(d, bool)
                                             and d >= 0 for d in days):
        raise TaskError(f"task {tid!r}: days must be a list of whole numbers >= 0 (profile "
                        f"days), got {days!r}")
    if days and not split:
        raise TaskError(f"task {tid!r}: days need the split they are drawn from "
                        '(split = "test" for held-out days)')
    controlled = data["controlled"]
    controlled = (controlled,) if isinstance(controlled, str) else tuple(controlled)
    return Task(
        id=tid, version=version, env_id=str(data["env"]),
        description=str(data.get("description", "")), controlled=controlled, seeds=seeds,
        episodes=episodes, quick_seeds=quick_seeds, quick_episodes=quick_episodes,
        env_kwargs=dict(data.get("env_kwargs", {})), others=dict(data.get("others", {})),
        scenario=dict(data["scenario"]), sha256=digest, path=str(path),
        pins=dict(data.get("pins", {})), data_dir="" if shipped else str(data_dir),
        split=split, days=tuple(days),
    )
