"""The ListOffsets compatibility layer (topology.broker_compat) against the real broker.

Tansu 0.6.0 answers ListOffsets(latest) with the first offset of the last record batch
+ 1; Faust takes that as the changelog high-water mark in table recovery. These tests
first show the quirk with plain aiokafka, then show the layer's effect with real Faust
worker processes (RocksDB tables) recovering a changelog written in many batches.

Against a broker without the quirk (``TICKFLOW_TEST_BROKER_URL`` = Redpanda) the tests
that need the quirk skip; the ones about the layer's effect still run.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import faust
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from faust.types import TP

from scripts.services import free_port, stop_process
from tests.support.services import BrokerEndpoint
from topology.broker_compat import (
    FixMode,
    broker_has_listoffsets_quirk,
    install,
    true_end_offsets,
)
from topology.topics import TopicSpec, ensure_topics

PARTITIONS = 2
RECORDS = 2000
ROOT = Path(__file__).resolve().parents[2]


async def produce_batches(
    bootstrap: str, topic: str, batches: int, per_batch: int
) -> dict[TopicPartition, int]:
    """Write explicit multi-record batches round-robin over the partitions; count them."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False)
    await producer.start()
    counts: dict[TopicPartition, int] = {}
    try:
        for n in range(batches):
            partition = n % PARTITIONS
            batch = producer.create_batch()
            for i in range(per_batch):
                batch.append(key=None, value=b"%d.%d" % (n, i), timestamp=None)
            await (await producer.send_batch(batch, topic, partition=partition))
            tp = TopicPartition(topic, partition)
            counts[tp] = counts.get(tp, 0) + per_batch
    finally:
        await producer.stop()
    return counts


