"""Webhook delivery from the outbox: a background task of its own, never in a call's way.

Each round claims the due rows (a lease, so several gateway processes on one ledger never
post one notice at the same time), POSTs each notice as JSON signed the Standard Webhooks
way (:mod:`.signing`), and records the attempt: a 2xx marks it delivered; anything else
(another status, a timeout, a refused connection) schedules the next attempt after an
exponential backoff with full jitter, until ``max_attempts`` (then it stays ``failed``,
visible in ``metering notices``). The outbox rows are the truth: a restart resumes from
them, so no notice is lost; a sender killed between the receiver's answer and its record
posts that notice again. Delivery is therefore at least once: receivers dedupe on
``webhook-id`` (the notice id).

Nothing here runs on a call's path: the task owns its ``httpx.AsyncClient`` (with
timeouts), and every database step runs in a worker thread with its own connection.
Due times come from the injected clock (wall time); the polling interval from the event
loop's (monotonic).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import sqlite3
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from os import PathLike
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

import httpx

from ..clock import Clock
from ..ledger.migrate import connect_existing
from .model import Notice
from .outbox import Delivery, claim_due, record_attempt
from .signing import signature_headers

__all__ = ["Backoff", "DeliveryStats", "RandomSource", "WebhookSender", "notice_payload"]

log = logging.getLogger("metering_middleware.notices.webhook")
_T = TypeVar("_T")


class RandomSource(Protocol):
    def random(self) -> float: ...  # in [0, 1)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter: the wait before attempt ``n + 1`` after ``n``
    failures is uniform in ``[0, min(cap, base * 2 ** (n - 1)))`` seconds.

    Full jitter spreads the retries of many notices that failed together (a receiver that
    was down) instead of sending them back in waves."""

    base: float = 5.0
    cap: float = 3600.0

    def ceiling(self, failures: int) -> float:
        return min(self.cap, self.base * 2.0 ** max(failures - 1, 0))

    def delay(self, failures: int, rng: RandomSource) -> float:
        return rng.random() * self.ceiling(failures)


