"""``tests.support.servers.run_server``: the helper every server test stands on."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from tests.support.servers import run_server


async def hello(request: Request) -> Response:
    return PlainTextResponse(f"{request.app.state.phase} on {request.url.port}")


async def test_serves_after_startup_and_stops_on_exit() -> None:
    phases: list[str] = []

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.phase = "started"
        phases.append("startup")
        yield
        phases.append("shutdown")

    app = Starlette(routes=[Route("/", hello)], lifespan=lifespan)
    async with run_server(app) as base_url:
        port = httpx.URL(base_url).port
        assert phases == ["startup"]
        async with httpx.AsyncClient() as client:
            assert (await client.get(base_url)).text == f"started on {port}"
    assert phases == ["startup", "shutdown"]
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(base_url)


async def test_failed_startup_raises_instead_of_exiting() -> None:
    @asynccontextmanager
    async def broken(app: Starlette) -> AsyncIterator[None]:
        raise OSError("ledger unreachable (expected in this test)")
        yield

    with pytest.raises(RuntimeError, match="failed to start"):
        async with run_server(Starlette(lifespan=broken)):
            pass  # pragma: no cover
