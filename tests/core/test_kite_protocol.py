"""Unit tests of core.kite_protocol against hand-built packets.

The packets below are written byte by byte (hex literals, ``int.to_bytes``) from the layout
in ``shared/reference/kite-protocol.md``, and the expected values are worked out by hand,
so a mistake shared by our encoder and decoder cannot hide here.
"""

from __future__ import annotations

import json
import struct
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core import kite_protocol as kp
from core.kite_protocol import (
    EMPTY_FRAME,
    HEARTBEAT,
    MESSAGE_INVALID,
    TRAILING_BYTES,
    TRUNCATED_FRAME,
    TRUNCATED_PACKETS,
    UNKNOWN_LENGTH,
    ClientMessage,
    DecodeStats,
    TextMessage,
    decode_frame,
    decode_packet,
    encode_frame,
    encode_packet,
    encode_ticks,
    mode_message,
    parse_client_message,
    parse_text_message,
    split_frame,
    subscribe_message,
    unsubscribe_message,
)
from core.tick import Depth, DepthLevel, Mode, Tick, price_divisor


def be32(value: int) -> bytes:
    """Big-endian 4 bytes, two's complement for negatives (as the wire carries int32)."""
    return (value & 0xFFFFFFFF).to_bytes(4, "big")


def be16(value: int) -> bytes:
    return value.to_bytes(2, "big")


def frame_of(*packets: bytes) -> bytes:
    """A frame built by hand: uint16 count, then uint16 length + bytes per packet."""
    return be16(len(packets)) + b"".join(be16(len(p)) + p for p in packets)


# --- hand-built packets ----------------------------------------------------------------------

# RELIANCE (NSE, token 738561 = 0x000B4501, segment 1), LTP 2500.45.
LTP_RELIANCE = bytes.fromhex("000b4501 0003d0bd")

# NIFTY 50 (token 256265 = 0x0003E909, segment 9), index quote: last 21750.55, then
# high 21800.00, low 21600.10, open 21650.00, close 21700.00, net change 50.55.
INDEX_QUOTE_NIFTY = bytes.fromhex("0003e909 0021304f 002143a0 0020f58a 00210908 00211c90 000013bf")
# The same in full mode: + exchange timestamp 1704081600 (2024-01-01 09:30:00 IST).
INDEX_FULL_NIFTY = INDEX_QUOTE_NIFTY + bytes.fromhex("659238c0")

NFO_TOKEN = 13368066  # exchange token 52219 << 8 | segment 2 (NFO)

# Quote (44 bytes): last 105.50, last qty 75, avg 104.00, volume 0x80000000 (unsigned:
# 2147483648), buy qty 1500, sell qty 1200, open 100.00, high 107.00, low 99.00, close 101.00.
QUOTE_NFO = b"".join(
    be32(v) for v in (NFO_TOKEN, 10550, 75, 10400, 0x80000000, 1500, 1200, 10000, 10700, 9900)
) + be32(10100)


def depth_entry(quantity: int, price: int, orders: int) -> bytes:
    """int32 quantity, int32 price, int16 orders, 2 padding bytes."""
    return be32(quantity) + be32(price) + be16(orders) + b"\x00\x00"


BIDS_RAW = [(75, 10545, 3), (150, 10540, 16), (300, 10535, 1), (0, 0, 0), (65535, 1, 65535)]
ASKS_RAW = [(225, 10555, 2), (75, 10560, 1), (1, 10565, 1), (2, 10570, 1), (3, 10575, 1)]

# Full (184 bytes): the quote above, last trade 1704087000, OI 654321, OI day high 700000,
# OI day low 600000, exchange timestamp 1704087005, then the depth.
FULL_NFO = (
    QUOTE_NFO
    + b"".join(be32(v) for v in (1704087000, 654321, 700000, 600000, 1704087005))
    + b"".join(depth_entry(*e) for e in BIDS_RAW + ASKS_RAW)
)

