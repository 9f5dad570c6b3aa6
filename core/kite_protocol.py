"""The Kite Connect WebSocket protocol: binary market-data frames and JSON text messages.

This module is the tick hot path (every packet of every instrument passes through
``decode_frame`` or ``decode_packet``), so it is written for speed first:

* one precompiled :class:`struct.Struct` per packet kind and one ``unpack_from`` per
  packet, straight out of the frame (no per-field unpacking, no slicing of the frame into
  packet copies);
* the market depth of a full packet is not decoded: its 120 bytes come out of that same
  ``unpack_from`` into a :class:`core.tick.Depth`, which builds the levels when (and if)
  they are read. Ten levels cost more than everything else in the packet;
* full packets (most of the traffic) are tested for first, the rarer lengths dispatched
  through a dict; prices are divided by a per-segment divisor from a 256-entry tuple;
* counters are plain ``int`` attributes bumped once per frame, not per packet.

The wire format is described in ``shared/reference/kite-protocol.md``; in short, a frame
is ``uint16 packet_count`` then, per packet, ``uint16 length`` and ``length`` bytes, all
big-endian. Where this module reads the wire differently from the official Python client
(``kiteconnect.KiteTicker._parse_binary``) it follows the protocol reference, and says so:

* prices (last, average, OHLC, depth) are read as *signed* int32 (the official client reads
  them unsigned, so a negative price such as MCX crude oil on 2020-04-20 would come out as
  about 42.9 million); quantities, volumes, OI, depth orders and times are unsigned;
* a timestamp of 0 means "not present" and becomes ``None`` (the official client turns it
  into a naive 1970 ``datetime`` in the host's zone);
* malformed frames are counted in :class:`DecodeStats`, never raised (the official client
  raises ``struct.error`` on a frame truncated inside a packet's token).

Decoding never raises on any input bytes. Encoding (used by the simulator and the tests)
does raise ``ValueError`` on a tick that cannot be represented: that is a programming
error on our side, not bad input from the network.
"""

from __future__ import annotations

import json
import operator
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeAlias, cast

from core.tick import DEPTH_WIRE_LENGTH, SEGMENT_INDICES, Depth, Mode, Tick, price_divisor

__all__ = [
    "ACTION_MODE",
    "ACTION_SUBSCRIBE",
    "ACTION_UNSUBSCRIBE",
    "EMPTY_FRAME",
    "FULL_LENGTH",
    "HEARTBEAT",
    "INDEX_FULL_LENGTH",
    "INDEX_QUOTE_LENGTH",
    "LTP_LENGTH",
    "MESSAGE_INVALID",
    "MODES",
    "PACKET_LENGTHS",
    "QUOTE_LENGTH",
    "TRAILING_BYTES",
    "TRUNCATED_FRAME",
    "TRUNCATED_PACKETS",
    "UNKNOWN_LENGTH",
    "ClientMessage",
    "DecodeStats",
    "TextMessage",
    "decode_frame",
    "decode_packet",
    "encode_frame",
    "encode_packet",
    "encode_ticks",
    "mode_message",
    "packet_token",
    "parse_client_message",
    "parse_text_message",
    "split_frame",
    "subscribe_message",
    "unsubscribe_message",
]

#: Anything ``struct.unpack_from`` and indexing accept: the WebSocket library hands us
#: ``bytes``, a recording reader or a test may hand a ``memoryview`` or ``bytearray``.
Frame: TypeAlias = bytes | bytearray | memoryview

#: A one-byte binary frame: the server's liveness signal when nothing else streams.
HEARTBEAT: Final = b"\x00"

MODES: Final[frozenset[str]] = frozenset({"ltp", "quote", "full"})

# --- error kinds counted in DecodeStats.errors -------------------------------------------
#: A zero-byte binary frame (not a heartbeat: those are exactly one byte).
EMPTY_FRAME: Final = "empty_frame"
#: The packet count or a packet length runs past the end of the frame. Counted once per
#: frame; the packets that were whole are still decoded.
TRUNCATED_FRAME: Final = "truncated_frame"
#: How many announced packets a truncated frame lost (so the loss can be alerted on).
TRUNCATED_PACKETS: Final = "truncated_packets"
#: Bytes left over after the announced packets (the packets themselves are decoded).
TRAILING_BYTES: Final = "trailing_bytes"
#: A whole packet whose length is none of 8, 28, 32, 44, 184 (legacy 164-byte packets,
#: garbage): skipped.
UNKNOWN_LENGTH: Final = "unknown_length"

