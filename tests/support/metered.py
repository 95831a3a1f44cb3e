"""A stand-in for the meter in tests of the proxy alone.

The proxy forwards nothing without the meter's ``MeteredCall`` in scope; tests
of its streaming and header handling (not of metering) wrap it in
``assume_metered``, which puts one there, read leniently from the raw request as
a V3 call (so the body streams through untouched). Never a production shape.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from metering_middleware.catalog import default_catalog
from metering_middleware.context import STATE_KEY, MeteredCall
from metering_middleware.errors import ApiError, error_body
from metering_middleware.identity import IdentityResolver, decode_headers, parse_params

__all__ = ["assume_metered", "identified"]


def _call(scope: Scope) -> MeteredCall:
    try:
        query = tuple(parse_params(scope.get("query_string", b"")))
    except ApiError:
        query = ()
    headers = decode_headers(scope.get("headers", []))
    action = headers.get("x-acs-action") or dict(query).get("Action") or "DetectFace"
    version = headers.get("x-acs-version") or "2019-12-30"
    return MeteredCall(
        "test", "test-key", "facebody", action, version, "test-record", "v3", query, False, query
    )


def assume_metered(app: ASGIApp) -> ASGIApp:
    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            state = dict(scope.get("state") or {})
            state[STATE_KEY] = _call(scope)
            scope = {**scope, "state": state}
        await app(scope, receive, send)

    return wrapped


def identified(app: ASGIApp) -> ASGIApp:
    """The meter's identification alone (no signature check, no ledger) in front of ``app``.

    For tests of what a proxy builds from a ``MeteredCall``: the call is read
    exactly as the meter reads it; a call the meter would refuse is refused.
    """
    resolver = IdentityResolver(default_catalog())

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        try:
            ident = resolver.resolve(
                scope["method"], scope["path"], scope["query_string"], scope["headers"], body
            )
        except ApiError as exc:
            text, ctype = error_body(exc.code, exc.message, "test")
            await send(
                {
                    "type": "http.response.start",
                    "status": exc.status,
                    "headers": [(b"content-type", ctype)],
                }
            )
            await send({"type": "http.response.body", "body": text})
            return
        call = MeteredCall(
            "test", ident.access_key_id, ident.category, ident.action, ident.version,
            "test-record", ident.style, ident.signed.params, False, ident.query, ident.form,
        )  # fmt: skip
        state = dict(scope.get("state") or {})
        state[STATE_KEY] = call
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await app({**scope, "state": state}, replay, send)

    return wrapped
