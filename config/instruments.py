"""The Kite instrument master: token <-> symbol, expiry, strike, lot, tick size.

Zerodha publishes the master as a CSV (``GET /instruments``) with the header in
:data:`COLUMNS`. Its quirks shape this module: non-derivatives have an empty ``expiry``
and a ``strike`` of ``0.0``; old option rows can have an empty ``name`` (the underlying
is then only recoverable from the trading symbol); indices carry ``tick_size`` 0.0 and
``lot_size`` 0. Everything downstream (the ingestor, the Greeks agent, the Redis
``instrument:*`` and ``symbol:*`` keys) looks instruments up here, so lookups are O(1)
dicts built once, and a bad row is counted and skipped rather than failing the whole
load (design principle 6): one corrupt line in a 100k-row download must not stop a
trading day. A missing file or a header without the required columns is a configuration
error and raises.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import astuple, dataclass, field, fields
from datetime import date
from pathlib import Path
from typing import Literal

import polars as pl

#: The columns of Kite's instrument master, in the order Kite writes them.
COLUMNS: tuple[str, ...] = (
    "instrument_token",
    "exchange_token",
    "tradingsymbol",
    "name",
    "last_price",
    "expiry",
    "strike",
    "tick_size",
    "lot_size",
    "instrument_type",
    "segment",
    "exchange",
)

#: The explicit schema of :attr:`InstrumentMaster.frame`. Tokens are Int64 rather than
#: UInt32 so that arithmetic like ``exchange_token << 8`` never overflows in polars.
SCHEMA: pl.Schema = pl.Schema(
    {
        "instrument_token": pl.Int64(),
        "exchange_token": pl.Int64(),
        "tradingsymbol": pl.String(),
        "name": pl.String(),
        "last_price": pl.Float64(),
        "expiry": pl.Date(),
        "strike": pl.Float64(),
        "tick_size": pl.Float64(),
        "lot_size": pl.Int64(),
        "instrument_type": pl.String(),
        "segment": pl.String(),
        "exchange": pl.String(),
    }
)

#: Columns without which a row cannot be used at all (an empty value skips the row).
_REQUIRED = ("instrument_token", "exchange_token", "tradingsymbol", "exchange")

#: Index derivative names and the index they settle against, as (exchange, tradingsymbol)
#: of the index row in the master. Stock derivatives need no table: their underlying is
#: the cash equity whose tradingsymbol equals the derivative's name.
INDEX_UNDERLYINGS: dict[str, tuple[str, str]] = {
    "NIFTY": ("NSE", "NIFTY 50"),
    "BANKNIFTY": ("NSE", "NIFTY BANK"),
    "FINNIFTY": ("NSE", "NIFTY FIN SERVICE"),
    "MIDCPNIFTY": ("NSE", "NIFTY MID SELECT"),
    "NIFTYNXT50": ("NSE", "NIFTY NEXT 50"),
    "SENSEX": ("BSE", "SENSEX"),
    "BANKEX": ("BSE", "BANKEX"),
}

#: Which cash exchanges a derivative exchange's stock contracts settle against, in order.
_CASH_EXCHANGES: dict[str, tuple[str, ...]] = {"NFO": ("NSE",), "BFO": ("BSE", "NSE")}

#: Kite's derivative trading symbols: ROOT + YY + (MON | weekly month code + DD) + rest,
#: e.g. ``BANKNIFTY18JAN23500CE``, ``NIFTY25D0226000CE``, ``M&M25NOVFUT``.
_DERIVATIVE_SYMBOL = re.compile(
    r"^(?P<root>[A-Z0-9&\-]+?)\d{2}"
    r"(?:JAN|FEB|MAR|APR|MAY|JUN|JUL|AUG|SEP|OCT|NOV|DEC|[1-9OND]\d{2})"
    r"(?:FUT|[0-9.]+(?:CE|PE))$"
)


@dataclass(frozen=True, slots=True)
class Instrument:
    """One row of the master, typed. Field names and order are Kite's columns.

    ``strike`` stays ``0.0`` for non-options exactly as Kite writes it, so a row
    round-trips unchanged (the Redis ``instrument:{token}`` hash mirrors it); use
    :attr:`is_option` / :attr:`option_type` rather than testing the strike.
    """

    instrument_token: int
    exchange_token: int
    tradingsymbol: str
    name: str
    last_price: float
    expiry: date | None
    strike: float
    tick_size: float
    lot_size: int
    instrument_type: str
    segment: str
    exchange: str

    @property
    def segment_id(self) -> int:
        """The numeric segment of the wire protocol (``instrument_token & 0xFF``)."""
        return self.instrument_token & 0xFF

    @property
    def option_type(self) -> Literal["CE", "PE"] | None:
        if self.instrument_type == "CE":
            return "CE"
        if self.instrument_type == "PE":
            return "PE"
        return None

    @property
    def is_option(self) -> bool:
        return self.instrument_type in ("CE", "PE")

    @property
    def is_future(self) -> bool:
        return self.instrument_type == "FUT"

    @property
    def is_derivative(self) -> bool:
        return self.instrument_type in ("CE", "PE", "FUT")

    @property
    def is_index(self) -> bool:
        """Indices are segment 9 on the wire and ``INDICES`` in the master."""
        return self.segment == "INDICES" or self.segment_id == 9

    @property
    def tradable(self) -> bool:
        """What the wire's ``tradable`` flag will say: false only for indices."""
        return not self.is_index

    @property
    def root(self) -> str:
        """The derivative's underlying name (``NIFTY``, ``RELIANCE``); own symbol otherwise.

        Kite fills ``name`` for current contracts, but old rows (such as those in the
        public sample) leave it empty, so fall back to parsing the trading symbol.
        """
        if not self.is_derivative:
            return self.tradingsymbol
        if self.name:
            return self.name
        match = _DERIVATIVE_SYMBOL.match(self.tradingsymbol)
        return match.group("root") if match else self.tradingsymbol

    def as_row(self) -> dict[str, str]:
        """The row as Kite writes it (strings), e.g. for the Redis ``instrument:`` hash."""
        out: dict[str, str] = {}
        for f, value in zip(fields(self), astuple(self), strict=True):
            if value is None:
                out[f.name] = ""
            elif isinstance(value, date):
                out[f.name] = value.isoformat()
            else:
                out[f.name] = str(value)
        return out


