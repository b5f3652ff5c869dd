"""What the training scripts of ``ogg_envs.baselines`` share (``sb3_ppo``, ``rllib_ppo``,
``sb3_single_agent``): the command line from an ``Args`` dataclass, which environment, task
and baseline a run trains on, its run folder, a progress bar that counts what it says, and the
evaluation of the trained policy against the baseline with the leaderboard's runner and metrics.

Nothing here imports a training framework (the scripts do), so ``opengridgym train`` can check
for the extras first and say how to install them.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import math
import os
import shutil
import sys
import textwrap
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ogg_envs.leaderboard.tasks import EvaluationPlan

__all__ = ["parse_args", "TASKS", "TRAINERS", "EVAL_SEEDS", "short_name", "resolve_env",
           "training_setup", "EnvTask", "import_modules", "run_folder", "RunExists",
           "StepProgress", "rounded_up", "evaluate", "plot_curve", "print_result",
           "missing_extra", "setup", "SetupError", "check_positive", "evaluation_table",
           "reward_unit", "absorb_solver_banner"]

TASKS = {  # env id -> the leaderboard task it trains on, and the baseline it is compared with
    "opengridgym/topology-power-v0": ("topology-power/congested-v0", "truthful"),
    "opengridgym/p2p-v0": ("p2p/multi-period-v0", "ucb"),
    "opengridgym/dlmp-v0": ("dlmp/37bus-day-v0", "truthful"),
}

# (backend, algo) -> the script of ogg_envs.baselines, the modules it needs, how to get them
TRAINERS = {
    ("sb3", "ppo"): ("sb3_ppo", ("torch", "stable_baselines3", "supersuit", "tensorboard"),
                     "pip install 'opengridgym[train]'"),
    ("rllib", "ppo"): ("rllib_ppo", ("torch", "ray.rllib", "tensorboardX"),
                       "pip install 'opengridgym[rllib]' (in its own virtual environment: "
                       "ray 2.60 pins gymnasium==1.2.2)"),
}
TORCH_CPU = ("pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu "
             "(first, for the CPU build)")

# Evaluation seeds of an environment that has no leaderboard task (never used in training).
EVAL_SEEDS = tuple(range(1000, 1020))

# What a run writes into its folder: an earlier run's are only replaced with --force.
RUN_FILES = ("model.zip", "checkpoint", "evaluation.json", "learning_curve.png", "tb",
             "rllib_logs")


# ---------------------------------------------------------------------- the command line
def absorb_solver_banner() -> None:
    """HiGHS prints a banner to the process's stdout (from C++, once per process) when its
    first solver is created: create that first one with stdout pointed at /dev/null, so the
    banner never reaches the terminal or a piped table."""
    try:
        import highspy
    except ImportError:
        return
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            highspy.Highs()
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def field_docs(cls) -> dict[str, str]:
    """The string literal under each field of the dataclass ``cls`` (CleanRL's style of
    documenting an ``Args`` field), by field name."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    docs = {}
    for node, doc in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant)
                and isinstance(doc.value.value, str)):
            docs[node.target.id] = " ".join(doc.value.value.split())
    return docs


def parse_args(cls, argv=None, *, prog: str | None = None, description: str | None = None):
    """An instance of the dataclass ``cls`` from the command line (``argv``; None: sys.argv).

    Every field is an option ``--field-name`` with its docstring as help and its default: a
    ``bool`` is ``--x / --no-x``, a ``list`` takes one or more values, ``X | None`` takes an X.
    A field's ``metadata`` may add option strings (``"flags"``) and argparse keywords
    (``"argparse"``). A ``ValueError`` from ``cls(...)`` (its ``__post_init__`` checks) is a
    usage error: the message and exit status 2, no traceback.
    """
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if typing.get_origin(tp) in (typing.Union, types.UnionType):
            tp = next(t for t in typing.get_args(tp) if t is not type(None))
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        kwargs: dict[str, Any] = {"dest": f.name, "default": default,
                                  "help": docs.get(f.name, " ")}
        if tp is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(tp) is list:
            kwargs.update(nargs="+", type=typing.get_args(tp)[0])
        else:
            kwargs["type"] = tp
        kwargs.update(f.metadata.get("argparse", {}))
        flags = [f"--{f.name.replace('_', '-')}", *f.metadata.get("flags", ())]
        parser.add_argument(*flags, **kwargs)
    namespace = parser.parse_args(argv)
    try:
        return cls(**vars(namespace))
    except ValueError as exc:
        parser.error(str(exc))


