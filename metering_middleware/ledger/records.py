"""The values the ledger stores."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

__all__ = ["CallRecord", "ClaimedNonce", "Outcome", "OutcomeCount"]


class Outcome(StrEnum):
    """How a call ended, for counters. Only ``CHARGED`` calls become records."""

    CHARGED = "charged"
    FREE = "free"  # the upstream answered with a non-chargeable status or code
    REFUSED = "refused"  # the gateway refused it before the upstream


# Not ``frozen``: a frozen dataclass sets each of its 12 fields through
# ``object.__setattr__`` (about twice the cost of the plain assignments here), and one is
# made on every charged call. Nothing changes a record once made (treat it as immutable:
# ``dataclasses.replace`` makes another); it hashes and compares by its fields as before.
@dataclass(slots=True, unsafe_hash=True)
class CallRecord:
    """One chargeable call (never changed once made); its id is the gateway's own."""

    id: str
    request_id: str | None
    account: str
    access_key_id: str
    category: str
    action: str
    version: str
    item: str
    occurred_at: datetime  # aware UTC, the moment the request arrived
    status: int
    error_code: str | None
    latency_ms: float  # from arrival to the upstream's response start

    def __post_init__(self) -> None:
        if self.occurred_at.tzinfo is None:
            raise ValueError("occurred_at must be timezone-aware (UTC)")


@dataclass(frozen=True, slots=True)
class OutcomeCount:
    """Calls per minute for one account and API by outcome and detail.

    ``detail`` is the error code for free calls, the refusal reason for refused
    ones, and empty for charged ones.
    """

    minute: datetime  # aware UTC, truncated to the minute
    account: str  # "" when the caller could not be identified
    category: str
    action: str
    outcome: Outcome
    detail: str
    count: int


# Not ``frozen``: made on every call, and a frozen dataclass sets each field through
# ``object.__setattr__`` (about twice the plain assignments). Never changed once made.
@dataclass(slots=True, unsafe_hash=True)
class ClaimedNonce:
    """A signature nonce a call claimed, kept beside the ledger until ``expires_at``.

    A restart must not reopen a replay window: the nonces claimed before it are
    loaded back at start (``MeteringRuntime.start``). ``expires_at`` is epoch
    seconds, like the claim itself (the signature's timestamp plus the window).
    ``account`` is "" when the claimer did not know it (the verifier claims
    nonces itself when no limiter runs); the AccessKey's account fills it in.
    """

    account: str
    access_key_id: str
    nonce: str
    expires_at: float
