"""Time-aware volume baselines: the volume a token usually trades in each minute of its session.

A volume ratio is only meaningful against what is normal *at that time of day*: the open
and the close trade several times the lunch hour's volume, so a flat per-minute average
(what the legacy system used) flags every open as a spike and hides real lunchtime ones.
So the baseline is kept per minute-of-session slot (375 slots for NSE's 09:15 to 15:30,
other segments by their own session, see :mod:`core.sessions`): the expected volume of a
slot is the mean of that slot's volume over the last ``N`` (20) sessions.

State and purity. Everything here is pure (no I/O, no clock). :class:`TokenBaseline` is an
immutable value holding, per session, the list of slot volumes, keyed by the session's
date ordinal (``date.toordinal()``). Keeping the raw per-session volumes rather than
running sums is what makes updates idempotent: re-adding a session (a replay, a restart,
an at-least-once redelivery) *replaces* it instead of counting it twice, and the oldest
session can be dropped exactly when a new one arrives. ``N x slots`` integers per token
(7,500 for NSE) is small enough for a Faust table value.

Unobserved slots. A session's slot volume is ``None`` where nobody was watching (a worker
that started at 11:00 knows nothing about 09:15 to 11:00); such slots are left out of that
slot's mean instead of being counted as zero volume. Bootstrapped history has no such
holes: Kite omits the candle of a minute without trades, so a missing candle is volume 0.

Fallback. With fewer than ``min_sessions`` (3) sessions a per-slot mean is too noisy, so
the expected volume is ``average daily volume / slots x multiplier(slot)`` with the legacy
system's time-of-day multipliers (IST, half-open bands, so 10:00 belongs to 10:00-11:30):

    09:15-10:00 1.8, 10:00-11:30 1.2, 11:30-12:30 0.9, 12:30-14:00 1.1,
    14:00-15:00 1.3, 15:00-15:30 2.0

The bands describe NSE equity hours; they apply to every segment whose session is exactly
09:15 to 15:30 (NSE, NFO, BSE, BFO, indices). Currency (09:00-17:00) and commodity
(09:00-23:30) sessions have a different intraday shape that the legacy bands do not
cover (MCX is busiest in the evening), so they get a flat multiplier of 1.0
(:attr:`BaselinePolicy.other_multiplier`) rather than a guess.

The average daily volume comes from the sessions that exist (a session with unobserved
slots is extrapolated to a whole day with the same multiplier shape, so a half-watched
day is not read as a half-volume day) or, when there are none, from a provided value
(:attr:`TokenBaseline.daily_volume`, e.g. from history or the instrument master). When
nothing is known, the baseline is unknown: :func:`expected` returns ``None`` and
:func:`source` says ``"none"``; nothing here ever divides by zero.

Note that the legacy multipliers average 1.28 over an NSE session (480 / 375), so the
fallback's day total is 1.28 x the average daily volume. That is the specified formula
and the default; :attr:`BaselinePolicy.normalize_multipliers` divides them by their
session mean instead, so the fallback's day total equals the average daily volume.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from functools import lru_cache
from typing import Any

from core.bars import Bar
from core.sessions import session_minutes, slot_count, slot_of

#: Legacy time-of-day multipliers: (start, end) in minutes after IST midnight, half-open.
LEGACY_BANDS: tuple[tuple[int, int, float], ...] = (
    (9 * 60 + 15, 10 * 60, 1.8),
    (10 * 60, 11 * 60 + 30, 1.2),
    (11 * 60 + 30, 12 * 60 + 30, 0.9),
    (12 * 60 + 30, 14 * 60, 1.1),
    (14 * 60, 15 * 60, 1.3),
    (15 * 60, 15 * 60 + 30, 2.0),
)

#: Version of the serialised form (``TokenBaseline.to_dict``).
FORMAT_VERSION = 1

SlotVolumes = tuple[int | None, ...]


@dataclass(frozen=True, slots=True)
class BaselinePolicy:
    """The numbers of the baseline rule; defaults are the specification's.

    Frozen and hashable, so the per-segment multiplier table is computed once per policy.
    The lead wires these from settings; everything here takes a policy argument.
    """

    #: Sessions averaged per slot (the last ``window`` by date).
    window: int = 20
    #: Fewer sessions than this: the time-of-day fallback instead of per-slot means.
    min_sessions: int = 3
    #: Time-of-day multipliers for sessions that the bands tile exactly (NSE hours).
    bands: tuple[tuple[int, int, float], ...] = LEGACY_BANDS
    #: Multiplier of every slot of a session the bands do not tile (CDS, MCX).
    other_multiplier: float = 1.0
    #: Divide the multipliers by their session mean (fallback day total = daily volume).
    normalize_multipliers: bool = False

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")
        if self.min_sessions < 1:
            raise ValueError(f"min_sessions must be >= 1, got {self.min_sessions}")
        if self.other_multiplier <= 0 or any(m <= 0 for _, _, m in self.bands):
            raise ValueError("multipliers must be positive")


DEFAULT_POLICY = BaselinePolicy()


@lru_cache(maxsize=64)
def multipliers(segment: int, policy: BaselinePolicy = DEFAULT_POLICY) -> tuple[float, ...]:
    """The fallback's multiplier of every slot of a segment's session.

    The bands apply only when they tile the session exactly (same open and close); a
    minute inside such a session that no band covers, and every slot of any other
    session, gets ``policy.other_multiplier``.
    """
    open_min, close_min = session_minutes(segment)
    bands = policy.bands
    tiles = bool(bands) and bands[0][0] == open_min and bands[-1][1] == close_min
    out: list[float] = []
    for minute in range(open_min, close_min):
        mult = policy.other_multiplier
        if tiles:
            for start, end, m in bands:
                if start <= minute < end:
                    mult = m
                    break
        out.append(mult)
    if policy.normalize_multipliers:
        mean = math.fsum(out) / len(out)
        out = [m / mean for m in out]
    return tuple(out)


@dataclass(frozen=True, slots=True)
class TokenBaseline:
    """One token's baseline state: its recent sessions' slot volumes.

    ``sessions`` is ascending by date ordinal, one entry per session, each a tuple of
    ``slot_count(segment)`` volumes (``None`` = not observed). ``daily_volume`` is an
    externally provided average daily volume, used only when no session exists.
    Build with :meth:`for_token`, update with :func:`add_session` (which returns a new
    value: the state is immutable, so a table can hold it without defensive copies).
    """

    segment: int
    sessions: tuple[tuple[int, SlotVolumes], ...] = ()
    daily_volume: float | None = None

    @classmethod
    def for_token(cls, token: int, *, daily_volume: float | None = None) -> TokenBaseline:
        """An empty baseline for a token (its segment is ``token & 0xFF``)."""
        return cls(segment=token & 0xFF, daily_volume=_check_daily_volume(daily_volume))

    @property
    def slots(self) -> int:
        return slot_count(self.segment)

    @property
    def session_dates(self) -> list[date]:
        return [date.fromordinal(o) for o, _ in self.sessions]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe and compact: ``{"v", "segment", "daily_volume", "sessions": [[ordinal,
        [volume or null, ...]], ...]}``."""
        return {
            "v": FORMAT_VERSION,
            "segment": self.segment,
            "daily_volume": self.daily_volume,
            "sessions": [[ordinal, list(vols)] for ordinal, vols in self.sessions],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TokenBaseline:
        """Inverse of :meth:`to_dict`; raises ``ValueError`` on a malformed value."""
        try:
            version = data.get("v", FORMAT_VERSION)
            if version != FORMAT_VERSION:
                raise ValueError(f"unsupported baseline format version {version!r}")
            segment = int(data["segment"])
            raw_dv = data.get("daily_volume")
            daily = _check_daily_volume(None if raw_dv is None else float(raw_dv))
            n_slots = slot_count(segment)
            sessions: dict[int, SlotVolumes] = {}
            for ordinal, vols in data.get("sessions", []):
                sessions[int(ordinal)] = _check_volumes(vols, n_slots)
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"malformed baseline: {exc!r}") from exc
        return cls(segment=segment, sessions=tuple(sorted(sessions.items())), daily_volume=daily)