def check_positive(args, *names: str) -> None:
    """Raise ``ValueError`` naming the first of ``args``' fields ``names`` that is not > 0."""
    for name in names:
        value = getattr(args, name)
        if not value > 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {value}")


def missing_extra(backend: str, algo: str) -> str | None:
    """None if the modules of ``backend``/``algo``'s trainer are installed, else what to run."""
    import importlib.util

    _, modules, command = TRAINERS[(backend, algo)]
    missing = []
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:  # the parent package of a dotted name is missing
            found = False
        if not found:
            missing.append(name.split(".")[0])
    if not missing:
        return None
    torch = f"; {TORCH_CPU}" if "torch" in missing else ""
    return f"{', '.join(dict.fromkeys(missing))} not installed: {command}{torch}"


# ---------------------------------------------------------------------- environment and task
def short_name(env_id: str) -> str:
    """A registered id's short name: ``opengridgym/topology-power-v0`` -> ``topology-power``;
    another namespace keeps it (``mylab/pay-as-bid-v0`` -> ``mylab_pay-as-bid``)."""
    namespace, _, name = env_id.partition("/")
    name = name.rsplit("-v", 1)[0]
    return name if namespace == "opengridgym" else f"{namespace}_{name}"


def resolve_env(env: str) -> tuple[str, str | None, str | None]:
    """``--env`` -> (environment id, task id or None, baseline or None).

    ``env`` is a registered id, its short name (``topology-power``, ``topology_power``) or a
    leaderboard task id. The task is ``env``'s own when it is a task id, else ``TASKS[id]``,
    else the first known task of the environment (``list_tasks``); the baseline is ``TASKS``'s,
    else the spec's ``truthful`` baseline, else its first one. An unknown ``env`` raises
    ``ValueError`` listing the registered ones.
    """
    import ogg_envs
    from ogg_envs.leaderboard.tasks import TaskError, list_tasks, load_task

    task_id = None
    if env in ogg_envs.ENVIRONMENTS:
        env_id = env
    else:
        key = env.replace("_", "-")
        matches = [i for i in ogg_envs.ENVIRONMENTS if short_name(i) == key]
        if matches:
            env_id = matches[0]
        else:
            try:
                task = load_task(env)
            except TaskError:
                raise ValueError(
                    f"unknown env {env!r}; registered: "
                    + ", ".join(f"{i} ({short_name(i)})" for i in ogg_envs.ENVIRONMENTS)
                    + "; or a task id") from None
            env_id, task_id = task.env_id, task.id
    if task_id is None:
        if env_id in TASKS:
            task_id = TASKS[env_id][0]
        else:
            task_id = next((t for t in list_tasks() if load_task(t).env_id == env_id), None)
    baselines = ogg_envs.spec(env_id).baselines
    if env_id in TASKS and TASKS[env_id][0] == task_id:
        baseline = TASKS[env_id][1]
    else:
        baseline = "truthful" if "truthful" in baselines else (baselines[0] if baselines
                                                                else None)
    return env_id, task_id, baseline


@dataclass(frozen=True)
class EnvTask(EvaluationPlan):
    """An environment's own configuration, shaped like a leaderboard task so the leaderboard's
    runner evaluates on it: ``make(env_id, parallel=True, **env_kwargs)`` (its default learners
    and scripted participants, e.g. on ``feeder=`` or ``scenario=``) on ``seeds`` x
    ``episodes``. What a run trains and is evaluated on with ``--feeder`` or ``--scenario``,
    or for an environment without a task. Nothing pins it: it is not a leaderboard task.
    It evaluates on the held-out ``split`` (``"test"``: days training never draws, on a
    scenario with several profile days; a one-day scenario's day is in every split)."""

    env_id: str
    env_kwargs: dict
    seeds: tuple[int, ...] = EVAL_SEEDS
    episodes: int = 1
    quick_seeds: int = 2
    quick_episodes: int = 1
    version: int = 0
    sha256: str = ""
    split: str = "test"

    @property
    def id(self) -> str:
        given = ", ".join(f"{k}={v}" for k, v in self.env_kwargs.items())
        return f"{self.env_id} ({given or 'default configuration'})"

    def make_env(self):
        import ogg_envs

        return ogg_envs.make(self.env_id, parallel=True, **self.env_kwargs)


