"""Leaderboard entries: the built-in baselines, user policies and saved models.

The entry interface (``docs/leaderboard.md`` has the full text)
---------------------------------------------------------------
An entry's policy is an ``ogg_envs.api.Policy``, the signature of every policy in
OpenGridGym. It acts for every agent the task gives it, one agent at a time::

    action = policy(participant, observation, info)

* ``participant``: a copy of the agent's own ``ogg_envs.api.Participant`` record, taken before
  the step: ``name`` (``"supplier_2"``), ``group``, ``bus``, ``side``, its private truth
  (``truth.cost_a``, ``truth.cost_b``, ``truth.value_max``, ``truth.value_min``), its public
  limits this hour (``limits.q_now``, ``limits.q_max``), the market's public rules
  (``rules``: price cap, blocks, arms, tariffs) and ``state`` (e.g. its P2P ``role``);
* ``observation``: its observation from the environment (exactly what PettingZoo returns);
* ``info``: a fresh dict with the environment's ``infos[agent]`` from the last step (or from
  ``reset``) plus ``action_space``, ``task`` (the task id), ``seed``, ``episode`` and ``rng``
  (a NumPy ``Generator`` seeded from the task seed: use it for randomness so that runs repeat
  exactly).
* The action must be in ``env.action_space(agent)``; a policy that raises, or returns an action
  outside the space, fails the task (the runner records why and goes on).
* Optional ``policy.update(participant, action, reward, info)`` is called after every step with
  the same participant copy and that step's reward and info: online learners (bandits) learn
  through it.

An entry is given as:

* a baseline name (``BASELINES``: the ``baselines`` of the registered environments, each
  applying to the tasks of the environments that list it: ``random``, ``truthful``,
  ``markup``, ``ucb``, ``epsilon-greedy``); any other named policy of an environment's spec
  (e.g. ``flat``) works too;
* ``module:attr`` (``attr`` may be dotted), optionally named ``name=module:attr``: a class is
  instantiated with no arguments once per evaluation seed (so state never leaks between seeds),
  any other callable is used as the policy for every seed. A module in the current folder is
  found without setting ``PYTHONPATH``;
* a saved Stable-Baselines3 model ``path/to/model.zip`` (optionally ``name=path.zip``): one
  shared network acts for every controlled agent (parameter sharing), deterministically; a
  model trained through ``normalized_bids_v0`` is decoded with the environment's codec, and a
  Box action of a model whose bounds differ from the environment's is mapped affinely onto the
  environment's bounds.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np

import ogg_envs

__all__ = ["Entry", "BASELINES", "DEFAULT_ENTRIES", "resolve_entry", "invalid_action_reason",
           "SB3Policy", "decode_model_action", "baseline_note", "import_user_module"]


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
class _Baselines(Mapping):
    """Baseline name -> the ids of the registered environments that list it (``EnvSpec.
    baselines``), in registration order; live: an environment registered later counts."""

    def _table(self) -> dict[str, tuple[str, ...]]:
        out: dict[str, list[str]] = {}
        for env_id, spec in ogg_envs.ENVIRONMENTS.items():
            for name in spec.baselines:
                out.setdefault(name, []).append(env_id)
        return {k: tuple(v) for k, v in out.items()}

    def __getitem__(self, name: str) -> tuple[str, ...]:
        return self._table()[name]

    def __iter__(self):
        return iter(self._table())

    def __len__(self) -> int:
        return len(self._table())

    def __repr__(self) -> str:
        return f"BASELINES({self._table()!r})"


class _DefaultEntries(Sequence):
    """The default entries of a run: every baseline (live, like ``BASELINES``)."""

    def __getitem__(self, i):
        return list(BASELINES)[i]

    def __len__(self) -> int:
        return len(BASELINES)

    def __repr__(self) -> str:
        return repr(list(BASELINES))


BASELINES = _Baselines()
DEFAULT_ENTRIES = _DefaultEntries()


def _policy_envs(name: str) -> tuple[str, ...]:
    """The registered environments that have a policy called ``name``."""
    return tuple(env_id for env_id, spec in ogg_envs.ENVIRONMENTS.items()
                 if name in spec.policies)


def _describe(policy) -> str:
    """``module.Class(arg=value, ...)`` of a policy object (its plain public attributes)."""
    cls = type(policy)
    args = ", ".join(f"{k}={v!r}" for k, v in vars(policy).items()
                     if not k.startswith("_") and isinstance(v, (int, float, str, bool)))
    return f"{cls.__module__.rsplit('.', 1)[-1]}.{cls.__qualname__}({args})"


def baseline_note(name: str) -> str:
    """What a named policy is, per environment: ``env: module.Class(args)``."""
    parts = []
    for env_id in _policy_envs(name):
        try:
            what = _describe(ogg_envs.spec(env_id).policies[name]())
        except Exception as exc:  # a policy that cannot be made here: say so, do not fail
            what = f"unavailable ({type(exc).__name__}: {exc})"
        parts.append(f"{env_id.split('/')[-1]}: {what}")
    return "; ".join(parts)


def _named_policy(name: str):
    """The factory of a named policy: a fresh policy from the task's environment's spec."""
    def make(task, env):
        return task.spec.policies[name]()
    return make


# ---------------------------------------------------------------------- saved models
class SB3Policy:
    """A saved Stable-Baselines3 model acting for every controlled agent (see the module
    docstring). The model is loaded once and shared by every seed; ``for_env(env)`` gives the
    policy of one evaluation run (decoding through ``env``'s codec)."""

    _ALGOS = ("PPO", "SAC", "TD3", "A2C", "DDPG", "DQN")

    def __init__(self, path: str, env=None, _shared: dict | None = None):
        self.path = str(path)
        self.env = env
        self._shared = {} if _shared is None else _shared
        self._codecs: dict[str, Any] = {}

    def for_env(self, env) -> SB3Policy:
        """The same (shared) model, decoding actions for ``env``; ``ValueError`` if the model
        does not fit the env's agents (see ``misfit``)."""
        why = self.misfit(env)
        if why:
            raise ValueError(f"{Path(self.path).name} does not fit this task: {why}")
        return SB3Policy(self.path, env, self._shared)

    def misfit(self, env) -> str | None:
        """Why the model cannot act for ``env``'s agents (None if it can): its observation
        shape must be theirs, and its action space theirs — the same Box shape (raw or
        normalised), or for arms ``Discrete(n)`` itself or ``arms_as_box_v0``'s ``Box(1)``."""
        m_obs, m_act = self.model.observation_space, self.model.action_space
        for agent in env.possible_agents:
            obs, act = env.observation_space(agent), env.action_space(agent)
            if getattr(m_obs, "shape", None) != obs.shape:
                return (f"the model's observation has shape {m_obs.shape}, {agent}'s "
                        f"{obs.shape} (it was trained on another environment)")
            if isinstance(act, gymnasium.spaces.Discrete):
                ok = (isinstance(m_act, gymnasium.spaces.Discrete) and m_act.n == act.n) or \
                    (isinstance(m_act, gymnasium.spaces.Box) and m_act.shape == (1,))
            else:
                ok = isinstance(m_act, gymnasium.spaces.Box) and m_act.shape == act.shape
            if not ok:
                return f"the model acts in {m_act}, {agent} in {act}"
        return None

    @property
    def model(self):
        if "model" not in self._shared:
            try:
                import stable_baselines3 as sb3
            except ImportError as exc:
                raise RuntimeError("saved models need stable-baselines3 (pip install "
                                   "'opengridgym[train]')") from exc
            errors = []
            for algo in self._ALGOS:
                try:
                    self._shared["model"] = getattr(sb3, algo).load(self.path, device="cpu")
                    break
                except Exception as exc:  # wrong algorithm class: try the next
                    errors.append(f"{algo}: {type(exc).__name__}")
            else:
                raise RuntimeError(f"{self.path}: not a loadable SB3 model ({'; '.join(errors)})")
        return self._shared["model"]

    def codec(self, agent: str):
        """``agent``'s codec in the bound environment (None: no env bound, or no codec)."""
        if self.env is None:
            return None
        if agent not in self._codecs:
            from ogg_envs.wrappers import codec_for

            self._codecs[agent] = codec_for(self.env, agent)
        return self._codecs[agent]

    def __call__(self, participant, observation, info: dict):
        action, _ = self.model.predict(np.asarray(observation), deterministic=True)
        return decode_model_action(self.model.action_space, action, participant, info,
                                   self.codec(participant.name))


def decode_model_action(model_space, action, participant, info: dict, codec=None):
    """A trained model's action as the env's raw action for ``participant``.

    ``codec`` is the agent's codec in the environment (``ogg_envs.wrappers.codec_for(env,
    agent)``, from the environment's registered spec). Models trained through
    ``normalized_bids_v0`` (``Box(-1, 1)`` of the env action's shape) are decoded with it (with
    ``participant.limits.q_now``), ``arms_as_box_v0`` models with ``ArmCodec``; other Box
    models are mapped affinely onto the agent's action box (``info["action_space"]``)."""
    from ogg_envs.wrappers import ArmCodec

    space, who = info["action_space"], participant.name
    if isinstance(space, gymnasium.spaces.Discrete):
        if getattr(model_space, "n", None) == space.n:
            return int(np.asarray(action).reshape(-1)[0])
        return ArmCodec(space.n).decode(action, who=who)
    normalised = (isinstance(model_space, gymnasium.spaces.Box)
                  and model_space.shape == space.shape
                  and np.all(model_space.low == -1) and np.all(model_space.high == 1))
    if normalised and codec is not None:
        return codec.decode(action, participant.limits.q_now, who=who)
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
    """A resolved entry: ``make(task, env)`` gives the policy for one evaluation seed (``env``:
    that seed's fresh environment of the task)."""

    name: str
    spec: str
    envs: frozenset[str] | None  # ids of the environments it applies to (None: every one)
    factory: Any  # factory(task, env) -> policy
    note: str = ""

    def applies(self, env_id: str) -> bool:
        """Whether the entry applies to the tasks of environment ``env_id``."""
        return self.envs is None or env_id in self.envs

    def make(self, task, env=None):
        return self.factory(task, env)


def import_user_module(name: str):
    """Import a user's module by name; the current folder is searched too (as ``python -m``
    would), so a module next to the command needs no ``PYTHONPATH``."""
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
        importlib.invalidate_caches()
    return importlib.import_module(name)


def _import_attr(spec: str):
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"entry {spec!r}: expected module:callable")
    try:
        obj = import_user_module(module_name)
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
    if rest in BASELINES or (":" not in rest and _policy_envs(rest)):
        envs = BASELINES[rest] if rest in BASELINES else _policy_envs(rest)
        return Entry(name or rest, rest, frozenset(envs), _named_policy(rest),
                     baseline_note(rest))
    if rest.endswith(".zip"):
        if not Path(rest).is_file():
            raise ValueError(f"entry {spec!r}: no such model file {rest}")
        policy = SB3Policy(rest)
        return Entry(name or Path(rest).stem, rest, None,
                     lambda task, env: policy.for_env(env), "saved SB3 model")
    if ":" in rest:
        obj = _import_attr(rest)
        if inspect.isclass(obj):
            def factory(task, env, cls=obj):
                return cls()
        else:
            def factory(task, env, fn=obj):
                return fn
        return Entry(name or rest, rest, None, factory, "user policy")
    raise ValueError(f"entry {spec!r}: not a baseline ({', '.join(BASELINES)}), a named "
                     "policy of an environment, a module:callable or a saved model .zip")
