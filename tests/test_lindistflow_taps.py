"""``LinDistFlowMarket.set_ratios`` (issue #12): when regulator taps move it recomputes only the
voltage rows and hands them to the same HiGHS model (``HighsLP.set_values``). Every clearing
after it must equal, bit for bit, a market built anew with those ratios."""

from __future__ import annotations

import math
import pickle
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp
from test_dlmp_fast_path import same_result

from ogg_envs.api import MarketContext
from ogg_envs.envs import dlmp_v0
from ogg_envs.grid.topology import Branch, Topology
from ogg_envs.markets.dlmp import Resource
from ogg_envs.markets.lindistflow import LinDistFlowMarket
from ogg_envs.markets.solvers.highs_lp import HighsLP

# A band whose lower limit binds at IEEE 37's far load buses in most hours (17-20 of 24 with
# random actions): the voltage rows, the part set_ratios replaces, then set prices and dispatch.
TIGHT = (1.02, 1.05)


def fresh_like(m: LinDistFlowMarket, **changes) -> LinDistFlowMarket:
    """A new market with ``m``'s data, its current ratios, limits and loss model (and its
    voltage penalty, which ``set_ratios`` keeps), ``changes`` to its arguments applied."""
    args = dict(
        r_pu=m.r_pu, x_pu=m.x_pu, s_base_kva=m.s_base_kva,
        ratios=m.ratios, load_tan_phi=m.load_tan_phi, shunt_kvar=m.shunt_kvar,
        source_pu=m.source_pu, voltage_band=m.voltage_band, band_buses=m.band_buses,
        n_blocks=m.n_blocks, price_cap=m.price_cap, curtail_price=m.curtail_price,
        load_buses=m.load_buses, pv_buses=m.pv_buses, congestion_tol=m.congestion_tol,
        voltage_tol=m.voltage_tol, voltage_penalty=m.voltage_penalty)
    fresh = LinDistFlowMarket(m.topology, m.resources, **dict(args, **changes))
    fresh.set_limits(m.limits_kw)
    if m.losses is not None:
        lm = m.losses
        fresh.set_losses(lm.factors, lm.loss_kw, lm.injections_kw)
    return fresh


def tight_env(**kwargs):
    """dlmp-v0 (LinDistFlow) whose market holds the TIGHT band."""
    env = dlmp_v0.parallel_env(market_rounds=1, formulation="lindistflow", **kwargs)
    env.market = fresh_like(env.market, voltage_band=TIGHT)
    return env


def random_losses(m: LinDistFlowMarket, rng) -> None:
    B = len(m.topology.buses)
    m.set_losses(rng.uniform(-0.02, 0.06, B), float(rng.uniform(5.0, 40.0)),
                 rng.uniform(-50.0, 50.0, B))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_env_clearings_with_moving_taps_equal_fresh_markets(seed):
    """Random-action episodes of dlmp-v0 (LinDistFlow): the regulators move between many
    hours; every clearing of the env's market (updated in place) equals that of a market
    built with the ratios of its hour, on the same offers and context."""
    env = tight_env()
    env.reset(seed=seed)
    lp = env.market._lp
    rng = np.random.default_rng(seed)
    ratios_seen, binding = [], 0
    while env.agents:
        ctx = env.context()
        fresh = fresh_like(env.market)
        ratios_seen.append(env.market.ratios.copy())
        env.step({a: rng.uniform(0, 12, 3) for a in env.agents})
        res = env.last_clearing
        same_result(res, fresh.clear(res.bids, ctx))
        binding += bool(res.at_voltage_limit)
    moves = sum(not np.array_equal(a, b) for a, b in zip(ratios_seen, ratios_seen[1:]))
    assert moves >= 3 and binding >= 10  # the taps did move (about half the hours)
    assert env.market._lp is lp  # through the update path, not a rebuild


