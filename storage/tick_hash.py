"""The ``tick:{token}`` hash: how a decoded tick is laid out for Redis readers.

Every field of the schema is always written (empty string when the packet kind does not
carry it), so a quote-mode tick replaces a previous full-mode tick's depth instead of
leaving stale best bid/ask behind, and a reader never needs to check for missing fields.
"""

from __future__ import annotations

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


def tick_hash(
    tick: Tick,
    received_at_ms: int | None,
    symbol: str = "",
    exchange: str = "",
) -> dict[str, str]:
    """The hash fields for one tick; ``exchange`` defaults to the segment's name."""
    bid = tick.bids[0] if tick.bids else None
    ask = tick.asks[0] if tick.asks else None
    return {
        "token": str(tick.instrument_token),
        "symbol": symbol,
        "exchange": exchange or SEGMENT_NAMES.get(tick.segment, ""),
        "mode": tick.mode,
        "last_price": _text(tick.last_price),
        "last_traded_quantity": _text(tick.last_traded_quantity),
        "average_traded_price": _text(tick.average_traded_price),
        "volume_traded": _text(tick.volume_traded),
        "total_buy_quantity": _text(tick.total_buy_quantity),
        "total_sell_quantity": _text(tick.total_sell_quantity),
        "open": _text(tick.open),
        "high": _text(tick.high),
        "low": _text(tick.low),
        "close": _text(tick.close),
        "change": _text(tick.change),
        "oi": _text(tick.oi),
        "oi_day_high": _text(tick.oi_day_high),
        "oi_day_low": _text(tick.oi_day_low),
        "best_bid": _text(bid.price) if bid else "",
        "best_bid_qty": _text(bid.quantity) if bid else "",
        "best_ask": _text(ask.price) if ask else "",
        "best_ask_qty": _text(ask.quantity) if ask else "",
        "last_trade_time": _time(tick.last_trade_time),
        "exchange_timestamp": _time(tick.exchange_timestamp),
        "received_at": "" if received_at_ms is None else iso_from_epoch_ms(received_at_ms),
    }
