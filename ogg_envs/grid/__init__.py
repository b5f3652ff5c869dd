"""Grid layer: OpenDSS power flow on real feeders, plus the topology the markets use."""

from .opendss import FeederError, OpenDSSGrid, PowerFlowResult
from .plotting import draw_feeder
from .topology import Branch, Topology

__all__ = ["OpenDSSGrid", "PowerFlowResult", "FeederError", "Topology", "Branch", "draw_feeder"]
