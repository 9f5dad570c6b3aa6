"""``debug_pipeline explain`` against a real broker (and Redis for the regime).

The bars are a planned volume-spike episode (``core.scenarios``), published to a fresh
volume topic in the worker's record layout, interleaved with another token's bars and
with one bar re-emitted (at-least-once), so the command must filter by token, fold in
order and ignore the copy. Expected values come from outside the code under test: pc
by hand from the closes, RSI from TA-Lib, the ratio as published.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
import talib
from aiokafka import AIOKafkaProducer

from core.bars import Bar
from core.indicators import backfill
from core.scenarios import Episode, Scenario, plan_episode, realized_ratios
from core.timeutil import IST
from scripts.debug_pipeline import main
from topology.topics import TopicSpec, ensure_topics

REPO = Path(__file__).resolve().parents[2]
TOKEN = 738561  # RELIANCE
OTHER = 408065  # INFY
TARGET = datetime(2026, 11, 24, 10, 23, tzinfo=IST)
TICK = 0.05


def expected_volume(start: int) -> float:
    return 5000.0 + (start // 60 % 7) * 150


def planned_bars(token: int, base: float) -> tuple[list[Bar], list[float]]:
    """A volume-spike episode's bars and the ratios the worker would publish."""
    episode = Episode(token, "volume_spike", int(TARGET.timestamp()), "BUY", name="spike")
    plan = plan_episode(episode, Scenario(()), expected_volume, base_price=base, tick=TICK)
    starts = [m.start for m in plan.minutes]
    ratios = realized_ratios(starts, [m.volume for m in plan.minutes], 1, expected_volume, 5)
    base_n = round(base / TICK)
    bars = []
    for minute in plan.minutes:
        close = round(base_n * minute.close) * TICK
        bars.append(Bar(token, minute.start, close, close, close, close, minute.volume, 6))
    return bars, ratios


def record(bar: Bar, ratio: float) -> bytes:
    vol = {"bar_start": str(bar.start), "volume_ratio": repr(ratio), "baseline_source": "x"}
    return json.dumps({"bar": bar.to_dict(), "vol": vol}).encode()


def history(token: int, first_start: int, close: float, count: int = 60) -> list[Bar]:
    rng = np.random.default_rng(token)
    bars = []
    for i in range(count):
        close = round(close * (1 + rng.normal(0, 0.001)), 2)
        start = first_start - 86_400 + i * 60  # the previous day
        bars.append(Bar(token, start, close, close + 0.5, close - 0.5, close, 1000, 1))
    return bars


async def publish(bootstrap: str, topic: str, items: list[tuple[int, bytes]]) -> None:
    await ensure_topics(bootstrap, [TopicSpec(topic, 4)])
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for token, value in items:
            await producer.send(topic, value, key=str(token).encode())
        await producer.flush()
    finally:
        await producer.stop()


@pytest.fixture(scope="module")
def topics(broker: Any) -> dict[str, Any]:
    """The volume and baselines topics of this module, filled once."""
    import asyncio

    suffix = uuid.uuid4().hex[:8]
    volume, baselines = f"volume-{suffix}", f"baselines-{suffix}"
    bars, ratios = planned_bars(TOKEN, 1500.0)
    other, other_ratios = planned_bars(OTHER, 1540.0)
    items: list[tuple[int, bytes]] = []
    for n, (bar, ratio) in enumerate(zip(bars, ratios, strict=True)):
        items.append((TOKEN, record(bar, ratio)))
        items.append((OTHER, record(other[n], other_ratios[n])))
        if n == 10:  # a re-emitted bar (at-least-once): must change nothing
            items.append((TOKEN, record(bars[9], ratios[9])))
    warm = backfill(history(TOKEN, bars[0].start, 1500.0))
    asyncio.run(publish(broker.bootstrap, volume, items))
    baseline_record = {"token": TOKEN, "baseline": {}, "indicators": warm.to_dict()}
    asyncio.run(
        publish(broker.bootstrap, baselines, [(TOKEN, json.dumps(baseline_record).encode())])
    )
    return {
        "broker": broker.url,
        "volume": volume,
        "baselines": baselines,
        "bars": bars,
        "ratios": ratios,
        "history": history(TOKEN, bars[0].start, 1500.0),
    }


def explain_json(
    topics: dict[str, Any], capsys: pytest.CaptureFixture[str], *extra: str
) -> tuple[int, dict[str, Any] | None, str]:
    argv = ["explain", "--token", str(TOKEN), "--broker", topics["broker"],
            "--topic", topics["volume"], "--baselines-topic", topics["baselines"],
            "--regime", "NORMAL", "--json", *extra]  # fmt: skip
    code = main(argv)
    out, err = capsys.readouterr()
    return code, json.loads(out) if code == 0 else None, err


