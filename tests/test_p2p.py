"""opengridgym/p2p-v0: conformance, the paper's rules, UCB eq. 11, the feeder check."""

from __future__ import annotations

import copy
import itertools
import math

import numpy as np
import pytest
from pz_conformance import run_all  # tests/ is on sys.path under pytest

from ogg_envs.api import Clearing, InvalidBidError, Market
from ogg_envs.envs import p2p_v0
from ogg_envs.markets.p2p import (
    CONSUMER,
    PRODUCER,
    P2PClearing,
    P2PMarket,
    P2PTerms,
    max_weight_matching,
    negotiation_outcome,
    settle,
    tradable_kwh,
)
from ogg_envs.policies.bandits import (
    UCB,
    EpsilonGreedy,
    FixedPrice,
    RolePolicy,
    make_policy,
)
from ogg_envs.scenario import bundled_dir


def load_scenario(name: str) -> dict:
    """A bundled scenario as the raw TOML dict (to edit in tests)."""
    import tomllib

    return tomllib.loads((bundled_dir() / f"{name}.toml").read_text())

TERMS = P2PTerms(arms=(4, 5, 6, 7, 8, 9, 10, 11), retail_price=12.0, feed_in_price=3.0,
                 imbalance_price=15.0, c_service=0.5, c_lose=1.0)


def small_scenario(n: int = 5, **top) -> dict:
    """The bundled scenario cut to ``n`` prosumers and 3 hours (fast)."""
    sc = load_scenario("p2p")
    pr = {k: (v[:n] if isinstance(v, list) else v) for k, v in sc["prosumers"].items()}
    return {**sc, "horizon": 3, "prosumers": pr, **top}


def grid_case(producers: list[str], consumers: list[str], *, rating_scale: float) -> dict:
    """A one-hour homogeneous case: big PV at ``producers``, pure loads at ``consumers``."""
    sc = load_scenario("p2p")
    buses = producers + consumers
    return {**sc, "start_hour": 12, "horizon": 1,
            "grid": {"rating_scale": rating_scale, "voltage_band": [0.95, 1.05]},
            "background": {"profile": "load_commercial", "scale": 0.0},
            "prosumers": {"buses": buses, "pv_kw": [1000.0] * len(producers) + [0.0] * len(
                consumers), "load_kw": 1.0, "load_profile": "load_residential", "cloud": 0.0,
                "cloud_noise": 0.0, "forecast_error": 0.0, "load_noise": 0.0}}


def run_hour(env, seed: int = 0, producer_arm: int = 0, consumer_arm: int | None = None):
    """Every producer bids ``producer_arm``, every consumer the top arm: all trades succeed."""
    consumer_arm = env.n_arms - 1 if consumer_arm is None else consumer_arm
    env.reset(seed=seed)
    while True:
        acts = {a: producer_arm if env.participant[a].state["role"] == "producer"
                else consumer_arm for a in env.agents}
        obs, rew, term, trunc, infos = env.step(acts)
        if next(iter(infos.values()))["grid_step"]:
            return obs, rew, infos


# ---------------------------------------------------------------- PettingZoo conformance
def test_pettingzoo_conformance_multi_period():
    run_all(p2p_v0, scenario=small_scenario(), negotiation_steps=2)


def test_pettingzoo_conformance_homogeneous_with_scripted_opponents():
    run_all(p2p_v0, scenario=small_scenario(), negotiation_steps=2, mode="homogeneous",
            learners=["prosumer_0", "prosumer_3"], policies={"prosumer": "epsilon_greedy"},
            reveal_opponent_bid=True, curtail_infeasible=True, matching="max_weight")


def test_spaces_and_observation_layout():
    env = p2p_v0.parallel_env(scenario=small_scenario(), negotiation_steps=3)
    obs, infos = env.reset(seed=1)
    for a in env.agents:
        assert env.action_space(a).n == 8
        assert env.observation_space(a).shape == (12,)
        o = obs[a]
        assert o.dtype == np.float32 and env.observation_space(a).contains(o)
        role = env.participant[a].state["role"]
        assert o[0] == (1.0 if role == "producer" else -1.0)
        assert o[1] == float(infos[a]["matched"])
        assert np.all(o[8:] == 0.0)  # no history before the first negotiation step
    wide = p2p_v0.parallel_env(scenario=small_scenario(), reveal_opponent_bid=True)
    assert wide.observation_space("prosumer_0").shape == (13,)


# ---------------------------------------------------------------- the paper's reward rule
@pytest.mark.parametrize("b_p,b_c", [(5.0, 9.0), (7.0, 7.0), (9.0, 5.0), (4.0, 11.0)])
def test_negotiation_outcome_formulas(b_p, b_c):
    ok, r_p, r_c = negotiation_outcome(b_p, b_c, TERMS)
    if b_p <= b_c:
        assert ok and r_p == b_p - 0.5 and r_c == 12.0 - b_p - 0.5
    else:
        assert not ok and r_p == -1.0 and r_c == -1.0


