"""Historical 1-minute candles -> Bars -> session slot volumes -> baselines.

The time-aware baseline (:mod:`core.baselines`) needs weeks of per-minute volume before
the live pipeline has seen a single session, so it is bootstrapped from Kite's historical
API (``GET /instruments/historical/{token}/minute``), whose response is::

    {"status": "success", "data": {"candles": [["2017-12-15T09:15:00+0530", o, h, l, c, v], ...]}}

(a seventh element, OI, is present when requested and ignored here), or from a CSV export
of the same candles. Real exports are messy, so each row is validated and a bad one is
*skipped with a reason*, never fatal (design principle 6): a corrupt line in one month of
one token must not stop the bootstrap of a thousand. Reasons read ``"kind: detail"``; the
kinds are :data:`SKIP_KINDS`. Only a file that cannot be read at all (not JSON, no
candles, CSV without the needed columns) raises :class:`HistoryFileError`.

Parsing is pure (``parse_*`` take text or decoded JSON); :func:`load_history_file`,
:func:`load_baselines` and :func:`write_baselines` are the only functions here that
touch the file system.

Times: an offset in the text is honoured; a time without one is IST (exports from Indian
tools drop it). A candle must start on a minute, inside its segment's session
(:mod:`core.sessions`); Muhurat-trading or pre-open candles are therefore reported as
``out of session``, not silently bent into the regular grid.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import polars as pl

from core.bars import Bar
from core.baselines import (
    DEFAULT_POLICY,
    BaselinePolicy,
    SessionAccumulator,
    SlotVolumes,
    TokenBaseline,
    add_session,
)
from core.sessions import ist_date, slot_of
from core.timeutil import IST

#: Every reason kind a skipped row can have (the text before the first ``:``).
SKIP_KINDS: tuple[str, ...] = (
    "bad row",  # not a [time, o, h, l, c, v(, oi)] row, or a missing field
    "bad time",  # unparseable time, or not on a minute boundary
    "not numeric",  # a price or volume that is not a finite number
    "negative volume",
    "bad volume",  # a volume that is not a whole number
    "bad price",  # a price <= 0
    "out of session",  # a minute outside the segment's session
    "duplicate minute",  # a second candle for a minute already seen (the first is kept)
)

#: Header names accepted for the candle time in CSV files (first present wins).
TIME_COLUMNS: tuple[str, ...] = ("date", "time", "timestamp", "datetime")
_VALUE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume")


class HistoryFileError(ValueError):
    """A history file that cannot be used at all (as opposed to a bad row in it)."""


@dataclass(frozen=True, slots=True)
class SkippedCandle:
    """A candle that was not loaded: ``row`` is 1-based among data rows (the candle's
    position in the JSON list, or the CSV line after the header)."""

    row: int
    reason: str

    @property
    def kind(self) -> str:
        return self.reason.split(":", 1)[0]


ParseResult = tuple[list[Bar], list[SkippedCandle]]


# ------------------------------------------------------------------------------------
# Row validation, shared by the JSON and CSV parsers so both report the same reasons.


def _parse_time(value: object) -> int | str:
    """Epoch seconds of a candle time, or the reason it is not one."""
    if isinstance(value, datetime):
        when = value
    elif isinstance(value, str) and value.strip():
        try:
            when = datetime.fromisoformat(value.strip())
        except ValueError:
            return f"bad time: {value!r} is not an ISO 8601 time"
    else:
        return f"bad time: {value!r} is not a time"
    if when.tzinfo is None or when.utcoffset() is None:
        when = when.replace(tzinfo=IST)
    if when.second or when.microsecond:
        return f"bad time: {value!s} is not on a minute boundary"
    return int(when.timestamp())


def _number(name: str, value: object) -> float | str:
    """A finite float from a JSON number or a numeric string, or the reason it is not."""
    if isinstance(value, bool):
        return f"not numeric: {name}={value!r}"
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return f"not numeric: {name}={value!r}"
    else:
        return f"not numeric: {name}={value!r}"
    if not math.isfinite(number):
        return f"not numeric: {name}={value!r}"
    return number


class _Validator:
    """Turns rows into Bars of one token, remembering minutes already seen."""

    __slots__ = ("bars", "seen", "segment", "skipped", "token")

    def __init__(self, token: int) -> None:
        self.token = token
        self.segment = token & 0xFF
        self.seen: set[int] = set()
        self.bars: list[Bar] = []
        self.skipped: list[SkippedCandle] = []

    def row(self, row_no: int, values: Sequence[object]) -> None:
        reason = self._row(row_no, values)
        if reason is not None:
            self.skipped.append(SkippedCandle(row_no, reason))

    def _row(self, row_no: int, values: Sequence[object]) -> str | None:
        if len(values) < 6:
            return f"bad row: {len(values)} fields, expected [time, open, high, low, close, volume]"
        if any(v is None for v in values[:6]):
            missing = [
                n for n, v in zip(("time", *_VALUE_COLUMNS), values, strict=False) if v is None
            ]
            return f"bad row: missing {', '.join(missing)}"
        start = _parse_time(values[0])
        if isinstance(start, str):
            return start
        numbers: list[float] = []
        for name, value in zip(_VALUE_COLUMNS, values[1:6], strict=True):
            number = _number(name, value)
            if isinstance(number, str):
                return number
            numbers.append(number)
        o, h, lo, c, v = numbers
        if v < 0:
            return f"negative volume: {values[5]!r}"
        if not v.is_integer():
            return f"bad volume: {values[5]!r} is not a whole number"
        for name, price in zip(_VALUE_COLUMNS, (o, h, lo, c), strict=False):
            if price <= 0:
                return f"bad price: {name}={price!r}"
        if slot_of(self.segment, start) is None:
            when = datetime.fromtimestamp(start, IST).strftime("%Y-%m-%d %H:%M")
            return f"out of session: {when} IST"
        if start in self.seen:
            when = datetime.fromtimestamp(start, IST).strftime("%Y-%m-%d %H:%M")
            return f"duplicate minute: {when} IST"
        self.seen.add(start)
        self.bars.append(Bar(self.token, start, o, h, lo, c, int(v), 1))
        return None

    def result(self) -> ParseResult:
        self.bars.sort(key=lambda b: b.start)
        return self.bars, self.skipped


# ------------------------------------------------------------------------------------
# Parsers.


def parse_kite_candles(payload: object, token: int) -> ParseResult:
    """Bars of ``token`` from a decoded Kite historical response (or its bare candle list).

    Bars carry ``ticks=1``: a historical candle stands for at least one print, and it is
    not a flat filler bar. Raises :class:`HistoryFileError` when there is no candle list
    or the response is an error.
    """
    candles: object = payload
    if isinstance(payload, Mapping):
        status = payload.get("status")
        if status is not None and status != "success":
            message = payload.get("message") or payload.get("error_type") or status
            raise HistoryFileError(f"Kite error response: {message}")
        data = payload.get("data")
        candles = data.get("candles") if isinstance(data, Mapping) else None
    if not isinstance(candles, list):
        raise HistoryFileError('no candle list (expected {"data": {"candles": [...]}})')
    validator = _Validator(token)
    for n, candle in enumerate(candles, start=1):
        if isinstance(candle, list | tuple):
            validator.row(n, candle)
        else:
            validator.skipped.append(SkippedCandle(n, f"bad row: {type(candle).__name__}"))
    return validator.result()


def parse_kite_json(text: str | bytes, token: int) -> ParseResult:
    """Bars of ``token`` from the text of a Kite historical response."""
    try:
        payload = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HistoryFileError(f"not JSON: {exc}") from exc
    return parse_kite_candles(payload, token)


def _looks_like_time(value: str) -> bool:
    return isinstance(_parse_time(value), int)


def parse_csv(source: str | bytes | Path, token: int) -> ParseResult:
    """Bars of ``token`` from a CSV of candles (``source`` is CSV text, bytes or a path).

    Columns are found by header name, case-insensitively: the time in ``date``, ``time``,
    ``timestamp`` or ``datetime`` (separate ``date`` and ``time`` columns are joined), then
    ``open, high, low, close, volume``; others (``oi``) are ignored. A file without a
    header whose first field is a time is read positionally, as Kite's candle order.
    polars reads everything as text so that each bad cell is reported by the one
    validator, with the same reasons as JSON.
    """
    try:
        data: Path | io.BytesIO
        if isinstance(source, Path):
            data = source
        else:
            data = io.BytesIO(source.encode() if isinstance(source, str) else source)
        frame = pl.read_csv(
            data,
            infer_schema=False,
            has_header=False,
            truncate_ragged_lines=True,
            raise_if_empty=True,
        )
    except (pl.exceptions.PolarsError, UnicodeDecodeError, OSError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise HistoryFileError(f"not a readable CSV: {exc}") from exc
    rows = frame.rows()
    if not rows:
        raise HistoryFileError("empty CSV")
    header = [str(h).strip().lstrip("\ufeff").lower() if h is not None else "" for h in rows[0]]
    if header and _looks_like_time(str(rows[0][0] or "")):
        header_row = False
        time_idx: list[int] = [0]
        value_idx = [1, 2, 3, 4, 5]
        if len(header) < 6:
            raise HistoryFileError(f"{len(header)} columns without a header, expected 6")
    else:
        header_row = True
        if "date" in header and "time" in header:
            time_idx = [header.index("date"), header.index("time")]
        else:
            names = [c for c in TIME_COLUMNS if c in header]
            if not names:
                raise HistoryFileError(
                    f"no time column (one of {', '.join(TIME_COLUMNS)}) in header {header}"
                )
            time_idx = [header.index(names[0])]
        missing = [c for c in _VALUE_COLUMNS if c not in header]
        if missing:
            raise HistoryFileError(f"missing columns {', '.join(missing)} in header {header}")
        value_idx = [header.index(c) for c in _VALUE_COLUMNS]

    validator = _Validator(token)
    body = rows[1:] if header_row else rows
    for n, row in enumerate(body, start=1):
        parts = [row[i] for i in time_idx]
        when: object = None if any(p is None for p in parts) else " ".join(str(p) for p in parts)
        validator.row(n, [when, *(row[i] for i in value_idx)])
    return validator.result()


def load_history_file(path: Path | str, token: int) -> ParseResult:
    """Bars of ``token`` from a ``.json`` (Kite response) or ``.csv`` file.

    Raises :class:`HistoryFileError` for an unsupported suffix or an unusable file, and
    ``OSError`` when it cannot be read.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".json":
        return parse_kite_json(path.read_bytes(), token)
    if suffix == ".csv":
        return parse_csv(path, token)
    raise HistoryFileError(f"unsupported file type {suffix or '(none)'!r}: .json or .csv")


