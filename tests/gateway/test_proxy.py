"""The proxy end to end: real uvicorn servers, the mock VIAPI behind, both transports."""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
import pytest_asyncio

from example_gateway.mock_upstream import BIG_SIZE, MockRequest, MockUpstream, create_mock_upstream
from example_gateway.proxy import create_proxy_app
from tests.support.metered import assume_metered
from tests.support.rawhttp import raw_request
from tests.support.servers import run_server

pytestmark = pytest.mark.asyncio(loop_scope="module")

V3_HEADERS = {"x-acs-action": "DetectFace", "x-acs-version": "2019-12-30"}
V1_PARAMS = {"Action": "DetectFace", "AccessKeyId": "key", "Signature": "sig"}


@dataclass(frozen=True, slots=True)
class Gateway:
    mock: MockUpstream
    upstream: str
    client: httpx.AsyncClient

    @property
    def last(self) -> MockRequest:
        return self.mock.stats.recent[-1]


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["aiohttp", "httpx"])
async def gw(request: pytest.FixtureRequest) -> AsyncIterator[Gateway]:
    mock = create_mock_upstream(chunk_size=16 * 1024)
    async with run_server(mock) as upstream:
        app = assume_metered(create_proxy_app(upstream, transport=request.param))
        # proxy_headers off: the proxy sees its TCP peer, so X-Forwarded-For can be checked.
        served = run_server(app, proxy_headers=False)
        async with served as proxy, httpx.AsyncClient(base_url=proxy) as client:
            yield Gateway(mock, upstream, client)


async def test_success_passes_through(gw: Gateway) -> None:
    r = await gw.client.get("/", params={"ImageURL": "http://img/face.jpg"}, headers=V3_HEADERS)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json;charset=utf-8"
    doc = r.json()
    assert doc["RequestId"] == r.headers["x-acs-request-id"]
    assert doc["Data"]["FaceCount"] == 1
    assert int(r.headers["content-length"]) == len(r.content)


@pytest.mark.parametrize(
    ("word", "status", "code"),
    [
        ("noface", 404, "InvalidImage.NotFoundFace"),
        ("noface400", 400, "InvalidImage.NotFoundFace"),
        ("badurl", 400, "InvalidParameter"),
        ("error", 400, "InvalidParameter"),
        ("servererror", 500, "InternalError"),
        ("throttle", 400, "Throttling.User"),
    ],
)
async def test_error_outcomes_pass_through(gw: Gateway, word: str, status: int, code: str) -> None:
    r = await gw.client.get("/", params={"ImageUrl": f"http://img/{word}.jpg"}, headers=V3_HEADERS)
    assert r.status_code == status
    doc = r.json()
    assert doc["Code"] == code
    assert doc["RequestId"] == r.headers["x-acs-request-id"]
    assert set(doc) >= {"RequestId", "HostId", "Code", "Message"}


async def test_outcome_from_header_and_form_body(gw: Gateway) -> None:
    r = await gw.client.post("/", headers={"x-mock-outcome": "throttle", **V3_HEADERS})
    assert r.json()["Code"] == "Throttling.User"
    r = await gw.client.post("/", data={"Url": "http://img/noface.png"}, headers=V3_HEADERS)
    assert r.status_code == 404


async def test_request_id_only_in_body(gw: Gateway) -> None:
    r = await gw.client.get("/", params={"ImageURL": "noheaderid"}, headers=V3_HEADERS)
    assert r.status_code == 200
    assert "x-acs-request-id" not in r.headers
    assert r.json()["RequestId"]


async def test_garbage_is_relayed_unchanged(gw: Gateway) -> None:
    r = await gw.client.get("/", params={"ImageURL": "garbage"})
    assert r.status_code == 502
    assert r.headers["content-type"] == "text/html"
    assert r.content == b"<html><body>502 Bad Gateway\x00\xff\xfe\x80</body>"


async def test_request_ids_are_unique(gw: Gateway) -> None:
    ids = set()
    for word in ("ok", "noface", "ok", "throttle"):
        r = await gw.client.get("/", params={"ImageURL": word}, headers=V3_HEADERS)
        ids.add(r.json()["RequestId"])
    assert len(ids) == 4


