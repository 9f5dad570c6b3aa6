"""Migration of the legacy scanner's Redis keyspace into schema v1.

The legacy data is the only copy a user has, so the design is about safety first and
speed second:

* **Nothing is destroyed by default.** The source is only read; it is backed up (typed,
  checksummed, :mod:`storage.backup`) before the first write of a run; source keys are
  deleted only with ``delete_sources`` and only after a verification pass has found each
  one's values in the target; keys skipped by design are deleted only with
  ``delete_skipped`` as well, and malformed or unresolvable ones never (they are copied to
  ``tickflow:migration:quarantine:{db}:{key}`` and listed).
* **Every write is absolute and compared first,** so a rerun is a no-op (it reports 0
  fields written) and an interrupted run can simply be run again. Each batch's target
  writes and its SCAN cursor (``tickflow:migration:checkpoint``) commit in one MULTI/EXEC,
  so a run killed at any point resumes right after its last committed batch, and ends
  identical to an uninterrupted run (SCAN order over an unchanged source is stable).
* **The target wins.** A v1 field that already holds a different value (written by a live
  pipeline, or a second legacy key mapping to the same field) is kept and reported as a
  conflict; the source key behind it is then never deleted.
* **Expiry is absolute.** A migrated value expires when its legacy key would have
  (``PEXPIRETIME`` -> ``PEXPIREAT``), which is also what makes reruns deterministic. A v1
  hash fed by several legacy keys (``ind:``, ``greeks:``, ``baseline:``) gets per-field
  TTLs where the server has them (Redis 7.4+/Valkey 9+), otherwise the latest expiry of
  its parts (no value disappears earlier than in the legacy system).

Reads are SCAN batches with pipelined commands (a few round trips per batch, whatever
its size): the per-key round trips of the legacy scripts would make a 100k-key migration
take minutes.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import redis
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from config.instruments import InstrumentMaster
from config.settings import Settings
from core.timeutil import IST, iso_from_epoch, iso_from_epoch_ms
from storage import backup as backups
from storage.keys import SCHEMA_VERSION, Keys
from storage.legacy_layout import (
    MAPPINGS,
    LegacyKey,
    LegacyKind,
    SymbolResolver,
    parse_legacy_key,
    precedence,
)
from storage.redis_manager import (
    ConnectionSpec,
    RedisConfigError,
    RedisFeatures,
    schema_decision,
    sync_client,
)
from storage.tick_hash import TICK_FIELDS

Outcome = Literal["migrate", "skip", "quarantine", "expired"]
OUTCOMES: tuple[Outcome, ...] = ("migrate", "skip", "quarantine", "expired")


class MigrationError(RuntimeError):
    """The migration cannot run or did not verify; the message says why."""


class Malformed(ValueError):
    """A legacy value that does not convert; the message names the field and value."""


# --- planned writes --------------------------------------------------------------------------


@dataclass(slots=True)
class HashOp:
    """Set ``fields`` of the hash ``key``. ``merge``: several legacy keys feed this hash
    (their expiries combine); ``own``: tickflow's bookkeeping, overwritten not conflicted."""

    key: str
    fields: dict[str, str]
    expire_at: int | None
    merge: bool = False
    own: bool = False


@dataclass(slots=True)
class StreamOp:
    """Append ``entries`` (id, fields) to the stream ``key`` with their ids."""

    key: str
    entries: list[tuple[str, dict[str, str]]]


Op = HashOp | StreamOp


@dataclass(slots=True)
class KeyPlan:
    """What happens to one legacy key, and (after the target comparison) what it met."""

    db: int
    name: str
    kind: LegacyKind
    outcome: Outcome
    reason: str = ""
    ops: list[Op] = field(default_factory=list)
    corrected_from: str | None = None
    quarantined_entries: int = 0
    conflicts: int = 0
    missing: int = 0

    @property
    def label(self) -> str:
        return f"{self.db}:{self.name}"

    @property
    def fully_migrated(self) -> bool:
        return (
            self.outcome == "migrate"
            and not self.conflicts
            and not self.missing
            and not self.quarantined_entries
        )


# --- value conversion ------------------------------------------------------------------------


def _float(value: str, what: str) -> str:
    try:
        number = float(value)
    except ValueError:
        raise Malformed(f"{what}: {value!r} is not a number") from None
    if not math.isfinite(number):
        raise Malformed(f"{what}: {value!r} is not a finite number")
    return repr(number)


def _integer(value: str, what: str) -> str:
    text = _float(value, what)
    number = float(text)
    if number != int(number):
        raise Malformed(f"{what}: {value!r} is not a whole number")
    return str(int(number))


def _iso(value: str, what: str, *, ms: bool = False) -> str:
    """An ISO time (naive = IST: what the legacy hosts meant, see docs/migration.md) or
    epoch seconds/milliseconds, as ISO 8601 with +05:30."""
    text = value.strip()
    if text.replace(".", "", 1).isdigit():
        epoch = float(text)
        return iso_from_epoch_ms(int(epoch)) if epoch > 1e11 else iso_from_epoch(int(epoch))
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise Malformed(f"{what}: {value!r} is not a time") from None
    parsed = parsed.replace(tzinfo=IST) if parsed.tzinfo is None else parsed.astimezone(IST)
    return parsed.isoformat(timespec="milliseconds" if ms else "auto")


def _text(value: bytes, what: str) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise Malformed(f"{what}: not UTF-8 text") from None


def _fields(raw: Mapping[bytes, bytes], what: str) -> dict[str, str]:
    return {_text(k, what): _text(v, what) for k, v in raw.items()}


# v1 tick field -> (legacy names, whole number)
_TICK_NUMBERS: dict[str, tuple[tuple[str, ...], bool]] = {
    "last_price": (("last_price", "ltp"), False),
    "last_traded_quantity": (("last_traded_quantity", "last_quantity"), True),
    "average_traded_price": (("average_traded_price", "average_price"), False),
    "volume_traded": (("volume_traded", "volume", "zerodha_cumulative_volume"), True),
    "total_buy_quantity": (("total_buy_quantity", "buy_quantity"), True),
    "total_sell_quantity": (("total_sell_quantity", "sell_quantity"), True),
    "open": (("open_price", "open"), False),
    "high": (("high_price", "high"), False),
    "low": (("low_price", "low"), False),
    "close": (("close_price", "close"), False),
    "change": (("change",), False),
    "oi": (("oi",), True),
    "oi_day_high": (("oi_day_high",), True),
    "oi_day_low": (("oi_day_low",), True),
    "best_bid": (("best_bid", "best_bid_price"), False),
    "best_bid_qty": (("best_bid_qty", "best_bid_quantity"), True),
    "best_ask": (("best_ask", "best_ask_price"), False),
    "best_ask_qty": (("best_ask_qty", "best_ask_quantity"), True),
}
# v1 time field -> (legacy base name, millisecond precision); ``{base}_ms`` wins
_TICK_TIMES: dict[str, tuple[str, bool]] = {
    "last_trade_time": ("last_trade_time", False),
    "exchange_timestamp": ("exchange_timestamp", False),
    "received_at": ("timestamp", True),
}

