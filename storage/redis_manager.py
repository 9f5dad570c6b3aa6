"""The Redis layer of a tickflow process: shared pools, server features, the schema check.

Why this exists rather than ``Redis.from_url`` at every call site:

* **One pool per process.** Every agent, sink and start-up task used to build its own
  client and pool, so a worker held an unbounded number of connections. Here a pool is
  keyed by the connection's identity and shared (capped at ``redis_pool_size``; callers
  wait for a free connection instead of failing). asyncio connections belong to the
  event loop that opened them, so async pools are kept per running loop (a worker has
  one; tests have one per test); sync pools per process id (a forked child must not
  reuse its parent's sockets).
* **Features from the server, not assumptions.** Redis 7.0 (Debian's) is the baseline and
  production runs Redis 8, so what the server can do is read once from ``INFO`` and
  exposed as :class:`RedisFeatures`: per-field TTLs (``HPEXPIRE``...) exist on Redis 7.4+
  and Valkey 9+ only, and are used only where detected.
* **A clear stop on a foreign keyspace.** Readers depend on schema v1, so a process refuses
  to start against a keyspace marked with another ``tickflow:schema`` version, or against
  the legacy layout (which ``scripts/migrate_redis.py`` converts), instead of mixing
  layouts. An empty keyspace is marked ``1``.
* **The password never leaves its SecretStr** except as a connection argument to
  redis-py: the manager's repr, its log lines and its errors show :attr:`ConnectionSpec.url`,
  which never carries it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

import redis
import redis.asyncio as aioredis
from pydantic import SecretStr
from redis.backoff import ExponentialBackoff

from config.settings import Settings
from storage.keys import SCHEMA_VERSION, Keys

if TYPE_CHECKING:
    from core.bars import Bar

log = logging.getLogger(__name__)

#: The oldest server this project runs against (PEXPIRETIME, XSETID ENTRIESADDED, ...).
MIN_VERSION: tuple[int, int, int] = (7, 0, 0)

#: Keys sampled to tell an unmarked keyspace's layout (v1, legacy or foreign).
_SCHEMA_SAMPLE = 1000

AnalyticsFamily = Literal["vol", "ind", "greeks"]


class RedisConfigError(RuntimeError):
    """Redis cannot be used as configured (unreachable, credentials, TLS, version); the
    message says which server (redacted URL) and what to change. Never retried in a loop."""


class RedisVersionError(RedisConfigError):
    """The server is older than :data:`MIN_VERSION`."""


class SchemaVersionError(RedisConfigError):
    """The keyspace holds another schema version, the legacy layout, or foreign keys."""


# --- connection identity ------------------------------------------------------------------


def _retryable(error: Exception, also: Callable[[Exception], bool] | None) -> bool:
    return not isinstance(error, redis.AuthenticationError) and (also is None or also(error))


class _Retry(redis.retry.Retry):
    """Retries dropped connections, never a refused credential (redis-py files
    AuthenticationError under ConnectionError): retrying a wrong password only delays the
    error and hammers the server."""

    def call_with_retry(
        self,
        do: Callable[[], Any],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> Any:
        return super().call_with_retry(
            do, fail, lambda e: _retryable(e, is_retryable), with_failure_count
        )


class _AsyncRetry(aioredis.retry.Retry):
    __doc__ = _Retry.__doc__

    async def call_with_retry(
        self,
        do: Callable[[], Awaitable[Any]],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> Any:
        return await super().call_with_retry(
            do, fail, lambda e: _retryable(e, is_retryable), with_failure_count
        )


@dataclass(frozen=True)
class ConnectionSpec:
    """Everything that identifies a connection; hashable, so pools are shared by it.

    ``password`` is a SecretStr, excluded from the repr; :attr:`url` is the redacted
    address used in every message.
    """

    host: str = "127.0.0.1"
    port: int = 6379
    db: int = 0
    username: str | None = None
    password: SecretStr | None = field(default=None, repr=False)
    tls: bool = False
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    unix_path: str | None = None
    pool_size: int = 32

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        username: str | None = None,
        password: SecretStr | None = None,
        tls: bool = False,
        tls_ca_file: Path | str | None = None,
        tls_cert_file: Path | str | None = None,
        tls_key_file: Path | str | None = None,
        pool_size: int = 32,
        db: int | None = None,
    ) -> ConnectionSpec:
        """Parse ``redis://``, ``rediss://`` (TLS) or ``unix://`` URLs.

        A password inside the URL is moved into the SecretStr (an explicit ``password``
        wins); ``username`` overrides the URL's user; ``db`` overrides the URL's database.
        """
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise RedisConfigError(
                f"unsupported Redis URL scheme {parts.scheme!r} (use redis://, rediss:// or "
                "unix://)"
            )
        query = parse_qs(parts.query)
        url_db: int | None = None
        path = parts.path
        if parts.scheme != "unix" and path.strip("/"):
            url_db = _int(path.strip("/"), "database number in the Redis URL")
        if "db" in query:
            url_db = _int(query["db"][0], "db= in the Redis URL")
        if password is None and parts.password:
            password = SecretStr(unquote(parts.password))
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 6379,
            db=db if db is not None else (url_db or 0),
            username=username or (unquote(parts.username) if parts.username else None),
            password=password,
            tls=tls or parts.scheme == "rediss",
            tls_ca_file=str(tls_ca_file) if tls_ca_file else None,
            tls_cert_file=str(tls_cert_file) if tls_cert_file else None,
            tls_key_file=str(tls_key_file) if tls_key_file else None,
            unix_path=path if parts.scheme == "unix" else None,
            pool_size=pool_size,
        )

    @classmethod
    def from_settings(
        cls, settings: Settings, url: str | None = None, *, db: int | None = None
    ) -> ConnectionSpec:
        """The settings' Redis (or ``url`` with the settings' user, password and TLS)."""
        return cls.from_url(
            url or settings.redis_url,
            username=settings.redis_username,
            password=settings.redis_password,
            tls=settings.redis_tls,
            tls_ca_file=settings.redis_tls_ca_file,
            tls_cert_file=settings.redis_tls_cert_file,
            tls_key_file=settings.redis_tls_key_file,
            pool_size=settings.redis_pool_size,
            db=db,
        )

    def with_db(self, db: int) -> ConnectionSpec:
        return ConnectionSpec(**{**self.__dict__, "db": db})

    @property
    def url(self) -> str:
        """The address without the password: safe for logs, reports and errors."""
        user = f"{self.username}@" if self.username else ""
        if self.unix_path:
            return f"unix://{user}{self.unix_path}?db={self.db}"
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{user}{self.host}:{self.port}/{self.db}"

    def __str__(self) -> str:
        return self.url

    def _kwargs(self, tls_class: type, unix_class: type) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "db": self.db,
            "username": self.username,
            "password": self.password.get_secret_value() if self.password else None,
            "socket_connect_timeout": 5,
            "socket_timeout": 30,
            "health_check_interval": 30,
            "retry_on_error": [redis.ConnectionError, redis.TimeoutError],
        }
        if self.unix_path:
            kwargs.update(connection_class=unix_class, path=self.unix_path)
            del kwargs["socket_connect_timeout"]
        else:
            kwargs.update(host=self.host, port=self.port)
            if self.tls:
                kwargs.update(
                    connection_class=tls_class,
                    ssl_cert_reqs="required",
                    ssl_ca_certs=self.tls_ca_file,
                    ssl_certfile=self.tls_cert_file,
                    ssl_keyfile=self.tls_key_file,
                )
        return kwargs

    def new_sync_pool(self) -> redis.BlockingConnectionPool:
        kwargs = self._kwargs(redis.SSLConnection, redis.UnixDomainSocketConnection)
        kwargs["retry"] = _Retry(ExponentialBackoff(cap=2.0, base=0.1), 3)
        return redis.BlockingConnectionPool(max_connections=self.pool_size, timeout=20, **kwargs)

    def new_async_pool(self) -> aioredis.BlockingConnectionPool:
        kwargs = self._kwargs(aioredis.SSLConnection, aioredis.UnixDomainSocketConnection)
        kwargs["retry"] = _AsyncRetry(ExponentialBackoff(cap=2.0, base=0.1), 3)
        return aioredis.BlockingConnectionPool(max_connections=self.pool_size, timeout=20, **kwargs)


def _int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise RedisConfigError(f"bad {what}: {text!r}") from None


# --- the shared pools ---------------------------------------------------------------------

_lock = threading.Lock()
_sync_pools: dict[tuple[int, ConnectionSpec], redis.BlockingConnectionPool] = {}
_async_pools: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[ConnectionSpec, aioredis.BlockingConnectionPool]
] = weakref.WeakKeyDictionary()


def sync_client(spec: ConnectionSpec) -> redis.Redis:
    """A client on the process's pool for ``spec`` (closing the client keeps the pool)."""
    key = (os.getpid(), spec)
    with _lock:
        pool = _sync_pools.get(key)
        if pool is None:
            pool = _sync_pools[key] = spec.new_sync_pool()
    return redis.Redis(connection_pool=pool)


