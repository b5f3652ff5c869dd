"""The ``opengridgym`` command: list, run, reproduce, bench, train, leaderboard."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path


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
    if getattr(args, "scenarios", False):
        return _list_scenarios()
    width = max((len(i) for i in ogg_envs.ENVIRONMENTS), default=0)
    for env_id, spec in ogg_envs.ENVIRONMENTS.items():
        print(f"{env_id:{width}s}  {_summary(spec)}")
    return 0


def _list_scenarios() -> int:
    """The bundled scenarios (which environment reads each, its feeder and profiles), then the
    leaderboard tasks' own scenarios (inline in each task file) and the days they evaluate."""
    import tomllib

    from ogg_envs.leaderboard import TaskError, list_tasks, load_task
    from ogg_envs.scenario import bundled_dir, bundled_scenarios

    def columns(head, rows):
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        for r in [head, *rows]:
            print("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())

    envs = {"topology_power": "opengridgym/topology-power-v0", "dlmp": "opengridgym/dlmp-v0",
            "p2p": "opengridgym/p2p-v0"}
    rows = []
    for name in bundled_scenarios():
        data = tomllib.loads((bundled_dir() / f"{name}.toml").read_text())
        env = next((e for prefix, e in envs.items()
                    if name == prefix or name.startswith(prefix + "_")), "")
        rows.append((name, env, str(data.get("feeder", "")), str(data.get("profiles", "")),
                     str(data.get("horizon", ""))))
    columns(("scenario", "environment", "feeder", "profiles", "horizon"), rows)
    print('\nUse: ogg_envs.make(environment, scenario="<scenario>") or opengridgym run '
          "<environment> --scenario <scenario>\n")
    rows = []
    for task_id in list_tasks():
        try:
            task = load_task(task_id)
        except TaskError as exc:
            rows.append((task_id, "", "", "", "", f"unusable: {exc}"))
            continue
        sc = task.scenario
        days = (f"{len(set(task.days))} {task.split} days" if task.days
                else f"drawn from the {task.split} split" if task.split else "env default")
        rows.append((task_id, task.env_id, str(sc.get("feeder", "")),
                     str(sc.get("profiles", "")), str(sc.get("horizon", "")), days))
    columns(("leaderboard task", "environment", "feeder", "profiles", "horizon", "days"), rows)
    print("\nUse: opengridgym leaderboard --tasks <task> (opengridgym leaderboard --list)")
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
    try:
        env = ogg_envs.make(args.env, parallel=True, **_env_kwargs(args))
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


def _env_kwargs(args) -> dict:
    """``--feeder`` and ``--scenario`` as environment arguments (those given)."""
    return {k: v for k, v in (("feeder", args.feeder), ("scenario", args.scenario))
            if v is not None}


def _cmd_reproduce(args) -> int:
    """Each use case: its progress (stderr), then its summary table; the full results are in
    ``<out>/<use case>.json`` next to the figures."""
    from ogg_envs.reproduce import USE_CASES

    names = list(USE_CASES) if args.use_case == "all" else [args.use_case]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for k, name in enumerate(names, 1):
        module = importlib.import_module(f"ogg_envs.reproduce.{USE_CASES[name]}")
        print(f"[{k}/{len(names)}] {name}", file=sys.stderr, flush=True)
        try:
            result = module.run(out, quick=args.quick, progress=not args.no_progress,
                                **_env_kwargs(args))
        except (ValueError, FileNotFoundError) as exc:  # a bad --feeder or --scenario
            print(f"error: {name}: {exc}", file=sys.stderr)
            return 2
        files = ", ".join([f"{USE_CASES[name]}.json"] + result.get("figures", []))
        print(f"\n{module.summary(result)}\n({out}/: {files})", flush=True)
    print(f"\n{len(names)} use case(s) in {time.perf_counter() - t0:.0f} s; results in {out}/")
    return 0


# Benchmarks `opengridgym bench` runs only when --only names them (they need an extra and train)
_ON_DEMAND = {"vec": "SB3 vector envs with 1 and 2 processes (needs the [train] extra)",
              "rllib_runners": "RLlib sampling with 0, 1, 2 env runners (needs [rllib])",
              "instructions": "instructions per env step under valgrind's callgrind (minutes)",
              "pairs": "this checkout's env steps against another's in turns (bench_pairs.py "
                       "--against ROOT; alone: against itself, the pairs' noise)"}


def _cmd_bench(args) -> int:
    """Run the benchmarks, each in its own Python process (a timing does not depend on what
    ran before it), their tables on stdout; ``--json`` collects their numbers in one file."""
    import subprocess
    import tempfile

    root = Path(__file__).resolve().parents[1] / "benchmarks"
    scripts = {s.stem.removeprefix("bench_"): s for s in sorted(root.glob("bench_*.py"))}
    if not scripts:
        print("benchmarks/ is not available (it ships with the source checkout)")
        return 1
    if args.only:
        names = [n for n, s in scripts.items() if args.only in s.stem]
    else:
        names = [n for n in scripts if n not in _ON_DEMAND]
    if not names:
        print(f"error: no benchmark matches --only {args.only!r}; benchmarks: "
              f"{', '.join(scripts)}", file=sys.stderr)
        return 2
    results, failed = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        for k, name in enumerate(names, 1):
            print(f"== [{k}/{len(names)}] {scripts[name].name}", flush=True)
            command = [sys.executable, str(scripts[name])] + (["--quick"] if args.quick else [])
            if name == "scale":  # it writes <out>/scale.json and its figure: next to --json
                numbers = Path(args.json).parent / "scale.json" if args.json else None
                command += ["--out", str(numbers.parent)] if numbers else []
            else:
                numbers = Path(tmp) / f"{name}.json"
                command += ["--json", str(numbers)]
            code = subprocess.call(command)
            if code != 0:
                print(f"error: {scripts[name].name} failed (exit {code})", file=sys.stderr)
                failed.append(name)
            elif numbers is not None and numbers.is_file():
                data = json.loads(numbers.read_text())
                if not (isinstance(data, dict) and "benchmark" in data):  # scale's rows
                    data = {"benchmark": name, "result": data}
                results[name] = data
    if not args.only:
        print("(on demand: " + "; ".join(f"--only {n}: {w}" for n, w in _ON_DEMAND.items())
              + ")")
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"quick": args.quick, "benchmarks": results}, indent=1))
        print(f"wrote {path} (README table: python benchmarks/readme_table.py {path})")
    return 1 if failed else 0


