"""The ``opengridgym`` command: list, run, reproduce, bench, train, leaderboard."""

from __future__ import annotations

import argparse
import importlib
import json
import runpy
import sys
import time
from pathlib import Path

import numpy as np


def _import_modules(args) -> int:
    """Import the ``--import`` modules (they register environments, tasks); 0 or exit code 2."""
    from ogg_envs.leaderboard.entries import import_user_module

    for name in getattr(args, "imports", None) or []:
        try:
            import_user_module(name)
        except ImportError as exc:
            print(f"error: --import {name}: {exc}", file=sys.stderr)
            return 2
    return 0


def _known_env(env_id: str) -> bool:
    """Whether ``env_id`` is registered; if not, say which ids are (on stderr)."""
    import ogg_envs

    if env_id in ogg_envs.ENVIRONMENTS:
        return True
    print(f"error: unknown environment {env_id!r}. Registered environments:", file=sys.stderr)
    for known in ogg_envs.ENVIRONMENTS:
        print(f"  {known}", file=sys.stderr)
    print("(a user's environment: --import the module that registers it)", file=sys.stderr)
    return False


def _summary(spec) -> str:
    """A spec's summary, or the first sentence line of its module's docstring."""
    if spec.summary:
        return " ".join(spec.summary.split())
    try:
        doc = (spec.module().__doc__ or "").strip().splitlines()
    except Exception as exc:  # an env whose optional pieces fail to import
        return f"(unavailable: {exc})"
    first = next((ln for ln in doc[1:] if ln.strip()), doc[0] if doc else "")
    return first.split("—", 1)[-1].strip()


def _cmd_list(args) -> int:
    import ogg_envs

    code = _import_modules(args)
    if code:
        return code
    width = max((len(i) for i in ogg_envs.ENVIRONMENTS), default=0)
    for env_id, spec in ogg_envs.ENVIRONMENTS.items():
        print(f"{env_id:{width}s}  {_summary(spec)}")
    return 0


def _cmd_run(args) -> int:
    """Run one episode with random actions and print a summary."""
    from tqdm import tqdm

    import ogg_envs

    code = _import_modules(args)
    if code:
        return code
    if not _known_env(args.env):
        return 2
    kwargs = {}
    if args.feeder is not None:
        kwargs["feeder"] = args.feeder
    if args.scenario is not None:
        if not Path(args.scenario).is_file():
            print(f"error: --scenario {args.scenario}: no such file", file=sys.stderr)
            return 2
        kwargs["scenario"] = args.scenario
    try:
        env = ogg_envs.make(args.env, parallel=True, **kwargs)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        print(f"error: {args.env}: {exc}", file=sys.stderr)
        return 2
    env.reset(seed=args.seed)
    returns = dict.fromkeys(env.possible_agents, 0.0)
    steps = 0
    t0 = time.perf_counter()
    with tqdm(total=getattr(env, "max_cycles", None), desc=args.env, unit="round") as bar:
        while env.agents:
            actions = {a: env.action_space(a).sample() for a in env.agents}
            _, rewards, _, _, infos = env.step(actions)
            for a, r in rewards.items():
                returns[a] += r
            steps += 1
            bar.update(1)
    dt = time.perf_counter() - t0
    print(json.dumps({"env": args.env, "rounds": steps, "rounds_per_s": steps / dt,
                      "returns": returns}, indent=2))
    return 0


def _cmd_reproduce(args) -> int:
    from ogg_envs.reproduce import USE_CASES

    names = list(USE_CASES) if args.use_case in (None, "all") else [args.use_case]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    failed = []
    for name in names:
        if name not in USE_CASES:
            print(f"unknown use case {name!r}; choose from {', '.join(USE_CASES)}")
            return 2
        try:
            module = importlib.import_module(f"ogg_envs.reproduce.{USE_CASES[name]}")
        except ImportError as exc:
            print(f"{name}: not available ({exc})")
            failed.append(name)
            continue
        print(f"== reproducing {name} -> {out}")
        result = module.run(out, quick=args.quick)
        print(json.dumps(result, indent=2, default=float)[:2000])
    return 1 if failed else 0


def _cmd_bench(args) -> int:
    root = Path(__file__).resolve().parents[1] / "benchmarks"
    scripts = sorted(root.glob("bench_*.py")) if root.is_dir() else []
    if not scripts:
        print("benchmarks/ is not available (it ships with the source checkout)")
        return 1
    for script in scripts:
        if args.only and args.only not in script.stem:
            continue
        print(f"== {script.name}")
        argv = sys.argv
        sys.argv = [str(script)]  # the script parses its own (default) arguments
        try:
            runpy.run_path(str(script), run_name="__main__")
        finally:
            sys.argv = argv
    return 0


