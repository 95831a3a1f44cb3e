"""The proxy opens its upstream connections at start, before the first call (issue 10).

An upstream that records each request's TCP peer shows which connection carried it: the
warm-up opens ``warm_connections`` distinct connections before the server takes a call,
and the first calls after the start ride on them instead of opening new ones.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from example_gateway.config import GatewayConfig
from example_gateway.mock_upstream import create_mock_upstream
from example_gateway.proxy import WARMUP_HEADER, create_proxy_app
from metering_middleware.config import ConfigError
from tests.support.metered import assume_metered
from tests.support.servers import run_server

V3_HEADERS = {"x-acs-action": "DetectFace", "x-acs-version": "2019-12-30"}


class PeerLog:
    """An upstream answering 200 to everything (chunked: no content-length), keeping
    (method, peer, warm-up?) of each request."""

    def __init__(self, hold: asyncio.Event | None = None) -> None:
        self.seen: list[tuple[str, tuple[str, int], bool]] = []
        self.hold = hold
        self.arrived = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body", False):
            pass
        headers = dict(scope["headers"])
        warm = WARMUP_HEADER.encode() in headers
        self.seen.append((scope["method"], tuple(scope["client"]), warm))
        if len(self.seen) == 6:
            self.arrived.set()
        if self.hold is not None and not warm:
            await self.hold.wait()  # keeps concurrent calls on separate connections
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
async def test_connections_are_open_before_the_first_call_and_reused(transport: str) -> None:
    hold = asyncio.Event()
    upstream = PeerLog(hold)
    # proxy_headers off: the upstream sees its TCP peer, not the X-Forwarded-For the proxy adds.
    async with run_server(upstream, proxy_headers=False) as base:
        proxied = create_proxy_app(base, transport=transport, warm_connections=3)  # type: ignore[arg-type]
        app = assume_metered(proxied)
        async with run_server(app) as proxy:
            # Startup is complete (the server takes calls): the warm-up already happened.
            warm = [peer for method, peer, w in upstream.seen if w]
            assert [(m, w) for m, _, w in upstream.seen] == [("GET", True)] * 3
            assert len(set(warm)) == 3  # three distinct connections
            async with httpx.AsyncClient(base_url=proxy) as client:
                calls = [asyncio.create_task(client.get("/", headers=V3_HEADERS)) for _ in range(3)]
                await upstream.arrived.wait()  # all three are at the upstream at once
                hold.set()
                assert [r.status_code for r in await asyncio.gather(*calls)] == [200] * 3
    used = [peer for _, peer, w in upstream.seen if not w]
    # Three calls at once, each on a connection the warm-up opened: none was opened for them.
    assert len(used) == 3 and set(used) <= set(warm)


async def test_an_unreachable_upstream_does_not_stop_the_start() -> None:
    # Nothing listens on the port: the warm-up logs and the proxy starts anyway; a call
    # then gets the proxy's own 502, as it would have without a warm-up.
    async with run_server(PeerLog()) as base:
        dead = base
    app = assume_metered(create_proxy_app(dead, warm_connections=2, connect_timeout=1.0))
    async with run_server(app) as proxy, httpx.AsyncClient(base_url=proxy) as client:
        r = await client.get("/", headers=V3_HEADERS)
    assert r.status_code == 502


async def test_the_mock_counts_warm_ups_apart_from_calls() -> None:
    mock = create_mock_upstream()
    async with run_server(mock) as base:
        app = assume_metered(create_proxy_app(base, warm_connections=2))
        async with run_server(app) as proxy, httpx.AsyncClient(base_url=proxy) as client:
            assert (mock.stats.warmups, mock.stats.requests) == (2, 0)
            assert (await client.get("/", headers=V3_HEADERS)).status_code == 200
    assert (mock.stats.warmups, mock.stats.requests) == (2, 1)


def test_warm_connections_is_validated() -> None:
    assert GatewayConfig().warm_connections == 4
    with pytest.raises(ConfigError, match="warm_connections"):
        GatewayConfig(warm_connections=-1)
    with pytest.raises(ValueError, match="warm_connections"):
        create_proxy_app("http://127.0.0.1:1", warm_connections=-1)
