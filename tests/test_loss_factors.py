"""Marginal loss factors (ogg_envs.grid.loss_factors) against finite differences of OpenDSS."""

import types

import numpy as np
import pytest

from ogg_envs.grid import OpenDSSGrid
from ogg_envs.grid.loss_factors import marginal_loss_factors

TOL = 0.02  # kW/kW, the module docstring's stated accuracy


# IEEE 34's regulators held at their published taps (a 10 kW probe must not move them); IEEE 37's
# regulator does not move for it.
@pytest.mark.parametrize("feeder, locked", [("ieee34", True), ("ieee37", False)])
def test_loss_factors_match_opendss_finite_differences(feeder, locked):
    grid = OpenDSSGrid.from_feeder(feeder, locked_taps=locked)
    topo = grid.topology
    probes = [b for b in topo.buses[1:] if topo.bus_index[b] % 3 == 0]
    for b in probes:
        grid.add_generator(f"probe_{b}", b, kw=0.0, kva=100.0)
    grid.reset()
    load = grid.bus_load_kw.copy()
    grid.apply(load)
    pf = grid.solve()
    lf = marginal_loss_factors(grid, pf)
    assert lf[0] == 0.0
    base = pf.losses_kw
    eps = 10.0
    fd = []
    for b in probes:
        grid.apply(load, {f"probe_{b}": eps})
        fd.append((grid.solve().losses_kw - base) / eps)
        grid.apply(load, {f"probe_{b}": 0.0})
    fd = np.array(fd)
    model = lf[[topo.bus_index[b] for b in probes]]
    assert np.abs(fd).max() > 0.05  # the feeder has losses worth pricing
    np.testing.assert_allclose(model, fd, atol=TOL)
    # Deeper buses relieve more losses: the order of the factors is OpenDSS's order.
    assert np.corrcoef(np.argsort(np.argsort(model)), np.argsort(np.argsort(fd)))[0, 1] > 0.9


def test_loss_factors_refuse_a_failed_power_flow():
    grid = OpenDSSGrid.from_feeder("ieee13")
    grid.solve()
    with pytest.raises(ValueError, match="converged"):
        marginal_loss_factors(grid, types.SimpleNamespace(converged=False))


def test_loss_factors_stay_small_where_the_phases_flows_cancel():
    """Random dispatch puts generators against unbalanced loads: a line can carry a few kW in
    total but hundreds per phase. A three-phase-total formula (2 loss P / S^2) gave factors
    above 1 there (a kW injected 'saving' 3 kW of losses); the per-phase one stays physical."""
    from ogg_envs.envs import topology_power_v0
    from ogg_envs.grid import loss_factors

    env = topology_power_v0.parallel_env(market_rounds=1)
    grid = env.unwrapped.grid
    worst = 0.0
    for seed in range(2):
        env.reset(seed=seed)
        spaces = {a: env.action_space(a) for a in env.agents}
        for k, a in enumerate(env.agents):
            spaces[a].seed(100 * seed + k)
        while env.agents:
            env.step({a: spaces[a].sample() for a in env.agents})
            lf = loss_factors.marginal_loss_factors(grid, env.unwrapped.last_power_flow)
            worst = max(worst, float(np.abs(lf).max()))
    assert 0.05 < worst < 0.6
