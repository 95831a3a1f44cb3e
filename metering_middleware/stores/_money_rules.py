"""What settlement posts and what a standing change notifies, said once for both stores
(private): the SQLite and PostgreSQL halves differ only in how they read and write rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal

from ..ledger.codec import format_time
from ..notices import Notice, NoticeKind
from ..rating import _rows as rows_
from ..rating.balances import BalanceEntry, EntryKind, Standing
from ..rating.money import exact_sum
from ..rating.months import parse_month
from ..rating.pricing import month_total

__all__: list[str] = []

#: (account, month text) -> (regular amounts, adjustment amounts) of its settled lines.
Targets = Mapping[tuple[str, str], tuple[Sequence[Decimal], Sequence[Decimal]]]
#: (account, month text, kind) -> (amount posted so far, entries posted so far).
Posted = Mapping[tuple[str, str, str], tuple[Decimal, int]]


def settled_entries(
    targets: Targets,
    posted: Posted,
    already_closed: set[tuple[str, str]],
    closed_through: str | None,
    at: datetime,
    *,
    rerate: bool,
) -> tuple[list[BalanceEntry], list[tuple[str, str]], set[str]]:
    """The entries that bring each (account, month)'s posted amounts to what its lines say,
    the (account, month) pairs this pass closes, and the accounts whose balance moved."""
    moved: set[str] = set()
    new: list[BalanceEntry] = []
    closes: list[tuple[str, str]] = []
    for (account, month), (regular, adjusted) in sorted(targets.items()):
        m = parse_month(month)
        wanted = {
            EntryKind.PAYG: -exact_sum(regular),
            EntryKind.ADJUSTMENT: -exact_sum(adjusted),
        }
        closing = closed_through is not None and month <= closed_through
        if closing or (account, month) in already_closed:
            # The rounding makes the month's entries sum to minus its amount due.
            wanted[EntryKind.ROUNDING] = -month_total([*regular, *adjusted]).rounding
            if (account, month) not in already_closed:
                closes.append((account, month))
        for kind, target in wanted.items():
            have, n = posted.get((account, month, kind.value), (Decimal(0), 0))
            diff = exact_sum((target, -have))
            if diff == 0:
                continue
            new.append(
                BalanceEntry(
                    id=f"{kind.value}:{account}:{month}:{n + 1}",
                    account=account,
                    kind=kind,
                    amount=diff,
                    at=at,
                    recorded_at=at,
                    month=m,
                    reason=_settled_reason(kind, n, rerate),
                )
            )
            moved.add(account)
    return new, closes, moved


def _settled_reason(kind: EntryKind, earlier: int, rerate: bool) -> str:
    if kind is EntryKind.ROUNDING:
        return "month closed: total rounded down to the fen"
    if rerate:
        return "re-rated: the difference with what was posted"
    return "settled usage" if earlier == 0 else "settled usage since the last entry"


def standing_notice(kind: NoticeKind, s: Standing, now: datetime, balance: Decimal) -> Notice:
    """The notice of a standing change: one episode of debt is one overdue, at most one
    suspension and one restoration (the subject is the episode's start)."""
    assert s.overdue_since is not None
    return Notice(
        kind=kind,
        account=s.account,
        subject=format_time(s.overdue_since),
        at=now,
        data={
            "balance": rows_.decimal_text(balance),
            "overdue_since": s.overdue_since.isoformat(),
        },
    )
