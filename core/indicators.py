"""Technical indicators per token on closed 1-minute bars: incremental, TA-Lib's values.

The indicator agent feeds every closed bar of a token (flat bars included) to
:meth:`IndicatorState.update`, which advances a small per-token state in O(1) and returns
an :class:`IndicatorResult` holding exactly the fields of the Redis ``ind:{token}`` hash:
SMA(20); EMA(9, 20, 50, 200); RSI(14, Wilder); MACD(12, 26, 9); Bollinger(20, 2);
ATR(14, Wilder); ADX(14); slow Stochastic(14, 3, 3); OBV; session VWAP (analytics-spec
section 2). The periods are constants, not settings, because the schema's field names
(``sma_20``, ``ema_200``, ...) carry them: another period would need another field.

**Why a serialisable incremental state rather than ``talib.stream`` handles.** The state
lives in the worker's Faust table: it is written to the changelog after every bar and
restored on another worker after a rebalance or a crash (DESIGN.md principles 2 to 4).
TA-Lib 0.8's stream handles are O(1) and match its batch functions, but they are opaque C
objects: they cannot be pickled or exported, only re-opened on a history of bars. So a
worker using them would have to checkpoint bars, not state, and re-open nine handles per
token on every restore. For the finite-window indicators a window of bars would do, but
EMA(200), RSI, ATR, ADX and MACD have infinite memory: their value depends on where the
series starts, so re-opening on a bounded window gives a value that differs from the
uninterrupted run (a restart would change the published numbers, against principle 3),
and re-opening on the full history makes the changelog and the restore time grow with
the token's age. Here the state *is* the recurrences' variables: a few floats per
indicator plus windows of at most 20 closes, 14 highs and lows and 3 + 3 %K values
(about 1.2 kB of JSON). Restoring is O(1), and a restored machine continues bit for bit:
every float goes through ``repr`` in JSON, which round-trips exactly, and every step is a
fixed sequence of IEEE double operations. It is also the same on every CPU, which TA-Lib
itself is not (below).

**Agreement with TA-Lib.** TA-Lib (default compatibility, no unstable period) is the
oracle: on the same series from its first bar, every value after TA-Lib's lookback equals
TA-Lib's batch function to far better than the required 1e-9 relative. The recurrences
replicate TA-Lib's, seeding included, because EMA, MACD, RSI, ATR and ADX depend on where
the series starts:

- EMA(p): seeded at bar p - 1 with the mean of the first p closes (summed in order), then
  ``ema = (close - ema) * k + ema``, ``k = 2 / (p + 1)``.
- MACD: TA-Lib runs both EMAs from the bar where the slow one is seeded (bar 25), so the
  *fast* EMA(12) is seeded with the mean of closes 14..25, not 0..11: it is not the
  standalone EMA(12). The signal EMA(9) of the MACD line is seeded with the mean of its
  first 9 values (bars 25..33); all three outputs start at bar 33.
- RSI(14): gains and losses summed over bars 1..14, then Wilder's average
  ``(avg * 13 + x) / 14``; gain + loss of zero (flat prices) reads 0, as in TA-Lib.
- ATR(14): the mean of the true ranges of bars 1..14 (bar 0 has none), then Wilder.
- ADX(14): Wilder *sums* (``s = s - s / 14 + x``) of +DM, -DM and the true range, summed
  raw over bars 1..13; the DX of bars 14..27 averaged gives the first ADX (bar 27), then
  ``adx = (adx * 13 + dx) / 14``; a zero true range or DI sum leaves the ADX unchanged.
- OBV: starts at the first bar's volume (TA-Lib's convention), in exact integers.

Where the installed TA-Lib (C library 0.8.1) writes an expression differently from the
classic C source, the machine follows the installed library: RSI multiplies by the
reciprocal ``1 / 14`` instead of dividing, ATR smooths as ``atr * r + tr * (1 - r)`` with
``r = 13 / 14``. That library also compiles EMA, MACD, ATR and BBANDS twice and picks an
FMA-contracted clone at run time on CPUs that have FMA, so its last bits differ between
machines; Python 3.11 has no fused multiply-add, so ours are computed unfused, the same
everywhere. Measured on 20,000-bar series on an FMA machine: RSI, ADX and OBV equal TA-Lib
bit for bit, and so do the EMAs and the MACD line (with these smoothing constants a fused
rounding rarely differs); the MACD signal and the ATR are within about 1e-15 relative.

SMA, Bollinger and Stochastic have finite windows, so their right value does not depend
on the series start. TA-Lib computes them with running sums (add the new value, subtract
the one leaving) whose rounding error accumulates over the whole history, which grows
visible over months of a token's bars or after a large price move. Here each window sum
is recomputed from the window with ``math.fsum`` (correctly rounded, at most 20 terms,
still O(1) per bar), and the Bollinger variance uses two passes, ``mean((x - m)^2)``,
which cannot go negative. They agree with TA-Lib to its own rounding, not bit for bit,
and the state carries no drift. TA-Lib's conventions are kept: a zero high-low range gives
a fast %K of 0, and the fast %K is ``(close - lowest) / ((highest - lowest) / 100)``.

Flat bars (no ticks: OHLC = the previous close, volume 0) are ordinary bars for every
indicator: they carry the price forward, as a chart of the regular grid does.

**Session VWAP.** sum(typical price x volume) / sum(volume) over the bars of the IST
session of the bar's start (``ist_date``), typical price (high + low + close) / 3,
accumulated in feed order with the same expression as :mod:`core.volume_analytics`, so
``ind:{token}`` and ``vol:{token}`` show the same VWAP to the bit. No volume yet in the
session: no VWAP.

**Duplicates and bad bars.** Delivery is at least once, so a bar whose start is at or
before the last bar applied is a redelivery (or a late bar): :meth:`IndicatorState.update`
returns ``None`` and changes nothing. A bar with a non-finite price or a negative volume
raises ``ValueError`` before anything changes, so the agent can count it and go on.

**Backfill.** :func:`backfill` warms a token's state from its history with TA-Lib's batch
functions and ``scipy.signal.lfilter`` (C loops) instead of folding the Python machine
bar by bar; its docstring says how each piece of state is derived. The result equals the
folded state to rounding (about 1e-15 relative: the batch loops round differently, see
above), so the first live bar after a bootstrap agrees with TA-Lib on the full series.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from datetime import date
from typing import Any

import numpy as np
import talib
from scipy.signal import lfilter

from core.bars import Bar
from core.sessions import DAY_S, IST_OFFSET_S
from core.timeutil import iso_from_epoch

SMA_PERIOD = 20
EMA_PERIODS: tuple[int, ...] = (9, 20, 50, 200)
RSI_PERIOD = 14
MACD_FAST, MACD_SLOW, MACD_SIGNAL = 12, 26, 9
BB_PERIOD = 20
BB_DEVIATIONS = 2.0
ATR_PERIOD = 14
ADX_PERIOD = 14
STOCH_FASTK, STOCH_SLOWK, STOCH_SLOWD = 14, 3, 3

#: The fields of the Redis ``ind:{token}`` hash (DESIGN.md, schema v1), in schema order.
IND_FIELDS: tuple[str, ...] = (
    "bar_start",
    "sma_20",
    "ema_9",
    "ema_20",
    "ema_50",
    "ema_200",
    "rsi_14",
    "macd",
    "macd_signal",
    "macd_hist",
    "bb_upper",
    "bb_middle",
    "bb_lower",
    "atr_14",
    "adx_14",
    "stoch_k",
    "stoch_d",
    "obv",
    "vwap",
)

#: Index of the first bar (0-based) with a value, i.e. TA-Lib's lookback of each output.
LOOKBACK: dict[str, int] = {
    "sma_20": SMA_PERIOD - 1,
    **{f"ema_{p}": p - 1 for p in EMA_PERIODS},
    "rsi_14": RSI_PERIOD,
    "macd": MACD_SLOW + MACD_SIGNAL - 2,
    "macd_signal": MACD_SLOW + MACD_SIGNAL - 2,
    "macd_hist": MACD_SLOW + MACD_SIGNAL - 2,
    "bb_upper": BB_PERIOD - 1,
    "bb_middle": BB_PERIOD - 1,
    "bb_lower": BB_PERIOD - 1,
    "atr_14": ATR_PERIOD,
    "adx_14": 2 * ADX_PERIOD - 1,
    "stoch_k": STOCH_FASTK + STOCH_SLOWK + STOCH_SLOWD - 3,
    "stoch_d": STOCH_FASTK + STOCH_SLOWK + STOCH_SLOWD - 3,
    "obv": 0,
}

#: From this many bars on, every recurrence is past its seeding phase (the EMA(200) is
#: seeded last), so :func:`backfill` can read the state off TA-Lib's batch outputs;
#: shorter histories are folded through :meth:`IndicatorState.update`.
BATCH_MIN_BARS = max(LOOKBACK.values()) + 1

_STATE_VERSION = 1
_EMA_K: tuple[float, ...] = tuple(2.0 / (p + 1) for p in EMA_PERIODS)
_MACD_FAST_K = 2.0 / (MACD_FAST + 1)
_MACD_SLOW_K = 2.0 / (MACD_SLOW + 1)
_MACD_SIGNAL_K = 2.0 / (MACD_SIGNAL + 1)
_RSI_RECIPROCAL = 1.0 / RSI_PERIOD
_ATR_DECAY = (ATR_PERIOD - 1) / ATR_PERIOD
_ATR_GAIN = 1.0 - _ATR_DECAY
#: TA-Lib computes MACD's fast EMA from the slow EMA's first bar: its seed window ends
#: there too, so it starts this many bars into the series.
_MACD_FAST_FROM = MACD_SLOW - MACD_FAST
_MACD_LINE_FROM = MACD_SLOW - 1
_MACD_FROM = LOOKBACK["macd"]
_ADX_FROM = LOOKBACK["adx_14"]
_STOCH_SLOWK_FROM = STOCH_FASTK + STOCH_SLOWK - 2
_STOCH_FROM = LOOKBACK["stoch_k"]
#: ``date(1970, 1, 1).toordinal()``: the session is computed as in ``ist_date`` without
#: building a ``date`` per bar.
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
#: TA-Lib's TA_IS_ZERO threshold.
_TA_EPSILON = 1e-8


def _is_zero(value: float) -> bool:
    return -_TA_EPSILON < value < _TA_EPSILON


def _true_range(high: float, low: float, prev_close: float) -> float:
    """TA-Lib's TRANGE / TRUE_RANGE: the largest of the three, in the same order."""
    tr = high - low
    up = abs(high - prev_close)
    if up > tr:
        tr = up
    down = abs(low - prev_close)
    if down > tr:
        tr = down
    return tr


