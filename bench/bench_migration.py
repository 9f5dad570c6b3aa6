"""Migration and backup throughput against a plain pipelined DUMP/RESTORE copy.

Run ``python -m bench.bench_migration`` (needs ``redis-server`` on PATH). It starts three
throwaway redis-servers on free loopback ports, generates the legacy dataset
(``scripts/generate_legacy_redis.py``, ~105k keys at scale 1), then times, in the same
process and on the same data:

* the migration (``storage.data_migrator``): its migrate pass, its verification pass and
  the whole run, in legacy keys per second (every key is scanned and classified; ~30% are
  read, converted, compared and written);
* the backup (``storage.backup``): typed JSON lines, plain and gzip, in MB of records per
  second, and the restore of the plain file into an empty server;
* the baseline meant as the ceiling: every key copied with pipelined ``DUMP`` + ``PTTL``
  then ``RESTORE``, 1000 keys per round trip, a copy that parses, converts, verifies and
  ports nothing. From Python it is bounded by redis-py's cost per pipelined command
  (~15 us to pack and parse), three per key; the backup and the migration read with one
  Lua call per batch (``storage.backup.BulkReader``), which keeps them near it although
  they parse, convert, compare and checksum everything they move.

Before printing, the restored server's dataset digest is checked against the source's
(``DEBUG DIGEST``), and the migration's verification must have passed: a fast copy that is
wrong is worthless, so the command exits 1 otherwise.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

import redis

from config.instruments import InstrumentMaster
from config.settings import Settings
from scripts.generate_legacy_redis import generate
from scripts.services import free_port, stop_process, wait_for_port
from storage import backup as backups
from storage.data_migrator import Migrator
from storage.legacy_layout import LEGACY_DBS
from storage.redis_manager import ConnectionSpec


@contextmanager
def _server(workdir: Path) -> Iterator[int]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not on PATH")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir), "--enable-debug-command", "yes"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        wait_for_port("127.0.0.1", port, 10, proc)
        yield port
    finally:
        stop_process(proc)


def dump_restore_copy(source: int, target: int, dbs: Sequence[int], batch: int) -> tuple[int, int]:
    """Copy every key with pipelined DUMP/PTTL then RESTORE; (keys, payload bytes)."""
    keys_copied = payload = 0
    for db in dbs:
        src, dst = redis.Redis(port=source, db=db), redis.Redis(port=target, db=db)
        cursor = 0
        while True:
            cursor, keys = src.scan(cursor, count=batch)
            if keys:
                pipe = src.pipeline(transaction=False)
                for key in keys:
                    pipe.dump(key)
                    pipe.pttl(key)
                replies = pipe.execute()
                out = dst.pipeline(transaction=False)
                for n, key in enumerate(keys):
                    dumped, ttl = replies[2 * n], replies[2 * n + 1]
                    if dumped is None:
                        continue
                    out.restore(key, max(int(ttl), 0), dumped, replace=True)
                    payload += len(dumped)
                    keys_copied += 1
                out.execute()
            if cursor == 0:
                break
    return keys_copied, payload


def _digest(port: int) -> bytes:
    return bytes(redis.Redis(port=port).execute_command("DEBUG", "DIGEST"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="dataset size (1 = ~105k keys)")
    parser.add_argument("--batch", type=int, default=1000, help="keys per SCAN batch (1000)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)

    started = time.perf_counter()
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-migration-")))
        for name in ("src", "dst", "copy"):
            (tmp / name).mkdir()
        ports = [stack.enter_context(_server(tmp / name)) for name in ("src", "dst", "copy")]
        source, target, copy = ports
        master = InstrumentMaster.load()
        clients = {db: redis.Redis(port=source, db=db) for db in LEGACY_DBS}
        t0 = time.perf_counter()
        data = generate(clients, master, seed=args.seed, scale=args.scale, min_ttl=3600)
        generated_s = time.perf_counter() - t0
        keys = data.keys

        t0 = time.perf_counter()
        copied, payload = dump_restore_copy(source, copy, LEGACY_DBS, args.batch)
        copy_s = time.perf_counter() - t0
        if copied != keys or _digest(copy) != _digest(source):
            print("DUMP/RESTORE copy differs from the source", file=sys.stderr)
            return 1

        target_spec = ConnectionSpec.from_url(f"redis://127.0.0.1:{target}/0")
        migrator = Migrator(
            ConnectionSpec.from_url(f"redis://127.0.0.1:{source}/0"), LEGACY_DBS, target_spec,
            Settings(redis_url=target_spec.url), master=master, batch=args.batch,
            show_progress=False,
        )  # fmt: skip
        t0 = time.perf_counter()
        report = migrator.run(backup_path=None)
        run_s = time.perf_counter() - t0
        if not report.verified:
            print("the migration did not verify", file=sys.stderr)
            return 1
        migrate, verify = report.passes

        results = {}
        for suffix in (".jsonl", ".jsonl.gz"):
            summary = backups.backup(clients, tmp / f"legacy{suffix}", batch=args.batch)
            results[suffix] = summary
        redis.Redis(port=copy).flushall()
        restored = backups.restore(
            lambda db: redis.Redis(port=copy, db=db), tmp / "legacy.jsonl", flush=False
        )
        if _digest(copy) != _digest(source):
            print("the restored keyspace differs from the source", file=sys.stderr)
            return 1

    plain, packed = results[".jsonl"], results[".jsonl.gz"]
    mb = plain.content_bytes / 1e6
    rows = [
        ("DUMP/RESTORE pipelined copy (baseline)", keys / copy_s, payload / 1e6 / copy_s, copy_s),
        ("migration: migrate pass", keys / migrate.seconds, None, migrate.seconds),
        ("migration: verify pass", keys / verify.seconds, None, verify.seconds),
        ("migration: whole run (no backup)", keys / run_s, None, run_s),
        ("backup, JSON lines", keys / plain.seconds, mb / plain.seconds, plain.seconds),
        ("backup, JSON lines gzip", keys / packed.seconds, mb / packed.seconds, packed.seconds),
        ("restore, JSON lines", keys / restored.seconds, mb / restored.seconds, restored.seconds),
    ]
    print(f"dataset: {keys:,} legacy keys in DBs {list(LEGACY_DBS)}, generated in "
          f"{generated_s:.1f} s ({keys / generated_s:,.0f} keys/s); DUMP payload "
          f"{payload / 1e6:.1f} MB, JSON lines {mb:.1f} MB ({packed.file_bytes / 1e6:.1f} MB "
          f"gzip); migration wrote {migrate.target.fields_written:,} fields into "
          f"{migrate.target.keys_written:,} v1 keys")  # fmt: skip
    print()
    print("| operation | keys/s | MB/s | seconds | vs DUMP/RESTORE |")
    print("|---|---:|---:|---:|---:|")
    ceiling = keys / copy_s
    for name, rate, mbps, seconds in rows:
        shown = "-" if mbps is None else f"{mbps:.1f}"
        print(f"| {name} | {rate:,.0f} | {shown} | {seconds:.2f} | {rate / ceiling:.2f}x |")
    print()
    print(f"python {sys.version.split()[0]}, redis-py {redis.__version__}, "
          f"{time.perf_counter() - started:.1f} s total")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
