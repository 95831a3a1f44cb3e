"""The example gateway: its own operational routes beside one metered proxy.

    client ─┬─► /healthz /readyz /metrics (GET): answered by the gateway itself
            ├─► /admin/... (``[admin] prefix``): the admin API, bearer token, unmetered
            ├─► /tenant/...: the tenant view (signed with the tenant's own key, unmetered)
            └─► everything else ──► MeteringMiddleware ──► proxy ──► upstream

The meter has nothing to skip: every request that is not exactly one of the
gateway's own routes enters it and is identified, verified, admitted and
metered (or refused) before the proxy sees it, and the proxy forwards only
what the meter passed on (``scope["state"]["metering"]``). ``/healthz`` (alive),
``/readyz`` (ledger reachable and taking records) and ``/metrics``
(Prometheus) never reach the upstream. Nor does the admin API (when admin tokens are
configured): it is routed before the meter, so its calls are neither metered nor
forwarded, and it guards itself (``Authorization: Bearer <token>`` on every route).
Nor does ``/tenant/`` (docs/tenant.md): a tenant's signed reads of its own usage,
plans, balance and bills, answered from the ledger file and never forwarded, charged or
counted as VIAPI calls.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from metering_middleware import MeteringMiddleware, MeteringRuntime
from metering_middleware.clock import Clock, SystemClock
from metering_middleware.tenant import create_tenant_app, tenant_view_available

from .config import GatewayConfig
from .proxy import V3Resigner, create_proxy_app

__all__ = ["create_gateway_app"]


def create_gateway_app(
    gateway: GatewayConfig, runtime: MeteringRuntime, *, clock: Clock | None = None
) -> Starlette:
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
        warm_connections=gateway.warm_connections,
        transport=gateway.transport,
        resign=resign,
    )

    admin_routes: list[BaseRoute] = []
    admin_ctx = None
    if gateway.admin is not None:
        # Imported here: a gateway without admin tokens needs no FastAPI.
        from metering_middleware.admin.app import create_admin_app
        from metering_middleware.admin.context import AdminContext
        from metering_middleware.admin.web import create_billing_web

        admin_ctx = AdminContext.from_runtime(runtime, gateway.admin.tokens)
        # The billing web page at <prefix>/ui (it guards itself with a session cookie).
        admin_app = create_admin_app(admin_ctx, ui=create_billing_web(admin_ctx))
        prefix = gateway.admin.prefix
        # The prefix itself too (a Mount takes only what is below it): never the meter's.
        admin_routes = [Route(prefix, admin_app), Mount(prefix, app=admin_app)]

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Starlette runs no lifespan of a mounted app: the gateway runs both. The
        # ledger first (no call is served that it cannot take), the proxy's client
        # inside it; on shutdown the client closes, then the ledger is flushed.
        await runtime.start()
        try:
            if admin_ctx is not None:
                await admin_ctx.open()
            async with proxy.router.lifespan_context(proxy):
                yield
        finally:
            if admin_ctx is not None:
                await admin_ctx.close()
            await runtime.stop()

    routes: list[BaseRoute] = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        *admin_routes,
    ]
    if gateway.tenant_qps and tenant_view_available(runtime):
        # Before the metered mount: a /tenant/ request is the tenant view's alone.
        routes.append(Mount("/tenant", app=create_tenant_app(runtime, qps=gateway.tenant_qps)))
    routes += [
        # Everything else, whatever its path, method or scope type: the one metered app.
        Mount("", app=MeteringMiddleware(proxy, runtime=runtime)),
    ]
    return Starlette(routes=routes, lifespan=lifespan)
