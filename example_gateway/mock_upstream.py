"""A mock VIAPI for the demo and the tests: answers like the real one, checks nothing.

What it answers is chosen by the image URL parameter (``ImageURL``,
``ImageUrl`` or ``Url``, in the query or a form body) containing one of these
words, or by an ``x-mock-outcome`` header naming one:

==============  ====================================================================
(none)          200, plausible DetectFace-like ``Data``, ``x-acs-request-id`` header
``noface``      404 ``InvalidImage.NotFoundFace`` (VIAPI's real status for it)
``noface400``   400 ``InvalidImage.NotFoundFace`` (as some proxies rewrite it)
``badurl``      400 ``InvalidParameter`` (also ``error``)
``servererror`` 500 ``InternalError``
``throttle``    400 ``Throttling.User``
``slow``        waits ``slow_seconds`` (or until the caller hangs up), then 200
``big``         a 2 MiB 200 body streamed in ``chunk_size`` chunks, with Content-Length
``bigchunked``  the same without Content-Length (sent chunked)
``noheaderid``  200 whose RequestId is only in the body
``garbage``     502 with a body no SDK can parse
==============  ====================================================================

Bodies are XML for V1 (RPC) calls without ``Format=JSON``, JSON otherwise.
They are gzip-encoded when the caller accepts gzip and the mock was built with
``compress=True`` or the request carries ``x-mock-gzip: 1``; ``x-mock-deflate:
1`` asks for deflate. ``x-mock-hop: 1`` adds hop-by-hop headers to the answer
(a proxy must strip them).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import uuid
import zlib
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

import anyio
from starlette.types import Message, Receive, Scope, Send

from metering_middleware.errors import error_body

__all__ = ["Gate", "MockRequest", "MockStats", "MockUpstream", "create_mock_upstream"]

#: Awaited before each chunk of a streamed body: tests use it to run in lockstep.
Gate = Callable[[], Awaitable[None]]

HOST_ID: Final = "facebody.cn-shanghai.aliyuncs.com"
BIG_SIZE: Final = 2 * 1024 * 1024
_URL_PARAMS: Final = ("ImageURL", "ImageUrl", "Url")
# Longest first: "noface400" contains "noface", "servererror" contains "error".
_OUTCOMES: Final = (
    "noface400",
    "noface",
    "servererror",
    "badurl",
    "error",
    "throttle",
    "slow",
    "bigchunked",
    "big",
    "noheaderid",
    "garbage",
)
_ERRORS: Final = {
    "noface": (404, "InvalidImage.NotFoundFace", "No face was found in the image."),
    "noface400": (400, "InvalidImage.NotFoundFace", "No face was found in the image."),
    "badurl": (400, "InvalidParameter", "The specified parameter ImageURL is not valid."),
    "error": (400, "InvalidParameter", "The specified parameter ImageURL is not valid."),
    "servererror": (500, "InternalError", "The request processing has failed."),
    "throttle": (400, "Throttling.User", "Request was denied due to user flow control."),
}
_GARBAGE: Final = b"<html><body>502 Bad Gateway\x00\xff\xfe\x80</body>"
_HOP_HEADERS: Final = (
    (b"connection", b"x-mock-secret"),
    (b"x-mock-secret", b"1"),
    (b"keep-alive", b"timeout=5"),
    (b"proxy-authenticate", b'Basic realm="mock"'),
    (b"trailer", b"x-mock-checksum"),
)


@dataclass(frozen=True, slots=True)
class MockRequest:
    """One request as the mock received it (header names lower-cased)."""

    method: str
    path: str
    query_string: str
    params: tuple[tuple[str, str], ...]  # query, then form body
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k == name), None)

    def param(self, name: str) -> str | None:
        return next((v for k, v in self.params if k == name), None)


@dataclass(slots=True)
class MockStats:
    requests: int = 0
    in_flight: int = 0
    #: Streamed bodies (``big``, ``bigchunked``) being sent right now.
    active_streams: int = 0
    chunks_sent: int = 0
    completed: int = 0
    #: Answers cut short because the caller closed the connection.
    aborted: int = 0
    #: The gateway's start-time warm-up requests (``x-metering-warmup``), not calls.
    warmups: int = 0
    recent: deque[MockRequest] = field(default_factory=lambda: deque(maxlen=64))


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    streamed: bool = False
    delay: float = 0.0


class MockUpstream:
    """The mock as an ASGI app; ``stats`` and ``wait_until`` are for tests."""

    def __init__(
        self,
        *,
        chunk_size: int = 64 * 1024,
        gate: Gate | None = None,
        compress: bool = False,
        slow_seconds: float = 10.0,
    ) -> None:
        self.chunk_size = chunk_size
        self.gate = gate
        self.compress = compress
        self.slow_seconds = slow_seconds
        self.stats = MockStats()
        self._waiters: list[tuple[Callable[[MockStats], bool], asyncio.Future[None]]] = []

    async def wait_until(self, predicate: Callable[[MockStats], bool]) -> None:
        """Return once ``predicate(stats)`` holds (checked whenever the stats change)."""
        if predicate(self.stats):
            return
        future = asyncio.get_running_loop().create_future()
        self._waiters.append((predicate, future))
        await future

    def _changed(self) -> None:
        still = []
        for predicate, future in self._waiters:
            if future.done():
                continue
            if predicate(self.stats):
                future.set_result(None)
            else:
                still.append((predicate, future))
        self._waiters = still

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        body = await _read_body(receive)
        if body is None:
            return  # the caller left before sending its body
        request = _parse_request(scope, body)
        stats = self.stats
        if request.header("x-metering-warmup") is not None:
            # A warm-up opens a connection; it is no call, and tests count calls.
            stats.warmups += 1
            self._changed()
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        stats.requests += 1
        stats.in_flight += 1
        stats.recent.append(request)
        self._changed()
        try:
            await self._respond(self._answer(request), receive, send)
        finally:
            stats.in_flight -= 1
            self._changed()

    def _answer(self, request: MockRequest) -> _Answer:
        outcome = _outcome(request)
        xml = _wants_xml(request)
        request_id = str(uuid.uuid4()).upper()
        if outcome == "garbage":
            headers = [(b"content-type", b"text/html"), (b"content-length", b"%d" % len(_GARBAGE))]
            return _Answer(502, headers, _GARBAGE)
        if outcome in _ERRORS:
            status, code, message = _ERRORS[outcome]
            body, ctype = error_body(code, message, request_id, xml=xml, host_id=HOST_ID)
        else:
            status = 200
            action = request.param("Action") or request.header("x-acs-action") or "DetectFace"
            pad = BIG_SIZE if outcome in ("big", "bigchunked") else 0
            body, ctype = _success(action, request_id, xml=xml, size=pad)
        headers = [(b"content-type", ctype)]
        if outcome != "noheaderid":
            headers.append((b"x-acs-request-id", request_id.encode()))
        coding = self._coding(request)
        if coding:
            body = gzip.compress(body, mtime=0) if coding == "gzip" else zlib.compress(body)
            headers.append((b"content-encoding", coding.encode()))
        if outcome != "bigchunked":
            headers.append((b"content-length", b"%d" % len(body)))
        if request.header("x-mock-hop") == "1":
            headers.extend(_HOP_HEADERS)
        streamed = outcome in ("big", "bigchunked")
        delay = self.slow_seconds if outcome == "slow" else 0.0
        return _Answer(status, headers, body, streamed=streamed, delay=delay)

    def _coding(self, request: MockRequest) -> str | None:
        accept = request.header("accept-encoding") or ""
        if (self.compress or request.header("x-mock-gzip") == "1") and _accepts(accept, "gzip"):
            return "gzip"
        if request.header("x-mock-deflate") == "1" and _accepts(accept, "deflate"):
            return "deflate"
        return None

    async def _respond(self, answer: _Answer, receive: Receive, send: Send) -> None:
        start: Message = {
            "type": "http.response.start",
            "status": answer.status,
            "headers": answer.headers,
        }
        if not answer.streamed and not answer.delay:
            await send(start)
            await send({"type": "http.response.body", "body": answer.body})
            self.stats.completed += 1
            return
        done = aborted = False
        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                # Also returns once the answer is complete: only count a hang-up before that.
                nonlocal aborted
                while (await receive())["type"] != "http.disconnect":
                    pass
                aborted = not done
                tg.cancel_scope.cancel()

            tg.start_soon(watch)
            if answer.delay:
                await anyio.sleep(answer.delay)
            await send(start)
            if answer.streamed:
                await self._stream(answer.body, send)
            done = True
            await send({"type": "http.response.body", "body": b""})
            tg.cancel_scope.cancel()
        if aborted:
            self.stats.aborted += 1
        else:
            self.stats.completed += 1

    async def _stream(self, body: bytes, send: Send) -> None:
        stats = self.stats
        stats.active_streams += 1
        self._changed()
        try:
            for offset in range(0, len(body), self.chunk_size):
                if self.gate is not None:
                    await self.gate()
                chunk = body[offset : offset + self.chunk_size]
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                stats.chunks_sent += 1
                self._changed()
        finally:
            stats.active_streams -= 1
            self._changed()


def create_mock_upstream(
    *,
    chunk_size: int = 64 * 1024,
    gate: Gate | None = None,
    compress: bool = False,
    slow_seconds: float = 10.0,
) -> MockUpstream:
    return MockUpstream(
        chunk_size=chunk_size, gate=gate, compress=compress, slow_seconds=slow_seconds
    )


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _read_body(receive: Receive) -> bytes | None:
    parts = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts)


def _parse_request(scope: Scope, body: bytes) -> MockRequest:
    headers = tuple((k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope["headers"])
    query = scope.get("query_string", b"").decode("ascii", "replace")
    params = parse_qsl(query, keep_blank_values=True)
    ctype = next((v for k, v in headers if k == "content-type"), "")
    if ctype.startswith("application/x-www-form-urlencoded"):
        params += parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
    return MockRequest(scope["method"], scope["path"], query, tuple(params), headers, body)


def _outcome(request: MockRequest) -> str:
    named = request.header("x-mock-outcome")
    if named:
        return named.strip().lower()
    url = next((v for k, v in request.params if k in _URL_PARAMS), "").lower()
    return next((word for word in _OUTCOMES if word in url), "ok")


def _wants_xml(request: MockRequest) -> bool:
    # V1 (RPC) calls default to XML; V3 calls (x-acs-* headers) always get JSON.
    if request.param("Signature") is None and request.param("AccessKeyId") is None:
        return False
    return (request.param("Format") or "XML").upper() != "JSON"


def _accepts(accept_encoding: str, coding: str) -> bool:
    for part in accept_encoding.split(","):
        token, _, params = part.partition(";")
        if token.strip().lower() not in (coding, "*"):
            continue
        q = params.strip().removeprefix("q=").strip()
        try:
            return not q or float(q) > 0
        except ValueError:
            return False
    return False


def _data(action: str) -> dict[str, Any]:
    if action == "RecognizeLicensePlate":
        roi = {"X": 102, "Y": 340, "W": 180, "H": 56}
        plate = {"PlateNumber": "沪A12345", "PlateType": "蓝牌", "Confidence": 0.998, "Roi": roi}
        return {"Plates": [plate]}
    return {
        "FaceCount": 1,
        "LandmarkCount": 105,
        "FaceRectangles": [120, 80, 200, 240],
        "FaceProbabilityList": [0.998],
        "PoseList": [-3.2, 4.1, 1.0],
        "Pupils": [170.5, 150.2, 3.1, 230.7, 151.0, 3.0],
        "Qualities": {"ScoreList": [98.5], "BlurList": [1.2], "NoiseList": [2.3]},
    }


def _success(action: str, request_id: str, *, xml: bool, size: int) -> tuple[bytes, bytes]:
    """A success document; with ``size``, padded to exactly that many bytes."""
    data = _data(action)
    if not size:
        return _render(action, request_id, data, xml=xml)
    data["Padding"] = ""
    body, _ = _render(action, request_id, data, xml=xml)
    # ASCII padding: one more character is one more byte in both formats.
    data["Padding"] = "x" * (size - len(body))
    return _render(action, request_id, data, xml=xml)


def _render(
    action: str, request_id: str, data: dict[str, Any], *, xml: bool
) -> tuple[bytes, bytes]:
    if xml:
        inner = _xml("RequestId", request_id) + _xml("Data", data)
        head = f'<?xml version="1.0" encoding="UTF-8"?><{action}Response>'
        return f"{head}{inner}</{action}Response>".encode(), b"text/xml;charset=utf-8"
    doc = {"RequestId": request_id, "Data": data}
    return json.dumps(doc, ensure_ascii=False).encode(), b"application/json;charset=utf-8"


def _xml(name: str, value: object) -> str:
    if isinstance(value, dict):
        return f"<{name}>{''.join(_xml(k, v) for k, v in value.items())}</{name}>"
    if isinstance(value, list):
        return "".join(_xml(name, item) for item in value)
    return f"<{name}>{escape(str(value))}</{name}>"
