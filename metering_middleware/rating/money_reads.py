"""Read-only: what the request path's money view is built from, in one read transaction.

Balances, standing, caps, each account's settled horizon, this billing month's settled
pay-as-you-go (spend and calls per item), plan points left and the plan book are read in
ONE transaction, so the balance and the horizon agree: a record before the horizon has its
cost in the balance read with it, a record after it has not. ``read_marks`` is the cheap
part a reload runs first: when no mark moved since the last full read, nothing changed.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from ..ledger.codec import parse_time
from ..stores.sqlite import _money as money_
from ..stores.sqlite._rating_ops import PROGRESS
from . import _rows as rows_
from .balances import Standing
from .money import exact_sum
from .months import Month
from .plans import QpsSubscription, ResourcePlan
from .store import Plan

__all__ = [
    "AccountMoney",
    "MoneyMarks",
    "MoneyReading",
    "ReadingParts",
    "assemble_reading",
    "read_marks",
    "read_money",
]

#: (last balance entry, global progress, per-account progress, standing, settings, plans,
#: refunds, billing month): rows only ever change with one of them.
MoneyMarks = tuple[object, ...]


@dataclass(frozen=True, slots=True)
class AccountMoney:
    account: str
    balance: Decimal
    standing: Standing | None
    monthly_cap: Decimal | None
    #: Records of this account that occurred before it are settled (None: nothing is).
    horizon: datetime | None
    #: Settled pay-as-you-go of the month read (exact line amounts, billed in it).
    month_spend: Decimal
    #: Settled pay-as-you-go calls per item billed in the month read (tier positions).
    payg_calls: Mapping[str, int]
    #: Points left per resource plan after the last settlement (absent: never drawn on).
    remaining: Mapping[str, Decimal]


@dataclass(frozen=True, slots=True)
class MoneyReading:
    marks: MoneyMarks
    month: Month
    accounts: Mapping[str, AccountMoney]
    plans: tuple[ResourcePlan, ...]
    subscriptions: tuple[QpsSubscription, ...]


def read_marks(conn: sqlite3.Connection, month: Month) -> MoneyMarks:
    """Cheap marks (a few index or small-table reads); call inside the read transaction."""
    (entry_seq,) = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM balance_entries").fetchone()
    progress = conn.execute(
        "SELECT seen, horizon, updated_at FROM rating_progress WHERE name = ?", (PROGRESS,)
    ).fetchone()
    accounts = conn.execute("SELECT COUNT(*), MAX(updated_at) FROM rating_accounts").fetchone()
    standing = conn.execute("SELECT COUNT(*), MAX(updated_at) FROM account_standing").fetchone()
    settings = conn.execute("SELECT COUNT(*), MAX(updated_at) FROM account_settings").fetchone()
    (plan_seq,) = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM rating_plans").fetchone()
    (refund_seq,) = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM rating_refunds").fetchone()
    return (
        int(entry_seq),
        None if progress is None else tuple(progress),
        tuple(accounts),
        tuple(standing),
        tuple(settings),
        int(plan_seq),
        int(refund_seq),
        str(month),
    )


def read_money(
    conn: sqlite3.Connection, month: Month, known: MoneyMarks | None = None
) -> MoneyReading | None:
    """Everything, in one read transaction; None when the marks equal ``known``."""
    conn.execute("BEGIN")
    try:
        marks = read_marks(conn, month)
        if marks == known:
            return None
        return _read_all(conn, month, marks)
    finally:
        conn.execute("COMMIT")


def _read_all(conn: sqlite3.Connection, month: Month, marks: MoneyMarks) -> MoneyReading:
    balances = money_.read_balances(conn)
    standings = money_.standings(conn)
    caps = {a: s.monthly_cap for a, s in money_.settings(conn).items()}
    progress = conn.execute(
        "SELECT seen, horizon FROM rating_progress WHERE name = ?", (PROGRESS,)
    ).fetchone()
    global_seen = -1 if progress is None else int(progress[0])
    global_horizon = None if progress is None else parse_time(progress[1])
    horizons: dict[str, datetime | None] = {}
    remaining: dict[str, Mapping[str, Decimal]] = {}
    for account, seen, horizon, state in conn.execute(
        "SELECT account, seen, horizon, state FROM rating_accounts"
    ):
        # The account's own marks win when its last pass saw at least as far (bills' rule).
        horizons[account] = parse_time(horizon) if int(seen) >= global_seen else global_horizon
        remaining[account] = rows_.state_from_text(state).remaining
    spend: dict[str, list[Decimal]] = {}
    calls: dict[str, dict[str, int]] = {}
    for account, item, n, amount in conn.execute(
        "SELECT account, item, calls, amount FROM rating_lines"
        " WHERE billed_month = ? AND kind = 'payg'",
        (str(month),),
    ):
        spend.setdefault(account, []).append(Decimal(amount))
        per_item = calls.setdefault(account, {})
        per_item[item] = per_item.get(item, 0) + int(n)
    found = conn.execute(
        f"SELECT {rows_.PLAN_COLUMNS} FROM rating_plans p"
        " LEFT JOIN rating_refunds r ON r.plan_id = p.id ORDER BY p.seq"
    ).fetchall()
    book = [rows_.plan_from_row(row) for row in found]
    return assemble_reading(
        marks,
        month,
        ReadingParts(
            balances, standings, caps, horizons, global_horizon, remaining, spend, calls, book
        ),
    )


@dataclass(frozen=True, slots=True)
class ReadingParts:
    """What a store read for a money reading, each backend in its own SQL."""

    balances: Mapping[str, Decimal]
    standings: Mapping[str, Standing]
    caps: Mapping[str, Decimal | None]
    horizons: Mapping[str, datetime | None]  # per account: its marks or the global ones
    global_horizon: datetime | None
    remaining: Mapping[str, Mapping[str, Decimal]]
    spend: Mapping[str, Sequence[Decimal]]  # this month's pay-as-you-go amounts
    calls: Mapping[str, Mapping[str, int]]  # this month's pay-as-you-go calls per item
    book: Sequence[Plan]


def assemble_reading(marks: MoneyMarks, month: Month, parts: ReadingParts) -> MoneyReading:
    """The reading per account (every account any part names), the same on both stores."""
    names = set(parts.balances) | set(parts.standings) | set(parts.caps)
    names.update(parts.horizons, parts.spend, (p.account for p in parts.book))
    accounts = {
        name: AccountMoney(
            account=name,
            balance=parts.balances.get(name, Decimal(0)),
            standing=parts.standings.get(name),
            monthly_cap=parts.caps.get(name),
            horizon=parts.horizons.get(name, parts.global_horizon),
            month_spend=exact_sum(parts.spend.get(name, ())),
            payg_calls=parts.calls.get(name, {}),
            remaining=parts.remaining.get(name, {}),
        )
        for name in names
    }
    return MoneyReading(
        marks=marks,
        month=month,
        accounts=accounts,
        plans=tuple(p for p in parts.book if isinstance(p, ResourcePlan)),
        subscriptions=tuple(p for p in parts.book if isinstance(p, QpsSubscription)),
    )
