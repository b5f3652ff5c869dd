"""Leaderboard entries: the built-in baselines, user policies and saved models.

The entry interface (``docs/leaderboard.md`` has the full text)
---------------------------------------------------------------
A policy acts for every agent the task gives it, one agent at a time::

    action = policy(agent, observation, info)

* ``agent``: the agent's name (``"supplier_2"``); ``observation``: its observation from the
  environment (a NumPy array, exactly what PettingZoo returns);
* ``info``: a fresh dict with the environment's ``infos[agent]`` from the last step (or from
  ``reset``) plus ``private`` (a copy of the agent's own private data: its true costs or
  values, what it can produce this hour, its P2P role), ``rules`` (the market's public rules:
  price cap, number of blocks, price arms, tariffs), ``action_space``, ``task`` (the task id),
  ``seed``, ``episode`` and ``rng`` (a NumPy ``Generator`` seeded from the task seed: use it
  for randomness so that runs repeat exactly).
* The action must be in ``env.action_space(agent)``; a policy that raises, or returns an action
  outside the space, fails the task (the runner records why and goes on).
* Optional ``policy.update(agent, action, reward, info)`` is called after every step with that
  step's reward and info: online learners (bandits) learn through it.

An entry is given as:

* a baseline name: ``random``, ``truthful``, ``markup``, ``ucb``, ``epsilon-greedy``
  (``BASELINES``; each applies to the tasks whose market it knows);
* ``module:attr`` (``attr`` may be dotted), optionally named ``name=module:attr``: a class is
  instantiated with no arguments once per evaluation seed (so state never leaks between seeds),
  any other callable is used as the policy for every seed;
* a saved Stable-Baselines3 model ``path/to/model.zip`` (optionally ``name=path.zip``): one
  shared network acts for every controlled agent (parameter sharing), deterministically; a Box
  action of the model whose bounds differ from the environment's (e.g. a model trained on
  actions scaled to [-1, 1]) is mapped affinely onto the environment's bounds.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import gymnasium
import numpy as np

__all__ = ["Entry", "BASELINES", "DEFAULT_ENTRIES", "resolve_entry", "invalid_action_reason",
           "P2PReservationBidder", "P2PBanditPolicy", "BidderPolicy", "SB3Policy"]

MARKUP = 0.3  # the fixed markup of the "markup" baseline


# ---------------------------------------------------------------------- action checks
def invalid_action_reason(space: gymnasium.Space, action) -> str | None:
    """Why ``action`` is not a valid action of ``space`` (None if it is).

    Box: the shape must match and every number be finite and within the bounds (with a
    tolerance of 1e-6 relative, for float32 round-off). Discrete: an integer (Python or NumPy,
    not bool) in range.
    """
    if isinstance(space, gymnasium.spaces.Discrete):
        if isinstance(action, np.ndarray) and action.shape == () and \
                np.issubdtype(action.dtype, np.integer):
            action = int(action)
        if isinstance(action, (bool, np.bool_)) or not isinstance(action, (int, np.integer)):
            return f"expected an integer in [0, {space.n}), got {action!r}"
        if not space.start <= int(action) < space.start + space.n:
            return f"action {int(action)} is outside [0, {space.n})"
        return None
    if isinstance(space, gymnasium.spaces.Box):
        try:
            a = np.asarray(action, dtype=float)
        except (TypeError, ValueError):
            return f"expected an array of shape {space.shape}, got {action!r}"
        if a.shape != space.shape:
            return f"expected shape {space.shape}, got shape {a.shape}"
        if not np.isfinite(a).all():
            return f"non-finite numbers in {a.tolist()}"
        low, high = space.low.astype(float), space.high.astype(float)
        tol = 1e-6 * np.maximum(1.0, np.maximum(np.abs(low), np.abs(high)))
        bad = (a < low - tol) | (a > high + tol)
        if bad.any():
            i = int(np.flatnonzero(bad.reshape(-1))[0])
            return (f"element {i} = {a.reshape(-1)[i]:g} is outside [{low.reshape(-1)[i]:g}, "
                    f"{high.reshape(-1)[i]:g}]")
        return None
    return None if space.contains(action) else f"{action!r} is not in {space}"


# ---------------------------------------------------------------------- baselines
class BidderPolicy:
    """An environment-style scripted bidder ``bidder(participant, observation, rng)`` as a
    leaderboard policy: the bidder sees the agent's own private data only."""

    def __init__(self, bidder):
        self.bidder = bidder

    def __call__(self, agent: str, observation, info: dict):
        return self.bidder(SimpleNamespace(name=agent, private=info["private"]), observation,
                           info["rng"])


