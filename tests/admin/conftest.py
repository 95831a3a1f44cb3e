"""An admin API on a real SQLite ledger, served through httpx.ASGITransport.

Seeded: ``alice`` (topped up, a resource plan and a QPS subscription), ``bob`` (one key),
three admin tokens configured now (``TOKEN``, ``TOKEN_2``) or before (``OLD_TOKEN``,
rotated out: configured before, removed now).
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet

from example_gateway.app import create_gateway_app
from example_gateway.config import AdminConfig, GatewayConfig
from example_gateway.mock_upstream import MockUpstream, create_mock_upstream
from metering_middleware import MeteringConfig, MeteringRuntime
from metering_middleware.admin.app import create_admin_app
from metering_middleware.admin.context import AdminContext
from metering_middleware.admin.tokens import AdminTokens
from metering_middleware.catalog import default_catalog
from metering_middleware.clock import ManualClock
from metering_middleware.credentials import CredentialManager, SecretBox
from metering_middleware.rating import (
    SqliteRatingStore,
    buy_qps_subscription,
    buy_resource_plan,
    top_up,
)
from metering_middleware.stores.sqlite.ledger import SqliteStore
from tests.e2e.conftest import add_account
from tests.support.catalogs import roomy_catalog
from tests.support.servers import run_server

TOKEN = "current-admin-token-0123456789abcdef"
TOKEN_2 = "second-admin-token-for-rotation-9876543210"
OLD_TOKEN = "old-admin-token-rotated-out-0123456789"
START = datetime(2026, 3, 10, 4, 0, tzinfo=UTC)


@dataclass
class Admin:
    client: httpx.AsyncClient
    ctx: AdminContext
    db: Path
    clock: ManualClock
    box: SecretBox
    alice_key: str
    alice_secret: str
    bob_key: str
    plan_id: str
    qps_id: str

    def dump(self) -> dict[str, list[tuple[Any, ...]]]:
        return dump(self.db)


def dump(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table (an independent reader): to prove nothing was written."""
    with sqlite3.connect(db) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            )
        ]
        return {
            t: sorted(map(tuple, conn.execute(f'SELECT * FROM "{t}"')), key=repr) for t in tables
        }


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def seed(db: Path, clock: ManualClock, box: SecretBox) -> dict[str, str]:
    # The rotated-out token was in use before: configured, then removed (see tests).
    async with SqliteStore(db) as store:
        manager = CredentialManager(store, box, clock)
        alice, alice_secret = await manager.add("alice")
        bob, _ = await manager.add("bob")
    catalog = default_catalog()
    async with SqliteRatingStore(db, create=False) as ratings:
        await top_up(ratings, "alice", "1000.00", key="seed-1", clock=clock)
        plan = await buy_resource_plan(
            ratings,
            catalog,
            account="alice",
            kind="general",
            points="10000",
            ordered_at=clock.now(),
            price_paid="120.00",
            plan_id="rp-seed",
            clock=clock,
        )
        qps = await buy_qps_subscription(
            ratings,
            catalog,
            account="alice",
            category="facebody",
            action="DetectFace",
            qps=5,
            ordered_at=clock.now(),
            price_paid="30.00",
            subscription_id="qps-seed",
            clock=clock,
        )
    return {
        "alice_key": alice.access_key_id,
        "alice_secret": alice_secret,
        "bob_key": bob.access_key_id,
        "plan_id": plan.id,
        "qps_id": qps.id,
    }


@pytest.fixture
async def admin(tmp_path: Path) -> AsyncIterator[Admin]:
    db = tmp_path / "ledger.sqlite"
    clock = ManualClock(START)
    box = SecretBox(Fernet.generate_key().decode())
    seeded = await seed(db, clock, box)
    ctx = AdminContext.from_ledger_url(
        f"sqlite:///{db}", AdminTokens([TOKEN, TOKEN_2]), clock=clock, secret_box=box
    )
    app = create_admin_app(ctx)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://admin") as client:
        yield Admin(client, ctx, db, clock, box, **seeded)
    await ctx.close()


# -- the example gateway with the admin API mounted (real HTTP) -----------------------

PREFIX = "/ops/admin"


@dataclass
class Served:
    url: str
    db: Path
    mock: MockUpstream
    key: str
    secret: str

    def count(self, sql: str) -> int:
        with sqlite3.connect(self.db) as conn:
            return int(conn.execute(sql).fetchone()[0])

    def metered(self) -> tuple[int, int]:
        """(records, per-minute outcome counts summed): what the meter wrote."""
        calls = self.count("SELECT COUNT(*) FROM calls")
        return calls, self.count("SELECT COALESCE(SUM(count), 0) FROM outcome_counts")


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    db = tmp_path / "ledger.sqlite"
    url = f"sqlite:///{db}"
    key, secret = await add_account(url, "acme")
    mock = create_mock_upstream()
    runtime = MeteringRuntime(
        MeteringConfig(ledger_url=url, mode="strict", settle_interval=0), catalog=roomy_catalog()
    )
    admin = AdminConfig(AdminTokens([TOKEN]), PREFIX)
    async with run_server(mock) as upstream:
        gateway = GatewayConfig(upstream=upstream, timeout=5.0, admin=admin)
        async with run_server(create_gateway_app(gateway, runtime)) as base:
            yield Served(base, db, mock, key, secret)
