"""topology-power-v0: PettingZoo conformance, registration, timescales, bad input."""

from __future__ import annotations

import numpy as np
import pettingzoo
import pytest
from pz_conformance import run_all

import ogg_envs
from ogg_envs.envs import topology_power_v0
from ogg_envs.policies.curve import FlatOffer, MarkupBidder, TruthfulBidder

SMALL = dict(horizon=3, market_rounds=2)


def test_pettingzoo_conformance_and_pickling():
    run_all(topology_power_v0, **SMALL)


def test_registered_with_ogg_envs_and_pettingzoo():
    aec = ogg_envs.make("opengridgym/topology-power-v0", **SMALL)
    assert aec.possible_agents == [f"supplier_{i}" for i in range(4)]
    par = pettingzoo.make("parallel", "opengridgym/topology-power-v0", **SMALL)
    assert par.possible_agents == aec.possible_agents
    assert pettingzoo.make("aec", "opengridgym/topology-power-v0", **SMALL) is not None


def test_learners_by_group_and_name():
    env = topology_power_v0.parallel_env(learners=["consumer_3", "substation"], **SMALL)
    assert env.possible_agents == ["substation_0", "consumer_3"]
    with pytest.raises(ValueError, match="neither a group"):
        topology_power_v0.parallel_env(learners=["nobody"])


def test_two_timescales_and_infos():
    env = topology_power_v0.parallel_env(horizon=2, market_rounds=3)
    env.reset(seed=0)
    grid_steps = []
    for _ in range(6):
        acts = {a: TruthfulBidder()(env.participant[a]) for a in env.agents}
        _, rewards, _, trunc, infos = env.step(acts)
        grid_steps.append(infos["supplier_0"]["grid_step"])
        for a in infos:
            assert {"price", "quantity", "profit"} <= set(infos[a])
    assert grid_steps == [False, False, True, False, False, True]
    assert "converged" in infos["supplier_0"] and infos["supplier_0"]["converged"]
    assert all(trunc.values()) and env.agents == []


def test_strategic_suppliers_congest_and_raise_prices():
    """The paper's effect: markups at the evening peak congest the feeder and split prices."""
    from ogg_envs.reproduce.topology_power import clear_at_peak

    for seed in (0, 5):
        truthful = clear_at_peak(TruthfulBidder(), seed=seed)[1]
        markup = clear_at_peak(MarkupBidder(0.6), seed=seed)[1]
        assert not truthful.congested
        assert len({round(p, 3) for p in truthful.prices.values()}) == 1
        assert markup.congested
        assert len({round(p, 2) for p in markup.prices.values()}) >= 2
        assert markup.prices["890"] > truthful.prices["890"]


def test_same_seed_same_trajectory():
    def rollout():
        env = topology_power_v0.parallel_env(**SMALL)
        obs, _ = env.reset(seed=11)
        out = [obs]
        rng = np.random.default_rng(0)
        while env.agents:
            acts = {a: env.action_space(a).low + rng.random(4) * env.action_space(a).high
                    for a in env.agents}
            obs, rew, *_ = env.step(acts)
            out.append((obs, rew))
        return out

    a, b = rollout(), rollout()
    assert str(a) == str(b)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_actions_raise_naming_the_agent_and_lose_nothing(bad):
    env = topology_power_v0.parallel_env(**SMALL)
    env.reset(seed=0)
    acts = {a: env.action_space(a).sample() for a in env.agents}
    acts["supplier_2"] = np.array([5.0, bad, 100.0, 0.0])
    with pytest.raises(ValueError, match="supplier_2"):
        env.step(acts)
    assert env.cycles == 0 and env.agents  # nothing happened
    acts["supplier_2"] = np.array([5.0, 4.0, 100.0, 0.0])
    env.step(acts)
    assert env.cycles == 1


def test_invalid_bids_repaired_or_raised():
    env = topology_power_v0.parallel_env(**SMALL)
    env.reset(seed=0)
    acts = {a: np.array([5.0, 4.0, 100.0, 0.0]) for a in env.agents}
    acts["supplier_1"] = np.array([3.0, 6.0, 100.0, 0.0])  # p_max < p_min
    _, _, _, _, infos = env.step(acts)
    assert infos["supplier_1"]["bid_repairs"] == ["p_max < p_min: swapped"]
    strict = topology_power_v0.parallel_env(invalid_bids="raise", **SMALL)
    strict.reset(seed=0)
    with pytest.raises(ValueError, match="supplier_1"):
        strict.step(acts)
    with pytest.raises(ValueError, match="shape"):
        strict.step(dict(acts, supplier_0=np.zeros(3)))
    with pytest.raises(ValueError, match="unknown agent"):
        strict.step(dict(acts, ghost=np.zeros(4)))


