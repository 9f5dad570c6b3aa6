"""``scripts.pipeline_tools`` (debug_pipeline's tail, replay and diff) on a real broker
and Redis; the diff test runs a real Faust worker on a replayed instance.

The input is a recording of 25 simulated minutes of eight instruments (full mode, so
every packet carries its exchange time), built from the deterministic market; what the
tools print is checked against the packets themselves.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import groupby
from pathlib import Path
from typing import Any

import pytest
import redis
from aiokafka import AIOKafkaProducer

from config.instruments import InstrumentMaster
from config.settings import Settings
from core import tick_envelope
from core.frame_file import FrameWriter
from core.kite_protocol import encode_frame, encode_packet
from core.market_simulator import MarketSimulator
from core.timeutil import IST
from scripts.kite_simulator import simulated_universe
from scripts.pipeline_tools import (
    Range,
    diff,
    instance_env,
    instance_settings,
    main,
    recompute,
    replay,
    tail,
)
from scripts.services import free_port
from scripts.topic_io import partition_for_key, token_key
from storage.tick_hash import tick_hash
from tests.e2e.conftest import ProcessGroup
from tests.support.services import BrokerEndpoint, RedisEndpoint

PIPELINE = ("ticks", "bars", "volume", "baselines", "indicators", "alerts")
START = datetime(2026, 11, 24, 10, 0, tzinfo=IST)
MINUTES = 25
#: The recorded receive time trails the exchange time by this much.
RECEIVE_DELAY_MS = 40


@dataclass
class Recording:
    path: Path
    #: (received_at_ms, packet) in recorded order
    packets: list[tuple[int, bytes]]
    tokens: list[int]
    master: InstrumentMaster

    def of(self, token: int) -> list[tuple[int, bytes]]:
        return [(ms, p) for ms, p in self.packets if int.from_bytes(p[:4], "big") == token]


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Recording:
    """Indices, index-like equities and options with volume (enough minutes for most
    indicators to leave their lookback), one frame per exchange second, as the ingestor
    records them."""
    master = InstrumentMaster.load()
    whole = simulated_universe(master, 24, START)
    universe = [*whole[:2], *whole[8:10], *whole[-4:]]
    market = MarketSimulator(universe, seed=5, start=START)
    ticks = market.advance(START + timedelta(minutes=MINUTES))
    path = tmp_path_factory.mktemp("rec") / "session.tfrec"
    writer = FrameWriter(path)
    packets: list[tuple[int, bytes]] = []
    for second, group in groupby(ticks, key=lambda t: t.exchange_timestamp):
        assert second is not None
        frame_packets = [encode_packet(t, "full") for t in group]
        received = second * 1000 + RECEIVE_DELAY_MS
        writer.write(received, encode_frame(frame_packets))
        packets += [(received, p) for p in frame_packets]
    writer.close()
    return Recording(path, packets, [i.instrument_token for i in universe], master)


def stack_settings(broker: BrokerEndpoint, redis_url: str, tmp_path: Path) -> Settings:
    suffix = uuid.uuid4().hex[:8]
    topics = {f"topic_{name}": f"{name}-{suffix}" for name in PIPELINE}
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        broker_url=broker.url,
        redis_url=redis_url,
        app_id=f"pt-{suffix}",
        topic_partitions=4,
        redis_key_prefix=f"pt{suffix}:",
        state_dir=tmp_path / "state",
        **topics,
    )


@pytest.fixture
def settings(
    broker: BrokerEndpoint, redis_endpoint: RedisEndpoint, tmp_path: Path
) -> Iterator[Settings]:
    yield stack_settings(broker, redis_endpoint.url, tmp_path)


def use_settings(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    """Point the CLI (which reads get_settings()) at the test's stack."""
    monkeypatch.setattr("scripts.pipeline_tools.get_settings", lambda: settings)


async def publish(settings: Settings, packets: list[tuple[int, bytes]]) -> None:
    """What the ingestor does with the recorded packets: envelope, key = token."""
    from topology.topics import ensure_topics, pipeline_topics

    await ensure_topics(settings.bootstrap_servers, pipeline_topics(settings))
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers, enable_idempotence=False, linger_ms=5
    )
    await producer.start()
    try:
        for received, packet in packets:
            token = int.from_bytes(packet[:4], "big")
            await producer.send(
                settings.topic_ticks,
                tick_envelope.encode(packet, received),
                key=token_key(token),
                timestamp_ms=received,
            )
        await producer.flush()
    finally:
        await producer.stop()


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[Any], str]:
    code = main(argv)
    out, err = capsys.readouterr()
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return code, lines, err


