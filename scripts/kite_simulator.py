"""A Kite-protocol WebSocket server: the market for development, tests and benchmarks.

It speaks the wire protocol of ``wss://ws.kite.trade`` exactly (see
``shared/reference/kite-protocol.md``), so the ingestor cannot tell it from Kite:

* the handshake checks ``api_key`` and ``access_token`` in the query string; a wrong one is
  rejected with HTTP 403, as Kite rejects an expired token;
* clients send JSON ``subscribe`` / ``unsubscribe`` / ``mode`` text messages; a new
  subscription is in ``quote`` mode, string tokens are ignored, unknown tokens are accepted
  but never tick, and at most 3000 tokens per connection are taken (an ``error`` text
  message says what was refused);
* on subscribe (and on a mode change) the cached last tick of each token is sent, in the
  connection's mode;
* ticks go out in binary frames in the real layout, many packets per frame, each packet
  encoded in the mode that connection chose for that token;
* a 1-byte heartbeat frame goes out when nothing else was sent for ``heartbeat_interval``;
  optional ``{"type": "message"}`` text messages go out every ``message_interval``.

Two sources: a live :class:`~core.market_simulator.MarketSimulator`, advanced by a pump task
to ``start + elapsed x speed`` every ``pump_interval`` and fanned out to the subscribers;
or ``replay``, a recorded frame file served to every connection with its original pacing
divided by ``speed``, filtered to the connection's subscriptions.

A slow client never makes the server's memory grow: a send waits for the client's TCP
window, and while it waits a connection queues at most ``CONFLATE_AT`` unsent packets;
beyond that it keeps only the latest packet per token (as a market-data server conflates
for a slow consumer; ``ClientSession.conflated`` counts what was replaced). A client that
keeps up gets every tick. In replay mode a slow client simply slows its own replay.

Scenarios (``--scenarios FILE``, see :mod:`core.scenarios`): labelled episodes scripted
on chosen equities (volume spike, breakouts, reversal, divergence, hidden accumulation,
momentum, quiet stretches), sized on the baselines of ``--history`` (the directory the
workers' baselines were bootstrapped from) so that the worker's volume ratio is the one
planned; ``--labels-out FILE`` writes the ground truth, the alert ids each episode must
produce (``--labels-only``: write it and exit).

Test hooks: ``drop_connections()`` (abrupt close), ``silence(True)`` (nothing at all is
sent, not even heartbeats: a dead-but-open connection), ``pause_market()`` /
``resume_market()``, ``inject_frame()`` (raw bytes, e.g. malformed frames),
``send_text()``, ``subscriptions()`` and the handshake counters.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import itertools
import json
import logging
import signal
import sys
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from http import HTTPStatus
from pathlib import Path
from typing import Any, Final, Protocol
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from config.instruments import Instrument, InstrumentMaster
from core.frame_file import read_frames
from core.kite_protocol import (
    ACTION_MODE,
    ACTION_SUBSCRIBE,
    ACTION_UNSUBSCRIBE,
    HEARTBEAT,
    encode_frame,
    encode_packet,
    packet_token,
    parse_client_message,
    split_frame,
)
from core.market_simulator import select_universe
from core.tick import Mode, Tick
from core.timeutil import IST

#: Named explicitly: under ``python -m`` the module's __name__ is "__main__".
log = logging.getLogger("scripts.kite_simulator")
#: The websockets library logs the request line (with the access token) and every frame at
#: DEBUG, and each connection at INFO: give it a logger of its own at WARNING.
_WS_LOG = logging.getLogger("scripts.kite_simulator.websocket")
_WS_LOG.setLevel(logging.WARNING)

#: Kite's per-connection subscription limit.
MAX_TOKENS_PER_CONNECTION: Final = 3000
#: Packets per binary frame at most (3000 full packets would be 558 KB; smaller frames
#: keep a client's per-frame latency and memory modest).
MAX_PACKETS_PER_FRAME: Final = 1000
#: Unsent packets a connection may hold before it is conflated to one per token (or twice
#: its subscriptions, if more): a client that keeps up gets every tick, a slow one the
#: latest state of each token, and the server's memory stays bounded either way.
CONFLATE_AT: Final = 20_000
#: The default subscription mode, as on Kite.
DEFAULT_MODE: Final[Mode] = "quote"


class Market(Protocol):
    """What the server needs of a market: :class:`core.market_simulator.MarketSimulator`."""

    @property
    def now(self) -> datetime: ...

    @property
    def tokens(self) -> list[int]: ...

    def advance(self, until: datetime) -> list[Tick]: ...

    def snapshot(self, token: int) -> Tick | None: ...


@dataclass(eq=False)
class ClientSession:
    """One client connection: its subscriptions (token -> mode) and unsent output."""

    id: int
    websocket: ServerConnection = field(repr=False)
    modes: dict[int, Mode] = field(default_factory=dict)
    #: Unsent (token, packet) in order; conflated past a bound (see the module docstring).
    pending: list[tuple[int, bytes]] = field(default_factory=list, repr=False)
    texts: deque[str] = field(default_factory=deque, repr=False)
    wake: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    send_lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)
    last_send: float = 0.0
    sent_ticks: int = 0
    sent_frames: int = 0
    heartbeats: int = 0
    #: Packets replaced by a later packet of the same token before they could be sent.
    conflated: int = 0
    conflate_at: int = CONFLATE_AT
    replay_task: asyncio.Task[None] | None = field(default=None, repr=False)

    def queue(self, token: int, packet: bytes) -> None:
        """Queue a packet; past the bound keep only the latest packet of each token."""
        pending = self.pending
        pending.append((token, packet))
        if len(pending) > max(self.conflate_at, 2 * len(self.modes)):
            latest = dict(pending)  # later packets win, first-seen order is kept
            self.conflated += len(pending) - len(latest)
            self.pending = list(latest.items())

    @property
    def remote(self) -> str:
        address = self.websocket.remote_address
        return f"{address[0]}:{address[1]}" if address else "?"


def default_market_start(today: date | None = None) -> datetime:
    """Today's NSE open, 09:15 IST: the simulator's default market time."""
    day = today or datetime.now(IST).date()
    return datetime.combine(day, time(9, 15), tzinfo=IST)


def market_start(configured: datetime | None) -> datetime:
    """The simulated start: the configured one (naive = IST) or today's open."""
    start = configured or default_market_start()
    return start if start.tzinfo is not None else start.replace(tzinfo=IST)


