"""Bar and volume sinks against a real redis-server: at-least-once input, exact output."""

import uuid

import redis.asyncio as aioredis

from core.bars import Bar
from storage.bar_sink import write_bars, write_hashes
from storage.keys import Keys

START = 1_795_500_900  # a minute boundary


def bar(token: int, minute: int, volume: int) -> Bar:
    price = 100.0 + minute
    return Bar(token, START + 60 * minute, price, price + 1.5, price - 0.25, price + 0.5,
               volume, 3)  # fmt: skip


async def test_redelivered_bars_are_written_once(redis_endpoint):
    client = aioredis.Redis.from_url(redis_endpoint.url, decode_responses=True)
    keys = Keys(f"bars{uuid.uuid4().hex[:6]}:")
    first = [bar(1, m, 10 * m) for m in range(3)]
    assert await write_bars(client, keys, first) == 3
    # A restarted worker re-emits the last two and goes on.
    again = [*first[1:], bar(1, 3, 30), bar(2, 0, 7)]
    assert await write_bars(client, keys, again) == 2
    entries = await client.xrange(keys.bars_1m(1))
    assert [entry_id for entry_id, _ in entries] == [
        f"{(START + 60 * m) * 1000}-0" for m in range(4)
    ]
    assert entries[2][1] == {
        "open": "102.0", "high": "103.5", "low": "101.75", "close": "102.5", "volume": "20"
    }  # fmt: skip
    assert await client.xlen(keys.bars_1m(2)) == 1
    await client.aclose()


async def test_hashes_hold_absolute_values(redis_endpoint):
    client = aioredis.Redis.from_url(redis_endpoint.url, decode_responses=True)
    key = f"vol{uuid.uuid4().hex[:6]}:1"
    await write_hashes(client, {key: {"volume_ratio": "1.5", "vwap": "101.2"}})
    await write_hashes(client, {key: {"volume_ratio": "1.5", "vwap": "101.2"}})
    assert await client.hgetall(key) == {"volume_ratio": "1.5", "vwap": "101.2"}
    await client.aclose()
