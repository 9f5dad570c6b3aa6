"""Back up and restore the schema-v1 keyspace (every type, TTLs, stream ids), checksummed.

    python -m scripts.backup_data backup --out FILE[.gz] [--url URL] [--dbs 0,1]
    python -m scripts.backup_data restore --in FILE [--url URL] [--flush]
    python -m scripts.backup_data verify --in FILE

The keyspace is every key under ``TICKFLOW_REDIS_KEY_PREFIX`` in the database of
``TICKFLOW_REDIS_URL`` (``--url`` to name another; ``--dbs`` to back up several databases
of that server, e.g. a legacy keyspace). The file format is described in
:mod:`storage.backup`. ``restore`` checks the whole file's SHA-256 first and refuses a
damaged one (exit 1) before writing anything; it also refuses to overwrite existing keys
unless ``--flush`` (which first deletes the keyspace in the target database).

Exit status: 0 done, 1 refused (bad checksum, truncated file, keys in the way),
2 configuration error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import redis
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from config.settings import get_settings
from storage import backup as backups
from storage.keys import Keys
from storage.redis_manager import ConnectionSpec, RedisConfigError, RedisFeatures, sync_client


def _dbs(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--dbs wants numbers like 0,1: {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.backup_data",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("backup", help="write a backup file")
    make.add_argument("--out", type=Path, required=True, help="file (.gz: compressed)")
    make.add_argument("--url", help="Redis to back up (default TICKFLOW_REDIS_URL)")
    make.add_argument("--dbs", type=_dbs, help="several databases (default: the URL's)")
    make.add_argument("--no-progress", action="store_true")
    back = sub.add_parser("restore", help="restore a backup file")
    back.add_argument("--in", dest="infile", type=Path, required=True)
    back.add_argument("--url", help="Redis to restore into (default TICKFLOW_REDIS_URL)")
    back.add_argument("--flush", action="store_true", help="delete the keyspace first")
    back.add_argument("--no-progress", action="store_true")
    check = sub.add_parser("verify", help="check a backup file's checksum")
    check.add_argument("--in", dest="infile", type=Path, required=True)
    return parser


def _progress(console: Console, disable: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=disable,
    )


def _features(client: redis.Redis, where: str) -> RedisFeatures:
    try:
        features = RedisFeatures.from_info(client.info("server"))
    except (redis.RedisError, OSError) as exc:
        raise RedisConfigError(f"cannot use Redis at {where}: {exc}") from exc
    features.check_baseline(where)
    return features


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = get_settings()
    keys = Keys(settings.redis_key_prefix)
    out, err = Console(), Console(stderr=True)
    try:
        if args.command == "verify":
            header = backups.verify_backup(args.infile)
            out.print(
                f"{args.infile}: intact, {header['records']} records of dbs {header['dbs']} "
                f"from {header.get('source') or '?'} at {header.get('created_at')}, "
                f"sha256 {header['sha256']}"
            )
            return 0
        spec = ConnectionSpec.from_settings(settings, args.url)
        if args.command == "backup":
            dbs = args.dbs or (spec.db,)
            clients = {db: sync_client(spec.with_db(db)) for db in dbs}
            features = _features(clients[dbs[0]], spec.url)
            total = sum(int(c.dbsize()) for c in clients.values())
            with _progress(err, args.no_progress) as progress:
                task = progress.add_task("backup", total=total)
                summary = backups.backup(
                    clients,
                    args.out,
                    match=keys.keyspace_pattern,
                    source=spec.with_db(dbs[0]).url,
                    field_ttl=features.hash_field_ttl,
                    progress=lambda n: progress.advance(task, n),
                )
            kinds = ", ".join(f"{n} {t}" for t, n in sorted(summary.by_type.items()))
            out.print(
                f"backed up {summary.records} keys ({kinds}) of {spec.with_db(dbs[0]).url} "
                f"dbs {list(dbs)} to {summary.path}: {summary.file_bytes:,} bytes "
                f"({summary.content_bytes / 1e6:.1f} MB of records, "
                f"{summary.content_bytes / 1e6 / max(summary.seconds, 1e-9):.1f} MB/s), "
                f"sha256 {summary.sha256}"
            )
            return 0
        header = backups.verify_backup(args.infile)
        single = len(header.get("dbs") or [0]) == 1
        target = sync_client(spec)
        features = _features(target, spec.url)

        def client_for(db: int) -> redis.Redis:
            return target if single else sync_client(spec.with_db(db))

        with _progress(err, args.no_progress) as progress:
            task = progress.add_task("restore", total=None)
            restored = backups.restore(
                client_for,
                args.infile,
                flush=args.flush,
                match=keys.keyspace_pattern,
                field_ttl=features.hash_field_ttl,
                progress=lambda n: progress.advance(task, n),
            )
        extra = ""
        if restored.expired:
            extra += f", {restored.expired} already expired (not restored)"
        if restored.field_ttls_dropped:
            extra += (
                f", {restored.field_ttls_dropped} hash-field TTLs dropped ({spec.url} has no "
                "per-field TTL)"
            )
        if restored.flushed:
            extra += f", {restored.flushed} keys deleted first (--flush)"
        out.print(
            f"restored {restored.restored} of {restored.records} keys into {spec.url} in "
            f"{restored.seconds:.1f} s{extra}"
        )
        return 0
    except backups.BackupError as exc:
        err.print(f"[red]backup_data:[/] {exc}")
        return 1
    except (RedisConfigError, redis.RedisError, OSError) as exc:
        err.print(f"[red]backup_data:[/] {exc}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
