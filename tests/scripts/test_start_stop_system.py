"""`start_system --detach` brings the whole embedded stack up; `stop_system` takes it down.

This is `make run` minus the live view: real Tansu, real redis-server, a worker, the
simulator and the ingestor as processes, on free ports so it never collides with a
stack a developer has running.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from scripts.services import free_port, port_open

pytestmark = pytest.mark.e2e

TOKENS = 40


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for every purpose but the process table.
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "\nState:\tZ" in status.read_text())


def test_detached_stack_fills_redis_and_stop_leaves_no_process(tmp_path: Path):
    ports = {name: free_port() for name in ("broker", "redis", "sim", "web", "metrics")}
    env = {
        **os.environ,
        "TICKFLOW_EMBEDDED": "true",
        "TICKFLOW_BROKER_URL": f"kafka://127.0.0.1:{ports['broker']}",
        "TICKFLOW_REDIS_URL": f"redis://127.0.0.1:{ports['redis']}/0",
        "TICKFLOW_SIMULATOR_PORT": str(ports["sim"]),
        "TICKFLOW_WORKER_WEB_PORT": str(ports["web"]),
        "TICKFLOW_INGESTOR_METRICS_PORT": str(ports["metrics"]),
        "TICKFLOW_STATE_DIR": str(tmp_path / "state"),
        "TICKFLOW_TOPIC_PARTITIONS": "4",
    }
    started = subprocess.run(
        [
            sys.executable,
            "-m",
            "scripts.start_system",
            "--detach",
            "--tokens",
            str(TOKENS),
            "--speed",
            "10",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    run_file = tmp_path / "state" / "run.json"
    entries = json.loads(run_file.read_text()) if run_file.exists() else []
    pids = [int(e["pid"]) for e in entries]
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        assert {e["name"] for e in entries} == {
            "tansu",
            "redis",
            "worker-0",
            "simulator",
            "ingestor",
            "history",
        }
        client = redis.Redis(port=ports["redis"], decode_responses=True)
        deadline = time.monotonic() + 90
        keys: list[str] = []
        while time.monotonic() < deadline:
            keys = list(client.scan_iter("tick:*"))
            if len(keys) >= TOKENS:
                break
            time.sleep(1)
        logs = "\n".join(
            Path(e["log"]).read_text(errors="replace")[-2000:]
            for e in entries
            if e["name"] in ("worker-0", "ingestor")
        )
        assert len(keys) == TOKENS, f"{len(keys)} tick hashes after 90 s\n{logs}"
        assert all(client.hget(key, "last_price") for key in keys)
        # The seeded history reaches the volume agent: ratios against slot baselines.
        sources: set[str] = set()
        while time.monotonic() < deadline + 60 and not any(
            s.startswith("history:") for s in sources
        ):
            sources = {
                client.hget(key, "baseline_source") or "" for key in client.scan_iter("vol:*")
            }
            time.sleep(1)
        history_log = next(Path(e["log"]) for e in entries if e["name"] == "history")
        assert any(s.startswith("history:") for s in sources), (
            f"baseline sources {sources}\n{history_log.read_text(errors='replace')[-2000:]}"
        )
    finally:
        stopped = subprocess.run(
            [sys.executable, "-m", "scripts.stop_system"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.2)
    assert not [pid for pid in pids if _alive(pid)], "processes left behind"
    assert not any(port_open("127.0.0.1", port) for port in ports.values())
    assert not run_file.exists()