def _fast_k(highs: Iterable[float], lows: Iterable[float], close: float) -> float:
    """TA-Lib's fast %K, with its exact expression and its 0 for a zero range."""
    lowest = min(lows)
    diff = (max(highs) - lowest) / 100.0
    return (close - lowest) / diff if diff != 0.0 else 0.0


def _mean(values: Iterable[float], count: int) -> float:
    return math.fsum(values) / count


@dataclass(frozen=True, slots=True)
class IndicatorResult:
    """The ``ind:{token}`` hash of one bar: exactly the schema's fields.

    ``None`` means "inside the indicator's lookback" (or, for the VWAP, no volume yet in
    the session) and is written as an empty string, never as a made-up number.
    """

    bar_start: int  # epoch seconds
    sma_20: float | None
    ema_9: float | None
    ema_20: float | None
    ema_50: float | None
    ema_200: float | None
    rsi_14: float | None
    macd: float | None
    macd_signal: float | None
    macd_hist: float | None
    bb_upper: float | None
    bb_middle: float | None
    bb_lower: float | None
    atr_14: float | None
    adx_14: float | None
    stoch_k: float | None
    stoch_d: float | None
    obv: int
    vwap: float | None

    def to_dict(self) -> dict[str, Any]:
        """Plain values for a topic message or a debug diff."""
        return asdict(self)

    def to_redis(self) -> dict[str, str]:
        """Field -> string for HSET: bar_start as ISO 8601 with +05:30, floats as their
        ``repr`` (the shortest string that parses back to the same double), the OBV as an
        integer, ``None`` as ``""``. A non-finite value, reachable only with absurd inputs
        (prices near 1e308 overflow), is also written as ``""``: readers parse these
        fields as numbers, and ``inf``/``nan`` would poison whatever they compute."""
        out: dict[str, str] = {"bar_start": iso_from_epoch(self.bar_start)}
        for name in IND_FIELDS[1:]:
            value = getattr(self, name)
            if value is None or (isinstance(value, float) and not math.isfinite(value)):
                out[name] = ""
            else:
                out[name] = repr(value)
        return out


