"""A failure injected at each step of the writer: every caller's future is settled.

Real SQLite, a real journal file; faults are raised from inside them (or from the clock
the writer reads). For every scenario: each strict caller's future ends with a result or
``LedgerUnavailable`` (``wait_for`` is only a hang detector), and after a restart that
replays the journal, every record whose caller got a result is in the store, none is
there twice, and no counter is added twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import sqlite3
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from metering_middleware.clock import ManualClock
from metering_middleware.ledger import (
    CallRecord,
    Journal,
    LedgerUnavailable,
    LedgerWriter,
    Outcome,
    OutcomeCount,
    SqliteStore,
    StoreError,
)

from .support import T0, make_records

HANG = 5.0  # seconds: far beyond any real step; reaching it means a caller would hang


@dataclass
class Faults:
    """Errors to raise at the next calls of one step: ``once`` pops, ``down`` stays."""

    once: list[BaseException] = field(default_factory=list)
    down: BaseException | None = None

    def fire(self) -> None:
        if self.once:
            raise self.once.pop(0)
        if self.down is not None:
            raise self.down


class FaultyStore(SqliteStore):
    def __init__(self, path: Path) -> None:
        super().__init__(path, busy_timeout_ms=50)
        self.write_faults = Faults()
        self.check_faults = Faults()
        self.gate = asyncio.Event()  # cleared: writes wait (a commit in flight)
        self.gate.set()
        self.entered = asyncio.Event()

    async def write(self, records: Sequence[CallRecord], counts: Sequence[OutcomeCount]) -> None:
        self.entered.set()
        await self.gate.wait()
        self.write_faults.fire()
        await super().write(records, counts)

    async def check(self) -> None:
        self.check_faults.fire()
        await super().check()


class FaultyJournal(Journal):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.append_faults = Faults()
        self.replay_faults = Faults()

    async def append(
        self, records: Sequence[CallRecord], counts: Sequence[OutcomeCount] = ()
    ) -> None:
        self.append_faults.fire()
        await super().append(records, counts)

    async def replay(self, start: int = 0) -> tuple[list[CallRecord], list[OutcomeCount]]:
        self.replay_faults.fire()
        return await super().replay(start)


class FaultyClock(ManualClock):
    def __init__(self) -> None:
        super().__init__(T0)
        self.faults = Faults()

    def monotonic(self) -> float:
        task = asyncio.current_task()
        if task is not None and task.get_name() == "ledger-writer":  # not the callers
            self.faults.fire()
        return super().monotonic()


@dataclass
class Run:
    store: FaultyStore
    journal: FaultyJournal
    clock: FaultyClock
    writer: LedgerWriter
    monkeypatch: pytest.MonkeyPatch
    futures: dict[str, asyncio.Future[None]] = field(default_factory=dict)
    counted: int = 0

    def submit(self, n: int) -> list[asyncio.Future[None]]:
        out = []
        for record in make_records(n):
            out.append(self.writer.submit(record))
            self.futures[record.id] = out[-1]
            self.writer.count("acct-a", "facebody", "DetectFace", Outcome.CHARGED, "", T0)
            self.counted += 1
        return out

    async def settle(self, futures: Sequence[asyncio.Future[None]]) -> None:
        # asyncio.wait, not wait_for: it never cancels what it waits on, so it detects a
        # hang even where cancelling would not return.
        if futures:
            _, pending = await asyncio.wait(futures, timeout=HANG)
            assert not pending, f"{len(pending)} callers would wait forever"

    def fail_fsync(self) -> None:
        def fsync(fd: int) -> None:
            raise OSError(errno.EIO, "injected fsync failure")

        self.monkeypatch.setattr(os, "fsync", fsync)

    def heal(self) -> None:
        for faults in (
            self.store.write_faults,
            self.store.check_faults,
            self.journal.append_faults,
            self.journal.replay_faults,
            self.clock.faults,
        ):
            faults.once.clear()
            faults.down = None
        self.store.gate.set()
        self.monkeypatch.undo()


Scenario = Callable[[Run], Awaitable[None]]


async def store_write_fails(run: Run) -> None:
    run.store.write_faults.down = StoreError("injected: store down")
    await run.settle(run.submit(5))
    await run.settle(run.submit(5))


async def store_write_raises_an_unexpected_type(run: Run) -> None:
    run.store.write_faults.once.append(RuntimeError("injected: a bug in the store"))
    await run.settle(run.submit(5))
    await run.settle(run.submit(5))


async def store_write_raises_cancelled_error(run: Run) -> None:
    run.store.write_faults.once.append(asyncio.CancelledError())
    await run.settle(run.submit(5))
    await run.settle(run.submit(5))  # the writer goes on


async def journal_append_fails(run: Run) -> None:
    run.store.write_faults.down = StoreError("injected: store down")
    run.journal.append_faults.down = OSError(errno.ENOSPC, "injected: disk full")
    await run.settle(run.submit(5))
    assert not run.writer.accepting
    run.journal.append_faults.down = None
    await run.writer.retry_now()  # the held records go to the journal
    await run.settle(run.submit(5))


async def journal_append_raises_cancelled_error(run: Run) -> None:
    run.store.write_faults.down = StoreError("injected: store down")
    run.journal.append_faults.once.append(asyncio.CancelledError())
    await run.settle(run.submit(5))
    await run.settle(run.submit(5))


async def journal_fsync_fails(run: Run) -> None:
    run.store.write_faults.down = StoreError("injected: store down")
    run.fail_fsync()
    await run.settle(run.submit(5))
    await run.writer.retry_now()  # fails again: the append is cut, not left half-done
    await run.settle(run.submit(3))
    run.monkeypatch.undo()
    await run.writer.retry_now()


async def recover_raises(run: Run) -> None:
    run.store.write_faults.down = StoreError("injected: store down")
    await run.settle(run.submit(5))  # journaled
    run.store.write_faults.down = None
    run.store.check_faults.once.append(asyncio.CancelledError())
    await run.writer.retry_now()
    await run.settle(run.submit(5))
    run.store.check_faults.once.append(RuntimeError("injected: a bug in check"))
    await run.writer.retry_now()


async def replay_raises(run: Run) -> None:
    run.store.write_faults.down = StoreError("injected: store down")
    await run.settle(run.submit(5))  # journaled
    run.store.write_faults.down = None
    run.journal.replay_faults.once.append(ValueError("injected: a bug in the replay"))
    await run.writer.retry_now()
    await run.settle(run.submit(5))


async def replay_write_fails(run: Run) -> None:
    run.store.write_faults.down = StoreError("injected: store down")
    await run.settle(run.submit(5))  # journaled
    run.store.write_faults.down = None
    run.store.write_faults.once.append(StoreError("injected: fails during the replay"))
    await run.writer.retry_now()
    await run.settle(run.submit(5))


async def count_flush_fails(run: Run) -> None:
    run.store.write_faults.down = StoreError("injected: store down")
    run.journal.append_faults.down = OSError(errno.EIO, "injected")
    for _ in range(4):  # counters alone, no record
        run.writer.count("acct-a", "facebody", "DetectFace", Outcome.FREE, "x", T0)
        run.counted += 1
    await run.writer.flush_now()
    assert not run.writer.accepting  # held
    await run.settle(run.submit(3))


async def the_loop_itself_raises(run: Run) -> None:
    # The writer's own pass (deciding what is due) fails, before any batch is cut.
    run.clock.faults.down = RuntimeError("injected: a bug in the writer's pass")
    futures = run.submit(5)
    await run.settle(futures)
    run.clock.faults.down = None
    await run.settle(run.submit(5))


async def stop_while_a_batch_is_in_flight(run: Run) -> None:
    run.store.gate.clear()
    futures = run.submit(5)
    await run.store.entered.wait()  # the commit is in flight
    more = run.submit(5)
    stopping = asyncio.ensure_future(run.writer.stop())
    with pytest.raises(TimeoutError):  # an impatient stop(), cancelled by its caller
        await asyncio.wait_for(run.writer.stop(), 0.01)
    run.store.gate.set()
    await asyncio.wait_for(stopping, HANG)
    await run.settle(futures + more)
    assert all(f.result() is None for f in futures + more)  # all committed


async def the_writer_task_is_cancelled(run: Run) -> None:
    run.store.gate.clear()
    futures = run.submit(5)
    await run.store.entered.wait()
    more = run.submit(5)
    task = run.writer._task
    assert task is not None
    task.cancel()  # e.g. the event loop shutting down under it
    await run.settle(futures + more)
    assert not run.writer.accepting
    with pytest.raises(RuntimeError):
        run.writer.submit(make_records(1)[0])  # refused, never queued for nobody


SCENARIOS: list[Scenario] = [
    store_write_fails,
    store_write_raises_an_unexpected_type,
    store_write_raises_cancelled_error,
    journal_append_fails,
    journal_append_raises_cancelled_error,
    journal_fsync_fails,
    recover_raises,
    replay_raises,
    replay_write_fails,
    count_flush_fails,
    the_loop_itself_raises,
    stop_while_a_batch_is_in_flight,
    the_writer_task_is_cancelled,
]


def _ids_in(path: Path) -> Counter[str]:
    conn = sqlite3.connect(path)
    try:
        return Counter(row[0] for row in conn.execute("SELECT id FROM calls"))
    finally:
        conn.close()


def _counted_in(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT coalesce(sum(count), 0) FROM outcome_counts").fetchone()[0])
    finally:
        conn.close()


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
async def test_every_failure_settles_every_future(
    scenario: Scenario, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, journal_path = tmp_path / "l.db", tmp_path / "l.journal"
    store, journal, clock = FaultyStore(path), FaultyJournal(journal_path), FaultyClock()
    await store.open()
    writer = LedgerWriter(store, journal=journal, mode="strict", clock=clock)
    await writer.start()
    run = Run(store, journal, clock, writer, monkeypatch)
    await run.settle(run.submit(3))  # a healthy start
    try:
        await asyncio.wait_for(scenario(run), HANG)
        await run.settle(list(run.futures.values()))
    finally:
        run.heal()
        with contextlib.suppress(LedgerUnavailable):  # held at stop: their callers were told
            await asyncio.wait_for(writer.stop(), HANG)
        await store.close()

    outcomes = {rid: f.exception() for rid, f in run.futures.items()}
    assert all(e is None or isinstance(e, LedgerUnavailable) for e in outcomes.values()), outcomes
    assert any(e is None for e in outcomes.values())

    # A restart replays the journal: then every acknowledged record is in the store once.
    async with SqliteStore(path) as again, LedgerWriter(again, journal=Journal(journal_path)):
        pass
    ids = _ids_in(path)
    acknowledged = {rid for rid, e in outcomes.items() if e is None}
    assert acknowledged <= set(ids)
    assert set(ids) <= set(run.futures)
    assert max(ids.values()) == 1
    assert _counted_in(path) <= run.counted  # a counter is never added twice
