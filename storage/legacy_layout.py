"""The legacy scanner's Redis layout: its key names, where each went in schema v1, and
its "canonical" symbols.

One module holds this knowledge so that the migrator (which parses legacy names), the
dataset generator (which builds them) and the schema check at start-up (which must
recognise a legacy keyspace) cannot disagree. The layout itself is described in
``shared/reference/legacy-system.md``; the decisions are in :data:`MAPPINGS` and
``docs/migration.md``.

Legacy symbols glue the exchange to the trading symbol (``NSERELIANCE``,
``NFONIFTY25NOV26000CE``) and label *every* future and option ``NFO``, currency (CDS) and
commodity (MCX) contracts and BSE derivatives (BFO) included. :class:`SymbolResolver`
undoes that through the instrument master.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from config.instruments import Instrument, InstrumentMaster

#: The legacy databases in the more complete of its two database maps.
LEGACY_DBS: tuple[int, ...] = (0, 1, 2, 3, 5)

CASH_EXCHANGES: tuple[str, ...] = ("NSE", "BSE")
DERIVATIVE_EXCHANGES: tuple[str, ...] = ("NFO", "BFO", "MCX", "CDS", "BCD")
EXCHANGES: tuple[str, ...] = CASH_EXCHANGES + DERIVATIVE_EXCHANGES

VIX_KEY = "index:NSE:INDIA VIX"
HOT_TOKEN_MAPS: tuple[str, ...] = ("token_to_symbol", "symbol_to_token", "token_data")
PROFILE_PIECES: tuple[str, ...] = ("session", "poc", "nodes", "distribution")


def _is_stamp(part: str) -> bool:
    """``YYYYmmdd_HHMMSS_ffffff`` (cheaper than a regex: it runs for every per-tick key)."""
    return (
        len(part) == 22 and part[8] == "_" and part[15] == "_" and part.replace("_", "").isdigit()
    )


class LegacyKind(StrEnum):
    """Legacy key types; the value is the key pattern as legacy-system.md writes it."""

    TICK_LATEST = "ticks:latest:{symbol}"
    TICK_RAW = "ticks:raw:{symbol}"
    TICK_UNIFIED = "ticks:unified:raw"
    TICK_PROCESSED = "ticks:intraday:processed"
    PRICE_REALTIME = "price:realtime:{symbol}"
    VOL_STATE = "vol:state:{token}"
    VOLUME_BASELINE = "volume:baseline:{symbol}:{res}"
    VOL_BASELINE = "vol:baseline:{symbol}"
    REALTIME = "realtime:{symbol}:{YYYYmmdd_HHMMSS_ffffff}"
    INDICATOR = "indicators:{symbol}:{name}"
    GREEK = "ind:greeks:{symbol}:{greek}"
    VOLUME_PROFILE = "volume_profile:{piece}:{symbol}"
    ALERTS_STREAM = "alerts:stream"
    ALERT = "alert:{symbol}:{pattern}:{epoch}"
    ALERT_DEDUP = "alerts:dedup:{symbol}:{pattern}:{action}:{bucket}"
    HOT_TOKEN = "hot_token:{map}"
    VIX = VIX_KEY
    UNKNOWN = "(not a legacy key)"


@dataclass(frozen=True, slots=True)
class KindMapping:
    """Where a legacy kind goes: ``v1`` names the target (None: not migrated), ``home_db``
    the database the complete map puts it in (it wins when a key is in several),
    ``legacy_type`` the Redis type the legacy system wrote, ``note`` the why."""

    v1: str | None
    home_db: int | None
    legacy_type: str
    note: str


MAPPINGS: dict[LegacyKind, KindMapping] = {
    LegacyKind.TICK_LATEST: KindMapping(
        "tick:{token}",
        1,
        "hash",
        "fields renamed to the v1 tick layout (open_price -> open, *_ms times -> ISO "
        "+05:30), every v1 field written; the remaining TTL is kept",
    ),
    LegacyKind.TICK_RAW: KindMapping(
        None,
        1,
        "stream",
        "raw tick history: v1 keeps ticks in the broker's ticks topic, not in Redis",
    ),
    LegacyKind.TICK_UNIFIED: KindMapping(
        None,
        1,
        "stream",
        "raw tick history: v1 keeps ticks in the broker's ticks topic, not in Redis",
    ),
    LegacyKind.TICK_PROCESSED: KindMapping(
        None,
        1,
        "stream",
        "enriched-tick history computed with the legacy bugs (volume over-counts); v1 "
        "recomputes bars and ratios from ticks",
    ),
    LegacyKind.PRICE_REALTIME: KindMapping(
        None,
        1,
        "string",
        "60 s cache of the last price, which tick:{token} carries (from ticks:latest)",
    ),
    LegacyKind.VOL_STATE: KindMapping(
        None,
        2,
        "hash",
        "volume-engine state lives in the workers' checkpointed tables, never in Redis; "
        "a session's cumulative is useless after the session",
    ),
    LegacyKind.VOLUME_BASELINE: KindMapping(
        "baseline:{token} field {res}",
        2,
        "string",
        "expected volume per bucket resolution, kept for reference (the pipeline builds "
        "its own slot baselines from history)",
    ),
    LegacyKind.VOL_BASELINE: KindMapping(
        "baseline:{token} fields current, updated, source",
        2,
        "hash",
        "the same baseline key as volume:baseline; updated becomes ISO +05:30",
    ),
    LegacyKind.REALTIME: KindMapping(
        None,
        1,
        "hash",
        "one hash per tick (unbounded growth, legacy bug 3): per-tick history has no v1 "
        "home; bars:1m are built from the broker's ticks",
    ),
    LegacyKind.INDICATOR: KindMapping(
        "ind:{token} fields",
        5,
        "string",
        "rsi -> rsi_14, atr -> atr_14, macd JSON -> macd/macd_signal/macd_hist, bbands "
        "JSON -> bb_upper/bb_middle/bb_lower, ...; names without a v1 field are skipped",
    ),
    LegacyKind.GREEK: KindMapping(
        "greeks:{token} fields",
        2,
        "string",
        "delta, gamma, theta, vega, rho, iv; model = legacy (fixed-volatility values, "
        "legacy bug 6), underlying_token from the master",
    ),
    LegacyKind.VOLUME_PROFILE: KindMapping(
        None,
        2,
        "hash/string",
        "per-session profile, reset at each session start; v1 rebuilds it from the "
        "session's bars into vol:{token}",
    ),
    LegacyKind.ALERTS_STREAM: KindMapping(
        "alerts",
        3,
        "stream",
        "entry ids kept (event time); fields mapped to the v1 alert (id = legacy:{entry "
        "id}, action -> signal, last_price -> price), others kept as legacy_*",
    ),
    LegacyKind.ALERT: KindMapping(
        None,
        3,
        "hash",
        "per-alert copies (1 h TTL) of alerts:stream entries, which are migrated",
    ),
    LegacyKind.ALERT_DEDUP: KindMapping(
        None,
        3,
        "string",
        "90 s dedup markers; v1 cooldowns live in the pattern agent's table",
    ),
    LegacyKind.HOT_TOKEN: KindMapping(
        None,
        0,
        "hash",
        "stale instrument mappings; superseded by instrument:{token} and "
        "symbol:{exchange}:{tradingsymbol}, which workers publish from the current master",
    ),
    LegacyKind.VIX: KindMapping(
        "regime",
        0,
        "string",
        "India VIX quote JSON -> regime hash (vix, regime from the settings' thresholds, "
        "event_time)",
    ),
    LegacyKind.UNKNOWN: KindMapping(None, None, "-", "not a key type of the legacy layout"),
}


def precedence(kind: LegacyKind, dbs: tuple[int, ...]) -> tuple[int, ...]:
    """Databases in the order their copy of a key wins: the kind's home first."""
    home = MAPPINGS[kind].home_db
    first = (home,) if home is not None and home in dbs else ()
    return first + tuple(db for db in dbs if db != home)


