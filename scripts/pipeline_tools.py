"""Topic tools of ``debug_pipeline``: ``tail``, ``replay`` and ``diff``.

These are the questions an operator asks when a number in Redis looks wrong: *what is
actually on the topic* (``tail``), *what happens if I run these ticks again, away from
production* (``replay``), and *is Redis what the ticks say it should be* (``diff``).
:func:`register` adds the three subcommands to ``debug_pipeline``'s parser; each handler
takes the parsed arguments and returns the exit status. ``python -m scripts.pipeline_tools``
runs them standalone.

``tail TOPIC``
    Prints the records of any topic as JSON lines (``topic``, ``partition``, ``offset``,
    ``timestamp``, ``key``, ``value``), from an offset (``--from-offset N``, negative =
    the last N of each partition; default -10) or an instant (``--from-time``: ISO 8601,
    naive = IST, or epoch seconds), up to the current end (``--follow``: keep waiting) or
    ``--to-time``/``--limit``. ``--token``/``--symbol`` keep one instrument's records
    (and read only its partition of a pipeline topic). Ticks are decoded (envelope +
    Kite packet) into the fields of ``tick:{token}``; JSON topics are shown as JSON;
    anything else as hex.

``replay``
    Publishes a recorded frame file (``--file``, the ingestor's ``--record`` format) or
    a range of a topic (``--topic``, with the same range options as ``tail``) into a
    *separate* pipeline instance ``--into NAME``: its topics are ``NAME-<topic>``
    (created with the configured partition count), its app id ``NAME`` and its Redis
    prefix ``NAME:``, so a worker started with the printed environment computes
    everything again without touching production. ``--speed X`` replays X times faster
    than recorded (receive time for frames, record timestamps for topics); 0 = as fast as
    possible. Replayed ticks keep their original receive time: event time is the same,
    so the instance computes the same bars.

``diff``
    Recomputes one token's 1-minute bars, volume results and indicators from its ticks
    with the core (``core.volume_engine``, ``core.volume_analytics``,
    ``core.indicators``), exactly as the workers do, and compares them with Redis:
    every ``bars:1m:{token}`` entry in the recomputed range, and ``vol:{token}`` and
    ``ind:{token}`` (which hold the latest bar's values) against the recomputed values
    for the bar they name. ``--instance NAME`` diffs a replay instance. Exit 0 when
    nothing differs, 1 otherwise.

    Inputs and limits of the recomputation: the token's whole partition of the ticks
    topic (begin to the true end), so bars before the topic's retention cannot be
    checked; the tick hop's watermark sweep is re-derived from every record of that
    partition, as the worker derives it. Baselines and warmed indicator state come from
    the token's records on the baselines topic, applied before the first live bar (what
    ``make run`` and ``bootstrap_baselines --publish`` do; a baseline published in the
    middle of a session changes only the bars after it, so ``vol`` can then differ
    legitimately in ``volume_ratio``/``baseline_*``). A live pipeline moves on while the
    diff reads, so Redis entries newer than the ticks read, and recomputed bars newer
    than Redis's newest (not written yet), are counted, not reported as differences;
    ``vol``/``ind`` are compared for the bar Redis names, whichever it is.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from aiokafka import AIOKafkaProducer, TopicPartition
from rich.console import Console
from rich.table import Table

from config.instruments import InstrumentMaster
from config.settings import Settings, get_settings
from core import tick_envelope
from core.bars import Bar
from core.baselines import (
    BaselinePolicy,
    SessionAccumulator,
    TokenBaseline,
    add_session,
    expected_window,
    source,
)
from core.frame_file import read_frames
from core.indicators import IndicatorResult, IndicatorState
from core.kite_protocol import DecodeStats, decode_packet, packet_token, split_frame
from core.sessions import minute_start, slot_count, slot_of
from core.timeutil import IST, iso_from_epoch, iso_from_epoch_ms
from core.volume_analytics import VolumeAnalyticsState, VolumeResult, update
from core.volume_engine import TokenVolumeState, advance_watermark, apply_tick
from scripts.topic_io import (
    PartitionTail,
    Record,
    offsets_for_time,
    partition_for_key,
    plain_consumer,
    read_tails,
    token_key,
    topic_partitions,
)
from storage.bar_sink import bar_fields
from storage.keys import Keys
from storage.redis_client import async_redis
from storage.tick_hash import tick_hash
from topology.topics import ensure_topics, pipeline_topics

EXIT_OK = 0
EXIT_DIFFERENT = 1
EXIT_ERROR = 2

Command = Callable[[argparse.Namespace], int]
Emit = Callable[[dict[str, Any]], None]


class ToolError(RuntimeError):
    """A problem the operator fixes (unknown topic, symbol, bad range): one line, exit 2."""


# --- shared helpers ------------------------------------------------------------------------


def parse_instant(text: str) -> int:
    """Epoch milliseconds of ISO 8601 (naive = IST) or of epoch seconds / milliseconds."""
    stripped = text.strip()
    with contextlib.suppress(ValueError):
        number = float(stripped)
        # Epoch seconds until the year 5138; anything larger is milliseconds.
        return int(number if number > 1e11 else number * 1000)
    try:
        moment = datetime.fromisoformat(stripped)
    except ValueError as exc:
        raise ToolError(f"not a time: {text!r} (ISO 8601 or epoch seconds)") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=IST)
    return int(moment.timestamp() * 1000)


def load_master(settings: Settings) -> InstrumentMaster:
    return InstrumentMaster.load(settings.instruments_path)


def resolve_tokens(
    tokens: Iterable[int], symbols: Iterable[str], master: InstrumentMaster | None
) -> set[int]:
    """Tokens plus the tokens of ``SYMBOL`` or ``EXCHANGE:SYMBOL`` names.

    A bare symbol matches it on every exchange (RELIANCE is on NSE and BSE)."""
    found = set(tokens)
    for text in symbols:
        exchange, _, name = text.upper().rpartition(":")
        if master is None:
            raise ToolError("--symbol needs the instrument master")
        matches = [
            inst.instrument_token
            for inst in master
            if inst.tradingsymbol.upper() == name and (not exchange or inst.exchange == exchange)
        ]
        if not matches:
            raise ToolError(f"unknown symbol {text!r} (not in the instrument master)")
        found.update(matches)
    return found


def instance_settings(settings: Settings, name: str) -> Settings:
    """The settings of a separate pipeline instance ``name`` (see the module docstring)."""
    if not name or not all(c.isascii() and (c.isalnum() or c in "._-") for c in name):
        raise ToolError(f"instance name {name!r}: use letters, digits, '.', '_' or '-'")
    update: dict[str, Any] = {
        "app_id": name,
        "redis_key_prefix": f"{name}:",
        "state_dir": settings.state_dir / name,
    }
    for field_name in (
        "topic_ticks",
        "topic_bars",
        "topic_volume",
        "topic_baselines",
        "topic_indicators",
        "topic_alerts",
    ):
        update[field_name] = f"{name}-{getattr(settings, field_name)}"
    return settings.model_copy(update=update)


def instance_env(settings: Settings, name: str) -> dict[str, str]:
    """The environment of a worker of instance ``name`` (printed by ``replay``)."""
    target = instance_settings(settings, name)
    env = {
        "TICKFLOW_APP_ID": target.app_id,
        "TICKFLOW_REDIS_KEY_PREFIX": target.redis_key_prefix,
        "TICKFLOW_STATE_DIR": str(target.state_dir),
        "TICKFLOW_WORKER_DATADIR": str(target.state_dir / "worker-data"),
    }
    for field_name in (
        "topic_ticks",
        "topic_bars",
        "topic_volume",
        "topic_baselines",
        "topic_indicators",
        "topic_alerts",
    ):
        env[f"TICKFLOW_{field_name.upper()}"] = getattr(target, field_name)
    return env


# --- decoding records ----------------------------------------------------------------------


class RecordDecoder:
    """Turns a record into something a person can read (see the module docstring)."""

    def __init__(self, kind: str, master: InstrumentMaster | None) -> None:
        self.kind = kind  # "auto", "ticks", "json" or "raw"
        self.master = master
        self.stats = DecodeStats()
        self._names: dict[int, tuple[str, str]] = {}

    def names(self, token: int) -> tuple[str, str]:
        if token not in self._names:
            inst = self.master.get(token) if self.master is not None else None
            self._names[token] = (inst.tradingsymbol, inst.exchange) if inst else ("", "")
        return self._names[token]

    def tick(self, value: bytes) -> tuple[int | None, dict[str, Any]]:
        try:
            envelope = tick_envelope.decode(value)
        except tick_envelope.EnvelopeError as exc:
            return None, {"error": str(exc), "hex": value.hex()}
        tick = decode_packet(envelope.packet, self.stats)
        if tick is None:
            return None, {"error": "undecodable Kite packet", "hex": envelope.packet.hex()}
        symbol, exchange = self.names(tick.instrument_token)
        return tick.instrument_token, dict(
            tick_hash(tick, envelope.received_at_ms, symbol, exchange)
        )

    def value(self, value: bytes | None) -> tuple[int | None, Any]:
        """(token if it is a tick, the readable value)."""
        if value is None:
            return None, None
        kind = self.kind
        if kind == "auto":
            head = value[:1]
            if head in (b"{", b"[", b'"') or head.isdigit():
                kind = "json"
            elif head == bytes([tick_envelope.VERSION]):
                kind = "ticks"
            else:
                kind = "raw"
        if kind == "ticks":
            return self.tick(value)
        if kind == "json":
            try:
                return None, json.loads(value)
            except ValueError:
                pass
        try:
            return None, value.decode("utf-8") if kind == "text" else value.hex()
        except UnicodeDecodeError:
            return None, value.hex()


def _key_text(key: bytes | None) -> str | None:
    if key is None:
        return None
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        return key.hex()


def _token_keys(tokens: Iterable[int]) -> set[bytes]:
    """A token's key as the raw topics carry it and as Faust's JSON changelogs do."""
    keys: set[bytes] = set()
    for token in tokens:
        keys.add(token_key(token))
        keys.add(json.dumps(str(token)).encode())
    return keys


# --- reading a range -----------------------------------------------------------------------


@dataclass
class Range:
    """Where to start and stop in each partition (see ``tail`` in the module docstring)."""

    from_offset: int | None = None
    from_time_ms: int | None = None
    to_offset: int | None = None
    to_time_ms: int | None = None
    follow: bool = False


async def _positions(
    consumer: Any, tails: dict[TopicPartition, PartitionTail], spec: Range, default_back: int
) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int | None]]:
    """(start offset, stop offset or None = follow) per partition."""
    if spec.from_time_ms is not None:
        starts = await offsets_for_time(consumer, tails, spec.from_time_ms)
    else:
        back = spec.from_offset if spec.from_offset is not None else -default_back
        starts = {}
        for tp, tail in tails.items():
            offset = tail.end + back if back < 0 else back
            starts[tp] = min(max(offset, tail.begin), tail.end)
    stops: dict[TopicPartition, int | None] = {}
    for tp, tail in tails.items():
        if spec.follow:
            stops[tp] = None
        elif spec.to_offset is not None:
            stops[tp] = min(spec.to_offset, tail.end)
        else:
            stops[tp] = tail.end
    return starts, stops


async def read_range(
    consumer: Any,
    starts: Mapping[TopicPartition, int],
    stops: Mapping[TopicPartition, int | None],
    *,
    to_time_ms: int | None = None,
    idle_timeout_ms: int = 500,
) -> AsyncIterator[Record]:
    """Every record from ``starts`` up to ``stops`` (None: forever) per partition, in
    offset order per partition; stops a partition at its first record after
    ``to_time_ms``."""
    active = {tp for tp in starts if stops.get(tp) is None or starts[tp] < (stops[tp] or 0)}
    if not active:
        return
    consumer.assign(list(active))
    for tp in active:
        consumer.seek(tp, starts[tp])
    try:
        while active:
            batches = await consumer.getmany(*active, timeout_ms=idle_timeout_ms)
            for tp, records in batches.items():
                stop = stops.get(tp)
                for record in records:
                    if stop is not None and record.offset >= stop:
                        active.discard(tp)
                        break
                    if to_time_ms is not None and record.timestamp > to_time_ms:
                        active.discard(tp)
                        break
                    yield record
                else:
                    if stop is not None and records and records[-1].offset + 1 >= stop:
                        active.discard(tp)
            # A partition whose stop lies beyond records that no longer exist (compacted
            # or deleted) would wait forever: the fetch position says it is done.
            for tp in list(active):
                stop = stops.get(tp)
                if stop is not None and await consumer.position(tp) >= stop:
                    active.discard(tp)
    finally:
        consumer.assign([])


async def _topic_tails(
    consumer: Any, topic: str, count: int, partitions: Sequence[int] | None
) -> dict[TopicPartition, PartitionTail]:
    chosen = partitions if partitions is not None else range(count)
    return await read_tails(consumer, [TopicPartition(topic, p) for p in chosen])


def _token_partitions(
    settings: Settings, topic: str, tokens: set[int], partitions: int
) -> list[int] | None:
    """The partitions holding these tokens' records in a token-keyed pipeline topic
    (``None``: every partition, for any other topic)."""
    keyed = {spec.name for spec in pipeline_topics(settings)}
    if not tokens or topic not in keyed:
        return None
    return sorted({partition_for_key(token_key(t), partitions) for t in tokens})


# --- tail ----------------------------------------------------------------------------------


@dataclass
class TailStats:
    read: int = 0
    shown: int = 0


async def tail(
    settings: Settings,
    topic: str,
    emit: Emit,
    *,
    spec: Range | None = None,
    tokens: set[int] | None = None,
    kind: str = "auto",
    limit: int | None = None,
    master: InstrumentMaster | None = None,
    default_back: int = 10,
) -> TailStats:
    """Emit the range's records of ``topic`` (see the module docstring)."""
    spec = spec or Range()
    wanted = tokens or set()
    keys = _token_keys(wanted)
    decoder = RecordDecoder(kind, master)
    stats = TailStats()
    async with plain_consumer(settings.bootstrap_servers) as consumer:
        counts = await topic_partitions(settings.bootstrap_servers)
        if topic not in counts:
            raise ToolError(f"topic {topic!r} does not exist on {settings.bootstrap_servers}")
        chosen = _token_partitions(settings, topic, wanted, counts[topic])
        tails = await _topic_tails(consumer, topic, counts[topic], chosen)
        starts, stops = await _positions(consumer, tails, spec, default_back)
        async for record in read_range(consumer, starts, stops, to_time_ms=spec.to_time_ms):
            stats.read += 1
            if wanted and record.key not in keys:
                continue
            token, value = decoder.value(record.value)
            if wanted and token is not None and token not in wanted:
                continue
            emit(
                {
                    "topic": record.topic,
                    "partition": record.partition,
                    "offset": record.offset,
                    "timestamp": iso_from_epoch_ms(record.timestamp),
                    "key": _key_text(record.key),
                    "value": value,
                }
            )
            stats.shown += 1
            if limit is not None and stats.shown >= limit:
                break
    return stats


