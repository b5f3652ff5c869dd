"""Instructions per environment step, counted by valgrind's callgrind: the same number on every
run, whatever else the machine is doing.

Wall-clock figures on a shared 2-core machine move by ±20-30 % from minute to minute, more than
most single changes to a step; an instruction count does not (it is no substitute for time:
cache misses and stalls are not counted). For each environment (default scenario, one recorded
episode of uniformly random actions, replayed ``--episodes`` times from ``reset(seed)``) this
runs the interpreter under callgrind twice, without and with the replays, and divides the
difference by the steps replayed, so imports and set-up cancel out. The count is split by where
the instructions ran: OpenDSS (the engine and its sparse solver), the market's solver (DAQP,
HiGHS), numpy, the Python interpreter, the C library, the rest.

``--compare ROOT`` counts another checkout of this repository the same way (a ``git worktree``
of an older commit, say) and prints both and the change: an A/B that a busy machine cannot
blur. Needs ``valgrind`` (Debian: ``apt install valgrind``); a few minutes per environment, so
``opengridgym bench`` runs it only when named (``--only instructions``).
Run: ``python benchmarks/bench_instructions.py [--env tp dlmp p2p] [--episodes 2] [--compare
ROOT] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _timing import write_json

ENV_IDS = {"tp": "opengridgym/topology-power-v0", "dlmp": "opengridgym/dlmp-v0",
           "p2p": "opengridgym/p2p-v0"}
# where an instruction ran, by the file name of the code it ran in (first match wins)
PARTS = (("OpenDSS", r"dss_capi|klusolve"), ("solver", r"daqp|highs|_core\.cpython"),
         ("numpy", r"_multiarray_umath|numpy"), ("Python", r"libpython|python3"),
         ("C library", r"libc\.so|libm\.so|ld-linux"))
REPO = Path(__file__).resolve().parents[1]


def drive(env_key: str, episodes: int) -> None:
    """What runs under callgrind: one recorded random-action episode, replayed ``episodes``
    times (the counted part). Prints the number of steps replayed."""
    import ogg_envs

    env = ogg_envs.make(ENV_IDS[env_key], parallel=True)
    env.reset(seed=99)
    spaces = {a: env.action_space(a) for a in env.agents}
    actions = []
    while env.agents:
        actions.append({a: spaces[a].sample() for a in env.agents})
        env.step(actions[-1])
    for _ in range(episodes):
        env.reset(seed=99)
        for act in actions:
            env.step(act)
    print(len(actions) * episodes)


def split(profile: str) -> Counter:
    """Instructions per part (``PARTS``) from a callgrind output file's text: every cost line
    counts for the object (``ob=``) whose code it is in (inlined files, ``fi=``/``fe=``,
    included); the line after a ``calls=`` line is the callee's inclusive cost and is skipped.
    The parts add up to the file's ``summary``."""
    objects: dict[str, str] = {}  # compressed id -> file name
    out, part, after_call, summary = Counter(), "other", False, None
    for line in profile.splitlines():
        if after_call:
            after_call = False
        elif line.startswith(("ob=", "cob=")):  # a callee's object names its id too
            m = re.match(r"c?ob=(\(\d+\))?\s*(.*)", line)
            key, name = m.group(1), m.group(2).strip()
            if key is not None and name:
                objects[key] = name
            if line.startswith("ob="):
                where = Path(objects.get(key, name) if key is not None else name).name
                part = next((n for n, pattern in PARTS if re.search(pattern, where)), "other")
        elif line.startswith("calls="):
            after_call = True
        elif line[:1].isdigit() or line[:1] in "+-*":
            fields = line.split()
            if len(fields) > 1:
                out[part] += int(fields[1])
        elif line.startswith("summary:"):
            summary = int(line.split()[1])
    if summary is not None and sum(out.values()) != summary:
        raise ValueError(f"callgrind profile: the parts add up to {sum(out.values())}, its "
                         f"summary says {summary}")
    return out


def count(root: Path, env_key: str, episodes: int, tmp: Path) -> tuple[Counter, int]:
    """Instructions by part of one callgrind run of ``drive`` with the code of ``root``, and
    the steps it replayed."""
    out = tmp / f"{root.name}-{env_key}-{episodes}.callgrind"
    # One BLAS thread: OpenBLAS's idle workers spin, and callgrind would count their spinning
    # (by tens of thousands of instructions a step, differently from run to run).
    environ = dict(os.environ, PYTHONHASHSEED="0", PYTHONPATH=str(root),
                   OPENBLAS_NUM_THREADS="1")
    run = subprocess.run(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable,
         str(Path(__file__).resolve()), "--drive", env_key, str(episodes)],
        env=environ, cwd=tmp, capture_output=True, text=True)
    if run.returncode:
        raise RuntimeError(f"the driver failed under valgrind ({root}, {env_key}):\n"
                           + run.stderr[-2000:])
    steps = int(run.stdout.split()[-1])
    return split(out.read_text()), steps


def per_step(root: Path, env_key: str, episodes: int, tmp: Path) -> dict:
    """Instructions per env step by part: (with replays - without) / steps replayed."""
    with ThreadPoolExecutor(2) as pool:  # the two runs side by side, one per core
        base, full = pool.map(lambda k: count(root, env_key, k, tmp), (0, episodes))
    steps = full[1]
    parts = {name: (full[0][name] - base[0][name]) / steps for name in full[0] | base[0]}
    return {"steps": steps, "total": sum(parts.values()), "parts": parts}


def show(label: str, row: dict, reference: dict | None = None) -> None:
    parts = sorted(row["parts"].items(), key=lambda kv: -kv[1])
    text = ", ".join(f"{name} {n / 1e3:,.0f}k" for name, n in parts if abs(n) >= 500)
    change = ""
    if reference is not None:
        change = f" ({100 * (row['total'] / reference['total'] - 1):+.1f} %)"
    print(f"{label:28s} {row['total'] / 1e3:8,.0f}k instructions/step{change}: {text}")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", nargs="+", choices=sorted(ENV_IDS), default=sorted(ENV_IDS))
    parser.add_argument("--episodes", type=int, default=2, help="replays counted (default 2)")
    parser.add_argument("--compare", type=Path, metavar="ROOT",
                        help="another checkout of this repository, counted the same way")
    parser.add_argument("--quick", action="store_true", help="one replay per environment")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH")
    parser.add_argument("--drive", nargs=2, metavar=("ENV", "EPISODES"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.drive:
        drive(args.drive[0], int(args.drive[1]))
        return {}
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (Debian: apt install valgrind); nothing counted")
        return {}
    episodes = 1 if args.quick else args.episodes
    roots = {"this checkout": REPO} | ({str(args.compare): args.compare.resolve()}
                                       if args.compare else {})
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        for env_key in args.env:
            print(f"{ENV_IDS[env_key]}: {episodes} replayed random-action episode(s)",
                  flush=True)
            rows = {label: per_step(root, env_key, episodes, Path(tmp))
                    for label, root in roots.items()}
            reference = rows.get(str(args.compare))
            for label, row in rows.items():
                show(label, row, reference if label == "this checkout" else None)
            result[env_key] = rows
    write_json(args.json, "instructions", result)
    return result


if __name__ == "__main__":
    main()
