"""Scripted policies the environments use for participants that do not learn, and the
baselines of the leaderboard. Every policy follows ``ogg_envs.api.Policy``::

    action = policy(participant, observation, info)

* ``ogg_envs.policies.curve``: affine-curve bids (topology-power-v0): truthful, flat, markup,
  random;
* ``ogg_envs.policies.blocks``: block offers (dlmp-v0): truthful, markup, random;
* ``ogg_envs.policies.bandits``: UCB, epsilon-greedy and fixed-price bandits, one per P2P role
  (p2p-v0).
"""
