"""Time-aware volume baselines: per-slot means over the last N sessions, the legacy
time-of-day fallback, the unknown case, idempotent updates and serialisation."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import date, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.bars import Bar
from core.baselines import (
    DEFAULT_POLICY,
    LEGACY_BANDS,
    BaselinePolicy,
    SessionAccumulator,
    TokenBaseline,
    add_session,
    daily_volume,
    expected,
    expected_profile,
    expected_window,
    multipliers,
    source,
)
from core.sessions import slot_count, slot_of
from core.timeutil import IST

RELIANCE = 738561  # NSE, segment 1: 375 slots
CRUDE = 58424839  # segment 7 (MCX): 09:00 to 23:30, 870 slots
USDINR = 1 << 8 | 3  # segment 3 (CDS): 09:00 to 17:00, 480 slots
NSE_SLOTS = 375
DAY0 = date(2026, 11, 2).toordinal()


def flat(volume: int, n: int = NSE_SLOTS) -> list[int | None]:
    return [volume] * n


def with_sessions(
    volumes_by_session: Sequence[Sequence[int | None]], token: int = RELIANCE
) -> TokenBaseline:
    b = TokenBaseline.for_token(token)
    for k, vols in enumerate(volumes_by_session):
        b = add_session(b, DAY0 + k, vols)
    return b


def slot_at(hh: int, mm: int, token: int = RELIANCE) -> int:
    start = int(datetime(2026, 11, 24, hh, mm, tzinfo=IST).timestamp())
    slot = slot_of(token & 0xFF, start)
    assert slot is not None
    return slot


# --- history mode --------------------------------------------------------------------


def test_expected_is_the_exact_mean_over_20_sessions() -> None:
    sessions = [[1000 * k + slot for slot in range(NSE_SLOTS)] for k in range(1, 21)]
    b = with_sessions(sessions)
    assert source(b) == "history:20"
    for slot in (0, 1, 44, 187, 374):
        assert expected(b, slot) == sum(s[slot] for s in sessions) / 20
    assert expected(b, 7) == 10_507.0  # (1000 + ... + 20000) / 20 + 7


def test_only_the_latest_20_of_25_sessions_count_in_any_insertion_order() -> None:
    sessions = {DAY0 + k: [k * 10 + (slot % 7) for slot in range(NSE_SLOTS)] for k in range(25)}
    order = [
        17,
        3,
        24,
        0,
        11,
        5,
        22,
        8,
        14,
        1,
        19,
        6,
        23,
        9,
        2,
        12,
        20,
        4,
        15,
        7,
        21,
        10,
        18,
        13,
        16,
    ]
    b = TokenBaseline.for_token(RELIANCE)
    for k in order:
        b = add_session(b, DAY0 + k, sessions[DAY0 + k])
    assert [o for o, _ in b.sessions] == [DAY0 + k for k in range(5, 25)]
    assert source(b) == "history:20"
    latest = [sessions[DAY0 + k] for k in range(5, 25)]
    for slot in range(0, NSE_SLOTS, 37):
        assert expected(b, slot) == sum(s[slot] for s in latest) / 20
    # A session older than the 20 kept ones is dropped straight away.
    assert add_session(b, DAY0 - 1, flat(10**9)) == b


def test_readding_a_session_replaces_it() -> None:
    b = with_sessions([flat(100), flat(200), flat(300)])
    assert expected(b, 0) == 200.0
    again = add_session(b, DAY0 + 1, flat(200))
    assert again == b  # idempotent: same session, same volumes, same state
    corrected = add_session(b, DAY0 + 1, flat(500))
    assert len(corrected.sessions) == 3
    assert expected(corrected, 0) == 300.0  # (100 + 500 + 300) / 3
    assert b.sessions[1][1][0] == 200  # immutable: the original is untouched


def test_unobserved_slots_are_left_out_of_that_slots_mean() -> None:
    partial: list[int | None] = [None] * 100 + [40] * (NSE_SLOTS - 100)
    b = with_sessions([flat(10), flat(20), partial, flat(30)])
    assert expected(b, 0) == 20.0  # (10 + 20 + 30) / 3: the partial day is not a zero
    assert expected(b, 200) == 25.0  # (10 + 20 + 40 + 30) / 4


def test_a_slot_no_session_observed_takes_the_fallback_value() -> None:
    hole: list[int | None] = [None] + [375] * (NSE_SLOTS - 1)
    b = with_sessions([hole, hole, hole])
    assert source(b) == "history:3"
    profile = expected_profile(b)
    assert profile is not None
    assert profile[1] == 375.0
    adv = daily_volume(b)
    assert adv is not None
    assert profile[0] == pytest.approx(adv / NSE_SLOTS * 1.8)
    assert expected(b, 0) == profile[0]


def test_a_smaller_window_policy_reads_only_the_latest_sessions() -> None:
    b = with_sessions([flat(100 * k) for k in range(1, 11)])
    five = BaselinePolicy(window=5)
    assert source(b, policy=five) == "history:5"
    assert expected(b, 3, policy=five) == 800.0  # (600 + ... + 1000) / 5


def test_zero_volume_history_is_a_known_zero_not_an_error() -> None:
    """Indices trade no volume: the expected volume is 0.0 (callers guard the ratio)."""
    b = with_sessions([flat(0)] * 4)
    assert expected(b, 10) == 0.0
    assert expected_window(b, range(5)) == 0.0
    one = with_sessions([flat(0)])
    assert source(one) == "fallback:1"
    assert expected(one, 0) == 0.0


# --- fallback ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hh", "mm", "multiplier"),
    [
        (9, 15, 1.8),
        (9, 59, 1.8),
        (10, 0, 1.2),
        (11, 29, 1.2),
        (11, 30, 0.9),
        (12, 29, 0.9),
        (12, 30, 1.1),
        (13, 59, 1.1),
        (14, 0, 1.3),
        (14, 59, 1.3),
        (15, 0, 2.0),
        (15, 29, 2.0),
    ],
)
def test_fallback_is_daily_volume_per_slot_times_the_band_multiplier(
    hh: int, mm: int, multiplier: float
) -> None:
    """Each band's first and last minute (half-open bands: 10:00 is already 1.2)."""
    b = with_sessions([flat(1000)])  # one full session: daily volume 375,000
    assert source(b) == "fallback:1"
    assert daily_volume(b) == 375_000.0
    slot = slot_at(hh, mm)
    assert expected(b, slot) == pytest.approx(1000 * multiplier)
    two = with_sessions([flat(1000), flat(3000)])  # daily volume = mean of the two days
    assert source(two) == "fallback:2"
    assert expected(two, slot) == pytest.approx(2000 * multiplier)


