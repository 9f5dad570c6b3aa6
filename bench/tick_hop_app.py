"""The tick hop alone, for ``bench.bench_tick_hop``: the topology's app with only its
tick-rate agent (and the instrument task it needs) registered, without the bar-rate
agents (volume, signals) that the full worker runs in the same process. Everything the
tick hop does is here: decode, volume engine, bars to the broker, table checkpoints,
the Redis mirror with Greeks, replicated market tables, the commit gate."""

from __future__ import annotations

from topology import instruments, tick_hop  # noqa: F401  (registers the agent and task)
from topology.app import app

__all__ = ["app"]
