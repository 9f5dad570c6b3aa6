"""The ingestor against real components: an in-process Kite simulator and a Tansu broker.

Nothing is mocked: ticks travel over a real WebSocket from the simulator (driven by the
real MarketSimulator), through the ingestor, into a real broker, and the tests read them
back with a plain aiokafka consumer. Every test uses its own topic.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import random
import signal
import sys
import time
import tracemalloc
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord, TopicPartition

from config.instruments import InstrumentMaster
from config.settings import Settings
from core import tick_envelope
from core.data_ingestor import (
    AccessTokenRejected,
    DataIngestor,
    IngestorError,
    TickPublisher,
    TooManyTokensError,
    backoff_delay,
    connection_url,
    redact_url,
    shard_tokens,
)
from core.frame_file import read_frames
from core.kite_protocol import decode_packet, encode_frame, encode_packet, packet_token, split_frame
from core.market_simulator import MarketSimulator, select_universe
from core.tick import Mode, Tick
from core.timeutil import IST
from scripts.kite_simulator import KiteSimulatorServer
from tests.support.services import BrokerEndpoint
from topology.topics import TopicSpec, ensure_topics

API_KEY = "test-key"
ACCESS_TOKEN = "test-access-token-s3cret"
MARKET_START = datetime(2026, 11, 24, 9, 15, tzinfo=IST)
PARTITIONS = 4
REPO = Path(__file__).resolve().parents[2]


@lru_cache(maxsize=1)
def master() -> InstrumentMaster:
    return InstrumentMaster.load()


def make_market(n: int = 40) -> MarketSimulator:
    return MarketSimulator(select_universe(master(), n), 7, MARKET_START)


def make_settings(broker: BrokerEndpoint, url: str, topic: str, **overrides: Any) -> Settings:
    """Settings of one test: fast liveness and backoff, no metrics port, own topic."""
    values: dict[str, Any] = {
        "broker_url": broker.url,
        "kite_api_key": API_KEY,
        "kite_access_token": ACCESS_TOKEN,
        "kite_ws_url": url,
        "kite_mode": "full",
        "topic_ticks": topic,
        "topic_partitions": PARTITIONS,
        "ingestor_liveness_timeout": 1.0,
        "ingestor_backoff_initial": 0.05,
        "ingestor_backoff_max": 0.2,
        "ingestor_metrics_port": 0,
        "ingestor_record_path": None,
        "producer_linger_ms": 5,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


async def new_topic(broker: BrokerEndpoint) -> str:
    topic = f"ticks-{uuid.uuid4().hex[:10]}"
    await ensure_topics(broker.bootstrap, [TopicSpec(topic, PARTITIONS)])
    return topic


async def consume_all(
    broker: BrokerEndpoint, topic: str, timeout: float = 20
) -> list[ConsumerRecord]:
    """Every record of the topic, read up to each partition's high watermark.

    The high watermark comes from Fetch responses (Tansu's ListOffsets(latest) is off by
    a batch, see DESIGN.md), so this reads until position >= highwater everywhere.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=broker.bootstrap, enable_auto_commit=False, group_id=None
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        records: list[ConsumerRecord] = []
        deadline = time.monotonic() + timeout
        while True:
            batch = await consumer.getmany(timeout_ms=300)
            for part in batch.values():
                records.extend(part)
            done = True
            for tp in partitions:
                highwater = consumer.highwater(tp)
                if highwater is None or await consumer.position(tp) < highwater:
                    done = False
            if done:
                return records
            assert time.monotonic() < deadline, "topic not read to its high watermark in time"
    finally:
        await consumer.stop()


