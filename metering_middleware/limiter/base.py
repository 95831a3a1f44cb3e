"""What every limiter backend promises: one ``admit`` call, one ``Decision``.

A call is admitted when fewer than ``limit`` calls of the same (account, API)
were admitted in the last second, the window ``(t - 1 s, t]``. Refused calls
are not counted. The same call also claims the request's signature nonce, so a
shared backend (Redis) answers both in one round trip; the nonce is checked
first, so replay protection never depends on spare capacity.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from ..signing import SignedCall, extract_nonce, extract_signed_at

__all__ = [
    "WINDOW_SECONDS",
    "AdmitStatus",
    "Decision",
    "DecisionCounts",
    "DeferredNonceStore",
    "Limiter",
    "LimiterError",
    "NonceClaim",
    "check_admit_args",
]

#: The QPS window: one second, unused capacity never carried over (billing rules section 4).
WINDOW_SECONDS = 1.0


class LimiterError(Exception):
    """A limiter that cannot be built or started (bad URL, second process on a memory ledger)."""


class AdmitStatus(StrEnum):
    ADMITTED = "admitted"
    #: Over the limit: refuse with ``Throttling.User``; never charged.
    THROTTLED = "throttled"
    #: The signature nonce is already held: refuse with ``SignatureNonceUsed``.
    NONCE_REUSED = "nonce_reused"
    #: The shared backend is down and the failure policy is ``closed``: refuse with 503.
    UNAVAILABLE = "unavailable"
    #: Within the tenant's limit, but the operator's upstream budget for the API is
    #: used up: refuse with ``Throttling.Api`` (configurable); never charged. The
    #: tenant's log keeps no entry for it.
    UPSTREAM_BUDGET = "upstream_budget"


# Not ``frozen``: made on every call, and a frozen dataclass sets each field through
# ``object.__setattr__`` (about twice the plain assignments). Never changed once made.
@dataclass(slots=True, unsafe_hash=True)
class NonceClaim:
    """A signature nonce to hold until ``expires_at`` (epoch seconds), per AccessKeyId."""

    access_key_id: str
    nonce: str
    expires_at: float

    @classmethod
    def of(cls, call: SignedCall, window_seconds: float = 900.0) -> NonceClaim:
        """The claim a verified call makes: held until its own timestamp + the window.

        Raises ``ApiError`` (MissingParameter) if the call carries no nonce, as
        ``SignatureVerifier.verify`` would have done already.
        """
        # Epoch seconds straight from the (cached) parse the verifier made: no datetime.
        signed_at = extract_signed_at(call)
        return cls(call.access_key_id, extract_nonce(call), signed_at + window_seconds)


# Not ``frozen``: made on every call, and a frozen dataclass sets each field through
# ``object.__setattr__`` (about twice the plain assignments). Never changed once made.
@dataclass(slots=True, unsafe_hash=True)
class Decision:
    """The answer to one ``admit``; everything a refusal or the RateLimit headers need.

    Times are seconds. ``at`` is the deciding clock's time: Redis's ``TIME`` for the
    shared backend, the process clock otherwise (memory, or a failure-policy decision).
    """

    status: AdmitStatus
    #: The limit the call was checked against (a degraded ``local`` decision: this
    #: process's share of it).
    limit: int
    #: Admissions still free in the window after this decision; ``None`` when unknown
    #: (a nonce refusal, or a degraded ``open``/``closed`` decision). An upstream-budget
    #: refusal: what the tenant itself still has.
    remaining: int | None
    #: Seconds until the oldest admission in the window leaves it (frees one slot).
    reset: float
    #: Throttled, over the upstream budget or unavailable: seconds until a retry can
    #: succeed (the budget's next free slot for a budget refusal); else 0.
    retry_after: float
    at: float
    #: Decided by the failure policy, without the shared backend.
    degraded: bool = False
    #: The window the limit applies to (a degraded ``local`` share of N < P processes
    #: is one call per ``ceil(P / N)`` seconds).
    window: float = WINDOW_SECONDS

    @property
    def admitted(self) -> bool:
        return self.status is AdmitStatus.ADMITTED


_TEXT = {s: s.value for s in AdmitStatus}


class DecisionCounts:
    """Decisions by result since start, for metrics: one dict increment per admission.

    Results: ``admitted``, ``throttled``, ``upstream_budget``, ``nonce_reused`` (decided
    by the backend); ``fail_open``, ``fail_closed``, ``local_admitted``,
    ``local_throttled``, ``local_upstream_budget`` (decided by the failure policy while
    the shared backend fails; a nonce refused then is ``nonce_reused`` too).
    """

    __slots__ = ("counts",)

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def add(self, decision: Decision) -> Decision:
        result = _result(decision)
        self.counts[result] = self.counts.get(result, 0) + 1
        return decision


def _result(decision: Decision) -> str:
    status = decision.status
    if not decision.degraded or status is AdmitStatus.NONCE_REUSED:
        return _TEXT[status]  # a dict lookup: ``.value`` on an Enum member is a Python property
    if status is AdmitStatus.UNAVAILABLE:
        return "fail_closed"
    if status is AdmitStatus.ADMITTED and decision.remaining is None:
        return "fail_open"  # the open policy admits without a log, so nothing remains known
    return "local_" + status.value  # local_admitted, local_throttled, local_upstream_budget


class Limiter(Protocol):
    """A QPS limiter backend (``memory://``, ``redis://``), chosen by URL."""

    async def start(self) -> None:
        """Take what the backend needs (a lock file, a connection, the script); idempotent."""
        ...

    async def close(self) -> None:
        """Release it; idempotent."""
        ...

    async def admit(
        self,
        account: str,
        category: str,
        action: str,
        limit: int,
        *,
        nonce: NonceClaim | None = None,
        now: float | None = None,
    ) -> Decision:
        """Claim ``nonce`` (if given), then admit one call if fewer than ``limit`` were
        admitted in the last second and the API's upstream budget (the limiter's own
        setting, shared by every account) has room too; both logs take the admission
        or neither does. ``now`` (epoch seconds) is for tests only and is refused
        unless the limiter was built with ``allow_explicit_time=True``.
        """
        ...


def check_admit_args(limit: int, now: float | None, allow_explicit_time: bool) -> None:
    """What every backend refuses before deciding anything."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    if now is not None and not allow_explicit_time:
        raise ValueError("an explicit time needs allow_explicit_time=True (tests only)")


class DeferredNonceStore:
    """A ``NonceStore`` whose ``claim`` always succeeds: give it to ``SignatureVerifier``
    when the limiter claims the nonce in ``admit`` (verification without the claim)."""

    __slots__ = ()

    async def claim(self, access_key_id: str, nonce: str, expires_at: float) -> bool:
        return True
