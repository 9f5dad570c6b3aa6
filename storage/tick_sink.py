"""Mirrors the latest tick of every token into ``tick:{token}``.

The caller coalesces a batch to one tick per token, and this writes the batch in one
pipelined round trip: per-tick round trips would cap the tick hop far below the market's
rate (DESIGN: under 10k/s vs 100k+/s pipelined). A Redis outage never drops a batch:
the write is retried with capped backoff until it succeeds, so the consumer stops
acknowledging offsets (backpressure) instead of losing ticks.

Expiry (``TICKFLOW_TICK_TTL``): a token's hash lives a week after its last tick, so the
keys of expired contracts go away. The EXPIRE is refreshed at most every hour per key
(not with every write: it would add a command per tick for a deadline a week away).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from core.tick import Tick
from storage.keys import Keys
from storage.tick_hash import pack_expire, pack_hset, pack_tick_hset, tick_values

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
        ttl: int = 0,
        hashes_ttl: int = 0,
    ) -> None:
        self._client = client
        self._keys = keys
        self._symbols = symbols
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._on_error = on_error
        self._ttl = ttl
        self._hashes_ttl = hashes_ttl
        #: key -> monotonic time of its last EXPIRE
        self._expired_at: dict[str, float] = {}

    async def write(
        self,
        latest: Mapping[int, tuple[Tick, int]],
        hashes: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        """Write one hash per token, and ``hashes`` (whole hashes by key) in the same
        round trip; retries until Redis accepts the whole batch."""
        if not latest and not hashes:
            return
        delay = self._backoff_initial
        key, symbols = self._keys.tick, self._symbols
        names = [key(token) for token in latest]
        parts = [
            pack_tick_hset(name, tick_values(tick, received_at_ms, *symbols(token)))
            for name, (token, (tick, received_at_ms)) in zip(names, latest.items(), strict=True)
        ]
        if hashes:
            parts += [pack_hset(name, fields) for name, fields in hashes.items()]
        expiring = self._due_for_expiry(names, self._ttl)
        if hashes:
            expiring += self._due_for_expiry(list(hashes), self._hashes_ttl)
        parts += [pack_expire(name, ttl) for name, ttl in expiring]
        payload = b"".join(parts)
        replies = len(parts)
        while True:
            try:
                await self._send(payload, replies)
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

    def _due_for_expiry(self, names: list[str], ttl: int) -> list[tuple[str, int]]:
        if ttl <= 0:
            return []
        now = time.monotonic()
        every = min(3600.0, ttl / 2)
        seen = self._expired_at
        due = [name for name in names if now - seen.get(name, -every) >= every]
        for name in due:
            seen[name] = now
        return [(name, ttl) for name in due]

    async def _send(self, payload: bytes, replies: int) -> None:
        """One round trip for the whole batch: the packed commands on one pooled
        connection, then their replies (a pipeline without redis-py's per-argument
        packing). A connection that failed midway is dropped, not returned with unread
        replies."""
        pool = self._client.connection_pool
        connection = await pool.get_connection()
        try:
            await connection.send_packed_command(payload)
            for _ in range(replies):
                await connection.read_response()
        except BaseException:
            await connection.disconnect()
            raise
        finally:
            await pool.release(connection)
