"""The first agent: the latest tick of every token, mirrored into ``tick:{token}``.

It runs at tick rate, so it works in batches: ``stream.take`` hands over up to
``sink_batch_size`` records or whatever arrived within ``sink_flush_interval``; the batch
is coalesced to one tick per token (latest offset wins: one partition, one ingestor
connection per token, so offset order is arrival order) and written in one pipeline.
Offsets are acknowledged only after Redis has accepted the batch (at-least-once; the
hash holds absolute values, so a replay rewrites the same hash).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from functools import lru_cache

import faust

from config.instruments import InstrumentMaster
from core import tick_envelope
from core.kite_protocol import DecodeStats, decode_packet
from core.tick import Tick
from storage.instrument_store import publish_instruments
from storage.keys import Keys
from storage.redis_client import async_redis
from storage.tick_sink import TickSink
from topology import metrics
from topology.app import app, settings, ticks_topic

log = logging.getLogger(__name__)
keys = Keys(settings.redis_key_prefix)


@lru_cache(maxsize=1)
def instrument_master() -> InstrumentMaster:
    return InstrumentMaster.load(settings.instruments_path)


@lru_cache(maxsize=1)
def symbol_table() -> dict[int, tuple[str, str]]:
    return {i.instrument_token: (i.tradingsymbol, i.exchange) for i in instrument_master()}


def symbol_of(token: int) -> tuple[str, str]:
    """(tradingsymbol, exchange); empty strings for a token missing from the master."""
    return symbol_table().get(token, ("", ""))


def coalesce(values: Iterable[bytes], stats: DecodeStats) -> dict[int, tuple[Tick, int]]:
    """Decodes ticks-topic records and keeps the latest tick per token."""
    latest: dict[int, tuple[Tick, int]] = {}
    for value in values:
        try:
            record = tick_envelope.decode(value)
        except tick_envelope.EnvelopeError:
            stats.add_error("bad_envelope")
            continue
        tick = decode_packet(record.packet, stats)
        if tick is not None:
            latest[tick.instrument_token] = (tick, record.received_at_ms)
    return latest


@app.task
async def load_instruments() -> None:
    """Publish the instrument master to Redis (idempotent; every worker may do it)."""
    client = async_redis(settings)
    try:
        rows = instrument_master().frame.iter_rows(named=True)
        written = await publish_instruments(client, keys, rows)
    finally:
        await client.aclose()
    metrics.INSTRUMENTS_LOADED.set(written)
    log.info("instrument master in Redis: %d instruments", written)


@app.agent(ticks_topic)
async def mirror_ticks(stream: faust.StreamT[bytes]) -> None:
    client = async_redis(settings)
    sink = TickSink(client, keys, symbol_of, on_error=lambda _exc: metrics.REDIS_ERRORS.inc())
    seen: set[int] = set()
    stats = DecodeStats()
    reported: dict[str, int] = {}
    try:
        async for batch in stream.take(
            settings.sink_batch_size, within=settings.sink_flush_interval
        ):
            latest = coalesce(batch, stats)
            metrics.TICKS_CONSUMED.inc(len(batch))
            for kind, total in stats.errors.items():
                metrics.TICK_ERRORS.labels(kind).inc(total - reported.get(kind, 0))
                reported[kind] = total
            started = time.perf_counter()
            await sink.write(latest)
            metrics.FLUSH_SECONDS.observe(time.perf_counter() - started)
            metrics.REDIS_WRITES.inc(len(latest))
            seen.update(latest)
            metrics.TOKENS_SEEN.set(len(seen))
            event_times = [t.exchange_timestamp for t, _ in latest.values() if t.exchange_timestamp]
            if event_times:
                metrics.LAST_EVENT_TIME.set(max(event_times))
    finally:
        await client.aclose()
