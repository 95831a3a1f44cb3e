"""Plans bought in the rating store set the QPS the gateway enforces."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import httpx

from example_gateway.app import create_gateway_app
from example_gateway.config import GatewayConfig
from example_gateway.mock_upstream import create_mock_upstream
from metering_middleware import ManualClock, MeteringConfig, MeteringRuntime, default_catalog
from metering_middleware.rating import (
    SqliteRatingStore,
    buy_qps_subscription,
    buy_resource_plan,
)
from tests.support.servers import run_server

from .conftest import add_account
from .signed import v3_headers


async def burst(base: str, key: str, secret: str, n: int) -> list[int]:
    body = b"ImageURL=https%3A%2F%2Fx%2Fa.jpg"
    async with httpx.AsyncClient(timeout=10.0) as client:
        answers = await asyncio.gather(
            *(
                client.post(base, content=body, headers=v3_headers(key, secret, body))
                for _ in range(n)
            )
        )
    return sorted(a.status_code for a in answers)


async def test_plans_raise_the_entitlement(tmp_path: Path) -> None:
    db = tmp_path / "ledger.sqlite"
    url = f"sqlite:///{db}"
    key, secret = await add_account(url, "acme")
    clock = ManualClock(datetime.now(UTC))  # the limiter's window moves only when told
    runtime = MeteringRuntime(MeteringConfig(ledger_url=url), clock=clock)
    catalog = default_catalog()
    async with run_server(create_mock_upstream()) as upstream:
        app = create_gateway_app(GatewayConfig(upstream=upstream), runtime)
        async with run_server(app) as base:
            assert await burst(base, key, secret, 4) == [200, 200, 429, 429]  # default 2
            async with SqliteRatingStore(db) as rating:
                await buy_resource_plan(
                    rating,
                    catalog,
                    account="acme",
                    kind="single",
                    categories=("facebody",),
                    points=100,
                    ordered_at=datetime.now(UTC),
                    price_paid="1.00",
                )
            await runtime.entitlements.refresh()  # what the next refresh does by itself
            clock.advance(1.0)  # a fresh one-second window
            assert await burst(base, key, secret, 7) == [200] * 5 + [429] * 2
            async with SqliteRatingStore(db) as rating:
                await buy_qps_subscription(
                    rating,
                    catalog,
                    account="acme",
                    category="facebody",
                    action="DetectFace",
                    qps=10,
                    ordered_at=datetime.now(UTC),
                    price_paid="30.00",
                )
            await runtime.entitlements.refresh()
            clock.advance(1.0)
            assert await burst(base, key, secret, 12) == [200] * 10 + [429] * 2
