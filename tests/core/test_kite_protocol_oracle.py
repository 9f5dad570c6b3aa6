"""Differential test: our decoder against the official client's ``KiteTicker._parse_binary``.

The frames are generated here from the byte layout alone (``struct`` format strings of this
file, not the module's), with a fixed seed, covering every packet kind in every segment
where the kind exists (index layouts for segment 9, tradable layouts for 1..8 and 12, LTP
for all), multi-packet frames, and the extremes of every field.

Allowed differences, each one deliberate (``as_official`` below maps our Tick to the
official shape, and nothing else):

* Shape: the official client nests ``ohlc`` and ``depth`` in dicts and has no key for a
  field a packet kind lacks; ours is a flat Tick with ``None`` for those fields.
* Times: the official client gives naive host-local ``datetime.fromtimestamp(epoch)``, and
  turns 0 into the 1970 epoch; we keep epoch seconds and turn 0 into ``None``. We compare
  by rebuilding the official value from ours (``None`` -> ``fromtimestamp(0)``).
* ``change`` when close is 0: official int ``0``, ours ``0.0`` (equal as numbers).
* Prices: we read them as signed int32 (the protocol reference), the official client as
  unsigned. They agree on 0..2**31-1, which is what is generated here; above that (a
  negative price on the wire) they differ on purpose: see ``test_negative_price_deviation``.
* NCO (segment 12): both use a 10,000 divisor (core.tick follows the official client).

Not a difference: quantities, volumes, OI and times are unsigned in both, and depth orders
are read as uint16 in both (the official client once read 4 bytes and got 1048576).
"""

from __future__ import annotations

import random
import struct
from datetime import datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kiteconnect import KiteTicker

from core.kite_protocol import (
    TRAILING_BYTES,
    TRUNCATED_FRAME,
    TRUNCATED_PACKETS,
    UNKNOWN_LENGTH,
    DecodeStats,
    decode_frame,
    decode_packet,
    split_frame,
)
from core.tick import Tick

# A bare instance: _parse_binary needs only class attributes, and __init__ would set up
# a Twisted factory we do not want.
OFFICIAL = KiteTicker.__new__(KiteTicker)

SEED = 20240101
FRAMES = 10_000

INDEX_SEGMENT = 9
TRADABLE_SEGMENTS = (1, 2, 3, 4, 5, 6, 7, 8, 12)
ALL_SEGMENTS = (*TRADABLE_SEGMENTS, INDEX_SEGMENT)

U32_EXTREMES = (0, 1, 2**31 - 1, 2**31, 2**31 + 1, 2**32 - 1)
PRICE_EXTREMES = (0, 1, 2**31 - 1)
TIME_EXTREMES = (0, 1, 2**31 - 1, 2**31, 2**32 - 1)


