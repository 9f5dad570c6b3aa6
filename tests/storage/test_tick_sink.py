"""TickSink against a real redis-server, including one that goes away and comes back."""

import asyncio

import pytest
import redis.asyncio as aioredis

from core.tick import Depth, DepthLevel, Tick
from scripts.services import free_port, start_redis, stop_process
from storage.keys import Keys
from storage.tick_hash import TICK_FIELDS
from storage.tick_sink import TickSink


def full_tick(token: int, price: float, volume: int) -> Tick:
    return Tick(
        instrument_token=token,
        mode="full",
        tradable=True,
        last_price=price,
        last_traded_quantity=5,
        average_traded_price=price - 1,
        volume_traded=volume,
        total_buy_quantity=100,
        total_sell_quantity=200,
        open=price - 2,
        high=price + 3,
        low=price - 4,
        close=price - 5,
        change=1.25,
        last_trade_time=1_700_000_000,
        oi=10,
        oi_day_high=12,
        oi_day_low=8,
        exchange_timestamp=1_700_000_001,
        depth=Depth.from_levels(
            (DepthLevel(7, price - 0.05, 2),), (DepthLevel(9, price + 0.05, 3),), 100.0
        ),
    )


async def test_writes_every_field_and_replaces_a_richer_previous_tick(redis_endpoint):
    client = aioredis.Redis.from_url(redis_endpoint.url, decode_responses=True)
    keys = Keys("sinktest:")
    sink = TickSink(client, keys, lambda token: ("INFY", "NSE"))
    await sink.write({408065: (full_tick(408065, 1500.5, 1000), 1_700_000_001_250)})
    stored = await client.hgetall("sinktest:tick:408065")
    assert set(stored) == set(TICK_FIELDS)
    assert stored["symbol"] == "INFY" and stored["last_price"] == "1500.5"
    assert stored["best_bid"] == "1500.45" and stored["best_ask_qty"] == "9"
    assert stored["exchange_timestamp"] == "2023-11-15T03:43:21+05:30"
    assert stored["received_at"] == "2023-11-15T03:43:21.250+05:30"

    ltp = Tick(instrument_token=408065, mode="ltp", tradable=True, last_price=1501.0)
    await sink.write({408065: (ltp, 1_700_000_002_000)})
    stored = await client.hgetall("sinktest:tick:408065")
    assert stored["last_price"] == "1501.0" and stored["mode"] == "ltp"
    assert stored["best_bid"] == "" and stored["volume_traded"] == ""  # no stale depth
    await client.aclose()


async def test_a_redis_outage_delays_the_batch_but_loses_nothing(tmp_path):
    port = free_port()
    proc = start_redis(port, tmp_path / "r1.log")
    client = aioredis.Redis.from_url(f"redis://127.0.0.1:{port}/0", decode_responses=True)
    errors: list[BaseException] = []
    sink = TickSink(
        client,
        Keys(),
        lambda t: ("", ""),
        backoff_initial=0.05,
        backoff_max=0.2,
        on_error=errors.append,
    )
    await sink.write({1: (full_tick(1, 10.0, 1), 0)})
    stop_process(proc)
    batch = {token: (full_tick(token, 20.0 + token, token), 0) for token in range(2, 50)}
    pending = asyncio.create_task(sink.write(batch))
    await asyncio.sleep(0.6)
    assert not pending.done() and errors, "the write must be retrying while Redis is down"
    proc = start_redis(port, tmp_path / "r2.log")
    try:
        await asyncio.wait_for(pending, 15)
        for token in range(2, 50):
            assert await client.hget(f"tick:{token}", "last_price") == str(20.0 + token)
    finally:
        await client.aclose()
        stop_process(proc)


@pytest.mark.parametrize("prefix", ["", "tf:"])
def test_key_names_follow_schema_v1(prefix):
    keys = Keys(prefix)
    assert keys.tick(5) == f"{prefix}tick:5"
    assert keys.bars_1m(5) == f"{prefix}bars:1m:5"
    assert keys.symbol("NSE", "INFY") == f"{prefix}symbol:NSE:INFY"
    assert keys.schema == f"{prefix}tickflow:schema"


async def test_hashes_expire_a_ttl_after_their_write(redis_endpoint):
    client = aioredis.Redis.from_url(redis_endpoint.url, decode_responses=True)
    keys = Keys("ttltest:")
    sink = TickSink(client, keys, lambda token: ("INFY", "NSE"), ttl=600, hashes_ttl=60)
    try:
        await sink.write(
            {408065: (full_tick(408065, 1500.5, 1000), 0)}, {"ttltest:greeks:1": {"iv": "0.2"}}
        )
        assert 590 < await client.ttl("ttltest:tick:408065") <= 600
        assert 50 < await client.ttl("ttltest:greeks:1") <= 60
        untimed = TickSink(client, Keys("ttltest2:"), lambda token: ("", ""))
        await untimed.write({1: (full_tick(1, 10.0, 1), 0)})
        assert await client.ttl("ttltest2:tick:1") == -1, "ttl 0: the hash never expires"
    finally:
        await client.aclose()
