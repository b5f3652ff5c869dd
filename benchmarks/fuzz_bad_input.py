"""Hunt for bad input that passes silently or breaks an environment.

Random and adversarial actions through the parallel and the AEC API of every registered
environment (NaN, inf, huge and negative numbers, wrong dtypes and shapes, strings, booleans,
complex numbers, unknown and missing agents, a list instead of a dict, calls out of order, a
reset in the middle of a round), and mutated scenarios (dropped, misspelt, mistyped and
out-of-range keys). Every case ends in one of the documented outcomes:

* ``accepted`` (a valid action or a scenario that still makes sense; a repaired bid says so in
  ``infos[agent]["bid_repairs"]``),
* ``refused`` — ``ValueError`` (``ScenarioError``, ``FeederError``, ``InvalidBidError`` are
  ValueErrors), ``TypeError``, ``KeyError`` or ``RuntimeError`` whose message names the agent,
  key or file, raised before any state changed, with the environment usable afterwards.

Anything else is counted as ``UNDOCUMENTED`` with an example; the run fails if there is one.
``--soak N`` then runs N agent turns per environment with random valid actions and prints the
resident memory at the start and the end.

    python benchmarks/fuzz_bad_input.py --actions 100000 --scenarios 1000 --soak 1000000
    python benchmarks/fuzz_bad_input.py --quick          # what CI runs (a 10^3-case sample)
"""

from __future__ import annotations

import argparse
import collections
import copy
import random
import resource
import time
import tomllib
import warnings

import gymnasium
import numpy as np

import ogg_envs
from ogg_envs.scenario import bundled_dir

DOCUMENTED = (ValueError, TypeError, KeyError, RuntimeError)
SCENARIOS = {"opengridgym/topology-power-v0": "topology_power", "opengridgym/p2p-v0": "p2p",
             "opengridgym/dlmp-v0": "dlmp"}
SMALL = {"opengridgym/p2p-v0": dict(horizon=3, negotiation_steps=2)}


class Tally:
    def __init__(self):
        self.counts = collections.Counter()
        self.examples: dict[str, str] = {}

    def add(self, outcome: str, example: str = "") -> None:
        self.counts[outcome] += 1
        if outcome.startswith("UNDOCUMENTED"):
            self.examples.setdefault(outcome, example)

    @property
    def undocumented(self) -> int:
        return sum(v for k, v in self.counts.items() if k.startswith("UNDOCUMENTED"))


# ---------------------------------------------------------------------- actions
def bad_actions(space, rng: random.Random):
    """One adversarial action for ``space`` (and a label of what it is)."""
    if isinstance(space, gymnasium.spaces.Discrete):
        return rng.choice([
            ("float", 1.5), ("negative", -1), ("out of range", space.n + rng.randrange(5)),
            ("bool", True), ("string", "3"), ("nan", float("nan")), ("none", None),
            ("array(2)", np.array([1, 2])), ("complex", 1 + 0j), ("huge", 10**30),
            ("numpy float", np.float64(2.0))])
    shape = space.shape
    good = space.sample().astype(float)
    choices = [
        ("nan", np.where(np.arange(good.size).reshape(shape) == 0, np.nan, good)),
        ("inf", np.full(shape, np.inf)), ("-inf", np.full(shape, -np.inf)),
        ("huge", np.full(shape, 1e300)), ("negative", -np.abs(good) - 1.0),
        ("strings", [str(v) for v in good.reshape(-1)]), ("string", "a"),
        ("bools", np.ones(shape, dtype=bool)), ("complex", good.astype(complex)),
        ("short", good.reshape(-1)[:-1]), ("long", np.append(good.reshape(-1), 1.0)),
        ("2-d", good.reshape(1, -1)), ("none", None), ("object", object()),
        ("ragged", [[1.0], [1.0, 2.0]]), ("reversed", good[::-1] * 3.0),
        ("int", np.ones(shape, dtype=int)), ("scalar", 1.0)]
    return rng.choice(choices)


def _state(env):
    raw = env.unwrapped
    return (raw.t, raw.round, raw.cycles, tuple(raw.agents))