@dataclass(frozen=True, slots=True)
class SkippedRow:
    """A row that was not loaded. ``row`` is 1-based among data rows (header excluded)."""

    row: int
    reason: str
    tradingsymbol: str | None = None


@dataclass(slots=True)
class LoadReport:
    """What a load kept and what it skipped, and why: bad input is counted, never fatal."""

    source: str
    rows_read: int = 0
    rows_loaded: int = 0
    skipped: list[SkippedRow] = field(default_factory=list)

    @property
    def skipped_count(self) -> int:
        return len(self.skipped)

    def reasons(self) -> Counter[str]:
        """Skip counts by reason kind (the text before the first ':')."""
        return Counter(s.reason.split(":", 1)[0] for s in self.skipped)

    def summary(self) -> str:
        text = f"{self.source}: {self.rows_loaded} of {self.rows_read} rows loaded"
        if self.skipped:
            kinds = ", ".join(f"{k} x{n}" for k, n in sorted(self.reasons().items()))
            text += f", {self.skipped_count} skipped ({kinds})"
        return text


class InstrumentMasterError(ValueError):
    """The master cannot be used at all (missing file, missing columns)."""


class InstrumentMasterNotFound(InstrumentMasterError, FileNotFoundError):
    """The master file does not exist (also a FileNotFoundError, for generic handlers)."""


def bundled_path() -> Path:
    """The master shipped with the package (``config/data/instruments.csv``).

    Generated by ``scripts/generate_instruments.py``; declared as package data, so it is
    installed next to this module.
    """
    return Path(__file__).resolve().parent / "data" / "instruments.csv"