@dataclass(slots=True, eq=True)
class IndicatorState:
    """One token's indicator state between bars: plain data, JSON round trip, compared
    by value.

    ``count`` is the number of bars applied; phases are read off it (bar index ``n`` of
    the next bar is ``count``), so no per-indicator flags are needed. Several floats hold
    a seed *sum* during their indicator's warm-up and the indicator's value after it:

    - ``ema[j]`` (period ``EMA_PERIODS[j]``): sum of closes until the period is complete.
    - ``macd_fast`` / ``macd_slow``: sums over their seed windows (bars 14..25 and 0..25),
      then the EMAs; ``macd_signal``: sum of the MACD line over bars 25..33, then its EMA.
    - ``rsi_gain`` / ``rsi_loss``: sums over bars 1..14, then Wilder averages.
    - ``atr``: sum of true ranges over bars 1..14, then the ATR.
    - ``adx_plus_dm`` / ``adx_minus_dm`` / ``adx_tr``: raw sums over bars 1..13, then
      Wilder sums; ``adx``: the sum of DX over bars 14..27, then the ADX.

    ``closes`` holds the last 20 closes (SMA, Bollinger), ``highs``/``lows`` the last 14
    (Stochastic), ``fast_k``/``slow_k`` the last 3 of each %K stage. ``session`` is the IST
    date ordinal of the VWAP sums ``sum_pv`` / ``session_volume``. ``last_start`` (epoch
    seconds) makes redelivered and late bars no-ops.
    """

    count: int = 0
    last_start: int | None = None
    prev_high: float = 0.0
    prev_low: float = 0.0
    prev_close: float = 0.0
    closes: deque[float] = field(default_factory=lambda: deque(maxlen=SMA_PERIOD))
    ema: list[float] = field(default_factory=lambda: [0.0] * len(EMA_PERIODS))
    macd_fast: float = 0.0
    macd_slow: float = 0.0
    macd_signal: float = 0.0
    rsi_gain: float = 0.0
    rsi_loss: float = 0.0
    atr: float = 0.0
    adx_plus_dm: float = 0.0
    adx_minus_dm: float = 0.0
    adx_tr: float = 0.0
    adx: float = 0.0
    highs: deque[float] = field(default_factory=lambda: deque(maxlen=STOCH_FASTK))
    lows: deque[float] = field(default_factory=lambda: deque(maxlen=STOCH_FASTK))
    fast_k: deque[float] = field(default_factory=lambda: deque(maxlen=STOCH_SLOWK))
    slow_k: deque[float] = field(default_factory=lambda: deque(maxlen=STOCH_SLOWD))
    obv: int = 0
    session: int | None = None
    sum_pv: float = 0.0
    session_volume: int = 0

    # -- persistence -------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe snapshot (lists for the windows); floats survive ``json`` exactly,
        which is what makes a restored state continue bit for bit."""
        out: dict[str, Any] = {"v": _STATE_VERSION}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, deque | list) else value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IndicatorState:
        """Inverse of :meth:`to_dict`; rejects a snapshot of an unknown version or with
        windows longer than their indicator's (a corrupt or foreign snapshot)."""
        version = data.get("v")
        if version != _STATE_VERSION:
            raise ValueError(f"unsupported indicator state version {version!r}")

        def window(name: str, size: int) -> deque[float]:
            values = [float(x) for x in data[name]]
            if len(values) > size:
                raise ValueError(f"indicator state window {name} longer than {size}")
            return deque(values, maxlen=size)

        ema = [float(x) for x in data["ema"]]
        if len(ema) != len(EMA_PERIODS):
            raise ValueError(f"indicator state has {len(ema)} EMAs, not {len(EMA_PERIODS)}")
        last_start = data["last_start"]
        session = data["session"]
        return cls(
            count=int(data["count"]),
            last_start=None if last_start is None else int(last_start),
            prev_high=float(data["prev_high"]),
            prev_low=float(data["prev_low"]),
            prev_close=float(data["prev_close"]),
            closes=window("closes", SMA_PERIOD),
            ema=ema,
            macd_fast=float(data["macd_fast"]),
            macd_slow=float(data["macd_slow"]),
            macd_signal=float(data["macd_signal"]),
            rsi_gain=float(data["rsi_gain"]),
            rsi_loss=float(data["rsi_loss"]),
            atr=float(data["atr"]),
            adx_plus_dm=float(data["adx_plus_dm"]),
            adx_minus_dm=float(data["adx_minus_dm"]),
            adx_tr=float(data["adx_tr"]),
            adx=float(data["adx"]),
            highs=window("highs", STOCH_FASTK),
            lows=window("lows", STOCH_FASTK),
            fast_k=window("fast_k", STOCH_SLOWK),
            slow_k=window("slow_k", STOCH_SLOWD),
            obv=int(data["obv"]),
            session=None if session is None else int(session),
            sum_pv=float(data["sum_pv"]),
            session_volume=int(data["session_volume"]),
        )

    # -- the machine -------------------------------------------------------------------

    def update(self, bar: Bar) -> IndicatorResult | None:
        """Apply one closed bar and return the token's ``ind`` fields, or ``None`` (state
        untouched) for a bar that does not start after the last one applied.

        Raises ``ValueError``, state untouched, for a non-finite price or a negative
        volume: one bad bar would otherwise poison every recurrence for good.
        """
        if self.last_start is not None and bar.start <= self.last_start:
            return None
        high, low, close, volume = bar.high, bar.low, bar.close, bar.volume
        if not (math.isfinite(high) and math.isfinite(low) and math.isfinite(close)):
            raise ValueError(f"bar with a non-finite price: {bar!r}")
        if volume < 0:
            raise ValueError(f"bar volume must not be negative: {bar!r}")
        self._advance(bar.start, high, low, close, volume)
        return self.result()

    def _advance(self, start: int, high: float, low: float, close: float, volume: int) -> None:
        """One bar through every recurrence, in TA-Lib's operation order (see the module
        docstring); ``n`` is the bar's 0-based index in the token's series."""
        n = self.count
        self.closes.append(close)
        self.highs.append(high)
        self.lows.append(low)

        ema = self.ema
        for j, period in enumerate(EMA_PERIODS):
            if n < period:
                ema[j] += close
                if n == period - 1:
                    ema[j] /= period
            else:
                ema[j] = ((close - ema[j]) * _EMA_K[j]) + ema[j]

        if n < MACD_SLOW:
            self.macd_slow += close
            if n == MACD_SLOW - 1:
                self.macd_slow /= MACD_SLOW
        else:
            self.macd_slow = ((close - self.macd_slow) * _MACD_SLOW_K) + self.macd_slow
        if n < _MACD_FAST_FROM:
            pass
        elif n < MACD_SLOW:
            self.macd_fast += close
            if n == MACD_SLOW - 1:
                self.macd_fast /= MACD_FAST
        else:
            self.macd_fast = ((close - self.macd_fast) * _MACD_FAST_K) + self.macd_fast
        if n >= _MACD_LINE_FROM:
            line = self.macd_fast - self.macd_slow
            if n <= _MACD_FROM:
                self.macd_signal += line
                if n == _MACD_FROM:
                    self.macd_signal /= MACD_SIGNAL
            else:
                self.macd_signal = ((line - self.macd_signal) * _MACD_SIGNAL_K) + self.macd_signal

        if n >= 1:
            prev_close = self.prev_close
            diff = close - prev_close
            up = diff if diff > 0 else 0.0
            down = up - diff  # -diff for a fall, 0 otherwise (TA-Lib's expression)
            if n <= RSI_PERIOD:
                self.rsi_gain += up
                self.rsi_loss += down
                if n == RSI_PERIOD:
                    self.rsi_gain *= _RSI_RECIPROCAL
                    self.rsi_loss *= _RSI_RECIPROCAL
            else:
                self.rsi_gain = (self.rsi_gain * (RSI_PERIOD - 1) + up) * _RSI_RECIPROCAL
                self.rsi_loss = (self.rsi_loss * (RSI_PERIOD - 1) + down) * _RSI_RECIPROCAL

            tr = _true_range(high, low, prev_close)
            if n <= ATR_PERIOD:
                self.atr += tr
                if n == ATR_PERIOD:
                    self.atr /= ATR_PERIOD
            else:
                self.atr = self.atr * _ATR_DECAY + tr * _ATR_GAIN

            self._advance_adx(n, high, low, tr)

            if close > prev_close:
                self.obv += volume
            elif close < prev_close:
                self.obv -= volume
        else:
            self.obv = volume

        if n >= STOCH_FASTK - 1:
            self.fast_k.append(_fast_k(self.highs, self.lows, close))
            if n >= _STOCH_SLOWK_FROM:
                self.slow_k.append(_mean(self.fast_k, STOCH_SLOWK))

        session = (start + IST_OFFSET_S) // DAY_S + _EPOCH_ORDINAL  # ist_date(start)
        if session != self.session:
            self.session = session
            self.sum_pv = 0.0
            self.session_volume = 0
        if volume:
            self.sum_pv += (high + low + close) / 3.0 * volume
            self.session_volume += volume

        self.prev_high, self.prev_low, self.prev_close = high, low, close
        self.last_start = start
        self.count = n + 1

    def _advance_adx(self, n: int, high: float, low: float, tr: float) -> None:
        """TA_ADX's loops, unrolled into one step (n >= 1)."""
        diff_p = high - self.prev_high
        diff_m = self.prev_low - low
        period = ADX_PERIOD
        if n < period:
            if diff_m > 0 and diff_p < diff_m:
                self.adx_minus_dm += diff_m
            elif diff_p > 0 and diff_p > diff_m:
                self.adx_plus_dm += diff_p
            self.adx_tr += tr
            return
        minus_dm = self.adx_minus_dm - self.adx_minus_dm / period
        plus_dm = self.adx_plus_dm - self.adx_plus_dm / period
        if diff_m > 0 and diff_p < diff_m:
            minus_dm += diff_m
        elif diff_p > 0 and diff_p > diff_m:
            plus_dm += diff_p
        tr_sum = self.adx_tr - self.adx_tr / period + tr
        self.adx_minus_dm, self.adx_plus_dm, self.adx_tr = minus_dm, plus_dm, tr_sum
        dx: float | None = None
        if not _is_zero(tr_sum):
            minus_di = 100.0 * (minus_dm / tr_sum)
            plus_di = 100.0 * (plus_dm / tr_sum)
            di_sum = minus_di + plus_di
            if not _is_zero(di_sum):
                dx = 100.0 * (abs(minus_di - plus_di) / di_sum)
        if n <= _ADX_FROM:
            if dx is not None:
                self.adx += dx
            if n == _ADX_FROM:
                self.adx = self.adx / period
        elif dx is not None:
            self.adx = (self.adx * (period - 1) + dx) / period

    def result(self) -> IndicatorResult | None:
        """The ``ind`` fields as of the last bar applied (``None`` before the first bar):
        what :meth:`update` returns, and what to publish right after :func:`backfill` or
        a restore, before the next live bar."""
        if self.last_start is None:
            return None
        count = self.count

        sma = upper = lower = None
        if count >= SMA_PERIOD:
            closes = self.closes
            sma = math.fsum(closes) / SMA_PERIOD
            variance = math.fsum([(x - sma) * (x - sma) for x in closes]) / BB_PERIOD
            band = math.sqrt(variance) * BB_DEVIATIONS
            upper, lower = sma + band, sma - band

        emas = [e if count >= p else None for e, p in zip(self.ema, EMA_PERIODS, strict=True)]

        rsi = None
        if count > RSI_PERIOD:
            total = self.rsi_gain + self.rsi_loss
            rsi = 100.0 * (self.rsi_gain / total) if not _is_zero(total) else 0.0

        macd = signal = hist = None
        if count > _MACD_FROM:
            macd = self.macd_fast - self.macd_slow
            signal = self.macd_signal
            hist = macd - signal

        stoch_k = stoch_d = None
        if count > _STOCH_FROM:
            stoch_k = self.slow_k[-1]
            stoch_d = _mean(self.slow_k, STOCH_SLOWD)

        volume = self.session_volume
        return IndicatorResult(
            bar_start=self.last_start,
            sma_20=sma,
            ema_9=emas[0],
            ema_20=emas[1],
            ema_50=emas[2],
            ema_200=emas[3],
            rsi_14=rsi,
            macd=macd,
            macd_signal=signal,
            macd_hist=hist,
            bb_upper=upper,
            bb_middle=sma,
            bb_lower=lower,
            atr_14=self.atr if count > ATR_PERIOD else None,
            adx_14=self.adx if count > _ADX_FROM else None,
            stoch_k=stoch_k,
            stoch_d=stoch_d,
            obv=self.obv,
            vwap=self.sum_pv / volume if volume else None,
        )


