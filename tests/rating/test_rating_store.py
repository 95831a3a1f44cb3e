"""The SQLite rating store: immutable plans, the settlement lock, migrations."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from metering_middleware.catalog import default_catalog
from metering_middleware.clock import ManualClock
from metering_middleware.ledger import MemoryStore, SqliteStore, StoreError
from metering_middleware.ledger.migrate import apply_migrations, load_migrations, migrate_file
from metering_middleware.rating import (
    LockLost,
    MoneyRatingStore,
    Month,
    SettleBusy,
    SettleProgress,
    SqliteRatingStore,
    rating_store_for,
    settle,
)
from metering_middleware.stores.postgresql.rating import SETTLE_LOCK, PostgresRatingStore

from .conftest import LedgerAt
from .helpers import PLATE, calls_between, plan, qps, utc
from .settle_support import Harness

CATALOG = default_catalog()
T = utc(2026, 3, 1)


@pytest.fixture
async def store(ledger: LedgerAt) -> AsyncIterator[MoneyRatingStore]:
    """A rating store on a fresh ledger, SQLite or PostgreSQL."""
    async with Harness(ledger("l.db"), CATALOG, T) as h:
        yield h.rating


async def test_plans_round_trip_exactly_and_refunds_apply(store: MoneyRatingStore) -> None:
    p = plan("p1", "general", {"ocr", "facebody"}, "45.16", T, utc(2027, 3, 1))
    s = qps("q1", "facebody", "DetectFace", T, utc(2026, 4, 1))
    await store.add_plan(p, T)
    await store.add_plan(s, T)
    await store.add_refund("q1", utc(2026, 3, 10), T, Decimal("12.34"))
    book = await store.plan_book()
    assert book.plans == (p,) and book.subscriptions == (s.refunded(utc(2026, 3, 10)),)
    assert (book.plan_seq, book.refund_seq) == (2, 1)
    assert book.plans[0].points == Decimal("45.16")
    assert (await store.plan_book(account="someone-else")).plans == ()
    changes = await store.plan_changes(1, 0)
    assert [(c.plan_id, c.at) for c in changes] == [("q1", T), ("q1", utc(2026, 3, 10))]


async def test_plans_are_immutable(ledger: LedgerAt) -> None:
    async with Harness(ledger("l.db"), CATALOG, T) as h:
        store = h.rating
        await store.add_plan(plan("p1", "single", {"ocr"}, 10, T, utc(2027, 3, 1)), T)
        with pytest.raises(ValueError, match="already exists"):
            await store.add_plan(plan("p1", "single", {"ocr"}, 99, T, utc(2027, 3, 1)), T)
        await store.add_refund("p1", utc(2026, 3, 2), T, None)
        with pytest.raises(ValueError, match="already refunded"):
            await store.add_refund("p1", utc(2026, 3, 3), T, None)
        with pytest.raises(ValueError, match="no plan"):
            await store.add_refund("nope", utc(2026, 3, 3), T, None)
        for sql in (
            "UPDATE rating_plans SET points = '999'",
            "DELETE FROM rating_plans",
            "UPDATE rating_refunds SET refunded_at = refunded_at",
            "DELETE FROM rating_refunds",
        ):
            assert "immutable" in await h.refused(sql)
        assert (await store.plan_book()).plans[0].points == 10


async def test_the_lock_has_one_owner_until_it_expires(tmp_path: Path) -> None:
    # SQLite's lock row expires (PostgreSQL's advisory lock goes with its session instead:
    # test_pg_rating.py).
    store = SqliteRatingStore(tmp_path / "l.db")
    await store.open()
    ttl = timedelta(minutes=5)
    assert await store.acquire_lock("a", T, ttl)
    assert not await store.acquire_lock("b", T + timedelta(minutes=4), ttl)
    assert await store.acquire_lock("a", T + timedelta(minutes=4), ttl)  # renewed
    assert not await store.acquire_lock("b", T + timedelta(minutes=8), ttl)
    assert await store.acquire_lock("b", T + timedelta(minutes=9), ttl)  # a crashed
    await store.release_lock("a")  # not a's any more: no effect
    assert not await store.acquire_lock("c", T + timedelta(minutes=10), ttl)
    await store.release_lock("b")
    assert await store.acquire_lock("c", T + timedelta(minutes=10), ttl)
    await store.close()


async def test_settle_refuses_while_another_settler_holds_the_lock(ledger: LedgerAt) -> None:
    async with Harness(ledger("l.db"), CATALOG, T) as h:
        await h.arrive(calls_between(CATALOG, 3, T, timedelta(seconds=1)))
        h.clock.set(utc(2026, 3, 2))
        # Another settler: on PostgreSQL another session (one store's lock is per session).
        other = PostgresRatingStore.from_url(h.url) if h.postgresql else h.rating
        await other.open()
        assert await other.acquire_lock("other", h.clock.now(), timedelta(minutes=15))
        with pytest.raises(SettleBusy):
            await h.settle()
        assert await h.lines() == []
        if h.postgresql:
            await other.close()  # the other settler died: its lock went with its connection
        else:
            h.clock.advance(16 * 60)  # the other settler died: its lock expired
        report = await h.settle()
        assert report.records == 3
        assert await h.rating.acquire_lock("next", h.clock.now(), timedelta(minutes=1))


async def test_a_settler_whose_lock_was_taken_over_writes_nothing(
    ledger: LedgerAt, request: pytest.FixtureRequest
) -> None:
    async with Harness(ledger("l.db"), CATALOG, T) as h:
        await h.arrive(calls_between(CATALOG, 3, T, timedelta(days=20)))  # March and April

        def steal(step: SettleProgress) -> None:
            if h.postgresql:  # the settler's session is killed: its advisory lock with it
                cluster = request.getfixturevalue("pg_cluster")
                cluster.psql(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks"
                    f" WHERE locktype = 'advisory' AND objid = {SETTLE_LOCK}",
                    h.url.rsplit("/", 1)[1],
                )
                return
            conn = sqlite3.connect(h.path)
            with conn:
                conn.execute("UPDATE rating_lock SET owner = 'thief'")
            conn.close()

        with pytest.raises(LockLost):
            await h.settle(utc(2026, 5, 1), progress=steal)
        assert await h.lines() == [] and await h.rating.accounts() == {}


async def test_progress_is_reported_per_month(ledger: LedgerAt) -> None:
    async with Harness(ledger("l.db"), CATALOG, T) as h:
        await h.arrive(calls_between(CATALOG, 4, T, timedelta(days=20)))  # 2 March, 2 April
        seen: list[SettleProgress] = []
        await h.settle(utc(2026, 5, 1), progress=seen.append)
    assert [(str(p.month), p.records, p.total) for p in seen] == [
        ("2026-03", 2, 2),
        ("2026-04", 2, 4),
    ]


async def test_checkpoints_are_found_at_or_before_a_month(ledger: LedgerAt) -> None:
    async with Harness(ledger("l.db"), CATALOG, T) as h:
        await h.arrive(calls_between(CATALOG, 3, T, timedelta(days=70)))  # Mar, May, Jul
        await h.settle(utc(2026, 8, 1))
        assert await h.rating.checkpoint("acct", Month(2026, 2)) is None
        found = {m: await h.rating.checkpoint("acct", Month(2026, m)) for m in range(3, 10)}
    # One at the start of every month from the first to the last settled, gaps included.
    assert {m: f and str(f[0]) for m, f in found.items()} == {
        3: "2026-03",
        4: "2026-04",
        5: "2026-05",
        6: "2026-06",
        7: "2026-07",
        8: "2026-07",
        9: "2026-07",
    }
    assert found[3] is not None and found[3][1].positions == {}
    assert found[6] is not None and found[6][1].position("acct", PLATE, Month(2026, 5)) == 1


def test_the_rating_migration_upgrades_a_version_1_ledger(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        assert apply_migrations(conn, load_migrations()[:1]) == [1]
    finally:
        conn.close()
    # Version 2 (rating) and every later one.
    assert migrate_file(path) == [m.version for m in load_migrations()[1:]]
    assert migrate_file(path) == []


async def test_rating_needs_an_sqlite_ledger(tmp_path: Path) -> None:
    store = rating_store_for(SqliteStore(tmp_path / "l.db"))
    assert store.path == tmp_path / "l.db"
    with pytest.raises(ValueError, match="SQLite"):
        rating_store_for(MemoryStore())


async def test_settle_rejects_a_negative_lag(store: MoneyRatingStore) -> None:
    with pytest.raises(ValueError, match="negative"):
        await settle(store, CATALOG, ManualClock(), lag=timedelta(seconds=-1))


async def test_a_moved_or_replaced_ledger_file_is_never_read_as_empty(tmp_path: Path) -> None:
    path, away = tmp_path / "l.db", tmp_path / "away.db"
    p = plan("p1", "single", {"ocr"}, 10, T, utc(2027, 3, 1))
    async with SqliteStore(tmp_path / "stand-in.db"):
        pass  # an empty ledger, to be put in the real one's place
    async with SqliteRatingStore(path) as store:
        await store.add_plan(p, T)
        path.rename(away)
        with pytest.raises(StoreError, match="no ledger file"):
            await store.plan_book()
        assert not path.exists()  # not recreated
        (tmp_path / "stand-in.db").rename(path)
        with pytest.raises(StoreError, match="different ledger"):
            await store.plan_book()  # not "no plans"
        with pytest.raises(StoreError, match="different ledger"):
            await store.add_plan(plan("p2", "single", {"ocr"}, 5, T, utc(2027, 3, 1)), T)
        away.replace(path)
        assert (await store.plan_book()).plans == (p,)


async def test_rating_store_for_never_creates_the_file(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no ledger file"):
        await rating_store_for(SqliteStore(tmp_path / "typo.db")).open()
    assert not (tmp_path / "typo.db").exists()