# --- packet layouts -----------------------------------------------------------------------
# Prices are signed ('i'), everything that counts (quantities, volumes, OI, orders) or is a
# time is unsigned ('I', 'H'): see the module docstring.
_LTP = struct.Struct(">Ii")  # token, last_price
_INDEX_QUOTE = struct.Struct(">Iiiiiii")  # token, last, high, low, open, close, net change
_INDEX_FULL = struct.Struct(">IiiiiiiI")  # ... + exchange_timestamp
# token, last, last_qty, avg_price, volume, buy_qty, sell_qty, open, high, low, close
_QUOTE = struct.Struct(">IiIiIIIiiii")
# quote + last_trade_time, oi, oi_day_high, oi_day_low, exchange_timestamp, then ten depth
# entries (five bids, five asks): int32 quantity, int32 price, int16 orders, 2 pad bytes.
_FULL = struct.Struct(">IiIiIIIiiiiIIIII" + "IiHxx" * 10)
# The decoder's view of the same 184 bytes: the depth comes out as its 120 bytes, for
# core.tick.Depth to unpack if and when someone reads it (as 30 ints they would be a third of
# the packet's decoding time, for a book most stages never look at).
_FULL_LAZY = struct.Struct(f">IiIiIIIiiiiIIIII{DEPTH_WIRE_LENGTH}s")
_U16 = struct.Struct(">H")

LTP_LENGTH: Final = _LTP.size  # 8
INDEX_QUOTE_LENGTH: Final = _INDEX_QUOTE.size  # 28
INDEX_FULL_LENGTH: Final = _INDEX_FULL.size  # 32
QUOTE_LENGTH: Final = _QUOTE.size  # 44
FULL_LENGTH: Final = _FULL.size  # 184
PACKET_LENGTHS: Final[frozenset[int]] = frozenset(
    {LTP_LENGTH, INDEX_QUOTE_LENGTH, INDEX_FULL_LENGTH, QUOTE_LENGTH, FULL_LENGTH}
)
if _FULL_LAZY.size != FULL_LENGTH:  # pragma: no cover - layout guard
    raise ImportError("core.tick depth layout and core.kite_protocol full packet disagree")
_NO_DEPTH: Final = bytes(DEPTH_WIRE_LENGTH)

#: Price divisor by segment (token & 0xFF); a tuple index is cheaper than a call per packet.
#: As ints: int / int is correctly rounded exactly like the official client's int / float
#: (both operands are exact in a double), and about a third cheaper in CPython 3.11.
_DIVISORS: Final[tuple[int, ...]] = tuple(int(price_divisor(segment)) for segment in range(256))

# The decoders build Tick positionally (with 20 keywords the call takes about 1 us instead
# of 0.3 us) in the order of core.tick.POSITIONAL_FIELDS, guarded where Tick is defined.


class DecodeStats:
    """Counters of what the decoder saw, for metrics and the ``decode`` command.

    Bad input from the network is never an exception here (one malformed frame must not
    take the connection down); it is counted by kind in :attr:`errors` instead.
    Invariants: ``packets == ticks + errors[UNKNOWN_LENGTH]`` when every split packet is
    decoded, and every frame is exactly one of heartbeat, empty or data frame.
    """

    __slots__ = ("errors", "frames", "heartbeats", "packets", "ticks")

    def __init__(self) -> None:
        #: Binary frames seen (heartbeats and malformed ones included).
        self.frames = 0
        #: One-byte frames.
        self.heartbeats = 0
        #: Whole packets found in frames (decodable or not).
        self.packets = 0
        #: Packets decoded into a Tick.
        self.ticks = 0
        #: Malformed input by kind (EMPTY_FRAME, TRUNCATED_FRAME, ...).
        self.errors: dict[str, int] = {}

    def add_error(self, kind: str, count: int = 1) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + count

    @property
    def error_count(self) -> int:
        """Malformed frames and packets (TRUNCATED_PACKETS is a loss size, not an event)."""
        return sum(n for kind, n in self.errors.items() if kind != TRUNCATED_PACKETS)

    def merge(self, other: DecodeStats) -> None:
        """Add another counter set into this one (per-connection stats into a total)."""
        self.frames += other.frames
        self.heartbeats += other.heartbeats
        self.packets += other.packets
        self.ticks += other.ticks
        for kind, count in other.errors.items():
            self.add_error(kind, count)

    def as_dict(self) -> dict[str, int]:
        """Every counter by name, flat, for metrics and JSON."""
        return {
            "frames": self.frames,
            "heartbeats": self.heartbeats,
            "packets": self.packets,
            "ticks": self.ticks,
            **self.errors,
        }

    def __repr__(self) -> str:
        return f"DecodeStats({self.as_dict()})"