@dataclass(frozen=True, slots=True)
class LegacyKey:
    """A parsed legacy key name. ``part`` is the kind's trailing piece (resolution,
    indicator name, greek, profile piece, map name, tick stamp, alert tail)."""

    kind: LegacyKind
    symbol: str = ""
    part: str = ""
    token: int | None = None

    def name(self) -> str:
        """The key name (the inverse of :func:`parse_legacy_key`)."""
        k, s, p = self.kind, self.symbol, self.part
        names = {
            LegacyKind.TICK_LATEST: f"ticks:latest:{s}",
            LegacyKind.TICK_RAW: f"ticks:raw:{s}",
            LegacyKind.TICK_UNIFIED: "ticks:unified:raw",
            LegacyKind.TICK_PROCESSED: "ticks:intraday:processed",
            LegacyKind.PRICE_REALTIME: f"price:realtime:{s}",
            LegacyKind.VOL_STATE: f"vol:state:{self.token}",
            LegacyKind.VOLUME_BASELINE: f"volume:baseline:{s}:{p}",
            LegacyKind.VOL_BASELINE: f"vol:baseline:{s}",
            LegacyKind.REALTIME: f"realtime:{s}:{p}",
            LegacyKind.INDICATOR: f"indicators:{s}:{p}",
            LegacyKind.GREEK: f"ind:greeks:{s}:{p}",
            LegacyKind.VOLUME_PROFILE: f"volume_profile:{p}:{s}",
            LegacyKind.ALERTS_STREAM: "alerts:stream",
            LegacyKind.ALERT: f"alert:{s}:{p}",
            LegacyKind.ALERT_DEDUP: f"alerts:dedup:{s}:{p}",
            LegacyKind.HOT_TOKEN: f"hot_token:{p}",
            LegacyKind.VIX: VIX_KEY,
            LegacyKind.UNKNOWN: p,
        }
        return names[k]

    def with_symbol(self, symbol: str) -> LegacyKey:
        return LegacyKey(self.kind, symbol, self.part, self.token)


