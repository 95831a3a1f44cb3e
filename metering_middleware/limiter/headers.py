"""What a ``Decision`` looks like on the wire: the refusal and the RateLimit headers.

Headers follow draft-ietf-httpapi-ratelimit-headers-11 (the syntax is unchanged since
-08): both fields are Structured Field Lists of one Item whose value is the policy
name, a String, with Integer parameters::

    RateLimit-Policy: "qps";q=5;w=1
    RateLimit: "qps";r=3;t=1

``q`` is the quota (N), ``w`` the window in seconds, ``r`` the quota left and ``t``
the seconds until more quota frees (delay-seconds: rounded up, never sub-second).
"""

from __future__ import annotations

import math

from ..errors import SERVICE_UNAVAILABLE, SIGNATURE_NONCE_USED, ApiError, ErrorKind
from .base import AdmitStatus, Decision

__all__ = [
    "DEFAULT_POLICY_NAME",
    "THROTTLING_CODE",
    "THROTTLING_MESSAGE",
    "UPSTREAM_BUDGET",
    "UPSTREAM_THROTTLING_CODE",
    "UPSTREAM_THROTTLING_MESSAGE",
    "rate_limit_headers",
    "refusal",
    "upstream_budget_kind",
]

THROTTLING_CODE = "Throttling.User"
#: Alibaba Cloud's own message for this code.
THROTTLING_MESSAGE = "Request was denied due to user flow control."
DEFAULT_POLICY_NAME = "qps"
#: A call over the operator's upstream budget: the code VIAPI itself uses when an API's
#: own flow control refuses (billing rules section 1 lists it as free).
UPSTREAM_THROTTLING_CODE = "Throttling.Api"
UPSTREAM_THROTTLING_MESSAGE = "Request was denied due to API flow control."
#: Its default refusal: 429, counted as ``refused:upstream_budget``.
UPSTREAM_BUDGET = ErrorKind(UPSTREAM_THROTTLING_CODE, 429, "upstream_budget")
#: Statuses an upstream-budget refusal may be configured to.
_BUDGET_STATUSES = (429, 400, 503)


def upstream_budget_kind(code: str = UPSTREAM_THROTTLING_CODE, status: int = 429) -> ErrorKind:
    """The refusal of a call over the upstream budget, as configured
    (``upstream_throttle_code``, ``upstream_throttle_status``)."""
    if status not in _BUDGET_STATUSES:
        raise ValueError(f"upstream_throttle_status must be 429, 400 or 503, not {status}")
    if not code or not code.strip():
        raise ValueError("upstream_throttle_code must be a non-empty error code")
    if code == UPSTREAM_THROTTLING_CODE and status == 429:
        return UPSTREAM_BUDGET
    return ErrorKind(code, status, "upstream_budget")


_THROTTLED = {
    429: ErrorKind(THROTTLING_CODE, 429, "throttled"),
    400: ErrorKind(THROTTLING_CODE, 400, "throttled"),  # what VIAPI itself answers
}


def _sf_string(value: str) -> str:
    if not value.isascii() or not value.isprintable():
        raise ValueError(f"a structured-field string must be printable ASCII: {value!r}")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _seconds(value: float) -> int:
    # delay-seconds: whole, non-negative, rounded up so a client never retries early.
    return max(0, math.ceil(value - 1e-9))


def rate_limit_headers(
    decision: Decision, *, policy: str = DEFAULT_POLICY_NAME
) -> list[tuple[bytes, bytes]]:
    """The response header pairs (lower-case names, ASGI style) for ``decision``.

    Admitted and throttled calls get ``ratelimit-policy`` and, when the remaining quota
    is known, ``ratelimit``; throttled and unavailable ones add ``retry-after``. A
    nonce refusal gets none (the call was never counted).
    """
    status = decision.status
    if status is AdmitStatus.NONCE_REUSED:
        return []
    if status is AdmitStatus.UNAVAILABLE:
        return [(b"retry-after", str(max(1, _seconds(decision.retry_after))).encode())]
    # Every answer carries these; the policy field depends only on (policy, limit,
    # window), so it is formatted once per combination, not on every call.
    key = (policy, decision.limit, decision.window)
    fixed = _POLICY_FIELDS.get(key)
    if fixed is None:
        fixed = _policy_field(policy, decision.limit, decision.window)
        if len(_POLICY_FIELDS) >= _POLICY_FIELDS_SIZE:
            _POLICY_FIELDS.clear()
        _POLICY_FIELDS[key] = fixed
    name, policy_field = fixed
    out = [policy_field]
    throttled = status is AdmitStatus.THROTTLED
    if decision.remaining is not None:
        # Throttled: ``t`` names the same instant as Retry-After (draft -08 asks for
        # that; -11 only that Retry-After is not earlier). Over the upstream budget, the
        # fields still describe the account's own quota (what it has left, when more
        # frees); only Retry-After says when the budget has room.
        reset = _seconds(decision.retry_after if throttled else decision.reset)
        out.append((b"ratelimit", f"{name};r={decision.remaining};t={reset}".encode()))
    if throttled or status is AdmitStatus.UPSTREAM_BUDGET:
        out.append((b"retry-after", str(max(1, _seconds(decision.retry_after))).encode()))
    return out


#: (policy, limit, window) -> (the policy name as a structured-field string, the
#: ``ratelimit-policy`` header pair). Few combinations exist (one per plan limit);
#: bounded anyway, cleared when full.
_POLICY_FIELDS: dict[tuple[str, int, float], tuple[str, tuple[bytes, bytes]]] = {}
_POLICY_FIELDS_SIZE = 1024


def _policy_field(policy: str, limit: int, window: float) -> tuple[str, tuple[bytes, bytes]]:
    name = _sf_string(policy)
    seconds = max(1, _seconds(window))
    return name, (b"ratelimit-policy", f"{name};q={limit};w={seconds}".encode())


def refusal(
    decision: Decision, *, throttle_status: int = 429, upstream_budget: ErrorKind = UPSTREAM_BUDGET
) -> ApiError | None:
    """The ``ApiError`` to answer with, or ``None`` when the call is admitted.

    ``throttle_status`` is 429 (the default, what HTTP clients expect) or 400 (what
    VIAPI answers). ``upstream_budget``: the refusal of a call over the operator's
    upstream budget (``upstream_budget_kind``; default 429 ``Throttling.Api``). Send
    ``rate_limit_headers(decision)`` with the error body.
    """
    status = decision.status
    if status is AdmitStatus.ADMITTED:
        return None
    if status is AdmitStatus.THROTTLED:
        kind = _THROTTLED.get(throttle_status)
        if kind is None:
            raise ValueError(f"throttle_status must be 429 or 400, not {throttle_status}")
        return ApiError(kind, THROTTLING_MESSAGE)
    if status is AdmitStatus.UPSTREAM_BUDGET:
        return ApiError(upstream_budget, UPSTREAM_THROTTLING_MESSAGE)
    if status is AdmitStatus.NONCE_REUSED:
        return ApiError(
            SIGNATURE_NONCE_USED,
            "Specified signature nonce was used already within the time window.",
        )
    return ApiError(
        SERVICE_UNAVAILABLE,
        "The QPS limiter's shared store is unavailable; retry later.",
        reason="limiter_unavailable",
    )