def fuzz_parallel(env_id: str, n: int, tally: Tally, seed: int = 0) -> None:
    rng = random.Random(seed)
    env = ogg_envs.make(env_id, parallel=True, **SMALL.get(env_id, {}))
    try:
        env.step({})
        tally.add("UNDOCUMENTED: step before reset accepted", env_id)
    except RuntimeError:
        tally.add("refused: step before reset")
    env.reset(seed=seed)
    for _ in range(n):
        if not env.agents:
            env.reset()
        valid = {a: env.action_space(a).sample() for a in env.agents}
        kind = rng.random()
        if kind < 0.35:
            actions, label, who = valid, "valid", None
        elif kind < 0.85:
            who = rng.choice(env.agents)
            label, bad = bad_actions(env.action_space(who), rng)
            actions = dict(valid, **{who: bad})
        elif kind < 0.9:
            actions, label, who = dict(valid, mallory=valid[env.agents[0]]), "unknown agent", \
                "mallory"
        elif kind < 0.95:
            who = rng.choice(env.agents)
            actions, label = {a: v for a, v in valid.items() if a != who}, "missing agent"
        else:
            actions, label, who = list(valid.values()), "list", "dict"
        before = _state(env)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            try:
                _, _, _, _, infos = env.step(actions)
            except DOCUMENTED as exc:
                msg = str(exc)
                if who is not None and who not in msg:
                    tally.add(f"UNDOCUMENTED: {label} refused without naming {who}", msg)
                elif _state(env) != before:
                    tally.add(f"UNDOCUMENTED: {label} refused after the state changed", msg)
                else:
                    tally.add(f"refused: {label} ({type(exc).__name__})")
                continue
            except Exception as exc:  # noqa: BLE001 - what the harness is for
                tally.add(f"UNDOCUMENTED: {label}: {type(exc).__name__}", f"{env_id}: {exc}")
                env.reset()
                continue
        repaired = who is not None and "bid_repairs" in infos.get(who, {})
        tally.add(f"accepted: {label}" + (" (repaired)" if repaired else ""))


def fuzz_aec(env_id: str, n: int, tally: Tally, seed: int = 0) -> None:
    rng = random.Random(seed + 1)
    env = ogg_envs.make(env_id, **SMALL.get(env_id, {}))
    env.reset(seed=seed)
    for _ in range(n):
        if not env.agents:
            env.reset()
        agent = env.agent_selection
        _, _, term, trunc, _ = env.last()
        if term or trunc:
            env.step(None)
            continue
        kind = rng.random()
        if kind < 0.03:
            env.reset()  # mid-round
            tally.add("accepted: reset mid-round")
            continue
        if kind < 0.06:
            try:
                env.observe("mallory")
                tally.add("UNDOCUMENTED: observe unknown agent accepted", env_id)
            except KeyError as exc:
                tally.add("refused: observe unknown agent" if "mallory" in str(exc) else
                          "UNDOCUMENTED: observe unknown agent without its name")
            continue
        if kind < 0.45:
            env.step(env.action_space(agent).sample())
            tally.add("accepted: valid turn")
            continue
        label, bad = bad_actions(env.action_space(agent), rng)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            try:
                env.step(bad)
                tally.add(f"accepted: {label} turn")
            except DOCUMENTED as exc:
                if env.agent_selection != agent:
                    tally.add(f"UNDOCUMENTED: {label} turn refused after the turn moved", str(exc))
                elif agent not in str(exc):
                    tally.add(f"UNDOCUMENTED: {label} turn refused without the agent", str(exc))
                else:
                    tally.add(f"refused: {label} turn ({type(exc).__name__})")
            except Exception as exc:  # noqa: BLE001
                tally.add(f"UNDOCUMENTED: {label} turn: {type(exc).__name__}", f"{env_id}: {exc}")
                env.reset()


# ---------------------------------------------------------------------- scenarios
def _paths(d: dict, prefix=()):
    for k, v in d.items():
        yield (*prefix, k), v
        if isinstance(v, dict):
            yield from _paths(v, (*prefix, k))


def _misspell(key: str, rng: random.Random) -> str:
    i = rng.randrange(len(key))
    return key[:i] + key[i + 1:] if len(key) > 3 else key + "x"


