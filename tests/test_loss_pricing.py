"""Loss-aware prices (issue #11 item 3): the markets' lossy balance (``set_losses``), the price
decomposition energy + loss + congestion (+ voltage), the settlement identity, and the core's
``loss_pricing`` option.

The loss models are real: marginal loss factors of an OpenDSS solution of the environment's
own feeder and dispatch (IEEE 34 for the curve market, IEEE 37 for the DLMP markets).
"""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest

import ogg_envs
from ogg_envs.api import LossModel, MarketContext
from ogg_envs.grid.loss_factors import marginal_loss_factors
from ogg_envs.markets.curve_market import Bid, CurveMarket, MarketParticipant
from ogg_envs.policies.curve import MarkupBidder

CURVE = "opengridgym/topology-power-v0"
DLMP = "opengridgym/dlmp-v0"


def solved_case(env_id: str, hours: int, **kw):
    """An env after ``hours`` grid steps of scripted bids; the loss model of its last AC
    solution (the engine's last solve) as ``(lf, L0, p0)``, and the DLMP context of that
    hour (None for other markets)."""
    env = ogg_envs.make(env_id, parallel=True, market_rounds=1, learners=[], **kw)
    env.reset(seed=0)
    ctx = None
    for _ in range(hours):
        ctx = env.context() if hasattr(env, "context") else None
        env.run_round({})
    pf = env.last_power_flow
    loss = (marginal_loss_factors(env.grid, pf), pf.losses_kw, env.grid.net_injection_kw())
    return env, loss, ctx


@pytest.fixture(scope="module")
def curve_case():
    """topology-power on a congested hour (DGs marking up: the substation feeds 852r-832)."""
    env, loss, _ = solved_case(CURVE, 12, policies={"supplier": MarkupBidder(markup=2.0)})
    assert env.last_clearing.congested
    assert np.abs(loss[0]).max() > 0.05  # losses worth pricing
    return env, env.last_clearing.bids.copy(), loss


@pytest.fixture(scope="module", params=["dc", "lindistflow"])
def dlmp_case(request):
    env, loss, ctx = solved_case(DLMP, 12, formulation=request.param)
    return env, env.last_clearing.bids.copy(), ctx, loss


def fresh(market):
    """An independent copy of an environment's market (lossless, its limits)."""
    m = copy.deepcopy(market)
    m.reset()
    return m


def components_sum(res, price):
    total = sum(res.price_components.values())
    np.testing.assert_allclose(total, price, rtol=0, atol=1e-9)


# ---------------------------------------------------------------------- the lossless limit
def test_zero_losses_reproduce_the_lossless_clearings(curve_case, dlmp_case):
    env, bids, (lf, _, p0) = curve_case
    plain = fresh(env.market).clear(bids)
    m = fresh(env.market)
    m.set_losses(np.zeros_like(lf), 0.0, p0)
    zero = m.clear(bids)
    for f in ("bus_prices", "participant_quantities", "flows"):  # bit for bit
        np.testing.assert_array_equal(getattr(zero, f), getattr(plain, f))
    assert zero.congested == plain.congested and zero.welfare == plain.welfare
    assert zero.loss_surplus == 0.0 and zero.losses_kw == 0.0
    np.testing.assert_array_equal(zero.price_components["loss"], 0.0)
    components_sum(plain, plain.bus_prices)

    env, offers, ctx, (lf, _, p0) = dlmp_case
    plain = fresh(env.market).clear(offers, ctx)
    m = fresh(env.market)
    m.set_losses(np.zeros_like(lf), 0.0, p0)
    zero = m.clear(offers, ctx)
    for f in ("dlmp", "participant_quantities", "flows_kw", "shed_kw"):  # solver tolerance
        np.testing.assert_allclose(getattr(zero, f), getattr(plain, f), rtol=0, atol=1e-9)
    assert zero.loss_surplus == 0.0 and zero.losses_kw == pytest.approx(0.0, abs=1e-12)
    components_sum(plain, plain.dlmp)


