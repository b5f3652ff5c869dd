"""OpenGridGym: multi-agent RL environments for distribution electricity markets.

    import ogg_envs
    env = ogg_envs.make("opengridgym/topology-power-v0")              # AEC
    par = ogg_envs.make("opengridgym/topology-power-v0", parallel=True)

Importing the package registers every environment with PettingZoo, so
``pettingzoo.make("aec" | "parallel", "opengridgym/topology-power-v0")`` works too.
"""

from __future__ import annotations

import importlib

import pettingzoo

__version__ = "0.1.0"

# id -> module in ogg_envs.envs that provides env() and parallel_env()
ENVIRONMENTS = {
    "opengridgym/topology-power-v0": "topology_power_v0",
    "opengridgym/p2p-v0": "p2p_v0",
    "opengridgym/dlmp-v0": "dlmp_v0",
}

for _id, _mod in ENVIRONMENTS.items():
    _path = f"ogg_envs.envs.{_mod}"
    if _id not in pettingzoo.aec_registry:
        pettingzoo.register("aec", _id, entry_point=f"{_path}:env")
        pettingzoo.register("parallel", _id, entry_point=f"{_path}:parallel_env")


def env_module(env_id: str):
    """The module of an environment id (its docstring is the environment's documentation)."""
    if env_id not in ENVIRONMENTS:
        raise ValueError(f"unknown environment {env_id!r}; available: {', '.join(ENVIRONMENTS)}")
    return importlib.import_module(f"ogg_envs.envs.{ENVIRONMENTS[env_id]}")


def make(env_id: str, *, parallel: bool = False, **kwargs):
    """Create an environment: the AEC env, or the parallel env with ``parallel=True``."""
    module = env_module(env_id)
    return module.parallel_env(**kwargs) if parallel else module.env(**kwargs)


__all__ = ["make", "env_module", "ENVIRONMENTS", "__version__"]

# Single-agent Gymnasium views (gymnasium.make("opengridgym/TopologyPower-Supplier-v0")) and the
# action wrappers; imported last, they only call back into make() at run time.
from ogg_envs import wrappers as _wrappers  # noqa: E402,F401
