"""``python -m scripts.migrate_redis`` as a user runs it: a subprocess against real servers
holding the >= 100k-key legacy dataset, killed with SIGKILL halfway and run again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.migrate_redis import main as migrate_main
from storage.backup import verify_backup
from tests.support.legacy_redis import (
    STATE_KEY,
    Server,
    dataset_digest,
    digests,
    legacy_snapshot,
    redis_process,
    reference_migration,
)

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, target: Server, **kw) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "TICKFLOW_REDIS_URL": target.url(),
        "TICKFLOW_STATE_DIR": str(target.workdir),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "scripts.migrate_redis", "--target-url", target.url(), *args],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw,
    )  # fmt: skip


def run_cli(*args: str, target: Server) -> tuple[int, str, str]:
    proc = cli(*args, target=target)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory):
    return legacy_snapshot(tmp_path_factory)


@pytest.fixture
def legacy(tmp_path, snapshot) -> Iterator[Server]:
    with redis_process(tmp_path / "legacy", rdb=snapshot[0]) as server:
        yield server


def test_dry_run_prints_the_report_and_writes_nothing(tmp_path, tmp_path_factory, legacy, snapshot):
    with redis_process(tmp_path / "target") as target:
        code, out, err = run_cli(
            "--source-url", legacy.url(), "--dry-run", "--no-progress",
            "--report", str(tmp_path / "r.json"), target=target,
        )  # fmt: skip
        assert code == 0, err
        assert target.client().dbsize() == 0
    assert "dry run: what would move" in out and "would write" in out
    assert "quarantine" in out and "not in the instrument master" in out
    report = json.loads((tmp_path / "r.json").read_text())
    (dry,) = report["passes"]
    assert dry["keys"] == snapshot[1].keys
    assert set(dry["quarantined"]) == snapshot[1].malformed | {"3:alerts:stream"}
    done = reference_migration(tmp_path_factory).report.passes[0]
    # (expiry changes are not compared: their count depends on the SCAN order, which
    # differs between two servers, only their result does not)
    for name in ("fields_written", "entries_added", "keys_written"):
        assert dry["target"][name] == getattr(done.target, name), name
    assert dry["outcomes"] == {
        o: done.total(o) for o in ("migrate", "skip", "quarantine", "expired")
    }
    assert not list(tmp_path.glob("target/backups/*")), "a dry run must not back up"


def test_killed_migration_reruns_to_the_uninterrupted_result(
    tmp_path, tmp_path_factory, legacy, snapshot
):
    reference = reference_migration(tmp_path_factory).digests
    dataset = snapshot[1]
    before = dataset_digest(legacy)
    backup = tmp_path / "legacy.jsonl"
    args = [
        "--source-url",
        legacy.url(),
        "--batch",
        "200",
        "--no-progress",
        "--backup",
        str(backup),
    ]
    with redis_process(tmp_path / "target") as target:
        client = target.client()
        proc = cli(*args, target=target)
        deadline = time.monotonic() + 60
        while client.hlen("tickflow:migration:checkpoint") < 2 and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        assert client.hget(STATE_KEY, "status") == b"running", "killed before it finished"
        partial = digests(target, [0], skip=[STATE_KEY])
        assert 0 < len(partial) < len(reference)

        code, _, err = run_cli(*args, "--delete-sources", "--report", str(tmp_path / "r.json"),
                                 target=target)  # fmt: skip
        assert code == 0, err
        report = json.loads((tmp_path / "r.json").read_text())
        assert report["resumed"] and report["verified"]
        assert digests(target, [0], skip=[STATE_KEY]) == reference
        assert client.hget(STATE_KEY, "status") == b"verified"

    # the backup was taken before the first write (by the killed run) and is complete
    assert report["backup"]["path"] == str(backup)
    header = verify_backup(backup)
    assert header["records"] == dataset.keys
    # --delete-sources removed only verified keys: nothing skipped or malformed is lost
    assert dataset_digest(legacy) != before
    remaining = {f"{db}:{k.decode()}" for db in (0, 1, 2, 3, 5)
                 for k in legacy.client(db).scan_iter(count=1000)}  # fmt: skip
    assert dataset.malformed | dataset.shadowed | {"3:alerts:stream"} <= remaining
    deleted = sum(int(n) for n in report["deleted"].values())
    verify = report["passes"][-1]
    assert deleted == verify["outcomes"]["migrate"] - 1  # alerts:stream is partly quarantined
    assert len(remaining) == dataset.keys - deleted
    assert any(k.startswith("1:realtime:") for k in remaining)


def test_a_target_of_another_schema_exits_2(tmp_path, legacy, capsys):
    with redis_process(tmp_path / "target") as target:
        target.client().set("tickflow:schema", "3")
        code = migrate_main(["--source-url", legacy.url(), "--target-url", target.url(),
                             "--no-progress", "--backup", str(tmp_path / "b.jsonl")])  # fmt: skip
        assert code == 2
        assert "schema version '3'" in capsys.readouterr().err
        assert target.client().dbsize() == 1
    assert not (tmp_path / "b.jsonl").exists()


def test_bad_arguments_exit_2(legacy, capsys):
    with pytest.raises(SystemExit) as bad:
        migrate_main(["--source-url", legacy.url(), "--source-dbs", "a,b"])
    assert bad.value.code == 2 and "--source-dbs" in capsys.readouterr().err
    code = migrate_main(["--source-url", legacy.url(), "--delete-skipped", "--no-backup"])
    assert code == 2 and "--delete-skipped needs --delete-sources" in capsys.readouterr().err
