"""The worker's web endpoints beside ``/metrics``: liveness, readiness, token lookups.

``/health/live``: the process answers (its event loop turns). ``/health/ready``: table
recovery has finished and the tick lag of every assigned partition is within
``worker_ready_max_lag``, i.e. this worker's outputs are current; a load balancer or an
operator's health check waits for this, not for liveness. ``/tokens/{token}``: what the
worker's tables hold for one token (volume state, volume analytics, signal state), routed
by Faust to the worker that owns the token's partition, so it can be asked of any worker.
"""

from __future__ import annotations

from typing import Any

import faust

from topology import metrics, tick_hop
from topology.app import app, settings, ticks_topic
from topology.signals import signals_table
from topology.tick_hop import volume_states
from topology.volume import volume_table


def ticks_lag() -> dict[str, int]:
    """partition -> records between the worker's position and the partition's end."""
    consumer: Any = app.consumer
    lag: dict[str, int] = {}
    for tp in consumer.assignment():
        if tp.topic != settings.topic_ticks:
            continue
        end = consumer.highwater(tp)
        read = consumer._read_offset[tp]  # last offset handed to the agents
        if end is not None:
            lag[str(tp.partition)] = max(0, end - (read + 1 if read is not None else 0))
    return lag


def readiness() -> dict[str, Any]:
    recovery: Any = app.tables.recovery  # type: ignore[attr-defined]
    recovered = recovery.completed.is_set() and not recovery.in_recovery
    lag = ticks_lag()
    ready = recovered and all(n <= settings.worker_ready_max_lag for n in lag.values())
    return {"ready": ready, "recovered": recovered, "lag": lag,
            "max_lag": settings.worker_ready_max_lag}  # fmt: skip


@app.timer(interval=5.0)
async def export_lag() -> None:
    """Readiness and per-partition lag as metrics, for Prometheus and health_check."""
    state = readiness()
    for partition, lag in state["lag"].items():
        metrics.TICKS_LAG.labels(partition).set(lag)
    metrics.WORKER_READY.set(1 if state["ready"] else 0)


@app.page("/health/live")
async def live(web: faust.web.View, request: faust.web.Request) -> faust.web.Response:
    return web.json({"alive": True})


@app.page("/health/ready")
async def ready(web: faust.web.View, request: faust.web.Request) -> faust.web.Response:
    body = readiness()
    return web.json(body, status=200 if body["ready"] else 503)


@app.page("/tokens/{token}")
@app.topic_route(topic=ticks_topic, match_info="token")
async def token_state(
    web: faust.web.View, request: faust.web.Request, *args: Any, **kwargs: Any
) -> faust.web.Response:
    token = request.match_info["token"]
    if not token.isdigit():
        return web.json({"error": f"not an instrument token: {token!r}"}, status=400)
    hop = tick_hop.hop
    held = hop.states.get(int(token)) if hop is not None else None
    return web.json(
        {
            "token": int(token),
            "volume_state": volume_states.get(token),
            "volume_state_in_memory": held.to_dict() if held is not None else None,
            "volume_analytics": volume_table.get(token),
            "signals": signals_table.get(token),
        }
    )
