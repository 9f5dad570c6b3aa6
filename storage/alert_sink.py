"""Alerts in Redis: the ``alerts`` stream and the ``alerts:live`` channel, exactly once.

Delivery is at-least-once and alerts of different tokens come from different partitions
and workers, so they reach Redis out of event-time order, and a restarted worker or a
replay sends some again. A stream entry id cannot carry the alert's identity (ids must
grow, and Redis refuses one at or below the stream's last id), so the bar sink's trick
(id = bar start, Redis refuses the copy) does not work here. Instead one Lua script per
alert, atomic on the server, does:

1. **Dedup by alert id** (deterministic: token, pattern, signal, bar start) in a companion
   sorted set ``alerts:ids`` (:func:`dedup_key`), member = alert id, score = event time
   in ms. Present: a duplicate; nothing is written or published.
2. **Bounded memory, by event time, not by a wall-clock TTL.** The set keeps the ids of
   the last ``dedup_horizon`` seconds of event time before the newest alert it holds,
   and an alert older than that cut-off is refused as *stale*: its id might have been
   trimmed, so writing it could duplicate it. This makes "never a duplicate" an actual
   guarantee (a trimmed id can only come back as stale), keeps replays deterministic
   (principle 1: nothing depends on when the script ran), and does not forget everything
   after a quiet weekend as an EXPIRE on the set would. The price: an alert that arrives
   more than the horizon (default a day) behind the newest one is dropped and counted,
   which for a live alert feed is no loss.
3. **Entry id from event time:** ``{event_ms}-*`` (Redis 7 picks the sequence, so many
   alerts of the same minute get ``-0``, ``-1``, ...). When that is not above the
   stream's last id (an alert late relative to one already written), the entry goes
   to ``{last_ms}-*``: the stream stays in arrival order at the time of the newest
   alert, and the alert's own ``event_time`` field keeps its true time.
4. ``XADD ... MAXLEN ~ N`` (approximate trimming: whole macro nodes, cheap), then
   ``PUBLISH`` the alert's JSON on ``alerts:live``, only for an alert actually written.

Redis Cluster would need the stream and its set in one hash slot (``{alerts}`` hash
tags); schema v1 names them ``alerts`` and ``alerts:ids``, so this targets a single
Redis (or a primary with replicas).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis

from core.patterns import Alert
from storage.keys import Keys

#: Returned by the script for a new entry, a duplicate and a stale alert.
_WRITTEN, _DUPLICATE, _STALE = 1, 0, -1

_SCRIPT = """
local stream, ids = KEYS[1], KEYS[2]
local alert_id, event_ms = ARGV[1], ARGV[2]
local maxlen, horizon = tonumber(ARGV[3]), tonumber(ARGV[4])
local channel, message = ARGV[5], ARGV[6]

if redis.call('ZSCORE', ids, alert_id) then
  return {0, ''}
end
local newest = tonumber(event_ms)
local top = redis.call('ZRANGE', ids, -1, -1, 'WITHSCORES')
if top[2] then
  local cutoff = tonumber(top[2]) - horizon
  if tonumber(event_ms) < cutoff then
    return {-1, ''}
  end
  newest = math.max(newest, tonumber(top[2]))
end

local head = {'XADD', stream}
if maxlen > 0 then
  head[#head + 1] = 'MAXLEN'
  head[#head + 1] = '~'
  head[#head + 1] = maxlen
end
local function xadd(ms)
  local args = {unpack(head)}
  args[#args + 1] = ms .. '-*'
  for i = 7, #ARGV do
    args[#args + 1] = ARGV[i]
  end
  return redis.pcall(unpack(args))
end

local entry = xadd(event_ms)
if type(entry) == 'table' and entry.err then
  if not string.find(entry.err, 'equal or smaller', 1, true) then
    return entry
  end
  local info = redis.call('XINFO', 'STREAM', stream)
  local last
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then
      last = info[i + 1]
    end
  end
  entry = xadd(string.match(last, '^(%d+)-'))
  if type(entry) == 'table' and entry.err then
    return entry
  end
end

redis.call('ZADD', ids, event_ms, alert_id)
redis.call('ZREMRANGEBYSCORE', ids, '-inf', '(' .. string.format('%.0f', newest - horizon))
redis.call('PUBLISH', channel, message)
return {1, entry}
"""


def dedup_key(keys: Keys) -> str:
    """The companion sorted set of recently written alert ids (``alerts:ids``)."""
    return f"{keys.alerts}:ids"


@dataclass(frozen=True, slots=True)
class AlertWriteResult:
    """What one :meth:`AlertSink.write` did: ``written`` maps each new alert's id to its
    stream entry id; ``duplicates`` and ``stale`` list the alert ids not written (for the
    sink agent's metrics)."""

    written: dict[str, str]
    duplicates: tuple[str, ...]
    stale: tuple[str, ...]


class AlertSink:
    """Writes alerts to the ``alerts`` stream and publishes them on ``alerts:live``,
    idempotently (see the module docstring for how and why)."""

    def __init__(
        self,
        client: aioredis.Redis,
        keys: Keys,
        *,
        maxlen: int = 10_000,
        dedup_horizon: int = 86_400,
    ) -> None:
        if maxlen < 0:
            raise ValueError(f"maxlen must not be negative, got {maxlen}")
        if dedup_horizon < 1:
            raise ValueError(f"dedup_horizon must be at least 1 s, got {dedup_horizon}")
        self._client = client
        self._keys = keys
        self._maxlen = maxlen
        self._horizon_ms = dedup_horizon * 1000
        self._script = client.register_script(_SCRIPT)

    async def write(self, alerts: Sequence[Alert]) -> AlertWriteResult:
        """Writes a batch in one round trip (a pipeline of atomic script calls), in the
        given order; safe to call again with any of the same alerts."""
        if not alerts:
            return AlertWriteResult({}, (), ())
        stream, ids = self._keys.alerts, dedup_key(self._keys)
        pipe = self._client.pipeline(transaction=False)
        for alert in alerts:
            fields = [part for item in alert.to_redis().items() for part in item]
            await self._script(
                keys=[stream, ids],
                args=[
                    alert.id,
                    alert.event_ms,
                    self._maxlen,
                    self._horizon_ms,
                    self._keys.alerts_live,
                    alert.to_json(),
                    *fields,
                ],
                client=pipe,
            )
        replies = await pipe.execute()
        written: dict[str, str] = {}
        duplicates: list[str] = []
        stale: list[str] = []
        for alert, (status, entry) in zip(alerts, replies, strict=True):
            if status == _WRITTEN:
                written[alert.id] = entry.decode() if isinstance(entry, bytes) else str(entry)
            elif status == _DUPLICATE:
                duplicates.append(alert.id)
            elif status == _STALE:
                stale.append(alert.id)
            else:
                raise RuntimeError(f"unexpected alert script reply {status!r}")
        return AlertWriteResult(written, tuple(duplicates), tuple(stale))