class InstrumentMaster:
    """An immutable, indexed instrument master.

    Build it with :meth:`load` (a CSV), :meth:`from_frame` (a polars frame) or
    :meth:`from_instruments`. Every lookup is a dict access; the dicts, including the
    derivative -> underlying map, are built once here because the ingestor and the
    Greeks agent call them per tick.
    """

    __slots__ = (
        "_by_symbol",
        "_by_token",
        "_chains",
        "_frame",
        "_instruments",
        "_underlying",
        "report",
    )

    def __init__(self, frame: pl.DataFrame, report: LoadReport) -> None:
        """Use the constructors; ``frame`` must already be clean and in :data:`SCHEMA`."""
        self._frame = frame
        self.report = report
        self._instruments: tuple[Instrument, ...] = tuple(
            Instrument(*row) for row in frame.iter_rows()
        )
        self._by_token = {i.instrument_token: i for i in self._instruments}
        self._by_symbol = {(i.exchange, i.tradingsymbol): i for i in self._instruments}
        self._chains: dict[tuple[str, date], list[Instrument]] = {}
        for inst in self._instruments:
            if inst.is_option and inst.expiry is not None:
                self._chains.setdefault((inst.root, inst.expiry), []).append(inst)
        for chain in self._chains.values():
            chain.sort(key=lambda i: (i.strike, i.instrument_type, i.exchange))
        self._underlying = self._map_underlyings()

    # --- construction -----------------------------------------------------------------
    @classmethod
    def load(cls, path: Path | str | None = None) -> InstrumentMaster:
        """Read a Kite instrument master CSV (``None``: the bundled one).

        Every column is read as text first so that a malformed value can be reported
        with its row instead of failing the whole file, then converted to :data:`SCHEMA`.
        """
        csv_path = Path(path) if path is not None else bundled_path()
        if not csv_path.is_file():
            raise InstrumentMasterNotFound(
                f"instrument master not found: {csv_path} (set TICKFLOW_INSTRUMENTS_PATH "
                "to a Kite instruments CSV, or leave it unset for the bundled master)"
            )
        try:
            raw = pl.read_csv(
                csv_path,
                infer_schema=False,
                truncate_ragged_lines=True,
                empty_string_is_null=False,
            )
        except (pl.exceptions.ComputeError, pl.exceptions.NoDataError) as exc:
            raise InstrumentMasterError(f"cannot read instrument master {csv_path}: {exc}") from exc
        return cls.from_frame(raw, source=str(csv_path))

    @classmethod
    def from_frame(cls, df: pl.DataFrame, *, source: str = "<frame>") -> InstrumentMaster:
        """Validate and type a frame with Kite's columns (text or already typed).

        Rows with an unusable value are skipped and listed in :attr:`report`; a frame
        lacking a required column raises :class:`InstrumentMasterError`.
        """
        missing = [c for c in COLUMNS if c not in df.columns]
        if missing:
            raise InstrumentMasterError(
                f"instrument master {source} lacks column(s) {', '.join(missing)}; "
                f"expected the Kite header {','.join(COLUMNS)}"
            )
        frame, report = _clean(df.select(COLUMNS), source)
        return cls(frame, report)

    @classmethod
    def from_instruments(
        cls, instruments: Iterable[Instrument], *, source: str = "<instruments>"
    ) -> InstrumentMaster:
        """Index a given set of instruments (e.g. a simulator's universe)."""
        rows = [astuple(i) for i in instruments]
        frame = pl.DataFrame(rows, schema=SCHEMA, orient="row")
        return cls.from_frame(frame, source=source)

    # --- access -----------------------------------------------------------------------
    @property
    def frame(self) -> pl.DataFrame:
        """The clean rows as a polars frame in :data:`SCHEMA` (file order kept)."""
        return self._frame

    def get(self, token: int) -> Instrument | None:
        return self._by_token.get(token)

    def by_symbol(self, exchange: str, tradingsymbol: str) -> Instrument | None:
        return self._by_symbol.get((exchange, tradingsymbol))

    def tokens(self) -> list[int]:
        return [i.instrument_token for i in self._instruments]

    def __len__(self) -> int:
        return len(self._instruments)

    def __iter__(self) -> Iterator[Instrument]:
        return iter(self._instruments)

    def __contains__(self, token: object) -> bool:
        return token in self._by_token

    def underlying_token(self, token: int) -> int | None:
        """The token a derivative prices off: the index for index derivatives
        (``NIFTY`` -> ``NIFTY 50``), the cash equity for stock derivatives. ``None`` for
        non-derivatives and for contracts whose underlying is not in the master (MCX and
        currency futures have no spot row).
        """
        return self._underlying.get(token)

    def underlying(self, token: int) -> Instrument | None:
        under = self._underlying.get(token)
        return None if under is None else self._by_token[under]

    def expiries(self, root: str) -> list[date]:
        """The option expiries listed for an underlying name, ascending."""
        return sorted(e for (r, e) in self._chains if r == root)

    def options_chain(self, root: str, expiry: date) -> list[Instrument]:
        """All options of ``root`` (e.g. ``NIFTY``) expiring on ``expiry``, by strike
        then CE before PE; empty when there are none."""
        return list(self._chains.get((root, expiry), ()))

    # --- internals --------------------------------------------------------------------
    def _map_underlyings(self) -> dict[int, int]:
        out: dict[int, int] = {}
        equities: dict[tuple[str, str], int] = {}
        for inst in self._instruments:
            if inst.instrument_type == "EQ" and not inst.is_index:
                equities.setdefault((inst.exchange, inst.tradingsymbol), inst.instrument_token)
        resolved: dict[tuple[str, str], int | None] = {}
        for inst in self._instruments:
            if not inst.is_derivative:
                continue
            key = (inst.exchange, inst.root)
            if key not in resolved:
                resolved[key] = self._resolve(inst.exchange, inst.root, equities)
            under = resolved[key]
            if under is not None:
                out[inst.instrument_token] = under
        return out

    def _resolve(
        self, exchange: str, root: str, equities: dict[tuple[str, str], int]
    ) -> int | None:
        index = INDEX_UNDERLYINGS.get(root)
        if index is not None:
            inst = self._by_symbol.get(index)
            return inst.instrument_token if inst is not None else None
        for cash in _CASH_EXCHANGES.get(exchange, ()):
            token = equities.get((cash, root))
            if token is not None:
                return token
        return None


