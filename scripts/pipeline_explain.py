"""``debug_pipeline explain``: why a pattern did or did not fire on one bar.

``python -m scripts.debug_pipeline explain --token T --at TIME [--date D] [--regime R]
[--vix V] [--json]`` prints, for each of the eight patterns, the inputs the rule read at
that bar and every condition with its value, threshold and verdict (from
:func:`core.patterns.explain`), plus whether a cooldown held the alert back.

Where the inputs come from, and why: the worker's ``volume`` topic (``TICKFLOW_TOPIC_VOLUME``)
holds every closed bar of a token with its volume fields, which is exactly what the
signals agent consumed. The command reads the token's records from the broker
(group-less, so the workers' assignment is untouched), and folds
:class:`core.indicators.IndicatorState` and :class:`core.patterns.PatternState` over the
token's bars up to the one at ``TIME`` as the agent does: same order, same rules, same
cooldowns. Indicator state warmed from history (``bootstrap_baselines --publish`` sends
it on the ``baselines`` topic) is installed first, as the worker does, unless
``--no-warm``; so RSI and ATR are the worker's own. The regime is ``--regime`` or the
Redis ``regime`` hash (the current one, applied to every bar of the fold: the topic does
not record the regime of past bars); without either, NORMAL is assumed, as the worker
does before the first VIX tick.

``TIME`` is ISO 8601 (naive = IST) or ``HH:MM`` on ``--date`` (default: the day of the
token's latest bar); the bar is the one whose minute contains it. Exit status: 0 when the
bar was explained, 1 when the broker or topic cannot be read, 2 when the token has no bar
at that minute (the nearest ones are named).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from rich.console import Console
from rich.table import Table

from core.bars import Bar
from core.indicators import IndicatorState
from core.patterns import REGIMES, PatternState, evaluate, explain
from core.sessions import ist_date, minute_start
from core.timeutil import IST, iso_from_epoch

EXIT_BROKER = 1
EXIT_NO_BAR = 2


@dataclass
class TokenRecords:
    """A token's records read from the broker: bars in topic order with their volume
    fields and source positions, and the latest warm indicator state (if any)."""

    bars: list[tuple[Bar, dict[str, str], int, int]] = field(default_factory=list)
    warm: dict[str, Any] | None = None
    skipped: int = 0


async def read_keyed(
    bootstrap: str, topic: str, key: bytes, *, timeout: float = 30.0
) -> list[tuple[int, int, bytes]]:
    """(partition, offset, value) of every record of ``topic`` with ``key``, up to the
    end the first fetch of each partition reports.

    Every partition is read (a token's partition depends on the producer's partitioner);
    the end is taken from the Fetch response's high watermark, because ListOffsets
    (latest) is too low on the embedded broker (DESIGN.md: Tansu 0.6.0).
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=100,
        request_timeout_ms=int(timeout * 1000),
    )
    await asyncio.wait_for(consumer.start(), timeout)
    try:
        # Listing, never describing by name: on Tansu describing an unknown topic creates it.
        if topic not in await consumer.topics():
            raise LookupError(f"topic {topic!r} does not exist on {bootstrap}")
        partitions = sorted(consumer.partitions_for_topic(topic) or ())
        tps = [TopicPartition(topic, p) for p in partitions]
        begin = await consumer.beginning_offsets(tps)
        listed = await consumer.end_offsets(tps)  # a lower bound of the end everywhere
        pending = {tp for tp in tps if listed[tp] > begin[tp]}
        out: list[tuple[int, int, bytes]] = []
        if not pending:
            return out
        consumer.assign(sorted(pending))
        for tp in pending:
            consumer.seek(tp, begin[tp])
        ends: dict[TopicPartition, int] = {}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while pending:
            if loop.time() > deadline:
                raise TimeoutError(f"{topic}: not read to its end within {timeout:.0f}s")
            batches = await consumer.getmany(*pending, timeout_ms=300, max_records=10_000)
            for tp in list(pending):
                for record in batches.get(tp, []):
                    if record.key == key and record.value is not None:
                        out.append((tp.partition, record.offset, record.value))
                highwater = consumer.highwater(tp)
                if highwater is None:
                    continue
                end = ends.setdefault(tp, max(int(highwater), listed[tp]))
                if await consumer.position(tp) >= end:
                    pending.discard(tp)
        out.sort()
        return out
    finally:
        await consumer.stop()


def decode_records(
    volume: Sequence[tuple[int, int, bytes]], baselines: Sequence[tuple[int, int, bytes]]
) -> TokenRecords:
    """The token's bars from ``volume`` records and its latest warm state from
    ``baselines`` records; an undecodable record is counted, not fatal."""
    result = TokenRecords()
    for partition, offset, value in volume:
        try:
            data = json.loads(value)
            bar = Bar.from_dict(data["bar"])
            vol = {str(k): "" if v is None else str(v) for k, v in data["vol"].items()}
        except (ValueError, KeyError, TypeError):
            result.skipped += 1
            continue
        result.bars.append((bar, vol, partition, offset))
    for _, _, value in baselines:
        try:
            data = json.loads(value)
        except ValueError:
            continue
        if isinstance(data, dict) and data.get("indicators"):
            result.warm = data["indicators"]
    return result


