"""A worker can be killed anywhere and the results do not change.

A simulated session (200 tokens x 30 market minutes) is published once per run to its
own topics; an uninterrupted worker's final ``bars:1m:*``, ``vol:*`` and ``ind:*`` are the
reference. Then the same ticks are processed by workers that are ``kill -9``-ed at random
points and restarted (on their surviving RocksDB data directory, or on an empty one that
must be rebuilt from the changelogs), alone, or while workers join and leave (two, then
three, one killed and restarted, one killed for good); the final Redis contents must
equal the reference key by key.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from config.instruments import InstrumentMaster
from core import tick_envelope
from core.kite_protocol import encode_packet
from core.market_simulator import MarketSimulator
from core.timeutil import IST
from scripts.kite_simulator import simulated_universe
from scripts.services import free_port
from scripts.topic_io import publish_records
from tests.e2e.conftest import ProcessGroup

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

TOKENS = 200
MINUTES = 30
PARTITIONS = 4
START = datetime(2026, 11, 24, 12, 0, tzinfo=IST)


@pytest.fixture(scope="module")
def session_records() -> tuple[list[int], list[tuple[bytes, bytes]]]:
    """The simulated session as ticks-topic records (deterministic: seeded market)."""
    master = InstrumentMaster.load()
    universe = simulated_universe(master, TOKENS, START)
    market = MarketSimulator(universe, 5, START, master=master)
    records = []
    for tick in market.advance(START + timedelta(minutes=MINUTES)):
        stamp = tick.exchange_timestamp or 0
        records.append(
            (
                tick_envelope.token_key(tick.instrument_token),
                tick_envelope.encode(encode_packet(tick, "full"), stamp * 1000),
            )
        )
    return [i.instrument_token for i in universe], records


class Run:
    """One pipeline instance: its own app id, topics, Redis prefix and workers."""

    def __init__(self, name: str, broker: Any, redis_url: str, tmp: Path, group: ProcessGroup):
        suffix = f"{name}-{uuid.uuid4().hex[:6]}"
        self.name = name
        self.group = group
        self.tmp = tmp
        self.prefix = f"crash-{suffix}:"
        self.bootstrap = broker.bootstrap
        self.env = {
            "TICKFLOW_BROKER_URL": broker.url,
            "TICKFLOW_REDIS_URL": redis_url,
            "TICKFLOW_APP_ID": f"crash-{suffix}",
            "TICKFLOW_TOPIC_PARTITIONS": str(PARTITIONS),
            "TICKFLOW_TOPIC_TICKS": f"ticks-{suffix}",
            "TICKFLOW_TOPIC_BARS": f"bars-{suffix}",
            "TICKFLOW_TOPIC_VOLUME": f"volume-{suffix}",
            "TICKFLOW_TOPIC_BASELINES": f"baselines-{suffix}",
            "TICKFLOW_TOPIC_INDICATORS": f"indicators-{suffix}",
            "TICKFLOW_TOPIC_ALERTS": f"alerts-{suffix}",
            "TICKFLOW_REDIS_KEY_PREFIX": self.prefix,
            "TICKFLOW_STATE_DIR": str(tmp / suffix),
        }
        self.starts = 0
        self.ports: dict[int, int] = {}

    async def replayed_at_recovery(self, slot: int, table: str, timeout: float = 120) -> float:
        """Changelog records the worker in ``slot`` applied to ``table`` during the
        recovery of its start (read once /health/ready says it recovered)."""
        base = f"http://127.0.0.1:{self.ports[slot]}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{base}/health/ready", timeout=2) as response:
                    recovered = json.loads(response.read())["recovered"]
            except urllib.error.HTTPError as exc:  # 503: not ready, body still says why
                recovered = json.loads(exc.read())["recovered"]
            except OSError:
                recovered = False
            if recovered:
                with urllib.request.urlopen(f"{base}/metrics", timeout=2) as response:
                    text = response.read().decode()
                for family in text_string_to_metric_families(text):
                    for sample in family.samples:
                        if (
                            sample.name == "tickflow_worker_changelog_records_applied_total"
                            and sample.labels.get("table") == table
                        ):
                            return sample.value
                return 0.0
            await asyncio.sleep(0.5)
        raise AssertionError(f"worker {slot} of {self.name} did not recover in {timeout}s")

    async def publish(self, records: list[tuple[bytes, bytes]]) -> None:
        await publish_records(self.bootstrap, self.env["TICKFLOW_TOPIC_TICKS"], records, PARTITIONS)

    def start_worker(self, slot: int, datadir: str | None = None) -> None:
        self.starts += 1
        name = f"{self.name}-w{slot}-{self.starts}"
        datadir = datadir or str(self.tmp / f"{self.env['TICKFLOW_APP_ID']}-w{slot}-data")
        self.ports[slot] = free_port()
        self.group.start(
            name,
            ["-m", "faust", "-A", "topology", "worker", "-l", "info",
             "--web-port", str(self.ports[slot])],
            {**self.env, "TICKFLOW_WORKER_DATADIR": datadir},
        )  # fmt: skip
        self.group.procs[f"{self.name}-w{slot}"] = self.group.procs[name]

    def kill(self, slot: int) -> None:
        proc = self.group.procs[f"{self.name}-w{slot}"]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)


async def snapshot(client: aioredis.Redis, prefix: str, tokens: list[int]) -> dict[str, Any]:
    pipe = client.pipeline(transaction=False)
    families = ("bars:1m", "vol", "ind")
    for token in tokens:
        pipe.xrange(f"{prefix}bars:1m:{token}")
        pipe.hgetall(f"{prefix}vol:{token}")
        pipe.hgetall(f"{prefix}ind:{token}")
    results = iter(await pipe.execute())
    return {f"{family}:{token}": next(results) for token in tokens for family in families}


async def settle(client: aioredis.Redis, run: Run, tokens: list[int], timeout: float) -> dict:
    """Redis contents once they stop changing (no bar or vol update for a while)."""
    deadline = time.monotonic() + timeout
    previous: dict[str, Any] | None = None
    stable_since = time.monotonic()
    while time.monotonic() < deadline:
        current = await snapshot(client, run.prefix, tokens)
        if current != previous:
            previous, stable_since = current, time.monotonic()
        elif time.monotonic() - stable_since > 10 and any(
            v for k, v in current.items() if k.startswith("bars")
        ):
            return current
        await asyncio.sleep(1)
    raise AssertionError(f"{run.name}: Redis did not settle in {timeout:.0f}s")


async def reach(
    client: aioredis.Redis, run: Run, tokens: list[int], reference: dict, timeout: float
) -> list[str]:
    """Waits until the run's Redis equals the reference; returns the differing keys."""
    deadline = time.monotonic() + timeout
    while True:
        current = await snapshot(client, run.prefix, tokens)
        differing = sorted(k for k in reference if reference[k] != current.get(k))
        if not differing or time.monotonic() > deadline:
            return differing
        await asyncio.sleep(1)


