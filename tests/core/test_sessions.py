import os
import time
from datetime import UTC, date, datetime

import pytest

from core.sessions import (
    ist_date,
    ist_midnight,
    minute_start,
    session_bounds,
    session_bounds_s,
    slot_count,
    slot_of,
)
from core.timeutil import IST


@pytest.fixture(params=["UTC", "America/New_York", "Asia/Kolkata"])
def host_zone(request, monkeypatch):
    """Session logic must not care what zone the host clock is in."""
    monkeypatch.setenv("TZ", request.param)
    time.tzset()
    yield request.param
    monkeypatch.delenv("TZ")
    time.tzset()


def epoch(y, mo, d, h, mi, s=0):
    return int(datetime(y, mo, d, h, mi, s, tzinfo=IST).timestamp())


def test_ist_date_rolls_over_at_ist_midnight_not_utc(host_zone):
    # 23:59:59 IST on the 24th is 18:29:59 UTC on the 24th; 00:00 IST on the 25th is
    # 18:30 UTC on the 24th: a UTC-based day would call both the 24th.
    assert ist_date(epoch(2026, 11, 24, 23, 59, 59)) == date(2026, 11, 24)
    assert ist_date(epoch(2026, 11, 25, 0, 0, 0)) == date(2026, 11, 25)
    utc_equivalent = datetime(2026, 11, 24, 18, 30, tzinfo=UTC).timestamp()
    assert ist_midnight(date(2026, 11, 25)) == epoch(2026, 11, 25, 0, 0) == utc_equivalent


def test_nse_session_has_375_slots_and_maps_bar_starts(host_zone):
    assert slot_count(1) == 375 and slot_count(9) == 375
    assert slot_count(3) == 480 and slot_count(7) == 870
    assert slot_of(1, epoch(2026, 11, 24, 9, 15)) == 0
    assert slot_of(1, epoch(2026, 11, 24, 15, 29)) == 374
    assert slot_of(1, epoch(2026, 11, 24, 15, 30)) is None
    assert slot_of(1, epoch(2026, 11, 24, 9, 14)) is None
    assert slot_of(3, epoch(2026, 11, 24, 9, 0)) == 0


def test_minute_grid_and_bounds_agree(host_zone):
    t = epoch(2026, 11, 24, 10, 7, 42)
    assert minute_start(t) == epoch(2026, 11, 24, 10, 7)
    open_s, close_s = session_bounds_s(2, date(2026, 11, 24))
    open_dt, close_dt = session_bounds(2, date(2026, 11, 24))
    assert (open_s, close_s) == (int(open_dt.timestamp()), int(close_dt.timestamp()))
    assert open_dt.isoformat() == "2026-11-24T09:15:00+05:30"
    assert os.environ.get("TZ") == host_zone
