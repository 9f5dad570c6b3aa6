"""``python -m scripts.backup_data`` against real redis-servers: the >= 100k-key legacy
dataset plus every Redis type, backed up and restored into an empty server exactly;
damaged files and keys in the way refused."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.legacy_redis import (
    Server,
    dataset_digest,
    expiries,
    legacy_snapshot,
    redis_process,
)

ROOT = Path(__file__).resolve().parents[2]
DBS = (0, 1, 2, 3, 4, 5)


def backup_cli(*args: str, url: str, prefix: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TICKFLOW_REDIS_URL": url, "TICKFLOW_REDIS_KEY_PREFIX": prefix}
    return subprocess.run(
        [sys.executable, "-m", "scripts.backup_data", *args, "--url", url]
        if args[0] != "verify" else [sys.executable, "-m", "scripts.backup_data", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def add_every_type(server: Server) -> None:
    """DB 4: the types and stream states the legacy dataset does not have."""
    c = server.client(4)
    c.rpush("list", "a", "b", "a", b"\xff\x00binary")
    c.sadd("set", "x", "y", "z")
    c.zadd("zset", {"low": -1.5, "high": float("inf"), "third": 1 / 3})
    c.set(b"key-\xfe\xff", b"\x00\x01\x02\xff", px=7_200_000)
    c.hset("hash", mapping={"f": "v", "g": "w"})
    c.pexpire("hash", 5_000_000)
    for n in range(10):
        c.xadd("stream", {"n": str(n), "dup": "x"}, id=f"1700000000000-{n}")
    c.xdel("stream", "1700000000000-9", "1700000000000-4")  # max deleted id, a gap
    c.xgroup_create("stream", "readers", id="0")
    c.xreadgroup("readers", "alice", {"stream": ">"}, count=3)  # 3 pending
    c.xgroup_create("stream", "caught-up", id="$")
    c.xgroup_create("empty", "waiting", id="$", mkstream=True)


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Iterator[Server]:
    rdb, _ = legacy_snapshot(tmp_path_factory)
    with redis_process(tmp_path_factory.mktemp("source"), rdb=rdb) as server:
        add_every_type(server)
        yield server


@pytest.fixture(scope="module")
def full_backup(tmp_path_factory, source) -> Path:
    out = tmp_path_factory.mktemp("backup") / "all.jsonl.gz"
    result = backup_cli("backup", "--out", str(out), "--dbs", "0,1,2,3,4,5", "--no-progress",
                        url=source.url())  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "sha256" in result.stdout
    return out


def stream_state(server: Server) -> dict[str, object]:
    c = server.client(4)
    info = c.xinfo_stream("stream")
    groups = {g["name"]: (g["last-delivered-id"], g["pending"]) for g in c.xinfo_groups("stream")}
    return {
        "ids": [i for i, _ in c.xrange("stream")],
        "last": info["last-generated-id"],
        "added": info["entries-added"],
        "max_deleted": info["max-deleted-entry-id"],
        "groups": groups,
        "empty": (c.xlen("empty"), [g["name"] for g in c.xinfo_groups("empty")]),
    }


def test_restore_into_an_empty_server_reproduces_the_keyspace(
    tmp_path, source, full_backup, tmp_path_factory
):
    _, dataset = legacy_snapshot(tmp_path_factory)
    with redis_process(tmp_path / "empty") as target:
        result = backup_cli("restore", "--in", str(full_backup), "--no-progress", url=target.url())
        assert result.returncode == 0, result.stderr
        assert f"restored {dataset.keys + 7} of {dataset.keys + 7} keys" in result.stdout
        # the server's own digest of every DB: names, types, values, stream entries
        assert dataset_digest(target) == dataset_digest(source)
        assert {db: target.client(db).dbsize() for db in DBS} == {
            db: source.client(db).dbsize() for db in DBS
        }
        # absolute expiry times survive (a restore is an RDB load, not a fresh TTL)
        before, after = expiries(source, DBS), expiries(target, DBS)
        assert before.keys() == after.keys()
        assert sum(1 for v in before.values() if v > 0) > 90_000
        assert all(abs(after[k] - v) <= 1 for k, v in before.items())
        # stream ids, counters and groups; pending entries are delivered again
        expected = stream_state(source)
        restored = stream_state(target)
        assert restored["ids"] == expected["ids"] and restored["last"] == expected["last"]
        assert restored["added"] == expected["added"]
        assert restored["max_deleted"] == expected["max_deleted"]
        assert restored["empty"] == expected["empty"]
        assert restored["groups"][b"caught-up"] == expected["groups"][b"caught-up"]
        # 3 entries were pending: the group restarts just before the oldest, to redeliver
        assert restored["groups"][b"readers"] == (b"1699999999999-18446744073709551615", 0)
        again = target.client(4).xreadgroup("readers", "bob", {"stream": ">"}, count=3)
        assert [i for i, _ in again[0][1]] == expected["ids"][:3]
        assert target.client(4).get(b"key-\xfe\xff") == b"\x00\x01\x02\xff"
        assert target.client(4).zscore("zset", "high") == float("inf")


def test_verify_reports_an_intact_backup(full_backup):
    result = backup_cli("verify", "--in", str(full_backup), url="")
    assert result.returncode == 0, result.stderr
    assert "intact" in result.stdout


def test_a_damaged_backup_is_refused_before_anything_is_written(tmp_path, source):
    small = tmp_path / "db4.jsonl"
    made = backup_cli(
        "backup", "--out", str(small), "--dbs", "4", "--no-progress", url=source.url()
    )
    assert made.returncode == 0, made.stderr
    lines = small.read_bytes().splitlines(keepends=True)
    altered = tmp_path / "altered.jsonl"
    altered.write_bytes(b"".join(lines).replace(b'"v"', b'"w"', 1))
    truncated = tmp_path / "truncated.jsonl"
    truncated.write_bytes(b"".join(lines[:-1]))
    broken_gzip = tmp_path / "broken.jsonl.gz"
    data = bytearray(gzip.compress(b"".join(lines)))
    data[len(data) // 2] ^= 0xFF
    broken_gzip.write_bytes(bytes(data))
    with redis_process(tmp_path / "target") as target:
        for path, message in (
            (altered, "fails its checksum"),
            (truncated, "truncated"),
            (broken_gzip, "refusing"),
        ):
            result = backup_cli("restore", "--in", str(path), "--no-progress", url=target.url(4))
            assert result.returncode == 1, (path, result.stdout)
            assert message in result.stderr, result.stderr
            assert sum(target.client(db).dbsize() for db in DBS) == 0
        # the untouched file restores, and the same restore again is refused...
        for _ in range(2):
            result = backup_cli("restore", "--in", str(small), "--no-progress", url=target.url(4))
        assert result.returncode == 1 and "already holds 7 of the backup's keys" in result.stderr
        # ...unless --flush replaces the keyspace
        target.client(4).set("stray", "1")
        result = backup_cli("restore", "--in", str(small), "--flush", "--no-progress",
                            url=target.url(4))  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert not target.client(4).exists("stray")
        assert stream_state(target) == {
            **stream_state(source),
            "groups": stream_state(target)["groups"],
        }


def test_the_v1_keyspace_is_the_prefix_in_the_settings_database(tmp_path, source):
    c = source.client(6)
    c.set("tf:tickflow:schema", "1")
    c.hset("tf:tick:1", mapping={"last_price": "1.5"})
    c.set("other:app", "not ours")
    out = tmp_path / "v1.jsonl"
    made = backup_cli("backup", "--out", str(out), "--no-progress", url=source.url(6), prefix="tf:")
    assert made.returncode == 0, made.stderr
    assert "backed up 2 keys" in made.stdout
    with redis_process(tmp_path / "target") as target:
        result = backup_cli(
            "restore", "--in", str(out), "--no-progress", url=target.url(9), prefix="tf:"
        )
        assert result.returncode == 0, result.stderr
        assert sorted(target.client(9).keys()) == [b"tf:tick:1", b"tf:tickflow:schema"]
        assert target.client(9).hget("tf:tick:1", "last_price") == b"1.5"
