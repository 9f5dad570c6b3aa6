"""Is the pipeline healthy right now? ``python -m scripts.health_check``.

Usage::

    python -m scripts.health_check [--json] [--workers URL,...] [--ingestor URL]
                                   [--stale-after SECONDS] [--max-lag N] [--timeout SECONDS]

One line per check, OK / FAIL / SKIP with the reason (``--json``: the same as one JSON
object). Exit status 0 only when no check failed, 1 when one did (the reasons are
printed), 2 for invalid settings or arguments. Every address comes from the settings
(``TICKFLOW_*``), so it checks whichever stack those point at; secrets (Redis password,
Kite access token) never appear in the output.

The checks:

``broker``      the bootstrap servers answer (topic metadata).
``topics``      every pipeline topic exists with ``topic_partitions`` partitions (a wrong
                count breaks "one worker owns a token end to end").
``lag``         the app's consumer group (``app_id``) on the ticks topic: committed offset
                vs true end offset per partition, at most ``--max-lag`` (default
                ``worker_ready_max_lag``). End offsets come from the Fetch high watermark,
                not ListOffsets(latest), which on Tansu 0.6.0 stops at the first offset of
                the last batch + 1 and would understate the lag (see ``scripts.topic_io``).
                The tick hop's commit gate keeps commits behind what is durable (up to
                about one bar), so this lag is an upper bound on the backlog; the
                workers' own read lag is in the ``workers`` check.
``workers``     every worker's ``/health/ready`` answers 200: its tables are recovered and
                its read lag is within ``worker_ready_max_lag``; and together the ready
                workers own every partition of the ticks topic that holds records (one
                nobody owns waits for a rebalance). Workers come from
                ``--workers``, else the run file of ``start_system`` (``worker-N`` listens
                on ``worker_web_port + N``; a worker whose process has exited is said so),
                else one worker on ``worker_web_port``.
``redis``       Redis answers and ``tickflow:schema`` (with the key prefix) is ``1``.
``ingestor``    the ingestor's ``/health`` (on ``ingestor_metrics_port``) answers 200:
                every Kite connection is connected. SKIP when its port is 0.
``feed``        freshness of the source (see below).
``processing``  freshness of the workers' output (see below).

Staleness, the two definitions (``--stale-after S``, default 30 s):

* **feed stale**: the newest record of the ticks topic was received by the ingestor more
  than S seconds ago (its envelope receive time, wall clock; the newest record over all
  partitions, read from the broker, so it holds across ingestor restarts and needs no
  ingestor metric). The reason says what the ingestor reports: unreachable, connections
  down, or connected but silent (outside market hours Kite sends only heartbeats, so a
  stale feed there is expected: pass a larger ``--stale-after``).
* **processing stale**: the newest exchange time the workers have mirrored into Redis
  (``tickflow_worker_last_event_time_seconds``, the maximum over the workers) is more
  than S seconds of *exchange time* behind the newest exchange time in the ticks topic.
  It is measured in event time, as the pipeline is: a paused source is not a stale
  worker, and with a sped-up simulator S means simulated seconds.

A check that cannot be evaluated because another one failed (no broker: no lag) is
SKIP with that reason; the failed check already makes the exit status non-zero.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from aiokafka import TopicPartition
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from rich.console import Console
from rich.table import Table

from config.settings import Settings, get_settings
from core import tick_envelope
from core.kite_protocol import decode_packet
from core.timeutil import IST
from scripts.topic_io import (
    PartitionTail,
    committed_offsets,
    plain_consumer,
    read_tails,
    topic_partitions,
)
from storage.keys import SCHEMA_VERSION, Keys
from storage.redis_client import async_redis
from topology.topics import pipeline_topics

Status = Literal["OK", "FAIL", "SKIP"]

EXIT_HEALTHY = 0
EXIT_UNHEALTHY = 1
EXIT_USAGE = 2

#: The run file of ``scripts.start_system`` (not imported: that module pulls in the
#: whole process manager).
RUN_FILE = "run.json"
DEFAULT_STALE_AFTER = 30.0


@dataclass
class CheckResult:
    """One line of the report."""

    name: str
    status: Status
    reason: str
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.status == "FAIL"


# --- observations: what the services say (I/O) -----------------------------------------


@dataclass
class BrokerView:
    error: str | None = None
    #: topic -> partition count, every topic on the broker
    topics: dict[str, int] = field(default_factory=dict)
    #: partition of the ticks topic -> its tail (bounds and newest records)
    tails: dict[int, PartitionTail] = field(default_factory=dict)
    tails_error: str | None = None
    #: partition of the ticks topic -> the group's committed offset (None: none)
    committed: dict[int, int | None] = field(default_factory=dict)
    committed_error: str | None = None


@dataclass
class HttpView:
    """What one HTTP service answered: its JSON health body and its metrics."""

    url: str
    status: int | None = None
    body: dict[str, Any] | None = None
    error: str | None = None
    #: sample name -> value, summed over labels (absent when /metrics failed)
    metrics: dict[str, float] | None = None
    #: For a worker from the run file whose process is gone.
    process_note: str | None = None


@dataclass
class RedisView:
    error: str | None = None
    schema: str | None = None


@dataclass
class Observations:
    broker: BrokerView
    workers: list[HttpView]
    ingestor: HttpView | None
    redis: RedisView
    #: wall clock (epoch seconds) when the observations were taken
    now: float


def _error_text(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        text = str(exc.reason)
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        text = "timed out"
    return text


async def observe_broker(settings: Settings, timeout: float) -> BrokerView:
    view = BrokerView()
    try:
        view.topics = await topic_partitions(settings.bootstrap_servers, timeout=timeout)
    except Exception as exc:
        view.error = f"{settings.bootstrap_servers} unreachable: {_error_text(exc)}"
        return view
    ticks = settings.topic_ticks
    if ticks not in view.topics:
        return view
    tps = [TopicPartition(ticks, p) for p in range(view.topics[ticks])]
    try:
        async with plain_consumer(settings.bootstrap_servers, timeout=timeout) as consumer:
            tails = await asyncio.wait_for(read_tails(consumer, tps, timeout=timeout), timeout * 2)
        view.tails = {tp.partition: tail for tp, tail in tails.items()}
    except Exception as exc:
        view.tails_error = _error_text(exc)
    try:
        committed = await asyncio.wait_for(
            committed_offsets(settings.bootstrap_servers, settings.app_id, tps, timeout=timeout),
            timeout * 2,
        )
        view.committed = {tp.partition: offset for tp, offset in committed.items()}
    except Exception as exc:
        view.committed_error = _error_text(exc)
    return view


def _http_get(url: str, timeout: float) -> tuple[int, bytes]:
    """GET a URL; a 4xx/5xx answer is returned, not raised (503 is a health answer)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def scrape_metrics(text: str) -> dict[str, float]:
    """Sample name -> value; samples of one name with different labels are summed."""
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + float(sample.value)
    return totals


