"""Simulated Kite historical candles: bootstrap baselines without a Kite account.

``python -m scripts.generate_history [--tokens N | --token T ...] [--sessions S]
[--end DATE] [--out DIR] [--seed S] [--activity A] [--jobs J] [--live-day-replicas]``
writes one Kite historical-API response per token, ``DIR/<token>.json``::

    {"status": "success", "data": {"candles": [["2026-11-24T09:15:00+0530", o, h, l, c, v], ...]}}

the 1-minute candles of the ``S`` weekday sessions ending at ``--end`` (default: the last
weekday before today, IST), which is exactly what ``scripts.bootstrap_baselines`` reads.

The market is the same deterministic :class:`~core.market_simulator.MarketSimulator` the
Kite-protocol simulator serves, over the same universe (``--tokens N`` picks the
simulator's first ``N`` instruments as of the session after ``--end``, which is what
``kite_simulator --tokens N`` and the ingestor subscribe that day), started at the first
session's open and advanced session by session. Candles are built the way Kite builds
them: OHLC of ``last_price`` inside the minute, volume = the increments of the session's
cumulative ``volume_traded`` (the simulator resets it at each open and is watched from
the open, so the first print counts); a minute without ticks has no candle; a print at
exactly 15:30:00.000 joins the 15:29 candle.

Speed. The simulator costs ~9 us per tick and a 50-token universe ticks ~1M times per
session, so a faithful 20 sessions take minutes on a small machine. Two knobs:

* ``--jobs``: tokens are sharded over processes. Given the instrument master, a token's
  ticks do not depend on what else is subscribed (the simulator's design), so the output
  is identical for any ``--jobs``.
* ``--activity`` (default 0.25): the simulator's tick-rate scale. Prices are unaffected in
  distribution (moves scale with sqrt(time), not with the number of prints), and each
  candle's volume is divided by ``activity``, so the expected volume of every minute is
  the full-rate market's: the baselines match what the live simulator (activity 1)
  produces. What is lost is only granularity: fewer, larger prints per minute.
  ``--activity 1`` gives the exact full-rate market.

Derivatives. The simulator's derivative liquidity depends on time to expiry, so the
continuous past under-states the live day's futures and options volume (about 1.5x and
2x over 20 sessions; equities and indices match). ``--live-day-replicas`` simulates each
history session as a differently seeded replica of the live day (the session after
``--end``) instead, which matches every token's live volume, at the cost of prices that
restart each session. See :func:`simulate_candles`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time as _time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from config.instruments import Instrument, InstrumentMaster
from core.market_simulator import NIFTY_50, MarketSimulator
from core.sessions import session_bounds_s
from core.timeutil import IST

DEFAULT_TOKENS = 50
DEFAULT_SESSIONS = 20
DEFAULT_ACTIVITY = 0.25
#: Simulated minutes per ``advance`` call: bounds the memory of one batch of ticks.
_STEP_MINUTES = 5

Candle = list[Any]  # [time, open, high, low, close, volume]


def weekdays_ending(end: date, count: int) -> list[date]:
    """The ``count`` weekdays up to ``end`` (inclusive when a weekday), ascending. The
    simulator has no holiday calendar: it trades Monday to Friday, and so does this."""
    days: list[date] = []
    day = end
    while len(days) < count:
        if day.weekday() < 5:
            days.append(day)
        day -= timedelta(days=1)
    days.reverse()
    return days


def next_weekday(day: date) -> date:
    day += timedelta(days=1)
    while day.weekday() >= 5:
        day += timedelta(days=1)
    return day


def default_end(today: date) -> date:
    """The last weekday before ``today``: history is complete sessions only."""
    day = today - timedelta(days=1)
    while day.weekday() >= 5:
        day -= timedelta(days=1)
    return day


def _open(day: date) -> datetime:
    return datetime.combine(day, time(9, 15), tzinfo=IST)


def history_universe(master: InstrumentMaster, n: int, end: date) -> list[Instrument]:
    """The live simulator's ``--tokens n`` universe on the session after ``end``."""
    from scripts.kite_simulator import simulated_universe

    return simulated_universe(master, n, _open(next_weekday(end)))


