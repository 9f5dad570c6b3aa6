"""Start the whole pipeline on one machine and watch it live.

``python -m scripts.start_system`` (what ``make run`` calls) starts, in order: Tansu and
redis-server on loopback (unless external URLs are configured), the worker(s), the
Kite-protocol simulator (or nothing, for a real Kite account, or a replay), and the
ingestor; then it shows a live status view until Ctrl-C, and stops everything it started.
With ``--detach`` it leaves the stack running; ``python -m scripts.stop_system`` stops it.
Every process it starts is recorded in ``<state_dir>/run.json`` so nothing is left behind.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.live import Live
from rich.table import Table

from config.settings import Settings, get_settings
from scripts import services
from scripts.services import ServiceError

log = logging.getLogger("tickflow.start")
RUN_FILE = "run.json"


@dataclass
class Managed:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path


@dataclass
class Stack:
    """The processes of one running stack, in start order."""

    settings: Settings
    state_dir: Path
    processes: list[Managed] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    def spawn(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> Managed:
        log_path = self.state_dir / "logs" / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as out:
            proc = subprocess.Popen(
                list(argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env, **(env or {})},
                start_new_session=True,
            )
        managed = Managed(name, proc, log_path)
        self.processes.append(managed)
        self.write_run_file()
        return managed

    def adopt(self, name: str, proc: subprocess.Popen[bytes], log_path: Path) -> None:
        self.processes.append(Managed(name, proc, log_path))
        self.write_run_file()

    def write_run_file(self) -> None:
        entries = [
            {"name": m.name, "pid": m.proc.pid, "log": str(m.log_path)} for m in self.processes
        ]
        (self.state_dir / RUN_FILE).write_text(json.dumps(entries, indent=2))

    def stop(self) -> None:
        """Stop in reverse start order: sources first, so no tick is left mid-pipe."""
        for managed in reversed(self.processes):
            services.stop_process(managed.proc, timeout=15)
        with contextlib.suppress(FileNotFoundError):
            (self.state_dir / RUN_FILE).unlink()

    def exited(self) -> list[Managed]:
        return [m for m in self.processes if m.proc.poll() is not None]


def _host_port(url: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(url if "://" in url else f"tcp://{url}")
    return parts.hostname or "127.0.0.1", parts.port or default_port


def _require_free(host: str, port: int, what: str, env_var: str) -> None:
    if services.port_open(host, port):
        raise ServiceError(
            f"{what} port {host}:{port} is already in use (another tickflow stack? "
            f"`python -m scripts.stop_system`), or set {env_var}"
        )


def start(args: argparse.Namespace, settings: Settings) -> Stack:
    state_dir = settings.state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    if (state_dir / RUN_FILE).exists():
        raise ServiceError(
            f"a stack is already running from {state_dir} (stop it with "
            "`python -m scripts.stop_system`)"
        )
    stack = Stack(settings, state_dir)
    stack.env = {
        "TICKFLOW_BROKER_URL": settings.broker_url,
        "TICKFLOW_REDIS_URL": settings.redis_url,
        "TICKFLOW_STATE_DIR": str(state_dir),
        "TICKFLOW_SIMULATOR_TOKENS": str(args.tokens),
        "PYTHONUNBUFFERED": "1",
    }
    try:
        if settings.use_embedded:
            host, port = _host_port(settings.bootstrap_servers.split(",")[0], 9092)
            _require_free(host, port, "broker", "TICKFLOW_BROKER_URL")
            log_path = state_dir / "logs" / "tansu.log"
            stack.adopt("tansu", services.start_tansu(port, log_path, host), log_path)
            rhost, rport = _host_port(settings.redis_url, 6379)
            _require_free(rhost, rport, "redis", "TICKFLOW_REDIS_URL")
            log_path = state_dir / "logs" / "redis.log"
            password = (
                settings.redis_password.get_secret_value() if settings.redis_password else None
            )
            stack.adopt("redis", services.start_redis(rport, log_path, rhost, password), log_path)
        for index in range(args.workers):
            port = settings.worker_web_port + index
            stack.spawn(
                f"worker-{index}",
                [
                    sys.executable,
                    "-m",
                    "faust",
                    "-A",
                    "topology",
                    "worker",
                    "-l",
                    "info",
                    "--web-port",
                    str(port),
                ],
                env={"TICKFLOW_WORKER_DATADIR": str(state_dir / f"worker-{index}-data")},
            )
        ingestor_args = ["--tokens", str(args.tokens)]
        if args.source in ("simulator", "replay"):
            sim_args = [
                "--port",
                str(settings.simulator_port),
                "--tokens",
                str(args.tokens),
                "--speed",
                str(args.speed),
                "--seed",
                str(args.seed),
            ]
            if args.source == "replay":
                sim_args += ["--replay", str(args.replay)]
            if args.start_time:
                sim_args += ["--start", args.start_time]
            stack.spawn("simulator", [sys.executable, "-m", "scripts.kite_simulator", *sim_args])
            services.wait_for_port(
                "127.0.0.1", settings.simulator_port, 30, stack.processes[-1].proc
            )
            stack.env["TICKFLOW_KITE_WS_URL"] = f"ws://127.0.0.1:{settings.simulator_port}/"
            if args.source == "simulator" and args.history:
                # One-shot, beside the live stack: baselines and indicator warm-up from the
                # simulated past sessions (cached per day), so ratios have a baseline.
                seed_args = ["--tokens", str(args.tokens), "--seed", str(args.seed)]
                if args.start_time:
                    seed_args += ["--start", args.start_time]
                stack.spawn("history", [sys.executable, "-m", "scripts.seed_history", *seed_args])
        else:
            ingestor_args = []  # real Kite: TICKFLOW_KITE_TOKENS or the whole master
        stack.spawn("ingestor", [sys.executable, "-m", "scripts.run_ingestor", *ingestor_args])
    except BaseException:
        stack.stop()
        raise
    return stack


# --- the live view --------------------------------------------------------------------


def scrape(url: str) -> dict[str, float]:
    """Sum of every sample of a Prometheus endpoint, by sample name (labels folded)."""
    totals: dict[str, float] = {}
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            text = response.read().decode()
    except OSError:
        return totals
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + float(sample.value)
    return totals


@dataclass
class Rates:
    last: dict[str, float] = field(default_factory=dict)
    last_at: float = 0.0

    def per_second(self, name: str, value: float, now: float) -> float:
        previous = self.last.get(name)
        elapsed = now - self.last_at
        self.last[name] = value
        if previous is None or elapsed <= 0:
            return 0.0
        return max(0.0, (value - previous) / elapsed)


def status_table(stack: Stack, rates: Rates) -> Table:
    settings = stack.settings
    now = time.monotonic()
    ing = scrape(f"http://127.0.0.1:{settings.ingestor_metrics_port}/metrics")
    workers = [
        scrape(f"http://127.0.0.1:{settings.worker_web_port + i}/metrics")
        for i in range(sum(m.name.startswith("worker-") for m in stack.processes))
    ]
    published = ing.get("tickflow_ingestor_ticks_published_total", 0.0)
    consumed = sum(w.get("tickflow_worker_ticks_consumed_total", 0.0) for w in workers)
    table = Table(title="tickflow: live status (Ctrl-C stops everything)", expand=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("ticks/s into broker", f"{rates.per_second('pub', published, now):,.0f}")
    table.add_row("ticks/s through worker", f"{rates.per_second('con', consumed, now):,.0f}")
    table.add_row("ticks published / consumed", f"{published:,.0f} / {consumed:,.0f}")
    table.add_row("pipeline lag (ticks)", f"{max(0.0, published - consumed):,.0f}")
    table.add_row(
        "tokens seen (in Redis)",
        f"{sum(w.get('tickflow_worker_tokens_seen', 0.0) for w in workers):,.0f}",
    )
    errors = ing.get("tickflow_ingestor_parse_errors_total", 0.0) + sum(
        w.get("tickflow_worker_tick_errors_total", 0.0) for w in workers
    )
    table.add_row("parse errors", f"{errors:,.0f}")
    table.add_row("reconnects", f"{ing.get('tickflow_ingestor_reconnects_total', 0.0):,.0f}")
    table.add_row(
        "Redis write errors",
        f"{sum(w.get('tickflow_worker_redis_errors_total', 0.0) for w in workers):,.0f}",
    )
    for managed in stack.processes:
        code = managed.proc.poll()
        state = "running" if code is None else f"[red]exited {code}[/red] (see {managed.log_path})"
        table.add_row(f"process {managed.name}", state)
    rates.last_at = now
    return table


def watch(stack: Stack, console: Console) -> int:
    rates = Rates()
    with Live(status_table(stack, rates), console=console, refresh_per_second=1) as live:
        while True:
            time.sleep(1.0)
            live.update(status_table(stack, rates))
            if any(m.name in ("ingestor", "redis", "tansu") for m in stack.exited()):
                console.print("[red]a core process exited; stopping the stack[/red]")
                return 1


def parse_args(argv: Sequence[str] | None, settings: Settings) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="start_system", description=__doc__.splitlines()[0])
    parser.add_argument("--source", choices=["simulator", "kite", "replay"], default="simulator")
    parser.add_argument("replay", nargs="?", type=Path, help="recorded frame file (replay)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--tokens", type=int, default=settings.simulator_tokens)
    parser.add_argument("--speed", type=float, default=settings.simulator_speed)
    parser.add_argument("--seed", type=int, default=settings.simulator_seed)
    parser.add_argument("--start-time", help="simulated start, ISO 8601 (default 09:15 IST today)")
    parser.add_argument("--detach", action="store_true", help="start and return")
    parser.add_argument(
        "--no-history",
        dest="history",
        action="store_false",
        help="do not seed baselines from simulated past sessions (scripts.seed_history)",
    )
    args = parser.parse_args(argv)
    if args.source == "replay" and args.replay is None:
        parser.error("--source replay needs a FILE")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = get_settings()
    args = parse_args(argv, settings)
    console = Console()
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        stack = start(args, settings)
    except ServiceError as exc:
        console.print(f"[red]cannot start:[/red] {exc}")
        return 2
    console.print(f"stack started; logs in {stack.state_dir / 'logs'}")
    if args.detach:
        console.print("detached: stop it with `python -m scripts.stop_system`")
        return 0
    try:
        return watch(stack, console)
    except KeyboardInterrupt:
        return 0
    finally:
        console.print("stopping ...")
        stack.stop()
        console.print("stopped; no process left behind")


if __name__ == "__main__":
    raise SystemExit(main())
