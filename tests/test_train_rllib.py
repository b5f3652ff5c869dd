"""Two-iteration RLlib trainings (multi-agent PPO, one policy per group) on every env.

Skipped unless the ``[rllib]`` extra is installed (``ray[rllib]==2.60.0`` pins
``gymnasium==1.2.2``, so CI installs it in its own virtual environment). Ray writes only under
a temporary folder: ``HOME`` and ``RAY_TMPDIR`` point there before Ray starts.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip(
    "ray.rllib", reason="RLlib is not installed: pip install 'opengridgym[rllib]' (in its own "
    "virtual environment: ray 2.60 pins gymnasium==1.2.2)")

from ogg_envs.baselines import rllib_ppo  # noqa: E402
from ogg_envs.baselines.common import TASKS  # noqa: E402
from ogg_envs.leaderboard.tasks import load_task  # noqa: E402

USER_RAY_RESULTS = Path(os.path.expanduser("~/ray_results"))


@pytest.fixture(scope="module")
def ray_in_tmp(tmp_path_factory):
    import ray

    had_ray_results = USER_RAY_RESULTS.exists()

    root = tmp_path_factory.mktemp("ray")
    saved = {k: os.environ.get(k) for k in ("HOME", "RAY_TMPDIR", "RAY_AUTH_MODE")}
    os.environ.update(HOME=str(root), RAY_TMPDIR=str(root / "tmp"), RAY_AUTH_MODE="disabled")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield root
    ray.shutdown()
    assert had_ray_results or not USER_RAY_RESULTS.exists(), "Ray wrote to ~/ray_results"
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.mark.parametrize("env", list(TASKS))
def test_two_iterations_train_save_and_evaluate(env, ray_in_tmp):
    n_agents = len(load_task(TASKS[env][0]).make_env().possible_agents)
    name = f"run_{env.replace('/', '_')}"
    out = ray_in_tmp / name
    args = rllib_ppo.Args(env=env, timesteps=2 * 144 * n_agents, seed=0, out=str(ray_in_tmp),
                          run_name=name, envs_per_runner=2, quick_eval=True, progress=False,
                          train_batch=144, minibatch=72, num_epochs=1)  # two 72-round episodes
    result = rllib_ppo.run(args)
    assert result["run_dir"] == str(out.resolve())
    t = result["training"]
    assert t["iterations"] == 2 and t["agent_steps"] >= 2 * 144 * n_agents
    assert any((out / "rllib_logs").iterdir())  # RLlib's own log folder, not ~/ray_results
    assert (out / "checkpoint").is_dir() and (out / "learning_curve.png").is_file()
    assert any((out / "tb").glob("events.out.tfevents*"))
    rows = result["evaluation"]
    assert set(rows) == {"ppo", TASKS[env][1]}
    assert all(np.isfinite(r["profit_usd_mean"]) for r in rows.values())


def test_remote_env_runners_do_the_sampling(ray_in_tmp):
    """With two env runners (Ray actors, worker indices 1 and 2), every sampled env step comes
    from them, none from the driver (index 0): counted in each runner by rllib_ppo's
    ``on_sample_end`` callback and added up in RLlib's env-runner metrics."""
    n_agents = len(load_task(TASKS["opengridgym/dlmp-v0"][0]).make_env().possible_agents)
    args = rllib_ppo.Args(env="dlmp", timesteps=144 * n_agents, seed=0, out=str(ray_in_tmp),
                          run_name="two_runners", env_runners=2, envs_per_runner=1, eval=False,
                          progress=False, train_batch=144, minibatch=72, num_epochs=1)
    t = rllib_ppo.run(args)["training"]
    assert t["iterations"] == 1 and t["env_runners"] == 2
    by_runner = t["env_steps_by_runner"]
    assert set(by_runner) == {1, 2}, by_runner
    assert all(steps >= 72 for steps in by_runner.values())  # 144 steps split over the two
    assert t["agent_steps"] == sum(by_runner.values()) * n_agents