def training_setup(env: str, feeder: str | None = None, scenario: str | None = None):
    """``--env`` (and ``--feeder``, ``--scenario``) -> (environment id, task, baseline).

    The task is the leaderboard task of ``resolve_env``; with ``feeder`` or ``scenario``, or
    for an environment without a task, an ``EnvTask`` of that configuration, evaluated on the
    seeds of the environment's task (or ``EVAL_SEEDS``). ``task.make_env()`` makes the
    training environment; the runner evaluates on ``task``.
    """
    from ogg_envs.leaderboard.tasks import load_task

    env_id, task_id, baseline = resolve_env(env)
    task = load_task(task_id) if task_id is not None else None
    kwargs = {k: v for k, v in (("feeder", feeder), ("scenario", scenario)) if v is not None}
    if kwargs or task is None:
        plan = {} if task is None else dict(
            seeds=task.seeds, episodes=task.episodes, quick_seeds=task.quick_seeds,
            quick_episodes=task.quick_episodes)
        task = EnvTask(env_id, kwargs, **plan)
        task.make_env()  # a bad feeder or scenario fails here, before any training
    return env_id, task, baseline


def import_modules(names) -> None:
    """Import user modules (``--import``), the current folder included."""
    from ogg_envs.leaderboard.entries import import_user_module

    for name in names or []:
        import_user_module(name)


# ---------------------------------------------------------------------- the run folder
class RunExists(FileExistsError):
    """The run folder holds an earlier run (replace it with ``--force``)."""


def run_folder(out, run_name: str, force: bool = False) -> Path:
    """``out/run_name``, created; an earlier run's files in it (``RUN_FILES``) raise
    ``RunExists`` unless ``force``, which deletes them first."""
    path = Path(out) / run_name
    old = [name for name in RUN_FILES if (path / name).exists()]
    if old and not force:
        raise RunExists(f"{path} holds an earlier run ({', '.join(old)}); give another --out "
                        "or --run-name, or --force to replace it")
    for name in old:
        target = path / name
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink()
    path.mkdir(parents=True, exist_ok=True)
    return path


# ---------------------------------------------------------------------- progress
def rounded_up(steps: int, chunk: int) -> int:
    """``steps`` rounded up to whole ``chunk``s: what a trainer that learns in rollouts (or
    iterations) of ``chunk`` steps really runs."""
    return math.ceil(steps / chunk) * chunk


class StepProgress:
    """A progress bar over a trainer's agent steps (or iterations: ``unit``); ``total`` is what
    the trainer will really run (``rounded_up``). Stable-Baselines3 calls it after every vector
    step (a plain callable is an SB3 callback: ``model.learn(callback=bar)``); other trainers
    call ``update_to``."""

    def __init__(self, total: int, desc: str = "training", disable: bool = False,
                 unit: str = "agent step"):
        self.bar = tqdm(total=total, desc=desc, unit=unit, disable=disable, dynamic_ncols=True)

    def update_to(self, steps: int, note: str | None = None) -> None:
        """Move the bar to ``steps`` done; ``note`` is shown after it."""
        self.bar.update(steps - self.bar.n)
        if note is not None:
            self.bar.set_postfix_str(note)

    def __call__(self, locals_: dict, globals_: dict) -> bool:
        self.update_to(locals_["self"].num_timesteps)
        return True

    def close(self) -> None:
        self.bar.close()


# ---------------------------------------------------------------------- evaluation
def evaluate(task, make_policy, baseline: str | None, quick: bool, *, name: str = "ppo",
             progress: bool = True) -> dict:
    """The leaderboard's metrics of the learned policy (``make_policy(task, env)``, for each
    evaluation seed) and of the baseline, on the same seeds (``task.plan(quick)``): entry name
    -> {metric_mean, metric_ci95, seeds}. A failed evaluation raises ``RuntimeError``."""
    from ogg_envs.leaderboard.entries import Entry, resolve_entry
    from ogg_envs.leaderboard.runner import evaluate as run

    entries = [Entry(name, name, None, make_policy)]
    if baseline:
        entries.append(resolve_entry(baseline))
    seeds, episodes = task.plan(quick)
    rows = {}
    with tqdm(total=len(entries) * len(seeds) * episodes, unit="episode", disable=not progress,
              dynamic_ncols=True) as bar:
        for entry in entries:
            bar.set_description(f"evaluating {entry.name}")
            row, _ = run(entry, task, quick=quick, bar=bar)
            if row["status"] != "ok":
                raise RuntimeError(f"evaluation of {entry.name} failed: {row['reason']}")
            rows[entry.name] = {k: v for k, v in row.items() if k.endswith(("_mean", "_ci95"))}
            rows[entry.name]["seeds"] = row["seeds"]
            rows[entry.name]["episodes"] = row["episodes"]
    return rows