async def eventually(condition: Callable[[], bool], timeout: float = 10, what: str = "") -> float:
    """Poll until true; returns the seconds it took (fails the test on timeout)."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, f"timed out waiting for {what or condition}"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


def counter_clock(start: int = 1_800_000_000_000) -> Callable[[], int]:
    """A deterministic receive-time source: +1 ms per frame."""
    values = itertools.count(start)
    return lambda: next(values)


class FirehoseMarket:
    """A load generator with the market's interface: every token ticks every ``period``.

    It repeats the real market's opening ticks instead of simulating (the simulation costs
    ~20 us a tick in this process), so a test can stream 10k+ ticks/s in-process.
    """

    def __init__(self, market: MarketSimulator, period: float) -> None:
        self.tokens = market.tokens
        self._ticks = [t for t in (market.snapshot(token) for token in self.tokens) if t]
        self._by_token = {tick.instrument_token: tick for tick in self._ticks}
        self._start = market.now
        self._period = period
        self.now = market.now

    def _periods(self, when: datetime) -> int:
        return int((when - self._start).total_seconds() / self._period)

    def advance(self, until: datetime) -> list[Tick]:
        ticks = self._ticks * (self._periods(until) - self._periods(self.now))
        self.now = until
        return ticks

    def snapshot(self, token: int) -> Tick | None:
        return self._by_token.get(token)


@pytest.fixture
async def simulator() -> AsyncIterator[KiteSimulatorServer]:
    sim = KiteSimulatorServer(
        make_market(), api_key=API_KEY, access_token=ACCESS_TOKEN, speed=20.0,
        heartbeat_interval=0.2,
    )  # fmt: skip
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


class Running:
    """Starts an ingestor and always stops it, so no task outlives a test."""

    def __init__(self, ingestor: DataIngestor) -> None:
        self.ingestor = ingestor

    async def __aenter__(self) -> DataIngestor:
        await self.ingestor.start()
        return self.ingestor

    async def __aexit__(self, *exc: object) -> None:
        await self.ingestor.stop()


async def drain(sim: KiteSimulatorServer, ingestor: DataIngestor, timeout: float = 20) -> None:
    """Stop the market and wait until everything sent was read and acknowledged."""
    sim.pause_market()
    await asyncio.sleep(0.2)
    await eventually(
        lambda: ingestor.stats.ticks_read == sim.sent_ticks and ingestor.publisher.depth == 0,
        timeout,
        "every sent tick read and acknowledged",
    )


# --- pure helpers ---


def test_shard_tokens_balances_dedupes_and_refuses_too_many() -> None:
    shards = shard_tokens(range(7000), 3, 3000)
    assert [len(s) for s in shards] == [2334, 2333, 2333]
    assert [t for s in shards for t in s] == list(range(7000))
    assert shard_tokens([5, 5, 6, 5], 3, 3000) == [[5, 6]]
    assert shard_tokens(range(3000), 3, 3000) == [list(range(3000))]
    with pytest.raises(TooManyTokensError, match=r"9001 tokens requested but at most 9000"):
        shard_tokens(range(9001), 3, 3000)


def test_backoff_is_exponential_capped_and_jittered() -> None:
    rng = random.Random(1)
    delays = [backoff_delay(n, 0.5, 30.0, rng) for n in range(12)]
    for n, delay in enumerate(delays):
        base = min(30.0, 0.5 * 2**n)
        assert base / 2 <= delay <= base
    assert max(delays) <= 30.0 and delays[-1] >= 15.0
    again = random.Random(1)
    assert delays == [backoff_delay(n, 0.5, 30.0, again) for n in range(12)]


def test_url_carries_credentials_and_redaction_drops_them() -> None:
    url = connection_url("wss://ws.kite.trade", "key1", "tok/en")
    assert url == "wss://ws.kite.trade/?api_key=key1&access_token=tok%2Fen"
    assert redact_url(url) == "wss://ws.kite.trade/"
    with pytest.raises(IngestorError, match="ws:// or wss://"):
        connection_url("http://example.com/?access_token=x", "k", "t")


# --- (a) ticks into the topic ---


async def test_ticks_arrive_in_topic_keyed_by_token_with_valid_envelopes(
    broker: BrokerEndpoint, simulator: KiteSimulatorServer
) -> None:
    topic = await new_topic(broker)
    settings = make_settings(broker, simulator.url, topic)
    market = simulator.market
    assert market is not None
    tokens = market.tokens
    ingestor = DataIngestor(settings, tokens, clock_ms=counter_clock())
    async with Running(ingestor):
        await eventually(lambda: ingestor.stats.ticks_read > 300, 15, "ticks")
        await drain(simulator, ingestor)
    records = await consume_all(broker, topic)

    assert len(records) == simulator.sent_ticks == ingestor.stats.ticks_read
    assert ingestor.publisher.published == len(records) and ingestor.publisher.dropped == 0
    partition_of: dict[bytes, int] = {}
    last: dict[int, tuple[int, bytes]] = {}
    for record in records:
        envelope = tick_envelope.decode(record.value)
        token = packet_token(envelope.packet)
        assert record.key == tick_envelope.token_key(token)
        assert decode_packet(envelope.packet) is not None
        assert 1_800_000_000_000 <= envelope.received_at_ms < 1_800_000_000_000 + 100_000
        # One token, one partition (so one worker owns it end to end).
        assert partition_of.setdefault(record.key, record.partition) == record.partition
        if record.offset >= last.get(token, (-1, b""))[0]:
            last[token] = (record.offset, envelope.packet)
    # The newest record of each token is exactly the last packet the server sent for it.
    assert {token: packet for token, (_, packet) in last.items()} == simulator.last_sent
    assert len(last) >= 20, "most of the 40 instruments ticked"
    assert ingestor.metrics.value("tickflow_ingestor_ticks_published_total") == len(records)


# --- (b) reconnect after a drop ---


async def test_reconnects_after_drop_and_resubscribes_everything_in_full_mode(
    broker: BrokerEndpoint, simulator: KiteSimulatorServer
) -> None:
    topic = await new_topic(broker)
    market = simulator.market
    assert market is not None
    tokens = [*market.tokens, *range(50_000_000, 50_000_010)]  # 10 unknown: never tick
    settings = make_settings(broker, simulator.url, topic, ingestor_tokens_per_connection=30)
    ingestor = DataIngestor(settings, tokens)
    expected = sorted(
        ({t: "full" for t in shard} for shard in shard_tokens(tokens, 3, 30)), key=min
    )
    assert [len(e) for e in expected] == [25, 25]

    def subscribed() -> list[dict[int, Mode]]:
        return sorted(simulator.subscriptions(), key=lambda subs: min(subs, default=0))

    async with Running(ingestor):
        await eventually(lambda: subscribed() == expected, 10, "initial subscriptions")
        await eventually(lambda: ingestor.stats.ticks_read > 100, 10, "ticks")
        assert await simulator.drop_connections() == 2
        await eventually(
            lambda: all(s.connects == 2 for s in ingestor.shards), 10, "both shards reconnected"
        )
        await eventually(lambda: subscribed() == expected, 10, "subscriptions restored")
        read = ingestor.stats.ticks_read
        await eventually(lambda: ingestor.stats.ticks_read > read + 50, 10, "ticks again")
    assert [s.reconnects for s in ingestor.shards] == [{"closed": 1}, {"closed": 1}]
    assert simulator.handshake_attempts == 4
    assert ingestor.metrics.value("tickflow_ingestor_reconnects_total", {"reason": "closed"}) == 2


# --- (c) liveness watchdog ---


async def test_watchdog_reconnects_a_silent_connection(
    broker: BrokerEndpoint, simulator: KiteSimulatorServer
) -> None:
    topic = await new_topic(broker)
    market = simulator.market
    assert market is not None
    liveness = 0.6
    settings = make_settings(broker, simulator.url, topic, ingestor_liveness_timeout=liveness)
    ingestor = DataIngestor(settings, market.tokens)
    shard = ingestor.shards[0]
    async with Running(ingestor):
        await eventually(lambda: ingestor.stats.ticks_read > 50, 10, "ticks")
        simulator.silence(True)  # the TCP connection stays open; nothing arrives
        took = await eventually(lambda: shard.reconnects.get("liveness", 0) >= 1, 5, "watchdog")
        assert took <= liveness + 1.0  # the last frame came at most `liveness` before
        assert shard.reconnects == {"liveness": 1}
        await eventually(lambda: shard.connects == 2, 5, "reconnected")
        simulator.silence(False)
        read = ingestor.stats.ticks_read
        await eventually(lambda: ingestor.stats.ticks_read > read + 20, 10, "ticks again")
    reasons = {"reason": "liveness"}
    assert ingestor.metrics.value("tickflow_ingestor_reconnects_total", reasons) >= 1
    assert ingestor.metrics.value("tickflow_ingestor_reconnects_total", {"reason": "closed"}) == 0


# --- (d) 403 ---


async def test_rejected_token_stops_with_clear_error_and_no_retry_storm(
    broker: BrokerEndpoint, simulator: KiteSimulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    topic = await new_topic(broker)
    settings = make_settings(broker, simulator.url, topic, kite_access_token="expired-token-XYZ")
    ingestor = DataIngestor(settings, range(1_000_000, 1_007_000))  # 3 shards
    assert len(ingestor.shards) == 3
    with pytest.raises(AccessTokenRejected, match=r"access token rejected \(403\): get a new"):
        await asyncio.wait_for(ingestor.run(), 10)
    await asyncio.sleep(1.0)  # several backoff periods: nothing may try again
    assert ingestor.stopped
    assert [s.attempts for s in ingestor.shards] == [1, 1, 1]
    assert (simulator.handshake_attempts, simulator.rejected_handshakes) == (3, 3)
    assert {s.state for s in ingestor.shards} == {"rejected"}
    assert ingestor.metrics.value("tickflow_ingestor_access_token_rejections_total") == 3
    assert "expired-token-XYZ" not in caplog.text
    assert "access token rejected (403)" in caplog.text


# --- (e) stalled broker: bounded memory, no loss ---


async def stalled_broker_run(
    own_broker: BrokerEndpoint, *, drop_when_full: bool, stall: float
) -> tuple[DataIngestor, KiteSimulatorServer, dict[str, float], list[ConsumerRecord]]:
    capacity = 1000
    sim = KiteSimulatorServer(
        FirehoseMarket(make_market(600), period=0.05),  # 12,000 ticks/s
        api_key=API_KEY, access_token=ACCESS_TOKEN, heartbeat_interval=0.2, conflate_at=500,
    )  # fmt: skip
    await sim.start()
    try:
        topic = await new_topic(own_broker)
        settings = make_settings(
            own_broker, sim.url, topic, ingestor_buffer_size=capacity,
            ingestor_drop_when_full=drop_when_full, ingestor_liveness_timeout=30.0,
        )  # fmt: skip
        ingestor = DataIngestor(settings, sim.market.tokens if sim.market else [])
        figures: dict[str, float] = {}
        async with Running(ingestor):
            publisher = ingestor.publisher
            await eventually(lambda: publisher.published > 2000, 15, "ticks flowing")
            tracemalloc.start()
            try:
                generated, read = sim.ticks_generated, ingestor.stats.ticks_read
                own_broker.pause()
                try:
                    max_depth = 0
                    started = time.monotonic()
                    settled: tuple[int, int] | None = None
                    while (elapsed := time.monotonic() - started) < stall:
                        max_depth = max(max_depth, publisher.depth)
                        if settled is None and elapsed >= stall / 3:
                            # Every buffer on the way has filled by now; from here on an
                            # unbounded one would grow with everything the market makes.
                            settled = (tracemalloc.get_traced_memory()[0], sim.ticks_generated)
                        await asyncio.sleep(0.01)
                    assert settled is not None
                    traced = tracemalloc.get_traced_memory()[0]
                    figures = {
                        "max_depth": max_depth,
                        "read": ingestor.stats.ticks_read - read,
                        "generated": sim.ticks_generated - generated,
                        "traced_mb": traced / 1e6,
                        "late_growth_mb": (traced - settled[0]) / 1e6,
                        "late_generated": sim.ticks_generated - settled[1],
                    }
                finally:
                    own_broker.resume()
            finally:
                tracemalloc.stop()
            await drain(sim, ingestor, timeout=40)
        records = await consume_all(own_broker, topic)
        return ingestor, sim, figures, records
    finally:
        await sim.stop()


async def test_stalled_broker_backpressure_bounds_memory_and_loses_nothing(
    own_broker: BrokerEndpoint,
) -> None:
    ingestor, sim, figures, records = await stalled_broker_run(
        own_broker, drop_when_full=False, stall=3.0
    )
    publisher = ingestor.publisher
    capacity = publisher.capacity
    # The market kept producing far more than the buffer can hold...
    assert figures["generated"] > 10 * capacity, figures
    # ...but the buffer filled up to its bound and not past it, the reader stopped,
    assert figures["max_depth"] == capacity == publisher.max_depth, figures
    assert figures["read"] <= capacity, figures
    # and the process's Python memory stopped growing once the buffers on the way were
    # full: an unbounded one would have grown by ~200 bytes a tick the market made
    # meanwhile (the market runs in this process, so it is counted too).
    assert figures["traced_mb"] < 8, figures
    assert figures["late_growth_mb"] < 1.0, figures
    assert figures["late_generated"] * 200 / 1e6 > 2.0, figures
    # Then everything read was delivered, exactly once (no publish failed).
    assert publisher.retries == 0 and publisher.dropped == 0
    assert len(records) == ingestor.stats.ticks_read == publisher.published == sim.sent_ticks


async def test_stalled_broker_with_drop_when_full_counts_every_drop(
    own_broker: BrokerEndpoint,
) -> None:
    ingestor, sim, figures, records = await stalled_broker_run(
        own_broker, drop_when_full=True, stall=2.0
    )
    publisher = ingestor.publisher
    assert figures["max_depth"] == publisher.capacity, figures
    assert publisher.dropped > 1000, "the reader kept reading and dropping"
    assert ingestor.stats.ticks_read == publisher.published + publisher.dropped
    assert len(records) == publisher.published
    assert ingestor.metrics.value("tickflow_ingestor_ticks_dropped_total") == publisher.dropped
    assert sim.sent_ticks == ingestor.stats.ticks_read


async def test_failed_publishes_are_retried_not_lost(own_broker: BrokerEndpoint) -> None:
    """A stall longer than the producer's request timeout fails sends: they are retried."""
    topic = await new_topic(own_broker)
    settings = make_settings(own_broker, "ws://127.0.0.1:1/", topic)
    publisher = TickPublisher.from_settings(settings, request_timeout_ms=1500)
    publisher.retry_backoff = 0.2
    await publisher.start()
    try:
        for n in range(50):
            await publisher.put(b"1", tick_envelope.encode(b"x" * 8, n))
        assert await publisher.flush(10)
        own_broker.pause()
        try:
            for n in range(50, 300):
                await publisher.put(b"1", tick_envelope.encode(b"x" * 8, n))
            await asyncio.sleep(3.5)
        finally:
            own_broker.resume()
        assert await publisher.flush(30), f"{publisher.depth} ticks still held"
    finally:
        await publisher.stop(10)
    assert publisher.retries > 0, "the stall should have failed some sends"
    assert publisher.published == publisher.accepted == 300
    stamps = [
        tick_envelope.decode(r.value).received_at_ms for r in await consume_all(own_broker, topic)
    ]
    assert set(stamps) == set(range(300)), "every tick delivered (duplicates allowed)"


