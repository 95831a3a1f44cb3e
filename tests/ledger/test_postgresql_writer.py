"""The ledger writer on PostgreSQL: a server outage under load goes to the journal and
replays once the server is back, losing nothing and duplicating nothing."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import asyncpg

from metering_middleware.clock import ManualClock
from metering_middleware.ledger import CallRecord, Journal, LedgerWriter, Outcome, open_store
from tests.support.postgres import PostgresCluster

from .support import T0, make_records


async def _ids(url: str) -> Counter[str]:
    conn = await asyncpg.connect(url)
    try:
        return Counter(r[0] for r in await conn.fetch("SELECT id FROM calls"))
    finally:
        await conn.close()


async def test_an_outage_under_load_is_journaled_and_replayed_exactly_once(
    own_pg: PostgresCluster, tmp_path: Path
) -> None:
    url = own_pg.url(own_pg.new_database())
    store = open_store(url + "?connect_timeout=2&command_timeout=2&pool_max=2")
    journal = Journal(tmp_path / "ledger.journal")
    clock = ManualClock(T0)
    records = make_records(3000)
    submitted: list[CallRecord] = []
    await store.open()
    writer = LedgerWriter(store, journal=journal, clock=clock, mode="strict", retry_interval=3600)
    await writer.start()
    stopped, reached = asyncio.Event(), asyncio.Event()

    async def client(mine: list[CallRecord]) -> None:
        for i, record in enumerate(mine):
            submitted.append(record)
            if len(submitted) == 800:
                reached.set()
            writer.count(record.account, "facebody", "DetectFace", Outcome.CHARGED, "", T0)
            await writer.submit(record)  # strict: back once committed or journaled
            if i % 25 == 0:
                await asyncio.sleep(0)  # let the outage land among the commits

    async def outage() -> None:
        await reached.wait()
        await asyncio.to_thread(own_pg.stop, immediate=True)  # mid-run, no checkpoint
        stopped.set()

    clients = [client(records[i::16]) for i in range(16)]
    await asyncio.gather(outage(), *clients)
    assert stopped.is_set()
    stats = writer.stats
    assert stats.pending == 0 and stats.held == 0  # every caller was answered durably
    assert stats.journaled > 0 and not writer.healthy
    assert writer.accepting  # journaling, still taking calls
    assert not await writer.retry_now()  # the server is still down

    await asyncio.to_thread(own_pg.start)
    assert await writer.retry_now()
    assert writer.healthy and journal.size() == 0
    await writer.stop()
    await store.close()

    ids = await _ids(url)
    assert sorted(ids) == sorted(r.id for r in records)  # nothing lost
    assert max(ids.values()) == 1  # nothing twice
    assert writer.stats.replayed == writer.stats.journaled


async def test_a_server_down_at_start_journals_then_takes_the_journal(
    own_pg: PostgresCluster, tmp_path: Path
) -> None:
    url = own_pg.url(own_pg.new_database())
    store = open_store(url + "?connect_timeout=2")
    journal = Journal(tmp_path / "ledger.journal")
    await store.open()
    before, during = make_records(5), make_records(7)
    async with LedgerWriter(store, journal=journal, clock=ManualClock(T0)) as writer:
        await asyncio.gather(*(writer.submit(r) for r in before))
        await asyncio.to_thread(own_pg.stop, immediate=True)
        await asyncio.gather(*(writer.submit(r) for r in during))
        assert writer.stats.journaled == 7
        assert (await journal.replay())[0] == during
        await asyncio.to_thread(own_pg.start)
        assert await writer.retry_now()
    await store.close()
    assert sorted(await _ids(url)) == sorted(r.id for r in before + during)
