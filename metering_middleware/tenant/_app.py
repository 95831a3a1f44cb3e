"""``TenantApp``: the ASGI app a tenant calls with its own AccessKey.

authenticate (the meter's verifier, nonce claim, window; then the tenant budget)
-> route (action, version, path) -> read parameters -> answer from the report layer.

A pure ASGI app rather than a Starlette router: every answer, a wrong path or method
included, must be an Alibaba-style body (Starlette's own 404/405 are plain text), and
authentication comes before routing, so nothing about the view is learnt unsigned.
Tenant calls are never charged, never recorded as calls and never counted in the
meter's counters or metrics: they are not VIAPI calls.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.types import Message, Receive, Scope, Send

from ..errors import (
    BODY_TOO_LARGE,
    HEADERS_TOO_LARGE,
    SERVICE_UNAVAILABLE,
    ApiError,
    ErrorKind,
    error_body,
)
from ..ledger import StoreError, new_record_id
from ..reports import ReportError
from ..runtime import MeteringRuntime
from ..stores.sqlite.ledger import SqliteStore
from ._auth import LimitRefusal, TenantAuthenticator
from ._errors import METHOD_NOT_ALLOWED
from ._params import read_params
from ._routes import Router
from ._views import VIEWS, ViewContext

__all__ = [
    "DEFAULT_QPS",
    "MAX_BODY_BYTES",
    "TenantApp",
    "create_tenant_app",
    "tenant_view_available",
]

log = logging.getLogger("metering_middleware.tenant")

#: Tenant-view calls per second per account, by default.
DEFAULT_QPS = 5
#: A tenant call's parameters are a few short values; a larger body is refused unread.
MAX_BODY_BYTES = 64 * 1024
_METHODS = frozenset(("GET", "POST"))
_INTERNAL = ErrorKind("InternalError", 500, "internal_error")
_WS_POLICY_VIOLATION = 1008


def tenant_view_available(runtime: MeteringRuntime) -> bool:
    """Whether ``runtime`` keeps what the tenant view reads: an SQLite ledger file."""
    return isinstance(runtime.store, SqliteStore)


def create_tenant_app(runtime: MeteringRuntime, *, qps: int = DEFAULT_QPS) -> TenantApp:
    """The tenant view over ``runtime``'s ledger, credentials, verifier and limiter.

    ``runtime`` must keep an SQLite ledger (plans, balances and bills live in its file);
    ``ValueError`` otherwise, or for a ``qps`` below 1.
    """
    store = runtime.store
    if not isinstance(store, SqliteStore):
        raise ValueError(
            "the tenant view reads plans, balances and bills from an SQLite ledger "
            "(ledger_url = sqlite:///path); this runtime keeps none"
        )
    return TenantApp(runtime, ViewContext(store.path, runtime.catalog, runtime.clock), qps=qps)


class TenantApp:
    """Serves one tenant call at a time per request; holds no per-request state itself."""

    __slots__ = ("_auth", "_context", "_max_head", "_max_headers", "_router", "runtime")

    def __init__(self, runtime: MeteringRuntime, context: ViewContext, *, qps: int) -> None:
        self.runtime = runtime
        self._context = context
        self._auth = TenantAuthenticator(runtime, qps=qps)
        self._router = Router(VIEWS)
        self._max_head = runtime.config.max_header_bytes
        self._max_headers = runtime.config.max_header_count

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            # Served on its own: the runtime starts and stops with the server. (Mounted in a
            # gateway, the gateway's lifespan runs the runtime and this never runs.)
            await self.runtime.serve_lifespan(receive, send)
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": _WS_POLICY_VIOLATION})
        else:
            raise RuntimeError(f"TenantApp does not handle {kind!r} scopes")

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = new_record_id()
        extra: tuple[tuple[bytes, bytes], ...] = ()
        try:
            runtime = self.runtime
            if not runtime.started:
                if runtime.stopped:
                    raise ApiError(SERVICE_UNAVAILABLE, "The metering gateway is shutting down.")
                await runtime.start()
            self._check_head(scope)
            body = await _read_body(receive)
            if body is None:
                return  # the client left before its request was complete
            # The full path, as the client signed it (a Mount keeps it in ``path``).
            path: str = scope["path"]
            caller = await self._auth.authenticate(
                scope["method"], path, scope["query_string"], scope["headers"], body
            )
            extra = caller.rate_headers
            if scope["method"] not in _METHODS:
                raise ApiError(METHOD_NOT_ALLOWED, "The tenant view answers GET and POST only.")
            root = scope.get("root_path", "")
            route_path = path[len(root) :] if root and path.startswith(root) else path
            view, values = self._router.route(route_path, caller.headers)
            params = read_params(
                view.action,
                view.params,
                caller.query,
                caller.headers.get("content-type"),
                body,
                values,
            )
            data = await view.handler(self._context, caller.account, params)
        except ApiError as exc:
            if isinstance(exc, LimitRefusal):
                extra = exc.headers
            await _error(send, exc.kind.status, exc.code, exc.message, request_id, extra)
            return
        except ReportError as exc:
            await _error(send, exc.status, exc.code, str(exc), request_id, extra)
            return
        except StoreError:
            log.exception("tenant view: the ledger could not be read")
            message = "The billing ledger cannot be read right now; retry later."
            await _error(send, 503, SERVICE_UNAVAILABLE.code, message, request_id, extra)
            return
        except Exception:
            log.exception("tenant view: unexpected failure (request %s)", request_id)
            message = f"The tenant view failed on this request ({request_id})."
            await _error(send, 500, _INTERNAL.code, message, request_id, extra)
            return
        await _answer(send, 200, {"RequestId": request_id, "Data": data}, request_id, extra)

    def _check_head(self, scope: Scope) -> None:
        headers = scope["headers"]
        if len(headers) > self._max_headers:
            raise ApiError(
                HEADERS_TOO_LARGE, f"The request has more than {self._max_headers} headers."
            )
        size = len(scope["query_string"]) + len(scope.get("raw_path") or b"")
        size += sum(len(k) + len(v) for k, v in headers)
        if size > self._max_head:
            raise ApiError(
                HEADERS_TOO_LARGE,
                f"The request line and headers are larger than {self._max_head} bytes.",
            )


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise ApiError(
                    BODY_TOO_LARGE, f"The request body is larger than {MAX_BODY_BYTES} bytes."
                )
            chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _error(
    send: Send,
    status: int,
    code: str,
    message: str,
    request_id: str,
    extra: tuple[tuple[bytes, bytes], ...],
) -> None:
    body, content_type = error_body(code, message, request_id)
    await _send(send, status, body, content_type, request_id, extra)


async def _answer(
    send: Send,
    status: int,
    doc: dict[str, Any],
    request_id: str,
    extra: tuple[tuple[bytes, bytes], ...],
) -> None:
    body = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
    await _send(send, status, body, b"application/json;charset=utf-8", request_id, extra)


async def _send(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes,
    request_id: str,
    extra: tuple[tuple[bytes, bytes], ...],
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
                (b"x-acs-request-id", request_id.encode()),
                # A tenant's money: never kept by a shared cache on the way.
                (b"cache-control", b"no-store"),
                *extra,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})
