"""core.tick.Depth: the lazily built market depth of full packets, and its wire round trip."""

from __future__ import annotations

import copy
import pickle
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import core.tick as tick_module
from core.kite_protocol import decode_frame, decode_packet, encode_frame, encode_packet
from core.tick import DEPTH_RAW_LENGTH, DEPTH_WIRE_LENGTH, Depth, DepthLevel, Tick, price_divisor

NFO_TOKEN = (52219 << 8) | 2
CDS_TOKEN = (1234 << 8) | 3

BIDS = (
    DepthLevel(75, 105.45, 3),
    DepthLevel(150, 105.4, 16),
    DepthLevel(300, 105.35, 1),
    DepthLevel(0, 0.0, 0),
    DepthLevel(65535, 0.01, 65535),
)
ASKS = (
    DepthLevel(225, 105.55, 2),
    DepthLevel(75, 105.6, 1),
    DepthLevel(1, 105.65, 1),
    DepthLevel(2, 105.7, 1),
    DepthLevel(3, 105.75, 1),
)
RAW = (
    75, 10545, 3, 150, 10540, 16, 300, 10535, 1, 0, 0, 0, 65535, 1, 65535,
    225, 10555, 2, 75, 10560, 1, 1, 10565, 1, 2, 10570, 1, 3, 10575, 1,
)  # fmt: skip


def wire_of(raw: tuple[int, ...], padding: bytes = b"\x00\x00") -> bytes:
    """The 120 depth bytes written by hand: int32 qty, int32 price, uint16 orders, pad."""
    return b"".join(struct.pack(">IiH", *raw[i : i + 3]) + padding for i in range(0, len(raw), 3))


def full_tick(depth: Depth | None, token: int = NFO_TOKEN) -> Tick:
    return Tick(
        token, "full", True, 105.5, 75, 104.0, 1000, 1500, 1200, 100.0, 107.0, 99.0, 101.0,
        (105.5 - 101.0) * 100.0 / 101.0, 1704087000, 0, 0, 0, 1704087005, depth,
    )  # fmt: skip


def test_layout_constants() -> None:
    assert DEPTH_WIRE_LENGTH == 120 and DEPTH_RAW_LENGTH == 30
    assert len(RAW) == DEPTH_RAW_LENGTH


