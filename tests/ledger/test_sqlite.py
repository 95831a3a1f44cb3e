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
from metering_middleware.ledger.migrate import load_migrations

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


async def test_a_removed_file_is_detected_and_reopen_starts_a_new_one(
    sqlite_store: SqliteStore,
) -> None:
    await sqlite_store.write(make_records(2), [])
    os.remove(sqlite_store.path)

    with pytest.raises(StoreError, match="removed or replaced"):
        await sqlite_store.write(make_records(1), [])
    with pytest.raises(StoreError, match="removed or replaced"):
        await sqlite_store.check()

    await sqlite_store.reopen()
    await sqlite_store.check()
    # A new, empty, migrated file.
    assert sqlite_store.applied_migrations == tuple(m.version for m in load_migrations())
    record = make_record()
    await sqlite_store.write([record], [])
    assert await sqlite_store.calls() == [record]


async def test_a_replaced_file_is_detected(tmp_path: Path, sqlite_store: SqliteStore) -> None:
    async with SqliteStore(tmp_path / "other.db") as other:
        await other.write(make_records(1), [])
    os.replace(tmp_path / "other.db", sqlite_store.path)

    with pytest.raises(StoreError, match="removed or replaced"):
        await sqlite_store.write(make_records(1), [])

    await sqlite_store.reopen()
    assert len(await sqlite_store.calls()) == 1  # now the replacement's content


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
