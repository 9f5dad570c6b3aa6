"""The decoded Kite tick: the one in-memory shape every stage after the wire shares.

Field names follow the official Python client (``kiteconnect``) but flattened (no nested
``ohlc`` dict; the depth is a :class:`Depth` built lazily from the wire's bytes) and with
times kept as whole epoch seconds, because the wire carries seconds and a naive
``datetime`` is exactly the time-zone bug the official client ships. Converting to
Asia/Kolkata happens at the edges (Redis, display).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Literal, NamedTuple

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


class DepthLevel(NamedTuple):
    """One level of the order book. A named tuple: cheap to build, immutable, hashable."""

    quantity: int
    price: float
    orders: int


#: Levels a side in a full packet, and so in every :class:`Depth`.
DEPTH_LEVELS = 5
# One side of the wire's depth: per level int32 quantity, int32 price (signed, in units of
# 1/divisor), uint16 orders, 2 padding bytes. Bids come first, then asks.
_SIDE = struct.Struct(">" + "IiHxx" * DEPTH_LEVELS)
_BOTH = struct.Struct(">" + "IiHxx" * 2 * DEPTH_LEVELS)
#: The first level of a side: quantity and price, what a ``tick:{token}`` mirror needs.
_TOP = struct.Struct(">Ii")
#: Bytes of depth in a full packet (offsets 64..184): :attr:`Depth.wire`.
DEPTH_WIRE_LENGTH = _BOTH.size  # 120
#: Ints in :attr:`Depth.raw`: (quantity, price, orders) for five bids, then five asks.
DEPTH_RAW_LENGTH = 6 * DEPTH_LEVELS


def _levels(raw: tuple[int, ...], divisor: float) -> tuple[DepthLevel, ...]:
    """Five levels from one side's 15 ints: what a reader of the book pays, so unrolled.

    ``tuple.__new__(DepthLevel, (q, p, o))`` is what ``DepthLevel(q, p, o)`` and
    ``DepthLevel._make`` do after their Python-level argument handling (a NamedTuple cannot
    override ``__new__``), so it builds the same object: 0.7 us a side instead of 0.9
    (``_make``) or 1.2 (the constructor)."""
    new = tuple.__new__
    level = DepthLevel
    return (
        new(level, (raw[0], raw[1] / divisor, raw[2])),
        new(level, (raw[3], raw[4] / divisor, raw[5])),
        new(level, (raw[6], raw[7] / divisor, raw[8])),
        new(level, (raw[9], raw[10] / divisor, raw[11])),
        new(level, (raw[12], raw[13] / divisor, raw[14])),
    )


def _raw_side(levels: Iterable[DepthLevel], divisor: float, side: str) -> list[int]:
    values: list[int] = []
    for quantity, price, orders in levels:
        values += (quantity, round(price * divisor), orders)
    if len(values) > 3 * DEPTH_LEVELS:
        raise ValueError(f"{side} has {len(values) // 3} levels; a full packet carries 5")
    values += [0] * (3 * DEPTH_LEVELS - len(values))
    return values


class Depth:
    """The market depth of a full packet: five bid and five ask levels, built lazily.

    A decoder keeps the packet's 120 depth bytes as they came (:attr:`wire`) with the
    segment's price divisor; the :class:`DepthLevel` tuples (prices as floats, exactly
    ``raw_price / divisor`` like every other price) are built on the first read of
    :attr:`bids` or :attr:`asks`, each side on its own, and cached. So a stage that never
    looks at the book never pays for it (ten levels cost more than all the rest of a
    packet), and re-encoding a decoded tick copies the bytes without building anything.

    Like the wire, a Depth always has five levels a side (empty levels are zeros).
    Producers build one with :meth:`from_levels` (prices in rupees) or :meth:`from_raw`
    (wire ints). Immutable; two are equal when their levels are.
    """

    __slots__ = ("_asks", "_bids", "_divisor", "_wire")

    def __init__(self, wire: bytes, divisor: float) -> None:
        """``wire``: the 120 depth bytes of a full packet (offsets 64..184), not checked
        here (this is the decoder's per-packet path; ``from_*`` validate)."""
        self._wire = wire
        self._divisor = divisor
        self._bids: tuple[DepthLevel, ...] | None = None
        self._asks: tuple[DepthLevel, ...] | None = None

    @classmethod
    def from_raw(cls, raw: Iterable[int], divisor: float) -> Depth:
        """From the 30 wire ints (see :attr:`raw`). Raises ``ValueError`` if there are not
        30 or one does not fit its wire field."""
        values = tuple(raw)
        if len(values) != DEPTH_RAW_LENGTH:
            raise ValueError(f"depth has {len(values)} ints, expected {DEPTH_RAW_LENGTH}")
        try:
            return cls(_BOTH.pack(*values), divisor)
        except struct.error as exc:
            raise ValueError(f"depth value does not fit the wire: {exc}") from exc

    @classmethod
    def from_levels(
        cls, bids: Iterable[DepthLevel], asks: Iterable[DepthLevel], divisor: float
    ) -> Depth:
        """From up to five levels a side, prices in rupees; ``divisor`` is the segment's
        (:func:`price_divisor`).

        Missing levels are zero-filled and prices rounded to the wire unit
        (``round(price * divisor)``), which is what the wire would carry, so from_levels,
        encode and decode give an equal Depth. Raises ``ValueError`` for more than five
        levels a side or a value the wire cannot carry.
        """
        return cls.from_raw(
            _raw_side(bids, divisor, "bids") + _raw_side(asks, divisor, "asks"), divisor
        )

    @property
    def wire(self) -> bytes:
        """The 120 depth bytes of a full packet, as received (padding included)."""
        return self._wire

    @property
    def raw(self) -> tuple[int, ...]:
        """The 30 wire ints, (quantity, price * divisor, orders) for five bids then five
        asks (unpacked on each read: for tools and tests, not the hot path)."""
        return _BOTH.unpack(self._wire)

    @property
    def divisor(self) -> float:
        """What the wire prices are divided by to give rupees."""
        return self._divisor

    @property
    def bids(self) -> tuple[DepthLevel, ...]:
        """Five bid levels, best first (built on first read, then cached)."""
        bids = self._bids
        if bids is None:
            bids = self._bids = _levels(_SIDE.unpack_from(self._wire, 0), self._divisor)
        return bids

    @property
    def asks(self) -> tuple[DepthLevel, ...]:
        """Five ask levels, best first (built on first read, then cached)."""
        asks = self._asks
        if asks is None:
            asks = self._asks = _levels(_SIDE.unpack_from(self._wire, _SIDE.size), self._divisor)
        return asks

    def top(self) -> tuple[int, float, int, float]:
        """(bid quantity, bid price, ask quantity, ask price) of the first level a side,
        read straight from the wire: the tick mirror's per-tick need, without building
        the ten levels (which would cost more than the rest of the packet)."""
        wire, divisor = self._wire, self._divisor
        bid_qty, bid_price = _TOP.unpack_from(wire, 0)
        ask_qty, ask_price = _TOP.unpack_from(wire, _SIDE.size)
        return bid_qty, bid_price / divisor, ask_qty, ask_price / divisor

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Depth):
            return NotImplemented
        if self._wire == other._wire and self._divisor == other._divisor:
            return True  # the common case, without building levels
        return self.bids == other.bids and self.asks == other.asks

    def __hash__(self) -> int:
        return hash((self.bids, self.asks))

    def __repr__(self) -> str:
        return f"Depth(bids={self.bids!r}, asks={self.asks!r})"


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
    #: Five levels a side, only in full packets of tradable instruments.
    depth: Depth | None = None

    @property
    def segment(self) -> int:
        return self.instrument_token & 0xFF

    @property
    def bids(self) -> tuple[DepthLevel, ...]:
        """``depth.bids``, or ``()`` without depth (read-only: set :attr:`depth`)."""
        depth = self.depth
        return () if depth is None else depth.bids

    @property
    def asks(self) -> tuple[DepthLevel, ...]:
        """``depth.asks``, or ``()`` without depth (read-only: set :attr:`depth`)."""
        depth = self.depth
        return () if depth is None else depth.asks


#: The field order that the hot-path producers (the decoders in ``core.kite_protocol``
#: and ``core.market_simulator``) rely on when they build a Tick positionally: a keyword
#: call costs about three times as much. Reordering Tick fails here, at import.
POSITIONAL_FIELDS = (
    "instrument_token", "mode", "tradable", "last_price", "last_traded_quantity",
    "average_traded_price", "volume_traded", "total_buy_quantity", "total_sell_quantity",
    "open", "high", "low", "close", "change", "last_trade_time", "oi", "oi_day_high",
    "oi_day_low", "exchange_timestamp", "depth",
)  # fmt: skip
if tuple(f.name for f in fields(Tick)) != POSITIONAL_FIELDS:  # pragma: no cover - guard
    raise ImportError("core.tick.Tick fields were reordered: update the positional producers")
