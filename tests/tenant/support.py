"""Two tenants in a real SQLite ledger, a real gateway in front, and the ways to call it.

``seed`` writes through the project's own APIs (credentials, top-ups, plans, records
with their counters, settlement) two accounts whose every visible value differs:
``acme`` (A) and ``beta`` (B). B's values carry markers (``BETA_MARKERS``) that must
never appear in an answer to A, whatever A sends.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from example_gateway.app import create_gateway_app
from example_gateway.config import GatewayConfig
from example_gateway.mock_upstream import MockUpstream, create_mock_upstream
from metering_middleware import Clock, ManualClock, MeteringConfig, MeteringRuntime, SystemClock
from metering_middleware.credentials import CredentialManager, SecretBox
from metering_middleware.ledger import CallRecord, SqliteStore
from metering_middleware.ledger.records import Outcome, OutcomeCount
from metering_middleware.rating import SqliteRatingStore, buy_resource_plan, settle
from metering_middleware.rating.months import billing_month
from metering_middleware.signing import sign_v3
from metering_middleware.tenant import API_VERSION
from tests.support.money import priced_catalog, topup
from tests.support.servers import run_server

__all__ = [
    "BETA_MARKERS",
    "CATALOG",
    "Key",
    "Seeded",
    "TenantGateway",
    "code",
    "data",
    "seed",
    "signed_headers",
    "tenant_gateway",
]

CATALOG = priced_catalog()
#: Texts only B's data holds: B's plan id, B's top-up, B's only API, B's account name.
BETA_MARKERS = ("plan-beta-777", "777.77", "CompareFace", "beta")


@dataclass(frozen=True)
class Key:
    id: str
    secret: str


@dataclass(frozen=True)
class Seeded:
    a: Key
    b: Key
    a_disabled: Key  # a second key of A's, disabled
    first_call: datetime  # the minute of the first seeded call
    month: str  # the billing month the seeded calls are in
    a_plan: str
    b_plan: str


def _minute(when: datetime) -> datetime:
    return when.replace(second=0, microsecond=0)


async def seed(db: Path, now: datetime) -> Seeded:
    """Both tenants, their calls two hours before ``now``, settled at ``now``."""
    clock = ManualClock(now)
    store = SqliteStore(db, clock=clock, synchronous="NORMAL")
    rating = SqliteRatingStore(db)
    await store.open()
    await rating.open()
    try:
        keys = CredentialManager(store, SecretBox(None), clock)
        a_row, a_secret = await keys.add("acme")
        b_row, b_secret = await keys.add("beta")
        off_row, off_secret = await keys.add("acme")
        await keys.disable(off_row.access_key_id)
        start = _minute(now - timedelta(hours=2))
        await topup(rating, "acme", "100", start - timedelta(days=1))
        await topup(rating, "beta", "777.77", start - timedelta(days=1))
        for account, pid, points in (
            ("acme", "plan-acme-1", "100"),
            ("beta", "plan-beta-777", "450"),
        ):
            await buy_resource_plan(
                rating,
                CATALOG,
                account=account,
                kind="single",
                categories={"facebody"},
                points=Decimal(points),
                ordered_at=start - timedelta(days=1),
                price_paid=Decimal("1"),
                plan_id=pid,
                clock=clock,
            )
        n = 0
        records: list[CallRecord] = []
        counts: list[OutcomeCount] = []
        # A: 5 DetectFace (the plan's 3 points take some, pay-as-you-go the rest) and two
        # free answers; B: 7 CompareFace and a refusal.
        for account, action, calls in (("acme", "DetectFace", 5), ("beta", "CompareFace", 7)):
            for i in range(calls):
                n += 1
                when = start + timedelta(minutes=i)
                records.append(
                    CallRecord(
                        id=f"r{n:08d}",
                        request_id=f"up-{n}",
                        account=account,
                        access_key_id=(a_row if account == "acme" else b_row).access_key_id,
                        category="facebody",
                        action=action,
                        version="2019-12-30",
                        item=f"facebody.{action}",
                        occurred_at=when,
                        status=200,
                        error_code=None,
                        latency_ms=10.0,
                    )
                )
                counts.append(
                    OutcomeCount(when, account, "facebody", action, Outcome.CHARGED, "", 1)
                )
        counts.append(
            OutcomeCount(
                start, "acme", "facebody", "DetectFace", Outcome.FREE, "InvalidImage.Download", 2
            )
        )
        counts.append(
            OutcomeCount(start, "beta", "facebody", "CompareFace", Outcome.REFUSED, "throttled", 4)
        )
        await store.write(records, counts)
        await settle(rating, CATALOG, clock, lag=timedelta(seconds=60))
    finally:
        await rating.close()
        await store.close()
    return Seeded(
        Key(a_row.access_key_id, a_secret),
        Key(b_row.access_key_id, b_secret),
        Key(off_row.access_key_id, off_secret),
        start,
        str(billing_month(start)),
        "plan-acme-1",
        "plan-beta-777",
    )


@dataclass
class TenantGateway:
    base: str  # http://127.0.0.1:port
    endpoint: str  # 127.0.0.1:port, as the SDKs take it
    db: Path
    runtime: MeteringRuntime
    mock: MockUpstream
    seeded: Seeded
    clock: Clock

    async def send(
        self,
        key: Key,
        action: str,
        path: str = "/tenant/",
        *,
        query: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        method: str = "GET",
        extra: dict[str, str] | None = None,
        now: datetime | None = None,
        nonce: str | None = None,
    ) -> httpx.Response:
        """One call signed by the project's signer at the gateway's clock."""
        headers = signed_headers(
            key, action, path, query or [], body, now or self.clock.now(), method, extra, nonce
        )
        return await self.raw(method, path, query or [], headers, body)

    async def raw(
        self,
        method: str,
        path: str,
        query: list[tuple[str, str]],
        headers: dict[str, str],
        body: bytes = b"",
    ) -> httpx.Response:
        async with httpx.AsyncClient(base_url=self.base, timeout=10.0) as client:
            return await client.request(method, path, params=query, headers=headers, content=body)


def signed_headers(
    key: Key,
    action: str,
    path: str,
    query: list[tuple[str, str]],
    body: bytes,
    now: datetime,
    method: str = "GET",
    extra: dict[str, str] | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    headers = {
        "host": "tenant.example",
        "x-acs-action": action,
        "x-acs-version": API_VERSION,
        **(extra or {}),
    }
    if body:
        headers.setdefault("content-type", "application/json")
    headers.update(
        sign_v3(
            method,
            path,
            query,
            headers,
            body,
            key.id,
            key.secret,
            now=now,
            nonce=nonce or uuid.uuid4().hex,
        )
    )
    return headers


def data(answer: httpx.Response) -> Any:
    """The ``Data`` of a 200 answer (with its RequestId checked against the header)."""
    assert answer.status_code == 200, answer.text
    doc = json.loads(answer.content)
    assert doc["RequestId"] == answer.headers["x-acs-request-id"]
    return doc["Data"]


def code(answer: httpx.Response) -> tuple[int, str]:
    """``(status, Code)`` of an Alibaba-style error answer."""
    doc = json.loads(answer.content)
    assert set(doc) == {"RequestId", "HostId", "Code", "Message", "Recommend"}, doc
    return answer.status_code, doc["Code"]


@asynccontextmanager
async def tenant_gateway(
    tmp_path: Path,
    *,
    clock: Clock | None = None,
    now: datetime | None = None,
    tenant_qps: int = 50,
    seeded: Seeded | None = None,
    **settings: Any,
) -> AsyncIterator[TenantGateway]:
    """The example gateway over a seeded ledger (``seeded``: seeded already, a restart),
    the mock VIAPI behind it."""
    db = tmp_path / "ledger.sqlite"
    clock = clock or SystemClock()
    if seeded is None:
        seeded = await seed(db, now or clock.now())
    runtime = MeteringRuntime(
        MeteringConfig(ledger_url=f"sqlite:///{db}", mode="strict", **settings),
        clock=clock,
        catalog=CATALOG,
    )
    mock = create_mock_upstream()
    async with run_server(mock) as upstream:
        gateway = GatewayConfig(upstream=upstream, timeout=5.0, tenant_qps=tenant_qps)
        app = create_gateway_app(gateway, runtime, clock=clock)
        async with run_server(app) as base:
            yield TenantGateway(
                base, base.removeprefix("http://"), db, runtime, mock, seeded, clock
            )
