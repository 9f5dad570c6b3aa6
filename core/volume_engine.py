"""The tick-rate volume engine: one token's ticks in, closed 1-minute bars out.

This is the only analytics stage that runs at tick rate, so it is a pair of plain
functions over a small mutable state (:class:`TokenVolumeState`, one per token, owned by
the worker that owns the token's partition) with integer time arithmetic and no objects
built per tick. It is pure: the bars depend only on the sequence of calls (ticks and
watermarks), never on a clock or the host's time zone, and the state round-trips through
JSON so a worker can checkpoint it and resume exactly.

Rules (analytics-spec section 1, plus the choices the spec leaves open):

* **Session** = the IST calendar date of the event time, kept as a date ordinal.
  Trading hours per segment come from :mod:`core.sessions`; every segment's session lies
  inside one IST day, so a session never spans midnight.
* **Volume** is taken from the cumulative ``volume_traded``: ``delta = cum - last_cum``.
  The first tick of a session that carries a cumulative sets the base and contributes 0
  (the engine may start mid-day). ``cum < last_cum`` contributes 0, leaves ``last_cum``
  (it only rises) and counts an anomaly: 100, 300, 200, 400 gives 300. A tick without a
  cumulative (LTP and index packets) moves the price and contributes no volume.
* **Bars** are on the IST minute grid and are emitted once, in strictly increasing start
  order. A tick of a later minute closes the open bar; so does a watermark (see
  :func:`advance_watermark`). Silent minutes inside the session, after the session's first
  bar, become flat bars (OHLC = previous close, volume 0, ticks 0). When a new session
  starts, the old one's open bar is closed and its remaining minutes up to its close are
  filled, exactly as a watermark past the close would have done, so the bars do not depend
  on whether such a watermark came first; no flat bar is made between sessions or before a
  session's first in-hours tick.
* **Outside trading hours** (pre-open, post-close) a tick of the session opens no bar and
  its price is dropped, but its cumulative still moves the volume base (same rules,
  increment discarded): the pre-open auction's volume then stays out of the 09:15 bar while
  trades between the last pre-open tick and the first in-hours tick are counted. Such a
  tick also closes what its event time proves is over (post-close: the last bar and the
  session's remaining flat minutes). Counted in ``outside``.
* **Late ticks** (same session, minute before the open bar's, or at or before the last
  emitted bar's): an emitted bar is never reopened, and the price is dropped (it belongs to
  a minute that is over). The volume increment is not lost: with an open bar it goes into
  it; without one, ``last_cum`` is left alone so the next tick's increment carries it (the
  cumulative makes this exact). A tick of an earlier session than the state's is ignored.
  Both counted in ``late``.
* **Duplicates**: a tick whose source offset is not above the last applied one is a
  re-delivery (at-least-once) and changes nothing. This needs the token's ticks to come in
  offset order from one partition, which keying the ticks topic by token gives.
* **Watermark**: the highest applied watermark (as a minute) is kept, so an old or repeated
  watermark (a replay after a restart) changes nothing, and the open bar always starts at
  or after it: a tick behind the watermark that opens a bar (a token's first tick of the
  session arriving late) gets its bar, and the flat minutes up to the watermark, at once.

Input validation (prices > 0, sane times) is the ingestor's job; this module trusts it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.bars import Bar
from core.sessions import DAY_S, IST_OFFSET_S, MINUTE_S, minute_start, session_minutes

#: ``date(1970, 1, 1).toordinal()``: an IST day index since the epoch plus this is the
#: session's ``date.toordinal()``, without building a ``date`` per tick.
_EPOCH_ORDINAL = 719_163
#: A limit past every minute: "close everything of the state's session".
_NO_LIMIT = 1 << 62
#: Version of the :meth:`TokenVolumeState.to_dict` layout.
STATE_VERSION = 1


def session_of(event_time_s: int) -> int:
    """The session (IST date ordinal) of an instant: ``ist_date(t).toordinal()`` in
    integer arithmetic, so the host's time zone cannot enter."""
    return (event_time_s + IST_OFFSET_S) // DAY_S + _EPOCH_ORDINAL


def session_window(segment: int, session: int) -> tuple[int, int]:
    """(open, close) epoch seconds of a segment's session on an IST date ordinal: the
    integer twin of :func:`core.sessions.session_bounds_s`."""
    open_min, close_min = session_minutes(segment)
    midnight = (session - _EPOCH_ORDINAL) * DAY_S - IST_OFFSET_S
    return midnight + open_min * MINUTE_S, midnight + close_min * MINUTE_S


