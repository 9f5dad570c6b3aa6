"""Ingestor throughput into a real broker, against a bare aiokafka producer on the same broker.

Run ``python -m bench.bench_ingestor``. It starts its own Tansu on a free port and the
Kite-protocol simulator as a child process replaying a recording built here from the real
MarketSimulator (the whole universe, full mode), at a replay speed high enough that the
simulator is never the limit: the ingestor reads as fast as it can. The ingestor runs
in this process for ``--seconds``; the figure is the sustained rate of ticks the broker
*acknowledged* after a warm-up second, checked afterwards by reading the topic back to its
high watermark (Tansu's ListOffsets is off by a batch, so the count is consumed, not
asked for).

Baseline: a bare ``AIOKafkaProducer`` (same linger, batch size and acks) sends the same
number of pre-built envelopes to another topic of the same broker; the ratio
ingestor / bare producer says how much the WebSocket read, the validation (every packet
is decoded), the bounded buffer and the metrics cost on top of the producer itself.

Everything started here (Tansu, the simulator) is stopped on the way out, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from config.instruments import InstrumentMaster
from config.settings import Settings
from core import tick_envelope
from core.data_ingestor import DataIngestor
from core.frame_file import FrameWriter, read_frames
from core.kite_protocol import encode_frame, encode_packet, split_frame
from core.market_simulator import MarketSimulator, select_universe
from core.timeutil import IST
from scripts.kite_simulator import packet_token
from scripts.services import free_port, start_tansu, stop_process, wait_for_port
from topology.topics import TopicSpec, ensure_topics

API_KEY = "bench-key"
ACCESS_TOKEN = "bench-token"
MARKET_START = datetime(2026, 11, 24, 9, 15, tzinfo=IST)
PACKETS_PER_FRAME = 300
FRAME_MS = 50


def build_recording(path: Path, tokens: int, ticks: int, seed: int) -> tuple[list[int], int]:
    """A recording of ``ticks`` full-mode packets of the ``tokens``-instrument universe.

    One simulated market period is generated (about a third of the target, the simulation
    costs ~20 us a tick) and repeated with shifted times; a frame holds the packets of
    50 ms of market time, at most PACKETS_PER_FRAME. Returns (tokens, packets written).
    """
    universe = select_universe(InstrumentMaster.load(), tokens)
    market = MarketSimulator(universe, seed, MARKET_START)
    target = max(1, ticks // 3)
    frames: list[tuple[int, bytes]] = []
    made = 0
    now = MARKET_START
    origin_ms = int(MARKET_START.timestamp() * 1000)
    while made < target:
        now += timedelta(milliseconds=FRAME_MS)
        packets = [encode_packet(tick, "full") for tick in market.advance(now)]
        made += len(packets)
        stamp = int(now.timestamp() * 1000) - origin_ms
        for start in range(0, len(packets), PACKETS_PER_FRAME):
            frames.append((stamp, encode_frame(packets[start : start + PACKETS_PER_FRAME])))
    period = frames[-1][0] + FRAME_MS
    writer = FrameWriter(path)
    written = 0
    for cycle in itertools.count():
        for stamp, frame in frames:
            writer.write(cycle * period + stamp, frame)
            written += int.from_bytes(frame[:2], "big")
        if written >= ticks:
            break
    writer.close()
    return [inst.instrument_token for inst in universe], written


async def count_records(bootstrap: str, topic: str, partitions: int) -> int:
    """Records in a topic, consumed up to each partition's high watermark."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        count = 0
        while True:
            batch = await consumer.getmany(timeout_ms=500, max_records=100_000)
            count += sum(len(records) for records in batch.values())
            positions = [await consumer.position(tp) for tp in tps]
            highwaters = [consumer.highwater(tp) for tp in tps]
            if all(h is not None and p >= h for p, h in zip(positions, highwaters, strict=True)):
                return count
    finally:
        await consumer.stop()