async def listed_end_offsets(
    bootstrap: str, tps: list[TopicPartition]
) -> dict[TopicPartition, int]:
    """What aiokafka's end_offsets (ListOffsets latest), and so Faust, sees."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        return dict(await consumer.end_offsets(tps))
    finally:
        await consumer.stop()


@pytest.fixture(scope="module")
def quirk(broker: BrokerEndpoint) -> bool:
    """Diagnostic only: whether this broker has the ListOffsets quirk (Tansu: yes)."""
    return asyncio.run(broker_has_listoffsets_quirk(broker.bootstrap))


async def test_listoffsets_lags_on_tansu_and_true_end_offsets_counts_records(
    broker: BrokerEndpoint, quirk: bool
) -> None:
    topic = f"compat-{uuid.uuid4().hex[:8]}"
    await ensure_topics(broker.bootstrap, [TopicSpec(topic, PARTITIONS)])
    counts = await produce_batches(broker.bootstrap, topic, batches=6, per_batch=5)
    assert counts == {TopicPartition(topic, p): 15 for p in range(PARTITIONS)}
    tps = sorted(counts)

    assert await true_end_offsets(broker.bootstrap, tps) == counts
    # Reading everything confirms the count independently of any offset API.
    consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap)
    await consumer.start()
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen: dict[TopicPartition, int] = dict.fromkeys(tps, 0)
        deadline = time.monotonic() + 10
        while seen != counts and time.monotonic() < deadline:
            for tp, records in (await consumer.getmany(timeout_ms=200)).items():
                seen[tp] += len(records)
        assert seen == counts
        assert {tp: consumer.highwater(tp) for tp in tps} == counts
    finally:
        await consumer.stop()

    listed = await listed_end_offsets(broker.bootstrap, tps)
    if not quirk:
        assert listed == counts
        pytest.skip("this broker answers ListOffsets correctly; the quirk is Tansu's")
    # First offset of the last 5-record batch + 1: 10 + 1, not 15.
    assert listed == {tp: 11 for tp in tps}


async def test_true_end_offsets_of_empty_and_unknown_length_partitions(
    broker: BrokerEndpoint,
) -> None:
    topic = f"compat-empty-{uuid.uuid4().hex[:8]}"
    await ensure_topics(broker.bootstrap, [TopicSpec(topic, PARTITIONS)])
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    assert await true_end_offsets(broker.bootstrap, tps) == dict.fromkeys(tps, 0)
    assert await true_end_offsets(broker.bootstrap, []) == {}


# --- real Faust workers ------------------------------------------------------------------


@dataclass
class Worker:
    """One ``faust worker`` process of tests/topology/compat_app.py."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    started: float = field(default_factory=time.monotonic)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def table(self) -> dict[str, int] | None:
        """The table, or None while the web server is not up (recovery not finished)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/table/", timeout=2) as r:
                return dict(json.load(r))
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return None

    def wait_table(
        self, until: Callable[[dict[str, int]], bool] = lambda _: True, timeout: float = 40
    ) -> dict[str, int]:
        deadline = time.monotonic() + timeout
        last: dict[str, int] | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"{self.name} exited ({self.proc.returncode}):\n{self.tail()}")
            last = self.table()
            if last is not None and until(last):
                return last
            time.sleep(0.2)
        pytest.fail(
            f"{self.name}: table not as expected after {timeout:.0f}s "
            f"({None if last is None else len(last)} keys):\n{self.tail()}"
        )

    def wait_log(self, text: str, timeout: float = 40) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        pytest.fail(f"{self.name}: no {text!r} in the log:\n{self.tail()}")

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def stop(self) -> None:
        stop_process(self.proc, timeout=20)


@dataclass
class Cluster:
    """The shared setup: broker, topic, app id; starts workers and stops them all."""

    broker: BrokerEndpoint
    base: Path
    app_id: str
    topic: str
    workers: list[Worker] = field(default_factory=list)

    def start(self, name: str, datadir: Path, fix: str) -> Worker:
        port = free_port()
        log_path = self.base / f"{name}.log"
        env = {
            **os.environ,
            "COMPAT_BROKER_URL": self.broker.url,
            "COMPAT_APP_ID": self.app_id,
            "COMPAT_TOPIC": self.topic,
            "COMPAT_DATADIR": str(datadir),
            "COMPAT_FIX": fix,
            "COMPAT_PARTITIONS": str(PARTITIONS),
            "COMPAT_SESSION_TIMEOUT": "6",
        }
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [
                    *(sys.executable, "-m", "faust", "-A", "tests.topology.compat_app"),
                    *("worker", "-l", "info", "--web-port", str(port), "--web-host", "127.0.0.1"),
                ],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        worker = Worker(name, proc, port, log_path)
        self.workers.append(worker)
        return worker

    def changelog(self) -> list[TopicPartition]:
        return [TopicPartition(f"{self.app_id}-values-changelog", p) for p in range(PARTITIONS)]


EXPECTED = {f"k{i}": i for i in range(RECORDS)}


@pytest.fixture(scope="module")
def cluster(broker: BrokerEndpoint, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Input topic with RECORDS keyed records, processed by a first worker, which stops.

    Afterwards the changelog holds one record per key, written by Faust in many
    multi-record batches, and the input offsets are committed: later workers of the
    same app id get their table only from recovery.
    """
    suffix = uuid.uuid4().hex[:8]
    cluster = Cluster(broker, tmp_path_factory.mktemp("compat"), f"compat-{suffix}", f"in-{suffix}")

    async def seed() -> None:
        await ensure_topics(broker.bootstrap, [TopicSpec(cluster.topic, PARTITIONS)])
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, enable_idempotence=False)
        await producer.start()
        try:
            for key, value in EXPECTED.items():
                await producer.send(cluster.topic, key=key.encode(), value=str(value).encode())
            await producer.flush()
        finally:
            await producer.stop()

    asyncio.run(seed())
    try:
        first = cluster.start("w1-process", cluster.base / "w1-data", fix="auto")
        assert first.wait_table(lambda table: table == EXPECTED, timeout=60) == EXPECTED
        first.stop()
        yield cluster
    finally:
        for worker in cluster.workers:
            worker.stop()


@pytest.fixture(scope="module")
def recovered_with_fix(cluster: Cluster) -> tuple[dict[str, int], Path, Worker]:
    """A new worker, empty data directory, fix in auto mode: its table after recovery."""
    datadir = cluster.base / "w2-data"
    worker = cluster.start("w2-recover-fix", datadir, fix="auto")
    try:
        return worker.wait_table(), datadir, worker
    finally:
        worker.stop()