# --- replay --------------------------------------------------------------------------------


@dataclass
class ReplayStats:
    frames: int = 0
    packets: int = 0
    published: int = 0
    skipped: int = 0
    seconds: float = 0.0
    topic: str = ""
    errors: dict[str, int] = field(default_factory=dict)


class Pacer:
    """Sleeps so that source time advances ``speed`` times faster than the wall clock."""

    def __init__(self, speed: float) -> None:
        if speed < 0:
            raise ToolError("--speed must be 0 (as fast as possible) or positive")
        self.speed = speed
        self.origin: tuple[float, float] | None = None  # (source ms, monotonic s)

    async def wait(self, source_ms: int) -> None:
        if self.speed == 0:
            return
        now = time.monotonic()
        if self.origin is None:
            self.origin = (source_ms, now)
            return
        due = self.origin[1] + (source_ms - self.origin[0]) / 1000 / self.speed
        if due > now:
            await asyncio.sleep(due - now)


def _producer(settings: Settings) -> AIOKafkaProducer:
    # At-least-once, no idempotence: Tansu refuses InitProducerId from aiokafka.
    return AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        linger_ms=settings.producer_linger_ms,
        max_batch_size=settings.producer_max_batch_bytes,
        acks="all" if settings.producer_acks == -1 else settings.producer_acks,
        enable_idempotence=False,
        client_id=f"{settings.app_id}-replay",
    )


