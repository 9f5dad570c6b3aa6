"""Reading the pipeline's topics from outside the workers, right on every broker.

``health_check`` and the ``debug_pipeline`` topic tools (``scripts.pipeline_tools``) both
need a partition's true end, its newest records, the offset of an instant and the
partition of a token. Two measured quirks of the embedded broker (Tansu 0.6.0, see
DESIGN.md) make the obvious aiokafka calls wrong there, so they are handled here once:

* ``ListOffsets(latest)`` answers the first offset of the last record batch + 1, not the
  last offset + 1. It is still a lower bound everywhere, so :func:`read_tails` fetches
  from one below it: the response holds the partition's last record (the whole last
  batch on Tansu) and its high watermark is the real end. This is the approach of
  :func:`topology.broker_compat.true_end_offsets`, plus the records, which the health
  check decodes for its freshness checks.
* ``ListOffsets`` by timestamp (``offsets_for_times``) answers offset 0 for any instant
  (with timestamp -1, or the current time). :func:`offsets_for_time` checks the broker's
  answer against the records around it and otherwise binary-searches the partition by
  record timestamp.

Every client here is group-less except :func:`committed_offsets`, which only reads a
group's committed offsets (OffsetFetch) and never joins the group, so it cannot trigger
a rebalance of the workers. (aiokafka's admin ``list_consumer_group_offsets`` cannot
decode Tansu's OffsetFetch answer; the consumer's own OffsetFetch can.)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaTimeoutError
from aiokafka.partitioner import murmur2

from topology.topics import TopicSpec, ensure_topics

#: A consumer record as aiokafka yields it (key and value are raw bytes here).
Record: TypeAlias = ConsumerRecord[bytes, bytes]


def partition_for_key(key: bytes, partitions: int) -> int:
    """The partition the producers put ``key`` on (murmur2, as aiokafka's and the Java
    client's default partitioner do), so a token's records are found without a scan."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def token_key(token: int) -> bytes:
    """The key of a token in every token-keyed topic (ASCII decimal)."""
    return str(token).encode("ascii")


@contextlib.asynccontextmanager
async def plain_consumer(
    bootstrap: str, *, timeout: float = 10.0, group_id: str | None = None
) -> AsyncIterator[AIOKafkaConsumer]:
    """A started consumer without subscriptions (and, by default, without a group)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_uncommitted",
        fetch_max_wait_ms=100,
        request_timeout_ms=int(timeout * 1000),
    )
    try:
        await asyncio.wait_for(consumer.start(), timeout)
    except BaseException:
        await consumer.stop()
        raise
    try:
        yield consumer
    finally:
        await consumer.stop()


async def topic_partitions(bootstrap: str, *, timeout: float = 10.0) -> dict[str, int]:
    """Every topic on the broker with its partition count.

    Only topics the broker lists are described: on Tansu, describing an unknown topic
    creates it (with 4 partitions), which a read-only tool must never do.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout)
        names = sorted(await asyncio.wait_for(admin.list_topics(), timeout))
        if not names:
            return {}
        described = await asyncio.wait_for(admin.describe_topics(names), timeout)
    finally:
        await admin.close()
    return {entry["topic"]: len(entry["partitions"]) for entry in described}


@dataclass
class PartitionTail:
    """A partition's bounds and its newest records (oldest first)."""

    begin: int
    end: int
    #: ListOffsets(latest) as the broker answered it (lower than ``end`` on Tansu 0.6.0).
    listed_end: int
    records: list[Record] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return self.end <= self.begin


async def read_tails(
    consumer: AIOKafkaConsumer, partitions: Iterable[TopicPartition], *, timeout: float = 10.0
) -> dict[TopicPartition, PartitionTail]:
    """The true end and the last record(s) of each partition (see the module docstring).

    A partition that grows meanwhile is read up to the end its first fetch response
    reported, so a busy topic cannot keep this waiting.
    """
    tps = list(dict.fromkeys(partitions))
    if not tps:
        return {}
    listed: dict[TopicPartition, int] = await consumer.end_offsets(tps)
    begin: dict[TopicPartition, int] = await consumer.beginning_offsets(tps)
    tails = {tp: PartitionTail(begin[tp], listed[tp], listed[tp]) for tp in tps}
    pending = {tp for tp in tps if listed[tp] > begin[tp]}
    if not pending:
        return tails
    consumer.assign(list(pending))
    for tp in pending:
        consumer.seek(tp, max(listed[tp] - 1, begin[tp]))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    target: dict[TopicPartition, int] = {}
    while pending:
        if loop.time() > deadline:
            raise KafkaTimeoutError(f"no fetch answer for {sorted(pending)} in {timeout:.0f}s")
        batches = await consumer.getmany(*pending, timeout_ms=200)
        for tp in list(pending):
            got = batches.get(tp, [])
            tails[tp].records.extend(got)
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            target.setdefault(tp, max(int(highwater), listed[tp]))
            position = got[-1].offset + 1 if got else await consumer.position(tp)
            if position >= target[tp]:
                tails[tp].end = max(target[tp], position)
                pending.discard(tp)
    consumer.assign([])
    return tails