class P2PReservationBidder:
    """P2P: bid the reservation price, shaded by ``markup``.

    A producer's outside option is selling to the utility at the feed-in price, and a trade
    costs it the service fee, so its reservation price is ``feed_in + c_service``; a consumer's
    is ``retail - c_service``. The producer bids the lowest arm at or above
    ``(feed_in + c_service) (1 + markup)``, the consumer the highest arm at or below
    ``(retail - c_service) / (1 + markup)``. With ``markup=0`` (truthful) every matched pair
    trades in every step.
    """

    def __init__(self, markup: float = 0.0):
        self.markup = float(markup)

    def __call__(self, agent: str, observation, info: dict) -> int:
        r = info["rules"]
        arms = np.asarray(r["arms"], dtype=float)
        if info["private"]["role"] == "producer":
            target = (r["feed_in_price"] + r["c_service"]) * (1 + self.markup)
            ok = np.flatnonzero(arms >= target - 1e-12)
            return int(ok[0]) if ok.size else len(arms) - 1
        target = (r["retail_price"] - r["c_service"]) / (1 + self.markup)
        ok = np.flatnonzero(arms <= target + 1e-12)
        return int(ok[-1]) if ok.size else 0


class P2PBanditPolicy:
    """P2P: the paper's learners (``ogg_envs.baselines.bandits``), one ``RolePolicy`` (a bandit
    per role) per agent, learning from the rewards of the steps in which it is matched."""

    def __init__(self, kind: str):
        self.kind = kind
        self.policies: dict[str, Any] = {}

    def _policy(self, agent: str, info: dict):
        if agent not in self.policies:
            from ogg_envs.baselines.bandits import make_policy
            from ogg_envs.markets.p2p import P2PTerms

            r = info["rules"]
            terms = P2PTerms(arms=tuple(r["arms"]), retail_price=r["retail_price"],
                             feed_in_price=r["feed_in_price"],
                             imbalance_price=r["imbalance_price"], c_service=r["c_service"],
                             c_lose=r["c_lose"])
            self.policies[agent] = make_policy(self.kind, terms.n_arms, terms.reward_range())
        return self.policies[agent]

    def __call__(self, agent: str, observation, info: dict) -> int:
        role_policy = self._policy(agent, info)
        return int(role_policy.bandits[info["private"]["role"]].select(info["rng"]))

    def update(self, agent: str, action, reward: float, info: dict) -> None:
        if info.get("matched"):
            self._policy(agent, info).bandits[info["role"]].update(int(action), reward)


def _curve(name: str):
    from ogg_envs.baselines import curve_bidders as cb

    def make(task, rules):
        cap = rules["price_cap"]
        return BidderPolicy({"random": lambda: cb.RandomBidder(price_cap=cap),
                             "truthful": cb.TruthfulBidder,
                             "markup": lambda: cb.MarkupBidder(MARKUP, price_cap=cap)}[name]())
    return make


def _dlmp(name: str):
    from ogg_envs.baselines import dlmp_bidders as db

    def make(task, rules):
        return BidderPolicy({"random": db.RandomBidder, "truthful": db.TruthfulBidder,
                             "markup": lambda: db.MarkupBidder(MARKUP)}[name]())
    return make


class _P2PRandom:
    def __call__(self, agent, observation, info):
        return int(info["rng"].integers(info["action_space"].n))


BASELINES: dict[str, dict[str, Any]] = {
    "random": {"curve": _curve("random"), "dlmp": _dlmp("random"),
               "p2p": lambda task, rules: _P2PRandom()},
    "truthful": {"curve": _curve("truthful"), "dlmp": _dlmp("truthful"),
                 "p2p": lambda task, rules: P2PReservationBidder(0.0)},
    "markup": {"curve": _curve("markup"), "dlmp": _dlmp("markup"),
               "p2p": lambda task, rules: P2PReservationBidder(MARKUP)},
    "ucb": {"p2p": lambda task, rules: P2PBanditPolicy("ucb")},
    "epsilon-greedy": {"p2p": lambda task, rules: P2PBanditPolicy("epsilon_greedy")},
}
DEFAULT_ENTRIES = list(BASELINES)

BASELINE_NOTES = {
    "random": "uniformly random valid actions (env-seeded)",
    "truthful": "true cost / value curves; P2P: reservation prices",
    "markup": f"true curves with prices x{1 + MARKUP:g}; P2P: reservation shaded by "
              f"{MARKUP:g}",
    "ucb": "the paper's UCB bandits, one per role (P2P only)",
    "epsilon-greedy": "epsilon-greedy bandits (epsilon 0.1), one per role (P2P only)",
}