def test_reset_and_none_return_to_the_lossless_market(curve_case, dlmp_case):
    env, bids, loss = curve_case
    m = fresh(env.market)
    plain = m.clear(bids)
    m.set_losses(*loss)
    assert m.losses is not None
    assert not np.array_equal(m.clear(bids).bus_prices, plain.bus_prices)
    m.reset()
    assert m.losses is None
    np.testing.assert_array_equal(m.clear(bids).bus_prices, plain.bus_prices)

    env, offers, ctx, loss = dlmp_case
    m = fresh(env.market)
    plain = m.clear(offers, ctx)
    for undo in (m.reset, lambda: m.set_losses(None)):
        m.set_losses(*loss)
        assert m.clear(offers, ctx).losses_kw > 0
        undo()
        assert m.losses is None
        np.testing.assert_allclose(m.clear(offers, ctx).dlmp, plain.dlmp, rtol=0, atol=1e-12)


# ---------------------------------------------------------------------- curve market
def test_curve_market_lossy_balance_and_decomposition(curve_case):
    env, bids, (lf, L0, p0) = curve_case
    m = fresh(env.market)
    m.set_losses(lf, L0, p0)
    res = m.clear(bids)
    parts = res.price_components
    components_sum(res, res.bus_prices)
    energy = parts["energy"][0]
    np.testing.assert_allclose(parts["loss"], -lf * energy, rtol=0, atol=1e-12)
    assert parts["loss"].max() > 0.05 * energy  # downstream a kW costs its losses too
    # The dispatch's injections, rebuilt from the quantities, balance to the linear losses.
    topo = m.topology
    sign = np.where(m.is_supply, 1.0, -1.0)
    bus = np.array([topo.bus_index[p.bus] for p in m.participants])
    p = np.bincount(bus, sign * res.participant_quantities, minlength=len(topo.buses))
    assert p.sum() == pytest.approx(L0 + lf @ (p - p0), abs=1e-6)
    assert res.losses_kw == pytest.approx(p.sum(), abs=1e-6)


def test_curve_market_fast_path_equals_the_cvxpy_statement_with_losses(curve_case):
    env, bids, loss = curve_case
    m = fresh(env.market)
    m.set_losses(*loss)
    fast = m.clear(bids)
    ref = m.clear_cvxpy(bids, regularised=True)
    np.testing.assert_allclose(fast.bus_prices, ref.bus_prices, rtol=0, atol=1e-4)
    np.testing.assert_allclose(fast.participant_quantities, ref.participant_quantities,
                               rtol=0, atol=1e-2)
    for key in ("energy", "loss", "congestion"):
        np.testing.assert_allclose(fast.price_components[key], ref.price_components[key],
                                   rtol=0, atol=1e-4)
    assert fast.losses_kw == pytest.approx(ref.losses_kw, abs=1e-3)
    assert fast.congested == ref.congested


def test_curve_market_prices_are_finite_differences_of_welfare_with_losses(curve_case):
    """A probe of inelastic demand valued at 0 at bus b: welfare falls by the price of b per
    kW (the probe's own losses included)."""
    env, bids, loss = curve_case
    topo = env.topology
    probe_buses = [b for b in topo.buses[1:] if topo.bus_index[b] % 4 == 0]
    parts = list(env.market.participants) + [MarketParticipant(f"probe_{b}", b, "demand")
                                             for b in probe_buses]
    m = CurveMarket(topo, parts, price_cap=env.market.price_cap,
                    price_floor=env.market.price_floor, formulation="dense")
    m.set_limits(env.market.limits_kw)
    m.set_losses(*loss)
    base = {n: Bid.from_array(bids[k]) for k, n in enumerate(env.market.names)}
    zero = {f"probe_{b}": Bid.inelastic(5.0, 0.0) for b in probe_buses}
    res = m.clear({**base, **zero})
    h = 0.5
    spread = []
    for b in probe_buses:
        w = [m.clear({**base, **zero, f"probe_{b}": Bid.inelastic(5.0 + s, 0.0)}).welfare
             for s in (h, -h)]
        fd = -(w[0] - w[1]) / (2 * h)
        assert res.prices[b] == pytest.approx(fd, abs=2e-3), b
        spread.append(res.price_components["loss"][topo.bus_index[b]])
    assert max(spread) - min(spread) > 0.05  # the probes see different loss parts


