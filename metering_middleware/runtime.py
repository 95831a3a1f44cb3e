"""The meter's running parts, built from a ``MeteringConfig``.

The middleware only orders the steps of a call; this object owns what those
steps use (catalog, identity resolver, AccessKey cache, verifier, ledger
writer, metrics) and their lifecycle, so a gateway can also drive it without
the middleware (tests, a custom server) through ``async with``.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import replace
from decimal import Decimal
from types import TracebackType
from urllib.parse import unquote, urlsplit

from starlette.types import Receive, Send

from . import logs
from .catalog import Catalog, default_catalog, load_catalog
from .clock import Clock, SystemClock
from .config import ConfigError, MeteringConfig
from .credentials import CredentialCache, SecretBox
from .durable_nonces import DurableNonceLimiter, DurableNonceStore, NonceSeeding, restore_nonces
from .entitlements import (
    EntitlementInputs,
    EntitlementSource,
    EntitlementView,
    RatingStoreEntitlements,
)
from .errors import ACCOUNT_ARREARAGE, SPEND_CAP_EXCEEDED
from .identity import IdentityResolver
from .ledger import LedgerStore, StoreError
from .ledger.journal import Journal
from .ledger.urls import open_store, redact_url
from .ledger.writer import LedgerWriter
from .limiter import DeferredNonceStore, Limiter, LimiterSettings, MemoryLimiter, open_limiter
from .limiter.base import DecisionCounts
from .limiter.budget import checked_budgets
from .metrics import MeteringMetrics
from .money_view import MoneyStore
from .nonces import MemoryNonceStore, NonceStore
from .notices.delivery import DeliveryStats, WebhookSender
from .notices.recorder import NoticeRecorder
from .ops.journal_lock import JournalLock
from .ops.pg_limiter_lock import PostgresLimiterLock
from .ops.retention import BackgroundRetention, RetentionPolicy
from .ops.targets import PostgresTarget
from .rating import Month, RatingStore, SqliteRatingStore, rating_stores_beside
from .settler import DURATION_BUCKETS, BackgroundSettler
from .signing import SignatureVerifier
from .spend_guard import SpendGuard
from .tracing import Tracing
from .tracing import active as tracing_active

__all__ = ["MeteringRuntime"]

log = logging.getLogger("metering_middleware")


def _ledger_file(config: MeteringConfig) -> str:
    """The SQLite ledger's path, or "" for a ledger that is not a local file."""
    url = config.ledger_url
    if "://" not in url:
        return url
    if url.startswith("sqlite:///"):
        return unquote(urlsplit(url).path[1:])
    return ""


def _not_on(config: MeteringConfig) -> str:
    """What to add to "needs an SQLite ledger" for this ledger URL (PostgreSQL: not yet)."""
    scheme = config.ledger_url.split("://", 1)[0].lower() if "://" in config.ledger_url else ""
    if scheme in ("postgresql", "postgres"):
        return " (not on PostgreSQL yet, see docs/postgresql.md: set it off to use PostgreSQL)"
    return ""


def _default_journal(config: MeteringConfig) -> str:
    """Beside the SQLite file by default; none for ``memory://`` unless configured."""
    if config.journal_path:
        return config.journal_path
    path = _ledger_file(config)
    return path + ".journal" if path else ""


def _check_new_ledger(ledger: str, journal: str) -> None:
    """A start that would create the ledger file: say so, and refuse when it was lost.

    A journal holding records beside a missing ledger means a ledger existed and
    was moved or deleted while the gateway was down: a new empty file would
    take its records and lose its accounts and plans. Put it back instead.
    """
    if os.path.exists(ledger):
        return
    if journal and os.path.exists(journal) and os.path.getsize(journal) > 0:
        raise StoreError(
            f"no ledger file at {ledger!r}, but its journal {journal!r} holds records of "
            "one: put the ledger file back (or move the journal away to start a new ledger)"
        )
    log.warning("no ledger file at %r: creating a new, empty ledger", ledger)