def _observe_http(url: str, health_path: str, timeout: float) -> HttpView:
    view = HttpView(url)
    try:
        view.status, payload = _http_get(url + health_path, timeout)
    except (OSError, ValueError) as exc:
        view.error = f"unreachable ({_error_text(exc)})"
        return view
    try:
        body = json.loads(payload) if payload else {}
    except ValueError:
        body = None
    if not isinstance(body, dict):
        view.error = f"{health_path} answered HTTP {view.status} without a JSON object"
        return view
    view.body = body
    with contextlib.suppress(OSError, ValueError):
        status, payload = _http_get(url + "/metrics", timeout)
        if status == 200:
            view.metrics = scrape_metrics(payload.decode("utf-8", "replace"))
    return view


async def observe_redis(settings: Settings, timeout: float) -> RedisView:
    view = RedisView()
    client = async_redis(settings)
    try:
        raw = await asyncio.wait_for(client.get(Keys(settings.redis_key_prefix).schema), timeout)
        view.schema = raw.decode() if isinstance(raw, bytes) else raw
    except Exception as exc:
        view.error = f"{settings.redis_url} unreachable: {_error_text(exc)}"
    finally:
        with contextlib.suppress(Exception):
            await client.aclose()
    return view


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    status = Path(f"/proc/{pid}/status")
    with contextlib.suppress(OSError):
        if "\nState:\tZ" in status.read_text():
            return False  # a zombie: exited, not yet reaped by its parent
    return True


