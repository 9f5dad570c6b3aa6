"""Incremental indicators against TA-Lib's batch functions (the oracle), restarts,
redeliveries, backfill, session VWAP and the Redis form.

Tolerance: the spec's 1e-9 relative. A quantity that crosses zero (the MACD family) or
sits at 0 (a %K of a close at the window's low) has no meaningful relative error, so the
error is taken relative to ``max(|TA-Lib value|, floor)``: the bar's close for the MACD
family (a difference of two price-level EMAs), 1 for the 0..100 oscillators.
"""

from __future__ import annotations

import json
import math
from datetime import date, datetime, timedelta
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import talib

from core.bars import Bar
from core.history import parse_kite_json
from core.indicators import (
    BATCH_MIN_BARS,
    IND_FIELDS,
    LOOKBACK,
    IndicatorResult,
    IndicatorState,
    backfill,
)
from core.sessions import ist_date, ist_midnight
from core.volume_analytics import VolumeAnalyticsState
from core.volume_analytics import update as volume_update

SAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "kite-historical-minute-sample.json"
TOKEN = 408065  # an NSE equity token (segment 1)
RTOL = 1e-9
VALUE_FIELDS = IND_FIELDS[1:]
PRICE_SCALED = ("macd", "macd_signal", "macd_hist")
OSCILLATORS = ("rsi_14", "adx_14", "stoch_k", "stoch_d")


# --------------------------------------------------------------------------------------
# Series.


def _session_starts(first_day: date, sessions: int) -> list[int]:
    """Bar starts of ``sessions`` NSE sessions (375 minutes from 09:15 IST) on weekdays."""
    starts: list[int] = []
    ordinal = first_day.toordinal()
    while len(starts) < sessions * 375:
        day = date.fromordinal(ordinal)
        ordinal += 1
        if day.weekday() >= 5:
            continue
        open_s = ist_midnight(day) + (9 * 60 + 15) * 60
        starts.extend(open_s + 60 * i for i in range(375))
    return starts


