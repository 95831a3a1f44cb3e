"""What rating needs from storage: plans, settlement marks, checkpoints, lines, a lock.

Two stores implement it: SQLite (``stores/sqlite/rating.py``, the ledger's own file) and
PostgreSQL (``stores/postgresql/rating.py``); :func:`.open.rating_store_for` picks the
one beside a ledger. Two notes for any store:

- settlement reads the ledger by ``seq`` (insertion order) and bounds every read by the
  ``seq`` it saw at the start of a pass (``max_seq``). That is exact on SQLite, where a
  lower ``seq`` can never commit after a higher one is visible; on PostgreSQL sequences
  commit out of order, so its ``max_seq`` first waits until no insert is in flight
  (``LOCK TABLE calls IN SHARE MODE``): a bound must never pass a record still to commit.
- ``commit`` is one transaction, and checks that the caller still holds the settlement lock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Protocol

from ..ledger.records import CallRecord
from .months import Month, billing_month
from .plans import QpsSubscription, ResourcePlan
from .results import Source, SourceKind
from .state import DeductionState

__all__ = [
    "AccountProgress",
    "AccountWrite",
    "Adjustment",
    "BillLine",
    "CallBatch",
    "LockLost",
    "MoneyMarks",
    "Plan",
    "PlanBook",
    "PlanChange",
    "Progress",
    "RatingStore",
    "SettledKey",
    "SettlementWrites",
]

Plan = ResourcePlan | QpsSubscription

#: A record's place in deduction order: (month of effective at, effective at, occurred at,
#: record id). Effective at is ``occurred_at``, or for an adjustment its arrival
#: (``recorded_at``): so an adjustment comes after every record settled before it arrived,
#: even when it is billed in an earlier month (the previous one, still in its grace days).
SettledKey = tuple[Month, datetime, datetime, str]


class LockLost(Exception):
    """The settlement lock is held by another owner: nothing was written."""


@dataclass(frozen=True, slots=True)
class PlanBook:
    """Every plan and subscription (refunds applied), and the entry marks they were read at."""

    plans: tuple[ResourcePlan, ...]
    subscriptions: tuple[QpsSubscription, ...]
    plan_seq: int  # highest plan entry included
    refund_seq: int  # highest refund entry included
    #: When each refund was recorded (by plan id): a refund back-dated to ``refunded_at``
    #: cuts off late records only from its recording on (see ``refund_cut``).
    refund_recorded: Mapping[str, datetime] = field(default_factory=dict)

    def refund_cut(self, plan: Plan) -> datetime | None:
        """From when a refunded plan covers no record that arrives (billing rules section
        6): its refund, or the refund's recording if that came later. A record that
        arrived before it may have been settled under the plan already, whenever settlement
        ran: so the cut depends on facts, not on settlement's timing."""
        if plan.refunded_at is None:
            return None
        recorded = self.refund_recorded.get(plan.id, plan.refunded_at)
        return max(plan.refunded_at, recorded)

    def find(self, plan_id: str) -> Plan | None:
        found: list[Plan] = [p for p in self.plans if p.id == plan_id]
        found += [s for s in self.subscriptions if s.id == plan_id]
        return found[0] if found else None


@dataclass(frozen=True, slots=True)
class PlanChange:
    """A plan entry or refund made after a mark: deductions from ``at`` on may change."""

    account: str
    plan_id: str
    at: datetime


@dataclass(frozen=True, slots=True)
class Progress:
    """The last full pass: records with ``seq <= seen`` effective before ``horizon`` are settled."""

    seen: int
    horizon: datetime
    plan_seq: int
    refund_seq: int
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class AccountProgress:
    """One account after its last pass (its marks win over the global ones when newer)."""

    account: str
    seen: int
    horizon: datetime
    frontier: SettledKey | None  # the last settled record, in deduction order
    state: DeductionState  # after the frontier: this account's plans and positions only
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Adjustment:
    """A record that arrived after its month closed, and where it is billed."""

    seq: int
    call_id: str
    account: str
    occurred_at: datetime
    origin: Month  # the month it occurred in (closed when it arrived)
    billed: Month  # the earliest month still open when it arrived
    effective_at: datetime  # its arrival: its place in the deduction order

    @property
    def deducted_in(self) -> Month:
        """The month whose deduction it is cut into, at its arrival: ``billed``, or a later
        month when it arrived in the grace days that keep ``billed`` open. Ordering it in
        ``billed`` instead would put it ahead of records settled before it arrived."""
        return billing_month(self.effective_at)

    @property
    def key(self) -> SettledKey:
        return (self.deducted_in, self.effective_at, self.occurred_at, self.call_id)


@dataclass(frozen=True, slots=True)
class BillLine:
    """Calls of one item billed in one month by one source; ``amount`` is exact.

    ``origin`` is the month the calls occurred in: it differs from ``billed`` for
    adjustments (records that arrived after their month closed).
    """

    account: str
    billed: Month
    origin: Month
    category: str
    item: str
    source: Source
    calls: int
    points: Decimal
    amount: Decimal

    @property
    def kind(self) -> SourceKind:
        return self.source.kind

    @property
    def plan_id(self) -> str | None:
        return self.source.plan_id

    @property
    def adjustment(self) -> bool:
        return self.origin != self.billed

    @property
    def key(self) -> tuple[str, Month, Month, str, Source]:
        return (self.account, self.billed, self.origin, self.item, self.source)