_IND_SCALAR: dict[str, str] = {
    **{n: n for n in ("sma_20", "ema_9", "ema_20", "ema_50", "ema_200", "obv", "vwap")},
    "rsi": "rsi_14",
    "rsi_14": "rsi_14",
    "atr": "atr_14",
    "atr_14": "atr_14",
    "adx": "adx_14",
    "adx_14": "adx_14",
}
_IND_JSON: dict[str, dict[str, str]] = {
    "macd": {"macd": "macd", "signal": "macd_signal", "histogram": "macd_hist"},
    "bbands": {"upper": "bb_upper", "middle": "bb_middle", "lower": "bb_lower"},
    "stoch": {"k": "stoch_k", "d": "stoch_d"},
}
_GREEKS: dict[str, str] = {
    **{g: g for g in ("delta", "gamma", "theta", "vega", "rho", "iv")},
    "implied_volatility": "iv",
}
_RESOLUTION = ("min", "m", "h", "d", "s")

_ALERT_FIELDS: tuple[str, ...] = (
    "id", "token", "symbol", "exchange", "pattern", "signal", "confidence", "price",
    "volume_ratio", "pc", "rsi", "regime", "vix", "bar_start", "event_time", "stop_loss",
)  # fmt: skip
_ALERT_NUMBERS: dict[str, tuple[str, ...]] = {
    "confidence": ("confidence",),
    "price": ("price", "last_price"),
    "volume_ratio": ("volume_ratio",),
    "pc": ("pc", "price_change", "price_change_pct"),
    "rsi": ("rsi",),
    "vix": ("vix",),
    "stop_loss": ("stop_loss",),
}
_ALERT_CONSUMED = frozenset(
    {"symbol", "pattern", "action", "signal", "regime", "token", "instrument_token", "exchange"}
    | {n for names in _ALERT_NUMBERS.values() for n in names}
)

#: How each migrated kind is read from the source (one command per key).
_READS: dict[LegacyKind, str] = {
    LegacyKind.TICK_LATEST: "hash",
    LegacyKind.VOLUME_BASELINE: "string",
    LegacyKind.VOL_BASELINE: "hash",
    LegacyKind.INDICATOR: "string",
    LegacyKind.GREEK: "string",
    LegacyKind.ALERTS_STREAM: "stream",
    LegacyKind.VIX: "string",
}
_SYMBOL_KINDS = frozenset(_READS) - {LegacyKind.ALERTS_STREAM, LegacyKind.VIX}