# --- packet decoders ------------------------------------------------------------------------
# Each takes the buffer and the packet's offset in it, so decode_frame never copies a packet
# out of its frame. The caller has already checked that the whole packet is there.


def _decode_ltp(buf: Frame, offset: int) -> Tick:
    token, last = _LTP.unpack_from(buf, offset)
    segment = token & 0xFF
    return Tick(token, "ltp", segment != SEGMENT_INDICES, last / _DIVISORS[segment])


def _decode_index_quote(buf: Frame, offset: int) -> Tick:
    # The net change at offset 24 is absolute; Tick.change is the official client's
    # percentage, recomputed below from last and close exactly as it does.
    token, last, high, low, open_, close, _net = _INDEX_QUOTE.unpack_from(buf, offset)
    segment = token & 0xFF
    div = _DIVISORS[segment]
    last = last / div
    close = close / div
    change = (last - close) * 100.0 / close if close else 0.0
    return Tick(
        token, "quote", segment != SEGMENT_INDICES, last, None, None, None, None, None,
        open_ / div, high / div, low / div, close, change,
    )  # fmt: skip


def _decode_index_full(buf: Frame, offset: int) -> Tick:
    token, last, high, low, open_, close, _net, stamp = _INDEX_FULL.unpack_from(buf, offset)
    segment = token & 0xFF
    div = _DIVISORS[segment]
    last = last / div
    close = close / div
    change = (last - close) * 100.0 / close if close else 0.0
    return Tick(
        token, "full", segment != SEGMENT_INDICES, last, None, None, None, None, None,
        open_ / div, high / div, low / div, close, change, None, None, None, None,
        stamp or None,
    )  # fmt: skip


def _decode_quote(buf: Frame, offset: int) -> Tick:
    (token, last, last_qty, avg, volume, buy_qty, sell_qty,
     open_, high, low, close) = _QUOTE.unpack_from(buf, offset)  # fmt: skip
    segment = token & 0xFF
    div = _DIVISORS[segment]
    last = last / div
    close = close / div
    change = (last - close) * 100.0 / close if close else 0.0
    return Tick(
        token, "quote", segment != SEGMENT_INDICES, last, last_qty, avg / div, volume,
        buy_qty, sell_qty, open_ / div, high / div, low / div, close, change,
    )  # fmt: skip


_unpack_full = _FULL_LAZY.unpack_from


def _decode_full(buf: Frame, offset: int) -> Tick:
    """The 184-byte full packet; the depth stays bytes until read (see core.tick.Depth)."""
    (token, last, last_qty, avg, volume, buy_qty, sell_qty, open_, high, low, close,
     trade_time, oi, oi_high, oi_low, stamp, depth) = _unpack_full(buf, offset)  # fmt: skip
    segment = token & 0xFF
    div = _DIVISORS[segment]
    last = last / div
    close = close / div
    return Tick(
        token, "full", segment != SEGMENT_INDICES, last, last_qty, avg / div, volume,
        buy_qty, sell_qty, open_ / div, high / div, low / div, close,
        (last - close) * 100.0 / close if close else 0.0, trade_time or None, oi, oi_high,
        oi_low, stamp or None, Depth(depth, div),
    )  # fmt: skip


_Decoder: TypeAlias = Callable[[Frame, int], Tick]
_DECODERS: Final[dict[int, _Decoder]] = {
    LTP_LENGTH: _decode_ltp,
    INDEX_QUOTE_LENGTH: _decode_index_quote,
    INDEX_FULL_LENGTH: _decode_index_full,
    QUOTE_LENGTH: _decode_quote,
    FULL_LENGTH: _decode_full,
}


# --- frames ---------------------------------------------------------------------------------


