"""The admin API's guard: ``Authorization: Bearer <token>`` on every route.

The check is an app-wide FastAPI dependency, so a route cannot be added without it (the
OpenAPI document is served by such a route too), and it is declared as the document's
``bearer`` security scheme. Tokens are compared by :meth:`AdminTokens.bearer` (constant
time, every configured token compared). A refusal is 401 with ``WWW-Authenticate:
Bearer`` and an Alibaba-style body: ``MissingToken`` (no header), ``InvalidToken``
(anything else: wrong, rotated out, another scheme); the presented token is never echoed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .errors import AdminError
from .tokens import AdminTokens

__all__ = ["BEARER_SCHEME", "require_token", "token_refusal"]

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