EXPECTED_QUOTE_NFO = Tick(
    instrument_token=NFO_TOKEN,
    mode="quote",
    tradable=True,
    last_price=105.5,
    last_traded_quantity=75,
    average_traded_price=104.0,
    volume_traded=2147483648,
    total_buy_quantity=1500,
    total_sell_quantity=1200,
    open=100.0,
    high=107.0,
    low=99.0,
    close=101.0,
    change=(105.5 - 101.0) * 100 / 101.0,
)


def test_packet_lengths_match_the_reference() -> None:
    assert len(LTP_RELIANCE) == 8
    assert len(INDEX_QUOTE_NIFTY) == 28
    assert len(INDEX_FULL_NIFTY) == 32
    assert len(QUOTE_NFO) == 44
    assert len(FULL_NFO) == 184
    assert sorted(kp.PACKET_LENGTHS) == [8, 28, 32, 44, 184]


def test_ltp_packet() -> None:
    tick = decode_packet(LTP_RELIANCE)
    assert tick == Tick(instrument_token=738561, mode="ltp", tradable=True, last_price=2500.45)
    assert tick.segment == 1


def test_index_quote_orders_ohlc_as_high_low_open_close() -> None:
    tick = decode_packet(INDEX_QUOTE_NIFTY)
    assert tick is not None
    assert (tick.instrument_token, tick.mode, tick.tradable) == (256265, "quote", False)
    assert tick.last_price == 21750.55
    assert (tick.open, tick.high, tick.low, tick.close) == (21650.0, 21800.0, 21600.1, 21700.0)
    assert tick.change == pytest.approx(0.23294930875576)
    assert tick.exchange_timestamp is None
    assert tick.volume_traded is None and tick.bids == () and tick.asks == ()


def test_index_full_carries_the_exchange_timestamp() -> None:
    tick = decode_packet(INDEX_FULL_NIFTY)
    assert tick is not None
    assert tick.mode == "full" and not tick.tradable
    assert tick.exchange_timestamp == 1704081600
    assert (tick.open, tick.high, tick.low, tick.close) == (21650.0, 21800.0, 21600.1, 21700.0)
    assert tick.last_trade_time is None


def test_quote_packet_with_unsigned_volume() -> None:
    tick = decode_packet(QUOTE_NFO)
    assert tick == EXPECTED_QUOTE_NFO
    assert tick.volume_traded == 2_147_483_648  # not -2147483648


def test_full_packet() -> None:
    tick = decode_packet(FULL_NFO)
    assert tick == replace(
        EXPECTED_QUOTE_NFO,
        mode="full",
        last_trade_time=1704087000,
        oi=654321,
        oi_day_high=700000,
        oi_day_low=600000,
        exchange_timestamp=1704087005,
        depth=Depth.from_levels(
            (
                DepthLevel(75, 105.45, 3),
                DepthLevel(150, 105.40, 16),
                DepthLevel(300, 105.35, 1),
                DepthLevel(0, 0.0, 0),
                DepthLevel(65535, 0.01, 65535),
            ),
            (
                DepthLevel(225, 105.55, 2),
                DepthLevel(75, 105.60, 1),
                DepthLevel(1, 105.65, 1),
                DepthLevel(2, 105.70, 1),
                DepthLevel(3, 105.75, 1),
            ),
            100.0,
        ),
    )
    assert tick.bids[0] == DepthLevel(75, 105.45, 3) and tick.asks[4].price == 105.75
    assert tick.change == pytest.approx(4.455445544554456)


def test_depth_orders_are_16_bit() -> None:
    """Reading orders as 4 bytes would see 0x0010_0000 = 1048576 for 16 orders + padding."""
    tick = decode_packet(FULL_NFO)
    assert tick is not None
    assert tick.bids[1].orders == 16
    assert all(level.orders < 65536 for level in tick.bids + tick.asks)


