"""Mirrors the latest tick of every token into ``tick:{token}``.

The caller coalesces a batch to one tick per token, and this writes the batch in one
pipelined round trip: per-tick round trips would cap the tick hop far below the market's
rate (DESIGN: under 10k/s vs 100k+/s pipelined). A Redis outage never drops a batch:
the write is retried with capped backoff until it succeeds, so the consumer stops
acknowledging offsets (backpressure) instead of losing ticks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from core.tick import Tick
from storage.bar_sink import write_hashes
from storage.keys import Keys
from storage.tick_hash import tick_hash

log = logging.getLogger(__name__)

SymbolLookup = Callable[[int], tuple[str, str]]


class TickSink:
    def __init__(
        self,
        client: aioredis.Redis,
        keys: Keys,
        symbols: SymbolLookup,
        *,
        backoff_initial: float = 0.2,
        backoff_max: float = 5.0,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        self._client = client
        self._keys = keys
        self._symbols = symbols
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._on_error = on_error

    async def write(self, latest: Mapping[int, tuple[Tick, int]]) -> None:
        """Write one hash per token; retries until Redis accepts the whole batch."""
        if not latest:
            return
        delay = self._backoff_initial
        hashes = {}
        for token, (tick, received_at_ms) in latest.items():
            symbol, exchange = self._symbols(token)
            hashes[self._keys.tick(token)] = tick_hash(tick, received_at_ms, symbol, exchange)
        while True:
            try:
                await write_hashes(self._client, hashes)
            except (RedisError, OSError) as exc:
                if self._on_error is not None:
                    self._on_error(exc)
                log.warning(
                    "Redis write of %d ticks failed (%s); retrying in %.1fs",
                    len(latest),
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._backoff_max)
                continue
            return
