"""What a deduction pass produces: the source of every record, bill lines, new state."""

from __future__ import annotations

from array import array
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from itertools import compress, count, islice
from operator import ne

from ..ledger.records import CallRecord
from .months import Month
from .state import DeductionState, PositionKey

__all__ = ["DeductionResult", "Line", "SettledRun", "Source", "SourceKind"]


class SourceKind(StrEnum):
    """What settled a call, in the order sources are tried (billing rules section 3)."""

    QPS = "qps"  # a QPS subscription for the call's API
    SINGLE = "single"  # a single-category resource plan
    GENERAL = "general"  # a general-purpose resource plan
    PAYG = "payg"  # pay-as-you-go at a tier's price
    #: The catalog marks the item free (e.g. polling an async job): no points, no tier.
    FREE = "free"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {kind: i for i, kind in enumerate(SourceKind)}


@dataclass(frozen=True, slots=True)
class Source:
    """One settling source. Pay-as-you-go sources carry the tier and its price."""

    kind: SourceKind
    plan_id: str | None = None  # the QPS subscription or resource plan
    tier: int | None = None  # pay-as-you-go: index into the schedule's tiers
    unit_price: Decimal | None = None  # pay-as-you-go: that tier's price at the call's time

    @property
    def sort_key(self) -> tuple[int, str, int, Decimal]:
        return (
            self.kind.rank,
            self.plan_id or "",
            -1 if self.tier is None else self.tier,
            Decimal(0) if self.unit_price is None else self.unit_price,
        )


@dataclass(frozen=True, slots=True)
class Line:
    """Calls of one item in one account's billing month settled by one source.

    ``points`` are resource-plan points deducted (0 for other sources); ``amount`` is the
    exact pay-as-you-go amount, ``calls * unit_price`` (0 for other sources), never rounded.
    """

    account: str
    month: Month
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


@dataclass(frozen=True, slots=True)
class SettledRun:
    """``count`` consecutive records of ``DeductionResult.records`` settled by ``source``."""

    start: int
    count: int
    source: Source


@dataclass(frozen=True, slots=True)
class DeductionResult:
    """The outcome of ``deduct``.

    ``records`` are the input calls ordered by (account, occurred_at, id): accounts never
    share a source, so each account's calls are contiguous and runs stay long. The source of
    ``records[i]`` is ``sources[codes[i]]`` (4 bytes a record, not an object each).
    """

    records: tuple[CallRecord, ...]
    sources: tuple[Source, ...]
    _codes: array[int]
    lines: tuple[Line, ...]
    state: DeductionState

    @property
    def codes(self) -> memoryview:
        """Read-only source index per record."""
        return memoryview(self._codes).toreadonly()

    def source_of(self, index: int) -> Source:
        return self.sources[self._codes[index]]

    def settled(self) -> Iterator[tuple[CallRecord, Source]]:
        table = self.sources
        for record, code in zip(self.records, self._codes, strict=True):
            yield record, table[code]

    def runs(self) -> Iterator[SettledRun]:
        """Maximal runs of consecutive records with one source (a run may span accounts
        only for pay-as-you-go sources, which carry no account)."""
        codes = self._codes
        n = len(codes)
        if n == 0:
            return
        # Boundaries where the code changes, found in C rather than record by record.
        cuts = compress(count(1), map(ne, codes, islice(codes, 1, None)))
        start = 0
        for cut in (*cuts, n):
            yield SettledRun(start, cut - start, self.sources[codes[start]])
            start = cut

    @property
    def remaining(self) -> Mapping[str, Decimal]:
        """Points left per resource plan after this pass."""
        return self.state.remaining

    @property
    def positions(self) -> Mapping[PositionKey, int]:
        """Pay-as-you-go calls priced so far per (account, item, month)."""
        return self.state.positions
