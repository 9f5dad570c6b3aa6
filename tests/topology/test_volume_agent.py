"""The volume agent's per-token record: session accumulation into the baseline, duplicates."""

from datetime import date

from core.bars import Bar
from core.sessions import session_bounds_s
from topology.volume import TokenVolume

RELIANCE = 738561  # NSE equity: 375 one-minute slots


def session_bars(day: date, volume: int) -> list[Bar]:
    open_s, close_s = session_bounds_s(RELIANCE & 0xFF, day)
    return [
        Bar(RELIANCE, start, 100.0, 100.5, 99.5, 100.0, volume, 2)
        for start in range(open_s, close_s, 60)
    ]


def test_a_full_session_becomes_one_baseline_session_and_survives_a_round_trip():
    state = TokenVolume(RELIANCE, None)
    bars = session_bars(date(2026, 11, 23), 100)
    for bar in bars[:200]:
        assert state.on_bar(bar) is not None
    # A restart mid-session: the record round-trips through the table.
    state = TokenVolume(RELIANCE, state.to_record())
    assert state.on_bar(bars[199]) is None  # re-delivered: ignored
    for bar in bars[200:]:
        fields = state.on_bar(bar)
    assert fields is not None and fields["session_volume"] == str(375 * 100)
    assert [ordinal for ordinal, _ in state.baseline.sessions] == [date(2026, 11, 23).toordinal()]
    assert state.acc is None  # the last slot closed the session

    # Next session: the baseline (1 session < 3) falls back to the daily average.
    first = session_bars(date(2026, 11, 24), 300)[0]
    fields = state.on_bar(first)
    assert fields is not None
    assert fields["baseline_source"].startswith("fallback")
    # 37,500 a day over 375 slots, x1.8 for 09:15-10:00: 180 expected for the first minute.
    assert float(fields["baseline_volume"]) == 180.0
    assert float(fields["volume_ratio_raw"]) == 300 / 180


def test_the_last_bars_results_are_recalled_for_a_redelivery_after_a_restart():
    state = TokenVolume(RELIANCE, None)
    bars = session_bars(date(2026, 11, 23), 100)
    results = []
    for bar in bars[:10]:
        fields = state.on_bar(bar)
        assert fields is not None
        state.remember(bar, fields)
        results.append(fields)
    state = TokenVolume(RELIANCE, state.to_record())  # through the table
    assert state.on_bar(bars[9]) is None  # re-delivered: not recomputed...
    assert state.recalled(bars[9]) == results[9]  # ...but its results can be re-sent
    assert state.recalled(bars[6]) == results[6]
    assert state.recalled(bars[5]) is None, "only the last few bars are remembered"
