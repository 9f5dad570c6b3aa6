"""The ingestor: Kite WebSocket frames in, one ``ticks`` record per packet out.

This is the one I/O shell under ``core/`` (see DESIGN.md). It owns three concerns and
keeps each simple enough to test against real components:

* **Connections.** The token list is sharded over at most ``ingestor_max_connections``
  WebSockets of at most ``ingestor_tokens_per_connection`` tokens (Kite's limits: 3 x 3000
  per API key). Each shard subscribes and sets the mode on *every* connect, because a Kite
  subscription does not survive a reconnect. A liveness watchdog reconnects a connection
  that delivered no frame at all (heartbeats included) for ``ingestor_liveness_timeout``
  seconds: a half-dead TCP connection is otherwise silent forever (the official client's
  bug). Reconnects back off exponentially with jitter, capped. HTTP 403 at the handshake is
  an expired or wrong access token; retrying cannot fix it, so the whole ingestor stops with
  :class:`AccessTokenRejected` after exactly one attempt per shard.
* **Parsing.** Each binary frame is optionally recorded as-is, split into packets and every
  packet decoded as validation; malformed input is counted by kind, never raised. Valid
  packets are published unchanged behind the receive-time header of
  :mod:`core.tick_envelope`, keyed by token.
* **Publishing.** :class:`TickPublisher` puts ticks through a bounded buffer into an
  ``AIOKafkaProducer``. The bound covers everything not yet acknowledged by the broker
  (queued *and* in flight), so memory stays bounded whatever the broker does: when the
  buffer is full the socket reader waits, which stops reading the WebSocket (TCP pushes
  back to the server), unless ``ingestor_drop_when_full`` asks to drop and count instead.
  A failed publish is queued again (and counted), never silently lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.uri import parse_uri

from config.settings import Settings, TickMode
from core import tick_envelope
from core.frame_file import FrameWriter
from core.ingestor_metrics import IngestorMetrics
from core.kite_protocol import (
    DecodeStats,
    mode_message,
    packet_token,
    parse_text_message,
    split_frame,
    subscribe_message,
)

log = logging.getLogger(__name__)
#: The websockets library logs the handshake request line, access token included, and every
#: frame at DEBUG: its connections get a logger of their own that never goes below WARNING.
_WS_LOG = logging.getLogger(f"{__name__}.websocket")
_WS_LOG.setLevel(logging.WARNING)

#: Kite's API version header, as the official clients send it.
KITE_VERSION_HEADER: Final = {"X-Kite-Version": "3"}
#: Largest binary frame accepted: a uint16 packet count of 184-byte packets is ~12 MB; real
#: frames are far smaller (3000 full packets is 558 KB), this only guards memory.
MAX_FRAME_BYTES: Final = 16 * 1024 * 1024
#: Frames the WebSocket library may queue while the reader is blocked on a full buffer;
#: past it the library stops reading the socket, which is the backpressure we want.
RECEIVE_QUEUE_FRAMES: Final = 8


class IngestorError(RuntimeError):
    """A configuration or credential problem the ingestor cannot work around."""


class AccessTokenRejected(IngestorError):
    """The server answered the handshake with HTTP 403: the access token is not valid."""


class TooManyTokensError(IngestorError, ValueError):
    """More tokens than the connections x tokens-per-connection limit allows."""


# --- pure helpers -------------------------------------------------------------------------


def shard_tokens(
    tokens: Iterable[int], max_connections: int, tokens_per_connection: int
) -> list[list[int]]:
    """Split tokens (deduplicated, order kept) over as few connections as the limit allows.

    Shards are balanced (sizes differ by at most one) rather than filled to 3000 first,
    so one busy connection does not carry most of the market. Raises TooManyTokensError
    beyond ``max_connections * tokens_per_connection`` (Kite rejects the excess anyway, and
    silently missing instruments are worse than a clear error at start).
    """
    unique = list(dict.fromkeys(tokens))
    limit = max_connections * tokens_per_connection
    if len(unique) > limit:
        raise TooManyTokensError(
            f"{len(unique)} tokens requested but at most {limit} can be subscribed "
            f"({max_connections} connections x {tokens_per_connection} tokens, Kite's limit "
            f"per API key); reduce TICKFLOW_KITE_TOKENS"
        )
    if not unique:
        return []
    count = -(-len(unique) // tokens_per_connection)
    size, extra = divmod(len(unique), count)
    shards, start = [], 0
    for index in range(count):
        end = start + size + (1 if index < extra else 0)
        shards.append(unique[start:end])
        start = end
    return shards


def backoff_delay(attempt: int, initial: float, cap: float, rng: random.Random) -> float:
    """Delay before reconnect number ``attempt`` (0-based): exponential, capped, jittered.

    "Equal jitter": uniform in [base/2, base], so shards that dropped together spread out
    but none reconnects with a near-zero delay (which full jitter allows).
    """
    base = min(cap, initial * (2.0 ** min(attempt, 62)))
    return rng.uniform(base / 2, base)


def connection_url(base: str, api_key: str, access_token: str) -> str:
    """The WebSocket URL with Kite's credentials in the query string."""
    parts = urlsplit(base)
    if parts.scheme not in ("ws", "wss"):
        raise IngestorError(f"kite_ws_url must be a ws:// or wss:// URL, got {redact_url(base)}")
    query = [(k, v) for k, v in parse_qsl(parts.query) if k not in ("api_key", "access_token")]
    query += [("api_key", api_key), ("access_token", access_token)]
    return urlunsplit(parts._replace(path=parts.path or "/", query=urlencode(query)))