def _local_host(host: str) -> str:
    return "127.0.0.1" if host in ("", "0.0.0.0", "::") else host


def worker_targets(
    settings: Settings, explicit: Sequence[str] | None
) -> list[tuple[str, str | None]]:
    """(URL, process note) of every worker to check; see the module docstring."""
    if explicit:
        return [(url.rstrip("/"), None) for url in explicit]
    host = _local_host(settings.worker_web_host)
    run_file = settings.state_dir.resolve() / RUN_FILE
    try:
        entries = json.loads(run_file.read_text())
    except (OSError, ValueError):
        entries = None
    if isinstance(entries, list):
        targets: list[tuple[str, str | None]] = []
        for entry in entries:
            name = str(entry.get("name", ""))
            index = name.removeprefix("worker-")
            if not name.startswith("worker-") or not index.isdigit():
                continue
            url = f"http://{host}:{settings.worker_web_port + int(index)}"
            pid = int(entry.get("pid", 0))
            note = None
            if pid and not _pid_alive(pid):
                note = f"process {name} (pid {pid}) has exited; see {entry.get('log', 'its log')}"
            targets.append((url, note))
        if targets:
            return targets
    return [(f"http://{host}:{settings.worker_web_port}", None)]


def ingestor_target(settings: Settings, explicit: str | None) -> str | None:
    if explicit:
        return explicit.rstrip("/")
    if not settings.ingestor_metrics_port:
        return None
    return f"http://127.0.0.1:{settings.ingestor_metrics_port}"


async def observe(
    settings: Settings,
    *,
    workers: Sequence[str] | None = None,
    ingestor: str | None = None,
    timeout: float = 5.0,
) -> Observations:
    """Ask every service at once; nothing here decides what is healthy."""
    targets = worker_targets(settings, workers)
    ingestor_url = ingestor_target(settings, ingestor)

    async def worker(url: str, note: str | None) -> HttpView:
        view = await asyncio.to_thread(_observe_http, url, "/health/ready", timeout)
        view.process_note = note
        return view

    async def ingestor_view() -> HttpView | None:
        if ingestor_url is None:
            return None
        return await asyncio.to_thread(_observe_http, ingestor_url, "/health", timeout)

    broker_task = asyncio.ensure_future(observe_broker(settings, timeout))
    redis_task = asyncio.ensure_future(observe_redis(settings, timeout))
    ingestor_task = asyncio.ensure_future(ingestor_view())
    worker_views = await asyncio.gather(*(worker(url, note) for url, note in targets))
    broker, redis_view, ingestor_seen = await broker_task, await redis_task, await ingestor_task
    return Observations(
        broker=broker,
        workers=list(worker_views),
        ingestor=ingestor_seen,
        redis=redis_view,
        now=time.time(),
    )


# --- evaluation: what is healthy (pure) --------------------------------------------------


@dataclass(frozen=True)
class Options:
    stale_after: float = DEFAULT_STALE_AFTER
    max_lag: int = 10_000


def _ranges(numbers: Sequence[int]) -> str:
    """0,1,2,5 -> "0-2,5"."""
    out: list[str] = []
    ordered = sorted(numbers)
    start = prev = None
    for n in ordered:
        if start is None:
            start = prev = n
        elif prev is not None and n == prev + 1:
            prev = n
        else:
            out.append(str(start) if start == prev else f"{start}-{prev}")
            start = prev = n
    if start is not None:
        out.append(str(start) if start == prev else f"{start}-{prev}")
    return ",".join(out)


def check_broker(obs: Observations, settings: Settings) -> CheckResult:
    if obs.broker.error:
        return CheckResult("broker", "FAIL", obs.broker.error)
    return CheckResult(
        "broker",
        "OK",
        f"{settings.bootstrap_servers} answers ({len(obs.broker.topics)} topics)",
    )