def _retention(
    config: MeteringConfig, ledger_file: str, clock: Clock
) -> BackgroundRetention | None:
    if not config.retention_interval:
        if config.counter_retention_days:  # a setting nothing would apply: say so
            raise ConfigError(
                "counter_retention_days: set retention_interval too (how often it is applied)"
            )
        return None
    ledger: str | PostgresTarget = ledger_file
    if not ledger_file:
        if _not_on(config):  # PostgreSQL: its own connection per pass (ops/pg_retention.py)
            ledger = PostgresTarget(config.ledger_url)
        else:
            # Nothing of memory:// outlives the process; only an explicit counter setting
            # that cannot be applied is an error.
            if config.counter_retention_days:
                raise ConfigError(
                    "counter_retention_days: retention needs an SQLite or PostgreSQL ledger"
                )
            log.info("retention_interval: this ledger keeps nothing: no retention")
            return None
    policy = RetentionPolicy(config.counter_retention_days, config.retention_batch)
    return BackgroundRetention(ledger, policy, clock, interval=config.retention_interval)


def _money_store(store: RatingStore) -> MoneyStore:
    """The PostgreSQL rating store reads the money view's inputs itself."""
    if not isinstance(store, MoneyStore):
        raise ConfigError("enforce_balance: this ledger's rating store keeps no balances")
    return store


def _by_kind(stats: DeliveryStats, result: str) -> Callable[[], dict[tuple[str, ...], float]]:
    def read() -> dict[tuple[str, ...], float]:
        return {(kind,): n for (kind, r), n in list(stats.by_kind.items()) if r == result}

    return read


class NoPlans:
    """An entitlement source for gateways that sell no plans: catalog defaults only."""

    async def load_entitlement_inputs(self) -> EntitlementInputs:
        return EntitlementInputs()


