"""The notices settlement's results call for, found after every settlement pass.

- ``plan.points_low``: a resource plan (not refunded, not expired) with at most
  ``LOW_BALANCE_SHARE`` (20%) of its points left after the last settlement (the points
  left are the settled state's, as ``metering plans list`` shows them). Once per plan.
- ``plan.expiring``: a plan or QPS subscription (not refunded) that ends within
  ``EXPIRY_WARNING`` (7 days). A QPS subscription already renewed (another one for the
  same account and API, not refunded, starts at or before its end and runs past it) is
  skipped. Once per plan.
- ``balance.low``: a balance below the account's ``low_balance`` threshold. Once per
  episode: the episode (``notice_low_balance``) ends when a pass finds the balance back at
  or above the threshold, and the next dip is a new notice.
- ``account.cap_reached``: settled pay-as-you-go spend of a billing month (UTC+8) at or
  above the account's ``monthly_cap`` (and above zero). Once per account and month; the
  spend guard's own "cap reached" (:class:`~.recorder.NoticeRecorder`) has the same id.

What is due is read in one read transaction, then recorded in a short write transaction
(see :func:`detect_in_file`): two processes detecting at once (the gateway's settler and
``metering settle``) are serialised by SQLite for the writes, and each notice's id makes it
happen once however often a pass runs. Overdue,
suspended and restored are recorded by settlement itself (``stores/sqlite/_money.py``).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from os import PathLike

from ..ledger.codec import format_time, parse_time
from ..ledger.migrate import connect_existing
from ..rating.money import exact_sum
from ..rating.months import billing_month
from ..rating.plans import LOW_BALANCE_SHARE
from ..stores.sqlite._money import read_balances  # the one reading of balances (totals + tail)
from .model import Notice, NoticeKind, cap_notice
from .records import record_notice

__all__ = ["EXPIRY_WARNING", "detect_in_file", "detect_notices"]

#: A plan or subscription ending this soon calls for a notice.
EXPIRY_WARNING = timedelta(days=7)

_PLANS_SQL = (
    "SELECT p.id, p.account, p.kind, p.categories, p.action, p.points, p.start_at, p.end_at"
    " FROM rating_plans p LEFT JOIN rating_refunds r ON r.plan_id = p.id"
    " WHERE r.plan_id IS NULL AND p.end_at > ? ORDER BY p.seq"
)


def _text(value: Decimal) -> str:
    return format(value, "f")


def _remaining(conn: sqlite3.Connection) -> dict[str, Decimal]:
    """Plan id -> points left after the last settlement (a plan not listed has all)."""
    left: dict[str, Decimal] = {}
    for (state,) in conn.execute("SELECT state FROM rating_accounts"):
        for plan, points in json.loads(state).get("remaining", {}).items():
            left[plan] = Decimal(points)
    return left


def _plan_notices(conn: sqlite3.Connection, now: datetime) -> Iterator[Notice]:
    rows = conn.execute(_PLANS_SQL, (format_time(now),)).fetchall()
    left = _remaining(conn)
    horizon = now + EXPIRY_WARNING
    # (account, category, action) -> validity periods of live subscriptions, for renewals.
    periods: dict[tuple[str, str, str], list[tuple[datetime, datetime]]] = {}
    for _, account, kind, category, action, _, start, end in rows:
        if kind == "qps":
            periods.setdefault((account, category, action), []).append(
                (parse_time(start), parse_time(end))
            )
    for plan_id, account, kind, category, action, points, start, end in rows:
        ends = parse_time(end)
        remaining: Decimal | None = None
        if kind != "qps":
            total = Decimal(points)
            remaining = left.get(plan_id, total)
            if remaining <= total * LOW_BALANCE_SHARE:
                yield Notice(
                    NoticeKind.PLAN_POINTS_LOW,
                    account,
                    plan_id,
                    now,
                    {
                        "plan": plan_id,
                        "kind": kind,
                        "points": _text(total),
                        "remaining": _text(remaining),
                        "share_left": _text(LOW_BALANCE_SHARE),
                    },
                )
        if ends > horizon:
            continue
        if kind == "qps":
            starts = parse_time(start)
            renewed = any(
                s <= ends < e and (s, e) != (starts, ends)
                for s, e in periods[(account, category, action)]
            )
            if renewed:
                continue
        data: dict[str, str | None] = {"plan": plan_id, "kind": kind, "end": ends.isoformat()}
        if kind == "qps":
            data["api"] = f"{category}/{action}"
        else:
            data["remaining"] = None if remaining is None else _text(remaining)
        yield Notice(NoticeKind.PLAN_EXPIRING, account, plan_id, now, data)


@dataclass(frozen=True, slots=True)
class _LowBalance:
    """An account found below its threshold (the read phase)."""

    account: str
    balance: Decimal
    threshold: Decimal


def _balances_below(conn: sqlite3.Connection) -> list[_LowBalance]:
    """Accounts whose balance is below their threshold."""
    thresholds = {
        account: Decimal(low)
        for account, low in conn.execute(
            "SELECT account, low_balance FROM account_settings WHERE low_balance IS NOT NULL"
        )
    }
    if not thresholds:
        return []
    balances = read_balances(conn)
    return [
        _LowBalance(account, balances.get(account, Decimal(0)), threshold)
        for account, threshold in sorted(thresholds.items())
        if balances.get(account, Decimal(0)) < threshold
    ]


def _episodes(conn: sqlite3.Connection, now: datetime, below: list[_LowBalance]) -> list[Notice]:
    """End the episodes of accounts no longer below (or without a threshold), start those of
    accounts newly below: their notices (write phase: the caller's write transaction)."""
    episodes = {a for (a,) in conn.execute("SELECT account FROM notice_low_balance")}
    low = {b.account for b in below}
    for account in sorted(episodes - low):  # back at or above, or no threshold any more
        conn.execute("DELETE FROM notice_low_balance WHERE account = ?", (account,))
    since = format_time(now)
    notices: list[Notice] = []
    for b in below:
        if b.account in episodes:
            continue  # this episode's notice is out already
        conn.execute(
            "INSERT INTO notice_low_balance (account, since, threshold) VALUES (?, ?, ?)",
            (b.account, since, _text(b.threshold)),
        )
        notices.append(
            Notice(
                NoticeKind.BALANCE_LOW,
                b.account,
                since,
                now,
                {"balance": _text(b.balance), "threshold": _text(b.threshold)},
            )
        )
    return notices


def _cap_notices(conn: sqlite3.Connection, now: datetime) -> Iterator[Notice]:
    caps = dict(
        conn.execute(
            "SELECT account, monthly_cap FROM account_settings WHERE monthly_cap IS NOT NULL"
        ).fetchall()
    )
    if not caps:
        return
    current = billing_month(now)
    # The previous month too: its late records settle during its grace days.
    months = (str(current.previous()), str(current))
    spent: dict[tuple[str, str], list[Decimal]] = {}
    for account, month, amount in conn.execute(
        "SELECT account, billed_month, amount FROM rating_lines"
        " WHERE kind = 'payg' AND billed_month IN (?, ?)",
        months,
    ):
        if account in caps:
            spent.setdefault((account, month), []).append(Decimal(amount))
    for (account, month), amounts in sorted(spent.items()):
        cap, spend = Decimal(caps[account]), exact_sum(amounts)
        if spend > 0 and spend >= cap:
            yield cap_notice(account, month, now, cap=cap, spend=spend, source="settled")


def _unrecorded(conn: sqlite3.Connection, found: list[Notice]) -> list[Notice]:
    """The notices whose id is not recorded yet (most of a pass's are, after its first)."""
    ids = [n.id for n in found]
    known: set[str] = set()
    for i in range(0, len(ids), 500):  # SQLite's parameter limit
        part = ids[i : i + 500]
        known.update(
            r[0]
            for r in conn.execute(
                f"SELECT id FROM notices WHERE id IN ({','.join('?' * len(part))})", part
            )
        )
    return [n for n in found if n.id not in known]


def detect_in_file(
    path: str | PathLike[str], now: datetime, *, busy_timeout_ms: int = 5000
) -> list[Notice]:
    """Record every notice due at ``now``; the new ones (blocking: a worker thread).

    Two phases, so the ledger's write lock (which the gateway's record commits wait on)
    is held only for the writes: what is due is read in one read transaction (one
    snapshot), then recorded in a short ``BEGIN IMMEDIATE`` that re-checks the
    low-balance episodes and records by id (``INSERT OR IGNORE``), so two processes
    detecting at once still record each notice once."""
    conn = connect_existing(path, timeout=busy_timeout_ms / 1000)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        conn.execute("BEGIN")
        try:
            found = _unrecorded(conn, [*_plan_notices(conn, now), *_cap_notices(conn, now)])
            below = _balances_below(conn)
        finally:
            conn.execute("COMMIT")
        conn.execute("BEGIN IMMEDIATE")
        try:
            found += _episodes(conn, now, below)
            new = [n for n in found if record_notice(conn, n, now)]
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return new
    finally:
        conn.close()


async def detect_notices(path: str | PathLike[str], now: datetime) -> list[Notice]:
    """:func:`detect_in_file` off the event loop."""
    return await asyncio.to_thread(detect_in_file, path, now)
