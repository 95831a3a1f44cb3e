"""The page's browser-side defences: response headers and the same-origin check of posts.

Every response of the billing page carries a Content-Security-Policy that allows no
script at all, no network asset, styles only by the hash of the one inline stylesheet,
images only from the page itself or ``data:`` (the favicon), forms posting only to the
page's own origin, and no framing (clickjacking). The SVG chart is markup, not script.

``Referrer-Policy`` is ``same-origin`` rather than ``no-referrer``: under ``no-referrer``
a browser sends ``Origin: null`` on the page's *own* form posts (Fetch, "append a request
Origin header"), which would leave the Origin check below nothing to compare. With
``same-origin`` no URL (account names are in them) ever leaves for another origin either.
"""

from __future__ import annotations

import base64
import hashlib
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["SecurityHeaders", "same_origin", "style_hash"]


def style_hash(css: str) -> str:
    """The CSP source expression allowing exactly one inline stylesheet."""
    digest = hashlib.sha256(css.encode()).digest()
    return f"'sha256-{base64.b64encode(digest).decode()}'"


def _policy(style_source: str) -> str:
    return "; ".join(
        (
            "default-src 'none'",
            f"style-src {style_source}",
            "img-src 'self' data:",
            "form-action 'self'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
        )
    )


class SecurityHeaders:
    """Pure ASGI: adds the page's security headers to every HTTP response of ``app``."""

    def __init__(self, app: ASGIApp, *, style_source: str) -> None:
        self.app = app
        self._headers = [
            (b"content-security-policy", _policy(style_source).encode()),
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"same-origin"),
            (b"x-frame-options", b"DENY"),
            # Billing data must not be kept by a shared cache or the browser's history cache.
            (b"cache-control", b"no-store"),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name for name, _ in self._headers}
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
                message = {**message, "headers": [*kept, *self._headers]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _own_origin(scope: Scope) -> str | None:
    host = Headers(scope=scope).get("host")
    if not host:
        return None
    return f"{scope.get('scheme', 'http')}://{host}".lower()


def same_origin(scope: Scope) -> bool:
    """False when the request says it comes from another origin: an ``Origin`` header
    (``null`` included) other than the page's own, or else a ``Referer`` from elsewhere.
    A request with neither passes here; the CSRF token is what it must still carry."""
    headers = Headers(scope=scope)
    own = _own_origin(scope)
    origin = headers.get("origin")
    if origin is not None:
        return own is not None and origin.strip().lower() == own
    referer = headers.get("referer")
    if referer is not None:
        parts = urlsplit(referer.strip())
        return own is not None and f"{parts.scheme}://{parts.netloc}".lower() == own
    return True