_FIXED = {
    "ticks:unified:raw": LegacyKind.TICK_UNIFIED,
    "ticks:intraday:processed": LegacyKind.TICK_PROCESSED,
    "alerts:stream": LegacyKind.ALERTS_STREAM,
    VIX_KEY: LegacyKind.VIX,
}

#: (prefix, kind, layout): "s" = symbol, "sp" = symbol then part (split at the last
#: colon), "s1p" = symbol then part (split at the first colon), "ps" = part then symbol.
_PREFIXED: tuple[tuple[str, LegacyKind, str], ...] = (
    ("ticks:latest:", LegacyKind.TICK_LATEST, "s"),
    ("ticks:raw:", LegacyKind.TICK_RAW, "s"),
    ("price:realtime:", LegacyKind.PRICE_REALTIME, "s"),
    ("volume:baseline:", LegacyKind.VOLUME_BASELINE, "sp"),
    ("vol:baseline:", LegacyKind.VOL_BASELINE, "s"),
    ("realtime:", LegacyKind.REALTIME, "sp"),
    ("indicators:", LegacyKind.INDICATOR, "sp"),
    ("ind:greeks:", LegacyKind.GREEK, "sp"),
    ("volume_profile:", LegacyKind.VOLUME_PROFILE, "ps"),
    ("alerts:dedup:", LegacyKind.ALERT_DEDUP, "s1p"),
    ("alert:", LegacyKind.ALERT, "s1p"),
)


#: The same, by the key's first segment: a migration parses every key of the source twice
#: (migration and verification), most of them per-tick ``realtime:*`` keys.
_BY_HEAD: dict[str, tuple[tuple[str, LegacyKind, str], ...]] = {}
for _entry in _PREFIXED:
    _head = _entry[0].split(":", 1)[0]
    _BY_HEAD[_head] = (*_BY_HEAD.get(_head, ()), _entry)


