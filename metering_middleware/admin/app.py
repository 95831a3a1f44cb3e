"""The admin HTTP API as an ASGI app: ``create_admin_app(ctx, ui=...)``.

    caller ──► bearer check (every route, the OpenAPI document too) ──► route ──► rating
                                                                         functions

Routes only parse, call the rating functions (one implementation of each rule) and
serialise; every refusal is an Alibaba-style body (see :mod:`.errors`). The app is usable
on its own (``uvicorn``, ``httpx.ASGITransport``) or mounted under a prefix by a gateway,
beside the meter and never through it. ``ui`` (the billing web page) is mounted at
``/ui``; it guards itself (a session cookie signed in with an admin token).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp

from ..ledger.store import StoreError
from ..rating.errors import RatingError
from ..reports.errors import ReportError
from .auth import BearerGuard, require_token, token_refusal
from .context import AdminContext
from .errors import AdminError, ErrorBody, error_response, validation_message
from .routes import REGISTRARS

__all__ = ["API_TITLE", "OPENAPI_PATH", "UI_PATH", "create_admin_app"]

log = logging.getLogger("metering_middleware.admin")

API_TITLE = "metering admin API"
OPENAPI_PATH = "/openapi.json"
#: Where the billing web page (``ui``) is mounted; it guards itself.
UI_PATH = "/ui"

#: Documented on every route: what the error handlers below answer.
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "Malformed or invalid input (nothing written)"},
    401: {"model": ErrorBody, "description": "Missing or invalid admin token"},
    404: {"model": ErrorBody, "description": "Unknown account, AccessKey, plan or route"},
    409: {"model": ErrorBody, "description": "Refused by a rating rule (nothing written)"},
    500: {"model": ErrorBody, "description": "A server failure (InternalError; logged)"},
    503: {"model": ErrorBody, "description": "The ledger is unavailable"},
}


def create_admin_app(ctx: AdminContext, *, ui: ASGIApp | None = None) -> FastAPI:
    """The admin API on ``ctx``; ``ui`` (an ASGI app) is served under ``/ui``."""
    app = FastAPI(
        title=API_TITLE,
        version="1",
        description="Accounts, AccessKeys, plans, balances, standing, notices, usage and "
        "bills of a metering gateway. Every route needs `Authorization: Bearer <token>`.",
        # The document is served by an ordinary (guarded) route below, not FastAPI's own.
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        dependencies=[Depends(require_token(ctx.tokens))],
        responses=_ERRORS,
    )
    app.state.admin = ctx
    _handlers(app, ctx)
    for register in REGISTRARS:
        register(app, ctx)

    @app.get(OPENAPI_PATH, include_in_schema=False)
    async def openapi_document() -> JSONResponse:
        return JSONResponse(_document(app))

    if ui is not None:
        app.mount(UI_PATH, ui, name="ui")
    app.add_middleware(
        BearerGuard,
        tokens=ctx.tokens,
        exempt=UI_PATH if ui is not None else None,
        host_id=ctx.host_id,
    )
    return app


def _document(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, minus its 422 (our validation errors are 400 ``ErrorBody``)."""
    if app.openapi_schema is None:
        doc = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        for path_item in doc.get("paths", {}).values():
            for operation in path_item.values():
                if isinstance(operation, dict):
                    operation.get("responses", {}).pop("422", None)
        schemas = doc.get("components", {}).get("schemas", {})
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
        app.openapi_schema = doc
    return app.openapi_schema


def _handlers(app: FastAPI, ctx: AdminContext) -> None:
    host = ctx.host_id

    async def admin_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, AdminError)
        return error_response(
            request,
            exc.status,
            exc.code,
            exc.message,
            recommend=exc.recommend,
            host_id=host,
            headers=exc.headers,
        )

    async def invalid(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        code, message = validation_message(list(exc.errors()))
        return error_response(request, 400, code, message, host_id=host)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code in (404, 405):
            # Which routes exist is for token holders only: without one, every path is 401.
            refusal = token_refusal(ctx.tokens, request.headers.get("authorization"))
            if refusal is not None:
                return await admin_error(request, refusal)
        if exc.status_code == 404:
            code, message = "NotFound", f"no route {request.method} {request.url.path}"
        elif exc.status_code == 405:
            code, message = "MethodNotAllowed", f"{request.method} is not allowed here"
        else:
            code, message = "BadRequest", str(exc.detail)
        return error_response(request, exc.status_code, code, message, host_id=host)

    async def refused(request: Request, exc: Exception) -> Response:
        # A rating rule refused the operation (validated before anything was written).
        return error_response(request, 409, "OperationRefused", str(exc), host_id=host)

    async def report_refused(request: Request, exc: Exception) -> Response:
        # The query layer's own code and status: every billing face refuses alike.
        assert isinstance(exc, ReportError)
        return error_response(request, exc.status, exc.code, str(exc), host_id=host)

    async def unavailable(request: Request, exc: Exception) -> Response:
        log.error("admin API: ledger unavailable: %s", exc)
        return error_response(
            request,
            503,
            "ServiceUnavailable",
            "the ledger is unavailable; try again",
            host_id=host,
        )

    async def internal(request: Request, exc: Exception) -> Response:
        # A bug, not bad input: an Alibaba-style 500 (the server logs the traceback; the
        # caller never sees it).
        log.error("admin API: %s %s failed", request.method, request.url.path)
        return error_response(
            request,
            500,
            "InternalError",
            "the request failed on the server; quote the RequestId",
            host_id=host,
        )

    app.add_exception_handler(Exception, internal)
    app.add_exception_handler(AdminError, admin_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RatingError, refused)
    app.add_exception_handler(ReportError, report_refused)
    app.add_exception_handler(StoreError, unavailable)
