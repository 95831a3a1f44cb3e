"""The example gateway: a streaming VIAPI proxy with the meter mounted in front.

    client ──► MeteringMiddleware ──► proxy (Starlette + one httpx client) ──► upstream

``/healthz`` (alive), ``/readyz`` (ledger reachable and taking records) and
``/metrics`` (Prometheus) pass through the meter unmetered.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from metering_middleware import MeteringMiddleware, MeteringRuntime
from metering_middleware.clock import Clock, SystemClock

from .config import GatewayConfig
from .proxy import V3Resigner, create_proxy_app

__all__ = ["create_gateway_app"]


def create_gateway_app(
    gateway: GatewayConfig, runtime: MeteringRuntime, *, clock: Clock | None = None
) -> ASGIApp:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(runtime.metrics)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        if await runtime.ready():
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "ledger unavailable"}, status_code=503)

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    resign = None
    if gateway.resign is not None:
        resign = V3Resigner(
            gateway.resign.access_key_id, gateway.resign.secret, clock or SystemClock()
        )
    proxy = create_proxy_app(
        gateway.upstream,
        timeout=gateway.timeout,
        connect_timeout=gateway.connect_timeout,
        max_connections=gateway.max_connections,
        transport=gateway.transport,
        resign=resign,
        extra_routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
        ],
    )
    return MeteringMiddleware(proxy, runtime=runtime)
