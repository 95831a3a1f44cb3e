"""Signatures made by the official SDKs (not by our signer) verify; a wrong secret fails.

A tiny threaded HTTP server on 127.0.0.1 captures each raw request; the
``SignedCall`` is built from the capture as the middleware would build it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, unquote, urlsplit

import pytest
from alibabacloud_facebody20191230.client import Client as FacebodyClient
from alibabacloud_facebody20191230.models import DetectFaceRequest
from alibabacloud_tea_openapi.models import Config
from alibabacloud_tea_util.models import RuntimeOptions
from aliyunsdkcore.client import AcsClient
from aliyunsdkcore.request import CommonRequest

from metering_middleware.clock import ManualClock
from metering_middleware.errors import ApiError
from metering_middleware.nonces import MemoryNonceStore
from metering_middleware.signing import SignatureVerifier, SignedCall, parse_v3_authorization

AK, SECRET = "LTAI5tTestAccessKey0001", "TestSecretForTheInteropTests01"
IMAGE = "https://viapi-test.oss-cn-shanghai.aliyuncs.com/viapi-3.0domepic/facebody/DetectFace1.png"


@dataclass(frozen=True, slots=True)
class Captured:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


class _Capture(BaseHTTPRequestHandler):
    server: _Server

    def _handle(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.server.captured.append(Captured(self.command, self.path, headers, body))
        reply = b'{"RequestId":"x","Data":{}}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json;charset=utf-8")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    do_GET = do_POST = _handle

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    captured: list[Captured]


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server(("127.0.0.1", 0), _Capture)
    srv.captured = []
    # A short poll so shutdown() returns at once instead of after the default 0.5 s.
    thread = threading.Thread(target=srv.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join()


def endpoint(srv: _Server) -> str:
    return f"127.0.0.1:{srv.server_address[1]}"


def signed_call(c: Captured) -> SignedCall:
    """As the middleware sees it: decoded path, query (+ form body for V1), blanks kept."""
    url = urlsplit(c.target)
    query = parse_qsl(url.query, keep_blank_values=True)
    if "authorization" in c.headers:
        key_id = parse_v3_authorization(c.headers["authorization"]).access_key_id
        return SignedCall(
            "v3", c.method, unquote(url.path), tuple(query), c.headers, c.body, key_id
        )
    if c.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        query += parse_qsl(c.body.decode(), keep_blank_values=True)
    key_id = dict(query)["AccessKeyId"]
    return SignedCall("v1", c.method, unquote(url.path), tuple(query), c.headers, c.body, key_id)


async def check(call: SignedCall) -> None:
    clock = ManualClock(time.time())  # the SDKs sign with the real time
    await SignatureVerifier(MemoryNonceStore(clock), clock).verify(call, SECRET)
    other = SignatureVerifier(MemoryNonceStore(clock), clock)
    with pytest.raises(ApiError) as info:
        await other.verify(call, SECRET + "x")
    assert info.value.code == "SignatureDoesNotMatch"


async def test_facebody_sdk_v3(server: _Server) -> None:
    def send() -> None:
        config = Config(
            access_key_id=AK,
            access_key_secret=SECRET,
            endpoint=endpoint(server),
            protocol="http",
            region_id="cn-shanghai",
        )
        client = FacebodyClient(config)
        client.detect_face_with_options(DetectFaceRequest(image_url=IMAGE), RuntimeOptions())

    await asyncio.to_thread(send)
    [captured] = server.captured
    call = signed_call(captured)
    assert call.style == "v3"
    assert call.method == "POST"
    assert call.body  # the image URL travels as a signed form body
    assert (
        "x-acs-content-sha256"
        in parse_v3_authorization(call.headers["authorization"]).signed_headers
    )
    await check(call)


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_core_sdk_v1(server: _Server, method: str) -> None:
    def send() -> None:
        client = AcsClient(AK, SECRET, "cn-shanghai")
        request = CommonRequest(
            domain=endpoint(server), version="2019-12-30", action_name="DetectFace"
        )
        request.set_protocol_type("http")
        request.set_method(method)
        request.set_accept_format("json")
        if method == "GET":
            request.add_query_param("ImageURL", IMAGE)
        else:
            request.add_body_params("ImageURL", IMAGE)
            request.add_body_params("Note", "a b*~/é")
        client.do_action_with_exception(request)

    await asyncio.to_thread(send)
    [captured] = server.captured
    call = signed_call(captured)
    assert call.style == "v1"
    assert captured.method == method
    names = [k for k, _ in call.params]
    assert "SignatureType" in names  # sent blank, and signed
    assert ("ImageURL", IMAGE) in call.params
    if method == "POST":
        assert b"ImageURL=" in captured.body  # form parameters are signed with the query
    await check(call)