# --------------------------------------------------------------------------------------
# Backfill.


def backfill(bars: Iterable[Bar]) -> IndicatorState:
    """A token's state after its historical ``bars`` (oldest first), as if each had been
    fed to :meth:`IndicatorState.update`, computed with vectorised C loops instead.

    Bars are filtered by the machine's rule (a bar not after the last kept one is
    dropped); a non-finite price or a negative volume raises ``ValueError`` (the history
    loaders have already skipped such rows). A history shorter than
    :data:`BATCH_MIN_BARS` is folded through the machine: some seeds are then half-way,
    and 200 bars cost about 2 ms. A longer one has every recurrence past its seed, and
    the state is read off batch outputs:

    - windows (closes, highs, lows) and the previous bar: the series' tail;
    - ``ema``: ``talib.EMA(close, p)[-1]``; ``macd_slow``: ``talib.EMA(close, 26)[-1]``;
      ``macd_fast``: ``talib.EMA(close[14:], 12)[-1]`` (MACD's fast seed window, see the
      module docstring); ``macd_signal``: the signal of ``talib.MACD(close, 12, 26, 9)``;
    - ``atr``: ``talib.ATR``; ``adx``: ``talib.ADX``; ``adx_plus_dm`` /
      ``adx_minus_dm``: ``talib.PLUS_DM`` / ``talib.MINUS_DM``, the Wilder sums TA_ADX
      keeps inside (same seeding, same expression);
    - ``rsi_gain`` / ``rsi_loss`` and ``adx_tr``: Wilder averages and sums that no TA-Lib
      function outputs. The seed is summed in order (``numpy.cumsum`` is sequential, so
      it equals the machine's sum bit for bit), the rest is the equivalent linear filter
      ``s = (1 - 1/14) s + g x`` run by ``scipy.signal.lfilter``;
    - ``fast_k`` / ``slow_k``: the machine's own formulas over the last 5 bars' windows;
    - ``obv``: the first volume plus the signed volumes, in exact int64 arithmetic;
    - VWAP sums: the last IST session's bars, summed in feed order (``numpy.cumsum``)
      with the machine's expression, hence bit-identical.

    Integers, windows and the VWAP sums equal the folded state exactly; the recurrences'
    floats to rounding (about 1e-15 relative), because TA-Lib's and lfilter's loops
    round differently from the machine (module docstring).
    """
    kept: list[Bar] = []
    last: int | None = None
    for bar in bars:
        if last is not None and bar.start <= last:
            continue
        kept.append(bar)
        last = bar.start
    state = IndicatorState()
    if len(kept) < BATCH_MIN_BARS:
        for bar in kept:
            if state.update(bar) is None:  # pragma: no cover - kept bars always advance
                raise AssertionError("backfill bar not applied")
        return state

    count = len(kept)
    starts = np.fromiter((b.start for b in kept), dtype=np.int64, count=count)
    high = np.fromiter((b.high for b in kept), dtype=np.float64, count=count)
    low = np.fromiter((b.low for b in kept), dtype=np.float64, count=count)
    close = np.fromiter((b.close for b in kept), dtype=np.float64, count=count)
    volume = np.fromiter((b.volume for b in kept), dtype=np.int64, count=count)
    finite = np.isfinite(high) & np.isfinite(low) & np.isfinite(close)
    if not finite.all():
        raise ValueError(f"bar with a non-finite price: {kept[int(np.argmin(finite))]!r}")
    if (volume < 0).any():
        raise ValueError(f"bar volume must not be negative: {kept[int(np.argmax(volume < 0))]!r}")

    state.count = count
    state.last_start = int(starts[-1])
    state.prev_high, state.prev_low, state.prev_close = (
        float(high[-1]),
        float(low[-1]),
        float(close[-1]),
    )
    state.closes.extend(close[-SMA_PERIOD:].tolist())
    state.highs.extend(high[-STOCH_FASTK:].tolist())
    state.lows.extend(low[-STOCH_FASTK:].tolist())

    state.ema = [float(talib.EMA(close, timeperiod=p)[-1]) for p in EMA_PERIODS]
    state.macd_slow = float(talib.EMA(close, timeperiod=MACD_SLOW)[-1])
    state.macd_fast = float(talib.EMA(close[_MACD_FAST_FROM:], timeperiod=MACD_FAST)[-1])
    _, signal, _ = talib.MACD(
        close, fastperiod=MACD_FAST, slowperiod=MACD_SLOW, signalperiod=MACD_SIGNAL
    )
    state.macd_signal = float(signal[-1])

    diff = close[1:] - close[:-1]  # bar 1 on
    up = np.where(diff > 0, diff, 0.0)
    state.rsi_gain = _wilder(up, RSI_PERIOD, average=True)
    state.rsi_loss = _wilder(up - diff, RSI_PERIOD, average=True)

    state.atr = float(talib.ATR(high, low, close, timeperiod=ATR_PERIOD)[-1])
    state.adx = float(talib.ADX(high, low, close, timeperiod=ADX_PERIOD)[-1])
    state.adx_plus_dm = float(talib.PLUS_DM(high, low, timeperiod=ADX_PERIOD)[-1])
    state.adx_minus_dm = float(talib.MINUS_DM(high, low, timeperiod=ADX_PERIOD)[-1])
    true_range = np.maximum(
        np.maximum(high[1:] - low[1:], np.abs(high[1:] - close[:-1])),
        np.abs(low[1:] - close[:-1]),
    )
    state.adx_tr = _wilder(true_range, ADX_PERIOD, average=False)

    for i in range(count - (STOCH_SLOWK + STOCH_SLOWD - 1), count):
        lo = i - STOCH_FASTK + 1
        fast_k = _fast_k(high[lo : i + 1].tolist(), low[lo : i + 1].tolist(), float(close[i]))
        state.fast_k.append(fast_k)
        if len(state.fast_k) == STOCH_SLOWK:
            state.slow_k.append(_mean(state.fast_k, STOCH_SLOWK))

    sign = np.sign(diff).astype(np.int64)
    state.obv = int(volume[0]) + int(np.dot(sign, volume[1:]))

    days = (starts + IST_OFFSET_S) // DAY_S + _EPOCH_ORDINAL
    first = int(np.searchsorted(days, days[-1]))  # starts increase, so days never fall
    traded = volume[first:] > 0  # the machine adds nothing for a bar without volume
    state.session = int(days[-1])
    state.session_volume = int(volume[first:].sum())
    if state.session_volume:
        h, lw, c = high[first:][traded], low[first:][traded], close[first:][traded]
        pv = (h + lw + c) / 3.0 * volume[first:][traded].astype(np.float64)
        state.sum_pv = float(np.cumsum(pv)[-1])
    return state


def _wilder(values: np.ndarray, period: int, *, average: bool) -> float:
    """The last value of a Wilder recurrence over ``values`` (one per bar from bar 1).

    ``average``: RSI's average, seeded with the mean of the first ``period`` values, then
    ``a = (a * (period - 1) + x) / period``. Otherwise TA_ADX's sum, seeded with the sum
    of the first ``period - 1``, then ``s = s - s / period + x``. Both are the linear
    filter ``y = decay * y + gain * x``, which ``lfilter`` runs in C.
    """
    decay = (period - 1) / period
    if average:
        seed_count, gain = period, 1.0 / period
        seed = float(np.cumsum(values[:seed_count])[-1]) * gain
    else:
        seed_count, gain = period - 1, 1.0
        seed = float(np.cumsum(values[:seed_count])[-1])
    rest = values[seed_count:]
    if not len(rest):
        return seed
    out, _ = lfilter([gain], [1.0, -decay], rest, zi=[decay * seed])
    return float(out[-1])