def check_topics(obs: Observations, settings: Settings) -> CheckResult:
    if obs.broker.error:
        return CheckResult("topics", "SKIP", "broker unreachable")
    problems: list[str] = []
    details: dict[str, Any] = {}
    specs = pipeline_topics(settings)
    for spec in specs:
        found = obs.broker.topics.get(spec.name)
        details[spec.name] = found
        if found is None:
            problems.append(f"{spec.name} missing")
        elif found != spec.partitions:
            problems.append(f"{spec.name} has {found} partitions, settings say {spec.partitions}")
    if problems:
        hint = " (a worker or the ingestor creates them at start; TICKFLOW_TOPIC_PARTITIONS)"
        return CheckResult("topics", "FAIL", "; ".join(problems) + hint, details)
    return CheckResult(
        "topics",
        "OK",
        f"{len(specs)} topics with {settings.topic_partitions} partitions each",
        details,
    )


def check_lag(obs: Observations, settings: Settings, options: Options) -> CheckResult:
    broker = obs.broker
    group, topic = settings.app_id, settings.topic_ticks
    if broker.error:
        return CheckResult("lag", "SKIP", "broker unreachable")
    if topic not in broker.topics:
        return CheckResult("lag", "SKIP", f"topic {topic} missing")
    if broker.tails_error:
        return CheckResult(
            "lag", "FAIL", f"end offsets of {topic} unreadable: {broker.tails_error}"
        )
    if broker.committed_error:
        return CheckResult(
            "lag",
            "FAIL",
            f"committed offsets of group {group} unreadable: {broker.committed_error}",
        )
    details: dict[str, Any] = {}
    for partition, tail in sorted(broker.tails.items()):
        committed = broker.committed.get(partition)
        start = committed if committed is not None else tail.begin
        details[str(partition)] = {
            "end": tail.end,
            "committed": committed,
            "lag": max(0, tail.end - start),
        }
    with_data = [p for p, tail in broker.tails.items() if not tail.empty]
    if with_data and all(broker.committed.get(p) is None for p in with_data):
        return CheckResult(
            "lag",
            "FAIL",
            f"consumer group {group} has committed nothing on {topic} "
            "(no worker has consumed it yet, or TICKFLOW_APP_ID differs)",
            details,
        )
    if not details:
        return CheckResult("lag", "OK", f"{topic} has no partitions to lag on", details)
    worst = max(details, key=lambda p: details[p]["lag"])
    total = sum(d["lag"] for d in details.values())
    over = sorted(int(p) for p, d in details.items() if d["lag"] > options.max_lag)
    summary = (
        f"group {group} on {topic}: total {total}, max {details[worst]['lag']} (partition {worst})"
    )
    if over:
        return CheckResult(
            "lag",
            "FAIL",
            f"{summary}; partitions {_ranges(over)} over {options.max_lag}",
            details,
        )
    return CheckResult("lag", "OK", summary, details)


def _worker_problem(view: HttpView, max_lag: int) -> str | None:
    if view.error is not None:
        text = f"{view.url} {view.error}"
        if view.process_note:
            text += f"; {view.process_note}"
        return text
    body = view.body or {}
    if view.status == 200 and body.get("ready"):
        return None
    if view.status not in (200, 503):
        return f"{view.url} /health/ready answered HTTP {view.status}"
    if not body.get("recovered", False):
        return f"{view.url} not ready: table recovery in progress"
    lag = {str(k): int(v) for k, v in (body.get("lag") or {}).items()}
    over = {p: n for p, n in lag.items() if n > int(body.get("max_lag", max_lag))}
    if over:
        worst = max(over, key=lambda p: over[p])
        return (
            f"{view.url} not ready: read lag {over[worst]} on partition {worst} "
            f"(> {body.get('max_lag', max_lag)})"
        )
    return f"{view.url} not ready: {json.dumps(body)[:200]}"