def target_minute(at: str, day: date | None, latest: int | None) -> int:
    """The bar start (epoch s) ``--at`` names: ISO 8601 (naive = IST), or a time of day
    on ``day`` (default: the IST day of the token's latest bar)."""
    text = at.strip()
    clock: time | None = None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        try:
            clock = time.fromisoformat(text)
        except ValueError:
            raise ValueError(f"--at {at!r}: neither ISO 8601 nor HH:MM") from None
    if clock is not None:
        if day is None and latest is None:
            raise ValueError("--at without a date needs --date (the token has no bars)")
        when = datetime.combine(day or ist_date(latest or 0), clock)
    if when.tzinfo is None:
        when = when.replace(tzinfo=IST)
    return minute_start(when.timestamp())


def _ratio(vol: dict[str, str]) -> float | None:
    text = vol.get("volume_ratio", "")
    return float(text) if text else None


def fold(
    records: TokenRecords,
    target: int,
    *,
    regime: str | None,
    vix: float | None,
    config: Any,
    warm: bool = True,
) -> dict[str, Any] | None:
    """The explanation of the bar starting at ``target``, after folding the indicator
    and pattern states over every earlier bar (None: no such bar).

    Mirrors the signals agent: a bar at or before the state's last one (a re-emission)
    changes nothing, indicators are updated before the rules run, the rules see the
    published (capped) ratio, and a warm state is used only if it ends before the first
    live bar (the worker keeps live state that is newer).
    """
    indicators = IndicatorState()
    warmed = False
    if warm and records.warm:
        candidate = IndicatorState.from_dict(records.warm)
        first = records.bars[0][0].start if records.bars else None
        if first is None or (candidate.last_start or 0) < first:
            indicators, warmed = candidate, True
    patterns = PatternState()
    folded = 0
    for bar, vol, partition, offset in records.bars:
        if bar.start > target:
            break
        if indicators.last_start is not None and bar.start <= indicators.last_start:
            continue
        result = indicators.update(bar)
        assert result is not None
        inputs = {
            "volume_ratio": _ratio(vol),
            "rsi": result.rsi_14,
            "atr": result.atr_14,
            "regime": regime,
            "vix": vix,
            "config": config,
        }
        if bar.start == target:
            out = explain(patterns, bar, **inputs)
            out["source"] = {"partition": partition, "offset": offset}
            out["bars_folded"] = folded
            out["warm_indicators"] = warmed
            out["vol"] = vol
            out["bar"] = bar.to_dict()
            return out
        evaluate(patterns, bar, **inputs)
        folded += 1
    return None


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def render(explained: dict[str, Any], console: Console, *, regime_source: str) -> None:
    """The human form: the bar's inputs, then one row per condition of each pattern."""
    inputs = explained["inputs"]
    bar = explained["bar"]
    say = console.print
    say(
        f"[bold]token {explained['token']}[/bold] bar {explained['bar_start']} "
        f"(O {bar['open']} H {bar['high']} L {bar['low']} C {bar['close']} V {bar['volume']}"
        f"{', flat' if explained['flat_bar'] else ''})"
    )
    say(
        f"r {_fmt(inputs['r'])}  pc {_fmt(inputs['pc'])}%  RSI {_fmt(inputs['rsi'])}  "
        f"ATR {_fmt(inputs['atr'])}  regime {inputs['regime']} ({regime_source}"
        f"{', assumed' if inputs['regime_assumed'] else ''})  m {inputs['m']}  "
        f"closes {', '.join(_fmt(c) for c in inputs['closes'])}",
        markup=False,
    )
    say(
        f"from partition {explained['source']['partition']} offset "
        f"{explained['source']['offset']}, after {explained['bars_folded']} earlier bars"
        f"{' and warm indicator state' if explained['warm_indicators'] else ''}"
    )
    for key, cooldown in explained["cooldowns"].items():
        say(f"cooldown {key}: last alert {cooldown['last_alert']}, until {cooldown['until']}")
    table = Table(show_lines=False)
    for column in ("pattern", "verdict", "condition", "value", "threshold", "ok"):
        table.add_column(column)
    for pattern, check in explained["patterns"].items():
        if check["alerts"]:
            verdict = f"[bold green]ALERT {check['signal']} ({check['confidence']})[/bold green]"
        elif check["signal"]:
            verdict = f"[yellow]{check['signal']}, held: {check['blocked_by']}[/yellow]"
        else:
            verdict = "no"
        for n, condition in enumerate(check["conditions"]):
            name = condition["name"]
            if condition["branch"]:
                name += f" [{condition['branch']}]"
            table.add_row(
                pattern if n == 0 else "",
                verdict if n == 0 else "",
                name,
                _fmt(condition["value"]),
                _fmt(condition["threshold"]),
                "[green]yes[/green]" if condition["passed"] else "[red]no[/red]",
            )
        table.add_section()
    console.print(table)


