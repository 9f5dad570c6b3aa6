"""Seed a simulated stack with history, as ``make run`` does before the market opens.

``python -m scripts.seed_history [--tokens N] [--seed S] [--start ISO] [--sessions K]``
writes simulated Kite historical candles for the simulator's universe (the sessions
before the simulated day, ``scripts.generate_history``) and publishes the baselines and
warmed-up indicator state built from them (``scripts.bootstrap_baselines --publish``).
Without it the demo's volume ratio would have no baseline (``baseline_source`` none) and
its indicators would start cold.

The candles are cached per (simulated day, universe size, seed), so a restart the same
day only publishes again (publishing is idempotent). The defaults trade fidelity for a
start-up of seconds: 5 sessions (enough for slot baselines, whose minimum is 3) at a low
tick-rate scale, which keeps every minute's expected volume (see generate_history).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import date, datetime

from config.settings import get_settings
from core.timeutil import IST
from scripts import bootstrap_baselines, generate_history

DEFAULT_SESSIONS = 5
DEFAULT_ACTIVITY = 0.05


def main(argv: Sequence[str] | None = None) -> int:
    settings = get_settings()
    parser = argparse.ArgumentParser(prog="python -m scripts.seed_history", description=__doc__)
    parser.add_argument("--tokens", type=int, default=settings.simulator_tokens)
    parser.add_argument("--seed", type=int, default=settings.simulator_seed)
    parser.add_argument("--start", help="the simulated day's start, ISO 8601 (default today)")
    parser.add_argument("--sessions", type=int, default=DEFAULT_SESSIONS)
    parser.add_argument("--activity", type=float, default=DEFAULT_ACTIVITY)
    args = parser.parse_args(argv)
    day: date = (
        datetime.fromisoformat(args.start).astimezone(IST).date()
        if args.start
        else datetime.now(IST).date()
    )
    end = generate_history.default_end(day)
    out = settings.state_dir / "history" / f"{end}-{args.tokens}-{args.seed}"
    done = out / ".complete"
    if not done.exists():
        code = generate_history.main(
            [
                "--tokens", str(args.tokens), "--sessions", str(args.sessions),
                "--end", end.isoformat(), "--seed", str(args.seed),
                "--activity", str(args.activity), "--jobs", "2", "--live-day-replicas",
                "--out", str(out),
            ]
        )  # fmt: skip
        if code != 0:
            return code
        done.touch()
    return bootstrap_baselines.main([str(out), "--publish", "--out", str(out / "baselines.jsonl")])


if __name__ == "__main__":
    sys.exit(main())