@pytest.mark.parametrize(
    ("extra", "xml"),
    [
        ({}, True),
        ({"Format": "XML"}, True),
        ({"Format": "JSON"}, False),
        ({"Format": "json"}, False),
    ],
)
async def test_v1_calls_get_xml_unless_format_json(
    gw: Gateway, extra: dict[str, str], xml: bool
) -> None:
    params = {**V1_PARAMS, **extra, "ImageURL": "http://img/noface.jpg"}
    r = await gw.client.get("/", params=params)
    assert r.status_code == 404
    if xml:
        assert r.headers["content-type"].startswith("text/xml")
        assert r.text.startswith("<?xml")
        assert "<Code>InvalidImage.NotFoundFace</Code>" in r.text
        assert f"<RequestId>{r.headers['x-acs-request-id']}</RequestId>" in r.text
    else:
        assert r.json()["Code"] == "InvalidImage.NotFoundFace"


async def test_v1_success_xml_and_form_params(gw: Gateway) -> None:
    r = await gw.client.post("/", data={**V1_PARAMS, "Action": "RecognizeLicensePlate"})
    assert r.status_code == 200
    assert r.text.startswith(
        '<?xml version="1.0" encoding="UTF-8"?><RecognizeLicensePlateResponse>'
    )
    assert "<PlateNumber>沪A12345</PlateNumber>" in r.text


async def test_v3_calls_get_json(gw: Gateway) -> None:
    r = await gw.client.get("/", params={"ImageURL": "badurl", "Format": "XML"}, headers=V3_HEADERS)
    assert r.json()["Code"] == "InvalidParameter"


async def test_method_path_query_and_body_are_forwarded(gw: Gateway) -> None:
    body = b"\x00binary\xff" * 1000
    r = await gw.client.post("/?x=1&y=%E4%B8%AD&empty=", content=body)
    assert r.status_code == 200
    seen = gw.last
    assert (seen.method, seen.path) == ("POST", "/")
    assert seen.query_string == "x=1&y=%E4%B8%AD&empty="
    assert seen.body == body
    assert seen.header("content-length") == str(len(body))
    assert seen.header("transfer-encoding") is None


async def test_chunked_upload_is_streamed_through(gw: Gateway) -> None:
    async def parts() -> AsyncIterator[bytes]:
        for i in range(20):
            yield b"%05d" % i * 1000

    r = await gw.client.post("/", content=parts())
    assert r.status_code == 200
    assert gw.last.body == b"".join(b"%05d" % i * 1000 for i in range(20))
    assert gw.last.header("transfer-encoding") == "chunked"


async def test_bodyless_requests_stay_bodyless(gw: Gateway) -> None:
    await gw.client.get("/", params={"ImageURL": "ok"})
    assert gw.last.header("content-length") is None
    assert gw.last.header("transfer-encoding") is None
    assert gw.last.body == b""


async def test_hop_by_hop_request_headers_are_stripped(gw: Gateway) -> None:
    headers = {
        "Connection": "keep-alive, X-Hop-Secret",
        "X-Hop-Secret": "only for the first hop",
        "Keep-Alive": "timeout=5",
        "Proxy-Authorization": "Basic c2VjcmV0",
        "TE": "trailers",
        "Trailer": "X-Checksum",
        "X-End-To-End": "kept",
        "X-Forwarded-For": "10.1.2.3",
        "X-Forwarded-Proto": "https-spoofed",
    }
    await gw.client.get("/", headers=headers)
    seen = gw.last
    for name in ("x-hop-secret", "keep-alive", "proxy-authorization", "te", "trailer"):
        assert seen.header(name) is None, name
    assert seen.header("x-end-to-end") == "kept"
    assert seen.header("host") == httpx.URL(gw.upstream).netloc.decode()
    assert seen.header("x-forwarded-host") == gw.client.base_url.netloc.decode()
    assert seen.header("x-forwarded-for") == "10.1.2.3, 127.0.0.1"
    assert seen.header("x-forwarded-proto") == "http"
    await gw.client.get("/")
    assert gw.last.header("x-forwarded-for") == "127.0.0.1"


