"""The tick-rate volume engine: hand-computed cases, then properties against an oracle.

Every test runs with the host in UTC (the legacy system's sessions were 5:30 off there);
the engine never reads a clock or a zone, and these tests would catch it if it did.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from datetime import date, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.bars import Bar
from core.sessions import ist_date, session_bounds_s, slot_of
from core.timeutil import IST
from core.volume_engine import (
    STATE_VERSION,
    TokenVolumeState,
    advance_watermark,
    apply_tick,
    session_of,
    session_window,
)

NSE = 1
MCX = 7
TOKEN = 738561  # RELIANCE: segment 1 (NSE)
DAY1 = date(2026, 11, 24)  # a Tuesday
DAY2 = date(2026, 11, 25)


@pytest.fixture(scope="module", autouse=True)
def utc_host() -> Iterator[None]:
    """Module-wide (Hypothesis refuses function-scoped fixtures): the host runs in UTC."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TZ", "UTC")
        time.tzset()
        yield
    time.tzset()


def at(day: date, h: int, m: int, s: int = 0) -> int:
    """Epoch seconds of an IST wall time."""
    return int(datetime(day.year, day.month, day.day, h, m, s, tzinfo=IST).timestamp())


class Feed:
    """Drives one state with ticks at increasing offsets and collects every emitted bar."""

    def __init__(self, token: int = TOKEN, segment: int = NSE) -> None:
        self.state = TokenVolumeState(token)
        self.segment = segment
        self.offset = 0
        self.bars: list[Bar] = []

    def tick(self, t: int, price: float, cum: int | None) -> list[Bar]:
        self.offset += 1
        out = apply_tick(self.state, self.segment, self.offset, t, price, cum)
        self.bars += out
        return out

    def watermark(self, w: float) -> list[Bar]:
        out = advance_watermark(self.state, self.segment, w)
        self.bars += out
        return out


def bar(start: int, o: float, h: float, low: float, c: float, v: int, n: int) -> Bar:
    return Bar(TOKEN, start, o, h, low, c, v, n)


def flat(start: int, price: float) -> Bar:
    return Bar(TOKEN, start, price, price, price, price, 0, 0)


# --------------------------------------------------------------------- hand-made cases


def test_cumulative_that_goes_down_never_moves_the_base() -> None:
    """Legacy bug 1: 100, 300, 200, 400 must count 300 (base 100, +200, 0, +100)."""
    feed = Feed()
    for i, cum in enumerate((100, 300, 200, 400)):
        assert feed.tick(at(DAY1, 10, 0, 5 + i), 500.0 + i, cum) == []
    assert feed.state.anomalies == 1 and feed.state.last_cum == 400
    assert feed.watermark(at(DAY1, 10, 1)) == [
        bar(at(DAY1, 10, 0), 500.0, 503.0, 500.0, 503.0, 300, 4)
    ]


def test_decrease_across_minutes_is_measured_from_the_highest_cumulative() -> None:
    feed = Feed()
    feed.tick(at(DAY1, 10, 0, 5), 100.0, 100)
    feed.tick(at(DAY1, 10, 0, 30), 101.0, 300)
    assert feed.tick(at(DAY1, 10, 1, 10), 99.0, 200) == [
        bar(at(DAY1, 10, 0), 100.0, 101.0, 100.0, 101.0, 200, 2)
    ]
    feed.tick(at(DAY1, 10, 1, 40), 98.0, 400)
    feed.watermark(at(DAY1, 10, 2))
    assert feed.bars[-1] == bar(at(DAY1, 10, 1), 99.0, 99.0, 98.0, 98.0, 100, 2)
    assert feed.state.anomalies == 1


def test_first_tick_mid_day_sets_the_base_and_contributes_nothing() -> None:
    feed = Feed()
    feed.tick(at(DAY1, 11, 42, 10), 2500.0, 1_000_000)
    feed.tick(at(DAY1, 11, 42, 50), 2501.0, 1_000_500)
    feed.tick(at(DAY1, 11, 43, 1), 2502.0, 1_000_700)
    assert feed.bars == [bar(at(DAY1, 11, 42), 2500.0, 2501.0, 2500.0, 2501.0, 500, 2)]
    assert feed.state.open_bar() == bar(at(DAY1, 11, 43), 2502.0, 2502.0, 2502.0, 2502.0, 200, 1)


