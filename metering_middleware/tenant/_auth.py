"""Who a tenant call comes from: the meter's own V3 verification, nonce claim and window.

Nothing here verifies a signature: the call is handed to the runtime's
``SignatureVerifier`` (window, then signature, then nonce) exactly as the meter hands
it, and the nonce is claimed where the meter claims it: by the verifier's store when the
runtime has no limiter, else by the limiter's ``admit`` (``DeferredNonceStore`` in the
verifier), in the same round trip as the tenant view's own rate limit. Nonces are per
AccessKey, shared with the meter: a nonce spent on a VIAPI call cannot be spent again
here, nor the reverse.

The account is the AccessKey's, looked up in the runtime's ``CredentialCache``; nothing
the caller sends can name another one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..errors import (
    ACCOUNT_DISABLED,
    INVALID_ACCESS_KEY_ID,
    MISSING_PARAMETER,
    SIGNATURE_MISMATCH,
    ApiError,
)
from ..identity import decode_headers, parse_params
from ..limiter import Decision, MemoryLimiter, NonceClaim, rate_limit_headers, refusal
from ..runtime import MeteringRuntime
from ..signing import V3_ALGORITHM, SignedCall, parse_v3_authorization
from ._errors import UNSUPPORTED_SIGNATURE

__all__ = ["LIMIT_CATEGORY", "LimitRefusal", "TenantAuthenticator", "TenantCaller"]

#: The limiter key's category for tenant-view calls: no catalog category has a dash, so
#: the tenant view's budget is never a VIAPI API's (its calls are not VIAPI calls).
LIMIT_CATEGORY = "tenant-view"
_LIMIT_ACTION = "*"  # one budget per account, whatever the endpoint
_V1_NAMES = frozenset(("Signature", "SignatureMethod", "SignatureVersion", "AccessKeyId"))
_FORM = "application/x-www-form-urlencoded"


@dataclass(frozen=True, slots=True)
class TenantCaller:
    """A verified, admitted tenant call."""

    account: str
    access_key_id: str
    #: The query's parameters in arrival order (signed).
    query: tuple[tuple[str, str], ...]
    #: Lower-cased header names (every ``x-acs-*`` one is signed).
    headers: Mapping[str, str]
    #: The RateLimit headers of the admission, for the answer.
    rate_headers: tuple[tuple[bytes, bytes], ...]


class LimitRefusal(ApiError):
    """A refusal by the limiter (throttled, backend down): carries the RateLimit headers."""

    def __init__(self, error: ApiError, headers: tuple[tuple[bytes, bytes], ...]) -> None:
        super().__init__(error.kind, error.message, reason=error.reason)
        self.headers = headers


def _looks_v1(query: bytes, headers: Mapping[str, str], body: bytes) -> bool:
    """Whether an unsigned-for-V3 request carries V1 signing parameters (never raises)."""
    sources = [query]
    content_type = headers.get("content-type", "")
    if body and content_type.partition(";")[0].strip().lower() == _FORM:
        sources.append(body)
    for raw in sources:
        try:
            if any(name in _V1_NAMES for name, _ in parse_params(raw)):
                return True
        except ApiError:
            continue
    return False


def _not_v3(query: bytes, headers: Mapping[str, str], body: bytes) -> ApiError:
    if "authorization" in headers or _looks_v1(query, headers, body):
        return ApiError(
            UNSUPPORTED_SIGNATURE,
            f"The tenant view accepts only signature V3 ({V3_ALGORITHM}, the default of the "
            "official SDKs' call_api); V1 (HMAC-SHA1) and other signatures are refused.",
        )
    return ApiError(
        MISSING_PARAMETER,
        'The input parameter "Authorization" that is mandatory for processing this request '
        f"is not supplied: sign the request with {V3_ALGORITHM}.",
    )


class TenantAuthenticator:
    """Verifies a tenant call with the runtime's parts and admits it under ``qps``.

    ``qps``: tenant-view calls per second per account (all its keys and endpoints
    together), in a one-second sliding window; over it, ``Throttling.User`` as the meter
    answers. With the runtime's limiter (``enforce_qps``) the budget is the limiter's
    (shared between processes with Redis); without one it is this process's own.
    """

    __slots__ = ("_limiter", "_own_limiter", "_qps", "_rt", "_throttle_status", "_window")

    def __init__(self, runtime: MeteringRuntime, *, qps: int) -> None:
        if isinstance(qps, bool) or not isinstance(qps, int) or qps < 1:
            raise ValueError(f"tenant qps must be a positive integer, got {qps!r}")
        self._rt = runtime
        self._qps = qps
        self._window = runtime.config.signature_window
        self._throttle_status = runtime.config.throttle_status
        # Without the runtime's limiter the verifier claims the nonce itself, and the
        # tenant view's budget is kept in a limiter of its own, per process (no lock file:
        # a second process doubles a read budget, never a billed one).
        self._limiter = runtime.limiter
        self._own_limiter = MemoryLimiter(runtime.clock) if runtime.limiter is None else None

    async def authenticate(
        self,
        method: str,
        path: str,
        query_string: bytes,
        raw_headers: Sequence[tuple[bytes, bytes]],
        body: bytes,
    ) -> TenantCaller:
        """The verified caller; raises ``ApiError`` (an Alibaba code) on any refusal."""
        headers = decode_headers(raw_headers)
        value = headers.get("authorization")
        if value is None or not value.startswith(V3_ALGORITHM):
            raise _not_v3(query_string, headers, body)
        try:
            auth = parse_v3_authorization(value)
        except ValueError as exc:
            raise ApiError(SIGNATURE_MISMATCH, f"Malformed Authorization header: {exc}.") from None
        query = tuple(parse_params(query_string)) if query_string else ()
        rt = self._rt
        credential = await rt.credentials.lookup(auth.access_key_id)
        if credential is None:
            raise ApiError(
                INVALID_ACCESS_KEY_ID,
                f"Specified access key is not found: {auth.access_key_id[:64]}",
            )
        if not credential.enabled:
            raise ApiError(ACCOUNT_DISABLED, "Specified access key is disabled.")
        call = SignedCall("v3", method, path, query, headers, body, auth.access_key_id, auth)
        await rt.verifier.verify(call, credential.secret)
        decision = await self._admit(credential.account, call)
        rate_headers = tuple(rate_limit_headers(decision))
        refused = refusal(decision, throttle_status=self._throttle_status)
        if refused is not None:
            raise LimitRefusal(refused, rate_headers)
        return TenantCaller(credential.account, auth.access_key_id, query, headers, rate_headers)

    async def _admit(self, account: str, call: SignedCall) -> Decision:
        if self._own_limiter is not None:
            # The verifier claimed the nonce already (its store is the durable one).
            return await self._own_limiter.admit(account, LIMIT_CATEGORY, _LIMIT_ACTION, self._qps)
        assert self._limiter is not None
        # The verifier's store is deferred: the limiter claims the nonce, as for a VIAPI call.
        claim = NonceClaim.of(call, self._window)
        return await self._limiter.admit(
            account, LIMIT_CATEGORY, _LIMIT_ACTION, self._qps, nonce=claim
        )