async def replay(
    settings: Settings,
    into: str,
    *,
    frames_file: Path | None = None,
    topic: str | None = None,
    spec: Range | None = None,
    speed: float = 1.0,
    tokens: set[int] | None = None,
) -> ReplayStats:
    """Publish a recording or a topic range into instance ``into``; returns what it did."""
    if (frames_file is None) == (topic is None):
        raise ToolError("replay needs exactly one source: --file or --topic")
    target = instance_settings(settings, into)
    live_topics = {spec_.name for spec_ in pipeline_topics(settings)}
    if any(spec_.name in live_topics for spec_ in pipeline_topics(target)):
        raise ToolError(f"instance {into!r} would write into the live pipeline's topics")
    pacer = Pacer(speed)
    stats = ReplayStats()
    try:
        await ensure_topics(
            settings.bootstrap_servers, pipeline_topics(target), settings.topic_replication
        )
    except ConnectionError as exc:
        raise ToolError(str(exc)) from None
    producer = _producer(settings)
    await producer.start()
    started = time.monotonic()
    wanted = tokens or set()
    try:
        if frames_file is not None:
            stats.topic = target.topic_ticks
            await _replay_frames(producer, frames_file, target.topic_ticks, pacer, stats, wanted)
        else:
            assert topic is not None
            stats.topic = _target_topic(settings, target, topic)
            await _replay_topic(
                settings, producer, topic, stats.topic, spec or Range(), pacer, stats, wanted
            )
        await producer.flush()
    finally:
        await producer.stop()
    stats.seconds = time.monotonic() - started
    return stats


