"""Nothing reaches the upstream unmetered, and the upstream runs what was billed.

The example gateway served for real (uvicorn, a real SQLite ledger, the mock
VIAPI behind it), with re-signing on (and off): requests are sent as raw bytes,
so no client cleans their paths or headers on the way. After every request:
whatever reached the upstream has its ledger record, and the action (and
version) the upstream could read anywhere (``x-acs-action`` header, query
``Action``, form ``Action``) is the one billed; or the gateway refused it and
the upstream saw nothing.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

import httpx
import pytest

from example_gateway.app import create_gateway_app
from example_gateway.config import GatewayConfig, ResignConfig
from example_gateway.mock_upstream import MockRequest, create_mock_upstream
from metering_middleware import MeteringConfig, MeteringRuntime
from metering_middleware.clock import SystemClock
from metering_middleware.nonces import MemoryNonceStore
from metering_middleware.signing import SignatureVerifier, SignedCall, sign_v1_params, sign_v3
from tests.support.catalogs import roomy_catalog
from tests.support.rawhttp import RawResponse, raw_request
from tests.support.servers import run_server

from .conftest import Gateway, add_account
from .sdk import call_v1, detect_face_v3

HOST = "facebody.cn-shanghai.aliyuncs.com"
FORM = "application/x-www-form-urlencoded"
BILLED = "RecognizeFace"  # what the caller signs for
OTHER = "DetectFace"  # what a smuggler wants the upstream to run
OPERATOR = ("operator-key", "operator-secret-0123456789")

Headers = list[tuple[str, str]]


@dataclass
class Run:
    gw: Gateway
    resign: bool


@pytest.fixture(params=[True, False], ids=["resign", "no-resign"])
async def run(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Run]:
    db = tmp_path / "ledger.sqlite"
    url = f"sqlite:///{db}"
    key, secret = await add_account(url, "acme")
    mock = create_mock_upstream()
    runtime = MeteringRuntime(
        MeteringConfig(ledger_url=url, mode="strict"), catalog=roomy_catalog()
    )
    resign = ResignConfig(*OPERATOR) if request.param else None
    async with run_server(mock) as upstream:
        config = GatewayConfig(upstream=upstream, timeout=5.0, resign=resign)
        async with run_server(create_gateway_app(config, runtime)) as base:
            gw = Gateway(base, base.removeprefix("http://"), db, runtime, mock, key, secret)
            yield Run(gw, request.param)


# --- signed requests, as raw pieces --------------------------------------------------------


def _nonce() -> str:
    return uuid.uuid4().hex


def v1(
    gw: Gateway, *, action: str = BILLED, method: str = "GET", **extra: str
) -> list[tuple[str, str]]:
    params = [("Action", action), ("Version", "2019-12-30"), ("Format", "JSON")]
    params += [("ImageURL", "http://img/face.jpg"), *extra.items()]
    return sign_v1_params(
        method, params, gw.access_key_id, gw.secret, now=datetime.now(UTC), nonce=_nonce()
    )


def v3(
    gw: Gateway,
    *,
    action: str = BILLED,
    path: str = "/",
    query: Sequence[tuple[str, str]] = (),
    body: bytes = b"ImageURL=http%3A%2F%2Fimg%2Fface.jpg",
    content_type: str | None = FORM,
    method: str = "POST",
    extra: dict[str, str] | None = None,
) -> Headers:
    headers = {"host": HOST, "x-acs-action": action, "x-acs-version": "2019-12-30"}
    if content_type is not None:
        headers["content-type"] = content_type
    headers.update(extra or {})
    signed = sign_v3(
        method,
        path,
        list(query),
        headers,
        body,
        gw.access_key_id,
        gw.secret,
        now=datetime.now(UTC),
        nonce=_nonce(),
    )
    return [*headers.items(), *signed.items()]


# --- what reached the upstream, against the ledger -----------------------------------------


def _places(seen: MockRequest, name: str) -> list[str]:
    """Every value an upstream could read ``name`` from: header, query, any form reading."""
    header = f"x-acs-{name.lower()}"
    found = [v for k, v in seen.headers if k == header]
    found += [v for k, v in parse_qsl(seen.query_string, keep_blank_values=True) if k == name]
    # Read the body as a form whatever its content type says: some upstream might.
    text = seen.body.decode("utf-8", "replace")
    found += [v for k, v in parse_qsl(text, keep_blank_values=True) if k == name]
    return found


async def send_and_check(
    run: Run,
    method: str,
    target: str,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
) -> tuple[RawResponse, MockRequest | None]:
    """Send one request; assert the no-bypass invariant; return the answer and what arrived."""
    gw = run.gw
    upstream_before = gw.mock.stats.requests
    records_before = len(gw.rows())
    response = await raw_request(gw.url, method, target, headers, body)
    reached = gw.mock.stats.requests - upstream_before
    records = gw.rows()[records_before:]
    assert reached in (0, 1), target
    if not reached:
        assert records == [], f"{method} {target}: billed but never sent"
        return response, None
    seen = gw.mock.stats.recent[-1]
    # It reached the upstream, answered 200 (the mock's default): strict mode has
    # committed its record before the answer's last byte.
    assert response.status == 200, (target, response.body)
    assert len(records) == 1, f"{method} {target} reached the upstream unrecorded"
    [record] = records
    actions = _places(seen, "Action")
    versions = _places(seen, "Version")
    assert actions and set(actions) == {record["action"]}, (target, actions, record["action"])
    assert set(versions) == {record["version"]}, (target, versions)
    if run.resign:
        # Signed with the operator's key over exactly what arrived.
        call = SignedCall(
            "v3",
            seen.method,
            seen.path,
            tuple(parse_qsl(seen.query_string, keep_blank_values=True)),
            dict(seen.headers),
            seen.body,
            OPERATOR[0],
        )
        clock = SystemClock()
        await SignatureVerifier(MemoryNonceStore(clock), clock).verify(call, OPERATOR[1])
    else:
        await _client_signature_still_holds(gw, seen)
    return response, seen


async def _client_signature_still_holds(gw: Gateway, seen: MockRequest) -> None:
    """Without re-signing, what arrived still carries the client's valid signature.

    The gateway rebuilt the query (and a V1 form) from what the meter read: an
    upstream checking the client's signature accepts it. (The proxy sets the
    upstream's own ``Host``; the client's is kept in ``X-Forwarded-Host``.)
    """
    headers = dict(seen.headers)
    headers["host"] = headers.get("x-forwarded-host", headers["host"])
    if headers.get("authorization", "").startswith("ACS3-HMAC-SHA256"):
        query = tuple(parse_qsl(seen.query_string, keep_blank_values=True))
        call = SignedCall("v3", seen.method, "/", query, headers, seen.body, gw.access_key_id)
    else:
        call = SignedCall("v1", seen.method, "/", seen.params, headers, seen.body, gw.access_key_id)
    clock = SystemClock()
    await SignatureVerifier(MemoryNonceStore(clock), clock).verify(call, gw.secret)


def _code(response: RawResponse) -> str:
    code: str = json.loads(response.body)["Code"]
    return code


# --- (a) paths and methods -----------------------------------------------------------------

UNSIGNED = "Action=DetectFace&Version=2019-12-30&Format=JSON&ImageURL=http%3A%2F%2Fimg%2Fa.jpg"

#: Request targets that are not VIAPI's "/", each a way the old catch-all route forwarded.
PATHS = [
    "/healthz/x",
    "/healthz/",
    "/healthz/..",
    "/healthz/%2E%2E/",
    "/%68ealthz",
    "//healthz",
    "/healthz%2Fx",
    "/healthz;x",
    "/metrics/",
    "/readyz/x",
    "/admin",
    "/admin/accounts",
    "/x",
    "//",
    "/./",
    "/.",
    "/%2F",
    "/%2e",
    "/a/..",
    "/?/",
    "*",
]
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]


async def test_unsigned_tricks_never_reach_the_upstream(run: Run) -> None:
    for path in [*PATHS, "/"]:
        for method in METHODS:
            target = path if path == "*" else path + ("&" if "?" in path else "?") + UNSIGNED
            # Refused, or (``/%68ealthz`` is ``/healthz``) answered by the gateway's own route.
            _, seen = await send_and_check(run, method, target, [("host", HOST)])
            assert seen is None, (method, target)
    # The gateway's own routes, any other method on them, bodies included.
    form = UNSIGNED.encode()
    for path in ("/healthz", "/readyz", "/metrics"):
        for method in METHODS:
            headers = [("host", HOST), ("content-type", FORM)]
            _, seen = await send_and_check(run, method, f"{path}?{UNSIGNED}", headers, form)
            assert seen is None, (method, path)
    assert run.gw.mock.stats.requests == 0


async def test_signed_calls_reach_the_upstream_only_at_the_viapi_path(run: Run) -> None:
    gw = run.gw
    for path in PATHS:
        # V1 signatures do not cover the path: admitted by the meter, never forwarded.
        if path == "*":
            continue
        _, seen = await send_and_check(run, "GET", f"{path}?{urlencode(v1(gw))}", [("host", HOST)])
        assert seen is None, path
        # V3 signatures do: signed for exactly this path, still never forwarded.
        if "?" not in path:
            _, seen = await send_and_check(run, "POST", path, v3(gw, path=path), _BODY)
            assert seen is None, path
    for method in ("PUT", "DELETE", "PATCH"):
        target = f"/?{urlencode(v1(gw, method=method))}"
        _, seen = await send_and_check(run, method, target, [("host", HOST)])
        assert seen is None, method
    assert gw.mock.stats.requests == 0
    # The VIAPI path itself works, both styles, and each call is recorded.
    await send_and_check(run, "GET", f"/?{urlencode(v1(gw))}", [("host", HOST)])
    await send_and_check(run, "POST", "/", v3(gw), _BODY)
    assert gw.mock.stats.requests == 2


_BODY = b"ImageURL=http%3A%2F%2Fimg%2Fface.jpg"


async def test_official_sdks_through_the_gateway(run: Run) -> None:
    gw = run.gw
    v3_result = await asyncio.to_thread(
        detect_face_v3, gw.endpoint, gw.access_key_id, gw.secret, "http://img/face.jpg"
    )
    assert v3_result.ok, v3_result
    for method, form in (("GET", False), ("POST", True)):
        v1_result = await asyncio.to_thread(
            call_v1, gw.endpoint, gw.access_key_id, gw.secret, "http://img/face.jpg",
            method=method, form=form,
        )  # fmt: skip
        assert v1_result.ok, v1_result
    rows = gw.rows()
    assert [r["action"] for r in rows] == ["DetectFace"] * 3
    for seen in list(gw.mock.stats.recent):
        assert set(_places(seen, "Action")) == {"DetectFace"}
        assert seen.param("ImageURL") == "http://img/face.jpg"


# --- (b) smuggling -------------------------------------------------------------------------


async def test_smuggled_actions_are_refused_or_never_reach_the_upstream(run: Run) -> None:
    gw = run.gw
    other_form = f"Action={OTHER}&ImageURL=x".encode()
    refused: dict[str, int] = {}
    names: list[str] = []

    async def attempt(name: str, method: str, target: str, headers: Headers, body: bytes = b""):
        names.append(name)
        response, seen = await send_and_check(run, method, target, headers, body)
        if seen is None:
            refused[name] = response.status
        return response, seen

    # V1: the signature covers the query and a form, nothing else.
    q = urlencode(v1(gw))
    host = [("host", HOST)]
    await attempt("v1 x-acs-action", "GET", f"/?{q}", [*host, ("x-acs-action", OTHER)])
    q = urlencode(v1(gw))
    await attempt(
        "v1 x-acs-action+version",
        "GET",
        f"/?{q}",
        [*host, ("x-acs-action", OTHER), ("x-acs-version", "2019-12-30"), ("x-acs-foo", "1")],
    )
    q = urlencode(v1(gw))
    v3_auth = "ACS3-HMAC-SHA256 Credential=x,SignedHeaders=host,Signature=y"
    await attempt(
        "v1 authorization", "GET", f"/?{q}", [*host, ("authorization", " " + v3_auth),
                                              ("x-acs-action", OTHER)]
    )  # fmt: skip
    for content_type in (
        "application/x-www-form-urlencodedX",
        "text/plain",
        "application/json",
        "multipart/form-data; boundary=x",
        "application/x-www-form-urlencoded; charset=gbk",
        None,
    ):
        q = urlencode(v1(gw, method="POST"))
        headers = [*host] + ([("content-type", content_type)] if content_type else [])
        await attempt(f"v1 body as {content_type}", "POST", f"/?{q}", headers, other_form)
    q = urlencode(v1(gw, method="POST"))
    await attempt(
        "v1 two content types",
        "POST",
        f"/?{q}",
        [*host, ("content-type", FORM), ("content-type", "text/plain")],
        other_form,
    )
    # Action in both the query and the (signed) form.
    signed = v1(gw, method="POST")
    await attempt(
        "v1 action in query and form",
        "POST",
        f"/?{urlencode(signed)}",
        [*host, ("content-type", FORM)],
        other_form,
    )
    # A form the meter reads (any case, UTF-8 charset): accepted, and read alike upstream.
    signed = v1(gw, method="POST")
    await attempt(
        "v1 upper-case form type",
        "POST",
        "/",
        [*host, ("content-type", "APPLICATION/X-WWW-FORM-URLENCODED; charset=utf-8")],
        urlencode(signed).encode(),
    )
    # V3: the headers name the call; parameters naming another are refused.
    await attempt(
        "v3 query Action", "POST", f"/?Action={OTHER}", v3(gw, query=[("Action", OTHER)]), _BODY
    )
    await attempt("v3 query Version", "POST", "/?Version=2020-01-01",
                  v3(gw, query=[("Version", "2020-01-01")]), _BODY)  # fmt: skip
    await attempt("v3 form Action", "POST", "/", v3(gw, body=other_form), other_form)
    for content_type in ("application/x-www-form-urlencodedX", "multipart/form-data; boundary=x"):
        await attempt(
            f"v3 body as {content_type}",
            "POST",
            "/",
            v3(gw, body=other_form, content_type=content_type),
            other_form,
        )
    headers = v3(gw)
    await attempt("v3 unsigned x-acs header", "POST", "/", [*headers, ("x-acs-foo", "1")], _BODY)
    headers = v3(gw)
    await attempt("v3 second x-acs-action", "POST", "/", [*headers, ("x-acs-action", OTHER)], _BODY)
    headers = v3(gw)
    await attempt(
        "v3 two content types", "POST", "/", [*headers, ("content-type", "text/plain")], _BODY
    )
    # Agreeing parameters are fine.
    _, seen = await attempt(
        "v3 query Action agreeing",
        "POST",
        f"/?Action={BILLED}",
        v3(gw, query=[("Action", BILLED)]),
        _BODY,
    )
    assert seen is not None
    # Forwarded with the headers the V1 signature leaves open dropped or set by the
    # gateway (checked by send_and_check); every other attempt was refused by the
    # gateway, before the upstream.
    through = {"v1 x-acs-action", "v1 x-acs-action+version", "v1 upper-case form type",
               "v3 query Action agreeing"}  # fmt: skip
    assert set(names) - set(refused) == through, refused
    assert all(status >= 400 for status in refused.values())
    assert gw.mock.stats.requests == len(through)


# --- (c) websockets, (d) after shutdown ---------------------------------------------------


async def test_websocket_upgrade_is_refused(run: Run) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    url = run.gw.url.replace("http://", "ws://") + "/?" + UNSIGNED
    with pytest.raises(InvalidStatus) as info:
        async with connect(url):
            pass
    assert info.value.response.status_code == 403
    assert run.gw.mock.stats.requests == 0


async def test_a_call_after_the_gateway_shut_down_gets_503(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    key, secret = await add_account(url, "acme")
    runtime = MeteringRuntime(MeteringConfig(ledger_url=url), catalog=roomy_catalog())
    mock = create_mock_upstream()
    async with run_server(mock) as upstream:
        app = create_gateway_app(GatewayConfig(upstream=upstream), runtime)
        async with run_server(app) as base:
            # The gateway's lifespan started the meter (the mounted app gets none).
            assert runtime.started
            gw = Gateway(base, base, tmp_path / "ledger.sqlite", runtime, mock, key, secret)
            ok = await raw_request(base, "POST", "/", v3(gw), _BODY)
            assert ok.status == 200
        assert runtime.stopped and not runtime.started
        # The same app, called after its lifespan ended (a straggler on a kept connection).
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            late = await client.post("/", content=_BODY, headers=dict(v3(gw)))
            health = await client.get("/healthz")
    assert late.status_code == 503
    assert late.json()["Code"] == "ServiceUnavailable"
    assert health.status_code == 200  # the gateway's own routes still answer
    assert mock.stats.requests == 1