def test_market_rewards_on_hand_made_pairs():
    # prosumers 0, 1 produce; 2, 3, 4 consume; pairs (0, 3) and (1, 2); 4 is unmatched
    mk = P2PMarket(5, TERMS, steps=4)
    roles = np.array([PRODUCER, PRODUCER, CONSUMER, CONSUMER, CONSUMER])
    mk.set_pairs(roles, [0, 1], [3, 2])
    mk.open_grid_step(np.array([2.0, 4.0]))
    arms = np.array([3, 6, 2, 5, 7])  # prices 7, 10, 6, 9, 11
    r = mk.negotiate(arms)
    # pair (0, 3): 7 <= 9 trades at 7; pair (1, 2): 10 > 6 fails; prosumer 4 unmatched
    np.testing.assert_allclose(r, [7 - 0.5, -1.0, -1.0, 12 - 7 - 0.5, 0.0])
    np.testing.assert_allclose(mk.delivered_kwh, [2.0 / 4, 0.0])
    np.testing.assert_allclose(mk.payments, [7 * 2.0 / 4, 0.0])
    assert mk.last_outcome.tolist() == [1, -1, -1, 1, 0]
    r = mk.negotiate(np.array([0, 1, 2, 0, 0]))  # 4 <= 4 trades; 5 <= 6 trades
    np.testing.assert_allclose(r, [3.5, 4.5, 12 - 5 - 0.5, 12 - 4 - 0.5, 0.0])
    np.testing.assert_allclose(mk.delivered_kwh, [1.0, 1.0])
    np.testing.assert_allclose(mk.payments, [(7 + 4) * 0.5, 5 * 1.0])
    np.testing.assert_allclose(mk.success_rate(), [1.0, 0.5, 0.5, 1.0, 0.0])


def test_clear_is_one_negotiation_step_reported_as_a_clearing():
    roles = np.array([PRODUCER, PRODUCER, CONSUMER, CONSUMER, CONSUMER])
    mk, ref = P2PMarket(5, TERMS, steps=4), P2PMarket(5, TERMS, steps=4)
    assert isinstance(mk, Market) and mk.names == [f"prosumer_{i}" for i in range(5)]
    for m in (mk, ref):
        m.set_pairs(roles, [0, 1], [3, 2])
        m.open_grid_step(np.array([2.0, 4.0]))
    arms = np.array([3, 6, 2, 5, 7])  # prices 7, 10, 6, 9, 11: (0, 3) trades at 7, (1, 2) fails
    c = mk.clear(arms)
    assert isinstance(c, P2PClearing) and isinstance(c, Clearing)
    np.testing.assert_array_equal(c.rewards, ref.negotiate(arms))
    assert c.participants == tuple(mk.names) and c.congested == [] and c.congestion_rent == 0
    assert c.traded.tolist() == [True, False, False, True, False]
    assert c.success is c.traded
    np.testing.assert_array_equal(c.bids, [7, 10, 6, 9, 11])
    # the agreed price where traded, else the utility's (feed-in / retail by role)
    np.testing.assert_array_equal(c.participant_prices, [7.0, 3.0, 12.0, 7.0, 12.0])
    np.testing.assert_array_equal(c.participant_quantities, [0.5, 0.0, 0.0, 0.5, 0.0])
    assert c.consumer_surplus == pytest.approx((12 - 7 - 0.5) * 0.5)
    assert c.producer_surplus == pytest.approx((7 - 3 - 0.5) * 0.5)
    assert c.welfare == pytest.approx(c.consumer_surplus + c.producer_surplus + 2 * 0.5 * 0.5)
    assert c.welfare == pytest.approx((12 - 3) * 0.5)  # retail - feed-in per kWh traded
    # the session counters move as with negotiate
    np.testing.assert_allclose(mk.delivered_kwh, ref.delivered_kwh)
    c2 = mk.clear({f"prosumer_{i}": a for i, a in enumerate([0, 1, 2, 0, 0])})
    assert c2.traded.tolist() == [True, True, True, True, False]
    np.testing.assert_array_equal(c2.participant_prices, [4.0, 5.0, 5.0, 4.0, 12.0])
    np.testing.assert_array_equal(c2.participant_quantities, [0.5, 1.0, 1.0, 0.5, 0.0])
    assert c2.welfare == pytest.approx(9.0 * 1.5)
    np.testing.assert_allclose(mk.delivered_kwh, [1.0, 1.0])


def test_clear_rejects_invalid_arms_and_names_the_prosumer():
    mk = P2PMarket(3, TERMS, steps=2, names=["ann", "bob", "cy"])
    assert mk.names == ["ann", "bob", "cy"] and mk.price_cap == 11.0
    mk.set_pairs(np.array([PRODUCER, CONSUMER, CONSUMER]), [0], [1])
    for bad in (8, -1, 2.0, True):
        with pytest.raises(InvalidBidError, match="bob"):
            mk.clear([0, bad, 0])
    with pytest.raises(ValueError, match="expected 3"):
        mk.clear([0, 1])
    with pytest.raises(ValueError, match="no bid from"):
        mk.clear({"ann": 0, "bob": 1})
    assert mk.steps_done == 0  # nothing happened
    assert mk.clear({"ann": 0, "bob": 1, "cy": 7}).participants == ("ann", "bob", "cy")
    with pytest.raises(ValueError, match="names"):
        P2PMarket(2, TERMS, steps=1, names=["x", "x"])


