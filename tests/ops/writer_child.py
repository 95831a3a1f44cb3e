"""A gateway-like writer in its own process: ``python writer_child.py LEDGER BATCH [BUSY_MS]``.

Commits transactions of exactly BATCH records (and one counter of BATCH calls) into the
SQLite ledger, forever, printing ``committed <total> <monotonic time>`` after each COMMIT,
until killed. A write that fails (the lock not had within BUSY_MS milliseconds, default
10000) ends it with an error.
Every transaction adds exactly BATCH records, so a consistent copy holds a multiple of
BATCH records and counters summing to the same number.
"""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import UTC, datetime, timedelta

from metering_middleware.ledger import CallRecord, OutcomeCount, SqliteStore
from metering_middleware.ledger.records import Outcome

T0 = datetime(2026, 11, 3, 4, 0, tzinfo=UTC)


async def main() -> None:
    busy = int(sys.argv[3]) if len(sys.argv) > 3 else 10_000
    store = SqliteStore(sys.argv[1], busy_timeout_ms=busy)
    size = int(sys.argv[2])
    await store.open()
    total = 0
    while True:
        when = T0 + timedelta(seconds=total // size)
        records = [
            CallRecord(
                id=f"rec-{total + i:09d}",
                request_id=f"up-{total + i}",
                account="acme",
                access_key_id="LTAIacme",
                category="facebody",
                action="DetectFace",
                version="2019-12-30",
                item="DetectFace",
                occurred_at=when,
                status=200,
                error_code=None,
                latency_ms=3.0,
            )
            for i in range(size)
        ]
        minute = when.replace(second=0)
        count = OutcomeCount(minute, "acme", "facebody", "DetectFace", Outcome.CHARGED, "", size)
        await store.write(records, [count])
        total += size
        print(f"committed {total} {time.monotonic()}", flush=True)


asyncio.run(main())