async def bar_count(client: aioredis.Redis, run: Run, tokens: list[int]) -> int:
    pipe = client.pipeline(transaction=False)
    for token in tokens:
        pipe.xlen(f"{run.prefix}bars:1m:{token}")
    return sum(await pipe.execute())


async def progress_to(
    client: aioredis.Redis, run: Run, tokens: list[int], bars: int, timeout: float = 180
) -> None:
    """Waits until the run has written at least ``bars`` bars: a kill point in the data,
    not in time, so every kill lands while the worker is really processing."""
    deadline = time.monotonic() + timeout
    while await bar_count(client, run, tokens) < bars:
        if time.monotonic() > deadline:
            raise AssertionError(f"{run.name}: fewer than {bars} bars after {timeout:.0f}s")
        await asyncio.sleep(0.2)


def logs(group: ProcessGroup) -> str:
    names = [n for n in group.procs if (group.log_dir / f"{n}.log").exists()]
    return "\n".join(f"--- {n}\n{group.log_tail(n, 15)}" for n in names)


async def test_killed_and_restarted_workers_reach_the_uninterrupted_results(
    broker, redis_endpoint, tmp_path: Path, processes: ProcessGroup, session_records
):
    tokens, records = session_records
    rng = random.Random(20261124)
    client = aioredis.Redis.from_url(redis_endpoint.url, decode_responses=True)
    try:
        # Reference: one worker, never interrupted.
        reference_run = Run("ref", broker, redis_endpoint.url, tmp_path, processes)
        await reference_run.publish(records)
        reference_run.start_worker(0)
        reference = await settle(client, reference_run, tokens, timeout=240)
        bars = sum(len(v) for k, v in reference.items() if k.startswith("bars"))
        assert bars >= TOKENS * (MINUTES - 2), f"only {bars} bars\n{logs(processes)}"
        assert sum(1 for k, v in reference.items() if k.startswith("vol") and v) == TOKENS
        warm = [v for k, v in reference.items() if k.startswith("ind") and v.get("rsi_14")]
        assert len(warm) == TOKENS, "every token's indicators past the RSI lookback"

        # One worker, kill -9 at random points, restarted on its surviving data directory,
        # and once on an empty one (rebuilt from the changelogs).
        crash_run = Run("one", broker, redis_endpoint.url, tmp_path, processes)
        await crash_run.publish(records)
        crash_run.start_worker(0)
        replayed: list[float] = []
        for round_, (low, high) in enumerate([(0.1, 0.3), (0.4, 0.6), (0.7, 0.9)]):
            await progress_to(client, crash_run, tokens, int(bars * rng.uniform(low, high)))
            await asyncio.sleep(rng.uniform(0, 1.5))
            crash_run.kill(0)
            empty = str(tmp_path / f"empty-{round_}") if round_ == 2 else None
            crash_run.start_worker(0, datadir=empty)
            replayed.append(await crash_run.replayed_at_recovery(0, "volume-state"))
        differing = await reach(client, crash_run, tokens, reference, timeout=240)
        assert not differing, f"{len(differing)} keys differ: {differing[:5]}\n{logs(processes)}"
        # A surviving data directory recovers from local RocksDB: only the changelog's
        # tail is replayed; the empty one replays the whole changelog.
        print(f"volume-state changelog records replayed at each restart: {replayed}")
        assert replayed[2] >= TOKENS, replayed
        assert max(replayed[:2]) < 0.25 * replayed[2], replayed

        # Horizontal scaling during the replay: two workers share the partitions, a third
        # joins, one is killed (-9) and restarted, then another is killed for good.
        pair_run = Run("scale", broker, redis_endpoint.url, tmp_path, processes)
        await pair_run.publish(records)
        pair_run.start_worker(0)
        pair_run.start_worker(1)
        await progress_to(client, pair_run, tokens, int(bars * rng.uniform(0.15, 0.25)))
        pair_run.start_worker(2)
        await progress_to(client, pair_run, tokens, int(bars * rng.uniform(0.4, 0.5)))
        victim = rng.choice([0, 1, 2])
        pair_run.kill(victim)
        pair_run.start_worker(victim)
        await progress_to(client, pair_run, tokens, int(bars * rng.uniform(0.65, 0.75)))
        pair_run.kill(rng.choice([slot for slot in (0, 1, 2) if slot != victim]))
        differing = await reach(client, pair_run, tokens, reference, timeout=300)
        assert not differing, f"{len(differing)} keys differ: {differing[:5]}\n{logs(processes)}"
    finally:
        await client.aclose()