# ------------------------------------------------------------------------------------
# Bars -> sessions -> baseline.


def session_volumes(bars: Iterable[Bar]) -> dict[int, SlotVolumes]:
    """Slot volumes per session (IST date ordinal) from one token's historical bars.

    A minute without a candle is volume 0 (Kite omits minutes without trades). A session
    appears only if it has at least one bar. Bars outside the session are ignored (the
    parsers have already reported them). Raises ``ValueError`` for mixed tokens.
    """
    accumulators: dict[int, SessionAccumulator] = {}
    token: int | None = None
    for bar in bars:
        if token is None:
            token = bar.instrument_token
        elif bar.instrument_token != token:
            raise ValueError(f"bars of tokens {token} and {bar.instrument_token} mixed")
        day = ist_date(bar.start)
        acc = accumulators.get(day.toordinal())
        if acc is None:
            acc = accumulators[day.toordinal()] = SessionAccumulator(bar.instrument_token, day)
        acc.add(bar)
    out: dict[int, SlotVolumes] = {}
    for ordinal in sorted(accumulators):
        finished = accumulators[ordinal].finish(unobserved=0)
        if finished is not None:
            out[ordinal] = finished[1]
    return out


def baseline_from_bars(
    token: int,
    bars: Iterable[Bar],
    *,
    policy: BaselinePolicy = DEFAULT_POLICY,
    daily_volume: float | None = None,
) -> TokenBaseline:
    """A token's baseline from its historical bars (the latest ``policy.window`` sessions)."""
    baseline = TokenBaseline.for_token(token, daily_volume=daily_volume)
    for ordinal, volumes in session_volumes(bars).items():
        baseline = add_session(baseline, ordinal, volumes, policy=policy)
    return baseline


