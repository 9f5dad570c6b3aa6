"""The 1-minute bar: what the tick hop emits and every bar-rate stage consumes."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date
from typing import Any

from core.sessions import ist_date


@dataclass(frozen=True, slots=True)
class Bar:
    """One closed 1-minute OHLCV bar of a token on the IST minute grid.

    ``volume`` is the sum of the session's cumulative-volume increments inside the
    minute (never a sum of last_traded_quantity). A flat bar (``ticks == 0``) fills a
    silent minute: OHLC = the previous close, volume 0.
    """

    instrument_token: int
    start: int  # epoch seconds of the minute's start
    open: float
    high: float
    low: float
    close: float
    volume: int
    ticks: int

    @property
    def flat(self) -> bool:
        return self.ticks == 0

    @property
    def session(self) -> date:
        return ist_date(self.start)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Bar:
        return cls(
            instrument_token=int(data["instrument_token"]),
            start=int(data["start"]),
            open=float(data["open"]),
            high=float(data["high"]),
            low=float(data["low"]),
            close=float(data["close"]),
            volume=int(data["volume"]),
            ticks=int(data["ticks"]),
        )
