"""The SQLite stores' owner thread: all their file and database work off the event loop.

Every ``os.stat`` of the ledger file (the identity check before each operation, the one
after opening) and every SQLite statement the store runs is recorded with the thread it
ran in; none may be the event loop's. The ledger store's check fails on the code before
the owner thread (it stat'ed on the loop); the rating store's loop work then was closing
its connection, which neither recording sees, so its test guards the rest.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from pathlib import Path

import pytest

from metering_middleware.ledger import Journal, SqliteStore, StoreError
from metering_middleware.rating import SqliteRatingStore
from metering_middleware.stores.sqlite._owner import OwnerThread

from .support import make_records


@pytest.fixture
def stat_threads(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[int]:
    """The thread of every ``os.stat`` of a file in ``tmp_path`` (the stores' checks)."""
    seen: list[int] = []
    real = os.stat

    def stat(path: object, *args: object, **kwargs: object) -> os.stat_result:
        if str(path).startswith(str(tmp_path)):
            seen.append(threading.get_ident())
        return real(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "stat", stat)
    return seen


@pytest.fixture
def connect_threads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The thread of every statement on a connection opened meanwhile (trace callback)."""
    seen: list[int] = []
    real = sqlite3.connect

    def connect(*args: object, **kwargs: object) -> sqlite3.Connection:
        conn = real(*args, **kwargs)  # type: ignore[arg-type]
        conn.set_trace_callback(lambda _sql: seen.append(threading.get_ident()))
        return conn

    monkeypatch.setattr(sqlite3, "connect", connect)
    return seen


async def test_the_ledger_store_never_touches_its_file_on_the_loop(
    tmp_path: Path, stat_threads: list[int], connect_threads: list[int]
) -> None:
    loop_thread = threading.get_ident()
    async with SqliteStore(tmp_path / "ledger.db") as store:
        await store.write(make_records(3), [])
        assert len(await store.calls()) == 3
        await store.check()
        await store.reopen()
        async for _ in store.iter_calls(page=2):
            pass
    assert stat_threads and connect_threads  # the recording saw the store's work
    assert loop_thread not in stat_threads
    assert loop_thread not in connect_threads


async def test_the_rating_store_never_touches_its_file_on_the_loop(
    tmp_path: Path, stat_threads: list[int], connect_threads: list[int]
) -> None:
    loop_thread = threading.get_ident()
    async with SqliteRatingStore(tmp_path / "ledger.db") as rating:
        assert await rating.max_seq() == 0
        await rating.balances()
    assert stat_threads and connect_threads
    assert loop_thread not in stat_threads
    assert loop_thread not in connect_threads


async def test_one_thread_per_store_from_open_to_close(tmp_path: Path) -> None:
    def owners() -> set[str]:
        return {t.name for t in threading.enumerate() if t.name.startswith("ledger-sqlite:")}

    before = owners()
    store = SqliteStore(tmp_path / "ledger.db")
    await store.open()
    assert owners() - before == {"ledger-sqlite:ledger.db"}
    for _ in range(3):  # no thread per call
        await store.write(make_records(1), [])
    assert len(owners() - before) == 1
    await store.close()
    await asyncio.sleep(0)
    for _ in range(100):  # the thread ends after the close it ran (joined by nobody)
        if not owners() - before:
            break
        await asyncio.to_thread(lambda: None)
    assert owners() - before == set()
    with pytest.raises(StoreError, match="not open"):
        await store.calls()


async def test_a_failed_first_open_leaves_no_thread(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "missing.db", create=False)
    with pytest.raises(StoreError):
        await store.open()
    assert store._owner is None  # nothing to keep a thread for


async def test_calls_run_in_order_and_a_cancelled_caller_does_not_reorder() -> None:
    owner = OwnerThread("test-owner")
    order: list[int] = []
    gate = threading.Event()

    def step(n: int) -> int:
        if n == 0:
            gate.wait(5)
        order.append(n)
        return n

    first = asyncio.ensure_future(owner.call(step, 0))
    await asyncio.sleep(0)  # submitted
    second = asyncio.ensure_future(owner.call(step, 1))
    await asyncio.sleep(0)
    first.cancel()  # its call still runs, in its turn
    gate.set()
    assert await second == 1
    assert order == [0, 1]
    with pytest.raises(ValueError, match="boom"):
        await owner.call(_raise)
    await owner.stop()
    with pytest.raises(RuntimeError, match="stopped"):
        await owner.call(step, 2)


def _raise() -> None:
    raise ValueError("boom")


async def test_the_journal_keeps_its_size_without_a_stat_on_the_loop(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db.journal"
    left = Journal(path)
    await left.append(make_records(2))
    assert left.bytes == left.size() > 0

    journal = Journal(path)  # a journal left by an earlier run: unknown until measured
    assert journal.bytes == 0
    assert await journal.measure() == left.size()
    await journal.append(make_records(1))
    assert journal.bytes == journal.size()
    await journal.truncate()
    assert journal.bytes == journal.size() == 0
