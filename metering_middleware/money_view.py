"""The request path's cached view of each account's money: balance, standing, cap, plans.

Like the AccessKey and entitlement snapshots, it is never a database query per call:
a snapshot, reloaded in the background at most once per ``refresh_interval`` (on the
injected clock), stale-while-reload, a failed reload logged and the old snapshot kept.
A reload first reads a few cheap marks (last balance entry, settlement progress,
standing, settings and plan changes, the billing month); only when one moved does it read
the rest, all in the same read transaction (``rating.money_reads``), so a snapshot's
balance and its settled horizon always agree.

The snapshot is indexed for the request path: per account, floats for instants, plans in
deduction order per category, subscriptions per API; a lookup is a few dict reads.
"""

from __future__ import annotations

import asyncio
import logging
import math
import sqlite3
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from operator import attrgetter
from pathlib import Path
from typing import Generic, Protocol, TypeVar, runtime_checkable

from .clock import Clock
from .ledger.migrate import connect_existing
from .rating.money_reads import AccountMoney, MoneyMarks, MoneyReading, read_money
from .rating.months import Month
from .rating.plans import PlanKind, QpsSubscription, ResourcePlan
from .reload import BackgroundReload

__all__ = [
    "NOBODY",
    "AccountSnapshot",
    "MoneySnapshot",
    "MoneyStore",
    "MoneyView",
    "PlanSlot",
    "month_index",
]

log = logging.getLogger("metering_middleware")

_ORDER = attrgetter("order_key")


@runtime_checkable
class MoneyStore(Protocol):
    """A store that reads the money view's inputs itself (PostgreSQL's rating store)."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def read_money(
        self, month: Month, known: MoneyMarks | None = None
    ) -> MoneyReading | None: ...


_Prepared = TypeVar("_Prepared")


@dataclass(frozen=True, slots=True)
class PlanSlot:
    """A resource plan as the request path sees it: validity and points left (settled)."""

    id: str
    start: float
    end: float
    left: Decimal


@dataclass(frozen=True, slots=True)
class AccountSnapshot:
    balance: Decimal
    #: Epoch seconds since the account is overdue, when it is *and* its balance is still
    #: below zero in the snapshot (a top-up read with it means restored); else None.
    overdue_since: float | None = None
    suspended: bool = False  # the stored suspension, balance still below zero
    held: bool = False  # an operator's suspension (lifted only by hand)
    monthly_cap: Decimal | None = None
    #: Epoch seconds: this account's records that occurred before it are settled.
    horizon: float = -math.inf
    month_spend: Decimal = Decimal(0)
    payg_calls: Mapping[str, int] = field(default_factory=dict)
    #: (category, action) -> active spans (start, end) of QPS subscriptions.
    subscriptions: Mapping[tuple[str, str], tuple[tuple[float, float], ...]] = field(
        default_factory=dict
    )
    #: category -> resource plans covering it, in deduction order (single first, then
    #: general; each expiring first, then ordered first, then by id).
    plans: Mapping[str, tuple[PlanSlot, ...]] = field(default_factory=dict)


#: An account the ledger knows nothing about: balance zero, good standing, no plans.
NOBODY = AccountSnapshot(Decimal(0))


def month_index(month: Month) -> int:
    """A month as one int (a cheap dict key: a Month dataclass hashes slowly)."""
    return month.year * 12 + month.month - 1


@dataclass(frozen=True, slots=True)
class MoneySnapshot:
    month: Month
    month_start: float
    month_end: float
    accounts: Mapping[str, AccountSnapshot]
    month_index: int = 0

    def account(self, name: str) -> AccountSnapshot:
        return self.accounts.get(name, NOBODY)


def _epoch(when: datetime | None) -> float:
    return -math.inf if when is None else when.timestamp()


def _index_account(
    money: AccountMoney, plans: list[ResourcePlan], subs: list[QpsSubscription]
) -> AccountSnapshot:
    standing = money.standing
    debt = money.balance < 0
    overdue = None
    suspended = held = False
    if standing is not None:
        held = standing.held_at is not None
        if debt and standing.overdue_since is not None:
            overdue = standing.overdue_since.timestamp()
            suspended = standing.suspended_at is not None
    spans: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for s in subs:
        spans.setdefault(s.api, []).append((s.start.timestamp(), s.effective_end.timestamp()))
    by_category: dict[str, list[PlanSlot]] = {}
    ordered = sorted((p for p in plans if p.kind is PlanKind.SINGLE), key=_ORDER)
    ordered += sorted((p for p in plans if p.kind is PlanKind.GENERAL), key=_ORDER)
    for p in ordered:
        slot = PlanSlot(
            p.id,
            p.start.timestamp(),
            p.effective_end.timestamp(),
            money.remaining.get(p.id, p.points),
        )
        for category in sorted(p.categories):
            by_category.setdefault(category, []).append(slot)
    return AccountSnapshot(
        balance=money.balance,
        overdue_since=overdue,
        suspended=suspended,
        held=held,
        monthly_cap=money.monthly_cap,
        horizon=_epoch(money.horizon),
        month_spend=money.month_spend,
        payg_calls=dict(money.payg_calls),
        subscriptions={k: tuple(v) for k, v in spans.items()},
        plans={k: tuple(v) for k, v in by_category.items()},
    )


def index(reading: MoneyReading) -> MoneySnapshot:
    """The request path's snapshot of one reading."""
    plans: dict[str, list[ResourcePlan]] = {}
    subs: dict[str, list[QpsSubscription]] = {}
    for p in reading.plans:
        plans.setdefault(p.account, []).append(p)
    for s in reading.subscriptions:
        subs.setdefault(s.account, []).append(s)
    accounts = {
        # Interned, as the AccessKey cache interns its account names: the spend guard's
        # lookup of the caller's account then matches by identity, not by comparing text.
        sys.intern(name): _index_account(m, plans.get(name, []), subs.get(name, []))
        for name, m in reading.accounts.items()
    }
    month = reading.month
    return MoneySnapshot(
        month, month.start.timestamp(), month.end.timestamp(), accounts, month_index(month)
    )


