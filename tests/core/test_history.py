"""Historical candles: the real Kite sample, CSV variants, every bad-row reason, unusable
files, sessions -> baselines, and the JSON-lines baseline file."""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path

import pytest

from core.baselines import expected, source
from core.history import (
    SKIP_KINDS,
    HistoryFileError,
    SkippedCandle,
    baseline_from_bars,
    load_baselines,
    load_history_file,
    parse_csv,
    parse_kite_candles,
    parse_kite_json,
    session_volumes,
    write_baselines,
)
from core.timeutil import IST

SAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "kite-historical-minute-sample.json"
TOKEN = 738561  # an NSE equity: 09:15 to 15:30
MCX_TOKEN = 58424839  # segment 7: 09:00 to 23:30


def epoch(y: int, mo: int, d: int, hh: int, mm: int) -> int:
    return int(datetime(y, mo, d, hh, mm, tzinfo=IST).timestamp())


def kinds(skipped: list[SkippedCandle]) -> list[tuple[int, str]]:
    return [(s.row, s.kind) for s in skipped]


# --- the real sample ---------------------------------------------------------------------


def test_the_real_kite_sample_parses_to_exact_bars() -> None:
    bars, skipped = load_history_file(SAMPLE, TOKEN)
    assert skipped == []
    assert len(bars) == 6
    first, last = bars[0], bars[-1]
    assert first.start == epoch(2017, 12, 15, 9, 15)
    assert (first.open, first.high, first.low, first.close, first.volume) == (
        1704.5,
        1705.0,
        1699.25,
        1702.8,
        2499,
    )
    assert last.start == epoch(2017, 12, 15, 9, 20)
    assert (last.open, last.high, last.low, last.close, last.volume) == (
        1699.8,
        1700.0,
        1696.55,
        1696.9,
        802,
    )
    assert [b.volume for b in bars] == [2499, 1271, 831, 771, 543, 802]
    assert all(b.instrument_token == TOKEN and b.ticks == 1 and not b.flat for b in bars)
    assert {b.session for b in bars} == {date(2017, 12, 15)}


def test_the_sample_becomes_one_session_of_slot_volumes() -> None:
    bars, _ = load_history_file(SAMPLE, TOKEN)
    sessions = session_volumes(bars)
    assert list(sessions) == [date(2017, 12, 15).toordinal()]
    vols = sessions[date(2017, 12, 15).toordinal()]
    assert len(vols) == 375
    assert vols[:7] == (2499, 1271, 831, 771, 543, 802, 0)  # no candle = no trades
    assert sum(v or 0 for v in vols) == 6717
    b = baseline_from_bars(TOKEN, bars)
    assert source(b) == "fallback:1"
    assert expected(b, 0) == pytest.approx(6717 / 375 * 1.8)


def test_bare_candle_lists_and_oi_columns_are_accepted() -> None:
    bars, skipped = parse_kite_candles(
        [["2017-12-15T09:15:00+0530", 1, 2, 0.5, 1.5, 10, 12345], 7], TOKEN
    )
    assert bars[0].volume == 10
    assert kinds(skipped) == [(2, "bad row")]


# --- CSV variants ----------------------------------------------------------------------


ROW = "1704.5,1705,1699.25,1702.8,2499"
HEADER = "open,high,low,close,volume"


@pytest.mark.parametrize(
    "text",
    [
        f"date,{HEADER}\n2017-12-15 09:15:00+05:30,{ROW}\n",
        f"time,{HEADER}\n2017-12-15T09:15:00+0530,{ROW}\n",
        f"timestamp,{HEADER}\n2017-12-15 09:15:00,{ROW}\n",
        f"Datetime,Open,High,Low,Close,Volume,OI\n2017-12-15T03:45:00Z,{ROW},7\n",
        f" Date , Time ,Open,High,Low,Close,Volume\n2017-12-15,09:15,{ROW}\n",
        "volume,close,low,high,open,date\n2499,1702.8,1699.25,1705,1704.5,2017-12-15 09:15\n",
        f"\ufeffdate,{HEADER}\n2017-12-15 09:15,{ROW}\n",
        f"2017-12-15T09:15:00+0530,{ROW}\n",  # no header
        f'date,{HEADER}\n"2017-12-15 09:15",{ROW}.0\n',
    ],
    ids=["date", "time", "timestamp-naive", "datetime-utc-oi", "date+time", "reordered",
         "bom", "headerless", "quoted"],
)  # fmt: skip
def test_csv_variants_give_the_same_bar(text: str) -> None:
    bars, skipped = parse_csv(text, TOKEN)
    assert skipped == []
    assert len(bars) == 1
    b = bars[0]
    assert b.start == epoch(2017, 12, 15, 9, 15)
    assert (b.open, b.high, b.low, b.close, b.volume) == (1704.5, 1705.0, 1699.25, 1702.8, 2499)