class Transformer:
    """Legacy values -> v1 operations. Pure given the master and the settings, so a
    verification pass recomputes exactly what the migration wrote."""

    def __init__(self, keys: Keys, resolver: SymbolResolver, settings: Settings) -> None:
        self.keys = keys
        self.resolver = resolver
        self.settings = settings

    def plan(
        self, db: int, name: str, key: LegacyKey, value: Any, expire_at: int | None
    ) -> KeyPlan:
        plan = KeyPlan(db, name, key.kind, "migrate")
        try:
            if key.kind is LegacyKind.ALERTS_STREAM:
                self._alerts(plan, value)
                return plan
            if key.kind is LegacyKind.VIX:
                plan.ops.append(self._vix(_text(value, "value")))
                return plan
            resolution = self.resolver.resolve(key.symbol)
            inst = resolution.instrument
            if inst is None:
                plan.outcome, plan.reason = "quarantine", resolution.reason
                return plan
            plan.corrected_from = resolution.corrected_from
            token = inst.instrument_token
            if key.kind is LegacyKind.TICK_LATEST:
                fields = self._tick(
                    _fields(value, "hash"), token, inst.tradingsymbol, inst.exchange
                )
                plan.ops.append(HashOp(self.keys.tick(token), fields, expire_at))
            elif key.kind is LegacyKind.INDICATOR:
                ind = self._indicator(key.part, _text(value, "value"))
                if ind is None:
                    plan.outcome = "skip"
                    plan.reason = f"indicator {key.part!r} has no ind:{{token}} field in v1"
                    return plan
                plan.ops.append(HashOp(self.keys.indicators(token), ind, expire_at, merge=True))
            elif key.kind is LegacyKind.GREEK:
                greek = _GREEKS.get(key.part)
                if greek is None:
                    plan.outcome = "skip"
                    plan.reason = f"greek {key.part!r} has no greeks:{{token}} field in v1"
                    return plan
                under = self.resolver_underlying(token)
                fields = {
                    greek: _float(_text(value, "value"), greek),
                    "underlying_token": under,
                    "model": "legacy",
                }
                plan.ops.append(HashOp(self.keys.greeks(token), fields, expire_at, merge=True))
            elif key.kind is LegacyKind.VOLUME_BASELINE:
                res = key.part
                if not any(res.endswith(u) and res[: -len(u)].isdigit() for u in _RESOLUTION):
                    raise Malformed(f"resolution {res!r} is not like 1min, 5min, 1h")
                fields = {res: _float(_text(value, "value"), res)}
                plan.ops.append(HashOp(self.keys.baseline(token), fields, expire_at, merge=True))
            elif key.kind is LegacyKind.VOL_BASELINE:
                fields = self._baseline(_fields(value, "hash"))
                plan.ops.append(HashOp(self.keys.baseline(token), fields, expire_at, merge=True))
        except Malformed as exc:
            plan.outcome, plan.reason, plan.ops = "quarantine", f"malformed: {exc}", []
        return plan

    def resolver_underlying(self, token: int) -> str:
        master = self.resolver._master
        under = master.underlying_token(token)
        return "" if under is None else str(under)

    def _tick(
        self, legacy: dict[str, str], token: int, symbol: str, exchange: str
    ) -> dict[str, str]:
        if not legacy:
            raise Malformed("empty hash")
        out = dict.fromkeys(TICK_FIELDS, "")
        out.update(token=str(token), symbol=symbol, exchange=exchange)
        out["mode"] = legacy.get("mode", "")
        for v1, (names, whole) in _TICK_NUMBERS.items():
            raw = next((legacy[n] for n in names if legacy.get(n, "") != ""), "")
            if raw:
                out[v1] = _integer(raw, names[0]) if whole else _float(raw, names[0])
        if not out["last_price"]:
            raise Malformed("last_price: missing")
        for v1, (base, ms) in _TICK_TIMES.items():
            epoch_ms = legacy.get(f"{base}_ms", "")
            if epoch_ms:
                millis = int(_integer(epoch_ms, f"{base}_ms"))
                out[v1] = iso_from_epoch_ms(millis) if ms else iso_from_epoch(millis // 1000)
            elif legacy.get(base):
                out[v1] = _iso(legacy[base], base, ms=ms)
        return {k: v for k, v in out.items() if k in TICK_FIELDS}

    @staticmethod
    def _indicator(name: str, text: str) -> dict[str, str] | None:
        scalar = _IND_SCALAR.get(name)
        if scalar is not None:
            return {scalar: _float(text, name)}
        parts = _IND_JSON.get(name)
        if parts is None:
            return None
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            raise Malformed(f"{name}: {text[:40]!r} is not JSON") from None
        if not isinstance(data, dict):
            raise Malformed(f"{name}: {text[:40]!r} is not a JSON object")
        out = {}
        for legacy_name, v1 in parts.items():
            if legacy_name not in data:
                raise Malformed(f"{name}: no {legacy_name!r} in {text[:40]!r}")
            out[v1] = _float(str(data[legacy_name]), f"{name}.{legacy_name}")
        return out

    @staticmethod
    def _baseline(legacy: dict[str, str]) -> dict[str, str]:
        out = dict(legacy)  # fields the legacy system added later are carried as they are
        if "current" in legacy:
            out["current"] = _float(legacy["current"], "current")
        else:
            raise Malformed("current: missing")
        if legacy.get("updated"):
            out["updated"] = _iso(legacy["updated"], "updated")
        return out

    def _vix(self, text: str) -> HashOp:
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            raise Malformed(f"{text[:40]!r} is not JSON") from None
        if not isinstance(data, dict):
            raise Malformed(f"{text[:40]!r} is not a JSON object")
        raw = next((data[n] for n in ("last_price", "ltp", "value") if n in data), None)
        if raw is None:
            raise Malformed("no last_price in the VIX quote")
        vix = float(_float(str(raw), "last_price"))
        s = self.settings
        regime = (
            "PANIC" if vix >= s.regime_panic_from
            else "HIGH" if vix >= s.regime_high_from
            else "NORMAL" if vix >= s.regime_normal_from
            else "LOW"
        )  # fmt: skip
        event_time = ""
        if data.get("timestamp_ms") not in (None, ""):
            event_time = iso_from_epoch_ms(int(_integer(str(data["timestamp_ms"]), "timestamp_ms")))
        elif data.get("timestamp"):
            event_time = _iso(str(data["timestamp"]), "timestamp", ms=True)
        fields = {"vix": repr(vix), "regime": regime, "event_time": event_time}
        return HashOp(self.keys.regime, fields, None)

    def _alerts(
        self, plan: KeyPlan, entries: Sequence[tuple[bytes, Mapping[bytes, bytes]]]
    ) -> None:
        good: list[tuple[str, dict[str, str]]] = []
        bad: list[tuple[str, dict[str, str], str]] = []
        for raw_id, raw_fields in entries:
            entry_id = raw_id.decode()
            try:
                good.append((entry_id, self._alert(entry_id, _fields(raw_fields, "entry"))))
            except Malformed as exc:
                legacy = {
                    k.decode("utf-8", "replace"): v.decode("utf-8", "replace")
                    for k, v in raw_fields.items()
                }
                bad.append((entry_id, legacy, str(exc)))
        if good:
            plan.ops.append(StreamOp(self.keys.alerts, good))
        if bad:
            plan.quarantined_entries = len(bad)
            reasons = Counter(reason.split(":", 1)[0] for _, _, reason in bad)
            plan.reason = f"{len(bad)} malformed entries ({dict(reasons)})"
            plan.ops.append(
                HashOp(
                    self.keys.migration_quarantine(plan.db, plan.name),
                    {
                        "db": str(plan.db),
                        "key": plan.name,
                        "type": "stream-entries",
                        "reason": plan.reason,
                        "value": json.dumps(
                            [[i, f, r] for i, f, r in bad], ensure_ascii=False, sort_keys=True
                        ),
                        "expire_at": "",
                    },
                    None,
                    own=True,
                )
            )
        if not good and not bad:
            plan.outcome, plan.reason = "skip", "empty stream"

    def _alert(self, entry_id: str, legacy: dict[str, str]) -> dict[str, str]:
        symbol, pattern = legacy.get("symbol", ""), legacy.get("pattern", "")
        if not symbol:
            raise Malformed("symbol: missing")
        if not pattern:
            raise Malformed("pattern: missing")
        resolution = self.resolver.resolve(symbol)
        inst = resolution.instrument
        if inst is None:
            raise Malformed(f"unresolved: {resolution.reason}")
        out = dict.fromkeys(_ALERT_FIELDS, "")
        action, signal = legacy.get("action", ""), legacy.get("signal", "")
        out.update(
            id=f"legacy:{entry_id}",
            token=str(inst.instrument_token),
            symbol=inst.tradingsymbol,
            exchange=inst.exchange,
            pattern=pattern,
            signal=action if action in ("BUY", "SELL") else signal,
            regime=legacy.get("regime", ""),
            event_time=iso_from_epoch_ms(int(entry_id.split("-", 1)[0])),
        )
        for v1, names in _ALERT_NUMBERS.items():
            raw = next((legacy[n] for n in names if legacy.get(n, "") != ""), "")
            if raw:
                out[v1] = _float(raw, names[0])
        for name, value in legacy.items():
            if name not in _ALERT_CONSUMED:
                out[f"legacy_{name}"] = value
        return out


# --- the target comparison ---------------------------------------------------------------------


@dataclass
class TargetStats:
    """What a pass did (or, dry or verifying, would have done) to the target."""

    fields_written: int = 0
    entries_added: int = 0
    ttl_changes: int = 0
    keys_written: int = 0
    ops_unchanged: int = 0
    conflicts: int = 0
    missing: int = 0
    conflict_examples: list[str] = field(default_factory=list)
    missing_examples: list[str] = field(default_factory=list)

    def add(self, other: TargetStats) -> None:
        for name in (
            "fields_written", "entries_added", "ttl_changes", "keys_written",
            "ops_unchanged", "conflicts", "missing",
        ):  # fmt: skip
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.conflict_examples = (self.conflict_examples + other.conflict_examples)[:10]
        self.missing_examples = (self.missing_examples + other.missing_examples)[:10]

    @property
    def changes(self) -> int:
        return self.fields_written + self.entries_added + self.ttl_changes


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


class _HashState:
    __slots__ = ("expire", "field_expire", "fields", "wrong_type")

    def __init__(self, fields: dict[str, str] | None, expire: int, wrong_type: str = "") -> None:
        self.fields = fields  # None: the key does not exist
        self.expire = expire  # -2 missing, -1 persistent, else ms
        self.field_expire: dict[str, int] = {}
        self.wrong_type = wrong_type  # the key exists with another type: all conflicts


StreamState = tuple[tuple[int, int] | None, dict[str, dict[str, str]]]


@dataclass
class _Overlay:
    """The target as the operations so far left it; a dry run keeps one across batches
    (it writes nothing, so the target itself never shows its earlier batches)."""

    hashes: dict[str, _HashState] = field(default_factory=dict)
    streams: dict[str, StreamState] = field(default_factory=dict)


def compare_and_write(
    target: redis.Redis,
    plans: Sequence[KeyPlan],
    *,
    field_ttl: bool,
    write: bool,
    extra: Callable[[redis.client.Pipeline], None] | None = None,
    overlay: _Overlay | None = None,
    touched: set[str] | None = None,
) -> TargetStats:
    """Compare the plans' operations with the target and, with ``write``, apply what is
    missing, plus ``extra`` commands (the checkpoint), in one MULTI/EXEC.

    Each operation is decided against the target as it will be after the operations
    before it (an overlay), so two legacy keys feeding one v1 hash in the same batch
    behave exactly as they would in separate batches.
    """
    stats = TargetStats()
    hash_keys: dict[str, set[str]] = {}
    stream_keys: dict[str, list[str]] = {}
    for plan in plans:
        for op in plan.ops:
            if isinstance(op, HashOp):
                hash_keys.setdefault(op.key, set()).update(op.fields)
            else:
                stream_keys.setdefault(op.key, []).extend(i for i, _ in op.entries)

    cached = overlay if overlay is not None else _Overlay()
    hashes, streams = cached.hashes, cached.streams
    hash_order = [k for k in hash_keys if k not in hashes]
    for key, (kind, expire, value) in zip(
        hash_order,
        backups.bulk_reader(target).read([k.encode() for k in hash_order]),
        strict=True,
    ):
        if kind in ("hash", "none"):
            fields = {k.decode(): v.decode() for k, v in value.items()} if value else None
            hashes[key] = _HashState(fields, expire if kind == "hash" else -2)
        else:
            hashes[key] = _HashState({}, expire, wrong_type=kind)
    stream_order = [k for k in stream_keys if k not in streams]
    pipe = target.pipeline(transaction=False)
    if field_ttl:
        for key in hash_order:
            names = sorted(hash_keys[key])
            pipe.execute_command("HPEXPIRETIME", key, "FIELDS", len(names), *names)
    for key in stream_order:
        ids = sorted(stream_keys[key], key=_id_key)
        pipe.xinfo_stream(key)
        pipe.xrange(key, ids[0], ids[-1])
    replies = iter(pipe.execute(raise_on_error=False) if len(pipe) else [])
    if field_ttl:
        for key in hash_order:
            names = sorted(hash_keys[key])
            ttls = next(replies)
            if isinstance(ttls, list) and len(ttls) == len(names):
                hashes[key].field_expire = dict(zip(names, map(int, ttls), strict=True))
    for key in stream_order:
        info, entries = next(replies), next(replies)
        top = None if isinstance(info, Exception) else _id_key(info["last-generated-id"].decode())
        have = {
            i.decode(): {k.decode(): v.decode() for k, v in f.items()}
            for i, f in ([] if isinstance(entries, Exception) else entries)
        }
        streams[key] = (top, have)

    out = target.pipeline(transaction=True)
    touched = touched if touched is not None else set()
    before = len(touched)
    for plan in plans:
        for op in plan.ops:
            if isinstance(op, HashOp):
                _decide_hash(op, hashes[op.key], out, stats, plan, field_ttl, touched)
            else:
                streams[op.key] = _decide_stream(op, streams[op.key], out, stats, plan, touched)
    stats.keys_written = len(touched) - before
    if write:
        stats.missing_examples = []
        if extra is not None:
            extra(out)
        if len(out):
            out.execute()
    else:
        stats.missing = stats.fields_written + stats.entries_added + stats.ttl_changes
    return stats


def _decide_hash(
    op: HashOp,
    state: _HashState,
    out: redis.client.Pipeline,
    stats: TargetStats,
    plan: KeyPlan,
    field_ttl: bool,
    touched: set[str],
) -> None:
    current = state.fields or {}
    write: dict[str, str] = {}
    conflicts: list[str] = []
    for name, value in op.fields.items():
        have = current.get(name)
        if state.wrong_type:
            conflicts.append(name)
        elif have is None or (have != value and op.own):
            write[name] = value
        elif have != value:
            conflicts.append(name)
    existed = state.fields is not None
    ttl_changes = 0
    if write:
        out.hset(op.key, mapping=write)  # type: ignore[arg-type]
        if state.fields is None:
            state.fields = {}
            state.expire = -1
        state.fields.update(write)
    if conflicts and not op.own:
        plan.conflicts += len(conflicts)
        stats.conflicts += len(conflicts)
        if len(stats.conflict_examples) < 10:
            stats.conflict_examples.append(f"{op.key} {conflicts[0]} (from {plan.label})")
    elif op.merge and field_ttl:
        # per field, the same rule as for whole keys below: a field that several parts
        # write (greeks' underlying_token) lives as long as the longest-lived of them
        for name in op.fields:
            want = op.expire_at
            if name in write:
                state.field_expire[name] = -1 if want is None else want
                if want is not None:
                    out.execute_command("HPEXPIREAT", op.key, want, "FIELDS", 1, name)
                    ttl_changes += 1
                continue
            have_ttl = state.field_expire.get(name, -1)
            if want is None and have_ttl >= 0:
                out.execute_command("HPERSIST", op.key, "FIELDS", 1, name)
                state.field_expire[name] = -1
                ttl_changes += 1
            elif want is not None and 0 <= have_ttl < want:
                out.execute_command("HPEXPIREAT", op.key, want, "FIELDS", 1, name)
                state.field_expire[name] = want
                ttl_changes += 1
    elif op.merge:
        # several parts: the key lives as long as its longest-lived part
        if op.expire_at is None:
            if state.expire >= 0:
                out.persist(op.key)
                state.expire = -1
                ttl_changes += 1
        elif (not existed and state.expire == -1 and write) or 0 <= state.expire < op.expire_at:
            out.pexpireat(op.key, op.expire_at)
            state.expire = op.expire_at
            ttl_changes += 1
    else:
        want = op.expire_at if op.expire_at is not None else -1
        if state.expire != want and state.fields is not None:
            if want == -1:
                out.persist(op.key)
            else:
                out.pexpireat(op.key, want)
            state.expire = want
            ttl_changes += 1
    stats.fields_written += len(write)
    stats.ttl_changes += ttl_changes
    if write or ttl_changes:
        touched.add(op.key)
        plan.missing += len(write) + ttl_changes
        if len(stats.missing_examples) < 10:
            stats.missing_examples.append(f"{op.key} (from {plan.label})")
    elif not conflicts:
        stats.ops_unchanged += 1


def _decide_stream(
    op: StreamOp,
    state: StreamState,
    out: redis.client.Pipeline,
    stats: TargetStats,
    plan: KeyPlan,
    touched: set[str],
) -> StreamState:
    top, have = state
    added = conflicts = 0
    for entry_id, fields in op.entries:
        present = have.get(entry_id)
        if present is not None:
            if present != fields:
                conflicts += 1
            continue
        key = _id_key(entry_id)
        if top is not None and key <= top:
            conflicts += 1  # below the stream's last id: Redis cannot insert it
            continue
        out.xadd(op.key, fields, id=entry_id)  # type: ignore[arg-type]
        have[entry_id] = fields
        top = key
        added += 1
    if added:
        touched.add(op.key)
        plan.missing += added
        if len(stats.missing_examples) < 10:
            stats.missing_examples.append(f"{op.key} (from {plan.label})")
    if conflicts:
        plan.conflicts += conflicts
        stats.conflicts += conflicts
        if len(stats.conflict_examples) < 10:
            stats.conflict_examples.append(f"{op.key}: {conflicts} entries (from {plan.label})")
    if not added and not conflicts:
        stats.ops_unchanged += 1
    stats.entries_added += added
    return top, have


# --- the report ---------------------------------------------------------------------------


@dataclass
class PassReport:
    """One pass over the source (dry run, migration or verification)."""

    name: str
    keys: int = 0
    batches: int = 0
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)
    reasons: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    corrected_prefixes: Counter[str] = field(default_factory=Counter)
    quarantined: list[str] = field(default_factory=list)
    target: TargetStats = field(default_factory=TargetStats)
    seconds: float = 0.0

    def count(self, plan: KeyPlan) -> None:
        self.keys += 1
        kind = _KIND_LABELS[plan.kind]
        self.outcomes[(kind, plan.outcome)] += 1
        if plan.reason:
            reason = plan.reason if plan.outcome != "skip" else plan.reason[:120]
            generic = _generic(reason)
            self.reasons[(kind, plan.outcome, generic)] += 1
            examples = self.examples.setdefault(generic, [])
            if len(examples) < 5:
                examples.append(plan.label)
        if plan.corrected_from and plan.outcome == "migrate":
            self.corrected_prefixes[plan.corrected_from] += 1
        if plan.outcome == "quarantine" or plan.quarantined_entries:
            self.quarantined.append(plan.label)

    def total(self, outcome: str) -> int:
        return sum(n for (_, o), n in self.outcomes.items() if o == outcome)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "keys": self.keys,
            "batches": self.batches,
            "seconds": round(self.seconds, 3),
            "outcomes": {o: self.total(o) for o in OUTCOMES},
            "by_kind": _nested(self.outcomes),
            "reasons": [
                {"kind": k, "outcome": o, "reason": r, "keys": n, "examples": self.examples[r]}
                for (k, o, r), n in sorted(self.reasons.items())
            ],
            "corrected_prefixes": dict(self.corrected_prefixes),
            "quarantined": sorted(self.quarantined),
            "target": {
                "fields_written": self.target.fields_written,
                "entries_added": self.target.entries_added,
                "ttl_changes": self.target.ttl_changes,
                "keys_written": self.target.keys_written,
                "ops_unchanged": self.target.ops_unchanged,
                "conflicts": self.target.conflicts,
                "missing": self.target.missing,
                "conflict_examples": self.target.conflict_examples,
                "missing_examples": self.target.missing_examples,
            },
        }