def test_full_packet_depth_is_lazy_and_cached() -> None:
    """Decoding keeps the depth bytes; levels are built on first read, once per side."""
    tick = decode_packet(FULL_NFO)
    assert tick is not None and tick.depth is not None
    depth = tick.depth
    assert depth.wire == FULL_NFO[64:184] and depth.divisor == 100
    assert (depth._bids, depth._asks) == (None, None)  # nothing built by the decoder
    bids = tick.bids
    assert depth._bids is bids and depth._asks is None  # one side at a time
    assert tick.bids is bids and depth.bids is bids  # cached, not rebuilt
    asks = tick.asks
    assert depth.asks is asks and tick.asks is asks
    assert all(type(level) is DepthLevel for level in bids + asks)
    with pytest.raises(AttributeError):  # levels are immutable
        bids[0].quantity = 1  # type: ignore[misc]
    with pytest.raises(AttributeError):  # and Tick.bids is derived, not a field
        tick.bids = ()  # type: ignore[misc]


def test_zero_times_are_none() -> None:
    packet = bytearray(FULL_NFO)
    packet[44:48] = be32(0)  # last trade time
    packet[60:64] = be32(0)  # exchange timestamp
    tick = decode_packet(bytes(packet))
    assert tick is not None
    assert tick.last_trade_time is None and tick.exchange_timestamp is None


def test_unsigned_quantities_and_oi_at_the_extremes() -> None:
    packet = bytearray(FULL_NFO)
    for offset in (8, 16, 20, 24, 48, 52, 56):  # ltq, volume, buy, sell, oi, oi high, oi low
        packet[offset : offset + 4] = b"\xff\xff\xff\xff"
    tick = decode_packet(bytes(packet))
    assert tick is not None
    top = 0xFFFF_FFFF
    assert tick.last_traded_quantity == top and tick.volume_traded == top
    assert tick.total_buy_quantity == top and tick.total_sell_quantity == top
    assert (tick.oi, tick.oi_day_high, tick.oi_day_low) == (top, top, top)


def test_prices_are_signed() -> None:
    """A negative price (MCX crude, April 2020) must decode negative, not as ~42.9 million."""
    token = (4321 << 8) | 7  # MCX
    tick = decode_packet(be32(token) + be32(-288400))
    assert tick is not None and tick.last_price == -2884.0


def test_change_is_zero_when_close_is_zero() -> None:
    packet = bytearray(QUOTE_NFO)
    packet[40:44] = be32(0)
    tick = decode_packet(bytes(packet))
    assert tick is not None and tick.close == 0.0 and tick.change == 0.0


@pytest.mark.parametrize(
    ("segment", "raw", "price", "tradable"),
    [
        (1, 250045, 2500.45, True),  # NSE
        (2, 10550, 105.5, True),  # NFO
        (3, 831234567, 83.1234567, True),  # CDS: 1e7
        (4, 123456, 1234.56, True),  # BSE
        (5, 99, 0.99, True),  # BFO
        (6, 831234, 83.1234, True),  # BCD: 1e4
        (7, 6543210, 65432.1, True),  # MCX
        (8, 1, 0.01, True),  # MCXSX
        (9, 2175055, 21750.55, False),  # INDICES
        (12, 51234, 5.1234, True),  # NCO (NCDEX): 1e4, like the official client
    ],
)
def test_every_segment_and_divisor(segment: int, raw: int, price: float, tradable: bool) -> None:
    token = (1234 << 8) | segment
    tick = decode_packet(be32(token) + be32(raw))
    assert tick is not None
    assert tick.last_price == price
    assert tick.tradable is tradable
    # and back: the encoder multiplies by the same divisor
    assert encode_packet(tick, "ltp") == be32(token) + be32(raw)


# --- frames --------------------------------------------------------------------------------