def test_csv_from_a_path_and_json_from_a_path(tmp_path: Path) -> None:
    csv = tmp_path / "x.csv"
    csv.write_text("date,open,high,low,close,volume\n2017-12-15 09:15,1,1,1,1,5\n")
    assert load_history_file(csv, TOKEN)[0][0].volume == 5
    js = tmp_path / "x.json"
    js.write_text(SAMPLE.read_text())
    assert len(load_history_file(js, TOKEN)[0]) == 6


# --- bad rows: every kind, reported with its reason ------------------------------------

BAD_ROWS = [
    ["2017-12-15T09:15:00+0530", 1, 2, 0.5, 1.5, 100],  # 1 ok
    ["2017-12-15T09:16:00+0530", 1, 2, 0.5],  # 2 bad row: too short
    ["yesterday", 1, 2, 0.5, 1.5, 100],  # 3 bad time
    ["2017-12-15T09:17:30+0530", 1, 2, 0.5, 1.5, 100],  # 4 bad time: not on a minute
    ["2017-12-15T09:18:00+0530", "abc", 2, 0.5, 1.5, 100],  # 5 not numeric
    ["2017-12-15T09:19:00+0530", 1, 2, 0.5, 1.5, "NaN"],  # 6 not numeric
    ["2017-12-15T09:20:00+0530", 1, 2, 0.5, 1.5, -3],  # 7 negative volume
    ["2017-12-15T09:21:00+0530", 1, 2, 0.5, 1.5, 12.5],  # 8 bad volume
    ["2017-12-15T09:22:00+0530", 0, 2, 0.5, 1.5, 100],  # 9 bad price
    ["2017-12-15T09:14:00+0530", 1, 2, 0.5, 1.5, 100],  # 10 out of session (pre-open)
    ["2017-12-15T15:30:00+0530", 1, 2, 0.5, 1.5, 100],  # 11 out of session (the close)
    ["2017-12-15T09:15:00+0530", 1, 2, 0.5, 1.5, 999],  # 12 duplicate minute
    ["2017-12-15T09:23:00+0530", 1, 2, 0.5, 1.5, 0],  # 13 ok (zero volume)
]
EXPECTED_SKIPS = [
    (2, "bad row"),
    (3, "bad time"),
    (4, "bad time"),
    (5, "not numeric"),
    (6, "not numeric"),
    (7, "negative volume"),
    (8, "bad volume"),
    (9, "bad price"),
    (10, "out of session"),
    (11, "out of session"),
    (12, "duplicate minute"),
]


def test_every_bad_json_row_is_skipped_with_its_reason() -> None:
    payload = {"status": "success", "data": {"candles": [*BAD_ROWS, "not a list", None]}}
    bars, skipped = parse_kite_json(json.dumps(payload), TOKEN)
    assert [b.start for b in bars] == [epoch(2017, 12, 15, 9, 15), epoch(2017, 12, 15, 9, 23)]
    assert bars[0].volume == 100  # the first of a duplicated minute is kept
    assert kinds(skipped) == [*EXPECTED_SKIPS, (14, "bad row"), (15, "bad row")]
    assert {s.kind for s in skipped} == set(SKIP_KINDS)
    by_row = {s.row: s.reason for s in skipped}
    assert "'yesterday'" in by_row[3]
    assert "minute boundary" in by_row[4]
    assert "open='abc'" in by_row[5]
    assert "-3" in by_row[7]
    assert "2017-12-15 09:14 IST" in by_row[10]
    assert "2017-12-15 09:15 IST" in by_row[12]


def test_every_bad_csv_row_is_skipped_with_the_same_reasons() -> None:
    lines = ["date,open,high,low,close,volume"]
    for row in BAD_ROWS:
        lines.append(",".join(str(v) for v in row))
    bars, skipped = parse_csv("\n".join(lines) + "\n,,,,,\n", TOKEN)
    assert [b.volume for b in bars] == [100, 0]
    assert kinds(skipped) == [*EXPECTED_SKIPS, (14, "bad row")]
    assert "missing" in skipped[-1].reason