def expected_row(recording: Recording, received: int, packet: bytes) -> dict[str, str]:
    from core.kite_protocol import decode_packet

    tick = decode_packet(packet)
    assert tick is not None
    inst = recording.master.get(tick.instrument_token)
    assert inst is not None
    return tick_hash(tick, received, inst.tradingsymbol, inst.exchange)


def test_register_adds_the_topic_tools_to_debug_pipeline() -> None:
    """debug_pipeline's parser has the topic tools beside its own subcommands, and each
    dispatches to its handler."""
    from scripts import debug_pipeline
    from scripts.pipeline_tools import cmd_diff, cmd_replay, cmd_tail

    parser = debug_pipeline.build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert {"decode", "tail", "replay", "diff"} <= set(action.choices)
    assert parser.parse_args(["tail", "bars", "--from-time", "0"]).func is cmd_tail
    assert parser.parse_args(["replay", "--into", "x", "--topic", "t"]).func is cmd_replay
    args = parser.parse_args(["diff", "--symbol", "NSE:INFY", "--json"])
    assert args.func is cmd_diff and args.symbol == ["NSE:INFY"]


# --- tail --------------------------------------------------------------------------------------


def test_tail_prints_one_symbols_ticks_decoded_from_an_instant(
    settings: Settings,
    recording: Recording,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    asyncio.run(publish(settings, recording.packets))
    use_settings(monkeypatch, settings)
    option = next(i for i in recording.master if i.instrument_token == recording.tokens[-1])
    mine = recording.of(option.instrument_token)

    code, rows, err = run_cli(
        ["tail", "--from-offset", "0", "--symbol", f"NFO:{option.tradingsymbol}"], capsys
    )
    assert code == 0, err
    assert [r["value"] for r in rows] == [expected_row(recording, ms, p) for ms, p in mine]
    partition = partition_for_key(token_key(option.instrument_token), 4)
    assert {(r["topic"], r["partition"], r["key"]) for r in rows} == {
        (settings.topic_ticks, partition, str(option.instrument_token))
    }
    offsets = [r["offset"] for r in rows]
    assert offsets == sorted(offsets)

    # From an instant (record time = receive time): only the ticks at or after it. On
    # Tansu this is the binary search (its ListOffsets by time answers offset 0).
    middle = mine[len(mine) // 2][0]
    since = datetime.fromtimestamp(middle / 1000, IST).isoformat(timespec="milliseconds")
    code, rows, err = run_cli(
        ["tail", "--from-time", since, "--token", str(option.instrument_token)], capsys
    )
    assert code == 0, err
    want = [expected_row(recording, ms, p) for ms, p in mine if ms >= middle]
    assert [r["value"] for r in rows] == want
    assert rows[0]["timestamp"] == since

    # The default: the last 10 records of each partition, all tokens.
    code, rows, _ = run_cli(["tail", "--no-instruments"], capsys)
    held = Counter(
        partition_for_key(token_key(t), 4) for t in recording.tokens for _ in recording.of(t)
    )
    assert Counter(r["partition"] for r in rows) == {p: min(10, n) for p, n in held.items()}
    assert all(r["value"]["symbol"] == "" for r in rows)
    code, rows, _ = run_cli(["tail", "--limit", "3"], capsys)
    assert len(rows) == 3


def test_tail_shows_json_topics_as_json_and_refuses_unknown_topics(
    settings: Settings,
    recording: Recording,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def bars() -> None:
        from topology.topics import ensure_topics, pipeline_topics

        await ensure_topics(settings.bootstrap_servers, pipeline_topics(settings))
        producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
        await producer.start()
        try:
            for token in recording.tokens[:5]:
                value = {"instrument_token": token, "start": 1795500000, "volume": 7}
                await producer.send(
                    settings.topic_bars, json.dumps(value).encode(), key=token_key(token)
                )
            await producer.flush()
        finally:
            await producer.stop()

    asyncio.run(bars())
    use_settings(monkeypatch, settings)
    token = recording.tokens[2]
    code, rows, err = run_cli(["tail", settings.topic_bars, "--token", str(token)], capsys)
    assert code == 0, err
    assert [r["value"] for r in rows] == [
        {"instrument_token": token, "start": 1795500000, "volume": 7}
    ]
    code, rows, err = run_cli(["tail", "no-such-topic-" + uuid.uuid4().hex], capsys)
    assert code == 2 and "does not exist" in err and not rows


async def test_tail_follow_from_now_waits_for_new_records(
    settings: Settings, recording: Recording
) -> None:
    await publish(settings, recording.packets[:50])
    seen: list[dict[str, Any]] = []
    now_ms = int(time.time() * 1000)
    follow = asyncio.create_task(
        tail(
            settings,
            settings.topic_ticks,
            seen.append,
            spec=Range(from_time_ms=now_ms, follow=True),
            limit=5,
        )
    )
    await asyncio.sleep(1.5)
    assert not follow.done() and not seen  # nothing after "now" yet: it waits
    fresh = [(now_ms + 5000 + i, packet) for i, (_, packet) in enumerate(recording.packets[:5])]
    await publish(settings, fresh)
    stats = await asyncio.wait_for(follow, 20)
    assert stats.shown == 5
    assert sorted(r["value"]["received_at"] for r in seen) == sorted(
        expected_row(recording, ms, p)["received_at"] for ms, p in fresh
    )


# --- replay ------------------------------------------------------------------------------------


def test_replay_of_a_recording_publishes_every_packet_into_a_separate_instance(
    settings: Settings, recording: Recording
) -> None:
    name = f"rp{uuid.uuid4().hex[:6]}"
    stats = asyncio.run(replay(settings, name, frames_file=recording.path, speed=0))
    assert stats.published == len(recording.packets) and not stats.errors
    target = instance_settings(settings, name)
    assert stats.topic == target.topic_ticks == f"{name}-{settings.topic_ticks}"
    seen: list[dict[str, Any]] = []
    asyncio.run(
        tail(target, target.topic_ticks, seen.append, spec=Range(from_offset=0), kind="raw")
    )
    got = Counter(bytes.fromhex(r["value"]) for r in seen)
    want = Counter(tick_envelope.encode(p, ms) for ms, p in recording.packets)
    assert got == want
    # Every token is on its partition, as the ingestor would have put it.
    for row in seen:
        assert row["partition"] == partition_for_key(row["key"].encode(), 4)
    env = instance_env(settings, name)
    assert env["TICKFLOW_APP_ID"] == name and env["TICKFLOW_REDIS_KEY_PREFIX"] == f"{name}:"
    assert env["TICKFLOW_TOPIC_TICKS"] == target.topic_ticks


def test_replay_keeps_the_recorded_pace_at_the_chosen_speed(
    settings: Settings, recording: Recording, tmp_path: Path
) -> None:
    # The frames of the first 3 s of receive time of the recording.
    first = recording.packets[0][0]
    head = [(ms, p) for ms, p in recording.packets if ms - first <= 3000]
    span = (head[-1][0] - first) / 1000
    assert span >= 2.5
    short = tmp_path / "short.tfrec"
    writer = FrameWriter(short)
    for received, group in groupby(head, key=lambda x: x[0]):
        writer.write(received, encode_frame([p for _, p in group]))
    writer.close()
    started = time.monotonic()
    asyncio.run(replay(settings, f"sp{uuid.uuid4().hex[:6]}", frames_file=short, speed=2))
    paced = time.monotonic() - started
    started = time.monotonic()
    asyncio.run(replay(settings, f"sp{uuid.uuid4().hex[:6]}", frames_file=short, speed=0))
    unpaced = time.monotonic() - started
    assert paced >= span / 2 * 0.95, (paced, span)  # recorded span at 2x
    assert paced - unpaced >= span / 2 * 0.8, (paced, unpaced)


def test_replay_of_a_topic_range_copies_exactly_that_range(
    settings: Settings,
    recording: Recording,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    asyncio.run(publish(settings, recording.packets))
    use_settings(monkeypatch, settings)
    first = recording.packets[0][0]
    lo, hi = first + 60_000, first + 120_000
    name = f"tr{uuid.uuid4().hex[:6]}"
    code = main(
        [
            "replay",
            "--into",
            name,
            "--topic",
            settings.topic_ticks,
            "--speed",
            "0",
            "--from-time",
            str(lo / 1000),
            "--to-time",
            str(hi / 1000),
        ]
    )
    err = capsys.readouterr().err
    assert code == 0, err
    want = [(ms, p) for ms, p in recording.packets if lo <= ms <= hi]
    assert f"{len(want)} records published" in err
    assert f"TICKFLOW_APP_ID={name}" in err
    target = instance_settings(settings, name)
    seen: list[dict[str, Any]] = []
    asyncio.run(
        tail(target, target.topic_ticks, seen.append, spec=Range(from_offset=0), kind="raw")
    )
    assert Counter(bytes.fromhex(r["value"]) for r in seen) == Counter(
        tick_envelope.encode(p, ms) for ms, p in want
    )
    # A name that cannot make topic names is refused.
    code = main(["replay", "--into", "bad name", "--file", str(recording.path)])
    assert code == 2 and "instance name" in capsys.readouterr().err


# --- diff --------------------------------------------------------------------------------------


def worker_caught_up(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=2) as r:
            body = json.loads(r.read())
    except OSError:
        return False
    return bool(body.get("ready")) and not any(body.get("lag", {}).values())


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[ProcessGroup]:
    group = ProcessGroup(tmp_path)
    try:
        yield group
    finally:
        group.stop_all()


@pytest.mark.e2e
def test_diff_agrees_with_a_worker_on_a_replayed_instance_and_finds_tampering(
    settings: Settings,
    recording: Recording,
    redis_endpoint: RedisEndpoint,
    processes: ProcessGroup,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    name = f"df{uuid.uuid4().hex[:6]}"
    asyncio.run(replay(settings, name, frames_file=recording.path, speed=0))
    port = free_port()
    env = {
        **instance_env(settings, name),
        "TICKFLOW_BROKER_URL": settings.broker_url,
        "TICKFLOW_REDIS_URL": settings.redis_url,
        "TICKFLOW_TOPIC_PARTITIONS": "4",
        "TICKFLOW_WORKER_WEB_PORT": str(port),
    }
    worker = processes.start(
        "worker",
        ["-m", "faust", "-A", "topology", "worker", "-l", "info", "--web-port", str(port)],
        env,
    )
    target = instance_settings(settings, name)
    option = recording.tokens[-1]  # an option: volume, VWAP, profile
    index = recording.tokens[0]  # an index: no volume
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    rec = asyncio.run(recompute(target, option, recording.master))
    assert len(rec.bars) >= MINUTES - 1 and rec.ticks == len(recording.of(option))
    last = max(rec.bars)
    # Enough bars that the indicators compared are numbers, not empty lookbacks.
    assert all(rec.ind[last][name] for name in ("sma_20", "rsi_14", "atr_14", "bb_upper"))
    assert all(rec.vol[last][name] for name in ("vwap", "poc", "value_area_low"))
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert worker.poll() is None, processes.log_tail("worker")
        vol = client.hget(f"{name}:vol:{option}", "bar_start")
        ind = client.hget(f"{name}:ind:{option}", "bar_start")
        done = {datetime.fromisoformat(v).timestamp() for v in (vol, ind) if v}
        if done == {last} and worker_caught_up(port):
            break
        time.sleep(1)
    else:
        pytest.fail(f"the worker did not get to bar {last}\n{processes.log_tail('worker')}")

    report = asyncio.run(diff(target, option, master=recording.master))
    assert report.same, report.as_dict()
    assert report.bars_compared == len(report.recomputed.bars) == len(rec.bars)
    report = asyncio.run(diff(target, index, master=recording.master))
    assert report.same and report.bars_compared > 0, report.as_dict()
    use_settings(monkeypatch, settings)
    code = main(["diff", "--instance", name, "--token", str(option), "--json"])
    body = json.loads(capsys.readouterr().out)
    assert code == 0 and body["same"] and body["bars_compared"] == len(rec.bars), body

    # Tamper with each output: the diff names every change, and nothing else.
    prefix = f"{name}:"
    first_bar = min(rec.bars)
    client.hset(f"{prefix}vol:{option}", "vwap", "1.5")
    client.hset(f"{prefix}ind:{option}", "obv", "-1")
    # The stream without its first bar and with the second's close changed (a stream
    # entry cannot be rewritten in place: the stream is rebuilt).
    stream = f"{prefix}bars:1m:{option}"
    entries = client.xrange(stream)
    assert entries[0][0] == f"{first_bar * 1000}-0"
    client.delete(stream)
    for number, (entry_id, fields) in enumerate(entries[1:]):
        client.xadd(stream, {**fields, "close": "0.05"} if number == 0 else fields, id=entry_id)
    report = asyncio.run(diff(target, option, master=recording.master))
    got = {(d.what, d.field, d.actual) for d in report.differences}
    assert got == {
        ("vol", "vwap", "1.5"),
        ("ind", "obv", "-1"),
        ("bar", "*", None),
        ("bar", "close", "0.05"),
    }, report.as_dict()
    instrument = recording.master.get(option)
    assert instrument is not None
    code = main(["diff", "--instance", name, "--symbol", f"NFO:{instrument.tradingsymbol}"])
    out, _ = capsys.readouterr()
    assert code == 1 and "4 differences" in out