def test_multi_packet_frame_keeps_wire_order() -> None:
    stats = DecodeStats()
    frame = frame_of(LTP_RELIANCE, FULL_NFO, INDEX_QUOTE_NIFTY)
    ticks = decode_frame(frame, stats)
    assert [(t.instrument_token, t.mode) for t in ticks] == [
        (738561, "ltp"),
        (NFO_TOKEN, "full"),
        (256265, "quote"),
    ]
    assert (stats.frames, stats.packets, stats.ticks, stats.errors) == (1, 3, 3, {})


def test_heartbeat() -> None:
    stats = DecodeStats()
    assert HEARTBEAT == b"\x00"
    assert decode_frame(HEARTBEAT, stats) == []
    assert decode_frame(b"\x7f", stats) == []  # any single byte
    assert (stats.frames, stats.heartbeats, stats.error_count) == (2, 2, 0)


def test_empty_frame_is_counted() -> None:
    stats = DecodeStats()
    assert decode_frame(b"", stats) == []
    assert stats.errors == {EMPTY_FRAME: 1} and stats.heartbeats == 0


def test_zero_packet_frame_is_fine() -> None:
    stats = DecodeStats()
    assert decode_frame(b"\x00\x00", stats) == []
    assert stats.errors == {} and stats.frames == 1


def test_truncated_frame_keeps_the_whole_packets() -> None:
    stats = DecodeStats()
    frame = frame_of(LTP_RELIANCE, FULL_NFO, QUOTE_NFO)[:-10]  # last packet cut short
    ticks = decode_frame(frame, stats)
    assert [t.mode for t in ticks] == ["ltp", "full"]
    assert stats.errors == {TRUNCATED_FRAME: 1, TRUNCATED_PACKETS: 1}
    assert stats.error_count == 1


@pytest.mark.parametrize(
    "frame",
    [
        b"\x00\x03",  # three packets announced, none present
        b"\x00\x01\x00",  # half a length header
        b"\x00\x01\x00\x08\x00\x0b\x45",  # an LTP packet cut inside its token
        b"\xff\xff" + be16(8) + LTP_RELIANCE,  # 65535 announced, one present
    ],
)
def test_count_or_length_past_the_end(frame: bytes) -> None:
    stats = DecodeStats()
    ticks = decode_frame(frame, stats)
    announced = int.from_bytes(frame[:2], "big")
    assert len(ticks) == stats.ticks <= 1
    assert stats.errors[TRUNCATED_FRAME] == 1
    assert stats.errors[TRUNCATED_PACKETS] == announced - len(ticks)


def test_over_long_frame_counts_trailing_bytes() -> None:
    stats = DecodeStats()
    ticks = decode_frame(frame_of(LTP_RELIANCE) + b"\x01\x02\x03", stats)
    assert len(ticks) == 1
    assert stats.errors == {TRAILING_BYTES: 1}
    stats = DecodeStats()
    assert decode_frame(b"\x00\x00garbage", stats) == []
    assert stats.errors == {TRAILING_BYTES: 1}


@pytest.mark.parametrize("length", [0, 3, 4, 12, 164, 185, 300])
def test_unknown_packet_length_is_skipped_and_counted(length: int) -> None:
    stats = DecodeStats()
    odd = bytes(range(256))[:length] if length <= 256 else b"\xaa" * length
    ticks = decode_frame(frame_of(LTP_RELIANCE, odd, QUOTE_NFO), stats)
    assert [t.mode for t in ticks] == ["ltp", "quote"]
    assert stats.errors == {UNKNOWN_LENGTH: 1}
    assert stats.packets == stats.ticks + stats.errors[UNKNOWN_LENGTH] == 3


def test_decode_packet_unknown_length() -> None:
    stats = DecodeStats()
    assert decode_packet(b"\x00" * 164, stats) is None
    assert decode_packet(b"", stats) is None
    assert stats.errors == {UNKNOWN_LENGTH: 2} and stats.ticks == 0


