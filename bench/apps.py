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
    "VARIANTS",
    "Variant",
    "bench_catalog",
    "build_app",
    "is_metered",
    "premetered",
    "serve",
    "trivial_app",
]

Variant = Literal[
    "trivial",
    "trivial+strict",
    "trivial+batched",
    "proxy",
    "gateway+strict",
    "gateway+batched",
]
VARIANTS: Final[tuple[Variant, ...]] = (
    "trivial",
    "trivial+strict",
    "trivial+batched",
    "proxy",
    "gateway+strict",
    "gateway+batched",
)

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
    return "+" in variant


def build_app(variant: str, *, ledger_url: str | None = None, upstream: str | None = None) -> Any:
    """The ASGI app of one variant (``mock`` too); imports only what the variant needs."""
    if variant == "mock":
        from example_gateway.mock_upstream import create_mock_upstream

        return create_mock_upstream()
    if variant == "trivial":
        return trivial_app
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
