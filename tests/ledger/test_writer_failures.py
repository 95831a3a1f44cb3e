"""The writer when the store fails: journal, hold, recover; never lose or duplicate."""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
from collections import Counter
from pathlib import Path

import pytest

from metering_middleware.clock import ManualClock
from metering_middleware.ledger import (
    CallRecord,
    Journal,
    LedgerUnavailable,
    LedgerWriter,
    MemoryStore,
    Outcome,
    OutcomeCount,
    SqliteStore,
    StoreError,
)

from .support import T0, make_records

MINUTE = T0.replace(second=0, microsecond=0)


def _ids_in(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return [row[0] for row in conn.execute("SELECT id FROM calls")]
    finally:
        conn.close()


async def _submit_all(writer: LedgerWriter, records: list[CallRecord]) -> None:
    await asyncio.gather(*{writer.submit(r) for r in records})


async def test_a_locked_sqlite_file_sends_batches_to_the_journal_until_it_recovers(
    tmp_path: Path,
) -> None:
    clock = ManualClock(T0)
    journal = Journal(tmp_path / "j.jsonl")
    before, during = make_records(5), make_records(7)
    async with SqliteStore(tmp_path / "l.db", busy_timeout_ms=20) as store:
        writer = LedgerWriter(store, journal=journal, clock=clock)
        async with writer:
            await _submit_all(writer, before)
            blocker = sqlite3.connect(store.path, isolation_level=None)
            blocker.execute("BEGIN EXCLUSIVE")
            try:
                await _submit_all(writer, during[:3])  # fails on the lock, then journaled
                await _submit_all(writer, during[3:])  # straight to the journal
                assert not writer.healthy
                assert writer.accepting
                assert (await journal.replay())[0] == during
                assert not await writer.retry_now()  # still locked
            finally:
                blocker.execute("ROLLBACK")
                blocker.close()

            assert await writer.retry_now()
            assert writer.healthy
            assert journal.size() == 0
            stats = writer.stats
            assert (stats.journaled, stats.replayed, stats.pending) == (7, 7, 0)
        ids = _ids_in(store.path)
    assert sorted(ids) == sorted(r.id for r in before + during)


def _backup(source: Path, target: Path) -> None:
    src, dst = sqlite3.connect(source), sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


async def test_a_removed_sqlite_file_journals_until_a_copy_of_it_is_restored(
    tmp_path: Path,
) -> None:
    journal = Journal(tmp_path / "j.jsonl")
    before, during = make_records(4), make_records(6)
    async with SqliteStore(tmp_path / "l.db") as store:
        async with LedgerWriter(store, journal=journal, clock=ManualClock(T0)) as writer:
            await _submit_all(writer, before)
            _backup(store.path, tmp_path / "backup.db")
            os.remove(store.path)
            await _submit_all(writer, during)
            assert writer.stats.journaled == 6
            for _ in range(3):  # never a new, empty ledger at the path
                assert not await writer.retry_now()
                assert writer.accepting
                assert not store.path.exists()

            os.rename(tmp_path / "backup.db", store.path)
            assert await writer.retry_now()  # the same ledger: it gets the journal
            assert journal.size() == 0
        assert sorted(_ids_in(store.path)) == sorted(r.id for r in before + during)


async def test_a_file_moved_away_and_back_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.jsonl")
    records = make_records(30)
    store = SqliteStore(tmp_path / "l.db")
    async with store, LedgerWriter(store, journal=journal, clock=ManualClock(T0)) as writer:
        await _submit_all(writer, records[:10])
        os.rename(store.path, tmp_path / "moved.db")
        await _submit_all(writer, records[10:20])
        assert not await writer.retry_now()
        assert not store.path.exists()
        os.rename(tmp_path / "moved.db", store.path)
        assert await writer.retry_now()
        await _submit_all(writer, records[20:])
    ids = Counter(_ids_in(tmp_path / "l.db"))
    assert set(ids) == {r.id for r in records}
    assert max(ids.values()) == 1


async def test_another_ledger_put_at_the_path_gets_nothing(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.jsonl")
    records = make_records(12)
    async with SqliteStore(tmp_path / "other.db"):
        pass  # a fresh ledger, e.g. made by a mistyped `metering accounts add`
    store = SqliteStore(tmp_path / "l.db")
    async with store, LedgerWriter(store, journal=journal, clock=ManualClock(T0)) as writer:
        await _submit_all(writer, records[:4])
        os.rename(store.path, tmp_path / "real.db")
        os.rename(tmp_path / "other.db", store.path)
        await _submit_all(writer, records[4:8])
        assert not await writer.retry_now()
        assert _ids_in(store.path) == []  # the stand-in took nothing
        os.replace(tmp_path / "real.db", store.path)
        assert await writer.retry_now()
        await _submit_all(writer, records[8:])
    assert sorted(_ids_in(store.path)) == sorted(r.id for r in records)


async def test_store_and_journal_down_refuses_then_commits_what_it_held(tmp_path: Path) -> None:
    store = MemoryStore(fail_with=StoreError("down"))
    journal = Journal(tmp_path / "missing-dir" / "j.jsonl")
    records = make_records(3)
    count = OutcomeCount(MINUTE, "acct-a", "facebody", "DetectFace", Outcome.CHARGED, "", 3)
    async with LedgerWriter(store, journal=journal, clock=ManualClock(T0)) as writer:
        for r in records:
            writer.count(r.account, r.category, r.action, Outcome.CHARGED, "", T0)
        futures = {writer.submit(r) for r in records}
        for future in futures:
            with pytest.raises(LedgerUnavailable):
                await future
        assert not writer.accepting
        assert writer.stats.held == 3

        assert not await writer.retry_now()  # both still down
        assert not writer.accepting

        store.fail_with = None
        assert await writer.retry_now()
        assert writer.accepting
        assert writer.stats.held == 0
    assert await store.calls() == records
    assert await store.outcome_counts() == [count]


async def test_held_records_move_to_the_journal_when_it_comes_back(tmp_path: Path) -> None:
    store = MemoryStore(fail_with=StoreError("down"))
    journal = Journal(tmp_path / "later" / "j.jsonl")
    records = make_records(4)
    async with LedgerWriter(store, journal=journal, clock=ManualClock(T0)) as writer:
        with pytest.raises(LedgerUnavailable):
            await writer.submit(records[0])
        (tmp_path / "later").mkdir()
        await _submit_all(writer, records[1:])  # journaled, and the held one with them
        assert writer.accepting
        assert sorted(r.id for r in (await journal.replay())[0]) == sorted(r.id for r in records)

        store.fail_with = None
        assert await writer.retry_now()
    assert sorted(await store.calls(), key=lambda r: r.id) == sorted(records, key=lambda r: r.id)


async def test_sqlite_and_journal_in_a_removed_directory(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    store = SqliteStore(data / "l.db")
    await store.open()
    records = make_records(5)
    async with LedgerWriter(store, journal=Journal(data / "j.jsonl"), clock=ManualClock()) as w:
        await _submit_all(w, records[:2])
        shutil.rmtree(data)
        with pytest.raises(LedgerUnavailable):
            await _submit_all(w, records[2:])
        assert not await w.retry_now()
        assert not w.accepting

        data.mkdir()  # the journal can be written again; the ledger is gone for good
        assert not await w.retry_now()
        assert w.accepting
        assert not (data / "l.db").exists()
    await store.close()
    assert sorted(r.id for r in (await Journal(data / "j.jsonl").replay())[0]) == sorted(
        r.id for r in records[2:]
    )


async def test_retries_wait_for_the_retry_interval() -> None:
    clock = ManualClock(T0)
    store = MemoryStore(fail_with=StoreError("down"))
    writer = LedgerWriter(store, journal=None, retry_interval=1.0, clock=clock)
    async with writer:
        with pytest.raises(LedgerUnavailable):
            await writer.submit(make_records(1)[0])
        await writer.tick()
        assert store.reopens == 0  # the interval has not passed

        clock.advance(1.0)
        await writer.tick()
        assert store.reopens == 1
        store.fail_with = None
        await writer.tick()
        assert store.reopens == 1  # retried at most once per interval
        clock.advance(1.0)
        await writer.tick()
        assert writer.accepting
    assert len(await store.calls()) == 1


async def test_stop_journals_what_the_store_cannot_take(tmp_path: Path) -> None:
    store = MemoryStore()
    journal = Journal(tmp_path / "j.jsonl")
    writer = LedgerWriter(store, journal=journal, mode="batched", flush_interval=60)
    await writer.start()
    records = make_records(3)
    for r in records:
        writer.submit(r)
    store.fail_with = StoreError("down")
    await writer.stop()

    assert (await journal.replay())[0] == records
    assert await store.calls() == []


async def test_stop_raises_if_records_are_only_in_memory(tmp_path: Path) -> None:
    store = MemoryStore(fail_with=StoreError("down"))
    writer = LedgerWriter(store, journal=Journal(tmp_path / "no" / "j.jsonl"))
    await writer.start()
    future = writer.submit(make_records(1)[0])
    with pytest.raises(LedgerUnavailable, match="1 ledger records"):
        await writer.stop()
    assert isinstance(future.exception(), LedgerUnavailable)


async def test_a_restart_replays_the_journal_including_a_torn_line(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.jsonl")
    records = make_records(6)
    count = OutcomeCount(MINUTE, "a", "ocr", "X", Outcome.FREE, "Throttling.User", 2)
    await journal.append(records[:4], [count])
    await journal.append(records[4:])
    with journal.path.open("ab") as f:
        f.write(b'{"r":{"id":"crashed-mid-append"')
    async with SqliteStore(tmp_path / "l.db") as store:
        await store.write(records[:2], [])  # the crash came after some of it was committed

        async with LedgerWriter(store, journal=Journal(journal.path)) as writer:
            assert writer.healthy
            assert writer.stats.replayed == 6
            assert journal.size() == 0

        assert sorted(_ids_in(store.path)) == sorted(r.id for r in records)
        assert await store.outcome_counts() == [count]


async def test_a_restart_with_the_store_down_replays_later(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.jsonl")
    records = make_records(2)
    await journal.append(records)
    store = MemoryStore(fail_with=StoreError("down"))
    async with LedgerWriter(store, journal=journal, clock=ManualClock()) as writer:
        assert not writer.healthy
        assert writer.accepting  # the journal works
        store.fail_with = None
        assert await writer.retry_now()
    assert await store.calls() == records
    assert journal.size() == 0


class _TruncateFailsOnce(Journal):
    failed = False

    async def truncate(self) -> None:
        if not self.failed:
            self.failed = True
            raise PermissionError("truncate refused")
        await super().truncate()


async def test_a_failed_truncate_does_not_count_twice(tmp_path: Path) -> None:
    journal = _TruncateFailsOnce(tmp_path / "j.jsonl")
    count = OutcomeCount(MINUTE, "a", "ocr", "X", Outcome.CHARGED, "", 1)
    first, second = make_records(2), make_records(1)
    await journal.append(first, [count])
    store = MemoryStore()
    async with LedgerWriter(store, journal=journal, clock=ManualClock()) as writer:
        assert journal.failed  # replayed at start, but the journal is still there
        assert journal.size() > 0
        store.fail_with = StoreError("down")
        await _submit_all(writer, second)  # journaled after the part already replayed
        store.fail_with = None
        assert await writer.retry_now()
    assert journal.size() == 0
    assert await store.outcome_counts() == [count]
    assert len(await store.calls()) == 3