def test_ticks_without_a_cumulative_move_the_price_only() -> None:
    feed = Feed()
    feed.tick(at(DAY1, 10, 0, 1), 100.0, None)  # LTP packet: no base yet
    feed.tick(at(DAY1, 10, 0, 2), 102.0, 5000)  # first cumulative: the base
    feed.tick(at(DAY1, 10, 0, 3), 97.0, None)
    feed.tick(at(DAY1, 10, 0, 4), 99.0, 5400)
    feed.watermark(at(DAY1, 10, 1))
    assert feed.bars == [bar(at(DAY1, 10, 0), 100.0, 102.0, 97.0, 99.0, 400, 4)]


def test_silent_minutes_between_ticks_become_flat_bars_at_the_previous_close() -> None:
    feed = Feed()
    feed.tick(at(DAY1, 10, 0, 10), 100.0, 1000)
    feed.tick(at(DAY1, 10, 0, 40), 100.5, 1100)
    out = feed.tick(at(DAY1, 10, 3, 20), 101.0, 1150)
    assert out == [
        bar(at(DAY1, 10, 0), 100.0, 100.5, 100.0, 100.5, 100, 2),
        flat(at(DAY1, 10, 1), 100.5),
        flat(at(DAY1, 10, 2), 100.5),
    ]
    assert all(b.flat for b in out[1:]) and not out[0].flat
    assert feed.state.open_bar() == bar(at(DAY1, 10, 3), 101.0, 101.0, 101.0, 101.0, 50, 1)


def test_watermark_closes_an_illiquid_token_and_fills_flats_up_to_the_close() -> None:
    feed = Feed()
    assert feed.watermark(at(DAY1, 15, 0)) == []  # nothing seen: no grid yet
    feed.tick(at(DAY1, 15, 26, 30), 50.0, 10)
    assert feed.watermark(at(DAY1, 15, 26, 59)) == []  # the minute has not ended
    assert feed.watermark(at(DAY1, 15, 28, 2)) == [
        bar(at(DAY1, 15, 26), 50.0, 50.0, 50.0, 50.0, 0, 1),
        flat(at(DAY1, 15, 27), 50.0),
    ]
    assert feed.watermark(at(DAY1, 15, 28, 30)) == []  # same minute again
    assert feed.watermark(at(DAY1, 15, 0)) == []  # lower
    # Far past the close (even the next day): 15:28 and 15:29, never 15:30 or later.
    assert feed.watermark(at(DAY2, 11, 0)) == [
        flat(at(DAY1, 15, 28), 50.0),
        flat(at(DAY1, 15, 29), 50.0),
    ]
    assert feed.watermark(at(DAY2, 12, 0)) == []
    assert [slot_of(NSE, b.start) for b in feed.bars] == [371, 372, 373, 374]


def test_watermark_grid_starts_at_the_first_tick_of_the_session() -> None:
    feed = Feed()
    feed.tick(at(DAY1, 9, 20, 30), 10.0, 7)
    assert feed.watermark(at(DAY1, 9, 23, 5)) == [
        bar(at(DAY1, 9, 20), 10.0, 10.0, 10.0, 10.0, 0, 1),
        flat(at(DAY1, 9, 21), 10.0),
        flat(at(DAY1, 9, 22), 10.0),
    ]  # nothing for 09:15 to 09:19


def test_duplicate_offsets_change_nothing() -> None:
    state = TokenVolumeState(TOKEN)
    assert apply_tick(state, NSE, 10, at(DAY1, 10, 0, 1), 100.0, 1000) == []
    assert apply_tick(state, NSE, 11, at(DAY1, 10, 0, 2), 101.0, 1100) == []
    before = TokenVolumeState.from_dict(state.to_dict())
    assert apply_tick(state, NSE, 11, at(DAY1, 10, 0, 3), 150.0, 9999) == []
    assert apply_tick(state, NSE, 3, at(DAY1, 10, 5, 0), 150.0, 9999) == []  # would close
    assert state == before
    out = apply_tick(state, NSE, 12, at(DAY1, 10, 1, 0), 102.0, 1200)
    assert out == [bar(at(DAY1, 10, 0), 100.0, 101.0, 100.0, 101.0, 100, 2)]


