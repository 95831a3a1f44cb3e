"""``redis://host:port/db``: one exact sliding log per (account, API), shared by every
gateway process, decided by one Lua script on Redis's own clock.

One ``EVALSHA`` per admission claims the nonce and checks the log (``lua/admit.lua``),
and the API's upstream budget log when it has one, atomically. Keys carry the account
as a Redis Cluster hash tag, ``<prefix>{<account>}:...``, so all of an account's keys
live in one slot; the budget log (``<prefix>budget:<category>:<action>``) is shared by
every account and so cannot be in their slots: a budget needs one Redis, not Cluster
(the limiter has no Cluster client anyway).

The script runs through redis-py's ``register_script``: its SHA1 is computed locally,
each call is one ``EVALSHA`` in the steady state, and after Redis lost its script cache
(restart, ``SCRIPT FLUSH``, failover) the ``NOSCRIPT`` answer makes redis-py load the
script and run it again once (redis-py 5 to 8: ``AsyncScript.__call__``). ``start`` and
the breaker's probe still ``SCRIPT LOAD`` it, so a restarted Redis has it before a call.

A Redis restart leaves every pooled connection dead. redis-py's own retry runs a
command again once, on a new connection, after a connection error (never after a
timeout), so those stale sockets are not Redis failures. The script may have run before
the connection broke; the claim token it stores with the nonce makes the second run
exactly-once (no second log entry, its own nonce not taken for a replay).

While Redis fails, a ``FailurePolicy`` decides and a ``CircuitBreaker`` keeps the dead
server from costing each call a timeout; nonces then go to an in-process store. While
the breaker is open, a background probe (``SCRIPT LOAD``, at most one per cool-down)
asks whether Redis is back, so no call waits on a dead server and shared limits resume
within one cool-down of Redis answering.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import uuid
from collections.abc import Iterable
from importlib.resources import files

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from ..clock import Clock
from ..nonces import MemoryNonceStore
from .base import (
    WINDOW_SECONDS,
    AdmitStatus,
    Decision,
    DecisionCounts,
    LimiterError,
    NonceClaim,
    check_admit_args,
)
from .budget import UpstreamBudgets
from .memory import MemoryLimiter
from .policy import BreakerState, CircuitBreaker, FailurePolicy, local_share

__all__ = ["SCRIPT", "RedisLimiter", "budget_key", "key_prefix_ok", "log_key", "nonce_key"]

log = logging.getLogger("metering_middleware.limiter")

#: The admission script, shipped as package data.
SCRIPT = files("metering_middleware.limiter").joinpath("lua/admit.lua").read_text("utf-8")

_US = 1_000_000
_WINDOW_US = int(WINDOW_SECONDS * _US)
#: A log key outlives its newest entry by one window (+1 ms: PEXPIRE is whole ms).
_TTL_MS = int(WINDOW_SECONDS * 1000) + 1
#: With explicit (test) time the script's clock is not Redis's, so keep logs longer.
_EXPLICIT_TTL_MS = 600_000
_FAILURES = (RedisError, OSError, asyncio.TimeoutError)
#: Nonces per pipelined round trip when seeding.
_SEED_CHUNK = 1000
#: The seed marker's life; each check renews it, and a gateway gone idle longer re-seeds.
_MARKER_TTL_MS = 3_600_000


def _retry() -> Retry:
    """Once more on a new connection after a connection error (a stale pooled socket,
    a reset, ``LOADING``); never after a timeout: a hung Redis would cost two, and a
    timed-out script may still be running."""
    return Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))


def _escape(part: str) -> str:
    # '{' and '}' would move the hash tag, ':' would make keys ambiguous.
    if "%" in part or "{" in part or "}" in part or ":" in part:
        part = part.replace("%", "%25").replace("{", "%7B").replace("}", "%7D")
        part = part.replace(":", "%3A")
    return part


def key_prefix_ok(prefix: str) -> bool:
    return "{" not in prefix and "}" not in prefix


def log_key(prefix: str, account: str, category: str, action: str) -> str:
    return f"{prefix}{{{_escape(account)}}}:q:{_escape(category)}:{_escape(action)}"


def nonce_key(prefix: str, account: str, access_key_id: str, nonce: str) -> str:
    return f"{prefix}{{{_escape(account)}}}:n:{_escape(access_key_id)}:{nonce}"


def budget_key(prefix: str, category: str, action: str) -> str:
    # Never "<prefix>{...": no account's key (those all start so) can be a budget's.
    return f"{prefix}budget:{_escape(category)}:{_escape(action)}"


class RedisLimiter:
    """The shared backend. ``url`` is anything ``redis.asyncio.Redis.from_url`` takes.

    ``processes`` (P) only matters for the ``local`` policy. ``socket_timeout`` bounds
    each round trip; a timed-out admission is a failure (it may still have been counted
    by Redis: the conservative side) and is not retried. A connection error is retried
    once by redis-py (``_retry``); ``health_check_interval``: a connection idle that
    long is checked with a ``PING`` (retried the same way) before it carries a script,
    never in the busy normal case. A ``client`` given by the caller is used as is (its
    own timeouts and retries) and is not closed by ``close``. ``budgets``: the
    operator's upstream QPS per API (``upstream_qps``), shared by every account and
    process; while Redis fails, the ``local`` policy gives each process its share of
    a budget as of a limit.
    """

    def __init__(
        self,
        url: str,
        clock: Clock,
        *,
        failure_policy: FailurePolicy | str = FailurePolicy.LOCAL,
        processes: int = 1,
        socket_timeout: float = 0.1,
        connect_timeout: float = 0.5,
        breaker_threshold: int = 3,
        breaker_cooldown: float = 0.2,
        health_check_interval: float = 5.0,
        key_prefix: str = "mm:",
        allow_explicit_time: bool = False,
        client: aioredis.Redis | None = None,
        budgets: UpstreamBudgets | dict[str, int] | None = None,
    ) -> None:
        try:
            self.policy = FailurePolicy(failure_policy)
        except ValueError:
            raise LimiterError(
                f"failure policy {failure_policy!r} is not one of open, closed, local"
            ) from None
        if processes < 1:
            raise LimiterError("processes must be at least 1")
        if socket_timeout <= 0 or connect_timeout <= 0:
            raise LimiterError("socket_timeout and connect_timeout must be positive")
        if not key_prefix_ok(key_prefix):
            raise LimiterError("key_prefix must not contain '{' or '}' (the hash tag)")
        self.url = url
        self._clock = clock
        self.processes = processes
        self._prefix = key_prefix
        self._allow_explicit = allow_explicit_time
        self._ttl = str(_EXPLICIT_TTL_MS if allow_explicit_time else _TTL_MS)
        self.breaker = CircuitBreaker(clock, threshold=breaker_threshold, cooldown=breaker_cooldown)
        # Nonces while Redis is down, and the ``local`` policy's own logs.
        self.local = MemoryLimiter(clock, nonces=MemoryNonceStore(clock))
        self._own_client = client is None
        self._client: aioredis.Redis = client or aioredis.Redis.from_url(
            url,
            socket_timeout=socket_timeout,
            socket_connect_timeout=connect_timeout,
            retry=_retry(),
            health_check_interval=health_check_interval,
        )
        if budgets is not None and not isinstance(budgets, UpstreamBudgets):
            budgets = UpstreamBudgets(budgets)
        self._budgets = budgets or None
        self._script: AsyncScript = self._client.register_script(SCRIPT)
        self._probe: asyncio.Future[None] | None = None
        # Claim tokens: unique per admission, across processes (a random tag each).
        self._tag = secrets.token_hex(6)
        self._seq = itertools.count()
        # Set when this process seeded Redis with the ledger's nonces: gone means Redis
        # lost them (restarted empty, flushed) and they must be seeded again.
        self._seed_marker = f"{key_prefix}seeded:{uuid.uuid4().hex}"
        #: Round trips that failed (connection, timeout, Redis error), since start.
        self.failures = 0
        #: Decisions the failure policy made, since start.
        self.degraded = 0
        #: Decisions by result, the failure policy's included (a metric).
        self.decisions = DecisionCounts()
        #: Background probes started while the breaker was open, since start.
        self.probes = 0

    @property
    def client(self) -> aioredis.Redis:
        return self._client

    async def start(self) -> None:
        """Load the script. A Redis that is down now is not fatal: the policy decides
        until it answers (logged)."""
        try:
            await self._load()
        except _FAILURES as exc:
            self._failed(exc)

    async def close(self) -> None:
        probe = self._probe
        if probe is not None:
            probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await probe
        if self._own_client:
            await self._client.aclose()

    async def wait_probe(self) -> None:
        """Wait for the background probe in flight, if any (tests); never raises."""
        if self._probe is not None:
            await asyncio.wait([self._probe])

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
        check_admit_args(limit, now, self._allow_explicit)
        if self.breaker.state is not BreakerState.CLOSED:
            self._probe_behind()
            return self.decisions.add(await self._fallback(account, category, action, limit, nonce))
        keys = [log_key(self._prefix, account, category, action)]
        explicit = "" if now is None else str(round(now * _US))
        budgets = self._budgets
        budget = budgets.budget(category, action) if budgets is not None else None
        if budget is None:
            args = [str(limit), str(_WINDOW_US), self._ttl, explicit, ""]
        else:
            keys.append(budget_key(self._prefix, category, action))
            args = [str(limit), str(_WINDOW_US), self._ttl, explicit, str(budget)]
        if nonce is not None:
            keys.append(nonce_key(self._prefix, account, nonce.access_key_id, nonce.nonce))
            args.append(str(round(nonce.expires_at * 1000)))
            args.append(f"{self._tag}{next(self._seq):x}")  # the claim token (lua/admit.lua)
        try:
            reply = await self._run(keys, args)
        except _FAILURES as exc:  # (cancelled mid-flight: it tells nothing, not recorded)
            self._failed(exc)
            return self.decisions.add(await self._fallback(account, category, action, limit, nonce))
        self._answered()
        return self.decisions.add(_decision(reply, limit))

    async def seed_nonces(self, claims: Iterable[tuple[str, NonceClaim]]) -> int:
        """Hold ``(account, claim)`` nonces claimed before a restart; returns how many
        Redis did not hold yet.

        Each is ``SET key expiry NX PX remaining`` under the key and value the admission
        script uses, so a Redis that came back empty refuses their replays again, and
        gateways starting together (or a Redis that kept them) change nothing. The
        in-process store the failure policy claims into is seeded too. A Redis that is
        down now is logged and counted as a failure, never fatal (the policy decides).
        """
        claims = list(claims)
        await self.local.seed_nonces(claims)
        now_ms = round(self._clock.time() * 1000)
        added = 0
        try:
            for start in range(0, max(len(claims), 1), _SEED_CHUNK):
                async with self._client.pipeline(transaction=False) as pipe:
                    for account, claim in claims[start : start + _SEED_CHUNK]:
                        expires = round(claim.expires_at * 1000)
                        if expires <= now_ms or not account:
                            continue  # expired; or no account, so no key the script reads
                        key = nonce_key(self._prefix, account, claim.access_key_id, claim.nonce)
                        pipe.set(key, str(expires), nx=True, px=expires - now_ms)
                    # Last, so it is only there once the nonces before it are.
                    pipe.set(self._seed_marker, "1", px=_MARKER_TTL_MS)
                    added += sum(1 for done in (await pipe.execute())[:-1] if done)
        except _FAILURES as exc:
            self._failed(exc)
            log.error(
                "limiter: could not seed %d nonces claimed before the restart into Redis at "
                "%s (%r): until they expire, their replays are refused only while this "
                "process decides without Redis",
                len(claims),
                self.url,
                exc,
            )
        return added

    async def nonces_lost(self) -> bool:
        """True if Redis no longer holds what ``seed_nonces`` gave it (its marker is gone:
        Redis restarted empty, or was flushed). Renews the marker otherwise. False when
        Redis cannot be asked now (the admission path counts that failure)."""
        if self.breaker.state is not BreakerState.CLOSED:
            return False  # not a probe: the breaker's half-open call is admission's
        try:
            renewed = await self._client.set(self._seed_marker, "1", xx=True, px=_MARKER_TTL_MS)
        except _FAILURES:
            return False
        return renewed is None

    async def _run(self, keys: list[str], args: list[str]) -> bytes:
        # One EVALSHA; on NOSCRIPT redis-py loads the script and runs it again once.
        reply = await self._script(keys, args)
        return reply if isinstance(reply, bytes) else str(reply).encode()

    async def _load(self) -> None:
        # SCRIPT LOAD returns the same SHA1 the Script object computed locally.
        self._script.sha = str(await self._client.script_load(SCRIPT))

    def _probe_behind(self) -> None:
        """Start the one probe of this cool-down behind the caller, if it is due."""
        if self._probe is None and self.breaker.allow():  # allow(): open -> half-open
            self.probes += 1
            self._probe = asyncio.ensure_future(self._probe_once())
            self._probe.add_done_callback(self._probe_done)

    async def _probe_once(self) -> None:
        # SCRIPT LOAD: Redis answers, and a restarted one has the script before a call.
        try:
            await self._load()
        except _FAILURES as exc:
            self._failed(exc)  # open again, for a new cool-down
            return
        except BaseException:
            self.breaker.abandon()  # learnt nothing: the next call starts another
            raise
        self._answered()

    def _probe_done(self, probe: asyncio.Future[None]) -> None:
        self._probe = None
        if not probe.cancelled() and (exc := probe.exception()) is not None:
            log.error("limiter: the Redis probe failed unexpectedly: %r", exc)

    def _answered(self) -> None:
        if self.breaker.record_success():
            log.warning("limiter: Redis answers again at %s; shared limits resumed", self.url)

    def _failed(self, exc: BaseException) -> None:
        self.failures += 1
        if self.breaker.record_failure():
            log.error(
                "limiter: Redis at %s failed %r; policy %s until it answers (probe every %.1f s)",
                self.url,
                exc,
                self.policy.value,
                self.breaker.retry_in(),
            )
        elif self.breaker.state is BreakerState.CLOSED:
            log.warning("limiter: Redis round trip failed: %r", exc)

    async def _fallback(
        self, account: str, category: str, action: str, limit: int, nonce: NonceClaim | None
    ) -> Decision:
        self.degraded += 1
        now = self._clock.time()
        if self.policy is FailurePolicy.CLOSED:
            # Refused before anything is claimed: the client's retry may reuse its nonce.
            wait = max(1.0, self.breaker.retry_in())
            return Decision(AdmitStatus.UNAVAILABLE, limit, None, 0.0, wait, now, degraded=True)
        # Weaker than Redis: a replay to another process during the outage is not seen.
        if nonce is not None and not await self.local.nonces.claim(
            nonce.access_key_id, nonce.nonce, nonce.expires_at
        ):
            return Decision(AdmitStatus.NONCE_REUSED, limit, None, 0.0, 0.0, now, degraded=True)
        if self.policy is FailurePolicy.OPEN:
            return Decision(AdmitStatus.ADMITTED, limit, None, 0.0, 0.0, now, degraded=True)
        share, window = local_share(limit, self.processes)
        budgets = self._budgets
        budget = budgets.budget(category, action) if budgets is not None else None
        if budget is None:
            return self.local.admit_local((account, category, action), share, window)
        # The budget as a limit: this process's share of it (the same arithmetic).
        budget_share, budget_window = local_share(budget, self.processes)
        return self.local.admit_local(
            (account, category, action),
            share,
            window,
            ((category, action), budget_share, budget_window),
        )


_STATUS = {1: AdmitStatus.ADMITTED, 0: AdmitStatus.THROTTLED, 3: AdmitStatus.UPSTREAM_BUDGET}


def _decision(reply: bytes, limit: int) -> Decision:
    status, count, reset_at, retry_at, now_us = map(int, reply.split())
    at = now_us / _US
    if status == 2:
        return Decision(AdmitStatus.NONCE_REUSED, limit, None, 0.0, 0.0, at)
    admitted = status == 1
    return Decision(
        status=_STATUS[status],
        limit=limit,
        remaining=max(0, limit - count),
        reset=(reset_at - now_us) / _US,
        retry_after=0.0 if admitted else (retry_at - now_us) / _US,
        at=at,
    )