class MeteringRuntime:
    """Everything a metered call needs, started and stopped together."""

    def __init__(
        self,
        config: MeteringConfig | None = None,
        *,
        clock: Clock | None = None,
        catalog: Catalog | None = None,
        store: LedgerStore | None = None,
        nonces: NonceStore | None = None,
        secret_box: SecretBox | None = None,
        metrics: MeteringMetrics | None = None,
        entitlements: EntitlementSource | None = None,
        limiter: Limiter | None = None,
        on_cap_reached: Callable[[str, Month, Decimal, Decimal], None] | None = None,
    ) -> None:
        self.config = config = config or MeteringConfig()
        self.clock: Clock = clock or SystemClock()
        if catalog is None:
            catalog = (
                load_catalog(config.catalog_path) if config.catalog_path else default_catalog()
            )
        self.catalog = catalog
        self.resolver = IdentityResolver(catalog, category_overrides=config.category_overrides)
        self.store: LedgerStore = store if store is not None else open_store(config.ledger_url)
        journal_path = _default_journal(config)
        self.journal = Journal(journal_path) if journal_path else None
        # One writer per journal file: a second process on it would lose batches.
        self._journal_lock = JournalLock(journal_path) if journal_path else None
        self.writer = LedgerWriter(
            self.store,
            journal=self.journal,
            mode=config.mode,
            flush_interval=config.flush_interval,
            clock=self.clock,
        )
        #: Seals and opens AccessKey secrets (the admin API creates keys with it too).
        self.secret_box = secret_box or SecretBox.from_env()
        self.credentials = CredentialCache(
            self.store,
            self.secret_box,
            self.clock,
            refresh_interval=config.credential_refresh,
        )
        local_nonces = nonces or MemoryNonceStore(self.clock)
        self.limiter: DurableNonceLimiter | None = None
        #: One memory:// limiter per PostgreSQL ledger (ops/pg_limiter_lock.py).
        self._limiter_lock: PostgresLimiterLock | None = None
        self._decisions: DecisionCounts | None = None
        ledger_file = _ledger_file(config)
        if config.enforce_qps:
            backend = limiter or open_limiter(
                LimiterSettings(
                    url=config.limiter_url,
                    failure_policy=config.limiter_failure_policy,  # type: ignore[arg-type]
                    processes=config.limiter_processes,
                    throttle_status=config.throttle_status,
                    upstream_qps=checked_budgets(config.upstream_qps, self.catalog),
                ),
                self.clock,
                # One memory:// limiter per ledger: a second process would double the limits.
                lock_path=ledger_file + ".limiter.lock" if ledger_file else None,
                nonces=local_nonces if isinstance(local_nonces, MemoryNonceStore) else None,
                ledger_processes=max(
                    ("gateway_processes", config.gateway_processes),
                    ("limiter_processes", config.limiter_processes),
                    key=lambda named: named[1],
                ),
            )
            if limiter is None and isinstance(backend, MemoryLimiter) and _not_on(config):
                # No file beside a PostgreSQL ledger to lock: a session advisory lock.
                self._limiter_lock = PostgresLimiterLock(config.ledger_url)
            counts = getattr(backend, "decisions", None)
            self._decisions = counts if isinstance(counts, DecisionCounts) else None
            # Every nonce the limiter claims is kept in the ledger too (a restart, or a
            # Redis that restarted empty, must not reopen its replay window).
            self.limiter = DurableNonceLimiter(
                backend, self.writer, reseed=self._restore_nonces, clock=self.clock
            )
        # With a limiter, the nonce is claimed by ``admit`` in the same round trip as
        # the QPS decision (shared between processes with Redis), not by the verifier.
        verifier_nonces: NonceStore
        #: Where the nonces claimed before a restart are put back at start.
        self._nonce_seeding: NonceSeeding
        if self.limiter is not None:
            verifier_nonces = DeferredNonceStore()
            self._nonce_seeding = self.limiter
        else:
            verifier_nonces = self._nonce_seeding = DurableNonceStore(local_nonces, self.writer)
        self.verifier = SignatureVerifier(
            verifier_nonces, self.clock, window_seconds=config.signature_window
        )
        if _not_on(config) and not self.journal:
            log.warning(
                "ledger on PostgreSQL without journal_path: calls are refused while the "
                "server is unreachable (set one journal_path per process)"
            )
        # Plans live beside the ledger: in its SQLite file, or its PostgreSQL database (a
        # rating store per loop: pools are bound to one). memory:// sells none.
        pg_ratings = rating_stores_beside(self.store)
        self.rating_store: RatingStore | None = None
        if entitlements is None and config.enforce_qps and (ledger_file or pg_ratings):
            self.rating_store = pg_ratings() if pg_ratings else SqliteRatingStore(ledger_file)
            entitlements = RatingStoreEntitlements(self.rating_store)
        self.settler: BackgroundSettler | None = None
        if config.settle_interval:
            if not ledger_file and pg_ratings is None:
                raise ConfigError(
                    "settle_interval: settlement needs an SQLite ledger (sqlite:///path) or a "
                    "PostgreSQL one (postgresql://); memory:// keeps no plans"
                )
            self.settler = BackgroundSettler(
                ledger_file,
                catalog,
                self.clock,
                interval=config.settle_interval,
                open_store=pg_ratings,
            )
        #: Expired nonces and old counters pruned in the background (docs/operations.md).
        self.retention = _retention(config, ledger_file, self.clock)
        # Notices from the request path (the spend guard's "cap reached"), and their
        # webhook deliveries: tasks of their own, nothing on a call's path.
        self.notices: NoticeRecorder | None = None
        self.webhooks: WebhookSender | None = None
        secret = config.webhook_signing_secret()
        if secret is not None:
            if not ledger_file:
                raise ConfigError(
                    "webhook_url: notices live in an SQLite ledger file" + _not_on(config)
                )
            assert config.webhook_url is not None
            self.webhooks = WebhookSender(
                ledger_file,
                config.webhook_url,
                secret,
                self.clock,
                timeout=config.webhook_timeout,
                max_attempts=config.webhook_max_attempts,
                poll_interval=config.webhook_poll_interval,
            )
        if ledger_file:
            self.notices = NoticeRecorder(
                ledger_file,
                self.clock,
                on_recorded=None if self.webhooks is None else self.webhooks.wake,
            )
        #: Standing check, spend guard and caps (``enforce_balance``); None when off.
        self.guard: SpendGuard | None = None
        if config.enforce_balance:
            if not ledger_file and pg_ratings is None:
                raise ConfigError(
                    "enforce_balance: balances need an SQLite ledger (sqlite:///path) or a "
                    "PostgreSQL one (postgresql://); memory:// keeps none"
                )
            self.guard = SpendGuard(
                ledger_file,
                catalog,
                self.clock,
                refresh_interval=config.standing_refresh,
                processes=config.gateway_processes,
                arrearage=replace(
                    ACCOUNT_ARREARAGE, code=config.arrearage_code, status=config.arrearage_status
                ),
                spend_cap=replace(
                    SPEND_CAP_EXCEEDED, code=config.spend_cap_code, status=config.spend_cap_status
                ),
                on_cap_reached=on_cap_reached or self._cap_notice,
                money_store=None if pg_ratings is None else _money_store(self._shared(pg_ratings)),
            )
        self.entitlements = EntitlementView(
            entitlements or NoPlans(),
            catalog,
            self.clock,
            refresh_interval=config.entitlement_refresh,
        )
        self.metrics = metrics or MeteringMetrics()
        self.metrics.gauge(
            "metering_ledger_pending",
            "Chargeable records not yet committed to the ledger store.",
            lambda: float(self.writer.stats.pending),
        )
        self.metrics.gauge(
            "metering_ledger_journaled",
            "Records written to the fallback journal since start.",
            lambda: float(self.writer.stats.journaled),
        )
        self.metrics.gauge(
            "metering_ledger_accepting",
            "1 while the ledger (store or journal) takes records; 0 while calls are refused.",
            lambda: 1.0 if self.writer.accepting else 0.0,
        )
        guard = self.guard
        if guard is not None:
            self.metrics.gauge(
                "metering_money_view_loads",
                "Full reloads of the cached balances and standing (a mark moved) since start.",
                lambda: float(guard.view.full_loads),
            )
            self.metrics.gauge(
                "metering_spend_guard_accounts",
                "Accounts with unsettled pay-as-you-go estimated by this process.",
                lambda: float(guard.accounts_estimated),
            )
        self._register_metrics()
        self._started = False
        self._stopped = False
        self._lock = asyncio.Lock()
        #: This runtime holds the process's JSON log handler (``log_format = "json"``).
        self._json_logs = False
        #: OpenTelemetry, when the application configured it (decided at start; tracing.py).
        self.tracing: Tracing | None = None

    def _shared(self, make: Callable[[], RatingStore]) -> RatingStore:
        """The serving loop's rating store (entitlements and the money view share one: a
        PostgreSQL pool fewer per process); made here when entitlements made none."""
        if self.rating_store is None or isinstance(self.rating_store, SqliteRatingStore):
            return make()
        return self.rating_store

    def _register_metrics(self) -> None:
        """Settlement, journal, limiter and webhook series (docs/metrics.md): counts kept
        where the work happens, read at scrape time; nothing added to a call's path."""
        metrics = self.metrics
        settler = self.settler
        if settler is not None:
            stats = settler.stats
            metrics.family(
                "metering_settlement_runs",
                "Settlement passes of this process by result: settled, busy (another "
                "settler held the lock), failed.",
                ("result",),
                lambda: {
                    ("settled",): stats.passes,
                    ("busy",): stats.busy,
                    ("failed",): stats.failures,
                },
            )
            metrics.histogram(
                "metering_settlement_duration_seconds",
                "Seconds a settlement pass of this process took (settled or failed).",
                lambda: (DURATION_BUCKETS, list(stats.durations), stats.duration_sum),
            )
            clock = self.clock

            def lag() -> dict[tuple[str, ...], float]:
                horizon = stats.horizon
                if horizon is None:  # no pass yet: no sample rather than a made-up one
                    return {}
                return {(): (clock.now() - horizon).total_seconds()}

            metrics.family(
                "metering_settlement_lag_seconds",
                "Now minus the settled horizon (records that occurred before it are settled).",
                (),
                lag,
                kind="gauge",
            )
        retention = self.retention
        if retention is not None:
            kept = retention.stats
            metrics.family(
                "metering_retention_deleted",
                "Rows deleted by this process's retention passes, by kind: nonces, counters.",
                ("kind",),
                lambda: {("nonces",): kept.nonces, ("counters",): kept.counters},
            )
            metrics.family(
                "metering_retention_runs",
                "Retention passes of this process by result: done, failed.",
                ("result",),
                lambda: {("done",): kept.passes, ("failed",): kept.failures},
            )
        journal = self.journal
        if journal is not None:
            metrics.gauge(
                "metering_journal_bytes",
                "Bytes in the fallback journal (records waiting for the ledger store).",
                lambda: float(journal.bytes),  # kept by the journal: no stat on the loop
            )
            metrics.gauge(
                "metering_journal_records",
                "Records this process journaled that the ledger store has not taken yet.",
                lambda: float(journal.records),
            )
        decisions = self._decisions
        if decisions is not None:
            results = (
                "admitted",
                "throttled",
                "upstream_budget",
                "nonce_reused",
                "fail_open",
                "fail_closed",
                "local_admitted",
                "local_throttled",
                "local_upstream_budget",
            )
            metrics.family(
                "metering_limiter_decisions",
                "QPS admissions by result; fail_*/local_*: decided by the failure policy "
                "while the shared limiter (Redis) fails.",
                ("result",),
                lambda: {(r,): decisions.counts.get(r, 0) for r in results},
            )
        webhooks = self.webhooks
        if webhooks is not None:
            delivery = webhooks.stats
            for name, result, text in (
                ("metering_notices_sent", "delivered", "Notices delivered to the webhook"),
                ("metering_notices_failed", "failed", "Webhook delivery attempts that failed"),
                (
                    "metering_notices_given_up",
                    "given_up",
                    "Notices left failed after the last attempt",
                ),
            ):
                metrics.family(
                    name, f"{text}, by notice kind.", ("kind",), _by_kind(delivery, result)
                )

    def _cap_notice(self, account: str, month: Month, cap: Decimal, spend: Decimal) -> None:
        """The spend guard reached a monthly cap: record the notice (once; same id as the
        one settlement records when settled spend reaches it), off the call's path."""
        if self.notices is not None:
            self.notices.cap_reached(account, str(month), cap=cap, spend=spend)

    @property
    def started(self) -> bool:
        return self._started

    @property
    def stopped(self) -> bool:
        """True once ``stop`` ran: the writer starts once, so the runtime is done."""
        return self._stopped

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            if self.limiter is not None and not self._started:
                await self.limiter.close()  # a refused start keeps no lock on the ledger
                if self._limiter_lock is not None:
                    await self._limiter_lock.release()
            raise

    async def _start(self) -> None:
        async with self._lock:
            if self._started:
                return
            if self._stopped:
                raise RuntimeError("a stopped metering runtime does not start again")
            ledger_file = _ledger_file(self.config)
            if ledger_file:
                journal = _default_journal(self.config)
                await asyncio.to_thread(_check_new_ledger, ledger_file, journal)
            if self._journal_lock is not None:
                await asyncio.to_thread(self._journal_lock.acquire)
            try:
                if self.limiter is not None:
                    # Before the ledger opens: a memory:// limiter refused (another process
                    # holds the ledger's lock) must stop the start before the writer runs.
                    await self.limiter.start()
                await self.store.open()
                if self._limiter_lock is not None:  # after the open: the ledger exists
                    try:
                        await self._limiter_lock.acquire()
                    except BaseException:
                        await self.store.close()
                        raise
            except BaseException:
                await self._release_journal()
                raise
            await self.writer.start()
            await self.credentials.refresh()
            if self.rating_store is not None:
                await self.rating_store.open()
            await self.entitlements.refresh()
            if self.guard is not None:
                await self.guard.view.refresh()
            await self._restore_nonces()
            if self.settler is not None:
                await self.settler.start()
            if self.retention is not None:
                await self.retention.start()
            if self.notices is not None:
                await self.notices.start()
            if self.webhooks is not None:
                await self.webhooks.start()
            self.tracing = tracing_active()
            self._started = True
            if self.config.log_format == "json" and not self._json_logs:
                logs.acquire_json()
                self._json_logs = True
            log.info(
                "metering started: ledger=%s mode=%s catalog items=%d",
                redact_url(self.config.ledger_url),  # never a database password in a log
                self.config.mode,
                len(self.catalog.items),
            )

    async def _restore_nonces(self) -> None:
        """Refuse the replays of calls made before this start: seed the nonces held."""

        async def account_of(access_key_id: str) -> str | None:
            credential = await self.credentials.lookup(access_key_id)
            return None if credential is None else credential.account

        # Wall time: a nonce's expiry is what its signature's timestamp says.
        read, added = await restore_nonces(
            self.store, self._nonce_seeding, self.clock.time(), account_of
        )
        if read:
            log.info("restored %d live signature nonces (%d new to the nonce store)", read, added)

    async def stop(self) -> None:
        try:
            await self._stop()
        finally:
            if self._json_logs and self._stopped:  # after the last line of the stop
                self._json_logs = False
                logs.release_json()

    async def _stop(self) -> None:
        async with self._lock:
            if not self._started:
                return
            self._started = False
            self._stopped = True
            if self.webhooks is not None:
                await self.webhooks.stop()  # an attempt under way is retried after its lease
            if self.notices is not None:
                await self.notices.stop()  # what the request path emitted is recorded
            if self.settler is not None:
                await self.settler.stop()  # a pass under way finishes first
            if self.retention is not None:
                await self.retention.stop()  # a batch under way commits first
            if self.limiter is not None:
                await self.limiter.join()
                await self.limiter.close()
                if self._limiter_lock is not None:
                    await self._limiter_lock.release()
            # The writer flushes everything pending (or journals it) before the store closes.
            try:
                await self.writer.stop()
            finally:
                await self._release_journal()
            await self.store.close()
            if self.guard is not None:
                await self.guard.view.close()  # first: it may share the rating store
            if self.rating_store is not None:
                await self.rating_store.close()
            log.info("metering stopped: ledger flushed")

    async def _release_journal(self) -> None:
        if self._journal_lock is not None:
            await asyncio.to_thread(self._journal_lock.release)

    async def ready(self) -> bool:
        """True while the ledger store is reachable and takes records."""
        if not self._started or not self.writer.accepting:
            return False
        try:
            await self.store.check()
        except Exception:  # readiness is a yes/no; the reason is in the writer's log
            return False
        return True

    async def serve_lifespan(self, receive: Receive, send: Send) -> None:
        """Speak the ASGI lifespan protocol for this runtime alone: start on startup, stop
        on shutdown. For an app served on its own (the meter around an app without a
        lifespan, the tenant view); mounted in a gateway, the gateway's lifespan runs it."""
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.start()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def __aenter__(self) -> MeteringRuntime:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
