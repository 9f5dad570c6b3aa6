"""Backups of a Redis keyspace as typed JSON lines, checksummed, and their restore.

Why JSON lines rather than ``DUMP`` payloads: a DUMP payload is tied to the RDB version of
the server that made it, so a backup taken on production's Redis 8 would not restore into
a developer's Redis 7.0, and a payload cannot be inspected or diffed. Here every key is
one line naming its type, value and absolute expiry (``PEXPIRETIME``); binary-safe (bytes
that are not UTF-8 are base64), exact for every type the project writes, portable across
Redis versions. ``bench/bench_migration.py`` measures what this costs against a pipelined
DUMP/RESTORE copy.

File layout (optionally gzip-compressed, by a ``.gz`` suffix)::

    {"format": "tickflow-backup", "version": 1, ...header...}
    {"db": 0, "k": "tick:256265", "t": "hash", "x": null, "v": [["token", "256265"], ...]}
    ...
    {"trailer": true, "records": N, "sha256": "<hex of every byte above>"}

A restore verifies the whole file (count and SHA-256) before it writes anything, so a
truncated or altered backup is refused instead of half-restored. Absolute expiry times
mean a restored key expires when the original would have (as an RDB load does); a key
already past its expiry is not restored, and counted.

Streams keep their entry ids, last generated id, entries-added counter and max deleted
id (``XSETID``), and their consumer groups. A group with pending entries is restored with
its last-delivered id just before the oldest pending entry, so those entries are
delivered again (at-least-once) rather than lost; pending-entry ownership is not restored.
Hash field TTLs (Redis 7.4+/Valkey 9+) are backed up where the server has them and
restored where the target supports them (otherwise counted as dropped).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import redis

FORMAT = "tickflow-backup"
FORMAT_VERSION = 1

#: Commands per pipelined round trip on restore (large values are split further).
_CHUNK = 1000

Record = dict[str, Any]
Progress = Callable[[int], None]


class _Sink(Protocol):
    def write(self, data: bytes, /) -> int: ...

    def close(self) -> None: ...


class BackupError(RuntimeError):
    """A backup file that cannot be restored (bad checksum, truncated, wrong format) or
    a restore that would overwrite data; the message says which and what to do."""


# --- value encoding -----------------------------------------------------------------------


def enc(value: bytes) -> str | dict[str, str]:
    """Bytes as JSON: text when it is UTF-8 (exact round trip), else ``{"b64": ...}``."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return {"b64": base64.b64encode(value).decode("ascii")}