# --- (f) sharding ---


async def test_7000_tokens_use_three_connections_of_at_most_3000(
    broker: BrokerEndpoint, simulator: KiteSimulatorServer
) -> None:
    topic = await new_topic(broker)
    market = simulator.market
    assert market is not None
    tokens = [*market.tokens, *range(60_000_000, 60_000_000 + 6960)]
    settings = make_settings(broker, simulator.url, topic)
    ingestor = DataIngestor(settings, tokens)
    async with Running(ingestor):
        await eventually(
            lambda: sum(len(s) for s in simulator.subscriptions()) == 7000, 10, "subscriptions"
        )
        subscriptions = simulator.subscriptions()
    assert sorted(len(s) for s in subscriptions) == [2333, 2333, 2334]
    assert set().union(*subscriptions) == set(tokens)
    assert {mode for s in subscriptions for mode in s.values()} == {"full"}
    with pytest.raises(TooManyTokensError):
        DataIngestor(settings, range(9001))


# --- (g) malformed input ---


async def test_malformed_frames_and_text_are_counted_not_fatal(
    broker: BrokerEndpoint, simulator: KiteSimulatorServer
) -> None:
    topic = await new_topic(broker)
    settings = make_settings(broker, simulator.url, topic)
    ingestor = DataIngestor(settings, [256265])
    probe = Tick((424242 << 8) | 1, "quote", True, 123.45, 1, 123.0, 10, 1, 1, 120, 125, 119, 121)
    good = encode_packet(probe, "quote")
    async with Running(ingestor):
        await eventually(lambda: ingestor.stats.frames > 0, 10, "first frame")
        simulator.pause_market()
        await asyncio.sleep(0.1)
        read = ingestor.stats.ticks_read
        await simulator.inject_frame(encode_frame([good, good])[:-10])  # 2nd packet cut
        await simulator.inject_frame(encode_frame([b"\x00" * 164]))  # legacy length
        await simulator.inject_frame(b"")
        await simulator.inject_frame("this is not json")
        await simulator.inject_frame('{"type": "order", "data": {"order_id": "1"}}')
        await simulator.inject_frame('{"type": "error", "data": "server hiccup"}')
        await simulator.inject_frame(encode_frame([good]))
        await eventually(lambda: ingestor.stats.ticks_read == read + 2, 5, "the good packets")
        await eventually(lambda: ingestor.publisher.depth == 0, 10, "published")
        assert ingestor.shards[0].state == "connected"
    m = ingestor.metrics

    def errors(kind: str) -> float:
        return m.value("tickflow_ingestor_parse_errors_total", {"kind": kind})

    assert (errors("truncated_frame"), errors("unknown_length"), errors("empty_frame")) == (1, 1, 1)
    assert errors("text") == 1
    assert m.value("tickflow_ingestor_text_messages_total", {"type": "order"}) == 1
    assert m.value("tickflow_ingestor_text_messages_total", {"type": "error"}) == 1
    assert ingestor.shards[0].reconnects == {} and ingestor.shards[0].connects == 1
    packets = [tick_envelope.decode(r.value).packet for r in await consume_all(broker, topic)]
    assert packets.count(good) == 2


