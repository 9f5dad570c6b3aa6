"""Generate a realistic keyspace of the legacy scanner, to rehearse and test a migration.

Run ``python -m scripts.generate_legacy_redis --url redis://127.0.0.1:6379 --flush``. At
scale 1 it writes about 105,000 keys across legacy DBs 0, 1, 2, 3 and 5, every key type
of ``shared/reference/legacy-system.md`` (with the legacy TTLs), using real tokens and
symbols of the bundled instrument master labelled the legacy way (every derivative as
``NFO``, currency and commodity contracts included). It also plants what a real legacy
keyspace holds and a migration must survive: malformed values (non-numbers, broken JSON,
wrong types, a non-finite baseline), symbols the master does not know, copies of keys in
the "other" database map, a correctly labelled twin of a wrongly labelled key, and keys
that are not the legacy system's at all.

Deterministic for a seed (only TTL-relative expiry times differ between runs), and
loaded with pipelines: a few seconds for the whole dataset, which is why the tests
and the benchmark can rebuild it.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import redis

from config.instruments import Instrument, InstrumentMaster
from core.timeutil import IST
from storage.backup import RecordWriter
from storage.legacy_layout import LEGACY_DBS, LegacyKey, LegacyKind, legacy_symbol
from storage.redis_manager import ConnectionSpec, sync_client

SESSION = date(2026, 11, 20)
PATTERNS = (
    "volume_spike",
    "volume_breakout",
    "upside_momentum",
    "downside_momentum",
    "breakout",
    "reversal",
    "hidden_accumulation",
    "volume_price_divergence",
)
INDICATORS = ("rsi", "ema_9", "ema_20", "sma_20", "macd", "bbands", "atr", "vwap")
GREEKS = ("delta", "gamma", "theta", "vega", "rho", "iv")
RESOLUTIONS = ("1min", "5min", "15min")


@dataclass
class LegacyDataset:
    """What was generated, for tests and reports: keys per kind and the planted faults."""

    keys: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)
    #: "db:key" of keys that cannot migrate at all (malformed or unresolvable).
    malformed: set[str] = field(default_factory=set)
    #: alerts:stream entries that cannot migrate.
    malformed_entries: int = 0
    #: "db:key" of keys skipped because a copy elsewhere wins.
    shadowed: set[str] = field(default_factory=set)
    #: migratable keys whose symbol had the legacy NFO label for a non-NFO contract.
    corrected: int = 0


class _Loader:
    """Batched writes into several databases: strings and hashes as typed records through
    :class:`storage.backup.RecordWriter` (one script call per batch: redis-py's cost per
    pipelined command would otherwise dominate), stream entries pipelined."""

    def __init__(self, clients: Mapping[int, redis.Redis]) -> None:
        self._writers = {db: RecordWriter(c) for db, c in clients.items()}
        self._pipes = {db: c.pipeline(transaction=False) for db, c in clients.items()}
        self._now_ms = int(time.time() * 1000)
        self.dataset = LegacyDataset()

    def _count(self, kind: LegacyKind) -> None:
        self.dataset.keys += 1
        self.dataset.by_kind[kind.name.lower()] += 1

    def _expiry(self, ttl: int) -> int | None:
        return self._now_ms + ttl * 1000 if ttl else None

    def string(self, db: int, key: LegacyKey | str, value: str, ttl: int = 0) -> str:
        name = key if isinstance(key, str) else key.name()
        self._writers[db].add({"k": name, "t": "string", "x": self._expiry(ttl), "v": value})
        self._count(key.kind if isinstance(key, LegacyKey) else LegacyKind.UNKNOWN)
        return f"{db}:{name}"

    def hash(self, db: int, key: LegacyKey, value: Mapping[str, str], ttl: int = 0) -> str:
        name = key.name()
        record = {
            "k": name,
            "t": "hash",
            "x": self._expiry(ttl),
            "v": [[f, v] for f, v in value.items()],
        }
        self._writers[db].add(record)
        self._count(key.kind)
        return f"{db}:{name}"

    def stream(
        self, db: int, key: LegacyKey, entries: Sequence[tuple[int, Mapping[str, str]]]
    ) -> str:
        name = key.name()
        pipe = self._pipes[db]
        for ms, fields in entries:
            pipe.xadd(name, dict(fields), id=f"{ms}-*")  # type: ignore[arg-type]
        pipe.execute()
        self._count(key.kind)
        return f"{db}:{name}"

    def flush(self) -> None:
        for writer in self._writers.values():
            writer.flush()


def _epoch_ms(hour: int, minute: int, second: float = 0.0) -> int:
    start = datetime(SESSION.year, SESSION.month, SESSION.day, hour, minute, tzinfo=IST)
    return int((start + timedelta(seconds=second)).timestamp() * 1000)


def _naive(ms: int) -> str:
    """The legacy hosts' naive ISO text (IST wall time, no offset)."""
    return datetime.fromtimestamp(ms / 1000, IST).replace(tzinfo=None).isoformat()