# ---------------------------------------------------------------------- saved models
class SB3Policy:
    """A saved Stable-Baselines3 model acting for every controlled agent (see the module
    docstring). The model is loaded once and shared by every seed."""

    _ALGOS = ("PPO", "SAC", "TD3", "A2C", "DDPG", "DQN")

    def __init__(self, path: str):
        self.path = str(path)
        self._model = None

    @property
    def model(self):
        if self._model is None:
            try:
                import stable_baselines3 as sb3
            except ImportError as exc:
                raise RuntimeError("saved models need stable-baselines3 (pip install "
                                   "'opengridgym[train]')") from exc
            errors = []
            for algo in self._ALGOS:
                try:
                    self._model = getattr(sb3, algo).load(self.path, device="cpu")
                    break
                except Exception as exc:  # wrong algorithm class: try the next
                    errors.append(f"{algo}: {type(exc).__name__}")
            else:
                raise RuntimeError(f"{self.path}: not a loadable SB3 model ({'; '.join(errors)})")
        return self._model

    def __call__(self, agent: str, observation, info: dict):
        action, _ = self.model.predict(np.asarray(observation), deterministic=True)
        return decode_model_action(self.model.action_space, action, agent, info)


def decode_model_action(model_space, action, agent: str, info: dict):
    """A trained model's action as the env's raw action for ``agent``.

    Models trained through ``normalized_bids_v0`` (``Box(-1, 1)``) are decoded with its
    parametrisation, ``arms_as_box_v0`` models with ``ArmCodec``; other Box models are mapped
    affinely onto the agent's action box."""
    from ogg_envs.wrappers import ArmCodec, BlockPriceCodec, CurveBidCodec

    space, rules = info["action_space"], info["rules"]
    if isinstance(space, gymnasium.spaces.Discrete):
        if getattr(model_space, "n", None) == space.n:
            return int(np.asarray(action).reshape(-1)[0])
        return ArmCodec(space.n).decode(action, who=agent)
    normalised = (isinstance(model_space, gymnasium.spaces.Box)
                  and model_space.shape == space.shape
                  and np.all(model_space.low == -1) and np.all(model_space.high == 1))
    if normalised:
        if "n_blocks" in rules:
            return BlockPriceCodec(rules["price_cap"], rules["n_blocks"]).decode(action, who=agent)
        return CurveBidCodec(rules["price_cap"]).decode(action, info["private"]["q_now"], agent)
    a = np.asarray(action, dtype=float).reshape(space.shape)
    if isinstance(model_space, gymnasium.spaces.Box) and model_space.shape == space.shape:
        mlo, mhi = model_space.low.astype(float), model_space.high.astype(float)
        lo, hi = space.low.astype(float), space.high.astype(float)
        a = np.clip(a, mlo, mhi)
        if not (np.array_equal(mlo, lo) and np.array_equal(mhi, hi)):
            a = lo + (a - mlo) / (mhi - mlo) * (hi - lo)
    return a


# ---------------------------------------------------------------------- entries
@dataclass
class Entry:
    """A resolved entry: ``make(task, rules)`` gives the policy for one evaluation seed."""

    name: str
    spec: str
    kinds: frozenset[str] | None  # task kinds it applies to (None: every task)
    factory: Any
    note: str = ""

    def applies(self, kind: str) -> bool:
        return self.kinds is None or kind in self.kinds

    def make(self, task, rules: dict):
        if isinstance(self.factory, dict):
            return self.factory[task.kind](task, rules)
        return self.factory(task, rules)


def _import_attr(spec: str):
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"entry {spec!r}: expected module:callable")
    try:
        obj = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"entry {spec!r}: cannot import {module_name} ({exc})") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"entry {spec!r}: {module_name} has no attribute {attr}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"entry {spec!r}: {attr} is not callable")
    return obj


def resolve_entry(spec: str) -> Entry:
    """An ``Entry`` from its command-line form (see the module docstring)."""
    spec = spec.strip()
    name, sep, rest = spec.partition("=")
    if not sep:
        name, rest = "", spec
    if rest in BASELINES:
        return Entry(name or rest, rest, frozenset(BASELINES[rest]), BASELINES[rest],
                     BASELINE_NOTES.get(rest, ""))
    if rest.endswith(".zip"):
        if not Path(rest).is_file():
            raise ValueError(f"entry {spec!r}: no such model file {rest}")
        policy = SB3Policy(rest)
        return Entry(name or Path(rest).stem, rest, None, lambda task, rules: policy,
                     "saved SB3 model")
    if ":" in rest:
        obj = _import_attr(rest)
        if inspect.isclass(obj):
            def factory(task, rules, cls=obj):
                return cls()
        else:
            def factory(task, rules, fn=obj):
                return fn
        return Entry(name or rest, rest, None, factory, "user policy")
    raise ValueError(f"entry {spec!r}: not a baseline ({', '.join(BASELINES)}), a "
                     "module:callable or a saved model .zip")
