"""Simulator -> ingestor -> broker -> worker -> Redis, every piece real.

The simulator runs in the test process (so the test can read what it actually sent);
the ingestor and the Faust worker are separate processes, started the way users start
them. The oracle for the expected Redis values is the official ``kiteconnect`` parser
applied to the last packet the simulator sent for each token.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
import uuid
from datetime import datetime
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from kiteconnect import KiteTicker
from prometheus_client.parser import text_string_to_metric_families

from config.instruments import InstrumentMaster
from core.kite_protocol import encode_frame
from core.market_simulator import MarketSimulator, select_universe
from core.timeutil import IST
from scripts.kite_simulator import KiteSimulatorServer
from scripts.services import free_port
from tests.e2e.conftest import ProcessGroup

pytestmark = pytest.mark.e2e

UNIVERSE = 120
OFFICIAL = KiteTicker.__new__(KiteTicker)


def expected_fields(packet: bytes) -> dict[str, float | int | str]:
    """What tick:{token} must hold, per the official parser of the same packet."""
    (official,) = OFFICIAL._parse_binary(encode_frame([packet]))
    fields: dict[str, float | int | str] = {
        "mode": official["mode"],
        "last_price": official["last_price"],
    }
    for name in (
        "last_traded_quantity",
        "average_traded_price",
        "volume_traded",
        "total_buy_quantity",
        "total_sell_quantity",
        "oi",
        "change",
    ):
        if name in official:
            fields[name] = official[name]
    for name, value in official.get("ohlc", {}).items():
        fields[name] = value
    if "exchange_timestamp" in official and official["exchange_timestamp"] is not None:
        # The official client returns a naive host-local datetime: back to epoch seconds.
        fields["exchange_timestamp"] = int(official["exchange_timestamp"].timestamp())
    depth = official.get("depth")
    if depth:
        fields["best_bid"] = depth["buy"][0]["price"]
        fields["best_bid_qty"] = depth["buy"][0]["quantity"]
        fields["best_ask"] = depth["sell"][0]["price"]
        fields["best_ask_qty"] = depth["sell"][0]["quantity"]
    return fields


def mismatches(expected: dict[str, float | int | str], stored: dict[str, str]) -> list[str]:
    problems = []
    for name, want in expected.items():
        got = stored.get(name)
        if not got:
            problems.append(f"{name} missing")
        elif name == "mode":
            if got != want:
                problems.append(f"mode {got} != {want}")
        elif name == "exchange_timestamp":
            if not got or int(datetime.fromisoformat(got).timestamp()) != want:
                problems.append(f"exchange_timestamp {got} != {want}")
        elif float(got) != pytest.approx(float(want), rel=1e-12, abs=1e-9):
            problems.append(f"{name} {got} != {want}")
    return problems


async def wait_for_exact_mirror(
    client: aioredis.Redis,
    prefix: str,
    server: KiteSimulatorServer,
    tokens: list[int],
    timeout: float,
) -> dict[int, list[str]]:
    deadline = time.monotonic() + timeout
    while True:
        expected = {token: expected_fields(server.last_sent[token]) for token in tokens}
        pipe = client.pipeline(transaction=False)
        for token in tokens:
            pipe.hgetall(f"{prefix}tick:{token}")
        stored = await pipe.execute()
        wrong = {
            token: mismatches(expected[token], hash_)
            for token, hash_ in zip(tokens, stored, strict=True)
        }
        wrong = {token: problems for token, problems in wrong.items() if problems}
        if not wrong or time.monotonic() > deadline:
            return wrong
        await asyncio.sleep(0.5)


async def test_redis_holds_the_last_published_values_of_every_simulated_token(
    broker, redis_endpoint, tmp_path: Path, processes: ProcessGroup
):
    suffix = uuid.uuid4().hex[:8]
    prefix = f"e2e{suffix}:"
    master = InstrumentMaster.load()
    universe = select_universe(master, UNIVERSE)
    tokens = [i.instrument_token for i in universe]
    start = datetime(2026, 11, 24, 9, 20, tzinfo=IST)
    market = MarketSimulator(universe, seed=11, start=start)
    server = KiteSimulatorServer(
        market, port=0, api_key="e2e-key", access_token="e2e-token", speed=30.0
    )
    await server.start()
    env = {
        "TICKFLOW_BROKER_URL": broker.url,
        "TICKFLOW_REDIS_URL": redis_endpoint.url,
        "TICKFLOW_APP_ID": f"e2e-{suffix}",
        "TICKFLOW_TOPIC_TICKS": f"ticks-{suffix}",
        "TICKFLOW_TOPIC_PARTITIONS": "4",
        "TICKFLOW_REDIS_KEY_PREFIX": prefix,
        "TICKFLOW_STATE_DIR": str(tmp_path / "state"),
        "TICKFLOW_WORKER_WEB_PORT": str(free_port()),
        "TICKFLOW_INGESTOR_METRICS_PORT": str(free_port()),
        "TICKFLOW_KITE_WS_URL": server.url,
        "TICKFLOW_KITE_API_KEY": "e2e-key",
        "TICKFLOW_KITE_ACCESS_TOKEN": "e2e-token",
        "TICKFLOW_KITE_TOKENS": json.dumps(tokens),
    }
    client = aioredis.Redis.from_url(redis_endpoint.url, decode_responses=True)
    try:
        worker = processes.start(
            "worker",
            [
                "-m",
                "faust",
                "-A",
                "topology",
                "worker",
                "-l",
                "info",
                "--web-port",
                env["TICKFLOW_WORKER_WEB_PORT"],
            ],
            env,
        )
        ingestor = processes.start("ingestor", ["-m", "scripts.run_ingestor"], env)
        # Let the market run: 30x speed, so about six simulated minutes.
        await asyncio.sleep(12)
        assert worker.poll() is None, processes.log_tail("worker")
        assert ingestor.poll() is None, processes.log_tail("ingestor")
        server.pause_market()
        assert set(server.last_sent) == set(tokens), "every token was sent at least once"
        wrong = await wait_for_exact_mirror(client, prefix, server, tokens, timeout=60)
        assert not wrong, (
            f"{len(wrong)} tokens differ, e.g. {list(wrong.items())[:3]}\n"
            + processes.log_tail("worker")
        )
        assert server.sent_ticks > len(tokens), "the market actually moved"
        # Bars close on event time although the simulated day is not the host's: the
        # subscribe snapshots carry no exchange time and must not move a token to the
        # wall-clock day (which would drop every later tick as late).
        deadline = time.monotonic() + 60
        while True:
            pipe = client.pipeline(transaction=False)
            for token in tokens:
                pipe.xlen(f"{prefix}bars:1m:{token}")
            counts = await pipe.execute()
            if min(counts) >= 3 or time.monotonic() > deadline:
                break
            await asyncio.sleep(1)
        assert min(counts) >= 3, f"bars per token: {sorted(counts)[:10]}..."
        # The worker's Prometheus endpoint reports what it did.
        url = f"http://127.0.0.1:{env['TICKFLOW_WORKER_WEB_PORT']}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            families = {f.name: f for f in text_string_to_metric_families(response.read().decode())}
        consumed = families["tickflow_worker_ticks_consumed"].samples[0].value
        assert consumed >= len(tokens)
        assert families["tickflow_worker_tokens_seen"].samples[0].value == len(tokens)
        # Liveness, readiness (recovered, caught up) and a token's table state.
        web = f"http://127.0.0.1:{env['TICKFLOW_WORKER_WEB_PORT']}"
        with urllib.request.urlopen(f"{web}/health/live", timeout=5) as response:
            assert json.loads(response.read()) == {"alive": True}
        with urllib.request.urlopen(f"{web}/health/ready", timeout=5) as response:
            readiness = json.loads(response.read())
        assert readiness["ready"] and readiness["recovered"], readiness
        assert set(readiness["lag"]) == {"0", "1", "2", "3"} and not any(readiness["lag"].values())
        token = tokens[0]
        with urllib.request.urlopen(f"{web}/tokens/{token}", timeout=5) as response:
            state = json.loads(response.read())
        assert state["token"] == token
        assert state["volume_state_in_memory"]["token"] == token, state
        # The instrument master is in Redis too.
        first = universe[0]
        assert await client.get(f"{prefix}symbol:{first.exchange}:{first.tradingsymbol}") == str(
            first.instrument_token
        )
        stored = await client.hgetall(f"{prefix}tick:{first.instrument_token}")
        assert stored["symbol"] == first.tradingsymbol
        # Graceful stop: both exit by themselves on SIGTERM.
        for name, proc in (("ingestor", ingestor), ("worker", worker)):
            proc.terminate()
            assert proc.wait(30) in (0, -15), processes.log_tail(name)
    finally:
        await client.aclose()
        await server.stop()
