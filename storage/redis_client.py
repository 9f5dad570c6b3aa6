"""Redis connections built from the settings, with the password kept secret.

Connection errors carry the URL without credentials so they can be logged as they are.
"""

from __future__ import annotations

import redis
import redis.asyncio as aioredis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from config.settings import Settings


def _options(settings: Settings) -> dict[str, object]:
    password = settings.redis_password.get_secret_value() if settings.redis_password else None
    return {
        "password": password,
        "socket_connect_timeout": 5,
        "socket_timeout": 10,
        "health_check_interval": 30,
        "retry_on_error": [redis.ConnectionError, redis.TimeoutError],
    }


def async_redis(settings: Settings) -> aioredis.Redis:
    client: aioredis.Redis = aioredis.Redis.from_url(
        settings.redis_url,
        retry=aioredis.retry.Retry(ExponentialBackoff(cap=2.0, base=0.1), 3),
        **_options(settings),  # type: ignore[arg-type]
    )
    return client


def sync_redis(settings: Settings) -> redis.Redis:
    client: redis.Redis = redis.Redis.from_url(
        settings.redis_url,
        retry=Retry(ExponentialBackoff(cap=2.0, base=0.1), 3),
        **_options(settings),  # type: ignore[arg-type]
    )
    return client