def redact_url(url: str) -> str:
    """The URL without query or user info: safe to log (the access token is in the query)."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def wall_clock_ms() -> int:
    """Receive-time source of production: wall-clock epoch milliseconds."""
    return time.time_ns() // 1_000_000


# --- publishing ---------------------------------------------------------------------------

#: One buffered tick: key, envelope value, monotonic time it entered the buffer.
_Item = tuple[bytes, bytes, float]


class TickPublisher:
    """Bounded, backpressured publishing of ticks into one topic.

    ``capacity`` bounds the ticks held (queued + sent but not acknowledged). A tick leaves
    the count only when the broker acknowledged it (or, with ``drop_when_full``, when it
    was refused at the door and counted in ``dropped``). Failed sends go to a retry queue
    that is published before newer ticks, after ``retry_backoff`` seconds.

    Counters (plain ints, exact for tests; mirrored in the Prometheus metrics): ``accepted``,
    ``published``, ``dropped``, ``retries``; ``max_depth`` is the highest depth ever seen.
    """

    def __init__(
        self,
        producer: AIOKafkaProducer,
        topic: str,
        *,
        capacity: int,
        drop_when_full: bool = False,
        metrics: IngestorMetrics | None = None,
        retry_backoff: float = 0.5,
        partitioner: Callable[[bytes, list[int], list[int]], int] | None = None,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.producer = producer
        self.topic = topic
        self.capacity = capacity
        self.drop_when_full = drop_when_full
        self.metrics = metrics if metrics is not None else IngestorMetrics()
        self.retry_backoff = retry_backoff
        self.partitioner = partitioner or DefaultPartitioner()
        self._partition_of: dict[bytes, int] = {}
        self._partitions: list[int] = []
        self.accepted = 0
        self.published = 0
        self.dropped = 0
        self.retries = 0
        self.max_depth = 0
        self._held = 0
        self._queue: deque[_Item] = deque()
        self._retry: deque[_Item] = deque()
        self._retry_after = 0.0
        self._data = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()
        self._idle = asyncio.Event()
        self._idle.set()
        # Wake a blocked reader only once a tenth of the buffer is free again, so it
        # reads a batch per wake-up instead of one tick per acknowledgement.
        self._resume_at = capacity - max(1, capacity // 10)
        self._task: asyncio.Task[None] | None = None
        self._failure_logged_at = 0.0
        self.metrics.buffer_capacity.set(capacity)
        self.metrics.buffer_depth.set_function(lambda: self._held)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        metrics: IngestorMetrics | None = None,
        topic: str | None = None,
        **producer_options: Any,
    ) -> TickPublisher:
        """A publisher with the producer configured from settings.

        Idempotence stays off: Tansu cannot serve InitProducerId to aiokafka, and the
        pipeline is at-least-once with idempotent consumers anyway (DESIGN.md).
        """
        options: dict[str, Any] = {
            "bootstrap_servers": settings.bootstrap_servers,
            "linger_ms": settings.producer_linger_ms,
            "max_batch_size": settings.producer_max_batch_bytes,
            "acks": "all" if settings.producer_acks == -1 else settings.producer_acks,
            "enable_idempotence": False,
            "client_id": f"{settings.app_id}-ingestor",
        }
        options.update(producer_options)
        return cls(
            AIOKafkaProducer(**options),
            topic or settings.topic_ticks,
            capacity=settings.ingestor_buffer_size,
            drop_when_full=settings.ingestor_drop_when_full,
            metrics=metrics,
        )

    # -- state ------------------------------------------------------------------------

    @property
    def depth(self) -> int:
        """Ticks held: queued for the producer plus sent and not yet acknowledged."""
        return self._held

    @property
    def queued(self) -> int:
        """Ticks not yet handed to the producer (retries included)."""
        return len(self._queue) + len(self._retry)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The task feeding the producer (None before start)."""
        return self._task

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Connect the producer (raises KafkaConnectionError if no broker) and start."""
        await self.producer.start()
        try:
            self._partitions = sorted(await self.producer.partitions_for(self.topic))
        except BaseException:
            await self.producer.stop()
            raise
        self._task = asyncio.create_task(self._run(), name=f"publisher:{self.topic}")

    def partition(self, key: bytes) -> int:
        """The key's partition, computed once per token (murmur2, like every Kafka client).

        Passing it to ``send()`` skips the producer's per-message partitioning (murmur2 in
        pure Python plus two partition-set copies, about a fifth of ``send()``). The topic's
        partition count is fixed (``ensure_topics`` refuses a mismatch), so caching is exact.
        """
        partition = self._partition_of.get(key)
        if partition is None:
            partitions = self._partitions
            partition = self._partition_of[key] = self.partitioner(key, partitions, partitions)
        return partition

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until every accepted tick is acknowledged; False if ``timeout`` ran out."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while self._held:
            task = self._task
            if task is None or task.done():
                return False
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return False
            idle = asyncio.ensure_future(self._idle.wait())
            try:
                await asyncio.wait([idle, task], timeout=remaining, return_when="FIRST_COMPLETED")
            finally:
                idle.cancel()
        return True

    async def stop(self, timeout: float = 30.0) -> None:
        """Flush (up to ``timeout``), then stop the producer.

        Ticks still held after the timeout are reported as an error with their count:
        shutting down with an unreachable broker loses them, and that must be visible.
        """
        flushed = await self.flush(timeout)
        if not flushed:
            log.error(
                "stopping with %d ticks not acknowledged by the broker (%d queued); they are "
                "lost", self._held, self.queued,
            )  # fmt: skip
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        try:
            await asyncio.wait_for(self.producer.stop(), timeout=max(5.0, timeout / 2))
        except TimeoutError:
            log.error("the Kafka producer did not stop in time")
        self._space.set()

    # -- the hot path ----------------------------------------------------------------

    def try_put(self, key: bytes, value: bytes) -> bool:
        """Take a tick if there is room (or drop and count it when so configured).

        Returns False only when the buffer is full and dropping is off: the caller must
        then ``await put(...)``, which waits for room. Split in two so the common case
        costs no coroutine.
        """
        held = self._held
        if held >= self.capacity:
            if self.drop_when_full:
                self.dropped += 1
                self.metrics.dropped.inc()
                return True
            return False
        held += 1
        self._held = held
        if held > self.max_depth:
            self.max_depth = held
        self.accepted += 1
        self._queue.append((key, value, time.monotonic()))
        self._data.set()
        if held == 1:
            self._idle.clear()
        return True

    async def put(self, key: bytes, value: bytes) -> None:
        """Take a tick, waiting for room while the buffer is full (the backpressure)."""
        while not self.try_put(key, value):
            if self._task is not None and self._task.done():
                raise IngestorError("the publisher has stopped; cannot take more ticks")
            self._space.clear()
            await self._space.wait()

    # -- internals -------------------------------------------------------------------

    async def _run(self) -> None:
        producer, topic = self.producer, self.topic
        queue, retry = self._queue, self._retry
        partition_of, partition = self._partition_of, self.partition
        sent_since_yield = 0
        while True:
            if retry:
                wait = self._retry_after - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                item = retry.popleft()
            elif queue:
                item = queue.popleft()
            else:
                self._data.clear()
                await self._data.wait()
                continue
            key = item[0]
            part = partition_of.get(key)
            if part is None:
                part = partition(key)
            try:
                future = await producer.send(topic, item[1], key=key, partition=part)
            except KafkaError as exc:
                # Could not even be queued in the producer (its buffer stayed full for
                # request_timeout_ms, or no metadata): keep the tick, first in line.
                retry.appendleft(item)
                self._note_failure(exc, 1)
                await asyncio.sleep(self.retry_backoff)
                continue
            future.add_done_callback(functools.partial(self._on_done, item))
            sent_since_yield += 1
            if sent_since_yield >= 2000:
                # producer.send() does not suspend while the accumulator has room; let the
                # readers and the producer's sender task run.
                sent_since_yield = 0
                await asyncio.sleep(0)

    def _on_done(self, item: _Item, future: asyncio.Future[Any]) -> None:
        if future.cancelled() or future.exception() is not None:
            self._retry.append(item)
            self._data.set()
            exc = future.exception() if not future.cancelled() else asyncio.CancelledError()
            self._note_failure(exc, 1)
            return
        self.published += 1
        self.metrics.published.inc()
        self.metrics.publish_latency.observe(time.monotonic() - item[2])
        held = self._held - 1
        self._held = held
        if held <= self._resume_at:
            self._space.set()
        if held == 0:
            self._idle.set()

    def _note_failure(self, exc: BaseException | None, count: int) -> None:
        self.retries += count
        self.metrics.publish_retries.inc(count)
        self._retry_after = time.monotonic() + self.retry_backoff
        now = time.monotonic()
        if now - self._failure_logged_at > 5.0:
            self._failure_logged_at = now
            log.warning(
                "publishing to %s failed (%s: %s); retrying, %d ticks held",
                self.topic, type(exc).__name__, exc, self._held,
            )  # fmt: skip


# --- connections --------------------------------------------------------------------------


@dataclass
class ShardConnection:
    """One WebSocket connection and the tokens it carries; observable state for tests."""

    index: int
    tokens: list[int]
    state: str = "idle"
    attempts: int = 0
    connects: int = 0
    reconnects: dict[str, int] = field(default_factory=dict)
    last_frame_at: float | None = None
    websocket: ClientConnection | None = field(default=None, repr=False)


@dataclass
class IngestorStats:
    """Exact counts of what the ingestor read (the Prometheus metrics mirror them)."""

    frames: int = 0
    heartbeats: int = 0
    bytes: int = 0
    #: Valid packets read from the sockets: each was accepted or dropped by the publisher.
    ticks_read: int = 0
    text_messages: dict[str, int] = field(default_factory=dict)
    decode: DecodeStats = field(default_factory=DecodeStats)


class DataIngestor:
    """Reads the configured tokens from Kite (or the simulator) into the ticks topic.

    ``run()`` = ``start()`` + ``wait()``; ``stop()`` closes the connections, flushes the
    publisher and stops it. ``wait()`` raises AccessTokenRejected after a 403.
    The clock (receive time, epoch ms) and the jitter source are injectable so tests are
    deterministic.
    """

    def __init__(
        self,
        settings: Settings,
        tokens: Sequence[int],
        *,
        publisher: TickPublisher | None = None,
        metrics: IngestorMetrics | None = None,
        url: str | None = None,
        mode: TickMode | None = None,
        clock_ms: Callable[[], int] = wall_clock_ms,
        rng: random.Random | None = None,
        record_path: Path | None = None,
        flush_timeout: float = 30.0,
    ) -> None:
        self.settings = settings
        if metrics is None:
            metrics = publisher.metrics if publisher is not None else IngestorMetrics()
        self.metrics = metrics
        self.shards = [
            ShardConnection(index, shard)
            for index, shard in enumerate(
                shard_tokens(
                    tokens,
                    settings.ingestor_max_connections,
                    settings.ingestor_tokens_per_connection,
                )
            )
        ]
        if not self.shards:
            raise IngestorError("no tokens to subscribe")
        self.mode: TickMode = mode or settings.kite_mode
        base_url = url or settings.kite_ws_url
        self._url = connection_url(
            base_url, settings.kite_api_key, settings.kite_access_token.get_secret_value()
        )
        self.display_url = redact_url(base_url)
        try:
            parse_uri(self._url)
        except InvalidURI:
            # InvalidURI's message holds the whole URL, access token included.
            raise IngestorError(f"invalid kite_ws_url: {self.display_url}") from None
        self.publisher = publisher or TickPublisher.from_settings(settings, metrics=self.metrics)
        self.stats = IngestorStats()
        self.error: BaseException | None = None
        self._clock_ms = clock_ms
        self._rng = rng or random.Random()
        self._record_path = record_path or settings.ingestor_record_path
        self._recorder: FrameWriter | None = None
        self._recorder_flushed_at = 0.0
        self._flush_timeout = flush_timeout
        self._tasks: list[asyncio.Task[None]] = []
        self._stop_task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._stopped = asyncio.Event()
        self._keys: dict[int, bytes] = {}
        self._errors_synced: dict[str, int] = {}
        for shard in self.shards:
            self._set_state(shard, "idle")

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Start the publisher (needs the broker) and one task per connection."""
        await self.publisher.start()
        if self._record_path is not None:
            self._recorder = FrameWriter(self._record_path)
        log.info(
            "ingesting %d tokens in %s mode over %d connection(s) from %s into topic %s",
            sum(len(s.tokens) for s in self.shards), self.mode, len(self.shards),
            self.display_url, self.publisher.topic,
        )  # fmt: skip
        if self.publisher.task is not None:
            self.publisher.task.add_done_callback(self._on_publisher_done)
        for shard in self.shards:
            self._tasks.append(
                asyncio.create_task(self._run_shard(shard), name=f"kite-shard-{shard.index}")
            )

    def _on_publisher_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self._stopping.is_set():
            return
        self._fail(IngestorError(f"the publisher stopped unexpectedly: {task.exception()!r}"))

    def _fail(self, error: BaseException) -> None:
        """Record why the ingestor stops and stop it (from a callback or another task)."""
        if self.error is None:
            self.error = error
        if self._stop_task is None and not self._stopping.is_set():
            self._stop_task = asyncio.get_running_loop().create_task(self.stop())

    async def wait(self) -> None:
        """Until stopped; raises the error that stopped the ingestor, if any."""
        await self._stopped.wait()
        if self.error is not None:
            raise self.error

    async def run(self) -> None:
        await self.start()
        try:
            await self.wait()
        finally:
            await self.stop()

    async def stop(self) -> None:
        """Close every connection, deliver what was read, stop the producer. Idempotent."""
        if self._stopping.is_set():
            await self._stopped.wait()
            return
        self._stopping.set()
        for shard in self.shards:
            if shard.websocket is not None:
                shard.websocket.transport.abort()
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        for task in self._tasks:
            if task is not current:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        await self.publisher.stop(self._flush_timeout)
        if self._recorder is not None:
            self._recorder.close()
            self._recorder = None
        self._sync_decode_metrics()
        for shard in self.shards:
            if shard.state != "rejected":
                self._set_state(shard, "stopped")
        self._stopped.set()
        log.info(
            "ingestor stopped: %d ticks read, %d published, %d dropped",
            self.stats.ticks_read, self.publisher.published, self.publisher.dropped,
        )  # fmt: skip

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    # -- one connection --------------------------------------------------------------

    async def _run_shard(self, shard: ShardConnection) -> None:
        settings = self.settings
        failures = 0
        while not self._stopping.is_set():
            self._set_state(shard, "connecting")
            shard.attempts += 1
            self.metrics.connect_attempts.inc()
            reason: str
            try:
                websocket = await connect(
                    self._url,
                    additional_headers=KITE_VERSION_HEADER,
                    open_timeout=10,
                    ping_interval=None,  # liveness is the frame watchdog, not pings
                    close_timeout=1,
                    max_size=MAX_FRAME_BYTES,
                    max_queue=RECEIVE_QUEUE_FRAMES,
                    compression=None,
                    logger=_WS_LOG,
                )
            except InvalidStatus as exc:
                status = exc.response.status_code
                if status == 403:
                    await self._rejected(shard)
                    return
                log.warning(
                    "connection %d: handshake refused with HTTP %d by %s",
                    shard.index, status, self.display_url,
                )  # fmt: skip
                reason = "handshake"
            except (OSError, TimeoutError, InvalidHandshake) as exc:
                log.warning(
                    "connection %d: cannot connect to %s: %s",
                    shard.index, self.display_url, exc or type(exc).__name__,
                )  # fmt: skip
                reason = "error"
            else:
                shard.websocket = websocket
                try:
                    reason, got_frames = await self._session(shard, websocket)
                finally:
                    shard.websocket = None
                    websocket.transport.abort()
                if got_frames:
                    failures = 0
            if self._stopping.is_set():
                return
            shard.reconnects[reason] = shard.reconnects.get(reason, 0) + 1
            self.metrics.reconnects.labels(reason=reason).inc()
            delay = backoff_delay(
                failures, settings.ingestor_backoff_initial, settings.ingestor_backoff_max,
                self._rng,
            )  # fmt: skip
            failures += 1
            self._set_state(shard, "backoff")
            log.info("connection %d: reconnecting in %.2fs (%s)", shard.index, delay, reason)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    async def _rejected(self, shard: ShardConnection) -> None:
        self._set_state(shard, "rejected")
        self.metrics.rejections_403.inc()
        if self.error is None:
            self.error = AccessTokenRejected(
                "access token rejected (403): get a new token (Kite login flow) and set "
                "TICKFLOW_KITE_ACCESS_TOKEN; not retrying, a reconnect cannot fix it"
            )
            log.error("%s", self.error)
            # Stop everything (not only this shard): the same token serves every
            # connection, so the others would only add more rejected attempts.
            self._fail(self.error)

    async def _session(
        self, shard: ShardConnection, websocket: ClientConnection
    ) -> tuple[str, bool]:
        """Subscribe, then read until the connection ends; returns (reason, got a frame)."""
        liveness = self.settings.ingestor_liveness_timeout
        got_frames = False
        try:
            await websocket.send(subscribe_message(shard.tokens))
            await websocket.send(mode_message(self.mode, shard.tokens))
            shard.connects += 1
            self._set_state(shard, "connected")
            log.info(
                "connection %d: connected to %s, subscribed %d tokens (%s)",
                shard.index, self.display_url, len(shard.tokens), self.mode,
            )  # fmt: skip
            recv = websocket.recv
            while True:
                try:
                    async with asyncio.timeout(liveness):
                        message = await recv()
                except TimeoutError:
                    log.warning(
                        "connection %d: no frame (data or heartbeat) for %.1fs; reconnecting",
                        shard.index, liveness,
                    )  # fmt: skip
                    return "liveness", got_frames
                got_frames = True
                shard.last_frame_at = time.monotonic()
                if isinstance(message, str):
                    self._on_text(shard, message)
                else:
                    await self._on_frame(message)
        except ConnectionClosed as exc:
            log.warning("connection %d: closed by the server (%s)", shard.index, exc)
            return "closed", got_frames
        except OSError as exc:
            log.warning("connection %d: connection error: %s", shard.index, exc)
            return "error", got_frames

    # -- frames ----------------------------------------------------------------------

    async def _on_frame(self, frame: bytes) -> None:
        received_at_ms = self._clock_ms()
        stats = self.stats
        metrics = self.metrics
        stats.frames += 1
        stats.bytes += len(frame)
        metrics.frames.inc()
        metrics.bytes.inc(len(frame))
        if self._recorder is not None:
            self._record(received_at_ms, frame)
        if len(frame) == 1:
            stats.heartbeats += 1
            metrics.heartbeats.inc()
            return
        decode = stats.decode
        publisher = self.publisher
        try_put = publisher.try_put
        keys = self._keys
        encode = tick_envelope.encode
        read = 0
        for packet in split_frame(frame, decode):
            # Validation is by packet length (any bytes of a known length decode), which
            # packet_token checks and counts exactly like decode_packet, without building
            # the Tick the ingestor would throw away.
            token = packet_token(packet, decode)
            if token is None:
                continue
            key = keys.get(token)
            if key is None:
                key = keys[token] = tick_envelope.token_key(token)
            value = encode(packet, received_at_ms)
            if not try_put(key, value):
                await publisher.put(key, value)
            read += 1
        stats.ticks_read += read
        metrics.ticks.inc(read)
        if decode.errors:
            self._sync_decode_metrics()

    def _record(self, received_at_ms: int, frame: bytes) -> None:
        assert self._recorder is not None
        self._recorder.write(received_at_ms, frame)
        now = time.monotonic()
        if now - self._recorder_flushed_at >= 1.0:
            # Bounded loss if the process is killed; read_frames tolerates a torn tail.
            self._recorder.flush()
            self._recorder_flushed_at = now

    def _sync_decode_metrics(self) -> None:
        for kind, count in self.stats.decode.errors.items():
            delta = count - self._errors_synced.get(kind, 0)
            if delta:
                self.metrics.parse_errors.labels(kind=kind).inc(delta)
                self._errors_synced[kind] = count

    def _on_text(self, shard: ShardConnection, text: str) -> None:
        message = parse_text_message(text)
        kind = message.type
        counts = self.stats.text_messages
        counts[kind] = counts.get(kind, 0) + 1
        self.metrics.text_messages.labels(type=kind).inc()
        if kind == "error":
            log.error("connection %d: server error: %s", shard.index, message.data)
        elif kind == "invalid":
            self.stats.decode.add_error("text")
            self._sync_decode_metrics()
            log.warning("connection %d: unparseable text frame: %.200r", shard.index, text)
        elif kind == "message":
            log.info("connection %d: server message: %s", shard.index, message.data)
        elif kind != "order":
            log.info("connection %d: text message of type %r", shard.index, kind)

    def _set_state(self, shard: ShardConnection, state: str) -> None:
        shard.state = state
        self.metrics.connection_state.labels(connection=str(shard.index)).state(state)
