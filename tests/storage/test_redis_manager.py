"""The Redis layer against real redis-servers: pools, features, the schema check, ACL
users, TLS, the password kept out of every message, and the batch writes' TTL policy."""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from config.settings import Settings
from core.bars import Bar
from storage.keys import Keys
from storage.redis_client import async_redis, sync_redis
from storage.redis_manager import (
    ConnectionSpec,
    RedisConfigError,
    RedisFeatures,
    RedisManager,
    RedisVersionError,
    SchemaVersionError,
)
from tests.support.legacy_redis import Server, redis_process
from tests.support.services import redis74_binary

PASSWORD = "s3cret-Pa55word-never-logged"


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    with redis_process(tmp_path_factory.mktemp("redis")) as srv:
        yield srv


def settings_for(server: Server, db: int, **kw) -> Settings:
    return Settings(redis_url=server.url(db), **kw)


# --- features ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("info", "server_name", "version", "field_ttl"),
    [
        ({"redis_version": "7.0.15"}, "redis", (7, 0, 15), False),
        ({"redis_version": "7.4.0"}, "redis", (7, 4, 0), True),
        ({"redis_version": "8.2.1", "redis_mode": "standalone"}, "redis", (8, 2, 1), True),
        ({"redis_version": "7.2.4", "valkey_version": "8.1.1"}, "valkey", (8, 1, 1), False),
        ({"redis_version": "7.2.4", "server_name": "valkey", "valkey_version": "9.0.0"}, "valkey",
         (9, 0, 0), True),
    ],
)  # fmt: skip
def test_features_from_info(info, server_name, version, field_ttl):
    features = RedisFeatures.from_info(info)
    assert (features.server, features.version, features.hash_field_ttl) == (
        server_name, version, field_ttl,
    )  # fmt: skip
    features.check_baseline("here")


def test_servers_older_than_7_0_are_refused():
    with pytest.raises(RedisVersionError, match=r"needs Redis 7\.0\.0 or newer"):
        RedisFeatures.from_info({"redis_version": "6.2.14"}).check_baseline("redis://x:1/0")


async def test_start_detects_the_server_and_marks_an_empty_keyspace(server):
    manager = RedisManager(settings_for(server, 1))
    features = await manager.start()
    info = server.client().info("server")
    assert features.version_text == info["redis_version"]
    assert features.hash_field_ttl == (features.version >= (7, 4, 0))
    assert manager.features is features
    assert server.client(1).get("tickflow:schema") == b"1"
    assert "not started" not in repr(manager) and features.describe() in repr(manager)
    # the sync start-up of scripts sees the same and leaves the marker as it is
    assert manager.start_sync() == features
    assert await manager.expire_hash_fields("h", ["f"], 10) is features.hash_field_ttl


# --- the schema check ---------------------------------------------------------------------------


def test_another_schema_version_stops_start_up(server):
    server.client(2).set("tickflow:schema", "2")
    with pytest.raises(SchemaVersionError, match=r"schema version '2'.*reads and writes version 1"):
        RedisManager(settings_for(server, 2)).start_sync()


def test_a_legacy_keyspace_points_at_the_migration(server):
    server.client(3).hset("ticks:latest:NSERELIANCE", "last_price", "1")
    with pytest.raises(SchemaVersionError, match=r"legacy.*scripts\.migrate_redis"):
        RedisManager(settings_for(server, 3)).start_sync()
    assert not server.client(3).exists("tickflow:schema")


def test_unmarked_v1_keys_are_adopted_and_foreign_keys_refused(server):
    server.client(4).hset("tick:256265", "last_price", "1")
    RedisManager(settings_for(server, 4)).start_sync()
    assert server.client(4).get("tickflow:schema") == b"1"

    server.client(5).set("session:cache", "x")
    with pytest.raises(SchemaVersionError, match=r"not tickflow's.*TICKFLOW_REDIS_KEY_PREFIX"):
        RedisManager(settings_for(server, 5)).start_sync()
    # under a prefix the foreign key is outside tickflow's keyspace
    RedisManager(settings_for(server, 5, redis_key_prefix="tf:")).start_sync()
    assert server.client(5).get("tf:tickflow:schema") == b"1"


# --- pools --------------------------------------------------------------------------------------


async def test_one_pool_per_process_and_loop(server):
    settings = settings_for(server, 6, redis_pool_size=4)
    a, b = RedisManager(settings), RedisManager(settings)
    assert a.client.connection_pool is b.client.connection_pool
    legacy_style = async_redis(settings)
    assert legacy_style.connection_pool is a.client.connection_pool
    assert a.client.connection_pool.max_connections == 4
    await legacy_style.set("k", "v")
    await legacy_style.aclose()  # the topology closes its clients: the pool lives on
    assert await a.client.get("k") == b"v"
    assert sync_redis(settings).connection_pool is a.sync_client.connection_pool
    other_db = RedisManager(settings_for(server, 7))
    assert other_db.client.connection_pool is not a.client.connection_pool


# --- credentials and TLS ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def secured(tmp_path_factory) -> Iterator[Server]:
    with redis_process(tmp_path_factory.mktemp("auth"), args=["--requirepass", PASSWORD]) as srv:
        admin = redis.Redis(port=srv.port, password=PASSWORD)
        admin.acl_setuser("ingest", enabled=True, passwords=[f"+{PASSWORD}-ingest"],
                          keys=["*"], commands=["+@all"])  # fmt: skip
        yield srv


