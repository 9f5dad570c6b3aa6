"""Redis clients built from the settings, on the process's shared pools.

Kept as the entry point the topology already uses; the connection handling (one pool
per process and event loop, ACL user, TLS, the password kept in its SecretStr) lives in
:mod:`storage.redis_manager`. A client's ``aclose()``/``close()`` releases its connection
and leaves the shared pool open for the rest of the process.
"""

from __future__ import annotations

import redis
import redis.asyncio as aioredis

from config.settings import Settings
from storage.redis_manager import ConnectionSpec, async_client, sync_client


def async_redis(settings: Settings) -> aioredis.Redis:
    return async_client(ConnectionSpec.from_settings(settings))


def sync_redis(settings: Settings) -> redis.Redis:
    return sync_client(ConnectionSpec.from_settings(settings))