def random_walk_bars(count: int, seed: int, price: float = 250.0) -> list[Bar]:
    """A seeded geometric random walk on the NSE minute grid, with overnight gaps, about
    4% flat bars (no ticks: OHLC = previous close, volume 0) and zero-volume bars."""
    rng = np.random.default_rng(seed)
    starts = _session_starts(date(2024, 1, 1), count // 375 + 1)[:count]
    steps = rng.normal(0.0, 0.0015, count)
    steps[::375] += rng.normal(0.0, 0.01, len(steps[::375]))  # opening gaps
    closes = price * np.exp(np.cumsum(steps))
    wick_up = rng.uniform(0.0, 0.001, count)
    wick_down = rng.uniform(0.0, 0.001, count)
    volumes = rng.integers(0, 20_000, count)
    flat = rng.random(count) < 0.04
    bars: list[Bar] = []
    prev_close = price
    for i in range(count):
        if flat[i] and i:
            bars.append(Bar(TOKEN, starts[i], prev_close, prev_close, prev_close, prev_close, 0, 0))
            continue
        close = float(closes[i])
        high = max(prev_close, close) * (1 + float(wick_up[i]))
        low = min(prev_close, close) * (1 - float(wick_down[i]))
        bars.append(Bar(TOKEN, starts[i], prev_close, high, low, close, int(volumes[i]), 1))
        prev_close = close
    return bars


def real_candles() -> list[Bar]:
    bars, skipped = parse_kite_json(SAMPLE.read_bytes(), TOKEN)
    assert not skipped and len(bars) >= 5
    return bars


def real_shaped_bars(sessions: int = 8, seed: int = 11) -> list[Bar]:
    """The real Kite candles of the fixture, continued in their shape: prices on the
    0.05 tick grid (so highs, lows and closes repeat and tie, as in real data), integer
    volumes of the sample's size, U-shaped through the session, some flat bars, several
    sessions with overnight gaps."""
    real = real_candles()
    rng = np.random.default_rng(seed)
    tick = 0.05
    mean_volume = float(np.mean([b.volume for b in real]))
    day = ist_date(real[0].start)
    starts = _session_starts(day, sessions)
    assert starts[: len(real)] == [b.start for b in real]
    bars = list(real)
    last = round(real[-1].close / tick)
    for i in range(len(real), len(starts)):
        slot = i % 375
        if rng.random() < 0.03:
            price = round(last * tick, 2)
            bars.append(Bar(TOKEN, starts[i], price, price, price, price, 0, 0))
            continue
        gap = int(rng.normal(0, 40)) if slot == 0 else 0
        open_ = last + gap
        close = open_ + int(rng.normal(0, 12))
        high = max(open_, close) + int(rng.exponential(4))
        low = min(open_, close) - int(rng.exponential(4))
        shape = 1.0 + 2.5 * ((slot - 187) / 187) ** 2
        volume = int(rng.lognormal(math.log(mean_volume * shape), 0.6))
        bars.append(
            Bar(
                TOKEN,
                starts[i],
                round(open_ * tick, 2),
                round(high * tick, 2),
                round(low * tick, 2),
                round(close * tick, 2),
                volume,
                int(rng.integers(1, 200)),
            )
        )
        last = close
    return bars


# --------------------------------------------------------------------------------------
# Oracle and comparison.


def talib_reference(bars: list[Bar]) -> dict[str, np.ndarray]:
    high = np.array([b.high for b in bars])
    low = np.array([b.low for b in bars])
    close = np.array([b.close for b in bars])
    volume = np.array([b.volume for b in bars], dtype=np.float64)
    out: dict[str, np.ndarray] = {"sma_20": talib.SMA(close, 20)}
    for period in (9, 20, 50, 200):
        out[f"ema_{period}"] = talib.EMA(close, period)
    out["rsi_14"] = talib.RSI(close, 14)
    out["macd"], out["macd_signal"], out["macd_hist"] = talib.MACD(close, 12, 26, 9)
    out["bb_upper"], out["bb_middle"], out["bb_lower"] = talib.BBANDS(
        close, timeperiod=20, nbdevup=2, nbdevdn=2, matype=talib.MA_Type.SMA
    )
    out["atr_14"] = talib.ATR(high, low, close, 14)
    out["adx_14"] = talib.ADX(high, low, close, 14)
    sma = talib.MA_Type.SMA  # STOCH(14, 3, 0, 3, 0): both smoothings simple
    out["stoch_k"], out["stoch_d"] = talib.STOCH(high, low, close, 14, 3, sma, 3, sma)
    out["obv"] = talib.OBV(close, volume)
    return out


def as_arrays(results: list[IndicatorResult]) -> dict[str, np.ndarray]:
    return {
        name: np.array(
            [np.nan if getattr(r, name) is None else getattr(r, name) for r in results],
            dtype=np.float64,
        )
        for name in VALUE_FIELDS
    }


def assert_matches_talib(results: list[IndicatorResult], bars: list[Bar]) -> None:
    assert [r.bar_start for r in results] == [b.start for b in bars]
    reference = talib_reference(bars)
    ours = as_arrays(results)
    close = np.array([b.close for b in bars])
    for name, expected in reference.items():
        got = ours[name]
        lookback = LOOKBACK[name]
        # Same warm-up as TA-Lib: empty exactly where TA-Lib has no value.
        assert np.isnan(expected[:lookback]).all() and not np.isnan(expected[lookback:]).any()
        assert np.isnan(got[:lookback]).all(), f"{name}: a value inside the lookback"
        assert not np.isnan(got[lookback:]).any(), f"{name}: no value after the lookback"
        if name == "obv":
            assert np.array_equal(got, expected), "obv differs"
            continue
        floor: np.ndarray | float = np.finfo(np.float64).tiny  # 0 / tiny: no error
        if name in PRICE_SCALED:
            floor = close
        elif name in OSCILLATORS:
            floor = 1.0
        error = (np.abs(got - expected) / np.maximum(np.abs(expected), floor))[lookback:]
        worst = int(np.argmax(error))
        assert error[worst] <= RTOL, (
            f"{name} at bar {worst + lookback}: ours {got[worst + lookback]!r}, "
            f"TA-Lib {expected[worst + lookback]!r}"
        )


def in_order_sum(values: list[float]) -> float:
    """Left-to-right float sum, as TA-Lib seeds (``sum`` compensates from Python 3.12)."""
    total = 0.0
    for value in values:
        total += value
    return total


def fold(bars: list[Bar], state: IndicatorState | None = None) -> list[IndicatorResult]:
    state = state if state is not None else IndicatorState()
    results = []
    for bar in bars:
        result = state.update(bar)
        assert result is not None
        results.append(result)
    return results


@pytest.fixture(scope="module")
def walk() -> list[Bar]:
    return random_walk_bars(20_000, seed=20240101)


@pytest.fixture(scope="module")
def walk_results(walk: list[Bar]) -> list[IndicatorResult]:
    return fold(walk)


@pytest.fixture(scope="module")
def real_shaped() -> list[Bar]:
    return real_shaped_bars()


# --------------------------------------------------------------------------------------
# Parity.


def test_long_random_walk_matches_talib(walk: list[Bar], walk_results: list[IndicatorResult]):
    assert sum(b.flat for b in walk) > 500  # flat bars are part of the series
    assert_matches_talib(walk_results, walk)


def test_recurrences_equal_talib_bit_for_bit_where_talib_is_cpu_independent(
    walk: list[Bar], walk_results: list[IndicatorResult]
):
    """RSI and ADX follow the installed TA-Lib's expressions exactly (it builds them
    without an FMA clone), OBV is integer: any slip in an operation's order shows here
    long before it reaches 1e-9."""
    reference = talib_reference(walk)
    ours = as_arrays(walk_results)
    for name in ("rsi_14", "adx_14", "obv"):
        lookback = LOOKBACK[name]
        assert np.array_equal(ours[name][lookback:], reference[name][lookback:]), name


def test_real_shaped_series_matches_talib(real_shaped: list[Bar]):
    assert real_shaped[:6] == real_candles()[:6]
    assert len({ist_date(b.start) for b in real_shaped}) == 8
    assert_matches_talib(fold(real_shaped), real_shaped)


def _exact_fast_k(bars: list[Bar], j: int) -> Fraction:
    window = bars[j - 13 : j + 1]
    lowest = Fraction(min(b.low for b in window))
    spread = Fraction(max(b.high for b in window)) - lowest
    return (Fraction(bars[j].close) - lowest) / spread * 100 if spread else Fraction(0)


def test_window_indicators_carry_no_drift(walk: list[Bar], walk_results):
    """SMA, Bollinger and %K are recomputed from their windows, so after 20,000 bars they
    are still within rounding of the exact rational values (TA-Lib's running sums are
    not: that is its drift, which the 1e-9 comparison above tolerates)."""
    for i in range(5_000, len(walk), 2_999):
        window = [Fraction(b.close) for b in walk[i - 19 : i + 1]]
        mean = sum(window, Fraction(0)) / 20
        variance = sum(((x - mean) ** 2 for x in window), Fraction(0)) / 20
        result = walk_results[i]
        assert result.sma_20 is not None and result.bb_upper is not None
        assert abs(Fraction(result.sma_20) - mean) <= Fraction(math.ulp(float(mean)))
        band = result.bb_upper - result.sma_20
        assert math.isclose(band, 2 * math.sqrt(variance), rel_tol=1e-12)
        slow_k = sum((_exact_fast_k(walk, j) for j in range(i - 2, i + 1)), Fraction(0)) / 3
        assert result.stoch_k is not None
        assert abs(result.stoch_k - float(slow_k)) <= 4 * math.ulp(100.0)  # %K is 0..100


def test_first_macd_uses_talibs_fast_seed_window(real_shaped: list[Bar]):
    """The subtle alignment, spelled out: TA-Lib seeds MACD's fast EMA with the mean of
    closes 14..25 (where the slow EMA is seeded), not with closes 0..11."""
    closes = [b.close for b in real_shaped[:34]]
    fast = in_order_sum(closes[14:26]) / 12
    slow = in_order_sum(closes[:26]) / 26
    line = [fast - slow]
    for close in closes[26:34]:
        fast = (close - fast) * (2 / 13) + fast
        slow = (close - slow) * (2 / 27) + slow
        line.append(fast - slow)
    result = fold(real_shaped[:34])[-1]
    assert result.macd == line[-1]
    assert result.macd_signal == in_order_sum(line) / 9
    standalone_fast = talib.EMA(np.array(closes), 12)[-1]
    assert not math.isclose(fast, standalone_fast, rel_tol=1e-9)


def test_restart_from_json_continues_bit_for_bit(walk: list[Bar], walk_results):
    for cut in (1, 17, 33, 150, 10_001):
        state = IndicatorState()
        fold(walk[:cut], state)
        wire = json.dumps(state.to_dict())
        restored = IndicatorState.from_dict(json.loads(wire))
        assert restored == state
        tail = walk[cut : cut + 3000]
        assert fold(tail, restored) == walk_results[cut : cut + 3000], cut
    # and the whole restarted run is still TA-Lib's
    state = IndicatorState()
    first = fold(walk[:9_999], state)
    restored = IndicatorState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert_matches_talib(first + fold(walk[9_999:], restored), walk)


def test_redelivered_and_late_bars_are_ignored(real_shaped: list[Bar]):
    bars = real_shaped[:1200]
    state = IndicatorState()
    results = []
    rng = np.random.default_rng(3)
    for i, bar in enumerate(bars):
        result = state.update(bar)
        assert result is not None
        results.append(result)
        if i and rng.random() < 0.2:
            before = state.to_dict()
            old = bars[int(rng.integers(max(0, i - 30), i + 1))]  # a duplicate or late bar
            again = Bar(old.instrument_token, old.start, 1.0, 1e6, 0.5, 99.0, 10**6, 5)
            assert state.update(again) is None
            assert state.update(old) is None
            assert state.to_dict() == before
    assert results == fold(bars)
    assert_matches_talib(results, bars)


# --------------------------------------------------------------------------------------
# Backfill.


def _assert_states_close(ours: IndicatorState, folded: IndicatorState) -> None:
    a, b = ours.to_dict(), folded.to_dict()
    assert a.keys() == b.keys()
    for key in a:
        x, y = a[key], b[key]
        if isinstance(x, float) and key != "sum_pv":
            assert math.isclose(x, y, rel_tol=1e-12, abs_tol=1e-12), (key, x, y)
        elif key == "ema":
            assert all(math.isclose(p, q, rel_tol=1e-12) for p, q in zip(x, y, strict=True))
        else:
            assert x == y, (key, x, y)  # integers, windows, VWAP sums: exact


@pytest.mark.parametrize("count", [0, 1, 30, BATCH_MIN_BARS - 1, BATCH_MIN_BARS, 201, 2_500])
def test_backfill_then_live_matches_talib(real_shaped: list[Bar], count: int):
    state = backfill(real_shaped[:count])
    folded = IndicatorState()
    folded_results = fold(real_shaped[:count], folded)
    _assert_states_close(state, folded)
    if count < BATCH_MIN_BARS:  # short histories are folded: identical, not just close
        assert state == folded
    if count:
        after = state.result()
        assert after is not None and after.bar_start == real_shaped[count - 1].start
        assert after.obv == folded_results[-1].obv
        assert after.vwap == folded_results[-1].vwap
    live = fold(real_shaped[count:], state)
    assert_matches_talib(folded_results + live, real_shaped)


def test_backfill_long_random_walk_then_live(walk: list[Bar], walk_results):
    state = backfill(walk[:15_000])
    live = fold(walk[15_000:], state)
    assert_matches_talib(walk_results[:15_000] + live, walk)


def test_backfill_drops_duplicates_like_the_machine(real_shaped: list[Bar]):
    bars = real_shaped[:600]
    noisy = bars[:300] + bars[250:260] + [bars[10]] + bars[300:]
    _assert_states_close(backfill(noisy), backfill(bars))
    folded = IndicatorState()
    for bar in noisy:
        folded.update(bar)
    _assert_states_close(backfill(noisy), folded)


def test_backfill_rejects_bad_bars(real_shaped: list[Bar]):
    bars = list(real_shaped[:400])
    b = bars[300]
    bars[300] = Bar(b.instrument_token, b.start, b.open, b.high, b.low, math.nan, 1, 1)
    with pytest.raises(ValueError, match="non-finite"):
        backfill(bars)
    bars[300] = Bar(b.instrument_token, b.start, b.open, b.high, b.low, b.close, -1, 1)
    with pytest.raises(ValueError, match="negative"):
        backfill(bars)


# --------------------------------------------------------------------------------------
# Session VWAP.


def _bar(start: int, high: float, low: float, close: float, volume: int) -> Bar:
    return Bar(TOKEN, start, close, high, low, close, volume, 1 if volume else 0)


def test_vwap_resets_at_the_ist_session_boundary():
    """MCX-like bars across IST midnight (18:30 UTC), where UTC's date does not change."""
    midnight = ist_midnight(date(2024, 3, 5))
    bars = [
        _bar(midnight - 120, 101.0, 99.0, 100.0, 10),  # 23:58 IST on the 4th
        _bar(midnight - 60, 103.0, 100.0, 102.5, 30),  # 23:59 IST on the 4th
        _bar(midnight, 110.0, 104.0, 105.0, 0),  # 00:00 IST on the 5th: no volume yet
        _bar(midnight + 60, 106.0, 104.5, 105.5, 20),
        _bar(midnight + 120, 107.0, 105.0, 106.0, 5),
    ]
    assert ist_date(bars[1].start) != ist_date(bars[2].start)
    results = fold(bars)
    tp = [(b.high + b.low + b.close) / 3.0 for b in bars]
    assert results[0].vwap == tp[0]
    assert results[1].vwap == pytest.approx((tp[0] * 10 + tp[1] * 30) / 40, rel=1e-15)
    assert results[2].vwap is None  # new session, no volume: reset, not carried
    assert results[2].to_redis()["vwap"] == ""
    assert results[3].vwap == tp[3]
    assert results[4].vwap == pytest.approx((tp[3] * 20 + tp[4] * 5) / 25, rel=1e-15)
    # other indicators run straight through the session boundary
    assert results[4].obv == 10 + 30 + 0 + 20 + 5


def test_vwap_equals_the_volume_engines_to_the_bit(real_shaped: list[Bar]):
    indicators = IndicatorState()
    volume = VolumeAnalyticsState()
    for bar in real_shaped[:2000]:
        ours = indicators.update(bar)
        theirs = volume_update(volume, bar, tick_size=0.05, baseline=None, baseline_source="x")
        assert ours is not None and theirs is not None
        assert ours.vwap == theirs.vwap


# --------------------------------------------------------------------------------------
# Redis form, warm-up, edge cases.


def test_warm_up_fields_are_empty_then_numbers_never_nan(walk: list[Bar]):
    state = IndicatorState()
    for n, bar in enumerate(walk[:60]):
        result = state.update(bar)
        assert result is not None
        fields = result.to_redis()
        assert tuple(fields) == IND_FIELDS
        assert fields["bar_start"].endswith("+05:30")
        for name in VALUE_FIELDS:
            value = fields[name]
            if name in LOOKBACK and n < LOOKBACK[name]:
                assert value == "", (n, name)
            elif name == "vwap" and state.session_volume == 0:
                assert value == ""
            else:
                assert value != "" and math.isfinite(float(value)), (n, name, value)
                assert value.lower() not in ("nan", "inf", "-inf")


def test_to_redis_round_trips_every_value(walk_results: list[IndicatorResult]):
    result = walk_results[-1]
    fields = result.to_redis()
    for name in VALUE_FIELDS:
        assert float(fields[name]) == getattr(result, name), name
    assert fields["obv"] == str(result.obv) and "." not in fields["obv"]
    when = datetime.fromisoformat(fields["bar_start"])
    assert when.utcoffset() == timedelta(hours=5, minutes=30)
    assert when.timestamp() == result.bar_start


@pytest.mark.parametrize("price", [100.05, 1702.8, 0.05])
def test_constant_price_series(price: float):
    """Zero ranges everywhere: TA-Lib's 0 for RSI, %K and ADX, zero ATR and bandwidth;
    nothing is NaN or infinite."""
    start = ist_midnight(date(2024, 1, 1)) + 9 * 3600 + 15 * 60
    bars = [Bar(TOKEN, start + 60 * i, price, price, price, price, 0, 0) for i in range(300)]
    results = fold(bars)
    for result in results:
        for name, value in result.to_redis().items():
            assert value.lower() not in ("nan", "inf", "-inf"), name
    last = results[-1]
    assert last.rsi_14 == 0.0 and last.stoch_k == 0.0 and last.stoch_d == 0.0
    assert last.adx_14 == 0.0 and last.atr_14 == 0.0
    assert last.bb_upper == last.bb_middle == last.bb_lower == last.sma_20 == price
    assert last.vwap is None and last.obv == 0
    assert_matches_talib(results, bars)


def test_bad_bar_raises_and_changes_nothing(real_shaped: list[Bar]):
    state = IndicatorState()
    fold(real_shaped[:100], state)
    before = state.to_dict()
    b = real_shaped[100]
    for bad in (
        Bar(TOKEN, b.start, b.open, math.inf, b.low, b.close, 1, 1),
        Bar(TOKEN, b.start, b.open, b.high, b.low, math.nan, 1, 1),
        Bar(TOKEN, b.start, b.open, b.high, b.low, b.close, -5, 1),
    ):
        with pytest.raises(ValueError):
            state.update(bad)
        assert state.to_dict() == before
    assert state.update(b) is not None


def test_from_dict_rejects_foreign_snapshots(walk: list[Bar]):
    state = IndicatorState()
    fold(walk[:50], state)
    data = json.loads(json.dumps(state.to_dict()))
    with pytest.raises(ValueError, match="version"):
        IndicatorState.from_dict({**data, "v": 99})
    with pytest.raises(ValueError, match="longer"):
        IndicatorState.from_dict({**data, "closes": data["closes"] * 2})
    with pytest.raises(ValueError, match="EMAs"):
        IndicatorState.from_dict({**data, "ema": data["ema"][:2]})
    assert IndicatorState().result() is None
    empty = IndicatorState.from_dict(json.loads(json.dumps(IndicatorState().to_dict())))
    assert empty == IndicatorState()
