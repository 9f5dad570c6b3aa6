"""Run the ingestor: ``python -m scripts.run_ingestor [--tokens N] [--record FILE]``.

Tokens: ``--tokens N`` takes the first N instruments of the simulator's universe
(``select_universe``, so it matches ``kite_simulator --tokens N``); otherwise
``TICKFLOW_KITE_TOKENS``, or every instrument of the master. The ticks topic is created
(or its partition count verified) before anything is published, so a token never lands
in an auto-created topic with the wrong partitioning.

It serves ``/metrics`` (Prometheus) and ``/health`` (JSON; 200 when every connection is
up) on ``ingestor_metrics_port`` unless that is 0. Exit status: 0 after SIGINT/SIGTERM,
2 for a configuration problem or an unreachable broker (one clear line on stderr, no
traceback), 3 when Kite rejected the access token (HTTP 403: get a new token; restarting
with the same one cannot help).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from aiokafka.errors import KafkaError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from config.settings import Settings, get_settings
from core.data_ingestor import AccessTokenRejected, DataIngestor, IngestorError, shard_tokens
from core.ingestor_metrics import IngestorMetrics
from topology.topics import TopicMismatchError, ensure_topics, pipeline_topics

log = logging.getLogger("tickflow.ingestor")

EXIT_CONFIG = 2
EXIT_TOKEN_REJECTED = 3


class ConfigError(Exception):
    """A problem the operator fixes in the configuration; reported as one line."""


def resolve_tokens(settings: Settings, first_n: int | None) -> list[int]:
    """The tokens to subscribe (see the module docstring for the precedence)."""
    if first_n is not None or not settings.kite_tokens:
        from config.instruments import InstrumentMaster, InstrumentMasterError

        try:
            master = InstrumentMaster.load(settings.instruments_path)
        except InstrumentMasterError as exc:
            raise ConfigError(str(exc)) from None
        if first_n is None:
            return master.tokens()
        from scripts.kite_simulator import market_start, simulated_universe

        universe = simulated_universe(master, first_n, market_start(settings.simulator_start))
        return [inst.instrument_token for inst in universe]
    return list(settings.kite_tokens)


# --- /metrics and /health ------------------------------------------------------------------


def health(ingestor: DataIngestor) -> tuple[bool, dict[str, object]]:
    """Healthy when every connection is connected and the publisher is running."""
    connections = [
        {"index": s.index, "state": s.state, "tokens": len(s.tokens)} for s in ingestor.shards
    ]
    ok = (
        ingestor.error is None
        and ingestor.publisher.running
        and all(s.state == "connected" for s in ingestor.shards)
    )
    body: dict[str, object] = {
        "status": "ok" if ok else "degraded",
        "connections": connections,
        "buffer_depth": ingestor.publisher.depth,
        "buffer_capacity": ingestor.publisher.capacity,
        "ticks_read": ingestor.stats.ticks_read,
        "ticks_published": ingestor.publisher.published,
        "ticks_dropped": ingestor.publisher.dropped,
    }
    if ingestor.error is not None:
        body["error"] = str(ingestor.error)
    return ok, body


async def serve_http(ingestor: DataIngestor, host: str, port: int) -> asyncio.Server:
    """A minimal HTTP/1.0 server for /metrics and /health on the event loop (no thread)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            path = request.split(b" ", 2)[1].decode("ascii", "replace") if b" " in request else "/"
            if path.startswith("/health"):
                ok, body = health(ingestor)
                status = "200 OK" if ok else "503 Service Unavailable"
                payload, ctype = json.dumps(body).encode(), "application/json"
            elif path.startswith("/metrics") or path == "/":
                status, ctype = "200 OK", CONTENT_TYPE_LATEST
                payload = generate_latest(ingestor.metrics.registry)
            else:
                status, payload, ctype = "404 Not Found", b"not found\n", "text/plain"
            head = f"HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\n"
            head += f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
            writer.write(head.encode() + payload)
            await writer.drain()
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port)


# --- main ------------------------------------------------------------------------------------


async def run(
    settings: Settings, tokens: list[int], record: Path | None, broker_timeout: float
) -> int:
    try:
        await ensure_topics(
            settings.bootstrap_servers,
            pipeline_topics(settings),
            settings.topic_replication,
            timeout=broker_timeout,
        )
    except ConnectionError as exc:
        raise ConfigError(f"{exc} (TICKFLOW_BROKER_URL={settings.broker_url})") from None
    except TopicMismatchError as exc:
        raise ConfigError(str(exc)) from None
    metrics = IngestorMetrics()
    ingestor = DataIngestor(settings, tokens, metrics=metrics, record_path=record)
    server: asyncio.Server | None = None
    if settings.ingestor_metrics_port:
        try:
            server = await serve_http(ingestor, "0.0.0.0", settings.ingestor_metrics_port)
        except OSError as exc:
            raise ConfigError(
                f"cannot serve metrics on port {settings.ingestor_metrics_port}: {exc} "
                "(TICKFLOW_INGESTOR_METRICS_PORT; 0 turns it off)"
            ) from None
    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop_requested.set)
    try:
        try:
            await ingestor.start()
        except KafkaError as exc:
            raise ConfigError(f"broker {settings.bootstrap_servers} unreachable: {exc}") from None
        waiter = asyncio.ensure_future(ingestor.wait())
        stopper = asyncio.ensure_future(stop_requested.wait())
        await asyncio.wait([waiter, stopper], return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if waiter.done():
            waiter.result()  # raises AccessTokenRejected and the like
        else:
            log.info("stop requested; delivering what was read")
            await ingestor.stop()
            waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError, IngestorError):
                await waiter
        return 0
    finally:
        await ingestor.stop()
        if server is not None:
            server.close()
            await server.wait_closed()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.run_ingestor",
        description="Kite WebSocket -> ticks topic. Tokens: --tokens N, else "
        "TICKFLOW_KITE_TOKENS, else the whole instrument master.",
    )
    parser.add_argument("--tokens", type=int, default=None,
                        help="the first N instruments of the simulator universe")  # fmt: skip
    parser.add_argument("--record", type=Path, default=None,
                        help="also record every raw frame to this file")  # fmt: skip
    parser.add_argument("--broker-timeout", type=float, default=30.0,
                        help="seconds to wait for the broker at start")  # fmt: skip
    args = parser.parse_args(argv)
    try:
        settings = get_settings()
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        print(f"run_ingestor: invalid settings: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        tokens = resolve_tokens(settings, args.tokens)
        shard_tokens(
            tokens, settings.ingestor_max_connections, settings.ingestor_tokens_per_connection
        )
        return asyncio.run(run(settings, tokens, args.record or settings.ingestor_record_path,
                               args.broker_timeout))  # fmt: skip
    except AccessTokenRejected as exc:
        print(f"run_ingestor: {exc}", file=sys.stderr)
        return EXIT_TOKEN_REJECTED
    except (ConfigError, IngestorError) as exc:
        print(f"run_ingestor: {exc}", file=sys.stderr)
        return EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())
