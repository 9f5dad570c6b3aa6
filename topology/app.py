"""The Faust application: ``faust -A topology worker``.

Thin on purpose: configuration from the settings, explicit topic creation before any
consumer subscribes, and the web endpoints. Agents live in their own modules.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import faust
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from config.settings import Settings, get_settings
from topology.broker_compat import install as install_broker_compat
from topology.topics import ensure_topics, pipeline_topics

log = logging.getLogger(__name__)


class TickflowApp(faust.App):
    """A Faust app that creates its topics itself (never by broker auto-creation)."""

    tickflow_settings: Settings

    async def on_first_start(self) -> None:
        # Faust creates its data directory without parents; the state dir may be new.
        Path(self.conf.datadir).parent.mkdir(parents=True, exist_ok=True)
        await super().on_first_start()
        settings = self.tickflow_settings
        counts = await ensure_topics(
            settings.bootstrap_servers, pipeline_topics(settings), settings.topic_replication
        )
        log.info("topics ready: %s", counts)
        observe_recovery(self)


def observe_recovery(app: faust.App) -> None:
    """Recovery time and changelog records applied per table, as metrics: how an operator
    sees that a restart with its data directory intact replays only the changelog's tail
    while an empty one rebuilds everything."""
    from topology import metrics  # the app module must not import agents' modules early

    recovery: Any = app.tables.recovery  # type: ignore[attr-defined]
    ended = recovery._set_recovery_ended

    def on_ended() -> None:
        ended()
        began, finished = recovery._recovery_started_at, recovery._recovery_ended_at
        if began is not None and finished is not None:
            metrics.TABLE_RECOVERY_SECONDS.set(finished - began)

    recovery._set_recovery_ended = on_ended
    for table in app.tables.values():
        counter = metrics.CHANGELOG_APPLIED.labels(table.name)
        apply = table.apply_changelog_batch

        def counted(batch: Any, apply: Any = apply, counter: Any = counter) -> None:
            events = list(batch)
            counter.inc(len(events))
            apply(events)

        table.apply_changelog_batch = counted


def create_app(settings: Settings) -> TickflowApp:
    app = TickflowApp(
        settings.app_id,
        broker=settings.broker_url,
        store="rocksdb://",
        datadir=str(settings.worker_datadir or settings.state_dir / "worker-data"),
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication,
        broker_session_timeout=settings.broker_session_timeout,
        broker_heartbeat_interval=min(3.0, settings.broker_session_timeout / 4),
        producer_acks=settings.producer_acks,
        processing_guarantee="at_least_once",
        web_port=settings.worker_web_port,
        web_bind=settings.worker_web_host,
        web_host=settings.worker_web_host,
        consumer_auto_offset_reset="earliest",
        # The tick hop holds acknowledgements until its state is checkpointed; on shutdown
        # the unacknowledged tail is simply consumed again (the engine ignores what its
        # checkpoints already cover), so do not wait for it to drain.
        stream_wait_empty=False,
    )
    app.tickflow_settings = settings
    install_broker_compat(app, settings.broker_listoffsets_fix)
    return app


settings = get_settings()
app = create_app(settings)


def token_topic(name: str, value_serializer: str = "json") -> faust.TopicT:
    """A topic keyed by instrument token (ASCII bytes), with the shared partition count,
    so every token-keyed topic places a token on the same partition number."""
    return app.topic(
        name,
        key_serializer="raw",
        value_serializer=value_serializer,
        partitions=settings.topic_partitions,
    )


ticks_topic = token_topic(settings.topic_ticks, value_serializer="raw")


@app.page("/metrics")
async def metrics(web: faust.web.View, request: faust.web.Request) -> faust.web.Response:
    # aiohttp takes the charset separately from the content type.
    content_type, _, _ = CONTENT_TYPE_LATEST.partition("; charset")
    return web.bytes(generate_latest(), content_type=content_type)