def test_reset_restores_the_fresh_market():
    fresh = P2PMarket(6, TERMS, steps=3, matching="max_weight")
    used = P2PMarket(6, TERMS, steps=3, matching="max_weight")
    rng = np.random.default_rng(2)
    roles = np.array([PRODUCER, CONSUMER] * 3)
    used.match(roles, rng.uniform(0, 5, (2, 6)), rng.uniform(0, 5, (2, 6)), rng)
    used.open_grid_step(np.full(len(used.producers), 2.0))
    used.clear(rng.integers(0, 8, 6))
    used.reset()
    for key in ("roles", "producers", "consumers", "partner", "matched", "quantities",
                "tranche", "bids", "producer_bid", "traded", "_succ", "_paid", "_gain0",
                "_gain1", "_loss"):
        np.testing.assert_array_equal(getattr(used, key), getattr(fresh, key), err_msg=key)
    assert used.steps_done == fresh.steps_done == 0
    arms = rng.integers(0, 8, 6)
    np.testing.assert_array_equal(used.clear(arms).rewards, fresh.clear(arms).rewards)


def test_the_market_has_no_grid_code():
    import ast
    import inspect

    from ogg_envs.grid.trade_feasibility import FeasibilityReport, TradeFeasibility
    from ogg_envs.markets import p2p

    assert TradeFeasibility.__module__ == FeasibilityReport.__module__ == \
        "ogg_envs.grid.trade_feasibility"
    assert not hasattr(p2p, "TradeFeasibility") and not hasattr(p2p, "FeasibilityReport")
    tree = ast.parse(inspect.getsource(p2p))
    imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in imported if "grid" in m or "dss" in m.lower()], imported


def test_env_rewards_match_the_rule_for_every_pair():
    env = p2p_v0.parallel_env(scenario=small_scenario(n=12), mode="homogeneous",
                              negotiation_steps=5)
    env.reset(seed=4)
    rng = np.random.default_rng(0)
    arms = np.array(env.terms.arms)
    checked = 0
    while env.agents:
        acts = {a: int(rng.integers(env.n_arms)) for a in env.agents}
        roles = {a: env.participant[a].state["role"] for a in env.agents}
        _, rew, _, _, infos = env.step(acts)
        for a, info in infos.items():
            if not info["matched"]:
                assert rew[a] == 0.0 and info["quantity"] == 0.0
                continue
            b = info["partner"]
            p, c = (a, b) if roles[a] == "producer" else (b, a)
            b_p, b_c = arms[acts[p]], arms[acts[c]]
            expect = (b_p - 0.5 if a == p else 12 - b_p - 0.5) if b_p <= b_c else -1.0
            assert rew[a] == pytest.approx(expect)
            assert info["success"] == (b_p <= b_c)
            assert info["price"] == (b_p if b_p <= b_c else (3.0 if a == p else 12.0))
            checked += 1
    assert checked > 50


def test_settlement_by_hand():
    # producer 0 sold 2 kWh to consumer 1 for 16 ¢ but its PV gave only 1.5 kWh net;
    # consumer 1 needed 3 kWh; prosumer 2 (unmatched) had 1 kWh spare
    money = settle(3, np.array([0]), np.array([1]), np.array([2.0]), np.array([16.0]),
                   np.array([1.5, -3.0, 1.0]), TERMS)
    np.testing.assert_allclose(money["shortfall_kwh"], [0.5, 0.0, 0.0])
    np.testing.assert_allclose(money["retail_kwh"], [0.0, 1.0, 0.0])
    np.testing.assert_allclose(money["feed_in_kwh"], [0.0, 0.0, 1.0])
    np.testing.assert_allclose(money["bill"], [0.5 * 15 - 16, 16 + 12.0, -3.0])


def test_max_weight_matching_is_optimal():
    rng = np.random.default_rng(3)
    roles = np.array([PRODUCER, CONSUMER, PRODUCER, CONSUMER, CONSUMER, PRODUCER, CONSUMER])
    surplus = rng.uniform(0, 5, (3, 7)) * (roles == PRODUCER)
    deficit = rng.uniform(0, 5, (3, 7)) * (roles == CONSUMER)
    w = tradable_kwh(surplus, deficit)
    prod, cons = max_weight_matching(roles, w)
    assert len(prod) == 3 and set(prod) == {0, 2, 5}
    best = max(sum(w[p, c] for p, c in zip([0, 2, 5], perm))
               for perm in itertools.permutations([1, 3, 4, 6], 3))
    assert w[prod, cons].sum() == pytest.approx(best)


# ---------------------------------------------------------------- bandits
def test_ucb_follows_eq_11_step_by_step():
    """A 4-armed Gaussian bandit: the index and the choice at every step, recomputed."""
    means, delta = np.array([0.2, 0.8, 0.5, 0.75]), 0.1
    noise = np.random.default_rng(7).standard_normal(400)
    ucb = UCB(4, delta=delta)
    counts, sums = [0] * 4, [0.0] * 4
    for t in range(400):
        index = [math.inf if counts[i] == 0 else
                 sums[i] / counts[i] + math.sqrt(2 * math.log(1 / delta) / counts[i])
                 for i in range(4)]
        np.testing.assert_allclose(ucb.index(), index)
        arm = ucb.select()
        assert arm == max(range(4), key=lambda i: (index[i], -i))  # ties: lowest arm
        reward = means[arm] + 0.3 * noise[t]
        ucb.update(arm, reward)
        counts[arm] += 1
        sums[arm] += reward
    assert counts[:4] == ucb.counts.tolist()
    assert np.argmax(counts) == 1  # the best arm is played most


