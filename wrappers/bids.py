"""Normalised actions that are valid bids by construction.

The raw action of ``topology-power-v0`` is a bid quadruple ``(p_max, p_min, q_max, q_min)`` in
¢/kWh and kW; most points of its ``Box`` are invalid bids (``p_max < p_min``, ``q_min >
q_max``, a quantity above what the participant has this hour) that the environment repairs or
rejects. ``normalized_bids_v0(env)`` replaces it with ``Box(-1, 1, (4,))`` whose **every point
is a valid bid**. With ``u = (a + 1) / 2`` in ``[0, 1]^4``::

    p_min = price_cap * u0                    0 <= p_min <= price_cap
    p_max = p_min + (price_cap - p_min) * u1  p_min <= p_max <= price_cap
    q_max = q_now * u2                        0 <= q_max <= q_now (this hour's limit)
    q_min = q_max * u3                        0 <= q_min <= q_max

``q_now`` is read from the participant when the round executes, so a consumer's bid follows
its hourly load. ``q_min < q_max`` everywhere except on the faces ``u3 = 1`` (an inelastic bid,
which the market defines) and ``u2 = 0`` (offer nothing). The map is onto the valid bids and
one-to-one inside the box; ``encode`` is its inverse (for logging, or to express a scripted
bid in the normalised space): ``decode(encode(bid)) == bid`` for every valid bid.

``dlmp-v0``'s action is ``n_blocks`` block prices of a cost curve (any order). The wrapper
gives ``Box(-1, 1, (n_blocks,))`` mapped onto **non-decreasing** prices in ``[0, price_cap]``
(a convex cost curve), which removes the symmetry of unsorted offers::

    p_0 = price_cap * u0,   p_k = p_(k-1) + (price_cap - p_(k-1)) * u_k

Bandit arms (``p2p-v0``, ``Discrete(n)``) pass through unchanged. A trainer that needs one
action type for every agent can use ``arms_as_box_v0``: ``Discrete(n)`` becomes ``Box(-1, 1,
(1,))`` cut into ``n`` equal bins (bin k -> arm k), and SuperSuit's ``pad_action_space_v0``
then pads every agent to the largest Box (a padded agent ignores the extra entries). For
parameter sharing over agents with different observations, compose with SuperSuit's
``pad_observations_v0`` and ``agent_indicator_v0(env, type_only=True)`` (the type is the name
prefix: ``supplier``, ``consumer``, ``generator``, ``dr``, ``prosumer``). All observations of
the OpenGridGym environments are already normalised to ``[-1, 1]``.

Which parametrisation an environment gets is its registered spec's ``codec``
(``ogg_envs.register(..., codec=...)``): ``"curve"`` (the quadruple above, any market whose bid
is that curve: a user's environment too), ``"blocks"`` (block prices; the env's ``rules`` give
``price_cap`` and ``n_blocks``), None (actions pass through) or a callable ``codec(env, agent)``
returning an object with ``size``, ``decode(action, q_now, who)`` and ``encode(raw, q_now)``.
``q_now`` is ``env.participant[agent].limits.q_now``.

Actions outside the box are clipped into it (PPO samples from an unbounded Gaussian); NaN or
inf raise ``ValueError`` naming the agent. The wrappers work on parallel environments and on
AEC environments (e.g. ``ogg_envs.make(id)``), and compose with SuperSuit's wrappers in either
order (they find the market through ``env.unwrapped``).
"""

from __future__ import annotations

import math

import gymnasium
import numpy as np
from pettingzoo import AECEnv, ParallelEnv
from pettingzoo.utils.wrappers import BaseParallelWrapper, BaseWrapper

__all__ = ["CurveBidCodec", "BlockPriceCodec", "ArmCodec", "normalized_bids_v0",
           "arms_as_box_v0", "codec_for", "CODECS"]


