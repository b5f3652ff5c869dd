"""``opengridgym reproduce``: regenerate the paper's results, one module per use case.

Each module ``ogg_envs.reproduce.<name>`` has ``run(out: Path, quick: bool = False) -> dict``
that writes its figures and ``<out>/<name>.json`` and returns the JSON content.
"""

USE_CASES = {"topology-power": "topology_power", "p2p": "p2p", "dlmp": "dlmp"}
