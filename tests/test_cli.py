"""The opengridgym command and the topology-power reproduction."""

from __future__ import annotations

import json

from ogg_envs.cli import main


def test_list_names_every_environment(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for env_id in ("topology-power-v0", "p2p-v0", "dlmp-v0"):
        assert f"opengridgym/{env_id}" in out


def test_run_one_episode(capsys):
    assert main(["run", "opengridgym/topology-power-v0", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    summary = json.loads(out[out.index("{"):])
    assert summary["rounds"] == 72 and set(summary["returns"]) == {
        f"supplier_{i}" for i in range(4)}


def test_reproduce_topology_power_shows_the_papers_effects(tmp_path):
    assert main(["reproduce", "topology-power", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "topology-power.json").read_text())
    unc = set(round(p, 4) for p in data["uncongested"]["prices"].values())
    assert unc == {4.3}, "truthful bids at the peak: the wholesale price everywhere"
    con = data["congested"]
    assert con["congested"] and max(con["prices"].values()) > 5.0
    assert abs(min(con["prices"].values()) - 4.3) < 1e-4, "upstream stays at the wholesale price"
    flex = data["flexibility"]
    assert flex["0.75"] < flex["0.08"] - 0.3, "flexible demand blunts market power"
    for name in ("curves", "price_map", "flexibility"):
        assert (tmp_path / f"topology_power_{name}.png").stat().st_size > 10_000
