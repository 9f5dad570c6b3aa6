"""The Faust topology: ``faust -A topology worker`` finds ``topology.app``."""

from topology import tick_mirror as tick_mirror  # registers the agents
from topology.app import app

__all__ = ["app"]
