"""Real redis-server processes for the Redis-layer tests, and the legacy dataset.

The migration and backup tests need several servers at once (a legacy source, targets,
an empty server to restore into), some with options the shared ``redis_endpoint``
fixture does not take (an RDB to load, TLS, the DEBUG command for dataset digests). The
>= 100,000-key legacy dataset is generated once per test session (with pipelines, a few
seconds), saved as an RDB file, and every server that needs it loads a copy at start-up,
which takes a fraction of a second: each test gets a pristine legacy keyspace.
"""

from __future__ import annotations

import atexit
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from config.instruments import InstrumentMaster
from config.settings import Settings
from scripts.generate_legacy_redis import LegacyDataset, generate
from scripts.services import ServiceError, free_port, stop_process, wait_for_port
from storage.data_migrator import MigrationReport, Migrator
from storage.legacy_layout import LEGACY_DBS
from storage.redis_manager import ConnectionSpec

#: Every legacy TTL is raised to this in the test dataset, so that the legacy 60 s and
#: 90 s keys cannot expire while a module runs.
TEST_MIN_TTL = 3 * 3600


@dataclass
class Server:
    port: int
    process: subprocess.Popen[bytes]
    workdir: Path

    def url(self, db: int = 0, scheme: str = "redis") -> str:
        return f"{scheme}://127.0.0.1:{self.port}/{db}"

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis(port=self.port, db=db)


@contextmanager
def redis_process(
    workdir: Path,
    *,
    rdb: Path | None = None,
    args: Sequence[str] = (),
    binary: str | None = None,
    tls_port: bool = False,
) -> Iterator[Server]:
    """A redis-server on a free loopback port (``rdb`` loaded at start); ``tls_port``: the
    port is the TLS port and plain TCP is off (pass the tls-* options in ``args``)."""
    exe = binary or shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not installed")
    workdir.mkdir(parents=True, exist_ok=True)
    if rdb is not None:
        shutil.copyfile(rdb, workdir / "dump.rdb")
    port = free_port()
    ports = ["--port", "0", "--tls-port", str(port)] if tls_port else ["--port", str(port)]
    command = [
        exe, *ports, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
        "--dir", str(workdir), "--dbfilename", "dump.rdb", "--enable-debug-command", "yes",
        "--logfile", str(workdir / "redis.log"), *args,
    ]  # fmt: skip
    proc = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        wait_for_port("127.0.0.1", port, 20, proc)
        if rdb is not None:
            _wait_loaded(port)
        yield Server(port, proc, workdir)
    except ServiceError as exc:
        log = (workdir / "redis.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"redis-server did not start: {exc}\n{log}") from exc
    finally:
        stop_process(proc)


def _wait_loaded(port: int) -> None:
    client = redis.Redis(port=port)
    for _ in range(400):
        try:
            if client.info("persistence").get("loading") == 0:
                return
        except redis.BusyLoadingError:
            pass
        time.sleep(0.025)


_CACHE: dict[Path, tuple[Path, LegacyDataset]] = {}


def legacy_snapshot(factory: pytest.TempPathFactory) -> tuple[Path, LegacyDataset]:
    """The legacy dataset as an RDB file (generated once per session) and its manifest."""
    base = factory.getbasetemp()
    cached = _CACHE.get(base)
    if cached is not None:
        return cached
    workdir = factory.mktemp("legacy-gen")
    with redis_process(workdir) as server:
        clients = {db: server.client(db) for db in LEGACY_DBS}
        dataset = generate(clients, InstrumentMaster.load(), min_ttl=TEST_MIN_TTL)
        server.client().save()
    rdb = workdir / "legacy.rdb"
    (workdir / "dump.rdb").replace(rdb)
    _CACHE[base] = (rdb, dataset)
    return rdb, dataset


Snapshot = dict[tuple[int, bytes], tuple[bytes, bytes, int]]


def digests(server: Server, dbs: Sequence[int], *, skip: Sequence[bytes] = ()) -> Snapshot:
    """Every key of ``dbs`` -> (type, DEBUG DIGEST-VALUE, PEXPIRETIME): the server's own
    digest of each value (order-independent for hashes and sets), so two keyspaces can be
    compared exactly without this code reading values the way the code under test does."""
    out: Snapshot = {}
    for db in dbs:
        client = server.client(db)
        keys = [k for k in client.scan_iter(count=1000) if k not in skip]
        for start in range(0, len(keys), 1000):
            chunk = keys[start : start + 1000]
            pipe = client.pipeline(transaction=False)
            for key in chunk:
                pipe.type(key)
                pipe.execute_command("DEBUG", "DIGEST-VALUE", key)
                pipe.execute_command("PEXPIRETIME", key)
            replies = pipe.execute()
            for n, key in enumerate(chunk):
                kind, digest, expire = replies[3 * n : 3 * n + 3]
                out[(db, key)] = (kind, digest[0], int(expire))
    return out


def dataset_digest(server: Server) -> bytes:
    """DEBUG DIGEST of the whole server (every DB): changes with any write."""
    return bytes(server.client().execute_command("DEBUG", "DIGEST"))


_EXPIRIES = (
    "local o = {} for i, k in ipairs(KEYS) do o[i] = redis.call('PEXPIRETIME', k) end return o"
)


def expiries(server: Server, dbs: Sequence[int]) -> dict[tuple[int, bytes], int]:
    """Every key's absolute expiry (PEXPIRETIME), one script call per 1000 keys."""
    out: dict[tuple[int, bytes], int] = {}
    for db in dbs:
        client = server.client(db)
        keys = list(client.scan_iter(count=1000))
        for start in range(0, len(keys), 1000):
            chunk = keys[start : start + 1000]
            values = client.eval(_EXPIRIES, len(chunk), *chunk)
            out.update(((db, k), int(v)) for k, v in zip(chunk, values, strict=True))
    return out


STATE_KEY = b"tickflow:migration:state"


@dataclass
class Reference:
    """One uninterrupted migration of the legacy dataset (with its source backup), shared
    by the test modules of a session; its servers stay up until the session ends. Tests
    may rerun migrations against it, which must change nothing, and never write to it."""

    source: Server
    target: Server
    report: MigrationReport
    digests: Snapshot
    backup: Path
    source_digest: bytes


_REFERENCE: dict[Path, Reference] = {}
_SERVERS = ExitStack()
atexit.register(_SERVERS.close)


def reference_migration(factory: pytest.TempPathFactory) -> Reference:
    base = factory.getbasetemp()
    if base not in _REFERENCE:
        rdb, _ = legacy_snapshot(factory)
        source = _SERVERS.enter_context(redis_process(factory.mktemp("ref-source"), rdb=rdb))
        target = _SERVERS.enter_context(redis_process(factory.mktemp("ref-target")))
        before = dataset_digest(source)
        backup = factory.mktemp("ref-backup") / "legacy.jsonl"
        report = Migrator(
            ConnectionSpec.from_url(source.url()),
            LEGACY_DBS,
            ConnectionSpec.from_url(target.url()),
            Settings(redis_url=target.url()),
            show_progress=False,
        ).run(backup_path=backup)
        snapshot = digests(target, [0], skip=[STATE_KEY])
        _REFERENCE[base] = Reference(source, target, report, snapshot, backup, before)
    return _REFERENCE[base]