def test_late_tick_never_reopens_a_bar_but_its_volume_counts() -> None:
    feed = Feed()
    feed.tick(at(DAY1, 10, 0, 10), 100.0, 1000)
    feed.tick(at(DAY1, 10, 1, 5), 101.0, 1100)  # emits 10:00
    assert feed.tick(at(DAY1, 10, 0, 50), 90.0, 1150) == []  # late: 10:00 is emitted
    # Its price stays out of the open bar; its 50 goes into it.
    assert feed.state.open_bar() == bar(at(DAY1, 10, 1), 101.0, 101.0, 101.0, 101.0, 150, 1)
    feed.watermark(at(DAY1, 10, 2, 1))  # emits 10:01; no open bar now
    assert feed.tick(at(DAY1, 10, 1, 59), 80.0, 1200) == []  # late, no open bar
    assert feed.state.last_cum == 1150  # its 50 waits in the cumulative...
    feed.tick(at(DAY1, 10, 3, 0), 102.0, 1300)  # ...and the next tick carries it
    assert feed.bars == [
        bar(at(DAY1, 10, 0), 100.0, 100.0, 100.0, 100.0, 0, 1),  # the base
        bar(at(DAY1, 10, 1), 101.0, 101.0, 101.0, 101.0, 150, 1),
        flat(at(DAY1, 10, 2), 101.0),
    ]
    assert feed.state.open_bar() == bar(at(DAY1, 10, 3), 102.0, 102.0, 102.0, 102.0, 150, 1)
    assert feed.state.late == 2 and feed.state.anomalies == 0
    assert [b.start for b in feed.bars] == sorted({b.start for b in feed.bars})


def test_first_tick_behind_the_watermark_gets_its_bar_at_once() -> None:
    feed = Feed()
    feed.watermark(at(DAY1, 10, 5, 0))
    assert feed.tick(at(DAY1, 10, 2, 30), 10.0, 100) == [
        bar(at(DAY1, 10, 2), 10.0, 10.0, 10.0, 10.0, 0, 1),
        flat(at(DAY1, 10, 3), 10.0),
        flat(at(DAY1, 10, 4), 10.0),
    ]
    assert feed.watermark(at(DAY1, 10, 5, 0)) == []  # a replayed watermark: nothing
    assert feed.tick(at(DAY1, 10, 2, 40), 11.0, 150) == []  # that minute is final
    assert feed.state.late == 1


def test_pre_open_tick_sets_the_base_and_post_close_tick_closes_the_day() -> None:
    feed = Feed()
    assert feed.tick(at(DAY1, 9, 8, 0), 1000.0, 5000) == []  # pre-open auction volume
    feed.tick(at(DAY1, 9, 15, 2), 1001.0, 5200)  # 200 traded since: counted
    feed.tick(at(DAY1, 15, 27, 30), 1010.0, 9000)
    out = feed.tick(at(DAY1, 15, 31, 0), 1011.0, 9100)  # post-close
    assert out == [
        bar(at(DAY1, 15, 27), 1010.0, 1010.0, 1010.0, 1010.0, 3800, 1),
        flat(at(DAY1, 15, 28), 1010.0),
        flat(at(DAY1, 15, 29), 1010.0),
    ]
    assert feed.bars[0] == bar(at(DAY1, 9, 15), 1001.0, 1001.0, 1001.0, 1001.0, 200, 1)
    assert feed.state.open_bar() is None and feed.state.outside == 2
    assert feed.state.last_cum == 9100
    assert feed.watermark(at(DAY2, 0, 0)) == []  # the day is complete


@pytest.fixture(params=["UTC", "America/New_York", "Asia/Kolkata"])
def host_zone(request: pytest.FixtureRequest) -> Iterator[str]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TZ", request.param)
        time.tzset()
        yield request.param
    time.tzset()


