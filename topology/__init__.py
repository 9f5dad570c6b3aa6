"""The Faust topology: ``faust -A topology worker`` finds ``topology.app``."""

from topology import instruments as instruments  # publishes the master at start-up
from topology import tick_hop as tick_hop  # ticks -> tick:{token}, bars
from topology import volume as volume  # bars -> vol:{token}, bars:1m:{token}
from topology.app import app

__all__ = ["app"]
