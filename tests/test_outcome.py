"""Classifying the upstream's answer (billing rules, section 1)."""

from __future__ import annotations

import gzip
import json
import zlib

import pytest

from metering_middleware.errors import error_body
from metering_middleware.outcome import (
    DEFAULT_CHARGEABLE_CODES,
    MAX_DECODED,
    ErrorBodyTee,
    decode_body,
    is_chargeable,
    parse_error_code,
    sniff_request_id,
)

NO_FACE = "InvalidImage.NotFoundFace"
JSON_BODY = error_body(NO_FACE, "no face in the image", "5A1B-REQ")[0]
XML_BODY = error_body(NO_FACE, "no face in the image", "5A1B-REQ", xml=True)[0]


def raw_deflate(data: bytes) -> bytes:
    c = zlib.compressobj(wbits=-15)
    return c.compress(data) + c.flush()


# --- codes ------------------------------------------------------------------


@pytest.mark.parametrize("body", [JSON_BODY, XML_BODY])
def test_viapi_error_bodies(body: bytes) -> None:
    assert parse_error_code(body) == NO_FACE


def test_json_code_anywhere_at_top_level_and_whitespace() -> None:
    body = (
        b'\xef\xbb\xbf \n{ "RequestId" : "r", "Data": {"Code": "Nested"} ,\n'
        b' "Code" : "Throttling.User" }'
    )
    assert parse_error_code(body) == "Throttling.User"


@pytest.mark.parametrize(
    "body",
    [
        b'{"Data": {"Code": "InvalidImage.NotFoundFace"}}',  # nested: not the answer's code
        b'{"Error": {"Code": "InvalidImage.NotFoundFace"}}',  # undocumented shape
        b'{"code": "InvalidImage.NotFoundFace"}',  # case-sensitive
        b'{"Code": 404}',
        b'{"Code": ""}',
        b'["Code", "InvalidImage.NotFoundFace"]',
        b'{"Message": "Code: InvalidImage.NotFoundFace"}',
        json.dumps({"Code": "X" * 129}).encode(),
    ],
)
def test_json_without_a_top_level_string_code(body: bytes) -> None:
    assert parse_error_code(body) is None


@pytest.mark.parametrize(
    "body",
    [
        b"<Error><Code>Throttling.User</Code></Error>",
        b"<?xml version='1.0' encoding='UTF-8'?>\n<Error>\n<Code>\n Throttling.User </Code>",
        b'<Error xmlns="urn:acs"><RequestId>r</RequestId><Code>Throttling.User</Code></Error>',
        b'<a:Error xmlns:a="urn:acs"><a:Code>Throttling.User</a:Code></a:Error>',
        b"<Error><Code><![CDATA[Throttling.User]]></Code></Error>",
        b"<Error><Code>Throttling.User</Code><Message>broken & after</Message></Error>",
        b"<?xml version='1.0'?><!-- c --><Error><Code>Throttling.User</Code>",
    ],
)
def test_xml_shapes(body: bytes) -> None:
    assert parse_error_code(body) == "Throttling.User"


@pytest.mark.parametrize(
    "body",
    [
        b"<Response><Code>InvalidImage.NotFoundFace</Code></Response>",
        b"<Error><Data><Code>InvalidImage.NotFoundFace</Code></Data></Error>",
        b"<html><body>502 Bad Gateway</body></html>",
        b"<Error><Code>InvalidImage.NotFou",
    ],
)
def test_xml_without_the_error_code(body: bytes) -> None:
    assert parse_error_code(body) is None


def test_xml_entities_are_never_expanded() -> None:
    laughs = (
        b'<?xml version="1.0"?><!DOCTYPE Error [<!ENTITY a "InvalidImage.NotFoundFace">'
        + b"".join(
            b'<!ENTITY l%d "%s">' % (i, b"&l%d;" % (i - 1) * 10 if i else b"lol") for i in range(10)
        )
        + b"]><Error><Code>&a;&l9;</Code></Error>"
    )
    assert parse_error_code(laughs) is None
    external = (
        b'<?xml version="1.0"?><!DOCTYPE Error [<!ENTITY x SYSTEM "file:///etc/hostname">]>'
        b"<Error><Code>&x;</Code></Error>"
    )
    assert parse_error_code(external) is None


