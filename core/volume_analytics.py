"""Bar-rate volume analytics per token: volume ratio, session VWAP and volume profile.

The volume agent feeds every closed 1-minute bar of a token (flat bars included) to
:func:`update`, which advances a small per-token :class:`VolumeAnalyticsState` and returns
a :class:`VolumeResult` holding exactly the fields of the Redis ``vol:{token}`` hash.
Everything here is pure and deterministic: no clock, no I/O, and the state round-trips
through JSON (:meth:`VolumeAnalyticsState.to_dict` / :meth:`~VolumeAnalyticsState.from_dict`)
so that a worker restored from its table changelog continues bit for bit where it stopped.

Rules (analytics-spec section 1), and the choices this module makes where the spec leaves
room:

**Volume ratio.** Volume over the trailing ``window`` (W = 5) minutes of the session,
divided by the caller's baseline summed over the same minute-of-session slots
(:func:`core.sessions.slot_of`). The window is kept by slot, not by count: it holds the
in-session bars whose slot lies in ``(slot - W, slot]``, so at the session start it holds
fewer bars, and a gap in the feed never stretches it over stale minutes (with flat bars
filling the grid the two readings coincide). The baseline is asked for exactly the slots
the window holds, so numerator and denominator always cover the same minutes. A missing,
zero, negative or non-finite baseline gives no ratio (``""`` in Redis), never inf, NaN or
a fallback: the legacy system divided the day's cumulative volume instead and its ratios
saturated at the cap (legacy bug 4). The published ratio is capped (50); the raw one is
kept beside it. A bar outside the segment's session hours (pre-open, post-close) has no
slot and therefore no baseline: it counts towards the session's VWAP, volume and profile
but not towards the ratio window, and its result carries no ratio.

**VWAP.** Session VWAP = sum(typical price x volume) / sum(volume) over the session's
bars, typical price = (high + low + close) / 3 (never weighted by cumulative volume,
legacy bug 5). Volumes are integers; only the price sum is a float, accumulated in feed
order, which is deterministic.

**Volume profile.** Each bar's whole volume is attributed to one price level: its
typical price rounded to the nearest tick. Why one level rather than spreading the volume
across the bar's range: a 1-minute bar says nothing about where inside its range the
volume traded, so an even split is no more true; attribution at the typical price is O(1)
per bar, keeps the profile consistent with the VWAP (with prices on the tick grid, the
profile's volume-weighted mean is within a third of a tick of the VWAP), and bounds the
state by the number of bars in the session (at most one level per bar) instead of by the
session's range in ticks, which matters because the state is written to the table
changelog for thousands of tokens every minute. Levels are stored as integer tick counts
(``price / tick_size``) with integer volumes, so the profile is exact; the level is
computed in integers as the nearest integer to (h + l + c) / 3 of the prices' tick
counts, where a half cannot occur. Bars with zero volume (flat bars) add no level.

**Point of control (POC).** The level with the most volume. Ties go to the level nearest
the centre of the profile (the midpoint of its lowest and highest levels: the Market
Profile convention), then to the lower price.

**Value area.** Starting from the POC, repeatedly compare the next populated level above
with the next populated level below and add the heavier one, until the area holds at
least 70% of the session's volume (``value_area_share``, compared as an exact fraction in
integers, so exactly 70% is enough). One level per step, the CBOT Market Profile rule,
not the two-level variant: the profile has at most one level per bar, so pairs would
compare structure two bars apart. Levels with no volume are skipped because, with one
level per bar, an empty tick between two levels is an artefact of the attribution, not
evidence of where trade happened. On a tie the level above is added (the common
convention: "if the prices below hold more, add them, otherwise add the prices above").
When one side is exhausted the other side grows.

**Sessions and duplicates.** The session is the IST date of the bar's start. A bar of a
new session resets the window, the VWAP sums and the profile. Delivery is at least once,
so a bar whose start is not after the last one applied (a duplicate or a late bar) is
ignored: :func:`update` returns ``None`` and changes nothing.

**Tick size.** The profile of a session uses the tick size given with its first bar; a
different value later in the session takes effect at the next session (exchanges revise
tick sizes between sessions, and mixing grids inside one profile would corrupt it).
Indices carry tick size 0.0 in the instrument master; a tick size that is not a positive
finite number falls back to :data:`FALLBACK_TICK_SIZE` (they trade no volume anyway).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from functools import lru_cache
from typing import Any

from core.bars import Bar
from core.sessions import slot_of
from core.timeutil import iso_from_epoch

#: Trailing window of the volume ratio, in minutes (bars on the regular grid).
DEFAULT_WINDOW = 5
#: The published ratio is capped here; ``volume_ratio_raw`` keeps the uncapped value.
DEFAULT_CAP = 50.0
#: Share of the session's volume the value area must hold (settings.value_area_share).
DEFAULT_VALUE_AREA_SHARE = 0.7
#: Price step used when the instrument master gives no usable tick size (indices: 0.0).
FALLBACK_TICK_SIZE = 0.01
#: ``baseline_source`` of a result that has no baseline volume (hence no ratio).
NO_BASELINE = "none"
#: Decimal places kept when turning a level (integer ticks) back into a price: removes the
#: binary noise of ``ticks * tick_size`` (2001 * 0.05 = 100.05000000000001) for any
#: exchange tick size (the finest is 0.0001 on currency derivatives).
_PRICE_DECIMALS = 8
_STATE_VERSION = 1

#: The fields of the Redis ``vol:{token}`` hash (DESIGN.md, schema v1), in schema order.
VOL_FIELDS: tuple[str, ...] = (
    "bar_start",
    "volume_ratio",
    "volume_ratio_raw",
    "baseline_source",
    "window_volume",
    "baseline_volume",
    "session_volume",
    "vwap",
    "poc",
    "value_area_low",
    "value_area_high",
)

#: The caller's baseline for a window: given the minute-of-session slots the trailing
#: window holds (oldest first), the expected volume summed over them, or ``None`` when
#: there is no baseline for them.
WindowBaseline = Callable[[Sequence[int]], float | None]


def sum_per_slot(expected: Callable[[int], float | None]) -> WindowBaseline:
    """Adapt a per-slot expected-volume lookup into a :data:`WindowBaseline`.

    The window's baseline is missing if any of its slots has none: summing only the
    known slots would shrink the denominator and inflate the ratio, a false spike.
    """

    def window_baseline(slots: Sequence[int]) -> float | None:
        total = 0.0
        for slot in slots:
            value = expected(slot)
            if value is None:
                return None
            total += value
        return total

    return window_baseline


@dataclass(slots=True)
class VolumeAnalyticsState:
    """Per-token state between bars; plain data, JSON round trip, compared by value.

    ``session`` is the IST date's ordinal (``date.toordinal()``) of the bars being
    accumulated, ``None`` before the first bar. ``window`` holds ``(slot, volume)`` of the
    trailing window's in-session bars, oldest first. ``sum_pv`` and ``session_volume``
    are the VWAP's numerator and denominator. ``profile`` maps a price level in integer
    ticks of ``tick_size`` to its integer volume (levels with volume only).
    ``last_bar_start`` (epoch seconds) makes redelivered and late bars no-ops.
    """

    session: int | None = None
    last_bar_start: int | None = None
    tick_size: float = FALLBACK_TICK_SIZE
    window: list[tuple[int, int]] = field(default_factory=list)
    sum_pv: float = 0.0
    session_volume: int = 0
    profile: dict[int, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe snapshot: string keys only, the profile as sorted ``[ticks, volume]``
        pairs (JSON objects cannot have integer keys), floats that round-trip exactly."""
        return {
            "v": _STATE_VERSION,
            "session": self.session,
            "last_bar_start": self.last_bar_start,
            "tick_size": self.tick_size,
            "window": [[slot, volume] for slot, volume in self.window],
            "sum_pv": self.sum_pv,
            "session_volume": self.session_volume,
            "profile": [[level, self.profile[level]] for level in sorted(self.profile)],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VolumeAnalyticsState:
        """Inverse of :meth:`to_dict`; rejects a snapshot of an unknown version."""
        version = data.get("v")
        if version != _STATE_VERSION:
            raise ValueError(f"unsupported volume analytics state version {version!r}")
        session = data["session"]
        last_bar_start = data["last_bar_start"]
        return cls(
            session=None if session is None else int(session),
            last_bar_start=None if last_bar_start is None else int(last_bar_start),
            tick_size=float(data["tick_size"]),
            window=[(int(slot), int(volume)) for slot, volume in data["window"]],
            sum_pv=float(data["sum_pv"]),
            session_volume=int(data["session_volume"]),
            profile={int(level): int(volume) for level, volume in data["profile"] if volume},
        )


@dataclass(frozen=True, slots=True)
class VolumeResult:
    """The ``vol:{token}`` hash of one bar: exactly the schema's fields.

    ``None`` means "not available" (no baseline, no volume yet) and is written as an
    empty string, never as a made-up number.
    """

    bar_start: int  # epoch seconds
    volume_ratio: float | None
    volume_ratio_raw: float | None
    baseline_source: str
    window_volume: int | None
    baseline_volume: float | None
    session_volume: int
    vwap: float | None
    poc: float | None
    value_area_low: float | None
    value_area_high: float | None

    def to_dict(self) -> dict[str, Any]:
        """Plain values for a topic message or a debug diff."""
        return asdict(self)

    def to_redis(self) -> dict[str, str]:
        """Field -> string for HSET: bar_start as ISO 8601 with +05:30, numbers as
        ``str`` (shortest round-tripping float repr), ``None`` as ``""``."""
        out: dict[str, str] = {"bar_start": iso_from_epoch(self.bar_start)}
        for name in VOL_FIELDS[1:]:
            value = getattr(self, name)
            out[name] = "" if value is None else str(value)
        return out


def update(
    state: VolumeAnalyticsState,
    bar: Bar,
    *,
    tick_size: float,
    baseline: WindowBaseline | None,
    baseline_source: str,
    cap: float = DEFAULT_CAP,
    window: int = DEFAULT_WINDOW,
    value_area_share: float = DEFAULT_VALUE_AREA_SHARE,
) -> VolumeResult | None:
    """Apply one closed bar to ``state`` (in place) and return the token's ``vol`` fields.

    Returns ``None``, leaving ``state`` untouched, for a bar that does not start after
    the last one applied (at-least-once redelivery or a late bar). ``baseline`` gives
    the expected volume summed over the window's slots (see :func:`sum_per_slot`), or is
    ``None`` when the token has no baseline at all; ``baseline_source`` is the caller's
    label for it (e.g. ``"history"``, ``"fallback"``), echoed in the result when a
    baseline volume was found and replaced by :data:`NO_BASELINE` when not, so a reader
    of an empty ratio sees why.

    Raises ``ValueError`` for invalid parameters, a negative volume, or a bar with volume
    and a non-finite price; the state is then unchanged, so the agent can count the bad
    bar and go on (design principle 6). The baseline is consulted before the state
    changes, so an exception from it also leaves the state as it was.
    """
    if window < 1:
        raise ValueError(f"window must be at least 1, got {window}")
    if not cap > 0:
        raise ValueError(f"cap must be positive, got {cap}")
    if not 0 < value_area_share <= 1:
        raise ValueError(f"value_area_share must be in (0, 1], got {value_area_share}")
    if state.last_bar_start is not None and bar.start <= state.last_bar_start:
        return None
    volume = bar.volume
    if volume < 0:
        raise ValueError(f"bar volume must not be negative: {bar!r}")
    if volume and not (
        math.isfinite(bar.high) and math.isfinite(bar.low) and math.isfinite(bar.close)
    ):
        raise ValueError(f"bar with volume has a non-finite price: {bar!r}")

    session = bar.session.toordinal()
    new_session = session != state.session
    window_volume: int | None = None
    baseline_volume: float | None = None
    ratio_raw: float | None = None
    kept: list[tuple[int, int]] | None = None
    slot = slot_of(bar.instrument_token & 0xFF, bar.start)
    if slot is not None:
        previous = [] if new_session else state.window
        kept = [(s, v) for s, v in previous if s > slot - window]
        kept.append((slot, volume))
        window_volume = sum(v for _, v in kept)
        if baseline is not None:
            # Asked before the state changes: a failing lookup leaves the state as it was.
            expected = baseline(tuple(s for s, _ in kept))
            if expected is not None and math.isfinite(expected) and expected > 0:
                baseline_volume = float(expected)
                ratio_raw = window_volume / baseline_volume

    # Everything that can fail has run: commit the bar to the state.
    if new_session:
        state.session = session
        state.tick_size = _usable_tick_size(tick_size)
        state.window.clear()
        state.sum_pv = 0.0
        state.session_volume = 0
        state.profile.clear()
    state.last_bar_start = bar.start
    if kept is not None:
        state.window[:] = kept
    if volume:
        tick = state.tick_size
        state.sum_pv += (bar.high + bar.low + bar.close) / 3.0 * volume
        state.session_volume += volume
        # The level in integer ticks: nearest integer to (h + l + c) / 3 of the prices'
        # tick counts; ticks3 / 3 has a fraction of 0, 1/3 or 2/3, so no half to round.
        ticks3 = round(bar.high / tick) + round(bar.low / tick) + round(bar.close / tick)
        level = (ticks3 + 1) // 3
        state.profile[level] = state.profile.get(level, 0) + volume

    vwap, poc, va_low, va_high = _session_levels(state, value_area_share)
    return VolumeResult(
        bar_start=bar.start,
        volume_ratio=None if ratio_raw is None else min(ratio_raw, cap),
        volume_ratio_raw=ratio_raw,
        baseline_source=baseline_source if baseline_volume is not None else NO_BASELINE,
        window_volume=window_volume,
        baseline_volume=baseline_volume,
        session_volume=state.session_volume,
        vwap=vwap,
        poc=poc,
        value_area_low=va_low,
        value_area_high=va_high,
    )


@lru_cache(maxsize=16)
def _fraction(share: float) -> tuple[int, int]:
    """A settings share as an exact ratio of small integers (0.7 -> (7, 10))."""
    exact = Fraction(share).limit_denominator(1_000_000)
    return exact.numerator, exact.denominator


def _usable_tick_size(tick_size: float) -> float:
    if math.isfinite(tick_size) and tick_size > 0:
        return float(tick_size)
    return FALLBACK_TICK_SIZE


def _price(level: int, tick_size: float) -> float:
    return round(level * tick_size, _PRICE_DECIMALS)


def _session_levels(
    state: VolumeAnalyticsState, value_area_share: float
) -> tuple[float | None, float | None, float | None, float | None]:
    """(vwap, poc, value_area_low, value_area_high) of the session so far."""
    if state.session_volume == 0 or not state.profile:
        return None, None, None, None
    vwap = state.sum_pv / state.session_volume
    poc, low, high = value_area(state.profile, value_area_share)
    tick = state.tick_size
    return vwap, _price(poc, tick), _price(low, tick), _price(high, tick)


def value_area(
    profile: dict[int, int], share: float = DEFAULT_VALUE_AREA_SHARE
) -> tuple[int, int, int]:
    """(poc, low, high) of a non-empty profile of integer levels -> positive volumes.

    POC: most volume; ties to the level nearest the profile's centre, then the lower.
    Value area: from the POC, add the heavier of the next populated level above and below
    (the upper one on a tie; the remaining side once one is exhausted) until it holds at
    least ``share`` of the total. O(L log L) for L levels (the sort), at bar rate.

    The share is compared as an exact fraction (0.7 -> 7/10) in integers: in floats
    ``0.7 * 100`` is 70.00000000000001, and 70 of 100 would wrongly fall short.
    """
    levels = sorted(level for level, volume in profile.items() if volume > 0)
    if not levels:
        raise ValueError("value area of an empty profile")
    volumes = [profile[level] for level in levels]
    centre2 = levels[0] + levels[-1]  # twice the centre: integer tie-break, no float

    best = 0
    for i in range(1, len(levels)):
        if volumes[i] > volumes[best] or (
            volumes[i] == volumes[best]
            and abs(2 * levels[i] - centre2) < abs(2 * levels[best] - centre2)
        ):
            best = i  # equal distance keeps the earlier (lower) level

    num, den = _fraction(share)
    target = sum(volumes) * num  # covered / total >= num / den, in integers
    lo = hi = best
    covered = volumes[best]
    top = len(levels) - 1
    while covered * den < target:
        if lo == 0 or (hi < top and volumes[hi + 1] >= volumes[lo - 1]):
            hi += 1
            covered += volumes[hi]
        else:
            lo -= 1
            covered += volumes[lo]
    return levels[best], levels[lo], levels[hi]