async def true_ends(
    consumer: AIOKafkaConsumer, partitions: Iterable[TopicPartition], *, timeout: float = 10.0
) -> dict[TopicPartition, int]:
    """The real end offset (last offset + 1) of each partition."""
    return {
        tp: tail.end
        for tp, tail in (await read_tails(consumer, partitions, timeout=timeout)).items()
    }


async def committed_offsets(
    bootstrap: str, group: str, partitions: Iterable[TopicPartition], *, timeout: float = 10.0
) -> dict[TopicPartition, int | None]:
    """The group's committed offset of each partition (None: nothing committed).

    The consumer carries the group id only to ask OffsetFetch; it never subscribes, so it
    never joins the group and the workers' assignment is untouched.
    """
    async with plain_consumer(bootstrap, timeout=timeout, group_id=group) as consumer:
        result: dict[TopicPartition, int | None] = {}
        for tp in partitions:
            result[tp] = await asyncio.wait_for(consumer.committed(tp), timeout)
        return result


async def _first_record_at(
    consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int, timeout: float
) -> Record | None:
    """The first record at or after ``offset`` (None past the end)."""
    consumer.seek(tp, offset)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        got = (await consumer.getmany(tp, timeout_ms=200, max_records=1)).get(tp)
        if got:
            return got[0]
        highwater = consumer.highwater(tp)
        if highwater is not None and offset >= highwater:
            return None
    raise KafkaTimeoutError(f"no record of {tp} at offset {offset} within {timeout:.0f}s")


async def _is_first_at_or_after(
    consumer: AIOKafkaConsumer,
    tp: TopicPartition,
    tail: PartitionTail,
    offset: int,
    timestamp_ms: int,
    timeout: float,
) -> bool:
    """Whether ``offset`` is the first offset whose record is at or after the instant:
    its record (if any) is not before it, and the record before it is."""
    if not tail.begin <= offset <= tail.end:
        return False
    record = await _first_record_at(consumer, tp, offset, timeout)
    if record is not None and record.timestamp < timestamp_ms:
        return False
    if offset == tail.begin:
        return True
    previous = await _first_record_at(consumer, tp, offset - 1, timeout)
    return previous is None or previous.offset >= offset or previous.timestamp < timestamp_ms


async def offsets_for_time(
    consumer: AIOKafkaConsumer,
    tails: dict[TopicPartition, PartitionTail],
    timestamp_ms: int,
    *,
    timeout: float = 10.0,
) -> dict[TopicPartition, int]:
    """Per partition, the first offset whose record timestamp is at or after the instant
    (the end offset when there is none). ``tails`` come from :func:`read_tails`.

    The broker is asked first, and its answer is checked against the records around it
    (two fetches): Tansu 0.6.0 answers offset 0 with the current time as timestamp for
    any instant. An answer that fails the check falls back to a binary search over the
    records' timestamps, which assumes they grow along the partition (producer
    CreateTime: true for the ingestor's ticks up to clock steps).
    """
    result: dict[TopicPartition, int] = {}
    live = {tp: tail for tp, tail in tails.items() if not tail.empty}
    for tp, tail in tails.items():
        if tail.empty:
            result[tp] = tail.end
    if not live:
        return result
    answered: dict[TopicPartition, Any] = await consumer.offsets_for_times(
        {tp: timestamp_ms for tp in live}
    )
    consumer.assign(list(live))
    try:
        for tp, tail in live.items():
            answer = answered.get(tp)
            offset = tail.end if answer is None else int(answer.offset)
            if await _is_first_at_or_after(consumer, tp, tail, offset, timestamp_ms, timeout):
                result[tp] = offset
                continue
            low, high = tail.begin, tail.end  # the answer lies in [low, high]
            while low < high:
                mid = (low + high) // 2
                record = await _first_record_at(consumer, tp, mid, timeout)
                if record is None or record.timestamp >= timestamp_ms:
                    high = mid
                else:
                    # Every offset up to this record starts at a record before the instant.
                    low = record.offset + 1
            result[tp] = low
    finally:
        consumer.assign([])
    return result


async def publish_records(
    bootstrap: str, topic: str, records: Iterable[tuple[bytes, bytes]], partitions: int
) -> None:
    """Create ``topic`` with ``partitions`` (never by auto-creation) and send ``records``
    (key, value) to it, keyed like the pipeline's producers; returns once all are
    acknowledged. For benches and tests that feed a pipeline pre-built ticks."""
    await ensure_topics(bootstrap, [TopicSpec(topic, partitions)])
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20)
    await producer.start()
    try:
        for key, value in records:
            await producer.send(topic, value, key=key)
        await producer.flush()
    finally:
        await producer.stop()