def _price(rng: random.Random, inst: Instrument) -> float:
    base = inst.last_price or 100.0
    step = inst.tick_size or 0.05
    return round(round(base * rng.uniform(0.97, 1.03) / step) * step, 4)


def _universe(master: InstrumentMaster, rng: random.Random, scale: float) -> list[Instrument]:
    insts = list(master)

    def pick(items: list[Instrument], n: int) -> list[Instrument]:
        return rng.sample(items, min(len(items), max(1, int(n * scale))))

    cash = [i for i in insts if i.instrument_type == "EQ"]  # indices included
    small = [
        i for i in insts if i.exchange in ("MCX", "CDS") or (i.exchange == "BFO" and i.is_future)
    ]
    nfo_fut = [i for i in insts if i.exchange == "NFO" and i.is_future]
    nfo_opt = [i for i in insts if i.exchange == "NFO" and i.is_option]
    bfo_opt = [i for i in insts if i.exchange == "BFO" and i.is_option]
    return cash + small + pick(nfo_fut, 600) + pick(nfo_opt, 2400) + pick(bfo_opt, 400)


def generate(
    clients: Mapping[int, redis.Redis],
    master: InstrumentMaster,
    *,
    seed: int = 7,
    scale: float = 1.0,
    min_ttl: int = 0,
) -> LegacyDataset:
    """Write the legacy keyspace into ``clients`` (legacy db -> client; DBs 0, 1, 2, 3, 5).

    ``min_ttl`` raises every TTL to at least that many seconds, so that a test's keys do
    not expire while it runs (the legacy 60 s and 90 s TTLs would).
    """
    rng = random.Random(seed)
    load = _Loader(clients)
    data = load.dataset

    def ttl(seconds: int) -> int:
        return max(seconds, min_ttl)

    universe = _universe(master, rng, scale)
    rng.shuffle(universe)
    db0_only = universe[:20]  # their ticks:latest live only in DB 0 (the other map)
    in_db1 = universe[20:]
    symbols = {i.instrument_token: legacy_symbol(i) for i in universe}

    def corrected(inst: Instrument) -> int:
        return int(legacy_symbol(inst)[:3] != inst.exchange)

    # --- DB 1: ticks ------------------------------------------------------------------
    def tick_fields(inst: Instrument, ms: int) -> dict[str, str]:
        price = _price(rng, inst)
        close = inst.last_price or price
        volume = rng.randrange(1_000, 5_000_000)
        fields = {
            "instrument_token": str(inst.instrument_token),
            "symbol": symbols[inst.instrument_token],
            "mode": "full",
            "tradable": "False" if inst.is_index else "True",
            "last_price": str(price),
            "last_quantity": str(rng.randrange(1, 500)),
            "average_price": str(round(price * 0.999, 2)),
            "volume": str(volume),
            "buy_quantity": str(rng.randrange(0, 10**6)),
            "sell_quantity": str(rng.randrange(0, 10**6)),
            "open_price": str(close),
            "high_price": str(max(price, close)),
            "low_price": str(min(price, close)),
            "close_price": str(close),
            "change": str(round((price - close) / close * 100, 4)),
            "exchange_timestamp": _naive(ms),
            "exchange_timestamp_ms": str(ms),
            "last_trade_time": _naive(ms - 1000),
            "last_trade_time_ms": str(ms - 1000),
            "timestamp": _naive(ms + 37),
            "timestamp_ms": str(ms + 37),
        }
        if inst.is_derivative:
            fields.update(oi=str(rng.randrange(0, 10**6)), oi_day_high="0", oi_day_low="0")
        return fields

    close_ms = _epoch_ms(15, 29, 58)
    for n, inst in enumerate(in_db1):
        key = LegacyKey(LegacyKind.TICK_LATEST, symbols[inst.instrument_token])
        fields = tick_fields(inst, close_ms - rng.randrange(0, 60_000))
        label = f"1:{key.name()}"
        if n < 8:
            fields["last_price"] = "N/A"
            data.malformed.add(label)
        elif n < 12:
            fields["volume"] = "12.5.1"
            data.malformed.add(label)
        else:
            data.corrected += corrected(inst)
        if n < 3:
            load.string(1, key, json.dumps(fields), ttl(3600))  # the wrong type
        else:
            load.hash(1, key, fields, ttl(3600))
        load.string(
            1, LegacyKey(LegacyKind.PRICE_REALTIME, key.symbol), fields["last_price"], ttl(60)
        )
    for inst in db0_only:
        key = LegacyKey(LegacyKind.TICK_LATEST, symbols[inst.instrument_token])
        load.hash(0, key, tick_fields(inst, close_ms - 120_000), ttl(3600))
        data.corrected += corrected(inst)
    for inst in in_db1[12:72]:  # stale copies in the other map's DB 0: DB 1 wins
        key = LegacyKey(LegacyKind.TICK_LATEST, symbols[inst.instrument_token])
        data.shadowed.add(load.hash(0, key, tick_fields(inst, close_ms - 3_600_000), ttl(3600)))
    for n, symbol in enumerate(
        ("NSEOLDCO", "NSEDELISTED1", "NFONIFTY24JAN21000CE", "BSEGONE", "XXXFOO")
    ):
        key = LegacyKey(LegacyKind.TICK_LATEST, symbol)
        fields = tick_fields(universe[n], close_ms)
        data.malformed.add(load.hash(1, key, fields, ttl(3600)))
    twins = [i for i in in_db1[12:] if i.exchange in ("CDS", "MCX")][:2]
    for inst in twins:  # a correctly labelled twin: it wins over the NFO-labelled key
        key = LegacyKey(LegacyKind.TICK_LATEST, inst.exchange + inst.tradingsymbol)
        load.hash(1, key, tick_fields(inst, close_ms), ttl(3600))
        wrong = LegacyKey(LegacyKind.TICK_LATEST, symbols[inst.instrument_token])
        data.shadowed.add(f"1:{wrong.name()}")
        data.corrected -= 1

    def raw_tick(inst: Instrument, ms: int) -> str:
        return json.dumps(
            {
                "instrument_token": inst.instrument_token,
                "last_price": _price(rng, inst),
                "volume": rng.randrange(1000, 10**6),
                "timestamp": _naive(ms),
            }
        )

    for inst in in_db1[: max(1, int(40 * scale))]:
        key = LegacyKey(LegacyKind.TICK_RAW, symbols[inst.instrument_token])
        start = _epoch_ms(15, 0)
        load.stream(
            1,
            key,
            [(start + 500 * k, {"data": raw_tick(inst, start + 500 * k)}) for k in range(50)],
        )
    start = _epoch_ms(15, 0)
    load.stream(
        1,
        LegacyKey(LegacyKind.TICK_UNIFIED),
        [
            (start + 10 * k, {"data": raw_tick(rng.choice(in_db1), start + 10 * k)})
            for k in range(int(2000 * scale))
        ],
    )
    load.stream(
        1,
        LegacyKey(LegacyKind.TICK_PROCESSED),
        [
            (
                start + 20 * k,
                {
                    "data": json.dumps(
                        {
                            "symbol": symbols[(inst := rng.choice(in_db1)).instrument_token],
                            "token": inst.instrument_token,
                            "last_price": _price(rng, inst),
                            "zerodha_cumulative_volume": rng.randrange(10**6),
                            "bucket_incremental_volume": rng.randrange(1000),
                            "volume_ratio": 1.2,
                        }
                    )
                },
            )
            for k in range(int(1000 * scale))
        ],
    )
    for inst in in_db1[: int(320 * scale)]:
        symbol = symbols[inst.instrument_token]
        base = _epoch_ms(9, 15)
        cumulative = 0
        for k in range(200):
            ms = base + k * 7919 + rng.randrange(0, 500)
            stamp = datetime.fromtimestamp(ms / 1000, IST).strftime("%Y%m%d_%H%M%S_%f")
            inc = rng.randrange(0, 5000)
            cumulative += inc
            load.hash(
                1,
                LegacyKey(LegacyKind.REALTIME, symbol, stamp),
                {
                    "volume": str(cumulative),
                    "incremental_volume": str(inc),
                    "price": str(_price(rng, inst)),
                    "volume_ratio": str(round(rng.uniform(0, 5), 3)),
                    "timestamp": _naive(ms),
                },
                ttl(864_000),
            )

    # --- DB 2: volume state, baselines, profiles, greeks ------------------------------
    for inst in universe:
        load.hash(
            2,
            LegacyKey(LegacyKind.VOL_STATE, token=inst.instrument_token),
            {
                "last_cumulative": str(rng.randrange(10**7)),
                "session_date": SESSION.isoformat(),
            },
            ttl(3600),
        )
    baseline_insts = [i for i in in_db1[12:] if not i.is_index][: int(2000 * scale)]
    for n, inst in enumerate(baseline_insts):
        symbol = symbols[inst.instrument_token]
        minute = rng.uniform(1_000, 200_000)
        for res, factor in zip(RESOLUTIONS, (1, 5, 15), strict=True):
            key = LegacyKey(LegacyKind.VOLUME_BASELINE, symbol, res)
            value = "NaN" if n < 5 and res == "5min" else str(round(minute * factor, 2))
            label = load.string(2, key, value)
            if n < 5 and res == "5min":
                data.malformed.add(label)
            else:
                data.corrected += corrected(inst)
        key = LegacyKey(LegacyKind.VOL_BASELINE, symbol)
        current = "-" if 5 <= n < 8 else str(round(minute, 2))
        label = load.hash(
            2,
            key,
            {
                "current": current,
                "updated": _naive(_epoch_ms(15, 31)),
                "source": "historical_20d",
            },
            ttl(86_400),
        )
        if current == "-":
            data.malformed.add(label)
        else:
            data.corrected += corrected(inst)
    data.malformed.add(
        load.string(
            2,
            LegacyKey(
                LegacyKind.VOLUME_BASELINE, symbols[baseline_insts[0].instrument_token], "weird"
            ),
            "10",
        )
    )
    for inst in in_db1[: int(400 * scale)]:
        symbol = symbols[inst.instrument_token]
        price = _price(rng, inst)
        load.hash(
            2,
            LegacyKey(LegacyKind.VOLUME_PROFILE, symbol, "session"),
            {"date": SESSION.isoformat(), "total_volume": str(rng.randrange(10**6))},
            ttl(86_400),
        )
        load.string(2, LegacyKey(LegacyKind.VOLUME_PROFILE, symbol, "poc"), str(price))
        load.string(
            2,
            LegacyKey(LegacyKind.VOLUME_PROFILE, symbol, "nodes"),
            json.dumps([price, round(price * 1.01, 2)]),
        )
        load.hash(
            2,
            LegacyKey(LegacyKind.VOLUME_PROFILE, symbol, "distribution"),
            {str(round(price + k * 0.05, 2)): str(rng.randrange(1, 9999)) for k in range(5)},
            ttl(86_400),
        )
    options = [i for i in in_db1[12:] if i.is_option][: int(1000 * scale)]
    for n, inst in enumerate(options):
        symbol = symbols[inst.instrument_token]
        for greek in GREEKS:
            value = "nan" if n < 6 and greek == "vega" else str(round(rng.uniform(-1, 1), 6))
            label = load.string(2, LegacyKey(LegacyKind.GREEK, symbol, greek), value, ttl(86_400))
            if value == "nan":
                data.malformed.add(label)
            else:
                data.corrected += corrected(inst)

    # --- DB 3: alerts ------------------------------------------------------------------
    entries = []
    alert_insts = [i for i in in_db1[12:] if not i.is_index]
    for k in range(int(1000 * scale)):
        inst = rng.choice(alert_insts)
        ms = _epoch_ms(9, 20) + k * 19_000
        fields = {
            "symbol": symbols[inst.instrument_token],
            "pattern": rng.choice(PATTERNS),
            "confidence": str(round(rng.uniform(0.1, 0.95), 2)),
            "action": rng.choice(("BUY", "SELL")),
            "signal": rng.choice(("bullish", "bearish")),
            "last_price": str(_price(rng, inst)),
            "volume_ratio": str(round(rng.uniform(1, 8), 2)),
            "price_change": str(round(rng.uniform(-2, 2), 3)),
            "timestamp": _naive(ms),
        }
        if k % 67 == 5:
            del fields["symbol"]
            data.malformed_entries += 1
        elif k % 67 == 9:
            fields["symbol"] = "NSEOLDCO"
            data.malformed_entries += 1
        elif k % 67 == 13:
            fields["confidence"] = "high"
            data.malformed_entries += 1
        entries.append((ms, fields))
        if k < 800:
            load.hash(
                3,
                LegacyKey(
                    LegacyKind.ALERT,
                    fields.get("symbol", "NSEX"),
                    f"{fields['pattern']}:{ms // 1000}",
                ),
                fields,
                ttl(3600),
            )
        if k < 500:
            load.string(
                3,
                LegacyKey(
                    LegacyKind.ALERT_DEDUP,
                    fields.get("symbol", "NSEX"),
                    f"{fields['pattern']}:{fields['action']}:{ms // 300_000}",
                ),
                "1",
                ttl(90),
            )
    load.stream(3, LegacyKey(LegacyKind.ALERTS_STREAM), entries)

    # --- DB 5: indicator cache -----------------------------------------------------------
    ind_insts = [i for i in in_db1[12:] if not i.is_index][: int(1500 * scale)]
    for n, inst in enumerate(ind_insts):
        symbol = symbols[inst.instrument_token]
        price = _price(rng, inst)
        values = {
            "rsi": str(round(rng.uniform(10, 90), 4)),
            "ema_9": str(round(price * 1.001, 4)),
            "ema_20": str(round(price * 0.999, 4)),
            "sma_20": str(round(price * 0.998, 4)),
            "macd": json.dumps({"macd": 1.25, "signal": 0.75, "histogram": 0.5}),
            "bbands": json.dumps({"upper": price * 1.02, "middle": price, "lower": price * 0.98}),
            "atr": str(round(price * 0.01, 4)),
            "vwap": str(round(price * 1.0005, 4)),
        }
        if n < 10:
            values["macd"] = '{"macd": 1.2, "signal": '
        if 10 <= n < 15:
            values["rsi"] = "None"
        for name, value in values.items():
            label = load.string(5, LegacyKey(LegacyKind.INDICATOR, symbol, name), value, ttl(300))
            if (n < 10 and name == "macd") or (10 <= n < 15 and name == "rsi"):
                data.malformed.add(label)
            else:
                data.corrected += corrected(inst)
        if n < 100:
            load.string(
                5, LegacyKey(LegacyKind.INDICATOR, symbol, "supertrend"), str(price), ttl(300)
            )
        if 100 <= n < 150:  # stale copies in the other map's DB 2: DB 5 wins
            key = LegacyKey(LegacyKind.INDICATOR, symbol, "rsi")
            data.shadowed.add(load.string(2, key, "50.0", ttl(300)))

    # --- DB 0: system ----------------------------------------------------------------------
    t2s = {str(i.instrument_token): symbols[i.instrument_token] for i in universe}
    t2s["999999"] = "NSEOLDCO"  # stale
    load.hash(0, LegacyKey(LegacyKind.HOT_TOKEN, part="token_to_symbol"), t2s)
    load.hash(
        0, LegacyKey(LegacyKind.HOT_TOKEN, part="symbol_to_token"), {v: k for k, v in t2s.items()}
    )
    load.hash(
        0,
        LegacyKey(LegacyKind.HOT_TOKEN, part="token_data"),
        {
            str(i.instrument_token): json.dumps(
                {
                    "symbol": symbols[i.instrument_token],
                    "lot_size": i.lot_size,
                    "tick_size": i.tick_size,
                }
            )
            for i in universe
        },
    )
    vix_ms = _epoch_ms(15, 29, 59)
    load.string(
        0,
        LegacyKey(LegacyKind.VIX),
        json.dumps(
            {
                "last_price": 13.45,
                "change": -1.2,
                "timestamp": _naive(vix_ms),
                "timestamp_ms": vix_ms,
            }
        ),
    )
    load.string(0, "scanner:config", json.dumps({"threads": 20}))
    load.string(0, "session:last_run", _naive(vix_ms))
    load.flush()
    return data


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", required=True, help="legacy Redis (its DB number is ignored)")
    parser.add_argument("--scale", type=float, default=1.0, help="size factor (1 = ~105k keys)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--min-ttl", type=int, default=0, help="raise every TTL to this (s)")
    parser.add_argument("--flush", action="store_true", help="empty the legacy DBs first")
    args = parser.parse_args(argv)

    spec = ConnectionSpec.from_url(args.url)
    clients = {db: sync_client(spec.with_db(db)) for db in LEGACY_DBS}
    busy = {db: n for db, c in clients.items() if (n := int(c.dbsize()))}
    if busy and not args.flush:
        print(f"{spec.url}: legacy DBs are not empty ({busy}); use --flush", file=sys.stderr)
        return 2
    for client in clients.values():
        client.flushdb()
    started = time.perf_counter()
    data = generate(
        clients, InstrumentMaster.load(), seed=args.seed, scale=args.scale, min_ttl=args.min_ttl
    )
    elapsed = time.perf_counter() - started
    print(
        f"{data.keys:,} legacy keys in {elapsed:.1f} s ({data.keys / elapsed:,.0f} keys/s) "
        f"at {spec.with_db(0).url} dbs {list(LEGACY_DBS)}, generated {datetime.now(UTC):%H:%M}"
    )
    for kind, n in sorted(data.by_kind.items()):
        print(f"  {kind:16} {n:>7,}")
    print(
        f"  planted: {len(data.malformed)} unusable keys, {data.malformed_entries} bad alert "
        f"entries, {len(data.shadowed)} shadowed copies"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