def _target_topic(settings: Settings, target: Settings, topic: str) -> str:
    """Where a source topic goes in the instance: its pipeline counterpart, else
    ``NAME-<topic>``."""
    for field_name in (
        "topic_ticks",
        "topic_bars",
        "topic_volume",
        "topic_baselines",
        "topic_indicators",
        "topic_alerts",
    ):
        if getattr(settings, field_name) == topic:
            return str(getattr(target, field_name))
    return f"{target.app_id}-{topic}"


async def _replay_frames(
    producer: AIOKafkaProducer,
    path: Path,
    topic: str,
    pacer: Pacer,
    stats: ReplayStats,
    tokens: set[int],
) -> None:
    decode = DecodeStats()
    try:
        source = path.open("rb")
    except OSError as exc:
        raise ToolError(f"cannot read {path}: {exc}") from None
    with source:
        try:
            frames = list_or_stream(read_frames(source))
            async for recorded in frames:
                stats.frames += 1
                await pacer.wait(recorded.received_at_ms)
                for packet in split_frame(recorded.frame, decode):
                    stats.packets += 1
                    token = packet_token(packet, decode)
                    # Validate as the ingestor does: only decodable packets are published.
                    if token is None or decode_packet(packet, decode) is None:
                        stats.skipped += 1
                        continue
                    if tokens and token not in tokens:
                        stats.skipped += 1
                        continue
                    await producer.send(
                        topic,
                        tick_envelope.encode(packet, recorded.received_at_ms),
                        key=token_key(token),
                        timestamp_ms=recorded.received_at_ms,
                    )
                    stats.published += 1
        except ValueError as exc:  # bad magic: not a recording
            raise ToolError(f"{path}: {exc}") from None
    stats.errors = dict(decode.errors)


async def list_or_stream(items: Iterable[Any]) -> AsyncIterator[Any]:
    """An async view of a (lazy) iterable, yielding to the loop now and then so that the
    producer's background sender runs during a fast replay."""
    for count, item in enumerate(items):
        if count % 256 == 0:
            await asyncio.sleep(0)
        yield item


