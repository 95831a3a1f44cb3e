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
from datetime import UTC, datetime, timedelta
from pathlib import Path

from metering_middleware.catalog import default_catalog
from metering_middleware.clock import ManualClock
from metering_middleware.ledger import SqliteStore
from metering_middleware.rating import SqliteRatingStore, settle

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