def test_curve_market_settlement_identity(curve_case):
    """payments - revenues = congestion rent (sum of binding limits x their shadow prices,
    from the CVXPY statement's duals) + loss surplus (energy x (lf . p - L(p)))."""
    env, bids, (lf, L0, p0) = curve_case
    m = fresh(env.market)
    m.set_losses(lf, L0, p0)
    res = m.clear(bids)
    ref = m.clear_cvxpy(bids, regularised=True)
    c = m.cvxpy_problem()
    lim = c["limits"].value
    rent = float((np.asarray(c["upper"].dual_value) + np.asarray(c["lower"].dual_value)) @ lim)
    assert rent > 1.0  # congested
    assert ref.congestion_rent == pytest.approx(rent, rel=1e-3)
    assert res.congestion_rent == pytest.approx(rent, rel=1e-3)
    topo = m.topology
    bus = np.array([topo.bus_index[p.bus] for p in m.participants])
    p = np.bincount(bus, np.where(m.is_supply, 1.0, -1.0) * res.participant_quantities,
                    minlength=len(topo.buses))
    energy = res.price_components["energy"][0]
    surplus = energy * (lf @ p - (L0 + lf @ (p - p0)))
    assert res.loss_surplus == pytest.approx(surplus, rel=1e-6)
    assert res.loss_surplus > 0  # marginal losses over-collect the average ones
    assert res.consumer_payments - res.producer_revenue == pytest.approx(
        res.congestion_rent + res.loss_surplus, rel=1e-9)
    assert res.welfare == pytest.approx(res.consumer_surplus + res.producer_surplus
                                        + res.congestion_rent + res.loss_surplus, rel=1e-9)


def test_curve_market_flow_formulation_refuses_losses():
    from ogg_envs.grid import Branch, Topology

    topo = Topology("root", [Branch("root-a", "root", "a", (), np.inf)])
    m = CurveMarket(topo, [MarketParticipant("s", "root", "supply"),
                           MarketParticipant("d", "a", "demand")], formulation="flow")
    with pytest.raises(ValueError, match="formulation='dense'"):
        m.set_losses([0.0, -0.1], 1.0)
    assert m.losses is None


# ---------------------------------------------------------------------- DLMP markets
def central_difference(market, offers, ctx, b, delta=1e-3):
    """d(optimal cost)/d(demand at b), or None where the cost has a kink (degenerate)."""
    costs = []
    for step in (-delta, 0.0, delta):
        demand = ctx.demand_kw.copy()
        demand[b] += step
        c = MarketContext(demand_kw=demand, capacity_kw=ctx.capacity_kw,
                          source_price=ctx.source_price, pv_kw=ctx.pv_kw)
        costs.append(market.clear(offers, c).cost)
    backward, forward = (costs[1] - costs[0]) / delta, (costs[2] - costs[1]) / delta
    if abs(forward - backward) > 1e-6 * max(1.0, abs(forward)):
        return None
    return (costs[2] - costs[0]) / (2 * delta)


def test_dlmp_lossy_prices_are_marginal_costs_and_decompose(dlmp_case):
    env, offers, ctx, (lf, L0, p0) = dlmp_case
    m = fresh(env.market)
    m.set_losses(lf, L0, p0)
    res = m.clear(offers, ctx)
    components_sum(res, res.dlmp)
    energy = res.energy
    np.testing.assert_allclose(res.price_components["loss"], -lf * energy, rtol=0, atol=1e-12)
    np.testing.assert_allclose(res.price_components["congestion"], res.congestion, atol=0)
    topo = m.topology
    checked = 0
    for bus in env.load_buses:
        b = topo.bus_index[bus]
        fd = central_difference(m, offers, ctx, b)
        if fd is not None:
            price = res.load_price[b] if hasattr(res, "load_price") else res.dlmp[b]
            assert price == pytest.approx(fd, rel=1e-6, abs=1e-6), bus
            checked += 1
    assert checked >= 0.8 * len(env.load_buses)
    assert res.price_components["loss"].max() > 0.02 * energy
    # The source imports the net demand less the resources' kW, plus the linearised losses.
    net = (ctx.demand_kw - ctx.pv_kw).sum() - res.shed_kw.sum() + res.curtailed_kw.sum()
    assert res.source_kw == pytest.approx(
        net - res.participant_quantities.sum() + res.losses_kw, abs=1e-6)