async def _replay_topic(
    settings: Settings,
    producer: AIOKafkaProducer,
    topic: str,
    target_topic: str,
    spec: Range,
    pacer: Pacer,
    stats: ReplayStats,
    tokens: set[int],
) -> None:
    if spec.follow:
        raise ToolError("replay reads a fixed range: --follow is for tail")
    keys = _token_keys(tokens)
    async with plain_consumer(settings.bootstrap_servers) as consumer:
        counts = await topic_partitions(settings.bootstrap_servers)
        if topic not in counts:
            raise ToolError(f"topic {topic!r} does not exist on {settings.bootstrap_servers}")
        chosen = _token_partitions(settings, topic, tokens, counts[topic])
        tails = await _topic_tails(consumer, topic, counts[topic], chosen)
        whole = Range(
            from_offset=spec.from_offset if spec.from_offset is not None else 0,
            from_time_ms=spec.from_time_ms,
            to_offset=spec.to_offset,
        )
        starts, stops = await _positions(consumer, tails, whole, 0)
        async for record in read_range(consumer, starts, stops, to_time_ms=spec.to_time_ms):
            stats.packets += 1
            if tokens and record.key not in keys:
                stats.skipped += 1
                continue
            await pacer.wait(record.timestamp)
            await producer.send(
                target_topic, record.value, key=record.key, timestamp_ms=record.timestamp
            )
            stats.published += 1


# --- diff: recompute from the ticks ----------------------------------------------------------


@dataclass
class Recomputed:
    """One token's outputs, recomputed from its ticks (keyed by bar start, epoch s)."""

    token: int
    bars: dict[int, Bar] = field(default_factory=dict)
    vol: dict[int, dict[str, str]] = field(default_factory=dict)
    ind: dict[int, dict[str, str]] = field(default_factory=dict)
    ticks: int = 0
    records: int = 0
    #: (begin, end) offsets of the ticks partition read
    offsets: tuple[int, int] = (0, 0)
    partition: int = 0
    baselines: int = 0
    warm_indicators: bool = False
    notes: list[str] = field(default_factory=list)


class TickHopReplica:
    """The tick hop's per-partition logic for one token (``topology.tick_hop``): the
    token's ticks go to its volume engine, and every record of the partition moves the
    partition's watermark sweep, which closes the token's bars in event time."""

    def __init__(self, token: int, grace: float) -> None:
        self.token = token
        self.grace = grace
        self.state: TokenVolumeState | None = None
        self.swept = -1
        self.bars: list[Bar] = []
        self.ticks = 0

    def on_record(self, offset: int, value: bytes | None) -> None:
        try:
            envelope = tick_envelope.decode(value or b"")
        except tick_envelope.EnvelopeError:
            return
        tick = decode_packet(envelope.packet)
        if tick is None:
            return
        event_time = tick.exchange_timestamp or envelope.received_at_ms // 1000
        if tick.instrument_token == self.token:
            self.ticks += 1
            if self.state is None:
                self.state = TokenVolumeState(self.token)
            self.bars += apply_tick(
                self.state,
                self.token & 0xFF,
                offset,
                event_time,
                tick.last_price,
                tick.volume_traded,
            )
        watermark = event_time - self.grace
        minute = minute_start(watermark)
        if minute > self.swept:
            self.swept = minute
            if self.state is not None:
                self.bars += advance_watermark(self.state, self.token & 0xFF, watermark)


class VolumeReplica:
    """The volume agent's per-token logic (``topology.volume.TokenVolume``), on the core.

    Replicated rather than imported: importing ``topology.volume`` builds the Faust app."""

    def __init__(self, token: int, settings: Settings, tick_size: float) -> None:
        self.token = token
        self.settings = settings
        self.tick_size = tick_size
        self.policy = BaselinePolicy(
            window=settings.baseline_sessions, min_sessions=settings.baseline_min_sessions
        )
        self.analytics = VolumeAnalyticsState()
        self.baseline = TokenBaseline.for_token(token)
        self.acc: SessionAccumulator | None = None

    def load_baseline(self, incoming: TokenBaseline) -> None:
        """``topology.volume.load_baseline`` for one record."""
        merged = self.baseline
        for ordinal, volumes in incoming.sessions:
            merged = add_session(merged, ordinal, volumes, policy=self.policy)
        if incoming.daily_volume is not None and merged.daily_volume is None:
            merged = TokenBaseline(merged.segment, merged.sessions, incoming.daily_volume)
        self.baseline = merged

    def _close_session(self) -> None:
        if self.acc is not None:
            finished = self.acc.finish()
            if finished is not None:
                self.baseline = add_session(self.baseline, *finished, policy=self.policy)
            self.acc = None

    def on_bar(self, bar: Bar) -> VolumeResult | None:
        if self.acc is not None and self.acc.session != bar.session:
            self._close_session()
        baseline, policy = self.baseline, self.policy
        result = update(
            self.analytics,
            bar,
            tick_size=self.tick_size,
            baseline=lambda slots: expected_window(baseline, slots, policy=policy),
            baseline_source=source(baseline, policy=policy),
            cap=self.settings.volume_ratio_cap,
            window=self.settings.volume_window,
            value_area_share=self.settings.value_area_share,
        )
        if result is None:
            return None
        if self.acc is None:
            self.acc = SessionAccumulator(bar.instrument_token, bar.session)
        self.acc.add(bar)
        segment = bar.instrument_token & 0xFF
        if slot_of(segment, bar.start) == slot_count(segment) - 1:
            self._close_session()
        return result


async def _read_partition(
    consumer: Any, tp: TopicPartition, tail: PartitionTail
) -> AsyncIterator[Record]:
    async for record in read_range(consumer, {tp: tail.begin}, {tp: tail.end}):
        yield record


