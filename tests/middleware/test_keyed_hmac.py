"""The verifier's HMAC from cached keyed states equals the standard library's, always."""

from __future__ import annotations

import hmac

from hypothesis import given
from hypothesis import strategies as st

from metering_middleware import signing


@given(
    name=st.sampled_from(["sha1", "sha256"]),
    # Keys below, at and above the 64-byte block (a longer key is hashed first).
    key=st.binary(min_size=0, max_size=200),
    message=st.binary(max_size=600),
)
def test_keyed_hmac_is_hmac(name: str, key: bytes, message: bytes) -> None:
    assert signing._hmac(name, key, message) == hmac.digest(key, message, name)
    # Twice: the second from the cached states, which the first must not have consumed.
    assert signing._hmac(name, key, message) == hmac.digest(key, message, name)


def test_one_key_never_answers_for_another() -> None:
    a = signing._hmac("sha256", b"secret-a", b"msg")
    b = signing._hmac("sha256", b"secret-b", b"msg")
    assert a != b
    assert signing._hmac("sha1", b"secret-a", b"msg") != a[:20]
    assert a == hmac.digest(b"secret-a", b"msg", "sha256")


def test_the_cache_is_bounded() -> None:
    for i in range(signing._KEYED_SIZE + 10):
        signing._hmac("sha256", f"k{i}".encode(), b"m")
    assert len(signing._KEYED) <= signing._KEYED_SIZE