@pytest.mark.e2e
def test_recovery_from_an_empty_datadir_with_the_fix_is_exact(
    cluster: Cluster, recovered_with_fix: tuple[dict[str, int], Path, Worker], quirk: bool
) -> None:
    table, _, worker = recovered_with_fix
    assert table == EXPECTED
    log = worker.log()
    if quirk:
        assert "ListOffsets fix ACTIVE (auto)" in log
        assert "end offsets corrected from Fetch" in log
    else:
        assert "ListOffsets fix inactive (auto)" in log


@pytest.mark.e2e
def test_recovery_from_an_empty_datadir_without_the_fix_loses_the_changelog_tail(
    cluster: Cluster, quirk: bool
) -> None:
    if not quirk:
        pytest.skip("needs a broker with the ListOffsets quirk (Tansu)")
    changelog = cluster.changelog()
    listed = asyncio.run(listed_end_offsets(cluster.broker.bootstrap, changelog))
    true_end = asyncio.run(true_end_offsets(cluster.broker.bootstrap, changelog))
    assert sum(true_end.values()) == RECORDS
    assert any(listed[tp] < true_end[tp] for tp in changelog), (listed, true_end)

    worker = cluster.start("w3-recover-nofix", cluster.base / "w3-data", fix="off")
    try:
        table = worker.wait_table()
    finally:
        worker.stop()
    assert "ListOffsets fix off" in worker.log()
    missing = EXPECTED.keys() - table.keys()
    assert missing, "recovery without the fix was complete: the quirk did not bite"
    assert {key: EXPECTED[key] for key in table} == table  # what it has is right


@pytest.mark.e2e
def test_restart_with_an_intact_datadir_reads_only_the_tail(
    cluster: Cluster, recovered_with_fix: tuple[dict[str, int], Path, Worker], quirk: bool
) -> None:
    _, datadir, _ = recovered_with_fix
    worker = cluster.start("w4-restart-fix", datadir, fix="auto")
    try:
        table = worker.wait_table()
    finally:
        worker.stop()
    assert table == EXPECTED
    log = worker.log()
    # The local RocksDB is at the changelog's end: nothing to restore.
    assert "Restoring state from changelog topics" not in log
    assert "ConsistencyError" not in log
    if not quirk:
        return
    # Without the fix the same data directory is "ahead" of the wrong high-water mark.
    worker = cluster.start("w5-restart-nofix", datadir, fix="off")
    try:
        worker.wait_log("ConsistencyError")
    finally:
        worker.stop()


# --- install(): the wrapped consumer, without a worker ------------------------------------


def make_app(broker: BrokerEndpoint, tmp_path: Path) -> faust.App:
    return faust.App(
        f"compat-unit-{uuid.uuid4().hex[:8]}", broker=broker.url, datadir=str(tmp_path)
    )


async def test_install_is_idempotent_and_validates_the_mode(
    broker: BrokerEndpoint, tmp_path: Path
) -> None:
    app = make_app(broker, tmp_path)
    fix = install(app, "auto")
    assert install(app, "auto") is fix
    with pytest.raises(ValueError, match="already installed"):
        install(app, "on")
    wrapped = app.consumer.highwaters
    fix.attach(app.consumer)  # attaching again leaves the one wrapper in place
    assert app.consumer.highwaters is wrapped
    with pytest.raises(ValueError, match="auto, on or off"):
        install(make_app(broker, tmp_path), "yes")  # type: ignore[arg-type]


async def test_off_leaves_faust_alone_and_on_answers_from_fetch(
    broker: BrokerEndpoint, tmp_path: Path, quirk: bool
) -> None:
    off = make_app(broker, tmp_path)
    install(off, "off")
    assert off.consumer.highwaters.__func__ is type(off.consumer).highwaters  # type: ignore[attr-defined]

    topic = f"compat-on-{uuid.uuid4().hex[:8]}"
    await ensure_topics(broker.bootstrap, [TopicSpec(topic, PARTITIONS)])
    counts = await produce_batches(broker.bootstrap, topic, batches=4, per_batch=3)
    modes: tuple[FixMode, ...] = ("on", "auto")
    for mode in modes:
        app = make_app(broker, tmp_path)
        fix = install(app, mode)
        tps = [TP(topic, p) for p in range(PARTITIONS)]
        assert dict(await app.consumer.highwaters(*tps)) == counts
        assert await fix.is_active() is (mode == "on" or quirk)
