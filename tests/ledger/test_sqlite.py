"""SQLite-only behaviour: storage format, transactions, file identity, locks."""

from __future__ import annotations

import os
import re
import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import pytest

from metering_middleware.clock import ManualClock
from metering_middleware.ledger import Outcome, OutcomeCount, SqliteStore, StoreError
from metering_middleware.ledger.migrate import LedgerMissing, NotALedger, load_migrations

from .support import T0, make_record, make_records

TIME_TEXT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def _rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


async def test_times_are_fixed_width_utc_text(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    async with SqliteStore(tmp_path / "l.db", clock=clock) as store:
        record = make_record(occurred_at=T0.replace(microsecond=0))
        count = OutcomeCount(
            T0.replace(second=0, microsecond=0), "a", "c", "x", Outcome.FREE, "", 1
        )
        await store.write([record], [count])

    [(occurred, recorded)] = _rows(tmp_path / "l.db", "SELECT occurred_at, recorded_at FROM calls")
    [(minute,)] = _rows(tmp_path / "l.db", "SELECT minute FROM outcome_counts")
    assert occurred == "2026-01-15T08:30:12.000000Z"
    assert recorded == "2026-01-15T08:30:12.123456Z"
    assert all(TIME_TEXT.match(t) for t in (occurred, recorded, minute))


async def test_file_is_wal_and_migrated(sqlite_store: SqliteStore) -> None:
    versions = tuple(m.version for m in load_migrations())
    assert sqlite_store.applied_migrations == versions
    assert _rows(sqlite_store.path, "PRAGMA journal_mode") == [("wal",)]
    assert _rows(sqlite_store.path, "SELECT version FROM schema_migrations") == [
        (v,) for v in versions
    ]
    assert _rows(sqlite_store.path, "PRAGMA user_version") == [(versions[-1],)]


async def test_reopening_a_migrated_file_applies_nothing(tmp_path: Path) -> None:
    async with SqliteStore(tmp_path / "l.db") as first:
        await first.write(make_records(3), [])
    async with SqliteStore(tmp_path / "l.db") as second:
        assert second.applied_migrations == ()
        assert len(await second.calls()) == 3


async def test_a_failing_write_rolls_back_the_whole_batch(sqlite_store: SqliteStore) -> None:
    good = make_records(3)
    # NOT NULL violation on the last row (a record built around the type checker).
    bad = replace(make_record(), account=cast(str, None))
    count = OutcomeCount(T0.replace(second=0, microsecond=0), "a", "c", "x", Outcome.FREE, "", 1)

    with pytest.raises(StoreError, match="NOT NULL"):
        await sqlite_store.write([*good, bad], [count])

    assert await sqlite_store.calls() == []
    assert await sqlite_store.outcome_counts() == []
    await sqlite_store.write(good, [count])  # the connection is usable afterwards
    assert await sqlite_store.calls() == good


async def test_a_removed_file_is_a_failure_and_never_recreated(sqlite_store: SqliteStore) -> None:
    await sqlite_store.write(make_records(2), [])
    os.remove(sqlite_store.path)

    with pytest.raises(StoreError, match="gone"):
        await sqlite_store.write(make_records(1), [])
    with pytest.raises(StoreError, match="gone"):
        await sqlite_store.check()
    for _ in range(2):  # the writer retries: every attempt fails, none creates a file
        with pytest.raises(LedgerMissing):
            await sqlite_store.reopen()
        with pytest.raises(StoreError, match="gone"):
            await sqlite_store.check()
    assert not sqlite_store.path.exists()


async def test_a_moved_file_is_a_failure_until_it_is_back(
    tmp_path: Path, sqlite_store: SqliteStore
) -> None:
    before = make_records(3)
    await sqlite_store.write(before, [])
    away = tmp_path / "away.db"
    os.rename(sqlite_store.path, away)
    with pytest.raises(StoreError, match="gone"):
        await sqlite_store.write(make_records(1), [])
    with pytest.raises(LedgerMissing):
        await sqlite_store.reopen()
    assert not sqlite_store.path.exists()

    os.rename(away, sqlite_store.path)
    await sqlite_store.reopen()
    await sqlite_store.check()
    after = make_records(2)
    await sqlite_store.write(after, [])
    assert {r.id for r in await sqlite_store.calls()} == {r.id for r in before + after}


async def test_another_ledger_or_an_empty_file_at_the_path_is_refused(
    tmp_path: Path, sqlite_store: SqliteStore
) -> None:
    await sqlite_store.write(make_records(2), [])
    async with SqliteStore(tmp_path / "other.db") as other:
        await other.write(make_records(1), [])
    os.replace(tmp_path / "other.db", sqlite_store.path)

    with pytest.raises(StoreError, match="replaced"):
        await sqlite_store.write(make_records(1), [])
    with pytest.raises(StoreError, match="different ledger"):
        await sqlite_store.reopen()
    with pytest.raises(StoreError):
        await sqlite_store.check()
    assert len(_rows(sqlite_store.path, "SELECT id FROM calls")) == 1  # left as it was

    sqlite_store.path.write_bytes(b"")  # e.g. `touch ledger.db` after it vanished
    with pytest.raises(NotALedger):
        await sqlite_store.reopen()
    assert sqlite_store.path.stat().st_size == 0


async def test_a_restored_copy_of_the_same_ledger_is_taken_back(
    tmp_path: Path, sqlite_store: SqliteStore
) -> None:
    records = make_records(3)
    await sqlite_store.write(records, [])
    copy = tmp_path / "backup.db"
    source = sqlite3.connect(sqlite_store.path)
    target = sqlite3.connect(copy)
    try:
        source.backup(target)
    finally:
        source.close()
        target.close()
    os.replace(copy, sqlite_store.path)  # a new inode, the same ledger

    with pytest.raises(StoreError, match="replaced"):
        await sqlite_store.check()
    await sqlite_store.reopen()
    await sqlite_store.check()
    assert await sqlite_store.calls() == records


async def test_create_false_refuses_a_missing_or_foreign_file(tmp_path: Path) -> None:
    path = tmp_path / "typo.db"
    with pytest.raises(LedgerMissing, match="no ledger file"):
        await SqliteStore(path, create=False).open()
    assert not path.exists()

    conn = sqlite3.connect(path)  # some other application's database
    conn.execute("CREATE TABLE t (x)")
    conn.close()
    with pytest.raises(NotALedger):
        await SqliteStore(path, create=False).open()

    async with SqliteStore(tmp_path / "l.db"):
        pass
    async with SqliteStore(tmp_path / "l.db", create=False) as existing:
        await existing.check()


async def test_a_locked_file_raises_store_error(sqlite_store: SqliteStore) -> None:
    blocker = sqlite3.connect(sqlite_store.path, isolation_level=None)
    try:
        blocker.execute("BEGIN EXCLUSIVE")
        with pytest.raises(StoreError, match="locked"):
            await sqlite_store.write(make_records(1), [])
        blocker.execute("ROLLBACK")
    finally:
        blocker.close()

    await sqlite_store.write(make_records(1), [])
    assert len(await sqlite_store.calls()) == 1


async def test_operations_on_a_closed_store_raise_store_error(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "l.db")
    with pytest.raises(StoreError, match="not open"):
        await store.write(make_records(1), [])
    await store.open()
    await store.close()
    with pytest.raises(StoreError, match="not open"):
        await store.calls()


async def test_opening_in_a_missing_directory_raises_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="cannot open"):
        await SqliteStore(tmp_path / "missing" / "l.db").open()


async def test_writes_counts_transactions(sqlite_store: SqliteStore) -> None:
    await sqlite_store.write(make_records(5), [])
    await sqlite_store.write([], [])  # nothing to do: no transaction

    assert sqlite_store.writes == 1


def test_options_are_validated(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="synchronous"):
        SqliteStore(tmp_path / "l.db", synchronous=cast(Any, "OFF"))
    with pytest.raises(ValueError, match="busy_timeout_ms"):
        SqliteStore(tmp_path / "l.db", busy_timeout_ms=-1)
