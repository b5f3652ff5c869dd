"""One registry of environments: an environment's spec is declared once, and ``make``, PettingZoo,
the wrappers, the leaderboard, the command line and the trainers look it up.

A spec says how to build the environment and what the tools around it need to know::

    import ogg_envs
    ogg_envs.register(
        "mylab/pay-as-bid-v0",
        entry_point="my_market:PayAsBidEnv",          # a MarketEnv subclass, or a module with
                                                      # env() and parallel_env()
        codec="curve",                                # normalized_bids_v0's parametrisation
        policies={"truthful": TruthfulBidder, "markup": lambda: MarkupBidder(0.3)},
        baselines=("truthful", "markup"),             # leaderboard entries among them
        recorder="curve",                             # what the leaderboard records
    )
    env = ogg_envs.make("mylab/pay-as-bid-v0", parallel=True)
    # ... and pettingzoo.make, `opengridgym run mylab/pay-as-bid-v0`, normalized_bids_v0(env),
    # leaderboard tasks with env = "mylab/pay-as-bid-v0"

``codec``: ``"curve"`` (bid quadruples, ``ogg_envs.wrappers.CurveBidCodec``), ``"blocks"``
(block prices, ``BlockPriceCodec``), None (the action passes through, e.g. bandit arms), or a
callable ``codec(env, agent)``. ``policies``: name -> factory of a policy
(``ogg_envs.api.Policy``), made afresh where it is used (the ``[others]`` of a leaderboard task,
an evaluation seed); ``baselines``: the names among them that are leaderboard entries.
``recorder``: ``"curve"``,
``"dlmp"``, ``"p2p"`` (``ogg_envs.leaderboard.metrics``) or a recorder class.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import pettingzoo

__all__ = ["EnvSpec", "register", "spec", "make", "env_module", "ENVIRONMENTS"]


@dataclass(frozen=True)
class EnvSpec:
    """Everything the tools need to know about one environment (see the module docstring)."""

    id: str
    entry_point: Any
    codec: Any = None
    policies: dict[str, Any] = field(default_factory=dict)
    baselines: tuple[str, ...] = ()
    recorder: Any = "curve"
    summary: str = ""
    gym_views: dict[str, dict] = field(default_factory=dict)

    def _target(self):
        ep = self.entry_point
        if isinstance(ep, str):
            module, _, attr = ep.partition(":")
            obj = importlib.import_module(module)
            return getattr(obj, attr) if attr else obj
        return ep

    def parallel_env(self, **kwargs):
        target = self._target()
        env = target(**kwargs) if inspect.isclass(target) else target.parallel_env(**kwargs)
        env.unwrapped.env_id = self.id  # what spec_of reads first
        return env

    def aec_env(self, **kwargs):
        target = self._target()
        if inspect.isclass(target):
            from ogg_envs.core import aec_from_parallel

            env = aec_from_parallel(target(**kwargs))
        else:
            env = target.env(**kwargs)
        env.unwrapped.env_id = self.id
        return env

    def module(self) -> ModuleType:
        """The module that documents the environment (its docstring)."""
        target = self._target()
        return target if isinstance(target, ModuleType) else inspect.getmodule(target)


ENVIRONMENTS: dict[str, EnvSpec] = {}


def register(env_id: str, entry_point, *, codec=None, policies: dict | None = None,
             baselines=None, recorder="curve", summary: str = "",
             gym_views: dict | None = None, replace: bool = False) -> EnvSpec:
    """Register an environment (see the module docstring); returns its spec.

    Registering an id twice raises ``ValueError`` unless ``replace=True``.
    """
    if "/" not in env_id or not env_id.rsplit("-v", 1)[-1].isdigit():
        raise ValueError(f"environment id {env_id!r} must look like 'namespace/name-v0'")
    if env_id in ENVIRONMENTS and not replace:
        raise ValueError(f"environment {env_id!r} is already registered (replace=True to "
                         "replace it)")
    policies = dict(policies or {})
    baselines = tuple(policies) if baselines is None else tuple(baselines)
    unknown = [b for b in baselines if b not in policies]
    if unknown:
        raise ValueError(f"{env_id}: baselines {unknown} are not among the policies "
                         f"({', '.join(policies)})")
    spec_ = EnvSpec(env_id, entry_point, codec, policies, baselines, recorder, summary,
                    dict(gym_views or {}))
    ENVIRONMENTS[env_id] = spec_
    if replace:
        pettingzoo.aec_registry.pop(env_id, None)
        pettingzoo.parallel_registry.pop(env_id, None)
    if env_id not in pettingzoo.aec_registry:
        pettingzoo.register("aec", env_id, entry_point=spec_.aec_env)
        pettingzoo.register("parallel", env_id, entry_point=spec_.parallel_env)
    return spec_


def spec(env_id: str) -> EnvSpec:
    """The spec of a registered environment id."""
    try:
        return ENVIRONMENTS[env_id]
    except KeyError:
        raise ValueError(f"unknown environment {env_id!r}; registered: "
                         f"{', '.join(ENVIRONMENTS)}") from None


def spec_of(env) -> EnvSpec:
    """The spec of an environment instance (wrapped or not), by its class."""
    raw = getattr(env, "unwrapped", env)
    if getattr(raw, "env_id", None) in ENVIRONMENTS:
        return ENVIRONMENTS[raw.env_id]
    best, depth = None, -1  # an env built directly: the most specific registered class
    for s in ENVIRONMENTS.values():
        target = s._target()
        cls = target if inspect.isclass(target) else getattr(target, "raw_env", None)
        if cls is not None and isinstance(raw, cls) and len(cls.__mro__) > depth:
            best, depth = s, len(cls.__mro__)
    if best is not None:
        return best
    raise ValueError(f"{type(raw).__name__} is not a registered OpenGridGym environment "
                     "(ogg_envs.register)")


def env_module(env_id: str) -> ModuleType:
    """The module of an environment id (its docstring is the environment's documentation)."""
    return spec(env_id).module()


def make(env_id: str, *, parallel: bool = False, **kwargs):
    """Create an environment: the AEC env, or the parallel env with ``parallel=True``."""
    s = spec(env_id)
    return s.parallel_env(**kwargs) if parallel else s.aec_env(**kwargs)
