"""The tick hop: the one agent that runs at tick rate.

Per tick it decodes the record once, keeps the latest tick of the token for the
``tick:{token}`` mirror, and feeds the token's volume engine (``core.volume_engine``),
which closes 1-minute bars that go to the ``bars`` topic.

Exactness without per-tick table writes (a changelog write per tick would cap the hop at
a third of a bare agent's rate). The volume state of a token is checkpointed to the
RocksDB-backed table only when it emits bars, and at each partition's minute sweep for
tokens it changed (so at most about once per token per event-minute). Faust acknowledges
each tick as usual, but a commit gate (``topology.commit_gate``) keeps the committed
offset of each partition at or below the oldest tick whose effect is not yet durable
(covered by a checkpoint, its bars confirmed by the broker, its mirror written): after a
crash the worker resumes at or before that tick, and the engine ignores ticks at or
below a token's checkpointed offset.
A crash therefore neither loses nor doubles a tick's effect, and bars re-emitted after
one carry the same content (downstream writes are idempotent).

The watermark that closes illiquid tokens' bars is each tick's own event time minus the
grace, applied per token as a running maximum inside the engine; so it is a function of
the record being processed, and a replay from any offset re-derives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import faust
from faust.types import EventT

from core import tick_envelope
from core.bars import Bar
from core.kite_protocol import DecodeStats, decode_packet
from core.sessions import minute_start
from core.tick import Tick
from core.volume_engine import TokenVolumeState, advance_watermark, apply_tick
from storage.redis_client import async_redis
from storage.tick_sink import TickSink
from topology import metrics
from topology.app import app, settings, ticks_topic, token_topic
from topology.commit_gate import CommitGate
from topology.greeks import GreeksStage
from topology.instruments import instrument_master, keys, symbol_of
from topology.market import MarketFeed

log = logging.getLogger(__name__)

#: Ticks processed while a flush is in flight before processing waits for it: bounds
#: memory (and the uncommitted tail) when Redis or the broker is slow.
MAX_HELD = 500_000
#: Seconds of receive time without any exchange time after which a partition's clock
#: becomes the receive time (see TickHop._event_time).
RECEIVE_CLOCK_AFTER = 60

bars_topic = token_topic(settings.topic_bars)
#: token (as str) -> {"p": partition, "s": TokenVolumeState.to_dict()}
volume_states = app.Table("volume-state", default=None, partitions=settings.topic_partitions)


class TickHop:
    """The in-memory side of the tick hop for the partitions this worker owns."""

    def __init__(
        self,
        sink: TickSink,
        grace: float,
        gate: CommitGate,
        greeks: GreeksStage,
        market: MarketFeed,
    ) -> None:
        self.sink = sink
        self.grace = grace
        self.gate = gate
        self.greeks = greeks
        self.market = market
        self.stats = DecodeStats()
        self.states: dict[int, TokenVolumeState] = {}
        self.tokens_of: dict[int, set[int]] = {}
        self.loaded: set[int] = set()
        self.swept: dict[int, int] = {}
        self.dirty: dict[int, dict[int, int]] = {}
        #: partition -> the latest exchange timestamp seen (event time for ticks without one)
        self.exchange_time: dict[int, int] = {}
        #: partitions whose clock is the receive time; partition -> first unclocked tick
        self.receive_clocked: set[int] = set()
        self.unclocked_since: dict[int, int] = {}
        #: partition -> the offset after the last tick processed
        self.next_offset: dict[int, int] = {}
        self.since_flush = 0
        self.latest: dict[int, tuple[Tick, int]] = {}
        #: token -> event time of its latest tick (what the Greeks are computed at)
        self.event_times: dict[int, int] = {}
        self.seen: set[int] = set()
        self.in_flight: asyncio.Task[None] | None = None
        #: partition -> tokens whose emitted bars the broker has not confirmed yet
        self.unconfirmed: dict[int, set[int]] = {}
        #: partition -> tokens whose bars are confirmed, to checkpoint at the next event
        self.confirmed: dict[int, set[int]] = {}
        self.last_flush = time.monotonic()
        self._errors_reported: dict[str, int] = {}
        self.processed = 0
        self._processed_reported = 0

    # -- state --------------------------------------------------------------------------

    def _load_partition(self, partition: int) -> None:
        """Restore the checkpoints of a partition's tokens (after a start or rebalance)."""
        tokens = self.tokens_of.setdefault(partition, set())
        for key, value in volume_states.items():
            if value and value.get("p") == partition:
                token = int(key)
                self.states[token] = TokenVolumeState.from_dict(value["s"])
                tokens.add(token)
        self.loaded.add(partition)
        log.info("tick hop: partition %d restored %d token states", partition, len(tokens))

    def forget(self, partitions: set[int]) -> None:
        """Drop what belongs to revoked partitions: their unacked ticks go to the new owner."""
        for partition in partitions:
            for token in self.tokens_of.pop(partition, set()):
                self.states.pop(token, None)
                self.event_times.pop(token, None)
            self.loaded.discard(partition)
            self.swept.pop(partition, None)
            self.dirty.pop(partition, None)
            self.next_offset.pop(partition, None)
            self.exchange_time.pop(partition, None)
            self.receive_clocked.discard(partition)
            self.unclocked_since.pop(partition, None)
            self.unconfirmed.pop(partition, None)
            self.confirmed.pop(partition, None)

    def _checkpoint(self, partition: int, token: int) -> None:
        volume_states[str(token)] = {"p": partition, "s": self.states[token].to_dict()}
        self.dirty[partition].pop(token, None)
        metrics.CHECKPOINTS.inc()

    # -- per event ----------------------------------------------------------------------

    async def on_event(self, event: EventT) -> None:
        message = event.message
        partition = message.partition
        offset = message.offset
        if partition not in self.loaded:
            self._load_partition(partition)
            self.gate.hold(partition, offset)
        self.next_offset[partition] = offset + 1
        self.processed += 1
        self.since_flush += 1
        dirty = self.dirty.setdefault(partition, {})
        try:
            record = tick_envelope.decode(event.value)
        except tick_envelope.EnvelopeError:
            self.stats.add_error("bad_envelope")
            return
        tick = decode_packet(record.packet, self.stats)
        if tick is None:
            return
        token = tick.instrument_token
        self.latest[token] = (tick, record.received_at_ms)
        state = self.states.get(token)
        if state is None:
            state = self.states[token] = TokenVolumeState(token)
            self.tokens_of[partition].add(token)
        event_time = self._event_time(partition, tick.exchange_timestamp, record.received_at_ms)
        if event_time is None:
            return  # mirrored; the engine waits for the partition's clock (see below)
        self.event_times[token] = event_time
        if token in self.market.watched:
            self.market.observe(token, tick.last_price, event_time)
        bars = apply_tick(
            state, token & 0xFF, offset, event_time, tick.last_price, tick.volume_traded
        )
        if token not in dirty:
            dirty[token] = offset
        if bars:
            await self._emit(partition, bars)
        if self.confirmed.get(partition):
            self._checkpoint_confirmed(partition)
        watermark = event_time - self.grace
        minute = minute_start(watermark)
        if minute > self.swept.get(partition, -1):
            self.swept[partition] = minute
            await self._sweep(partition, offset, watermark)

    def _event_time(
        self, partition: int, exchange_time: int | None, received_at_ms: int
    ) -> int | None:
        """The tick's event time: its exchange time; for a packet without one (LTP, index
        quote, the quote snapshot Kite sends on subscribe), the partition's latest
        exchange time, so it never moves a token to another clock.

        The ingestor's receive time is the clock only on a partition that carries no
        exchange time at all (a quote-mode subscription) for ``RECEIVE_CLOCK_AFTER``
        seconds: taken earlier, the snapshots sent on subscribe would put every token on
        the host's day and hour, which in a replay of a past session (or a simulated
        day) is not the data's, and every later tick would be dropped as late. Until a
        partition has a clock, its ticks are mirrored but not applied."""
        if exchange_time:
            if exchange_time > self.exchange_time.get(partition, 0):
                self.exchange_time[partition] = exchange_time
            return exchange_time
        clock = self.exchange_time.get(partition)
        if clock is not None:
            return clock
        received = received_at_ms // 1000
        if partition not in self.receive_clocked:
            since = self.unclocked_since.setdefault(partition, received)
            if received - since < RECEIVE_CLOCK_AFTER:
                metrics.TICKS_WITHOUT_CLOCK.inc()
                return None
            self.receive_clocked.add(partition)
            log.info("partition %d carries no exchange time: receive time is its clock", partition)
        return received

    async def _sweep(self, partition: int, offset: int, watermark: float) -> None:
        """Close what event time finished for every token of the partition, and
        checkpoint every changed token that has no bar waiting for confirmation."""
        dirty = self.dirty[partition]
        for token in self.tokens_of[partition]:
            bars = advance_watermark(self.states[token], token & 0xFF, watermark)
            if bars:
                dirty.setdefault(token, offset)
                await self._emit(partition, bars)
        waiting = self.unconfirmed.get(partition, set())
        for token in [t for t in dirty if t not in waiting]:
            self._checkpoint(partition, token)

    async def _emit(self, partition: int, bars: list[Bar]) -> None:
        """Send bars; the token's checkpoint waits until the broker has them.

        A checkpoint written first could outlive the bars (the local RocksDB keeps it
        while a ``kill -9`` loses the producer's buffer), and a restart would then skip
        the ticks that made them: bars lost. Written after, a crash at worst re-emits
        bars, which downstream ignores."""
        for bar in bars:
            await bars_topic.send(key=str(bar.instrument_token).encode(), value=bar.to_dict())
        self.unconfirmed.setdefault(partition, set()).add(bars[0].instrument_token)
        metrics.BARS_EMITTED.inc(len(bars))

    def _checkpoint_confirmed(self, partition: int) -> None:
        """Checkpoint tokens whose bars the broker confirmed (not those that emitted
        newer, unconfirmed bars since: they wait for the next confirmation)."""
        waiting = self.unconfirmed.get(partition, set())
        for token in self.confirmed.pop(partition):
            if token not in waiting and token in self.states:
                self._checkpoint(partition, token)

    # -- flush: mirror, producer, acknowledgements --------------------------------------

    def flush_due(self) -> bool:
        return (
            len(self.latest) >= settings.sink_batch_size
            or time.monotonic() - self.last_flush >= settings.sink_flush_interval
        )

    async def flush(self) -> None:
        """Hand what is due to a background flush, so that processing goes on while Redis
        and the broker answer; one flush at a time. The commit limits are decided now
        (the safe offsets of this moment) and released once the flush has made them
        durable."""
        if self.in_flight is not None and not self.in_flight.done():
            if self.since_flush > MAX_HELD:
                await self.in_flight  # backpressure: Redis or the broker is slow
            return
        self.last_flush = time.monotonic()
        self.since_flush = 0
        latest, self.latest = self.latest, {}
        safe: dict[int, int] = {}
        for partition, next_offset in self.next_offset.items():
            dirty = self.dirty.get(partition)
            safe[partition] = min(dirty.values()) if dirty else next_offset
        confirming, self.unconfirmed = self.unconfirmed, {}
        self.in_flight = asyncio.create_task(self._complete(latest, safe, confirming))
        await asyncio.sleep(0)

    async def drain(self) -> None:
        if self.in_flight is not None:
            await self.in_flight

    async def _complete(
        self,
        latest: dict[int, tuple[Tick, int]],
        safe: dict[int, int],
        confirming: dict[int, set[int]],
    ) -> None:
        greeks = self.greeks.compute(latest, self.event_times)
        hashes = {keys.greeks(token): fields for token, fields in greeks.items()}
        regime, self.market.regime_to_mirror = self.market.regime_to_mirror, None
        if regime is not None:
            hashes[keys.regime] = regime.to_redis()
        if latest or hashes:
            started = time.perf_counter()
            await self.sink.write(latest, hashes)
            metrics.FLUSH_SECONDS.observe(time.perf_counter() - started)
            metrics.REDIS_WRITES.inc(len(latest))
            self.seen.update(latest)
            metrics.TOKENS_SEEN.set(len(self.seen))
            stamps = [t.exchange_timestamp for t, _ in latest.values() if t.exchange_timestamp]
            if stamps:
                metrics.LAST_EVENT_TIME.set(max(stamps))
            observe_latency(latest)
        # Bars and checkpoints must be on the broker before the ticks behind them may be
        # committed, and bars before the checkpoints that follow them.
        await app.producer.flush()
        for partition, tokens in confirming.items():
            self.confirmed.setdefault(partition, set()).update(tokens)
        durable = 0
        for partition, offset in safe.items():
            if partition in self.loaded:  # not revoked meanwhile
                durable += max(0, offset - self.gate.limits.get(partition, offset))
                self.gate.release(partition, offset)
        metrics.TICKS_CONSUMED.inc(self.processed - self._processed_reported)
        self._processed_reported = self.processed
        metrics.TICKS_DURABLE.inc(durable)
        for kind, total in self.stats.errors.items():
            metrics.TICK_ERRORS.labels(kind).inc(total - self._errors_reported.get(kind, 0))
            self._errors_reported[kind] = total