_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_COUNTS = re.compile(r"^\d+ malformed entries .*$")


_KIND_LABELS = {kind: kind.name.lower() for kind in LegacyKind}


@lru_cache(maxsize=4096)
def _generic(reason: str) -> str:
    """A reason without its per-key detail (symbol, value), to group keys by it."""
    if reason.startswith("superseded by "):
        return "superseded by the correctly labelled key"
    if _COUNTS.match(reason):
        return "malformed stream entries"
    return _QUOTED.sub("...", reason)


def _strings(raw: Mapping[Any, Any]) -> dict[str, str]:
    return {
        (k.decode() if isinstance(k, bytes) else str(k)): (
            v.decode() if isinstance(v, bytes) else str(v)
        )
        for k, v in raw.items()
    }


def _nested(counter: Counter[tuple[str, str]]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for (kind, outcome), n in sorted(counter.items()):
        out.setdefault(kind, {})[outcome] = n
    return out


@dataclass
class MigrationReport:
    source: str
    target: str
    dbs: tuple[int, ...]
    dry_run: bool
    passes: list[PassReport] = field(default_factory=list)
    resumed: bool = False
    rescanned: bool = False
    backup: dict[str, Any] | None = None
    verified: bool | None = None
    deleted: dict[int, int] = field(default_factory=dict)
    target_families: dict[str, int] = field(default_factory=dict)

    def pass_named(self, name: str) -> PassReport | None:
        return next((p for p in self.passes if p.name == name), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "target": self.target,
            "dbs": list(self.dbs),
            "dry_run": self.dry_run,
            "resumed": self.resumed,
            "rescanned": self.rescanned,
            "backup": self.backup,
            "verified": self.verified,
            "deleted": {str(db): n for db, n in self.deleted.items()},
            "target_families": self.target_families,
            "passes": [p.to_json() for p in self.passes],
        }

    def render(self, console: Console) -> None:
        main = self.passes[0] if self.passes else None
        if main is None:
            return
        title = "dry run: what would move" if self.dry_run else "migration"
        table = Table(title=f"{title} ({self.source} dbs {list(self.dbs)} -> {self.target})")
        table.add_column("legacy key")
        table.add_column("v1")
        for outcome in OUTCOMES:
            table.add_column(outcome, justify="right")
        for kind in LegacyKind:
            counts = [main.outcomes.get((kind.name.lower(), o), 0) for o in OUTCOMES]
            if any(counts):
                table.add_row(kind.value, MAPPINGS[kind].v1 or "-", *map(str, counts))
        table.add_row("total", "", *(str(main.total(o)) for o in OUTCOMES), style="bold")
        console.print(table)
        if main.reasons:
            reasons = Table(title="skipped and quarantined, with the reason")
            for col in ("kind", "outcome", "keys", "reason", "e.g."):
                reasons.add_column(col)
            for (kind_name, outcome_name, reason), n in sorted(main.reasons.items()):
                shown = "partly quarantined" if outcome_name == "migrate" else outcome_name
                reasons.add_row(kind_name, shown, str(n), reason, main.examples[reason][0])
            console.print(reasons)
        t = main.target
        verb = "would write" if self.dry_run else "wrote"
        console.print(
            f"target: {verb} {t.fields_written} fields and {t.entries_added} stream entries "
            f"in {t.keys_written} keys, {t.ttl_changes} expiry changes; {t.ops_unchanged} "
            f"already in place; {t.conflicts} conflicts kept (target wins)"
        )
        if main.corrected_prefixes:
            fixed = ", ".join(f"{n} labelled {ex}" for ex, n in main.corrected_prefixes.items())
            console.print(f"exchange prefixes corrected through the master: {fixed}")
        for example in t.conflict_examples[:5]:
            console.print(f"  conflict: {example}")
        verify = self.pass_named("verify")
        if verify is not None:
            state = "[green]verified[/]" if self.verified else "[red]NOT verified[/]"
            console.print(
                f"verification: {state}: {verify.keys} source keys rechecked, "
                f"{verify.target.missing} values missing in the target, "
                f"{verify.target.conflicts} conflicts"
            )
            for example in verify.target.missing_examples[:5]:
                console.print(f"  missing: {example}")
        if self.backup:
            console.print(f"source backup: {self.backup['path']} (sha256 {self.backup['sha256']})")
        if self.deleted:
            console.print(f"source keys deleted: {self.deleted}")


# --- the migrator -------------------------------------------------------------------------


class Migrator:
    """Runs dry runs, migrations (resumable) and verifications of a legacy keyspace.

    ``source`` names the legacy server (its ``db`` is ignored: ``dbs`` lists the legacy
    databases); ``target`` the v1 database, with the key prefix of ``keys``.
    """

    def __init__(
        self,
        source: ConnectionSpec,
        dbs: Sequence[int],
        target: ConnectionSpec,
        settings: Settings,
        *,
        master: InstrumentMaster | None = None,
        batch: int = 1000,
        console: Console | None = None,
        show_progress: bool = True,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        if not dbs:
            raise MigrationError("no source databases given")
        same_server = (source.host, source.port, source.unix_path) == (
            target.host,
            target.port,
            target.unix_path,
        )
        if same_server and target.db in dbs:
            raise MigrationError(
                f"the target {target.url} is one of the source databases: migrate into "
                "an empty database"
            )
        self.source_spec = source
        self.dbs = tuple(dbs)
        self.target_spec = target
        self.settings = settings
        self.keys = Keys(settings.redis_key_prefix)
        self.master = (
            master if master is not None else InstrumentMaster.load(settings.instruments_path)
        )
        self.transformer = Transformer(self.keys, SymbolResolver(self.master), settings)
        self.batch = batch
        self.console = console or Console(stderr=True)
        self.show_progress = show_progress
        self.on_batch = on_batch
        self.sources = {db: sync_client(source.with_db(db)) for db in self.dbs}
        self.target = sync_client(target)
        self._features: RedisFeatures | None = None

    @property
    def fingerprint(self) -> str:
        return f"{self.source_spec.with_db(0).url} dbs={','.join(map(str, self.dbs))}"

    def features(self) -> RedisFeatures:
        if self._features is None:
            try:
                info = self.target.info("server")
                source_info = self.sources[self.dbs[0]].info("server")
            except (redis.RedisError, OSError) as exc:
                raise RedisConfigError(f"cannot use Redis: {exc}") from exc
            self._features = RedisFeatures.from_info(info)
            self._features.check_baseline(self.target_spec.url)
            RedisFeatures.from_info(source_info).check_baseline(self.source_spec.url)
        return self._features

    # --- passes ---------------------------------------------------------------------------
    def _progress(self) -> Progress:
        return Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            disable=not self.show_progress,
            transient=False,
        )

    def _source_size(self) -> int:
        return sum(int(self.sources[db].dbsize()) for db in self.dbs)

    def _batches(self, db: int, cursor: int) -> Iterator[tuple[int, list[bytes]]]:
        client = self.sources[db]
        while True:
            cursor, names = client.scan(cursor, count=self.batch)
            yield cursor, [n if isinstance(n, bytes) else n.encode() for n in names]
            if cursor == 0:
                return

    def plan_batch(self, db: int, raw_names: Sequence[bytes]) -> list[KeyPlan]:
        """Read and transform one batch of source keys (a few pipelined round trips)."""
        plans: list[KeyPlan] = []
        todo: list[tuple[int, bytes, LegacyKey]] = []
        for raw in raw_names:
            try:
                name = raw.decode("utf-8")
            except UnicodeDecodeError:
                plans.append(
                    KeyPlan(
                        db,
                        raw.decode("utf-8", "replace"),
                        LegacyKind.UNKNOWN,
                        "skip",
                        "binary key name: not a legacy key",
                    )
                )
                continue
            key = parse_legacy_key(name)
            if key.kind not in _READS:
                plans.append(KeyPlan(db, name, key.kind, "skip", MAPPINGS[key.kind].note))
                continue
            plans.append(KeyPlan(db, name, key.kind, "migrate"))
            todo.append((len(plans) - 1, raw, key))
        if not todo:
            return plans
        todo = self._drop_shadowed(db, plans, todo)
        if not todo:
            return plans

        client = self.sources[db]
        typed = backups.bulk_reader(client).read([raw for _, raw, _ in todo])
        streams = [raw for (_, raw, _), (kind, _, _) in zip(todo, typed, strict=True)
                   if kind == "stream"]  # fmt: skip
        entries: dict[bytes, Any] = {}
        if streams:
            pipe = client.pipeline(transaction=False)
            for raw in streams:
                pipe.xrange(raw, "-", "+")
            entries = dict(zip(streams, pipe.execute(), strict=True))
        quarantine: list[int] = []
        for (index, raw, key), (kind, expire, value) in zip(todo, typed, strict=True):
            name = plans[index].name
            if kind == "none" or expire == -2:
                plans[index] = KeyPlan(db, name, key.kind, "expired", "gone before it was read")
                continue
            if kind != _READS[key.kind]:
                reason = f"malformed: expected a {_READS[key.kind]}, found a {kind}"
                plan = KeyPlan(db, name, key.kind, "quarantine", reason)
            else:
                expire_at = expire if expire >= 0 else None
                value = entries[raw] if kind == "stream" else value
                plan = self.transformer.plan(db, name, key, value, expire_at)
            plans[index] = plan
            if plan.outcome == "quarantine":
                quarantine.append(index)
        if quarantine:
            self._quarantine_ops(db, [plans[i] for i in quarantine])
        return plans

    def _drop_shadowed(
        self, db: int, plans: list[KeyPlan], todo: list[tuple[int, bytes, LegacyKey]]
    ) -> list[tuple[int, bytes, LegacyKey]]:
        """Skip keys whose copy in a database of higher precedence wins, and legacy keys
        with a wrongly labelled symbol whose correctly labelled twin exists."""
        checks: list[tuple[int, int, bytes, str]] = []  # (todo index, db, name, reason)
        for t, (_, raw, key) in enumerate(todo):
            order = precedence(key.kind, self.dbs)
            for other in order[: order.index(db)]:
                checks.append((t, other, raw, f"shadowed: the copy in DB {other} wins"))
            if key.kind in _SYMBOL_KINDS:
                res = self.transformer.resolver.resolve(key.symbol)
                if res.corrected_from is not None:
                    twin = key.with_symbol(res.canonical).name()
                    checks.append((t, db, twin.encode(), f"superseded by {twin}"))
        if not checks:
            return todo
        pipes: dict[int, redis.client.Pipeline] = {}
        order_in: dict[int, list[int]] = {}
        for n, (_, other, raw, _) in enumerate(checks):
            pipe = pipes.setdefault(other, self.sources[other].pipeline(transaction=False))
            pipe.exists(raw)
            order_in.setdefault(other, []).append(n)
        found = [0] * len(checks)
        for other, pipe in pipes.items():
            for n, result in zip(order_in[other], pipe.execute(), strict=True):
                found[n] = int(result)
        dropped: dict[int, str] = {}
        for n, (t, _, _, reason) in enumerate(checks):
            if found[n] and t not in dropped:
                dropped[t] = reason
        kept = []
        for t, item in enumerate(todo):
            if t in dropped:
                index = item[0]
                plans[index] = KeyPlan(db, plans[index].name, item[2].kind, "skip", dropped[t])
            else:
                kept.append(item)
        return kept

    def _quarantine_ops(self, db: int, plans: list[KeyPlan]) -> None:
        """Copy each quarantined key's typed value into its quarantine record."""
        client = self.sources[db]
        records = {
            backups.dec(r["k"]).decode("utf-8", "replace"): r
            for r in backups.read_records(client, [p.name.encode() for p in plans])
        }
        for plan in plans:
            record = records.get(plan.name)
            if record is None:
                plan.outcome, plan.reason = "expired", "gone before it was read"
                continue
            plan.ops = [
                HashOp(
                    self.keys.migration_quarantine(db, plan.name),
                    {
                        "db": str(db),
                        "key": plan.name,
                        "type": record["t"],
                        "reason": plan.reason,
                        "value": json.dumps(record["v"], ensure_ascii=False),
                        "expire_at": "" if record["x"] is None else str(record["x"]),
                    },
                    None,
                    own=True,
                )
            ]

    def _pass(
        self,
        name: str,
        *,
        write: bool,
        cursors: Mapping[int, int | None] | None = None,
        extra: Callable[[int, int], Callable[[redis.client.Pipeline], None]] | None = None,
        keep_plans: bool = False,
    ) -> tuple[PassReport, list[KeyPlan]]:
        report = PassReport(name)
        started = time.perf_counter()
        field_ttl = self.features().hash_field_ttl
        kept: list[KeyPlan] = []
        overlay = None if write else _Overlay()
        touched: set[str] = set()
        with self._progress() as progress:
            task = progress.add_task(name, total=self._source_size())
            for db in self.dbs:
                start = (cursors or {}).get(db, 0)
                if start is None:
                    continue  # this database is done
                for cursor, names in self._batches(db, start):
                    plans = self.plan_batch(db, names)
                    stats = compare_and_write(
                        self.target,
                        plans,
                        field_ttl=field_ttl,
                        write=write,
                        extra=extra(db, cursor) if extra is not None else None,
                        overlay=overlay,
                        touched=touched,
                    )
                    report.target.add(stats)
                    for plan in plans:
                        report.count(plan)
                    if keep_plans:
                        kept.extend(plans)
                    report.batches += 1
                    progress.advance(task, len(names))
                    if self.on_batch is not None:
                        self.on_batch(report.batches)
        report.seconds = time.perf_counter() - started
        return report, kept

    # --- public operations -------------------------------------------------------------------
    def dry_run(self) -> MigrationReport:
        """What a migration would do; writes nothing anywhere."""
        self._check_target_schema()
        report = self._report(dry_run=True)
        result, _ = self._pass("dry run", write=False)
        result.target.missing = 0
        report.passes.append(result)
        return report

    def verify(self) -> MigrationReport:
        report = self._report(dry_run=False)
        result, _ = self._pass("verify", write=False)
        report.passes.append(result)
        report.verified = result.target.missing == 0
        report.target_families = self.target_families()
        return report

    def run(
        self,
        *,
        backup_path: Path | None,
        delete_sources: bool = False,
        delete_skipped: bool = False,
    ) -> MigrationReport:
        """Migrate (resuming an interrupted run), verify, and delete sources if asked."""
        if delete_skipped and not delete_sources:
            raise MigrationError("--delete-skipped needs --delete-sources")
        if delete_sources and backup_path is None:
            raise MigrationError("deleting source keys needs a backup of them first")
        needs_marker = self._check_target_schema()
        report = self._report(dry_run=False)
        state = _strings(self.target.hgetall(self.keys.migration_state))
        cursors: dict[int, int | None] = {}
        if state.get("status") == "running":
            if state.get("source") != self.fingerprint:
                raise MigrationError(
                    f"the target holds an unfinished migration from {state.get('source')}; "
                    f"finish it, or delete {self.keys.migration_state} and "
                    f"{self.keys.migration_checkpoint} to start over"
                )
            report.resumed = True
            saved = _strings(self.target.hgetall(self.keys.migration_checkpoint))
            # A SCAN cursor only means something to the server process that issued it
            # (Redis seeds its hash function at start-up): after a source restart the
            # scan starts over, which the compare-first writes make merely slower.
            if state.get("source_run_id") == self._source_run_id():
                for db in self.dbs:
                    value = saved.get(str(db), "0")
                    cursors[db] = None if value == "done" else int(value)
            else:
                report.rescanned = True
                self.target.hset(self.keys.migration_state, "source_run_id", self._source_run_id())
            if state.get("backup_path"):
                report.backup = {
                    "path": state["backup_path"],
                    "sha256": state.get("backup_sha256", ""),
                }
        else:
            if backup_path is not None:
                report.backup = self._backup(backup_path)
            pipe = self.target.pipeline(transaction=True)
            if needs_marker:
                pipe.set(self.keys.schema, SCHEMA_VERSION, nx=True)
            pipe.delete(self.keys.migration_checkpoint)
            pipe.hset(
                self.keys.migration_state,
                mapping={
                    "status": "running",
                    "source": self.fingerprint,
                    "source_run_id": self._source_run_id(),
                    "started_at": datetime.now(IST).isoformat(timespec="seconds"),
                    "backup_path": report.backup["path"] if report.backup else "",
                    "backup_sha256": report.backup["sha256"] if report.backup else "",
                },
            )
            pipe.execute()

        def checkpoint(db: int, cursor: int) -> Callable[[redis.client.Pipeline], None]:
            def add(pipe: redis.client.Pipeline) -> None:
                value = "done" if cursor == 0 else str(cursor)
                pipe.hset(self.keys.migration_checkpoint, str(db), value)

            return add

        result, _ = self._pass("migrate", write=True, cursors=cursors, extra=checkpoint)
        report.passes.append(result)

        verify, plans = self._pass("verify", write=False, keep_plans=delete_sources)
        report.passes.append(verify)
        report.verified = verify.target.missing == 0
        report.target_families = self.target_families()
        self.target.hset(
            self.keys.migration_state,
            mapping={
                "status": "verified" if report.verified else "verify-failed",
                "finished_at": datetime.now(IST).isoformat(timespec="seconds"),
                "summary": json.dumps(verify.to_json()["outcomes"]),
            },
        )
        if not report.verified:
            return report
        if delete_sources:
            report.deleted = self._delete(plans, delete_skipped)
        return report

    # --- helpers ---------------------------------------------------------------------------
    def _source_run_id(self) -> str:
        return str(self.sources[self.dbs[0]].info("server").get("run_id", ""))

    def _report(self, *, dry_run: bool) -> MigrationReport:
        return MigrationReport(
            self.source_spec.with_db(0).url, self.target_spec.url, self.dbs, dry_run
        )

    def _check_target_schema(self) -> bool:
        """True when the (empty) target still needs its schema marker."""
        self.features()
        marker = self.target.get(self.keys.schema)
        sample: list[bytes | str] = []
        if marker is None:
            for key in self.target.scan_iter(match=self.keys.keyspace_pattern, count=1000):
                sample.append(key)
                if len(sample) >= 1000:
                    break
        return schema_decision(self.keys, marker, sample, self.target_spec.url) == "write"

    def _backup(self, path: Path) -> dict[str, Any]:
        with self._progress() as progress:
            task = progress.add_task("backup", total=self._source_size())
            summary = backups.backup(
                self.sources,
                path,
                source=self.fingerprint,
                field_ttl=self.features().hash_field_ttl,
                batch=self.batch,
                progress=lambda n: progress.advance(task, n),
            )
        return {
            "path": str(summary.path),
            "sha256": summary.sha256,
            "records": summary.records,
            "bytes": summary.content_bytes,
            "seconds": round(summary.seconds, 3),
        }

    def _delete(self, plans: Sequence[KeyPlan], delete_skipped: bool) -> dict[int, int]:
        deletable: dict[int, list[str]] = {}
        for plan in plans:
            ok = plan.fully_migrated or (
                delete_skipped and plan.outcome == "skip" and plan.kind is not LegacyKind.UNKNOWN
            )
            if ok:
                deletable.setdefault(plan.db, []).append(plan.name)
        deleted: dict[int, int] = {}
        with self._progress() as progress:
            task = progress.add_task("delete", total=sum(map(len, deletable.values())))
            for db, names in deletable.items():
                client = self.sources[db]
                for start in range(0, len(names), self.batch):
                    chunk = names[start : start + self.batch]
                    deleted[db] = deleted.get(db, 0) + int(client.unlink(*chunk))
                    progress.advance(task, len(chunk))
        return deleted

    def target_families(self) -> dict[str, int]:
        """v1 keys in the target by family (the count side of the verification)."""
        counts: Counter[str] = Counter()
        for key in self.target.scan_iter(match=self.keys.keyspace_pattern, count=1000):
            family = self.keys.family(key.decode("utf-8", "replace"))
            counts[family or "other"] += 1
        return dict(sorted(counts.items()))
