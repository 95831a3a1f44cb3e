"""Limiters chosen by URL, with their settings.

==================================  ================================================
``memory://``                       :class:`~.memory.MemoryLimiter`: one process
``redis://host:port/db``            :class:`~.redis.RedisLimiter`: shared
``rediss://...``, ``unix://...``    the same over TLS or a Unix socket
==================================  ================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ..clock import Clock
from ..nonces import MemoryNonceStore
from .base import Limiter, LimiterError
from .budget import UpstreamBudgets
from .headers import DEFAULT_POLICY_NAME
from .memory import MemoryLimiter
from .policy import FailurePolicy

__all__ = ["LimiterSettings", "open_limiter"]


@dataclass(frozen=True, slots=True)
class LimiterSettings:
    #: ``memory://`` (one gateway process) or ``redis://host:port/db`` (any number).
    url: str = "memory://"
    #: Redis failing: ``open`` admits, ``closed`` answers 503, ``local`` shares N over P.
    failure_policy: FailurePolicy = FailurePolicy.LOCAL
    #: P, the number of gateway processes sharing the limits (``local`` policy only).
    processes: int = 1
    #: Seconds one Redis round trip may take before it counts as a failure.
    socket_timeout: float = 0.1
    #: Seconds a new connection to Redis may take.
    connect_timeout: float = 0.5
    #: Consecutive failures that open the circuit breaker.
    breaker_threshold: int = 3
    #: Seconds the breaker stays open before a background probe asks Redis again.
    breaker_cooldown: float = 0.2
    #: Prefix of every Redis key (no braces: the account is the hash tag).
    key_prefix: str = "mm:"
    #: HTTP status of a ``Throttling.User`` refusal: 429, or 400 as VIAPI answers.
    throttle_status: int = 429
    #: The policy name in the RateLimit headers.
    policy_name: str = DEFAULT_POLICY_NAME
    #: The operator's own QPS at Alibaba, shared by every account and process:
    #: ``{"facebody": 50}`` (each facebody API), ``{"facebody.DetectFace": 100}`` (one).
    upstream_qps: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        UpstreamBudgets(self.upstream_qps)  # raises LimiterError naming the bad key
        try:
            object.__setattr__(self, "failure_policy", FailurePolicy(self.failure_policy))
        except ValueError:
            raise LimiterError(
                f"failure_policy: {self.failure_policy!r} is not one of open, closed, local"
            ) from None
        if self.throttle_status not in (429, 400):
            raise LimiterError("throttle_status: must be 429 or 400")
        for name in ("processes", "breaker_threshold"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise LimiterError(f"{name}: must be a positive integer")
        for name in ("socket_timeout", "connect_timeout", "breaker_cooldown"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise LimiterError(f"{name}: must be a positive number of seconds")
        _scheme(self.url)


def _scheme(url: str) -> str:
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme == "memory":
        if url.split("://", 1)[1] not in ("", "/"):
            raise LimiterError(f"memory:// limiter URLs take no path: {url!r}")
        return scheme
    if scheme in ("redis", "rediss", "unix"):
        return scheme
    raise LimiterError(f"unsupported limiter URL {url!r}: use memory:// or redis://host:port/db")


def open_limiter(
    settings: LimiterSettings | str,
    clock: Clock,
    *,
    lock_path: str | None = None,
    nonces: MemoryNonceStore | None = None,
    allow_explicit_time: bool = False,
    ledger_processes: tuple[str, int] = ("gateway_processes", 1),
) -> Limiter:
    """The (unstarted) limiter ``settings`` names; ``await limiter.start()`` next.

    ``lock_path`` (memory only): a file beside the ledger, locked while this process
    limits calls, so a second process on the same ledger is refused at start.
    ``nonces`` (memory only): the in-process nonce store to claim into.
    ``ledger_processes``: (setting, N) the gateway processes configured on the ledger;
    more than one is refused for ``memory://`` (a ledger with no lock file, such as a
    database server's, is caught here, not by the lock).
    """
    if isinstance(settings, str):
        settings = LimiterSettings(url=settings)
    if _scheme(settings.url) == "memory":
        setting, processes = ledger_processes
        if processes > 1:
            raise LimiterError(
                f"{setting} = {processes}, but a memory:// limiter counts calls in one process "
                "only: each would admit every account's full QPS; use limiter_url = "
                "redis://host:port/db to share the limits between processes"
            )
        return MemoryLimiter(
            clock,
            nonces=nonces,
            lock_path=lock_path,
            allow_explicit_time=allow_explicit_time,
            budgets=UpstreamBudgets(settings.upstream_qps),
        )
    from .redis import RedisLimiter  # imports redis-py only when it is used

    return RedisLimiter(
        settings.url,
        clock,
        failure_policy=settings.failure_policy,
        processes=settings.processes,
        socket_timeout=settings.socket_timeout,
        connect_timeout=settings.connect_timeout,
        breaker_threshold=settings.breaker_threshold,
        breaker_cooldown=settings.breaker_cooldown,
        key_prefix=settings.key_prefix,
        allow_explicit_time=allow_explicit_time,
        budgets=UpstreamBudgets(settings.upstream_qps),
    )
