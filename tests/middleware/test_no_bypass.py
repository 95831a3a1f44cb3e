"""Nothing passes the meter unmetered: every path is a call, websockets are refused,
a stopped meter answers 503."""

from __future__ import annotations

from urllib.parse import urlencode

from starlette.types import Message

from metering_middleware import MeteringConfig, MeteringMiddleware, MeteringRuntime, metered_call
from metering_middleware.credentials import CredentialManager, SecretBox
from metering_middleware.ledger.memory import MemoryStore
from metering_middleware.signing import sign_v1_params

from .harness import HOST, Env, FakeUpstream, make_env


async def test_operational_paths_are_metered_like_any_other(env: Env) -> None:
    # The meter has no skip list: an unsigned call to /healthz (or under it) is
    # refused, and the wrapped app never sees it.
    for path in ("/healthz", "/healthz/x", "/metrics", "/admin/accounts", "/readyz"):
        response = await env.request(
            method="GET", path=path, query=b"Action=DetectFace&Format=JSON"
        )
        assert response.status == 400, path
        assert response.json()["Code"] == "MissingParameter"
    assert env.upstream.seen == []


async def test_websocket_scope_is_refused_never_passed_on(env: Env) -> None:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "websocket", "path": "/", "query_string": b"Action=DetectFace", "headers": []}
    await env.app(scope, receive, send)
    assert sent == [{"type": "websocket.close", "code": 1008}]
    assert env.upstream.seen == []


async def _lifespan(app: MeteringMiddleware, *events: str) -> list[str]:
    incoming = [{"type": f"lifespan.{e}"} for e in events]
    replies: list[str] = []

    async def receive() -> Message:
        return incoming.pop(0)

    async def send(message: Message) -> None:
        replies.append(message["type"])

    await app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
    return replies


async def _fresh() -> Env:
    env = await make_env()
    await env.runtime.stop()
    # make_env starts its runtime; these tests need one that never ran.
    store = MemoryStore()
    await store.open()
    row, secret = await CredentialManager(store, SecretBox(None), env.clock).add("acme")
    runtime = MeteringRuntime(MeteringConfig(ledger_url="memory://"), clock=env.clock, store=store)
    upstream = FakeUpstream()
    app = MeteringMiddleware(upstream, runtime=runtime)
    return Env(env.clock, store, runtime, upstream, app, row.access_key_id, secret)


async def test_a_call_after_lifespan_shutdown_gets_503() -> None:
    env = await _fresh()
    assert await _lifespan(env.app, "startup", "shutdown") == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]
    assert env.runtime.stopped
    for call in (env.v3(), env.v1()):
        response = await env.request(**call)
        assert response.status == 503
        assert response.json()["Code"] == "ServiceUnavailable"
    # An RPC caller without Format=JSON gets the XML form of the same answer.
    response = await env.request(method="GET", query=b"Action=DetectFace")
    assert response.status == 503 and b"<Code>ServiceUnavailable</Code>" in response.body
    assert env.upstream.seen == []
    assert not env.runtime.started  # and it was not started again


async def test_first_call_before_any_lifespan_starts_the_meter() -> None:
    env = await _fresh()
    assert not env.runtime.started
    try:
        response = await env.request(**env.v3())
        assert response.status == 200
        assert env.runtime.started
        assert len(await env.store.calls()) == 1
    finally:
        await env.runtime.stop()


async def test_a_v1_call_reaches_the_app_named_only_by_what_was_verified(env: Env) -> None:
    # The SDKs send x-acs-action beside the signed Action; V1 signs neither headers
    # nor the content type, so what an upstream could read there is the meter's.
    call = env.v1("RecognizeFace")
    call["headers"] = [
        *call["headers"],
        (b"x-acs-action", b"DetectFace"),
        (b"x-acs-version", b"2020-01-01"),
        (b"x-acs-anything", b"1"),
        (b"authorization", b"Basic dXNlcjpwYXNz"),
        (b"content-type", b"text/plain"),
        (b"x-kept", b"yes"),
    ]
    response = await env.request(**call)
    assert response.status == 200
    [(scope, _)] = env.upstream.seen
    headers = scope["headers"]
    assert [v for k, v in headers if k.startswith(b"x-acs-")] == [b"RecognizeFace", b"2019-12-30"]
    assert dict(headers)[b"x-acs-action"] == b"RecognizeFace"
    assert b"authorization" not in dict(headers) and b"content-type" not in dict(headers)
    assert dict(headers)[b"x-kept"] == b"yes"
    metered = metered_call(scope)
    assert metered is not None
    assert (metered.action, metered.style, metered.form) == ("RecognizeFace", "v1", ())
    assert dict(metered.query)["Action"] == "RecognizeFace"
    [record] = await env.store.calls()
    assert record.action == "RecognizeFace"


async def test_a_v1_form_reaches_the_app_under_the_media_type_that_was_read(env: Env) -> None:
    env.clock.advance(1.0)
    params = [("Action", "DetectFace"), ("Version", "2019-12-30"), ("ImageURL", "http://x/a")]
    signed = sign_v1_params(
        "POST", params, env.access_key_id, env.secret, now=env.clock.now(), nonce="form-1"
    )
    content_type = b"APPLICATION/X-WWW-FORM-URLENCODED; Charset=UTF-8"
    response = await env.request(
        method="POST",
        headers=[(b"host", HOST.encode()), (b"content-type", content_type)],
        body=urlencode(signed).encode(),
    )
    assert response.status == 200
    [(scope, body)] = env.upstream.seen
    assert body == urlencode(signed).encode()
    assert [v for k, v in scope["headers"] if k == b"content-type"] == [
        b"application/x-www-form-urlencoded"
    ]
    metered = metered_call(scope)
    assert metered is not None and metered.query == () and metered.form == tuple(signed)


async def test_a_v1_body_its_signature_does_not_cover_is_refused(env: Env) -> None:
    call = env.v1()
    call["headers"] = [*call["headers"], (b"content-type", b"application/x-www-form-urlencodedX")]
    response = await env.request(**call, body=b"Action=RecognizeFace")
    assert response.status == 415
    assert response.json()["Code"] == "UnsupportedMediaType"
    assert env.upstream.seen == []