def parse_legacy_key(name: str) -> LegacyKey:
    """Classify a key name; :attr:`LegacyKind.UNKNOWN` (with the name as ``part``) when it
    is not one of the legacy layout's."""
    kind = _FIXED.get(name)
    if kind is not None:
        return LegacyKey(kind)
    if name.startswith("vol:state:"):
        rest = name[len("vol:state:") :]
        if rest.isdigit():
            return LegacyKey(LegacyKind.VOL_STATE, token=int(rest))
        return LegacyKey(LegacyKind.UNKNOWN, part=name)
    if name.startswith("hot_token:"):
        rest = name[len("hot_token:") :]
        if rest in HOT_TOKEN_MAPS:
            return LegacyKey(LegacyKind.HOT_TOKEN, part=rest)
        return LegacyKey(LegacyKind.UNKNOWN, part=name)
    for prefix, kind, layout in _BY_HEAD.get(name.partition(":")[0], ()):
        if not name.startswith(prefix):
            continue
        rest = name[len(prefix) :]
        if layout == "s":
            symbol, part = rest, ""
        elif layout == "sp":
            symbol, _, part = rest.rpartition(":")
        elif layout == "s1p":
            symbol, _, part = rest.partition(":")
        else:
            part, _, symbol = rest.partition(":")
        if not symbol or (layout != "s" and not part):
            break
        if kind is LegacyKind.VOLUME_PROFILE and part not in PROFILE_PIECES:
            break
        if kind is LegacyKind.REALTIME and not _is_stamp(part):
            break
        return LegacyKey(kind, symbol, part)
    return LegacyKey(LegacyKind.UNKNOWN, part=name)


def is_legacy_key(name: str) -> bool:
    return parse_legacy_key(name).kind is not LegacyKind.UNKNOWN


# --- canonical symbols ---------------------------------------------------------------------


def legacy_symbol(instrument: Instrument) -> str:
    """How the legacy scanner named an instrument, its NFO-for-every-derivative bug
    included (``NFOUSDINR26NOVFUT`` for a CDS contract)."""
    prefix = "NFO" if instrument.is_derivative else instrument.exchange
    return prefix + instrument.tradingsymbol


@dataclass(frozen=True, slots=True)
class Resolution:
    """A legacy symbol resolved through the master. ``corrected_from`` is the wrong
    exchange label the legacy name carried, when it had to be corrected."""

    instrument: Instrument | None
    corrected_from: str | None = None
    reason: str = ""

    @property
    def canonical(self) -> str:
        """The correct canonical name (what the legacy key would be called without the bug)."""
        inst = self.instrument
        return "" if inst is None else inst.exchange + inst.tradingsymbol


class SymbolResolver:
    """Legacy canonical symbols -> instruments, through the current master.

    The exact (exchange, tradingsymbol) wins. A derivative labelled with the wrong
    derivative exchange (the legacy NFO bug) is found by its trading symbol on the other
    derivative exchanges, if exactly one lists it; two matches are ambiguous and, like a
    symbol the master does not know (an expired contract, a delisted stock), unresolved.
    """

    def __init__(self, master: InstrumentMaster) -> None:
        self._master = master
        self._derivatives: dict[str, list[Instrument]] = {}
        for inst in master:
            if inst.exchange in DERIVATIVE_EXCHANGES:
                self._derivatives.setdefault(inst.tradingsymbol, []).append(inst)
        self._cache: dict[str, Resolution] = {}

    def resolve(self, symbol: str) -> Resolution:
        found = self._cache.get(symbol)
        if found is None:
            found = self._cache[symbol] = self._resolve(symbol)
        return found

    def _resolve(self, symbol: str) -> Resolution:
        exchange, tradingsymbol = symbol[:3], symbol[3:]
        if exchange not in EXCHANGES or not tradingsymbol:
            return Resolution(None, reason=f"symbol {symbol!r} has no exchange prefix")
        inst = self._master.by_symbol(exchange, tradingsymbol)
        if inst is not None:
            return Resolution(inst)
        if exchange in DERIVATIVE_EXCHANGES:
            others = [i for i in self._derivatives.get(tradingsymbol, ()) if i.exchange != exchange]
            if len(others) == 1:
                return Resolution(others[0], corrected_from=exchange)
            if others:
                listed = ", ".join(sorted(i.exchange for i in others))
                return Resolution(None, reason=f"symbol {symbol!r} is ambiguous ({listed})")
        return Resolution(None, reason=f"symbol {symbol!r} is not in the instrument master")
