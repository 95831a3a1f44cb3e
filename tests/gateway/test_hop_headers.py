"""Hop-by-hop header stripping (RFC 9110 §7.6.1)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from example_gateway.proxy import HOP_BY_HOP_HEADERS, strip_hop_by_hop


def test_fixed_and_listed_headers_go_the_rest_stays_in_order() -> None:
    headers = [
        (b"Host", b"gw"),
        (b"Connection", b"Keep-Alive, X-Secret"),
        (b"X-Secret", b"1"),
        (b"Keep-Alive", b"timeout=5"),
        (b"Upgrade", b"h2c"),
        (b"TE", b"trailers"),
        (b"Trailer", b"X-Sum"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Proxy-Authorization", b"Basic x"),
        (b"Proxy-Authenticate", b"Basic"),
        (b"Content-Type", b"application/json"),
        (b"Set-Cookie", b"a=1"),
        (b"Set-Cookie", b"b=2"),
    ]
    assert strip_hop_by_hop(headers) == [
        (b"host", b"gw"),
        (b"content-type", b"application/json"),
        (b"set-cookie", b"a=1"),
        (b"set-cookie", b"b=2"),
    ]


NAMES = st.sampled_from(
    [b"Connection", b"connection", b"X-A", b"x-b", b"TE", b"Upgrade", b"Content-Length", b"Via"]
)
VALUES = st.sampled_from([b"1", b"x-a", b"X-B, close", b" keep-alive ,X-A ", b""])


@given(st.lists(st.tuples(NAMES, VALUES), max_size=12))
def test_nothing_hop_by_hop_survives(headers: list[tuple[bytes, bytes]]) -> None:
    kept = strip_hop_by_hop(headers)
    listed = {
        token.strip().lower()
        for name, value in headers
        if name.lower() == b"connection"
        for token in value.split(b",")
    }
    for name, _ in kept:
        assert name == name.lower()
        assert name not in HOP_BY_HOP_HEADERS
        assert name not in listed
    # Everything else is kept, in order.
    expected = [(n.lower(), v) for n, v in headers if n.lower() not in HOP_BY_HOP_HEADERS | listed]
    assert kept == expected