def _anchored(instruments: Sequence[Instrument], master: InstrumentMaster) -> list[Instrument]:
    """``instruments`` with NIFTY 50 first (added when missing; its ticks are dropped).

    Works around an order dependence in :class:`MarketSimulator` (2026-11): a driver's
    idiosyncratic vol is computed from NIFTY's vol as it stands when the driver is
    configured, and drivers are configured in subscription order, so an index or equity
    configured before NIFTY uses NIFTY's default vol. The live simulator's universe always
    starts with NIFTY 50 (``select_universe``), so putting it first here gives every
    token the live market's paths, whatever the shard or ``--token`` list.
    """
    nifty = master.by_symbol(*NIFTY_50)
    if nifty is None:
        return list(instruments)
    rest = [i for i in instruments if i.instrument_token != nifty.instrument_token]
    return [nifty, *rest]


def replica_seed(seed: int, day: date) -> int:
    """The seed of a live-day replica labelled ``day`` (distinct per day and per seed)."""
    return seed * 1_000_000 + day.toordinal()


def simulate_candles(
    instruments: Sequence[Instrument],
    master: InstrumentMaster,
    days: Sequence[date],
    *,
    seed: int,
    activity: float = DEFAULT_ACTIVITY,
    replica_of: date | None = None,
    on_day: Callable[[date], None] | None = None,
) -> dict[int, list[Candle]]:
    """1-minute Kite candles per token over ``days`` (ascending weekdays), simulated.

    By default one simulator starts at the first day's earliest session open and is
    advanced through every day's sessions in :data:`_STEP_MINUTES` steps (the time
    between sessions costs nothing: the simulator schedules the next event at the next
    open): one continuous past market.

    With ``replica_of`` (the live day), each history session is instead a fresh simulator
    of *that* day's session, seeded by :func:`replica_seed`, with its candles labelled
    with the history date. The simulator's derivative liquidity depends on time to
    expiry (futures' rates are fixed when the simulator is built, options' follow expiry
    and moneyness), so a continuous past under-states a live day's derivative volume
    (measured: ~1.5x for near futures, ~2x for near options over 20 sessions); replicas
    have the live day's rates exactly, at the cost of prices that restart every session.
    Equities and indices are the same either way in expectation.
    """
    if not days or not instruments:
        return {inst.instrument_token: [] for inst in instruments}
    segments = {inst.segment_id for inst in instruments}
    anchored = _anchored(instruments, master)

    def simulator(day: date, seed_: int) -> MarketSimulator:
        first_open = min(session_bounds_s(seg, day)[0] for seg in segments)
        start = datetime.fromtimestamp(first_open, IST)
        return MarketSimulator(anchored, seed_, start, master=master, activity=activity)

    sim = simulator(days[0], seed) if replica_of is None else None
    closes = {inst.instrument_token: 0 for inst in instruments}
    candles: dict[int, list[Candle]] = {inst.instrument_token: [] for inst in instruments}
    scale = 1.0 / activity
    step = _STEP_MINUTES * 60
    labels: dict[int, str] = {}
    shift = 0  # seconds from the simulated session to the labelled one (replicas)

    def flush(token: int, st: list[Any]) -> None:
        minute = st[0] + shift
        label = labels.get(minute)
        if label is None:
            label = datetime.fromtimestamp(minute, IST).strftime("%Y-%m-%dT%H:%M:%S%z")
            labels[minute] = label
        candles[token].append([label, st[1], st[2], st[3], st[4], round(st[5] * scale)])

    for label_day in days:
        day = label_day
        if replica_of is not None:  # IST has no DST: whole days of seconds apart
            day = replica_of
            shift = (label_day.toordinal() - day.toordinal()) * 86_400
            sim = simulator(day, replica_seed(seed, label_day))
        assert sim is not None
        bounds = [session_bounds_s(seg, day) for seg in segments]
        day_open = min(b[0] for b in bounds)
        day_close = max(b[1] for b in bounds)
        for inst in instruments:
            closes[inst.instrument_token] = session_bounds_s(inst.segment_id, day)[1]
        # Per token: [minute, open, high, low, close, volume, last cumulative volume].
        current: dict[int, list[Any]] = {}
        until = day_open
        while until < day_close:
            until = min(until + step, day_close)
            for tick in sim.advance(datetime.fromtimestamp(until, IST)):
                token = tick.instrument_token
                close_s = closes.get(token)
                if close_s is None:  # NIFTY 50 subscribed only as the market anchor
                    continue
                ts = tick.exchange_timestamp or 0
                minute = ts - ts % 60
                if minute >= close_s:  # a print at the close itself: the last minute's
                    minute = close_s - 60
                price = tick.last_price
                cum = tick.volume_traded or 0
                st = current.get(token)
                if st is None:  # first print of the session: the cumulative started at 0
                    current[token] = [minute, price, price, price, price, cum, cum]
                    continue
                delta = cum - st[6] if cum > st[6] else 0
                if cum > st[6]:
                    st[6] = cum
                if minute != st[0]:
                    flush(token, st)
                    st[0] = minute
                    st[1] = st[2] = st[3] = st[4] = price
                    st[5] = delta
                    continue
                if price > st[2]:
                    st[2] = price
                elif price < st[3]:
                    st[3] = price
                st[4] = price
                st[5] += delta
        for token, st in current.items():
            flush(token, st)
        if on_day is not None:
            on_day(label_day)
    return candles


