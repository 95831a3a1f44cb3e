"""Calls refused before the upstream: free, counted, with a precise Alibaba code."""

from __future__ import annotations

from collections import Counter
from xml.etree import ElementTree

import pytest

from metering_middleware.credentials import CredentialManager, SecretBox

from .harness import Env, make_env


async def refused(env: Env) -> Counter[str]:
    await env.runtime.writer.flush_now()
    out: Counter[str] = Counter()
    for c in await env.store.outcome_counts():
        if c.outcome.value == "refused":
            out[c.detail] += c.count
    return out


async def test_unknown_access_key(env: Env) -> None:
    response = await env.request(**env.v3(access_key_id="LTAInobody"))
    assert response.status == 404
    assert response.json()["Code"] == "InvalidAccessKeyId.NotFound"
    assert response.json()["RequestId"] == response.headers[b"x-acs-request-id"].decode()
    assert env.upstream.seen == []
    assert (await refused(env))["unknown_key"] == 1


async def test_wrong_secret(env: Env) -> None:
    response = await env.request(**env.v3(secret="wrong-secret-wrong-secret"))
    assert response.status == 400
    assert response.json()["Code"] == "SignatureDoesNotMatch"
    assert env.upstream.seen == []
    assert await env.store.calls() == []


async def test_tampered_body_is_refused(env: Env) -> None:
    kwargs = env.v3()
    kwargs["body"] = b"ImageURL=http%3A%2F%2Fx%2Fother.jpg"
    response = await env.request(**kwargs)
    assert response.json()["Code"] == "SignatureDoesNotMatch"


async def test_expired_timestamp_and_replayed_nonce(env: Env) -> None:
    old = env.clock.now()
    env.clock.advance(16 * 60)
    response = await env.request(**env.v3(now=old))
    assert response.json()["Code"] == "InvalidTimeStamp.Expired"
    first = await env.request(**env.v3(nonce="same-nonce"))
    again = await env.request(**env.v3(nonce="same-nonce"))
    assert first.status == 200
    assert again.status == 400 and again.json()["Code"] == "SignatureNonceUsed"
    assert len(await env.store.calls()) == 1
    counted = await refused(env)
    assert counted["bad_timestamp"] == 1 and counted["nonce_reused"] == 1


async def test_unknown_action_and_missing_parameters(env: Env) -> None:
    response = await env.request(**env.v3("DetectUnicorn", host="127.0.0.1:8080"))
    assert response.status == 400
    assert response.json()["Code"] == "InvalidAction.NotFound"
    response = await env.request(method="POST", body=b"")
    assert response.status == 400
    # No V3 headers and no Format: an RPC caller, answered in XML as VIAPI does.
    assert ElementTree.fromstring(response.body).findtext("Code") == "InvalidAction.NotFound"
    kwargs = env.v1()
    kwargs["query"] = kwargs["query"].replace(b"Version=", b"Versio=")
    response = await env.request(**kwargs)
    assert response.json()["Code"] == "MissingParameter"
    counted = await refused(env)
    assert counted["unknown_action"] == 2 and counted["bad_request"] == 1


async def test_v1_without_format_gets_xml_errors(env: Env) -> None:
    kwargs = env.v1(fmt=None)
    kwargs["query"] = kwargs["query"].replace(env.access_key_id.encode(), b"LTAInobody")
    response = await env.request(**kwargs)
    assert response.status == 404
    root = ElementTree.fromstring(response.body)
    assert root.tag == "Error" and root.findtext("Code") == "InvalidAccessKeyId.NotFound"


async def test_v1_get_and_post_are_admitted(env: Env) -> None:
    assert (await env.request(**env.v1())).status == 200
    assert (await env.request(**env.v1(method="POST"))).status == 200
    assert len(await env.store.calls()) == 2


async def test_disabled_key(env: Env) -> None:
    await CredentialManager(env.store, SecretBox(None), env.clock).disable("acme")
    env.clock.advance(5)  # past the cache refresh interval: the next lookup reloads
    await env.request(**env.v3())
    await env.runtime.credentials.join()
    response = await env.request(**env.v3())
    assert response.status == 403
    assert response.json()["Code"] == "InvalidAccessKeyId.Inactive"


