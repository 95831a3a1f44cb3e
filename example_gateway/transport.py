"""The upstream HTTP client: httpx's API over either httpx's own pool or aiohttp.

The performance notes measured httpx's connection pool at ~1.3 ms of CPU per
proxied request; ``httpx-aiohttp`` keeps the httpx API on aiohttp's much
cheaper pool (bench/TRANSPORT.md has this machine's numbers). Both clients are
built here so the proxy never depends on which one it got:

- no default headers: the proxy forwards the caller's headers and nothing else
  (a default ``Accept-Encoding: gzip`` would get compressed bodies sent to
  callers that never asked for them);
- no cookie jar: one client serves every caller, so a ``Set-Cookie`` from one
  answer must never ride along on someone else's request;
- errors arrive as httpx's own exception types on both transports (see
  ``_AiohttpErrors``): timeouts as ``httpx.TimeoutException``, everything else
  as another ``httpx.TransportError``.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Final, Literal, get_args

import aiohttp
import httpx

__all__ = ["DEFAULT_TRANSPORT", "TransportKind", "make_client"]

TransportKind = Literal["aiohttp", "httpx"]

#: The faster of the two on the bench (bench/TRANSPORT.md).
DEFAULT_TRANSPORT: Final[TransportKind] = "aiohttp"

# aiohttp adds these unless told not to; the proxy sends exactly the caller's.
_AIOHTTP_AUTO_HEADERS: Final = ("Accept", "Accept-Encoding", "User-Agent")


def make_client(
    kind: TransportKind,
    limits: httpx.Limits,
    timeout: httpx.Timeout,
    *,
    trust_env: bool = False,
) -> httpx.AsyncClient:
    """A client for the proxy: bounded pool, no redirects, no cookies, no default headers.

    ``trust_env`` stays off by default so proxy variables in the environment
    never silently reroute the gateway's traffic.
    """
    if kind not in get_args(TransportKind):
        raise ValueError(f"unknown transport {kind!r}: choose one of {get_args(TransportKind)}")
    transport: httpx.AsyncBaseTransport | None = None
    if kind == "aiohttp":
        transport = _AiohttpErrors(_aiohttp_transport(limits, trust_env))
    client = httpx.AsyncClient(
        limits=limits,
        timeout=timeout,
        transport=transport,
        follow_redirects=False,
        trust_env=trust_env,
        cookies=_no_cookies(),
    )
    # The proxy builds its requests without ``build_request`` (so these would not
    # apply anyway); clearing them keeps any other use of the client honest too.
    client.headers.clear()
    return client


def _no_cookies() -> CookieJar:
    # An empty allow-list refuses every domain: Set-Cookie answers are never stored.
    # (A jar, not ``httpx.Cookies``: the client copies the latter into a default jar.)
    return CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))


def _aiohttp_transport(limits: httpx.Limits, trust_env: bool) -> httpx.AsyncBaseTransport:
    from httpx_aiohttp import AiohttpTransport

    inner = AiohttpTransport(limits=limits, trust_env=trust_env)
    ssl_context: ssl.SSLContext = inner.ssl_context

    # A factory, not a session: aiohttp sessions must be created inside the running
    # loop, and the transport calls this lazily on its first request.
    def session() -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=limits.max_connections or 0,
            keepalive_timeout=limits.keepalive_expiry or 0,
            ssl=ssl_context,
        )
        return aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=_AIOHTTP_AUTO_HEADERS,
            auto_decompress=False,
            trust_env=trust_env,
        )

    inner.client = session
    transport: httpx.AsyncBaseTransport = inner
    return transport


class _AiohttpErrors(httpx.AsyncBaseTransport):
    """Give aiohttp's failures the httpx exception types they deserve.

    httpx-aiohttp maps every ``aiohttp.ClientConnectionError`` (refused
    connections, dropped connections) to ``httpx.ConnectTimeout`` and lets some
    aiohttp errors through unmapped; the proxy answers timeouts with 504 and
    other failures with 502, so the type has to be right.
    """

    __slots__ = ("_inner",)

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = await self._inner.handle_async_request(request)
        except (httpx.TransportError, aiohttp.ClientError, TimeoutError) as exc:
            mapped = _remap(exc, request)
            if mapped is exc:
                raise
            raise mapped from exc
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _RemappedStream(response.stream, request)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


class _RemappedStream(httpx.AsyncByteStream):
    __slots__ = ("_inner", "_request")

    def __init__(self, inner: httpx.AsyncByteStream, request: httpx.Request) -> None:
        self._inner = inner
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._inner:
                yield chunk
        except (httpx.TransportError, aiohttp.ClientError, TimeoutError) as exc:
            mapped = _remap(exc, self._request)
            if mapped is exc:
                raise
            raise mapped from exc

    async def aclose(self) -> None:
        await self._inner.aclose()


def _remap(exc: Exception, request: httpx.Request) -> httpx.TransportError:
    # httpx-aiohttp keeps the aiohttp exception as the cause of the one it raises.
    cause: BaseException = exc
    if isinstance(exc, httpx.TransportError) and exc.__cause__ is not None:
        cause = exc.__cause__
    message = str(cause) or type(cause).__name__
    mapped: type[httpx.TransportError]
    if isinstance(cause, aiohttp.ConnectionTimeoutError):
        mapped = httpx.ConnectTimeout
    elif isinstance(cause, TimeoutError):  # aiohttp's read timeouts subclass it too
        mapped = httpx.ReadTimeout
    elif isinstance(cause, aiohttp.ClientConnectorError):
        mapped = httpx.ConnectError
    elif isinstance(cause, aiohttp.ServerDisconnectedError | aiohttp.ClientResponseError):
        mapped = httpx.RemoteProtocolError
    elif isinstance(cause, aiohttp.ClientPayloadError | aiohttp.ClientConnectionError):
        mapped = httpx.ReadError
    elif isinstance(exc, httpx.TransportError):
        return exc
    else:
        mapped = httpx.RemoteProtocolError
    return mapped(message, request=request)
