"""Stop a stack started with ``start_system --detach`` (or left by a killed one).

Reads ``<state_dir>/run.json`` and stops every recorded process group in reverse start
order: SIGTERM, a grace period, then SIGKILL, so nothing is left behind.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import time
from collections.abc import Sequence

from config.settings import get_settings
from scripts.start_system import RUN_FILE


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_pid(pid: int, grace: float) -> bool:
    """Returns True when the process group had to be killed."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not _alive(pid):
            return False
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stop_system", description=__doc__.splitlines()[0])
    parser.add_argument("--grace", type=float, default=15.0, help="seconds before SIGKILL")
    args = parser.parse_args(argv)
    run_file = get_settings().state_dir.resolve() / RUN_FILE
    try:
        entries = json.loads(run_file.read_text())
    except FileNotFoundError:
        print(f"no running stack recorded in {run_file}")
        return 0
    except json.JSONDecodeError as exc:
        print(f"unreadable run file {run_file}: {exc}")
        return 2
    for entry in reversed(entries):
        pid = int(entry["pid"])
        if not _alive(pid):
            print(f"{entry['name']}: already stopped")
            continue
        killed = stop_pid(pid, args.grace)
        print(f"{entry['name']}: {'killed' if killed else 'stopped'} (pid {pid})")
    run_file.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
