"""What only the PostgreSQL ledger store does: URLs, migrations, identity, outages, text.

The LedgerStore contract itself runs on PostgreSQL in test_store_contract.py.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace

import asyncpg
import pytest

from metering_middleware.ledger import ClaimedNonce, Outcome, OutcomeCount, StoreError, open_store
from metering_middleware.ledger.migrate import LedgerMissing, NotALedger, SchemaTooNew
from metering_middleware.stores.postgresql import PostgresStore, parse_url
from metering_middleware.stores.postgresql._migrate import load_migrations
from tests.support.postgres import PostgresCluster

from .support import T0, make_record, make_records


def _pg(url: str, **kw: object) -> PostgresStore:
    store = open_store(url, **kw)  # type: ignore[arg-type]
    assert isinstance(store, PostgresStore)
    return store


# -- URLs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u@db.example/ledger",
        "postgres://u:pw@db.example:6543/ledger?sslmode=require",
        "postgresql://u@/ledger?host=/run/postgresql",
        "postgresql://u@db/ledger?pool_min=0&pool_max=16&command_timeout=2.5&connect_timeout=1",
    ],
)
def test_postgresql_urls_open_a_postgres_store(url: str) -> None:
    assert isinstance(open_store(url), PostgresStore)


def test_our_options_are_read_and_kept_from_asyncpg() -> None:
    o = parse_url("postgres://u:secret@h:6543/l?pool_max=9&command_timeout=3&sslmode=disable")
    assert (o.pool_min, o.pool_max, o.command_timeout, o.connect_timeout) == (1, 9, 3.0, 5.0)
    assert o.dsn == "postgresql://u:secret@h:6543/l?sslmode=disable"
    assert "secret" not in o.where and "secret" not in repr(PostgresStore(o))


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://host", "without a database"),
        ("postgresql:///ledger", "without a host"),
        ("postgresql://h:notaport/l", "bad port"),
        ("postgresql://h/l?pool_max=0", "pool_max must be at least 1"),
        ("postgresql://h/l?pool_min=5&pool_max=2", "must not exceed"),
        ("postgresql://h/l?command_timeout=soon", "number of seconds"),
        ("postgresql://h/l?connect_timeout=-1", "positive"),
        ("postgresql://h/l?poolsize=3", "unknown postgresql URL option 'poolsize'"),
        ("postgresql+asyncpg://h/l", "no driver suffix"),
        ("postgresql://u:hunter2@h/l?bogus=1", "bogus"),
    ],
)
def test_bad_postgresql_urls(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        open_store(url)
    assert "hunter2" not in str(caught.value)


# -- migrations and identity ---------------------------------------------------------------


async def test_several_stores_opened_at_once_on_a_fresh_database_make_one_schema(
    pg_cluster: PostgresCluster,
) -> None:
    url = pg_cluster.url(pg_cluster.new_database())
    stores = [_pg(url) for _ in range(8)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        applied = sorted(s.applied_migrations for s in stores)
        every = tuple(m.version for m in load_migrations())  # ledger, rating, money
        assert applied == [(), (), (), (), (), (), (), every]  # one starter applied them
        await stores[3].write([make_record(id="one")], [])
        for s in stores:
            assert [r.id for r in await s.calls()] == ["one"]
    finally:
        await asyncio.gather(*(s.close() for s in stores))
    versions = pg_cluster.psql("SELECT version FROM schema_migrations", url.rsplit("/", 1)[1])
    assert versions.split() == [str(v) for v in every]


async def test_create_false_refuses_an_empty_or_foreign_database(
    pg_cluster: PostgresCluster,
) -> None:
    empty = pg_cluster.new_database()
    with pytest.raises(LedgerMissing, match="no ledger"):
        await _pg(pg_cluster.url(empty), create=False).open()
    assert pg_cluster.psql("SELECT count(*) FROM pg_tables WHERE schemaname='public'", empty) == (
        "0\n"
    )
    foreign = pg_cluster.new_database()
    pg_cluster.psql("CREATE TABLE orders (id int)", foreign)
    with pytest.raises(NotALedger):
        await _pg(pg_cluster.url(foreign), create=False).open()
    # A ledger that exists opens without create.
    async with _pg(pg_cluster.url(empty)):
        pass
    async with _pg(pg_cluster.url(empty), create=False) as store:
        assert store.applied_migrations == ()


async def test_a_schema_newer_than_the_code_is_refused(pg_url: str) -> None:
    async with _pg(pg_url) as store:
        await store.write([make_record()], [])
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute("INSERT INTO schema_migrations (version, name) VALUES (99, 'future')")
    finally:
        await conn.close()
    with pytest.raises(SchemaTooNew, match="99"):
        await _pg(pg_url).open()


async def test_another_ledger_behind_the_url_is_refused(pg_cluster: PostgresCluster) -> None:
    # The name (a DNS change, a restore into the wrong database) now holds another
    # ledger, or an empty database: nothing goes into it, nothing is created in it.
    first, other = pg_cluster.new_database(), pg_cluster.new_database()
    async with _pg(pg_cluster.url(other)):
        pass
    store = _pg(pg_cluster.url(first))
    async with store:
        await store.write([make_record(id="mine")], [])
    pg_cluster.psql(f'ALTER DATABASE "{first}" RENAME TO "{first}_away"')
    pg_cluster.psql(f'ALTER DATABASE "{other}" RENAME TO "{first}"')
    with pytest.raises(StoreError, match="different ledger"):
        await store.open()
    with pytest.raises(StoreError, match="different ledger"):
        await store.reopen()
    pg_cluster.psql(f'ALTER DATABASE "{first}" RENAME TO "{other}"')
    pg_cluster.psql(f'CREATE DATABASE "{first}" TEMPLATE template0')
    with pytest.raises(LedgerMissing):  # an empty database is not made a new ledger
        await store.reopen()
    pg_cluster.psql(f'DROP DATABASE "{first}"')
    pg_cluster.psql(f'ALTER DATABASE "{first}_away" RENAME TO "{first}"')
    await store.reopen()  # the real one is back
    try:
        await store.check()
        assert [r.id for r in await store.calls()] == ["mine"]
    finally:
        await store.close()


async def test_nul_characters_cannot_poison_a_batch(pg_url: str) -> None:
    async with _pg(pg_url) as store:
        record = make_record(request_id="req\x00id")
        await store.write([record], [], [ClaimedNonce("a", "LTAI1", "n\x00", T0.timestamp() + 60)])
        [got] = await store.calls()
        assert got == replace(record, request_id="req\ufffdid")
        [[nonce]] = [page async for page in store.live_nonces(T0.timestamp())]
        assert nonce.nonce == "n\ufffd"


async def test_one_write_is_one_round_trip_whatever_its_size(pg_url: str) -> None:
    async with _pg(pg_url) as store:
        for n in (1, 1000):
            before = store.writes
            await store.write(make_records(n), [])
            assert store.writes == before + 1
        assert await store.count_calls() == 1001


# -- outages -------------------------------------------------------------------------------


async def test_a_stopped_server_is_a_store_error_and_reopen_brings_it_back(
    own_pg: PostgresCluster,
) -> None:
    url = own_pg.url(own_pg.new_database())
    async with _pg(url + "?connect_timeout=2&command_timeout=2") as store:
        await store.write([make_record(id="before")], [])
        own_pg.stop(immediate=True)
        with pytest.raises(StoreError):
            await store.write([make_record(id="during")], [])
        with pytest.raises(StoreError, match="unreachable"):
            await store.check()
        with pytest.raises(StoreError):
            await store.reopen()
        with pytest.raises(StoreError):
            await store.calls()
        own_pg.start()
        await store.reopen()
        await store.check()
        await store.write([make_record(id="after")], [])
        assert [r.id for r in await store.calls()] == ["before", "after"]


async def test_closed_store_operations_raise_store_error(pg_url: str) -> None:
    store = _pg(pg_url)
    with pytest.raises(StoreError, match="not open"):
        await store.write([make_record()], [])
    with pytest.raises(StoreError, match="not open"):
        await store.check()


async def test_an_unreachable_server_at_open_is_a_store_error() -> None:
    from tests.support.postgres import _free_port

    store = _pg(f"postgresql://u@127.0.0.1:{_free_port()}/l?connect_timeout=1")
    with pytest.raises(StoreError, match="cannot connect"):
        await store.open()


async def test_live_nonce_pages_miss_no_key_however_small(pg_url: str) -> None:
    now = T0.replace(microsecond=0).timestamp()  # expiries are kept in milliseconds
    held = [ClaimedNonce("a", "", "", now + 60), ClaimedNonce("a", "", "x", now + 60)]
    held += [ClaimedNonce("a", "K", f"n{i}", now + 60) for i in range(5)]
    async with _pg(pg_url) as store:
        await store.write([], [], held)
        pages = [page async for page in store.live_nonces(now, chunk=2)]
    assert [len(p) for p in pages] == [2, 2, 2, 1]

    def key(n: ClaimedNonce) -> tuple[str, str]:
        return (n.access_key_id, n.nonce)

    assert sorted((n for p in pages for n in p), key=key) == sorted(held, key=key)


async def test_writers_on_one_database_never_deadlock_on_shared_keys(pg_url: str) -> None:
    # Several gateway processes add to the same per-minute counters (and may replay the
    # same records) at once, each batch in its own order: rows are locked in key order,
    # so no two commits wait on each other in a cycle (a deadlock is a failed write).
    keys = [
        OutcomeCount(
            T0.replace(second=0, microsecond=0),
            f"acct-{i}",
            "facebody",
            "DetectFace",
            Outcome.CHARGED,
            "",
            1,
        )
        for i in range(40)
    ]
    shared = make_records(200)
    stores = [_pg(pg_url) for _ in range(4)]
    for s in stores:
        await s.open()

    async def writer(n: int, store: PostgresStore) -> None:
        rng = random.Random(n)
        for _ in range(30):
            counts, records = keys[:], shared[:]
            rng.shuffle(counts)
            rng.shuffle(records)
            await store.write(records[:50], counts)

    try:
        await asyncio.gather(*(writer(n, s) for n, s in enumerate(stores)))
        total = sum(c.count for c in await stores[0].outcome_counts())
        assert total == 4 * 30 * len(keys)
        assert await stores[0].count_calls() <= len(shared)
    finally:
        for s in stores:
            await s.close()
