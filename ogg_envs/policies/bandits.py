"""Bandit bidders for the peer-to-peer market (p2p-v0): UCB, ε-greedy and a fixed-price rule.

Each class is a plain multi-armed bandit over ``n_arms`` price arms (``select`` an arm,
``update`` it with the reward) and can be used on its own::

    from ogg_envs.policies.bandits import UCB
    ucb = UCB(n_arms=8, delta=0.05)
    arm = ucb.select()
    ucb.update(arm, reward)

In p2p-v0 a prosumer is a producer in some grid steps and a consumer in others, and the two
roles are different games. ``RolePolicy`` therefore keeps one bandit per role and is what the
environment runs for participants that are not learning agents (and what
``ogg_envs.reproduce.p2p`` attaches to every agent). Its interface is the environment's policy
protocol (``ogg_envs.api.Policy``): ``policy(participant, observation, info) -> arm`` reads
the role from ``participant.state["role"]`` (``"producer"`` or ``"consumer"``), and
``policy.update(participant, arm, reward, info)`` feeds back the reward of that negotiation
step. The same object works as a leaderboard entry for one agent.

Ties between arms with the same index (including the arms never tried, whose index is
infinite) are broken uniformly at random with the ``rng`` given to ``select``; without an
``rng`` they go to the lowest arm (the lowest price) and UCB is fully deterministic. Random
tie-breaking matters when many bandits learn against each other: with lowest-first ties every
bandit would try the arms in the same order at the same time. The environment passes its own
seeded generator.
"""

from __future__ import annotations

import copy
import math

import numpy as np

__all__ = ["UCB", "EpsilonGreedy", "FixedPrice", "RolePolicy", "make_policy", "ROLES"]

ROLES = ("producer", "consumer")


def _read_only(a: np.ndarray) -> np.ndarray:
    view = a.view()
    view.flags.writeable = False
    return view


def _check_arms(n_arms) -> int:
    if isinstance(n_arms, bool) or not isinstance(n_arms, (int, np.integer)) or n_arms < 1:
        raise ValueError(f"n_arms must be a positive integer, got {n_arms!r}")
    return int(n_arms)


class _Bandit:
    """Counts and empirical means shared by the bandits below.

    ``counts`` and ``sums`` (plays and summed rewards per arm) are read-only views: the
    bandits keep what they derive from them (UCB's index) up to date in ``update``, so history
    changes through ``update``, or through ``set_history`` (e.g. a bandit warm-started from
    earlier rounds), never by writing into the arrays.
    """

    def __init__(self, n_arms: int):
        self.n_arms = _check_arms(n_arms)
        self.reset()

    def reset(self) -> None:
        self._counts = np.zeros(self.n_arms, dtype=np.int64)  # T_i(t-1)
        self._sums = np.zeros(self.n_arms)
        self.t = 0  # rounds played
        self._next_untried = 0  # arms 0..n-1 are first played in order

    @property
    def counts(self) -> np.ndarray:
        """How often each arm was played (read-only)."""
        return _read_only(self._counts)

    @property
    def sums(self) -> np.ndarray:
        """The summed rewards of each arm (read-only)."""
        return _read_only(self._sums)

    def set_history(self, counts, sums) -> None:
        """Start from ``counts`` plays and ``sums`` summed rewards per arm (``t`` becomes
        their total), as if those rounds had been played through ``update``."""
        counts = np.array(counts, dtype=float).reshape(-1)
        sums = np.array(sums, dtype=float).reshape(-1)
        if counts.shape != (self.n_arms,) or sums.shape != (self.n_arms,):
            raise ValueError(f"counts and sums need one entry per arm ({self.n_arms}), got "
                             f"{counts.shape} and {sums.shape}")
        if not ((counts >= 0).all() and (counts == np.round(counts)).all()
                and np.isfinite(sums).all()):
            raise ValueError("counts must be non-negative integers and sums finite, got "
                             f"{counts.tolist()} and {sums.tolist()}")
        if (sums[counts == 0] != 0).any():
            raise ValueError("an arm never played has no rewards: sums must be 0 where "
                             "counts are")
        self.reset()
        self._counts[:] = counts.astype(np.int64)
        self._sums[:] = sums
        self.t = int(self._counts.sum())
        for arm in np.flatnonzero(self._counts).tolist():
            self._played(arm)

    @property
    def means(self) -> np.ndarray:
        """Empirical mean reward of every arm (NaN for an arm never played)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self._counts > 0, self._sums / np.maximum(self._counts, 1), np.nan)

    def update(self, arm: int, reward: float) -> None:
        arm = int(arm)
        if not 0 <= arm < self.n_arms:
            raise ValueError(f"arm {arm} out of range [0, {self.n_arms})")
        reward = float(reward)
        if not math.isfinite(reward):
            raise ValueError(f"reward must be finite, got {reward!r}")
        self._counts[arm] += 1
        self._sums[arm] += reward
        self.t += 1
        self._played(arm)

    def _played(self, arm: int) -> None:
        """``arm``'s counts or sums changed: refresh what is derived from them."""

    def _untried(self, rng: np.random.Generator | None) -> int | None:
        """An arm never played (the lowest, or a random one with ``rng``), or None."""
        while self._next_untried < self.n_arms and self._counts[self._next_untried] > 0:
            self._next_untried += 1
        if self._next_untried == self.n_arms:
            return None
        if rng is None:
            return self._next_untried
        untried = np.flatnonzero(self._counts == 0)
        return int(untried[rng.integers(len(untried))])

    @staticmethod
    def _argmax(values: list[float], rng: np.random.Generator | None) -> int:
        """Index of the largest value; ties to the lowest, or at random with ``rng``.

        ``values`` is a list: for a handful of arms, Python's ``max`` is several times faster
        than NumPy's, and a bandit selects in every negotiation step."""
        top = max(values)
        best = values.index(top)
        if rng is None or values.count(top) == 1:
            return best
        ties = [i for i, v in enumerate(values) if v == top]
        return ties[rng.integers(len(ties))]