def reward_unit(env_id: str) -> str:
    """The unit of an environment's rewards, for axis labels: the P2P environments pay the
    paper's per-kWh negotiation payoffs, the others profits in dollars."""
    import ogg_envs

    return "¢/kWh payoffs" if ogg_envs.spec(env_id).recorder == "p2p" else "$"


def plot_curve(points, path: Path, title: str, unit: str) -> None:
    """The learning curve: mean episode return per agent (raw reward, in ``unit``) against
    agent steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    if points:
        x, y = zip(*points)
        ax.plot(x, y, marker=".")
    ax.set_xlabel("agent steps")
    ax.set_ylabel(f"episode return per agent ({unit})")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# The columns of the evaluation table, in this order where the task's recorder has them.
TABLE = {"profit_usd": "profit ($)", "return": "return", "efficiency": "efficiency",
         "consumer_price": "consumer price (¢/kWh)", "trade_success": "trade success",
         "avg_dlmp": "avg DLMP (¢/kWh)", "congestion_rent_usd": "congestion rent ($)"}


def _cell(row: dict, metric: str) -> str:
    mean, half = row[f"{metric}_mean"], row.get(f"{metric}_ci95", math.nan)
    if mean is None or not math.isfinite(mean):
        return "-"
    digits = 4 if metric == "efficiency" else 3 if metric == "trade_success" else 2
    text = f"{mean:,.{digits}f}"
    return text + (f" ± {half:,.{digits}f}" if half is not None and math.isfinite(half) else "")


def evaluation_table(rows: dict) -> str:
    """The evaluation rows (``evaluate``) as an aligned text table, one line per policy."""
    from ogg_envs.reproduce import table

    metrics = [m for m in TABLE if all(f"{m}_mean" in r for r in rows.values())]
    return table(["policy"] + [TABLE[m] for m in metrics],
                 [[name] + [_cell(r, m) for m in metrics] for name, r in rows.items()])


def print_result(result: dict) -> None:
    """The training's size and speed, the evaluation table against the baseline, the files."""
    t = result["training"]
    where = result["task"] or result["env_id"]
    iterations = f", {t['iterations']} iterations" if "iterations" in t else ""
    print(f"{result['trainer']} on {where}: {t['agent_steps']:,} agent steps in "
          f"{t['wall_s']:.1f} s ({t['agent_steps_per_s']:,.0f} agent steps/s{iterations})")
    rows = result.get("evaluation")
    if rows:
        first = next(iter(rows.values()))
        episodes = "1 episode" if first["episodes"] == 1 else f"{first['episodes']} episodes"
        print(f"evaluated on {first['seeds']} seeds x {episodes} (mean ± 95 % CI over seeds; "
              "the metrics are defined in docs/leaderboard.md):")
        print(evaluation_table(rows))
    else:
        print("not evaluated")
    print(f"results in {result['run_dir']}")


# ---------------------------------------------------------------------- setting a run up
class SetupError(ValueError):
    """A run that cannot start: an unknown environment, a bad feeder or scenario, a module
    that does not import, an earlier run in its folder (the message says which)."""


def setup(args, trainer: str):
    """Everything a run checks before it trains: import ``args.imports``, resolve
    ``args.env`` with ``args.feeder`` and ``args.scenario`` (``training_setup``) and make the
    run folder ``args.out/args.run_name`` (default ``<trainer>_<env>_s<seed>``; an earlier run
    there needs ``args.force``). Returns (env id, task, baseline, run folder); any problem
    raises ``SetupError``."""
    try:
        import_modules(args.imports)
        env_id, task, baseline = training_setup(args.env, args.feeder, args.scenario)
        name = args.run_name or f"{trainer}_{short_name(env_id)}_s{args.seed}"
        run_dir = run_folder(args.out, name, args.force)
    except (ImportError, ValueError, OSError) as exc:
        raise SetupError(str(exc)) from exc
    return env_id, task, baseline, run_dir