def test_band_slots_and_legacy_multiplier_sum() -> None:
    m = multipliers(1)
    assert len(m) == NSE_SLOTS
    assert [slot_at(h, mm) for h, mm in ((10, 0), (11, 30), (12, 30), (14, 0), (15, 0))] == [
        45,
        135,
        195,
        285,
        345,
    ]
    assert sum(m) == pytest.approx(480.0)  # the legacy bands average 1.28, not 1
    assert LEGACY_BANDS[0][0] == 9 * 60 + 15 and LEGACY_BANDS[-1][1] == 15 * 60 + 30


def test_three_sessions_leave_the_fallback() -> None:
    b = with_sessions([flat(1000), flat(1000)])
    assert expected(b, 0) == pytest.approx(1800.0)
    b = add_session(b, DAY0 + 2, flat(1000))
    assert source(b) == "history:3"
    assert expected(b, 0) == 1000.0


def test_partial_sessions_are_extrapolated_to_a_day_by_the_multiplier_shape() -> None:
    # Watched from 14:00 only, at exactly the fallback's shape: 1.3 then 2.0 per unit.
    vols: list[int | None] = [None] * 285 + [1300] * 60 + [2000] * 30
    b = with_sessions([vols])
    # observed 138,000 over a weight of 138 of the day's 480: 480,000 for the whole day
    assert daily_volume(b) == pytest.approx(480_000.0)
    assert expected(b, 0) == pytest.approx(480_000 / NSE_SLOTS * 1.8)


