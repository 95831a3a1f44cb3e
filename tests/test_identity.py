"""Identification of a call from its raw ASGI request (billing rules, section 2)."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode

import pytest
from aliyunsdkcore.auth.composer.rpc_signature_composer import get_signed_url

from metering_middleware.catalog import Catalog, default_catalog
from metering_middleware.errors import ApiError
from metering_middleware.identity import (
    INVALID_PARAMETER,
    IdentityResolver,
    is_form,
    parse_params,
    wants_xml,
)
from metering_middleware.signing import v1_string_to_sign

Headers = list[tuple[bytes, bytes]]

AK = "LTAI5tTestKey0001"
FORM = (b"content-type", b"application/x-www-form-urlencoded; charset=UTF-8")
V3_AUTH = (
    f"ACS3-HMAC-SHA256 Credential={AK},"
    "SignedHeaders=host;x-acs-action;x-acs-content-sha256;x-acs-date;"
    "x-acs-signature-nonce;x-acs-version,Signature=0f1e2d3c4b5a69788796a5b4c3d2e1f0"
)


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return default_catalog()


@pytest.fixture(scope="module")
def resolver(catalog: Catalog) -> IdentityResolver:
    return IdentityResolver(catalog)


def v1_query(**params: str) -> bytes:
    base = {
        "Action": "DetectFace",
        "Version": "2019-12-30",
        "AccessKeyId": AK,
        "SignatureMethod": "HMAC-SHA1",
        "SignatureVersion": "1.0",
        "SignatureNonce": "5c2b0c1e-5d1a-4a0e-9b61-0d6f0e7b1a11",
        "Timestamp": "2024-05-01T12:00:00Z",
        "Signature": "q1w2e3r4t5y6u7i8o9p0+/=",
    }
    base.update(params)
    return urlencode({k: v for k, v in base.items() if v != "<drop>"}).encode()


def v3_headers(host: str = "facebody.cn-shanghai.aliyuncs.com", **extra: str) -> Headers:
    hdrs = {
        "host": host,
        "x-acs-action": "DetectFace",
        "x-acs-version": "2019-12-30",
        "x-acs-date": "2024-05-01T12:00:00Z",
        "x-acs-signature-nonce": "9a8b7c6d",
        "x-acs-content-sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "authorization": V3_AUTH,
        "accept": "application/json",
    }
    hdrs.update({k.replace("_", "-"): v for k, v in extra.items()})
    return [(k.encode(), v.encode()) for k, v in hdrs.items() if v != "<drop>"]


def refusal(resolver: IdentityResolver, *args: object) -> ApiError:
    with pytest.raises(ApiError) as info:
        resolver.resolve(*args)  # type: ignore[arg-type]
    return info.value


# --- V1 ---------------------------------------------------------------------


def test_v1_get_from_the_official_core_sdk(resolver: IdentityResolver) -> None:
    # aliyun-python-sdk-core builds RPC calls as GET with everything in the query
    # and an empty SignatureType= among the signed parameters.
    url, _ = get_signed_url(
        {"Action": "RecognizeLicensePlate", "Version": "2019-12-30", "RegionId": "cn-shanghai"},
        AK,
        "secret",
        None,
        "GET",
        {},
    )
    query = url.partition("?")[2].encode()
    ident = resolver.resolve("GET", "/", query, [(b"host", b"127.0.0.1:8080")], b"")
    assert (ident.style, ident.access_key_id) == ("v1", AK)
    assert (ident.category, ident.action, ident.version) == (
        "ocr",
        "RecognizeLicensePlate",
        "2019-12-30",
    )
    assert ident.item.item == "ocr.RecognizeLicensePlate"
    assert ident.wants_xml  # no Format: XML is the RPC default
    assert ("SignatureType", "") in ident.signed.params
    assert ident.signed.params == tuple(parse_qsl(query.decode(), keep_blank_values=True))
    assert (ident.signed.style, ident.signed.method, ident.signed.path) == ("v1", "GET", "/")
    assert ident.signed.access_key_id == AK
    assert ident.signed.body == b""


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_decoded_params_rebuild_the_sdks_string_to_sign(
    resolver: IdentityResolver, method: str
) -> None:
    # What the SDK signed must come back exactly: spaces, '+', '*', '~', '%', UTF-8,
    # blank values, and (for POST) the form parameters signed with the query.
    tricky = "https://a/b c+d*e~f%g/\u4e2d\u6587.png?x=1&y=2"
    body_params = {"ImageURL": tricky, "Empty": ""} if method == "POST" else {}
    query_params = {"Action": "DetectFace", "Version": "2019-12-30"}
    if method == "GET":
        query_params["ImageURL"] = tricky
    url, string_to_sign = get_signed_url(query_params, AK, "secret", "JSON", method, body_params)
    body = urlencode(body_params).encode()
    headers = [FORM] if body_params else []
    ident = resolver.resolve(method, "/", url.partition("?")[2].encode(), headers, body)
    assert v1_string_to_sign(method, ident.signed.params) == string_to_sign
    assert ("ImageURL", tricky) in ident.signed.params


def test_v1_post_reads_query_then_form(resolver: IdentityResolver) -> None:
    query = v1_query(Action="<drop>", Version="<drop>", Format="JSON")
    body = urlencode(
        {"Action": "DetectFace", "Version": "2019-12-30", "ImageURL": "https://x/a b.png"}
    ).encode()
    ident = resolver.resolve("POST", "/", query, [FORM], body)
    assert (ident.category, ident.action) == ("facebody", "DetectFace")
    assert not ident.wants_xml
    names = [k for k, _ in ident.signed.params]
    assert names[-3:] == ["Action", "Version", "ImageURL"]
    assert names[0] == "AccessKeyId"
    assert ("ImageURL", "https://x/a b.png") in ident.signed.params
    assert ident.signed.body == body


def test_v1_body_that_is_not_a_form_is_refused(resolver: IdentityResolver) -> None:
    # Its signature would not cover it, and an upstream might read it all the same.
    query = v1_query(Action="<drop>")
    body = b"Action=DetectFace"
    err = refusal(resolver, "POST", "/", query, [(b"content-type", b"application/json")], body)
    assert (err.status, err.code) == (415, "UnsupportedMediaType")


def test_v1_empty_signature_type_is_kept(resolver: IdentityResolver) -> None:
    query = v1_query(SignatureType="") + b"&Flag"
    ident = resolver.resolve("GET", "/", query, [], b"")
    assert ("SignatureType", "") in ident.signed.params
    assert ident.signed.params[-1] == ("Flag", "")


def test_parse_params_keeps_order_blank_values_and_plus_as_space() -> None:
    assert parse_params(b"b=2&a=&&c&d=x+y%2B%3D&e=%E4%BA%BA") == [
        ("b", "2"),
        ("a", ""),
        ("c", ""),
        ("d", "x y+="),
        ("e", "\u4eba"),
    ]


@pytest.mark.parametrize(
    "query", [b"Action=%FF%FE", b"Action=\xff", b"%C3%28=1", b"Version=%E4%BA"]
)
def test_invalid_utf8_is_refused_with_a_clear_code(
    resolver: IdentityResolver, query: bytes
) -> None:
    err = refusal(resolver, "GET", "/", v1_query() + b"&" + query, [], b"")
    assert err.kind is INVALID_PARAMETER
    assert err.code == "InvalidParameter"
    assert "UTF-8" in err.message


def test_invalid_utf8_in_the_form_names_the_form(resolver: IdentityResolver) -> None:
    err = refusal(resolver, "POST", "/", v1_query(), [FORM], b"ImageURL=%80")
    assert err.code == "InvalidParameter"
    assert "form body" in err.message


def test_conflicting_duplicates_are_refused(resolver: IdentityResolver) -> None:
    # The gateway must never bill one action while the upstream reads another.
    err = refusal(resolver, "POST", "/", v1_query(), [FORM], b"Action=CompareFace")
    assert err.code == "InvalidParameter"
    assert '"Action"' in err.message
    same = resolver.resolve("POST", "/", v1_query(), [FORM], b"Action=DetectFace")
    assert same.action == "DetectFace"


@pytest.mark.parametrize("name", ["AccessKeyId", "Action", "Version", "Signature"])
@pytest.mark.parametrize("how", ["<drop>", ""])
def test_v1_missing_parameters(resolver: IdentityResolver, name: str, how: str) -> None:
    err = refusal(resolver, "GET", "/", v1_query(**{name: how}), [], b"")
    # No action at all: not identifiable as a VIAPI call; otherwise name what is missing.
    assert err.code == ("InvalidAction.NotFound" if name == "Action" else "MissingParameter")
    assert err.status == 400
    assert f'"{name}"' in err.message


def test_nothing_at_all_is_not_identifiable(resolver: IdentityResolver) -> None:
    err = refusal(resolver, "GET", "/", b"", [], b"")
    assert (err.code, err.status) == ("InvalidAction.NotFound", 400)


# --- V3 ---------------------------------------------------------------------


def test_v3_headers(resolver: IdentityResolver) -> None:
    headers = [*v3_headers(), (b"X-Custom", b"a"), (b"x-custom", b"b"), FORM]
    ident = resolver.resolve("POST", "/", b"b=2&a=1", headers, b"ImageURL=u")
    assert (ident.style, ident.access_key_id) == ("v3", AK)
    assert (ident.category, ident.action, ident.version) == (
        "facebody",
        "DetectFace",
        "2019-12-30",
    )
    assert not ident.wants_xml
    signed = ident.signed
    assert signed.style == "v3"
    assert signed.params == (("b", "2"), ("a", "1"))  # V3: the query only
    assert signed.headers["x-custom"] == "a,b"
    assert signed.headers["authorization"] == V3_AUTH
    assert all(name == name.lower() for name in signed.headers)
    assert (signed.body, signed.access_key_id) == (b"ImageURL=u", AK)


def test_v3_credential_with_spaces_after_commas(resolver: IdentityResolver) -> None:
    auth = f"ACS3-HMAC-SHA256 Credential={AK}, SignedHeaders=host, Signature=abc"
    ident = resolver.resolve("POST", "/", b"", v3_headers(authorization=auth), b"")
    assert ident.access_key_id == AK


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"authorization": "ACS3-HMAC-SHA256 SignedHeaders=host,Signature=abc"}, "AccessKeyId"),
        ({"authorization": "ACS3-HMAC-SHA256 Credential=,Signature=abc"}, "AccessKeyId"),
        ({"authorization": f"ACS3-HMAC-SHA256 Credential={AK}"}, "Signature"),
        ({"x_acs_action": "<drop>"}, "x-acs-action"),
        ({"x_acs_version": ""}, "x-acs-version"),
    ],
)
def test_v3_missing_parameters(
    resolver: IdentityResolver, change: dict[str, str], named: str
) -> None:
    err = refusal(resolver, "POST", "/", b"", v3_headers(**change), b"")
    expected = "InvalidAction.NotFound" if named == "x-acs-action" else "MissingParameter"
    assert err.code == expected
    assert named in err.message


def test_v3_conflicting_credentials_are_refused(resolver: IdentityResolver) -> None:
    auth = "ACS3-HMAC-SHA256 Credential=A,Credential=B,Signature=abc"
    err = refusal(resolver, "POST", "/", b"", v3_headers(authorization=auth), b"")
    assert err.code == "InvalidParameter"


# --- category ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "category"),
    [
        ("facebody.cn-shanghai.aliyuncs.com", "facebody"),
        ("FACEBODY.cn-shanghai.aliyuncs.com", "facebody"),
        ("127.0.0.1:8080", "facebody"),
        ("gateway.example.com", "facebody"),
        ("localhost:9000", "facebody"),
        ("", "facebody"),
    ],
)
def test_category_from_host_or_catalog(
    resolver: IdentityResolver, host: str, category: str
) -> None:
    ident = resolver.resolve("GET", "/", v1_query(), [(b"host", host.encode())], b"")
    assert ident.category == category


def test_host_category_must_have_the_action(resolver: IdentityResolver) -> None:
    headers = [(b"host", b"ocr.cn-shanghai.aliyuncs.com")]
    err = refusal(resolver, "GET", "/", v1_query(), headers, b"")
    assert err.code == "InvalidAction.NotFound"
    assert "ocr" in err.message


def test_several_host_headers_are_refused(resolver: IdentityResolver) -> None:
    headers = [(b"host", b"facebody.cn-shanghai.aliyuncs.com"), (b"host", b"ocr.x")]
    err = refusal(resolver, "GET", "/", v1_query(), headers, b"")
    assert err.code == "InvalidParameter"


AMBIGUOUS = {"Action": "GetAsyncJobResult", "Version": "2019-12-30"}


def test_ambiguous_pair_without_host_is_refused(resolver: IdentityResolver) -> None:
    headers = [(b"host", b"gateway.example.com")]
    err = refusal(resolver, "GET", "/", v1_query(**AMBIGUOUS), headers, b"")
    assert err.code == "InvalidAction.NotFound"
    assert "several categories" in err.message
    assert "ocr" in err.message
    assert "imageseg" in err.message
    assert "mapping" in err.message


@pytest.mark.parametrize("category", ["ocr", "imageseg"])
def test_ambiguous_pair_with_host(resolver: IdentityResolver, category: str) -> None:
    headers = [(b"host", f"{category}.cn-shanghai.aliyuncs.com".encode())]
    ident = resolver.resolve("GET", "/", v1_query(**AMBIGUOUS), headers, b"")
    assert ident.category == category
    assert ident.item.item == f"{category}.GetAsyncJobResult"


def test_ambiguous_pair_with_override(catalog: Catalog) -> None:
    resolver = IdentityResolver(
        catalog, category_overrides={("GetAsyncJobResult", "2019-12-30"): "imageseg"}
    )
    ident = resolver.resolve("GET", "/", v1_query(**AMBIGUOUS), [], b"")
    assert ident.category == "imageseg"
    # The host still wins over the mapping.
    headers = [(b"host", b"ocr.cn-hangzhou.aliyuncs.com")]
    assert resolver.resolve("GET", "/", v1_query(**AMBIGUOUS), headers, b"").category == "ocr"


@pytest.mark.parametrize(
    "override",
    [
        {("GetAsyncJobResult", "2019-12-30"): "facebody"},
        {("GetAsyncJobResult", "2020-03-20"): "ocr"},
        {("NoSuchAction", "2019-12-30"): "ocr"},
    ],
)
def test_override_naming_a_missing_api_is_refused_at_start(
    catalog: Catalog, override: dict[tuple[str, str], str]
) -> None:
    with pytest.raises(ValueError, match="no such API"):
        IdentityResolver(catalog, category_overrides=override)


def test_same_action_other_version_is_unique(resolver: IdentityResolver) -> None:
    query = v1_query(Action="GetAsyncJobResult", Version="2019-09-30")
    assert resolver.resolve("GET", "/", query, [], b"").category == "imageenhan"


def test_unknown_action(resolver: IdentityResolver) -> None:
    err = refusal(resolver, "GET", "/", v1_query(Action="DeleteEverything"), [], b"")
    assert (err.code, err.status) == ("InvalidAction.NotFound", 400)
    assert "DeleteEverything" in err.message


def test_wrong_version_names_the_known_one(resolver: IdentityResolver) -> None:
    err = refusal(resolver, "GET", "/", v1_query(Version="2018-01-01"), [], b"")
    assert err.code == "InvalidAction.NotFound"
    assert "2018-01-01" in err.message
    assert "2019-12-30" in err.message


def test_wrong_version_on_a_category_host(resolver: IdentityResolver) -> None:
    headers = v3_headers(x_acs_version="2020-03-20")
    err = refusal(resolver, "POST", "/", b"", headers, b"")
    assert err.code == "InvalidAction.NotFound"
    assert "2020-03-20" in err.message
    assert "2019-12-30" in err.message


def test_long_caller_text_is_not_echoed_whole(resolver: IdentityResolver) -> None:
    err = refusal(resolver, "GET", "/", v1_query(Action="A" * 5000), [], b"")
    assert len(err.message) < 200


# --- error format -----------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "xml"),
    [("<drop>", True), ("XML", True), ("xml", True), ("JSON", False), ("json", False)],
)
def test_wants_xml_v1(resolver: IdentityResolver, fmt: str, xml: bool) -> None:
    query = v1_query(Format=fmt)
    assert resolver.resolve("GET", "/", query, [], b"").wants_xml is xml
    assert wants_xml(query, []) is xml


def test_wants_xml_v3_never(resolver: IdentityResolver) -> None:
    query = b"Format=XML"
    assert not resolver.resolve("POST", "/", query, v3_headers(), b"").wants_xml
    assert not wants_xml(query, v3_headers())


def test_wants_xml_reads_the_form_when_given() -> None:
    assert not wants_xml(b"Action=X", [FORM], b"a=1&Format=JSON")
    assert wants_xml(b"Action=X", [(b"content-type", b"text/plain")], b"Format=JSON")
    assert not wants_xml(b"Format=%4A%53%4F%4E", [])


@pytest.mark.parametrize("query", [b"", b"\xff\xfe", b"Format=%FF", b"%%%=&&=&Format"])
def test_wants_xml_never_raises(query: bytes) -> None:
    assert wants_xml(query, [(b"\xff", b"\xff")], b"\x00") is True


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"application/x-www-form-urlencoded", True),
        (b"Application/X-WWW-Form-Urlencoded ; charset=utf-8", True),
        (b"application/json", False),
        (b"multipart/form-data; boundary=x", False),
    ],
)
def test_is_form(value: bytes, expected: bool) -> None:
    assert is_form([(b"Content-Type", value)]) is expected
    assert not is_form([])


@pytest.mark.parametrize(
    "content_type",
    [
        b"application/x-www-form-urlencodedX",
        b"text/plain",
        b"application/json",
        b"multipart/form-data; boundary=x",
        b"",
    ],
)
def test_v1_unread_bodies_are_refused(resolver: IdentityResolver, content_type: bytes) -> None:
    headers = [(b"content-type", content_type)] if content_type else []
    err = refusal(resolver, "POST", "/", v1_query(), headers, b"Action=GetAsyncJobResult")
    assert (err.status, err.code) == (415, "UnsupportedMediaType")


def test_form_media_type_is_read_in_any_case_and_only_as_utf8(
    resolver: IdentityResolver,
) -> None:
    query = v1_query(Action="<drop>")
    upper = [(b"content-type", b"APPLICATION/X-WWW-FORM-URLENCODED; charset=utf-8")]
    ident = resolver.resolve("POST", "/", query, upper, b"Action=DetectFace")
    assert ident.action == "DetectFace" and ident.form == (("Action", "DetectFace"),)
    gbk = [(b"content-type", b"application/x-www-form-urlencoded; charset=gbk")]
    err = refusal(resolver, "POST", "/", query, gbk, b"Action=DetectFace")
    assert err.code == "UnsupportedMediaType"


def test_several_content_types_are_refused(resolver: IdentityResolver) -> None:
    two = [
        (b"content-type", b"application/x-www-form-urlencoded"),
        (b"content-type", b"text/plain"),
    ]
    for headers in (two, [*v3_headers(), *two]):
        err = refusal(resolver, "POST", "/", v1_query(), headers, b"ImageURL=x")
        assert (err.code, err.message) == (
            "InvalidParameter",
            "The request has several Content-Type headers.",
        )


@pytest.mark.parametrize(
    ("query", "body"),
    [
        (b"Action=RecognizeLicensePlate", b""),
        (b"Version=2020-01-01", b""),
        (b"", b"Action=RecognizeLicensePlate"),
        (b"ImageURL=x", b"ImageURL=y&Version=2018-01-01"),
    ],
)
def test_v3_parameters_naming_another_call_are_refused(
    resolver: IdentityResolver, query: bytes, body: bytes
) -> None:
    headers = [*v3_headers(), (b"content-type", b"application/x-www-form-urlencoded")]
    err = refusal(resolver, "POST", "/", query, headers, body)
    assert err.code == "InvalidParameter" and "disagrees" in err.message


def test_v3_parameters_agreeing_with_the_headers_are_kept(resolver: IdentityResolver) -> None:
    headers = [*v3_headers(), (b"content-type", b"application/x-www-form-urlencoded")]
    ident = resolver.resolve("POST", "/", b"Action=DetectFace", headers, b"ImageURL=y")
    assert ident.query == (("Action", "DetectFace"),)
    assert ident.form == ()  # a V3 body is forwarded as signed, not kept


def test_v3_form_of_another_kind_is_refused(resolver: IdentityResolver) -> None:
    headers = [*v3_headers(), (b"content-type", b"application/x-www-form-urlencodedX")]
    err = refusal(resolver, "POST", "/", b"", headers, b"Action=RecognizeLicensePlate")
    assert err.code == "UnsupportedMediaType"
    # A payload that is no form (JSON, a stream) stays the signed body it is.
    headers = [*v3_headers(), (b"content-type", b"application/json")]
    assert resolver.resolve("POST", "/", b"", headers, b'{"Action": "x"}').form == ()
