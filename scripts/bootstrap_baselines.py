"""Bootstrap the time-aware volume baselines from historical 1-minute candles.

``python -m scripts.bootstrap_baselines [PATH ...] [--token-from-filename | --token N]
[--out FILE] [--window N] [--until DATE] [--instruments CSV]``

Each PATH is a Kite historical-API JSON file or a CSV of candles, or a directory searched
recursively for ``*.json`` and ``*.csv`` (default: ``<state_dir>/history``, where
``scripts.generate_history`` writes). The token of a file comes from its name (the
default, ``--token-from-filename``):

* ``738561.json``, or ``738561_2024-01.csv`` / ``738561-part2.json`` for chunks (Kite
  serves at most 60 days of minute candles per request, so long histories come in
  pieces: every file of a token is merged, a minute present twice is reported);
* ``NSE:RELIANCE.json``: an ``EXCHANGE:TRADINGSYMBOL`` resolved through the instrument
  master;

or from ``--token N``, which applies to every PATH given (chunks of one token).

Per token the latest ``--window`` (20) sessions become a
:class:`~core.baselines.TokenBaseline`, and all of them are written as JSON lines
(``{"token": ..., "baseline": {...}}``, see :func:`core.history.write_baselines`) to
``--out`` (default ``<state_dir>/baselines.jsonl``), which the worker loads into its
table with :func:`load_baselines`. Bad rows and unusable files are skipped and reported,
never fatal. The report says how many tokens were loaded, sessions per token
(min/median/max), rows skipped by reason (with examples) and files skipped and why.

Exit status: 0 when at least one token's baseline was written, 2 when nothing could be.
A session fetched while still trading (today's, mid-day) would count its untraded rest
as zero volume: leave it out with ``--until`` (the last session to use).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from config.instruments import InstrumentMaster, InstrumentMasterError
from config.settings import get_settings
from core.bars import Bar
from core.baselines import DEFAULT_POLICY, BaselinePolicy, TokenBaseline, source
from core.history import (
    baseline_from_bars,
    load_baselines,
    load_history_file,
    write_baselines,
)
from core.indicators import backfill
from core.tick_envelope import token_key
from core.timeutil import IST
from topology.topics import ensure_topics, pipeline_topics

__all__ = [
    "BootstrapReport",
    "bootstrap",
    "load_baselines",
    "main",
    "token_from_filename",
    "write_baselines",
]

#: Examples kept per skip reason in the report.
EXAMPLES_PER_REASON = 3
_SUFFIXES = (".json", ".csv")
_TOKEN_STEM = re.compile(r"^(\d+)(?:[_\-.].*)?$")
_SYMBOL_STEM = re.compile(r"^([A-Za-z]+):(.+)$")

MasterLoader = Callable[[], InstrumentMaster]


@dataclass(slots=True)
class BootstrapReport:
    """What a bootstrap loaded and skipped; :func:`render_report` prints it."""

    baselines: dict[int, TokenBaseline] = field(default_factory=dict)
    #: Indicator state warmed on the token's history (``core.indicators.backfill``), so
    #: its indicators are exact from the first live bar.
    indicators: dict[int, dict[str, Any]] = field(default_factory=dict)
    files_read: int = 0
    files_skipped: list[tuple[Path, str]] = field(default_factory=list)
    rows_loaded: int = 0
    rows_skipped: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    rows_after_until: int = 0
    #: Tokens whose files held no usable candle.
    empty_tokens: list[int] = field(default_factory=list)
    #: Sessions found per token before the window was applied.
    sessions_found: dict[int, int] = field(default_factory=dict)

    def skip_row(self, where: str, reason: str) -> None:
        kind = reason.split(":", 1)[0]
        self.rows_skipped[kind] += 1
        examples = self.examples.setdefault(kind, [])
        if len(examples) < EXAMPLES_PER_REASON:
            examples.append(f"{where}: {reason}")


def token_from_filename(path: Path, master: MasterLoader) -> int:
    """The token a history file is for, from its name; ``ValueError`` says why not."""
    stem = path.stem
    match = _TOKEN_STEM.match(stem)
    if match:
        token = int(match.group(1))
        if not 0 < token < 2**32:
            raise ValueError(f"token {token} out of range")
        return token
    match = _SYMBOL_STEM.match(stem)
    if match:
        exchange, symbol = match.group(1).upper(), match.group(2)
        try:
            inst = master().by_symbol(exchange, symbol)
        except (InstrumentMasterError, OSError) as exc:
            raise ValueError(f"instrument master unavailable: {exc}") from exc
        if inst is None:
            raise ValueError(f"{exchange}:{symbol} is not in the instrument master")
        return inst.instrument_token
    raise ValueError("cannot tell the token from the file name (<token> or <EXCHANGE>:<SYMBOL>)")


def collect_files(paths: Iterable[Path], report: BootstrapReport) -> list[Path]:
    """History files under ``paths`` (directories searched recursively), in a stable
    order; missing paths and unsupported files given by name are reported."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.is_file() and p.suffix.lower() in _SUFFIXES and not p.name.startswith(".")
            )
            if not found:
                report.files_skipped.append((path, "directory without .json or .csv files"))
            files.extend(found)
        elif path.is_file():
            if path.suffix.lower() in _SUFFIXES:
                files.append(path)
            else:
                report.files_skipped.append((path, f"unsupported file type {path.suffix!r}"))
        else:
            report.files_skipped.append((path, "no such file or directory"))
    return list(dict.fromkeys(files))


