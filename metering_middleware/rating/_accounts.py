"""Per-account pieces of a settlement pass (private): states, lines, routing marks."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from itertools import groupby
from operator import attrgetter

from ..ledger.records import CallRecord
from ._rows import trusted_state
from .money import exact_sum
from .months import Month
from .plans import ResourcePlan
from .results import Line, Source
from .state import DeductionState, PositionKey
from .store import Adjustment, BillLine, SettledKey

__all__: list[str] = []

LineKey = tuple[Month, Month, str, Source]  # billed, origin, item, source
_ACCOUNT = attrgetter("account")
_TIME = attrgetter("occurred_at", "id")
_OCCURRED = attrgetter("occurred_at")


def _arrival_and_bill(pair: tuple[Adjustment, CallRecord]) -> tuple[datetime, Month]:
    return pair[0].effective_at, pair[0].billed


@dataclass(slots=True)
class Account:
    """One account in a pass: its marks, where it starts from, what the pass produced."""

    name: str
    seen: int  # ledger seq its last pass saw
    horizon: datetime | None  # what was settled (None: nothing yet)
    target: datetime  # this pass settles what is effective before it
    frontier: SettledKey | None
    state: DeductionState  # the stored state after the frontier
    own_reads: bool = False  # read by itself, not with the bulk of accounts
    replay_from: Month | None = None
    start: Month | None = None  # replay: the checkpoint month it restarts from
    month: Month | None = None  # latest month with a checkpoint (written or stored)
    adj: dict[int, Adjustment] = field(default_factory=dict)  # by ledger seq
    lines: dict[LineKey, Tally] = field(default_factory=dict)
    checkpoints: list[tuple[Month, DeductionState]] = field(default_factory=list)
    reached: SettledKey | None = None  # the last key deducted in this pass
    calls: int = 0

    @property
    def replaying(self) -> bool:
        return self.start is not None

    def settled(self, seq: int, effective: datetime) -> bool:
        return seq <= self.seen and self.horizon is not None and effective < self.horizon

    def reach(self, key: SettledKey) -> None:
        if self.reached is None or key > self.reached:
            self.reached = key

    def add_line(self, billed: Month, line: Line) -> None:
        key = (billed, line.month, line.item, line.source)
        found = self.lines.get(key)
        if found is None:
            self.lines[key] = Tally(line.category, line.calls, line.points, line.amount)
        else:
            found.add(line.calls, line.points, line.amount)
        self.calls += line.calls

    def bill_lines(self) -> tuple[BillLine, ...]:
        """This pass's lines, in bill order."""
        out = [
            BillLine(
                self.name, billed, origin, t.category, item, source, t.calls, t.points, t.amount
            )
            for (billed, origin, item, source), t in self.lines.items()
        ]
        return tuple(sorted(out, key=_line_order))


@dataclass(slots=True)
class Tally:
    """A line being added up: exact sums, never rounded."""

    category: str
    calls: int
    points: Decimal
    amount: Decimal

    def add(self, calls: int, points: Decimal, amount: Decimal) -> None:
        self.calls += calls
        self.points = exact_sum((self.points, points))
        self.amount = exact_sum((self.amount, amount))


def _line_order(line: BillLine) -> tuple[Month, Month, str, tuple[int, str, int, Decimal]]:
    return (line.billed, line.origin, line.item, line.source.sort_key)


def split_state(
    state: DeductionState,
    accounts: Iterable[str],
    plans_of: Mapping[str, list[ResourcePlan]],
    parked: DeductionState | None = None,
) -> dict[str, DeductionState]:
    """Each account's part of ``state`` (and of ``parked``, what a pass set aside); plans
    with all their points are left out (the state's own convention): what is stored stays
    small."""
    wanted = set(accounts)
    positions: dict[str, dict[PositionKey, int]] = {name: {} for name in wanted}
    if not wanted:
        return {}
    remaining = dict(state.remaining)
    for part in (state, parked) if parked is not None else (state,):
        for key, n in part.positions.items():
            mine = positions.get(key[0])
            if mine is not None:
                mine[key] = n
    if parked is not None:
        remaining.update(parked.remaining)
    out: dict[str, DeductionState] = {}
    for name in wanted:
        left = {
            p.id: remaining[p.id]
            for p in plans_of.get(name, ())
            if p.id in remaining and remaining[p.id] != p.points
        }
        out[name] = trusted_state(left, positions[name])
    return out


def park(
    state: DeductionState, months: Container[Month], plans: Container[str]
) -> tuple[DeductionState, DeductionState]:
    """``state`` as (what a pass can change, the rest): positions of ``months`` and the
    points of ``plans`` stay in play. A pass deducts against the first only, so its cost
    follows what it settles, not the account's history."""
    active: dict[PositionKey, int] = {}
    rest: dict[PositionKey, int] = {}
    for key, n in state.positions.items():
        (active if key[2] in months else rest)[key] = n
    left: dict[str, Decimal] = {}
    spent: dict[str, Decimal] = {}
    for plan, points in state.remaining.items():
        (left if plan in plans else spent)[plan] = points
    return trusted_state(left, active), trusted_state(spent, rest)


def merge_states(states: Iterable[DeductionState]) -> DeductionState:
    """One state for accounts that share nothing (their keys never collide)."""
    remaining: dict[str, Decimal] = {}
    positions: dict[PositionKey, int] = {}
    for state in states:
        remaining.update(state.remaining)
        positions.update(state.positions)
    return DeductionState(remaining, positions)


def last_keys(records: Sequence[CallRecord], month: Month) -> dict[str, SettledKey]:
    """The last key per account of records sorted by (account, occurred_at, id)."""
    out: dict[str, SettledKey] = {}
    end = len(records)
    while end > 0:
        r = records[end - 1]
        out[r.account] = (month, r.occurred_at, r.occurred_at, r.id)
        end = bisect_left(records, r.account, 0, end - 1, key=_ACCOUNT)  # previous block
    return out


Segment = tuple[list[CallRecord], list[Adjustment] | None]


def cut_segments(
    regular: list[CallRecord], adjust: list[tuple[Adjustment, CallRecord]]
) -> list[Segment]:
    """A month's deductions in order: regular records, with the adjustments of each arrival
    cut in at their place (deduction sorts by time; adjustments go by arrival). Each
    adjustment segment is billed in one month (see ``Adjustment.deducted_in``)."""
    if not adjust:
        return [(regular, None)]
    segments: list[Segment] = []
    regular.sort(key=_TIME)
    adjust.sort(key=lambda pair: pair[0].key)
    pos = 0
    for (effective, _), group in groupby(adjust, key=_arrival_and_bill):
        pairs = list(group)
        cut = bisect_left(regular, effective, pos, key=_OCCURRED)
        if cut > pos:
            segments.append((regular[pos:cut], None))
        segments.append(([r for _, r in pairs], [adj for adj, _ in pairs]))
        pos = cut
    if pos < len(regular):
        segments.append((regular[pos:], None))
    return segments