def _check_daily_volume(value: float | None) -> float | None:
    if value is None:
        return None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"daily volume must be a finite number >= 0, got {value!r}")
    return float(value)


def _check_volumes(volumes: Iterable[object], n_slots: int) -> SlotVolumes:
    """Validate one session's slot volumes: the right length, whole numbers >= 0 or None,
    and at least one observed slot (a session nobody watched says nothing)."""
    out: list[int | None] = []
    for v in volumes:
        if v is None:
            out.append(None)
        elif isinstance(v, int) and not isinstance(v, bool) and v >= 0:
            out.append(v)
        elif isinstance(v, float) and v.is_integer() and v >= 0:
            out.append(int(v))
        else:
            raise ValueError(f"slot volume must be a whole number >= 0 or None, got {v!r}")
    if len(out) != n_slots:
        raise ValueError(f"expected {n_slots} slot volumes, got {len(out)}")
    if all(v is None for v in out):
        raise ValueError("a session with no observed slot")
    return tuple(out)


def add_session(
    baseline: TokenBaseline,
    session_ordinal: int,
    slot_volumes: Sequence[int | None],
    *,
    policy: BaselinePolicy = DEFAULT_POLICY,
) -> TokenBaseline:
    """The baseline with one session's slot volumes added, or replaced if that session is
    already there (idempotent), keeping only the latest ``policy.window`` sessions.

    ``session_ordinal`` is the session's IST date as ``date.toordinal()``. A session older
    than all ``window`` kept ones is dropped at once. Raises ``ValueError`` for a wrong
    number of slots, a negative or fractional volume, or a session with no observed slot:
    those are caller bugs, not market data.
    """
    vols = _check_volumes(slot_volumes, baseline.slots)
    sessions = dict(baseline.sessions)
    sessions[int(session_ordinal)] = vols
    kept = sorted(sessions.items())[-policy.window :]
    return replace(baseline, sessions=tuple(kept))


