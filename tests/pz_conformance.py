"""PettingZoo conformance checks shared by the environment tests."""

from __future__ import annotations

import pickle
import types

import numpy as np
from pettingzoo.test import api_test, max_cycles_test, parallel_api_test, seed_test
from pettingzoo.utils.conversions import parallel_to_aec


def run_all(module, **kwargs) -> None:
    """api_test (AEC and parallel_to_aec(parallel)), parallel_api_test, seed_test,
    max_cycles_test and pickling, for an env module with env() / parallel_env()."""
    api_test(module.env(**kwargs), num_cycles=60)
    api_test(parallel_to_aec(module.parallel_env(**kwargs)), num_cycles=60)
    parallel_api_test(module.parallel_env(**kwargs), num_cycles=60)
    seed_test(lambda: module.env(**kwargs), num_cycles=30)
    shim = types.SimpleNamespace(
        env=lambda max_cycles: module.env(max_cycles=max_cycles, **kwargs),
        parallel_env=lambda max_cycles: module.parallel_env(max_cycles=max_cycles, **kwargs),
    )
    max_cycles_test(shim)
    check_pickle(module, **kwargs)


def check_pickle(module, **kwargs) -> None:
    """A pickled-and-restored parallel env continues exactly like the original."""
    env = module.parallel_env(**kwargs)
    env.reset(seed=3)
    actions = {a: env.action_space(a).sample() for a in env.agents}
    env.step(actions)
    clone = pickle.loads(pickle.dumps(env))
    actions = {a: env.action_space(a).sample() for a in env.agents}
    o1, r1, *_ = env.step(actions)
    o2, r2, *_ = clone.step(actions)
    for a in o1:
        np.testing.assert_allclose(o1[a], o2[a], rtol=1e-6, atol=1e-6)
        assert abs(r1[a] - r2[a]) <= 1e-6 * max(1.0, abs(r1[a]))
    pickle.loads(pickle.dumps(module.env(**kwargs)))
