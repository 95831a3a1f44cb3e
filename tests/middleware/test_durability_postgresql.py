"""Strict mode on a PostgreSQL ledger: no client holds a complete chargeable response
whose record the server has not confirmed committed; an outage journals instead."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from metering_middleware import ManualClock, MeteringConfig
from metering_middleware.credentials import CredentialManager, SecretBox
from metering_middleware.ledger import open_store
from metering_middleware.middleware import MeteringMiddleware
from metering_middleware.runtime import MeteringRuntime
from tests.support.postgres import PostgresCluster

from .harness import Env, FakeUpstream, Reply

BODY = (b'{"RequestId":"r-1",', b'"Data":{"Faces":', b"[1,2,3]}", b"}")


async def _committed(url: str) -> int:
    # Another connection than the store's: what any reader of the database sees.
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM calls"))
    finally:
        await conn.close()


async def _env(url: str, tmp_path: Path, mode: str) -> Env:
    clock = ManualClock()
    store = open_store(url + "?connect_timeout=2&command_timeout=2")
    await store.open()
    row, secret = await CredentialManager(store, SecretBox(None), clock).add("acme")
    config = MeteringConfig(
        ledger_url=url,
        mode=mode,  # type: ignore[arg-type]
        flush_interval=3600.0,
        journal_path=str(tmp_path / "ledger.journal"),
    )
    runtime = MeteringRuntime(config, clock=clock, store=store)
    upstream = FakeUpstream()
    app = MeteringMiddleware(upstream, runtime=runtime)
    await runtime.start()
    return Env(clock, store, runtime, upstream, app, row.access_key_id, secret)  # type: ignore[arg-type]


@pytest.fixture
async def pg_env(pg_url: str, tmp_path: Path) -> AsyncIterator[Env]:
    env = await _env(pg_url, tmp_path, "strict")
    yield env
    await env.runtime.stop()


class CommittedAtLastByte:
    """At the message that completes the body: how many records has the server committed?"""

    def __init__(self, url: str) -> None:
        self.url = url
        self.seen: list[int] = []

    async def __call__(self, message: dict[str, object]) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            self.seen.append(await _committed(self.url))


@pytest.mark.parametrize("final_empty", [False, True])
async def test_strict_commit_is_confirmed_before_the_last_byte(
    pg_env: Env, pg_url: str, final_empty: bool
) -> None:
    pg_env.upstream.reply = Reply(body=BODY, final_empty=final_empty)
    for n in (1, 2, 3):
        watch = CommittedAtLastByte(pg_url)
        response = await pg_env.request(**pg_env.v3(), on_message=watch)
        assert response.body == b"".join(BODY)
        assert watch.seen == [n]


async def test_batched_mode_is_the_control(pg_url: str, tmp_path: Path) -> None:
    env = await _env(pg_url, tmp_path, "batched")
    try:
        env.upstream.reply = Reply(body=BODY)
        watch = CommittedAtLastByte(pg_url)
        await env.request(**env.v3(), on_message=watch)
        assert watch.seen == [0]  # the watch can see a missing record
        await env.runtime.writer.flush_now()
        assert await _committed(pg_url) == 1
    finally:
        await env.runtime.stop()


async def test_strict_with_the_server_gone_journals_before_the_last_byte(
    own_pg: PostgresCluster, tmp_path: Path
) -> None:
    url = own_pg.url(own_pg.new_database())
    env = await _env(url, tmp_path, "strict")
    journal = tmp_path / "ledger.journal"
    try:
        env.upstream.reply = Reply(body=BODY)
        own_pg.stop(immediate=True)
        sizes: list[int] = []

        async def watch(message: dict[str, object]) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                sizes.append(journal.stat().st_size if journal.exists() else 0)

        response = await env.request(**env.v3(), on_message=watch)
        assert response.status == 200 and response.body == b"".join(BODY)
        assert sizes and sizes[0] > 0  # durable in the journal before the client had it all
        own_pg.start()
        assert await env.runtime.writer.retry_now()
        assert await _committed(url) == 1
    finally:
        await env.runtime.stop()
