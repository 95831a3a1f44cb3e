"""What the PostgreSQL rating store does differently: the exact pass bound, the advisory
settlement lock across sessions, one result from two settlers started at once."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

from metering_middleware.catalog import default_catalog
from metering_middleware.clock import ManualClock
from metering_middleware.credentials import CredentialManager, SecretBox
from metering_middleware.ledger import StoreError
from metering_middleware.rating import (
    SettleBusy,
    SettleReport,
    buy_resource_plan,
    rating_store_for,
    rating_store_for_url,
    settle,
)
from metering_middleware.rating.cash import top_up
from metering_middleware.stores.postgresql import PostgresStore
from metering_middleware.stores.postgresql.rating import PostgresRatingStore

from .helpers import DETECT, PLATE, calls_between, utc
from .settle_support import LAG, Harness, summary

CATALOG = default_catalog()
T = utc(2026, 3, 1)
_INSERT = (
    "INSERT INTO calls (id, request_id, account, access_key_id, category, action, version,"
    " item, occurred_at, status, error_code, latency_ms, recorded_at)"
    " VALUES ($1, NULL, 'acct', 'AK', 'ocr', 'RecognizeLicensePlate', '2019-12-30',"
    " $2, $3, 200, NULL, 1.0, $3)"
)


async def _wait_until_waiting_on_a_lock(conn: asyncpg.Connection[Any], query: str) -> None:
    """Poll (bounded) until a session runs ``query`` and waits for a lock."""
    for _ in range(2000):
        waiting = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND query LIKE $1",
            query + "%",
        )
        if waiting:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"no session waited on a lock running {query!r}")


async def test_the_pass_bound_waits_for_an_uncommitted_lower_seq(pg_ledger: str) -> None:
    async with Harness(pg_ledger, CATALOG, T) as h:
        writer = await asyncpg.connect(pg_ledger)
        watcher = await asyncpg.connect(pg_ledger)
        try:
            # A writer holds seq 1, uncommitted; seq 2 commits after it and is visible.
            tx = writer.transaction()
            await tx.start()
            await writer.execute(_INSERT, "slow", PLATE, T)
            await h.arrive(calls_between(CATALOG, 1, T, timedelta(seconds=1), prefix="fast"))
            # What a plain max(seq) would bound the pass by: 2, with seq 1 not readable yet
            # (a pass reading seq <= 2 now, and seq > 2 next time, would never bill it).
            assert await watcher.fetchval("SELECT max(seq) FROM calls") == 2
            assert await watcher.fetchval("SELECT count(*) FROM calls") == 1
            bound = asyncio.ensure_future(h.rating.max_seq())
            await _wait_until_waiting_on_a_lock(watcher, "LOCK TABLE calls")
            assert not bound.done()  # it waits for the writer instead of skipping seq 1
            # Meanwhile the gateway's writes go on: the waiting bound lets them through
            # between its short tries instead of queueing them behind its lock request.
            await h.arrive(calls_between(CATALOG, 1, T, timedelta(seconds=1), prefix="more"))
            assert not bound.done()
            await tx.commit()
            seen = await bound
            batch = await h.rating.read_new(0, seen, utc(2027, 1, 1))
        finally:
            await writer.close()
            await watcher.close()
    assert seen == 3
    assert sorted(batch.seqs) == [1, 2, 3]
    assert sorted(r.id for r in batch.records) == ["fast00000000", "more00000000", "slow"]


async def test_the_pass_bound_never_skips_a_record_while_writers_race(pg_ledger: str) -> None:
    """Concurrent writers on several sessions, passes bounded by ``max_seq`` in between:
    every record lands in exactly one pass's ``seq`` range."""
    async with Harness(pg_ledger, CATALOG, T) as h:
        pool = await asyncpg.create_pool(pg_ledger, min_size=4, max_size=4)
        stop = asyncio.Event()

        async def write(n: int) -> int:
            i = 0
            while not stop.is_set() and i < 150:
                async with pool.acquire() as conn, conn.transaction():
                    await conn.execute(_INSERT, f"w{n}-{i}", PLATE, T)
                    await asyncio.sleep(0.001 * (n % 3))  # commits out of seq order
                i += 1
            return i

        writers = [asyncio.ensure_future(write(n)) for n in range(4)]
        read: list[int] = []
        low = 0
        try:
            while not all(w.done() for w in writers):
                high = await h.rating.max_seq()
                read += (await h.rating.read_new(low, high, utc(2027, 1, 1))).seqs
                low = high
            written = sum([await w for w in writers])
            high = await h.rating.max_seq()
            read += (await h.rating.read_new(low, high, utc(2027, 1, 1))).seqs
        finally:
            stop.set()
            await pool.close()
    assert written == 600
    assert sorted(read) == list(range(1, 601))  # each once, none skipped


