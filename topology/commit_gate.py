"""A cap on the offsets Faust commits for one topic: the tick hop's durability gate.

The tick hop keeps its per-token state in memory and checkpoints it per bar, so a tick's
effect is durable only some time after the agent has processed it. Faust acknowledges an
event as soon as the agent moves on and commits the contiguous acknowledged prefix every
few seconds; left alone it would commit ticks whose effect a ``kill -9`` could still lose.

Holding acknowledgements by hand (``stream.noack()`` and one ``stream.ack`` per event,
an earlier version of the hop) is exact but costs about a sixth of a bare agent's
per-event time, so the hop lets Faust acknowledge as usual and caps what is *committed*
instead: per partition, the committed offset never passes the first offset whose effect
is not durable yet (the gate). Offsets acknowledged above the gate stay in Faust's
acknowledged list and are committed once the gate has moved past them.

This wraps ``Consumer._new_offset`` of faust-streaming 0.15.3 (pinned exactly, and the
wrapper is covered by ``tests/topology/test_commit_gate.py``), the one function through
which every commit (periodic, on rebalance, at shutdown) picks its offset.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from typing import Any

from faust.types import TP

NewOffset = Callable[[TP], int | None]


class CommitGate:
    """Per-partition limits for the commits of one topic."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        #: partition -> the highest offset that may be committed (the next offset a
        #: restarted consumer reads); absent = no cap
        self.limits: dict[int, int] = {}

    def hold(self, partition: int, offset: int) -> None:
        """Commit nothing at or above ``offset`` until :meth:`release` says otherwise
        (a partition's first event after an assignment)."""
        self.limits[partition] = offset

    def release(self, partition: int, offset: int) -> None:
        """Everything below ``offset`` is durable: commits may reach it."""
        if offset > self.limits.get(partition, -1):
            self.limits[partition] = offset

    def gated(self, consumer: Any, original: NewOffset) -> NewOffset:
        """``_new_offset`` that hides acknowledged offsets at or above the limit from
        Faust's computation, then puts them back for a later commit."""

        def new_offset(tp: TP) -> int | None:
            limit = self.limits.get(tp.partition) if tp.topic == self.topic else None
            if limit is None:
                return original(tp)
            acked: list[int] = consumer._acked[tp]
            acked.sort()
            cut = bisect.bisect_left(acked, limit)
            held = acked[cut:]
            del acked[cut:]
            try:
                return original(tp)
            finally:
                acked.extend(held)  # still sorted: every held offset is above the rest

        return new_offset

    def install(self, consumer: Any) -> None:
        """Wrap the consumer's offset choice once (idempotent)."""
        if getattr(consumer, "_tickflow_commit_gate", None) is self:
            return
        consumer._new_offset = self.gated(consumer, consumer._new_offset)
        consumer._tickflow_commit_gate = self