class MoneyView(Generic[_Prepared]):
    """``view.snapshot`` (after ``await view.refresh()`` once); reloads behind the caller.

    Reading, indexing and ``prepare`` (the spend guard builds its per-account state
    there) run in a worker thread: a full reload of thousands of accounts takes tens of
    milliseconds the event loop must not wait for. ``on_snapshot(snapshot, prepared)``
    then runs on the event loop, right after the snapshot is installed and before any
    call can read it: the spend guard drops there the estimates of records the snapshot
    shows settled, so no call sees a cost both in the balance and the estimate.
    ``on_loaded()`` runs on the event loop after every reload, whether or not anything
    moved (or the read failed): bookkeeping kept off the calls' path runs there.
    ``on_window()`` runs on the event loop when a reload starts, right after
    ``fresh_from``/``next_reload_at`` moved: what was derived from the old window goes.
    """

    __slots__ = (
        "_clock",
        "_conn",
        "_interval",
        "_marks",
        "_on_loaded",
        "_on_snapshot",
        "_on_window",
        "_path",
        "_prepare",
        "_reload",
        "_store",
        "_store_open",
        "fresh_from",
        "full_loads",
        "loads",
        "next_reload_at",
        "snapshot",
    )

    def __init__(
        self,
        ledger_file: str | Path,
        clock: Clock,
        *,
        refresh_interval: float = 1.0,
        prepare: Callable[[MoneySnapshot], _Prepared] | None = None,
        on_snapshot: Callable[[MoneySnapshot, _Prepared | None], None] | None = None,
        on_loaded: Callable[[], None] | None = None,
        on_window: Callable[[], None] | None = None,
        store: MoneyStore | None = None,
    ) -> None:
        self._path = Path(ledger_file)
        #: Read instead of the SQLite file (PostgreSQL's rating store); opened on first use.
        self._store = store
        self._store_open = False
        self._clock = clock
        self._conn: sqlite3.Connection | None = None
        self._marks: MoneyMarks | None = None
        self._prepare = prepare
        self._on_snapshot = on_snapshot
        self._on_loaded = on_loaded
        self._on_window = on_window
        month = Month.of(clock.now())
        self.snapshot = MoneySnapshot(
            month, month.start.timestamp(), month.end.timestamp(), {}, month_index(month)
        )
        self._reload = BackgroundReload(self._load, clock, refresh_interval, "money view")
        self._interval = refresh_interval
        #: Wall times between which no reload is due (set as each reload starts): the
        #: request path compares its clock reading with them and calls ``start_if_due``
        #: only outside (which measures the interval on the monotonic clock; a wall
        #: clock stepped back or forward only makes it ask early).
        self.fresh_from = math.inf
        self.next_reload_at = -math.inf
        #: Reloads completed (each read the marks) and those that read everything.
        self.loads = 0
        self.full_loads = 0

    def start_if_due(self) -> None:
        """Stale-while-reload: start one reload behind the caller when due."""
        self._reload.start_if_due()

    @property
    def due(self) -> bool:
        return self._reload.due()

    async def refresh(self) -> None:
        """Reload now (or join the reload under way); raise what it raised."""
        await self._reload.wait()

    async def join(self) -> None:
        await self._reload.join()

    async def close(self) -> None:
        await self._reload.join()
        if self._store is not None and self._store_open:
            self._store_open = False
            await self._store.close()
        conn, self._conn = self._conn, None
        if conn is not None:
            await asyncio.to_thread(conn.close)

    def _read(
        self, month: Month, known: MoneyMarks | None
    ) -> tuple[MoneyMarks, MoneySnapshot, _Prepared | None] | None:
        """In the worker thread: read (when a mark moved), index and prepare."""
        if self._conn is None:
            self._conn = connect_existing(self._path)
            self._conn.execute("PRAGMA busy_timeout = 5000")
        try:
            reading = read_money(self._conn, month, known)
        except sqlite3.Error:
            # A broken connection (the file moved, a lock timeout): a fresh one next time.
            conn, self._conn = self._conn, None
            conn.close()
            raise
        return self._indexed(reading)

    def _indexed(
        self, reading: MoneyReading | None
    ) -> tuple[MoneyMarks, MoneySnapshot, _Prepared | None] | None:
        """In the worker thread: index and prepare what was read."""
        if reading is None:
            return None
        snapshot = index(reading)
        prepared = None if self._prepare is None else self._prepare(snapshot)
        return reading.marks, snapshot, prepared

    async def _load(self) -> None:
        # Started at most an interval ago (the reload's own rule decides when to start).
        started = self._clock.time()
        self.fresh_from, self.next_reload_at = started, started + self._interval
        if self._on_window is not None:
            self._on_window()  # the spend guard closes what it opened in the old window
        month = Month.of(self._clock.now())
        try:
            if self._store is None:
                read = await asyncio.to_thread(self._read, month, self._marks)
            else:
                # An asyncio store reads on this loop without blocking it; the indexing
                # (CPU) still runs in a worker thread.
                if not self._store_open:
                    await self._store.open()
                    self._store_open = True
                reading = await self._store.read_money(month, self._marks)
                read = await asyncio.to_thread(self._indexed, reading)
        finally:
            if self._on_loaded is not None:
                self._on_loaded()  # the spend guard's bookkeeping, once per refresh
        self.loads += 1
        if read is None:
            return  # nothing moved since the last full read
        marks, snapshot, prepared = read
        # Installed and announced in one step of the loop: no call runs in between.
        self.snapshot = snapshot
        self._marks = marks
        self.full_loads += 1
        if self._on_snapshot is not None:
            self._on_snapshot(snapshot, prepared)
