"""Bars and volume results in Redis: ``bars:1m:{token}`` streams and ``vol:{token}`` hashes.

Both writes are idempotent, because delivery is at-least-once and a restarted worker
re-emits the bars it had not checkpointed: a stream entry's id is the bar's start
(``{epoch_ms}-0``), so Redis itself refuses a second copy (XADD with an id not above the
stream's last one is an error, treated here as "already written"); the hash holds
absolute values, so rewriting it changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from core.bars import Bar
from storage.keys import Keys

#: Redis's answer to an XADD whose explicit id is not above the stream's top entry.
_DUPLICATE_ID = "equal or smaller than the target stream top item"


def bar_entry_id(bar: Bar) -> str:
    return f"{bar.start * 1000}-0"


def bar_fields(bar: Bar) -> dict[str, str]:
    return {
        "open": repr(bar.open),
        "high": repr(bar.high),
        "low": repr(bar.low),
        "close": repr(bar.close),
        "volume": str(bar.volume),
    }


async def write_bars(
    client: aioredis.Redis, keys: Keys, bars: Sequence[Bar], maxlen: int | None = None
) -> int:
    """Appends bars (in start order per token); returns how many were new."""
    if not bars:
        return 0
    pipe = client.pipeline(transaction=False)
    for bar in bars:
        pipe.xadd(
            keys.bars_1m(bar.instrument_token),
            bar_fields(bar),  # type: ignore[arg-type]
            id=bar_entry_id(bar),
            maxlen=maxlen,
            approximate=True,
        )
    results = await pipe.execute(raise_on_error=False)
    written = 0
    for result in results:
        if isinstance(result, ResponseError):
            if _DUPLICATE_ID not in str(result):
                raise result
        elif isinstance(result, Exception):
            raise result
        else:
            written += 1
    return written


async def write_hashes(
    client: aioredis.Redis, hashes: Mapping[str, Mapping[str, str]], ttl: int = 0
) -> None:
    """Writes whole hashes (absolute values: idempotent) in one pipeline; with ``ttl`` > 0
    each lives that many seconds after its last write (``TICKFLOW_ANALYTICS_TTL``)."""
    if not hashes:
        return
    pipe = client.pipeline(transaction=False)
    for key, fields in hashes.items():
        pipe.hset(key, mapping=dict(fields))  # type: ignore[arg-type]
        if ttl > 0:
            pipe.expire(key, ttl)
    await pipe.execute()
