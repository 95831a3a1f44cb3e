"""Bodies stream through the metered gateway; the charge follows the upstream's answer."""

from __future__ import annotations

import asyncio
import gzip
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from example_gateway.app import create_gateway_app
from example_gateway.config import GatewayConfig
from example_gateway.mock_upstream import create_mock_upstream
from metering_middleware import MeteringConfig, MeteringRuntime
from tests.support.catalogs import roomy_catalog
from tests.support.servers import run_server

from .conftest import Gateway, add_account
from .signed import v3_headers

CHUNK = 64 * 1024
TWO_MIB = 2 * 1024 * 1024


class Lockstep:
    """The upstream may send chunk k+1 only after the client has chunk k."""

    def __init__(self) -> None:
        self.tokens = asyncio.Semaphore(1)

    async def gate(self) -> None:
        await self.tokens.acquire()

    def client_got_chunk(self) -> None:
        self.tokens.release()


@pytest.fixture
async def lockstep_gateway(tmp_path: Path) -> AsyncIterator[tuple[Gateway, Lockstep]]:
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    key, secret = await add_account(url, "acme")
    step = Lockstep()
    mock = create_mock_upstream(chunk_size=CHUNK, gate=step.gate)
    runtime = MeteringRuntime(
        MeteringConfig(ledger_url=url, mode="strict"), catalog=roomy_catalog()
    )
    async with run_server(mock) as upstream:
        app = create_gateway_app(GatewayConfig(upstream=upstream, timeout=10.0), runtime)
        async with run_server(app) as base:
            yield (
                Gateway(
                    base,
                    base.removeprefix("http://"),
                    tmp_path / "ledger.sqlite",
                    runtime,
                    mock,
                    key,
                    secret,
                ),
                step,
            )


@pytest.mark.parametrize("word", ["big", "bigchunked"])
async def test_two_mib_body_streams_in_lockstep(
    lockstep_gateway: tuple[Gateway, Lockstep], word: str
) -> None:
    gw, step = lockstep_gateway
    body = f"ImageURL=https%3A%2F%2Fx%2F{word}.jpg".encode()
    received = 0
    chunks_released = 1
    async with (
        httpx.AsyncClient(timeout=10.0) as client,
        client.stream(
            "POST", gw.url, content=body, headers=v3_headers(gw.access_key_id, gw.secret, body)
        ) as response,
    ):
        assert response.status_code == 200
        # If anything on the way buffered the body, this loop would wait forever
        # (the upstream sends the next chunk only when we have the previous one).
        async for piece in response.aiter_raw():
            received += len(piece)
            while received >= chunks_released * CHUNK and chunks_released * CHUNK < TWO_MIB:
                chunks_released += 1
                step.client_got_chunk()
    assert received == TWO_MIB
    assert gw.mock.stats.chunks_sent == TWO_MIB // CHUNK
    [row] = gw.rows()
    assert row["status"] == 200


async def test_client_disconnect_mid_stream_is_still_charged(
    lockstep_gateway: tuple[Gateway, Lockstep],
) -> None:
    gw, step = lockstep_gateway
    body = b"ImageURL=https%3A%2F%2Fx%2Fbig.jpg"
    async with (
        httpx.AsyncClient(timeout=10.0) as client,
        client.stream(
            "POST", gw.url, content=body, headers=v3_headers(gw.access_key_id, gw.secret, body)
        ) as response,
    ):
        assert response.status_code == 200
        async for piece in response.aiter_raw():
            assert piece
            break  # leave after the first bytes; the upstream is still mid-body
    step.client_got_chunk()  # let the upstream notice the disconnect
    for _ in range(200):  # wait (bounded) for the gateway to finish the call
        if gw.rows():
            break
        await asyncio.sleep(0.05)
    [row] = gw.rows()
    assert row["status"] == 200


async def test_gzip_error_bodies_are_read_and_forwarded_encoded(gateway: Gateway) -> None:
    async with httpx.AsyncClient(timeout=10.0) as client:
        for word, charged_before in (("noface", 0), ("badurl", 1)):
            assert len(gateway.rows()) == charged_before
            body = f"ImageURL=https%3A%2F%2Fx%2F{word}.jpg".encode()
            headers = v3_headers(gateway.access_key_id, gateway.secret, body)
            headers.update({"x-mock-gzip": "1", "accept-encoding": "gzip"})
            async with client.stream("POST", gateway.url, content=body, headers=headers) as r:
                raw = b"".join([piece async for piece in r.aiter_raw()])
                assert r.headers["content-encoding"] == "gzip"
                assert b"Code" in gzip.decompress(raw)
    rows = gateway.rows()
    assert [r["error_code"] for r in rows] == ["InvalidImage.NotFoundFace"]


async def test_strict_record_is_committed_before_the_client_has_the_response(
    gateway: Gateway,
) -> None:
    async with httpx.AsyncClient(timeout=10.0) as client:
        for n in range(1, 31):
            body = b"ImageURL=https%3A%2F%2Fx%2Fpeople.jpg"
            response = await client.post(
                gateway.url,
                content=body,
                headers=v3_headers(gateway.access_key_id, gateway.secret, body),
            )
            assert response.status_code == 200
            # An independent reader, the moment the response is complete.
            with sqlite3.connect(gateway.db) as conn:
                (count,) = conn.execute("SELECT COUNT(*) FROM calls").fetchone()
            assert count == n
    request_ids = {r["request_id"] for r in gateway.rows()}
    assert len(request_ids) == 30


async def test_upstream_timeout_is_a_free_504(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    key, secret = await add_account(url, "acme")
    mock = create_mock_upstream(slow_seconds=5.0)
    runtime = MeteringRuntime(MeteringConfig(ledger_url=url), catalog=roomy_catalog())
    async with run_server(mock) as upstream:
        app = create_gateway_app(GatewayConfig(upstream=upstream, timeout=0.3), runtime)
        async with run_server(app) as base, httpx.AsyncClient(timeout=10.0) as client:
            body = b"ImageURL=https%3A%2F%2Fx%2Fslow.jpg"
            response = await client.post(base, content=body, headers=v3_headers(key, secret, body))
            assert response.status_code == 504
            assert response.json()["Code"] == "GatewayTimeout"
    with sqlite3.connect(tmp_path / "ledger.sqlite") as conn:
        assert conn.execute("SELECT COUNT(*) FROM calls").fetchone() == (0,)
