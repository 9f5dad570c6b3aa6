"""Greeks, regime and indicators end to end: simulator -> ingestor -> broker -> worker ->
Redis, every piece real, checked against oracles outside the project.

- ``greeks:{token}``: the option and underlying prices a hash was computed from must be
  prices the simulator actually sent (the official ``kiteconnect`` parser reads them),
  and vollib, given those prices, the strike and expiry from the master and the
  hash's event time, must reproduce its IV and Greeks.
- ``regime``: a VIX value the simulator sent, classified by the spec's thresholds.
- ``ind:{token}``: the OBV and the session VWAP after the last bar, recomputed with
  TA-Lib and by hand from the bars in ``bars:1m:{token}``.
"""

from __future__ import annotations

import asyncio
import json
import math
import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import date, datetime, time, timedelta
from pathlib import Path

import numpy as np
import pytest
import redis.asyncio as aioredis
import talib
from kiteconnect import KiteTicker
from vollib.black_scholes import black_scholes
from vollib.black_scholes.greeks import analytical
from vollib.black_scholes.implied_volatility import implied_volatility

from config.instruments import InstrumentMaster
from core.kite_protocol import encode_frame
from core.market_simulator import MarketSimulator, select_universe
from core.timeutil import IST
from scripts.kite_simulator import ClientSession, KiteSimulatorServer
from scripts.services import free_port
from tests.e2e.conftest import ProcessGroup

pytestmark = pytest.mark.e2e

OFFICIAL = KiteTicker.__new__(KiteTicker)
RATE = 0.065  # the risk_free_rate default


class RecordingServer(KiteSimulatorServer):
    """The simulator, remembering every packet it sent per token (the ground truth)."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.history: dict[int, list[bytes]] = defaultdict(list)

    async def _send_packets(
        self, session: ClientSession, tokens: Sequence[int], packets: Sequence[bytes]
    ) -> None:
        for token, packet in zip(tokens, packets, strict=True):
            self.history[token].append(packet)
        await super()._send_packets(session, tokens, packets)


def sent_prices(packets: list[bytes], with_mid: bool) -> set[float]:
    prices: set[float] = set()
    for packet in packets:
        (tick,) = OFFICIAL._parse_binary(encode_frame([packet]))
        prices.add(tick["last_price"])
        depth = tick.get("depth")
        if with_mid and depth:
            bid, ask = depth["buy"][0], depth["sell"][0]
            if bid["quantity"] and ask["quantity"]:
                prices.add((bid["price"] + ask["price"]) / 2)
    return prices


def years_to_expiry(expiry: date, event_time: datetime) -> float:
    close = datetime.combine(expiry, time(15, 30), tzinfo=IST)
    return (close - event_time).total_seconds() / (365 * 86400)


async def compare_indicators(
    client: aioredis.Redis, prefix: str, tokens: list[int]
) -> tuple[int, list[tuple[int, int, str]]]:
    """Tokens whose ind hash is at the stream's last bar (after at least 4 bars) and
    agrees with TA-Lib's OBV and a hand-computed VWAP; raises on a disagreement."""
    compared = 0
    seen: list[tuple[int, int, str]] = []
    for token in tokens:
        ind = await client.hgetall(f"{prefix}ind:{token}")
        entries = await client.xrange(f"{prefix}bars:1m:{token}")
        seen.append((token, len(entries), ind.get("bar_start", "")))
        if not ind or len(entries) < 4:
            continue
        last_ms = int(entries[-1][0].split("-")[0])
        if int(datetime.fromisoformat(ind["bar_start"]).timestamp()) * 1000 != last_ms:
            continue  # the indicator agent is a bar behind the stream: not comparable yet
        bars = {name: np.array([float(f[name]) for _, f in entries])
                for name in ("high", "low", "close", "volume")}  # fmt: skip
        assert int(ind["obv"]) == int(talib.OBV(bars["close"], bars["volume"])[-1]), token
        if bars["volume"].sum() > 0:
            typical = (bars["high"] + bars["low"] + bars["close"]) / 3
            vwap = float((typical * bars["volume"]).sum() / bars["volume"].sum())
            assert math.isclose(float(ind["vwap"]), vwap, rel_tol=1e-9), token
        compared += 1
    return compared, seen


