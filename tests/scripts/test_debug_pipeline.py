"""``debug_pipeline decode``: every input form, the JSON line layout, symbols, errors."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from core.frame_file import FrameWriter
from core.kite_protocol import HEARTBEAT, encode_frame, encode_ticks
from core.tick import Depth, DepthLevel, Tick, price_divisor
from scripts.debug_pipeline import main, parse_input

REPO = Path(__file__).resolve().parents[2]

#: The Redis tick:{token} hash fields, in the schema's order (DESIGN.md, Redis schema v1).
FIELDS = [
    "token", "symbol", "exchange", "mode", "last_price", "last_traded_quantity",
    "average_traded_price", "volume_traded", "total_buy_quantity", "total_sell_quantity",
    "open", "high", "low", "close", "change", "oi", "oi_day_high", "oi_day_low", "best_bid",
    "best_bid_qty", "best_ask", "best_ask_qty", "last_trade_time", "exchange_timestamp",
    "received_at",
]  # fmt: skip

CENTRALBK = 3813889  # NSE equity, in the instrument CSV below
NIFTY = 256265

INSTRUMENTS_CSV = (
    "instrument_token,exchange_token,tradingsymbol,name,last_price,expiry,strike,tick_size,"
    "lot_size,instrument_type,segment,exchange\n"
    "3813889,14898,CENTRALBK-BE,CENTRAL BANK OF INDIA,0.0,,0.0,0.05,1,EQ,NSE,NSE\n"
)

FULL = Tick(
    instrument_token=CENTRALBK,
    mode="full",
    tradable=True,
    last_price=61.25,
    last_traded_quantity=10,
    average_traded_price=61.1,
    volume_traded=123456,
    total_buy_quantity=1000,
    total_sell_quantity=2000,
    open=60.0,
    high=62.0,
    low=59.5,
    close=60.0,
    last_trade_time=1704087000,  # 2024-01-01 11:00:00 IST
    oi=0,
    oi_day_high=0,
    oi_day_low=0,
    exchange_timestamp=1704087001,
    depth=Depth.from_levels(
        (DepthLevel(500, 61.2, 4),), (DepthLevel(700, 61.3, 5),), price_divisor(1)
    ),
)
INDEX = Tick(
    instrument_token=NIFTY,
    mode="quote",
    tradable=False,
    last_price=21750.55,
    open=21650.0,
    high=21800.0,
    low=21600.1,
    close=21700.0,
)
FRAME_A = encode_ticks([FULL, INDEX])
FRAME_B = encode_ticks([FULL], "ltp")


def run(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> tuple[int, list[dict[str, Any]], str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines()], err


def check_full_line(row: dict[str, Any]) -> None:
    assert list(row) == FIELDS
    assert all(isinstance(v, str) for v in row.values())  # as in the Redis hash
    assert row["token"] == str(CENTRALBK)
    assert row["mode"] == "full"
    assert float(row["last_price"]) == 61.25
    assert row["volume_traded"] == "123456"
    assert (row["best_bid"], row["best_bid_qty"]) == ("61.2", "500")
    assert (row["best_ask"], row["best_ask_qty"]) == ("61.3", "700")
    assert float(row["change"]) == pytest.approx((61.25 - 60.0) * 100 / 60.0)
    assert row["last_trade_time"] == "2024-01-01T11:00:00+05:30"
    assert row["exchange_timestamp"] == "2024-01-01T11:00:01+05:30"


def test_recording(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "session.tfrec"
    writer = FrameWriter(path)
    writer.write(1704087002123, FRAME_A)  # 11:00:02.123 IST
    writer.write(1704087003000, HEARTBEAT)
    writer.write(1704087004000, FRAME_B)
    writer.close()
    code, rows, err = run(["decode", str(path), "--no-instruments"], capsys)
    assert code == 0
    assert [(r["token"], r["mode"]) for r in rows] == [
        (str(CENTRALBK), "full"),
        (str(NIFTY), "quote"),
        (str(CENTRALBK), "ltp"),
    ]
    check_full_line(rows[0])
    assert rows[0]["received_at"] == "2024-01-01T11:00:02.123+05:30"
    assert rows[0]["symbol"] == "" and rows[0]["exchange"] == "NSE"  # segment name
    assert rows[1]["exchange"] == "INDICES"
    assert (rows[1]["high"], rows[1]["low"], rows[1]["volume_traded"]) == ("21800.0", "21600.1", "")
    assert rows[2]["received_at"] == "2024-01-01T11:00:04.000+05:30"
    assert rows[2]["close"] == "" and rows[2]["best_bid"] == ""
    assert "recording input, 3 frames (1 heartbeats), 3 packets, 3 ticks" in err
    assert "errors" not in err


def test_torn_recording_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "torn.tfrec"
    writer = FrameWriter(path)
    writer.write(1, FRAME_A)
    writer.write(2, FRAME_B)
    writer.close()
    path.write_bytes(path.read_bytes()[:-3])
    code, rows, err = run(["decode", str(path), "--no-instruments"], capsys)
    assert code == 0 and len(rows) == 2
    assert "truncated_record=1" in err


def test_hex_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spaced = " ".join(FRAME_B.hex()[i : i + 2] for i in range(0, len(FRAME_B.hex()), 2))
    text = f"# frames from the ingestor log\n{FRAME_A.hex()}\n\n00\n0x{FRAME_B.hex().upper()}\n"
    text += spaced + "\n"
    path = tmp_path / "frames.hex"
    path.write_text(text)
    code, rows, err = run(["decode", str(path), "--no-instruments"], capsys)
    assert code == 0
    assert [r["mode"] for r in rows] == ["full", "quote", "ltp", "ltp"]
    check_full_line(rows[0])
    assert all(r["received_at"] == "" for r in rows)
    assert "hex input, 4 frames (1 heartbeats)" in err


def test_base64_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "frames.b64"
    lines = [base64.b64encode(FRAME_A).decode(), base64.b64encode(HEARTBEAT).decode(), "!!!"]
    path.write_text("\n".join(lines) + "\n")
    code, rows, err = run(["decode", str(path), "--no-instruments"], capsys)
    assert code == 0
    assert [r["mode"] for r in rows] == ["full", "quote"]
    check_full_line(rows[0])
    assert "base64 input" in err and "bad_line=1" in err and "line 3" in err


def test_raw_binary_frame(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "frame.bin"
    path.write_bytes(FRAME_A)
    code, rows, err = run(["decode", str(path), "--no-instruments"], capsys)
    assert code == 0
    assert [r["token"] for r in rows] == [str(CENTRALBK), str(NIFTY)]
    check_full_line(rows[0])
    assert "binary input, 1 frames" in err


def test_decode_errors_are_summarised_not_fatal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.hex"
    odd = encode_frame([b"\x01" * 164, encode_ticks([FULL])[4:]])  # legacy 164 + a full one
    path.write_text(f"{odd.hex()}\n{FRAME_A.hex()[:-8]}\n")  # second frame cut short
    code, rows, err = run(["decode", str(path), "--no-instruments"], capsys)
    assert code == 0
    assert [r["mode"] for r in rows] == ["full", "full"]
    assert "unknown_length=1" in err and "truncated_frame=1" in err


def test_symbols_from_the_instrument_master(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("config.instruments")
    csv = tmp_path / "instruments.csv"
    csv.write_text(INSTRUMENTS_CSV)
    frames = tmp_path / "frames.hex"
    frames.write_text(FRAME_A.hex() + "\n")
    code, rows, _ = run(["decode", str(frames), "--instruments", str(csv)], capsys)
    assert code == 0
    assert (rows[0]["symbol"], rows[0]["exchange"]) == ("CENTRALBK-BE", "NSE")
    assert (rows[1]["symbol"], rows[1]["exchange"]) == ("", "INDICES")  # not in the master


def test_missing_instrument_master_falls_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    frames = tmp_path / "frames.hex"
    frames.write_text(FRAME_A.hex() + "\n")
    missing = tmp_path / "nope.csv"
    code, rows, err = run(["decode", str(frames), "--instruments", str(missing)], capsys)
    assert code == 0
    assert rows[0]["symbol"] == "" and rows[0]["exchange"] == "NSE"
    assert "symbols left empty" in err


def test_token_filter(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    frames = tmp_path / "frames.hex"
    frames.write_text(FRAME_A.hex() + "\n")
    _, rows, _ = run(["decode", str(frames), "--no-instruments", "--token", str(NIFTY)], capsys)
    assert [r["token"] for r in rows] == [str(NIFTY)]


def test_symbol_filter(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("config.instruments")
    frames = tmp_path / "frames.hex"
    frames.write_text(FRAME_A.hex() + "\n")
    csv = tmp_path / "instruments.csv"
    csv.write_text(INSTRUMENTS_CSV)
    argv = ["decode", str(frames), "--instruments", str(csv), "--symbol", "centralbk-be"]
    _, rows, _ = run(argv, capsys)
    assert [r["token"] for r in rows] == [str(CENTRALBK)]


def test_unreadable_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, rows, err = run(["decode", str(tmp_path / "missing.bin")], capsys)
    assert code == 1 and rows == [] and "cannot read" in err


def detect(data: bytes) -> tuple[str, list[bytes]]:
    parsed = parse_input(io.BytesIO(data))
    return parsed.kind, [f.frame for f in parsed.frames]


def test_input_detection() -> None:
    assert detect(b"") == ("empty", [])
    assert detect(HEARTBEAT) == ("binary", [HEARTBEAT])
    assert detect(FRAME_A) == ("binary", [FRAME_A])
    assert detect(b"0001\n") == ("hex", [b"\x00\x01"])  # hex wins where both would parse
    assert detect(b"AAE=\n") == ("base64", [b"\x00\x01"])
    assert detect(b"AAE\n")[0] == "base64" and detect(b"-_8=\n")[1] == [b"\xfb\xff"]
    assert detect(FRAME_A.hex().encode()) == ("hex", [FRAME_A])


def test_a_subcommand_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2
    assert "COMMAND" in capsys.readouterr().err


def test_stdin_via_subprocess() -> None:
    """The real entry point, reading a raw frame from stdin."""
    result = subprocess.run(
        [sys.executable, "-m", "scripts.debug_pipeline", "decode", "-", "--no-instruments"],
        input=FRAME_A,
        capture_output=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    rows = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert [r["token"] for r in rows] == [str(CENTRALBK), str(NIFTY)]
    check_full_line(rows[0])
    assert b"2 ticks" in result.stderr
