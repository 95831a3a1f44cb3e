"""The ledger store fails under a running gateway: journal, recover, lose nothing, twice nothing."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from example_gateway.app import create_gateway_app
from example_gateway.config import GatewayConfig
from example_gateway.mock_upstream import create_mock_upstream
from metering_middleware import CallRecord, MeteringConfig, MeteringRuntime, StoreError
from metering_middleware.ledger import new_record_id
from metering_middleware.ledger.journal import Journal
from metering_middleware.ledger.urls import open_store
from tests.support.catalogs import roomy_catalog
from tests.support.servers import run_server

from .conftest import add_account
from .signed import v3_headers


def count_calls(db: Path) -> list[str]:
    with sqlite3.connect(db) as conn:
        return [r[0] for r in conn.execute("SELECT request_id FROM calls ORDER BY seq")]


async def send_calls(base: str, key: str, secret: str, n: int) -> list[str]:
    ids = []
    async with httpx.AsyncClient(timeout=10.0) as client:
        for _ in range(n):
            body = b"ImageURL=https%3A%2F%2Fx%2Fpeople.jpg"
            response = await client.post(base, content=body, headers=v3_headers(key, secret, body))
            assert response.status_code == 200
            ids.append(response.json()["RequestId"])
    return ids


async def test_locked_store_journals_then_recovers_without_loss_or_duplicate(
    tmp_path: Path,
) -> None:
    db = tmp_path / "ledger.sqlite"
    url = f"sqlite:///{db}?busy_timeout_ms=50"
    key, secret = await add_account(url, "acme")
    runtime = MeteringRuntime(
        MeteringConfig(ledger_url=url, mode="strict"), catalog=roomy_catalog()
    )
    async with run_server(create_mock_upstream()) as upstream:
        app = create_gateway_app(GatewayConfig(upstream=upstream), runtime)
        async with run_server(app) as base:
            before = await send_calls(base, key, secret, 3)
            # Another process takes the write lock and keeps it.
            locker = sqlite3.connect(db, isolation_level=None)
            locker.execute("BEGIN EXCLUSIVE")
            during = await send_calls(base, key, secret, 4)
            assert runtime.writer.stats.journaled == 4
            assert Path(str(db) + ".journal").stat().st_size > 0
            locker.execute("ROLLBACK")
            locker.close()
            assert await runtime.writer.retry_now()
            after = await send_calls(base, key, secret, 2)
    assert sorted(count_calls(db)) == sorted(before + during + after)
    assert Path(str(db) + ".journal").stat().st_size == 0


async def test_a_ledger_moved_away_is_a_store_failure_until_it_is_back(tmp_path: Path) -> None:
    db = tmp_path / "ledger.sqlite"
    url = f"sqlite:///{db}"
    key, secret = await add_account(url, "acme")
    # A stand-in at the path: a fresh ledger with no accounts and no plans (a careless
    # rotation, or a "repair" that ran `metering accounts add` on an empty path).
    await add_account(f"sqlite:///{tmp_path / 'stand-in.sqlite'}", "nobody")
    runtime = MeteringRuntime(
        MeteringConfig(ledger_url=url, mode="strict", credential_refresh=0.05),
        catalog=roomy_catalog(),
    )
    async with run_server(create_mock_upstream()) as upstream:
        app = create_gateway_app(GatewayConfig(upstream=upstream), runtime)
        async with run_server(app) as base, httpx.AsyncClient() as client:
            before = await send_calls(base, key, secret, 2)
            os.rename(db, tmp_path / "real.sqlite")
            during = await send_calls(base, key, secret, 3)  # journaled: still answered
            assert runtime.writer.stats.journaled == 3
            assert not await runtime.writer.retry_now()
            assert not db.exists()  # never recreated at run time
            assert (await client.get(f"{base}/readyz")).status_code == 503

            os.rename(tmp_path / "stand-in.sqlite", db)
            assert not await runtime.writer.retry_now()
            await asyncio.sleep(0.2)  # several credential reloads: all fail, none empties it
            during += await send_calls(base, key, secret, 2)  # the tenant is not refused
            assert (await client.get(f"{base}/readyz")).status_code == 503
            assert count_calls(db) == []  # the stand-in got nothing

            os.replace(tmp_path / "real.sqlite", db)
            assert await runtime.writer.retry_now()
            assert (await client.get(f"{base}/readyz")).status_code == 200
            after = await send_calls(base, key, secret, 2)
    calls = count_calls(db)
    assert sorted(calls) == sorted(before + during + after)  # each exactly once


async def test_restart_with_a_non_empty_journal(tmp_path: Path) -> None:
    db = tmp_path / "ledger.sqlite"
    url = f"sqlite:///{db}"
    await add_account(url, "acme")
    journal_path = Path(str(db) + ".journal")
    records = [
        CallRecord(
            id=new_record_id(),
            request_id=f"journaled-{i}",
            account="acme",
            access_key_id="LTAIx",
            category="facebody",
            action="DetectFace",
            version="2019-12-30",
            item="facebody.DetectFace",
            occurred_at=datetime(2026, 11, 1, 8, 0, i, tzinfo=UTC),
            status=200,
            error_code=None,
            latency_ms=1.0,
        )
        for i in range(5)
    ]
    await Journal(journal_path).append(records[:3], [])
    await Journal(journal_path).append(records[3:], [])
    with open(journal_path, "ab") as fh:
        fh.write(b'{"torn": tr')  # the process died mid-append
    # Two of them were committed before the crash: replay must not duplicate them.
    store = open_store(url)
    await store.open()
    await store.write(records[:2], [])
    await store.close()
    assert len(count_calls(db)) == 2
    runtime = MeteringRuntime(MeteringConfig(ledger_url=url), catalog=roomy_catalog())
    await runtime.start()
    await runtime.stop()
    assert sorted(count_calls(db)) == [f"journaled-{i}" for i in range(5)]
    runtime = MeteringRuntime(MeteringConfig(ledger_url=url), catalog=roomy_catalog())
    async with runtime:
        await asyncio.sleep(0)
    assert len(count_calls(db)) == 5


async def test_a_start_refuses_to_replace_a_lost_ledger_that_left_a_journal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Deleted while the gateway was down, with records journaled: no new empty ledger."""
    db = tmp_path / "ledger.sqlite"
    url = f"sqlite:///{db}"
    await add_account(url, "acme")
    record = CallRecord(
        id=new_record_id(),
        request_id="journaled",
        account="acme",
        access_key_id="LTAIx",
        category="facebody",
        action="DetectFace",
        version="2019-12-30",
        item="facebody.DetectFace",
        occurred_at=datetime(2026, 3, 1, tzinfo=UTC),
        status=200,
        error_code=None,
        latency_ms=1.0,
    )
    await Journal(str(db) + ".journal").append([record])
    moved = tmp_path / "elsewhere.sqlite"
    db.rename(moved)
    runtime = MeteringRuntime(MeteringConfig(ledger_url=url), catalog=roomy_catalog())
    with pytest.raises(StoreError, match="put the ledger file back"):
        await runtime.start()
    assert not db.exists()  # nothing created in its place
    moved.rename(db)
    async with MeteringRuntime(MeteringConfig(ledger_url=url), catalog=roomy_catalog()):
        pass
    assert count_calls(db) == ["journaled"]  # the journal went into the real ledger
    # A first start with no journal creates the ledger, and says so.
    fresh = tmp_path / "new.sqlite"
    with caplog.at_level("WARNING", logger="metering_middleware"):
        async with MeteringRuntime(MeteringConfig(ledger_url=f"sqlite:///{fresh}")):
            pass
    assert fresh.exists()
    assert any("creating a new, empty ledger" in r.getMessage() for r in caplog.records)
