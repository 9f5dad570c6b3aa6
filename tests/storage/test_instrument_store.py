"""The instrument master in a real redis-server: published once, skipped when unchanged."""

import redis.asyncio as aioredis

from config.instruments import InstrumentMaster
from storage.instrument_store import publish_instruments
from storage.keys import SCHEMA_VERSION, Keys


async def test_publishes_rows_then_skips_an_unchanged_master(redis_endpoint):
    client = aioredis.Redis.from_url(redis_endpoint.url, decode_responses=True)
    keys = Keys("insttest:")
    rows = InstrumentMaster.load().frame.head(50).rows(named=True)
    try:
        assert await publish_instruments(client, keys, rows) == 50
        first = rows[0]
        token = int(first["instrument_token"])
        stored = await client.hgetall(keys.instrument(token))
        assert stored["tradingsymbol"] == first["tradingsymbol"]
        symbol_key = keys.symbol(first["exchange"], first["tradingsymbol"])
        assert await client.get(symbol_key) == str(token)
        assert await client.get(keys.schema) == str(SCHEMA_VERSION)

        await client.delete(keys.instrument(token))
        assert await publish_instruments(client, keys, rows) == 0, "unchanged: nothing written"
        assert not await client.exists(keys.instrument(token))

        changed = [{**rows[0], "tick_size": 0.5}, *rows[1:]]
        assert await publish_instruments(client, keys, changed) == 50
        assert (await client.hgetall(keys.instrument(token)))["tick_size"] == "0.5"
    finally:
        await client.aclose()
