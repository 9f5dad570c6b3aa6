"""The instrument master in Redis: ``instrument:{token}`` and ``symbol:{exchange}:{symbol}``.

Readers (dashboards, bots, migration scripts) resolve symbols without loading the CSV.
Rewriting is idempotent, so every worker may do it at start-up.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
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


async def publish_instruments(
    client: aioredis.Redis, keys: Keys, rows: Iterable[Mapping[str, Any]]
) -> int:
    """Writes every instrument row; returns how many were written."""
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
    await pipe.execute()
    return written
