"""AlertSink against a real redis-server: out-of-order, redelivered and stale alerts."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from core.patterns import ALERT_FIELDS, Alert, alert_id
from storage.alert_sink import AlertSink, dedup_key
from storage.keys import Keys

START = 1_795_500_900  # a minute boundary (2026-11-24 11:45 IST)


def alert(token: int, minute: int, pattern: str = "volume_spike", signal: str = "BUY") -> Alert:
    bar_start = START + 60 * minute
    return Alert(
        id=alert_id(token, pattern, signal, bar_start),
        token=token,
        symbol=f"SYM{token}",
        exchange="NSE",
        pattern=pattern,
        signal=signal,
        confidence=0.525,
        price=100.5,
        volume_ratio=3.3,
        pc=0.25,
        rsi=None,
        regime="NORMAL",
        vix=None,
        bar_start=bar_start,
        event_time=bar_start + 60,
        stop_loss=99.0,
    )


def ms(minute: int) -> int:
    """Entry-id time part of an alert of that minute's bar (its end)."""
    return (START + 60 * minute + 60) * 1000


@pytest.fixture
async def client(redis_endpoint) -> AsyncIterator[aioredis.Redis]:
    connection = aioredis.Redis.from_url(redis_endpoint.url, decode_responses=True)
    yield connection
    await connection.aclose()


@pytest.fixture
def keys() -> Keys:
    return Keys(f"alerts{uuid.uuid4().hex[:6]}:")


async def test_entry_fields_and_ids_come_from_the_alert(client, keys):
    sink = AlertSink(client, keys)
    first, second = alert(1, 0), alert(2, 0)
    result = await sink.write([first, second])
    assert result.written == {first.id: f"{ms(0)}-0", second.id: f"{ms(0)}-1"}
    entries = await client.xrange(keys.alerts)
    assert [fields["id"] for _, fields in entries] == [first.id, second.id]
    fields = entries[0][1]
    assert tuple(fields) == ALERT_FIELDS
    assert fields["event_time"] == "2026-11-24T11:46:00+05:30"
    assert fields["bar_start"] == "2026-11-24T11:45:00+05:30"
    assert fields["rsi"] == "" and fields["vix"] == "" and fields["confidence"] == "0.525"
    assert fields == first.to_redis()


async def test_out_of_order_alerts_are_all_written_once_with_increasing_ids(client, keys):
    sink = AlertSink(client, keys)
    late, early, middle = alert(3, 5), alert(1, 1), alert(2, 3)
    result = await sink.write([late, early, middle])
    assert result.written == {
        late.id: f"{ms(5)}-0",
        early.id: f"{ms(5)}-1",  # not above the top: placed at the top's time
        middle.id: f"{ms(5)}-2",
    }
    newer = alert(1, 7)
    assert (await sink.write([newer])).written == {newer.id: f"{ms(7)}-0"}
    ids = [entry_id for entry_id, _ in await client.xrange(keys.alerts)]
    assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))
    # The entry keeps the alert's true event time in its fields.
    entries = await client.xrange(keys.alerts)
    assert entries[1][1]["event_time"] == "2026-11-24T11:47:00+05:30"


async def test_redelivery_and_restart_never_duplicate(client, keys):
    batch = [alert(1, 2), alert(2, 0), alert(1, 2, "breakout"), alert(3, 1, signal="SELL")]
    first = await AlertSink(client, keys).write(batch)
    assert len(first.written) == 4 and first.duplicates == () and first.stale == ()
    # A restarted worker (a new sink, same Redis) replays the batch plus one new alert,
    # and the batch contains an alert twice.
    again = [*reversed(batch), alert(4, 3), batch[0]]
    second = await AlertSink(client, keys).write(again)
    assert list(second.written) == [alert(4, 3).id]
    assert sorted(second.duplicates) == sorted([a.id for a in batch] + [batch[0].id])
    entries = await client.xrange(keys.alerts)
    assert sorted(fields["id"] for _, fields in entries) == sorted(
        a.id for a in [*batch, alert(4, 3)]
    )


async def test_alerts_older_than_the_horizon_are_stale_and_ids_are_trimmed(client, keys):
    sink = AlertSink(client, keys, dedup_horizon=600)  # 10 minutes of event time
    old = alert(1, 0)
    assert await sink.write([old, alert(2, 10)]) is not None
    assert await client.zcard(dedup_key(keys)) == 2  # exactly at the horizon: kept
    result = await sink.write([alert(3, 11), alert(4, 0), alert(5, 1)])
    assert list(result.written) == [alert(3, 11).id, alert(5, 1).id]
    assert result.stale == (alert(4, 0).id,)  # 11 minutes behind the newest
    # The first alert's id was trimmed with the horizon: its replay is stale, not new.
    assert await client.zscore(dedup_key(keys), old.id) is None
    replay = await sink.write([old])
    assert replay.stale == (old.id,) and replay.written == {}
    assert await client.xlen(keys.alerts) == 4


async def test_maxlen_bounds_the_stream_approximately(client, keys):
    sink = AlertSink(client, keys, maxlen=50)
    await sink.write([alert(token, 0) for token in range(400)])
    length = await client.xlen(keys.alerts)
    # Approximate trimming (cheap) removes only whole macro nodes (at most 100 entries or
    # 4 KiB each), never going below MAXLEN: 50 to a node more stay.
    assert 50 <= length <= 150
    unbounded = Keys(f"{keys.prefix}x:")
    await AlertSink(client, unbounded, maxlen=0).write([alert(t, 0) for t in range(150)])
    assert await client.xlen(unbounded.alerts) == 150


async def test_each_new_alert_is_published_once_as_json(client, keys):
    pubsub = client.pubsub()
    await pubsub.subscribe(keys.alerts_live)
    assert (await pubsub.get_message(timeout=1.0))["type"] == "subscribe"
    sink = AlertSink(client, keys)
    one, two = alert(1, 0), alert(2, 0, "reversal", "SELL")
    await sink.write([one, two])
    await sink.write([one])  # a duplicate publishes nothing

    messages = []
    for _ in range(3):
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
        if message is not None:
            messages.append(json.loads(message["data"]))
    assert messages == [one.to_public(), two.to_public()]
    assert messages[1]["event_time"] == "2026-11-24T11:46:00+05:30"
    assert messages[0]["rsi"] is None and messages[0]["volume_ratio"] == 3.3
    await pubsub.aclose()


async def test_concurrent_writers_never_duplicate(client, keys):
    """Two workers racing on the same replayed alerts: the script is atomic."""
    batch = [alert(token, token % 7) for token in range(60)]
    results = await asyncio.gather(
        AlertSink(client, keys).write(batch), AlertSink(client, keys).write(batch[::-1])
    )
    assert sum(len(r.written) for r in results) == 60
    assert await client.xlen(keys.alerts) == 60


def test_bad_parameters_are_rejected(keys):
    client = aioredis.Redis()
    with pytest.raises(ValueError):
        AlertSink(client, keys, maxlen=-1)
    with pytest.raises(ValueError):
        AlertSink(client, keys, dedup_horizon=0)


async def test_a_client_without_decoding_gets_the_same_result(redis_endpoint, keys):
    raw = aioredis.Redis.from_url(redis_endpoint.url)  # replies as bytes
    result = await AlertSink(raw, keys).write([alert(1, 0), alert(1, 0)])
    assert result.written == {alert(1, 0).id: f"{ms(0)}-0"}
    assert result.duplicates == (alert(1, 0).id,)
    await raw.aclose()