def test_ucb_scale_and_validation():
    wide = UCB(3, delta=0.05, scale=4.0)
    for arm, r in [(0, 1.0), (1, 2.0), (2, 0.0)]:
        wide.update(arm, r)
    np.testing.assert_allclose(wide.index(), [1, 2, 0] + 4 * np.sqrt(2 * np.log(20)))
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError):
            UCB(3, delta=bad)
    with pytest.raises(ValueError):
        wide.update(3, 1.0)
    with pytest.raises(ValueError):
        wide.update(0, float("nan"))
    policy = make_policy("ucb", 8, reward_range=(-1.0, 10.5))
    assert policy.bandits["producer"].scale == pytest.approx(5.75)


def test_random_tie_breaking_tries_every_arm_once():
    ucb = UCB(6)
    rng = np.random.default_rng(0)
    first = []
    for _ in range(6):
        a = ucb.select(rng)
        first.append(a)
        ucb.update(a, 0.0)
    assert sorted(first) == list(range(6)) and first != list(range(6))


def _numpy_select(bandit, rng):
    """A bandit's choice as the whole-array NumPy formulation: untried arms first (at random),
    else the argmax of the UCB index or of the means, ties drawn from ``rng``."""
    counts, sums = bandit.counts, bandit.sums
    if isinstance(bandit, EpsilonGreedy) and rng.random() < bandit.epsilon:
        return int(rng.integers(bandit.n_arms))
    if (counts == 0).any():
        untried = np.flatnonzero(counts == 0)
        return int(untried[rng.integers(len(untried))])
    values = sums / counts
    if isinstance(bandit, UCB):
        values = values + bandit._width / np.sqrt(counts)
    ties = np.flatnonzero(values == values.max())
    return int(ties[0]) if len(ties) == 1 else int(ties[rng.integers(len(ties))])


@pytest.mark.parametrize("make", [lambda: UCB(6, scale=3.0), lambda: EpsilonGreedy(6, 0.2)])
def test_bandit_choices_and_random_draws_equal_the_numpy_formulation(make):
    """Arms, tie draws and the generator's state, bitwise, over a long run whose rewards lie
    on a coarse grid (so that indices tie often); also after a reset."""
    bandit = make()
    rng, ref = np.random.default_rng(11), np.random.default_rng(11)
    rewards = np.random.default_rng(3).integers(-2, 3, 1500) / 2.0
    ties = 0
    for t, r in enumerate(rewards):
        if t == 700:
            bandit.reset()
        expected = _numpy_select(bandit, ref)
        assert bandit.select(rng) == expected, t
        if isinstance(bandit, UCB) and (bandit.counts > 0).all():
            index = bandit.sums / bandit.counts + bandit._width / np.sqrt(bandit.counts)
            np.testing.assert_array_equal(bandit.index(), index)
            ties += (index == index.max()).sum() > 1
        bandit.update(expected, r)
    assert rng.random() == ref.random()
    assert isinstance(bandit, EpsilonGreedy) or ties > 10


def test_epsilon_greedy_and_fixed_price():
    greedy = EpsilonGreedy(3, epsilon=0.0)
    for arm, r in [(0, 1.0), (1, 3.0), (2, 2.0)]:
        assert greedy.select() == arm  # untried arms first
        greedy.update(arm, r)
    assert all(greedy.select() == 1 for _ in range(10))
    explorer = EpsilonGreedy(4, epsilon=1.0, seed=0)
    assert len({explorer.select() for _ in range(200)}) == 4
    fixed = FixedPrice.at_price(TERMS.arms, 8.2)
    assert fixed.arm == 4 and all(fixed.select() == 4 for _ in range(5))
    policy = make_policy({"kind": "fixed", "producer_arm": 6, "consumer_arm": 1}, 8)
    assert isinstance(policy, RolePolicy)

    class P:
        state = {"role": "consumer"}

    assert policy(P()) == 1
    with pytest.raises(ValueError):
        make_policy("softmax", 8)


def test_reservation_bidders_are_asked_once_per_grid_step_with_the_same_outcome():
    """``ReservationBidder`` declares ``adaptive = False``: the environment asks it once per
    grid step, and every reward and info equals asking it every negotiation step."""
    from ogg_envs.policies.p2p import ReservationBidder

    class Counted(ReservationBidder):
        calls = 0

        def __call__(self, participant, observation=None, info=None):
            Counted.calls += 1
            return super().__call__(participant, observation, info)

    class EveryStep(ReservationBidder):
        adaptive = True

    runs = []
    for policy in (Counted(0.2), EveryStep(0.2)):
        env = p2p_v0.parallel_env(scenario=small_scenario(n=6), learners=["prosumer_0"],
                                  policies={"prosumer": policy}, negotiation_steps=4)
        env.reset(seed=1)
        out, bidding = [], 0
        while env.agents:
            if env.round == 0:
                bidding += sum(bool(env.market.matched[k]) for k in range(1, 6))
            out.append(env.step({"prosumer_0": 2})[1:])
        runs.append(out)
    assert runs[0] == runs[1]
    assert 0 < Counted.calls == bidding