def async_client(spec: ConnectionSpec) -> aioredis.Redis:
    """A client on the running loop's pool for ``spec``.

    Outside a running loop there is nothing to share a pool with, so the client gets a
    pool of its own, closed with it.
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        client = aioredis.Redis(connection_pool=spec.new_async_pool())
        client.auto_close_connection_pool = True
        return client
    with _lock:
        pools = _async_pools.setdefault(loop, {})
        pool = pools.get(spec)
        if pool is None:
            pool = pools[spec] = spec.new_async_pool()
    return aioredis.Redis(connection_pool=pool)


async def close_async_pools() -> None:
    """Disconnect the running loop's pools (at shutdown, so no socket outlives the loop)."""
    loop = asyncio.get_running_loop()
    with _lock:
        pools = _async_pools.pop(loop, {})
    for pool in pools.values():
        await pool.aclose()


# --- features -----------------------------------------------------------------------------


def _version(text: object) -> tuple[int, int, int]:
    numbers = [int(p) if p.isdigit() else 0 for p in str(text).split(".")[:3]]
    numbers += [0] * (3 - len(numbers))
    return numbers[0], numbers[1], numbers[2]


@dataclass(frozen=True)
class RedisFeatures:
    """What the connected server can do, read from ``INFO server``.

    ``version`` is the server's own version (Valkey reports ``valkey_version`` next to a
    frozen ``redis_version`` of 7.2.4); ``compat_version`` is the Redis version it claims
    compatibility with, which is what the 7.0 baseline is checked against.
    """

    server: str
    version: tuple[int, int, int]
    compat_version: tuple[int, int, int]
    mode: str
    #: HEXPIRE/HPEXPIREAT/HPEXPIRETIME/HPERSIST: Redis 7.4+, Valkey 9.0+.
    hash_field_ttl: bool

    @classmethod
    def from_info(cls, info: Mapping[str, Any]) -> RedisFeatures:
        compat = _version(info.get("redis_version", "0"))
        if "valkey_version" in info or info.get("server_name") == "valkey":
            server = "valkey"
            version = _version(info.get("valkey_version", info.get("redis_version", "0")))
            field_ttl = version >= (9, 0, 0)
        else:
            server = "redis"
            version = compat
            field_ttl = version >= (7, 4, 0)
        return cls(
            server=server,
            version=version,
            compat_version=compat,
            mode=str(info.get("redis_mode", "standalone")),
            hash_field_ttl=field_ttl,
        )

    @property
    def version_text(self) -> str:
        return ".".join(map(str, self.version))

    def describe(self) -> str:
        ttl = "per-field TTL" if self.hash_field_ttl else "key-level TTL only"
        return f"{self.server} {self.version_text} ({self.mode}, {ttl})"

    def check_baseline(self, where: str) -> None:
        if self.compat_version < MIN_VERSION:
            need = ".".join(map(str, MIN_VERSION))
            raise RedisVersionError(
                f"{where} runs {self.server} {self.version_text}; tickflow needs Redis "
                f"{need} or newer (PEXPIRETIME, XSETID ENTRIESADDED, ...)"
            )


