"""The servers the meter benchmark runs, one per process (see ``meter_bench.py``).

Variants (``VARIANTS``):

- ``trivial``: a VIAPI-like raw ASGI app (reads the body, answers a fixed
  DetectFace-like JSON with ``x-acs-request-id``), the floor of the stack;
- ``trivial+strict`` / ``trivial+batched``: the same app inside
  ``MeteringMiddleware`` (signatures verified, nonces claimed, one ledger record
  per call);
- ``proxy``: ``example_gateway.proxy.create_proxy_app`` with its defaults, behind
  ``premetered`` (a fixed stand-in for the meter's ``MeteredCall``: the proxy
  forwards nothing without one);
- ``gateway+strict`` / ``gateway+batched``: ``create_gateway_app``, i.e. the same
  proxy with the meter mounted (the example gateway as shipped);
- ``mock``: the example's mock VIAPI, upstream of the proxy variants.

The comparison users make (``compare.py``) adds two stacks a team would build itself:

- ``diy+slowapi``: the trivial app's answer from a Starlette route behind slowapi's
  limiter (keyed by the AccessKey named in ``Authorization``, not verified: a
  hand-rolled stack rarely checks V3 signatures), plus one SQLite insert committed per
  request (WAL, synchronous=FULL like the ledger) off the loop in Starlette's thread pool;
- ``proxy-httpx``: a default Starlette + ``httpx.AsyncClient`` proxy (httpx's own pool,
  its default limits), streaming the upstream's answer back, unmetered.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Final, Literal

from starlette.types import ASGIApp, Receive, Scope, Send

if TYPE_CHECKING:
    from metering_middleware.catalog import Catalog

__all__ = [
    "BENCH_QPS",
    "METER_VARIANTS",
    "VARIANTS",
    "Variant",
    "bench_catalog",
    "build_app",
    "diy_app",
    "httpx_proxy_app",
    "is_metered",
    "premetered",
    "serve",
    "trivial_app",
    "uses_meter",
]

Variant = Literal[
    "trivial",
    "trivial+strict",
    "trivial+batched",
    "proxy",
    "gateway+strict",
    "gateway+batched",
    "diy+slowapi",
    "proxy-httpx",
]
VARIANTS: Final[tuple[Variant, ...]] = (
    "trivial",
    "trivial+strict",
    "trivial+batched",
    "proxy",
    "gateway+strict",
    "gateway+batched",
    "diy+slowapi",
    "proxy-httpx",
)
#: What ``meter_bench.py`` runs by default: the meter's own ladder, without the DIY stacks.
METER_VARIANTS: Final = VARIANTS[:6]

#: DetectFace's QPS entitlement on the bench: far above any rate one process reaches.
BENCH_QPS: Final = 1_000_000

_REQUEST_ID: Final = b"5B3E0C4A-BENCH-4A1F-9C2B-000000000000"
_BODY: Final = json.dumps(
    {
        "RequestId": _REQUEST_ID.decode(),
        "Data": {"FaceCount": 1, "FaceRectangles": [120, 80, 200, 240], "FaceProbabilityList": [1]},
    }
).encode()
_HEADERS: Final = [
    (b"content-type", b"application/json;charset=utf-8"),
    (b"content-length", b"%d" % len(_BODY)),
    (b"x-acs-request-id", _REQUEST_ID),
]


async def trivial_app(scope: Scope, receive: Receive, send: Send) -> None:
    """About the least an ASGI app answering a VIAPI call can do."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": _BODY})


def premetered(app: ASGIApp) -> ASGIApp:
    """The proxy's cost without the meter's: a ``MeteredCall`` read from the query alone.

    Benchmarks only: it admits everything, which is what a baseline measures.
    """
    from metering_middleware.context import STATE_KEY, MeteredCall
    from metering_middleware.identity import parse_params

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            query = tuple(parse_params(scope["query_string"]))
            call = MeteredCall(
                "bench", "bench", "facebody", "DetectFace", "2019-12-30", "bench", "v3",
                query, False, query,
            )  # fmt: skip
            scope = {**scope, "state": {**(scope.get("state") or {}), STATE_KEY: call}}
        await app(scope, receive, send)

    return wrapped


def is_metered(variant: str) -> bool:
    """It writes one record per call (the ``diy`` stack too: into its own table)."""
    return "+" in variant


def uses_meter(variant: str) -> bool:
    """Its ledger is the meter's (a key must be stored in it before the server starts)."""
    return is_metered(variant) and not variant.startswith("diy")