def test_ist_midnight_starts_a_new_session_whatever_the_host_zone(host_zone: str) -> None:
    """23:59 IST and 00:01 IST are 18:29 and 18:31 UTC of the same UTC day: a UTC (or
    host-local) session would call the 00:01 cumulative a decrease and lose the next
    morning's first minute of volume."""
    feed = Feed()
    feed.tick(at(DAY1, 15, 29, 0), 700.0, 5000)
    assert feed.tick(at(DAY1, 23, 59, 0), 700.0, 5100) == [
        bar(at(DAY1, 15, 29), 700.0, 700.0, 700.0, 700.0, 0, 1)
    ]
    assert feed.tick(at(DAY2, 0, 1, 0), 700.0, 50) == []  # new session: base 50
    assert feed.state.session == DAY2.toordinal() and feed.state.anomalies == 0
    assert feed.tick(at(DAY2, 9, 15, 10), 702.0, 80) == []
    feed.watermark(at(DAY2, 9, 16, 0))
    assert feed.bars[-1] == bar(at(DAY2, 9, 15), 702.0, 702.0, 702.0, 702.0, 30, 1)
    assert feed.bars[-1].session == DAY2 and feed.bars[0].session == DAY1
    assert os.environ["TZ"] == host_zone


def test_new_session_closes_the_old_bar_and_makes_no_flats_across_sessions() -> None:
    feed = Feed()
    feed.tick(at(DAY1, 15, 26, 0), 10.0, 100)
    out = feed.tick(at(DAY2, 9, 20, 0), 11.0, 40)
    assert out == [
        bar(at(DAY1, 15, 26), 10.0, 10.0, 10.0, 10.0, 0, 1),
        flat(at(DAY1, 15, 27), 10.0),
        flat(at(DAY1, 15, 28), 10.0),
        flat(at(DAY1, 15, 29), 10.0),
    ]  # the old session's tail, as a watermark past its close gives; nothing on DAY2
    assert feed.state.open_bar() == bar(at(DAY2, 9, 20), 11.0, 11.0, 11.0, 11.0, 0, 1)
    assert feed.tick(at(DAY1, 15, 29, 59), 9.0, 200) == []  # yesterday: ignored
    assert feed.state.late == 1 and feed.state.session == DAY2.toordinal()


def test_mcx_session_runs_to_23_30() -> None:
    token = 53_505_799  # segment 7
    assert token & 0xFF == MCX
    feed = Feed(token, MCX)
    feed.tick(at(DAY1, 23, 28, 10), 6000.0, 10)
    feed.tick(at(DAY1, 23, 29, 50), 6001.0, 25)
    # 23:30 is the close: that tick opens nothing, but proves 23:29 is over.
    assert feed.tick(at(DAY1, 23, 30, 0), 6002.0, 30) == [
        Bar(token, at(DAY1, 23, 29), 6001.0, 6001.0, 6001.0, 6001.0, 15, 1)
    ]
    assert feed.bars[0] == Bar(token, at(DAY1, 23, 28), 6000.0, 6000.0, 6000.0, 6000.0, 0, 1)
    assert feed.state.outside == 1 and feed.state.open_bar() is None


def test_state_round_trips_through_json() -> None:
    feed = Feed()
    assert TokenVolumeState.from_dict(json.loads(json.dumps(feed.state.to_dict()))) == feed.state
    feed.tick(at(DAY1, 10, 0, 10), 100.25, 1000)
    feed.tick(at(DAY1, 10, 0, 20), 0.1 + 0.2, 1001)  # a float that must survive exactly
    feed.watermark(at(DAY1, 9, 59))
    data = json.loads(json.dumps(feed.state.to_dict()))
    assert data["v"] == STATE_VERSION
    restored = TokenVolumeState.from_dict(data)
    assert restored == feed.state and restored.bar_low == 0.1 + 0.2
    assert restored != TokenVolumeState(TOKEN)
    with pytest.raises(ValueError, match="version"):
        TokenVolumeState.from_dict({**data, "v": 0})


def test_integer_session_arithmetic_agrees_with_core_sessions() -> None:
    for t in (at(DAY1, 0, 0), at(DAY1, 5, 29, 59), at(DAY1, 5, 30), at(DAY1, 23, 59, 59)):
        assert session_of(t) == ist_date(t).toordinal() == DAY1.toordinal()
    for segment in (1, 2, 3, 7, 9, 12, 99):
        assert session_window(segment, DAY1.toordinal()) == session_bounds_s(segment, DAY1)


@given(st.integers(0, 4_000_000_000))
def test_session_of_matches_ist_date(t: int) -> None:
    assert session_of(t) == ist_date(t).toordinal()


# ------------------------------------------------------------------------- properties