def test_quantities_within_a_nanowatt_of_the_hours_limit_are_not_repaired():
    """A bid's q_max may exceed q_now by 1e-9 kW (rounding); more is clipped to this hour's
    q_now, whichever hour it is."""
    env = topology_power_v0.parallel_env(learners="consumer_0", market_rounds=1, horizon=4)
    raw = env.unwrapped
    env.reset(seed=0)
    seen = set()
    while env.agents:
        q_now = raw.participant["consumer_0"].limits.q_now
        seen.add(q_now)
        within = np.array([15.0, 5.0, q_now + 5e-10, 0.0])
        _, _, _, _, infos = env.step({"consumer_0": within})
        assert "bid_repairs" not in infos["consumer_0"]
        if not env.agents:
            break
        q_now = raw.participant["consumer_0"].limits.q_now
        _, _, _, _, infos = env.step({"consumer_0": np.array([15.0, 5.0, q_now + 1e-6, 0.0])})
        assert infos["consumer_0"]["bid_repairs"] == [
            "clipped into the price band / quantity limit"]
        assert raw.last_clearing.bids[raw.index["consumer_0"]][2] == q_now
    assert len(seen) > 1  # the limit moved between hours


def test_repairs_are_bid_repair_row_by_row():
    """The env repairs every invalid bid of a round at once; each one must be exactly what
    ``Bid.repair`` makes of it (the bid the market cleared), with the same list of fixes."""
    from ogg_envs.markets.curve_market import Bid

    env = topology_power_v0.parallel_env()
    raw = env.unwrapped
    rng = np.random.default_rng(0)
    repaired = 0
    for episode in range(3):
        env.reset(seed=episode)
        while env.agents:
            q_now = {a: raw.participant[a].limits.q_now for a in env.agents}
            acts = {a: rng.uniform(-5, 30, 4) * rng.choice([0.0, 1.0, 10.0], 4)
                    for a in env.agents}
            for k, a in enumerate(env.agents):
                if k % 2:  # quantities near the limit, some just over it
                    acts[a][2:] = rng.uniform(0, 1.2, 2) * q_now[a]
            _, _, _, _, infos = env.step(acts)
            for a in acts:
                bid, fixes = Bid.from_array(acts[a]).repair(a, raw.price_cap, 0.0, q_now[a])
                if fixes:
                    repaired += 1
                    assert infos[a]["bid_repairs"] == fixes
                else:
                    assert "bid_repairs" not in infos[a]
                cleared = raw.last_clearing.bids[raw.index[a]]
                assert np.array_equal(cleared, bid.as_array() if fixes else acts[a])
    assert repaired > 100


def test_render_rgb_array():
    env = topology_power_v0.parallel_env(render_mode="rgb_array", **SMALL)
    env.reset(seed=0)
    env.step({a: env.action_space(a).sample() for a in env.agents})
    img = env.render()
    assert img.ndim == 3 and img.shape[2] == 3


def _documented_observation(env, name: str) -> np.ndarray:
    """The twelve numbers of the module docstring, from the participant's own record."""
    p, cap = env.participant[name], env.price_cap
    t, lim = p.truth, p.limits
    if p.side == "supply":
        sign, c0, c1 = 1.0, t.cost_a, t.cost_a + t.cost_b * lim.q_now
    else:
        sign, c0, c1 = -1.0, t.value_max, t.value_min
    last, k = env.last_clearing, env.index[name]
    price = qty = avg = 0.0
    if last is not None:
        price, qty = last.participant_prices[k], last.participant_quantities[k]
        avg = float(np.mean(last.participant_prices))
    h = env.hour_of(env.t)
    obs = [np.sin(2 * np.pi * h / 24), np.cos(2 * np.pi * h / 24), min(env.t / env.horizon, 1),
           env.round / env.market_rounds, sign, c0 / cap, c1 / cap, lim.q_now / lim.q_max,
           price / cap, qty / lim.q_max, avg / cap, float(env.congested_on_path(name))]
    return np.clip(np.array(obs, dtype=np.float32), -1, 1)


def test_observations_are_the_documented_numbers():
    """Every participant's observation (agents' and scripted ones' alike) is the docstring's
    twelve numbers, round after round, with congestion and across resets (a second reset
    without a step observes the new episode, not the last one)."""
    env = topology_power_v0.parallel_env(learners=["supplier", "consumer_0"], horizon=4)
    raw = env.unwrapped
    congested = 0
    for seed in (0, 1):
        env.reset(seed=seed + 10)
        obs, _ = env.reset(seed=seed)
        fresh = topology_power_v0.parallel_env(learners=["supplier", "consumer_0"], horizon=4)
        first, _ = fresh.reset(seed=seed)
        assert all(np.array_equal(obs[a], first[a]) for a in obs)
        while env.agents:
            for name in raw.names:
                np.testing.assert_allclose(raw.observe(name), _documented_observation(raw, name),
                                           rtol=0, atol=1e-6, err_msg=name)
            for a in env.agents:
                assert np.array_equal(obs[a], raw.observe(a))
            actions = {a: env.action_space(a).sample() for a in env.agents}
            obs = env.step(actions)[0]
            congested += bool(raw.last_clearing.congested)
    assert congested  # the path-congestion entry was exercised


