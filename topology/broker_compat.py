"""Broker compatibility: true end offsets where ListOffsets(latest) is wrong.

Why this exists: the Tansu 0.6.0 build that tickflow embeds answers ListOffsets(latest)
with *the first offset of the last record batch + 1* instead of the last offset + 1,
while the high watermark in its Fetch responses is right. Faust's table recovery takes
the changelog high-water mark from ListOffsets:

    Recovery._build_highwaters -> app.consumer.highwaters(*tps)
      -> ThreadDelegateConsumer.highwaters -> AIOKafkaConsumerThread._highwaters
      -> aiokafka AIOKafkaConsumer.end_offsets(tps)          (ListOffsets, latest)

so on Tansu a recovery from an empty data directory stops before the changelog's last
batch ends (the table silently loses writes), and a restart with an intact data directory
fails with ``ConsistencyError: persisted offset ... is higher than ... highwater``.
Redpanda and Apache Kafka answer correctly, so the fix is active only where needed:

* ``mode="off"``: Faust's consumer is left alone (the mode is only logged).
* ``mode="on"``: the fix is active without asking the broker.
* ``mode="auto"`` (default): at the worker's first table recovery (before any high-water
  mark is used) :func:`probe_listoffsets` writes two batches of three records to a scratch
  topic and compares ListOffsets(latest) with the Fetch high watermark; the fix is active
  only if they differ. The result is cached for the life of the process.

When active, the wrapped ``highwaters()`` answers like :func:`true_end_offsets`: from the
high watermark of a Fetch response (and logs each partition it corrected). If that fetch
fails, the error reaches Faust's recovery and the worker stops, rather than recover a
table that is silently short. Only ``highwaters()`` of the one app given to
:func:`install` is touched (Recovery is its only caller in Faust); everything else in
Faust and aiokafka is unchanged.
:func:`true_end_offsets` is also the function for any tool that needs a partition's real
end (tail, replay, lag).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import faust
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaTimeoutError, TopicAlreadyExistsError
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth, server_list
from faust.types import TP

log = logging.getLogger(__name__)

FixMode = Literal["auto", "on", "off"]

#: Scratch topic of the auto-detection probe (1 partition; 6 tiny records per probe).
PROBE_TOPIC = "_tickflow-listoffsets-probe"

_INSTALLED_ATTR = "_tickflow_broker_compat"

#: Bound on the layer's own fetch during recovery; Faust's own bound on building the
#: high-water marks is broker_request_timeout (90 s by default).
_RECOVERY_TIMEOUT = 30.0

HighwatersFn = Callable[..., Awaitable[Mapping[TP, int]]]


async def true_end_offsets(
    bootstrap: str,
    partitions: Iterable[TopicPartition],
    *,
    timeout: float = 15.0,
    **client_options: Any,
) -> dict[TopicPartition, int]:
    """The real end offset (last offset + 1) of each partition, right on every broker.

    ListOffsets(latest) is asked first; it is a lower bound everywhere (exact on Kafka
    and Redpanda, too low on Tansu 0.6.0). For a non-empty partition a one-off consumer
    (no group) then fetches from one offset below that answer, so the broker always has
    a record to return at once, and the Fetch response's high watermark is the answer.
    ``client_options`` go to the consumer (security settings, for example).
    """
    _, true_end = await _end_offsets(bootstrap, partitions, timeout, client_options)
    return true_end


async def _end_offsets(
    bootstrap: str,
    partitions: Iterable[TopicPartition],
    timeout: float,
    client_options: Mapping[str, Any],
) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
    """(ListOffsets(latest), Fetch high watermark) of each partition."""
    tps = list(dict.fromkeys(partitions))
    if not tps:
        return {}, {}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_uncommitted",
        fetch_max_wait_ms=100,
        request_timeout_ms=int(timeout * 1000),
        **client_options,
    )
    await asyncio.wait_for(consumer.start(), timeout)
    try:
        listed: dict[TopicPartition, int] = await consumer.end_offsets(tps)
        beginning: dict[TopicPartition, int] = await consumer.beginning_offsets(tps)
        result: dict[TopicPartition, int] = {}
        start_at: dict[TopicPartition, int] = {}
        for tp in tps:
            if listed[tp] <= beginning[tp]:
                result[tp] = listed[tp]  # empty: no batch, so nothing to be wrong about
            else:
                start_at[tp] = max(listed[tp] - 1, beginning[tp])
        if start_at:
            consumer.assign(list(start_at))
            for tp, offset in start_at.items():
                consumer.seek(tp, offset)
            pending = set(start_at)
            while pending:
                if loop.time() > deadline:
                    raise KafkaTimeoutError(
                        f"no Fetch high watermark for {sorted(pending)} within {timeout:.0f}s"
                    )
                # Records are discarded: only the high watermark of the response counts.
                await consumer.getmany(*pending, timeout_ms=100)
                for tp in list(pending):
                    highwater = consumer.highwater(tp)
                    if highwater is not None:
                        result[tp] = max(int(highwater), listed[tp])
                        pending.discard(tp)
    finally:
        await consumer.stop()
    return {tp: int(listed[tp]) for tp in tps}, {tp: result[tp] for tp in tps}


@dataclass(frozen=True)
class ProbeResult:
    """What the probe saw on its scratch partition after writing two 3-record batches."""

    listoffsets: int
    fetch_highwater: int

    @property
    def quirk(self) -> bool:
        """True when ListOffsets(latest) lags the real end (the Tansu 0.6.0 behaviour)."""
        return self.listoffsets < self.fetch_highwater


async def probe_listoffsets(
    bootstrap: str, *, topic: str = PROBE_TOPIC, timeout: float = 15.0, **client_options: Any
) -> ProbeResult:
    """Write two batches of 3 records to ``topic`` and compare the two end offsets.

    The topic (1 partition) is created explicitly: Tansu would auto-create it with 4.
    The producer waits for all replicas (acks=all) so that on a replicated cluster the
    high watermark already covers both batches when ListOffsets is asked.
    """
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000), **client_options
    )
    await asyncio.wait_for(admin.start(), timeout)
    try:
        if topic not in await admin.list_topics():
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        await admin.close()
    # Not idempotent: Tansu refuses InitProducerId from aiokafka.
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=False, **client_options
    )
    await asyncio.wait_for(producer.start(), timeout)
    try:
        for batch_no in range(2):
            batch = producer.create_batch()
            for record_no in range(3):
                batch.append(key=None, value=b"probe %d.%d" % (batch_no, record_no), timestamp=None)
            await asyncio.wait_for(await producer.send_batch(batch, topic, partition=0), timeout)
    finally:
        await producer.stop()
    tp = TopicPartition(topic, 0)
    listed, true_end = await _end_offsets(bootstrap, [tp], timeout, client_options)
    return ProbeResult(listoffsets=listed[tp], fetch_highwater=true_end[tp])


async def broker_has_listoffsets_quirk(bootstrap: str, **client_options: Any) -> bool:
    """Diagnostic: does this broker answer ListOffsets(latest) below the real end?"""
    return (await probe_listoffsets(bootstrap, **client_options)).quirk


class ListOffsetsFix:
    """The installed layer of one app: its mode, and (once known) whether it is active."""

    def __init__(self, app: faust.App, mode: FixMode) -> None:
        if mode not in ("auto", "on", "off"):
            raise ValueError(f"broker ListOffsets fix mode must be auto, on or off, not {mode!r}")
        self.app = app
        self.mode: FixMode = mode
        self.bootstrap = ",".join(server_list(app.conf.broker_consumer, 9092))
        self._active: bool | None = {"on": True, "off": False}.get(mode)
        self._lock: asyncio.Lock | None = None

    @property
    def client_options(self) -> dict[str, Any]:
        """The app's broker security settings, for the layer's own clients."""
        conf = self.app.conf
        return dict(credentials_to_aiokafka_auth(conf.broker_credentials, conf.ssl_context))

    async def is_active(self) -> bool:
        """Whether high-water marks are corrected; in auto mode, probe once and cache."""
        if self._active is not None:
            return self._active
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._active is None:
                self._active = await self._detect()
        return self._active

    async def _detect(self) -> bool:
        try:
            probe = await probe_listoffsets(self.bootstrap, **self.client_options)
        except Exception as exc:
            # The layer's clients cannot reach the broker, so they could not fix anything
            # either: keep Faust's own behaviour and say so.
            log.warning(
                "broker compat: ListOffsets probe failed (%r); fix INACTIVE, Faust uses "
                "ListOffsets for changelog high-water marks (set mode=on to force)",
                exc,
            )
            return False
        if probe.quirk:
            log.info(
                "broker compat: ListOffsets fix ACTIVE (auto): on %s ListOffsets(latest)=%d "
                "but the Fetch high watermark is %d; changelog high-water marks for table "
                "recovery are read from Fetch",
                PROBE_TOPIC,
                probe.listoffsets,
                probe.fetch_highwater,
            )
        else:
            log.info(
                "broker compat: ListOffsets fix inactive (auto): ListOffsets(latest) equals "
                "the Fetch high watermark (%d)",
                probe.fetch_highwater,
            )
        return probe.quirk

    def attach(self, consumer: Any) -> None:
        """Log the mode and, unless off, replace ``consumer.highwaters``; idempotent."""
        if getattr(consumer, _INSTALLED_ATTR, None) is self:
            return
        setattr(consumer, _INSTALLED_ATTR, self)
        if self.mode == "off":
            log.info("broker compat: ListOffsets fix off (setting): Faust's own end offsets")
            return
        if self.mode == "on":
            log.info("broker compat: ListOffsets fix ACTIVE (setting mode=on)")
        else:
            log.info("broker compat: ListOffsets fix auto: probing the broker at first recovery")
        original: HighwatersFn = consumer.highwaters

        async def highwaters(*partitions: TP) -> Mapping[TP, int]:
            # Transactions read the last stable offset, which Faust takes from a fetch.
            if not partitions or consumer.in_transaction or not await self.is_active():
                return await original(*partitions)
            listed, true_end = await _end_offsets(
                self.bootstrap,
                [TopicPartition(tp.topic, tp.partition) for tp in partitions],
                _RECOVERY_TIMEOUT,
                self.client_options,
            )
            answer: dict[TP, int] = {}
            corrected: list[str] = []
            for tp in partitions:
                key = TopicPartition(tp.topic, tp.partition)
                answer[tp] = true_end[key]
                if true_end[key] != listed[key]:
                    corrected.append(f"{tp.topic}[{tp.partition}] {listed[key]}->{true_end[key]}")
            if corrected:
                log.info(
                    "broker compat: end offsets corrected from Fetch: %s", ", ".join(corrected)
                )
            return answer

        consumer.highwaters = highwaters


def install(app: faust.App, mode: FixMode = "auto") -> ListOffsetsFix:
    """Install the ListOffsets fix on ``app``; call once at app setup (twice is harmless).

    The app's consumer does not exist yet at setup time, so ``app._new_consumer`` is
    wrapped on this instance: the consumer it creates gets the corrected ``highwaters``.
    With ``mode="off"`` the consumer is left alone (only the mode is logged).
    """
    existing: ListOffsetsFix | None = getattr(app, _INSTALLED_ATTR, None)
    if existing is not None:
        if existing.mode != mode:
            raise ValueError(f"broker compat already installed with mode={existing.mode!r}")
        return existing
    fix = ListOffsetsFix(app, mode)
    setattr(app, _INSTALLED_ATTR, fix)
    new_consumer = app._new_consumer

    def _new_consumer() -> Any:
        # Created at app start, once the worker has set up logging: the place to say so.
        consumer = new_consumer()
        fix.attach(consumer)
        return consumer

    app._new_consumer = _new_consumer  # type: ignore[method-assign]
    if app._consumer is not None:
        fix.attach(app._consumer)
    return fix
