"""The legacy -> v1 migration against real redis-servers and the >= 100k-key legacy dataset.

The dataset is generated once per session and loaded from an RDB snapshot; its one full
migration (with the source backup) is shared with tests/scripts/test_migrate_redis.py
(see tests/support/legacy_redis.py). Hand-made small keyspaces cover the edge cases.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from config.instruments import InstrumentMaster
from config.settings import Settings
from scripts.generate_legacy_redis import LegacyDataset
from storage.backup import verify_backup
from storage.data_migrator import Malformed, Migrator, Transformer
from storage.keys import Keys
from storage.legacy_layout import LEGACY_DBS, LegacyKey, LegacyKind, SymbolResolver
from storage.redis_manager import ConnectionSpec
from tests.support.legacy_redis import (
    Reference,
    Server,
    dataset_digest,
    digests,
    legacy_snapshot,
    redis_process,
    reference_migration,
)
from tests.support.services import redis74_binary

STATE = b"tickflow:migration:state"
EPOCH_10_15_32_123 = 1_795_149_932_123  # 2026-11-20 10:15:32.123 IST


@pytest.fixture(scope="module")
def master() -> InstrumentMaster:
    return InstrumentMaster.load()


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, LegacyDataset]:
    return legacy_snapshot(tmp_path_factory)


def migrator(source: Server, target: Server, master: InstrumentMaster, **kw) -> Migrator:
    spec = ConnectionSpec.from_url(target.url())
    return Migrator(
        ConnectionSpec.from_url(source.url()), LEGACY_DBS, spec,
        Settings(redis_url=target.url()), master=master, show_progress=False, **kw,
    )  # fmt: skip


@pytest.fixture(scope="module")
def migrated(tmp_path_factory) -> Reference:
    """One full migration of the legacy dataset (with its source backup), shared with the
    other modules of the session."""
    return reference_migration(tmp_path_factory)


@pytest.fixture(scope="module")
def legacy(migrated) -> Server:
    return migrated.source


def test_migration_verifies_and_reports_every_key(migrated, snapshot):
    dataset = snapshot[1]
    report = migrated.report
    assert dataset.keys >= 100_000
    assert report.verified is True
    migrate, verify = report.passes
    assert migrate.keys == verify.keys == dataset.keys
    assert verify.target.missing == 0 and verify.target.conflicts == 0
    assert verify.outcomes == migrate.outcomes
    # the per-kind counts add up to what the generator wrote
    by_kind: dict[str, int] = {}
    for (kind, _), n in verify.outcomes.items():
        by_kind[kind] = by_kind.get(kind, 0) + n
    assert by_kind == dict(dataset.by_kind)
    assert migrate.target.fields_written > 100_000
    assert migrate.corrected_prefixes == {"NFO": dataset.corrected}
    families = report.target_families
    assert families["tick"] == verify.outcomes[("tick_latest", "migrate")]
    assert families["alerts"] == 1 and families["regime"] == 1 and families["schema"] == 1


def test_source_is_untouched_and_backed_up_first(migrated, legacy, snapshot):
    assert dataset_digest(legacy) == migrated.source_digest
    header = verify_backup(migrated.backup)
    assert header["records"] == snapshot[1].keys
    assert migrated.report.backup is not None
    assert migrated.report.backup["sha256"] == header["sha256"]


def test_malformed_values_are_quarantined_and_kept(migrated, legacy, snapshot):
    dataset = snapshot[1]
    verify = migrated.report.passes[1]
    assert set(verify.quarantined) == dataset.malformed | {"3:alerts:stream"}
    target = migrated.target.client()
    for label in dataset.malformed:
        db, _, name = label.partition(":")
        record = target.hgetall(f"tickflow:migration:quarantine:{db}:{name}")
        assert record[b"key"].decode() == name and record[b"reason"], label
        assert legacy.client(int(db)).exists(name), f"{label} was removed from the source"
    # the copy holds the legacy value exactly, e.g. the string stored where a hash belongs
    wrong_type = next(m for m in sorted(dataset.malformed) if m.startswith("1:ticks:latest:"))
    name = wrong_type.partition(":")[2]
    record = target.hgetall(f"tickflow:migration:quarantine:1:{name}")
    source = legacy.client(1)
    if record[b"type"] == b"string":
        assert json.loads(record[b"value"]) == source.get(name).decode()
    else:
        stored = {f: v for f, v in json.loads(record[b"value"])}
        assert stored == {k.decode(): v.decode() for k, v in source.hgetall(name).items()}
    entries = json.loads(target.hget("tickflow:migration:quarantine:3:alerts:stream", "value"))
    assert len(entries) == dataset.malformed_entries


def test_values_are_mapped_to_schema_v1(migrated, legacy, master, snapshot):
    target, source = migrated.target.client(), legacy.client(1)
    # a CDS contract the legacy system labelled NFO lands under its real exchange
    cds = next(i for i in master if i.exchange == "CDS")
    legacy_name = f"ticks:latest:NFO{cds.tradingsymbol}"
    twin = f"ticks:latest:CDS{cds.tradingsymbol}"
    name = twin if source.exists(twin) else legacy_name
    legacy_tick = {k.decode(): v.decode() for k, v in source.hgetall(name).items()}
    tick = {
        k.decode(): v.decode() for k, v in target.hgetall(f"tick:{cds.instrument_token}").items()
    }
    assert tick["exchange"] == "CDS" and tick["symbol"] == cds.tradingsymbol
    assert tick["last_price"] == repr(float(legacy_tick["last_price"]))
    assert tick["open"] == repr(float(legacy_tick["open_price"]))
    assert tick["volume_traded"] == legacy_tick["volume"]
    assert tick["exchange_timestamp"].endswith("+05:30")
    assert tick["exchange_timestamp"][:19] == legacy_tick["exchange_timestamp"][:19]
    assert tick["best_bid"] == ""  # every v1 field is present
    assert target.pexpiretime(f"tick:{cds.instrument_token}") == source.pexpiretime(name)

    # indicators: JSON split into v1 fields, the latest expiry of the parts
    ind5 = legacy.client(5)
    macd_key = next(
        k for k in ind5.scan_iter(match="indicators:NSE*:macd", count=1000)
        if ind5.get(k).startswith(b"{") and json.loads(ind5.get(k)).get("histogram") is not None
    )  # fmt: skip
    symbol = macd_key.decode().split(":")[1]
    inst = master.by_symbol("NSE", symbol[3:])
    assert inst is not None
    ind = target.hgetall(f"ind:{inst.instrument_token}")
    assert ind[b"macd_hist"] == b"0.5" and ind[b"macd_signal"] == b"0.75"
    assert ind[b"rsi_14"] == repr(float(ind5.get(f"indicators:{symbol}:rsi"))).encode()
    parts = [f"indicators:{symbol}:{n}" for n in ("rsi", "ema_9", "macd", "bbands", "vwap")]
    assert target.pexpiretime(f"ind:{inst.instrument_token}") == max(
        ind5.pexpiretime(p) for p in parts
    )

    # the alerts stream keeps its ids; malformed entries are the only ones missing
    legacy_ids = [i for i, _ in legacy.client(3).xrange("alerts:stream")]
    v1 = target.xrange("alerts")
    assert {i for i, _ in v1} < set(legacy_ids)
    assert len(v1) == len(legacy_ids) - snapshot[1].malformed_entries
    first_id, first = v1[0]
    assert first[b"id"] == b"legacy:" + first_id and first[b"event_time"].endswith(b"+05:30")
    assert first[b"signal"] in (b"BUY", b"SELL") and first[b"legacy_timestamp"]

    regime = target.hgetall("regime")
    assert regime == {
        b"vix": b"13.45", b"regime": b"LOW", b"event_time": regime[b"event_time"]
    }  # fmt: skip
    assert regime[b"event_time"].startswith(b"2026-11-20T15:29:59")
    assert target.get("tickflow:schema") == b"1"


def test_second_run_changes_nothing(migrated, legacy, master):
    report = migrator(legacy, migrated.target, master).run(backup_path=None)
    assert report.verified is True and not report.resumed
    stats = report.passes[0].target
    assert (stats.fields_written, stats.entries_added, stats.ttl_changes) == (0, 0, 0)
    assert stats.ops_unchanged > 25_000
    assert digests(migrated.target, [0], skip=[STATE]) == migrated.digests


def test_interrupted_migration_resumes_to_the_same_keyspace(tmp_path, master):
    """Interrupted between two batches (the CLI test kills it at any point instead)."""

    class Interrupted(Exception):
        pass

    def stop_after(batches: int) -> None:
        if batches == 3:
            raise Interrupted

    with (
        redis_process(tmp_path / "src") as src,
        redis_process(tmp_path / "a") as whole,
        redis_process(tmp_path / "b") as halves,
    ):
        for n, inst in enumerate(i for i in master if i.exchange == "NSE" and not i.is_index):
            if n == 40:
                break
            src.client(1).hset(
                f"ticks:latest:NSE{inst.tradingsymbol}", mapping={"last_price": str(n + 1)}
            )
            src.client(5).set(f"indicators:NSE{inst.tradingsymbol}:rsi", str(n), ex=600 + n)
            src.client(5).set(f"indicators:NSE{inst.tradingsymbol}:vwap", str(n), ex=900)
        migrator(src, whole, master, batch=10).run(backup_path=None)
        with pytest.raises(Interrupted):
            migrator(src, halves, master, batch=10, on_batch=stop_after).run(backup_path=None)
        assert halves.client().hget(STATE, "status") == b"running"
        report = migrator(src, halves, master, batch=10).run(backup_path=None)
        assert report.resumed and report.verified
        assert report.passes[0].batches < report.passes[1].batches
        expected = digests(whole, [0], skip=[STATE])
        assert len(expected) == 82  # 40 tick:, 40 ind:, the schema marker, the checkpoint
        assert digests(halves, [0], skip=[STATE]) == expected
        assert not report.rescanned

        # a source restarted in between (another run id): its cursors are void, rescan
        with pytest.raises(Interrupted):
            migrator(src, halves, master, batch=10, on_batch=stop_after).run(backup_path=None)
        halves.client().hset(STATE, "source_run_id", "an earlier redis-server")
        report = migrator(src, halves, master, batch=10).run(backup_path=None)
        assert report.resumed and report.rescanned and report.verified
        assert report.passes[0].batches == report.passes[1].batches
        assert digests(halves, [0], skip=[STATE]) == expected


# --- small hand-made keyspaces: conflicts, deletion, expiry merging --------------------------


def test_conflicts_keep_the_target_and_deletion_spares_them(tmp_path, master):
    reliance = master.by_symbol("NSE", "RELIANCE")
    infy = master.by_symbol("NSE", "INFY")
    assert reliance is not None and infy is not None
    with redis_process(tmp_path / "src") as src, redis_process(tmp_path / "dst") as dst:
        s1, s5 = src.client(1), src.client(5)
        s1.hset("ticks:latest:NSERELIANCE", mapping={"last_price": "1500.5"})
        s1.hset("ticks:latest:NSEINFY", mapping={"last_price": "1600", "volume": "10"})
        s1.hset("ticks:latest:NSEBAD", mapping={"last_price": "1"})  # not in the master
        s1.hset("realtime:NSEINFY:20261120_101500_000000", mapping={"price": "1"})
        s5.set("indicators:NSEINFY:rsi", "55.5")
        s5.set("indicators:NSEINFY:supertrend", "1")
        s1.set("unrelated:key", "x")
        # the live pipeline already wrote RELIANCE's tick: the target wins
        dst.client().hset(f"tick:{reliance.instrument_token}", mapping={"last_price": "1501.0"})
        dst.client().set("tickflow:schema", "1")

        report = migrator(src, dst, master).run(
            backup_path=tmp_path / "b.jsonl", delete_sources=True
        )
        assert report.verified is True
        assert report.passes[1].target.conflicts == 1
        assert dst.client().hget(f"tick:{reliance.instrument_token}", "last_price") == b"1501.0"
        assert dst.client().hget(f"tick:{infy.instrument_token}", "last_price") == b"1600.0"
        assert dst.client().hget(f"ind:{infy.instrument_token}", "rsi_14") == b"55.5"
        # deleted: only what was verified in the target; kept: conflict, unresolved, skipped
        assert report.deleted == {1: 1, 5: 1}
        assert not s1.exists("ticks:latest:NSEINFY") and not s5.exists("indicators:NSEINFY:rsi")
        for key in ("ticks:latest:NSERELIANCE", "ticks:latest:NSEBAD", "unrelated:key",
                    "realtime:NSEINFY:20261120_101500_000000"):  # fmt: skip
            assert s1.exists(key), key
        assert s5.exists("indicators:NSEINFY:supertrend")

        # --delete-skipped also removes keys with no v1 home, never foreign ones
        report = migrator(src, dst, master).run(
            backup_path=tmp_path / "b2.jsonl", delete_sources=True, delete_skipped=True
        )
        assert not s1.exists("realtime:NSEINFY:20261120_101500_000000")
        assert not s5.exists("indicators:NSEINFY:supertrend")
        assert s1.exists("unrelated:key") and s1.exists("ticks:latest:NSERELIANCE")
        assert s1.exists("ticks:latest:NSEBAD")


def test_merged_hash_lives_as_long_as_its_longest_part(tmp_path, master):
    infy = master.by_symbol("NSE", "INFY")
    assert infy is not None
    with redis_process(tmp_path / "src") as src, redis_process(tmp_path / "dst") as dst:
        s2, s5 = src.client(2), src.client(5)
        s5.set("indicators:NSEINFY:rsi", "40", ex=300)
        s5.set("indicators:NSEINFY:vwap", "1500", ex=900)
        s2.set("volume:baseline:NSEINFY:1min", "1000")  # no TTL
        s2.hset(
            "vol:baseline:NSEINFY",
            mapping={"current": "1000", "updated": "2026-11-20T15:31:00", "source": "x"},
        )
        s2.expire("vol:baseline:NSEINFY", 600)
        report = migrator(src, dst, master, batch=1).run(backup_path=None)
        assert report.verified
        target = dst.client()
        token = infy.instrument_token
        assert target.pexpiretime(f"ind:{token}") == s5.pexpiretime("indicators:NSEINFY:vwap")
        assert target.ttl(f"baseline:{token}") == -1  # one part never expires
        assert target.hget(f"baseline:{token}", "updated") == b"2026-11-20T15:31:00+05:30"


def test_target_with_another_schema_is_refused(tmp_path, master):
    from storage.redis_manager import SchemaVersionError

    with redis_process(tmp_path / "src") as src, redis_process(tmp_path / "dst") as dst:
        dst.client().set("tickflow:schema", "2")
        with pytest.raises(SchemaVersionError, match="version '2'"):
            migrator(src, dst, master).dry_run()


# --- the pure parts ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def transformer(master) -> Transformer:
    return Transformer(Keys(), SymbolResolver(master), Settings())


def test_resolver_fixes_the_nfo_label_through_the_master(master):
    resolver = SymbolResolver(master)
    for exchange in ("CDS", "MCX", "BFO"):
        inst = next(i for i in master if i.exchange == exchange and i.is_derivative)
        found = resolver.resolve("NFO" + inst.tradingsymbol)
        assert found.instrument == inst and found.corrected_from == "NFO"
    nfo = next(i for i in master if i.exchange == "NFO" and i.is_option)
    assert resolver.resolve("NFO" + nfo.tradingsymbol).corrected_from is None
    assert resolver.resolve("NSERELIANCE").instrument is not None
    assert "not in the instrument master" in resolver.resolve("NSEOLDCO").reason
    assert "no exchange prefix" in resolver.resolve("RELIANCE").reason


def test_tick_times_and_numbers(transformer):
    plan = transformer.plan(
        1, "ticks:latest:NSEINFY", LegacyKey(LegacyKind.TICK_LATEST, "NSEINFY"),
        {b"last_price": b"1600", b"volume": b"12.0", b"exchange_timestamp": b"2026-11-20T10:15:32",
         b"timestamp_ms": str(EPOCH_10_15_32_123).encode()}, None,
    )  # fmt: skip
    fields = plan.ops[0].fields  # type: ignore[union-attr]
    assert fields["last_price"] == "1600.0" and fields["volume_traded"] == "12"
    assert fields["exchange_timestamp"] == "2026-11-20T10:15:32+05:30"
    assert fields["received_at"] == "2026-11-20T10:15:32.123+05:30"
    bad = transformer.plan(
        1,
        "x",
        LegacyKey(LegacyKind.TICK_LATEST, "NSEINFY"),
        {b"last_price": b"1", b"volume": b"1.5"},
        None,
    )
    assert bad.outcome == "quarantine" and "whole number" in bad.reason


def test_vix_regime_uses_the_settings_thresholds(transformer):
    for vix, regime in ((14.99, "LOW"), (15, "NORMAL"), (20, "HIGH"), (25.5, "PANIC")):
        plan = transformer.plan(
            0, "v", LegacyKey(LegacyKind.VIX), json.dumps({"last_price": vix}).encode(), None
        )
        assert plan.ops[0].fields["regime"] == regime  # type: ignore[union-attr]
    with pytest.raises(Malformed):
        transformer._vix("{not json")


def test_per_field_expiry_where_the_target_has_it(tmp_path, master):
    option = next(i for i in master if i.exchange == "NFO" and i.is_option)
    symbol = f"NFO{option.tradingsymbol}"
    binary = redis74_binary()
    with (
        redis_process(tmp_path / "src") as src,
        redis_process(tmp_path / "dst", binary=binary) as dst,
    ):
        s2 = src.client(2)
        s2.set(f"ind:greeks:{symbol}:delta", "0.5", ex=600)
        s2.set(f"ind:greeks:{symbol}:gamma", "0.01", ex=900)
        report = migrator(src, dst, master, batch=1).run(backup_path=None)
        assert report.verified
        key, c = f"greeks:{option.instrument_token}", dst.client()
        fields = ["delta", "gamma", "underlying_token"]
        delta, gamma, shared = c.execute_command("HPEXPIRETIME", key, "FIELDS", 3, *fields)
        assert delta == s2.pexpiretime(f"ind:greeks:{symbol}:delta")
        assert gamma == shared == s2.pexpiretime(f"ind:greeks:{symbol}:gamma")
        assert c.pexpiretime(key) == -1  # per-field, not per-key
        again = migrator(src, dst, master).run(backup_path=None)
        assert again.passes[0].target.changes == 0
