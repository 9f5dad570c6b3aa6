"""The Kite-protocol simulator, driven over real WebSockets with a raw client.

The market is the real deterministic MarketSimulator over the bundled instrument master,
so what the server sends can be compared byte for byte with ``encode_packet`` of the
market's own ticks.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import datetime
from functools import lru_cache
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from config.instruments import InstrumentMaster
from core.frame_file import FrameWriter
from core.kite_protocol import (
    HEARTBEAT,
    encode_frame,
    encode_packet,
    mode_message,
    packet_token,
    split_frame,
    subscribe_message,
    unsubscribe_message,
)
from core.market_simulator import MarketSimulator, select_universe
from core.tick import Mode
from core.timeutil import IST
from scripts.kite_simulator import KiteSimulatorServer
from scripts.services import free_port

API_KEY = "test-key"
ACCESS_TOKEN = "test-access-token-s3cret"
#: A trading day of the bundled master (its reference date), at the open.
MARKET_START = datetime(2026, 11, 24, 9, 15, tzinfo=IST)
NIFTY_50 = 256265  # index: 8 / 28 / 32-byte packets
NIFTY_FUT = 8960258  # NFO future, tradable: 8 / 44 / 184-byte packets
REPO = Path(__file__).resolve().parents[2]


@lru_cache(maxsize=1)
def master() -> InstrumentMaster:
    return InstrumentMaster.load()


def make_market(n: int = 40, activity: float = 1.0) -> MarketSimulator:
    return MarketSimulator(select_universe(master(), n), 7, MARKET_START, activity=activity)


@pytest.fixture
async def server() -> AsyncIterator[KiteSimulatorServer]:
    sim = KiteSimulatorServer(
        make_market(),
        api_key=API_KEY,
        access_token=ACCESS_TOKEN,
        speed=20.0,
        heartbeat_interval=0.2,
    )
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


def client(sim: KiteSimulatorServer, token: str = ACCESS_TOKEN, key: str = API_KEY) -> connect:
    return connect(f"{sim.url}?api_key={key}&access_token={token}", compression=None)


async def next_frame(ws: ClientConnection, timeout: float = 3.0) -> bytes | str:
    return await asyncio.wait_for(ws.recv(), timeout)


async def collect(ws: ClientConnection, seconds: float) -> list[bytes | str]:
    """Every message received within ``seconds``."""
    out: list[bytes | str] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            out.append(await asyncio.wait_for(ws.recv(), left))
        except TimeoutError:
            break
    return out


def packets_of(frames: list[bytes | str]) -> list[bytes]:
    return [p for f in frames if isinstance(f, bytes) and len(f) > 1 for p in split_frame(f)]


async def test_wrong_token_or_key_is_rejected_with_403(server: KiteSimulatorServer) -> None:
    for token, key in (("expired-token", API_KEY), (ACCESS_TOKEN, "other-key")):
        with pytest.raises(InvalidStatus) as caught:
            async with client(server, token=token, key=key):
                pass
        assert caught.value.response.status_code == 403
    assert (server.handshake_attempts, server.rejected_handshakes) == (2, 2)
    async with client(server) as ws:
        await ws.send(subscribe_message([NIFTY_FUT]))
        assert isinstance(await next_frame(ws), bytes)
    assert (server.handshake_attempts, server.rejected_handshakes) == (3, 2)


async def test_subscribe_sends_cached_tick_then_live_ticks(server: KiteSimulatorServer) -> None:
    market = server.market
    assert market is not None
    server.pause_market()
    await asyncio.sleep(0.1)  # let a pump step in flight finish
    snapshot = market.snapshot(NIFTY_FUT)
    assert snapshot is not None
    async with client(server) as ws:
        await ws.send(subscribe_message([NIFTY_FUT]))
        first = await next_frame(ws)
        # The cached last tick, at once, in the default quote mode.
        assert isinstance(first, bytes)
        assert split_frame(first) == [encode_packet(snapshot, "quote")]
        server.resume_market()
        live = packets_of(await collect(ws, 1.5))
        assert server.subscriptions() == [{NIFTY_FUT: "quote"}]
    assert len(live) >= 3, "a liquid future ticks several times in 30 market seconds"
    assert {packet_token(p) for p in live} == {NIFTY_FUT}
    assert {len(p) for p in live} == {44}
    assert server.last_sent[NIFTY_FUT] == live[-1]


async def test_mode_sets_packet_layout_per_token(server: KiteSimulatorServer) -> None:
    async with client(server) as ws:
        await ws.send(subscribe_message([NIFTY_50, NIFTY_FUT]))
        layouts: list[tuple[Mode, int, int]] = [("ltp", 8, 8), ("full", 32, 184), ("quote", 28, 44)]
        for mode, index_len, fut_len in layouts:
            await ws.send(mode_message(mode, [NIFTY_50, NIFTY_FUT]))
            await asyncio.sleep(0.1)  # packets already queued in the previous mode drain
            await collect(ws, 0.1)
            lengths: dict[int, set[int]] = {}
            for packet in packets_of(await collect(ws, 1.2)):
                lengths.setdefault(packet_token(packet), set()).add(len(packet))
            assert lengths == {NIFTY_50: {index_len}, NIFTY_FUT: {fut_len}}, mode
        assert server.subscriptions() == [{NIFTY_50: "quote", NIFTY_FUT: "quote"}]
        # A mode per token: only the future in full.
        await ws.send(mode_message("full", [NIFTY_FUT]))
        await collect(ws, 0.2)
        lengths = {}
        for packet in packets_of(await collect(ws, 1.2)):
            lengths.setdefault(packet_token(packet), set()).add(len(packet))
        assert lengths == {NIFTY_50: {28}, NIFTY_FUT: {184}}


async def test_unsubscribe_stops_ticks_and_idle_connection_gets_heartbeats(
    server: KiteSimulatorServer,
) -> None:
    async with client(server) as ws:
        await ws.send(subscribe_message([NIFTY_FUT]))
        assert packets_of(await collect(ws, 0.8))
        await ws.send(unsubscribe_message([NIFTY_FUT]))
        await collect(ws, 0.1)
        idle = await collect(ws, 1.05)
        assert server.subscriptions() == [{}]
    assert packets_of(idle) == []
    # heartbeat_interval is 0.2 s: about five 1-byte frames in a second, nothing else.
    assert idle and all(frame == HEARTBEAT for frame in idle)
    assert 3 <= len(idle) <= 6


async def test_string_and_unknown_tokens_get_only_heartbeats(server: KiteSimulatorServer) -> None:
    async with client(server) as ws:
        await ws.send(json.dumps({"a": "subscribe", "v": [str(NIFTY_FUT)]}))
        await ws.send(subscribe_message([99_999_999]))  # not in the market
        frames = await collect(ws, 0.7)
        assert server.subscriptions() == [{99_999_999: "quote"}]
    assert frames and all(frame == HEARTBEAT for frame in frames)


async def test_more_than_3000_tokens_are_refused_with_an_error(server: KiteSimulatorServer) -> None:
    tokens = list(range(1_000_000, 1_003_001))  # 3001 tokens
    async with client(server) as ws:
        await ws.send(subscribe_message(tokens))
        texts = [f for f in await collect(ws, 0.5) if isinstance(f, str)]
        assert len(server.subscriptions()[0]) == 3000
        assert 1_003_000 not in server.subscriptions()[0]
        await ws.send(subscribe_message([NIFTY_FUT]))  # still full
        texts += [f for f in await collect(ws, 0.3) if isinstance(f, str)]
    errors = [json.loads(t) for t in texts]
    assert [e["type"] for e in errors] == ["error", "error"]
    assert "3000" in errors[0]["data"] and "1 not subscribed" in errors[0]["data"]


async def test_broadcast_text_message_and_silence(server: KiteSimulatorServer) -> None:
    async with client(server) as ws:
        await ws.send(subscribe_message([NIFTY_FUT]))
        await collect(ws, 0.3)
        server.send_text("market closes early today")
        texts = [f for f in await collect(ws, 0.3) if isinstance(f, str)]
        assert [json.loads(t) for t in texts] == [
            {"type": "message", "data": "market closes early today"}
        ]
        server.silence(True)
        await asyncio.sleep(0.05)
        assert await collect(ws, 0.8) == []  # no ticks, no heartbeats
        server.silence(False)
        assert packets_of(await collect(ws, 0.5))


def write_recording(path: Path) -> list[tuple[int, bytes]]:
    """Five frames 200 ms apart (plus a heartbeat), each with a packet of two tokens."""
    market = make_market()
    snap_fut, snap_idx = market.snapshot(NIFTY_FUT), market.snapshot(NIFTY_50)
    assert snap_fut is not None and snap_idx is not None
    writer = FrameWriter(path)
    expected = []
    for n in range(5):
        snap_fut.last_price += 1.0
        fut = encode_packet(snap_fut, "full")
        idx = encode_packet(snap_idx, "quote")
        writer.write(1_700_000_000_000 + 200 * n, encode_frame([idx, fut]))
        writer.write(1_700_000_000_050 + 200 * n, HEARTBEAT)
        expected.append((n, fut))
    writer.close()
    return expected


async def test_replay_serves_recording_filtered_and_paced(tmp_path: Path) -> None:
    path = tmp_path / "session.tfrec"
    expected = write_recording(path)
    sim = KiteSimulatorServer(
        None, api_key=API_KEY, access_token=ACCESS_TOKEN, speed=2.0, replay=path,
        heartbeat_interval=5.0,
    )  # fmt: skip
    async with sim, client(sim) as ws:
        await ws.send(subscribe_message([NIFTY_FUT]))
        started = time.monotonic()
        frames, arrivals = [], []
        for _ in range(5):
            frames.append(await next_frame(ws))
            arrivals.append(time.monotonic() - started)
        assert await collect(ws, 0.3) == []  # end of the recording; heartbeats every 5 s
    # Only the subscribed token's packets, byte-identical, one frame per recorded frame.
    assert [split_frame(f) for f in frames if isinstance(f, bytes)] == [[p] for _, p in expected]
    # 200 ms recorded spacing at speed 2 is 100 ms.
    assert 0.35 <= arrivals[-1] <= 0.7
    assert sim.last_sent == {NIFTY_FUT: expected[-1][1]}


def test_command_line_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "TICKFLOW_KITE_API_KEY": API_KEY,
        "TICKFLOW_KITE_ACCESS_TOKEN": ACCESS_TOKEN,
        "TICKFLOW_LOG_LEVEL": "DEBUG",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "scripts.kite_simulator", "--port", str(port), "--tokens", "20",
         "--speed", "10", "--start", MARKET_START.isoformat()],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:

        async def talk() -> list[bytes]:
            deadline = time.monotonic() + 20
            while True:
                try:
                    ws = await connect(
                        f"ws://127.0.0.1:{port}/?api_key={API_KEY}&access_token={ACCESS_TOKEN}"
                    )
                    break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise
                    await asyncio.sleep(0.1)
            async with ws:
                await ws.send(subscribe_message([NIFTY_50]))
                return packets_of(await collect(ws, 1.0))

        packets = asyncio.run(talk())
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = output.decode()
    assert proc.returncode == 0, text
    assert packets and {packet_token(p) for p in packets} == {NIFTY_50}
    assert f"listening on ws://127.0.0.1:{port}/" in text
    assert ACCESS_TOKEN not in text  # not even at DEBUG