# train's own options, passed on to the training script as these options (given ones only)
_TRAIN_OPTIONS = {"timesteps": "--timesteps", "seed": "--seed", "out": "--out",
                  "run_name": "--run-name", "feeder": "--feeder", "scenario": "--scenario"}
_TRAIN_FLAGS = {"force": "--force", "quick_eval": "--quick-eval", "no_eval": "--no-eval",
                "no_progress": "--no-progress"}


def _cmd_train(args) -> int:
    """Check what can be checked before training (the environment, the trainer, its extra),
    then run the backend's script with the given options and every option it did not know
    (``args.extra``), and print the evaluation table against the baseline."""
    from ogg_envs.baselines import common

    code = _import_modules(args)
    if code:
        return code
    key = (args.backend, args.algo.lower())
    if key not in common.TRAINERS:
        print(f"error: no trainer for --backend {args.backend} --algo {args.algo}; available: "
              f"{', '.join(f'{b} {a}' for b, a in common.TRAINERS)}", file=sys.stderr)
        return 2
    try:
        common.resolve_env(args.env)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    missing = common.missing_extra(*key)
    if missing:
        print(f"error: --backend {args.backend} needs {missing}", file=sys.stderr)
        return 1
    argv = ["--env", args.env]
    for dest, option in _TRAIN_OPTIONS.items():
        if getattr(args, dest, None) is not None:
            argv += [option, str(getattr(args, dest))]
    argv += [flag for dest, flag in _TRAIN_FLAGS.items() if getattr(args, dest, False)]
    argv += [f"--import={name}" for name in args.imports]
    module = importlib.import_module(f"ogg_envs.baselines.{common.TRAINERS[key][0]}")
    script_args = common.parse_args(module.Args, argv + args.extra,
                                    prog=f"opengridgym train ENV --backend {args.backend}")
    try:
        result = module.run(script_args)
    except common.SetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    common.print_result(result)
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
    try:
        result = run_leaderboard(args.tasks, args.entries, args.out, quick=args.quick,
                                 progress=not args.no_progress,
                                 retry_failed=args.retry_failed, readme=args.readme)
    except ValueError as exc:  # an unknown task or entry, a malformed CSV in --out
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    print(f"{len(result['evaluated'])} evaluated, {len(result['skipped'])} already done, "
          f"{result['wall_s']:.1f} s -> {out / 'leaderboard.csv'}, {out / 'leaderboard.md'}, "
          f"{out / 'leaderboard.png'}")
    bad = [r for r in result["rows"] if r["status"] != "ok"]
    for r in bad:
        print(f"{r['status']}: {r['entry']} on {r['task']}: {r['reason']}")
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def _add_env_options(p, what: str) -> None:
    p.add_argument("--feeder", default=None, metavar="NAME|PATH",
                   help=f"{what} on this feeder: a bundled name (ieee13, ieee34, ieee37, "
                        "ieee123) or the path to a master .dss (participants placed by the "
                        "default rule)")
    p.add_argument("--scenario", default=None, metavar="NAME|FILE",
                   help=f"{what} on this scenario: a bundled name or a TOML file")