_features: dict[ConnectionSpec, RedisFeatures] = {}


# --- the schema check ----------------------------------------------------------------------


def schema_decision(
    keys: Keys, marker: bytes | str | None, sample: Sequence[bytes | str], where: str
) -> Literal["ok", "write"]:
    """What a keyspace's ``tickflow:schema`` marker and a sample of its keys mean.

    Pure, so the rule is testable and the sync and async start-ups share it. An unmarked
    keyspace holding only v1 keys is adopted (a worker of an earlier build wrote them
    before publishing the marker); legacy or foreign keys stop the process.
    """
    from storage.legacy_layout import is_legacy_key

    if marker is not None:
        found = _text(marker)
        if found == str(SCHEMA_VERSION):
            return "ok"
        raise SchemaVersionError(
            f"{where} holds tickflow schema version {found!r} "
            f"at {keys.schema!r}; this tickflow reads and writes version {SCHEMA_VERSION}. "
            "Use a tickflow release of that schema version, or another database or key "
            "prefix (TICKFLOW_REDIS_URL / TICKFLOW_REDIS_KEY_PREFIX)."
        )
    names = [_text(k) for k in sample]
    legacy = [n for n in names if is_legacy_key(n)]
    if legacy:
        raise SchemaVersionError(
            f"{where} holds the legacy scanner's layout (e.g. {legacy[0]!r}) and no "
            f"{keys.schema!r} marker: migrate it with `python -m scripts.migrate_redis "
            "--source-url ... --target-url ...` into an empty database, or point "
            "TICKFLOW_REDIS_URL elsewhere."
        )
    foreign = [n for n in names if keys.family(n) is None]
    if foreign:
        raise SchemaVersionError(
            f"{where} holds keys that are not tickflow's (e.g. {foreign[0]!r}) and no "
            f"{keys.schema!r} marker: use an empty database or set "
            "TICKFLOW_REDIS_KEY_PREFIX so tickflow's keys cannot collide with them."
        )
    return "write"


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _explain(exc: Exception, spec: ConnectionSpec) -> RedisConfigError:
    """A connection-level failure as a configuration error naming the redacted URL."""
    if isinstance(exc, redis.AuthenticationError):
        user = spec.username or "default"
        return RedisConfigError(
            f"Redis at {spec.url} refused the credentials of user {user!r} ({exc}); "
            "check TICKFLOW_REDIS_USERNAME / TICKFLOW_REDIS_PASSWORD"
        )
    if isinstance(exc, redis.ResponseError) and "NOPERM" in str(exc):
        return RedisConfigError(
            f"Redis user {spec.username or 'default'!r} at {spec.url} lacks a permission "
            f"tickflow needs ({exc}); grant it ~* +@all or the commands named"
        )
    hint = " (TLS: check TICKFLOW_REDIS_TLS_CA_FILE and the certificates)" if spec.tls else ""
    return RedisConfigError(f"cannot use Redis at {spec.url}: {exc}{hint}")


