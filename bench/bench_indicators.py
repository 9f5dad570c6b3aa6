"""Indicator cost per bar: ``core.indicators`` incremental state against TA-Lib.

Run ``python -m bench.bench_indicators``. Every approach gets the same seeded series of
1-minute bars on the NSE grid (prices on a 0.05 tick, overnight gaps, a few flat bars)
and is timed in the same process, best of several repeats with the garbage collector
paused (as ``timeit`` does). Before timing, the incremental values are checked against
TA-Lib's batch functions on the full series: a fast indicator that is wrong is worthless,
so the command exits 1 if any value is off by more than 1e-9 relative.

Rows, all per bar:

- *TA-Lib batch, full series* (the baseline): the nine TA-Lib functions once over the
  whole series, divided by its length. The cheapest way to get every bar's values when
  the whole series is known in advance, i.e. not a live option, but the yardstick.
- *incremental*: :meth:`IndicatorState.update` per bar, what the indicator agent pays;
  and with :meth:`IndicatorResult.to_redis`, which it also pays.
- *naive trailing window*: at every bar, the nine TA-Lib functions over the last W bars
  (numpy views of prebuilt arrays, so this flatters it: a live version would also append
  to arrays). Its values are also wrong for the infinite-memory indicators unless W is
  long (EMA(200) forgets its start as (199/201)^W): the column "max rel err" says by
  how much, against TA-Lib on the full series.

Then the backfill of 20 sessions x 375 bars against folding the machine over them, and
the checkpoint cost of a state (JSON size, dump and load).
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import talib

from core.bars import Bar
from core.indicators import IND_FIELDS, LOOKBACK, IndicatorResult, IndicatorState, backfill
from core.sessions import ist_midnight

TOKEN = 408065
SESSION_BARS = 375
_SMA = talib.MA_Type.SMA
_SMA_CODE = 0  # the same, as the stream API's stubs type it (int)


def build_bars(count: int, seed: int, price: float = 1700.0, tick: float = 0.05) -> list[Bar]:
    """``count`` bars of consecutive weekday NSE sessions: a random walk in whole ticks,
    opening gaps, wicks, lognormal volumes and about 3% flat bars."""
    rng = np.random.default_rng(seed)
    bars: list[Bar] = []
    ordinal = date(2024, 1, 1).toordinal()
    last = round(price / tick)
    while len(bars) < count:
        day = date.fromordinal(ordinal)
        ordinal += 1
        if day.weekday() >= 5:
            continue
        open_s = ist_midnight(day) + (9 * 60 + 15) * 60
        for slot in range(SESSION_BARS):
            if len(bars) == count:
                break
            start = open_s + 60 * slot
            if rng.random() < 0.03:
                flat = round(last * tick, 2)
                bars.append(Bar(TOKEN, start, flat, flat, flat, flat, 0, 0))
                continue
            open_ = last + (int(rng.normal(0, 40)) if slot == 0 else 0)
            close = open_ + int(rng.normal(0, 12))
            high = max(open_, close) + int(rng.exponential(4))
            low = min(open_, close) - int(rng.exponential(4))
            volume = int(rng.lognormal(7.0, 0.7))
            bars.append(
                Bar(
                    TOKEN,
                    start,
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


@dataclass(frozen=True)
class Series:
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray

    @classmethod
    def of(cls, bars: Sequence[Bar]) -> Series:
        return cls(
            np.array([b.high for b in bars]),
            np.array([b.low for b in bars]),
            np.array([b.close for b in bars]),
            np.array([b.volume for b in bars], dtype=np.float64),
        )


def talib_all(h: np.ndarray, lw: np.ndarray, c: np.ndarray, v: np.ndarray) -> dict[str, np.ndarray]:
    """The nine TA-Lib functions behind the ``ind`` hash, keyed by its field names."""
    out = {"sma_20": talib.SMA(c, 20)}
    for period in (9, 20, 50, 200):
        out[f"ema_{period}"] = talib.EMA(c, period)
    out["rsi_14"] = talib.RSI(c, 14)
    out["macd"], out["macd_signal"], out["macd_hist"] = talib.MACD(c, 12, 26, 9)
    out["bb_upper"], out["bb_middle"], out["bb_lower"] = talib.BBANDS(c, 20, 2, 2, _SMA)
    out["atr_14"] = talib.ATR(h, lw, c, 14)
    out["adx_14"] = talib.ADX(h, lw, c, 14)
    out["stoch_k"], out["stoch_d"] = talib.STOCH(h, lw, c, 14, 3, _SMA, 3, _SMA)
    out["obv"] = talib.OBV(c, v)
    return out


def relative_error(ours: float, theirs: float, name: str, close: float) -> float:
    """As in the tests: relative to the price for the MACD family (it crosses zero), to
    1 for the 0..100 oscillators, else to the value itself."""
    floor = close if name.startswith("macd") else 1.0 if name[:3] in ("rsi", "adx", "sto") else 0.0
    scale = max(abs(theirs), floor)
    return abs(ours - theirs) / scale if scale else abs(ours - theirs)


def verify(bars: Sequence[Bar], results: Sequence[IndicatorResult]) -> float:
    """Worst relative error of the incremental values against TA-Lib on the full series."""
    s = Series.of(bars)
    reference = talib_all(s.high, s.low, s.close, s.volume)
    worst = 0.0
    for name, expected in reference.items():
        for i in range(LOOKBACK[name], len(bars)):
            value = getattr(results[i], name)
            worst = max(worst, relative_error(float(value), float(expected[i]), name, s.close[i]))
    return worst


def best_time(run: Callable[[], object], repeats: int) -> float:
    """Best wall time of ``repeats`` runs, GC paused during each (as timeit does)."""
    best = float("inf")
    for _ in range(repeats):
        gc.collect()
        gc.disable()
        try:
            start = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - start)
        finally:
            gc.enable()
    return best


@dataclass
class Row:
    name: str
    bars: int
    seconds: float
    error: float | None = None

    @property
    def us_per_bar(self) -> float:
        return self.seconds / self.bars * 1e6


def measure_naive(
    s: Series, reference: dict[str, np.ndarray], window: int, first: int, bars: int, repeats: int
) -> Row:
    """Recompute everything over the trailing ``window`` at each of ``bars`` bars."""
    worst = 0.0
    for i in range(first, first + bars, max(1, bars // 50)):  # accuracy on a sample
        lo = i + 1 - window
        values = talib_all(
            s.high[lo : i + 1], s.low[lo : i + 1], s.close[lo : i + 1], s.volume[lo : i + 1]
        )
        for name, column in values.items():
            if name == "obv":  # cumulative from the window's start: not comparable at all
                continue
            error = relative_error(float(column[-1]), float(reference[name][i]), name, s.close[i])
            worst = max(worst, error)

    def run() -> None:
        for i in range(first, first + bars):
            lo = i + 1 - window
            talib_all(
                s.high[lo : i + 1], s.low[lo : i + 1], s.close[lo : i + 1], s.volume[lo : i + 1]
            )

    return Row(
        f"naive: TA-Lib over the last {window} bars, every bar",
        bars,
        best_time(run, repeats),
        worst,
    )


_STREAM_WARMUP = 300


def measure_stream(s: Series, reference: dict[str, np.ndarray], repeats: int) -> Row:
    """``talib.stream`` handles opened on the first bars, then updated bar by bar: O(1) in
    C, but opaque (no pickling, no export), so not a state a Faust table can hold."""
    from talib import stream

    n = _STREAM_WARMUP
    h, lw, c, v = s.high, s.low, s.close, s.volume
    hl, ll, cl, vl = h.tolist(), lw.tolist(), c.tolist(), v.tolist()

    def open_handles() -> tuple[list[Any], list[Any], Any]:
        return (
            [
                stream.SMA(c[:n], 20),
                *(stream.EMA(c[:n], p) for p in (9, 20, 50, 200)),
                stream.RSI(c[:n], 14),
                stream.MACD(c[:n], 12, 26, 9),
                stream.BBANDS(c[:n], 20, 2, 2, _SMA_CODE),
            ],
            [
                stream.ATR(h[:n], lw[:n], c[:n], 14),
                stream.ADX(h[:n], lw[:n], c[:n], 14),
                stream.STOCH(h[:n], lw[:n], c[:n], 14, 3, _SMA_CODE, 3, _SMA_CODE),
            ],
            stream.OBV(c[:n], v[:n]),
        )

    def run() -> Any:
        closes, hlcs, obv = open_handles()
        last: Any = None
        for i in range(n, len(cl)):
            close = cl[i]
            last = [handle.update(close) for handle in closes]
            last += [handle.update(hl[i], ll[i], close) for handle in hlcs]
            last.append(obv.update(close, vl[i]))
        return last

    last = run()
    # the last bar's values, flattened in talib_all's order, against the batch reference
    flat = [x for value in last for x in (value if isinstance(value, tuple) else (value,))]
    names = [k for k in reference if k != "obv"] + ["obv"]
    order = ["sma_20", "ema_9", "ema_20", "ema_50", "ema_200", "rsi_14", "macd", "macd_signal",
             "macd_hist", "bb_upper", "bb_middle", "bb_lower", "atr_14", "adx_14", "stoch_k",
             "stoch_d", "obv"]  # fmt: skip
    assert sorted(order) == sorted(names)
    worst = max(
        relative_error(float(x), float(reference[name][-1]), name, float(c[-1]))
        for x, name in zip(flat, order, strict=True)
    )
    seconds = best_time(run, max(2, repeats // 2))
    return Row("talib.stream handles, 9 per token (not serialisable)", len(cl) - n, seconds, worst)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bars", type=int, default=20_000, help="series length (20000)")
    parser.add_argument("--naive-bars", type=int, default=1_000, help="bars timed naively (1000)")
    parser.add_argument("--repeats", type=int, default=5, help="best of N runs (5)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)

    started = time.perf_counter()
    bars = build_bars(args.bars, args.seed)
    state = IndicatorState()
    results = [state.update(bar) for bar in bars]
    if any(r is None for r in results):
        print("a bar was not applied", file=sys.stderr)
        return 1
    checked = [r for r in results if r is not None]
    worst = verify(bars, checked)
    ok = worst <= 1e-9
    print(f"verified {len(bars)} bars x {len(IND_FIELDS) - 1} fields against TA-Lib batch: "
          f"worst relative error {worst:.2e} ({'ok' if ok else 'ABOVE 1e-9'})")  # fmt: skip
    if not ok:
        return 1

    s = Series.of(bars)
    reference = talib_all(s.high, s.low, s.close, s.volume)
    batch_s = best_time(lambda: talib_all(s.high, s.low, s.close, s.volume), args.repeats)
    rows = [Row("TA-Lib batch, full series (baseline)", len(bars), batch_s)]

    def run_incremental() -> None:
        st = IndicatorState()
        for bar in bars:
            st.update(bar)

    def run_incremental_redis() -> None:
        st = IndicatorState()
        for bar in bars:
            result = st.update(bar)
            if result is not None:
                result.to_redis()

    rows.append(
        Row("incremental update()", len(bars), best_time(run_incremental, args.repeats), worst)
    )
    rows.append(Row("incremental update() + to_redis()", len(bars),
                    best_time(run_incremental_redis, args.repeats), worst))  # fmt: skip
    rows.append(measure_stream(s, reference, args.repeats))
    naive_bars = min(args.naive_bars, len(bars) - 2_500)
    for window in (500, 2_500):
        rows.append(measure_naive(s, reference, window, len(bars) - naive_bars, naive_bars,
                                  max(2, args.repeats // 2)))  # fmt: skip

    baseline = rows[0].us_per_bar
    print()
    print("| approach | bars | us/bar | vs TA-Lib batch | max rel err vs TA-Lib full series |")
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        error = "(reference)" if row.error is None else f"{row.error:.1e}"
        ratio = row.us_per_bar / baseline
        print(f"| {row.name} | {row.bars} | {row.us_per_bar:.2f} | {ratio:.1f}x | {error} |")

    history = bars[: 20 * SESSION_BARS]

    def fold_history() -> IndicatorState:
        st = IndicatorState()
        for bar in history:
            st.update(bar)
        return st

    backfill_s = best_time(lambda: backfill(history), args.repeats)
    fold_s = best_time(fold_history, args.repeats)
    a, b = backfill(history).to_dict(), fold_history().to_dict()
    floats = [k for k in a if isinstance(a[k], float)] + [f"ema{j}" for j in range(4)]
    a.update({f"ema{j}": x for j, x in enumerate(a["ema"])})
    b.update({f"ema{j}": x for j, x in enumerate(b["ema"])})
    state_error = max(abs(a[k] - b[k]) / max(abs(b[k]), 1e-300) for k in floats)
    print()
    print("| backfill, 20 sessions x 375 bars | ms | us/bar | speed-up |")
    print("|---|---:|---:|---:|")
    print(f"| fold update() over the bars | {fold_s * 1e3:.2f} | {fold_s / len(history) * 1e6:.2f} "
          f"| 1.0x |")  # fmt: skip
    print(f"| backfill() (TA-Lib batch + lfilter) | {backfill_s * 1e3:.2f} "
          f"| {backfill_s / len(history) * 1e6:.2f} | {fold_s / backfill_s:.1f}x |")  # fmt: skip
    print(f"backfilled state vs folded state: worst relative difference {state_error:.1e}")

    snapshot = fold_history()
    wire = json.dumps(snapshot.to_dict())
    dump_s = best_time(lambda: [json.dumps(snapshot.to_dict()) for _ in range(1000)], args.repeats)
    load_s = best_time(lambda: [IndicatorState.from_dict(json.loads(wire)) for _ in range(1000)],
                       args.repeats)  # fmt: skip
    print(f"checkpoint: {len(wire)} bytes of JSON, to_dict+dumps {dump_s * 1e3:.1f} us, "
          f"loads+from_dict {load_s * 1e3:.1f} us")  # fmt: skip

    incremental, naive = rows[1], rows[4]
    print()
    print(f"incremental {incremental.us_per_bar:.2f} us/bar = "
          f"{incremental.us_per_bar / baseline:.0f}x TA-Lib batch ({baseline:.3f} us/bar) and "
          f"{naive.us_per_bar / incremental.us_per_bar:.1f}x faster than the naive window "
          f"(python {sys.version.split()[0]}, TA-Lib {talib.__ta_version__.decode().split()[0]}, "
          f"{time.perf_counter() - started:.1f} s total)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