def _unit(action, size: int, who: str) -> list[float]:
    """A normalised action as ``u = (a + 1) / 2`` in [0, 1], checked and clipped to the box:
    Python floats (a training step decodes a few short actions per agent, and numpy's cost per
    call outweighs the arithmetic; the same IEEE operations, so the same numbers)."""
    if type(action) is np.ndarray and action.shape == (size,):
        values = action.tolist()  # (float32 -> the same value as a Python float)
    else:
        a = np.asarray(action, dtype=float).reshape(-1)
        if a.shape != (size,):
            raise ValueError(f"{who}: normalised action must have shape ({size},), got "
                             f"{np.shape(action)}")
        values = a.tolist()
    if not all(map(math.isfinite, values)):
        raise ValueError(f"{who}: action has non-finite numbers {values}")
    return [(min(max(v, -1.0), 1.0) + 1.0) / 2.0 for v in values]


def _from_unit(u) -> np.ndarray:
    return (2.0 * np.clip(np.asarray(u, dtype=float), 0.0, 1.0) - 1.0).astype(np.float32)


def _share(part: float, whole: float) -> float:
    """``part / whole`` in [0, 1]; 0 when ``whole`` is 0 (the share is then irrelevant)."""
    return min(max(part / whole, 0.0), 1.0) if whole > 0 else 0.0


class CurveBidCodec:
    """Box(-1, 1, (4,)) <-> bid quadruple ``(p_max, p_min, q_max, q_min)`` (module docstring)."""

    size = 4

    def __init__(self, price_cap: float):
        if not price_cap > 0:
            raise ValueError(f"price_cap must be > 0, got {price_cap}")
        self.price_cap = float(price_cap)

    def decode(self, action, q_now: float, who: str = "agent") -> np.ndarray:
        u = _unit(action, 4, who)
        cap = self.price_cap
        p_min = cap * u[0]
        # min() only guards the last floating-point ulp; mathematically p_max <= cap already.
        p_max = min(p_min + (cap - p_min) * u[1], cap)
        q_max = max(float(q_now), 0.0) * u[2]
        q_min = q_max * u[3]
        return np.array([p_max, p_min, q_max, q_min])

    def encode(self, bid, q_now: float) -> np.ndarray:
        p_max, p_min, q_max, q_min = np.asarray(bid, dtype=float)
        cap = self.price_cap
        return _from_unit([p_min / cap, _share(p_max - p_min, cap - p_min),
                           _share(q_max, q_now), _share(q_min, q_max)])


class BlockPriceCodec:
    """Box(-1, 1, (n,)) <-> non-decreasing block prices in ``[0, price_cap]``."""

    def __init__(self, price_cap: float, n_blocks: int):
        if not price_cap > 0 or int(n_blocks) < 1:
            raise ValueError("price_cap must be > 0 and n_blocks >= 1")
        self.price_cap, self.size = float(price_cap), int(n_blocks)

    def decode(self, action, q_now: float | None = None, who: str = "agent") -> np.ndarray:
        u = _unit(action, self.size, who)
        prices = np.empty(self.size)
        prev = 0.0
        for k in range(self.size):
            prev = min(prev + (self.price_cap - prev) * u[k], self.price_cap)
            prices[k] = prev
        return prices

    def encode(self, prices, q_now: float | None = None) -> np.ndarray:
        prices = np.sort(np.asarray(prices, dtype=float).reshape(-1))
        u, prev = [], 0.0
        for p in prices:
            u.append(_share(p - prev, self.price_cap - prev))
            prev = p
        return _from_unit(u)


class ArmCodec:
    """Box(-1, 1, (1,)) <-> arm index of ``Discrete(n)``: n equal bins, bin k -> arm k."""

    size = 1

    def __init__(self, n: int):
        self.n = int(n)

    def decode(self, action, q_now: float | None = None, who: str = "agent") -> int:
        u = _unit(np.asarray(action, dtype=float).reshape(-1)[:1], 1, who)[0]
        return min(int(u * self.n), self.n - 1)

    def encode(self, arm: int, q_now: float | None = None) -> np.ndarray:
        return _from_unit([(int(arm) + 0.5) / self.n])


def _curve(rules: dict) -> CurveBidCodec:
    return CurveBidCodec(rules["price_cap"])


def _blocks(rules: dict) -> BlockPriceCodec:
    return BlockPriceCodec(rules["price_cap"], rules["n_blocks"])


# A spec's codec name -> the codec, from the environment's public rules (``env.rules``).
CODECS = {"curve": _curve, "blocks": _blocks}