def _convert(name: str, dtype: pl.DataType) -> pl.Expr:
    """Text -> typed column; a value that does not convert becomes null (and is reported)."""
    col = pl.col(name)
    if dtype == pl.Date():
        return col.str.to_date("%Y-%m-%d", strict=False)
    if dtype == pl.Int64():
        # Kite writes integers, but a float-formatted "25.0" is still a usable lot size.
        as_float = col.cast(pl.Float64, strict=False)
        whole = as_float.is_finite() & (as_float == as_float.round(0))
        return pl.when(whole).then(as_float.cast(pl.Int64, strict=False)).alias(name)
    if dtype == pl.Float64():
        as_float = col.cast(pl.Float64, strict=False)
        return pl.when(as_float.is_finite()).then(as_float).alias(name)
    return col


def _clean(df: pl.DataFrame, source: str) -> tuple[pl.DataFrame, LoadReport]:
    """Convert every column to :data:`SCHEMA`, collecting the rows that do not convert."""
    report = LoadReport(source=source, rows_read=df.height)
    text = df.with_columns(
        pl.col(c).cast(pl.String).str.strip_chars().fill_null("").alias(c) for c in COLUMNS
    )
    typed = text.select(_convert(name, dtype) for name, dtype in SCHEMA.items())

    bad: dict[int, str] = {}
    for name in COLUMNS:
        raw = text.get_column(name)
        value = typed.get_column(name)
        if name in _REQUIRED:
            for idx in (raw == "").arg_true().to_list():
                bad.setdefault(idx, f"missing {name}")
        unparsable = (raw != "") & value.is_null()
        for idx in unparsable.arg_true().to_list():
            bad.setdefault(idx, f"bad {name}: {raw[idx]!r}")
    token = typed.get_column("instrument_token")
    for idx in ((token <= 0) | (token > 0xFFFFFFFF)).fill_null(False).arg_true().to_list():
        bad.setdefault(idx, f"bad instrument_token: {token[idx]} outside uint32")
    seen: set[int] = set()
    for idx, tok in enumerate(token.to_list()):
        if idx in bad or tok is None:
            continue
        if tok in seen:
            bad[idx] = f"duplicate instrument_token: {tok}"
        seen.add(tok)

    symbols = text.get_column("tradingsymbol").to_list()
    report.skipped = [
        SkippedRow(row=idx + 1, reason=reason, tradingsymbol=symbols[idx] or None)
        for idx, reason in sorted(bad.items())
    ]
    keep = pl.Series([idx not in bad for idx in range(typed.height)], dtype=pl.Boolean)
    clean = typed.filter(keep).with_columns(
        pl.col("last_price").fill_null(0.0),
        pl.col("strike").fill_null(0.0),
        pl.col("tick_size").fill_null(0.0),
        pl.col("lot_size").fill_null(0),
    )
    report.rows_loaded = clean.height
    return clean.select(list(SCHEMA)).cast(SCHEMA), report