@pytest.mark.parametrize("token", [CRUDE, USDINR])
def test_other_sessions_fall_back_to_a_flat_multiplier(token: int) -> None:
    n = slot_count(token & 0xFF)
    assert n in (870, 480)
    b = with_sessions([flat(500, n)], token=token)
    assert set(multipliers(token & 0xFF)) == {1.0}
    for slot in (0, n // 2, n - 1):
        assert expected(b, slot) == pytest.approx(500.0)
    # 10:00 IST in MCX is not NSE's 10:00 band.
    assert expected(b, slot_at(10, 0, token)) == pytest.approx(500.0)


def test_provided_daily_volume_is_used_only_without_sessions() -> None:
    b = TokenBaseline.for_token(RELIANCE, daily_volume=750_000)
    assert source(b) == "fallback:daily_volume"
    assert expected(b, slot_at(12, 0)) == pytest.approx(2000 * 0.9)
    b = add_session(b, DAY0, flat(100))
    assert source(b) == "fallback:1"
    assert expected(b, slot_at(12, 0)) == pytest.approx(100 * 0.9)


def test_normalized_multipliers_make_the_fallback_day_sum_to_the_daily_volume() -> None:
    policy = BaselinePolicy(normalize_multipliers=True)
    b = with_sessions([flat(1000)])
    profile = expected_profile(b, policy=policy)
    assert profile is not None
    assert sum(profile) == pytest.approx(375_000.0)
    assert profile[0] / profile[200] == pytest.approx(1.8 / 1.1)


# --- unknown -------------------------------------------------------------------------


def test_nothing_known_is_none_and_never_a_division() -> None:
    b = TokenBaseline.for_token(RELIANCE)
    assert source(b) == "none"
    assert expected(b, 0) is None
    assert expected_window(b, range(5)) is None
    assert expected_profile(b) is None
    assert daily_volume(b) is None


# --- windows, slots, validation --------------------------------------------------------


def test_expected_window_sums_the_slots() -> None:
    b = with_sessions([[slot for slot in range(NSE_SLOTS)]] * 3)
    assert expected_window(b, range(10, 15)) == 10 + 11 + 12 + 13 + 14
    assert expected_window(b, []) == 0.0
    with pytest.raises(ValueError, match="outside"):
        expected(b, NSE_SLOTS)
    with pytest.raises(ValueError, match="outside"):
        expected_window(b, [-1])


@pytest.mark.parametrize(
    ("vols", "match"),
    [
        (flat(1, NSE_SLOTS - 1), "expected 375"),
        ([-1, *flat(1, NSE_SLOTS - 1)], "whole number"),
        ([1.5, *flat(1, NSE_SLOTS - 1)], "whole number"),
        ([True, *flat(1, NSE_SLOTS - 1)], "whole number"),
        ([float("inf"), *flat(1, NSE_SLOTS - 1)], "whole number"),
        (["7", *flat(1, NSE_SLOTS - 1)], "whole number"),
        ([None] * NSE_SLOTS, "no observed slot"),
    ],
)
def test_add_session_rejects_what_is_not_a_session(vols: list, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        add_session(TokenBaseline.for_token(RELIANCE), DAY0, vols)


def test_policy_and_daily_volume_validation() -> None:
    with pytest.raises(ValueError):
        BaselinePolicy(window=0)
    with pytest.raises(ValueError):
        BaselinePolicy(other_multiplier=0.0)
    with pytest.raises(ValueError):
        TokenBaseline.for_token(RELIANCE, daily_volume=float("nan"))


@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.lists(st.one_of(st.none(), st.integers(0, 10**7)), min_size=375, max_size=375).filter(
            lambda v: any(x is not None for x in v)
        ),
        min_size=0,
        max_size=6,
    )
)
def test_profile_agrees_with_expected_slot_by_slot(sessions: list[list[int | None]]) -> None:
    b = with_sessions(sessions)
    profile = expected_profile(b)
    if not sessions:
        assert profile is None
        return
    assert profile is not None
    for slot in range(0, NSE_SLOTS, 11):
        assert expected(b, slot) == pytest.approx(profile[slot], rel=1e-12)


# --- serialisation -------------------------------------------------------------------


def test_round_trip_through_json() -> None:
    holes: list[int | None] = [None] * 10
    b = with_sessions([flat(5), holes + flat(7, NSE_SLOTS - 10), flat(9)])
    b = TokenBaseline(b.segment, b.sessions, daily_volume=12345.5)
    text = json.dumps(b.to_dict())
    back = TokenBaseline.from_dict(json.loads(text))
    assert back == b
    assert expected(back, 3) == expected(b, 3)
    assert back.session_dates[0] == date.fromordinal(DAY0)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.update(v=99),
        lambda d: d.pop("segment"),
        lambda d: d["sessions"][0][1].pop(),
        lambda d: d["sessions"][0][1].__setitem__(0, -5),
        lambda d: d.update(sessions=[[1, 2]]),
        lambda d: d.update(daily_volume=-1),
    ],
)
def test_from_dict_rejects_malformed_state(mutate: Callable[[dict[str, Any]], object]) -> None:
    data = with_sessions([flat(5)]).to_dict()
    mutate(data)
    with pytest.raises(ValueError):
        TokenBaseline.from_dict(data)


# --- session accumulator ---------------------------------------------------------------


def bar(hh: int, mm: int, volume: int, *, token: int = RELIANCE, day: int = 24) -> Bar:
    start = int(datetime(2026, 11, day, hh, mm, tzinfo=IST).timestamp())
    return Bar(token, start, 100.0, 100.0, 100.0, 100.0, volume, 1)


def test_accumulator_builds_slot_volumes_from_bars() -> None:
    acc = SessionAccumulator(RELIANCE, date(2026, 11, 24))
    assert acc.finish() is None  # nothing seen: no session
    assert acc.add(bar(9, 15, 10))
    assert acc.add(bar(9, 16, 20))
    assert acc.add(bar(9, 16, 25))  # a redelivered / corrected bar replaces
    assert acc.add(bar(15, 29, 5))
    assert not acc.add(bar(9, 17, 1, token=408065))  # another token
    assert not acc.add(bar(9, 17, 1, day=25))  # another session
    assert not acc.add(bar(9, 14, 1))  # before the open
    assert not acc.add(bar(15, 30, 1))  # the close
    assert acc.observed == 3
    finished = acc.finish()
    assert finished is not None
    ordinal, vols = finished
    assert ordinal == date(2026, 11, 24).toordinal()
    assert vols[:3] == (10, 25, None) and vols[-1] == 5 and len(vols) == NSE_SLOTS
    assert acc.slot_volumes(unobserved=0)[2] == 0
    back = SessionAccumulator.from_dict(json.loads(json.dumps(acc.to_dict())))
    assert back == acc
    b = add_session(TokenBaseline.for_token(RELIANCE), *finished, policy=DEFAULT_POLICY)
    assert source(b) == "fallback:1"