def _lazy_master(path: Path | None) -> MasterLoader:
    cache: list[InstrumentMaster] = []

    def load() -> InstrumentMaster:
        if not cache:
            cache.append(InstrumentMaster.load(path))
        return cache[0]

    return load


def bootstrap(
    paths: Sequence[Path],
    *,
    token: int | None = None,
    master: MasterLoader | None = None,
    policy: BaselinePolicy = DEFAULT_POLICY,
    until: date | None = None,
    progress: Progress | None = None,
) -> BootstrapReport:
    """Load every history file under ``paths`` and build each token's baseline.

    ``token`` forces one token for every file (else it comes from the file names, with
    ``master`` resolving ``EXCHANGE:SYMBOL`` names). Files are merged per token in path
    order; a minute already loaded from another file is a skipped ``duplicate minute``.
    Sessions after ``until`` are left out.
    """
    report = BootstrapReport()
    files = collect_files(paths, report)
    resolve = master or _lazy_master(None)
    # Files grouped by token first, so that only one token's bars are ever in memory
    # (a 9000-token universe x 20 sessions is ~70M candles).
    files_of: dict[int, list[Path]] = {}
    for path in files:
        try:
            tok = token if token is not None else token_from_filename(path, resolve)
        except ValueError as exc:
            report.files_skipped.append((path, str(exc)))
            continue
        files_of.setdefault(tok, []).append(path)
    task = None
    if progress is not None:
        task = progress.add_task("history files", total=sum(map(len, files_of.values())))
    for tok in sorted(files_of):
        merged: dict[int, Bar] = {}
        read_any = False
        for path in files_of[tok]:
            try:
                bars, skipped = load_history_file(path, tok)
            except (ValueError, OSError) as exc:  # HistoryFileError is a ValueError
                report.files_skipped.append((path, str(exc) or repr(exc)))
            else:
                read_any = True
                report.files_read += 1
                for candle in skipped:
                    report.skip_row(f"{path.name} row {candle.row}", candle.reason)
                _merge(report, path, bars, merged, until)
            if progress is not None and task is not None:
                progress.advance(task)
        if not merged:
            if read_any:
                report.empty_tokens.append(tok)
            continue
        bars_of = [merged[start] for start in sorted(merged)]
        report.sessions_found[tok] = len({b.session for b in bars_of})
        report.baselines[tok] = baseline_from_bars(tok, bars_of, policy=policy)
        report.indicators[tok] = backfill(bars_of).to_dict()
    return report


def _merge(
    report: BootstrapReport,
    path: Path,
    bars: Iterable[Bar],
    merged: dict[int, Bar],
    until: date | None,
) -> None:
    """Add one file's bars to its token's; a minute another file had is a duplicate."""
    for bar in bars:
        if until is not None and bar.session > until:
            report.rows_after_until += 1
        elif bar.start in merged:
            when = datetime.fromtimestamp(bar.start, IST).strftime("%Y-%m-%d %H:%M")
            report.skip_row(path.name, f"duplicate minute: {when} IST, also in another file")
        else:
            merged[bar.start] = bar
            report.rows_loaded += 1


