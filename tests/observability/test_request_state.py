"""The wrapped app knows the caller: ``request.state.metering``, set by the meter alone.

A real FastAPI app, the meter added with ``add_middleware``, real V3-signed calls.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from starlette.types import ASGIApp, Receive, Scope, Send

from metering_middleware import MeteredCall, MeteringConfig, MeteringMiddleware, MeteringRuntime
from tests.e2e.conftest import add_account
from tests.e2e.signed import v3_headers
from tests.support.servers import run_server

BODY = b"ImageURL=https%3A%2F%2Fx%2Fa.jpg"


def _app(runtime: MeteringRuntime, seen: list[Request]) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        # The meter's runtime has started before this runs (it sees the lifespan first).
        yield {"greeting": "kept", "runtime_started": runtime.started}

    app = FastAPI(lifespan=lifespan)

    @app.post("/")
    async def detect(request: Request) -> dict[str, Any]:
        seen.append(request)
        return {"RequestId": request.state.metering.record_id, "Data": {}}

    app.add_middleware(MeteringMiddleware, runtime=runtime)
    return app


@pytest.fixture
async def acme(tmp_path: Path) -> tuple[str, str, str]:
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    key, secret = await add_account(url, "acme")
    return url, key, secret


async def test_the_handler_reads_the_call_beside_the_lifespan_state(
    acme: tuple[str, str, str],
) -> None:
    url, key, secret = acme
    runtime = MeteringRuntime(MeteringConfig(ledger_url=url, mode="strict"))
    seen: list[Request] = []
    async with (
        run_server(_app(runtime, seen), lifespan="on") as base,
        httpx.AsyncClient(base_url=base) as client,
    ):
        answer = await client.post("/", content=BODY, headers=v3_headers(key, secret, BODY))
    assert answer.status_code == 200
    [request] = seen
    call = request.state.metering
    assert isinstance(call, MeteredCall)
    assert (call.account, call.access_key_id) == ("acme", key)
    assert (call.category, call.action) == ("facebody", "DetectFace")
    assert call.record_id == answer.json()["RequestId"]
    # The server's (lifespan) state is kept beside it, not replaced.
    assert request.state.greeting == "kept" and request.state.runtime_started is True
    # Small, slotted, immutable: a handler cannot change what the meter bills.
    assert not hasattr(call, "__dict__")
    with pytest.raises(dataclasses.FrozenInstanceError):
        call.account = "other"  # type: ignore[misc]


async def test_no_header_query_or_outer_layer_sets_the_call(
    acme: tuple[str, str, str],
) -> None:
    url, key, secret = acme
    runtime = MeteringRuntime(MeteringConfig(ledger_url=url))
    seen: list[Request] = []
    inner = _app(runtime, seen)
    forged = MeteredCall("victim", "LTAIvictim", "facebody", "DetectFace", "2019-12-30",
                         "forged-record", "v3", ())  # fmt: skip

    async def outer(scope: Scope, receive: Receive, send: Send) -> None:
        # Something in front of the app that puts a call of its own into the state.
        if scope["type"] == "http":
            scope = {**scope, "state": {**scope.get("state", {}), "metering": forged}}
        await inner(scope, receive, send)

    app: ASGIApp = outer
    headers = v3_headers(
        key, secret, BODY, extra={"x-metering-account": "victim", "metering": "victim"}
    )
    async with runtime:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            answer = await client.post("/", content=BODY, headers=headers)
    assert answer.status_code == 200
    [request] = seen
    assert request.state.metering.account == "acme"
    assert request.state.metering.record_id != "forged-record"


@pytest.mark.parametrize(
    "case", ["wrong_secret", "unknown_key", "unsigned", "forged_query", "trusted_hop_guess"]
)
async def test_a_refused_call_never_reaches_the_app(acme: tuple[str, str, str], case: str) -> None:
    url, key, secret = acme
    runtime = MeteringRuntime(
        MeteringConfig(ledger_url=url, trusted_hop_secret="s" * 32)  # a hop secret exists
    )
    seen: list[Request] = []
    app = _app(runtime, seen)
    params: dict[str, str] = {}
    headers = v3_headers(key, secret, BODY)
    if case == "wrong_secret":
        headers = v3_headers(key, "w" * 30, BODY)
    elif case == "unknown_key":
        headers = v3_headers("LTAInobody", secret, BODY)
    elif case == "unsigned":
        headers = {"x-acs-action": "DetectFace", "x-acs-version": "2019-12-30"}
    elif case == "forged_query":
        params = {"metering": "victim"}  # not covered by the signature: it no longer matches
    else:  # a caller guessing the internal hop's proof, without a signature
        headers = {
            "x-acs-action": "DetectFace",
            "x-acs-version": "2019-12-30",
            "x-metering-trusted-hop": "guess",
            "authorization": f"ACS3-HMAC-SHA256 Credential={key},SignedHeaders=host,Signature=00",
        }
    async with runtime:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            answer = await client.post("/", content=BODY, headers=headers, params=params)
    assert 400 <= answer.status_code < 500
    assert "Code" in answer.text  # an Alibaba error body (XML without a JSON Accept)
    assert seen == []