async def recompute(
    settings: Settings, token: int, master: InstrumentMaster | None = None
) -> Recomputed:
    """Bars, ``vol`` and ``ind`` of every bar of ``token``, from the topics."""
    out = Recomputed(token)
    hop = TickHopReplica(token, settings.watermark_grace)
    instrument = master.get(token) if master is not None else None
    volume = VolumeReplica(token, settings, instrument.tick_size if instrument else 0.0)
    indicators = IndicatorState()
    key = token_key(token)
    async with plain_consumer(settings.bootstrap_servers) as consumer:
        counts = await topic_partitions(settings.bootstrap_servers)
        if settings.topic_ticks not in counts:
            raise ToolError(f"topic {settings.topic_ticks!r} does not exist")
        out.partition = partition_for_key(key, counts[settings.topic_ticks])
        # Baselines and warmed indicators first, as bootstrap_baselines --publish does.
        if settings.topic_baselines in counts:
            btp = TopicPartition(
                settings.topic_baselines, partition_for_key(key, counts[settings.topic_baselines])
            )
            btails = await read_tails(consumer, [btp])
            warm: IndicatorState | None = None
            async for record in _read_partition(consumer, btp, btails[btp]):
                if record.key != key or not record.value:
                    continue
                body = json.loads(record.value)
                volume.load_baseline(TokenBaseline.from_dict(body["baseline"]))
                out.baselines += 1
                if body.get("indicators"):
                    incoming = IndicatorState.from_dict(body["indicators"])
                    if warm is None or (warm.last_start or 0) < (incoming.last_start or 0):
                        warm = incoming
            if warm is not None:
                indicators = warm
                out.warm_indicators = True
        tp = TopicPartition(settings.topic_ticks, out.partition)
        tails = await read_tails(consumer, [tp])
        out.offsets = (tails[tp].begin, tails[tp].end)
        async for record in _read_partition(consumer, tp, tails[tp]):
            out.records += 1
            hop.on_record(record.offset, record.value)
    out.ticks = hop.ticks
    for bar in hop.bars:
        out.bars[bar.start] = bar
        vol = volume.on_bar(bar)
        if vol is not None:
            out.vol[bar.start] = vol.to_redis()
        try:
            result: IndicatorResult | None = indicators.update(bar)
        except ValueError as exc:
            out.notes.append(f"bar {iso_from_epoch(bar.start)} not usable for indicators: {exc}")
            continue
        if result is not None:
            out.ind[bar.start] = result.to_redis()
    return out


# --- diff: compare with Redis --------------------------------------------------------------


@dataclass(frozen=True)
class Difference:
    what: str  # "bar", "vol" or "ind"
    bar_start: str
    field: str
    expected: str | None
    actual: str | None


@dataclass
class DiffReport:
    token: int
    recomputed: Recomputed
    differences: list[Difference] = field(default_factory=list)
    bars_compared: int = 0
    #: Redis stream entries newer than the last recomputed bar (the ticks read end earlier)
    redis_newer: int = 0
    #: recomputed bars newer than the newest in Redis (not written yet: the pipeline lags)
    pending: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def same(self) -> bool:
        return not self.differences

    def as_dict(self) -> dict[str, Any]:
        rec = self.recomputed
        return {
            "token": self.token,
            "same": self.same,
            "ticks_partition": rec.partition,
            "offsets": list(rec.offsets),
            "records_read": rec.records,
            "ticks": rec.ticks,
            "bars_recomputed": len(rec.bars),
            "bars_compared": self.bars_compared,
            "redis_newer": self.redis_newer,
            "pending": self.pending,
            "baseline_records": rec.baselines,
            "warm_indicators": rec.warm_indicators,
            "differences": [d.__dict__ for d in self.differences],
            "notes": self.notes + rec.notes,
        }


def _values_equal(expected: str | None, actual: str | None, rel_tol: float) -> bool:
    if expected == actual:
        return True
    if expected is None or actual is None:
        return False
    try:
        a, b = float(expected), float(actual)
    except ValueError:
        return False
    return math.isclose(a, b, rel_tol=rel_tol, abs_tol=1e-12)


def _compare_fields(
    what: str,
    start: int,
    expected: Mapping[str, str],
    actual: Mapping[str, str],
    rel_tol: float,
) -> list[Difference]:
    out = []
    for name in sorted(set(expected) | set(actual)):
        want, got = expected.get(name), actual.get(name)
        if not _values_equal(want, got, rel_tol):
            out.append(Difference(what, iso_from_epoch(start), name, want, got))
    return out


def _decode_hash(raw: Mapping[Any, Any]) -> dict[str, str]:
    return {
        (k.decode() if isinstance(k, bytes) else str(k)): (
            v.decode() if isinstance(v, bytes) else str(v)
        )
        for k, v in raw.items()
    }