# --- (h) recording ---


async def test_recording_reads_back_exactly_what_was_received(
    broker: BrokerEndpoint, simulator: KiteSimulatorServer, tmp_path: Path
) -> None:
    topic = await new_topic(broker)
    path = tmp_path / "rec" / "frames.tfrec"
    market = simulator.market
    assert market is not None
    settings = make_settings(broker, simulator.url, topic, ingestor_record_path=path)
    ingestor = DataIngestor(settings, market.tokens, clock_ms=counter_clock())
    async with Running(ingestor):
        await eventually(lambda: ingestor.stats.ticks_read > 200, 10, "ticks")
        await asyncio.sleep(0.5)
        await drain(simulator, ingestor)
        await asyncio.sleep(0.5)  # idle: heartbeats get recorded too
    with path.open("rb") as source:
        frames = list(read_frames(source))
    assert len(frames) == ingestor.stats.frames
    assert sum(len(f.frame) for f in frames) == ingestor.stats.bytes
    heartbeats = [f for f in frames if len(f.frame) == 1]
    assert len(heartbeats) == ingestor.stats.heartbeats >= 1
    # Each recorded frame, split and stamped with its recorded time, is exactly the set of
    # records in the topic: the recording holds the frames as they were received.
    expected = sorted(
        tick_envelope.encode(packet, f.received_at_ms)
        for f in frames
        for packet in split_frame(f.frame)
    )
    assert sorted(r.value for r in await consume_all(broker, topic)) == expected
    assert len(expected) == ingestor.stats.ticks_read