def test_predefined_xml_escapes_are_read() -> None:
    assert parse_error_code(b"<Error><Code>A&amp;B</Code></Error>") == "A&B"


# --- encodings --------------------------------------------------------------


@pytest.mark.parametrize("coding", ["gzip", "x-gzip", "GZIP"])
def test_gzip(coding: str) -> None:
    assert parse_error_code(gzip.compress(JSON_BODY), content_encoding=coding) == NO_FACE


def test_concatenated_gzip_members() -> None:
    body = gzip.compress(JSON_BODY[:30]) + gzip.compress(JSON_BODY[30:])
    assert parse_error_code(body, content_encoding="gzip") == NO_FACE


def test_deflate_zlib_wrapped_and_raw() -> None:
    assert parse_error_code(zlib.compress(XML_BODY), content_encoding="deflate") == NO_FACE
    assert parse_error_code(raw_deflate(XML_BODY), content_encoding="deflate") == NO_FACE


def test_stacked_encodings_are_undone_in_reverse() -> None:
    body = gzip.compress(zlib.compress(JSON_BODY))
    assert parse_error_code(body, content_encoding="deflate, gzip") == NO_FACE
    assert parse_error_code(body, content_encoding="gzip, deflate") is None


@pytest.mark.parametrize("coding", [None, "", "identity"])
def test_identity(coding: str | None) -> None:
    assert parse_error_code(JSON_BODY, content_encoding=coding) == NO_FACE


@pytest.mark.parametrize("coding", ["br", "zstd", "compress", "gzip, br"])
def test_unknown_encoding(coding: str) -> None:
    assert parse_error_code(JSON_BODY, content_encoding=coding) is None


def test_encoding_claimed_but_not_applied() -> None:
    assert parse_error_code(JSON_BODY, content_encoding="gzip") is None


def test_zip_bomb_is_capped() -> None:
    bomb_text = b'{"RequestId": "r", ' + b" " * (MAX_DECODED + 10) + b'"Code": "X"}'
    bomb = gzip.compress(bomb_text)
    assert len(bomb) < 20_000
    assert decode_body(bomb, "gzip") is None
    assert parse_error_code(bomb, content_encoding="gzip") is None
    assert parse_error_code(zlib.compress(bomb_text), content_encoding="deflate") is None
    # Just under the cap decodes.
    fits = b'{"Code": "X", "Pad": "' + b" " * (MAX_DECODED - 40) + b'"}'
    assert parse_error_code(gzip.compress(fits), content_encoding="gzip") == "X"


# --- truncation and garbage -------------------------------------------------


def test_truncated_after_the_code_still_counts() -> None:
    # Charged "even if the body breaks off afterwards".
    cut = JSON_BODY.index(b"Message")
    assert parse_error_code(JSON_BODY[:cut]) == NO_FACE
    assert parse_error_code(gzip.compress(JSON_BODY)[:-12], content_encoding="gzip") == NO_FACE
    xml_cut = XML_BODY.index(b"<Message>") + 3
    assert parse_error_code(XML_BODY[:xml_cut]) == NO_FACE


def test_truncated_inside_the_code_is_no_code() -> None:
    cut = JSON_BODY.index(b"NotFoundFace")
    assert parse_error_code(JSON_BODY[:cut]) is None
    assert parse_error_code(JSON_BODY[: cut + 12]) is None  # closing quote missing


@pytest.mark.parametrize(
    "body",
    [b"", b"   ", b"\x00\x01\x02", b"{", b"{{{{", b"<", b"<<>>", b"[" * 100_000, b"not json"],
)
def test_garbage(body: bytes) -> None:
    assert parse_error_code(body) is None
    assert parse_error_code(body, content_encoding="gzip") is None
    assert parse_error_code(body, content_encoding="deflate") is None


def test_deeply_nested_json_before_the_code() -> None:
    body = b'{"Deep": ' + b"[" * 100_000 + b"]" * 100_000 + b', "Code": "X"}'
    assert parse_error_code(body) is None


# --- content type -----------------------------------------------------------


def test_content_type_chooses_the_parser() -> None:
    assert parse_error_code(JSON_BODY, content_type="application/json;charset=utf-8") == NO_FACE
    assert parse_error_code(XML_BODY, content_type="text/xml;charset=utf-8") == NO_FACE