def test_dlmp_fast_path_equals_the_cvxpy_statement_with_losses(dlmp_case):
    """The CVXPY statement's prices are its nodal balances' duals: an independent reading of
    the loss component."""
    env, offers, ctx, loss = dlmp_case
    m = fresh(env.market)
    m.set_losses(*loss)
    fast = m.clear(offers, ctx)
    ref = m.clear_cvxpy(offers, ctx)
    np.testing.assert_allclose(fast.dlmp, ref.dlmp, rtol=0, atol=1e-6)
    if hasattr(m, "cvxpy_prices"):  # LinDistFlow: read from the balance duals directly
        np.testing.assert_allclose(fast.dlmp, m.cvxpy_prices[0], rtol=0, atol=1e-6)
    np.testing.assert_allclose(fast.participant_quantities, ref.participant_quantities,
                               rtol=0, atol=1e-5)
    for key, value in fast.price_components.items():
        np.testing.assert_allclose(value, ref.price_components[key], rtol=0, atol=1e-6)
    assert fast.losses_kw == pytest.approx(ref.losses_kw, abs=1e-6)
    assert fast.source_kw == pytest.approx(ref.source_kw, abs=1e-5)


def test_dlmp_settlement_identity(dlmp_case):
    env, offers, ctx, (lf, L0, p0) = dlmp_case
    m = fresh(env.market)
    m.set_losses(lf, L0, p0)
    res = m.clear(offers, ctx)
    assert res.consumer_payments - res.producer_revenue == pytest.approx(
        res.congestion_rent + res.loss_surplus, rel=1e-9, abs=1e-9)
    if not hasattr(res, "voltage"):  # the DC market's rent is the limits' (module docstring)
        assert res.congestion_rent == pytest.approx(
            float(res.branch_prices @ res.flows_kw), rel=1e-9, abs=1e-9)
    # loss surplus = energy (lf . p - L(p)) with p the net injections, the source's included
    root = m.topology.bus_index[m.topology.root]
    topo = m.topology
    bus = np.array([topo.bus_index[r.bus] for r in m.resources])
    p = ctx.pv_kw - res.curtailed_kw - ctx.demand_kw + res.shed_kw + np.bincount(
        bus, res.participant_quantities, minlength=len(topo.buses))
    p[root] += res.source_kw
    assert p.sum() == pytest.approx(res.losses_kw, abs=1e-6)
    assert res.loss_surplus == pytest.approx(res.energy * (lf @ p - res.losses_kw), rel=1e-9)
    assert res.loss_surplus > 0
    assert res.welfare == pytest.approx(res.consumer_surplus + res.producer_surplus
                                        + res.congestion_rent + res.loss_surplus, rel=1e-9)


def test_lossy_markets_pickle_with_their_loss_row(dlmp_case):
    env, offers, ctx, loss = dlmp_case
    m = fresh(env.market)
    m.set_losses(*loss)
    before = m.clear(offers, ctx)
    back = pickle.loads(pickle.dumps(m))
    np.testing.assert_array_equal(back.clear(offers, ctx).dlmp, before.dlmp)


# ---------------------------------------------------------------------- bad input
def _bad_factor(lf, value):
    bad = lf.copy()
    bad[3] = value
    return bad


@pytest.mark.parametrize("change, match", [
    (lambda lf: dict(loss_factors=np.zeros(3)), "loss_factors: expected"),
    (lambda lf: dict(loss_factors=_bad_factor(lf, np.nan)), "loss_factors: bus"),
    (lambda lf: dict(loss_factors=_bad_factor(lf, 1.0)), "loss_factors: bus"),
    (lambda lf: dict(loss_kw=-1.0), "loss_kw must be"),
    (lambda lf: dict(loss_kw=float("inf")), "loss_kw must be"),
    (lambda lf: dict(injections_kw=np.zeros(2)), "injections_kw: expected"),
])
def test_bad_loss_models_are_refused_before_anything_changes(curve_case, change, match):
    env, bids, (lf, L0, p0) = curve_case
    m = fresh(env.market)
    m.set_losses(lf, L0, p0)
    before = m.clear(bids)
    with pytest.raises(ValueError, match=match):
        m.set_losses(**dict(dict(loss_factors=lf, loss_kw=L0, injections_kw=p0),
                            **change(lf)))
    assert m.losses.loss_kw == L0  # unchanged
    np.testing.assert_array_equal(m.clear(bids).bus_prices, before.bus_prices)
    assert LossModel.of(m.topology.buses, lf, L0, p0).losses(p0) == pytest.approx(L0)