# --- the command line ---


async def run_cli(env: dict[str, str], *args: str, timeout: float = 30) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "scripts.run_ingestor", *args,
        cwd=REPO, env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        output, _ = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, output.decode()


async def test_command_line_exits_nonzero_on_403_and_on_unreachable_broker(
    broker: BrokerEndpoint, simulator: KiteSimulatorServer
) -> None:
    topic = f"ticks-{uuid.uuid4().hex[:10]}"
    env = {
        "TICKFLOW_BROKER_URL": broker.url,
        "TICKFLOW_KITE_WS_URL": simulator.url,
        "TICKFLOW_KITE_API_KEY": API_KEY,
        "TICKFLOW_KITE_ACCESS_TOKEN": "revoked-token-QQQ",
        "TICKFLOW_TOPIC_TICKS": topic,
        "TICKFLOW_TOPIC_PARTITIONS": str(PARTITIONS),
        "TICKFLOW_INGESTOR_METRICS_PORT": "0",
        "TICKFLOW_LOG_LEVEL": "DEBUG",
    }
    code, output = await run_cli(env, "--tokens", "5")
    assert code == 3, output
    assert "run_ingestor: access token rejected (403)" in output
    assert "revoked-token-QQQ" not in output
    assert simulator.handshake_attempts == 1

    from scripts.services import free_port

    code, output = await run_cli(
        {**env, "TICKFLOW_BROKER_URL": f"kafka://127.0.0.1:{free_port()}"},
        "--tokens", "5", "--broker-timeout", "1",
    )  # fmt: skip
    assert code == 2, output
    assert "unreachable" in output.splitlines()[-1]
    assert "Traceback" not in output


