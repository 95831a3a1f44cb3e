"""Two gateways sharing one Redis: one QPS budget per (account, API), one nonce space."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from example_gateway.app import create_gateway_app
from example_gateway.config import GatewayConfig
from example_gateway.mock_upstream import create_mock_upstream
from metering_middleware import MeteringConfig, MeteringRuntime
from metering_middleware.credentials import CredentialManager, SecretBox
from metering_middleware.ledger.urls import open_store
from tests.limiter.redis_server import RedisServer
from tests.support.servers import run_server

from .conftest import add_account
from .signed import v3_headers


async def test_two_gateways_share_limits_and_nonces(tmp_path: Path, redis: RedisServer) -> None:
    urls = []
    runtimes = []
    for name in ("a", "b"):  # two gateways, each with its own ledger file
        url = f"sqlite:///{tmp_path / f'{name}.sqlite'}"
        urls.append(url)
    key, secret = await add_account(urls[0], "acme")
    await add_account(urls[1], "placeholder")  # make the file; the key is imported next
    from metering_middleware.clock import SystemClock

    store = open_store(urls[1])
    await store.open()
    await CredentialManager(store, SecretBox(None), SystemClock()).add(
        "acme", secret, access_key_id=key
    )
    await store.close()
    for url in urls:
        runtimes.append(MeteringRuntime(MeteringConfig(ledger_url=url, limiter_url=redis.url)))
    async with run_server(create_mock_upstream()) as upstream:
        apps = [create_gateway_app(GatewayConfig(upstream=upstream), rt) for rt in runtimes]
        async with run_server(apps[0]) as gw_a, run_server(apps[1]) as gw_b:
            body = b"ImageURL=https%3A%2F%2Fx%2Fa.jpg"
            async with httpx.AsyncClient(timeout=10.0) as client:
                signed = [v3_headers(key, secret, body) for _ in range(6)]
                answers = await asyncio.gather(
                    *(
                        client.post(gw_a if i % 2 else gw_b, content=body, headers=h)
                        for i, h in enumerate(signed)
                    )
                )
                # facebody's default 2 QPS holds across both gateways together.
                assert sorted(a.status_code for a in answers) == [200, 200] + [429] * 4
                # Another API has its own budget: the replay is refused for its nonce alone.
                replayed = v3_headers(key, secret, body, action="RecognizeFace")
                first = await client.post(gw_a, content=body, headers=replayed)
                again = await client.post(gw_b, content=body, headers=replayed)
    assert first.status_code == 200
    assert again.status_code == 400 and again.json()["Code"] == "SignatureNonceUsed"