def test_split_frame_gives_packet_bytes_and_counts() -> None:
    stats = DecodeStats()
    frame = frame_of(LTP_RELIANCE, FULL_NFO, b"\x01\x02\x03") + b"\x00"
    packets = split_frame(frame, stats)
    assert packets == [LTP_RELIANCE, FULL_NFO, b"\x01\x02\x03"]
    assert all(type(p) is bytes for p in packets)
    assert stats.packets == 3 and stats.errors == {TRAILING_BYTES: 1}
    ticks = [decode_packet(p, stats) for p in packets]
    assert ticks[2] is None
    assert stats.packets == stats.ticks + stats.errors[UNKNOWN_LENGTH]
    assert split_frame(HEARTBEAT, stats) == [] and stats.heartbeats == 1


def test_packet_token_validates_and_counts_like_decode_packet() -> None:
    stats = DecodeStats()
    assert kp.packet_token(FULL_NFO, stats) == NFO_TOKEN
    assert kp.packet_token(memoryview(INDEX_QUOTE_NIFTY), stats) == 256265
    assert kp.packet_token(b"\x00" * 164, stats) is None
    assert stats.ticks == 2 and stats.errors == {UNKNOWN_LENGTH: 1}


def test_split_frame_truncated() -> None:
    stats = DecodeStats()
    assert split_frame(frame_of(LTP_RELIANCE, FULL_NFO)[:-1], stats) == [LTP_RELIANCE]
    assert stats.errors == {TRUNCATED_FRAME: 1, TRUNCATED_PACKETS: 1}


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview])
def test_any_buffer_type(wrap: type) -> None:
    frame = frame_of(INDEX_FULL_NIFTY, FULL_NFO)
    assert decode_frame(wrap(frame)) == decode_frame(frame)
    assert split_frame(wrap(frame)) == [INDEX_FULL_NIFTY, FULL_NFO]
    assert decode_packet(wrap(QUOTE_NFO)) == EXPECTED_QUOTE_NFO


def test_stats_merge_and_dict() -> None:
    a, b = DecodeStats(), DecodeStats()
    decode_frame(frame_of(LTP_RELIANCE, b"xx"), a)
    decode_frame(b"", b)
    decode_frame(HEARTBEAT, b)
    a.merge(b)
    assert a.as_dict() == {
        "frames": 3,
        "heartbeats": 1,
        "packets": 2,
        "ticks": 1,
        UNKNOWN_LENGTH: 1,
        EMPTY_FRAME: 1,
    }
    assert a.error_count == 2
    assert "frames" in repr(a)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_fused_and_split_paths_agree_on_any_bytes(frame: bytes) -> None:
    """decode_frame is split_frame + decode_packet fused; both must see the same frame."""
    fused, split = DecodeStats(), DecodeStats()
    ticks = decode_frame(frame, fused)
    packets = split_frame(frame, split)
    again = [t for t in (decode_packet(p, split) for p in packets) if t is not None]
    assert ticks == again
    assert fused.as_dict() == split.as_dict()


# --- encoding ------------------------------------------------------------------------------


def test_encoder_reproduces_the_hand_built_packets() -> None:
    for packet in (LTP_RELIANCE, QUOTE_NFO, FULL_NFO, INDEX_QUOTE_NIFTY, INDEX_FULL_NIFTY):
        tick = decode_packet(packet)
        assert tick is not None
        assert encode_packet(tick) == packet


def test_encoder_layout_follows_mode_and_segment() -> None:
    index = decode_packet(INDEX_FULL_NIFTY)
    tradable = decode_packet(FULL_NFO)
    assert index is not None and tradable is not None
    modes: tuple[Mode, ...] = ("ltp", "quote", "full")
    assert [len(encode_packet(index, m)) for m in modes] == [8, 28, 32]
    assert [len(encode_packet(tradable, m)) for m in modes] == [8, 44, 184]
    assert encode_packet(tradable, "quote") == QUOTE_NFO
    assert encode_packet(index, "quote") == INDEX_QUOTE_NIFTY


