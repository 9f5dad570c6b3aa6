"""The ``tick:{token}`` hash: how a decoded tick is laid out for Redis readers.

Every field of the schema is always written (empty string when the packet kind does not
carry it), so a quote-mode tick replaces a previous full-mode tick's depth instead of
leaving stale best bid/ask behind, and a reader never needs to check for missing fields.
"""

from __future__ import annotations

from collections.abc import Mapping

from core.tick import SEGMENT_NAMES, Tick
from core.timeutil import iso_from_epoch, iso_from_epoch_ms

TICK_FIELDS: tuple[str, ...] = (
    "token",
    "symbol",
    "exchange",
    "mode",
    "last_price",
    "last_traded_quantity",
    "average_traded_price",
    "volume_traded",
    "total_buy_quantity",
    "total_sell_quantity",
    "open",
    "high",
    "low",
    "close",
    "change",
    "oi",
    "oi_day_high",
    "oi_day_low",
    "best_bid",
    "best_bid_qty",
    "best_ask",
    "best_ask_qty",
    "last_trade_time",
    "exchange_timestamp",
    "received_at",
)


def _text(value: float | int | None) -> str:
    return "" if value is None else str(value)


def _time(epoch_s: int | None) -> str:
    return "" if epoch_s is None else iso_from_epoch(epoch_s)


def tick_values(
    tick: Tick,
    received_at_ms: int | None,
    symbol: str = "",
    exchange: str = "",
) -> tuple[str, ...]:
    """The hash's values in :data:`TICK_FIELDS` order; ``exchange`` defaults to the
    segment's name."""
    depth = tick.depth
    if depth is None:
        bid_qty = bid = ask_qty = ask = ""
    else:
        top = depth.top()
        bid_qty, bid, ask_qty, ask = str(top[0]), str(top[1]), str(top[2]), str(top[3])
    return (
        str(tick.instrument_token),
        symbol,
        exchange or SEGMENT_NAMES.get(tick.segment, ""),
        tick.mode,
        _text(tick.last_price),
        _text(tick.last_traded_quantity),
        _text(tick.average_traded_price),
        _text(tick.volume_traded),
        _text(tick.total_buy_quantity),
        _text(tick.total_sell_quantity),
        _text(tick.open),
        _text(tick.high),
        _text(tick.low),
        _text(tick.close),
        _text(tick.change),
        _text(tick.oi),
        _text(tick.oi_day_high),
        _text(tick.oi_day_low),
        bid,
        bid_qty,
        ask,
        ask_qty,
        _time(tick.last_trade_time),
        _time(tick.exchange_timestamp),
        "" if received_at_ms is None else iso_from_epoch_ms(received_at_ms),
    )


def tick_hash(
    tick: Tick,
    received_at_ms: int | None,
    symbol: str = "",
    exchange: str = "",
) -> dict[str, str]:
    """The hash fields for one tick; ``exchange`` defaults to the segment's name."""
    return dict(zip(TICK_FIELDS, tick_values(tick, received_at_ms, symbol, exchange), strict=True))


_HSET_HEAD = b"*%d\r\n$4\r\nHSET\r\n" % (2 + 2 * len(TICK_FIELDS))
_FIELD_NAMES = [b"$%d\r\n%s\r\n" % (len(f), f.encode()) for f in TICK_FIELDS]


def _bulk(text: str) -> bytes:
    data = text.encode()
    return b"$%d\r\n%s\r\n" % (len(data), data)


def pack_hset(key: str, fields: Mapping[str, str]) -> bytes:
    """``HSET key field value ...`` in RESP, for hashes written beside the ticks (Greeks,
    regime) in the same round trip."""
    parts = [b"*%d\r\n$4\r\nHSET\r\n" % (2 + 2 * len(fields)), _bulk(key)]
    for name, value in fields.items():
        parts.append(_bulk(name))
        parts.append(_bulk(value))
    return b"".join(parts)


def pack_expire(key: str, ttl: int) -> bytes:
    """``EXPIRE key ttl`` in RESP."""
    return b"*3\r\n$6\r\nEXPIRE\r\n" + _bulk(key) + _bulk(str(ttl))


def pack_tick_hset(key: str, values: tuple[str, ...]) -> bytes:
    """``HSET key field value ...`` for one tick, in the Redis wire protocol (RESP).

    Written by hand because this is the tick hop's per-tick cost: redis-py's general
    packer type-checks and encodes each of the 51 arguments separately (about two thirds
    of the mirror's time in a profile of the worker), while here the field names are
    pre-encoded and each value is encoded once."""
    parts = [_HSET_HEAD, _bulk(key)]
    for name, value in zip(_FIELD_NAMES, values, strict=True):
        data = value.encode()
        parts.append(name)
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)