def _cmd_train(args) -> int:
    code = _import_modules(args)
    if code:
        return code
    try:
        from ogg_envs.baselines.train_cli import train
    except ImportError as exc:
        print(f"training needs the [train] extra (pip install 'opengridgym[train]'): {exc}")
        return 1
    from ogg_envs.baselines.sb3_ppo import resolve_env

    try:
        resolve_env(args.env)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    train(args.env, backend=args.backend, algo=args.algo, timesteps=args.timesteps,
          seed=args.seed, out=args.out)
    return 0


def _cmd_leaderboard(args) -> int:
    from ogg_envs.leaderboard import BASELINES, list_tasks, load_task, run_leaderboard
    from ogg_envs.leaderboard.entries import baseline_note

    code = _import_modules(args)
    if code:
        return code
    if args.list:
        for task_id in list_tasks():
            task = load_task(task_id)
            print(f"task  {task_id:30s} {task.env_id}: {task.description}")
        for name in BASELINES:
            print(f"entry {name:30s} {baseline_note(name)}")
        return 0
    result = run_leaderboard(args.tasks, args.entries, args.out, quick=args.quick,
                             progress=not args.no_progress, retry_failed=args.retry_failed,
                             readme=args.readme)
    out = Path(args.out)
    print(f"{len(result['evaluated'])} evaluated, {len(result['skipped'])} already done, "
          f"{result['wall_s']:.1f} s -> {out / 'leaderboard.csv'}, {out / 'leaderboard.md'}, "
          f"{out / 'leaderboard.png'}")
    bad = [r for r in result["rows"] if r["status"] != "ok"]
    for r in bad:
        print(f"{r['status']}: {r['entry']} on {r['task']}: {r['reason']}")
    return 0


def _add_import(p) -> None:
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                   help="import MODULE first (e.g. one that registers environments or tasks; "
                        "the current folder is searched); repeatable")


def main(argv: list[str] | None = None) -> int:
    np.set_printoptions(precision=3, suppress=True)
    parser = argparse.ArgumentParser(prog="opengridgym", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="list the environments")
    _add_import(p)
    p.set_defaults(fn=_cmd_list)
    p = sub.add_parser("run", help="run one episode with random actions")
    p.add_argument("env", help="a registered environment id (opengridgym list)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--feeder", default=None, metavar="NAME|PATH",
                   help="a bundled feeder name or the path to a master .dss")
    p.add_argument("--scenario", default=None, metavar="FILE", help="a scenario TOML file")
    _add_import(p)
    p.set_defaults(fn=_cmd_run)
    p = sub.add_parser("reproduce", help="regenerate the paper's results")
    p.add_argument("use_case", nargs="?", default="all",
                   help="topology-power, p2p, dlmp or all (default)")
    p.add_argument("--out", default="results")
    p.add_argument("--quick", action="store_true", help="short runs (CI)")
    p.set_defaults(fn=_cmd_reproduce)
    p = sub.add_parser("bench", help="run the benchmarks in benchmarks/")
    p.add_argument("--only", default=None, help="substring of a benchmark's name")
    p.set_defaults(fn=_cmd_bench)
    p = sub.add_parser("train", help="train agents (needs the [train] or [rllib] extra)")
    p.add_argument("env", help="an environment id, its short name (topology-power) or a task id")
    p.add_argument("--backend", choices=["sb3", "rllib"], default="sb3")
    p.add_argument("--algo", default="ppo")
    p.add_argument("--timesteps", type=int, default=50_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs")
    _add_import(p)
    p.set_defaults(fn=_cmd_train)
    p = sub.add_parser("leaderboard", help="evaluate entries on the benchmark tasks")
    p.add_argument("--tasks", nargs="+", default=None, help="task ids (default: all)")
    p.add_argument("--entries", nargs="+", default=None,
                   help="baseline names, [name=]module:callable or [name=]model.zip "
                        "(default: every baseline)")
    p.add_argument("--out", default="leaderboard", help="output directory (resumable)")
    p.add_argument("--quick", action="store_true", help="few seeds and episodes (CI)")
    p.add_argument("--retry-failed", action="store_true", help="re-run failed pairs")
    p.add_argument("--readme", default=None,
                   help="also write the table between the leaderboard markers of this file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--list", action="store_true", help="list the tasks and baselines")
    _add_import(p)
    p.set_defaults(fn=_cmd_leaderboard)
    args = parser.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
