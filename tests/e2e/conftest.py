"""A real gateway on a real port, a real SQLite ledger, the mock VIAPI behind it."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from example_gateway.app import create_gateway_app
from example_gateway.config import GatewayConfig
from example_gateway.mock_upstream import MockUpstream, create_mock_upstream
from metering_middleware import MeteringConfig, MeteringRuntime, SystemClock
from metering_middleware.credentials import CredentialManager, SecretBox
from metering_middleware.ledger.urls import open_store
from tests.limiter.redis_server import RedisServer, redis_fixture
from tests.support.catalogs import roomy_catalog
from tests.support.servers import run_server


@dataclass
class Gateway:
    url: str
    endpoint: str  # host:port, as the SDKs take it
    db: Path
    runtime: MeteringRuntime
    mock: MockUpstream
    access_key_id: str
    secret: str

    def rows(self, sql: str = "SELECT * FROM calls ORDER BY seq") -> list[sqlite3.Row]:
        """The ledger as an independent reader sees it (not through the gateway)."""
        with sqlite3.connect(self.db) as conn:
            conn.row_factory = sqlite3.Row
            return list(conn.execute(sql))


async def add_account(url: str, name: str) -> tuple[str, str]:
    store = open_store(url)
    await store.open()
    try:
        row, secret = await CredentialManager(store, SecretBox(None), SystemClock()).add(name)
    finally:
        await store.close()
    return row.access_key_id, secret


async def start_gateway(
    tmp_path: Path, mock: MockUpstream, **settings: Any
) -> tuple[MeteringRuntime, str]:
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    runtime = MeteringRuntime(MeteringConfig(ledger_url=url, **settings))
    return runtime, url


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    db = tmp_path / "ledger.sqlite"
    url = f"sqlite:///{db}"
    key, secret = await add_account(url, "acme")
    mock = create_mock_upstream(chunk_size=64 * 1024)
    # Bursts of calls, not QPS limits, are under test here (tests/limiter has those).
    runtime = MeteringRuntime(
        MeteringConfig(ledger_url=url, mode="strict"), catalog=roomy_catalog()
    )
    async with run_server(mock) as upstream:
        app = create_gateway_app(GatewayConfig(upstream=upstream, timeout=5.0), runtime)
        async with run_server(app) as base:
            yield Gateway(base, base.removeprefix("http://"), db, runtime, mock, key, secret)


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server of the test's own; a missing binary fails, never skips."""
    yield from redis_fixture(tmp_path / "redis")
