"""The decoded Kite tick: the one in-memory shape every stage after the wire shares.

Field names follow the official Python client (``kiteconnect``) but flattened (no nested
``ohlc``/``depth`` dicts) and with times kept as whole epoch seconds, because the wire
carries seconds and a naive ``datetime`` is exactly the time-zone bug the official client
ships. Converting to Asia/Kolkata happens at the edges (Redis, display).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Mode = Literal["ltp", "quote", "full"]

# Segment numbers (instrument_token & 0xFF) and their price divisors.
SEGMENT_NSE = 1
SEGMENT_NFO = 2
SEGMENT_CDS = 3
SEGMENT_BSE = 4
SEGMENT_BFO = 5
SEGMENT_BCD = 6
SEGMENT_MCX = 7
SEGMENT_MCXSX = 8
SEGMENT_INDICES = 9
#: NCDEX commodities: not in Zerodha's public docs, but the official client maps 12 to a
#: 10,000 divisor, and its packets do arrive.
SEGMENT_NCO = 12

SEGMENT_NAMES = {
    SEGMENT_NSE: "NSE",
    SEGMENT_NFO: "NFO",
    SEGMENT_CDS: "CDS",
    SEGMENT_BSE: "BSE",
    SEGMENT_BFO: "BFO",
    SEGMENT_BCD: "BCD",
    SEGMENT_MCX: "MCX",
    SEGMENT_MCXSX: "MCXSX",
    SEGMENT_INDICES: "INDICES",
    SEGMENT_NCO: "NCO",
}


def price_divisor(segment: int) -> float:
    """Kite sends prices as integers; CDS, BCD and NCO carry more decimal places."""
    if segment == SEGMENT_CDS:
        return 10_000_000.0
    if segment in (SEGMENT_BCD, SEGMENT_NCO):
        return 10_000.0
    return 100.0


@dataclass(frozen=True, slots=True)
class DepthLevel:
    quantity: int
    price: float
    orders: int


@dataclass(slots=True)
class Tick:
    """One decoded packet. Fields a packet kind does not carry are ``None``."""

    instrument_token: int
    mode: Mode
    tradable: bool
    last_price: float
    last_traded_quantity: int | None = None
    average_traded_price: float | None = None
    volume_traded: int | None = None
    total_buy_quantity: int | None = None
    total_sell_quantity: int | None = None
    open: float | None = None
    high: float | None = None
    low: float | None = None
    close: float | None = None
    #: Percentage change of last_price against close, as the official Python client
    #: computes it (0 when close is 0).
    change: float | None = None
    #: Epoch seconds; None when the packet has no such field or it is 0.
    last_trade_time: int | None = None
    oi: int | None = None
    oi_day_high: int | None = None
    oi_day_low: int | None = None
    exchange_timestamp: int | None = None
    bids: tuple[DepthLevel, ...] = field(default=())
    asks: tuple[DepthLevel, ...] = field(default=())

    @property
    def segment(self) -> int:
        return self.instrument_token & 0xFF