def simulated_universe(master: InstrumentMaster, n: int, start: datetime) -> list[Instrument]:
    """The simulator's universe; the ingestor's ``--tokens N`` subscribes exactly this.

    Contracts expired before the start date are left out: they would never tick.
    """
    return select_universe(master, n, as_of=start.date())


class KiteSimulatorServer:
    """The simulator as an object: tests and ``start_system`` run it in-process.

    ``market`` is the live source (ignored when ``replay`` is given). ``port=0`` picks a
    free port; ``.port`` and ``.url`` are valid after ``start()``.
    """

    def __init__(
        self,
        market: Market | None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str,
        access_token: str,
        speed: float = 1.0,
        heartbeat_interval: float = 1.0,
        pump_interval: float = 0.05,
        replay: Path | None = None,
        message_interval: float | None = None,
        max_tokens_per_connection: int = MAX_TOKENS_PER_CONNECTION,
        max_packets_per_frame: int = MAX_PACKETS_PER_FRAME,
        conflate_at: int = CONFLATE_AT,
    ) -> None:
        if market is None and replay is None:
            raise ValueError("a market or a replay file is required")
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.market = None if replay is not None else market
        self.replay_path = replay
        self.host = host
        self.port = port
        self.api_key = api_key
        self._access_token = access_token
        self.speed = speed
        self.heartbeat_interval = heartbeat_interval
        self.pump_interval = pump_interval
        self.message_interval = message_interval
        self.max_tokens_per_connection = max_tokens_per_connection
        self.max_packets_per_frame = max_packets_per_frame
        self.conflate_at = conflate_at
        #: The last packet bytes sent for each token, on any connection.
        self.last_sent: dict[int, bytes] = {}
        #: Packets sent, all connections (heartbeats and text not included).
        self.sent_ticks = 0
        self.sent_frames = 0
        self.heartbeats_sent = 0
        #: Ticks the market produced that encode_packet refused (a bug; logged).
        self.encode_errors = 0
        #: Every handshake that reached the server, and those refused (403 or 400).
        self.handshake_attempts = 0
        self.rejected_handshakes = 0
        self.sessions: list[ClientSession] = []
        self._subscribers: dict[int, list[ClientSession]] = {}
        self._ids = itertools.count(1)
        self._server: Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._unsilenced = asyncio.Event()
        self._unsilenced.set()
        self._paused_at: datetime | None = None
        self._origin_market: datetime | None = None
        self._origin_mono = 0.0
        self._ticks_generated = 0

    # -- public state ------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}/"

    @property
    def connections(self) -> list[ClientSession]:
        """The open client connections (live objects)."""
        return list(self.sessions)

    def subscriptions(self) -> list[dict[int, Mode]]:
        """A copy of each open connection's subscriptions: token -> mode."""
        return [dict(session.modes) for session in self.sessions]

    @property
    def ticks_generated(self) -> int:
        """Ticks the market produced (sent to someone or not)."""
        return self._ticks_generated

    def market_time(self) -> datetime | None:
        """start + monotonic elapsed x speed; frozen while paused; None in replay."""
        if self.market is None or self._origin_market is None:
            return None
        if self._paused_at is not None:
            return self._paused_at
        elapsed = asyncio.get_running_loop().time() - self._origin_mono
        return self._origin_market + timedelta(seconds=elapsed * self.speed)

    @property
    def lag_seconds(self) -> float:
        """How far the market is behind market_time() (it cannot keep up with speed)."""
        target = self.market_time()
        if target is None or self.market is None:
            return 0.0
        return max(0.0, (target - self.market.now).total_seconds())

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        self._server = await serve(
            self._handle,
            self.host,
            self.port,
            process_request=self._check_credentials,
            compression=None,
            ping_interval=None,  # Kite's liveness signal is the heartbeat frame
            close_timeout=1,
            max_size=1 << 20,
            logger=_WS_LOG,
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        loop = asyncio.get_running_loop()
        if self.market is not None:
            self._origin_market = self.market.now
            self._origin_mono = loop.time()
            self._tasks.append(asyncio.create_task(self._pump(), name="simulator-pump"))
        if self.message_interval:
            self._tasks.append(asyncio.create_task(self._messages(), name="simulator-messages"))

    async def stop(self) -> None:
        """Close every connection and the listener; cancel every task of the server."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._server is not None:
            self._server.close()
            try:
                await asyncio.wait_for(self._server.wait_closed(), 3)
            except TimeoutError:
                await self.drop_connections()
                await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> KiteSimulatorServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- test hooks --------------------------------------------------------------------

    async def drop_connections(self) -> int:
        """Abort every client connection (no close frame), as a network failure would."""
        sessions = list(self.sessions)
        for session in sessions:
            session.websocket.transport.abort()
        await asyncio.sleep(0)
        return len(sessions)

    def silence(self, on: bool) -> None:
        """While on, send nothing at all (no ticks, no heartbeats): a dead-but-open link.

        Ticks keep being conflated per token meanwhile and go out when silence ends.
        """
        if on:
            self._unsilenced.clear()
        else:
            self._unsilenced.set()

    @property
    def silent(self) -> bool:
        return not self._unsilenced.is_set()

    def pause_market(self) -> None:
        """Freeze market time: no more ticks until resume_market()."""
        if self._paused_at is None:
            self._paused_at = self.market_time()

    def resume_market(self) -> None:
        """Continue from the frozen market time (no jump over the paused period)."""
        if self._paused_at is not None:
            self._origin_market = self._paused_at
            self._origin_mono = asyncio.get_running_loop().time()
            self._paused_at = None

    async def inject_frame(self, frame: bytes | str) -> None:
        """Send raw bytes (or text) to every connection: malformed input for tests."""
        for session in list(self.sessions):
            with contextlib.suppress(ConnectionClosed):
                async with session.send_lock:
                    await session.websocket.send(frame)
                    session.last_send = asyncio.get_running_loop().time()

    def send_text(self, data: Any, kind: str = "message") -> None:
        """Queue a ``{"type": kind, "data": data}`` text message to every connection."""
        text = json.dumps({"type": kind, "data": data})
        for session in self.sessions:
            session.texts.append(text)
            session.wake.set()

    # -- handshake ---------------------------------------------------------------------

    def _check_credentials(self, connection: ServerConnection, request: Request) -> Response | None:
        """Kite authenticates only here: a wrong api_key or access_token is HTTP 403."""
        self.handshake_attempts += 1
        query = parse_qs(urlsplit(request.path).query)
        api_key = query.get("api_key", [""])[0]
        token = query.get("access_token", [""])[0]
        if not api_key or not token:
            self.rejected_handshakes += 1
            return connection.respond(HTTPStatus.BAD_REQUEST, "api_key and access_token required\n")
        if api_key != self.api_key or not hmac.compare_digest(
            token.encode(), self._access_token.encode()
        ):
            self.rejected_handshakes += 1
            log.info("handshake rejected with 403 (wrong api_key or access_token)")
            return connection.respond(
                HTTPStatus.FORBIDDEN,
                json.dumps({"status": "error", "error_type": "TokenException",
                            "message": "Incorrect `api_key` or `access_token`."}),
            )  # fmt: skip
        return None

    # -- connections -------------------------------------------------------------------

    async def _handle(self, websocket: ServerConnection) -> None:
        session = ClientSession(next(self._ids), websocket, conflate_at=self.conflate_at)
        session.last_send = asyncio.get_running_loop().time()
        self.sessions.append(session)
        log.info("client %d connected from %s", session.id, session.remote)
        sender = asyncio.create_task(self._sender(session), name=f"simulator-send-{session.id}")
        try:
            async for message in websocket:
                if isinstance(message, str):
                    self._on_client_message(session, message)
                if sender.done():
                    break
        except ConnectionClosed:
            pass
        finally:
            self.sessions.remove(session)
            for token in session.modes:
                self._unindex(token, session)
            tasks = [sender] + ([session.replay_task] if session.replay_task else [])
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                    await task
            log.info("client %d disconnected", session.id)

    def _on_client_message(self, session: ClientSession, text: str) -> None:
        message = parse_client_message(text)
        if message is None:
            session.texts.append(json.dumps({"type": "error", "data": "invalid message"}))
            session.wake.set()
            return
        modes = session.modes
        if message.action == ACTION_SUBSCRIBE:
            refused = 0
            for token in message.tokens:
                if token not in modes:
                    if len(modes) >= self.max_tokens_per_connection:
                        refused += 1
                        continue
                    modes[token] = DEFAULT_MODE
                    self._subscribers.setdefault(token, []).append(session)
                self._queue_snapshot(session, token)
            if refused:
                session.texts.append(
                    json.dumps({
                        "type": "error",
                        "data": f"Maximum {self.max_tokens_per_connection} instruments per "
                        f"connection: {refused} not subscribed",
                    })
                )  # fmt: skip
            if self.replay_path is not None and session.replay_task is None and modes:
                session.replay_task = asyncio.create_task(
                    self._replay(session), name=f"simulator-replay-{session.id}"
                )
        elif message.action == ACTION_UNSUBSCRIBE:
            dropped = {token for token in message.tokens if modes.pop(token, None) is not None}
            for token in dropped:
                self._unindex(token, session)
            if dropped:
                session.pending = [item for item in session.pending if item[0] not in dropped]
        elif message.action == ACTION_MODE and message.mode is not None:
            changed = {t for t in message.tokens if t in modes and modes[t] != message.mode}
            if changed:
                # Unsent packets in the old mode (typically the snapshot of the subscribe
                # just before) are superseded by the snapshot in the new mode.
                session.pending = [item for item in session.pending if item[0] not in changed]
                for token in message.tokens:
                    if token in changed:
                        modes[token] = message.mode
                        self._queue_snapshot(session, token)
        session.wake.set()

    def _queue_snapshot(self, session: ClientSession, token: int) -> None:
        if self.market is None:
            return
        tick = self.market.snapshot(token)
        if tick is not None:
            packet = self._encode(tick, session.modes[token])
            if packet is not None:
                session.queue(token, packet)

    def _encode(self, tick: Tick, mode: Mode) -> bytes | None:
        """encode_packet, but a tick it refuses is logged and counted, never fatal.

        A market bug must not kill the pump (the server would go on heart-beating with no
        ticks, the very silent failure the watchdog exists for) nor a connection.
        """
        try:
            return encode_packet(tick, mode)
        except ValueError as exc:
            self.encode_errors += 1
            if self.encode_errors == 1 or self.encode_errors % 10_000 == 0:
                log.error(
                    "cannot encode a tick of %d in %s mode (%d so far): %s",
                    tick.instrument_token, mode, self.encode_errors, exc,
                )  # fmt: skip
            return None

    def _unindex(self, token: int, session: ClientSession) -> None:
        subscribers = self._subscribers.get(token)
        if subscribers is not None:
            with contextlib.suppress(ValueError):
                subscribers.remove(session)
            if not subscribers:
                del self._subscribers[token]

    async def _sender(self, session: ClientSession) -> None:
        """The connection's output: queued text, conflated ticks, or a heartbeat."""
        loop = asyncio.get_running_loop()
        websocket = session.websocket
        interval = self.heartbeat_interval
        while True:
            if not session.wake.is_set():
                timeout = max(0.0, session.last_send + interval - loop.time())
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await session.wake.wait()
            session.wake.clear()
            if not self._unsilenced.is_set():
                await self._unsilenced.wait()
                session.last_send = loop.time()
                continue
            async with session.send_lock:
                while session.texts:
                    await websocket.send(session.texts.popleft())
                    session.last_send = loop.time()
                if session.pending:
                    pending, session.pending = session.pending, []
                    tokens, packets = zip(*pending, strict=True)
                    await self._send_packets(session, tokens, packets)
                elif loop.time() - session.last_send >= interval:
                    await websocket.send(HEARTBEAT)
                    session.last_send = loop.time()
                    session.heartbeats += 1
                    self.heartbeats_sent += 1

    async def _send_packets(
        self, session: ClientSession, tokens: Sequence[int], packets: Sequence[bytes]
    ) -> None:
        """Frames of at most max_packets_per_frame; the caller holds the send lock."""
        step = self.max_packets_per_frame
        last_sent = self.last_sent
        for start in range(0, len(packets), step):
            chunk = packets[start : start + step]
            await session.websocket.send(encode_frame(chunk))
            for token, packet in zip(tokens[start : start + step], chunk, strict=True):
                last_sent[token] = packet
            session.sent_ticks += len(chunk)
            session.sent_frames += 1
            self.sent_ticks += len(chunk)
            self.sent_frames += 1
        session.last_send = asyncio.get_running_loop().time()

    # -- sources -----------------------------------------------------------------------

    async def _pump(self) -> None:
        """Advance the market to the current market time and fan the ticks out."""
        assert self.market is not None
        loop = asyncio.get_running_loop()
        market = self.market
        # At most one interval of market time per step: when the market (or the fan-out)
        # is slower than real time x speed, a step covering all the elapsed time would take
        # longer still, and the next longer again: the loop would never catch up and the
        # event loop (the connections, an in-process ingestor) would starve. Falling
        # behind the nominal speed instead is visible in ``lag_seconds`` and logged.
        max_step = timedelta(seconds=self.pump_interval * self.speed)
        lag_warning = max(timedelta(seconds=self.speed), 4 * max_step)  # ~1 s behind
        warned_at = 0.0
        while True:
            started = loop.time()
            target = self.market_time()
            if self._paused_at is None and target is not None and target > market.now:
                until = min(target, market.now + max_step)
                if target - until > lag_warning and started - warned_at > 10:
                    warned_at = started
                    log.warning(
                        "the market cannot keep up with speed x%g: %.1fs behind",
                        self.speed, (target - until).total_seconds(),
                    )  # fmt: skip
                ticks = market.advance(until)
                self._ticks_generated += len(ticks)
                if ticks and self._subscribers:
                    self._fan_out(ticks)
            await asyncio.sleep(max(0.0, self.pump_interval - (loop.time() - started)))

    def _fan_out(self, ticks: Sequence[Tick]) -> None:
        subscribers = self._subscribers
        touched: set[ClientSession] = set()
        for tick in ticks:
            token = tick.instrument_token
            sessions = subscribers.get(token)
            if not sessions:
                continue
            if len(sessions) == 1:
                session = sessions[0]
                packet = self._encode(tick, session.modes[token])
                if packet is not None:
                    session.queue(token, packet)
                    touched.add(session)
                continue
            encoded: dict[str, bytes | None] = {}
            for session in sessions:
                mode = session.modes[token]
                if mode not in encoded:
                    encoded[mode] = self._encode(tick, mode)
                packet = encoded[mode]
                if packet is not None:
                    session.queue(token, packet)
                    touched.add(session)
        for session in touched:
            session.wake.set()

    async def _replay(self, session: ClientSession) -> None:
        """Serve the recording to one connection, paced like the original / speed."""
        assert self.replay_path is not None
        loop = asyncio.get_running_loop()
        started = loop.time()
        first_ms: int | None = None
        with self.replay_path.open("rb") as source:
            for record in read_frames(source):
                if first_ms is None:
                    first_ms = record.received_at_ms
                due = started + (record.received_at_ms - first_ms) / 1000 / self.speed
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                if len(record.frame) <= 1 or not self._unsilenced.is_set():
                    continue  # heartbeats are the sender's job; silence loses frames
                modes = session.modes
                tokens, packets = [], []
                for packet in split_frame(record.frame):
                    token = packet_token(packet)
                    if token in modes:
                        tokens.append(token)
                        packets.append(packet)
                if packets:
                    async with session.send_lock:
                        await self._send_packets(session, tokens, packets)
        log.info("client %d: replay of %s finished", session.id, self.replay_path.name)

    async def _messages(self) -> None:
        assert self.message_interval
        while True:
            await asyncio.sleep(self.message_interval)
            now = self.market_time()
            self.send_text(
                f"tickflow simulator: market time {now.isoformat()}" if now else "tickflow replay"
            )


# --- command line ---------------------------------------------------------------------------


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    from config.settings import get_settings

    settings = get_settings()
    parser = argparse.ArgumentParser(
        prog="python -m scripts.kite_simulator",
        description="Kite-protocol WebSocket simulator (live synthetic market or replay).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=settings.simulator_port)
    parser.add_argument("--tokens", type=int, default=settings.simulator_tokens,
                        help="instruments in the simulated universe")  # fmt: skip
    parser.add_argument("--speed", type=float, default=settings.simulator_speed,
                        help="simulated seconds per real second")  # fmt: skip
    parser.add_argument("--seed", type=int, default=settings.simulator_seed)
    parser.add_argument("--start", type=datetime.fromisoformat, default=settings.simulator_start,
                        help="market start time, ISO 8601 (default: today 09:15 IST)")  # fmt: skip
    parser.add_argument("--replay", type=Path, default=None,
                        help="serve this frame recording instead of a live market")  # fmt: skip
    parser.add_argument("--heartbeat-interval", type=float, default=1.0)
    parser.add_argument("--message-interval", type=float, default=60.0,
                        help="seconds between broadcast text messages (0 = never)")  # fmt: skip
    parser.add_argument("--scenarios", type=Path, default=None, metavar="FILE",
                        help="labelled episodes to play (JSON, see core.scenarios); their "
                        "tokens join the universe")  # fmt: skip
    parser.add_argument("--history", type=Path, default=settings.state_dir / "history",
                        metavar="DIR",
                        help="history the workers' baselines were bootstrapped from "
                        "(scripts.generate_history): episodes are sized on the same "
                        "baselines and their tokens continue its last close "
                        "(default: %(default)s)")  # fmt: skip
    parser.add_argument("--labels-out", type=Path, default=None, metavar="FILE",
                        help="write the scenario's ground truth (expected alert ids per "
                        "episode) as JSON")  # fmt: skip
    parser.add_argument("--labels-only", action="store_true",
                        help="write --labels-out and exit without serving")  # fmt: skip
    args = parser.parse_args(argv)
    if (args.labels_out or args.labels_only) and args.scenarios is None:
        parser.error("--labels-out and --labels-only need --scenarios")
    if args.labels_only and args.labels_out is None:
        parser.error("--labels-only needs --labels-out")
    if args.scenarios is not None and args.replay is not None:
        parser.error("--scenarios plays on the live market, not on --replay")
    return args


def scenario_inputs(
    history: Path, tokens: Sequence[int]
) -> tuple[dict[int, tuple[float, ...]], dict[int, float], list[str]]:
    """What a scenario needs from the tokens' history, computed exactly as the workers'
    baselines are (``scripts.bootstrap_baselines``): each token's expected volume per
    minute-of-session slot (an episode's volumes are sized on it, so the ratio the
    worker computes is the one planned) and its last close (the live day starts there,
    so indicator state warmed on that history sees no artificial gap). Tokens without
    history are reported in the notes; their episodes use the model's own expectation.
    """
    from config.settings import get_settings
    from core.baselines import BaselinePolicy, expected_profile
    from scripts.bootstrap_baselines import bootstrap

    settings = get_settings()
    policy = BaselinePolicy(
        window=settings.baseline_sessions, min_sessions=settings.baseline_min_sessions
    )
    notes: list[str] = []
    profiles: dict[int, tuple[float, ...]] = {}
    closes: dict[int, float] = {}
    if not history.is_dir():
        return profiles, closes, [f"no history directory {history}: model volumes, master prices"]
    report = bootstrap([history], policy=policy)
    for token in tokens:
        baseline = report.baselines.get(token)
        profile = expected_profile(baseline, policy=policy) if baseline is not None else None
        if profile is None:
            notes.append(f"token {token}: no history in {history}: model volumes")
            continue
        profiles[token] = profile
        closes[token] = float(report.indicators[token]["prev_close"])
    return profiles, closes, notes


def build_market(args: argparse.Namespace, master: InstrumentMaster) -> tuple[Any, str]:
    """The live market of the command line, with its scenario if any, and a one-line
    description for the log. A bad scenario is a ``SystemExit`` with the reason."""
    from config.patterns import pattern_config
    from config.settings import get_settings
    from core.market_simulator import MarketSimulator
    from core.scenarios import ScenarioError, load_scenario

    settings = get_settings()
    start = market_start(args.start)
    instruments = simulated_universe(master, args.tokens, start)
    if args.scenarios is None:
        market = MarketSimulator(instruments, args.seed, start, master=master)
        return market, (
            f"{len(instruments)} instruments, seed {args.seed}, market from {start.isoformat()}"
        )

    def resolve(exchange: str, symbol: str) -> int | None:
        inst = master.by_symbol(exchange, symbol)
        return inst.instrument_token if inst is not None else None

    try:
        scenario = load_scenario(
            args.scenarios,
            default_date=start.date(),
            resolve_symbol=resolve,
            config=pattern_config(settings),
            volume_window=settings.volume_window,
        )
        taken = {inst.instrument_token for inst in instruments}
        for token in scenario.tokens:
            inst = master.get(token)
            if inst is None:
                raise ScenarioError(f"scenario token {token} is not in the instrument master")
            if token not in taken:
                instruments.append(inst)
                taken.add(token)
        profiles, closes, notes = scenario_inputs(args.history, scenario.tokens)
        for note in notes:
            log.warning("scenario: %s", note)
        market = MarketSimulator(
            instruments,
            args.seed,
            start,
            master=master,
            scenario=scenario,
            baselines=profiles,
            reference_prices=closes,
        )
    except ScenarioError as exc:
        raise SystemExit(f"kite_simulator: {exc}") from None
    if args.labels_out is not None:
        symbols = {t: inst.tradingsymbol for t in scenario.tokens if (inst := master.get(t))}
        args.labels_out.parent.mkdir(parents=True, exist_ok=True)
        args.labels_out.write_text(json.dumps(market.ground_truth(symbols), indent=1) + "\n")
    description = (
        f"{len(instruments)} instruments, seed {args.seed}, market from {start.isoformat()}, "
        f"{len(scenario.episodes)} scenario episodes on {len(scenario.tokens)} tokens"
    )
    return market, description


async def _serve(args: argparse.Namespace) -> None:
    from config.settings import get_settings

    settings = get_settings()
    market: Market | None = None
    universe = ""
    if args.replay is None:
        master = InstrumentMaster.load(settings.instruments_path)
        market, universe = build_market(args, master)
        if args.labels_only:
            log.info("scenario labels written to %s", args.labels_out)
            return
    elif not args.replay.is_file():
        raise SystemExit(f"kite_simulator: replay file not found: {args.replay}")
    server = KiteSimulatorServer(
        market,
        host=args.host,
        port=args.port,
        api_key=settings.kite_api_key,
        access_token=settings.kite_access_token.get_secret_value(),
        speed=args.speed,
        heartbeat_interval=args.heartbeat_interval,
        replay=args.replay,
        message_interval=args.message_interval or None,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await server.start()
    except OSError as exc:
        raise SystemExit(
            f"kite_simulator: cannot listen on {args.host}:{args.port}: {exc}"
        ) from None
    source = f"replaying {args.replay}" if args.replay else universe
    log.info("Kite simulator listening on %s (%s, speed x%g)", server.url, source, args.speed)
    try:
        await stop.wait()
    finally:
        log.info("stopping the simulator (%d ticks sent)", server.sent_ticks)
        await server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m scripts.kite_simulator``: serve until SIGINT or SIGTERM."""
    args = _parse_args(argv)
    from config.settings import get_settings

    logging.basicConfig(
        level=get_settings().log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