async def test_greeks_regime_and_indicators_agree_with_outside_oracles(
    broker, redis_endpoint, tmp_path: Path, processes: ProcessGroup
):
    suffix = uuid.uuid4().hex[:8]
    prefix = f"an{suffix}:"
    master = InstrumentMaster.load()
    universe = select_universe(master, 120)
    tokens = [i.instrument_token for i in universe]
    options = [i for i in universe if i.is_option]
    start = datetime(2026, 11, 24, 9, 20, tzinfo=IST)
    market = MarketSimulator(universe, seed=5, start=start)
    server = RecordingServer(market, port=0, api_key="an-key", access_token="an-token", speed=30.0)
    await server.start()
    topics = {
        f"TICKFLOW_TOPIC_{name.upper()}": f"{name}-{suffix}"
        for name in ("ticks", "bars", "volume", "baselines", "indicators", "alerts")
    }
    env = {
        **topics,
        "TICKFLOW_BROKER_URL": broker.url,
        "TICKFLOW_REDIS_URL": redis_endpoint.url,
        "TICKFLOW_APP_ID": f"an-{suffix}",
        "TICKFLOW_TOPIC_PARTITIONS": "4",
        "TICKFLOW_REDIS_KEY_PREFIX": prefix,
        "TICKFLOW_STATE_DIR": str(tmp_path / "state"),
        "TICKFLOW_WORKER_WEB_PORT": str(free_port()),
        "TICKFLOW_INGESTOR_METRICS_PORT": str(free_port()),
        "TICKFLOW_KITE_WS_URL": server.url,
        "TICKFLOW_KITE_API_KEY": "an-key",
        "TICKFLOW_KITE_ACCESS_TOKEN": "an-token",
        "TICKFLOW_KITE_TOKENS": json.dumps(tokens),
    }
    client = aioredis.Redis.from_url(redis_endpoint.url, decode_responses=True)
    worker_args = ["-m", "faust", "-A", "topology", "worker", "-l", "info",
                   "--web-port", env["TICKFLOW_WORKER_WEB_PORT"]]  # fmt: skip
    try:
        worker = processes.start("worker", worker_args, env)
        ingestor = processes.start("ingestor", ["-m", "scripts.run_ingestor"], env)
        assert ingestor.poll() is None, processes.log_tail("ingestor")
        # Let the market run until the worker has mirrored seven simulated minutes of
        # NIFTY (30x speed; start-up time varies with the machine's load).
        deadline = asyncio.get_running_loop().time() + 120
        until = (start + timedelta(minutes=7)).timestamp()
        while asyncio.get_running_loop().time() < deadline:
            stamp = await client.hget(f"{prefix}tick:256265", "exchange_timestamp")
            if stamp and datetime.fromisoformat(stamp).timestamp() >= until:
                break
            await asyncio.sleep(0.5)
        assert worker.poll() is None, processes.log_tail("worker")
        server.pause_market()
        await asyncio.sleep(3)  # the last flush lands

        # --- Greeks --------------------------------------------------------------------
        checked = 0
        for inst in options:
            stored = await client.hgetall(f"{prefix}greeks:{inst.instrument_token}")
            assert stored, f"no greeks for {inst.tradingsymbol}"
            assert "nan" not in json.dumps(stored).lower()
            if stored["error"]:
                assert stored["iv"] == stored["delta"] == "", stored
                continue
            under = int(stored["underlying_token"])
            assert under == master.underlying_token(inst.instrument_token)
            price, spot = float(stored["option_price"]), float(stored["underlying_price"])
            assert price in sent_prices(server.history[inst.instrument_token], with_mid=True)
            assert spot in sent_prices(server.history[under], with_mid=False)
            assert inst.expiry is not None and inst.strike
            when = datetime.fromisoformat(stored["event_time"])
            t = years_to_expiry(inst.expiry, when)
            assert float(stored["time_to_expiry_years"]) == pytest.approx(t, rel=1e-9)
            flag = "c" if inst.option_type == "CE" else "p"
            iv = implied_volatility(price, spot, inst.strike, t, RATE, flag)
            assert float(stored["iv"]) == pytest.approx(iv, rel=1e-6)
            assert black_scholes(flag, spot, inst.strike, t, RATE, float(stored["iv"])) == (
                pytest.approx(price, rel=1e-8)
            )
            for name in ("delta", "gamma", "theta", "vega", "rho"):
                want = getattr(analytical, name)(flag, spot, inst.strike, t, RATE, iv)
                assert float(stored[name]) == pytest.approx(want, rel=1e-6, abs=1e-9), name
            checked += 1
        assert checked >= len(options) // 2, f"only {checked} of {len(options)} solvable"

        # --- regime --------------------------------------------------------------------
        regime = await client.hgetall(f"{prefix}regime")
        vix = float(regime["vix"])
        assert vix in sent_prices(server.history[264969], with_mid=False)
        expected = "LOW" if vix < 15 else "NORMAL" if vix < 20 else "HIGH" if vix < 25 else "PANIC"
        assert regime["regime"] == expected

        # --- indicators (bar rate: poll until the bar stages caught up) ------------------
        deadline = asyncio.get_running_loop().time() + 60
        while True:
            compared, seen = await compare_indicators(client, prefix, tokens)
            if compared >= 20 or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(1)
        assert compared >= 20, f"only {compared} comparable: {seen}"
    finally:
        await client.aclose()
        await server.stop()
