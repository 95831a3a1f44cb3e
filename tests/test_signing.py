"""Signature V1 and V3: known answers from the SDKs' own functions, tampering, windows, nonces."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from alibabacloud_openapi_util.client import Client as OpenApiUtil
from aliyunsdkcore.auth.algorithm import sha_hmac1
from aliyunsdkcore.auth.composer import rpc_signature_composer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from Tea.request import TeaRequest

from metering_middleware.clock import ManualClock
from metering_middleware.errors import ApiError
from metering_middleware.nonces import MemoryNonceStore
from metering_middleware.signing import (
    SignatureVerifier,
    SignedCall,
    extract_nonce,
    extract_timestamp,
    parse_v3_authorization,
    percent_encode,
    sign_v1,
    sign_v1_params,
    sign_v3,
    v1_string_to_sign,
)

# The SDK's own string-to-sign composer (a module-private function: no name mangling applies).
sdk_compose = getattr(rpc_signature_composer, "__compose_string_to_sign")

AK, SECRET = "testid", "testsecret"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
HOST = "facebody.cn-shanghai.aliyuncs.com"
FORM = b"ImageURL=https%3A%2F%2Fviapi-test.oss-cn-shanghai.aliyuncs.com%2Fface.jpg"

# Text that exercises the encoder: reserved characters, blanks, non-ASCII, no lone surrogates.
chars = st.characters(exclude_categories=["Cs"])
texts = st.text(chars, max_size=20)
names = st.text(chars, min_size=1, max_size=12)


def verifier(clock: ManualClock) -> SignatureVerifier:
    return SignatureVerifier(MemoryNonceStore(clock), clock)


def v1_call(
    params: list[tuple[str, str]] | None = None,
    *,
    method: str = "POST",
    at: datetime = T0,
    nonce: str = "nonce-1",
) -> SignedCall:
    base = params if params is not None else [("Action", "DetectFace"), ("SignatureType", "")]
    signed = sign_v1_params(method, base, AK, SECRET, now=at, nonce=nonce)
    return SignedCall("v1", method, "/", tuple(signed), {}, b"", AK)


def v3_call(
    body: bytes = FORM,
    query: tuple[tuple[str, str], ...] = (),
    *,
    method: str = "POST",
    path: str = "/",
    at: datetime = T0,
    nonce: str = "nonce-1",
) -> SignedCall:
    headers = {
        "host": HOST,
        "x-acs-action": "DetectFace",
        "x-acs-version": "2019-12-30",
        "content-type": "application/x-www-form-urlencoded",
        "user-agent": "test",
    }
    headers |= sign_v3(method, path, query, headers, body, AK, SECRET, now=at, nonce=nonce)
    return SignedCall("v3", method, path, query, headers, body, AK)


async def refused(v: SignatureVerifier, call: SignedCall, secret: str = SECRET) -> ApiError:
    with pytest.raises(ApiError) as info:
        await v.verify(call, secret)
    return info.value


# --- known answers -------------------------------------------------------------------------

KAT_V1 = {
    "AccessKeyId": AK,
    "Action": "DetectFace",
    "Format": "JSON",
    "ImageURL": "https://viapi-test.oss-cn-shanghai.aliyuncs.com/face 1.jpg",
    "RegionId": "cn-shanghai",
    "SignatureMethod": "HMAC-SHA1",
    "SignatureNonce": "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf",
    "SignatureType": "",
    "SignatureVersion": "1.0",
    "Timestamp": "2026-01-01T00:00:00Z",
    "Version": "2019-12-30",
}


def test_v1_known_answer_matches_the_sdk() -> None:
    expected = sdk_compose("GET", dict(KAT_V1))
    assert v1_string_to_sign("GET", KAT_V1) == expected
    assert "%26SignatureType%3D%26" in expected  # the blank value is signed
    assert sign_v1("GET", KAT_V1, SECRET) == sha_hmac1.get_sign_string(expected, SECRET + "&")
    assert sign_v1("GET", KAT_V1, SECRET) == "6m4ViYNianAcMX8MxnLcoBcEtz0="
    # ``Signature`` itself is never signed.
    assert sign_v1("GET", {**KAT_V1, "Signature": "x"}, SECRET) == "6m4ViYNianAcMX8MxnLcoBcEtz0="


def test_percent_encode_follows_alibaba_rules() -> None:
    assert percent_encode("a b*c~d/e+f%") == "a%20b%2Ac~d%2Fe%2Bf%25"
    assert percent_encode("AZaz09-_.~") == "AZaz09-_.~"
    assert percent_encode("é") == "%C3%A9"


@given(
    st.dictionaries(names.filter(lambda n: n != "Signature"), texts, max_size=6),
    st.sampled_from(["GET", "POST"]),
)
def test_v1_string_to_sign_equals_the_sdk_for_any_params(params: dict[str, str], m: str) -> None:
    # The SDK composes before it adds Signature; ours leaves Signature out by design.
    assert v1_string_to_sign(m, params) == sdk_compose(m, dict(params))


def _tea_request(query: dict[str, str], headers: dict[str, str]) -> TeaRequest:
    r = TeaRequest()
    r.method, r.pathname, r.query = "POST", "/", dict(query)
    r.headers = {k: v for k, v in headers.items() if k != "authorization"}
    return r


V3_HEADERS = {
    "host": HOST,
    "x-acs-action": "DetectFace",
    "x-acs-version": "2019-12-30",
    "content-type": "application/x-www-form-urlencoded",
}


def test_v3_known_answer_matches_the_sdk() -> None:
    out = sign_v3(
        "POST", "/", {"Extra": "a b"}, V3_HEADERS, FORM, AK, SECRET, now=T0, nonce="abc123"
    )
    assert out["x-acs-content-sha256"] == hashlib.sha256(FORM).hexdigest()
    assert out["x-acs-date"] == "2026-01-01T00:00:00Z"
    sdk = OpenApiUtil.get_authorization(
        _tea_request({"Extra": "a b"}, V3_HEADERS | out), "ACS3-HMAC-SHA256",
        out["x-acs-content-sha256"], AK, SECRET,
    )  # fmt: skip
    assert out["authorization"] == sdk
    # Pinned, so a change in either implementation shows.
    assert out["authorization"] == (
        "ACS3-HMAC-SHA256 Credential=testid,SignedHeaders=content-type;host;x-acs-action;"
        "x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version,"
        "Signature=0b97533f31da35f0f821b6f48acf1ff260e064bdf7e0be711bf9e4c48e15949a"
    )


@given(st.dictionaries(st.from_regex(r"[A-Za-z][A-Za-z0-9.]{0,8}", fullmatch=True), texts))
def test_v3_authorization_equals_the_sdk_for_any_query(query: dict[str, str]) -> None:
    out = sign_v3("POST", "/", query, V3_HEADERS, b"", AK, SECRET, now=T0, nonce="n")
    sdk = OpenApiUtil.get_authorization(
        _tea_request(query, V3_HEADERS | out), "ACS3-HMAC-SHA256",
        out["x-acs-content-sha256"], AK, SECRET,
    )  # fmt: skip
    assert out["authorization"] == sdk


# --- verification ---------------------------------------------------------------------------


async def test_genuine_calls_pass() -> None:
    clock = ManualClock(T0)
    v = verifier(clock)
    await v.verify(v1_call(), SECRET)
    await v.verify(v1_call(method="GET", nonce="n2"), SECRET)
    await v.verify(v3_call(nonce="n4"), SECRET)
    await v.verify(v3_call(b"", (("ImageURL", "http://x/a b"),), method="GET", nonce="n3"), SECRET)


async def test_wrong_secret_is_refused() -> None:
    v = verifier(ManualClock(T0))
    assert (await refused(v, v1_call(), "other")).code == "SignatureDoesNotMatch"
    assert (await refused(v, v3_call(), "other")).code == "SignatureDoesNotMatch"


def _swap(
    params: tuple[tuple[str, str], ...], name: str, value: str
) -> tuple[tuple[str, str], ...]:
    return tuple((k, value if k == name else v) for k, v in params)


Tamper = Callable[[SignedCall], SignedCall]

V1_TAMPERINGS: dict[str, Tamper] = {
    "param value": lambda c: replace(c, params=_swap(c.params, "Action", "DetectBody")),
    "param added": lambda c: replace(c, params=(*c.params, ("MaxFaceNumber", "5"))),
    "blank param dropped": lambda c: replace(
        c, params=tuple(p for p in c.params if p[0] != "SignatureType")
    ),
    "method": lambda c: replace(c, method="GET"),
    "signature": lambda c: replace(c, params=_swap(c.params, "Signature", "AAAA" + "=" * 24)),
    "signature missing": lambda c: replace(
        c, params=tuple(p for p in c.params if p[0] != "Signature")
    ),
    "signature twice": lambda c: replace(c, params=(*c.params, ("Signature", "x"))),
    "non-ascii signature": lambda c: replace(c, params=_swap(c.params, "Signature", "é")),
    "other key id": lambda c: replace(c, access_key_id="someone-else"),
    "sha256 method": lambda c: replace(c, params=_swap(c.params, "SignatureMethod", "HMAC-SHA256")),
}


@pytest.mark.parametrize("tamper", V1_TAMPERINGS.values(), ids=V1_TAMPERINGS.keys())
async def test_v1_tampering_is_refused(tamper: Tamper) -> None:
    v = verifier(ManualClock(T0))
    call = tamper(v1_call())
    assert (await refused(v, call)).code == "SignatureDoesNotMatch"


def _header(name: str, value: str | None) -> Tamper:
    def apply(c: SignedCall) -> SignedCall:
        headers = dict(c.headers)
        if value is None:
            del headers[name]
        else:
            headers[name] = value
        return replace(c, headers=headers)

    return apply


V3_TAMPERINGS: dict[str, Tamper] = {
    "query param": lambda c: replace(c, params=(("ImageURL", "http://x/b"),)),
    "method": lambda c: replace(c, method="PUT"),
    "path": lambda c: replace(c, path="/other"),
    "signed header": _header("x-acs-action", "DetectBody"),
    "host": _header("host", "ocr.cn-shanghai.aliyuncs.com"),
    "unsigned x-acs header added": _header("x-acs-extra", "1"),
    "signature": lambda c: _header("authorization", c.headers["authorization"][:-4] + "0000")(c),
    "authorization missing": _header("authorization", None),
    "authorization garbled": _header("authorization", "ACS3-HMAC-SHA256 Credential"),
    "other algorithm": lambda c: _header(
        "authorization", c.headers["authorization"].replace("SHA256", "SM3", 1)
    )(c),
    "signed header missing": _header("x-acs-version", None),
    "host not signed": lambda c: _header(
        "authorization", c.headers["authorization"].replace("host;", "")
    )(c),
    "other key id": lambda c: replace(c, access_key_id="someone-else"),
}


@pytest.mark.parametrize("tamper", V3_TAMPERINGS.values(), ids=V3_TAMPERINGS.keys())
async def test_v3_tampering_is_refused(tamper: Tamper) -> None:
    v = verifier(ManualClock(T0))
    call = tamper(v3_call(query=(("ImageURL", "http://x/a"),)))
    assert (await refused(v, call)).code == "SignatureDoesNotMatch"


async def test_v3_body_must_match_its_content_hash() -> None:
    v = verifier(ManualClock(T0))
    error = await refused(v, replace(v3_call(), body=FORM + b"&MaxFaceNumber=5"))
    assert error.code == "SignatureDoesNotMatch"
    assert "content hash mismatch" in error.message.lower()
    # A hash header rewritten to the new body still breaks the signature.
    tampered = replace(v3_call(), body=b"x")
    tampered = _header("x-acs-content-sha256", hashlib.sha256(b"x").hexdigest())(tampered)
    error = await refused(v, tampered)
    assert error.code == "SignatureDoesNotMatch"
    assert "content hash" not in error.message.lower()


@pytest.mark.parametrize("style", ["v1", "v3"])
@pytest.mark.parametrize("minutes", [14, -14, 15, -15])
async def test_timestamps_within_fifteen_minutes_pass(style: str, minutes: int) -> None:
    clock = ManualClock(T0)
    make = v1_call if style == "v1" else v3_call
    await verifier(clock).verify(make(at=T0 + timedelta(minutes=minutes)), SECRET)


@pytest.mark.parametrize("style", ["v1", "v3"])
@pytest.mark.parametrize("minutes", [16, -16])
async def test_timestamps_further_off_are_refused(style: str, minutes: int) -> None:
    clock = ManualClock(T0)
    make = v1_call if style == "v1" else v3_call
    error = await refused(verifier(clock), make(at=T0 + timedelta(minutes=minutes)))
    assert error.code == "InvalidTimeStamp.Expired"


async def test_missing_or_malformed_timestamp() -> None:
    v = verifier(ManualClock(T0))
    call = v1_call()
    gone = replace(call, params=tuple(p for p in call.params if p[0] != "Timestamp"))
    assert (await refused(v, gone)).code == "MissingParameter"
    for bad in ("yesterday", "2026-01-01 00:00:00", "2026-01-01T00:00:00", "2026-13-01T00:00:00Z"):
        error = await refused(v, replace(call, params=_swap(call.params, "Timestamp", bad)))
        assert error.code == "InvalidTimeStamp.Expired"
        assert "format" in error.message
    error = await refused(v, _header("x-acs-date", None)(v3_call()))
    assert (error.code, "x-acs-date" in error.message) == ("MissingParameter", True)


async def test_nonce_reuse_is_refused_and_forgeries_burn_nothing() -> None:
    clock = ManualClock(T0)
    v = verifier(clock)
    await v.verify(v3_call(nonce="n1"), SECRET)
    assert (await refused(v, v3_call(nonce="n1"))).code == "SignatureNonceUsed"
    # The nonce is held until its timestamp + 15 min: a replay just inside the window fails.
    clock.advance(14 * 60)
    assert (await refused(v, v3_call(nonce="n1"))).code == "SignatureNonceUsed"
    # A forged request with a fresh nonce is refused for its signature and leaves it unused.
    assert (await refused(v, v1_call(nonce="n2"), "forged")).code == "SignatureDoesNotMatch"
    await v.verify(v1_call(nonce="n2", at=clock.now()), SECRET)


async def test_nonces_are_per_access_key() -> None:
    clock = ManualClock(T0)
    v = verifier(clock)
    await v.verify(v1_call(nonce="same"), SECRET)
    other = sign_v1_params("POST", [("Action", "X")], "other", SECRET, now=T0, nonce="same")
    await v.verify(SignedCall("v1", "POST", "/", tuple(other), {}, b"", "other"), SECRET)


async def test_missing_nonce_is_a_missing_parameter() -> None:
    v = verifier(ManualClock(T0))
    call = v1_call()
    gone = replace(call, params=tuple(p for p in call.params if p[0] != "SignatureNonce"))
    assert (await refused(v, gone)).code == "MissingParameter"
    error = await refused(v, _header("x-acs-signature-nonce", None)(v3_call()))
    assert (error.code, "x-acs-signature-nonce" in error.message) == ("MissingParameter", True)


def test_extractors() -> None:
    at = T0 + timedelta(seconds=7)
    assert extract_timestamp(v1_call(at=at)) == at
    assert extract_timestamp(v3_call(at=at)) == at
    assert extract_nonce(v1_call(nonce="abc")) == "abc"
    assert extract_nonce(v3_call(nonce="def")) == "def"


# --- properties ----------------------------------------------------------------------------

fast = settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow], deadline=None)


@fast
@given(st.lists(st.tuples(names, texts), max_size=6), st.sampled_from(["GET", "POST"]))
async def test_v1_round_trip(params: list[tuple[str, str]], method: str) -> None:
    clock = ManualClock(T0)
    await verifier(clock).verify(v1_call(params, method=method), SECRET)


@fast
@given(st.binary(max_size=256), st.lists(st.tuples(names, texts), max_size=4), texts)
async def test_v3_round_trip(body: bytes, query: list[tuple[str, str]], path: str) -> None:
    clock = ManualClock(T0)
    call = v3_call(body, tuple(query), path="/" + path)
    await verifier(clock).verify(call, SECRET)
    assert (await refused(verifier(clock), call, SECRET + "x")).code == "SignatureDoesNotMatch"


@given(st.text())
def test_parse_v3_authorization_only_raises_value_error(text: str) -> None:
    for candidate in (text, "ACS3-HMAC-SHA256 " + text):
        with contextlib.suppress(ValueError):
            parse_v3_authorization(candidate)


@given(st.one_of(st.text(), st.from_regex(r"\d{4}-\d\d-\d\dT.{8,12}Z", fullmatch=True)))
def test_any_timestamp_text_is_parsed_or_refused_as_such(text: str) -> None:
    call = SignedCall("v3", "GET", "/", (), {"x-acs-date": text}, b"", AK)
    code = None
    try:
        extract_timestamp(call)
    except ApiError as error:
        code = error.code
    assert code in (None, "InvalidTimeStamp.Expired", "MissingParameter")


@given(st.lists(st.sampled_from(["Credential=", "SignedHeaders=", "Signature=", ",", ";",
                                 "a", "A", " ", "=", "host"]), max_size=12))  # fmt: skip
def test_parse_v3_authorization_structured_junk(parts: list[str]) -> None:
    try:
        auth = parse_v3_authorization("ACS3-HMAC-SHA256 " + "".join(parts))
    except ValueError:
        return
    assert auth.access_key_id
    assert auth.signature
    assert all(auth.signed_headers)


def test_parse_v3_authorization_accepts_spaces_and_any_order() -> None:
    auth = parse_v3_authorization(
        "ACS3-HMAC-SHA256 Signature=abc, Credential=AK, SignedHeaders=host;x-acs-date"
    )
    assert (auth.access_key_id, auth.signed_headers, auth.signature) == (
        "AK",
        ("host", "x-acs-date"),
        "abc",
    )
