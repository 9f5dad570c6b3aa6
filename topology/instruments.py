"""The instrument master inside a worker: symbols for the Redis mirror, and the master
published to ``instrument:{token}`` / ``symbol:{exchange}:{symbol}`` at start-up."""

from __future__ import annotations

import logging
from functools import lru_cache

from config.instruments import InstrumentMaster
from storage.instrument_store import publish_instruments
from storage.keys import Keys
from storage.redis_client import async_redis
from storage.redis_manager import RedisManager
from topology import metrics
from topology.app import app, settings

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


def tick_size_of(token: int) -> float:
    instrument = instrument_master().get(token)
    return instrument.tick_size if instrument is not None else 0.0


@app.task
async def load_instruments() -> None:
    """Check the Redis schema marker (a clear error on a legacy or foreign keyspace, see
    ``storage.redis_manager``), then publish the instrument master (idempotent; every
    worker may do it)."""
    features = await RedisManager(settings).start()
    log.info("Redis: %s", features.describe())
    client = async_redis(settings)
    try:
        rows = instrument_master().frame.rows(named=True)
        written = await publish_instruments(client, keys, rows)
    finally:
        await client.aclose()
    metrics.INSTRUMENTS_LOADED.set(len(rows))
    if written:
        log.info("instrument master published to Redis: %d instruments", written)
    else:
        log.info("instrument master already in Redis (%d instruments, unchanged)", len(rows))