# ---------------------------------------------------------------------- the core's option
def run_day(env, seed=0):
    env.reset(seed=seed)
    reports, rewards = [], []
    while not env.done:
        r, _ = env.run_round({})
        reports.append(env.last_grid_report)
        rewards.append(np.asarray(r, dtype=float).copy())
        assert env.market.losses is None  # lossless again after every hour
    return reports, rewards


@pytest.mark.parametrize("env_id", [CURVE, DLMP])
def test_loss_pricing_takes_the_losses_out_of_unscheduled_supply(env_id):
    make = dict(parallel=True, market_rounds=1, learners=[])
    plain, _ = run_day(ogg_envs.make(env_id, **make))
    priced, _ = run_day(ogg_envs.make(env_id, loss_pricing=True, **make))
    for r in priced:
        assert r.cleared_losses_kw > 0
        # (IEEE 34's peak hours converge slowest: within 3 % after the default 3 re-clearings)
        assert r.cleared_losses_kw == pytest.approx(r.losses_kw, rel=0.035)
        assert r.unscheduled_kw == pytest.approx(r.substation_kw - r.cleared_source_kw)
        assert 1 <= r.feedback_iterations <= 3
    assert all(r.cleared_losses_kw == 0 and r.feedback_iterations == 0 for r in plain)
    drop = np.mean([r.unscheduled_kw for r in plain]) - np.mean([r.unscheduled_kw
                                                                 for r in priced])
    assert drop >= 0.8 * np.mean([r.losses_kw for r in plain])


def test_loss_pricing_infos_and_a_zero_cap():
    env = ogg_envs.make(CURVE, parallel=True, market_rounds=1, learners="supplier",
                        loss_pricing=True)
    env.reset(seed=0)
    _, _, _, _, infos = env.step({a: env.action_space(a).sample() * 0 + env.action_space(
        a).high for a in env.agents})
    rep = env.last_grid_report
    for info in infos.values():
        assert info["cleared_losses_kw"] == rep.cleared_losses_kw > 0
        assert info["unscheduled_kw"] == rep.unscheduled_kw
    capped = ogg_envs.make(CURVE, parallel=True, market_rounds=1, learners=[],
                           loss_pricing=True, ac_max_iterations=0)
    plain = ogg_envs.make(CURVE, parallel=True, market_rounds=1, learners=[])
    for a, b in zip(run_day(capped)[0], run_day(plain)[0]):
        np.testing.assert_array_equal(a.flow_kw, b.flow_kw)
        assert a.cleared_losses_kw == 0.0


@pytest.mark.parametrize("env_id", [CURVE, DLMP])
def test_loss_pricing_replays_a_seed_whatever_came_before(env_id):
    env = ogg_envs.make(env_id, parallel=True, market_rounds=1, learners=[],
                        loss_pricing=True, ac_feedback=True)
    first, rewards = run_day(env, seed=3)
    run_day(env, seed=4)
    again, rewards_again = run_day(env, seed=3)
    for a, b in zip(first, again):
        assert a.as_dict() == b.as_dict()
    for a, b in zip(rewards, rewards_again):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("bad", ["yes", 1, 0.0])
def test_bad_loss_pricing_option_names_the_key(bad):
    with pytest.raises(ValueError, match="loss_pricing"):
        ogg_envs.make(CURVE, parallel=True, loss_pricing=bad)


def test_a_market_without_set_losses_is_refused():
    with pytest.raises(ValueError, match="loss_pricing=True needs a market"):
        ogg_envs.make("opengridgym/p2p-v0", parallel=True, loss_pricing=True)