class UCB(_Bandit):
    """Upper confidence bound with confidence level δ (the paper's eq. 11).

    At round t the bandit plays ``argmax_i UCB_i(t-1, δ)`` with::

        UCB_i(t-1, δ) = +inf                                         if T_i(t-1) = 0
                      = mu_i(t-1) + scale * sqrt(2 log(1/δ) / T_i(t-1))   otherwise

    where ``T_i(t-1)`` is how often arm i was played in the first t-1 rounds and ``mu_i(t-1)``
    the mean of its rewards. ``scale`` (default 1, the paper's form) is the sub-Gaussian scale
    of the rewards; raise it for rewards much larger than 1. An arm never tried has an infinite
    index, so every arm is played once before the bound is used.
    """

    def __init__(self, n_arms: int, delta: float = 0.05, scale: float = 1.0):
        delta, scale = float(delta), float(scale)
        if not 0.0 < delta < 1.0:
            raise ValueError(f"delta must be in (0, 1), got {delta}")
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be a positive number, got {scale}")
        self.delta, self.scale = delta, scale
        self._width = scale * math.sqrt(2.0 * math.log(1.0 / delta))
        super().__init__(n_arms)

    def reset(self) -> None:
        super().reset()
        # UCB_i of every arm, kept by ``update``: only the played arm's index changes.
        self._index = [math.inf] * self.n_arms

    def _played(self, arm: int) -> None:
        n = int(self._counts[arm])
        self._index[arm] = float(self._sums[arm]) / n + self._width / math.sqrt(n)

    def index(self) -> np.ndarray:
        """UCB_i(t-1, δ) of every arm (``inf`` for arms never played)."""
        return np.array(self._index)

    def select(self, rng: np.random.Generator | None = None) -> int:
        arm = self._untried(rng)
        if arm is not None:
            return arm
        return self._argmax(self._index, rng)


class EpsilonGreedy(_Bandit):
    """ε-greedy: with probability ``epsilon`` a uniformly random arm, else the best mean.

    Arms never played count as best (each is played once before the rule applies).
    Exploration draws from the ``rng`` given to ``select`` or, standalone, from the bandit's own
    generator (``seed``); ties go to the lowest arm only when no ``rng`` is given.
    """

    def __init__(self, n_arms: int, epsilon: float = 0.1, seed: int | None = None):
        epsilon = float(epsilon)
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
        self.epsilon = epsilon
        self._rng = np.random.default_rng(seed)
        super().__init__(n_arms)

    def select(self, rng: np.random.Generator | None = None) -> int:
        if self.epsilon > 0:
            gen = rng if rng is not None else self._rng
            if gen.random() < self.epsilon:
                return int(gen.integers(self.n_arms))
        arm = self._untried(rng)
        if arm is not None:
            return arm
        return self._argmax((self._sums / self._counts).tolist(), rng)


