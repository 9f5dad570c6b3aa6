"""Explicit Indian Standard Time: every timestamp shown to a user is Asia/Kolkata."""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from zoneinfo import ZoneInfo

IST = ZoneInfo("Asia/Kolkata")


@lru_cache(maxsize=4096)
def iso_from_epoch(seconds: float) -> str:
    """ISO 8601 with the +05:30 offset (the Redis schema's time format).

    Cached: on the tick path thousands of ticks share the same exchange second."""
    return datetime.fromtimestamp(seconds, IST).isoformat()


def iso_from_epoch_ms(milliseconds: int) -> str:
    return datetime.fromtimestamp(milliseconds / 1000, IST).isoformat(timespec="milliseconds")
