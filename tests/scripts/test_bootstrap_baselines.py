"""End to end without a Kite account: simulated history -> bootstrap -> baselines file.

The expected values are checked against per-slot means computed here, independently,
straight from the generated Kite JSON; the generator's candles are checked against the
simulator's own cumulative volumes.
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import date, datetime, time
from functools import lru_cache
from pathlib import Path

import pytest

from config.instruments import InstrumentMaster
from core.baselines import expected, source
from core.history import load_baselines as core_load_baselines
from core.market_simulator import MarketSimulator
from core.timeutil import IST
from scripts import bootstrap_baselines, generate_history
from scripts.bootstrap_baselines import bootstrap, load_baselines, main, token_from_filename
from scripts.generate_history import generate, replica_seed, simulate_candles, weekdays_ending

RELIANCE = 738561  # NSE equity
NIFTY_FUT = 8960258  # NFO future (expires on END, trades until 15:30)
NIFTY_50 = 256265  # index: candles with volume 0
TOKENS = [RELIANCE, NIFTY_FUT, NIFTY_50]
END = date(2026, 11, 24)
SESSIONS = 4
OPEN_MIN = 9 * 60 + 15


@lru_cache(maxsize=1)
def master() -> InstrumentMaster:
    return InstrumentMaster.load()


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("history")
    written = generate(out, TOKENS, weekdays_ending(END, SESSIONS), seed=7, activity=0.25)
    assert set(written) == set(TOKENS)
    return out


def independent_means(path: Path) -> tuple[list[float], int]:
    """Per-slot mean volume over the file's sessions (no candle = 0), and the session
    count, computed without any project code."""
    candles = json.loads(path.read_text())["data"]["candles"]
    per_session: dict[date, list[int]] = defaultdict(lambda: [0] * 375)
    for when, _o, _h, _l, _c, volume in candles:
        t = datetime.strptime(when, "%Y-%m-%dT%H:%M:%S%z")
        per_session[t.date()][t.hour * 60 + t.minute - OPEN_MIN] += volume
    n = len(per_session)
    return [sum(s[slot] for s in per_session.values()) / n for slot in range(375)], n


def test_generate_bootstrap_load_gives_the_independent_per_slot_means(
    history: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for f in history.iterdir():
        (data / f.name).write_bytes(f.read_bytes())
    (data / "999.json").write_text("{this is not json")  # deliberately broken
    (data / "notes.csv").write_text("date,open,high,low,close,volume\n")
    out = tmp_path / "baselines.jsonl"

    rc = main([str(data), "--out", str(out)])
    report = capsys.readouterr().out
    assert rc == 0

    baselines = load_baselines(out)
    assert sorted(baselines) == sorted(TOKENS)
    for token in TOKENS:
        means, n = independent_means(history / f"{token}.json")
        assert n == SESSIONS
        b = baselines[token]
        assert source(b) == f"history:{SESSIONS}"
        assert [expected(b, slot) for slot in range(375)] == pytest.approx(means, rel=1e-12)
    assert max(independent_means(history / f"{RELIANCE}.json")[0]) > 0
    assert max(independent_means(history / f"{NIFTY_50}.json")[0]) == 0  # an index

    assert "3 tokens written" in report
    assert f"min {SESSIONS}, median {SESSIONS}, max {SESSIONS}" in report
    assert "Files: 3 read, 2 skipped" in report
    assert "999.json: not JSON" in report
    assert "notes.csv: cannot tell the token from the file name" in report


def test_generated_candles_add_up_to_the_simulators_cumulative_volume(history: Path) -> None:
    """Per session, the candles' volumes sum to the day's final ``volume_traded`` (scaled
    by 1/activity), and OHLC come from ``last_price``: simulated here without the
    generator, for the token alone (the paths do not depend on what else is simulated)."""
    inst = master().get(RELIANCE)
    nifty = master().get(NIFTY_50)
    assert inst is not None and nifty is not None
    days = weekdays_ending(END, SESSIONS)
    start = datetime.combine(days[0], time(9, 15), tzinfo=IST)
    sim = MarketSimulator([nifty, inst], 7, start, master=master(), activity=0.25)
    candles = json.loads((history / f"{RELIANCE}.json").read_text())["data"]["candles"]
    for day in days:
        ticks = [
            t
            for t in sim.advance(datetime.combine(day, time(15, 30), tzinfo=IST))
            if t.instrument_token == RELIANCE
        ]
        assert ticks
        mine = [c for c in candles if c[0].startswith(day.isoformat())]
        assert sum(c[5] for c in mine) == 4 * (ticks[-1].volume_traded or 0)
        minute_of = [(t.exchange_timestamp or 0) // 60 for t in ticks]
        prices = [t.last_price for t, m in zip(ticks, minute_of, strict=True) if m == minute_of[0]]
        assert mine[0][1:5] == [prices[0], max(prices), min(prices), prices[-1]]
        assert len(mine) == len(set(minute_of))


def test_shards_write_identical_files(tmp_path: Path) -> None:
    days = weekdays_ending(END, 1)
    one, two = tmp_path / "one", tmp_path / "two"
    generate(one, [RELIANCE, NIFTY_FUT], days, seed=3, jobs=1)
    generate(two, [RELIANCE, NIFTY_FUT], days, seed=3, jobs=2)
    for token in (RELIANCE, NIFTY_FUT):
        assert (one / f"{token}.json").read_bytes() == (two / f"{token}.json").read_bytes()


def test_live_day_replicas_are_the_live_session_relabelled() -> None:
    """Each history session is the live day's market under its own seed, with its
    candles labelled with the history date."""
    inst = master().get(RELIANCE)
    nifty = master().get(NIFTY_50)
    assert inst is not None and nifty is not None
    days = weekdays_ending(END, 2)
    live = date(2026, 11, 25)
    candles = simulate_candles([inst], master(), days, seed=7, replica_of=live)[RELIANCE]
    assert {c[0][:10] for c in candles} == {d.isoformat() for d in days}
    for day in days:
        sim = MarketSimulator(
            [nifty, inst],
            replica_seed(7, day),
            datetime.combine(live, time(9, 15), tzinfo=IST),
            master=master(),
            activity=0.25,
        )
        ticks = sim.advance(datetime.combine(live, time(15, 30), tzinfo=IST))
        final = [t.volume_traded for t in ticks if t.instrument_token == RELIANCE][-1]
        mine = [c for c in candles if c[0].startswith(day.isoformat())]
        assert sum(c[5] for c in mine) == 4 * (final or 0)
        assert mine[0][0] == f"{day.isoformat()}T09:15:00+0530"


def test_no_tokens_write_nothing(tmp_path: Path) -> None:
    assert generate(tmp_path / "none", [], weekdays_ending(END, 1), seed=7) == {}


def test_nothing_loadable_exits_2_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "1.json").write_text('{"status": "error", "message": "Too many requests"}')
    out = tmp_path / "b.jsonl"
    assert main([str(tmp_path), str(tmp_path / "nope.json"), "--out", str(out)]) == 2
    report = capsys.readouterr().out
    assert "No baseline could be built" in report
    assert "1.json: Kite error response: Too many requests" in report
    assert "nope.json: no such file or directory" in report
    assert not out.exists()


def test_token_from_filename() -> None:
    def resolve(name: str) -> int:
        return token_from_filename(Path(name), master)

    assert resolve("738561.json") == RELIANCE
    assert resolve("/x/738561_2024-01.csv") == RELIANCE
    assert resolve("738561-part2.json") == RELIANCE
    assert resolve("NSE:RELIANCE.json") == RELIANCE
    assert resolve("nse:RELIANCE.csv") == RELIANCE
    assert resolve("NSE:NIFTY 50.json") == NIFTY_50
    with pytest.raises(ValueError, match="not in the instrument master"):
        resolve("NSE:NOSUCHTHING.json")
    with pytest.raises(ValueError, match="cannot tell"):
        resolve("reliance.json")
    with pytest.raises(ValueError, match="out of range"):
        resolve("0.json")


def test_explicit_token_merges_chunks_and_reports_duplicate_minutes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = tmp_path / "jan.csv"
    b = tmp_path / "feb.json"
    a.write_text(
        "date,open,high,low,close,volume\n"
        "2026-11-23 09:15,1,1,1,1,10\n2026-11-23 09:16,1,1,1,1,20\nbad,1,1,1,1,1\n"
    )
    b.write_text(
        json.dumps(
            {
                "status": "success",
                "data": {
                    "candles": [
                        ["2026-11-23T09:16:00+0530", 1, 1, 1, 1, 99],  # also in jan.csv
                        ["2026-11-24T09:15:00+0530", 1, 1, 1, 1, 30],
                        ["2026-11-25T09:15:00+0530", 1, 1, 1, 1, 40],  # after --until
                    ]
                },
            }
        )
    )
    out = tmp_path / "b.jsonl"
    rc = main(
        [str(a), str(b), "--token", str(RELIANCE), "--until", "2026-11-24", "--out", str(out)]
    )
    assert rc == 0
    report = capsys.readouterr().out
    base = load_baselines(out)[RELIANCE]
    assert len(base.sessions) == 2
    assert source(base) == "fallback:2"
    assert base.sessions[0][1][:2] == (10, 20)  # the first file's minute is kept
    assert "duplicate minute: 1" in report and "also in another file" in report
    assert "bad time: 1" in report and "jan.csv row 3" in report
    assert "after --until (not used): 1" in report
    assert "min 2, median 2, max 2" in report


def test_bootstrap_api_and_reexports(history: Path) -> None:
    report = bootstrap([history], master=master)
    assert sorted(report.baselines) == sorted(TOKENS)
    assert report.rows_loaded == sum(
        len(json.loads((history / f"{t}.json").read_text())["data"]["candles"]) for t in TOKENS
    )
    assert report.sessions_found == {t: SESSIONS for t in TOKENS}
    assert load_baselines is core_load_baselines
    assert bootstrap_baselines.write_baselines.__module__ == "core.history"


def test_generate_history_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "h"
    args = ["--sessions", "1", "--end", "2026-11-20", "--out", str(out), "--jobs", "1"]
    assert generate_history.main(["--token", str(RELIANCE), *args]) == 0
    assert "Wrote 1 files" in capsys.readouterr().out
    candles = json.loads((out / f"{RELIANCE}.json").read_text())["data"]["candles"]
    assert candles[0][0].startswith("2026-11-20T09:1") and candles[-1][0] < "2026-11-20T15:30"
    assert generate_history.main(["--token", "12345", *args]) == 2  # not in the master


def test_weekday_helpers() -> None:
    assert weekdays_ending(date(2026, 11, 23), 3) == [
        date(2026, 11, 19),
        date(2026, 11, 20),
        date(2026, 11, 23),
    ]
    assert generate_history.default_end(date(2026, 11, 23)) == date(2026, 11, 20)  # Monday
    assert generate_history.next_weekday(date(2026, 11, 20)) == date(2026, 11, 23)
    universe = generate_history.history_universe(master(), 5, date(2026, 11, 24))
    assert universe[0].tradingsymbol == "NIFTY 50" and len(universe) == 5