async def diff(
    settings: Settings,
    token: int,
    *,
    master: InstrumentMaster | None = None,
    rel_tol: float = 1e-9,
) -> DiffReport:
    """Recompute ``token`` and compare with Redis (see the module docstring)."""
    rec = await recompute(settings, token, master)
    report = DiffReport(token, rec)
    keys = Keys(settings.redis_key_prefix)
    client = async_redis(settings)
    try:
        entries = await client.xrange(keys.bars_1m(token))
        vol_raw = await client.hgetall(keys.vol(token))
        ind_raw = await client.hgetall(keys.indicators(token))
    finally:
        await client.aclose()
    if not rec.bars:
        report.notes.append("no closed bar recomputed from the ticks read")
    stored: dict[int, dict[str, str]] = {}
    for entry_id, fields in entries or []:
        ident = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
        stored[int(ident.split("-")[0]) // 1000] = _decode_hash(fields or {})
    if rec.bars:
        first, last = min(rec.bars), max(rec.bars)
        newest_stored = max(stored) if stored else None
        for start, bar in sorted(rec.bars.items()):
            got = stored.get(start)
            if got is None and (newest_stored is None or start > newest_stored):
                # Newer than anything in Redis: the pipeline has not written it yet.
                report.pending += 1
                continue
            report.bars_compared += 1
            if got is None:
                report.differences.append(
                    Difference("bar", iso_from_epoch(start), "*", "present", None)
                )
                continue
            report.differences += _compare_fields("bar", start, bar_fields(bar), got, rel_tol)
        for start in sorted(stored):
            if first <= start <= last and start not in rec.bars:
                report.differences.append(
                    Difference("bar", iso_from_epoch(start), "*", None, "present")
                )
            elif start > last:
                report.redis_newer += 1
    for what, raw, computed in (("vol", vol_raw, rec.vol), ("ind", ind_raw, rec.ind)):
        actual = _decode_hash(raw)
        if not actual:
            if computed:
                latest = max(computed)
                report.differences.append(
                    Difference(what, iso_from_epoch(latest), "*", "present", None)
                )
            continue
        try:
            start = int(datetime.fromisoformat(actual.get("bar_start", "")).timestamp())
        except ValueError:
            report.differences.append(
                Difference(what, "?", "bar_start", None, actual.get("bar_start"))
            )
            continue
        if start in computed:
            report.differences += _compare_fields(what, start, computed[start], actual, rel_tol)
        elif computed and start > max(computed):
            report.notes.append(f"{what}: Redis holds a newer bar ({iso_from_epoch(start)})")
        else:
            newest = iso_from_epoch(max(computed)) if computed else None
            report.differences.append(
                Difference(what, iso_from_epoch(start), "bar_start", newest, iso_from_epoch(start))
            )
    return report


def render_diff(report: DiffReport, console: Console) -> None:
    rec = report.recomputed
    console.print(
        f"token {report.token}: partition {rec.partition} "
        f"offsets {rec.offsets[0]}..{rec.offsets[1]}"
        f" ({rec.records} records, {rec.ticks} ticks of the token), {len(rec.bars)} bars "
        f"recomputed, {report.bars_compared} compared, {report.pending} not in Redis yet, "
        f"{report.redis_newer} newer in Redis; "
        f"{rec.baselines} baseline records, warm indicators: {rec.warm_indicators}",
        highlight=False,
    )
    for note in report.notes + rec.notes:
        console.print(f"note: {note}", highlight=False, markup=False)
    if report.same:
        console.print("[green]no differences[/green]")
        return
    table = Table(title=f"{len(report.differences)} differences", expand=False)
    for column in ("what", "bar start", "field", "recomputed", "redis"):
        table.add_column(column)
    for d in report.differences[:200]:
        table.add_row(d.what, d.bar_start, d.field, str(d.expected), str(d.actual))
    console.print(table)


# --- the CLI ---------------------------------------------------------------------------------


def _json_line(out: TextIO) -> Emit:
    def emit(item: dict[str, Any]) -> None:
        out.write(json.dumps(item, default=str) + "\n")
        out.flush()

    return emit


def _range_args(parser: argparse.ArgumentParser, default_back: int | None) -> None:
    start = parser.add_mutually_exclusive_group()
    start.add_argument(
        "--from-offset",
        type=int,
        metavar="N",
        help="start at offset N of each partition; negative: the last -N records"
        + (f" (default -{default_back})" if default_back else " (default: the beginning)"),
    )
    start.add_argument(
        "--from-time", type=parse_instant, metavar="T", help="start at time T (ISO 8601 or epoch)"
    )
    parser.add_argument("--to-offset", type=int, metavar="N", help="stop before offset N")
    parser.add_argument(
        "--to-time", type=parse_instant, metavar="T", help="stop after records of time T"
    )


def _filter_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--token", type=int, action="append", default=[], metavar="N", help="only this token"
    )
    parser.add_argument(
        "--symbol",
        action="append",
        default=[],
        metavar="SYM",
        help="only this tradingsymbol (SYMBOL or EXCHANGE:SYMBOL; repeatable)",
    )


def _settings_for(args: argparse.Namespace) -> Settings:
    settings = get_settings()
    instance = getattr(args, "instance", None)
    return instance_settings(settings, instance) if instance else settings