def build_app(variant: str, *, ledger_url: str | None = None, upstream: str | None = None) -> Any:
    """The ASGI app of one variant (``mock`` too); imports only what the variant needs."""
    if variant == "mock":
        from example_gateway.mock_upstream import create_mock_upstream

        return create_mock_upstream()
    if variant == "trivial":
        return trivial_app
    if variant == "diy+slowapi":
        assert ledger_url is not None, "the diy stack needs --ledger"
        return diy_app(ledger_url.removeprefix("sqlite:///"))
    if variant == "proxy-httpx":
        assert upstream is not None, "the proxy needs --upstream"
        return httpx_proxy_app(upstream)
    if variant == "proxy":
        from example_gateway.proxy import create_proxy_app

        assert upstream is not None, "the proxy needs --upstream"
        return premetered(create_proxy_app(upstream))
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}")

    from metering_middleware import MeteringMiddleware, MeteringRuntime
    from metering_middleware.config import MeteringConfig

    assert ledger_url is not None, "a metered variant needs --ledger"
    mode: Literal["strict", "batched"] = "strict" if variant.endswith("strict") else "batched"
    config = MeteringConfig(ledger_url=ledger_url, mode=mode)
    runtime = MeteringRuntime(config, catalog=bench_catalog())
    if variant.startswith("trivial"):
        app: ASGIApp = MeteringMiddleware(trivial_app, runtime=runtime)
        return app
    from example_gateway.app import create_gateway_app
    from example_gateway.config import GatewayConfig

    assert upstream is not None, "the gateway needs --upstream"
    return create_gateway_app(GatewayConfig(upstream=upstream), runtime)


#: The diy stack's table: named and shaped so ``meter_bench.ledger_calls`` counts it too.
_DIY_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS calls (id INTEGER PRIMARY KEY, access_key_id TEXT NOT NULL,"
    " action TEXT NOT NULL, status INTEGER NOT NULL, occurred_at REAL NOT NULL)"
)


def diy_app(path: str) -> Any:
    """Starlette + slowapi + an SQLite commit per request: metering the way a team hand-rolls it."""
    import sqlite3
    import threading
    import time

    from slowapi import Limiter, _rate_limit_exceeded_handler
    from slowapi.errors import RateLimitExceeded
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    def access_key(request: Request) -> str:
        # "ACS3-HMAC-SHA256 Credential=<AccessKeyId>,SignedHeaders=...,Signature=..."
        rest = request.headers.get("authorization", "").partition("Credential=")[2]
        return rest.split(",", 1)[0] or "anonymous"

    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = FULL")
    db.execute(_DIY_SCHEMA)
    lock = threading.Lock()  # one connection, many pool threads

    def record(key: str, action: str, status: int) -> None:
        with lock:  # autocommit: every insert is its own committed transaction
            db.execute(
                "INSERT INTO calls (access_key_id, action, status, occurred_at)"
                " VALUES (?, ?, ?, ?)",
                (key, action, status, time.time()),
            )

    limiter = Limiter(key_func=access_key)

    @limiter.limit(f"{BENCH_QPS}/second")
    async def call(request: Request) -> Response:
        await request.body()
        await run_in_threadpool(
            record, access_key(request), request.headers.get("x-acs-action", ""), 200
        )
        return Response(
            _BODY,
            media_type="application/json;charset=utf-8",
            headers={"x-acs-request-id": _REQUEST_ID.decode()},
        )

    app = Starlette(routes=[Route("/", call, methods=["GET", "POST"])])
    app.state.limiter = limiter
    app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)
    return app


#: Hop-by-hop headers a proxy must not forward (RFC 9110 7.6.1), and Host.
_HOP: Final = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
     "upgrade", "host", "content-length"}
)  # fmt: skip


def httpx_proxy_app(upstream: str) -> Any:
    """A default Starlette + httpx proxy: httpx's own pool and limits, answers streamed."""
    from collections.abc import AsyncIterator
    from contextlib import asynccontextmanager

    import httpx
    from starlette.applications import Starlette
    from starlette.background import BackgroundTask
    from starlette.requests import Request
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    client = httpx.AsyncClient(base_url=upstream)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await client.aclose()

    async def forward(request: Request) -> StreamingResponse:
        headers = [(k, v) for k, v in request.headers.raw if k.decode().lower() not in _HOP]
        outgoing = client.build_request(
            request.method,
            request.url.path,
            params=request.url.query,
            headers=headers,
            content=await request.body(),
        )
        answer = await client.send(outgoing, stream=True)
        return StreamingResponse(
            answer.aiter_raw(),
            status_code=answer.status_code,
            headers={k: v for k, v in answer.headers.items() if k.lower() not in _HOP},
            background=BackgroundTask(answer.aclose),
        )

    route = Route("/{path:path}", forward, methods=["GET", "POST"])
    return Starlette(routes=[route], lifespan=lifespan)


def bench_catalog() -> Catalog:
    """The packaged catalog with DetectFace allowed ``BENCH_QPS``.

    The QPS limiter stays on (its admission is part of the meter's cost) but never
    refuses: the catalog's default of 2 QPS, or even the largest purchasable
    subscription (50), would turn nearly every benchmark call into a ``Throttling.User``.
    """
    from metering_middleware.catalog import Catalog, default_catalog

    base = default_catalog()
    items = tuple(
        replace(it, default_qps=BENCH_QPS, max_qps=BENCH_QPS)
        if (it.category, it.action) == ("facebody", "DetectFace")
        else it
        for it in base.items
    )
    return Catalog(items, base.point_value, base.category_versions)


def serve(app: Any, port: int) -> None:
    """One uvicorn worker, uvloop + httptools, as the performance notes measured."""
    import uvicorn

    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        lifespan="on",
    )
