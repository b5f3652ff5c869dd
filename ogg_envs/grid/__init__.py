"""Grid layer: OpenDSS power flow on real feeders, plus the topology the markets use.

``OpenDSSGrid`` is the only part that talks to OpenDSS; ``Topology`` and ``placement`` are
plain Python on top of what it reads (``OpenDSSGrid.branch_elements``, ``bus_load_kw``).
"""

from . import placement
from .opendss import FeederError, OpenDSSGrid, PowerFlowResult
from .plotting import draw_feeder
from .topology import Branch, Topology

__all__ = ["OpenDSSGrid", "PowerFlowResult", "FeederError", "Topology", "Branch", "draw_feeder",
           "placement"]