def _master_if(needed: bool, settings: Settings) -> InstrumentMaster | None:
    if not needed:
        return None
    try:
        return load_master(settings)
    except Exception as exc:
        raise ToolError(f"instrument master not loaded: {exc}") from None


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def cmd_tail(args: argparse.Namespace) -> int:
    """Print a topic's records as JSON lines."""
    try:
        settings = _settings_for(args)
        master = _master_if(not args.no_instruments or bool(args.symbol), settings)
        tokens = resolve_tokens(args.token, args.symbol, master)
        spec = Range(args.from_offset, args.from_time, args.to_offset, args.to_time, args.follow)
        topic = args.topic or settings.topic_ticks
        stats = _run(
            tail(
                settings,
                topic,
                _json_line(sys.stdout),
                spec=spec,
                tokens=tokens,
                kind=args.format,
                limit=args.limit,
                master=master,
            )
        )
    except ToolError as exc:
        print(f"tail: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        return EXIT_OK
    print(f"tail: {stats.shown} records shown of {stats.read} read", file=sys.stderr)
    return EXIT_OK


def cmd_replay(args: argparse.Namespace) -> int:
    """Replay a recording or a topic range into a separate pipeline instance."""
    try:
        settings = get_settings()
        master = _master_if(bool(args.symbol), settings)
        tokens = resolve_tokens(args.token, args.symbol, master)
        spec = Range(args.from_offset, args.from_time, args.to_offset, args.to_time)
        stats: ReplayStats = _run(
            replay(
                settings,
                args.into,
                frames_file=args.file,
                topic=args.topic,
                spec=spec,
                speed=args.speed,
                tokens=tokens,
            )
        )
    except ToolError as exc:
        print(f"replay: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(
        f"replay: {stats.published} records published to {stats.topic} in {stats.seconds:.1f}s "
        f"({stats.frames} frames, {stats.packets} packets read, {stats.skipped} skipped"
        + (f", errors {stats.errors}" if stats.errors else "")
        + ")",
        file=sys.stderr,
    )
    env = " ".join(f"{k}={v}" for k, v in instance_env(settings, args.into).items())
    print(
        "replay: run the instance with\n"
        f"  {env} TICKFLOW_WORKER_WEB_PORT=<free port> faust -A topology worker -l info\n"
        f"  and diff with: python -m scripts.debug_pipeline diff --instance {args.into} --token N",
        file=sys.stderr,
    )
    return EXIT_OK


def cmd_diff(args: argparse.Namespace) -> int:
    """Recompute a token from its ticks and diff against Redis."""
    try:
        settings = _settings_for(args)
        master = _master_if(True, settings)
        tokens = resolve_tokens(args.token, args.symbol, master)
        if len(tokens) != 1:
            raise ToolError(f"diff needs exactly one token (got {sorted(tokens) or 'none'})")
        (token,) = tokens
        report: DiffReport = _run(diff(settings, token, master=master, rel_tol=args.rel_tol))
    except ToolError as exc:
        print(f"diff: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if args.json:
        print(json.dumps(report.as_dict(), indent=2, default=str))
    else:
        render_diff(report, Console(highlight=False))
    return EXIT_OK if report.same else EXIT_DIFFERENT


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``tail``, ``replay`` and ``diff`` to ``debug_pipeline``'s subcommands."""
    p = subparsers.add_parser(
        "tail",
        help="print a topic's records (decoded) from an offset or a time",
        description="Print records of a topic as JSON lines; ticks decoded to the fields "
        "of tick:{token}, JSON topics as JSON.",
    )
    p.add_argument("topic", nargs="?", help="topic (default: the ticks topic)")
    _range_args(p, default_back=10)
    _filter_args(p)
    p.add_argument("--follow", "-f", action="store_true", help="keep waiting for records")
    p.add_argument("--limit", type=int, metavar="N", help="stop after N records")
    p.add_argument(
        "--format",
        choices=["auto", "ticks", "json", "raw", "text"],
        default="auto",
        help="how to show values (default: by content)",
    )
    p.add_argument("--instance", metavar="NAME", help="a replay instance's topics")
    p.add_argument("--no-instruments", action="store_true", help="no symbols in ticks")
    p.set_defaults(func=cmd_tail)

    p = subparsers.add_parser(
        "replay",
        help="replay a recording or a topic range into a separate pipeline instance",
        description="Publish a frame recording or a topic range into the topics of instance "
        "NAME (NAME-<topic>, app id NAME, Redis prefix NAME:) at a chosen speed.",
    )
    p.add_argument("--into", required=True, metavar="NAME", help="the target instance")
    source_group = p.add_mutually_exclusive_group(required=True)
    source_group.add_argument("--file", type=Path, help="frame recording (TFKREC1)")
    source_group.add_argument("--topic", help="source topic (e.g. ticks)")
    _range_args(p, default_back=None)
    _filter_args(p)
    p.add_argument(
        "--speed",
        type=float,
        default=1.0,
        help="x times the recorded pace (default 1; 0 = as fast as possible)",
    )
    p.set_defaults(func=cmd_replay)

    p = subparsers.add_parser(
        "diff",
        help="recompute a token's bars, volume and indicators from its ticks; diff with Redis",
        description="Recompute one token from the ticks topic with the core and compare "
        "bars:1m, vol and ind in Redis. Exit 0: same; 1: differences.",
    )
    _filter_args(p)
    p.add_argument("--instance", metavar="NAME", help="diff a replay instance")
    p.add_argument("--json", action="store_true", help="the report as JSON")
    p.add_argument(
        "--rel-tol",
        type=float,
        default=1e-9,
        help="relative tolerance of numeric fields (default 1e-9)",
    )
    p.set_defaults(func=cmd_diff)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.pipeline_tools", description=__doc__.splitlines()[0]
    )
    register(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Command = args.func
    return func(args)


if __name__ == "__main__":
    raise SystemExit(main())