def _recent(baseline: TokenBaseline, policy: BaselinePolicy) -> tuple[tuple[int, SlotVolumes], ...]:
    """The sessions that count (a stored state may predate a smaller window)."""
    return baseline.sessions[-policy.window :]


def daily_volume(
    baseline: TokenBaseline, *, policy: BaselinePolicy = DEFAULT_POLICY
) -> float | None:
    """The average daily volume behind the fallback; ``None`` when nothing is known.

    From the sessions when there are any: each session's observed volume extrapolated to
    the whole day by the multiplier shape (a fully observed session counts as its plain
    total), averaged over sessions. Otherwise the provided ``daily_volume``.
    """
    recent = _recent(baseline, policy)
    if not recent:
        return baseline.daily_volume
    mult = multipliers(baseline.segment, policy)
    total_weight = math.fsum(mult)
    totals: list[float] = []
    for _, vols in recent:
        if None not in vols:  # fully observed: the plain total, exactly
            totals.append(float(sum(v for v in vols if v is not None)))
            continue
        observed = sum(v for v in vols if v is not None)
        weight = math.fsum(m for v, m in zip(vols, mult, strict=True) if v is not None)
        # weight > 0: every stored session has an observed slot, multipliers are > 0.
        totals.append(observed * total_weight / weight)
    return math.fsum(totals) / len(totals)


def _fallback(baseline: TokenBaseline, policy: BaselinePolicy) -> tuple[float, ...] | None:
    adv = daily_volume(baseline, policy=policy)
    if adv is None:
        return None
    per_slot = adv / baseline.slots
    return tuple(per_slot * m for m in multipliers(baseline.segment, policy))


def expected_profile(
    baseline: TokenBaseline, *, policy: BaselinePolicy = DEFAULT_POLICY
) -> tuple[float, ...] | None:
    """The expected volume of every slot at once (``None`` when unknown).

    The baseline only changes at a session's end, so a consumer can compute this once
    per session and index it per bar instead of re-averaging 20 sessions every minute.
    With at least ``min_sessions`` sessions a slot's value is the mean of its observed
    volumes; a slot observed in none of them (possible only with unobserved holes) takes
    the fallback value.
    """
    recent = _recent(baseline, policy)
    fallback = _fallback(baseline, policy)
    if fallback is None:
        return None
    if len(recent) < policy.min_sessions:
        return fallback
    out: list[float] = []
    for slot in range(baseline.slots):
        values = [v for _, vols in recent if (v := vols[slot]) is not None]
        out.append(sum(values) / len(values) if values else fallback[slot])
    return tuple(out)


