"""A streaming reverse proxy to VIAPI: Starlette, one shared httpx client.

It forwards only what the meter admitted: a request without the meter's
``MeteredCall`` in ``scope["state"]["metering"]`` (a proxy mounted without
``MeteringMiddleware``) is refused with 500 ``InternalError`` and logged, never
forwarded. It forwards only what VIAPI serves: RPC calls (V1 and V3 alike) at
``/``, by GET or POST; any other path, however encoded, is a 404 ``NotFound``
made here, any other method a 405 ``UnsupportedHTTPMethod``. The upstream's
path is always the configured base path plus ``/``, never the caller's text.

What is forwarded is built from that ``MeteredCall``: the query (and a V1
form) re-encoded from the parameters the meter read, ``x-acs-action`` and
``x-acs-version`` the verified ones, so no second parser's reading of the raw
text reaches the upstream. Both signatures cover decoded values, so a client's
signature still holds over the rebuilt request; with re-signing the operator's
V3 signature covers exactly it.

Bodies are streamed both ways and never buffered (except when re-signing,
which needs the whole body, and V1 forms, rebuilt from what the meter already
read): a V3 caller's request body flows to the upstream as it arrives, the
upstream's answer flows back byte for byte: gzip stays gzip, Content-Length
stays, so the metering middleware wrapped around this app sees exactly what
the caller sees.

Failures answer the way VIAPI would, so SDKs surface a precise ``Code``:
upstream timeouts are 504 ``GatewayTimeout``, unreachable or broken upstreams
502 ``BadGateway``.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from typing import Final, Protocol
from urllib.parse import quote_from_bytes, unquote

import httpx
from starlette.applications import Starlette
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from metering_middleware.clock import Clock
from metering_middleware.context import MeteredCall, metered_call
from metering_middleware.errors import BODY_TOO_LARGE, error_body
from metering_middleware.identity import wants_xml
from metering_middleware.signing import percent_encode

from .transport import DEFAULT_TRANSPORT, TransportKind, make_client

__all__ = [
    "HOP_BY_HOP_HEADERS",
    "WARMUP_HEADER",
    "Resigner",
    "V3Resigner",
    "create_proxy_app",
    "strip_hop_by_hop",
]

logger = logging.getLogger("example_gateway.proxy")

#: Marks the start's warm-up requests (``GET`` of the upstream's base path, unsigned:
#: no action, nothing an upstream can bill; VIAPI answers it with an error). The mock
#: counts them apart from calls. (``GET``, not ``HEAD``: aiohttp drops a connection whose
#: ``HEAD`` answer came chunked, so a ``HEAD`` warm-up could open nothing reusable.)
WARMUP_HEADER: Final = "x-metering-warmup"

Headers = list[tuple[bytes, bytes]]

#: RFC 9110 §7.6.1 connection-specific fields (plus RFC 2616's "Trailers"
#: spelling): they describe one hop, never the end-to-end message.
HOP_BY_HOP_HEADERS: Final = frozenset({
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te",
    b"trailer", b"trailers", b"transfer-encoding", b"upgrade",
})  # fmt: skip

#: The caller's own credentials and V1 signature; the resigner replaces them.
_V1_SIGNATURE_PARAMS: Final = frozenset({
    "AccessKeyId", "SecurityToken", "Signature", "SignatureMethod", "SignatureNonce",
    "SignatureType", "SignatureVersion", "Timestamp",
})  # fmt: skip
_V3_SIGNATURE_HEADERS: Final = frozenset(
    {"authorization", "x-acs-security-token", "x-acs-bearer-token"}
)
_FORM: Final = "application/x-www-form-urlencoded"
#: VIAPI's RPC calls, V1 and V3 alike, are made at "/" (both official SDKs' pathname).
_VIAPI_PATH: Final = "/"
_VIAPI_METHODS: Final = frozenset({"GET", "POST"})
# Everything printable in a request target except "%"-escapes' own trigger, kept as is.
_URL_SAFE: Final = "/?#[]@!$&'()*+,;=:-._~%"
#: Answers up to this size (with Content-Length) skip the disconnect watcher.
_SMALL_BODY: Final = 64 * 1024
# The serving ASGI server sets its own (as nginx hides the upstream's by default).
_UPSTREAM_ONLY: Final = (b"date", b"server")


class Resigner(Protocol):
    """Re-signs a forwarded call with the operator's own credentials.

    Gets the call as it will be sent upstream (the caller's signature already
    stripped, ``host`` already the upstream's, header names lower-cased) and
    returns the headers to add or replace.
    """

    async def __call__(
        self,
        method: str,
        path: str,
        query: Sequence[tuple[str, str]],
        headers: dict[str, str],
        body: bytes,
    ) -> dict[str, str]: ...


class V3Resigner:
    """Signs forwarded calls with ACS3-HMAC-SHA256 (``metering_middleware.signing.sign_v3``).

    It signs what it is given: the proxy has already built the call from the
    meter's ``MeteredCall`` (``x-acs-action``/``x-acs-version`` included), so
    nothing here reads the request for its meaning a second time.
    """

    __slots__ = ("_access_key_id", "_clock", "_secret")

    def __init__(self, access_key_id: str, secret: str, clock: Clock) -> None:
        self._access_key_id = access_key_id
        self._secret = secret
        self._clock = clock

    def __repr__(self) -> str:
        return f"V3Resigner(access_key_id={self._access_key_id!r}, secret=***)"

    async def __call__(
        self,
        method: str,
        path: str,
        query: Sequence[tuple[str, str]],
        headers: dict[str, str],
        body: bytes,
    ) -> dict[str, str]:
        # Imported here so the proxy works (and imports) without the signer.
        from metering_middleware.signing import sign_v3

        return sign_v3(
            method,
            path,
            tuple(query),
            headers,
            body,
            self._access_key_id,
            self._secret,
            now=self._clock.now(),
            nonce=uuid.uuid4().hex,
        )


def create_proxy_app(
    upstream_url: str,
    *,
    client: httpx.AsyncClient | None = None,
    timeout: float = 30.0,
    connect_timeout: float = 5.0,
    max_connections: int = 64,
    transport: TransportKind = DEFAULT_TRANSPORT,
    resign: Resigner | None = None,
    max_resign_body: int = 8 * 1024 * 1024,
    lifespan: Callable[[Starlette], AbstractAsyncContextManager[None]] | None = None,
    warm_connections: int = 0,
) -> Starlette:
    """A Starlette app forwarding metered VIAPI calls to ``upstream_url``.

    Mount it inside ``MeteringMiddleware``; a gateway's own routes (health,
    metrics) live beside the metered app, not in here. One client serves all
    requests: created in the app's lifespan (closed at shutdown) unless
    ``client`` is injected (the caller then owns it). ``lifespan`` runs inside
    the proxy's own (after the client exists). A gateway that mounts this app
    runs ``app.router.lifespan_context(app)`` itself (Starlette runs no lifespan
    of a mounted app). ``app.state.http_client`` is the client while it runs.

    ``warm_connections`` keep-alive connections are opened at start, before the app
    takes its first call: without them the first calls after a start pay for the
    transport's lazy set-up, DNS, TCP and TLS (100-500 ms were seen), and that burst of
    latency let calls admitted at exactly N a second reach the upstream bunched.
    """
    if isinstance(warm_connections, bool) or warm_connections < 0:
        raise ValueError("warm_connections must be 0 (off) or a positive number")
    proxy = _Proxy(
        httpx.URL(upstream_url),
        httpx.Timeout(timeout, connect=connect_timeout),
        resign,
        max_resign_body,
    )
    limits = httpx.Limits(
        max_connections=max_connections, max_keepalive_connections=max_connections
    )

    @asynccontextmanager
    async def run(app: Starlette) -> AsyncIterator[None]:
        http = client or make_client(transport, limits, proxy.timeout)
        proxy.client = app.state.http_client = http
        if warm_connections:
            await proxy.warm(http, min(warm_connections, max_connections))
        try:
            async with lifespan(app) if lifespan is not None else nullcontext():
                yield
        finally:
            proxy.client = None
            if client is None:
                await http.aclose()

    # Every path and method reaches ``_Proxy``, which alone decides what is forwarded.
    return Starlette(routes=[Route("/{path:path}", proxy)], lifespan=run)


def strip_hop_by_hop(headers: Iterable[tuple[bytes, bytes]]) -> Headers:
    """Lower-cased headers without the hop-by-hop ones (and those ``Connection`` names)."""
    pairs = [(name.lower(), value) for name, value in headers]
    drop: set[bytes] | frozenset[bytes] = HOP_BY_HOP_HEADERS
    for name, value in pairs:
        if name == b"connection":
            listed = {token.strip().lower() for token in value.split(b",")}
            drop = drop | listed
    return [(name, value) for name, value in pairs if name not in drop]


class _ClientGone(Exception):
    """The caller hung up while its request body was being forwarded."""


class _BodyTooLarge(Exception):
    pass


class _Proxy:
    """The catch-all ASGI endpoint (a class, so Starlette routes every method to it)."""

    __slots__ = (
        "_base_path",
        "_host",
        "_max_body",
        "_origin",
        "_resign",
        "_timeouts",
        "client",
        "timeout",
    )

    def __init__(
        self,
        upstream: httpx.URL,
        timeout: httpx.Timeout,
        resign: Resigner | None,
        max_body: int,
    ) -> None:
        self._origin = f"{upstream.scheme}://{upstream.netloc.decode('ascii')}"
        self._base_path = upstream.raw_path.split(b"?", 1)[0].rstrip(b"/")
        self._host = upstream.netloc
        self._resign = resign
        self._max_body = max_body
        self.timeout = timeout
        self._timeouts = timeout.as_dict()  # what transports read from each request
        self.client: httpx.AsyncClient | None = None

    async def warm(self, client: httpx.AsyncClient, connections: int) -> int:
        """Open ``connections`` keep-alive connections to the upstream at once (each
        request holds its own until answered, then returns it to the pool). Never fails
        the start: an upstream down now is the calls' 502/504 later, as without warm-up.
        Returns how many answered."""
        target = self._origin + _ascii(self._base_path + b"/")
        # Bounded by the connect timeout: a black-holed upstream delays the start by that
        # much at most, never by the calls' (longer) read timeout.
        timeout = httpx.Timeout(self.timeout.connect)

        async def one() -> bool:
            try:
                response = await client.request(
                    "GET", target, headers={WARMUP_HEADER: "1"}, timeout=timeout
                )
            except httpx.HTTPError as exc:
                logger.warning("upstream warm-up: %s: %s", type(exc).__name__, exc)
                return False
            # ``request`` has read the answer: the connection is back in the pool.
            return response.status_code > 0

        answered = sum(await asyncio.gather(*(one() for _ in range(connections))))
        logger.info("upstream warm-up: %d of %d connections open", answered, connections)
        return answered

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = self.client
        if client is None:
            raise RuntimeError("the proxy's client is not running: serve the app with lifespan on")
        query: bytes = scope.get("query_string", b"")
        call = metered_call(scope)
        if call is None:
            # Mounted without the meter (or beside it): forwarding would be unmetered.
            logger.error(
                "refused %s %s: no MeteredCall in scope; mount the proxy inside MeteringMiddleware",
                scope["method"],
                scope["path"][:64],
            )
            await _error(scope, receive, send, query, 500, "InternalError", _UNMETERED)
            return
        raw_path = scope.get("raw_path")
        if scope["path"] != _VIAPI_PATH or (raw_path is not None and raw_path != b"/"):
            await _error(scope, receive, send, query, 404, "NotFound", _NOT_VIAPI)
            return
        if scope["method"] not in _VIAPI_METHODS:
            await _error(scope, receive, send, query, 405, "UnsupportedHTTPMethod", _BAD_METHOD)
            return
        headers = self._forward_headers(scope)
        body_state = _BodyState()
        content: bytes | AsyncIterator[bytes] = b""
        try:
            if self._resign is not None:
                query, headers, content = await self._resigned(scope, receive, call, headers)
            else:
                # The query (and a V1 form) as the meter read them: still what the
                # client signed (both signatures cover decoded values), with no
                # second parser's reading of the raw text left to the upstream.
                query = _encode(call.query).encode()
                if call.style == "v1":
                    content = _encode(call.form).encode() if call.form else b""
                    headers = _with_length(headers, content)
                elif _has_body(scope):
                    content = _request_body(receive, body_state)
        except _BodyTooLarge:
            await self._refuse(scope, receive, send, query)
            return
        except _ClientGone:
            return
        # A string URL parses in half the time of ``URL.copy_with`` (~30 µs a request).
        target = self._origin + _ascii(self._base_path + b"/")
        if query:
            target += "?" + _ascii(query)
        request = httpx.Request(
            scope["method"],
            target,
            headers=headers,
            content=content,
            extensions={"timeout": self._timeouts},
        )
        try:
            upstream = await client.send(request, stream=True)
        except (httpx.TransportError, _ClientGone) as exc:
            if body_state.gone or isinstance(exc, _ClientGone):
                return  # nobody left to answer
            await self._upstream_failed(exc, scope, receive, send, query)
            return
        headers = [
            (name, value)
            for name, value in strip_hop_by_hop(upstream.headers.raw)
            if name not in _UPSTREAM_ONLY
        ]
        try:
            if _is_small(headers):
                # Nearly every VIAPI answer: relayed without a disconnect watcher, whose
                # task group would cost ~40% of this app's CPU per request. A caller who
                # hangs up meanwhile holds the upstream at most one read timeout.
                start = {"type": "http.response.start", "status": upstream.status_code}
                await send({**start, "headers": headers})
                async for chunk in _relay(upstream):
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b""})
            else:
                # Large or open-ended: Starlette watches for the caller hanging up and
                # cancels the relay; closing the upstream answer below then drops its
                # connection instead of draining it.
                response = StreamingResponse(_relay(upstream), status_code=upstream.status_code)
                response.raw_headers = headers
                await response(scope, receive, send)
        finally:
            await upstream.aclose()

    def _forward_headers(self, scope: Scope) -> Headers:
        headers = strip_hop_by_hop(scope["headers"])
        original_host = b""
        forwarded_for = b""
        kept: Headers = [(b"host", self._host)]
        for name, value in headers:
            if name == b"host":
                original_host = value
            elif name == b"x-forwarded-for":
                forwarded_for = value
            elif name not in (b"x-forwarded-host", b"x-forwarded-proto"):
                kept.append((name, value))
        client_addr = scope.get("client")
        if client_addr:
            peer = str(client_addr[0]).encode()
            # A server that trusts its peer's X-Forwarded-For (uvicorn's proxy_headers)
            # already reports the chain's last address as the client: not twice.
            if not forwarded_for:
                forwarded_for = peer
            elif forwarded_for.rsplit(b",", 1)[-1].strip() != peer:
                forwarded_for += b", " + peer
        if forwarded_for:
            kept.append((b"x-forwarded-for", forwarded_for))
        if original_host:
            kept.append((b"x-forwarded-host", original_host))
        kept.append((b"x-forwarded-proto", str(scope.get("scheme", "http")).encode()))
        return kept

    async def _resigned(
        self, scope: Scope, receive: Receive, call: MeteredCall, headers: Headers
    ) -> tuple[bytes, Headers, bytes]:
        """The call as the meter verified it, signed with the operator's key.

        Query, form, action and version come from ``call``, never from a second
        reading of the request: the upstream runs exactly what was billed. A V3
        body is forwarded as the client signed it (its hash was verified, its
        form read by the meter); a V1 body is rebuilt from the form the meter read.
        """
        assert self._resign is not None
        body = await _read_body(receive, self._max_body) if _has_body(scope) else b""
        query_pairs = [(k, v) for k, v in call.query if k not in _V1_SIGNATURE_PARAMS]
        fields = {name.decode("latin-1"): value.decode("latin-1") for name, value in headers}
        for name in _V3_SIGNATURE_HEADERS:
            fields.pop(name, None)
        if call.style == "v1":
            # Nothing the V1 signature left open survives: headers naming a call
            # are set below, the body is the form that was read, or nothing.
            for name in [n for n in fields if n.startswith("x-acs-") or n == "content-type"]:
                del fields[name]
            form = [(k, v) for k, v in call.form if k not in _V1_SIGNATURE_PARAMS]
            body = _encode(form).encode() if form else b""
            if form:
                fields["content-type"] = _FORM
        fields["x-acs-action"] = call.action
        fields["x-acs-version"] = call.version
        fields.pop("content-length", None)
        if body:
            fields["content-length"] = str(len(body))
        # Signers canonicalise the decoded path (what ASGI calls ``scope["path"]``).
        path = unquote(self._base_path.decode("latin-1")) + _VIAPI_PATH
        replaced = await self._resign(scope["method"], path, tuple(query_pairs), fields, body)
        fields.update({name.lower(): value for name, value in replaced.items()})
        encoded = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in fields.items()]
        return _encode(query_pairs).encode(), encoded, body

    async def _upstream_failed(
        self, exc: Exception, scope: Scope, receive: Receive, send: Send, query: bytes
    ) -> None:
        upstream = self._host.decode("latin-1")
        if isinstance(exc, httpx.TimeoutException):
            logger.warning("upstream %s timed out (%s)", upstream, type(exc).__name__)
            status, code, message = 504, "GatewayTimeout", "The upstream service timed out."
        else:
            logger.warning("upstream %s failed: %s: %s", upstream, type(exc).__name__, exc)
            status, code, message = 502, "BadGateway", "The upstream service is unreachable."
        await _error(scope, receive, send, query, status, code, message)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, query: bytes) -> None:
        message = f"The request body exceeds {self._max_body} bytes."
        await _error(
            scope, receive, send, query, BODY_TOO_LARGE.status, BODY_TOO_LARGE.code, message
        )


class _BodyState:
    __slots__ = ("gone",)

    def __init__(self) -> None:
        self.gone = False


def _with_length(headers: Headers, body: bytes) -> Headers:
    kept = [(k, v) for k, v in headers if k not in (b"content-length", b"transfer-encoding")]
    if body:
        kept.append((b"content-length", b"%d" % len(body)))
    return kept


def _is_small(headers: Headers) -> bool:
    for name, value in headers:
        if name == b"content-length":
            return value.isdigit() and int(value) <= _SMALL_BODY
    return False


def _has_body(scope: Scope) -> bool:
    # Without either header an HTTP/1.1 request has no body (RFC 9112 §6.3):
    # streaming an empty one would send GETs upstream chunked.
    for name, value in scope["headers"]:
        name = name.lower()
        if name == b"transfer-encoding":
            return True
        if name == b"content-length":
            return bool(value.strip() != b"0")
    return False


async def _request_body(receive: Receive, state: _BodyState) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            state.gone = True
            raise _ClientGone
        chunk: bytes = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


async def _read_body(receive: Receive, limit: int) -> bytes:
    parts: list[bytes] = []
    size = 0
    async for chunk in _request_body(receive, _BodyState()):
        size += len(chunk)
        if size > limit:
            raise _BodyTooLarge
        parts.append(chunk)
    return b"".join(parts)


async def _relay(upstream: httpx.Response) -> AsyncIterator[bytes]:
    try:
        async for chunk in upstream.aiter_raw():
            yield chunk
    except httpx.TransportError as exc:
        # Headers are gone already: the only honest signal left is to abort the
        # response (the server drops the connection), never to end it short.
        logger.warning("upstream body broke off: %s: %s", type(exc).__name__, exc)
        raise


def _ascii(raw: bytes) -> str:
    # Request targets are ASCII in practice; stray raw bytes get percent-encoded
    # as they are rather than re-encoded through some guessed charset.
    return raw.decode("ascii") if raw.isascii() else quote_from_bytes(raw, safe=_URL_SAFE)


def _encode(pairs: Sequence[tuple[str, str]]) -> str:
    # RFC 3986 as the signers encode: the upstream decodes exactly the values read.
    pe = percent_encode
    return "&".join([f"{pe(k)}={pe(v)}" for k, v in pairs])


_UNMETERED: Final = "The gateway is misconfigured: this call was not metered, so it is not sent."
_NOT_VIAPI: Final = "VIAPI serves its calls at /: nothing else is forwarded."
_BAD_METHOD: Final = "VIAPI calls are made with GET or POST."


async def _error(
    scope: Scope, receive: Receive, send: Send, query: bytes, status: int, code: str, message: str
) -> None:
    request_id = str(uuid.uuid4()).upper()
    # The meter's own rule, so the gateway's refusals and the proxy's failures agree
    # (only the query is read: a streamed form body is gone by now).
    xml = wants_xml(query, scope["headers"])
    body, content_type = error_body(code, message, request_id, xml=xml)
    response = Response(body, status_code=status)
    response.raw_headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        (b"x-acs-request-id", request_id.encode()),
    ]
    await response(scope, receive, send)