def test_hourly_observation_entries_kept_are_a_first_looks():
    """``observe`` keeps each participant's hourly entries (side, true curve, quantity limit)
    for the hour: round after round, hour after hour and across episodes (new costs, new
    loads) every observation is bit for bit the one of a first look at the hour."""
    env = topology_power_v0.parallel_env(
        learners="supplier", horizon=4,
        scenario={"suppliers": {"cost_noise": 0.3}, "consumers": {"load_noise": 0.2}})
    raw = env.unwrapped
    for seed in (0, 1):
        env.reset(seed=seed)
        while env.agents:
            kept = {name: raw.observe(name) for name in raw.names}
            raw._hourly = (None, None)  # forget them: a first look
            for name in raw.names:
                assert raw.observe(name).tobytes() == kept[name].tobytes(), name
            env.step({a: env.action_space(a).sample() for a in env.agents})


def test_curve_policies_batch_bids_are_their_one_by_one_bids():
    """Every curve policy's ``batch`` returns, row for row, what it returns for each
    participant alone, bit for bit (suppliers, the substation, flexible and inflexible
    consumers), and the environment's ``decode_rows`` what ``decode`` makes of each row."""
    raw = topology_power_v0.raw_env(flexible_share=0.5)
    raw.reset(seed=3)
    parts = raw.participants
    for policy in (TruthfulBidder(), FlatOffer(), FlatOffer(7), MarkupBidder(0.6, 0.25)):
        rows = policy.batch(parts)
        one_by_one = np.array([policy(p) for p in parts])
        assert rows.shape == (len(parts), 4) and np.array_equal(rows, one_by_one), policy
        decoded = raw.decode_rows([p.name for p in parts], rows)
        assert all(np.array_equal(d, raw.decode(p.name, r)) and d.dtype == float
                   for p, d, r in zip(parts, decoded, rows))
    assert raw.decode_rows(["a", "b"], [[1.0, 1.0, 1.0, np.nan], [1.0] * 4]) is None
    assert raw.decode_rows(["a", "b"], np.ones((2, 3))) is None
    assert raw.decode_rows(["a"], np.ones((1, 4), dtype=bool)) is None
    assert raw.decode_rows(["a", "b"], [[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]) is None
    assert raw.decode_rows(["a", "b", "c"], np.ones((2, 4))) is None


def _plain(x):
    """Observations, rewards and infos as plain Python values (arrays as lists)."""
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x.tolist() if isinstance(x, (np.ndarray, np.generic)) else x


def test_a_shared_static_policy_is_asked_once_an_hour_for_everyone_with_the_same_bids():
    """The consumers' default policy is one object (not adaptive: shared by the group), asked
    through ``batch`` once per grid step for all of them; the episode equals one whose
    consumers are asked one by one (a policy without ``batch``), reward for reward. A batch the
    environment cannot decode falls back to asking one by one, whose error names the
    participant."""

    class Counted(TruthfulBidder):
        calls = batches = 0

        def __call__(self, participant, observation=None, info=None):
            Counted.calls += 1
            return super().__call__(participant, observation, info)

        def batch(self, participants):
            Counted.batches += 1
            return super().batch(participants)

    class OneByOne:  # the same bids, no batch
        adaptive = False

        def __call__(self, participant, observation=None, info=None):
            return TruthfulBidder()(participant)

    env = topology_power_v0.parallel_env()
    policies = {p.policy for p in env.unwrapped.participants if p.group == "consumer"}
    assert len(policies) == 1  # one shared default object
    runs = []
    for policy in (Counted(), OneByOne()):
        env = topology_power_v0.parallel_env(policies={"consumer": policy})
        env.reset(seed=4)
        out = []
        while env.agents:
            out.append(_plain(env.step({a: np.full(4, 5.0, dtype=np.float32)
                                        for a in env.agents})))
        runs.append(out)
    assert runs[0] == runs[1]
    assert Counted.batches == env.unwrapped.horizon and Counted.calls == 0

    class Broken(TruthfulBidder):
        def batch(self, participants):
            rows = super().batch(participants)
            rows[3, 0] = np.nan
            return rows

        def __call__(self, participant, observation=None, info=None):
            bid = super().__call__(participant)
            if participant.name == "consumer_3":
                bid[0] = np.nan
            return bid

    env = topology_power_v0.parallel_env(policies={"consumer": Broken()})
    with pytest.raises(ValueError, match="policy of consumer_3 returned an invalid bid"):
        env.reset(seed=0)
        env.step({a: np.full(4, 5.0, dtype=np.float32) for a in env.agents})