class Gen:
    """Field values: mostly realistic, about one in five at an extreme of its type."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def token(self, segment: int) -> int:
        return (self.rng.randrange(2**24) << 8) | segment

    def u32(self) -> int:
        rng = self.rng
        if rng.random() < 0.2:
            return rng.choice(U32_EXTREMES)
        return rng.randrange(10**7) if rng.random() < 0.7 else rng.randrange(2**32)

    def price(self) -> int:
        rng = self.rng
        if rng.random() < 0.2:
            return rng.choice(PRICE_EXTREMES)
        return rng.randrange(100, 10**7) if rng.random() < 0.8 else rng.randrange(2**31)

    def stamp(self) -> int:
        rng = self.rng
        if rng.random() < 0.2:
            return rng.choice(TIME_EXTREMES)
        return rng.randrange(1_600_000_000, 1_800_000_000)

    def packet(self, length: int) -> bytes:
        rng = self.rng
        if length == 8:
            return struct.pack(">II", self.token(rng.choice(ALL_SEGMENTS)), self.price())
        if length in (28, 32):
            head = [self.token(INDEX_SEGMENT)] + [self.price() for _ in range(5)]
            packet = struct.pack(">6Ii", *head, rng.randrange(-(2**31), 2**31))
            return packet + struct.pack(">I", self.stamp()) if length == 32 else packet
        token = self.token(rng.choice(TRADABLE_SEGMENTS))
        quote = struct.pack(
            ">11I", token, self.price(), self.u32(), self.price(), self.u32(), self.u32(),
            self.u32(), self.price(), self.price(), self.price(), self.price(),
        )  # fmt: skip
        if length == 44:
            return quote
        full = quote + struct.pack(
            ">5I", self.stamp(), self.u32(), self.u32(), self.u32(), self.stamp()
        )
        for _ in range(10):
            orders = rng.choice((0, 1, 65535)) if rng.random() < 0.2 else rng.randrange(500)
            padding = rng.randbytes(2)  # both parsers must ignore it
            full += struct.pack(">IIH", self.u32(), self.price(), orders) + padding
        return full

    def frame(self) -> bytes:
        rng = self.rng
        if rng.random() < 0.01:
            return b"\x00"  # heartbeat
        count = rng.choice((1, 1, 2, 3, 5, 8))
        lengths = rng.choices((8, 28, 32, 44, 184), weights=(2, 1, 1, 2, 4), k=count)
        packets = [self.packet(n) for n in lengths]
        return struct.pack(">H", count) + b"".join(struct.pack(">H", len(p)) + p for p in packets)


def _official_time(epoch: int | None) -> datetime:
    # What the official client gives for our value: fromtimestamp, 0 (our None) -> 1970.
    return datetime.fromtimestamp(0 if epoch is None else epoch)


def as_official(tick: Tick, packet_length: int) -> dict[str, Any]:
    """Our Tick in the official client's shape for a packet of that length."""
    d: dict[str, Any] = {
        "tradable": tick.tradable,
        "mode": tick.mode,
        "instrument_token": tick.instrument_token,
        "last_price": tick.last_price,
    }
    if packet_length == 8:
        return d
    if packet_length in (44, 184):
        d["last_traded_quantity"] = tick.last_traded_quantity
        d["average_traded_price"] = tick.average_traded_price
        d["volume_traded"] = tick.volume_traded
        d["total_buy_quantity"] = tick.total_buy_quantity
        d["total_sell_quantity"] = tick.total_sell_quantity
    d["ohlc"] = {"open": tick.open, "high": tick.high, "low": tick.low, "close": tick.close}
    d["change"] = tick.change
    if packet_length == 32:
        d["exchange_timestamp"] = _official_time(tick.exchange_timestamp)
    if packet_length == 184:
        d["last_trade_time"] = _official_time(tick.last_trade_time)
        d["oi"] = tick.oi
        d["oi_day_high"] = tick.oi_day_high
        d["oi_day_low"] = tick.oi_day_low
        d["exchange_timestamp"] = _official_time(tick.exchange_timestamp)
        d["depth"] = {
            side: [
                {"quantity": lv.quantity, "price": lv.price, "orders": lv.orders} for lv in levels
            ]
            for side, levels in (("buy", tick.bids), ("sell", tick.asks))
        }
    return d


@pytest.fixture(scope="module")
def frames() -> list[bytes]:
    gen = Gen(SEED)
    return [gen.frame() for _ in range(FRAMES)]


def test_generated_frames_cover_every_kind_and_segment(frames: list[bytes]) -> None:
    seen: set[tuple[int, int]] = set()
    for frame in frames:
        for packet in split_frame(frame):
            seen.add((len(packet), packet[3]))
    expected = {(8, s) for s in ALL_SEGMENTS}
    expected |= {(n, INDEX_SEGMENT) for n in (28, 32)}
    expected |= {(n, s) for n in (44, 184) for s in TRADABLE_SEGMENTS}
    assert seen == expected
    assert sum(1 for f in frames if f[:2] > b"\x00\x01") > FRAMES // 2  # multi-packet


def test_matches_the_official_parser(frames: list[bytes]) -> None:
    stats = DecodeStats()
    compared = 0
    for frame in frames:
        ours = decode_frame(frame, stats)
        official = OFFICIAL._parse_binary(frame)
        lengths = [len(p) for p in split_frame(frame)]
        assert len(ours) == len(official) == len(lengths), frame.hex()
        for tick, theirs, length in zip(ours, official, lengths, strict=True):
            mine = as_official(tick, length)
            if mine != theirs:  # pragma: no cover - the message is the point
                diff = {k: (mine.get(k), theirs.get(k)) for k in mine.keys() | theirs.keys()}
                diff = {k: v for k, v in diff.items() if v[0] != v[1]}
                pytest.fail(f"packet {length} of frame {frame.hex()} differs: {diff}")
            compared += 1
    assert compared > 2 * FRAMES
    assert stats.error_count == 0
    assert stats.ticks == compared


