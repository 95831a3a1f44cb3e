"""A captured signed request replayed after the gateway restarted: refused, charged once.

Real gateways (uvicorn, the example app, the mock VIAPI upstream) on a real SQLite
ledger, restarted in this process (a clean stop: the lifespan flushes the writer).
The same after ``kill -9`` of a gateway process is in ``test_replay_kill.py``.
"""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from example_gateway.app import create_gateway_app
from example_gateway.config import GatewayConfig
from example_gateway.mock_upstream import create_mock_upstream
from metering_middleware import MeteringConfig, MeteringRuntime
from metering_middleware.clock import ManualClock
from metering_middleware.ledger import LedgerStore, MemoryStore
from metering_middleware.ledger.store import CredentialRow
from metering_middleware.limiter import MemoryLimiter
from tests.limiter.redis_server import RedisServer
from tests.support.catalogs import roomy_catalog
from tests.support.servers import run_server

from .conftest import add_account
from .signed import v3_headers

BODY = b"ImageURL=https%3A%2F%2Fx%2Fpeople.jpg"



def charged(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM calls").fetchone()[0])


async def call_through(
    config: MeteringConfig,
    headers: dict[str, str],
    body: bytes = BODY,
    *,
    store: LedgerStore | None = None,
) -> httpx.Response:
    """Start a gateway on ``config``, send one call, stop the gateway (clean)."""
    runtime = MeteringRuntime(config, catalog=roomy_catalog(), store=store)
    async with run_server(create_mock_upstream()) as upstream:
        app = create_gateway_app(GatewayConfig(upstream=upstream), runtime)
        async with run_server(app) as base, httpx.AsyncClient(timeout=10.0) as client:
            response = await client.post(base, content=body, headers=headers)
    assert not runtime.started  # the lifespan stopped it: the writer flushed
    return response


@pytest.mark.parametrize(
    "settings",
    [
        pytest.param({"mode": "strict"}, id="strict"),
        pytest.param({"mode": "batched", "flush_interval": 0.5}, id="batched"),
        # No limiter: the verifier claims the nonce itself.
        pytest.param({"mode": "strict", "enforce_qps": False}, id="no-limiter"),
    ],
)
async def test_a_replay_after_a_clean_restart_is_refused_and_charged_once(
    tmp_path: Path, settings: dict[str, Any]
) -> None:
    db = tmp_path / "ledger.sqlite"
    url = f"sqlite:///{db}"
    key, secret = await add_account(url, "acme")
    config = MeteringConfig(ledger_url=url, **settings)
    captured = v3_headers(key, secret, BODY)

    first = await call_through(config, captured)
    assert first.status_code == 200
    for _ in range(2):  # restarted twice: the nonce is still held, and held once
        replay = await call_through(config, captured)
        assert replay.status_code == 400, replay.text
        assert replay.json()["Code"] == "SignatureNonceUsed"
    assert charged(db) == 1
    # A fresh signature by the same key still goes through after the restarts.
    assert (await call_through(config, v3_headers(key, secret, BODY))).status_code == 200
    assert charged(db) == 2


async def test_memory_ledger_nonces_last_as_long_as_its_records() -> None:
    """``memory://``: the store object holds records and nonces alike. A runtime restarted
    on the same store (same process) refuses the replay; a new process has neither the
    records nor the nonces, so nothing it holds is charged twice."""
    store = MemoryStore()
    secret = "memory-secret-0123456789"
    await store.add_credential(
        CredentialRow("LTAImemory0000000001", "acme", f"plain:{secret}", True, datetime.now(UTC))
    )
    config = MeteringConfig(ledger_url="memory://", mode="strict")
    captured = v3_headers("LTAImemory0000000001", secret, BODY)
    assert (await call_through(config, captured, store=store)).status_code == 200
    replay = await call_through(config, captured, store=store)
    assert replay.status_code == 400 and replay.json()["Code"] == "SignatureNonceUsed"
    assert len(await store.calls()) == 1


async def test_expired_nonces_are_neither_restored_nor_kept(tmp_path: Path) -> None:
    """Only live nonces come back; rows whose expiry passed are pruned by the writer."""
    db = tmp_path / "ledger.sqlite"
    url = f"sqlite:///{db}"
    key, secret = await add_account(url, "acme")
    config = MeteringConfig(ledger_url=url, mode="strict")
    assert (await call_through(config, v3_headers(key, secret, BODY))).status_code == 200
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE nonces SET expires_ms = 946684800000")  # 2000-01-01
    runtime = MeteringRuntime(config, catalog=roomy_catalog())
    async with runtime:
        assert runtime.limiter is not None
        assert isinstance(runtime.limiter.inner, MemoryLimiter)
        assert len(runtime.limiter.inner.nonces) == 0
        await runtime.writer.tick()  # the writer's first pass prunes what expired
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM nonces").fetchone()[0] == 0


# -- with Redis as the limiter ---------------------------------------------------------------


@pytest.mark.parametrize(
    "redis_between",
    [
        # Redis kept the nonce itself (this passed before nonces were in the ledger too).
        pytest.param("kept", id="redis-kept"),
        # A cache-only Redis restarted empty: only the ledger remembers the nonce.
        pytest.param("restarted-empty", id="redis-restarted-empty"),
        # Redis is down when the gateway comes back: the failure policy's own nonce store
        # decides, and it was seeded from the ledger.
        pytest.param("down", id="redis-down-local-policy"),
    ],
)
async def test_a_replay_after_a_restart_with_redis_is_refused_and_charged_once(
    tmp_path: Path, redis: RedisServer, redis_between: str
) -> None:
    db = tmp_path / "ledger.sqlite"
    url = f"sqlite:///{db}"
    key, secret = await add_account(url, "acme")
    config = MeteringConfig(
        ledger_url=url, mode="strict", limiter_url=redis.url, limiter_failure_policy="local"
    )
    captured = v3_headers(key, secret, BODY)
    assert (await call_through(config, captured)).status_code == 200
    if redis_between != "kept":
        redis.kill()
        if redis_between == "restarted-empty":
            redis.start()
    replay = await call_through(config, captured)
    assert replay.status_code == 400, replay.text
    assert replay.json()["Code"] == "SignatureNonceUsed"
    assert charged(db) == 1


async def test_a_redis_restarted_empty_under_a_running_gateway_gets_its_nonces_again(
    tmp_path: Path, redis: RedisServer
) -> None:
    db = tmp_path / "ledger.sqlite"
    url = f"sqlite:///{db}"
    key, secret = await add_account(url, "acme")
    config = MeteringConfig(ledger_url=url, mode="strict", limiter_url=redis.url)
    # The gateway's clock drives its checks; signatures carry real time, and so does it.
    clock = ManualClock(time.time())
    runtime = MeteringRuntime(config, clock=clock, catalog=roomy_catalog())
    assert runtime.limiter is not None
    captured = v3_headers(key, secret, BODY)
    async with run_server(create_mock_upstream()) as upstream:
        app = create_gateway_app(GatewayConfig(upstream=upstream), runtime)
        async with run_server(app) as base, httpx.AsyncClient(timeout=10.0) as client:
            assert (await client.post(base, content=BODY, headers=captured)).status_code == 200
            redis.kill()
            redis.start()  # a cache-only Redis: back empty, the gateway still running
            for _ in range(3):  # other calls go on; a check runs behind them once a second
                clock.advance(1.0)
                fresh = await client.post(base, content=BODY, headers=v3_headers(key, secret, BODY))
                assert fresh.status_code == 200
                await runtime.limiter.join()
            replay = await client.post(base, content=BODY, headers=captured)
    assert replay.status_code == 400, replay.text
    assert replay.json()["Code"] == "SignatureNonceUsed"
    assert charged(db) == 4


async def test_a_nonce_journaled_while_the_store_was_down_comes_back_through_the_journal(
    tmp_path: Path,
) -> None:
    db = tmp_path / "ledger.sqlite"
    url = f"sqlite:///{db}?busy_timeout_ms=50"
    key, secret = await add_account(url, "acme")
    config = MeteringConfig(ledger_url=url, mode="strict")
    captured = v3_headers(key, secret, BODY)
    locker = sqlite3.connect(db, isolation_level=None)
    try:
        runtime = MeteringRuntime(config, catalog=roomy_catalog())
        async with run_server(create_mock_upstream()) as upstream:
            app = create_gateway_app(GatewayConfig(upstream=upstream), runtime)
            async with run_server(app) as base, httpx.AsyncClient(timeout=10.0) as client:
                # Another process takes the write lock and keeps it past the stop below.
                locker.execute("BEGIN EXCLUSIVE")
                first = await client.post(base, content=BODY, headers=captured)
        assert first.status_code == 200
        assert runtime.writer.stats.journaled == 1  # the record and its nonce, in the journal
    finally:
        if locker.in_transaction:
            locker.execute("ROLLBACK")
        locker.close()
    assert charged(db) == 0
    # The next start replays the journal (nonces first), then seeds what the store holds.
    replay = await call_through(config, captured)
    assert replay.status_code == 400, replay.text
    assert replay.json()["Code"] == "SignatureNonceUsed"
    assert charged(db) == 1