@dataclass(frozen=True, slots=True)
class CallBatch:
    """Chargeable calls as rating reads them, with their ledger ``seq`` (parallel sequences).

    Only the columns rating uses are read (``id``, ``account``, ``item``, ``occurred_at``):
    the other fields of these records are placeholders. ``arrived`` maps a record's index to
    its ``recorded_at`` where the read asked for it (see the store's methods).
    """

    records: Sequence[CallRecord]
    seqs: Sequence[int]
    arrived: Mapping[int, datetime]

    def __len__(self) -> int:
        return len(self.records)


@dataclass(frozen=True, slots=True)
class AccountWrite:
    """What a pass changed for one account.

    ``lines`` are *added* to the stored lines of the same key (calls, points and amounts
    summed exactly); with ``lines_from``, the stored lines billed from that month on are
    deleted first (a re-rate replaces them).
    """

    progress: AccountProgress
    lines_from: Month | None
    lines: tuple[BillLine, ...]
    checkpoints: tuple[tuple[Month, DeductionState], ...]


@dataclass(frozen=True, slots=True)
class MoneyMarks:
    """What a pass's commit needs to post balance entries (see :mod:`.balances`)."""

    posted_at: datetime  # the pass's time: the entries' date
    closed_through: Month | None  # every month up to it has closed at the pass's horizon
    account: str | None  # a pass over one account closes that account's months only
    rerate: bool = False


@dataclass(frozen=True, slots=True)
class SettlementWrites:
    accounts: tuple[AccountWrite, ...]
    adjustments: tuple[Adjustment, ...]  # new classifications (settled now or pending)
    progress: Progress | None  # the global marks, after a full pass
    money: MoneyMarks | None = None  # None: post no balance entries (a bare rating store)


class RatingStore(Protocol):
    """Plans and settlement results beside a ledger. Methods raise ``StoreError`` on I/O."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    # -- plans -----------------------------------------------------------------------------

    async def add_plan(
        self, plan: Plan, recorded_at: datetime, *, require_funds: bool = False
    ) -> None:
        """Record a purchase and its balance entry; ``ValueError`` if the id exists (entries
        are immutable); ``BalanceError`` if ``require_funds`` and the balance is short."""
        ...

    async def add_refund(
        self,
        plan_id: str,
        refunded_at: datetime,
        recorded_at: datetime,
        amount: Decimal | None,
        *,
        reason: str | None = None,
    ) -> None:
        """Record a refund; ``ValueError`` if the plan is unknown or already refunded."""
        ...

    async def plan_book(self, *, account: str | None = None) -> PlanBook: ...

    async def plan_changes(self, plan_seq: int, refund_seq: int) -> list[PlanChange]:
        """Plan entries after ``plan_seq`` and refunds after ``refund_seq``."""
        ...

    # -- the lock --------------------------------------------------------------------------

    async def acquire_lock(self, owner: str, now: datetime, ttl: timedelta) -> bool:
        """Take (or extend) the lock unless another owner holds it unexpired."""
        ...

    async def release_lock(self, owner: str) -> None: ...

    # -- the ledger, as settlement reads it ------------------------------------------------

    async def max_seq(self) -> int: ...

    async def first_occurred(self, *, account: str | None = None) -> datetime | None: ...

    async def read_range(
        self,
        since: datetime | None,
        until: datetime,
        *,
        max_seq: int,
        account: str | None = None,
        arrived_from: datetime | None = None,
    ) -> CallBatch:
        """Calls with ``since <= occurred_at < until`` and ``seq <= max_seq``; ``arrived``
        holds the ``recorded_at`` of those recorded at or after ``arrived_from``."""
        ...

    async def read_new(
        self, after_seq: int, max_seq: int, before: datetime, *, account: str | None = None
    ) -> CallBatch:
        """Calls with ``after_seq < seq <= max_seq`` and ``occurred_at < before``; ``arrived``
        holds every one's ``recorded_at``."""
        ...

    async def read_seqs(self, seqs: Sequence[int]) -> CallBatch:
        """The calls with these ``seq`` (``arrived`` holds every one's ``recorded_at``)."""
        ...

    # -- settlement results ----------------------------------------------------------------

    async def progress(self) -> Progress | None: ...

    async def accounts(self, *, account: str | None = None) -> dict[str, AccountProgress]: ...

    async def adjustments(
        self,
        *,
        account: str | None = None,
        billed_from: Month | None = None,
        effective_from: datetime | None = None,
    ) -> list[Adjustment]: ...

    async def checkpoint(self, account: str, month: Month) -> tuple[Month, DeductionState] | None:
        """The latest checkpoint of ``account`` at or before ``month``."""
        ...

    async def lines(
        self,
        *,
        account: str | None = None,
        month: Month | None = None,
        billed_from: Month | None = None,
    ) -> list[BillLine]: ...

    async def commit(self, owner: str, writes: SettlementWrites) -> None:
        """Write a pass's results in one transaction; ``LockLost`` unless ``owner`` holds
        the lock."""
        ...
