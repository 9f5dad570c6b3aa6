"""``scripts.health_check`` against real services: a Tansu broker, redis-server, and for the
end-to-end test the Kite simulator, the ingestor and a Faust worker as processes.

Each unhealthy state is produced for real (a stopped worker, a paused market, a topic
with the wrong partition count, a missing schema marker) and the check must say so with
the right reason; the stack must read healthy again once it recovers.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from config.instruments import InstrumentMaster
from config.settings import Settings
from core import tick_envelope
from core.kite_protocol import encode_packet
from core.market_simulator import MarketSimulator
from core.timeutil import IST
from scripts.health_check import CheckResult, Options, run_checks
from scripts.kite_simulator import KiteSimulatorServer, simulated_universe
from scripts.services import free_port, start_redis, stop_process
from tests.e2e.conftest import ProcessGroup
from tests.support.services import BrokerEndpoint, RedisEndpoint

ROOT = Path(__file__).resolve().parents[2]
PIPELINE = ("ticks", "bars", "volume", "baselines", "indicators", "alerts")


def stack_env(
    broker: BrokerEndpoint, redis_url: str, tmp_path: Path, suffix: str
) -> dict[str, str]:
    """TICKFLOW_* of an isolated stack: own topics, app id, key prefix and ports."""
    env = {f"TICKFLOW_TOPIC_{name.upper()}": f"{name}-{suffix}" for name in PIPELINE}
    env.update(
        {
            "TICKFLOW_BROKER_URL": broker.url,
            "TICKFLOW_REDIS_URL": redis_url,
            "TICKFLOW_APP_ID": f"hc-{suffix}",
            "TICKFLOW_TOPIC_PARTITIONS": "4",
            "TICKFLOW_REDIS_KEY_PREFIX": f"hc{suffix}:",
            "TICKFLOW_STATE_DIR": str(tmp_path / "state"),
            "TICKFLOW_WORKER_WEB_PORT": str(free_port()),
            "TICKFLOW_INGESTOR_METRICS_PORT": str(free_port()),
        }
    )
    return env


def settings_of(env: dict[str, str]) -> Settings:
    """The Settings the CLI would read from ``env`` (for in-process checks; the Kite
    values, which the checks do not read, are left out)."""
    values = {
        key.removeprefix("TICKFLOW_").lower(): value
        for key, value in env.items()
        if not key.startswith("TICKFLOW_KITE_")
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TICKFLOW_")}
    return subprocess.run(
        [sys.executable, "-m", "scripts.health_check", *args],
        env={**clean, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def by_name(checks: Sequence[dict[str, Any]] | Sequence[CheckResult]) -> dict[str, Any]:
    return {
        (c["name"] if isinstance(c, dict) else c.name): (c if isinstance(c, dict) else c.__dict__)
        for c in checks
    }


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[ProcessGroup]:
    """Worker and ingestor processes of a test (tests/e2e's fixture, for this package)."""
    group = ProcessGroup(tmp_path)
    try:
        yield group
    finally:
        group.stop_all()


def failing(results: Sequence[CheckResult]) -> dict[str, str]:
    return {r.name: r.reason for r in results if r.status == "FAIL"}


# --- without a stack ----------------------------------------------------------------------


def test_nothing_running_is_unhealthy_with_a_reason_per_service(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    # A run file naming a worker whose process is gone (a finished child, reaped).
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (state / "run.json").write_text(
        json.dumps([{"name": "worker-0", "pid": gone.pid, "log": "/tmp/w0.log"}])
    )
    env = {
        "TICKFLOW_BROKER_URL": f"kafka://127.0.0.1:{free_port()}",
        "TICKFLOW_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "TICKFLOW_WORKER_WEB_PORT": str(free_port()),
        "TICKFLOW_INGESTOR_METRICS_PORT": str(free_port()),
        "TICKFLOW_STATE_DIR": str(state),
    }
    done = run_cli(env, "--json", "--timeout", "2")
    assert done.returncode == 1, done.stderr
    body = json.loads(done.stdout)
    checks = by_name(body["checks"])
    assert not body["healthy"]
    assert checks["broker"]["status"] == "FAIL" and "unreachable" in checks["broker"]["reason"]
    assert checks["redis"]["status"] == "FAIL" and "unreachable" in checks["redis"]["reason"]
    assert checks["ingestor"]["status"] == "FAIL"
    workers = checks["workers"]
    assert workers["status"] == "FAIL"
    assert f":{env['TICKFLOW_WORKER_WEB_PORT']} unreachable" in workers["reason"]
    assert f"pid {gone.pid}) has exited" in workers["reason"]
    for name in ("topics", "lag", "feed"):
        assert checks[name]["status"] == "SKIP", checks[name]
    assert {line.split(":")[0] for line in body["failures"]} >= {"broker", "redis", "workers"}

    human = run_cli(env, "--timeout", "2")
    assert human.returncode == 1
    assert "UNHEALTHY" in human.stdout and "FAIL" in human.stdout
    assert "Traceback" not in human.stdout + human.stderr


def test_explicit_workers_and_something_else_on_a_worker_port(tmp_path: Path) -> None:
    """``--workers`` replaces the run file; a port answering HTML is no worker."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        other = f"http://127.0.0.1:{server.server_address[1]}"
        nobody = f"http://127.0.0.1:{free_port()}"
        env = {
            "TICKFLOW_BROKER_URL": f"kafka://127.0.0.1:{free_port()}",
            "TICKFLOW_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
            "TICKFLOW_INGESTOR_METRICS_PORT": "0",
            "TICKFLOW_STATE_DIR": str(tmp_path / "state"),
        }
        done = run_cli(env, "--json", "--timeout", "2", "--workers", f"{other}/,{nobody}")
        checks = by_name(json.loads(done.stdout)["checks"])
        reason = checks["workers"]["reason"]
        assert f"{other} /health/ready answered HTTP 501 without a JSON object" in reason
        assert f"{nobody} unreachable" in reason
        assert set(checks["workers"]["details"]) == {other, nobody}
        assert checks["ingestor"]["status"] == "SKIP"  # metrics port 0: nothing to ask
    finally:
        server.shutdown()
        server.server_close()


def test_secrets_are_never_printed(tmp_path: Path) -> None:
    secret_redis = "s3cret-redis-" + uuid.uuid4().hex
    secret_kite = "s3cret-kite-" + uuid.uuid4().hex
    port = free_port()
    proc = start_redis(port, tmp_path / "redis.log", password=secret_redis)
    try:
        redis.Redis(port=port, password=secret_redis).set("tickflow:schema", "1")
        env = {
            "TICKFLOW_BROKER_URL": f"kafka://127.0.0.1:{free_port()}",
            # The password inside the URL: settings move it into a SecretStr.
            "TICKFLOW_REDIS_URL": f"redis://:{secret_redis}@127.0.0.1:{port}/0",
            "TICKFLOW_KITE_ACCESS_TOKEN": secret_kite,
            "TICKFLOW_STATE_DIR": str(tmp_path / "state"),
            "TICKFLOW_WORKER_WEB_PORT": str(free_port()),
            "TICKFLOW_INGESTOR_METRICS_PORT": str(free_port()),
        }
        for args in (["--json"], []):
            done = run_cli(env, "--timeout", "2", *args)
            output = done.stdout + done.stderr
            assert secret_redis not in output and secret_kite not in output
        body = json.loads(run_cli(env, "--json", "--timeout", "2").stdout)
        # The password was used (Redis answered with it), just never shown.
        assert by_name(body["checks"])["redis"]["status"] == "OK", body
    finally:
        stop_process(proc)


# --- broker and Redis state, no worker ------------------------------------------------------


async def test_topics_lag_schema_and_an_old_feed_are_judged_from_the_broker(
    broker: BrokerEndpoint, redis_endpoint: RedisEndpoint, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:8]
    env = stack_env(broker, redis_endpoint.url, tmp_path, suffix)
    settings = settings_of(env)
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
    await admin.start()
    try:
        # Every pipeline topic but one with 4 partitions; alerts with 2.
        await admin.create_topics(
            [
                NewTopic(f"{name}-{suffix}", 2 if name == "alerts" else 4, 1)
                for name in PIPELINE
                if name != "indicators"
            ]
        )
    finally:
        await admin.close()
    ticks = settings.topic_ticks
    partition = 1
    old_ms = int((time.time() - 600) * 1000)
    master = InstrumentMaster.load()
    start = datetime(2026, 11, 24, 10, 0, tzinfo=IST)
    market = MarketSimulator(simulated_universe(master, 5, start), seed=3, start=start)
    packets = [encode_packet(t, "full") for t in market.advance(start + timedelta(seconds=30))]
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        # Two separate batches, so Tansu's ListOffsets(latest) says 4 (first offset of the
        # last batch + 1) while the partition really ends at 6.
        for batch_no in range(2):
            for packet in packets[batch_no * 3 : batch_no * 3 + 3]:
                await producer.send(
                    ticks, tick_envelope.encode(packet, old_ms), partition=partition
                )
            await producer.flush()
    finally:
        await producer.stop()
    client = redis.Redis.from_url(redis_endpoint.url)
    client.set(f"{settings.redis_key_prefix}tickflow:schema", "2")

    results = await run_checks(settings, Options(stale_after=60, max_lag=3), timeout=3)
    checks = by_name(results)
    topics = checks["topics"]["reason"]
    assert checks["topics"]["status"] == "FAIL"
    assert f"indicators-{suffix} missing" in topics
    assert f"alerts-{suffix} has 2 partitions, settings say 4" in topics
    assert checks["lag"]["status"] == "FAIL"
    assert "has committed nothing" in checks["lag"]["reason"]
    assert checks["redis"]["status"] == "FAIL" and "is '2'" in checks["redis"]["reason"]
    assert checks["feed"]["status"] == "FAIL"
    published = re.search(r"stale: no tick published for (\d+)s", checks["feed"]["reason"])
    assert published and 600 <= int(published.group(1)) < 700, checks["feed"]
    assert 600 <= checks["feed"]["details"]["partition_age_seconds"][str(partition)] < 700
    assert checks["workers"]["status"] == "FAIL"

    # The app's group commits offset 2 of 6: a lag of 4, measured against the true end.
    group = AIOKafkaConsumer(
        bootstrap_servers=broker.bootstrap, group_id=settings.app_id, enable_auto_commit=False
    )
    await group.start()
    try:
        group.assign([TopicPartition(ticks, partition)])
        await group.commit({TopicPartition(ticks, partition): 2})
    finally:
        await group.stop()
    client.set(f"{settings.redis_key_prefix}tickflow:schema", "1")
    results = await run_checks(settings, Options(stale_after=60, max_lag=3), timeout=3)
    checks = by_name(results)
    lag = checks["lag"]
    assert lag["details"][str(partition)] == {"end": 6, "committed": 2, "lag": 4}, lag
    assert lag["status"] == "FAIL" and f"partitions {partition} over 3" in lag["reason"]
    assert checks["redis"]["status"] == "OK"
    results = await run_checks(settings, Options(stale_after=60, max_lag=4), timeout=3)
    assert by_name(results)["lag"]["status"] == "OK"
    # Only listed topics were described: the missing one was not auto-created.
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
    await admin.start()
    try:
        assert f"indicators-{suffix}" not in await admin.list_topics()
    finally:
        await admin.close()


# --- the whole stack -------------------------------------------------------------------------


def market_start(now: datetime) -> datetime:
    """A simulated start in NSE hours and never behind the wall clock.

    Packets without an exchange timestamp (the quote-mode snapshot a subscription gets
    before the mode switch) take the receive time as event time in the tick hop; were
    the wall clock ahead of the simulated market, those would open a later minute and
    hold the partition's watermark sweep (and its commits) until the market caught up.
    """
    moment = (now.astimezone(IST) + timedelta(minutes=1)).replace(second=0, microsecond=0)
    while True:
        if moment.weekday() < 5:
            opens = moment.replace(hour=9, minute=20)
            if moment < opens:
                return opens
            if moment <= moment.replace(hour=15, minute=0):
                return moment
        moment = (moment + timedelta(days=1)).replace(hour=0, minute=0)


async def wait_for(
    settings: Settings,
    done: Any,
    timeout: float,
    options: Options,
    workers: list[str] | None = None,
) -> list[CheckResult]:
    deadline = time.monotonic() + timeout
    while True:
        results = await run_checks(settings, options, workers=workers, timeout=3)
        if done(results) or time.monotonic() > deadline:
            return results
        await asyncio.sleep(1)


def healthy(results: Sequence[CheckResult]) -> bool:
    return not failing(results)


WORKER_ARGS = ["-m", "faust", "-A", "topology", "worker", "-l", "info"]
STALE = 8.0


async def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """run_cli off the event loop: the in-process simulator must keep sending (a blocked
    loop sends no heartbeat, and the ingestor would reconnect after its liveness timeout)."""
    return await asyncio.to_thread(run_cli, env, *args)


@pytest.mark.e2e
async def test_health_follows_a_real_stack_through_a_stopped_worker_and_a_stale_feed(
    broker: BrokerEndpoint,
    redis_endpoint: RedisEndpoint,
    tmp_path: Path,
    processes: ProcessGroup,
) -> None:
    suffix = uuid.uuid4().hex[:8]
    env = stack_env(broker, redis_endpoint.url, tmp_path, suffix)
    master = InstrumentMaster.load()
    start = market_start(datetime.now(IST))
    universe = simulated_universe(master, 20, start)
    market = MarketSimulator(universe, seed=13, start=start)
    # 2x: event time runs at twice the wall clock, so the processing check's 8 s of
    # exchange time are 4 s of real lag.
    server = KiteSimulatorServer(market, port=0, api_key="hc-key", access_token="hc-tok", speed=2)
    await server.start()
    env.update(
        {
            "TICKFLOW_KITE_WS_URL": server.url,
            "TICKFLOW_KITE_API_KEY": "hc-key",
            "TICKFLOW_KITE_ACCESS_TOKEN": "hc-tok",
            "TICKFLOW_KITE_TOKENS": json.dumps([i.instrument_token for i in universe]),
        }
    )
    settings = settings_of(env)
    state = Path(env["TICKFLOW_STATE_DIR"])
    state.mkdir(parents=True)
    options = Options(stale_after=STALE, max_lag=settings.worker_ready_max_lag)
    worker_args = [*WORKER_ARGS, "--web-port", env["TICKFLOW_WORKER_WEB_PORT"]]

    def start_worker(name: str) -> subprocess.Popen[bytes]:
        proc = processes.start(name, worker_args, env)
        # As start_system records it: the health check finds the worker through this.
        (state / "run.json").write_text(
            json.dumps([{"name": "worker-0", "pid": proc.pid, "log": "worker.log"}])
        )
        return proc

    try:
        worker = start_worker("worker")
        processes.start("ingestor", ["-m", "scripts.run_ingestor"], env)

        # 1. Healthy once caught up.
        results = await wait_for(settings, healthy, 90, options)
        assert healthy(results), f"{failing(results)}\n{processes.log_tail('worker')}"
        done = await cli(env, "--json", "--stale-after", str(STALE))
        body = json.loads(done.stdout)
        assert done.returncode == 0 and body["healthy"], body["failures"]
        assert {c["status"] for c in body["checks"]} == {"OK"}, body["checks"]
        human = await cli(env, "--stale-after", str(STALE))
        assert human.returncode == 0 and "healthy" in human.stdout
        assert "UNHEALTHY" not in human.stdout

        # 2. The worker stops: unhealthy, and the reason names it.
        worker.terminate()
        await asyncio.to_thread(worker.wait, 30)
        done = await cli(env, "--json", "--stale-after", str(STALE))
        assert done.returncode == 1
        checks = by_name(json.loads(done.stdout)["checks"])
        reason = checks["workers"]["reason"]
        assert checks["workers"]["status"] == "FAIL"
        assert "unreachable" in reason and "has exited" in reason, reason
        assert checks["processing"]["status"] == "FAIL", checks["processing"]
        assert checks["feed"]["status"] == "OK", checks["feed"]
        assert checks["ingestor"]["status"] == "OK", checks["ingestor"]

        # 3. It comes back (same data directory): healthy again.
        start_worker("worker-again")
        results = await wait_for(settings, healthy, 90, options)
        assert healthy(results), f"{failing(results)}\n{processes.log_tail('worker-again')}"

        # 4. The market pauses: the ingestor stays connected (heartbeats), the feed goes
        # stale, while the worker, caught up, is not to blame.
        server.pause_market()
        results = await wait_for(settings, lambda r: "feed" in failing(r), 20, options)
        problems = failing(results)
        assert set(problems) == {"feed"}, problems
        assert "stale: no tick published" in problems["feed"]
        assert "every connection connected" in problems["feed"], problems["feed"]
        done = await cli(env, "--stale-after", str(STALE))
        assert done.returncode == 1 and "feed: stale" in done.stdout.replace("\n", " ")

        # 5. Ticks flow again: healthy.
        server.resume_market()
        results = await wait_for(settings, healthy, 30, options)
        assert healthy(results), failing(results)
    finally:
        processes.stop_all()
        await server.stop()
