"""Re-signing: the caller's signature is stripped, the resigner's headers applied."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlencode

import httpx
import pytest

from example_gateway.mock_upstream import MockRequest, MockUpstream, create_mock_upstream
from example_gateway.proxy import Resigner, V3Resigner, create_proxy_app
from metering_middleware.clock import ManualClock
from metering_middleware.nonces import MemoryNonceStore
from metering_middleware.signing import SignatureVerifier, SignedCall
from tests.support.metered import identified
from tests.support.servers import run_server

CALLER_V1 = {
    "AccessKeyId": "caller-key",
    "Signature": "caller-signature",
    "SignatureMethod": "HMAC-SHA1",
    "SignatureVersion": "1.0",
    "SignatureNonce": "caller-nonce",
    "Timestamp": "2026-01-01T00:00:00Z",
    "SecurityToken": "caller-sts-token",
}
CALL = {"Action": "DetectFace", "Version": "2019-12-30", "Format": "JSON", "ImageURL": "a.jpg"}


@dataclass
class FakeResigner:
    calls: list[tuple[str, str, tuple[tuple[str, str], ...], dict[str, str], bytes]] = field(
        default_factory=list
    )

    async def __call__(
        self,
        method: str,
        path: str,
        query: Sequence[tuple[str, str]],
        headers: dict[str, str],
        body: bytes,
    ) -> dict[str, str]:
        self.calls.append((method, path, tuple(query), dict(headers), body))
        return {"Authorization": "ACS3-HMAC-SHA256 operator", "x-acs-date": "2026-01-01T00:00:00Z"}


@asynccontextmanager
async def resigning_gateway(
    resign: Resigner, max_body: int = 1024 * 1024
) -> AsyncIterator[tuple[MockUpstream, str, httpx.AsyncClient]]:
    mock = create_mock_upstream()
    async with run_server(mock) as upstream:
        app = identified(create_proxy_app(upstream, resign=resign, max_resign_body=max_body))
        async with run_server(app) as proxy, httpx.AsyncClient(base_url=proxy) as client:
            yield mock, upstream, client


def last(mock: MockUpstream) -> MockRequest:
    return mock.stats.recent[-1]


async def test_v1_query_signature_is_replaced() -> None:
    fake = FakeResigner()
    async with resigning_gateway(fake) as (mock, upstream, client):
        r = await client.get("/", params={**CALL, **CALLER_V1})
    assert r.status_code == 200
    seen = last(mock)
    assert dict(parse_qsl(seen.query_string)) == CALL
    assert seen.header("authorization") == "ACS3-HMAC-SHA256 operator"
    assert seen.header("x-acs-date") == "2026-01-01T00:00:00Z"
    [(method, path, query, headers, body)] = fake.calls
    assert (method, path, body) == ("GET", "/", b"")
    assert query == tuple(CALL.items())
    assert headers["host"] == httpx.URL(upstream).netloc.decode()


async def test_v1_form_signature_is_replaced_and_length_fixed() -> None:
    fake = FakeResigner()
    async with resigning_gateway(fake) as (mock, _, client):
        r = await client.post("/", data={**CALL, **CALLER_V1})
    assert r.status_code == 200
    seen = last(mock)
    assert seen.body == urlencode(CALL).encode()
    assert seen.header("content-length") == str(len(seen.body))
    assert fake.calls[0][4] == seen.body


async def test_v3_caller_credentials_are_stripped() -> None:
    fake = FakeResigner()
    caller = {
        "Authorization": "ACS3-HMAC-SHA256 Credential=caller,SignedHeaders=host,Signature=x",
        "x-acs-security-token": "caller-sts-token",
        "x-acs-action": "DetectFace",
        "x-acs-version": "2019-12-30",
    }
    async with resigning_gateway(fake) as (mock, _, client):
        await client.post("/", params={"ImageURL": "a.jpg"}, headers=caller, content=b"{}")
    headers = fake.calls[0][3]
    assert "authorization" not in headers
    assert "x-acs-security-token" not in headers
    assert headers["x-acs-action"] == "DetectFace"
    assert last(mock).header("x-acs-security-token") is None
    assert last(mock).header("authorization") == "ACS3-HMAC-SHA256 operator"


@pytest.mark.parametrize("form", [False, True])
async def test_v3_resigner_signs_what_a_verifier_accepts(form: bool) -> None:
    clock = ManualClock()
    resigner = V3Resigner("operator-key", "operator-secret", clock)
    assert "operator-secret" not in repr(resigner)
    async with resigning_gateway(resigner) as (mock, _, client):
        if form:
            r = await client.post("/", data={**CALL, **CALLER_V1})
        else:
            r = await client.get("/", params={**CALL, **CALLER_V1})
    assert r.status_code == 200
    seen = last(mock)
    assert seen.header("x-acs-action") == "DetectFace"  # the verified V1 Action
    assert seen.header("x-acs-version") == "2019-12-30"
    call = SignedCall(
        style="v3",
        method=seen.method,
        path=seen.path,
        params=tuple(parse_qsl(seen.query_string, keep_blank_values=True)),
        headers=dict(seen.headers),
        body=seen.body,
        access_key_id="operator-key",
    )
    verifier = SignatureVerifier(MemoryNonceStore(clock), clock)
    await verifier.verify(call, "operator-secret")  # raises ApiError if the signature is off


async def test_resigning_bounds_the_body() -> None:
    v3 = {
        "Authorization": "ACS3-HMAC-SHA256 Credential=caller,SignedHeaders=host,Signature=x",
        "x-acs-action": "DetectFace",
        "x-acs-version": "2019-12-30",
        "content-type": "application/octet-stream",
    }
    async with resigning_gateway(FakeResigner(), max_body=100) as (mock, _, client):
        r = await client.post("/", content=b"x" * 101, headers=v3)
        assert r.status_code == 413
        assert r.json()["Code"] == "RequestEntityTooLarge"
        r = await client.post("/", content=b"x" * 100, headers=v3)
        assert r.status_code == 200
    assert mock.stats.requests == 1