# --- the manager ----------------------------------------------------------------------------


class RedisManager:
    """The Redis layer for one process: :meth:`start` once, then batch writes.

    Every key comes from :class:`storage.keys.Keys`; TTLs and stream caps from the
    settings (``tick_ttl``, ``analytics_ttl``, ``bars_stream_maxlen``,
    ``alerts_stream_maxlen``). Managers are cheap: pools and detected features are shared
    per connection, so building one per component is fine.
    """

    def __init__(self, settings: Settings, *, url: str | None = None) -> None:
        self.settings = settings
        self.spec = ConnectionSpec.from_settings(settings, url)
        self.keys = Keys(settings.redis_key_prefix)

    def __repr__(self) -> str:
        features = _features.get(self.spec)
        known = features.describe() if features else "not started"
        return f"RedisManager({self.spec.url}, prefix={self.keys.prefix!r}, {known})"

    __str__ = __repr__

    # --- access -------------------------------------------------------------------------
    @property
    def client(self) -> aioredis.Redis:
        """An async client on the shared pool of the running loop."""
        return async_client(self.spec)

    @property
    def sync_client(self) -> redis.Redis:
        """A sync client on the process's shared pool (scripts, start-up checks)."""
        return sync_client(self.spec)

    @property
    def features(self) -> RedisFeatures:
        features = _features.get(self.spec)
        if features is None:
            raise RuntimeError(f"{self!r}: call start() or start_sync() first")
        return features

    # --- start-up -------------------------------------------------------------------------
    async def start(self, *, check_schema: bool = True) -> RedisFeatures:
        """Connect, detect features, check the schema marker (writing it on an empty
        keyspace). Raises :class:`RedisConfigError` with a clear message otherwise."""
        client = self.client
        try:
            features = RedisFeatures.from_info(await client.info("server"))
            features.check_baseline(self.spec.url)
            if check_schema:
                marker = await client.get(self.keys.schema)
                sample: list[bytes | str] = []
                if marker is None:
                    async for key in client.scan_iter(
                        match=self.keys.keyspace_pattern, count=_SCHEMA_SAMPLE
                    ):
                        sample.append(key)
                        if len(sample) >= _SCHEMA_SAMPLE:
                            break
                if schema_decision(self.keys, marker, sample, self.spec.url) == "write":
                    await client.set(self.keys.schema, SCHEMA_VERSION, nx=True)
        except RedisConfigError:
            raise
        except (redis.RedisError, OSError) as exc:
            raise _explain(exc, self.spec) from exc
        return self._started(features)

    def start_sync(self, *, check_schema: bool = True) -> RedisFeatures:
        """:meth:`start` for scripts without an event loop."""
        client = self.sync_client
        try:
            features = RedisFeatures.from_info(client.info("server"))
            features.check_baseline(self.spec.url)
            if check_schema:
                marker = client.get(self.keys.schema)
                sample: list[bytes | str] = []
                if marker is None:
                    for key in client.scan_iter(
                        match=self.keys.keyspace_pattern, count=_SCHEMA_SAMPLE
                    ):
                        sample.append(key)
                        if len(sample) >= _SCHEMA_SAMPLE:
                            break
                if schema_decision(self.keys, marker, sample, self.spec.url) == "write":
                    client.set(self.keys.schema, SCHEMA_VERSION, nx=True)
        except RedisConfigError:
            raise
        except (redis.RedisError, OSError) as exc:
            raise _explain(exc, self.spec) from exc
        return self._started(features)

    def _started(self, features: RedisFeatures) -> RedisFeatures:
        _features[self.spec] = features
        log.info("Redis %s: %s, schema v%d", self.spec.url, features.describe(), SCHEMA_VERSION)
        return features

    async def close(self) -> None:
        """Disconnect the running loop's shared pools (worker shutdown)."""
        await close_async_pools()

    # --- batch writes ---------------------------------------------------------------------
    async def write_hashes(
        self, hashes: Mapping[str, Mapping[str, str]], *, ttl: int = 0, chunk: int = 1000
    ) -> None:
        """Whole hashes (absolute values: idempotent) in pipelined round trips of ``chunk``
        keys; ``ttl`` seconds (0 = none) is renewed with each write."""
        if not hashes:
            return
        client = self.client
        items = list(hashes.items())
        for start in range(0, len(items), chunk):
            pipe = client.pipeline(transaction=False)
            for key, fields in items[start : start + chunk]:
                pipe.hset(key, mapping=dict(fields))  # type: ignore[arg-type]
                if ttl:
                    pipe.expire(key, ttl)
            await pipe.execute()

    async def write_ticks(self, ticks: Mapping[int, Mapping[str, str]]) -> None:
        """``tick:{token}`` hashes (the :mod:`storage.tick_hash` layout), ``tick_ttl``."""
        keys = self.keys
        await self.write_hashes(
            {keys.tick(token): fields for token, fields in ticks.items()},
            ttl=self.settings.tick_ttl,
        )

    async def write_analytics(
        self, family: AnalyticsFamily, values: Mapping[int, Mapping[str, str]]
    ) -> None:
        """``vol:``, ``ind:`` or ``greeks:{token}`` hashes, ``analytics_ttl``."""
        build = {"vol": self.keys.vol, "ind": self.keys.indicators, "greeks": self.keys.greeks}
        key_of = build[family]
        await self.write_hashes(
            {key_of(token): fields for token, fields in values.items()},
            ttl=self.settings.analytics_ttl,
        )

    async def write_bars(self, bars: Sequence[Bar]) -> int:
        """Closed bars into ``bars:1m:{token}`` (idempotent ids), ``bars_stream_maxlen``."""
        from storage.bar_sink import write_bars

        maxlen = self.settings.bars_stream_maxlen or None
        return await write_bars(self.client, self.keys, bars, maxlen)

    async def set_regime(self, vix: float, regime: str, event_time: str) -> None:
        await self.client.hset(
            self.keys.regime,
            mapping={"vix": repr(vix), "regime": regime, "event_time": event_time},
        )

    async def expire_hash_fields(self, key: str, fields: Sequence[str], seconds: int) -> bool:
        """Give single hash fields a TTL where the server can (Redis 7.4+, Valkey 9+);
        ``False`` where it cannot, so the caller falls back to a key-level TTL."""
        if not self.features.hash_field_ttl or not fields:
            return False
        await self.client.execute_command("HEXPIRE", key, seconds, "FIELDS", len(fields), *fields)
        return True