def _add_import(p) -> None:
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                   help="import MODULE first (e.g. one that registers environments or tasks; "
                        "the current folder is searched); repeatable")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="opengridgym", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="list the environments")
    p.add_argument("--scenarios", action="store_true",
                   help="list the bundled scenarios (environment, feeder, profiles) instead")
    _add_import(p)
    p.set_defaults(fn=_cmd_list)
    p = sub.add_parser("run", help="run one episode with random actions")
    p.add_argument("env", help="a registered environment id (opengridgym list)")
    p.add_argument("--seed", type=int, default=0)
    _add_env_options(p, "run")
    _add_import(p)
    p.set_defaults(fn=_cmd_run)
    p = sub.add_parser("reproduce", help="regenerate the paper's results",
                       description="Regenerate the paper's results: a summary table per use "
                                   "case on stdout, the full results (JSON) and the figures in "
                                   "--out.")
    p.add_argument("use_case", nargs="?", default="all",
                   choices=["topology-power", "p2p", "dlmp", "all"],
                   help="the use case (default: all)")
    p.add_argument("--out", default="results", help="output folder (default: results)")
    p.add_argument("--quick", action="store_true", help="short runs (CI)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_env_options(p, "reproduce the use case")
    p.set_defaults(fn=_cmd_reproduce)
    p = sub.add_parser("bench", help="run the benchmarks in benchmarks/",
                       description="Run the benchmarks in benchmarks/ (grid, each environment, "
                                   "scale), each in its own process, and print their tables.")
    p.add_argument("--only", default=None,
                   help="substring of a benchmark's name (grid, topology, p2p, dlmp, scale, "
                        "vec, rllib)")
    p.add_argument("--quick", action="store_true",
                   help="short measurements, a few seconds per benchmark (CI)")
    p.add_argument("--json", default=None, metavar="PATH",
                   help="write all the numbers to PATH (benchmarks/readme_table.py PATH prints "
                        "the README's performance table from it)")
    p.set_defaults(fn=_cmd_bench)
    p = sub.add_parser(
        "train", help="train agents (needs the [train] or [rllib] extra)",
        description="Train agents with a script of ogg_envs.baselines (sb3: sb3_ppo, rllib: "
                    "rllib_ppo), evaluate them against the baseline on the task's seeds and "
                    "print the table. Every other option of the script is passed on, after ENV "
                    "(e.g. --n-envs 8 --learning-rate 1e-3; python -m "
                    "ogg_envs.baselines.sb3_ppo --help lists them); the defaults are the "
                    "script's.")
    p.add_argument("env", help="an environment id, its short name (topology-power) or a task id")
    p.add_argument("--backend", choices=["sb3", "rllib"], default="sb3")
    p.add_argument("--algo", default="ppo")
    p.add_argument("--timesteps", type=_positive_int, default=None,
                   help="agent steps (rounded up to whole rollouts; default: the script's, "
                        "100000)")
    p.add_argument("--seed", type=int, default=None, help="default 0")
    p.add_argument("--out", default=None, help="the folder of runs (default: runs)")
    p.add_argument("--run-name", default=None,
                   help="this run's folder in --out (default: <backend>_<algo>_<env>_s<seed>)")
    p.add_argument("--force", action="store_true", help="replace an earlier run in its folder")
    p.add_argument("--quick-eval", action="store_true",
                   help="evaluate on the task's quick seeds only")
    p.add_argument("--no-eval", action="store_true", help="do not evaluate")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_env_options(p, "train and evaluate")
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
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "train":  # only train passes options on (to its script)
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    if args.command != "list":
        from ogg_envs.baselines.common import absorb_solver_banner

        absorb_solver_banner()
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