async def bare_producer(
    settings: Settings, topic: str, envelopes: Sequence[tuple[bytes, bytes]]
) -> float:
    """Seconds for a plain producer to have every envelope acknowledged."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        linger_ms=settings.producer_linger_ms,
        max_batch_size=settings.producer_max_batch_bytes,
        acks=settings.producer_acks,
        enable_idempotence=False,
    )
    await producer.start()
    try:
        await (await producer.send(topic, envelopes[0][1], key=envelopes[0][0]))
        started = time.perf_counter()
        futures = [await producer.send(topic, value, key=key) for key, value in envelopes[1:]]
        await asyncio.gather(*futures)
        return time.perf_counter() - started
    finally:
        await producer.stop()


async def bench(args: argparse.Namespace, workdir: Path) -> int:
    print(f"building a recording of ~{args.ticks:,} full packets of {args.tokens} instruments ...")
    recording = workdir / "frames.tfrec"
    tokens, packets = build_recording(recording, args.tokens, args.ticks, args.seed)
    print(f"  {packets:,} packets, {recording.stat().st_size / 1e6:.0f} MB")

    broker_port, sim_port = free_port(), free_port()
    tansu = start_tansu(broker_port, workdir / "tansu.log")
    simulator: subprocess.Popen[bytes] | None = None
    try:
        env = {
            **os.environ,
            "TICKFLOW_KITE_API_KEY": API_KEY,
            "TICKFLOW_KITE_ACCESS_TOKEN": ACCESS_TOKEN,
            "TICKFLOW_LOG_LEVEL": "WARNING",
        }
        with (workdir / "simulator.log").open("wb") as log:
            simulator = subprocess.Popen(
                [sys.executable, "-m", "scripts.kite_simulator", "--port", str(sim_port),
                 "--replay", str(recording), "--speed", str(args.speed),
                 "--message-interval", "0"],
                env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        wait_for_port("127.0.0.1", sim_port, 20, simulator)
        settings = Settings(
            _env_file=None,
            broker_url=f"127.0.0.1:{broker_port}",
            kite_api_key=API_KEY,
            kite_access_token=ACCESS_TOKEN,
            kite_ws_url=f"ws://127.0.0.1:{sim_port}/",
            topic_ticks="bench-ticks",
            topic_partitions=args.partitions,
            ingestor_metrics_port=0,
            ingestor_liveness_timeout=10.0,
        )
        for topic in ("bench-ticks", "bench-bare"):
            await ensure_topics(settings.bootstrap_servers, [TopicSpec(topic, args.partitions)])

        ingestor = DataIngestor(settings, tokens)
        publisher = ingestor.publisher
        await ingestor.start()
        try:
            while publisher.published == 0:
                await asyncio.sleep(0.01)
            await asyncio.sleep(1.0)  # warm-up: connections, first batches
            start_count, started = publisher.published, time.perf_counter()
            cpu_start = time.process_time()
            await asyncio.sleep(args.seconds)
            elapsed = time.perf_counter() - started
            window = publisher.published - start_count
            cpu = time.process_time() - cpu_start
        finally:
            await ingestor.stop()
        rate = window / elapsed
        stored = await count_records(settings.bootstrap_servers, "bench-ticks", args.partitions)

        envelopes = [
            (tick_envelope.token_key(packet_token(packet)), tick_envelope.encode(packet, n))
            for n, packet in enumerate(_packets(recording, publisher.published))
        ]
        bare_seconds = await bare_producer(settings, "bench-bare", envelopes)
        bare_rate = (len(envelopes) - 1) / bare_seconds
        bare_stored = await count_records(settings.bootstrap_servers, "bench-bare", args.partitions)
    finally:
        if simulator is not None:
            stop_process(simulator)
        stop_process(tansu)

    stats = ingestor.stats
    errors = sum(stats.decode.errors.values())
    count = ingestor.metrics.value("tickflow_ingestor_publish_latency_seconds_count")
    total = ingestor.metrics.value("tickflow_ingestor_publish_latency_seconds_sum")
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"ingestor: {rate:,.0f} ticks/s acknowledged by the broker over {elapsed:.1f} s "
          f"({len(ingestor.shards)} connections, {len(tokens)} tokens, full mode)")  # fmt: skip
    print(f"  read {stats.ticks_read:,} in {stats.frames:,} frames, published "
          f"{publisher.published:,}, dropped {publisher.dropped}, parse errors {errors}, "
          f"retries {publisher.retries}; topic holds {stored:,}")  # fmt: skip
    print(f"  mean publish latency {total / max(count, 1) * 1000:.1f} ms, max buffer depth "
          f"{publisher.max_depth:,}/{publisher.capacity:,}, CPU {cpu / elapsed:.0%} of a core, "
          f"peak RSS {rss_mb:.0f} MB")  # fmt: skip
    print(f"bare aiokafka producer: {bare_rate:,.0f} msg/s ({len(envelopes):,} envelopes, "
          f"topic holds {bare_stored:,})")  # fmt: skip
    print(f"ratio ingestor / bare producer: {rate / bare_rate:.2f}")
    if publisher.max_depth < publisher.capacity // 2:
        print("  (the buffer never filled: the replay's pace, not the ingestor, set the rate; "
              "raise --speed to measure the ingestor's limit)")  # fmt: skip
    ok = stored == publisher.published == stats.ticks_read and bare_stored == len(envelopes)
    if not ok:
        print("MISMATCH: the topic does not hold exactly what was published", file=sys.stderr)
    return 0 if ok else 1


def _packets(recording: Path, count: int) -> list[bytes]:
    """The first ``count`` packets of the recording (what the ingestor published)."""
    out: list[bytes] = []
    with recording.open("rb") as source:
        for record in read_frames(source):
            out.extend(split_frame(record.frame))
            if len(out) >= count:
                break
    return out[:count]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_ingestor", description=__doc__)
    parser.add_argument("--tokens", type=int, default=9000, help="instruments (max 9000)")
    parser.add_argument("--ticks", type=int, default=1_000_000, help="packets in the recording")
    parser.add_argument("--seconds", type=float, default=12.0, help="measured window")
    parser.add_argument("--speed", type=float, default=2000.0, help="replay speed")
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with (
        tempfile.TemporaryDirectory(prefix="bench-ingestor-") as workdir,
        contextlib.suppress(KeyboardInterrupt),
    ):
        return asyncio.run(bench(args, Path(workdir)))
    return 130


if __name__ == "__main__":
    sys.exit(main())
