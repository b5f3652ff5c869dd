"""ogg_envs.wrappers: valid-by-construction bids, inverses, conformance, Gymnasium views."""

from __future__ import annotations

import pickle
import warnings

import gymnasium
import numpy as np
import pytest
from pettingzoo.test import api_test, parallel_api_test
from pettingzoo.utils.conversions import parallel_to_aec

import ogg_envs
from ogg_envs.markets.curve_market import Bid
from ogg_envs.wrappers import (
    GYM_IDS,
    ArmCodec,
    BlockPriceCodec,
    CurveBidCodec,
    arms_as_box_v0,
    no_infos_v0,
    normalized_bids_v0,
)

RNG_POINTS = 20_000


def _points(rng, size, n=RNG_POINTS):
    """Random points of the box, with a share exactly on its faces and corners."""
    a = rng.uniform(-1.0, 1.0, (n, size))
    a[: n // 4] = rng.choice([-1.0, 0.0, 1.0], (n // 4, size))
    return a.astype(np.float32)


# ---------------------------------------------------------------------- codecs
@pytest.mark.parametrize("cap,q_now", [(20.0, 2000.0), (30.0, 0.37), (7.5, 0.0)])
def test_every_normalised_point_is_a_valid_bid(cap, q_now):
    codec = CurveBidCodec(cap)
    for a in _points(np.random.default_rng(0), 4):
        bid = codec.decode(a, q_now)
        # Bid.check raises for anything the market would reject or repair.
        Bid.from_array(bid).check("t", cap, 0.0, q_now)
        assert bid[2] >= bid[3]


def test_curve_bid_strict_quantity_inside_the_box():
    codec = CurveBidCodec(20.0)
    a = np.random.default_rng(1).uniform(-0.999, 0.999, (2000, 4))
    bids = np.array([codec.decode(x, 100.0) for x in a])
    assert (bids[:, 2] > bids[:, 3]).all()
    assert (bids[:, 0] >= bids[:, 1]).all()


def test_curve_bid_inverse_round_trips():
    codec = CurveBidCodec(20.0)
    rng = np.random.default_rng(2)
    # action -> bid -> action, inside the box (where the map is one-to-one)
    for a in rng.uniform(-0.99, 0.99, (2000, 4)):
        np.testing.assert_allclose(codec.encode(codec.decode(a, 500.0), 500.0), a, atol=1e-5)
    # valid bid -> action -> the same bid, including degenerate bids
    for _ in range(2000):
        p = np.sort(rng.uniform(0, 20.0, 2))[::-1]
        q = np.sort(rng.uniform(0, 500.0, 2))[::-1]
        bid = np.array([p[0], p[1], q[0], q[1]])
        if rng.random() < 0.2:
            bid[1] = bid[0]  # flat
        if rng.random() < 0.2:
            bid[3] = bid[2]  # inelastic
        np.testing.assert_allclose(codec.decode(codec.encode(bid, 500.0), 500.0), bid,
                                   rtol=1e-5, atol=1e-3)


def test_the_map_is_onto_the_truthful_bid():
    """The truthful supplier bid is reachable (encode then decode gives it back)."""
    codec = CurveBidCodec(20.0)
    truthful = np.array([3.0 + 0.005 * 2000, 3.0, 2000.0, 0.0])
    np.testing.assert_allclose(codec.decode(codec.encode(truthful, 2000.0), 2000.0), truthful,
                               atol=1e-3)


def test_block_prices_valid_monotone_and_invertible():
    codec = BlockPriceCodec(30.0, 3)
    rng = np.random.default_rng(3)
    for a in _points(rng, 3):
        p = codec.decode(a)
        assert ((0.0 <= p) & (p <= 30.0)).all() and (np.diff(p) >= 0).all()
    for a in rng.uniform(-0.99, 0.99, (2000, 3)):
        np.testing.assert_allclose(codec.encode(codec.decode(a)), a, atol=1e-5)
    for _ in range(500):
        prices = rng.uniform(0, 30.0, 3)
        np.testing.assert_allclose(codec.decode(codec.encode(prices)), np.sort(prices),
                                   atol=1e-3)


def test_arm_codec_covers_every_arm_equally():
    codec = ArmCodec(8)
    arms = [codec.decode([x]) for x in np.linspace(-1, 1, 8001)]
    counts = np.bincount(arms, minlength=8)
    assert counts.min() > 0 and counts.max() - counts.min() <= 2
    assert [codec.decode(codec.encode(k)) for k in range(8)] == list(range(8))


def test_decoding_is_the_documented_map_bit_for_bit():
    """The codecs decode in Python floats; every number equals the module docstring's map
    computed with numpy arrays, to the bit, out-of-box, float32, list and ±0 inputs too."""
    rng = np.random.default_rng(7)
    faces = np.array([-1.0, 1.0, 0.0, -0.0, 1.5, -1.5, 1e-300, np.nextafter(1.0, 2.0),
                      np.nextafter(-1.0, -2.0), 0.9999999999999999])
    cap, curve, blocks = 30.0, CurveBidCodec(30.0), BlockPriceCodec(30.0, 5)
    for i in range(6000):
        size = 4 if i % 2 else 5
        a = rng.uniform(-1.3, 1.3, size) if i % 3 else rng.choice(faces, size)
        a = a.astype(np.float32) if i % 5 == 0 else (list(a) if i % 7 == 0 else a)
        u = (np.clip(np.asarray(a, dtype=float), -1.0, 1.0) + 1.0) / 2.0
        if size == 4:
            q_now = float(rng.choice([0.0, 123.4, rng.uniform(0.0, 500.0)]))
            p_min = cap * u[0]
            q_max = q_now * u[2]
            expected = np.array([min(p_min + (cap - p_min) * u[1], cap), p_min, q_max,
                                 q_max * u[3]])
            got = curve.decode(a, q_now)
        else:
            expected, prev = np.empty(5), np.float64(0.0)
            for k in range(5):
                expected[k] = prev = min(prev + (cap - prev) * u[k], cap)
            got = blocks.decode(a)
        assert got.dtype == np.float64 and got.tobytes() == expected.tobytes(), (a, got)


def test_non_finite_actions_raise_naming_the_agent():
    with pytest.raises(ValueError, match="supplier_1"):
        CurveBidCodec(20.0).decode([0.0, np.nan, 0.0, 0.0], 10.0, who="supplier_1")
    with pytest.raises(ValueError, match="shape"):
        BlockPriceCodec(30.0, 3).decode([0.0, 0.0])


# ---------------------------------------------------------------------- wrapped envs
def test_wrapped_env_never_repairs_a_bid():
    """Random normalised actions, consumers included: the env never has to repair."""
    par = normalized_bids_v0(ogg_envs.make("opengridgym/topology-power-v0", parallel=True,
                                           learners=["supplier", "consumer"], horizon=4,
                                           invalid_bids="raise"))
    rng = np.random.default_rng(4)
    obs, _ = par.reset(seed=4)
    steps = 0
    while par.agents:
        actions = {a: _points(rng, 4, 1)[0] for a in par.agents}
        expected = {a: par.to_raw(a, act) for a, act in actions.items()}
        obs, _, _, _, infos = par.step(actions)
        steps += 1
        for a, info in infos.items():
            assert "bid_repairs" not in info
            np.testing.assert_array_equal(info["bid"], expected[a])  # used as decoded
    assert steps == 12


@pytest.mark.parametrize("env_id", list(ogg_envs.ENVIRONMENTS))
def test_wrapped_envs_pass_pettingzoo_api_tests(env_id):
    par = normalized_bids_v0(ogg_envs.make(env_id, parallel=True, horizon=2))
    parallel_api_test(par, num_cycles=10)
    api_test(parallel_to_aec(normalized_bids_v0(ogg_envs.make(env_id, parallel=True,
                                                              horizon=2))), num_cycles=10)
    api_test(normalized_bids_v0(ogg_envs.make(env_id, horizon=2)), num_cycles=10)
    for agent in par.possible_agents:
        space = par.action_space(agent)
        assert space is par.action_space(agent)
        if isinstance(space, gymnasium.spaces.Box):
            assert (space.low == -1).all() and (space.high == 1).all()


@pytest.mark.parametrize("env_id", list(ogg_envs.ENVIRONMENTS))
def test_no_infos_changes_nothing_but_the_infos(env_id):
    """Observations, rewards, terminations and truncations are the environment's, step for
    step; every info is a new empty dict; conformance and pickling hold."""
    plain = normalized_bids_v0(ogg_envs.make(env_id, parallel=True, horizon=3))
    bare = normalized_bids_v0(no_infos_v0(ogg_envs.make(env_id, parallel=True, horizon=3)))
    (obs_p, info_p), (obs_b, info_b) = plain.reset(seed=3), bare.reset(seed=3)
    assert info_b == {a: {} for a in info_p} and any(info_p.values())
    rng, steps = np.random.default_rng(3), 0
    while plain.agents:
        for a in plain.agents:
            np.testing.assert_array_equal(obs_b[a], obs_p[a])
        actions = {a: (rng.uniform(-1, 1, plain.action_space(a).shape).astype(np.float32)
                       if isinstance(plain.action_space(a), gymnasium.spaces.Box)
                       else int(rng.integers(plain.action_space(a).n))) for a in plain.agents}
        *out_p, info_p = plain.step(actions)
        *out_b, info_b = bare.step(actions)
        obs_p, obs_b = out_p[0], out_b[0]
        assert out_b[1:] == out_p[1:]  # rewards, terminations, truncations
        assert set(info_b) == set(info_p) and not any(info_b.values())
        assert len({id(i) for i in info_b.values()}) == len(info_b)  # one dict per agent
        steps += 1
    assert steps > 0 and bare.agents == []
    parallel_api_test(no_infos_v0(ogg_envs.make(env_id, parallel=True, horizon=2)),
                      num_cycles=10)
    api_test(parallel_to_aec(no_infos_v0(ogg_envs.make(env_id, parallel=True, horizon=2))),
             num_cycles=10)
    again = pickle.loads(pickle.dumps(bare))
    assert again.reset(seed=3)[1] == {a: {} for a in again.agents}
    with pytest.raises(TypeError, match="parallel"):
        no_infos_v0(ogg_envs.make(env_id, horizon=2))


def test_composes_with_supersuit_for_a_common_space():
    ss = pytest.importorskip("supersuit")
    par = ogg_envs.make("opengridgym/topology-power-v0", parallel=True,
                        learners=["supplier", "consumer_0"], horizon=2)
    wrapped = ss.agent_indicator_v0(ss.pad_observations_v0(normalized_bids_v0(par)),
                                    type_only=True)
    spaces = [wrapped.observation_space(a) for a in wrapped.possible_agents]
    assert all(s == spaces[0] for s in spaces) and spaces[0].shape == (14,)  # 12 + 2 types
    parallel_api_test(wrapped, num_cycles=5)
    # p2p arms as a Box, padded to the quadruple's size: one action type for everyone
    p2p = ss.pad_action_space_v0(arms_as_box_v0(ogg_envs.make("opengridgym/p2p-v0",
                                                               parallel=True, horizon=1)))
    assert all(p2p.action_space(a) == gymnasium.spaces.Box(-1, 1, (1,), np.float32)
               for a in p2p.possible_agents)
    parallel_api_test(p2p, num_cycles=5)


# ---------------------------------------------------------------------- Gymnasium views
@pytest.mark.parametrize("gym_id", list(GYM_IDS))
def test_gymnasium_views_pass_check_env(gym_id):
    from gymnasium.utils.env_checker import check_env

    env = gymnasium.make(gym_id, horizon=2)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*RGB-array rendering.*")
        check_env(env.unwrapped)
    sb3 = pytest.importorskip("stable_baselines3.common.env_checker")
    sb3.check_env(gymnasium.make(gym_id, horizon=2).unwrapped, warn=True)
    obs, _ = env.reset(seed=1)
    assert env.observation_space.contains(obs)
    n, done = 0, False
    while not done:
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert isinstance(reward, float) and not terminated
        done, n = truncated, n + 1
    assert n == env.unwrapped.market.max_cycles


def test_gymnasium_view_others_follow_baselines():
    env = gymnasium.make("opengridgym/TopologyPower-Supplier-v0", agent="supplier_1")
    market = env.unwrapped.market
    assert market.possible_agents == ["supplier_1"]
    with pytest.raises(ValueError, match="learners"):
        gymnasium.make("opengridgym/TopologyPower-Supplier-v0", learners="supplier")


# ---------------------------------------------------------------------- registered user envs
@pytest.fixture
def user_env():
    """topology-power-v0's module registered again under a user id, with a Gymnasium view."""
    import pettingzoo

    env_id, gym_id = "test/wrapped-copy-v0", "test/WrappedCopy-Supplier-v0"
    spec = ogg_envs.register(env_id, "ogg_envs.envs.topology_power_v0", codec="curve",
                             policies=ogg_envs.spec("opengridgym/topology-power-v0").policies,
                             gym_views={gym_id: {"agent": "supplier_1", "horizon": 2}},
                             replace=True)
    yield spec, gym_id
    ogg_envs.ENVIRONMENTS.pop(env_id, None)
    pettingzoo.aec_registry.pop(env_id, None)
    pettingzoo.parallel_registry.pop(env_id, None)
    gymnasium.registry.pop(gym_id, None)


def test_a_registered_user_env_gets_normalized_bids_and_a_view(user_env):
    from ogg_envs.wrappers import codec_for, register_gymnasium_envs

    spec, gym_id = user_env
    par = normalized_bids_v0(ogg_envs.make(spec.id, parallel=True, horizon=2,
                                           invalid_bids="raise"))
    codec = codec_for(par, "supplier_0")
    assert isinstance(codec, CurveBidCodec) and codec.price_cap == par.unwrapped.rules[
        "price_cap"]
    parallel_api_test(par, num_cycles=10)
    api_test(normalized_bids_v0(ogg_envs.make(spec.id, horizon=2)), num_cycles=10)
    register_gymnasium_envs()
    view = gymnasium.make(gym_id)
    assert view.unwrapped.market.possible_agents == ["supplier_1"]
    assert view.action_space == gymnasium.spaces.Box(-1, 1, (4,), np.float32)


def test_baseline_returns_use_the_policy_signature():
    from ogg_envs.policies.curve import truthful_bid
    from ogg_envs.wrappers.single_agent import baseline_returns

    view = gymnasium.make("opengridgym/TopologyPower-Supplier-v0", horizon=2)
    first = baseline_returns(view, [0, 1])
    assert first == baseline_returns(view, [0, 1]) and all(np.isfinite(first))
    market = view.unwrapped.market
    market.reset(seed=0)
    total = 0.0
    while market.agents:  # the truthful supplier, by hand
        _, rewards, _, _, _ = market.step({"supplier_3": truthful_bid(
            market.participant["supplier_3"])})
        total += rewards["supplier_3"]
    assert first[0] == pytest.approx(total)