def _frame_header(frame: Frame, stats: DecodeStats) -> int:
    """Counts the frame; returns its announced packet count, or -1 if it has none."""
    stats.frames += 1
    size = len(frame)
    if size >= 2:
        return (frame[0] << 8) | frame[1]
    if size == 1:
        stats.heartbeats += 1
    else:
        stats.add_error(EMPTY_FRAME)
    return -1


def _frame_tail(
    stats: DecodeStats, announced: int, whole: int, offset: int, size: int, truncated: bool
) -> None:
    """Counts what was wrong with the end of a frame (the cold path, kept out of the loop)."""
    if truncated:
        stats.add_error(TRUNCATED_FRAME)
        stats.add_error(TRUNCATED_PACKETS, announced - whole)
    elif offset < size:
        stats.add_error(TRAILING_BYTES)


def split_frame(frame: Frame, stats: DecodeStats | None = None) -> list[bytes]:
    """The packets of a binary frame, as ``bytes``, without decoding them.

    For the ingestor, which publishes Kite's own packet bytes (see ``core.tick_envelope``)
    and needs only the token of each, not a Tick. Counts frames, heartbeats, whole packets
    and frame-level errors; the packets' own validity is counted by :func:`decode_packet`.
    """
    if stats is None:
        stats = DecodeStats()
    announced = _frame_header(frame, stats)
    if announced <= 0:
        if announced == 0 and len(frame) > 2:
            stats.add_error(TRAILING_BYTES)
        return []
    data = frame if isinstance(frame, bytes) else bytes(frame)
    size = len(data)
    packets: list[bytes] = []
    offset = 2
    truncated = False
    for _ in range(announced):
        body = offset + 2
        if body > size:
            truncated = True
            break
        end = body + ((data[offset] << 8) | data[offset + 1])
        if end > size:
            truncated = True
            break
        packets.append(data[body:end])
        offset = end
    stats.packets += len(packets)
    if truncated or offset < size:
        _frame_tail(stats, announced, len(packets), offset, size, truncated)
    return packets


def decode_packet(packet: Frame, stats: DecodeStats | None = None) -> Tick | None:
    """One packet (as carried by the ``ticks`` topic) to a Tick; ``None`` if unknown.

    Counts ``ticks`` or an ``unknown_length`` error; ``packets`` is counted where packets
    are found, by :func:`split_frame` (so split + decode keeps the stats invariant).
    """
    decoder = _DECODERS.get(len(packet))
    if decoder is None:
        if stats is not None:
            stats.add_error(UNKNOWN_LENGTH)
        return None
    if stats is not None:
        stats.ticks += 1
    return decoder(packet, 0)


def packet_token(packet: Frame, stats: DecodeStats | None = None) -> int | None:
    """The instrument token of a packet of known length, without decoding it.

    For the ingestor, which only needs the Kafka key: it validates and counts exactly like
    :func:`decode_packet` (so the stats invariant holds) at a fraction of the cost of
    building a Tick (no depth objects).
    """
    if len(packet) not in PACKET_LENGTHS:
        if stats is not None:
            stats.add_error(UNKNOWN_LENGTH)
        return None
    if stats is not None:
        stats.ticks += 1
    return (packet[0] << 24) | (packet[1] << 16) | (packet[2] << 8) | packet[3]


def decode_frame(frame: Frame, stats: DecodeStats | None = None) -> list[Tick]:
    """Every tick of a binary WebSocket frame, in wire order.

    A heartbeat gives ``[]``. Never raises: a count or length running past the end keeps
    the whole packets before it; unknown packet lengths are skipped; all of it is counted
    in ``stats``. This is :func:`split_frame` and :func:`decode_packet` fused, decoding in
    place in the frame, because it runs once per packet of the whole market.
    """
    if stats is None:
        stats = DecodeStats()
    size = len(frame)
    if size < 2:
        _frame_header(frame, stats)  # a heartbeat or an empty frame: counted there
        return []
    stats.frames += 1
    announced = (frame[0] << 8) | frame[1]
    ticks: list[Tick] = []
    unknown = 0
    offset = 2
    truncated = False
    for _ in range(announced):
        body = offset + 2
        if body > size:
            truncated = True
            break
        length = (frame[offset] << 8) | frame[offset + 1]
        end = body + length
        if end > size:
            truncated = True
            break
        if length == FULL_LENGTH:  # most packets: no dict look-up, a monomorphic call site
            ticks.append(_decode_full(frame, body))
        else:
            decoder = _DECODERS.get(length)
            if decoder is None:
                unknown += 1
            else:
                ticks.append(decoder(frame, body))
        offset = end
    decoded = len(ticks)
    stats.ticks += decoded
    stats.packets += decoded + unknown
    if unknown:
        stats.add_error(UNKNOWN_LENGTH, unknown)
    if truncated or offset < size:
        _frame_tail(stats, announced, decoded + unknown, offset, size, truncated)
    return ticks


