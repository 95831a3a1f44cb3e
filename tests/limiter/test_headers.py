"""The wire form of a Decision: RateLimit headers (httpapi draft, structured fields) and
the refusal."""

from __future__ import annotations

import pytest

from metering_middleware.limiter import (
    THROTTLING_CODE,
    AdmitStatus,
    Decision,
    rate_limit_headers,
    refusal,
)


def _d(status: AdmitStatus, **kw: object) -> Decision:
    values: dict[str, object] = {
        "limit": 5,
        "remaining": 3,
        "reset": 0.42,
        "retry_after": 0.0,
        "at": 1_767_225_600.0,
    }
    values.update(kw)
    return Decision(status, **values)  # type: ignore[arg-type]


def test_admitted_call_headers() -> None:
    assert rate_limit_headers(_d(AdmitStatus.ADMITTED)) == [
        (b"ratelimit-policy", b'"qps";q=5;w=1'),
        (b"ratelimit", b'"qps";r=3;t=1'),
    ]


def test_throttled_call_headers_round_seconds_up() -> None:
    d = _d(AdmitStatus.THROTTLED, remaining=0, reset=0.25, retry_after=0.25)
    assert rate_limit_headers(d, policy="facebody/DetectFace") == [
        (b"ratelimit-policy", b'"facebody/DetectFace";q=5;w=1'),
        (b"ratelimit", b'"facebody/DetectFace";r=0;t=1'),
        (b"retry-after", b"1"),
    ]
    # A lowered limit: more must leave than the oldest; t and Retry-After name one instant.
    d = _d(AdmitStatus.THROTTLED, remaining=0, reset=0.5, retry_after=2.000001, window=3.0)
    assert rate_limit_headers(d) == [
        (b"ratelimit-policy", b'"qps";q=5;w=3'),
        (b"ratelimit", b'"qps";r=0;t=3'),
        (b"retry-after", b"3"),
    ]


def test_unknown_remaining_and_refusals_without_counts() -> None:
    open_admit = _d(AdmitStatus.ADMITTED, remaining=None, degraded=True)
    assert rate_limit_headers(open_admit) == [(b"ratelimit-policy", b'"qps";q=5;w=1')]
    unavailable = _d(AdmitStatus.UNAVAILABLE, remaining=None, retry_after=4.2, degraded=True)
    assert rate_limit_headers(unavailable) == [(b"retry-after", b"5")]
    assert rate_limit_headers(_d(AdmitStatus.NONCE_REUSED, remaining=None)) == []


def test_policy_names_are_structured_field_strings() -> None:
    headers = dict(rate_limit_headers(_d(AdmitStatus.ADMITTED), policy='a"b\\c'))
    assert headers[b"ratelimit"] == b'"a\\"b\\\\c";r=3;t=1'
    with pytest.raises(ValueError, match="printable ASCII"):
        rate_limit_headers(_d(AdmitStatus.ADMITTED), policy="配额")


def test_refusals() -> None:
    assert refusal(_d(AdmitStatus.ADMITTED)) is None
    throttled = _d(AdmitStatus.THROTTLED, remaining=0)
    err = refusal(throttled)
    assert err is not None and (err.code, err.status, err.reason) == (
        THROTTLING_CODE,
        429,
        "throttled",
    )
    viapi = refusal(throttled, throttle_status=400)
    assert viapi is not None and (viapi.code, viapi.status) == ("Throttling.User", 400)
    with pytest.raises(ValueError, match="429 or 400"):
        refusal(throttled, throttle_status=503)
    nonce = refusal(_d(AdmitStatus.NONCE_REUSED))
    assert nonce is not None and (nonce.code, nonce.status) == ("SignatureNonceUsed", 400)
    down = refusal(_d(AdmitStatus.UNAVAILABLE))
    assert down is not None and (down.code, down.status, down.reason) == (
        "ServiceUnavailable",
        503,
        "limiter_unavailable",
    )