def observe_latency(latest: dict[int, tuple[Tick, int]]) -> None:
    """End-to-end latency of a sample of the ticks just mirrored (wall clock: this is
    observability, not analytics)."""
    now = time.time()
    for tick, received_at_ms in list(latest.values())[::8]:
        if tick.exchange_timestamp:
            metrics.LATENCY_FROM_EXCHANGE.observe(max(0.0, now - tick.exchange_timestamp))
        metrics.LATENCY_FROM_RECEIVE.observe(max(0.0, now - received_at_ms / 1000))


hop: TickHop | None = None
commit_gate = CommitGate(settings.topic_ticks)


@app.agent(ticks_topic)
async def tick_hop(stream: faust.StreamT[bytes]) -> None:
    global hop
    client = async_redis(settings)
    sink = TickSink(
        client,
        keys,
        symbol_of,
        on_error=lambda _exc: metrics.REDIS_ERRORS.inc(),
        ttl=settings.tick_ttl,
        hashes_ttl=settings.analytics_ttl,
    )
    greeks = GreeksStage(instrument_master())
    market = MarketFeed(greeks.underlyings, settings.vix_token, settings.greeks_min_interval)
    hop = TickHop(sink, settings.watermark_grace, commit_gate, greeks, market)
    commit_gate.install(app.consumer)
    try:
        # ``async for value in stream`` with the stream's current event, rather than
        # ``stream.events()``: one async-generator layer less per tick.
        async for _ in stream:
            event = stream.current_event
            if event is not None:
                await hop.on_event(event)
            if hop.flush_due():
                await hop.flush()
    finally:
        with contextlib.suppress(Exception):
            await hop.drain()
        hop = None
        await client.aclose()


@app.timer(interval=settings.sink_flush_interval)
async def flush_idle() -> None:
    """Flush the mirror and acknowledgements when no tick arrives to do it."""
    if hop is not None and hop.flush_due():
        await hop.flush()


@app.on_partitions_revoked.connect  # type: ignore[arg-type]
async def on_revoked(sender: Any, revoked: set[Any], **kwargs: Any) -> None:
    if hop is not None:
        hop.forget({tp.partition for tp in revoked if tp.topic == settings.topic_ticks})
