"""``kite_simulator --scenarios``: ground truth out, scripted episodes on the wire.

A small simulated history (``scripts.generate_history``) is the ``--history``; the
labels must be sized on the baseline ``scripts.bootstrap_baselines`` builds from it, and
the served ticks, folded into bars by the worker's volume engine, must trade exactly the
planned volume in every scripted minute.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from core.baselines import expected_profile
from core.kite_protocol import decode_frame, mode_message, subscribe_message
from core.sessions import slot_of
from core.timeutil import IST
from core.volume_engine import TokenVolumeState, advance_watermark, apply_tick
from scripts.bootstrap_baselines import bootstrap
from scripts.generate_history import generate, weekdays_ending
from scripts.kite_simulator import main
from scripts.services import free_port

API_KEY, ACCESS_TOKEN = "sc-key", "sc-token"
DAY = date(2026, 11, 24)
START = datetime(2026, 11, 24, 9, 15, tzinfo=IST)
RELIANCE, INFY = 738561, 408065
REPO = Path(__file__).resolve().parents[2]
SCENARIO = {
    "date": DAY.isoformat(),
    "episodes": [
        {"token": RELIANCE, "kind": "volume_spike", "signal": "BUY", "at": "09:38"},
        {"symbol": "NSE:INFY", "kind": "reversal", "signal": "SELL", "at": "09:40"},
    ],
}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("scenario-cli")
    history = root / "history"
    generate(history, [RELIANCE, INFY], weekdays_ending(DAY - timedelta(days=1), 3), seed=4)
    scenario = root / "scenario.json"
    scenario.write_text(json.dumps(SCENARIO))
    return {"root": root, "history": history, "scenario": scenario}


def argv(files: dict[str, Path], *extra: str) -> list[str]:
    return ["--tokens", "3", "--start", START.isoformat(), "--seed", "9",
            "--scenarios", str(files["scenario"]), "--history", str(files["history"]),
            *extra]  # fmt: skip


def test_labels_are_sized_on_the_bootstrapped_baseline(files: dict[str, Path]) -> None:
    out = files["root"] / "labels.json"
    assert main([*argv(files), "--labels-out", str(out), "--labels-only"]) == 0
    labels = json.loads(out.read_text())
    assert labels["format"] == "tickflow-scenario-labels/1" and labels["seed"] == 9
    spike, reversal = labels["episodes"]
    assert (spike["symbol"], reversal["symbol"]) == ("RELIANCE", "INFY")
    assert [a["id"] for a in spike["alerts"]] == [
        f"{RELIANCE}:volume_spike:BUY:{int(datetime(2026, 11, 24, 9, 38, tzinfo=IST).timestamp())}"
    ]
    assert [a["pattern"] for a in reversal["alerts"]] == ["reversal"]
    # The lead-in trades the baseline's expected volume: the worker's ratio is then 1.
    profile = expected_profile(bootstrap([files["history"]]).baselines[RELIANCE])
    assert profile is not None
    for minute in spike["minutes"][:5]:
        start = int(datetime.fromisoformat(minute["bar_start"]).timestamp())
        slot = slot_of(1, start)
        assert slot is not None and minute["volume"] == round(profile[slot])


def test_a_scenario_that_cannot_be_labelled_is_refused(files: dict[str, Path]) -> None:
    bad = files["root"] / "bad.json"
    bad.write_text(json.dumps({"date": DAY.isoformat(), "regime": "HIGH", "episodes": [
        {"token": RELIANCE, "kind": "hidden_accumulation", "at": "09:38"}]}))  # fmt: skip
    labels = files["root"] / "never.json"
    with pytest.raises(SystemExit, match="not one hidden_accumulation"):
        main(["--tokens", "3", "--start", START.isoformat(), "--scenarios", str(bad),
              "--history", str(files["history"]), "--labels-out", str(labels),
              "--labels-only"])  # fmt: skip
    assert not labels.exists()
    with pytest.raises(SystemExit):  # argparse: labels need a scenario
        main(["--labels-only", "--labels-out", str(labels)])


def test_the_served_market_trades_the_planned_minutes(files: dict[str, Path]) -> None:
    """The real entry point at 600x: the ticks of the spike token, as the ingestor would
    receive them, close bars of exactly the planned volumes."""
    port = free_port()
    labels_path = files["root"] / "served-labels.json"
    env = {
        **os.environ,
        "TICKFLOW_KITE_API_KEY": API_KEY,
        "TICKFLOW_KITE_ACCESS_TOKEN": ACCESS_TOKEN,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "scripts.kite_simulator", "--port", str(port), "--speed", "600",
         *argv(files), "--labels-out", str(labels_path)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        frames = asyncio.run(receive(port, proc, seconds=5.0))
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, output.decode()
    assert "2 scenario episodes on 2 tokens" in output.decode()
    planned = {
        int(datetime.fromisoformat(m["bar_start"]).timestamp()): m["volume"]
        for m in json.loads(labels_path.read_text())["episodes"][0]["minutes"]
    }
    ticks = [t for f in frames for t in decode_frame(f)]
    state = TokenVolumeState(RELIANCE)
    bars: dict[int, int] = {}
    for offset, tick in enumerate(ticks):
        stamp = tick.exchange_timestamp or 0
        for bar in apply_tick(state, 1, offset, stamp, tick.last_price, tick.volume_traded) + (
            advance_watermark(state, 1, stamp - 5)
        ):
            bars[bar.start] = bar.volume
    # The first minute seen is partial (its first tick only sets the volume base).
    first = (ticks[0].exchange_timestamp or 0) // 60 * 60
    served = {start: v for start, v in bars.items() if start in planned and start > first}
    assert len(served) >= 20, (sorted(bars), sorted(planned))
    assert served == {start: planned[start] for start in served}


async def receive(port: int, proc: subprocess.Popen[bytes], seconds: float) -> list[Any]:
    """Full-mode frames of the spike token for ``seconds`` (from the subscription on)."""
    deadline = time.monotonic() + 20
    while True:
        try:
            ws = await connect(
                f"ws://127.0.0.1:{port}/?api_key={API_KEY}&access_token={ACCESS_TOKEN}"
            )
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise
            await asyncio.sleep(0.1)
    frames: list[bytes] = []
    async with ws:
        await ws.send(subscribe_message([RELIANCE]))
        await ws.send(mode_message("full", [RELIANCE]))
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            try:
                message = await asyncio.wait_for(ws.recv(), left)
            except TimeoutError:
                break
            if isinstance(message, bytes) and len(message) > 1:
                frames.append(message)
    return frames