@dataclass(slots=True)
class TokenVolumeState:
    """Everything the engine remembers about one token, and nothing more.

    Plain ints, floats and None, so :meth:`to_dict` is JSON as it stands (what the worker
    keeps in its table) and ``==`` compares two states field by field. The open bar is
    flattened into ``bar_*`` fields (``bar_start is None``: no open bar; the other bar
    fields are then reset to zero, so equality stays meaningful) because attribute access
    on a slots class is the cheapest thing the per-tick path can do.
    """

    #: The instrument token: carried here so every emitted :class:`Bar` names it.
    token: int
    #: IST date ordinal of the current session; None before the first tick.
    session: int | None = None
    #: Highest cumulative volume of the session (the base of the next increment); None
    #: until a tick of the session carries one.
    last_cum: int | None = None
    #: The open bar: its minute start (None when there is none), OHLC, volume, ticks.
    bar_start: int | None = None
    bar_open: float = 0.0
    bar_high: float = 0.0
    bar_low: float = 0.0
    bar_close: float = 0.0
    bar_volume: int = 0
    bar_ticks: int = 0
    #: Close and start of the last emitted bar (flat bars repeat that close).
    last_close: float | None = None
    last_bar_start: int | None = None
    #: Highest watermark applied, floored to the minute: every minute before it is final.
    watermark: int | None = None
    #: Source offset of the last applied tick; a tick at or below it is a re-delivery.
    last_offset: int = -1
    #: Ticks whose cumulative volume went down (contributed 0).
    anomalies: int = 0
    #: Ticks for a minute already closed, or of an earlier session (price dropped).
    late: int = 0
    #: Ticks outside the segment's trading hours (no bar; volume base only).
    outside: int = 0

    def open_bar(self) -> Bar | None:
        """The bar still being built, as a :class:`Bar` (not final; for views and tests)."""
        if self.bar_start is None:
            return None
        return Bar(
            self.token,
            self.bar_start,
            self.bar_open,
            self.bar_high,
            self.bar_low,
            self.bar_close,
            self.bar_volume,
            self.bar_ticks,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe snapshot; :meth:`from_dict` restores an equal state."""
        data: dict[str, Any] = {"v": STATE_VERSION}
        for name in _FIELDS:
            data[name] = getattr(self, name)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TokenVolumeState:
        """Restore a :meth:`to_dict` snapshot. Raises ``ValueError`` for another layout
        version (better to fail loudly than to misread a checkpoint)."""
        if data.get("v") != STATE_VERSION:
            raise ValueError(f"volume state version {data.get('v')!r}, expected {STATE_VERSION}")
        return cls(
            token=int(data["token"]),
            session=_opt_int(data["session"]),
            last_cum=_opt_int(data["last_cum"]),
            bar_start=_opt_int(data["bar_start"]),
            bar_open=float(data["bar_open"]),
            bar_high=float(data["bar_high"]),
            bar_low=float(data["bar_low"]),
            bar_close=float(data["bar_close"]),
            bar_volume=int(data["bar_volume"]),
            bar_ticks=int(data["bar_ticks"]),
            last_close=None if data["last_close"] is None else float(data["last_close"]),
            last_bar_start=_opt_int(data["last_bar_start"]),
            watermark=_opt_int(data["watermark"]),
            last_offset=int(data["last_offset"]),
            anomalies=int(data["anomalies"]),
            late=int(data["late"]),
            outside=int(data["outside"]),
        )


_FIELDS = tuple(TokenVolumeState.__dataclass_fields__)


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def apply_tick(
    state: TokenVolumeState,
    segment: int,
    offset: int,
    event_time_s: int,
    last_price: float,
    cum_volume: int | None,
) -> list[Bar]:
    """Apply one tick of ``state.token``; return the bars it closed (usually none).

    ``segment`` is the token's (``token & 0xFF``), for its trading hours; ``offset`` the
    tick's source offset in its partition; ``event_time_s`` whole epoch seconds (exchange
    time, or receive time where the packet has none); ``cum_volume`` the day's cumulative
    ``volume_traded``, or None when the packet carries none. Rules: the module docstring.
    """
    if offset <= state.last_offset:
        return []
    state.last_offset = offset
    minute = event_time_s - event_time_s % MINUTE_S
    if minute != state.bar_start:
        return _apply_new_minute(state, segment, event_time_s, minute, last_price, cum_volume)
    # The hot path: another tick of the open bar's minute (hence same session, in hours;
    # and the open bar is never behind the watermark). Inlined: no calls, no allocations.
    if cum_volume is not None:
        last = state.last_cum
        if last is None:
            state.last_cum = cum_volume
        elif cum_volume >= last:
            state.bar_volume += cum_volume - last
            state.last_cum = cum_volume
        else:
            state.anomalies += 1
    if last_price > state.bar_high:
        state.bar_high = last_price
    elif last_price < state.bar_low:
        state.bar_low = last_price
    state.bar_close = last_price
    state.bar_ticks += 1
    return []


def advance_watermark(state: TokenVolumeState, segment: int, watermark_s: float) -> list[Bar]:
    """Close what event time has finished: the open bar if its minute ended at or before
    ``watermark_s``, and flat bars for every whole minute that ended by then, after the
    session's last bar and never past its close. Return them in order.

    The caller's watermark is the highest event time seen in the partition minus a grace,
    so illiquid tokens keep a regular grid without waiting for their next tick. A watermark
    at or below one already applied (same minute) changes nothing, so replays are harmless.
    """
    limit = minute_start(watermark_s)
    applied = state.watermark
    if applied is not None and limit <= applied:
        return []
    state.watermark = limit
    if state.session is None:
        return []
    return _close_before(state, segment, limit)


def _take_volume(state: TokenVolumeState, cum: int) -> int:
    """The increment ``cum`` brings (0 for a base or a decrease), advancing the base."""
    last = state.last_cum
    if last is None:
        state.last_cum = cum
        return 0
    if cum >= last:
        state.last_cum = cum
        return cum - last
    state.anomalies += 1
    return 0


def _apply_new_minute(
    state: TokenVolumeState,
    segment: int,
    event_time_s: int,
    minute: int,
    price: float,
    cum: int | None,
) -> list[Bar]:
    """Every tick that is not in the open bar's minute: session change, hours, lateness,
    opening a bar. At most once a minute per token in normal flow, so clarity over speed."""
    session = (event_time_s + IST_OFFSET_S) // DAY_S + _EPOCH_ORDINAL
    current = state.session
    bars: list[Bar] = []
    if current is None or session > current:
        if current is not None:
            bars = _close_before(state, segment, _NO_LIMIT)
        state.session = session
        state.last_cum = None
    elif session < current:
        state.late += 1  # a tick of a finished session: nothing of it can count any more
        return bars

    open_s, close_s = session_window(segment, session)
    if not open_s <= event_time_s < close_s:
        bars += _close_before(state, segment, minute)
        if cum is not None:
            _take_volume(state, cum)  # moves the base; the increment belongs to no bar
        state.outside += 1
        return bars

    bar_start = state.bar_start
    if bar_start is not None:
        is_late = minute < bar_start
    else:
        last_bar_start = state.last_bar_start
        is_late = last_bar_start is not None and minute <= last_bar_start
    if is_late:
        state.late += 1
        if cum is not None:
            if bar_start is not None:
                state.bar_volume += _take_volume(state, cum)
            elif state.last_cum is None or cum < state.last_cum:
                _take_volume(state, cum)  # a base, or an anomaly to count
            # else: leave last_cum; the next tick's increment includes this one's
        return bars

    bars += _close_before(state, segment, minute)
    state.bar_volume = 0 if cum is None else _take_volume(state, cum)
    state.bar_start = minute
    state.bar_open = state.bar_high = state.bar_low = state.bar_close = price
    state.bar_ticks = 1
    watermark = state.watermark
    if watermark is not None and minute < watermark:
        bars += _close_before(state, segment, watermark)  # already final by event time
    return bars


def _close_before(state: TokenVolumeState, segment: int, limit: int) -> list[Bar]:
    """Emit the open bar if it starts before ``limit`` (a minute start), then flat bars
    for the minutes after the last bar, before ``limit`` and the session's close, if the
    session has a bar at all."""
    bars: list[Bar] = []
    token = state.token
    bar_start = state.bar_start
    if bar_start is not None:
        if bar_start >= limit:
            return bars
        bars.append(
            Bar(
                token,
                bar_start,
                state.bar_open,
                state.bar_high,
                state.bar_low,
                state.bar_close,
                state.bar_volume,
                state.bar_ticks,
            )
        )
        state.last_close = state.bar_close
        state.last_bar_start = bar_start
        state.bar_start = None
        state.bar_open = state.bar_high = state.bar_low = state.bar_close = 0.0
        state.bar_volume = state.bar_ticks = 0

    session = state.session
    last_bar_start = state.last_bar_start
    close = state.last_close
    if session is None or last_bar_start is None or close is None:
        return bars
    open_s, close_s = session_window(segment, session)
    if last_bar_start < open_s:
        return bars  # no bar yet this session: the grid starts at its first tick
    end = min(limit, close_s)
    start = last_bar_start + MINUTE_S
    if start < end:
        for flat_start in range(start, end, MINUTE_S):
            bars.append(Bar(token, flat_start, close, close, close, close, 0, 0))
        state.last_bar_start = end - MINUTE_S
    return bars
