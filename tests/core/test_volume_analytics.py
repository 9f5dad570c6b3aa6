"""Volume analytics (core.volume_analytics): every expected value is computed by hand."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.bars import Bar
from core.timeutil import IST
from core.volume_analytics import (
    NO_BASELINE,
    VOL_FIELDS,
    VolumeAnalyticsState,
    VolumeResult,
    WindowBaseline,
    sum_per_slot,
    update,
    value_area,
)

NSE_TOKEN = (11272 << 8) | 1  # segment 1: NSE, 09:15 to 15:30
REPO = Path(__file__).resolve().parents[2]


def epoch(y: int, mo: int, d: int, h: int, mi: int) -> int:
    return int(datetime(y, mo, d, h, mi, tzinfo=IST).timestamp())


def at(minute_of_session: int, day: int = 24) -> int:
    """Bar start of the given NSE slot on 2026-11-{day}."""
    return epoch(2026, 11, day, 9, 15) + 60 * minute_of_session


def bar(
    start: int,
    volume: int,
    high: float = 100.0,
    low: float = 100.0,
    close: float = 100.0,
    token: int = NSE_TOKEN,
) -> Bar:
    return Bar(token, start, close, high, low, close, volume, 0 if volume == 0 else 1)


def feed(
    state: VolumeAnalyticsState,
    b: Bar,
    baseline: WindowBaseline | None = None,
    tick_size: float = 0.05,
    source: str = "history",
) -> VolumeResult | None:
    return update(state, b, tick_size=tick_size, baseline=baseline, baseline_source=source)


def linear_baseline(calls: list[tuple[int, ...]]) -> WindowBaseline:
    """Expected volume 100 + 10 x slot, recording the slots each window asks for."""

    def expected(slot: int) -> float:
        return 100.0 + 10 * slot

    summed = sum_per_slot(expected)

    def window_baseline(slots: Sequence[int]) -> float | None:
        calls.append(tuple(slots))
        return summed(slots)

    return window_baseline


# ---- volume ratio -------------------------------------------------------------------


def test_ratio_over_trailing_five_bars_against_baseline_of_the_same_slots() -> None:
    calls: list[tuple[int, ...]] = []
    base = linear_baseline(calls)
    state = VolumeAnalyticsState()
    volumes = [100, 200, 300, 400, 500, 600, 700]
    results = [feed(state, bar(at(i), v), base) for i, v in enumerate(volumes)]
    assert all(r is not None for r in results)
    got = [(r.window_volume, r.baseline_volume, r.volume_ratio) for r in results if r]
    # Fewer bars at the session start; from slot 4 on, the last five.
    assert got == [
        (100, 100.0, 100 / 100),
        (300, 210.0, 300 / 210),
        (600, 330.0, 600 / 330),
        (1000, 460.0, 1000 / 460),
        (1500, 600.0, 1500 / 600),
        (2000, 650.0, 2000 / 650),  # slots 1..5: 200+..+600 over 110+..+150
        (2500, 700.0, 2500 / 700),  # slots 2..6: 300+..+700 over 120+..+160
    ]
    assert calls == [
        (0,),
        (0, 1),
        (0, 1, 2),
        (0, 1, 2, 3),
        (0, 1, 2, 3, 4),
        (1, 2, 3, 4, 5),
        (2, 3, 4, 5, 6),
    ]
    last = results[-1]
    assert last is not None
    assert last.volume_ratio_raw == last.volume_ratio == 2500 / 700
    assert last.baseline_source == "history"
    assert last.session_volume == sum(volumes)


def test_flat_bars_count_as_zero_volume_minutes() -> None:
    calls: list[tuple[int, ...]] = []
    state = VolumeAnalyticsState()
    for i, v in enumerate([500, 0, 0, 0, 0, 0]):
        r = feed(state, bar(at(i), v), linear_baseline(calls))
    assert r is not None
    assert (r.window_volume, r.baseline_volume, r.volume_ratio) == (0, 650.0, 0.0)
    assert r.session_volume == 500


def test_window_is_by_minute_so_a_gap_never_reaches_back_to_stale_minutes() -> None:
    calls: list[tuple[int, ...]] = []
    state = VolumeAnalyticsState()
    for i in (0, 1, 2):
        feed(state, bar(at(i), 100), linear_baseline(calls))
    r = feed(state, bar(at(6), 300), linear_baseline(calls))  # slots 3, 4, 5 missing
    assert r is not None
    assert calls[-1] == (2, 6)  # the window (6 - 5, 6] holds what was seen of it
    assert (r.window_volume, r.baseline_volume) == (400, 120.0 + 160.0)


def test_ratio_is_capped_at_50_with_the_raw_value_beside_it() -> None:
    state = VolumeAnalyticsState()
    r = feed(state, bar(at(0), 10_000), lambda slots: 100.0)
    assert r is not None
    assert (r.volume_ratio, r.volume_ratio_raw) == (50.0, 100.0)
    fields = r.to_redis()
    assert (fields["volume_ratio"], fields["volume_ratio_raw"]) == ("50.0", "100.0")
    custom = update(
        VolumeAnalyticsState(),
        bar(at(0), 10_000),
        tick_size=0.05,
        baseline=lambda slots: 1000.0,
        baseline_source="history",
        cap=5.0,
    )
    assert custom is not None and (custom.volume_ratio, custom.volume_ratio_raw) == (5.0, 10.0)


@pytest.mark.parametrize(
    "baseline",
    [
        None,
        lambda slots: None,
        lambda slots: 0.0,
        lambda slots: -5.0,
        lambda slots: math.nan,
        lambda slots: math.inf,
        sum_per_slot(lambda slot: None if slot == 1 else 100.0),  # one slot missing
    ],
    ids=["no-baseline", "none", "zero", "negative", "nan", "inf", "partial"],
)
def test_missing_or_unusable_baseline_gives_no_ratio_never_inf_or_a_fallback(
    baseline: WindowBaseline | None,
) -> None:
    state = VolumeAnalyticsState()
    feed(state, bar(at(0), 1_000_000), baseline)
    r = feed(state, bar(at(1), 1_000_000), baseline)
    assert r is not None
    assert r.volume_ratio is None and r.volume_ratio_raw is None and r.baseline_volume is None
    assert r.window_volume == 2_000_000 and r.session_volume == 2_000_000
    assert r.baseline_source == NO_BASELINE
    fields = r.to_redis()
    assert fields["volume_ratio"] == fields["volume_ratio_raw"] == fields["baseline_volume"] == ""
    assert fields["baseline_source"] == "none"


def test_bar_outside_session_hours_counts_for_the_session_but_not_the_ratio() -> None:
    calls: list[tuple[int, ...]] = []
    state = VolumeAnalyticsState()
    pre_open = feed(
        state, bar(epoch(2026, 11, 24, 9, 7), 1000, 101, 99, 100), linear_baseline(calls)
    )
    assert pre_open is not None
    assert (pre_open.window_volume, pre_open.volume_ratio, pre_open.session_volume) == (
        None,
        None,
        1000,
    )
    assert pre_open.vwap == 100.0 and pre_open.poc == 100.0
    assert calls == []
    first = feed(state, bar(at(0), 200, 103, 100, 103), linear_baseline(calls))
    assert first is not None
    assert (first.window_volume, first.baseline_volume, first.volume_ratio) == (200, 100.0, 2.0)
    assert first.session_volume == 1200
    assert first.vwap == (100.0 * 1000 + 102.0 * 200) / 1200


# ---- VWAP ---------------------------------------------------------------------------


def test_session_vwap_from_typical_price_and_bar_volume() -> None:
    state = VolumeAnalyticsState()
    r1 = feed(state, bar(at(0), 100, high=101, low=99, close=100))  # typical 100
    r2 = feed(state, bar(at(1), 300, high=103, low=100, close=103))  # typical 102
    r3 = feed(state, bar(at(2), 0, high=103, low=103, close=103))  # flat: no change
    r4 = feed(state, bar(at(3), 100, high=99, low=96, close=96))  # typical 97
    assert r1 is not None and r2 is not None and r3 is not None and r4 is not None
    assert r1.vwap == 100.0
    assert r2.vwap == r3.vwap == (100 * 100 + 102 * 300) / 400 == 101.5
    assert r4.vwap == (10_000 + 30_600 + 9_700) / 500 == 100.6
    assert r4.session_volume == 500


def test_no_volume_yet_means_no_vwap_and_no_profile() -> None:
    state = VolumeAnalyticsState()
    r = feed(state, bar(at(0), 0), lambda slots: 100.0)
    assert r is not None
    assert (r.vwap, r.poc, r.value_area_low, r.value_area_high) == (None, None, None, None)
    assert (r.session_volume, r.window_volume, r.volume_ratio) == (0, 0, 0.0)
    assert r.to_redis()["vwap"] == ""


# ---- volume profile -----------------------------------------------------------------


def test_value_area_grows_toward_the_heavier_single_neighbour() -> None:
    profile = {100: 5, 101: 10, 102: 20, 103: 40, 104: 15, 105: 30, 106: 5}
    # total 125, 70% = 87.5. From the POC 103 (40): below 102 (20) beats above 104 (15)
    # -> 60; then 104 (15) beats 101 (10) -> 75; then 105 (30) beats 101 (10) -> 105.
    # (The two-level variant would give 101..105: 104+105 = 45 beats 102+101 = 30 first.)
    assert value_area(profile) == (103, 102, 105)


def test_value_area_tie_adds_the_level_above() -> None:
    profile = {99: 5, 101: 20, 102: 60, 103: 20, 105: 5}
    # total 110, 70% = 77. POC 102 (60); 101 and 103 tie at 20: the one above -> 80, done.
    assert value_area(profile) == (102, 102, 103)


def test_value_area_skips_empty_levels_when_comparing_neighbours() -> None:
    profile = {100: 30, 103: 50, 104: 10, 105: 10}
    # total 100, 70% = 70. Next populated below 103 is 100 (30) vs 104 (10) -> 80, done.
    # (Tick by tick, the empty 102 would have lost to 104 and given 103..105.)
    assert value_area(profile) == (103, 100, 103)


def test_value_area_edges() -> None:
    assert value_area({100: 80, 101: 20}) == (100, 100, 100)  # the POC alone holds 80%
    # POC at the bottom: only the upper side can grow: 50 + 10 + 10 = 70, exactly 70%,
    # which is enough (in floats 0.7 * 100 = 70.00000000000001 would ask for one more).
    assert value_area({100: 50, 101: 10, 102: 10, 103: 30}) == (100, 100, 102)
    assert value_area({7: 3}) == (7, 7, 7)
    assert value_area({100: 50, 101: 10, 102: 10, 103: 30}, share=1.0) == (100, 100, 103)
    with pytest.raises(ValueError):
        value_area({})


def test_poc_tie_goes_to_the_level_nearest_the_profile_centre_then_the_lower() -> None:
    # centre (100 + 106) / 2 = 103: 104 is 1 away, 100 is 3 away.
    assert value_area({100: 40, 101: 10, 104: 40, 106: 5})[0] == 104
    # centre 101: 100 and 102 both 1 away -> the lower.
    assert value_area({100: 40, 101: 5, 102: 40})[0] == 100


def test_profile_levels_are_typical_price_rounded_to_the_tick() -> None:
    state = VolumeAnalyticsState()
    # In ticks of 0.05: (2002 + 2000 + 2001) / 3 = 2001 -> 100.05;
    # (2002 + 2000 + 2002) / 3 = 2001.33 -> 2001; (2002 + 2001 + 2002) / 3 = 2001.67 -> 2002.
    feed(state, bar(at(0), 10, high=100.10, low=100.00, close=100.05))
    feed(state, bar(at(1), 20, high=100.10, low=100.00, close=100.10))
    r = feed(state, bar(at(2), 40, high=100.10, low=100.05, close=100.10))
    assert state.profile == {2001: 30, 2002: 40}
    assert r is not None
    # POC 100.10 (40); 70% of 70 = 49: 40 + 30 -> both levels.
    assert (r.poc, r.value_area_low, r.value_area_high) == (100.1, 100.05, 100.1)
    fields = r.to_redis()
    assert (fields["poc"], fields["value_area_low"], fields["value_area_high"]) == (
        "100.1",
        "100.05",
        "100.1",
    )


def test_profile_poc_and_value_area_through_update() -> None:
    # The distribution of test_value_area_grows_toward_the_heavier_single_neighbour, in
    # rupees at tick 0.05 (level n = price 0.05 n): 100 -> 5.00, ..., 106 -> 5.30.
    state = VolumeAnalyticsState()
    r = None
    for i, (level, volume) in enumerate(
        [(103, 25), (100, 5), (101, 10), (102, 20), (104, 15), (105, 30), (106, 5), (103, 15)]
    ):
        price = round(level * 0.05, 2)
        r = feed(state, bar(at(i), volume, high=price, low=price, close=price))
    assert r is not None
    assert state.profile == {100: 5, 101: 10, 102: 20, 103: 40, 104: 15, 105: 30, 106: 5}
    assert (r.poc, r.value_area_low, r.value_area_high) == (5.15, 5.1, 5.25)
    assert r.session_volume == 125


# ---- sessions, duplicates, bad input -----------------------------------------------


def test_new_session_resets_window_vwap_and_profile() -> None:
    calls: list[tuple[int, ...]] = []
    state = VolumeAnalyticsState()
    for i in range(375):
        feed(state, bar(at(i), 1000, high=101, low=99, close=100), linear_baseline(calls))
    post_close = feed(state, bar(epoch(2026, 11, 24, 15, 45), 50), linear_baseline(calls))
    assert post_close is not None and post_close.session_volume == 375_050
    r = feed(
        state,
        bar(at(0, day=25), 300, high=201, low=199, close=200),
        linear_baseline(calls),
        tick_size=0.10,
    )
    assert r is not None
    assert calls[-1] == (0,)
    assert (r.window_volume, r.baseline_volume, r.volume_ratio) == (300, 100.0, 3.0)
    assert (r.session_volume, r.vwap, r.poc) == (300, 200.0, 200.0)
    assert (r.value_area_low, r.value_area_high) == (200.0, 200.0)
    assert state.profile == {2000: 300}  # the new session's tick size: 0.10
    assert state.session == datetime(2026, 11, 25).toordinal()


def test_tick_size_is_fixed_for_the_session_and_indices_fall_back() -> None:
    state = VolumeAnalyticsState()
    feed(state, bar(at(0), 10, high=100.05, low=100.05, close=100.05), tick_size=0.05)
    r = feed(state, bar(at(1), 10, high=100.05, low=100.05, close=100.05), tick_size=0.10)
    assert state.tick_size == 0.05 and state.profile == {2001: 20}
    assert r is not None and r.poc == 100.05
    index = VolumeAnalyticsState()
    feed(index, bar(at(0), 10, high=24000.15, low=24000.15, close=24000.15), tick_size=0.0)
    assert index.tick_size == 0.01 and index.profile == {2_400_015: 10}


def test_duplicate_or_older_bar_is_ignored_and_changes_nothing() -> None:
    calls: list[tuple[int, ...]] = []
    state = VolumeAnalyticsState()
    feed(state, bar(at(0), 100), linear_baseline(calls))
    first = feed(state, bar(at(1), 200, high=101, low=99, close=101), linear_baseline(calls))
    before = VolumeAnalyticsState.from_dict(state.to_dict())
    assert feed(state, bar(at(1), 200, high=101, low=99, close=101), linear_baseline(calls)) is None
    assert feed(state, bar(at(0), 999), linear_baseline(calls)) is None
    assert feed(state, bar(at(300, day=23), 999), linear_baseline(calls)) is None
    assert state == before
    again = feed(state, bar(at(2), 0), linear_baseline(calls))
    assert first is not None and again is not None
    assert again.session_volume == first.session_volume == 300


def test_bad_bar_or_failing_baseline_raises_and_leaves_state_unchanged() -> None:
    state = VolumeAnalyticsState()
    feed(state, bar(at(0), 100), lambda slots: 100.0)
    before = VolumeAnalyticsState.from_dict(state.to_dict())
    with pytest.raises(ValueError):
        feed(state, bar(at(1), -5))
    with pytest.raises(ValueError):
        feed(state, bar(at(1), 5, high=math.nan))

    def broken(slots: object) -> float:
        raise RuntimeError("baseline store unavailable")

    with pytest.raises(RuntimeError):
        feed(state, bar(at(1, day=25), 5), broken)  # would have reset the session
    assert state == before
    with pytest.raises(ValueError):
        update(state, bar(at(1), 5), tick_size=0.05, baseline=None, baseline_source="", window=0)
    assert state == before


# ---- serialisation and the Redis hash -----------------------------------------------


def test_to_redis_has_exactly_the_schema_fields() -> None:
    row = next(
        line
        for line in (REPO / "docs" / "redis-schema.md").read_text().splitlines()
        if line.startswith("| `vol:{token}`")
    )
    documented = tuple(f.strip() for f in row.split("|")[3].split(","))
    assert documented == VOL_FIELDS
    state = VolumeAnalyticsState()
    r = feed(state, bar(at(0), 1234, high=101, low=99, close=100), lambda slots: 617.0)
    assert r is not None
    fields = r.to_redis()
    assert tuple(fields) == VOL_FIELDS
    assert all(isinstance(v, str) for v in fields.values())
    assert fields == {
        "bar_start": "2026-11-24T09:15:00+05:30",
        "volume_ratio": "2.0",
        "volume_ratio_raw": "2.0",
        "baseline_source": "history",
        "window_volume": "1234",
        "baseline_volume": "617.0",
        "session_volume": "1234",
        "vwap": "100.0",
        "poc": "100.0",
        "value_area_low": "100.0",
        "value_area_high": "100.0",
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+05:30", fields["bar_start"])
    assert tuple(r.to_dict()) == VOL_FIELDS


def test_state_json_round_trip_and_version_check() -> None:
    state = VolumeAnalyticsState()
    for i, v in enumerate([10, 0, 30, 7]):
        feed(state, bar(at(i), v, high=100.1 + i, low=99.95, close=100 + i / 20))
    data = json.loads(json.dumps(state.to_dict(), allow_nan=False))
    assert VolumeAnalyticsState.from_dict(data) == state
    assert VolumeAnalyticsState.from_dict(VolumeAnalyticsState().to_dict()) == (
        VolumeAnalyticsState()
    )
    with pytest.raises(ValueError):
        VolumeAnalyticsState.from_dict({**data, "v": 99})


# One step of a random feed: how far the next bar starts after the previous one (0 is a
# redelivery, negative a late bar, 2000 jumps to a later session), its volume (0 = flat)
# and its high/low/close in ticks around a drifting price.
_steps = st.lists(
    st.tuples(
        st.sampled_from([1, 1, 1, 1, 2, 0, -1, 3, 2000]),
        st.one_of(st.just(0), st.integers(1, 50_000)),
        st.integers(-3, 3),
        st.integers(0, 4),
        st.integers(0, 4),
    ),
    min_size=1,
    max_size=60,
)


def _bars(steps: list[tuple[int, int, int, int, int]]) -> list[Bar]:
    start, mid, bars = epoch(2026, 11, 24, 9, 10), 20_000, []
    for minutes, volume, drift, up, down in steps:
        start += 60 * minutes
        mid = max(mid + drift, 10)
        hi, lo = mid + up, mid - down
        close = lo + (up + down) // 2
        bars.append(bar(start, volume, hi * 0.05, lo * 0.05, close * 0.05))
    return bars


_baseline = sum_per_slot(lambda slot: None if slot % 11 == 7 else 40_000.0 + 100 * slot)


def _run(state: VolumeAnalyticsState, bars: list[Bar]) -> list[VolumeResult | None]:
    return [feed(state, b, _baseline) for b in bars]


@settings(max_examples=150, deadline=None)
@given(steps=_steps, data=st.data())
def test_snapshot_mid_session_resumes_identically(
    steps: list[tuple[int, int, int, int, int]], data: st.DataObject
) -> None:
    bars = _bars(steps)
    split = data.draw(st.integers(0, len(bars)), label="split")
    whole = VolumeAnalyticsState()
    expected = _run(whole, bars)

    first = VolumeAnalyticsState()
    got = _run(first, bars[:split])
    restored = VolumeAnalyticsState.from_dict(
        json.loads(json.dumps(first.to_dict(), allow_nan=False))
    )
    assert restored == first
    got += _run(restored, bars[split:])
    assert got == expected
    assert restored == whole
    assert [r.to_redis() for r in got if r] == [r.to_redis() for r in expected if r]


@settings(max_examples=150, deadline=None)
@given(steps=_steps)
def test_invariants_on_random_feeds(steps: list[tuple[int, int, int, int, int]]) -> None:
    state = VolumeAnalyticsState()
    for b in _bars(steps):
        r = feed(state, b, _baseline)
        if r is None:
            continue
        assert sum(state.profile.values()) == r.session_volume == state.session_volume
        assert all(v > 0 for v in state.profile.values())
        assert len(state.window) <= 5
        if r.volume_ratio_raw is not None:
            assert r.volume_ratio == min(r.volume_ratio_raw, 50.0)
            assert math.isfinite(r.volume_ratio_raw)
        if r.vwap is None:
            assert r.session_volume == 0 and r.poc is None
            continue
        assert r.poc is not None and r.value_area_low is not None
        assert r.value_area_high is not None
        assert r.value_area_low <= r.poc <= r.value_area_high
        lo, hi = round(r.value_area_low / 0.05), round(r.value_area_high / 0.05)
        inside = sum(v for level, v in state.profile.items() if lo <= level <= hi)
        assert inside * 100 >= 70 * r.session_volume
        # One level per bar at the rounded typical price: the profile's mean is within a
        # third of a tick of the VWAP.
        mean = sum(level * v for level, v in state.profile.items()) / r.session_volume
        assert abs(mean * 0.05 - r.vwap) <= 0.05 / 3 + 1e-9