def test_wrong_content_type_falls_back_to_the_sniffed_format() -> None:
    assert parse_error_code(JSON_BODY, content_type="text/xml") == NO_FACE
    assert parse_error_code(XML_BODY, content_type="application/json") == NO_FACE
    assert parse_error_code(JSON_BODY, content_type="text/html") == NO_FACE
    assert parse_error_code(b"<html>Code: X</html>", content_type="application/json") is None


# --- request id -------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b'{"RequestId":"7A3B-11"}',
        b'{"Data": {"Faces": [1, 2]}, "RequestId": "7A3B-11"}',
        b'<?xml version="1.0"?><DetectFaceResponse><RequestId>7A3B-11</RequestId>',
        b'<r:Response xmlns:r="u"><r:RequestId> 7A3B-11 </r:RequestId>',
    ],
)
def test_sniff_request_id(body: bytes) -> None:
    assert sniff_request_id(body) == "7A3B-11"


def test_sniff_request_id_compressed_prefix() -> None:
    faces = json.dumps([{"Rect": [i, i * 7 % 13, i * 3, 40]} for i in range(300)])
    body = gzip.compress(b'{"RequestId": "7A3B-11", "Data": {"Faces": %s}}' % faces.encode())
    assert len(body) > 1000
    assert sniff_request_id(body[: len(body) // 2], content_encoding="gzip") == "7A3B-11"


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\xff" * 2000,
        b'{"Data": "' + b"x" * 1100 + b'", "RequestId": "late"}',  # beyond the first KiB
        b'{"RequestId": "has space"}',
        b'{"RequestId": "<script>"}',
        b'{"RequestId": 12}',
    ],
)
def test_sniff_request_id_nothing(body: bytes) -> None:
    assert sniff_request_id(body) is None
    assert sniff_request_id(body, content_encoding="gzip") is None


# --- tee --------------------------------------------------------------------


def test_tee_keeps_everything_under_the_limit() -> None:
    tee = ErrorBodyTee(limit=10)
    for chunk in (b"abc", b"", b"defg"):
        tee.feed(chunk)
    assert (tee.data, tee.overflowed, tee.size) == (b"abcdefg", False, 7)
    tee.feed(b"hij")
    assert (tee.data, tee.overflowed) == (b"abcdefghij", False)


def test_tee_overflow_keeps_the_prefix() -> None:
    tee = ErrorBodyTee(limit=10)
    tee.feed(b"abcdefgh")
    tee.feed(b"ijklmn")
    assert (tee.data, tee.overflowed, tee.size) == (b"abcdefghij", True, 10)
    tee.feed(b"more")
    assert (tee.data, tee.overflowed) == (b"abcdefghij", True)


def test_tee_copies_mutable_chunks() -> None:
    tee = ErrorBodyTee()
    chunk = bytearray(b"abc")
    tee.feed(chunk)  # type: ignore[arg-type]
    chunk[0] = ord("z")
    assert tee.data == b"abc"
    assert ErrorBodyTee().data == b""


def test_tee_then_parse() -> None:
    tee = ErrorBodyTee(limit=4096)
    body = gzip.compress(JSON_BODY)
    for i in range(0, len(body), 7):
        tee.feed(body[i : i + 7])
    assert not tee.overflowed
    assert parse_error_code(tee.data, content_encoding="gzip") == NO_FACE


# --- charge -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "charged"),
    [
        (200, None, True),
        (200, "Throttling.User", True),
        (404, NO_FACE, True),
        (400, NO_FACE, True),  # proxies rewrite VIAPI's 404
        (404, None, False),
        (400, "Throttling.User", False),
        (400, "Throttling", False),
        (500, "InternalError", False),
        (201, None, False),
        (404, "invalidimage.notfoundface", False),
    ],
)
def test_is_chargeable(status: int, code: str | None, charged: bool) -> None:
    assert is_chargeable(status, code, DEFAULT_CHARGEABLE_CODES) is charged


def test_chargeable_codes_are_data() -> None:
    assert is_chargeable(400, "Custom.Charged", frozenset({"Custom.Charged"}))
    assert not is_chargeable(404, NO_FACE, frozenset())