def test_levels_are_built_once_per_side_on_first_read(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[tuple[int, ...]] = []
    real = tick_module._levels

    def counting(raw: tuple[int, ...], divisor: float) -> tuple[DepthLevel, ...]:
        built.append(raw)
        return real(raw, divisor)

    monkeypatch.setattr(tick_module, "_levels", counting)
    depth = Depth(wire_of(RAW), 100)
    assert built == []  # constructing (what the decoder does) builds nothing
    assert depth.bids == BIDS
    assert depth.bids is depth.bids
    assert len(built) == 1  # the asks are still not built
    assert depth.asks == ASKS
    assert depth.asks is depth.asks
    assert len(built) == 2
    tick = full_tick(depth)
    assert tick.bids is depth.bids and tick.asks is depth.asks
    assert len(built) == 2


def test_decoding_and_re_encoding_build_no_levels(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(raw: tuple[int, ...], divisor: float) -> tuple[DepthLevel, ...]:
        raise AssertionError("levels built")

    packet = encode_packet(full_tick(Depth.from_levels(BIDS, ASKS, 100.0)))
    monkeypatch.setattr(tick_module, "_levels", fail)
    ticks = decode_frame(encode_frame([packet] * 3))
    assert [encode_packet(t) for t in ticks] == [packet] * 3


def test_raw_and_wire() -> None:
    wire = wire_of(RAW)
    depth = Depth(wire, 100)
    assert depth.wire is wire and depth.divisor == 100
    assert depth.raw == RAW
    assert Depth.from_raw(RAW, 100).wire == wire
    assert Depth.from_levels(BIDS, ASKS, 100.0).raw == RAW
    assert Depth.from_raw(list(RAW), 100.0) == depth  # any iterable of ints
    with pytest.raises(ValueError, match="30"):
        Depth.from_raw(RAW[:-1], 100.0)
    with pytest.raises(ValueError, match="fit"):
        Depth.from_raw((-1, *RAW[1:]), 100.0)  # quantities are unsigned


def test_prices_are_signed_and_divided_like_every_other_price() -> None:
    raw = (1, -288400, 1) + (0,) * 27
    assert Depth.from_raw(raw, 100).bids[0] == DepthLevel(1, -2884.0, 1)
    cds = Depth.from_raw((5, 831234567, 2) + (0,) * 27, price_divisor(3))
    assert cds.bids[0].price == 83.1234567


def test_from_levels_pads_and_rounds_like_the_wire() -> None:
    depth = Depth.from_levels([DepthLevel(10, 1.25, 2)], (), 100.0)
    assert depth.bids == (DepthLevel(10, 1.25, 2),) + (DepthLevel(0, 0.0, 0),) * 4
    assert depth.asks == (DepthLevel(0, 0.0, 0),) * 5
    assert Depth.from_levels([(3, 0.1 + 0.2, 1)], (), 100.0).bids[0].price == 0.3  # type: ignore[list-item]
    with pytest.raises(ValueError, match="asks has 6 levels"):
        Depth.from_levels((), [DepthLevel(1, 1.0, 1)] * 6, 100.0)


def test_equality_and_hash() -> None:
    a = Depth.from_levels(BIDS, ASKS, 100.0)
    b = Depth(wire_of(RAW), 100)
    assert a == b and hash(a) == hash(b)
    # Same levels through other bytes: padding is not part of the value, nor is the divisor.
    c = Depth(wire_of(RAW, padding=b"\xde\xad"), 100)
    d = Depth.from_levels(BIDS, ASKS, 10_000.0)
    assert a == c == d and hash(a) == hash(c) == hash(d)
    assert c.wire != a.wire and d.raw != a.raw
    assert a != Depth.from_levels(BIDS, ASKS[:4], 100.0)
    assert a != Depth.from_levels(ASKS, BIDS, 100.0)
    assert a != Depth(wire_of(RAW), 1000)  # the same ints in another unit: 10.545, ...
    assert a != RAW and a != (BIDS, ASKS)
    assert full_tick(a) == full_tick(c) and full_tick(a) != full_tick(None)


def test_repr_shows_the_levels() -> None:
    text = repr(Depth.from_levels(BIDS, ASKS, 100.0))
    assert text.startswith("Depth(bids=(DepthLevel(quantity=75, price=105.45, orders=3),")
    assert "asks=(DepthLevel(quantity=225, price=105.55, orders=2)," in text
    assert "depth=Depth(bids=" in repr(full_tick(Depth.from_levels(BIDS, ASKS, 100.0)))


def test_tick_without_depth_has_no_levels() -> None:
    tick = Tick(NFO_TOKEN, "quote", True, 1.0)
    assert tick.depth is None and tick.bids == () and tick.asks == ()


def test_from_levels_round_trip_through_the_wire() -> None:
    tick = full_tick(Depth.from_levels(BIDS[:2], ASKS[:1], price_divisor(2)))
    decoded = decode_packet(encode_packet(tick))
    assert decoded == tick
    assert decoded is not None and decoded.bids[:2] == BIDS[:2] and len(decoded.bids) == 5


def test_re_encoding_keeps_the_wire_bytes_padding_included() -> None:
    packet = encode_packet(full_tick(None))[:64] + wire_of(RAW, padding=b"\xff\x01")
    tick = decode_packet(packet)
    assert tick is not None and tick.bids == BIDS
    assert encode_packet(tick) == packet


def test_depth_with_another_divisor_is_re_expressed_in_the_segment_unit() -> None:
    """A producer that passes the wrong divisor still gets the right prices on the wire."""
    levels = [DepthLevel(5, 83.1234567, 2)]
    tick = full_tick(Depth.from_levels(levels, (), 100.0), token=CDS_TOKEN)  # CDS is 1e7
    decoded = decode_packet(encode_packet(tick))
    assert decoded is not None and decoded.bids[0] == DepthLevel(5, 83.12, 2)  # 100 rounded
    tick = full_tick(Depth.from_levels(levels, (), price_divisor(3)), token=CDS_TOKEN)
    decoded = decode_packet(encode_packet(tick))
    assert decoded is not None and decoded.bids[0] == levels[0]


def test_copy_and_pickle() -> None:
    depth = Depth(wire_of(RAW), 100)
    assert copy.copy(depth) == depth and copy.deepcopy(depth) == depth
    assert pickle.loads(pickle.dumps(depth)) == depth
    _ = depth.bids  # a built side travels too
    again = pickle.loads(pickle.dumps(full_tick(depth)))
    assert again == full_tick(depth) and again.bids == BIDS


_INT32 = st.integers(-(2**31), 2**31 - 1)
_UINT32 = st.integers(0, 2**32 - 1)
_LEVEL = st.tuples(_UINT32, _INT32, st.integers(0, 65535))


@settings(max_examples=200, deadline=None)
@given(
    levels=st.lists(_LEVEL, min_size=10, max_size=10),
    segment=st.sampled_from([1, 2, 3, 4, 5, 6, 7, 8, 12]),
)
def test_raw_levels_raw_round_trip(levels: list[tuple[int, int, int]], segment: int) -> None:
    """Any wire depth survives levels (price / divisor) and back (round(price * divisor))."""
    raw = tuple(v for level in levels for v in level)
    divisor = price_divisor(segment)
    depth = Depth.from_raw(raw, divisor)
    again = Depth.from_levels(depth.bids, depth.asks, divisor)
    assert again.raw == raw and again.wire == depth.wire and again == depth
