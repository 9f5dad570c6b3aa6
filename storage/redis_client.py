"""Redis connections built from the settings, with the password kept secret.

The password is passed separately from the URL (settings strip it from ``redis_url``),
so connection errors, which name the URL, can be logged as they are.
"""

from __future__ import annotations

import redis
import redis.asyncio as aioredis
from redis.backoff import ExponentialBackoff

from config.settings import Settings

_RETRY_ON = [redis.ConnectionError, redis.TimeoutError]


def _password(settings: Settings) -> str | None:
    return settings.redis_password.get_secret_value() if settings.redis_password else None


def async_redis(settings: Settings) -> aioredis.Redis:
    client: aioredis.Redis = aioredis.Redis.from_url(
        settings.redis_url,
        password=_password(settings),
        socket_connect_timeout=5,
        socket_timeout=10,
        health_check_interval=30,
        retry=aioredis.retry.Retry(ExponentialBackoff(cap=2.0, base=0.1), 3),
        retry_on_error=_RETRY_ON,
    )
    return client


def sync_redis(settings: Settings) -> redis.Redis:
    client: redis.Redis = redis.Redis.from_url(
        settings.redis_url,
        password=_password(settings),
        socket_connect_timeout=5,
        socket_timeout=10,
        health_check_interval=30,
        retry=redis.retry.Retry(ExponentialBackoff(cap=2.0, base=0.1), 3),
        retry_on_error=_RETRY_ON,
    )
    return client