@pytest.mark.parametrize("lossy", [False, True])
def test_rounds_after_tap_moves_equal_fresh_markets_with_and_without_losses(lossy):
    """Hour by hour with the env's taps, several rounds per hour (random, rounded and
    all-at-the-cap offers: ties), loss models changed within hours and kept across tap
    moves: every clearing equals a fresh market's first clearing of the same data (so the
    solves are cold: the same data give the same answer whatever came before)."""
    env = tight_env()
    rng = np.random.default_rng(7 + lossy)
    moves = binding = 0
    for episode in range(2):
        env.reset(seed=10 + episode)
        m = env.market
        lp = m._lp
        for t in range(env.horizon):
            before = m.ratios.copy()
            env.t = t
            env.start_hour()  # set_ratios with the taps OpenDSS chose for this hour
            moves += not np.array_equal(before, m.ratios)
            ctx = env.context()
            offers = rng.uniform(0.0, m.price_cap / 2, (len(m.names), m.n_blocks))
            rounds = [offers, np.round(offers), np.full_like(offers, m.price_cap), offers]
            for k, o in enumerate(rounds):
                if lossy and k in (1, 3):  # round 0: the loss model kept across set_ratios
                    random_losses(m, rng)
                res = m.clear(o, ctx)
                same_result(res, fresh_like(m).clear(o, ctx))
                binding += bool(res.at_voltage_limit)
        assert m._lp is lp
        if lossy:
            m.reset()
            assert m.losses is None
    assert moves >= 5 and binding >= 40


def test_pickled_market_after_tap_moves_clears_the_same():
    env = tight_env()
    env.reset(seed=4)
    env.t = 12  # the band binds
    env.start_hour()
    m = env.market
    rng = np.random.default_rng(4)
    random_losses(m, rng)
    ratios = m.ratios.copy()
    ratios[ratios != 1.0] *= 0.99375  # a tap step down on every regulator
    m.set_ratios(ratios)
    clone = pickle.loads(pickle.dumps(m))
    offers = rng.uniform(0.0, 12.0, (len(m.names), m.n_blocks))
    ctx = env.context()
    res = m.clear(offers, ctx)
    assert res.at_voltage_limit
    same_result(clone.clear(offers, ctx), res)
    same_result(m.clear(offers, ctx), fresh_like(m).clear(offers, ctx))


def test_cvxpy_statement_follows_the_new_ratios():
    """The CVXPY reference built before a tap move is not reused with the old ratios."""
    env = tight_env()
    env.reset(seed=4)
    env.t = 12
    env.start_hour()
    m = env.market
    rng = np.random.default_rng(5)
    offers = rng.uniform(0.0, 12.0, (len(m.names), m.n_blocks))
    ctx = env.context()
    m.clear_cvxpy(offers, ctx)
    ratios = m.ratios.copy()
    ratios[ratios != 1.0] *= 0.99375
    m.set_ratios(ratios)
    fast, ref = m.clear(offers, ctx), m.clear_cvxpy(offers, ctx)
    assert fast.solver == "highs" and fast.feasible and fast.at_voltage_limit
    assert fast.cost == pytest.approx(ref.cost, rel=1e-9)
    np.testing.assert_allclose(fast.voltage_pu, ref.voltage_pu, atol=1e-7)
    np.testing.assert_allclose(fast.dlmp, ref.dlmp, atol=1e-6)


def test_a_ratio_that_changes_the_sparsity_rebuilds_the_lp():
    """s -a- b with a capacitive branch a-b: at ratio 1 on s-a the voltage of b does not move
    with the kvar-weighted shedding at b (the two branches cancel exactly), at 1.1 it does.
    The market then builds its LP anew; the clearings still equal fresh markets'."""
    topo = Topology("s", [Branch("s-a", "s", "a", (), math.inf),
                          Branch("a-b", "a", "b", (), math.inf)])
    m = LinDistFlowMarket(topo, [Resource("g", "a", "generator")], r_pu=[0.0, 0.0],
                          x_pu=[1.0, -1.0], load_tan_phi=[0.0, 0.0, 1.0],
                          voltage_band=(0.9, 1.1), voltage_penalty=1e4)
    ctx = MarketContext(demand_kw=[0.0, 10.0, 20.0], capacity_kw=[50.0], source_price=5.0)
    offers = [[1.0, 2.0, 3.0]]
    # 1 <-> not 1 changes the sparsity; 1.05 -> 1.1 does not
    for ratio, rebuilds in ((1.1, True), (1.0, True), (1.05, True), (1.1, False)):
        lp = m._lp
        m.set_ratios([ratio, 1.0])
        assert (m._lp is not lp) == rebuilds
        same_result(m.clear(offers, ctx), fresh_like(m).clear(offers, ctx))


