"""Trading sessions by segment, in IST, and the minute-of-session slot grid.

Everything is integer arithmetic on epoch seconds with the fixed +05:30 offset (India
has no daylight saving), so session logic never depends on the host's time zone: the
legacy system's sessions were 5:30 off on a UTC host.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

from core.timeutil import IST

IST_OFFSET_S = 5 * 3600 + 30 * 60
DAY_S = 86_400
MINUTE_S = 60

_NSE = (9 * 60 + 15, 15 * 60 + 30)
_CURRENCY = (9 * 60, 17 * 60)
_COMMODITY = (9 * 60, 23 * 60 + 30)

#: Segment (instrument_token & 0xFF) -> (open, close) in minutes after IST midnight.
SESSIONS: dict[int, tuple[int, int]] = {
    1: _NSE,  # NSE
    2: _NSE,  # NFO
    3: _CURRENCY,  # CDS
    4: _NSE,  # BSE
    5: _NSE,  # BFO
    6: _CURRENCY,  # BCD
    7: _COMMODITY,  # MCX
    8: _COMMODITY,  # MCXSX
    9: _NSE,  # INDICES
    12: _COMMODITY,  # NCO
}


def session_minutes(segment: int) -> tuple[int, int]:
    """(open, close) in minutes after IST midnight; unknown segments trade like NSE."""
    return SESSIONS.get(segment, _NSE)


def slot_count(segment: int) -> int:
    """1-minute slots in a session: 375 for NSE's 09:15 to 15:30."""
    open_min, close_min = session_minutes(segment)
    return close_min - open_min


def ist_date(epoch_s: float) -> date:
    """The IST calendar date of an instant: the session a tick belongs to."""
    return date.fromordinal(date(1970, 1, 1).toordinal() + int((epoch_s + IST_OFFSET_S) // DAY_S))


def minute_start(epoch_s: float) -> int:
    """Start of the IST minute containing the instant (the bar grid; +05:30 is whole
    minutes, so the IST and UTC minute grids coincide)."""
    return int(epoch_s // MINUTE_S) * MINUTE_S


def ist_midnight(day: date) -> int:
    """Epoch seconds of 00:00 IST on a date."""
    return (day.toordinal() - date(1970, 1, 1).toordinal()) * DAY_S - IST_OFFSET_S


def session_bounds_s(segment: int, day: date) -> tuple[int, int]:
    """(open, close) of the segment's session on a day, epoch seconds."""
    open_min, close_min = session_minutes(segment)
    midnight = ist_midnight(day)
    return midnight + open_min * MINUTE_S, midnight + close_min * MINUTE_S


def session_bounds(segment: int, day: date) -> tuple[datetime, datetime]:
    """(open, close) of the segment's session on a day, tz-aware IST datetimes."""
    open_min, close_min = session_minutes(segment)
    midnight = datetime(day.year, day.month, day.day, tzinfo=IST)
    return midnight + timedelta(minutes=open_min), midnight + timedelta(minutes=close_min)


def slot_of(segment: int, bar_start_s: int) -> int | None:
    """Minute-of-session slot (0 = the first minute) of a bar start; None outside it."""
    open_s, close_s = session_bounds_s(segment, ist_date(bar_start_s))
    if open_s <= bar_start_s < close_s:
        return (bar_start_s - open_s) // MINUTE_S
    return None
