"""The middleware around Starlette, FastAPI and a bare ASGI app, under real uvicorn.

Batched mode with a flush interval far longer than the test: records reach the
ledger only because the lifespan shutdown flushes them.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from metering_middleware import MeteredCall, MeteringConfig, MeteringMiddleware, MeteringRuntime
from tests.e2e.conftest import add_account
from tests.e2e.signed import v3_headers
from tests.support.catalogs import roomy_catalog
from tests.support.servers import run_server


async def _ok(request: Request) -> JSONResponse:
    await request.body()
    return JSONResponse({"RequestId": "from-app", "Data": {}})


def starlette_app() -> ASGIApp:
    return Starlette(routes=[Route("/", _ok, methods=["POST"])])


def fastapi_app() -> ASGIApp:
    app = FastAPI()

    @app.post("/")
    async def detect() -> dict[str, Any]:
        return {"RequestId": "from-app", "Data": {}}

    return app


async def bare_app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        raise RuntimeError("this app speaks no lifespan")
    body = b'{"RequestId":"from-app","Data":{}}'
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


@pytest.mark.parametrize("make_app", [starlette_app, fastapi_app, lambda: bare_app])
async def test_lifespan_starts_and_flushes_the_ledger(tmp_path: Path, make_app: Any) -> None:
    db = tmp_path / "ledger.sqlite"
    url = f"sqlite:///{db}"
    key, secret = await add_account(url, "acme")
    runtime = MeteringRuntime(
        MeteringConfig(ledger_url=url, mode="batched", flush_interval=3600.0),
        catalog=roomy_catalog(),
    )
    app = MeteringMiddleware(make_app(), runtime=runtime)
    async with run_server(app, lifespan="auto") as base:
        assert app.runtime.started  # started by the lifespan, before any call
        async with httpx.AsyncClient() as client:
            for _ in range(3):
                body = b"ImageURL=https%3A%2F%2Fx%2Fa.jpg"
                response = await client.post(
                    base, content=body, headers=v3_headers(key, secret, body)
                )
                assert response.status_code == 200
        with sqlite3.connect(db) as conn:
            assert conn.execute("SELECT COUNT(*) FROM calls").fetchone() == (0,)
    assert not app.runtime.started
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM calls").fetchone() == (3,)


async def test_explicit_async_context(tmp_path: Path) -> None:
    db = tmp_path / "ledger.sqlite"
    url = f"sqlite:///{db}"
    key, secret = await add_account(url, "acme")
    app = MeteringMiddleware(starlette_app(), ledger_url=url, mode="batched", flush_interval=3600.0)
    async with app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            body = b"ImageURL=https%3A%2F%2Fx%2Fa.jpg"
            response = await client.post("/", content=body, headers=v3_headers(key, secret, body))
            assert response.status_code == 200
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM calls").fetchone() == (1,)


def test_settings_and_runtime_are_exclusive() -> None:
    runtime = MeteringRuntime(MeteringConfig(ledger_url="memory://"))
    with pytest.raises(TypeError):
        MeteringMiddleware(bare_app, runtime=runtime, mode="strict")
    with pytest.raises(TypeError):
        MeteringMiddleware(bare_app, config=MeteringConfig(), mode="strict")


async def test_fastapi_handler_reads_the_verified_call(tmp_path: Path) -> None:
    """``request.state.metering`` is what the meter verified and records under."""
    db = tmp_path / "ledger.sqlite"
    url = f"sqlite:///{db}"
    key, secret = await add_account(url, "acme")
    seen: list[MeteredCall | None] = []
    inner = FastAPI()

    @inner.post("/")
    async def detect(request: Request) -> dict[str, Any]:
        seen.append(request.state.metering)
        return {"RequestId": "from-app", "Data": {}}

    app = MeteringMiddleware(inner, ledger_url=url, mode="strict")
    async with app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            body = b"ImageURL=https%3A%2F%2Fx%2Fa.jpg"
            response = await client.post("/", content=body, headers=v3_headers(key, secret, body))
            assert response.status_code == 200
    [call] = seen
    assert call is not None
    assert (call.account, call.access_key_id, call.action) == ("acme", key, "DetectFace")
    assert (call.category, call.style, call.trusted_hop) == ("facebody", "v3", False)
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT id, account FROM calls").fetchall() == [
            (call.record_id, "acme")
        ]