async def test_hop_by_hop_response_headers_are_stripped(gw: Gateway) -> None:
    r = await gw.client.get("/", headers={"x-mock-hop": "1"})
    assert r.status_code == 200
    for name in ("x-mock-secret", "keep-alive", "proxy-authenticate", "trailer"):
        assert name not in r.headers, name
    assert r.headers.get_list("date") == [r.headers["date"]]  # the proxy's own, not two
    assert "x-acs-request-id" in r.headers


@pytest.mark.parametrize("word", ["ok", "noface"])
async def test_gzip_bodies_are_relayed_compressed(gw: Gateway, word: str) -> None:
    headers = {"x-mock-gzip": "1", "Accept-Encoding": "gzip", **V3_HEADERS}
    async with gw.client.stream("GET", "/", params={"ImageURL": word}, headers=headers) as r:
        raw = b"".join([chunk async for chunk in r.aiter_raw()])
    assert r.headers["content-encoding"] == "gzip"
    assert int(r.headers["content-length"]) == len(raw)
    assert raw[:2] == b"\x1f\x8b"
    assert json.loads(gzip.decompress(raw))["RequestId"] == r.headers["x-acs-request-id"]


async def test_deflate_bodies_are_relayed_compressed(gw: Gateway) -> None:
    headers = {"x-mock-deflate": "1", "Accept-Encoding": "deflate", **V3_HEADERS}
    async with gw.client.stream("GET", "/", headers=headers) as r:
        raw = b"".join([chunk async for chunk in r.aiter_raw()])
    assert r.headers["content-encoding"] == "deflate"
    assert json.loads(zlib.decompress(raw))["Data"]["FaceCount"] == 1


async def test_proxy_asks_for_no_encoding_the_caller_did_not(gw: Gateway) -> None:
    # Default client headers (Accept-Encoding: gzip) would make the upstream compress.
    headers = {"x-mock-gzip": "1", "Accept-Encoding": "identity", **V3_HEADERS}
    r = await gw.client.get("/", headers=headers)
    assert "content-encoding" not in r.headers
    assert gw.last.header("accept-encoding") == "identity"
    assert gw.last.header("user-agent") == gw.client.headers["user-agent"]


async def test_big_body_keeps_content_length(gw: Gateway) -> None:
    r = await gw.client.get("/", params={"ImageURL": "big"}, headers=V3_HEADERS)
    assert r.headers["content-length"] == str(BIG_SIZE)
    assert len(r.content) == BIG_SIZE
    assert r.json()["RequestId"] == r.headers["x-acs-request-id"]


async def test_big_chunked_body_stays_chunked(gw: Gateway) -> None:
    r = await gw.client.get("/", params={"ImageURL": "bigchunked"}, headers=V3_HEADERS)
    assert "content-length" not in r.headers
    assert r.headers["transfer-encoding"] == "chunked"
    assert len(r.content) == BIG_SIZE
    assert r.json()["Data"]["FaceCount"] == 1


async def test_only_viapi_paths_and_methods_are_forwarded(gw: Gateway) -> None:
    for method in ("GET", "POST"):
        r = await gw.client.request(method, "/")
        assert r.status_code == 200
        assert gw.last.method == method
    before = gw.mock.stats.requests
    for method in ("PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"):
        r = await gw.client.request(method, "/", params={"Format": "JSON"})
        assert r.status_code == 405
        if method != "HEAD":
            assert r.json()["Code"] == "UnsupportedHTTPMethod"
    base = str(gw.client.base_url).rstrip("/")
    for path in ("/x", "/healthz", "//", "/%2F", "/./", "/.", "/%2e", "/a/..", "%2F", "/;"):
        raw = await raw_request(base, "GET", path + "?Format=JSON")
        if raw.status != 400:  # the HTTP server's own refusal of a malformed target
            assert raw.status == 404, path
            assert json.loads(raw.body)["Code"] == "NotFound"
    assert gw.mock.stats.requests == before


async def test_a_proxy_without_the_meter_forwards_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    mock = create_mock_upstream()
    async with (
        run_server(mock) as upstream,
        run_server(create_proxy_app(upstream)) as proxy,
        httpx.AsyncClient(base_url=proxy) as client,
    ):
        r = await client.get("/", params={"Action": "DetectFace", "Format": "JSON"})
    assert r.status_code == 500
    assert r.json()["Code"] == "InternalError"
    assert mock.stats.requests == 0
    assert any("no MeteredCall in scope" in m for m in caplog.messages)
