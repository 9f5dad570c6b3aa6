"""A tiny Faust app for the broker-compatibility tests, run as a real worker process.

``python -m faust -A tests.topology.compat_app worker -l info --web-port PORT``

Configured only from ``COMPAT_*`` environment variables, so each test picks the broker,
app id (consumer group and changelog topic), data directory and fix mode. The agent
stores ``table[key] = int(value)``: idempotent, so the expected table is known exactly.
``GET /table/`` answers 503 until the table's recovery has completed, so it doubles as
the readiness check (Faust's web server itself starts before recovery).
"""

from __future__ import annotations

import os
from typing import Any

import faust

from topology.broker_compat import install

PARTITIONS = int(os.environ.get("COMPAT_PARTITIONS", "2"))
SESSION_TIMEOUT = float(os.environ.get("COMPAT_SESSION_TIMEOUT", "10"))

app = faust.App(
    os.environ["COMPAT_APP_ID"],
    broker=os.environ["COMPAT_BROKER_URL"],
    store="rocksdb://",
    datadir=os.environ["COMPAT_DATADIR"],
    topic_partitions=PARTITIONS,
    topic_replication_factor=1,
    broker_session_timeout=SESSION_TIMEOUT,
    broker_heartbeat_interval=min(3.0, SESSION_TIMEOUT / 4),
    processing_guarantee="at_least_once",
    # Changelog writes that arrive together leave in one batch, so the changelog ends
    # in a multi-record batch: the case Tansu's ListOffsets gets wrong.
    producer_linger_ms=int(os.environ.get("COMPAT_LINGER_MS", "100")),
    consumer_auto_offset_reset="earliest",
    web_bind="127.0.0.1",
    web_host="127.0.0.1",
)

source = app.topic(
    os.environ["COMPAT_TOPIC"],
    key_serializer="raw",
    value_serializer="raw",
    partitions=PARTITIONS,
)
values = app.Table("values", default=int, partitions=PARTITIONS)

install(app, mode=os.environ.get("COMPAT_FIX", "auto"))  # type: ignore[arg-type]


@app.agent(source)
async def apply(stream: faust.StreamT[bytes]) -> None:
    async for key, value in stream.items():
        values[key.decode()] = int(value)


@app.page("/table/")
async def table(web: faust.web.View, request: faust.web.Request) -> faust.web.Response:
    if not app.tables.actives_ready or app.rebalancing:
        return web.json({"error": "recovering"}, status=503)
    contents: dict[str, Any] = dict(values.items())
    return web.json(contents)
