"""``opengridgym train ENV --backend sb3|rllib --algo ppo --timesteps N --seed S --out DIR``.

Dispatches to the training scripts of ``ogg_envs.baselines`` (each also runs on its own:
``python -m ogg_envs.baselines.sb3_ppo --help``). ``ENV`` is any registered environment id
(``opengridgym/topology-power-v0``, a user's environment registered by an ``--import``ed
module), its short name (``topology-power``, ``p2p``, ``dlmp``) or a leaderboard task id;
``ogg_envs.baselines.sb3_ppo.resolve_env`` finds its task and baseline.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["train", "SCRIPTS"]

SCRIPTS = {  # (backend, algo) -> module of ogg_envs.baselines with run(env, timesteps, seed, out)
    ("sb3", "ppo"): "sb3_ppo",
    ("rllib", "ppo"): "rllib_ppo",
}


def train(env_id: str, backend: str = "sb3", algo: str = "ppo", timesteps: int = 50_000,
          seed: int = 0, out: str | Path = "runs") -> dict:
    """Train ``algo`` with ``backend`` on ``env_id`` into ``out/<backend>_<algo>_<env>_s<seed>``.

    Returns the script's result (training statistics and the evaluation against the
    baseline).
    """
    import importlib

    from ogg_envs.baselines.sb3_ppo import env_key

    key = (backend.lower(), algo.lower())
    if key not in SCRIPTS:
        raise ValueError(f"no trainer for backend {backend!r} with algo {algo!r}; available: "
                         f"{', '.join(f'{b}/{a}' for b, a in SCRIPTS)}")
    module = importlib.import_module(f"ogg_envs.baselines.{SCRIPTS[key]}")
    name = env_key(env_id)
    run_dir = Path(out) / f"{key[0]}_{key[1]}_{name}_s{seed}"
    result = module.run(env_id, timesteps=timesteps, seed=seed, out=str(run_dir))
    print(f"{backend}/{algo} on {name}: results in {run_dir}")
    return result
