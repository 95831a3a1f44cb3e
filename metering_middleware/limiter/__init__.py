"""QPS admission: exact per-(account, API) limits over a one-second sliding window.

Backends by URL (``open_limiter``): ``memory://`` for one gateway process,
``redis://host:port/db`` shared by many. ``admit`` also claims the signature nonce,
so with Redis a replay to any gateway process is refused in the same round trip, and
checks the operator's upstream budget for the API (``upstream_qps``) atomically with
the account's own limit. See ``docs/limiter.md``.
"""

from .base import (
    WINDOW_SECONDS,
    AdmitStatus,
    Decision,
    DeferredNonceStore,
    Limiter,
    LimiterError,
    NonceClaim,
)
from .budget import UpstreamBudgets, parse_budget_spec
from .factory import LimiterSettings, open_limiter
from .headers import (
    DEFAULT_POLICY_NAME,
    THROTTLING_CODE,
    THROTTLING_MESSAGE,
    UPSTREAM_BUDGET,
    UPSTREAM_THROTTLING_CODE,
    rate_limit_headers,
    refusal,
    upstream_budget_kind,
)
from .memory import MemoryLimiter
from .policy import BreakerState, CircuitBreaker, FailurePolicy, local_share

__all__ = [
    "DEFAULT_POLICY_NAME",
    "THROTTLING_CODE",
    "THROTTLING_MESSAGE",
    "UPSTREAM_BUDGET",
    "UPSTREAM_THROTTLING_CODE",
    "WINDOW_SECONDS",
    "AdmitStatus",
    "BreakerState",
    "CircuitBreaker",
    "Decision",
    "DeferredNonceStore",
    "FailurePolicy",
    "Limiter",
    "LimiterError",
    "LimiterSettings",
    "MemoryLimiter",
    "NonceClaim",
    "UpstreamBudgets",
    "local_share",
    "open_limiter",
    "parse_budget_spec",
    "rate_limit_headers",
    "refusal",
    "upstream_budget_kind",
]