def test_encoder_fills_missing_fields_with_zero() -> None:
    tick = Tick(instrument_token=NFO_TOKEN, mode="full", tradable=True, last_price=1.5)
    packet = encode_packet(tick)
    assert packet[:8] == be32(NFO_TOKEN) + be32(150)
    assert packet[8:] == bytes(176)
    tick.depth = Depth.from_levels((DepthLevel(10, 1.25, 2),), (), price_divisor(2))
    assert encode_packet(tick)[64:76] == depth_entry(10, 125, 2)
    assert encode_packet(tick)[76:] == bytes(108)


def test_encoder_rounds_prices_to_the_tick_unit() -> None:
    tick = Tick(instrument_token=(5 << 8) | 3, mode="ltp", tradable=True, last_price=83.12345675)
    assert encode_packet(tick) == be32((5 << 8) | 3) + be32(831234568)  # CDS: 1e7, rounded
    tick = Tick(instrument_token=(5 << 8) | 1, mode="ltp", tradable=True, last_price=0.1 + 0.2)
    assert encode_packet(tick)[4:] == be32(30)


def test_encoder_refuses_what_the_wire_cannot_carry() -> None:
    tick = Tick(instrument_token=NFO_TOKEN, mode="full", tradable=True, last_price=1.0)
    with pytest.raises(ValueError, match="mode"):
        encode_packet(tick, "snap")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="5"):
        Depth.from_levels([DepthLevel(1, 1.0, 1)] * 6, (), 100.0)
    with pytest.raises(ValueError, match="fit"):
        Depth.from_levels([DepthLevel(2**32, 1.0, 1)], (), 100.0)
    with pytest.raises(ValueError, match="fit"):
        Depth.from_levels([DepthLevel(1, 1.0, 65536)], (), 100.0)
    tick.depth = Depth(b"short", 100.0)  # unchecked constructor: the encoder refuses it
    with pytest.raises(ValueError, match="120"):
        encode_packet(tick)
    tick.depth = None
    tick.volume_traded = 2**32
    with pytest.raises(ValueError, match="does not fit"):
        encode_packet(tick)
    with pytest.raises(ValueError):
        encode_frame([b"x" * 70000])


def test_encode_frame_layout_and_round_trip() -> None:
    frame = encode_frame([LTP_RELIANCE, FULL_NFO])
    assert frame == frame_of(LTP_RELIANCE, FULL_NFO)
    assert frame[:6] == b"\x00\x02\x00\x08\x00\x0b"
    assert encode_frame([]) == b"\x00\x00"
    ticks = decode_frame(frame)
    assert encode_ticks(ticks) == frame
    assert [len(p) for p in split_frame(encode_ticks(ticks, "quote"))] == [44, 44]


_WIRE_INT32 = st.integers(-(2**31), 2**31 - 1)
_WIRE_UINT32 = st.integers(0, 2**32 - 1)


@settings(max_examples=200, deadline=None)
@given(
    segment=st.sampled_from([1, 2, 3, 4, 5, 6, 7, 8, 12]),
    exchange_token=st.integers(0, 2**24 - 1),
    prices=st.lists(_WIRE_INT32, min_size=16, max_size=16),
    counts=st.lists(_WIRE_UINT32, min_size=20, max_size=20),
    orders=st.lists(st.integers(0, 65535), min_size=10, max_size=10),
)
def test_decode_then_encode_gives_the_same_bytes(
    segment: int, exchange_token: int, prices: list[int], counts: list[int], orders: list[int]
) -> None:
    """Round trip from the wire: every segment's divisor survives /div then *div, rounded."""
    token = (exchange_token << 8) | segment
    p, c = iter(prices), iter(counts)
    head = [token, next(p), next(c), next(p), next(c), next(c), next(c)] + [next(p) for _ in "ohlc"]
    head += [next(c) for _ in range(5)]
    depth = b"".join(depth_entry(next(c), next(p), n) for n in orders)
    packet = b"".join(be32(v) for v in head) + depth
    tick = decode_packet(packet)
    assert tick is not None
    assert encode_packet(tick) == packet
    assert encode_packet(tick, "quote") == packet[:44]
    assert encode_packet(tick, "ltp") == packet[:8]


