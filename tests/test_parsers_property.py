"""Property tests: the request-path parsers survive any input.

``IdentityResolver.resolve`` raises nothing but ``ApiError``; ``parse_error_code``
and ``sniff_request_id`` never raise; random bytes never make a failed call
chargeable unless they really carry the chargeable code.
"""

from __future__ import annotations

import gzip
import json
import zlib
from urllib.parse import quote, urlencode
from xml.sax.saxutils import escape

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from metering_middleware.catalog import default_catalog
from metering_middleware.errors import ApiError
from metering_middleware.identity import CallIdentity, IdentityResolver, parse_params, wants_xml
from metering_middleware.outcome import (
    DEFAULT_CHARGEABLE_CODES,
    ErrorBodyTee,
    is_chargeable,
    parse_error_code,
    sniff_request_id,
)

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
RESOLVER = IdentityResolver(default_catalog())
CATALOG_WORDS = sorted(
    {w for it in default_catalog().items for w in (it.action, it.version, it.category)}
)

# --- identity ---------------------------------------------------------------

NAMES = st.sampled_from(
    ["Action", "Version", "AccessKeyId", "Signature", "Format", "SignatureType", "Timestamp"]
)
WORDS = st.one_of(
    st.sampled_from([*CATALOG_WORDS, "", "JSON", "XML", "json", "AK"]),
    st.text(max_size=12),
)


def _encode_piece(text: str, mode: int) -> bytes:
    if mode == 0:
        return quote(text, safe="").encode()
    if mode == 1:
        return text.encode("utf-8", "surrogatepass")
    return text.encode("latin-1", "replace")