# --- encoding (simulator, tests) ------------------------------------------------------------


def _raw_price(price: float | None, divisor: float) -> int:
    return 0 if price is None else round(price * divisor)


def _depth_wire(depth: Depth | None, divisor: float) -> bytes:
    """The 120 depth bytes of a full packet: a decoded tick's own, with no levels built."""
    if depth is None:
        return _NO_DEPTH
    if depth.divisor == divisor:
        wire = depth.wire
        if len(wire) != DEPTH_WIRE_LENGTH:  # struct would pad or cut it silently
            raise ValueError(f"depth has {len(wire)} bytes, expected {DEPTH_WIRE_LENGTH}")
        return wire
    # Built with another divisor than the token's segment has: re-express in this one.
    return Depth.from_levels(depth.bids, depth.asks, divisor).wire


def encode_packet(tick: Tick, mode: Mode | None = None) -> bytes:
    """The exact packet Kite sends for ``tick`` in ``mode`` (default: ``tick.mode``).

    The layout follows the token's segment, as on the wire: indices (segment 9) get the
    8/28/32-byte layouts, everything else 8/44/184. Prices are multiplied by the segment's
    divisor and rounded; fields that are ``None`` are sent as 0, a missing depth as zeros
    (a :class:`core.tick.Depth` is sent as its wire bytes, without building its levels).
    The index net change (offset 24) is ``last - close`` in wire units. Raises
    ``ValueError`` for an unknown mode or a value that does not fit its field.
    """
    mode = tick.mode if mode is None else mode
    token = tick.instrument_token
    segment = token & 0xFF
    div = price_divisor(segment)
    last = _raw_price(tick.last_price, div)
    try:
        if mode == "ltp":
            return _LTP.pack(token, last)
        if mode not in ("quote", "full"):
            raise ValueError(f"unknown mode {mode!r}; expected one of {sorted(MODES)}")
        open_, high, low, close = (
            _raw_price(price, div) for price in (tick.open, tick.high, tick.low, tick.close)
        )
        if segment == SEGMENT_INDICES:
            if mode == "quote":
                return _INDEX_QUOTE.pack(token, last, high, low, open_, close, last - close)
            return _INDEX_FULL.pack(
                token, last, high, low, open_, close, last - close, tick.exchange_timestamp or 0
            )
        quote = (
            token,
            last,
            tick.last_traded_quantity or 0,
            _raw_price(tick.average_traded_price, div),
            tick.volume_traded or 0,
            tick.total_buy_quantity or 0,
            tick.total_sell_quantity or 0,
            open_,
            high,
            low,
            close,
        )
        if mode == "quote":
            return _QUOTE.pack(*quote)
        return _FULL_LAZY.pack(
            *quote,
            tick.last_trade_time or 0,
            tick.oi or 0,
            tick.oi_day_high or 0,
            tick.oi_day_low or 0,
            tick.exchange_timestamp or 0,
            _depth_wire(tick.depth, div),
        )
    except struct.error as exc:
        raise ValueError(f"tick of token {token} does not fit a {mode} packet: {exc}") from exc


def encode_frame(packets: Sequence[bytes]) -> bytes:
    """A binary frame carrying ``packets`` (count and lengths as uint16, big-endian)."""
    if len(packets) > 0xFFFF:
        raise ValueError(f"{len(packets)} packets do not fit one frame (max 65535)")
    parts = [_U16.pack(len(packets))]
    for packet in packets:
        if len(packet) > 0xFFFF:
            raise ValueError(f"a packet of {len(packet)} bytes does not fit a frame")
        parts.append(_U16.pack(len(packet)))
        parts.append(bytes(packet))
    return b"".join(parts)


def encode_ticks(ticks: Iterable[Tick], mode: Mode | None = None) -> bytes:
    """One frame of ``ticks``, each in ``mode`` or its own mode: the simulator's send."""
    return encode_frame([encode_packet(tick, mode) for tick in ticks])


