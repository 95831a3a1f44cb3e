"""The mock VIAPI on its own (in-process: no server needed for what it answers)."""

from __future__ import annotations

import gzip
from xml.etree import ElementTree

import httpx
import pytest

from example_gateway.mock_upstream import BIG_SIZE, MockUpstream, create_mock_upstream

V1 = {"Action": "DetectFace", "AccessKeyId": "key", "Signature": "sig"}


def client(mock: MockUpstream) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(mock), base_url="http://mock")


@pytest.mark.parametrize(
    ("accept", "gzipped"),
    [
        ("gzip", True),
        ("*", True),
        ("br, gzip;q=0.5", True),
        ("gzip;q=0", False),
        ("identity", False),
    ],
)
async def test_compress_follows_accept_encoding(accept: str, gzipped: bool) -> None:
    async with client(create_mock_upstream(compress=True)) as c:
        r = await c.get("/", headers={"Accept-Encoding": accept, "x-acs-action": "DetectFace"})
    assert (r.headers.get("content-encoding") == "gzip") is gzipped
    assert r.json()["Data"]["FaceCount"] == 1  # httpx decodes gzip itself


async def test_big_xml_is_exactly_two_mib_and_well_formed() -> None:
    async with client(create_mock_upstream()) as c:
        r = await c.get("/", params={**V1, "ImageURL": "http://img/big.jpg"})
    assert len(r.content) == BIG_SIZE == int(r.headers["content-length"])
    root = ElementTree.fromstring(r.content)
    assert root.tag == "DetectFaceResponse"
    assert root.findtext("RequestId") == r.headers["x-acs-request-id"]


async def test_big_gzip_length_is_the_compressed_one() -> None:
    async with client(create_mock_upstream()) as c:
        headers = {"x-mock-gzip": "1", "Accept-Encoding": "gzip"}
        async with c.stream("GET", "/", params={"ImageURL": "big"}, headers=headers) as r:
            raw = b"".join([chunk async for chunk in r.aiter_raw()])
    assert int(r.headers["content-length"]) == len(raw) < BIG_SIZE
    assert len(gzip.decompress(raw)) == BIG_SIZE


async def test_v1_form_call_gets_xml_error() -> None:
    async with client(create_mock_upstream()) as c:
        r = await c.post("/", data={**V1, "ImageURL": "http://img/throttle.jpg"})
    assert r.status_code == 400
    root = ElementTree.fromstring(r.content)
    assert (root.tag, root.findtext("Code")) == ("Error", "Throttling.User")


async def test_requests_are_recorded() -> None:
    mock = create_mock_upstream()
    async with client(mock) as c:
        await c.post("/p", params={"a": "1"}, data={"Url": "x"}, headers={"X-Probe": "yes"})
    [seen] = mock.stats.recent
    assert (seen.method, seen.path, seen.query_string) == ("POST", "/p", "a=1")
    assert seen.params == (("a", "1"), ("Url", "x"))
    assert seen.header("x-probe") == "yes"
    assert mock.stats.requests == mock.stats.completed == 1
    assert seen.body == b"Url=x"
