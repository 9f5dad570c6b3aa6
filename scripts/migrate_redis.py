"""Migrate the legacy scanner's Redis keyspace into schema v1.

    python -m scripts.migrate_redis --source-url redis://legacy-host:6379 \\
        [--source-dbs 0,1,2,3,5] [--target-url redis://127.0.0.1:26379/0] \\
        [--dry-run] [--delete-sources [--delete-skipped]] [--batch 1000] \\
        [--backup FILE | --no-backup] [--report FILE] [--no-progress]

``--dry-run`` reads both sides and prints what would move, what is skipped (and why) and
what is malformed, writing nothing anywhere. A real run backs up the source DBs first,
migrates in SCAN batches (resumable: run the same command again after an interruption),
verifies every value, and deletes source keys only with ``--delete-sources`` after a
successful verification. See docs/migration.md for the mapping and the guarantees.

Exit status: 0 migrated and verified (or dry run done), 1 verification failed,
2 configuration error (unreachable Redis, credentials, schema, arguments).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

from config.settings import get_settings
from storage.data_migrator import MigrationError, Migrator
from storage.legacy_layout import LEGACY_DBS
from storage.redis_manager import ConnectionSpec, RedisConfigError


def _dbs(text: str) -> tuple[int, ...]:
    try:
        dbs = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--source-dbs wants numbers like 0,1,2: {text!r}"
        ) from None
    if not dbs or any(db < 0 for db in dbs):
        raise argparse.ArgumentTypeError(f"--source-dbs wants numbers like 0,1,2: {text!r}")
    return dbs


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.migrate_redis",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--source-url", required=True, help="legacy Redis (credentials in it)")
    parser.add_argument(
        "--source-dbs", type=_dbs, default=LEGACY_DBS, help="legacy DB numbers (0,1,2,3,5)"
    )
    parser.add_argument(
        "--target-url",
        help="v1 Redis database (default TICKFLOW_REDIS_URL; user, password "
        "and TLS from the settings)",
    )
    parser.add_argument("--dry-run", action="store_true", help="report only, write nothing")
    parser.add_argument(
        "--delete-sources",
        action="store_true",
        help="after a verified migration, delete the source keys that were migrated",
    )
    parser.add_argument(
        "--delete-skipped",
        action="store_true",
        help="with --delete-sources: also delete legacy keys that have no v1 home",
    )
    parser.add_argument("--batch", type=int, default=1000, help="keys per SCAN batch (1000)")
    parser.add_argument("--backup", type=Path, help="source backup file (default: state dir)")
    parser.add_argument("--no-backup", action="store_true", help="skip the source backup")
    parser.add_argument("--report", type=Path, help="also write the report as JSON here")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = get_settings()
    # a report piped to a file or a log is read later, in full: no 80-column squeeze
    out = Console() if sys.stdout.isatty() else Console(width=180)
    err = Console(stderr=True)
    if args.batch < 1:
        err.print("--batch must be at least 1")
        return 2
    if args.delete_skipped and not args.delete_sources:
        err.print("--delete-skipped needs --delete-sources")
        return 2
    if args.delete_sources and (args.no_backup or args.dry_run):
        err.print("--delete-sources needs a backup and a real run (no --no-backup, --dry-run)")
        return 2
    backup: Path | None = None
    if not args.dry_run and not args.no_backup:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        backup = args.backup or settings.state_dir / "backups" / f"legacy-{stamp}.jsonl.gz"
    try:
        migrator = Migrator(
            ConnectionSpec.from_url(args.source_url),
            args.source_dbs,
            ConnectionSpec.from_settings(settings, args.target_url),
            settings,
            batch=args.batch,
            console=err,
            show_progress=not args.no_progress,
        )
        if args.dry_run:
            report = migrator.dry_run()
        else:
            report = migrator.run(
                backup_path=backup,
                delete_sources=args.delete_sources,
                delete_skipped=args.delete_skipped,
            )
    except (RedisConfigError, MigrationError) as exc:
        err.print(f"[red]migrate_redis:[/] {exc}")
        return 2
    report.render(out)
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(report.to_json(), indent=2))
    if report.verified is False:
        err.print("[red]verification failed:[/] nothing was deleted; rerun to complete it")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
