"""The ledger writer on a healthy store: group commit, batching, counters."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest

from metering_middleware.clock import ManualClock
from metering_middleware.ledger import (
    LedgerWriter,
    MemoryStore,
    Outcome,
    OutcomeCount,
    SqliteStore,
)

from .support import T0, GatedStore, make_records


def _visible(path: Path, ids: list[str]) -> int:
    """How many of ``ids`` an independent connection sees committed."""
    conn = sqlite3.connect(path)
    try:
        marks = ",".join("?" * len(ids))
        return int(
            conn.execute(f"SELECT count(*) FROM calls WHERE id IN ({marks})", ids).fetchone()[0]
        )
    finally:
        conn.close()


async def test_strict_futures_resolve_only_after_rows_are_visible(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    seen_at_resolution: list[int] = []
    async with SqliteStore(path) as store, LedgerWriter(store, journal=None) as writer:
        for size in (1, 7, 50):
            records = make_records(size)
            futures = [writer.submit(r) for r in records]  # each caller its own future
            ids = [r.id for r in records]

            def on_resolved(_: object, ids: list[str] = ids) -> None:
                # Runs the moment the future resolves, before any awaiter wakes up.
                seen_at_resolution.append(_visible(path, ids))

            futures[0].add_done_callback(on_resolved)
            futures[-1].add_done_callback(on_resolved)
            await asyncio.gather(*futures)
    assert seen_at_resolution == [1, 1, 7, 7, 50, 50]


async def test_strict_takes_everything_pending_in_one_commit() -> None:
    store = MemoryStore()
    async with LedgerWriter(store, journal=None, mode="strict") as writer:
        futures = [writer.submit(r) for r in make_records(500)]
        await asyncio.gather(*futures)

    assert store.writes == 1
    assert len(await store.calls()) == 500
    assert writer.stats.committed == 500
    assert writer.stats.commits == 1


async def test_submissions_during_a_commit_gather_into_the_next_batch() -> None:
    store = GatedStore()
    store.gate.clear()
    async with LedgerWriter(store, journal=None, mode="strict") as writer:
        first = writer.submit(make_records(1)[0])
        await store.entered.wait()  # the first commit is in flight
        second = [writer.submit(r) for r in make_records(100)]
        assert writer.stats.pending == 100
        store.gate.set()
        await asyncio.gather(first, *second)

    assert store.writes == 2


async def test_concurrent_submitters_share_commits(tmp_path: Path) -> None:
    async def submitter(writer: LedgerWriter) -> None:
        for record in make_records(20):
            await writer.submit(record)

    async with SqliteStore(tmp_path / "l.db") as store:
        async with LedgerWriter(store, journal=None, mode="strict") as writer:
            await asyncio.gather(*(submitter(writer) for _ in range(64)))
        assert len(await store.calls()) == 64 * 20
        assert store.writes <= 64 * 20 // 16  # group commit, not a commit per record


async def test_a_cancelled_caller_cancels_only_its_own_wait() -> None:
    store = GatedStore()
    store.gate.clear()
    async with LedgerWriter(store, journal=None) as writer:
        records = make_records(2)
        impatient = writer.submit(records[0])
        patient = writer.submit(records[1])
        impatient_task = asyncio.ensure_future(_await(impatient))
        await store.entered.wait()  # the batch's commit is in flight
        impatient_task.cancel()
        # At once, not after the commit (asyncio.wait never cancels: a hang detector).
        done, _ = await asyncio.wait([impatient_task], timeout=5.0)
        if not done:
            store.gate.set()  # let the writer stop
        assert done, "a cancelled caller went on waiting for the commit"
        assert impatient_task.cancelled()
        assert impatient.cancelled()  # the Future contract: cancel() cancels
        assert not patient.done()
        store.gate.set()
        await patient
        assert not patient.cancelled()
    assert len(await store.calls()) == 2  # the cancelled caller's record too


async def test_future_cancel_keeps_the_future_contract() -> None:
    store = GatedStore()
    store.gate.clear()
    async with LedgerWriter(store, journal=None) as writer:
        first, second = (writer.submit(r) for r in make_records(2))
        await store.entered.wait()
        cancelled = first.cancel()
        if not cancelled:
            store.gate.set()  # let the writer stop
        assert cancelled is True
        assert first.cancelled() and first.done()
        assert first.cancel() is False  # already cancelled
        # wait_for cancels the future it waited on when it times out: it must return then,
        # not when the commit happens to finish.
        timing_out = asyncio.ensure_future(asyncio.wait_for(second, 0.01))
        done, _ = await asyncio.wait([timing_out], timeout=5.0)
        if not done:
            store.gate.set()  # let the writer stop
        assert done, "wait_for could not give up: the future refused to be cancelled"
        assert isinstance(timing_out.exception(), TimeoutError)
        assert second.cancelled()
        store.gate.set()
    assert len(await store.calls()) == 2


async def _await(future: asyncio.Future[None]) -> None:
    await future


async def test_batched_commits_when_the_interval_has_passed() -> None:
    clock = ManualClock(T0)
    store = MemoryStore()
    writer = LedgerWriter(store, journal=None, mode="batched", flush_interval=0.05, clock=clock)
    async with writer:
        future = writer.submit(make_records(1)[0])
        for record in make_records(9):
            clock.advance(0.004)
            writer.submit(record)
        await writer.tick()
        assert store.writes == 0  # 36 ms after the first record
        assert not future.done()

        clock.advance(0.02)  # 56 ms after the first record
        await writer.tick()
        assert future.done()
        assert store.writes == 1
        assert len(await store.calls()) == 10


async def test_batched_commits_a_full_batch_at_once() -> None:
    store = MemoryStore()
    writer = LedgerWriter(store, journal=None, mode="batched", max_batch=5, clock=ManualClock())
    async with writer:
        futures = {writer.submit(r) for r in make_records(5)}
        await asyncio.gather(*futures)  # the clock never moved
    assert store.writes == 1


async def test_batched_stop_loses_nothing(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    async with SqliteStore(tmp_path / "l.db") as store:
        writer = LedgerWriter(store, journal=None, mode="batched", flush_interval=60, clock=clock)
        await writer.start()
        records = make_records(123)
        for record in records:
            writer.submit(record)
        writer.count("acct-a", "facebody", "DetectFace", Outcome.CHARGED, "", T0)
        await writer.stop()

        assert await store.calls() == records
        assert len(await store.outcome_counts()) == 1
        assert writer.stats.pending == 0


async def test_flush_now_ignores_the_clock() -> None:
    store = MemoryStore()
    writer = LedgerWriter(
        store, journal=None, mode="batched", flush_interval=60, clock=ManualClock()
    )
    async with writer:
        future = writer.submit(make_records(1)[0])
        await writer.flush_now()
        assert future.done()
        assert store.writes == 1


async def test_counts_are_summed_per_minute_and_flushed_with_a_batch() -> None:
    store = MemoryStore()
    minute = T0.replace(second=0, microsecond=0)
    async with LedgerWriter(store, journal=None, clock=ManualClock(T0)) as writer:
        for seconds in (0, 10, 50):
            writer.count("a", "ocr", "X", Outcome.CHARGED, "", T0 + timedelta(seconds=seconds))
        writer.count("a", "ocr", "X", Outcome.FREE, "Throttling.User", T0)
        await writer.submit(make_records(1)[0])

    assert store.writes == 1
    assert await store.outcome_counts() == [
        OutcomeCount(minute, "a", "ocr", "X", Outcome.CHARGED, "", 2),
        OutcomeCount(minute, "a", "ocr", "X", Outcome.FREE, "Throttling.User", 1),
        OutcomeCount(minute + timedelta(minutes=1), "a", "ocr", "X", Outcome.CHARGED, "", 1),
    ]


async def test_counts_alone_are_flushed_after_the_count_interval() -> None:
    clock = ManualClock(T0)
    store = MemoryStore()
    async with LedgerWriter(store, journal=None, count_interval=1.0, clock=clock) as writer:
        writer.count("a", "ocr", "X", Outcome.REFUSED, "bad_signature", T0)
        clock.advance(0.9)
        await writer.tick()
        assert store.writes == 0

        clock.advance(0.1)
        await writer.tick()
        assert store.writes == 1
        assert [c.count for c in await store.outcome_counts()] == [1]


async def test_submit_needs_a_running_writer() -> None:
    writer = LedgerWriter(MemoryStore(), journal=None)
    with pytest.raises(RuntimeError, match="new"):
        writer.submit(make_records(1)[0])
    await writer.start()
    await writer.stop()
    with pytest.raises(RuntimeError, match="stopped"):
        writer.submit(make_records(1)[0])
    assert not writer.accepting
    assert not writer.healthy


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="mode"):
        LedgerWriter(MemoryStore(), journal=None, mode="eventually")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_batch"):
        LedgerWriter(MemoryStore(), journal=None, max_batch=0)
    with pytest.raises(ValueError, match="interval"):
        LedgerWriter(MemoryStore(), journal=None, flush_interval=0)