def check_workers(obs: Observations, settings: Settings) -> CheckResult:
    if not obs.workers:
        return CheckResult("workers", "FAIL", "no worker to check")
    problems = [
        p for p in (_worker_problem(v, settings.worker_ready_max_lag) for v in obs.workers) if p
    ]
    details: dict[str, Any] = {
        v.url: {"status": v.status, "ready": v.body, "error": v.error, "process": v.process_note}
        for v in obs.workers
    }
    if problems:
        return CheckResult("workers", "FAIL", "; ".join(problems), details)
    owned: set[int] = set()
    read_lag = 0
    for view in obs.workers:
        lag = (view.body or {}).get("lag") or {}
        owned.update(int(p) for p in lag)
        read_lag = max([read_lag, *(int(n) for n in lag.values())])
    # Partitions without any record are left out: a worker may not report a partition
    # it has never fetched anything from, and nothing there waits to be processed.
    with_data = {p for p, tail in obs.broker.tails.items() if not tail.empty}
    if with_data:
        unowned = sorted(with_data - owned)
        if unowned:
            return CheckResult(
                "workers",
                "FAIL",
                f"partitions {_ranges(unowned)} of {settings.topic_ticks} are owned by no ready "
                "worker (a rebalance in progress, or a worker outside --workers)",
                details,
            )
    count = len(obs.workers)
    return CheckResult(
        "workers",
        "OK",
        f"{count} worker{'s' if count != 1 else ''} ready and recovered, max read lag {read_lag}",
        details,
    )


def check_redis(obs: Observations, settings: Settings) -> CheckResult:
    view = obs.redis
    key = Keys(settings.redis_key_prefix).schema
    if view.error:
        return CheckResult("redis", "FAIL", view.error)
    if view.schema is None:
        return CheckResult(
            "redis", "FAIL", f"{key} is missing (no worker has started on this database?)"
        )
    if view.schema != str(SCHEMA_VERSION):
        return CheckResult(
            "redis", "FAIL", f"{key} is {view.schema!r}, this tickflow needs {SCHEMA_VERSION}"
        )
    return CheckResult("redis", "OK", f"answers, {key} = {SCHEMA_VERSION}")


def _connections(view: HttpView) -> list[dict[str, Any]]:
    body = view.body or {}
    conns = body.get("connections")
    return [c for c in conns if isinstance(c, dict)] if isinstance(conns, list) else []


def check_ingestor(obs: Observations) -> CheckResult:
    view = obs.ingestor
    if view is None:
        return CheckResult(
            "ingestor", "SKIP", "metrics port off (TICKFLOW_INGESTOR_METRICS_PORT=0)"
        )
    if view.error is not None:
        return CheckResult("ingestor", "FAIL", f"{view.url} {view.error}")
    body = view.body or {}
    conns = _connections(view)
    states = ", ".join(f"#{c.get('index')} {c.get('state')}" for c in conns) or "none"
    details = {"health": body}
    if view.status != 200:
        reason = f"degraded: connections {states}"
        if body.get("error"):
            reason += f"; error: {body['error']}"
        return CheckResult("ingestor", "FAIL", reason, details)
    return CheckResult(
        "ingestor",
        "OK",
        f"{len(conns)} connection{'s' if len(conns) != 1 else ''} connected, buffer "
        f"{body.get('buffer_depth', '?')}/{body.get('buffer_capacity', '?')}, "
        f"{body.get('ticks_published', '?')} ticks published",
        details,
    )


@dataclass(frozen=True)
class FeedTimes:
    """The newest receive time and exchange time among the ticks topic's last records."""

    received_ms: int | None
    exchange_s: int | None


def feed_times(tails: dict[int, PartitionTail]) -> FeedTimes:
    received: int | None = None
    exchange: int | None = None
    for tail in tails.values():
        for record in tail.records:
            try:
                envelope = tick_envelope.decode(record.value or b"")
            except tick_envelope.EnvelopeError:
                continue
            received = max(received or 0, envelope.received_at_ms)
            tick = decode_packet(envelope.packet)
            if tick is not None and tick.exchange_timestamp:
                exchange = max(exchange or 0, tick.exchange_timestamp)
    return FeedTimes(received, exchange)


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, IST).isoformat(timespec="seconds")


def _ingestor_state(obs: Observations) -> str:
    view = obs.ingestor
    if view is None:
        return "the ingestor's state is unknown (its metrics port is off)"
    if view.error is not None:
        return f"the ingestor at {view.url}: {view.error}"
    conns = _connections(view)
    down = [c for c in conns if c.get("state") != "connected"]
    if view.status == 200 and not down:
        return (
            "the ingestor reports every connection connected: the source sends no ticks "
            "(market closed, or an idle feed)"
        )
    states = ", ".join(f"#{c.get('index')} {c.get('state')}" for c in conns) or "none"
    return f"the ingestor's connections: {states}"