class FixedPrice(_Bandit):
    """The fixed-price rule: always bid the same arm (it still records its rewards)."""

    def __init__(self, n_arms: int, arm: int):
        n_arms = _check_arms(n_arms)
        if isinstance(arm, bool) or not isinstance(arm, (int, np.integer)) \
                or not 0 <= arm < n_arms:
            raise ValueError(f"arm must be an integer in [0, {n_arms}), got {arm!r}")
        self.arm = int(arm)
        super().__init__(n_arms)

    @classmethod
    def at_price(cls, arms, price: float) -> FixedPrice:
        """The arm whose price is closest to ``price`` (``arms``: the prices, ¢/kWh)."""
        arms = np.asarray(arms, dtype=float)
        return cls(len(arms), int(np.argmin(np.abs(arms - float(price)))))

    def select(self, rng: np.random.Generator | None = None) -> int:
        return self.arm


class RolePolicy:
    """One bandit per role: the environment's policy for a non-learning prosumer.

    ``RolePolicy(producer=UCB(8), consumer=UCB(8))``; called as
    ``policy(participant, observation, info)`` it selects with the bandit of the participant's
    role this hour (``participant.state["role"]``), breaking ties with ``info["rng"]``;
    ``update(participant, arm, reward, info)`` updates that bandit.
    """

    def __init__(self, producer: _Bandit, consumer: _Bandit):
        if producer is consumer:
            raise ValueError("producer and consumer need separate bandit objects")
        if producer.n_arms != consumer.n_arms:
            raise ValueError("both roles must have the same number of arms")
        self.bandits = {"producer": producer, "consumer": consumer}
        self.n_arms = producer.n_arms

    def __call__(self, participant, observation=None, info=None) -> int:
        return self.bandits[participant.state["role"]].select((info or {}).get("rng"))

    def update(self, participant, arm: int, reward: float, info=None) -> None:
        self.bandits[participant.state["role"]].update(arm, reward)

    def reset(self) -> None:
        for bandit in self.bandits.values():
            bandit.reset()


_KINDS = ("ucb", "epsilon_greedy", "fixed")


def make_policy(spec, n_arms: int, reward_range: tuple[float, float] | None = None) -> RolePolicy:
    """A fresh ``RolePolicy`` from a specification.

    ``spec`` is one of:

    * ``"ucb"``, ``"epsilon_greedy"``, ``"fixed"`` (defaults: δ = 0.05; ε = 0.1; the middle
      arm for both roles). For UCB without an explicit ``scale``, a given ``reward_range``
      ``(lo, hi)`` sets ``scale = (hi - lo) / 2``, the sub-Gaussian scale of rewards bounded in
      that range (eq. 11 as printed assumes scale 1, i.e. rewards of unit spread);
    * a dict with ``"kind"`` and the class's arguments, e.g. ``{"kind": "ucb", "delta": 0.01}``,
      ``{"kind": "fixed", "producer_arm": 5, "consumer_arm": 7}``;
    * a callable ``factory(n_arms) -> RolePolicy``;
    * a ``RolePolicy`` instance, which is deep-copied (every participant learns on its own).
    """
    n_arms = _check_arms(n_arms)
    if isinstance(spec, RolePolicy):
        if spec.n_arms != n_arms:
            raise ValueError(f"policy has {spec.n_arms} arms, the market has {n_arms}")
        return copy.deepcopy(spec)
    if isinstance(spec, str):
        spec = {"kind": spec}
    if isinstance(spec, dict):
        kw = dict(spec)
        kind = kw.pop("kind", None)
        if kind == "ucb":
            if reward_range is not None and "scale" not in kw:
                lo, hi = reward_range
                if not hi > lo:
                    raise ValueError(f"reward_range must have hi > lo, got {reward_range}")
                kw["scale"] = (hi - lo) / 2.0
            return RolePolicy(UCB(n_arms, **kw), UCB(n_arms, **kw))
        if kind == "epsilon_greedy":
            return RolePolicy(EpsilonGreedy(n_arms, **kw), EpsilonGreedy(n_arms, **kw))
        if kind == "fixed":
            mid = (n_arms - 1) // 2
            prod, cons = kw.pop("producer_arm", mid), kw.pop("consumer_arm", mid)
            if kw:
                raise ValueError(f"fixed policy: unknown arguments {sorted(kw)}")
            return RolePolicy(FixedPrice(n_arms, prod), FixedPrice(n_arms, cons))
        raise ValueError(f"unknown policy kind {kind!r}; valid: {', '.join(_KINDS)}")
    if callable(spec):
        policy = spec(n_arms)
        if not (callable(policy) and hasattr(policy, "update")):
            raise ValueError("a policy factory must return an object with __call__ and update")
        return policy
    raise ValueError(f"cannot make a policy from {spec!r}; use one of {', '.join(_KINDS)}, a "
                     "dict with 'kind', a factory or a RolePolicy")