# ---------------------------------------------------------------- HighsLP.set_values
def test_highs_set_values_equals_a_new_lp_with_the_same_rows_set():
    rng = np.random.default_rng(3)
    A = sp.random(12, 20, density=0.4, random_state=3, format="csc") + sp.eye(12, 20)
    lp = HighsLP(A)
    row = np.where(lp.matrix[[0], :].toarray().ravel() != 0, 2.0, 0.0)
    row[5] = 1.5  # an entry the matrix does not have
    lp.set_row(0, row)
    data = lambda: dict(c=rng.uniform(-1, 1, 20), l=np.full(12, -5.0), u=np.full(12, 5.0),  # noqa: E731
                        lb=np.zeros(20), ub=np.full(20, 3.0))
    lp.solve(**data())
    values = rng.uniform(0.5, 2.0, lp.matrix.nnz)
    lp.set_values(values)
    ref = HighsLP(sp.csc_matrix((values, lp.matrix.indices, lp.matrix.indptr),
                                shape=lp.shape))
    ref.set_row(0, row)
    clone = pickle.loads(pickle.dumps(lp))
    for _ in range(5):
        d = data()
        got, want, cloned = lp.solve(**d), ref.solve(**d), clone.solve(**d)
        for s in (got, cloned):
            for a, b in ((s.x, want.x), (s.y, want.y), (s.z, want.z)):
                np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="nonzero"):
        lp.set_values(np.zeros(lp.matrix.nnz))
    with pytest.raises(ValueError, match="one per entry"):
        lp.set_values(values[:-1])


def test_highs_lp_runs_after_cvxpy_highs_sized_the_thread_scheduler():
    """HiGHS has one thread scheduler per process, sized by the first run. A HighsLP asking for
    1 thread failed every solve after CVXPY's HiGHS ran first (the markets then fell back to
    CVXPY silently); run in a new process so that CVXPY's HiGHS is really first."""
    code = (
        "import cvxpy as cp, numpy as np\n"
        "x = cp.Variable(2)\n"
        "cp.Problem(cp.Minimize(x.sum()), [x >= 1]).solve(solver='HIGHS')\n"
        "from ogg_envs.markets.solvers.highs_lp import HighsLP\n"
        "s = HighsLP(np.array([[1.0, 1.0]])).solve([1.0, 2.0], [1.0], [1.0], [0.0, 0.0],\n"
        "                                         [5.0, 5.0])\n"
        "assert s.x.tolist() == [1.0, 0.0], s.x\n")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=120)


def test_the_markets_print_nothing():
    """HiGHS prints its banner to stdout (from C++, once per process) when ``highspy.Highs()``
    is made; a library user stepping the DLMP markets (both build a HiGHS LP) must see nothing
    (a new process: the banner comes only once)."""
    code = (
        "from ogg_envs.envs import dlmp_v0\n"
        "for kw, solver in (({}, 'merit-order'), ({'formulation': 'lindistflow'}, 'highs')):\n"
        "    env = dlmp_v0.parallel_env(**kw)\n"
        "    env.reset(seed=0)\n"
        "    for _ in range(6):\n"
        "        env.step({a: env.action_space(a).sample() for a in env.agents})\n"
        "    assert env.unwrapped.last_clearing.solver == solver\n")
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                          text=True, timeout=120)
    assert done.stdout == "" and "HiGHS" not in done.stderr