def notice_payload(notice: Notice) -> bytes:
    """The body POSTed: the event id, its type, whom and what it is about, when, details."""
    doc = {
        "id": notice.id,
        "type": notice.kind.value,
        "account": notice.account,
        "subject": notice.subject,
        "at": notice.at.isoformat(),
        "data": dict(notice.data),
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(slots=True)
class DeliveryStats:
    delivered: int = 0
    failed_attempts: int = 0  # attempts that did not get a 2xx
    given_up: int = 0  # notices left failed after max_attempts
    rounds_failed: int = 0  # rounds that raised (the database), logged
    #: (notice kind, "delivered" | "failed" | "given_up") -> count: the same counts by
    #: kind, for metrics (kinds are a small fixed set; never the account).
    by_kind: dict[tuple[str, str], int] = field(default_factory=dict)

    def add(self, kind: str, result: str) -> None:
        key = (kind, result)
        self.by_kind[key] = self.by_kind.get(key, 0) + 1


def _where(url: str) -> str:
    """The receiver as logged: scheme and host only (a URL may carry a token)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}"


class _RedactUrl(logging.Filter):
    """httpx logs every request's full URL (INFO, logger ``httpx``); a webhook URL may
    carry a token in its path or query, so this sender's URL is logged as its host."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self._url = url
        self._shown = _where(url) + "/..."

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and any(str(a).startswith(self._url) for a in args):
            record.args = tuple(self._shown if str(a).startswith(self._url) else a for a in args)
        return True


class WebhookSender:
    """Posts the outbox of the ledger at ``ledger_file`` to ``url``, signed with ``secret``."""

    def __init__(
        self,
        ledger_file: str | PathLike[str],
        url: str,
        secret: str,
        clock: Clock,
        *,
        timeout: float = 10.0,
        max_attempts: int = 8,
        backoff: Backoff | None = None,
        rng: RandomSource | None = None,
        poll_interval: float = 1.0,
        batch: int = 20,
        owner: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._path = ledger_file
        self._url = url
        self._secret = secret
        self._clock = clock
        self._timeout = timeout
        self._max_attempts = max_attempts
        self._backoff = backoff or Backoff()
        self._rng: RandomSource = rng or random.SystemRandom()
        self._poll = poll_interval
        self._batch = batch
        self.owner = owner or f"webhook-{uuid.uuid4().hex[:12]}"
        self._transport = transport
        # A claim outlives every attempt of its batch (posted one after the other).
        self._lease = timedelta(seconds=batch * (timeout + 1.0) + 30.0)
        self._client: httpx.AsyncClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._redact = _RedactUrl(url)
        self.stats = DeliveryStats()

    def __repr__(self) -> str:  # never the secret, nor the URL's path or query
        return f"WebhookSender({_where(self._url)!r})"

    @property
    def lease(self) -> timedelta:
        return self._lease

    async def start(self, *, background: bool = True) -> None:
        """Open the HTTP client and (``background``) start the task that delivers every
        ``poll_interval``; without it, rounds run only when :meth:`deliver_due` is called."""
        if self._client is None:
            logging.getLogger("httpx").addFilter(self._redact)
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self._timeout),
                follow_redirects=False,
                transport=self._transport,
            )
        if background and self._task is None:
            self._task = asyncio.create_task(self._every_poll(), name="metering-webhooks")

    async def stop(self) -> None:
        """Stop at once: an attempt under way is abandoned (its claim's lease runs out and
        it is retried, by this ledger's next sender)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
            logging.getLogger("httpx").removeFilter(self._redact)

    def wake(self) -> None:
        """Look for due notices now rather than at the next poll."""
        self._wake.set()

    async def _every_poll(self) -> None:
        while True:
            await self.deliver_due()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll)

    async def deliver_due(self) -> int:
        """One round: post every due notice (claimed by this sender); how many were
        delivered. Never raises but cancellation: a failing database is logged."""
        delivered = 0
        try:
            while True:
                now = self._clock.now()
                claimed = await self._db(claim_due, self.owner, now, now + self._lease, self._batch)
                for d in claimed:
                    delivered += await self._attempt(d)
                if len(claimed) < self._batch:
                    return delivered
        except asyncio.CancelledError:
            raise
        except Exception:
            self.stats.rounds_failed += 1
            log.exception("webhook round failed; the next one retries")
            return delivered

    async def _attempt(self, d: Delivery) -> int:
        body = notice_payload(d.notice)
        error = await self._post(d.notice.id, body)
        now = self._clock.now()
        failures = d.attempts + 1
        if error is None:
            await self._db(record_attempt, d.notice.id, self.owner, now, error=None, next_at=None)
            self.stats.delivered += 1
            self.stats.add(d.notice.kind, "delivered")
            log.info("webhook delivered id=%s attempts=%d", d.notice.id, failures)
            return 1
        self.stats.failed_attempts += 1
        self.stats.add(d.notice.kind, "failed")
        if failures >= self._max_attempts:
            await self._db(record_attempt, d.notice.id, self.owner, now, error=error, next_at=None)
            self.stats.given_up += 1
            self.stats.add(d.notice.kind, "given_up")
            log.error(
                "webhook gave up id=%s after %d attempts: %s to %s",
                d.notice.id,
                failures,
                error,
                _where(self._url),
            )
            return 0
        wait = self._backoff.delay(failures, self._rng)
        next_at = now + timedelta(seconds=wait)
        await self._db(record_attempt, d.notice.id, self.owner, now, error=error, next_at=next_at)
        log.warning(
            "webhook attempt %d failed id=%s: %s to %s; next in %.1f s",
            failures,
            d.notice.id,
            error,
            _where(self._url),
            wait,
        )
        return 0

    async def _post(self, notice_id: str, body: bytes) -> str | None:
        """None for a 2xx, else what went wrong (never the URL, never the secret)."""
        client = self._client
        assert client is not None, "start() first"
        stamp = int(self._clock.time())
        headers = {
            "content-type": "application/json",
            "user-agent": "metering-middleware-webhooks",
            **signature_headers(self._secret, notice_id, stamp, body),
        }
        try:
            # Streamed and not read: a receiver's answer body is never buffered.
            async with client.stream("POST", self._url, content=body, headers=headers) as resp:
                status = resp.status_code
        except httpx.TimeoutException as exc:
            return f"timeout ({type(exc).__name__})"
        except httpx.HTTPError as exc:
            return f"no answer ({type(exc).__name__})"
        return None if 200 <= status < 300 else f"HTTP {status}"

    async def _db(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        # A connection per step: notices are few, and a step abandoned by stop() (its
        # thread cannot be cut) then shares nothing with the next sender's.
        def run() -> _T:
            conn = connect_existing(self._path, timeout=5.0)
            try:
                conn.execute("PRAGMA busy_timeout = 5000")
                return fn(conn, *args, **kwargs)
            finally:
                conn.close()

        return await asyncio.to_thread(run)

    async def pending(self) -> int:
        """Rows not delivered nor given up (for metrics and tests)."""

        def count(conn: sqlite3.Connection) -> int:
            (n,) = conn.execute(
                "SELECT COUNT(*) FROM notice_outbox"
                " WHERE delivered_at IS NULL AND failed_at IS NULL"
            ).fetchone()
            return int(n)

        return await self._db(count)