async def http_get(url: str) -> tuple[int, str]:
    def fetch() -> tuple[int, str]:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            return 0, ""

    return await asyncio.to_thread(fetch)


async def test_command_line_serves_health_and_metrics_and_stops_cleanly(
    broker: BrokerEndpoint, simulator: KiteSimulatorServer
) -> None:
    from scripts.services import free_port

    topic = f"ticks-{uuid.uuid4().hex[:10]}"
    port = free_port()
    env = {
        "TICKFLOW_BROKER_URL": broker.url,
        "TICKFLOW_KITE_WS_URL": simulator.url,
        "TICKFLOW_KITE_API_KEY": API_KEY,
        "TICKFLOW_KITE_ACCESS_TOKEN": ACCESS_TOKEN,
        "TICKFLOW_KITE_TOKENS": "[256265, 8960258]",
        "TICKFLOW_TOPIC_TICKS": topic,
        "TICKFLOW_TOPIC_PARTITIONS": str(PARTITIONS),
        "TICKFLOW_INGESTOR_METRICS_PORT": str(port),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "scripts.run_ingestor",
        cwd=REPO, env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while (health := await http_get(f"http://127.0.0.1:{port}/health"))[0] != 200:
            assert time.monotonic() < deadline and proc.returncode is None, health
            await asyncio.sleep(0.1)
        assert json.loads(health[1])["connections"] == [
            {"index": 0, "state": "connected", "tokens": 2}
        ]
        await eventually(lambda: simulator.sent_ticks > 20, 10, "ticks sent")
        status, metrics = await http_get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200 and "tickflow_ingestor_ticks_published_total" in metrics
        proc.send_signal(signal.SIGTERM)
        output, _ = await asyncio.wait_for(proc.communicate(), 20)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = output.decode()
    assert proc.returncode == 0, text
    assert f"from {simulator.url} into topic {topic}" in text  # the URL, without credentials
    assert ACCESS_TOKEN not in text
    published = int(text.rsplit("ticks read, ", 1)[1].split(" published")[0])
    assert published > 20
    assert len(await consume_all(broker, topic)) == published
