"""The operator's upstream budget through the example gateway: a call within the tenant's
entitlement but over the budget is 429 ``Throttling.Api``, never forwarded, never
charged, and counted."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import httpx

from example_gateway.app import create_gateway_app
from example_gateway.config import GatewayConfig
from example_gateway.mock_upstream import create_mock_upstream
from metering_middleware import ManualClock, MeteringConfig, MeteringRuntime
from metering_middleware.credentials import CredentialManager, SecretBox
from metering_middleware.ledger.urls import open_store
from tests.limiter.redis_server import RedisServer
from tests.support.servers import run_server

from .conftest import add_account
from .sdk import detect_face_v3
from .signed import v3_headers

BODY = b"ImageURL=https%3A%2F%2Fx%2Fa.jpg"


async def test_a_call_over_the_budget_is_refused_free_and_counted(tmp_path: Path) -> None:
    db = tmp_path / "ledger.sqlite"
    url = f"sqlite:///{db}"
    keys = {name: await add_account(url, name) for name in ("a", "b", "c")}
    clock = ManualClock(datetime.now(UTC))  # the window moves only when told
    # Three tenants on facebody's default 2 QPS (6 sold), 3 QPS for DetectFace at Alibaba.
    config = MeteringConfig(ledger_url=url, upstream_qps={"facebody.DetectFace": 3})
    runtime = MeteringRuntime(config, clock=clock)
    mock = create_mock_upstream()
    async with run_server(mock) as upstream:
        app = create_gateway_app(GatewayConfig(upstream=upstream), runtime)
        async with run_server(app) as base, httpx.AsyncClient(timeout=10.0) as client:

            async def call(name: str, action: str = "DetectFace") -> tuple[int, str, str]:
                key, secret = keys[name]
                r = await client.post(
                    base, content=BODY, headers=v3_headers(key, secret, BODY, action=action)
                )
                code = "" if r.status_code == 200 else r.json()["Code"]
                return r.status_code, code, r.headers.get("retry-after", "")

            assert [await call(n) for n in ("a", "a", "b")] == [(200, "", "")] * 3
            over = (429, "Throttling.Api", "1")
            assert [await call(n) for n in ("b", "c", "c")] == [over] * 3
            # Another API of the category has no budget here: only the tenant's limit.
            assert await call("c", "CompareFace") == (200, "", "")
            # The official SDK sees the code as VIAPI's own.
            key, secret = keys["c"]
            sdk = await asyncio.to_thread(
                detect_face_v3, base.removeprefix("http://"), key, secret, "https://x/a.jpg"
            )
            assert (sdk.ok, sdk.code, sdk.status) == (False, "Throttling.Api", 429)
            forwarded = mock.stats.requests
            assert forwarded == 4  # the three DetectFace admissions and the CompareFace

            clock.advance(1.0)  # the budget frees; c's refusals left nothing in its own log
            assert [await call("c") for _ in range(3)] == [
                (200, "", ""),
                (200, "", ""),
                (429, "Throttling.User", "1"),  # now its own 2 QPS
            ]
            assert mock.stats.requests == forwarded + 2
            metrics = (await client.get(f"{base}/metrics")).text
            await runtime.writer.flush_now()
    assert 'metering_limiter_decisions_total{result="upstream_budget"} 4.0' in metrics
    with sqlite3.connect(db) as conn:
        charged = conn.execute(
            "SELECT account, action, COUNT(*) FROM calls GROUP BY 1, 2 ORDER BY 1, 2"
        ).fetchall()
        refused = conn.execute(
            "SELECT account, detail, SUM(count) FROM outcome_counts WHERE outcome = 'refused'"
            " GROUP BY 1, 2 ORDER BY 1, 2"
        ).fetchall()
    # Only what the upstream answered is in the ledger.
    assert charged == [
        ("a", "DetectFace", 2),
        ("b", "DetectFace", 1),
        ("c", "CompareFace", 1),
        ("c", "DetectFace", 2),
    ]
    assert refused == [
        ("b", "upstream_budget", 1),
        ("c", "throttled", 1),
        ("c", "upstream_budget", 3),
    ]


async def test_two_gateways_on_one_redis_share_the_budget(
    tmp_path: Path, redis: RedisServer
) -> None:
    urls = [f"sqlite:///{tmp_path / f'{n}.sqlite'}" for n in ("one", "two")]
    names = ("a", "b", "c")
    keys = {name: await add_account(urls[0], name) for name in names}
    store = open_store(urls[1], create=True)
    await store.open()
    try:  # the same AccessKeys on the second gateway's ledger
        manager = CredentialManager(store, SecretBox(None), ManualClock())
        for name, (key, secret) in keys.items():
            await manager.add(name, secret, access_key_id=key)
    finally:
        await store.close()
    budget = {"facebody.DetectFace": 3}
    runtimes = [
        MeteringRuntime(MeteringConfig(ledger_url=u, limiter_url=redis.url, upstream_qps=budget))
        for u in urls
    ]
    mock = create_mock_upstream()
    async with run_server(mock) as upstream:
        apps = [create_gateway_app(GatewayConfig(upstream=upstream), rt) for rt in runtimes]
        async with (
            run_server(apps[0]) as one,
            run_server(apps[1]) as two,
            httpx.AsyncClient(timeout=10.0) as client,
        ):
            signed = [(name, v3_headers(*keys[name], BODY)) for name in names for _ in range(2)]
            # Concurrent: together well inside one second on any machine. Each tenant sends
            # its own 2 QPS, half to each gateway; the budget is 3 for all of them.
            answers = await asyncio.gather(
                *(
                    client.post(one if i % 2 else two, content=BODY, headers=h)
                    for i, (_, h) in enumerate(signed)
                )
            )
    got = sorted((a.status_code, "" if a.status_code == 200 else a.json()["Code"]) for a in answers)
    assert got == [(200, "")] * 3 + [(429, "Throttling.Api")] * 3
    assert mock.stats.requests == 3
