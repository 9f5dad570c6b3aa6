"""The instrument master in Redis: ``instrument:{token}`` and ``symbol:{exchange}:{symbol}``.

Readers (dashboards, bots, migration scripts) resolve symbols without loading the CSV.
Rewriting is idempotent, so every worker may do it at start-up; a digest of the master
published last is kept beside it, so a restart with the same master writes nothing
(publishing 16,000 instruments costs a worker over a second of CPU it would otherwise
take from the tick hop).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

import redis.asyncio as aioredis

from storage.keys import SCHEMA_VERSION, Keys

CHUNK = 1000


def _field(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def master_digest(rows: Sequence[Mapping[str, Any]]) -> str:
    """SHA-256 over the rows as published (so any change to a field changes it)."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps({k: _field(v) for k, v in row.items()}).encode())
    return digest.hexdigest()


async def publish_instruments(
    client: aioredis.Redis, keys: Keys, rows: Sequence[Mapping[str, Any]]
) -> int:
    """Writes every instrument row unless this master is already published; returns how
    many were written (0 when unchanged)."""
    digest = master_digest(rows)
    if await client.get(keys.instruments_digest) in (digest, digest.encode()):
        return 0
    written = 0
    pipe = client.pipeline(transaction=False)
    for row in rows:
        token = int(row["instrument_token"])
        pipe.hset(keys.instrument(token), mapping={k: _field(v) for k, v in row.items()})
        pipe.set(keys.symbol(str(row["exchange"]), str(row["tradingsymbol"])), token)
        written += 1
        if written % CHUNK == 0:
            await pipe.execute()
    pipe.set(keys.schema, SCHEMA_VERSION)
    pipe.set(keys.instruments_digest, digest)  # last: only a complete publish counts
    await pipe.execute()
    return written