def test_extremes_were_exercised(frames: list[bytes]) -> None:
    """Unsigned values above 2**31 and zero times really occur in the generated set."""
    ticks = [t for f in frames for t in decode_frame(f)]
    assert any(t.volume_traded is not None and t.volume_traded >= 2**31 for t in ticks)
    assert any(t.oi == 2**32 - 1 for t in ticks)
    assert any(t.mode == "full" and t.tradable and t.exchange_timestamp is None for t in ticks)
    assert any(level.orders == 65535 for t in ticks for level in t.bids)
    assert any(t.close == 0.0 and t.change == 0.0 for t in ticks if t.mode != "ltp")


def test_negative_price_deviation() -> None:
    """A price above 2**31 on the wire is negative for us (signed int32), huge for them."""
    packet = struct.pack(">Ii", (1 << 8) | 7, -288400)  # MCX, -2884.00
    frame = struct.pack(">HH", 1, 8) + packet
    assert decode_frame(frame)[0].last_price == -2884.0
    assert OFFICIAL._parse_binary(frame)[0]["last_price"] == (2**32 - 288400) / 100


def test_official_client_raises_where_we_count() -> None:
    """A frame cut inside a packet's token: official struct.error, ours a counted error."""
    frame = struct.pack(">HH", 1, 8) + b"\x00\x0b"
    with pytest.raises(struct.error):
        OFFICIAL._parse_binary(frame)
    stats = DecodeStats()
    assert decode_frame(frame, stats) == []
    assert stats.errors == {TRUNCATED_FRAME: 1, TRUNCATED_PACKETS: 1}


# --- robustness: any bytes are safe ----------------------------------------------------------


def _check_invariants(frame: bytes, ticks: list[Tick], stats: DecodeStats) -> None:
    assert stats.frames == 1
    assert stats.ticks == len(ticks)
    assert stats.packets == stats.ticks + stats.errors.get(UNKNOWN_LENGTH, 0)
    kinds = stats.heartbeats + stats.errors.get("empty_frame", 0)
    assert kinds == (1 if len(frame) < 2 else 0)
    assert not (stats.errors.get(TRUNCATED_FRAME) and stats.errors.get(TRAILING_BYTES))


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=1000))
def test_arbitrary_bytes_never_raise(frame: bytes) -> None:
    stats = DecodeStats()
    ticks = decode_frame(frame, stats)
    _check_invariants(frame, ticks, stats)


_packet_length = st.sampled_from([8, 28, 32, 44, 184]) | st.integers(0, 300)


@st.composite
def corrupt_frames(draw: st.DrawFn) -> tuple[bytes, int, int]:
    """A well-formed frame, then one corruption; returns it with the expected tick count
    and the expected number of whole packets."""
    lengths = draw(st.lists(_packet_length, max_size=8))
    packets = [draw(st.binary(min_size=n, max_size=n)) for n in lengths]
    body = b"".join(struct.pack(">H", len(p)) + p for p in packets)
    frame = struct.pack(">H", len(packets)) + body
    ends, offset = [], 2
    for p in packets:
        offset += 2 + len(p)
        ends.append(offset)
    how = draw(st.sampled_from(["none", "truncate", "append", "count"]))
    whole = lengths
    if how == "truncate":
        cut = draw(st.integers(2, len(frame)))
        frame = frame[:cut]
        whole = [n for n, end in zip(lengths, ends, strict=True) if end <= cut]
    elif how == "append":
        frame += draw(st.binary(min_size=1, max_size=50))
    elif how == "count":
        count = draw(st.integers(0, 0xFFFF))
        frame = struct.pack(">H", count) + body
        whole = lengths[:count]
    known = sum(1 for n in whole if n in (8, 28, 32, 44, 184))
    return frame, known, len(whole)


@settings(max_examples=300, deadline=None)
@given(corrupt_frames())
def test_structured_corrupt_frames(case: tuple[bytes, int, int]) -> None:
    frame, expected_ticks, expected_packets = case
    stats = DecodeStats()
    ticks = decode_frame(frame, stats)
    _check_invariants(frame, ticks, stats)
    assert len(ticks) == expected_ticks
    assert stats.packets == expected_packets
    # every decoded tick is exactly what its packet alone decodes to
    split = [decode_packet(p) for p in split_frame(frame)]
    assert ticks == [t for t in split if t is not None]
