"""The baseline of ``bench.bench_tick_hop``: a Faust agent that only consumes the ticks
topic (no decode, no state, no Redis), configured like the real worker."""

from __future__ import annotations

from typing import Any

import faust

from config.settings import get_settings

settings = get_settings()
app = faust.App(
    f"{settings.app_id}-bare",
    broker=settings.broker_url,
    store="memory://",
    topic_partitions=settings.topic_partitions,
    broker_session_timeout=settings.broker_session_timeout,
    web_port=settings.worker_web_port,
    consumer_auto_offset_reset="earliest",
)
ticks = app.topic(settings.topic_ticks, key_serializer="raw", value_serializer="raw")
consumed = 0


@app.agent(ticks)
async def bare(stream: Any) -> None:
    global consumed
    async for _ in stream:
        consumed += 1


@app.page("/count")
async def count(web: faust.web.View, request: faust.web.Request) -> faust.web.Response:
    return web.json({"consumed": consumed})
