"""The tick hop's throughput against a bare Faust agent and a raw aiokafka loop.

``python -m bench.bench_tick_hop [--ticks N]``: starts its own Tansu and redis-server,
publishes N simulated full-mode ticks (the open of a 2000-token universe) to a fresh
ticks topic per contestant, then times, on the same records in the same run:

1. a hand-written aiokafka consume loop (the ceiling),
2. a bare Faust agent that only consumes (``bench/bare_agent_app.py``: the baseline),
3. the tick hop alone (``bench/tick_hop_app.py``: the topology's tick-rate agent without
   the bar-rate agents): decode, volume engine, bars, table checkpoints, the Redis mirror
   with Greeks, the commit gate;
4. the whole worker (``faust -A topology worker``): the tick hop plus the volume and
   signal agents (bars, volume ratios, indicators, patterns) in the same process.

Each run gets a fresh broker; bare agent, tick hop and worker alternate for ``--rounds``
rounds and the medians are compared. Rates are measured from the worker's first consumed record
to its last (polling its counter), so start-up and group join are excluded. The
instrument master is published to Redis beforehand, as it is on every worker start after
the first with the same master (otherwise its one-off publication would overlap the first
seconds of the timing). The goal is tick hop >= 80% of the bare agent: no per-tick
changelog write and no per-tick Redis round trip.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer
from prometheus_client.parser import text_string_to_metric_families

from config.instruments import InstrumentMaster
from core import tick_envelope
from core.kite_protocol import encode_packet
from core.market_simulator import MarketSimulator
from core.timeutil import IST
from scripts.kite_simulator import simulated_universe
from scripts.services import free_port, start_redis, start_tansu, stop_process
from scripts.topic_io import publish_records
from storage.instrument_store import publish_instruments
from storage.keys import Keys

PARTITIONS = 4
START = datetime(2026, 11, 24, 9, 15, tzinfo=IST)


def build_records(ticks: int) -> list[tuple[bytes, bytes]]:
    master = InstrumentMaster.load()
    universe = simulated_universe(master, 2000, START)
    market = MarketSimulator(universe, 3, START, master=master)
    records: list[tuple[bytes, bytes]] = []
    until = START
    while len(records) < ticks:
        until += timedelta(seconds=10)
        for tick in market.advance(until):
            packet = encode_packet(tick, "full")
            stamp = (tick.exchange_timestamp or 0) * 1000
            records.append((tick_envelope.token_key(tick.instrument_token),
                            tick_envelope.encode(packet, stamp)))  # fmt: skip
    return records[:ticks]


async def publish(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    await publish_records(bootstrap, topic, records, PARTITIONS)


async def publish_master(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        await publish_instruments(client, Keys(), InstrumentMaster.load().frame.rows(named=True))
    finally:
        await client.aclose()


async def raw_loop(bootstrap: str, topic: str, total: int) -> float:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
        group_id=f"raw-{uuid.uuid4().hex[:6]}", enable_auto_commit=False,
    )  # fmt: skip
    await consumer.start()
    seen = 0
    began = 0.0
    try:
        while seen < total:
            batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
            for records in batch.values():
                if records and not began:
                    began = time.perf_counter()
                for record in records:
                    tick_envelope.decode(record.value)  # touch the bytes, as a worker would
                seen += sum(len(r) for r in batch.values())
    finally:
        await consumer.stop()
    return total / (time.perf_counter() - began)


def scrape(url: str, counter: str) -> float:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            body = response.read().decode()
    except OSError:
        return 0.0
    if counter == "json":
        return float(json.loads(body)["consumed"])
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name == counter:
                return float(sample.value)
    return 0.0


def timed_worker(app: str, env: dict[str, str], url: str, counter: str, total: int) -> float:
    log = Path(env["TICKFLOW_STATE_DIR"]) / f"{app}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "faust", "-A", app, "worker", "-l", "warn",
             "--web-port", env["TICKFLOW_WORKER_WEB_PORT"]],
            env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        first_at = None
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{app} exited; see {log}")
            count = scrape(url, counter)
            now = time.perf_counter()
            if first_at is None and count > 0:
                first_at, first_count = now, count
            if count >= total and first_at is not None:
                return (count - first_count) / (now - first_at)
            time.sleep(0.2)
        raise RuntimeError(f"{app} did not consume {total} records in time; see {log}")
    finally:
        stop_process(proc)


def run_contestant(
    name: str, records: list[tuple[bytes, bytes]], redis_port: int, work: Path
) -> float:
    """One timed run on a broker of its own: Tansu keeps every record in memory and slows
    as it fills, so a shared broker would handicap whoever runs last."""
    suffix = f"{name}-{uuid.uuid4().hex[:6]}"
    broker_port = free_port()
    tansu = start_tansu(broker_port, work / f"tansu-{suffix}.log")
    bootstrap = f"127.0.0.1:{broker_port}"
    try:
        topic = f"ticks-{suffix}"
        asyncio.run(publish(bootstrap, topic, records))
        port = str(free_port())
        env = {
            "TICKFLOW_BROKER_URL": f"kafka://{bootstrap}",
            "TICKFLOW_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
            "TICKFLOW_APP_ID": f"bench-{suffix}",
            "TICKFLOW_TOPIC_TICKS": topic,
            "TICKFLOW_TOPIC_PARTITIONS": str(PARTITIONS),
            "TICKFLOW_WORKER_WEB_PORT": port,
            "TICKFLOW_STATE_DIR": str(work / suffix),
        }
        url = f"http://127.0.0.1:{port}"
        if name == "raw":
            return asyncio.run(raw_loop(bootstrap, topic, len(records)))
        if name == "bare":
            return timed_worker("bench.bare_agent_app", env, f"{url}/count", "json", len(records))
        return timed_worker(
            "bench.tick_hop_app" if name == "hop" else "topology", env, f"{url}/metrics",
            "tickflow_worker_ticks_consumed_total", len(records),
        )  # fmt: skip
    finally:
        stop_process(tansu)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=150_000)
    parser.add_argument(
        "--rounds", type=int, default=2, help="bare/hop/worker rounds, alternated (medians)"
    )
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="tickflow-bench-"))
    redis_port = free_port()
    redis = start_redis(redis_port, work / "redis.log")
    runs: dict[str, list[float]] = {"raw": [], "bare": [], "hop": [], "worker": []}
    try:
        print(f"building {args.ticks:,} simulated full-mode ticks ...", flush=True)
        records = build_records(args.ticks)
        asyncio.run(publish_master(f"redis://127.0.0.1:{redis_port}/0"))
        order = ["raw"] + ["bare", "hop", "worker"] * args.rounds
        for name in order:
            rate = run_contestant(name, records, redis_port, work)
            runs[name].append(rate)
            print(f"{name}: {rate:,.0f} records/s", flush=True)
    finally:
        stop_process(redis)
    rates = {name: statistics.median(values) for name, values in runs.items()}
    print(f"\n{len(records):,} ticks, {PARTITIONS} partitions, one worker process each, "
          f"median of {args.rounds} alternated runs\n")  # fmt: skip
    print("| consumer | records/s (runs) | vs bare Faust agent |")
    print("|---|---:|---:|")
    labels = {"raw": "aiokafka consume loop (ceiling)", "bare": "bare Faust agent (baseline)",
              "hop": "tick hop alone (bench.tick_hop_app)",
              "worker": "whole worker (faust -A topology)"}  # fmt: skip
    for name in ("raw", "bare", "hop", "worker"):
        each = ", ".join(f"{r:,.0f}" for r in runs[name])
        ratio = rates[name] / rates["bare"]
        print(f"| {labels[name]} | {rates[name]:,.0f} ({each}) | {ratio:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