def codec_for(env, agent: str):
    """The codec of ``agent``'s raw action in ``env`` (an OpenGridGym env, wrapped or not), from
    the ``codec`` of its registered spec (``ogg_envs.register``): ``"curve"`` ->
    ``CurveBidCodec(price_cap)``, ``"blocks"`` -> ``BlockPriceCodec(price_cap, n_blocks)``, a
    callable -> ``codec(env, agent)``; None (the action passes through) for a spec without a
    codec and for ``Discrete`` actions (bandit arms)."""
    from ogg_envs.registry import spec_of

    raw = getattr(env, "unwrapped", env)
    codec = spec_of(raw).codec
    if callable(codec):
        return codec(raw, agent)
    if codec is None or isinstance(raw.action_space(agent), gymnasium.spaces.Discrete):
        return None
    if codec not in CODECS:
        raise ValueError(f"normalized_bids_v0: unknown codec {codec!r} of "
                         f"{spec_of(raw).id} (known: {', '.join(CODECS)}, None or a callable "
                         "codec(env, agent))")
    return CODECS[codec](raw.rules)


def _q_now(env, agent: str) -> float:
    """The participant's public limit this hour (what a curve bid's quantities scale to)."""
    return env.participant[agent].limits.q_now


class _ActionMap:
    """What both wrapper flavours share: the codecs, the cached spaces, decode/encode."""

    def _setup(self, codecs: dict) -> None:
        self._codecs = codecs
        self._market = self.env.unwrapped  # (each wrapper layer's property costs a call)
        self._spaces = {
            a: (gymnasium.spaces.Box(-1.0, 1.0, (c.size,), np.float32) if c is not None
                else self.env.action_space(a))
            for a, c in codecs.items()
        }

    def to_raw(self, agent: str, action):
        """The environment's action (a bid in physical units, or an arm) for ``action``."""
        codec = self._codecs[agent]
        if codec is None:
            return action
        return codec.decode(action, _q_now(self._market, agent), who=agent)

    def to_normalized(self, agent: str, raw_action) -> np.ndarray:
        """The inverse of ``to_raw``, with the participant's current limit (for logging)."""
        codec = self._codecs[agent]
        if codec is None:
            return raw_action
        return codec.encode(raw_action, _q_now(self._market, agent))


class _ParallelActions(_ActionMap, BaseParallelWrapper):
    def __init__(self, env: ParallelEnv, make_codec):
        super().__init__(env)
        self.metadata = env.metadata
        self._setup({a: make_codec(env.unwrapped, a) for a in env.possible_agents})

    def action_space(self, agent):
        return self._spaces[agent]

    def step(self, actions):
        raw = {a: self.to_raw(a, act) for a, act in actions.items()}
        return self.env.step(raw)


class _AECActions(_ActionMap, BaseWrapper):
    def __init__(self, env: AECEnv, make_codec):
        super().__init__(env)
        self._setup({a: make_codec(env.unwrapped, a) for a in env.possible_agents})

    def action_space(self, agent):
        return self._spaces[agent]

    def step(self, action):
        agent = self.agent_selection
        if action is not None and not (self.terminations.get(agent)
                                       or self.truncations.get(agent)):
            action = self.to_raw(agent, action)
        self.env.step(action)


def _wrap(env, make_codec):
    if isinstance(env, ParallelEnv):
        return _ParallelActions(env, make_codec)
    if isinstance(env, AECEnv):
        return _AECActions(env, make_codec)
    raise TypeError(f"expected a PettingZoo ParallelEnv or AECEnv, got {type(env).__name__}")


def normalized_bids_v0(env):
    """Bid quadruples and cost-curve prices as ``Box(-1, 1, (k,))``, valid by construction;
    bandit arms unchanged. See the module docstring."""
    return _wrap(env, codec_for)


def arms_as_box_v0(env):
    """``Discrete(n)`` arms as ``Box(-1, 1, (1,))`` (n equal bins); other agents unchanged."""

    def make_codec(market, agent):
        space = market.action_space(agent)
        return ArmCodec(space.n) if isinstance(space, gymnasium.spaces.Discrete) else None

    return _wrap(env, make_codec)