def test_scripted_ucb_opponents_learn_and_restart_with_a_seed():
    kw = dict(scenario=small_scenario(n=6), learners=["prosumer_0"], negotiation_steps=4)
    env = p2p_v0.parallel_env(**kw)
    env.reset(seed=2)
    while env.agents:
        env.step({a: 0 for a in env.agents})
    played = sum(int(b.counts.sum()) for p in env.participants[1:]
                 for b in p.policy.bandits.values())
    assert played > 0
    env.reset()  # no seed: they keep learning
    assert sum(int(b.counts.sum()) for p in env.participants[1:]
               for b in p.policy.bandits.values()) == played
    env.reset(seed=2)  # a seed restarts the world
    assert all(b.counts.sum() == 0 for p in env.participants[1:] for b in p.policy.bandits.values())


# ---------------------------------------------------------------- actions
@pytest.mark.parametrize("bad", [2.0, float("nan"), -1, 8, "3", None, True, np.array([1]),
                                 np.float32(1.0)])
def test_invalid_actions_raise_naming_the_agent(bad):
    env = p2p_v0.parallel_env(scenario=small_scenario())
    env.reset(seed=0)
    acts = {a: 0 for a in env.agents}
    acts["prosumer_2"] = bad
    with pytest.raises(ValueError, match="prosumer_2"):
        env.step(acts)
    assert env.cycles == 0  # nothing happened
    acts["prosumer_2"] = np.int64(7)
    acts["prosumer_1"] = np.array(3)
    env.step(acts)
    assert env.cycles == 1


def test_aec_rejects_invalid_action():
    aec = p2p_v0.env(scenario=small_scenario())
    aec.reset(seed=0)
    aec.step(1)
    with pytest.raises(ValueError, match="prosumer_1"):
        for _ in aec.possible_agents[1:]:
            aec.step(1.5 if aec.agent_selection == "prosumer_1" else 1)


# ---------------------------------------------------------------- odd numbers
def test_unmatched_prosumers_trade_with_the_utility():
    sc = grid_case(["848", "844", "840"], ["802", "806"], rating_scale=1.0)
    env = p2p_v0.parallel_env(scenario=sc, mode="homogeneous", fixed_kwh=3.0,
                              negotiation_steps=2, matching="random")
    _, rew, infos = run_hour(env)
    unmatched = [a for a, i in infos.items() if not i["matched"]]
    assert len(unmatched) == 1 and infos[unmatched[0]]["role"] == "producer"
    u = infos[unmatched[0]]
    assert rew[unmatched[0]] == 0.0 and u["traded_kwh"] == 0.0
    assert u["bill"] == pytest.approx(-3.0 * env.terms.feed_in_price)
    for i in infos.values():
        if i["matched"]:
            assert i["traded_kwh"] == pytest.approx(3.0)
    # and the other way round: one consumer too many buys all of it at retail
    sc = grid_case(["848"], ["802", "806"], rating_scale=1.0)
    env = p2p_v0.parallel_env(scenario=sc, mode="homogeneous", fixed_kwh=3.0,
                              negotiation_steps=2)
    _, rew, infos = run_hour(env)
    lone = [i for i in infos.values() if not i["matched"]]
    assert len(lone) == 1 and lone[0]["bill"] == pytest.approx(3.0 * 12.0)


# ---------------------------------------------------------------- the feeder check
def test_trades_that_overload_a_line_are_flagged_and_curtailed():
    # 2 x 1 MW from the far end to the substation's neighbours on lines rated at 5 %
    far, near = ["848", "844"], ["802", "806"]
    kw = dict(mode="homogeneous", fixed_kwh=1000.0, negotiation_steps=2)
    env = p2p_v0.parallel_env(scenario=grid_case(far, near, rating_scale=0.05), **kw)
    _, _, infos = run_hour(env)
    pf = env.last_report.pf_agreed
    reverse = [el for el in pf.thermal_overloads if pf.line_flows_kw[el] < 0]
    assert reverse, "the case must overload lines with reverse flow"
    info = infos["prosumer_0"]
    assert len(info["infeasible_trades"]) == 2 and info["curtailed_trades"] == ()
    assert all(infos[a]["infeasible_trade"] for a in infos)
    assert any(r.startswith("overload") for why in env.last_report.reasons.values()
               for r in why)
    assert info["thermal_overloads"]  # the producer at 848 sees them on its path

    env = p2p_v0.parallel_env(scenario=grid_case(far, near, rating_scale=0.05),
                              curtail_infeasible=True, **kw)
    _, _, infos = run_hour(env)
    rep = env.last_report
    assert len(infos["prosumer_0"]["curtailed_trades"]) == 2 and len(rep.curtailed) == 2
    assert not [el for el in rep.pf.thermal_overloads if rep.pf.line_flows_kw[el] < 0]
    np.testing.assert_allclose(rep.curtailed_kwh, [1000.0, 1000.0, 0.0, 0.0])
    for a in ("prosumer_0", "prosumer_1"):  # producers: nothing sold, nothing fed in
        s = infos[a]["settlement"]
        assert s["p2p_sold_kwh"] == 0.0 and s["feed_in_kwh"] == 0.0
    for a in ("prosumer_2", "prosumer_3"):  # consumers: everything from the utility
        assert infos[a]["settlement"]["retail_kwh"] == pytest.approx(1000.0)