def check_feed(obs: Observations, settings: Settings, options: Options) -> CheckResult:
    broker = obs.broker
    topic = settings.topic_ticks
    if broker.error:
        return CheckResult("feed", "SKIP", "broker unreachable")
    if topic not in broker.topics:
        return CheckResult("feed", "SKIP", f"topic {topic} missing")
    if broker.tails_error:
        return CheckResult(
            "feed", "FAIL", f"newest records of {topic} unreadable: {broker.tails_error}"
        )
    times = feed_times(broker.tails)
    if times.received_ms is None:
        return CheckResult(
            "feed",
            "FAIL",
            f"{topic} holds no tick: nothing was ever published; {_ingestor_state(obs)}",
        )
    age = max(0.0, obs.now - times.received_ms / 1000)
    details: dict[str, Any] = {
        "newest_receive_time": _iso(times.received_ms / 1000),
        "age_seconds": round(age, 3),
        # Per partition: a silent one (while others flow) points at the tokens on it.
        "partition_age_seconds": {
            str(partition): round(max(0.0, obs.now - newest / 1000), 3)
            for partition, tail in sorted(broker.tails.items())
            if (newest := feed_times({partition: tail}).received_ms) is not None
        },
    }
    if age > options.stale_after:
        return CheckResult(
            "feed",
            "FAIL",
            f"stale: no tick published for {age:.0f}s (> {options.stale_after:g}s); "
            f"{_ingestor_state(obs)}",
            details,
        )
    return CheckResult("feed", "OK", f"newest tick received {age:.1f}s ago", details)


def check_processing(obs: Observations, settings: Settings, options: Options) -> CheckResult:
    broker = obs.broker
    if broker.error:
        return CheckResult("processing", "SKIP", "broker unreachable")
    if settings.topic_ticks not in broker.topics or broker.tails_error:
        return CheckResult(
            "processing", "SKIP", f"newest records of {settings.topic_ticks} unknown"
        )
    newest = feed_times(broker.tails).exchange_s
    if newest is None:
        return CheckResult(
            "processing", "SKIP", "no exchange timestamp in the newest ticks (ltp/quote mode)"
        )
    seen = [
        v.metrics["tickflow_worker_last_event_time_seconds"]
        for v in obs.workers
        if v.metrics is not None and "tickflow_worker_last_event_time_seconds" in v.metrics
    ]
    if not seen:
        return CheckResult(
            "processing", "FAIL", "no worker answered /metrics: nothing is processed"
        )
    mirrored = max(seen)
    if mirrored <= 0:
        return CheckResult("processing", "FAIL", "the workers have mirrored no tick yet")
    behind = max(0.0, newest - mirrored)
    details = {
        "newest_exchange_time": _iso(newest),
        "mirrored_exchange_time": _iso(mirrored),
        "behind_seconds": behind,
    }
    if behind > options.stale_after:
        return CheckResult(
            "processing",
            "FAIL",
            f"stale: Redis mirrors exchange time {_iso(mirrored)}, {behind:.0f}s behind the "
            f"newest tick ({_iso(newest)}; > {options.stale_after:g}s)",
            details,
        )
    return CheckResult(
        "processing", "OK", f"Redis is {behind:.0f}s of exchange time behind the feed", details
    )


def evaluate(obs: Observations, settings: Settings, options: Options) -> list[CheckResult]:
    return [
        check_broker(obs, settings),
        check_topics(obs, settings),
        check_lag(obs, settings, options),
        check_workers(obs, settings),
        check_redis(obs, settings),
        check_ingestor(obs),
        check_feed(obs, settings, options),
        check_processing(obs, settings, options),
    ]


async def run_checks(
    settings: Settings,
    options: Options | None = None,
    *,
    workers: Sequence[str] | None = None,
    ingestor: str | None = None,
    timeout: float = 5.0,
) -> list[CheckResult]:
    """Observe everything, then judge it (for scripts and tests that want the results)."""
    chosen = options or Options(max_lag=settings.worker_ready_max_lag)
    obs = await observe(settings, workers=workers, ingestor=ingestor, timeout=timeout)
    return evaluate(obs, settings, chosen)