def render_report(
    report: BootstrapReport,
    console: Console,
    *,
    out: Path | None,
    policy: BaselinePolicy = DEFAULT_POLICY,
) -> None:
    """The human summary: what was loaded, what was skipped and why."""
    say = console.print
    baselines = report.baselines
    if baselines:
        where = f" to {out}" if out is not None else ""
        say(f"Baselines: {len(baselines)} tokens written{where} (window {policy.window} sessions)")
        kept = [len(b.sessions) for b in baselines.values()]
        say(
            f"Sessions per token: min {min(kept)}, median {statistics.median(kept):g}, "
            f"max {max(kept)} (found in files: max {max(report.sessions_found.values())})"
        )
        sources = Counter(source(b, policy=policy).split(":", 1)[0] for b in baselines.values())
        say("Baseline sources: " + ", ".join(f"{k} x{n}" for k, n in sorted(sources.items())))
    else:
        say("[bold red]No baseline could be built: nothing written.[/bold red]")
    total_skipped = sum(report.rows_skipped.values())
    say(f"Candles: {report.rows_loaded} loaded, {total_skipped} skipped")
    for kind, count in sorted(report.rows_skipped.items()):
        say(f"  {kind}: {count}")
        for example in report.examples.get(kind, []):
            say(f"    e.g. {example}", markup=False)
    if report.rows_after_until:
        say(f"  after --until (not used): {report.rows_after_until}")
    say(f"Files: {report.files_read} read, {len(report.files_skipped)} skipped")
    for path, reason in report.files_skipped:
        say(f"  skipped {path}: {reason}", markup=False)
    if report.empty_tokens:
        say(f"Tokens without a usable candle: {', '.join(map(str, report.empty_tokens))}")


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    from config.settings import get_settings

    settings = get_settings()
    parser = argparse.ArgumentParser(
        prog="python -m scripts.bootstrap_baselines",
        description="Build time-aware volume baselines from historical 1-minute candles.",
    )
    parser.add_argument(
        "paths",
        nargs="*",
        type=Path,
        metavar="PATH",
        help="history files or directories (default: <state_dir>/history)",
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--token-from-filename",
        action="store_true",
        help="token from each file name: <token>[_part].json|csv or EXCHANGE:SYMBOL (default)",
    )
    which.add_argument("--token", type=int, help="the token of every PATH given")
    parser.add_argument("--out", type=Path, default=settings.state_dir / "baselines.jsonl")
    parser.add_argument("--window", type=int, default=DEFAULT_POLICY.window)
    parser.add_argument(
        "--until", type=date.fromisoformat, default=None, help="last session to use (YYYY-MM-DD)"
    )
    parser.add_argument("--instruments", type=Path, default=settings.instruments_path)
    parser.add_argument(
        "--publish",
        action="store_true",
        help="also send the baselines to the workers' tables (topic TICKFLOW_TOPIC_BASELINES)",
    )
    args = parser.parse_args(argv)
    if not args.paths:
        args.paths = [settings.state_dir / "history"]
    if args.window < 1:
        parser.error("--window must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    policy = BaselinePolicy(window=args.window)
    console = Console(soft_wrap=True)
    errors = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(
        *columns, TimeElapsedColumn(), console=errors, disable=not errors.is_terminal
    ) as progress:
        report = bootstrap(
            args.paths,
            token=args.token,
            master=_lazy_master(args.instruments),
            policy=policy,
            until=args.until,
            progress=progress,
        )
    if report.baselines:
        write_baselines(args.out, report.baselines)
    render_report(report, console, out=args.out if report.baselines else None, policy=policy)
    if report.baselines and args.publish:
        sent = asyncio.run(publish(report.baselines, report.indicators))
        console.print(f"published {sent} baselines to topic {get_settings().topic_baselines!r}")
    return 0 if report.baselines else 2


async def publish(
    baselines: Mapping[int, TokenBaseline],
    indicators: Mapping[int, dict[str, Any]] | None = None,
) -> int:
    """Send each token's baseline (and warmed indicator state) to the baselines topic,
    keyed like every token topic, so it lands in the table partition of the worker that
    owns the token."""
    settings = get_settings()
    await ensure_topics(settings.bootstrap_servers, pipeline_topics(settings))
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, linger_ms=20)
    await producer.start()
    try:
        for token, baseline in baselines.items():
            message = {"token": token, "baseline": baseline.to_dict()}
            if indicators and token in indicators:
                message["indicators"] = indicators[token]
            value = json.dumps(message).encode()
            await producer.send(settings.topic_baselines, value, key=token_key(token))
        await producer.flush()
    finally:
        await producer.stop()
    return len(baselines)


if __name__ == "__main__":
    sys.exit(main())
