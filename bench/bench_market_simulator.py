"""How fast the deterministic market generator runs against the market it simulates.

``python -m bench.bench_market_simulator``: a 9000-token universe (the per-key maximum)
advanced through the busiest minute of the day (the 09:15 open) and a quiet midday
minute, in 1-second steps. The baseline is the simulated market itself: the figure is
simulated seconds per CPU second ("x real time"), so a value of 10 means one core can
drive the simulator at speed x10 before generation alone saturates it.
"""

from __future__ import annotations

import time
from datetime import date, datetime, timedelta

from config.instruments import InstrumentMaster
from core.market_simulator import MarketSimulator, select_universe
from core.timeutil import IST

DAY = date(2026, 11, 25)
TOKENS = 9000
SECONDS = 60


def run(master: InstrumentMaster, hour: int, minute: int) -> tuple[int, float]:
    universe = select_universe(master, TOKENS, as_of=DAY)
    start = datetime(DAY.year, DAY.month, DAY.day, hour, minute, tzinfo=IST)
    sim = MarketSimulator(universe, 7, start, master=master)
    began = time.process_time()
    ticks = 0
    for second in range(1, SECONDS + 1):
        ticks += len(sim.advance(start + timedelta(seconds=second)))
    return ticks, time.process_time() - began


def main() -> int:
    master = InstrumentMaster.load()
    print(f"market generator, {TOKENS} tokens, {SECONDS} simulated seconds in 1 s steps\n")
    print("| window | ticks | ticks per simulated s | CPU s | ticks/CPU s | x real time |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, hour, minute in (("09:15 open", 9, 15), ("12:00 midday", 12, 0)):
        ticks, cpu = run(master, hour, minute)
        print(
            f"| {label} | {ticks:,} | {ticks / SECONDS:,.0f} | {cpu:.2f} | "
            f"{ticks / cpu:,.0f} | {SECONDS / cpu:.1f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