@st.composite
def url_encoded(draw: st.DrawFn) -> bytes:
    """Mostly plausible parameter lists, with raw garbage mixed in."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=120))
    pairs = draw(st.lists(st.tuples(st.one_of(NAMES, st.text(max_size=6)), WORDS), max_size=10))
    mode = draw(st.integers(0, 2))
    pieces = [_encode_piece(k, mode) + b"=" + _encode_piece(v, mode) for k, v in pairs]
    pieces += draw(st.lists(st.sampled_from([b"", b"%", b"%zz", b"%ff", b"+", b"=", b"&"])))
    return b"&".join(draw(st.permutations(pieces)))


HEADER_NAMES = st.sampled_from(
    [
        b"host",
        b"Host",
        b"authorization",
        b"content-type",
        b"x-acs-action",
        b"x-acs-version",
        b"accept",
    ]
)
HEADER_VALUES = st.one_of(
    st.sampled_from(
        [
            b"ACS3-HMAC-SHA256 Credential=AK,SignedHeaders=host,Signature=abc",
            b"ACS3-HMAC-SHA256",
            b"ACS3-HMAC-SHA256 Credential=,Signature=,Credential=B",
            b"application/x-www-form-urlencoded",
            b"facebody.cn-shanghai.aliyuncs.com",
            b"ocr.cn-shanghai.aliyuncs.com:443",
            b"127.0.0.1:8080",
        ]
    ),
    st.sampled_from(CATALOG_WORDS).map(str.encode),
    st.binary(max_size=40),
)
HEADERS = st.lists(
    st.tuples(st.one_of(HEADER_NAMES, st.binary(max_size=10)), HEADER_VALUES), max_size=8
)


ITEMS = st.sampled_from(default_catalog().items)
MAYBE = st.one_of(st.sampled_from(CATALOG_WORDS), st.text(max_size=8))


@st.composite
def plausible_requests(draw: st.DrawFn) -> tuple[bytes, list[tuple[bytes, bytes]], bytes]:
    """Official-SDK-shaped calls, each part sometimes wrong, with random noise added."""

    def usually(valid: str, other: st.SearchStrategy[str]) -> str:
        return valid if draw(st.integers(0, 5)) else draw(other)

    item = draw(ITEMS)
    action = usually(item.action, MAYBE)
    version = usually(item.version, MAYBE)
    access_key_id = usually("LTAI5tAK", st.sampled_from(["", "A,B", "x y"]))
    host = usually(
        f"{item.category}.cn-shanghai.aliyuncs.com",
        st.sampled_from(["127.0.0.1:8080", "ocr.x", ""]),
    )
    headers = [(b"host", host.encode())]
    query: list[tuple[str, str]] = []
    form: list[tuple[str, str]] = []
    if draw(st.booleans()):  # V3
        auth = f"ACS3-HMAC-SHA256 Credential={access_key_id},SignedHeaders=host,Signature=ab"
        headers += [
            (b"authorization", auth.encode()),
            (b"x-acs-action", action.encode("utf-8", "replace")),
            (b"x-acs-version", version.encode("utf-8", "replace")),
        ]
        query += draw(st.lists(st.tuples(NAMES, WORDS), max_size=2))
    else:
        params = [
            ("Action", action),
            ("Version", version),
            ("AccessKeyId", access_key_id),
            ("SignatureType", ""),
            ("Signature", "c2ln+/="),
        ]
        fmt = draw(st.sampled_from([None, "JSON", "XML", "json", "yaml"]))
        if fmt is not None:
            params.append(("Format", fmt))
        for pair in draw(st.permutations(params)):
            (form if draw(st.booleans()) else query).append(pair)
        if form:
            headers.append((b"content-type", b"application/x-www-form-urlencoded"))
    if not draw(st.integers(0, 3)):
        headers += draw(st.lists(st.tuples(HEADER_NAMES, HEADER_VALUES), max_size=2))
    noise = draw(st.lists(st.sampled_from([b"", b"%", b"%zz", b"+", b"=", b"&"]), max_size=2))
    qs = b"&".join([urlencode(query, quote_via=quote).encode(), *noise])
    body = urlencode(form).encode() if form else draw(st.binary(max_size=20))
    return qs, draw(st.permutations(headers)), body


@st.composite
def random_requests(draw: st.DrawFn) -> tuple[bytes, list[tuple[bytes, bytes]], bytes]:
    body = draw(st.one_of(url_encoded(), st.binary(max_size=60)))
    return draw(url_encoded()), draw(HEADERS), body


@FAST
@given(
    method=st.sampled_from(["GET", "POST", "", "\x00"]),
    path=st.text(max_size=10),
    request=st.one_of(plausible_requests(), random_requests()),
)
def test_resolve_raises_only_api_errors(
    method: str, path: str, request: tuple[bytes, list[tuple[bytes, bytes]], bytes]
) -> None:
    query, headers, body = request
    outcome: object
    try:
        outcome = RESOLVER.resolve(method, path, query, headers, body)
    except ApiError as err:
        outcome = err
    event(outcome.code if isinstance(outcome, ApiError) else f"resolved {outcome.style}")
    if isinstance(outcome, ApiError):
        assert (outcome.status, outcome.code) in {
            (400, "MissingParameter"),
            (400, "InvalidParameter"),
            (400, "InvalidAction.NotFound"),
            (415, "UnsupportedMediaType"),
        }
        assert wants_xml(query, headers, body) in (True, False)
        return
    assert isinstance(outcome, CallIdentity)
    ident = outcome
    assert ident.item.category == ident.category
    assert (ident.item.action, ident.item.version) == (ident.action, ident.version)
    assert ident.access_key_id
    assert ident.signed.access_key_id == ident.access_key_id
    assert ident.signed.style == ident.style
    assert all(name == name.lower() for name in ident.signed.headers)
    # The standalone answer-format check agrees with the full resolution.
    assert wants_xml(query, headers, body) is ident.wants_xml
    if ident.style == "v3":
        assert not ident.wants_xml


@FAST
@given(st.lists(st.tuples(st.text(max_size=8), st.text(max_size=8)), max_size=8))
def test_parse_params_round_trips_urlencode(pairs: list[tuple[str, str]]) -> None:
    pairs = [(k.encode("utf-8", "replace").decode(), v) for k, v in pairs if k]
    pairs = [(k, v.encode("utf-8", "replace").decode()) for k, v in pairs]
    encoded = urlencode(pairs).encode()
    assert parse_params(encoded) == pairs
    assert parse_params(urlencode(pairs, quote_via=quote).encode()) == pairs


# --- outcome ----------------------------------------------------------------

ENCODINGS = st.one_of(
    st.sampled_from([None, "", "identity", "gzip", "x-gzip", "deflate", "br", "gzip, deflate"]),
    st.text(max_size=10),
)
CONTENT_TYPES = st.one_of(
    st.none(),
    st.sampled_from(["application/json", "text/xml", "application/xml", "text/html"]),
    st.text(max_size=20),
)
STATUSES = st.integers(100, 599).filter(lambda s: s != 200)


def _every_decoding(data: bytes) -> list[bytes]:
    """The body as-is and through every decoder, written independently of the module."""
    out = [data]
    for wbits in (47, 15, -15):
        d = zlib.decompressobj(wbits)
        try:
            out.append(d.decompress(data, 4 << 20))
        except zlib.error:
            continue
        if wbits == 47 and d.eof and d.unused_data:
            out.extend(_every_decoding(d.unused_data))
    return out


def _compress(payload: bytes, how: str) -> bytes:
    if how == "gzip":
        return gzip.compress(payload)
    if how == "deflate":
        return zlib.compress(payload)
    c = zlib.compressobj(wbits=-15)
    return c.compress(payload) + c.flush()


@st.composite
def bodies(draw: st.DrawFn) -> tuple[bytes, str | None]:
    """Random bytes, or random payloads validly compressed (so decoders run deep)."""
    payload = draw(
        st.one_of(
            st.binary(max_size=200),
            st.builds(lambda b: b"{" + b, st.binary(max_size=100)),
            st.builds(lambda b: b"<Error><Code>" + b, st.binary(max_size=100)),
        )
    )
    how = draw(st.sampled_from(["none", "gzip", "deflate", "raw"]))
    if how == "none":
        return payload, draw(ENCODINGS)
    cut = draw(st.integers(0, 400))
    encoding = {"gzip": "gzip", "deflate": "deflate", "raw": "deflate"}[how]
    return _compress(payload, how)[:cut], encoding


@FAST
@given(body=bodies(), content_type=CONTENT_TYPES, status=STATUSES)
def test_parse_error_code_never_raises_nor_invents_a_charge(
    body: tuple[bytes, str | None], content_type: str | None, status: int
) -> None:
    data, encoding = body
    code = parse_error_code(data, content_encoding=encoding, content_type=content_type)
    assert code is None or (isinstance(code, str) and 0 < len(code) <= 128)
    if not any(b"NotFoundFace" in d for d in _every_decoding(data)):
        assert not is_chargeable(status, code, DEFAULT_CHARGEABLE_CODES)


@FAST
@given(data=st.binary(max_size=300), encoding=ENCODINGS, content_type=CONTENT_TYPES)
def test_random_bytes_are_never_a_chargeable_failure(
    data: bytes, encoding: str | None, content_type: str | None
) -> None:
    code = parse_error_code(data, content_encoding=encoding, content_type=content_type)
    if not any(b"NotFoundFace" in d for d in _every_decoding(data)):
        assert code not in DEFAULT_CHARGEABLE_CODES
    assert sniff_request_id(data, content_encoding=encoding) in (None, *[sniff_request_id(data)])


CODES = st.from_regex(r"[A-Za-z][A-Za-z0-9._]{0,40}", fullmatch=True)
EXTRA = st.dictionaries(
    st.sampled_from(["RequestId", "HostId", "Message", "Recommend", "Data"]),
    # Valid XML 1.0 text: documented bodies never carry control characters.
    st.text(st.characters(exclude_categories=("Cs", "Cc")), max_size=30),
)


@FAST
@given(
    code=CODES,
    extra=EXTRA,
    xml=st.booleans(),
    how=st.sampled_from(["none", "gzip", "deflate", "raw"]),
)
def test_documented_bodies_round_trip(
    code: str, extra: dict[str, str], xml: bool, how: str
) -> None:
    if xml:
        inner = "".join(f"<{k}>{escape(v)}</{k}>" for k, v in extra.items())
        payload = f"<Error>{inner}<Code>{code}</Code></Error>".encode()
    else:
        payload = json.dumps({**extra, "Code": code}).encode()
    data = payload if how == "none" else _compress(payload, how)
    encoding = {"none": None, "gzip": "gzip", "deflate": "deflate", "raw": "deflate"}[how]
    assert parse_error_code(data, content_encoding=encoding) == code


@FAST
@given(chunks=st.lists(st.binary(max_size=50), max_size=20), limit=st.integers(0, 300))
def test_tee_keeps_a_bounded_prefix(chunks: list[bytes], limit: int) -> None:
    tee = ErrorBodyTee(limit)
    for chunk in chunks:
        tee.feed(chunk)
    whole = b"".join(chunks)
    assert tee.data == whole[:limit]
    assert tee.overflowed is (len(whole) > limit)


@pytest.mark.parametrize("code", sorted(DEFAULT_CHARGEABLE_CODES))
def test_the_chargeable_code_is_found_when_really_there(code: str) -> None:
    # The counterpart of the property above: the filter is not vacuous.
    body = json.dumps({"RequestId": "r", "Code": code}).encode()
    assert is_chargeable(404, parse_error_code(body), DEFAULT_CHARGEABLE_CODES)
