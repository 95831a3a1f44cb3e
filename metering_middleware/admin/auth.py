"""The admin API's guard: ``Authorization: Bearer <token>`` on every route.

The check runs twice, on purpose. :class:`BearerGuard`, a pure ASGI middleware around the
whole app, refuses before anything else happens: FastAPI reads and parses a request's body
before it runs a route's dependencies, so without it a caller with no token could make the
app parse JSON and learn from a 400 which routes exist. The app-wide FastAPI dependency
then guards every route again (a route added later cannot miss it) and declares the
``bearer`` security scheme in the OpenAPI document. Tokens are compared by
:meth:`AdminTokens.bearer` (constant time, every configured token compared). A refusal
is 401 with ``WWW-Authenticate: Bearer`` and an Alibaba-style body: ``MissingToken`` (no
header), ``InvalidToken`` (anything else: wrong, rotated out, another scheme); the
presented token is never echoed.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import error_body
from .errors import REQUEST_ID_HEADER, AdminError
from .tokens import AdminTokens

__all__ = ["BEARER_SCHEME", "BearerGuard", "require_token", "token_refusal"]

#: The OpenAPI security scheme (``auto_error=False``: the refusals are ours, not FastAPI's).
BEARER_SCHEME = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="An admin token from GATEWAY_ADMIN_TOKENS or the [admin] tokens_file.",
)

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="metering-admin"'}


def token_refusal(tokens: AdminTokens, authorization: str | None) -> AdminError | None:
    """The 401 for an ``Authorization`` header value, or None when it carries a token."""
    if authorization is None or not authorization.strip():
        return AdminError(
            401,
            "MissingToken",
            "this API needs an admin token: Authorization: Bearer <token>",
            recommend="send the header with a token the gateway is configured with",
            headers=_CHALLENGE,
        )
    if not tokens.bearer(authorization):
        return AdminError(
            401,
            "InvalidToken",
            "the Authorization header does not carry a valid admin token",
            recommend="use 'Bearer <token>' with a token configured now (rotated-out "
            "tokens are refused)",
            headers=_CHALLENGE,
        )
    return None


def require_token(tokens: AdminTokens) -> Callable[..., Awaitable[None]]:
    """The app-wide dependency for ``tokens``."""

    async def check(
        request: Request,
        _declared: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER_SCHEME)],
    ) -> None:
        # The raw header is checked (not FastAPI's parse of it): one rule, AdminTokens'.
        refusal = token_refusal(tokens, request.headers.get("authorization"))
        if refusal is not None:
            raise refusal

    return check


class BearerGuard:
    """Refuse every HTTP request and WebSocket without a valid token, before routing.

    ``exempt`` is a path prefix the guard leaves alone (the billing page at ``/ui``,
    which signs a browser in with a token once and guards itself with a session cookie).
    Paths are taken below the app's ``root_path``, so the guard works mounted too."""

    def __init__(
        self, app: ASGIApp, *, tokens: AdminTokens, exempt: str | None, host_id: str
    ) -> None:
        self.app = app
        self._tokens = tokens
        self._exempt = exempt
        self._host_id = host_id

    def _exempted(self, scope: Scope) -> bool:
        if self._exempt is None:
            return False
        path: str = scope.get("path", "")
        root: str = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        return path == self._exempt or path.startswith(self._exempt + "/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self._exempted(scope):
            await self.app(scope, receive, send)
            return
        refusal = token_refusal(self._tokens, Headers(scope=scope).get("authorization"))
        if refusal is None:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        rid = str(uuid.uuid4()).upper()
        body, content_type = error_body(
            refusal.code, refusal.message, rid, host_id=self._host_id, recommend=refusal.recommend
        )
        headers = [
            (b"content-type", content_type),
            (b"content-length", str(len(body)).encode()),
            (REQUEST_ID_HEADER.encode(), rid.encode()),
            *((k.lower().encode(), v.encode()) for k, v in (refusal.headers or {}).items()),
        ]
        # The body is never read: a refused caller cannot make the app parse anything.
        await send({"type": "http.response.start", "status": 401, "headers": headers})
        await send({"type": "http.response.body", "body": body})