# --- text messages ------------------------------------------------------------------------


def test_text_messages() -> None:
    order = parse_text_message('{"type": "order", "data": {"order_id": "1", "status": "OK"}}')
    assert order == TextMessage("order", {"order_id": "1", "status": "OK"})
    assert parse_text_message('{"type":"error","data":"bad token"}') == TextMessage(
        "error", "bad token"
    )
    assert parse_text_message(b'{"type":"message","data":"hi"}').type == "message"


@pytest.mark.parametrize(
    "text",
    ["", "not json", "{", "[1, 2]", "42", "null", '{"data": 1}', '{"type": 5}', "[" * 100_000],
)
def test_text_message_never_raises(text: str) -> None:
    message = parse_text_message(text)
    assert message.type == MESSAGE_INVALID


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200) | st.binary(max_size=200))
def test_text_parsers_never_raise(text: str | bytes) -> None:
    assert isinstance(parse_text_message(text), TextMessage)
    result = parse_client_message(text)
    assert result is None or isinstance(result, ClientMessage)


# --- client messages ----------------------------------------------------------------------


def test_subscribe_messages_have_numeric_tokens() -> None:
    assert json.loads(subscribe_message([256265, 738561])) == {
        "a": "subscribe",
        "v": [256265, 738561],
    }
    assert '"v": [256265]' in unsubscribe_message((256265,))
    assert json.loads(mode_message("full", [738561])) == {"a": "mode", "v": ["full", [738561]]}


def test_client_messages_refuse_bad_tokens_and_modes() -> None:
    with pytest.raises(TypeError):
        subscribe_message(["256265"])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        subscribe_message([True])
    with pytest.raises(ValueError):
        subscribe_message([-1])
    with pytest.raises(ValueError):
        mode_message("snap", [1])  # type: ignore[arg-type]


def test_parse_client_message_round_trip() -> None:
    assert parse_client_message(subscribe_message([1, 2])) == ClientMessage("subscribe", (1, 2))
    assert parse_client_message(unsubscribe_message([3])) == ClientMessage("unsubscribe", (3,))
    assert parse_client_message(mode_message("ltp", [4])) == ClientMessage("mode", (4,), "ltp")


def test_parse_client_message_drops_string_tokens() -> None:
    message = parse_client_message('{"a": "subscribe", "v": ["256265", 738561, true, 1.5, 2.0]}')
    assert message == ClientMessage("subscribe", (738561, 2))
    message = parse_client_message('{"a": "mode", "v": ["quote", ["1", -5, 2, 4294967296]]}')
    assert message == ClientMessage("mode", (2,), "quote")


@pytest.mark.parametrize(
    "text",
    [
        "nope",
        "[]",
        '{"a": "subscribe"}',
        '{"a": "subscribe", "v": 5}',
        '{"a": "launch", "v": [1]}',
        '{"a": "mode", "v": ["snap", [1]]}',
        '{"a": "mode", "v": ["full", 1]}',
        '{"a": "mode", "v": [[1], "full"]}',
    ],
)
def test_parse_client_message_invalid(text: str) -> None:
    assert parse_client_message(text) is None


def test_struct_layouts_have_the_reference_sizes() -> None:
    """The precompiled layouts are the reference's byte counts, with no native padding."""
    assert struct.calcsize(kp._FULL.format) == 184
    assert kp._FULL.format.startswith(">")
