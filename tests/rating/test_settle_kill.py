"""A settler killed (SIGKILL) mid-pass, then rerun, posts every balance entry exactly once:
the entries equal those of one uninterrupted pass over a copy of the same ledger."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from metering_middleware.catalog import default_catalog
from metering_middleware.clock import ManualClock
from metering_middleware.ledger import SqliteStore
from metering_middleware.rating import SqliteRatingStore, settle
from metering_middleware.stores.postgresql import PostgresStore
from metering_middleware.stores.postgresql.rating import PostgresRatingStore

from .helpers import calls_between

CATALOG = default_catalog()


def _entries(path: Path) -> list[tuple[str, str, str, str | None]]:
    with sqlite3.connect(path) as conn:
        return conn.execute(
            "SELECT id, kind, amount, month FROM balance_entries ORDER BY id"
        ).fetchall()


async def _fill(path: Path, start: datetime) -> None:
    clock = ManualClock(start)
    async with SqliteStore(path, clock=clock, synchronous="NORMAL") as ledger:
        for month in range(3):  # three months of calls from 40 accounts
            first = start + timedelta(days=31 * month)
            clock.set(first + timedelta(days=1))
            for a in range(40):
                # 1,501 x CNY 0.0016: an exact total with a fraction of a fen to round
                records = calls_between(
                    CATALOG, 1501, first, timedelta(seconds=7), item="facebody.DetectFace",
                    account=f"acct{a:02d}", prefix=f"m{month}a{a}-",
                )  # fmt: skip
                await ledger.write(records, [])


def test_a_killed_settler_rerun_posts_nothing_twice(tmp_path: Path) -> None:
    start = datetime(2026, 1, 5, tzinfo=UTC)
    ledger, twin = tmp_path / "ledger.sqlite", tmp_path / "twin.sqlite"
    asyncio.run(_fill(ledger, start))
    shutil.copy(ledger, twin)

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "metering_middleware.cli", "--db", f"sqlite:///{ledger}",
         "settle", "--lag-seconds", "0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    assert proc.stderr is not None
    line = proc.stderr.readline()  # the first month is deducted: the pass is under way
    assert line.startswith(b"settled 2026-01"), line
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stderr.close()
    assert _entries(ledger) == []  # the pass commits once, at its end: nothing yet

    # The dead settler's lock expires (15 minutes); then a rerun settles everything once.
    later = ManualClock(datetime.now(UTC) + timedelta(minutes=16))

    async def settle_at(path: Path, passes: int) -> None:
        async with SqliteRatingStore(path) as store:
            for _ in range(passes):
                await settle(store, CATALOG, later, lag=timedelta(0))

    asyncio.run(settle_at(ledger, 2))  # and a second pass finds nothing to post
    asyncio.run(settle_at(twin, 1))
    rerun, once = _entries(ledger), _entries(twin)
    assert rerun == once
    assert len({e[0] for e in rerun}) == len(rerun)
    assert {e[3] for e in rerun if e[1] == "rounding"} == {"2026-01", "2026-02", "2026-03"}


async def _fill_pg(url: str, start: datetime, accounts: int) -> None:
    clock = ManualClock(start)
    async with PostgresStore.from_url(url, clock=clock) as ledger:
        for month in range(3):
            first = start + timedelta(days=31 * month)
            clock.set(first + timedelta(days=1))
            for a in range(accounts):
                records = calls_between(
                    CATALOG, 1501, first, timedelta(seconds=7), item="facebody.DetectFace",
                    account=f"acct{a:02d}", prefix=f"m{month}a{a}-",
                )  # fmt: skip
                await ledger.write(records, [])


async def _pg_entries(url: str) -> list[tuple[str, str, str, str | None]]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT id, kind, amount, month FROM balance_entries ORDER BY id")
    finally:
        await conn.close()
    return [(r[0], r[1], format(r[2], "f"), r[3]) for r in rows]


def test_a_killed_settler_on_postgresql_loses_its_lock_at_once_and_posts_nothing_twice(
    pg_databases: Callable[[], str],
) -> None:
    start = datetime(2026, 1, 5, tzinfo=UTC)
    ledger, twin = pg_databases(), pg_databases()
    for url in (ledger, twin):
        asyncio.run(_fill_pg(url, start, 16))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "metering_middleware.cli", "--db", ledger,
         "settle", "--lag-seconds", "0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    assert proc.stderr is not None
    line = proc.stderr.readline()  # the first month is deducted: the pass is under way
    assert line.startswith(b"settled 2026-01"), line
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stderr.close()
    assert asyncio.run(_pg_entries(ledger)) == []  # one commit, at the pass's end

    # No lock to wait out: the dead settler's session, and its advisory lock, are gone as
    # soon as the server sees its connection close (polled, bounded).
    now = ManualClock(datetime.now(UTC))

    async def settle_after_the_dead(url: str, passes: int) -> None:
        async with PostgresRatingStore.from_url(url) as store:
            for _ in range(200):
                if await store.acquire_lock("probe", now.now(), timedelta(minutes=15)):
                    await store.release_lock("probe")
                    break
                await asyncio.sleep(0.05)
            for _ in range(passes):
                await settle(store, CATALOG, now, lag=timedelta(0))

    asyncio.run(settle_after_the_dead(ledger, 2))
    asyncio.run(settle_after_the_dead(twin, 1))
    rerun, once = asyncio.run(_pg_entries(ledger)), asyncio.run(_pg_entries(twin))
    assert rerun == once
    assert len({e[0] for e in rerun}) == len(rerun)
    assert {e[3] for e in rerun if e[1] == "rounding"} == {"2026-01", "2026-02", "2026-03"}