def test_feasible_trades_and_demand_driven_overloads_blame_no_trade():
    # Without load the feeder's capacitors push voltages above the band whatever the trades
    # do: those violations exist without the trades and blame none of them.
    kw = dict(mode="homogeneous", fixed_kwh=100.0, negotiation_steps=2)
    env = p2p_v0.parallel_env(scenario=grid_case(["848", "844"], ["802", "806"],
                                                 rating_scale=1.0), **kw)
    _, _, infos = run_hour(env)
    pf = env.last_report.pf
    assert not pf.thermal_overloads and pf.voltage_violations
    assert infos["prosumer_0"]["infeasible_trades"] == ()
    # producers near the substation, consumers far: forward-flow overloads from demand
    env = p2p_v0.parallel_env(scenario=grid_case(["802", "806"], ["848", "844"],
                                                 rating_scale=0.05), curtail_infeasible=True,
                              **{**kw, "fixed_kwh": 1000.0})
    _, _, infos = run_hour(env)
    pf = env.last_report.pf
    assert pf.thermal_overloads and all(pf.line_flows_kw[el] > 0 for el in pf.thermal_overloads)
    assert infos["prosumer_0"]["infeasible_trades"] == ()
    assert infos["prosumer_0"]["curtailed_trades"] == ()


def test_single_phase_prosumer_bus_is_on_the_feeder():
    """Bus 810 is single-phase (node 2): its generator must be connected there."""
    sc = grid_case(["810"], ["802"], rating_scale=1.0)
    env = p2p_v0.parallel_env(scenario=sc, mode="homogeneous", fixed_kwh=20.0,
                              negotiation_steps=1)
    run_hour(env)
    pf = env.last_report.pf
    assert pf.converged and not any(v < 0.5 for v in pf.voltages_pu.values())


# ---------------------------------------------------------------- determinism
def _trajectory(env, seed: int, steps: int = 40):
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(11)
    out = [np.concatenate([obs[a] for a in env.agents])]
    for _ in range(steps):
        acts = {a: int(rng.integers(env.n_arms)) for a in env.agents}
        obs, rew, _, _, infos = env.step(acts)
        out.append(np.concatenate([obs[a] for a in obs] + [list(rew.values())]
                                  + [[i.get("bill", 0.0) for i in infos.values()]]))
        if not env.agents:
            break
    return out


def test_determinism_under_a_seed():
    kw = dict(scenario=small_scenario(n=7), learners=["prosumer_0", "prosumer_4"],
              negotiation_steps=4)
    a, b = p2p_v0.parallel_env(**kw), p2p_v0.parallel_env(**copy.deepcopy(kw))
    ta, tb = _trajectory(a, 5), _trajectory(b, 5)
    assert len(ta) == len(tb)
    for x, y in zip(ta, tb):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, y) for x, y in zip(ta, _trajectory(a, 6)))
    tc = _trajectory(a, 5)  # the same env, re-seeded, repeats itself
    for x, y in zip(ta, tc):
        np.testing.assert_array_equal(x, y)


# ---------------------------------------------------------------- reproduction
def test_reproduce_runs_and_reports(tmp_path):
    from ogg_envs.reproduce import p2p

    res = p2p.run(tmp_path, steps=2000)
    assert (tmp_path / "p2p.json").is_file()
    assert (tmp_path / "p2p_rewards.png").is_file() and (tmp_path / "p2p_actions.png").is_file()
    assert res["negotiation_steps"] == 2000
    assert 0.0 < res["trade_success_rate"] <= 1.0
    for block in ("first_1000", "last_1000"):
        assert set(res[block]) >= {"success_rate", "producer_mean_reward",
                                   "consumer_mean_reward"}


def test_a_clearing_keeps_its_step_when_later_steps_follow():
    """A clearing's prices, quantities and surpluses are computed on first use: later
    negotiation steps and grid steps must not change them."""
    roles = np.array([PRODUCER, PRODUCER, CONSUMER, CONSUMER, CONSUMER])
    mk = P2PMarket(5, TERMS, steps=4)
    mk.set_pairs(roles, [0, 1], [3, 2])
    mk.open_grid_step(np.array([2.0, 4.0]))
    first = mk.clear(np.array([3, 6, 2, 5, 7]))  # (0, 3) trades at 7, (1, 2) fails
    mk.clear(np.array([0, 1, 2, 0, 0]))  # both trade
    mk.set_pairs(roles, [1], [4])
    mk.open_grid_step(np.array([9.0]))
    mk.clear(np.array([0, 0, 0, 0, 7]))
    np.testing.assert_array_equal(first.participant_prices, [7.0, 3.0, 12.0, 7.0, 12.0])
    np.testing.assert_array_equal(first.participant_quantities, [0.5, 0.0, 0.0, 0.5, 0.0])
    assert first.traded.tolist() == [True, False, False, True, False]
    assert first.welfare == pytest.approx((12 - 3) * 0.5)
    assert first.consumer_surplus == pytest.approx((12 - 7 - 0.5) * 0.5)