def test_the_target_bar_alerts_volume_spike_and_nothing_else(
    topics: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    code, got, err = explain_json(topics, capsys, "--at", "2026-11-24T10:23:00", "--no-warm")
    assert code == 0, err
    assert got is not None
    bars, ratios = topics["bars"], topics["ratios"]
    index = [b.start for b in bars].index(int(TARGET.timestamp()))
    closes = np.array([b.close for b in bars[: index + 1]])
    inputs = got["inputs"]
    assert inputs["r"] == pytest.approx(ratios[index], rel=1e-12)
    assert inputs["pc"] == pytest.approx((closes[-1] / closes[-2] - 1) * 100, abs=1e-6)
    assert inputs["rsi"] == pytest.approx(talib.RSI(closes, 14)[-1], rel=1e-9)
    assert got["bars_folded"] == index  # the re-emitted copy was not folded twice
    assert got["warm_indicators"] is False
    verdicts = {name: check["alerts"] for name, check in got["patterns"].items()}
    assert verdicts == {name: name == "volume_spike" for name in verdicts}
    spike = got["patterns"]["volume_spike"]
    assert spike["signal"] == "BUY" and spike["blocked_by"] is None
    assert {c["name"]: c["passed"] for c in spike["conditions"]} == {
        "r >= T": True, "abs(pc) >= min_move": True, "pc > 0": True, "pc < 0": False,
    }  # fmt: skip
    breakout = got["patterns"]["volume_breakout"]
    failed = [c["name"] for c in breakout["conditions"] if not c["passed"]]
    assert failed == ["abs(pc) > move*m", "pc < 0"]
    assert got["bar"]["instrument_token"] == TOKEN and got["source"]["offset"] >= 0


def test_warm_indicator_state_from_the_baselines_topic_is_used(
    topics: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    code, got, err = explain_json(topics, capsys, "--at", "2026-11-24T10:23:00")
    assert code == 0, err
    assert got is not None and got["warm_indicators"] is True
    bars = [*topics["history"], *topics["bars"]]
    closes = np.array([b.close for b in bars if b.start <= TARGET.timestamp()])
    assert got["inputs"]["rsi"] == pytest.approx(talib.RSI(closes, 14)[-1], rel=1e-9)


def test_cooldown_and_time_of_day_on_the_latest_day(
    topics: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    # One minute after the spike: the window still holds it (r high), pc is 0: no signal.
    code, got, err = explain_json(topics, capsys, "--at", "10:24", "--no-warm")
    assert code == 0, err
    assert got is not None and got["bar_start"] == "2026-11-24T10:24:00+05:30"
    assert got["cooldowns"] == {
        "volume_spike:BUY": {
            "last_alert": "2026-11-24T10:24:00+05:30",
            "until": "2026-11-24T10:29:00+05:30",
        }
    }
    assert got["inputs"]["pc"] == 0.0
    assert not any(check["alerts"] for check in got["patterns"].values())


def test_a_regime_changes_the_verdict(
    topics: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--at", "2026-11-24T10:23:00", "--no-warm"]
    code, got, _ = explain_json(topics, capsys, *argv[:2], "--regime", "HIGH", argv[2])
    assert code == 0 and got is not None
    spike = got["patterns"]["volume_spike"]
    assert spike["inputs"]["T"] == pytest.approx(2.2 * 1.3) and spike["alerts"] is False


def test_no_bar_at_that_minute(topics: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = explain_json(topics, capsys, "--at", "2026-11-24T12:00:00")
    assert code == 2
    assert "no bar at 2026-11-24T12:00:00+05:30" in err and "10:29:00" in err


def test_unknown_topic(topics: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["explain", "--token", str(TOKEN), "--at", "10:23", "--broker", topics["broker"],
                 "--topic", f"nope-{uuid.uuid4().hex[:6]}", "--timeout", "10"])  # fmt: skip
    assert code == 1
    assert "does not exist" in capsys.readouterr().err


def test_human_output_and_the_regime_from_redis(
    topics: dict[str, Any], redis_endpoint: Any
) -> None:
    """The real entry point, settings from the environment, regime from Redis."""
    prefix = f"ex{uuid.uuid4().hex[:6]}:"
    client = redis.Redis.from_url(redis_endpoint.url)
    client.hset(f"{prefix}regime", mapping={"vix": "16.5", "regime": "NORMAL",
                                            "event_time": "2026-11-24T10:20:00+05:30"})  # fmt: skip
    client.close()
    env = {
        "PATH": "/usr/bin:/bin",
        "TICKFLOW_BROKER_URL": topics["broker"],
        "TICKFLOW_TOPIC_VOLUME": topics["volume"],
        "TICKFLOW_TOPIC_BASELINES": topics["baselines"],
        "TICKFLOW_REDIS_URL": redis_endpoint.url,
        "TICKFLOW_REDIS_KEY_PREFIX": prefix,
        "COLUMNS": "200",
    }
    result = subprocess.run(
        [sys.executable, "-m", "scripts.debug_pipeline", "explain", "--token", str(TOKEN),
         "--at", "10:23", "--date", "2026-11-24"],
        capture_output=True, cwd=REPO, env=env, timeout=60, check=False,
    )  # fmt: skip
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr.decode()
    assert "ALERT BUY" in out and "volume_spike" in out
    assert "regime NORMAL (Redis regime hash)" in out
    assert "hidden_accumulation" in out and "r < max_ratio" in out
