"""Every topic the pipeline uses, created explicitly with its partition count.

Auto-creation is never relied on: Tansu auto-creates unknown topics with 4 partitions
and Redpanda with its own default, and a token-keyed topic with a different partition
count than the others would break "one worker owns a token end to end".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from config.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int


class TopicMismatchError(RuntimeError):
    """An existing topic has a partition count other than the configured one."""


def pipeline_topics(settings: Settings) -> list[TopicSpec]:
    """The token-keyed topics; all share ``topic_partitions``."""
    return [
        TopicSpec(name, settings.topic_partitions)
        for name in (
            settings.topic_ticks,
            settings.topic_bars,
            settings.topic_volume,
            settings.topic_baselines,
            settings.topic_indicators,
            settings.topic_alerts,
        )
    ]


async def ensure_topics(
    bootstrap_servers: str,
    topics: Iterable[TopicSpec],
    replication: int = 1,
    timeout: float = 30.0,
) -> dict[str, int]:
    """Create missing topics and verify the partition count of existing ones.

    Returns the partition count of every topic. Raises TopicMismatchError when an
    existing topic has another count (repartitioning silently would move tokens between
    workers, so an operator has to decide).
    """
    wanted = {spec.name: spec for spec in topics}
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=10_000)
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            await admin.start()
            break
        except KafkaError as exc:
            if asyncio.get_running_loop().time() > deadline:
                raise ConnectionError(f"broker {bootstrap_servers} unreachable: {exc}") from exc
            await asyncio.sleep(0.5)
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(spec.name, spec.partitions, replication)
            for name, spec in wanted.items()
            if name not in existing
        ]
        if missing:
            # Another worker may create them concurrently: the counts are verified below.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
            log.info("created topics %s", ", ".join(t.name for t in missing))
        described = await admin.describe_topics(list(wanted))
        counts = {entry["topic"]: len(entry["partitions"]) for entry in described}
    finally:
        await admin.close()
    for name, spec in wanted.items():
        if counts.get(name) != spec.partitions:
            raise TopicMismatchError(
                f"topic {name!r} has {counts.get(name)} partitions, settings say "
                f"{spec.partitions} (TICKFLOW_TOPIC_PARTITIONS); delete it or change the setting"
            )
    return counts