async def test_request_body_too_large() -> None:
    env = await make_env(max_body_bytes=64)
    try:
        response = await env.request(**env.v3(body=b"ImageURL=" + b"a" * 100))
        assert response.status == 413
        assert response.json()["Code"] == "RequestEntityTooLarge"
        assert env.upstream.seen == []
    finally:
        await env.runtime.stop()


async def test_the_wrapped_app_reads_the_whole_body(env: Env) -> None:
    kwargs = env.v3(body=b"ImageURL=http%3A%2F%2Fx%2Fform.jpg&Landmark=true")
    await env.request(**kwargs)
    [(_, body)] = env.upstream.seen
    assert body == b"ImageURL=http%3A%2F%2Fx%2Fform.jpg&Landmark=true"


async def test_trusted_hop_skips_verification_only_with_the_secret() -> None:
    secret = "internal-hop-secret-123"
    env = await make_env(trusted_hop_secret=secret)
    try:
        kwargs = env.v3(secret="not-the-right-secret-at-all")
        kwargs["headers"].append((b"x-metering-trusted-hop", secret.encode()))
        response = await env.request(**kwargs)
        assert response.status == 200
        [(scope, _)] = env.upstream.seen
        assert all(k != b"x-metering-trusted-hop" for k, _ in scope["headers"])
        [record] = await env.store.calls()
        assert record.account == "acme"

        kwargs = env.v3(secret="not-the-right-secret-at-all")
        kwargs["headers"].append((b"x-metering-trusted-hop", b"a-guess"))
        response = await env.request(**kwargs)
        assert response.json()["Code"] == "SignatureDoesNotMatch"
    finally:
        await env.runtime.stop()


async def test_no_trusted_hop_without_a_configured_secret(env: Env) -> None:
    kwargs = env.v3(secret="not-the-right-secret-at-all")
    kwargs["headers"].append((b"x-metering-trusted-hop", b""))
    response = await env.request(**kwargs)
    assert response.json()["Code"] == "SignatureDoesNotMatch"


async def test_too_many_headers_are_refused_before_anything_reads_them(env: Env) -> None:
    signed = env.v3()
    padding = [(f"x-pad-{i}".encode(), b"1") for i in range(100)]
    response = await env.request(**{**signed, "headers": [*signed["headers"], *padding]})
    assert response.status == 431
    assert response.json()["Code"] == "RequestHeaderFieldsTooLarge"
    assert env.upstream.seen == []  # never forwarded


@pytest.mark.parametrize("size", [40 * 1024, 1024 * 1024])
async def test_an_oversized_head_is_refused_and_never_forwarded(env: Env, size: int) -> None:
    signed = env.v3()
    headers = [*signed["headers"], (b"x-big", b"a" * size)]
    response = await env.request(**{**signed, "headers": headers})
    assert response.status == 431
    assert response.json()["Code"] == "RequestHeaderFieldsTooLarge"
    assert env.upstream.seen == []
    assert await env.store.calls() == []
    assert (await refused(env))["headers_too_large"] == 1


async def test_an_oversized_query_counts_toward_the_head(env: Env) -> None:
    signed = env.v1(extra=(("ImageURL", "http://x/" + "a" * 40_000),))
    response = await env.request(**signed)
    assert response.status == 431


async def test_a_head_within_the_limits_is_served(env: Env) -> None:
    signed = env.v3()
    room = 32 * 1024 - sum(len(k) + len(v) for k, v in signed["headers"]) - len(b"/") - 5
    headers = [*signed["headers"], (b"x-pad", b"a" * room)]
    response = await env.request(**{**signed, "headers": headers})
    assert response.status == 200


async def test_header_limits_are_configurable() -> None:
    env = await make_env(max_header_count=200, max_header_bytes=2 * 1024 * 1024)
    try:
        signed = env.v3()
        headers = [*signed["headers"], (b"x-big", b"a" * 1024 * 1024)]
        headers += [(f"x-pad-{i}".encode(), b"1") for i in range(150)]
        assert (await env.request(**{**signed, "headers": headers})).status == 200
    finally:
        await env.runtime.stop()