def write_kite_json(path: Path, candles: Sequence[Candle]) -> None:
    """A Kite historical-API response body, atomically (temp file then rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as out:
        json.dump({"status": "success", "data": {"candles": candles}}, out, separators=(",", ":"))
    os.replace(tmp, path)


@dataclass(frozen=True, slots=True)
class _Shard:
    tokens: tuple[int, ...]
    master_path: str | None
    day_ordinals: tuple[int, ...]
    seed: int
    activity: float
    out_dir: str
    replica_of: int | None = None


def _run_shard(shard: _Shard, on_day: Callable[[date], None] | None = None) -> dict[int, int]:
    """Simulate and write one shard's files; returns candles written per token. Runs in a
    worker process (everything it needs is in the picklable :class:`_Shard`)."""
    master = InstrumentMaster.load(shard.master_path)
    instruments = [inst for t in shard.tokens if (inst := master.get(t)) is not None]
    days = [date.fromordinal(o) for o in shard.day_ordinals]
    replica_of = date.fromordinal(shard.replica_of) if shard.replica_of is not None else None
    candles = simulate_candles(
        instruments,
        master,
        days,
        seed=shard.seed,
        activity=shard.activity,
        replica_of=replica_of,
        on_day=on_day,
    )
    out = Path(shard.out_dir)
    for token, rows in candles.items():
        write_kite_json(out / f"{token}.json", rows)
    return {token: len(rows) for token, rows in candles.items()}


def generate(
    out_dir: Path,
    tokens: Sequence[int],
    days: Sequence[date],
    *,
    seed: int,
    master_path: Path | None = None,
    activity: float = DEFAULT_ACTIVITY,
    jobs: int = 1,
    replica_of: date | None = None,
    progress: Progress | None = None,
) -> dict[int, int]:
    """Write ``out_dir/<token>.json`` for every token; returns candles per token.

    ``jobs > 1`` shards the tokens round-robin over spawned processes (spawned, not
    forked: the parent holds polars' and rich's threads); the files are the same.
    """
    if activity <= 0:
        raise ValueError(f"activity must be positive, got {activity}")
    out_dir.mkdir(parents=True, exist_ok=True)
    ordinals = tuple(d.toordinal() for d in days)
    path = str(master_path) if master_path is not None else None
    jobs = max(1, min(jobs, len(tokens)))
    replica = replica_of.toordinal() if replica_of is not None else None
    shards = [
        _Shard(tuple(tokens[i::jobs]), path, ordinals, seed, activity, str(out_dir), replica)
        for i in range(jobs)
    ]
    written: dict[int, int] = {}
    if jobs == 1:
        task = progress.add_task("sessions", total=len(days)) if progress else None

        def advance(_: date) -> None:
            if progress is not None and task is not None:
                progress.advance(task)

        written.update(_run_shard(shards[0], advance))
        return written
    task = progress.add_task(f"shards ({jobs} processes)", total=jobs) if progress else None
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(_run_shard, shard) for shard in shards]
        for future in as_completed(futures):
            written.update(future.result())
            if progress is not None and task is not None:
                progress.advance(task)
    return written


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    from config.settings import get_settings

    settings = get_settings()
    parser = argparse.ArgumentParser(
        prog="python -m scripts.generate_history",
        description="Write simulated Kite historical 1-minute candles, one <token>.json each.",
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--tokens",
        type=int,
        default=DEFAULT_TOKENS,
        help="the simulator's first N instruments (default %(default)s)",
    )
    which.add_argument(
        "--token", type=int, action="append", dest="token_list", help="an explicit token (repeat)"
    )
    parser.add_argument("--sessions", type=int, default=DEFAULT_SESSIONS)
    parser.add_argument(
        "--end",
        type=date.fromisoformat,
        default=None,
        help="last session (YYYY-MM-DD); default the last weekday before today (IST)",
    )
    parser.add_argument("--out", type=Path, default=settings.state_dir / "history")
    parser.add_argument("--seed", type=int, default=settings.simulator_seed)
    parser.add_argument(
        "--activity",
        type=float,
        default=DEFAULT_ACTIVITY,
        help="tick-rate scale; volumes are divided by it (default %(default)s)",
    )
    parser.add_argument(
        "--jobs", type=int, default=min(os.cpu_count() or 1, 8), help="worker processes"
    )
    parser.add_argument(
        "--live-day-replicas",
        action="store_true",
        help="simulate every session as a replica of the session after --end (derivative "
        "volumes then match that live day; prices restart each session)",
    )
    parser.add_argument("--instruments", type=Path, default=settings.instruments_path)
    args = parser.parse_args(argv)
    if args.sessions < 1:
        parser.error("--sessions must be >= 1")
    if args.activity <= 0:
        parser.error("--activity must be positive")
    if args.tokens < 1:
        parser.error("--tokens must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    console = Console(stderr=True)
    master = InstrumentMaster.load(args.instruments)
    end: date = args.end or default_end(datetime.now(IST).date())
    days = weekdays_ending(end, args.sessions)
    if args.token_list:
        unknown = [t for t in args.token_list if t not in master]
        if unknown:
            console.print(f"[red]tokens not in the instrument master: {unknown}[/red]")
            return 2
        tokens = list(dict.fromkeys(args.token_list))
    else:
        tokens = [i.instrument_token for i in history_universe(master, args.tokens, end)]
    started = _time.perf_counter()
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, disable=not console.is_terminal) as progress:
        written = generate(
            args.out,
            tokens,
            days,
            seed=args.seed,
            master_path=args.instruments,
            activity=args.activity,
            jobs=args.jobs,
            replica_of=next_weekday(end) if args.live_day_replicas else None,
            progress=progress,
        )
    elapsed = _time.perf_counter() - started
    out = Console()
    out.print(
        f"Wrote {len(written)} files ({sum(written.values())} candles) to {args.out}: "
        f"{len(days)} sessions {days[0]} .. {days[-1]}, seed {args.seed}, "
        f"activity {args.activity}{', live-day replicas' if args.live_day_replicas else ''}, "
        f"{elapsed:.1f} s",
        soft_wrap=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