# ---------------------------------------------------------------- the vectorised step
def _reference_observation(env, name: str) -> np.ndarray:
    """An agent's observation written out entry by entry from the docstring and the market's
    public views (the env builds all of them at once)."""
    mk, k = env.market, env.index[name]
    top, matched = env.terms.arms[-1], bool(mk.matched[k])
    h = env.hour_of(env.t)
    size = env.fixed_kwh if env.mode == "homogeneous" else max(env.pv_kw[k], env.load_kw[k],
                                                                1e-6)
    if env.mode == "homogeneous":
        now = window = 1.0 if mk.roles[k] == PRODUCER else -1.0
    else:
        start = env.t - env.t % env.periods
        end = min(start + env.periods, env.horizon)
        now = env.forecast_export[env.t, k] / size
        window = env.forecast_export[env.t:end].sum(axis=0)[k] / (env.periods * size)
    row = [float(mk.roles[k]), float(matched), math.sin(2 * math.pi * h / 24),
           math.cos(2 * math.pi * h / 24), env.t / env.horizon, env.round / env.market_rounds,
           min(max(now, -1.0), 1.0), min(max(window, -1.0), 1.0), 0.0, 0.0, 0.0, 0.0]
    if mk.steps_done and matched:
        pair = int(np.flatnonzero((mk.producers == k) | (mk.consumers == k))[0])
        row[8] = mk.last_bid[k] / top
        row[9] = float(mk.last_outcome[k])
        row[10] = mk.last_price[k] / top if mk.traded[k] else 0.0
        row[11] = mk.successes[pair] / mk.steps_done
    if env.reveal:
        j = mk.partner[k]
        row.append(mk.last_bid[j] / top if mk.steps_done and matched else 0.0)
    return np.array(row, dtype=np.float32)


def _reference_step_info(env, name: str, roles, partner, clearing) -> dict:
    """A step's info from the pairs before the step and the step's clearing (a grid step
    opens the next hour before the infos are returned)."""
    k = env.index[name]
    matched, ok = bool(partner[k] >= 0), bool(clearing.traded[k])
    return {"role": "producer" if roles[k] == PRODUCER else "consumer", "matched": matched,
            "partner": env.names[partner[k]] if matched else None,
            "bid": float(clearing.bids[k]) if matched else None, "success": ok,
            "price": float(clearing.participant_prices[k]),
            "quantity": float(clearing.participant_quantities[k])}


@pytest.mark.parametrize("kw", [
    dict(negotiation_steps=4),
    dict(mode="homogeneous", reveal_opponent_bid=True, negotiation_steps=3,
         learners=["prosumer_0", "prosumer_3", "prosumer_5"]),
])
def test_observations_and_infos_equal_an_agent_by_agent_formulation(kw):
    """Every observation entry and every info of full episodes, bitwise, against the
    docstring's definitions evaluated one agent at a time on the market's public views."""
    env = p2p_v0.parallel_env(scenario=small_scenario(n=7), **kw)
    rng = np.random.default_rng(4)
    for seed in (0, 1):
        obs, _ = env.reset(seed=seed)
        steps = grid_steps = 0
        while env.agents:
            for a in env.agents:
                np.testing.assert_array_equal(obs[a], _reference_observation(env, a), err_msg=a)
            roles, partner = env.market.roles.copy(), env.market.partner.copy()
            obs, rew, _, _, infos = env.step({a: int(rng.integers(env.n_arms))
                                              for a in env.agents})
            steps += 1
            for a, info in infos.items():
                ref = _reference_step_info(env, a, roles, partner, env.last_clearing)
                assert {key: info[key] for key in ref} == ref, (a, info)
            if next(iter(infos.values()))["grid_step"]:
                grid_steps += 1
                money, rep = env.last_settlement, env.last_report
                pairs = [(env.names[p], env.names[c]) for p, c in zip(env.market.producers,
                                                                      env.market.consumers)]
                for a, info in infos.items():
                    k = env.index[a]
                    assert info["settlement"] == {key: float(v[k]) for key, v in money.items()}
                    assert info["bill"] == float(money["bill"][k])
                    assert info["traded_kwh"] == float(money["p2p_sold_kwh"][k]
                                                       + money["p2p_bought_kwh"][k])
                    assert info["infeasible_trades"] == tuple(pairs[i] for i in rep.infeasible)
                    assert info["infeasible_trade"] == any(a in pairs[i] for i in rep.infeasible)
        assert grid_steps == env.horizon and steps == env.horizon * env.market_rounds