OPEN1, CLOSE1 = session_bounds_s(NSE, DAY1)
prices = st.integers(1, 400).map(lambda cents: 100.0 + cents / 4)
# A cumulative step: mostly trades, sometimes a decrease (late or corrected), or no field.
steps = st.one_of(st.integers(0, 500), st.integers(-300, -1), st.none())


def expected_bars(ticks: list[tuple[int, float, int | None]], close_s: int) -> list[Bar]:
    """The batch definition, written independently: in-order ticks of one session, every
    bar closed, flat minutes from the first tick's minute to the session's close."""
    minutes: dict[int, list[float]] = {}
    volumes: dict[int, int] = {}
    base: int | None = None
    for t, price, cum in ticks:
        m = t // 60 * 60
        delta = 0
        if cum is not None:
            if base is None:
                base = cum
            elif cum >= base:
                delta, base = cum - base, cum
        volumes[m] = volumes.get(m, 0) + delta
        if m not in minutes:
            minutes[m] = [price, price, price, price, 0]
        ohlc = minutes[m]
        ohlc[1], ohlc[2], ohlc[3] = max(ohlc[1], price), min(ohlc[2], price), price
        ohlc[4] += 1
    out: list[Bar] = []
    previous_close = 0.0
    for m in range(min(minutes), close_s, 60):
        if m in minutes:
            o, h, lo, c, n = minutes[m]
            out.append(Bar(TOKEN, m, o, h, lo, c, volumes[m], int(n)))
            previous_close = c
        else:
            c = previous_close
            out.append(Bar(TOKEN, m, c, c, c, c, 0, 0))
    return out


@settings(max_examples=150, deadline=None)
@given(
    times=st.lists(st.integers(0, CLOSE1 - OPEN1 - 1), min_size=1, max_size=40).map(sorted),
    data=st.data(),
)
def test_in_order_ticks_with_any_watermarks_match_the_batch_definition(
    times: list[int], data: st.DataObject
) -> None:
    feed = Feed()
    ticks: list[tuple[int, float, int | None]] = []
    cum = 10_000
    previous = OPEN1
    for offset_in_session in times:
        t = OPEN1 + offset_in_session
        # A watermark anywhere up to this tick's time (lower than an earlier one is fine):
        # a tick is never behind the watermark here, so nothing is late.
        if data.draw(st.booleans()):
            feed.watermark(data.draw(st.integers(previous - 120, t)))
        step = data.draw(steps)
        if step is not None:
            cum = max(0, cum + step)
        tick = (t, data.draw(prices), None if step is None else cum)
        ticks.append(tick)
        feed.tick(*tick)
        previous = t
    feed.watermark(CLOSE1 + 3600)
    assert feed.bars == expected_bars(ticks, CLOSE1)
    assert feed.state.open_bar() is None


def chaotic_ops() -> st.SearchStrategy[list[tuple[int, float, int | None] | float]]:
    """Ticks over two sessions with jittered, sometimes backwards times, pre-open and
    post-close ticks, decreases and missing cumulatives; watermarks interleaved (floats)."""

    @st.composite
    def build(draw: st.DrawFn) -> list[tuple[int, float, int | None] | float]:
        ops: list[tuple[int, float, int | None] | float] = []
        t = at(DAY1, 9, 10) + draw(st.integers(0, 3600))
        cum = draw(st.integers(0, 10_000))
        for _ in range(draw(st.integers(1, 60))):
            gap = draw(st.one_of(st.integers(-150, 400), st.integers(0, 4000), st.just(80_000)))
            t += gap
            if draw(st.integers(0, 4)) == 0:
                ops.append(float(t - draw(st.integers(0, 300))))  # watermark, with grace
                continue
            step = draw(steps)
            if gap == 80_000:
                cum = draw(st.integers(0, 100))  # next day: the cumulative restarts
            elif step is not None:
                cum = max(0, cum + step)
            ops.append((t, draw(prices), None if step is None else cum))
        return ops

    return build()


def run(ops: list[tuple[int, float, int | None] | float]) -> tuple[list[Bar], TokenVolumeState]:
    feed = Feed()
    for op in ops:
        if isinstance(op, tuple):
            feed.tick(*op)
        else:
            feed.watermark(op)
    return feed.bars, feed.state


