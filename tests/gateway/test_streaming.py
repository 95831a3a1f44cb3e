"""Streaming, disconnects and upstream failures, each on its own pair of real servers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest

from example_gateway.mock_upstream import BIG_SIZE, MockUpstream, create_mock_upstream
from example_gateway.proxy import create_proxy_app
from example_gateway.transport import TransportKind
from tests.support.metered import assume_metered
from tests.support.servers import free_port, run_server

V3_HEADERS = {"x-acs-action": "DetectFace", "x-acs-version": "2019-12-30"}
V1_PARAMS = {"Action": "DetectFace", "AccessKeyId": "key", "Signature": "sig"}
# A V3 caller (the gateway answers V3 callers in JSON, RPC callers in XML).
V3_AUTH = {"Authorization": "ACS3-HMAC-SHA256 Credential=key,SignedHeaders=host,Signature=x"}
CHUNK = 64 * 1024
# Every wait below is bounded: a proxy that buffers or leaks fails instead of hanging.
PATIENCE = 10.0


@pytest.fixture(params=["aiohttp", "httpx"])
def kind(request: pytest.FixtureRequest) -> TransportKind:
    param: TransportKind = request.param
    return param


class Permits:
    """A gate for the mock: each permit lets the upstream send one more chunk."""

    def __init__(self) -> None:
        self._permits = asyncio.Semaphore(0)

    async def __call__(self) -> None:
        await self._permits.acquire()

    def release(self, n: int = 1) -> None:
        for _ in range(n):
            self._permits.release()


@asynccontextmanager
async def gateway(
    mock: MockUpstream, kind: TransportKind, upstream_timeout: float = 30.0
) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        run_server(mock, graceful_shutdown=1) as upstream,
        run_server(
            assume_metered(create_proxy_app(upstream, transport=kind, timeout=upstream_timeout))
        ) as proxy,
        httpx.AsyncClient(base_url=proxy) as client,
    ):
        yield client


async def read_at_least(chunks: AsyncIterator[bytes], n: int, into: bytearray) -> None:
    while len(into) < n:
        into += await anext(chunks)


@pytest.mark.parametrize("word", ["big", "bigchunked"])
async def test_big_bodies_stream_in_lockstep(kind: TransportKind, word: str) -> None:
    gate = Permits()
    mock = create_mock_upstream(chunk_size=CHUNK, gate=gate)
    received = bytearray()
    async with gateway(mock, kind) as client, asyncio.timeout(PATIENCE):
        params = {"ImageURL": word}
        async with client.stream("GET", "/", params=params, headers=V3_HEADERS) as r:
            chunks = r.aiter_raw()
            for produced in range(1, BIG_SIZE // CHUNK + 1):
                gate.release()
                # The caller holds chunk N while the upstream has produced only N of 32:
                # nothing on the way buffers the body.
                await read_at_least(chunks, produced * CHUNK, received)
                assert mock.stats.chunks_sent == produced
                assert len(received) == produced * CHUNK
            received += b"".join([c async for c in chunks])
    assert len(received) == BIG_SIZE
    assert json.loads(received)["RequestId"] == r.headers["x-acs-request-id"]
    assert ("content-length" in r.headers) is (word == "big")


@pytest.mark.parametrize("word", ["big", "bigchunked"])
async def test_caller_hanging_up_mid_stream_closes_the_upstream(
    kind: TransportKind, word: str
) -> None:
    gate = Permits()
    mock = create_mock_upstream(chunk_size=CHUNK, gate=gate)
    async with gateway(mock, kind) as client, asyncio.timeout(PATIENCE):
        gate.release()
        async with client.stream("GET", "/", params={"ImageURL": word}) as r:
            await anext(r.aiter_raw())
            assert mock.stats.active_streams == 1
        # Leaving the block mid-body drops the caller's connection. The upstream is
        # parked at its gate, so only the proxy closing its connection can end it.
        await mock.wait_until(lambda s: s.aborted == 1 and s.active_streams == 0)
        assert mock.stats.chunks_sent == 1
        gate.release(BIG_SIZE // CHUNK)
        r2 = await client.get("/", params={"ImageURL": "big"})
        assert len(r2.content) == BIG_SIZE
    assert mock.stats.in_flight == 0


async def test_upstream_breaking_off_mid_body_aborts_the_answer(kind: TransportKind) -> None:
    sent = 0

    async def gate() -> None:
        nonlocal sent
        sent += 1
        if sent == 3:
            raise RuntimeError("mock upstream dies mid-body (expected in this test)")

    mock = create_mock_upstream(chunk_size=CHUNK, gate=gate)
    async with (
        gateway(mock, kind) as client,
        asyncio.timeout(PATIENCE),
        client.stream("GET", "/", params={"ImageURL": "big"}) as r,
    ):
        assert r.status_code == 200
        # A short body must not look complete: the caller sees the break.
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            await r.aread()


@pytest.mark.parametrize("xml", [False, True])
async def test_upstream_timeout_is_504(kind: TransportKind, xml: bool) -> None:
    mock = create_mock_upstream(slow_seconds=60)
    params, headers = (V1_PARAMS, {}) if xml else ({}, V3_AUTH)
    async with gateway(mock, kind, upstream_timeout=0.2) as client, asyncio.timeout(PATIENCE):
        r = await client.get("/", params=params, headers={"x-mock-outcome": "slow", **headers})
        assert r.status_code == 504
        request_id = r.headers["x-acs-request-id"]
        if xml:
            assert r.headers["content-type"].startswith("text/xml")
            assert "<Code>GatewayTimeout</Code>" in r.text
            assert f"<RequestId>{request_id}</RequestId>" in r.text
        else:
            doc = r.json()
            assert (doc["Code"], doc["RequestId"]) == ("GatewayTimeout", request_id)
            assert doc["HostId"]
        # The abandoned upstream call was hung up on, not left running.
        await mock.wait_until(lambda s: s.aborted == 1 and s.in_flight == 0)


@pytest.mark.parametrize("xml", [False, True])
async def test_upstream_down_is_502(kind: TransportKind, xml: bool) -> None:
    params, headers = (V1_PARAMS, {}) if xml else ({}, V3_AUTH)
    app = assume_metered(create_proxy_app(f"http://127.0.0.1:{free_port()}", transport=kind))
    async with run_server(app) as proxy, httpx.AsyncClient(base_url=proxy) as client:
        r = await client.post("/", params=params, headers=headers, content=b"x" * 1000)
    assert r.status_code == 502
    if xml:
        assert "<Code>BadGateway</Code>" in r.text
    else:
        doc = r.json()
        assert (doc["Code"], doc["RequestId"]) == ("BadGateway", r.headers["x-acs-request-id"])
        assert doc["Message"]


async def test_upstream_base_path_is_kept(kind: TransportKind) -> None:
    mock = create_mock_upstream()
    async with run_server(mock) as upstream:
        app = assume_metered(create_proxy_app(upstream + "/base/", transport=kind))
        async with run_server(app) as proxy, httpx.AsyncClient(base_url=proxy) as client:
            await client.get("/", params={"q": "1"})
    seen = mock.stats.recent[-1]
    assert (seen.path, seen.query_string) == ("/base/", "q=1")


async def test_injected_client_is_used_and_left_open() -> None:
    mock = create_mock_upstream()
    injected = httpx.AsyncClient(headers={"x-from-injected": "yes"})
    entered: list[str] = []

    @asynccontextmanager
    async def lifespan(app: object) -> AsyncIterator[None]:
        entered.append("up")
        yield
        entered.append("down")

    async with run_server(mock) as upstream:
        app = create_proxy_app(upstream, client=injected, lifespan=lifespan)
        async with (
            run_server(assume_metered(app)) as proxy,
            httpx.AsyncClient(base_url=proxy) as client,
        ):
            assert (await client.get("/")).status_code == 200
            assert app.state.http_client is injected
    assert entered == ["up", "down"]
    assert not injected.is_closed
    await injected.aclose()


async def test_proxy_without_lifespan_says_so() -> None:
    app = create_proxy_app("http://127.0.0.1:9")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as c:
        with pytest.raises(RuntimeError, match="lifespan"):
            await c.get("/")