def _regime_from_redis(settings: Any) -> tuple[str | None, float | None, str]:
    """(regime, vix, where from) out of the Redis ``regime`` hash; (None, None, why) when
    it cannot be read: the rules then assume NORMAL, as the worker does."""
    try:
        from storage.keys import Keys
        from storage.redis_client import sync_redis

        client = sync_redis(settings)
        try:
            stored = client.hgetall(Keys(settings.redis_key_prefix).regime)
        finally:
            client.close()
    except Exception as exc:  # Redis down or misconfigured: explain without it
        return None, None, f"Redis unreadable: {exc}"
    if not stored:
        return None, None, "no regime in Redis"

    def text(name: str) -> str:
        value: Any = stored.get(name.encode()) or stored.get(name) or b""
        return value.decode() if isinstance(value, bytes) else str(value)

    regime, vix = text("regime").strip().upper(), text("vix")
    try:
        value = float(vix) if vix else None
    except ValueError:
        value = None
    if regime not in REGIMES:
        return None, value, f"Redis regime {regime!r} not understood"
    return regime, value, "Redis regime hash"


def cmd_explain(args: argparse.Namespace) -> int:
    """Explain the eight rules on one bar of one token (see the module docstring)."""
    from config.patterns import pattern_config
    from config.settings import get_settings
    from core.tick_envelope import token_key

    settings = get_settings()
    bootstrap = args.broker.split("://", 1)[-1] if args.broker else settings.bootstrap_servers
    topic = args.topic or settings.topic_volume
    key = token_key(args.token)

    async def read() -> tuple[list[tuple[int, int, bytes]], list[tuple[int, int, bytes]]]:
        volume = await read_keyed(bootstrap, topic, key, timeout=args.timeout)
        warm: list[tuple[int, int, bytes]] = []
        if not args.no_warm:
            try:
                warm = await read_keyed(
                    bootstrap, args.baselines_topic or settings.topic_baselines, key,
                    timeout=args.timeout,
                )  # fmt: skip
            except LookupError:
                warm = []
        return volume, warm

    try:
        volume, warm = asyncio.run(read())
    except (KafkaError, OSError, TimeoutError, LookupError) as exc:
        print(f"explain: cannot read {topic!r} from {bootstrap}: {exc}", file=sys.stderr)
        return EXIT_BROKER
    records = decode_records(volume, warm)
    latest = records.bars[-1][0].start if records.bars else None
    try:
        target = target_minute(args.at, args.date, latest)
    except ValueError as exc:
        print(f"explain: {exc}", file=sys.stderr)
        return EXIT_NO_BAR
    if args.regime is not None:
        regime, vix, regime_source = args.regime, args.vix, "--regime"
    else:
        regime, vix, regime_source = _regime_from_redis(settings)
        if args.vix is not None:
            vix = args.vix
    explained = fold(
        records,
        target,
        regime=regime,
        vix=vix,
        config=pattern_config(settings),
        warm=not args.no_warm,
    )
    if explained is None:
        starts = [bar.start for bar, _, _, _ in records.bars]
        before = [s for s in starts if s < target][-1:]
        after = [s for s in starts if s > target][:1]
        near = ", ".join(iso_from_epoch(s) for s in before + after) or "none"
        print(
            f"explain: token {args.token} has no bar at {iso_from_epoch(target)} in {topic!r} "
            f"({len(starts)} bars; nearest: {near})",
            file=sys.stderr,
        )
        return EXIT_NO_BAR
    explained["regime_source"] = regime_source
    explained["topic"] = topic
    if records.skipped:
        explained["records_skipped"] = records.skipped
    if args.json:
        print(json.dumps(explained, indent=1))
    else:
        render(explained, Console(soft_wrap=True), regime_source=regime_source)
    return 0


def add_explain(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "explain",
        help="why each pattern did or did not fire on one bar of a token",
        description=(
            "Fold the indicator and pattern state over a token's bars from the volume "
            "topic and show, for each of the eight patterns, the inputs at one bar and "
            "which condition passed or failed."
        ),
    )
    parser.add_argument("--token", type=int, required=True, metavar="N")
    parser.add_argument(
        "--at", required=True, metavar="TIME", help="ISO 8601 (naive = IST) or HH:MM (IST)"
    )
    parser.add_argument(
        "--date",
        type=date.fromisoformat,
        default=None,
        help="day of an HH:MM --at (default: the day of the token's latest bar)",
    )
    parser.add_argument(
        "--regime",
        type=str.upper,
        choices=REGIMES,
        default=None,
        help="regime to apply (default: the Redis regime hash, else NORMAL as assumed)",
    )
    parser.add_argument("--vix", type=float, default=None, help="VIX value to report")
    parser.add_argument("--json", action="store_true", help="JSON instead of a table")
    parser.add_argument(
        "--no-warm",
        action="store_true",
        help="ignore indicator state warmed from history (baselines topic)",
    )
    parser.add_argument("--broker", default=None, help="bootstrap servers (default: settings)")
    parser.add_argument("--topic", default=None, help="volume topic (default: settings)")
    parser.add_argument("--baselines-topic", default=None, help="(default: settings)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds for the broker")
    parser.set_defaults(func=cmd_explain)