# --- text messages ----------------------------------------------------------------------------

#: TextMessage.type for a text frame that is not a JSON object with a string "type".
MESSAGE_INVALID: Final = "invalid"


@dataclass(frozen=True, slots=True)
class TextMessage:
    """A server text frame: ``order`` postback, ``error``, ``message`` or ``invalid``."""

    type: str
    #: The message's "data"; for an invalid message, the text itself (for the log).
    data: Any


def _loads(text: str | bytes) -> Any:
    """json.loads that reports failure as a sentinel instead of raising.

    Deeply nested input raises RecursionError, not ValueError, so both are caught.
    """
    try:
        return json.loads(text)
    except (ValueError, TypeError, RecursionError):
        return _INVALID


_INVALID = object()


def parse_text_message(text: str | bytes) -> TextMessage:
    """A server text frame as type and data; never raises (non-JSON text is ``invalid``)."""
    obj = _loads(text)
    if isinstance(obj, dict) and isinstance(obj.get("type"), str):
        return TextMessage(obj["type"], obj.get("data"))
    if obj is _INVALID or not isinstance(obj, dict):
        return TextMessage(MESSAGE_INVALID, text)
    return TextMessage(MESSAGE_INVALID, obj)


# --- client -> server messages ------------------------------------------------------------------

ACTION_SUBSCRIBE: Final = "subscribe"
ACTION_UNSUBSCRIBE: Final = "unsubscribe"
ACTION_MODE: Final = "mode"
Action = Literal["subscribe", "unsubscribe", "mode"]

_MAX_TOKEN = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class ClientMessage:
    """A client request as the (simulated) server understands it."""

    action: Action
    tokens: tuple[int, ...]
    #: Only for ``mode`` messages.
    mode: Mode | None = None


def _token_list(tokens: Iterable[int]) -> list[int]:
    """Tokens as ints, so they serialise as JSON numbers.

    The server silently ignores string tokens (the subscription just never ticks), so a
    string here is refused loudly instead of being sent.
    """
    result = []
    for token in tokens:
        if isinstance(token, bool | str | bytes):
            raise TypeError(f"instrument tokens must be integers, got {token!r}")
        value = operator.index(token)
        if not 0 <= value <= _MAX_TOKEN:
            raise ValueError(f"instrument token {value} is out of range")
        result.append(value)
    return result


def subscribe_message(tokens: Iterable[int]) -> str:
    """``{"a": "subscribe", "v": [tokens]}`` with numeric tokens."""
    return json.dumps({"a": ACTION_SUBSCRIBE, "v": _token_list(tokens)})


def unsubscribe_message(tokens: Iterable[int]) -> str:
    """``{"a": "unsubscribe", "v": [tokens]}`` with numeric tokens."""
    return json.dumps({"a": ACTION_UNSUBSCRIBE, "v": _token_list(tokens)})


def mode_message(mode: Mode, tokens: Iterable[int]) -> str:
    """``{"a": "mode", "v": [mode, [tokens]]}``; raises ValueError for an unknown mode."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {sorted(MODES)}")
    return json.dumps({"a": ACTION_MODE, "v": [mode, _token_list(tokens)]})


def _wire_tokens(values: list[Any]) -> tuple[int, ...]:
    """The values a server treats as tokens: JSON integers in the uint32 range.

    Strings, booleans, fractions and nested values are dropped, as the real server
    effectively does (a string token gets nothing but heartbeats).
    """
    tokens = []
    for value in values:
        if isinstance(value, bool):
            continue
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int) and 0 <= value <= _MAX_TOKEN:
            tokens.append(value)
    return tuple(tokens)


def parse_client_message(text: str | bytes) -> ClientMessage | None:
    """A client's JSON request, or ``None`` if it is not a valid one (never raises)."""
    obj = _loads(text)
    if not isinstance(obj, dict):
        return None
    action, value = obj.get("a"), obj.get("v")
    if action in (ACTION_SUBSCRIBE, ACTION_UNSUBSCRIBE) and isinstance(value, list):
        return ClientMessage(action, _wire_tokens(value))
    if (
        action == ACTION_MODE
        and isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and value[0] in MODES
        and isinstance(value[1], list)
    ):
        return ClientMessage(ACTION_MODE, _wire_tokens(value[1]), cast(Mode, value[0]))
    return None