def expected(
    baseline: TokenBaseline, slot: int, *, policy: BaselinePolicy = DEFAULT_POLICY
) -> float | None:
    """Expected volume of one minute-of-session slot; ``None`` when nothing is known.

    Raises ``ValueError`` for a slot outside the session (a caller bug).
    """
    n_slots = baseline.slots
    if not 0 <= slot < n_slots:
        raise ValueError(f"slot {slot} outside the session's 0..{n_slots - 1}")
    recent = _recent(baseline, policy)
    if len(recent) >= policy.min_sessions:
        values = [v for _, vols in recent if (v := vols[slot]) is not None]
        if values:
            return sum(values) / len(values)
    adv = daily_volume(baseline, policy=policy)
    if adv is None:
        return None
    return adv / n_slots * multipliers(baseline.segment, policy)[slot]


def expected_window(
    baseline: TokenBaseline, slots: Iterable[int], *, policy: BaselinePolicy = DEFAULT_POLICY
) -> float | None:
    """Expected volume summed over slots (the volume ratio's denominator); ``None`` when
    the baseline is unknown. An empty ``slots`` sums to 0.0."""
    total = 0.0
    for slot in slots:
        value = expected(baseline, slot, policy=policy)
        if value is None:
            return None
        total += value
    return total


def source(baseline: TokenBaseline, *, policy: BaselinePolicy = DEFAULT_POLICY) -> str:
    """What the expected values come from, for ``baseline_source``.

    ``"history:<n>"``: per-slot means over ``n`` sessions; ``"fallback:<n>"``: the
    time-of-day fallback with the daily volume of ``n`` (< ``min_sessions``) sessions;
    ``"fallback:daily_volume"``: the fallback with the provided daily volume;
    ``"none"``: nothing known. Consumers can split at the first ``:``.
    """
    n = len(_recent(baseline, policy))
    if n >= policy.min_sessions:
        return f"history:{n}"
    if n > 0:
        return f"fallback:{n}"
    if baseline.daily_volume is not None:
        return "fallback:daily_volume"
    return "none"


@dataclass(slots=True)
class SessionAccumulator:
    """Collects one token's session from its closed bars; what the worker calls at the
    session's end (:meth:`finish`) to feed :func:`add_session`.

    Bars are keyed by slot, so a redelivered bar replaces itself (at-least-once safe).
    Slots without a bar are unobserved (``None``) by default: the live volume engine emits
    a bar (flat if silent) for every minute after a token's first tick, so a missing bar
    means the worker was not running then. Kite history omits minutes without trades, so
    bootstrap code asks for ``unobserved=0``. Serialisable (``to_dict`` / ``from_dict``)
    so that a restart mid-session keeps what was accumulated.
    """

    token: int
    session: date
    volumes: dict[int, int] = field(default_factory=dict)

    @property
    def segment(self) -> int:
        return self.token & 0xFF

    @property
    def observed(self) -> int:
        """Slots with a bar so far."""
        return len(self.volumes)

    def add(self, bar: Bar) -> bool:
        """Record a bar; ``False`` (ignored) for another token's or another session's bar,
        or one outside the session's slots."""
        if bar.instrument_token != self.token or bar.session != self.session:
            return False
        slot = slot_of(self.segment, bar.start)
        if slot is None:
            return False
        self.volumes[slot] = int(bar.volume)
        return True

    def slot_volumes(self, *, unobserved: int | None = None) -> SlotVolumes:
        """Volume per slot; slots without a bar get ``unobserved``."""
        get = self.volumes.get
        return tuple(get(slot, unobserved) for slot in range(slot_count(self.segment)))

    def finish(self, *, unobserved: int | None = None) -> tuple[int, SlotVolumes] | None:
        """``(session_ordinal, slot_volumes)`` for :func:`add_session`; ``None`` when no
        bar was seen (a holiday, a token that never ticked): such a session must not take
        one of the ``window`` places."""
        if not self.volumes:
            return None
        return self.session.toordinal(), self.slot_volumes(unobserved=unobserved)

    def to_dict(self) -> dict[str, Any]:
        return {
            "token": self.token,
            "session": self.session.toordinal(),
            "volumes": [[slot, vol] for slot, vol in sorted(self.volumes.items())],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SessionAccumulator:
        return cls(
            token=int(data["token"]),
            session=date.fromordinal(int(data["session"])),
            volumes={int(s): int(v) for s, v in data["volumes"]},
        )