async def test_the_lock_is_one_session_s_and_goes_with_it(pg_ledger: str) -> None:
    ttl = timedelta(minutes=5)
    async with PostgresStore.from_url(pg_ledger), PostgresRatingStore.from_url(pg_ledger) as a:
        b = PostgresRatingStore.from_url(pg_ledger)
        await b.open()
        try:
            assert await a.acquire_lock("a", T, ttl)
            assert await a.acquire_lock("a", T + timedelta(hours=9), ttl)  # still a's
            assert not await a.acquire_lock("x", T, ttl)  # another owner, same store
            assert not await b.acquire_lock("b", T + timedelta(hours=9), ttl)  # no expiry
            await a.release_lock("x")  # not x's: no effect
            assert not await b.acquire_lock("b", T, ttl)
            await a.release_lock("a")
            assert await b.acquire_lock("b", T, ttl)
            assert not await a.acquire_lock("a", T, ttl)
        finally:
            await b.close()  # closing drops the lock with the session
        assert await a.acquire_lock("a", T, ttl)
        # A session that was lost loses the lock for good: no silent re-take by its owner.
        killer = await asyncpg.connect(pg_ledger)
        try:
            await killer.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'"
                " AND pid IN (SELECT pid FROM pg_locks WHERE locktype = 'advisory')"
            )
        finally:
            await killer.close()
        assert not await a.acquire_lock("a", T, ttl)
        assert await a.acquire_lock("a2", T, ttl)  # a new pass takes it anew


def _settle_in_thread(
    url: str, clock: ManualClock, start: threading.Barrier
) -> SettleReport | SettleBusy:
    """One settler: its own thread, event loop, store and sessions (like another process)."""

    async def run() -> SettleReport | SettleBusy:
        async with PostgresRatingStore.from_url(url) as store:
            start.wait()
            try:
                return await settle(store, CATALOG, clock, lag=LAG)
            except SettleBusy as busy:
                return busy

    return asyncio.run(run())


async def _prepare(h: Harness) -> None:
    await CredentialManager(h.ledger, SecretBox(None), h.clock).add("acct", None)
    await CredentialManager(h.ledger, SecretBox(None), h.clock).add("other", None)
    await top_up(h.rating, "acct", "5", key="t1", clock=h.clock)
    await buy_resource_plan(
        h.rating, CATALOG, account="acct", kind="single", categories={"ocr"},
        points=300, ordered_at=T, price_paid="3", plan_id="S",
    )  # fmt: skip
    await h.arrive(calls_between(CATALOG, 400, T, timedelta(minutes=3)))
    await h.arrive(
        calls_between(CATALOG, 300, T, timedelta(minutes=4), DETECT, "other", prefix="o")
    )
    h.clock.set(utc(2026, 4, 10))  # March closed: its rounding is posted too


async def _result(h: Harness) -> tuple[Any, ...]:
    return (
        summary(await h.lines()),
        await h.rating.balances(),
        [r[:3] for r in await h.query("SELECT id, kind, amount FROM balance_entries ORDER BY id")],
    )


async def test_two_settlers_started_at_once_give_one_result(
    pg_databases: Callable[[], str],
) -> None:
    together, alone = pg_databases(), pg_databases()
    async with Harness(alone, CATALOG, T) as h:
        await _prepare(h)
        await h.settle()
        expected = await _result(h)
    async with Harness(together, CATALOG, T) as h:
        await _prepare(h)
        for _ in range(3):  # three rounds of two settlers started at once
            start = threading.Barrier(2)
            outcomes = await asyncio.gather(
                *(asyncio.to_thread(_settle_in_thread, together, h.clock, start) for _ in range(2))
            )
            assert any(isinstance(o, SettleReport) for o in outcomes)
            h.clock.advance(60)
        got = await _result(h)
    assert got == expected
    lines, _, _ = got
    assert sum(line[5] for line in lines) == 700


async def test_rating_store_for_a_postgresql_ledger(pg_ledger: str) -> None:
    ledger = PostgresStore.from_url(pg_ledger)
    assert isinstance(rating_store_for(ledger), PostgresRatingStore)
    with pytest.raises(StoreError, match="empty database"):
        await rating_store_for_url(pg_ledger).open()  # never creates a ledger
    async with ledger, rating_store_for_url(pg_ledger) as store:
        assert await store.max_seq() == 0
        assert "password" not in repr(store)


async def test_a_session_cached_sequence_is_refused(pg_ledger: str) -> None:
    async with PostgresStore.from_url(pg_ledger):
        conn = await asyncpg.connect(pg_ledger)
        try:
            await conn.execute("ALTER TABLE calls ALTER COLUMN seq SET CACHE 20")
        finally:
            await conn.close()
        with pytest.raises(StoreError, match="CACHE 1"):
            await PostgresRatingStore.from_url(pg_ledger).open()