def test_the_feeder_holds_the_dispatch_the_grid_step_wrote():
    """The grid layer writes loads and generators through the engine's C functions directly:
    read back through opendssdirect, every load and generator holds the value set."""
    env = p2p_v0.parallel_env(scenario=small_scenario(n=7), negotiation_steps=2)
    run_hour(env, seed=3)
    grid, dss = env.grid, env.grid.dss
    kw = grid.load_kw
    with np.errstate(divide="ignore", invalid="ignore"):  # kvar at the base power factor
        kvar = kw * np.where(grid.base_load_kw > 0, grid.base_load_kvar / grid.base_load_kw, 0)
    assert not np.array_equal(kw, grid.base_load_kw), "the case must change the loads"
    for i, name in enumerate(grid.load_names, start=1):
        dss.Loads.Idx(i)
        assert dss.Loads.Name().lower() == name
        assert (dss.Loads.kW(), dss.Loads.kvar()) == (kw[i - 1], kvar[i - 1])
    gen = grid.generator_kw
    assert any(v > 0 for v in gen.values()), "the case must write some generator"
    for i, name in enumerate(grid.generator_names, start=1):
        dss.Generators.Idx(i)
        assert dss.Generators.Name().lower() == name and dss.Generators.kW() == gen[name]


@pytest.mark.parametrize("make", [lambda: UCB(4, scale=2.0), lambda: EpsilonGreedy(4, 0.0)])
def test_bandit_history_is_read_only_and_set_as_if_played(make):
    """``counts``/``sums`` cannot be written into (UCB keeps its index from them); a history
    set with ``set_history`` selects exactly as the same rounds played through ``update``."""
    played, warm = make(), make()
    for arm, reward in [(0, 1.0), (1, 0.5), (1, 2.0), (2, -1.0), (3, 0.25), (0, 0.5)]:
        played.update(arm, reward)
    with pytest.raises(ValueError, match="read-only"):
        played.counts[0] = 5
    with pytest.raises(ValueError, match="read-only"):
        played.sums[:] = 0.0
    warm.set_history(played.counts, played.sums)
    assert warm.t == played.t == 6
    np.testing.assert_array_equal(warm.means, played.means)
    if isinstance(played, UCB):
        np.testing.assert_array_equal(warm.index(), played.index())
    rng_a, rng_b = np.random.default_rng(1), np.random.default_rng(1)
    for reward in np.random.default_rng(2).normal(size=50):
        arm = played.select(rng_a)
        assert warm.select(rng_b) == arm
        played.update(arm, reward)
        warm.update(arm, reward)
    for counts, sums, match in [([1, 2], [0.0, 1.0], "one entry per arm"),
                                ([1, -1, 0, 0], [0.0] * 4, "non-negative"),
                                ([1, 0, 0, 0], [0.0, 3.0, 0.0, 0.0], "never played")]:
        with pytest.raises(ValueError, match=match):
            warm.set_history(counts, sums)


def test_a_step_decodes_its_arms_at_once_as_decode_does_and_names_a_bad_one():
    """``decode_rows`` (a parallel step's actions at once) gives exactly ``decode``'s ints for
    Python and NumPy int64 arms in range, and None for anything else, where ``decode`` then
    accepts (other integer types, 0-d arrays) or names the agent (floats, bools, out of
    range) before anything changes. Other integer types step exactly like int arms."""
    raw = p2p_v0.raw_env()
    raw.reset(seed=0)
    agents = raw.agents
    arms = [k % raw.n_arms for k in range(len(agents))]
    for kind in (int, np.int64):
        given = [kind(a) for a in arms]
        decoded = raw.decode_rows(agents, given)
        assert decoded == [raw.decode(a, x) for a, x in zip(agents, given)]
        assert all(type(d) is int for d in decoded)
    for odd in (np.int32(1), np.array(1), True, 1.0, raw.n_arms, -1):
        assert raw.decode_rows(agents, [*arms[:-1], odd]) is None, odd
    assert raw.decode_rows([], []) == []
    twins = [p2p_v0.parallel_env() for _ in range(2)]
    for env in twins:
        env.reset(seed=4)
    for step in range(15):
        out = [env.step({a: kind(a_) for a, a_ in zip(env.agents, arms)})
               for env, kind in zip(twins, (int, np.int32))]
        assert repr(out[0]) == repr(out[1]), step
        arms = arms[1:] + arms[:1]
    env = twins[0]
    for bad in (2.0, True, raw.n_arms, -1, "1"):
        acts = {a: np.int64(0) for a in env.agents}
        acts[env.agents[5]] = bad
        cycles = env.unwrapped.cycles
        with pytest.raises(ValueError, match=env.agents[5]):
            env.step(acts)
        assert env.unwrapped.cycles == cycles


def test_round_infos_end_with_grid_step_as_the_core_would_add_it():
    """Every round's infos end with ``"grid_step"``: False, until the round that ends a grid
    step (True, where the round's infos had it)."""
    env = p2p_v0.parallel_env()
    env.reset(seed=1)
    rounds = env.unwrapped.market_rounds
    for step in range(2 * rounds):
        _, _, _, _, infos = env.step({a: 3 for a in env.agents})
        final = (step + 1) % rounds == 0
        for info in infos.values():
            assert info["grid_step"] is final
            if not final:
                assert list(info)[-1] == "grid_step"
            else:
                assert list(info).index("grid_step") == 7  # where the round's infos had it