def check_complete_grid(bars: list[Bar]) -> None:
    """After a flush past every close: each session's bars cover every minute from its
    first bar to the session's close, with no hole."""
    by_session: dict[date, list[int]] = {}
    for b in bars:
        by_session.setdefault(b.session, []).append(b.start)
    for day, starts in by_session.items():
        close_s = session_bounds_s(NSE, day)[1]
        assert starts == list(range(starts[0], close_s, 60)), day


def check_bar_invariants(bars: list[Bar]) -> None:
    starts = [b.start for b in bars]
    assert starts == sorted(set(starts)), "each minute once, in increasing order"
    for previous, b in zip([None, *bars], bars, strict=False):
        assert slot_of(NSE, b.start) is not None, "bars only inside trading hours"
        assert b.low <= min(b.open, b.close) <= max(b.open, b.close) <= b.high
        if b.flat:
            assert b.volume == 0 and previous is not None
            assert previous.session == b.session and previous.start == b.start - 60
            assert b.open == b.high == b.low == b.close == previous.close


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=chaotic_ops(), data=st.data())
def test_checkpoint_resume_and_redelivery_give_the_same_bars(
    ops: list[tuple[int, float, int | None] | float], data: st.DataObject
) -> None:
    """A worker that checkpoints the state after op ``split``, dies, and resumes from an
    earlier committed position (re-delivering ops ``replay_from..split``), with random
    duplicate deliveries after that, emits exactly what an uninterrupted run emits."""
    expected, expected_state = run(ops)
    check_bar_invariants(expected)
    flushed = TokenVolumeState.from_dict(expected_state.to_dict())
    check_complete_grid(expected + advance_watermark(flushed, NSE, 1e10))

    offsets = []  # the source offset each op carries (watermarks: the previous tick's)
    offset = 0
    for op in ops:
        if isinstance(op, tuple):
            offset += 1
        offsets.append(offset)

    def deliver(state: TokenVolumeState, index: int) -> list[Bar]:
        op = ops[index]
        if isinstance(op, tuple):
            return apply_tick(state, NSE, offsets[index], *op)
        return advance_watermark(state, NSE, op)

    split = data.draw(st.integers(0, len(ops)), label="split")
    replay_from = data.draw(st.integers(0, split), label="replay_from")
    state = TokenVolumeState(TOKEN)
    bars: list[Bar] = []
    for i in range(split):
        bars += deliver(state, i)
    state = TokenVolumeState.from_dict(json.loads(json.dumps(state.to_dict())))
    for i in range(replay_from, split):
        assert deliver(state, i) == [], "a re-delivered op emits nothing"
    for i in range(split, len(ops)):
        bars += deliver(state, i)
        if data.draw(st.booleans()):
            assert deliver(state, data.draw(st.integers(0, i))) == []
    assert bars == expected
    assert state == expected_state


@settings(max_examples=150, deadline=None)
@given(
    times=st.lists(st.integers(0, CLOSE1 - OPEN1 - 1), min_size=1, max_size=50),
    increments=st.lists(st.integers(0, 1000), min_size=50, max_size=50),
    watermarks=st.lists(st.none() | st.integers(0, CLOSE1 - OPEN1 + 600), min_size=50, max_size=50),
    first=st.integers(0, 10**9),
)
def test_volume_is_conserved(
    times: list[int], increments: list[int], watermarks: list[int | None], first: int
) -> None:
    """Non-decreasing cumulatives in one session, ticks in any time order, any watermarks:
    emitted plus open volume is exactly what the cumulative rose by, except what a late
    tick left waiting in the cumulative; with in-order times nothing waits."""
    feed = Feed()
    cum = first
    for t, inc, w in zip(times, increments, watermarks, strict=False):
        if w is not None:
            feed.watermark(OPEN1 + w)
        cum += inc
        feed.tick(OPEN1 + t, 100.0, cum)
    state = feed.state
    assert state.last_cum is not None and state.anomalies == 0
    open_volume = state.bar_volume if state.bar_start is not None else 0
    emitted = sum(b.volume for b in feed.bars)
    assert emitted + open_volume == state.last_cum - (first + increments[0])
    if times == sorted(times) and all(w is None for w in watermarks):
        assert state.last_cum == cum
    feed.watermark(CLOSE1)
    check_bar_invariants(feed.bars)
