"""Decoder throughput: ``core.kite_protocol.decode_frame`` against the official client.

Run ``python -m bench.bench_decoder``. Both decoders get the same realistic frames (mostly
184-byte full packets of options and equities, some quote, LTP and index packets, several
packets per frame), timed in the same process, best of several repeats with the garbage
collector paused (as ``timeit`` does) so a collection does not land in one side's run. A
sample of the decoded values is checked against the official client first: a fast decoder
that is wrong is worthless, so the command exits 1 if any value differs.

Our ticks carry the market depth unbuilt (``core.tick.Depth`` builds its levels when they
are first read), so the last row also reads every tick's bids and asks: what a consumer of
the whole book pays, against the official client that always builds it.
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from core.kite_protocol import DecodeStats, decode_frame, encode_ticks, split_frame
from core.tick import Depth, DepthLevel, Mode, Tick, price_divisor

#: (segment, share of instruments, typical price, tick size) of a typical subscription:
#: an option chain dominates, then equities, a few futures, currency, indices.
_UNIVERSE = (
    (2, 0.55, 150.0, 0.05),  # NFO options and futures
    (1, 0.25, 1500.0, 0.05),  # NSE equities
    (7, 0.06, 6000.0, 1.0),  # MCX
    (3, 0.04, 83.0, 0.0025),  # CDS
    (4, 0.05, 800.0, 0.05),  # BSE
    (9, 0.05, 22000.0, 0.05),  # indices
)


@dataclass(frozen=True)
class Instrument:
    token: int
    segment: int
    price: float
    tick_size: float


def _instruments(rng: random.Random, count: int) -> list[Instrument]:
    segments = [u[0] for u in _UNIVERSE]
    weights = [u[1] for u in _UNIVERSE]
    info = {u[0]: u for u in _UNIVERSE}
    result = []
    for _ in range(count):
        segment = rng.choices(segments, weights)[0]
        _, _, price, tick = info[segment]
        token = (rng.randrange(1, 2**20) << 8) | segment
        result.append(Instrument(token, segment, price * rng.uniform(0.5, 1.5), tick))
    return result


def _realistic_tick(rng: random.Random, inst: Instrument, now: int) -> Tick:
    """A plausible tick: prices on the tick grid, a depth ladder around the last price."""
    div = price_divisor(inst.segment)
    step = inst.tick_size

    def grid(price: float) -> float:
        return round(round(price / step) * step * div) / div

    last = grid(inst.price * rng.uniform(0.98, 1.02))
    close = grid(inst.price)
    roll = rng.random()
    mode: Mode = "full" if roll < 0.85 else ("quote" if roll < 0.95 else "ltp")
    if inst.segment == 9:
        return Tick(
            inst.token, mode, False, last, open=close, high=grid(last * 1.01),
            low=grid(last * 0.99), close=close, exchange_timestamp=now,
        )  # fmt: skip
    bids = tuple(
        DepthLevel(rng.randrange(1, 5000), grid(last - (i + 1) * step), rng.randrange(1, 60))
        for i in range(5)
    )
    asks = tuple(
        DepthLevel(rng.randrange(1, 5000), grid(last + (i + 1) * step), rng.randrange(1, 60))
        for i in range(5)
    )
    volume = rng.randrange(10_000, 50_000_000)
    return Tick(
        inst.token, mode, True, last, rng.randrange(1, 2000), grid(last * 0.999), volume,
        rng.randrange(0, 10**7), rng.randrange(0, 10**7), close, grid(last * 1.02),
        grid(last * 0.97), close, None, now - rng.randrange(0, 5),
        rng.randrange(0, 10**7) if inst.segment == 2 else 0, 0, 0, now,
        Depth.from_levels(bids, asks, div),
    )  # fmt: skip


def build_frames(frames: int, seed: int) -> list[bytes]:
    """``frames`` frames of 1 to 30 packets, about 85% of them full packets."""
    rng = random.Random(seed)
    universe = _instruments(rng, 3000)
    now = 1_704_087_000
    result = []
    for i in range(frames):
        count = min(30, int(rng.expovariate(1 / 6)) + 1)
        ticks = [_realistic_tick(rng, rng.choice(universe), now + i // 50) for _ in range(count)]
        result.append(encode_ticks(ticks))
    return result


# --- verification ---------------------------------------------------------------------------


def _flat_official(d: dict[str, Any]) -> dict[str, Any]:
    """The official dict flattened to our field names; naive datetimes back to epoch."""
    flat = {k: v for k, v in d.items() if k not in ("ohlc", "depth")}
    flat.update(d.get("ohlc", {}))
    for key in ("last_trade_time", "exchange_timestamp"):
        if isinstance(flat.get(key), datetime):
            flat[key] = int(flat[key].timestamp()) or None  # 1970 is the official "0"
    if "depth" in d:
        flat["bids"] = [(x["quantity"], x["price"], x["orders"]) for x in d["depth"]["buy"]]
        flat["asks"] = [(x["quantity"], x["price"], x["orders"]) for x in d["depth"]["sell"]]
    return flat


def _flat_ours(tick: Tick, keys: set[str]) -> dict[str, Any]:
    flat = {k: getattr(tick, k) for k in keys if k not in ("bids", "asks")}
    if "bids" in keys:
        flat["bids"] = [(x.quantity, x.price, x.orders) for x in tick.bids]
        flat["asks"] = [(x.quantity, x.price, x.orders) for x in tick.asks]
    return flat


def verify(frames: Sequence[bytes], official: Callable[[bytes], list[dict[str, Any]]]) -> int:
    """Number of packets whose values differ between the two decoders (0 expected)."""
    differ = 0
    for frame in frames:
        ours = decode_frame(frame)
        theirs = official(frame)
        if len(ours) != len(theirs):
            differ += max(len(ours), len(theirs))
            continue
        for tick, d in zip(ours, theirs, strict=True):
            flat = _flat_official(d)
            if _flat_ours(tick, set(flat)) != flat:
                differ += 1
                if differ <= 3:
                    print(f"differs: ours {tick!r}\n   official {d!r}", file=sys.stderr)
    return differ


# --- timing -------------------------------------------------------------------------------


def best_time(run: Callable[[], object], repeats: int) -> float:
    """Best wall time of ``repeats`` runs, GC paused during each (as timeit does)."""
    best = float("inf")
    for _ in range(repeats):
        gc.collect()
        gc.disable()
        try:
            start = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - start)
        finally:
            gc.enable()
    return best


def _official_parser() -> Callable[[bytes], list[dict[str, Any]]]:
    from kiteconnect import KiteTicker  # test/bench oracle only, not a runtime dependency

    ticker = KiteTicker.__new__(KiteTicker)  # _parse_binary needs no connection state
    return ticker._parse_binary


@dataclass
class Row:
    name: str
    packets: int
    ours_s: float
    official_s: float

    @property
    def ratio(self) -> float:
        return self.official_s / self.ours_s


def measure(name: str, frames: Sequence[bytes], repeats: int, read_book: bool = False) -> Row:
    """Both decoders on ``frames``; with ``read_book`` ours also reads every tick's bids
    and asks (the depth is built lazily, so a consumer that reads it pays for it there)."""
    official = _official_parser()
    packets = sum(len(split_frame(f)) for f in frames)
    stats = DecodeStats()

    def run_ours() -> None:
        if read_book:
            for frame in frames:
                for tick in decode_frame(frame, stats):
                    if tick.depth is not None:
                        _ = tick.depth.bids, tick.depth.asks
            return
        for frame in frames:
            decode_frame(frame, stats)

    def run_official() -> None:
        for frame in frames:
            official(frame)

    return Row(name, packets, best_time(run_ours, repeats), best_time(run_official, repeats))


def _single_kind(frames: Sequence[bytes], length: int, per_frame: int = 10) -> list[bytes]:
    """Frames of one packet kind only, taken from the mixed set."""
    packets = [p for f in frames for p in split_frame(f) if len(p) == length]
    return [
        len(chunk).to_bytes(2, "big") + b"".join(len(p).to_bytes(2, "big") + p for p in chunk)
        for chunk in (packets[i : i + per_frame] for i in range(0, len(packets), per_frame))
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=12_000, help="mixed frames (12000)")
    parser.add_argument("--repeats", type=int, default=5, help="best of N runs (5)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)

    started = time.perf_counter()
    frames = build_frames(args.frames, args.seed)
    sample = frames[:: max(1, len(frames) // 2000)]
    differ = verify(sample, _official_parser())
    checked = sum(len(split_frame(f)) for f in sample)
    print(f"verified {checked} packets of {len(sample)} frames against the official client: "
          f"{'all values identical' if not differ else f'{differ} DIFFER'}")  # fmt: skip
    if differ:
        return 1

    rows = [measure("mixed (realistic)", frames, args.repeats)]
    for label, length in (("full 184", 184), ("quote 44", 44), ("ltp 8", 8), ("index 32", 32)):
        kind_frames = _single_kind(frames, length)
        if kind_frames:
            rows.append(measure(label, kind_frames, max(3, args.repeats // 2)))
    rows.append(measure("mixed, depth read", frames, max(3, args.repeats // 2), read_book=True))

    print()
    print("| frames | packets | ours packets/s | official packets/s | ours us/packet | ratio |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row.name} | {row.packets} | {row.packets / row.ours_s:,.0f} "
            f"| {row.packets / row.official_s:,.0f} | {row.ours_s / row.packets * 1e6:.2f} "
            f"| {row.ratio:.2f}x |"
        )
    mixed = rows[0]
    print()
    print(
        f"mixed: ours {mixed.packets / mixed.ours_s:,.0f} packets/s, official "
        f"{mixed.packets / mixed.official_s:,.0f} packets/s, ratio {mixed.ratio:.2f}x "
        f"(python {sys.version.split()[0]}, {time.perf_counter() - started:.1f} s total)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