def test_sessions_follow_the_segment() -> None:
    """22:00 is inside MCX's session and outside NSE's."""
    row = [["2026-11-24T22:00:00+0530", 1, 1, 1, 1, 5]]
    assert parse_kite_candles(row, MCX_TOKEN)[1] == []
    assert kinds(parse_kite_candles(row, TOKEN)[1]) == [(1, "out of session")]


# --- unusable files ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("{not json", "not JSON"),
        ('{"status": "error", "message": "Invalid token", "error_type": "TokenException"}',
         "Invalid token"),
        ('{"status": "success", "data": {}}', "no candle list"),
        ('"candles"', "no candle list"),
    ],
)  # fmt: skip
def test_unusable_json_files_raise(text: str, match: str) -> None:
    with pytest.raises(HistoryFileError, match=match):
        parse_kite_json(text, TOKEN)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "empty"),
        ("open,high,low,close,volume\n1,1,1,1,1\n", "no time column"),
        ("date,open,high,low,close\n2017-12-15 09:15,1,1,1,1\n", "missing columns volume"),
        ("2017-12-15 09:15,1,1\n", "3 columns"),
    ],
)
def test_unusable_csv_files_raise(text: str, match: str) -> None:
    with pytest.raises(HistoryFileError, match=match):
        parse_csv(text, TOKEN)


def test_binary_and_unsupported_files_raise(tmp_path: Path) -> None:
    junk = tmp_path / "1.csv"
    junk.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(HistoryFileError):
        load_history_file(junk, TOKEN)
    other = tmp_path / "1.txt"
    other.write_text("x")
    with pytest.raises(HistoryFileError, match="unsupported"):
        load_history_file(other, TOKEN)


# --- sessions -> baselines -----------------------------------------------------------------


def test_baseline_from_25_sessions_of_bars_keeps_the_latest_20() -> None:
    from core.bars import Bar

    days = [date(2026, 10, 1 + k) for k in range(25)]
    bars = [
        Bar(TOKEN, epoch(d.year, d.month, d.day, 9, 15) + 60 * slot, 1, 1, 1, 1, k + slot, 1)
        for k, d in enumerate(days)
        for slot in (0, 1, 374)
    ]
    b = baseline_from_bars(TOKEN, bars)
    assert b.session_dates == days[5:]
    assert expected(b, 0) == sum(range(5, 25)) / 20
    assert expected(b, 374) == sum(range(5, 25)) / 20 + 374
    assert expected(b, 2) == 0.0  # minutes without candles traded nothing
    with pytest.raises(ValueError, match="mixed"):
        session_volumes([bars[0], Bar(1, bars[0].start, 1, 1, 1, 1, 1, 1)])


# --- the baseline file ---------------------------------------------------------------------


def test_write_and_load_baselines_round_trip(tmp_path: Path) -> None:
    bars, _ = load_history_file(SAMPLE, TOKEN)
    baselines = {TOKEN: baseline_from_bars(TOKEN, bars), 256265: baseline_from_bars(256265, [])}
    path = tmp_path / "sub" / "baselines.jsonl"
    write_baselines(path, baselines)
    lines = path.read_text().splitlines()
    assert [json.loads(line)["token"] for line in lines] == [256265, TOKEN]  # token order
    assert load_baselines(path) == baselines
    assert [p.name for p in path.parent.iterdir()] == ["baselines.jsonl"]  # no temp left


def test_corrupt_baseline_lines_are_skipped_and_described(tmp_path: Path) -> None:
    bars, _ = load_history_file(SAMPLE, TOKEN)
    path = tmp_path / "b.jsonl"
    write_baselines(path, {TOKEN: baseline_from_bars(TOKEN, bars)})
    good = path.read_text()
    wrong_segment = json.loads(good)
    wrong_segment["token"] = 256265  # segment 9, but the baseline says 1
    path.write_text("{broken\n" + good + "\n" + json.dumps(wrong_segment) + "\n" + '{"token": 5}\n')
    skipped: list[str] = []
    loaded = load_baselines(path, skipped=skipped)
    assert list(loaded) == [TOKEN]
    assert [s.split(":")[0] for s in skipped] == ["line 1", "line 4", "line 5"]
    with pytest.raises(FileNotFoundError):
        load_baselines(tmp_path / "missing.jsonl")