# --- output ------------------------------------------------------------------------------


def secrets_of(settings: Settings) -> list[str]:
    """Every secret value the settings hold (never to be printed)."""
    found = []
    for _, value in settings:
        if isinstance(value, SecretStr) and value.get_secret_value():
            found.append(value.get_secret_value())
    return sorted(found, key=len, reverse=True)


def redact(value: Any, secrets: Sequence[str]) -> Any:
    """``value`` with every secret replaced by ``***`` in every string it holds."""
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, "***")
        return value
    if isinstance(value, dict):
        return {redact(k, secrets): redact(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v, secrets) for v in value]
    return value


def report(results: Sequence[CheckResult], settings: Settings) -> dict[str, Any]:
    body = {
        "healthy": not any(r.failed for r in results),
        "checked_at": datetime.now(IST).isoformat(timespec="seconds"),
        "checks": [asdict(r) for r in results],
        "failures": [f"{r.name}: {r.reason}" for r in results if r.failed],
    }
    redacted: dict[str, Any] = redact(body, secrets_of(settings))
    return redacted


_STYLE = {"OK": "green", "FAIL": "bold red", "SKIP": "yellow"}


def render(body: dict[str, Any], console: Console) -> None:
    table = Table(title="tickflow health", expand=False)
    table.add_column("check")
    table.add_column("status")
    table.add_column("reason", overflow="fold")
    for check in body["checks"]:
        status = check["status"]
        table.add_row(check["name"], f"[{_STYLE[status]}]{status}[/]", check["reason"])
    console.print(table)
    if body["healthy"]:
        console.print("[green]healthy[/green]")
    else:
        console.print("[bold red]UNHEALTHY[/bold red]")
        for line in body["failures"]:
            console.print(f"  - {line}", markup=False, highlight=False)


def parse_args(argv: Sequence[str] | None, settings: Settings) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.health_check",
        description="Check broker, topics, consumer lag, workers, Redis, ingestor and data "
        "freshness; exit 0 only when all are healthy.",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    parser.add_argument(
        "--workers",
        type=lambda text: [u.strip() for u in text.split(",") if u.strip()],
        default=None,
        metavar="URL,...",
        help="worker base URLs (default: the run file of start_system, else "
        "TICKFLOW_WORKER_WEB_PORT on this host)",
    )
    parser.add_argument(
        "--ingestor",
        default=None,
        metavar="URL",
        help="ingestor base URL (default: http://127.0.0.1:TICKFLOW_INGESTOR_METRICS_PORT)",
    )
    parser.add_argument(
        "--stale-after",
        type=float,
        default=DEFAULT_STALE_AFTER,
        metavar="SECONDS",
        help="feed: no tick published for this long; processing: Redis this many seconds "
        f"of exchange time behind the feed (default {DEFAULT_STALE_AFTER:g})",
    )
    parser.add_argument(
        "--max-lag",
        type=int,
        default=settings.worker_ready_max_lag,
        metavar="N",
        help="committed lag per partition allowed (default TICKFLOW_WORKER_READY_MAX_LAG)",
    )
    parser.add_argument(
        "--timeout", type=float, default=5.0, metavar="SECONDS", help="per request (default 5)"
    )
    args = parser.parse_args(argv)
    if args.stale_after <= 0:
        parser.error("--stale-after must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = get_settings()
    except ValueError as exc:  # pydantic's ValidationError
        print(f"health_check: invalid settings: {exc}", file=sys.stderr)
        return EXIT_USAGE
    args = parse_args(argv, settings)
    # Broker errors are reported as check reasons; aiokafka's own tracebacks would only
    # bury them.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    options = Options(stale_after=args.stale_after, max_lag=args.max_lag)
    results = asyncio.run(
        run_checks(
            settings, options, workers=args.workers, ingestor=args.ingestor, timeout=args.timeout
        )
    )
    body = report(results, settings)
    if args.json:
        print(json.dumps(body, indent=2, default=str))
    else:
        render(body, Console(highlight=False))
    return EXIT_HEALTHY if body["healthy"] else EXIT_UNHEALTHY


if __name__ == "__main__":
    raise SystemExit(main())