# ------------------------------------------------------------------------------------
# The bootstrap file: JSON lines of {"token": ..., "baseline": {...}}.


def write_baselines(path: Path | str, baselines: Mapping[int, TokenBaseline]) -> None:
    """Write baselines as JSON lines, one token per line in token order, atomically (a
    temporary file renamed over the target), so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as out:
            for token in sorted(baselines):
                record = {"token": token, "baseline": baselines[token].to_dict()}
                out.write(json.dumps(record, separators=(",", ":")))
                out.write("\n")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_baselines(
    path: Path | str, *, skipped: list[str] | None = None
) -> dict[int, TokenBaseline]:
    """Read a file written by :func:`write_baselines`.

    A corrupt line is skipped (and described in ``skipped`` when given), never fatal: the
    worker starts with what is readable. A later line for the same token wins. A missing
    file raises ``FileNotFoundError`` (a configuration error).
    """
    out: dict[int, TokenBaseline] = {}
    with Path(path).open(encoding="utf-8") as lines:
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                token = int(record["token"])
                baseline = TokenBaseline.from_dict(record["baseline"])
                if baseline.segment != token & 0xFF:
                    raise ValueError(f"segment {baseline.segment} is not token {token}'s")
            except (ValueError, KeyError, TypeError) as exc:
                if skipped is not None:
                    skipped.append(f"line {n}: {exc}")
                continue
            out[token] = baseline
    return out