def dec(value: str | dict[str, str]) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    return base64.b64decode(value["b64"])


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _id_tuple(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _id_before(entry_id: str) -> str:
    ms, seq = _id_tuple(entry_id)
    if seq > 0:
        return f"{ms}-{seq - 1}"
    return f"{ms - 1}-18446744073709551615" if ms > 0 else "0-0"


# --- reading a keyspace ---------------------------------------------------------------------

#: Type, absolute expiry and value of every key in KEYS, in one call: redis-py spends
#: ~15 us packing and parsing each pipelined command, so three commands per key cap a
#: backup near 20k keys/s; one script call per batch leaves the server's speed. Streams
#: come back without a value (their entries, ids and groups need several commands).
_READ_SCRIPT = """
local out = {}
for i, key in ipairs(KEYS) do
  local t = redis.call('TYPE', key)['ok']
  local x = redis.call('PEXPIRETIME', key)
  local v = false
  if t == 'string' then v = redis.call('GET', key)
  elseif t == 'hash' then v = redis.call('HGETALL', key)
  elseif t == 'list' then v = redis.call('LRANGE', key, 0, -1)
  elseif t == 'set' then v = redis.call('SMEMBERS', key)
  elseif t == 'zset' then v = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
  end
  out[i] = {t, x, v}
end
return out
"""

#: (type, absolute expiry in ms or -1, value); value: bytes (string), dict (hash), list
#: of bytes (list, set), list of (member, score bytes) (zset), None (stream, or gone).
Typed = tuple[str, int, Any]


def _pairs(flat: Sequence[Any]) -> list[tuple[Any, Any]]:
    return list(zip(flat[0::2], flat[1::2], strict=True))


class BulkReader:
    """Reads many keys' types, expiries and values per round trip, with a Lua script
    where the server and the ACL user allow one, otherwise with pipelined commands."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._script: Any = client.register_script(_READ_SCRIPT)
        self._lua = True

    def read(self, keys: Sequence[bytes]) -> list[Typed]:
        if not keys:
            return []
        if self._lua:
            try:
                raw = self._script(keys=list(keys))
            except redis.ResponseError as exc:
                text = str(exc)
                if "NOPERM" not in text and "unknown command" not in text.lower():
                    raise
                self._lua = False
            else:
                return [self._convert(_text(t), int(x), v) for t, x, v in raw]
        return self._read_pipelined(keys)

    @staticmethod
    def _convert(kind: str, expiry: int, value: Any) -> Typed:
        if kind == "hash" and value is not None and value is not False:
            value = dict(_pairs(value))
        elif kind == "zset" and value:
            value = _pairs(value)
        elif value is False:
            value = None
        return kind, expiry, value

    def _read_pipelined(self, keys: Sequence[bytes]) -> list[Typed]:
        pipe = self._client.pipeline(transaction=False)
        for key in keys:
            pipe.type(key)
            pipe.execute_command("PEXPIRETIME", key)
        meta = pipe.execute()
        kinds = [_text(t) for t in meta[0::2]]
        pipe = self._client.pipeline(transaction=False)
        for key, kind in zip(keys, kinds, strict=True):
            if kind == "string":
                pipe.get(key)
            elif kind == "hash":
                pipe.hgetall(key)
            elif kind == "list":
                pipe.lrange(key, 0, -1)
            elif kind == "set":
                pipe.smembers(key)
            elif kind == "zset":
                pipe.zrange(key, 0, -1, withscores=True, score_cast_func=bytes)
            else:
                pipe.echo(b"")  # keeps replies aligned; streams and gone keys have no value
        values = pipe.execute(raise_on_error=False)
        out: list[Typed] = []
        for kind, expiry, value in zip(kinds, meta[1::2], values, strict=True):
            if isinstance(value, Exception) or kind in ("stream", "none"):
                value = None
            elif kind == "set":
                value = list(value)
            out.append((kind, int(expiry), value))
        return out


_readers: dict[int, BulkReader] = {}


def bulk_reader(client: redis.Redis) -> BulkReader:
    """The reader of a client (the script is registered once per client)."""
    reader = _readers.get(id(client))
    if reader is None or reader._client is not client:
        reader = _readers[id(client)] = BulkReader(client)
    return reader


def read_records(
    client: redis.Redis, names: Sequence[bytes | str], *, field_ttl: bool = False
) -> list[Record]:
    """Typed records of ``names`` (without ``db``): one round trip for most keys, a
    second for streams, a third for hash-field TTLs and consumer groups' pending ids.

    A key that vanished (expired, deleted) between the scan and the read is left out.
    """
    keys = [k if isinstance(k, bytes) else k.encode() for k in names]
    records: list[Record] = []
    streams: list[Record] = []
    followups: list[tuple[Record, str, Any]] = []
    for key, (kind, expiry, value) in zip(keys, bulk_reader(client).read(keys), strict=True):
        if kind == "none" or expiry == -2:
            continue
        record: Record = {"k": enc(key), "t": kind, "x": None if expiry == -1 else expiry}
        if kind == "stream":
            streams.append(record)
            records.append(record)
            continue
        if value is None or (kind == "hash" and not value):
            continue  # gone or retyped between the scan and the read: not in this backup
        if kind == "string":
            record["v"] = enc(value)
        elif kind == "hash":
            record["v"] = [[enc(f), enc(v)] for f, v in value.items()]
            if field_ttl:
                followups.append((record, "fields", list(value)))
        elif kind in ("list", "set"):
            items = sorted(value) if kind == "set" else value
            record["v"] = [enc(v) for v in items]
        elif kind == "zset":
            record["v"] = [[enc(m), _text(s)] for m, s in value]
        else:
            raise BackupError(f"key {key!r} has type {kind!r}, which a backup cannot hold")
        records.append(record)

    if streams:
        pipe = client.pipeline(transaction=False)
        for record in streams:
            key = dec(record["k"])
            pipe.xrange(key, "-", "+")
            pipe.xinfo_stream(key)
            pipe.xinfo_groups(key)
        replies = iter(pipe.execute(raise_on_error=False))
        for record in streams:
            entries, info, groups = next(replies), next(replies), next(replies)
            if isinstance(entries, Exception) or isinstance(info, Exception):
                records.remove(record)
                continue
            record["v"] = _stream_value(entries, info, groups)
            for group in record["v"]["groups"]:
                if group["pending"]:
                    followups.append((record, "pending", group))

    if followups:
        _read_followups(client, followups)
    return records


def _stream_value(entries: Any, info: Any, groups: Any) -> dict[str, Any]:
    info = info if isinstance(info, dict) else {}
    max_deleted = info.get("max-deleted-entry-id")
    return {
        "entries": [
            [_text(entry_id), [enc(x) for pair in fields.items() for x in pair]]
            for entry_id, fields in entries
        ],
        "last_id": _text(info.get("last-generated-id", b"0-0")),
        "entries_added": int(info.get("entries-added", len(entries))),
        "max_deleted_id": _text(max_deleted) if max_deleted is not None else "0-0",
        "groups": [
            {
                "name": enc(g["name"]),
                "last_delivered_id": _text(g["last-delivered-id"]),
                "entries_read": g.get("entries-read"),
                "pending": int(g.get("pending", 0)),
            }
            for g in (groups if isinstance(groups, list) else [])
        ],
    }


def _read_followups(client: redis.Redis, followups: list[tuple[Record, str, Any]]) -> None:
    """Field TTLs of hashes and the oldest pending id of consumer groups."""
    pipe = client.pipeline(transaction=False)
    for record, what, arg in followups:
        key = dec(record["k"])
        if what == "fields":
            pipe.execute_command("HPEXPIRETIME", key, "FIELDS", len(arg), *arg)
        else:
            pipe.xpending(key, dec(arg["name"]))
    for (record, what, arg), result in zip(
        followups, pipe.execute(raise_on_error=False), strict=True
    ):
        if isinstance(result, Exception):
            continue
        if what == "fields":
            fx = [[enc(f), int(t)] for f, t in zip(arg, result, strict=True) if int(t) >= 0]
            if fx:
                record["fx"] = fx
        elif result and result.get("min"):
            arg["oldest_pending"] = _text(result["min"])


# --- writing a backup -----------------------------------------------------------------------


@dataclass
class BackupSummary:
    path: Path
    records: int = 0
    by_type: Counter[str] = field(default_factory=Counter)
    content_bytes: int = 0
    file_bytes: int = 0
    sha256: str = ""
    seconds: float = 0.0


class BackupWriter:
    """Writes header, records and the checksummed trailer; the file appears under its
    final name only when complete (written to ``.partial`` and renamed)."""

    def __init__(self, path: Path, header: Mapping[str, Any]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._partial = self.path.with_name(self.path.name + ".partial")
        raw = self._partial.open("wb")
        self._raw = raw
        self._out: _Sink = (
            gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1, mtime=0)
            if self.path.suffix == ".gz"
            else raw
        )
        self._hash = hashlib.sha256()
        self.summary = BackupSummary(self.path)
        self._line({"format": FORMAT, "version": FORMAT_VERSION, **header})

    def _line(self, obj: Mapping[str, Any]) -> None:
        data = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
        self._hash.update(data)
        self._out.write(data)
        self.summary.content_bytes += len(data)

    def write(self, record: Record) -> None:
        self._line(record)
        self.summary.records += 1
        self.summary.by_type[record["t"]] += 1

    def close(self) -> BackupSummary:
        self.summary.sha256 = self._hash.hexdigest()
        trailer = {"trailer": True, "records": self.summary.records, "sha256": self.summary.sha256}
        self._out.write(json.dumps(trailer).encode() + b"\n")
        if self._out is not self._raw:
            self._out.close()
        self._raw.flush()
        os.fsync(self._raw.fileno())
        self._raw.close()
        self._partial.replace(self.path)
        self.summary.file_bytes = self.path.stat().st_size
        return self.summary

    def abort(self) -> None:
        self._raw.close()
        self._partial.unlink(missing_ok=True)


def backup(
    clients: Mapping[int, redis.Redis],
    path: Path,
    *,
    match: str = "*",
    source: str = "",
    field_ttl: bool = False,
    batch: int = 1000,
    progress: Progress | None = None,
) -> BackupSummary:
    """Back up every key matching ``match`` in each database of ``clients`` (db -> client)."""
    started = time.perf_counter()
    header = {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "source": source,
        "dbs": sorted(clients),
        "match": match,
    }
    writer = BackupWriter(path, header)
    try:
        for db, client in sorted(clients.items()):
            cursor = 0
            while True:
                cursor, keys = client.scan(cursor, match=match, count=batch)
                if keys:
                    for record in read_records(client, keys, field_ttl=field_ttl):
                        record["db"] = db
                        writer.write(record)
                    if progress is not None:
                        progress(len(keys))
                if cursor == 0:
                    break
    except BaseException:
        writer.abort()
        raise
    summary = writer.close()
    summary.seconds = time.perf_counter() - started
    return summary


# --- reading and verifying a backup -----------------------------------------------------------


def _open(path: Path) -> gzip.GzipFile | io.BufferedReader:
    raw = path.open("rb")
    magic = raw.read(2)
    raw.seek(0)
    if magic == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    return raw


def _lines(path: Path) -> Iterator[bytes]:
    try:
        with _open(path) as handle:
            yield from handle
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
        raise BackupError(f"backup {path} is unreadable ({exc}): refusing to restore it") from exc


def verify_backup(path: Path) -> dict[str, Any]:
    """The header of a complete, intact backup; :class:`BackupError` otherwise."""
    path = Path(path)
    if not path.is_file():
        raise BackupError(f"backup {path} does not exist")
    digest = hashlib.sha256()
    header: dict[str, Any] | None = None
    pending: bytes | None = None
    records = 0
    for line in _lines(path):
        if pending is not None:
            digest.update(pending)
            records += 1
        pending = line
        if header is None:
            header = _json(line, path)
            if header.get("format") != FORMAT:
                raise BackupError(f"{path} is not a tickflow backup (no {FORMAT!r} header)")
            if header.get("version") != FORMAT_VERSION:
                raise BackupError(
                    f"{path} is a version {header.get('version')} backup; this tickflow "
                    f"reads version {FORMAT_VERSION}"
                )
    if header is None or pending is None:
        raise BackupError(f"backup {path} is empty: refusing to restore it")
    trailer = _json(pending, path)
    if not trailer.get("trailer"):
        raise BackupError(
            f"backup {path} has no trailer: it is truncated (an interrupted backup?); "
            "refusing to restore it"
        )
    records -= 1  # the header was counted as a record line
    if trailer.get("records") != records or trailer.get("sha256") != digest.hexdigest():
        raise BackupError(
            f"backup {path} fails its checksum (trailer: {trailer.get('records')} records, "
            f"sha256 {str(trailer.get('sha256'))[:16]}...; file: {records} records, sha256 "
            f"{digest.hexdigest()[:16]}...): it was altered or damaged; refusing to restore it"
        )
    header["records"] = records
    header["sha256"] = digest.hexdigest()
    return header


def _json(line: bytes, path: Path) -> dict[str, Any]:
    try:
        obj = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BackupError(f"backup {path} holds a damaged line ({exc}): refusing it") from exc
    if not isinstance(obj, dict):
        raise BackupError(f"backup {path} holds a line that is not a record: refusing it")
    return obj


def iter_records(path: Path) -> Iterator[Record]:
    """Records of a backup (call :func:`verify_backup` first: this does not)."""
    first = True
    for line in _lines(path):
        if first:
            first = False
            continue
        record = json.loads(line)
        if record.get("trailer"):
            return
        yield record


# --- restore ---------------------------------------------------------------------------------


@dataclass
class RestoreSummary:
    path: Path
    records: int = 0
    restored: int = 0
    expired: int = 0
    field_ttls_dropped: int = 0
    flushed: int = 0
    by_type: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0


def restore(
    client_for_db: Callable[[int], redis.Redis],
    path: Path,
    *,
    flush: bool = False,
    match: str = "*",
    field_ttl: bool = False,
    progress: Progress | None = None,
) -> RestoreSummary:
    """Restore a verified backup. Without ``flush`` it refuses (before writing anything) to
    overwrite a key that exists in the target; with ``flush`` it first deletes every key
    matching ``match`` in each database the backup names."""
    started = time.perf_counter()
    path = Path(path)
    header = verify_backup(path)
    summary = RestoreSummary(path, records=int(header["records"]))
    dbs = sorted({int(db) for db in header.get("dbs", [])} or {0})
    if flush:
        for db in dbs:
            summary.flushed += _delete_matching(client_for_db(db), match)
    else:
        _refuse_existing(client_for_db, path, dbs)

    now_ms = int(time.time() * 1000)
    writers: dict[int, RecordWriter] = {}
    for record in iter_records(path):
        db = int(record.get("db", 0))
        writer = writers.get(db)
        if writer is None:
            writer = writers[db] = RecordWriter(
                client_for_db(db), field_ttl, summary, now_ms, on_flush=progress
            )
        expiry = record.get("x")
        if expiry is not None and expiry <= now_ms:
            summary.expired += 1
            continue
        writer.add(record)
        summary.restored += 1
        summary.by_type[record["t"]] += 1
    for writer in writers.values():
        writer.flush()
    summary.seconds = time.perf_counter() - started
    return summary


#: Recreates plain keys (string, hash, list, set, zset) with their expiry, many per call,
#: for the same reason as :data:`_READ_SCRIPT`. ARGV holds, per key of KEYS: type, expiry
#: ('' for none), item count, items (zset items as score, member).
_WRITE_SCRIPT = """
local a = 1
local commands = {string = 'SET', hash = 'HSET', list = 'RPUSH', set = 'SADD', zset = 'ZADD'}
for _, key in ipairs(KEYS) do
  local t, x, n = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2])
  a = a + 3
  local last = a + n - 1
  while a <= last do
    local upto = math.min(a + 3999, last)
    redis.call(commands[t], key, unpack(ARGV, a, upto))
    a = upto + 1
  end
  if x ~= '' then redis.call('PEXPIREAT', key, x) end
