"""Store fixtures for the ledger tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from metering_middleware.ledger import LedgerStore, MemoryStore, SqliteStore, open_store

STORES = ["memory", "sqlite", "postgresql"]


@pytest.fixture(params=STORES)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[LedgerStore]:
    """Every ledger store the contract suite covers, opened (PostgreSQL: a fresh database)."""
    impl: LedgerStore
    if request.param == "memory":
        impl = MemoryStore()
    elif request.param == "sqlite":
        impl = SqliteStore(tmp_path / "ledger.db")
    else:
        impl = open_store(request.getfixturevalue("pg_url"))
    await impl.open()
    yield impl
    await impl.close()


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    impl = SqliteStore(tmp_path / "ledger.db", busy_timeout_ms=50)
    await impl.open()
    yield impl
    await impl.close()
