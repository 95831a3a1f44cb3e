"""In the example gateway, ``/tenant/`` is the tenant view's alone: never forwarded to the
upstream, never charged, never counted as a VIAPI call; every other path is metered as
before (the official facebody SDK's call is forwarded and charged)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from example_gateway.app import create_gateway_app
from example_gateway.config import GatewayConfig
from example_gateway.mock_upstream import create_mock_upstream
from metering_middleware import MeteringConfig, MeteringRuntime
from metering_middleware.signing import sign_v1_params, sign_v3
from metering_middleware.tenant import create_tenant_app, tenant_view_available
from tests.e2e.sdk import detect_face_v3
from tests.support.servers import run_server

from .sdk import call_api
from .support import TenantGateway, code, data, tenant_gateway

IMAGE = "https://x.example/face.jpg"
FORM = "application/x-www-form-urlencoded"


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[TenantGateway]:
    async with tenant_gateway(tmp_path) as gateway:
        yield gateway


def _ledger(gw: TenantGateway) -> tuple[int, int, list[tuple[str, str]]]:
    """(records, counted calls, the (category, action) pairs counted), read independently."""
    with sqlite3.connect(gw.db) as conn:
        records = conn.execute("SELECT COUNT(*) FROM calls").fetchone()[0]
        counted = conn.execute("SELECT COALESCE(SUM(count), 0) FROM outcome_counts").fetchone()[0]
        pairs = conn.execute("SELECT DISTINCT category, action FROM outcome_counts").fetchall()
    return records, counted, sorted(pairs)


async def _tenant_traffic(gw: TenantGateway) -> None:
    """Accepted and refused tenant calls, some of them dressed as VIAPI calls."""
    a = gw.seeded.a
    for action, path in (
        ("DescribeBalance", "/tenant/v1/balance"),
        ("DescribePlans", "/tenant/v1/plans"),
        ("DescribeUsage", "/tenant/v1/usage"),
        ("DescribeBill", f"/tenant/v1/bills/{gw.seeded.month}"),
    ):
        answer = await asyncio.to_thread(
            call_api, gw.endpoint, a.id, a.secret, action, pathname=path
        )
        assert answer.status == 200
    body = f"ImageURL={IMAGE}".encode()
    async with httpx.AsyncClient(base_url=gw.base, timeout=10.0) as client:
        # A genuine V3 DetectFace, signed for a /tenant/ path: the tenant view has no such action.
        headers = {
            "host": "facebody.cn-shanghai.aliyuncs.com",
            "x-acs-action": "DetectFace",
            "x-acs-version": "2019-12-30",
            "content-type": FORM,
        }
        for path in ("/tenant/", "/tenant/v1/usage"):
            signed = headers | sign_v3(
                "POST", path, [], headers, body, a.id, a.secret, now=gw.clock.now(), nonce=path
            )
            answer = await client.post(path, content=body, headers=signed)
            assert answer.status_code >= 400, path
        # A genuine V1 DetectFace at /tenant/: refused for its signature version.
        params = sign_v1_params(
            "GET",
            [("Action", "DetectFace"), ("Version", "2019-12-30"), ("ImageURL", IMAGE)],
            a.id,
            a.secret,
            now=gw.clock.now(),
            nonce="v1-at-tenant",
        )
        answer = await client.get("/tenant/", params=params)
        assert code(answer) == (400, "UnsupportedSignatureVersion")


async def test_tenant_calls_never_reach_the_upstream_nor_the_ledger(gw: TenantGateway) -> None:
    # One metered call first, so the counters are known to be written at all.
    a = gw.seeded.a
    result = await asyncio.to_thread(detect_face_v3, gw.endpoint, a.id, a.secret, IMAGE)
    assert result.ok
    await gw.runtime.writer.flush_now()
    before = _ledger(gw)
    metrics = gw.runtime.metrics.snapshot()
    assert sum(metrics.values()) == 1  # the metered call, counted
    forwarded = gw.mock.stats.requests
    assert forwarded == 1
    await _tenant_traffic(gw)
    await gw.runtime.writer.flush_now()
    assert gw.mock.stats.requests == forwarded  # nothing of it was forwarded
    assert _ledger(gw) == before  # no record, no counter, no new (category, action)
    assert gw.runtime.metrics.snapshot() == metrics  # nor a VIAPI call in the metrics
    assert ("tenant-view", "*") not in before[2]


async def test_viapi_calls_are_still_metered_beside_the_view(gw: TenantGateway) -> None:
    a = gw.seeded.a
    records, _, _ = _ledger(gw)
    await _tenant_traffic(gw)
    result = await asyncio.to_thread(detect_face_v3, gw.endpoint, a.id, a.secret, IMAGE)
    assert result.ok and result.status == 200
    await gw.runtime.writer.flush_now()
    assert _ledger(gw)[0] == records + 1
    with sqlite3.connect(gw.db) as conn:
        last = conn.execute(
            "SELECT account, action FROM calls ORDER BY seq DESC LIMIT 1"
        ).fetchone()
    assert last == ("acme", "DetectFace")
    assert gw.mock.stats.requests == 1


async def test_the_view_is_off_without_a_ledger_file_or_when_configured_off(
    tmp_path: Path,
) -> None:
    memory = MeteringRuntime(MeteringConfig(ledger_url="memory://"))
    assert not tenant_view_available(memory)
    with pytest.raises(ValueError, match="SQLite ledger"):
        create_tenant_app(memory)
    runtime = MeteringRuntime(MeteringConfig(ledger_url=f"sqlite:///{tmp_path / 'l.sqlite'}"))
    with pytest.raises(ValueError, match="qps"):
        create_tenant_app(runtime, qps=0)
    async with run_server(create_mock_upstream()) as upstream:
        app = create_gateway_app(GatewayConfig(upstream=upstream, tenant_qps=0), runtime)
        async with run_server(app) as base, httpx.AsyncClient(base_url=base) as client:
            # No tenant view: /tenant/ is just another path the meter refuses unsigned.
            answer = await client.get("/tenant/v1/balance")
            assert answer.status_code == 400
            assert "<Code>InvalidAction.NotFound</Code>" in answer.text  # the meter's XML


async def test_the_tenant_app_serves_on_its_own(tmp_path: Path) -> None:
    """Usable as an ASGI app by itself: its lifespan starts and stops the runtime."""
    from metering_middleware import SystemClock

    from .support import CATALOG, seed

    db = tmp_path / "ledger.sqlite"
    seeded = await seed(db, SystemClock().now())
    runtime = MeteringRuntime(MeteringConfig(ledger_url=f"sqlite:///{db}"), catalog=CATALOG)
    async with run_server(create_tenant_app(runtime)) as base:
        assert runtime.started
        endpoint = base.removeprefix("http://")
        a = seeded.a
        answer = await asyncio.to_thread(
            call_api, endpoint, a.id, a.secret, "DescribeBalance", pathname="/"
        )
        assert answer.status == 200 and answer.body["Data"]["balance"] == "97.50"
        answer = await asyncio.to_thread(
            call_api, endpoint, a.id, a.secret, "DescribePlans", pathname="/v1/plans"
        )
        assert [p["id"] for p in answer.body["Data"]["plans"]] == ["plan-acme-1"]
    assert runtime.stopped


async def test_answers_are_not_cached_on_the_way(gw: TenantGateway) -> None:
    answer = await gw.send(gw.seeded.a, "DescribeBalance", "/tenant/v1/balance")
    assert data(answer)["account"] == "acme"
    assert answer.headers["cache-control"] == "no-store"
    assert answer.headers["content-type"] == "application/json;charset=utf-8"