def mutate(data: dict, rng: random.Random) -> tuple[dict, str, str]:
    """A mutated copy of a scenario dict, a label, and the key involved."""
    data = copy.deepcopy(data)
    path, value = rng.choice(list(_paths(data)))
    node = data
    for k in path[:-1]:
        node = node[k]
    key = path[-1]
    op = rng.choice(["drop", "misspell", "string", "negative", "huge", "list", "nan", "bool",
                     "empty list"])
    if op == "drop":
        del node[key]
    elif op == "misspell":
        node[_misspell(key, rng)] = node.pop(key)
    elif op == "string":
        node[key] = "oops"
    elif op == "negative":
        node[key] = -abs(value) - 1 if isinstance(value, (int, float)) and not isinstance(
            value, bool) else -1
    elif op == "huge":
        node[key] = 1e12
    elif op == "list":
        node[key] = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    elif op == "nan":
        node[key] = float("nan")
    elif op == "bool":
        node[key] = True
    else:
        node[key] = []
    return data, op, key


def fuzz_scenarios(env_id: str, n: int, tally: Tally, seed: int = 0) -> None:
    rng = random.Random(seed + 2)
    base = tomllib.loads((bundled_dir() / f"{SCENARIOS[env_id]}.toml").read_text())
    kwargs = SMALL.get(env_id, {"horizon": 2, "market_rounds": 1})
    for _ in range(n):
        data, op, key = mutate(base, rng)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            try:
                env = ogg_envs.make(env_id, parallel=True, scenario=data, **kwargs)
                env.reset(seed=0)
                env.step({a: env.action_space(a).sample() for a in env.agents})
                tally.add(f"accepted: {op}")
            except DOCUMENTED as exc:
                named = key in str(exc) or _misspell_named(str(exc))
                tally.add(f"refused: {op} ({type(exc).__name__})" if named else
                          f"UNDOCUMENTED: {op} of {key!r} refused without naming it",
                          f"{env_id}: {exc}")
            except Exception as exc:  # noqa: BLE001
                tally.add(f"UNDOCUMENTED: {op} of {key!r}: {type(exc).__name__}",
                          f"{env_id}: {exc}")


def _misspell_named(msg: str) -> bool:
    return "unknown key" in msg  # the misspelt key itself is named (with a suggestion)


# ---------------------------------------------------------------------- soak
def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def soak(env_id: str, turns: int) -> dict:
    env = ogg_envs.make(env_id, parallel=True)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    done, start, t0 = 0, None, time.perf_counter()
    while done < turns:
        if not env.agents:
            env.reset()
        acts = {}
        for a in env.agents:
            sp = env.action_space(a)
            acts[a] = int(rng.integers(sp.n)) if isinstance(sp, gymnasium.spaces.Discrete) \
                else rng.uniform(sp.low, sp.high).astype(np.float32)
        env.step(acts)
        done += len(acts)
        if start is None and done >= min(turns // 10, 20_000):
            start = rss_mb()  # after the caches of the first episodes are built
    return {"env": env_id, "turns": done, "rss_start_mb": start, "rss_end_mb": rss_mb(),
            "seconds": time.perf_counter() - t0}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--actions", type=int, default=2000, help="actions per env and API")
    ap.add_argument("--scenarios", type=int, default=200, help="mutated scenarios per env")
    ap.add_argument("--soak", type=int, default=0, help="agent turns per env (0: no soak)")
    ap.add_argument("--quick", action="store_true", help="a 10^3-case sample (CI)")
    args = ap.parse_args(argv)
    if args.quick:
        args.actions, args.scenarios, args.soak = 150, 60, 0
    tally = Tally()
    t0 = time.perf_counter()
    for env_id in SCENARIOS:
        fuzz_parallel(env_id, args.actions, tally)
        fuzz_aec(env_id, args.actions, tally)
        fuzz_scenarios(env_id, args.scenarios, tally)
    total = sum(tally.counts.values())
    print(f"{total:,} cases in {time.perf_counter() - t0:.0f} s "
          f"({args.actions:,} actions per env and API, {args.scenarios:,} scenarios per env)")
    for outcome, count in sorted(tally.counts.items()):
        print(f"  {count:8,d}  {outcome}")
    for outcome, example in tally.examples.items():
        print(f"  example of {outcome}: {example[:300]}")
    print(f"undocumented: {tally.undocumented}")
    for env_id in SCENARIOS if args.soak else ():
        r = soak(env_id, args.soak)
        print(f"soak {r['env']}: {r['turns']:,} agent turns in {r['seconds']:.0f} s, RSS "
              f"{r['rss_start_mb']:.1f} MB -> {r['rss_end_mb']:.1f} MB")
    return 1 if tally.undocumented else 0


if __name__ == "__main__":
    raise SystemExit(main())