end
return #KEYS
"""
_PLAIN = frozenset({"string", "hash", "list", "set", "zset"})
#: Items (fields, members, entries) per restore round trip.
_BATCH_ITEMS = 20_000


class RecordWriter:
    """Creates keys from records in one database (no existence check): plain keys through
    :data:`_WRITE_SCRIPT` (pipelined commands where the ACL user may not run scripts),
    streams and hashes with field TTLs through pipelined commands. Flushes itself every
    :data:`_BATCH_ITEMS` items; call :meth:`flush` at the end."""

    def __init__(
        self,
        client: redis.Redis,
        field_ttl: bool = False,
        summary: RestoreSummary | None = None,
        now_ms: int | None = None,
        on_flush: Progress | None = None,
    ) -> None:
        self._client = client
        self._on_flush = on_flush
        self._script: Any = client.register_script(_WRITE_SCRIPT)
        self._field_ttl = field_ttl
        self._summary = summary if summary is not None else RestoreSummary(Path())
        self._now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
        self._lua = True
        self._pipe = client.pipeline(transaction=False)
        self._records: list[Record] = []
        self._keys: list[bytes] = []
        self._args: list[Any] = []
        self.pending = 0

    def add(self, record: Record) -> None:
        kind = record["t"]
        if not self._lua or kind not in _PLAIN or record.get("fx"):
            self.pending += _queue(self._pipe, record, self._field_ttl, self._summary, self._now_ms)
            self._records.append(record)
            if self.pending >= _BATCH_ITEMS:
                self.flush()
            return
        value = record["v"]
        if kind == "string":
            items = [dec(value)]
        elif kind == "hash":
            items = [dec(x) for pair in value for x in pair]
        elif kind == "zset":
            items = [y for member, score in value for y in (score.encode(), dec(member))]
        else:
            items = [dec(x) for x in value]
        self._keys.append(dec(record["k"]))
        self._args += [kind, "" if record.get("x") is None else str(record["x"]), len(items)]
        self._args += items
        self._records.append(record)
        self.pending += len(items) + 1
        if self.pending >= _BATCH_ITEMS:
            self.flush()

    def flush(self) -> None:
        if self._keys:
            try:
                self._script(keys=self._keys, args=self._args)
            except redis.ResponseError as exc:
                if "NOPERM" not in str(exc) and "unknown command" not in str(exc).lower():
                    raise
                self._lua = False  # requeue this batch's plain keys as commands
                for record in self._records:
                    if record["t"] in _PLAIN and not record.get("fx"):
                        _queue(self._pipe, record, self._field_ttl, self._summary, self._now_ms)
        if len(self._pipe):
            self._pipe.execute()
        if self._on_flush is not None and self._records:
            self._on_flush(len(self._records))
        self._records, self._keys, self._args = [], [], []
        self.pending = 0


def _refuse_existing(
    client_for_db: Callable[[int], redis.Redis], path: Path, dbs: Sequence[int]
) -> None:
    """Raise if any key of the backup exists in the target (checked before any write)."""
    if all(int(client_for_db(db).dbsize()) == 0 for db in dbs):
        return
    batch: dict[int, list[bytes]] = {}
    existing: list[str] = []

    def check(db: int, keys: list[bytes]) -> None:
        client = client_for_db(db)
        if not int(client.exists(*keys)):  # one command for the whole chunk
            return
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.exists(key)
        existing.extend(
            f"{db}:{k.decode('utf-8', 'replace')}"
            for k, n in zip(keys, pipe.execute(), strict=True)
            if n
        )

    for record in iter_records(path):
        db = int(record.get("db", 0))
        keys = batch.setdefault(db, [])
        keys.append(dec(record["k"]))
        if len(keys) >= _CHUNK:
            check(db, keys)
            batch[db] = []
    for db, keys in batch.items():
        if keys:
            check(db, keys)
    if existing:
        raise BackupError(
            f"the target already holds {len(existing)} of the backup's keys (e.g. "
            f"{', '.join(existing[:3])}); nothing was restored. Restore with --flush to "
            "replace the keyspace, or into an empty database."
        )


def _delete_matching(client: redis.Redis, match: str) -> int:
    if match == "*":
        count = int(client.dbsize())
        client.flushdb()
        return count
    deleted = 0
    cursor = 0
    while True:
        cursor, keys = client.scan(cursor, match=match, count=1000)
        if keys:
            deleted += int(client.unlink(*keys))
        if cursor == 0:
            return deleted


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _queue(
    pipe: redis.client.Pipeline,
    record: Record,
    field_ttl: bool,
    summary: RestoreSummary,
    now_ms: int,
) -> int:
    """Queue the commands that recreate one record; returns how many were queued."""
    key = dec(record["k"])
    kind, value = record["t"], record["v"]
    queued = 0
    if kind == "string":
        pipe.set(key, dec(value))
        queued += 1
    elif kind == "hash":
        for part in _chunks(value, _CHUNK):
            pipe.hset(key, mapping={dec(f): dec(v) for f, v in part})
            queued += 1
        fields_ttl = [(dec(f), int(t)) for f, t in record.get("fx", []) if int(t) > now_ms]
        if fields_ttl and field_ttl:
            for f, t in fields_ttl:
                pipe.execute_command("HPEXPIREAT", key, t, "FIELDS", 1, f)
                queued += 1
        elif fields_ttl:
            summary.field_ttls_dropped += len(fields_ttl)
    elif kind == "list":
        for part in _chunks(value, _CHUNK):
            pipe.rpush(key, *[dec(v) for v in part])
            queued += 1
    elif kind == "set":
        for part in _chunks(value, _CHUNK):
            pipe.sadd(key, *[dec(v) for v in part])
            queued += 1
    elif kind == "zset":
        for part in _chunks(value, _CHUNK):
            pipe.zadd(key, {dec(m): s for m, s in part})
            queued += 1
    elif kind == "stream":
        queued += _queue_stream(pipe, key, value)
    else:
        raise BackupError(f"backup record of unknown type {kind!r}")
    if record.get("x") is not None:
        pipe.pexpireat(key, int(record["x"]))
        queued += 1
    return queued


def _queue_stream(pipe: redis.client.Pipeline, key: bytes, value: Mapping[str, Any]) -> int:
    queued = 0
    entries = value["entries"]
    for entry_id, flat in entries:
        fields = [dec(x) for x in flat]
        pipe.execute_command("XADD", key, entry_id, *fields)
        queued += 1
    if not entries:
        # An empty stream (all entries deleted, or only groups): create it without entries.
        pipe.execute_command("XGROUP", "CREATE", key, "tickflow-restore", "$", "MKSTREAM")
        pipe.execute_command("XGROUP", "DESTROY", key, "tickflow-restore")
        queued += 2
    pipe.execute_command(
        "XSETID",
        key,
        value["last_id"],
        "ENTRIESADDED",
        value["entries_added"],
        "MAXDELETEDID",
        value["max_deleted_id"],
    )
    queued += 1
    for group in value["groups"]:
        args: list[Any] = ["XGROUP", "CREATE", key, dec(group["name"])]
        oldest = group.get("oldest_pending")
        if oldest:
            args.append(_id_before(oldest))
        else:
            args.append(group["last_delivered_id"])
            if group.get("entries_read") is not None:
                args += ["ENTRIESREAD", group["entries_read"]]
        pipe.execute_command(*args)
        queued += 1
    return queued