async def test_password_is_used_but_never_shown(secured, caplog):
    caplog.set_level(logging.DEBUG)
    settings = Settings(redis_url=f"redis://:{PASSWORD}@127.0.0.1:{secured.port}/0")
    assert PASSWORD not in settings.redis_url
    manager = RedisManager(settings)
    await manager.start()
    shown = [
        repr(manager), str(manager), repr(manager.spec), str(manager.spec), repr(manager.client),
        repr(manager.client.connection_pool), repr(manager.sync_client.connection_pool),
        caplog.text, str(settings.redacted()),
    ]  # fmt: skip
    for text in shown:
        assert PASSWORD not in text
    assert "127.0.0.1" in repr(manager)

    wrong = Settings(
        redis_url=f"redis://127.0.0.1:{secured.port}/0", redis_password="nope-" + PASSWORD
    )
    with pytest.raises(RedisConfigError) as refused:
        await RedisManager(wrong).start()
    assert "refused the credentials" in str(refused.value) and PASSWORD not in str(refused.value)


def test_acl_user_from_the_settings(secured):
    settings = Settings(
        redis_url=f"redis://127.0.0.1:{secured.port}/0",
        redis_username="ingest",
        redis_password=f"{PASSWORD}-ingest",
    )
    manager = RedisManager(settings)
    manager.start_sync()
    assert manager.sync_client.acl_whoami() == "ingest"
    assert "ingest@127.0.0.1" in manager.spec.url
    bad = Settings(redis_url=f"redis://nobody@127.0.0.1:{secured.port}/0", redis_password="x")
    with pytest.raises(RedisConfigError, match="user 'nobody'"):
        RedisManager(bad).start_sync()


@pytest.fixture(scope="module")
def certificates(tmp_path_factory) -> Path:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    d = tmp_path_factory.mktemp("tls")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
        "-keyout", "ca.key", "-out", "ca.crt")  # fmt: skip
    (d / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client"):
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
            "-keyout", f"{name}.key", "-out", f"{name}.csr")  # fmt: skip
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", "san.cnf",
            "-out", f"{name}.crt")  # fmt: skip
    return d


def test_tls_with_a_private_ca_and_client_certificate(tmp_path, certificates):
    d = certificates
    args = ["--tls-cert-file", str(d / "server.crt"), "--tls-key-file", str(d / "server.key"),
            "--tls-ca-cert-file", str(d / "ca.crt"), "--tls-auth-clients", "yes"]  # fmt: skip
    with redis_process(tmp_path / "tls", args=args, tls_port=True) as srv:
        settings = Settings(
            redis_url=f"rediss://127.0.0.1:{srv.port}/0",
            redis_tls_ca_file=d / "ca.crt",
            redis_tls_cert_file=d / "client.crt",
            redis_tls_key_file=d / "client.key",
        )
        manager = RedisManager(settings)
        assert manager.start_sync().version >= (7, 0, 0)
        assert manager.spec.url.startswith("rediss://")
        assert manager.sync_client.ping()
        # same server without trusting its CA: a clear configuration error
        untrusted = Settings(redis_url=f"redis://127.0.0.1:{srv.port}/0", redis_tls=True)
        with pytest.raises(RedisConfigError, match="TLS"):
            RedisManager(untrusted).start_sync()


# --- batch writes ---------------------------------------------------------------------------------


async def test_batch_writes_follow_the_ttl_and_stream_policy(server):
    settings = settings_for(server, 8, tick_ttl=600, analytics_ttl=0, bars_stream_maxlen=0)
    manager = RedisManager(settings)
    await manager.start()
    keys = Keys()
    await manager.write_ticks({256265: {"last_price": "26150.5"}, 738561: {"last_price": "1.0"}})
    await manager.write_analytics("ind", {256265: {"rsi_14": "55.0"}})
    written = await manager.write_bars([Bar(256265, 1_795_500_900, 1.0, 2.0, 0.5, 1.5, 10, 3)] * 2)
    await manager.set_regime(13.45, "LOW", "2026-11-20T15:29:59+05:30")
    c = server.client(8)
    assert c.hget(keys.tick(256265), "last_price") == b"26150.5"
    assert 590 <= c.ttl(keys.tick(738561)) <= 600
    assert c.ttl(keys.indicators(256265)) == -1  # analytics_ttl 0: no expiry
    assert written == 1 and c.xlen(keys.bars_1m(256265)) == 1
    assert c.hgetall(keys.regime)[b"regime"] == b"LOW"


def test_connection_spec_parses_urls():
    spec = ConnectionSpec.from_url("rediss://alice:pw@redis.example:6390/3")
    assert (spec.host, spec.port, spec.db, spec.username, spec.tls) == (
        "redis.example", 6390, 3, "alice", True,
    )  # fmt: skip
    assert spec.password is not None and spec.password.get_secret_value() == "pw"
    assert spec.url == "rediss://alice@redis.example:6390/3"
    assert "pw" not in repr(spec)
    unix = ConnectionSpec.from_url("unix:///run/redis.sock?db=2")
    assert unix.unix_path == "/run/redis.sock" and unix.db == 2
    with pytest.raises(RedisConfigError, match="scheme"):
        ConnectionSpec.from_url("http://x")


async def test_hash_field_ttl_where_the_server_has_it(tmp_path):
    binary = redis74_binary()
    with redis_process(tmp_path / "r74", binary=binary) as srv:
        manager = RedisManager(settings_for(srv, 0))
        assert (await manager.start()).hash_field_ttl
        await manager.client.hset("h", mapping={"a": "1", "b": "2"})
        assert await manager.expire_hash_fields("h", ["a"], 100)
        ttls = await manager.client.execute_command("HTTL", "h", "FIELDS", 2, "a", "b")
        assert 90 <= ttls[0] <= 100 and ttls[1] == -1
