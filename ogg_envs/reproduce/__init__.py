"""``opengridgym reproduce``: regenerate the paper's results, one module per use case.

Each module ``ogg_envs.reproduce.<name>`` has ``run(out: Path, quick: bool = False,
progress: bool = True, **env_kwargs) -> dict`` that writes its figures and ``<out>/<name>.json``
(``topology_power.json``, ``p2p.json``, ``dlmp.json``) and returns the JSON content, and
``summary(result) -> str``: the numbers the README quotes, as a table to read in the terminal.
``env_kwargs`` (``feeder=``, ``scenario=``) run the use case on another feeder or scenario.
"""

from __future__ import annotations

USE_CASES = {"topology-power": "topology_power", "p2p": "p2p", "dlmp": "dlmp"}


def table(headers: list[str], rows: list[list[str]]) -> str:
    """An aligned plain-text table (Markdown pipes, so it pastes into a README): the first
    column left-aligned, the others right-aligned."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r):
        return "| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w)
                                 for i, (c, w) in enumerate(zip(r, widths))) + " |"

    rule = "|" + "|".join("-" * (w + 1) + (":" if i else "-")
                          for i, w in enumerate(widths)) + "|"
    return "\n".join([line(cells[0]), rule] + [line(r) for r in cells[1:]])
