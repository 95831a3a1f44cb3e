"""The webhook outbox's rows: claiming due deliveries under a lease, recording attempts,
listing (synchronous SQL: run in a worker thread).

A row is *pending* until delivered (``delivered_at``) or given up (``failed_at``, after the
maximum attempts). A pending row is *due* when ``next_at`` has passed and nobody holds a
live claim on it. Claiming sets ``claimed_by``/``claimed_until`` in one ``BEGIN
IMMEDIATE`` transaction, so of several senders on one ledger exactly one gets each due row;
a sender that dies mid-attempt holds the row only until its lease runs out.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..ledger.codec import format_time, parse_time
from .model import Notice, NoticeKind

__all__ = [
    "Delivery",
    "OutboxRow",
    "claim_due",
    "delivery_state",
    "list_notices",
    "record_attempt",
]


@dataclass(frozen=True, slots=True)
class Delivery:
    """A claimed row: the notice to post and how many attempts came before."""

    notice: Notice
    attempts: int


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """A notice with its delivery's state, as ``metering notices`` lists it."""

    notice: Notice
    recorded_at: datetime
    state: str  # pending, delivered, failed
    attempts: int
    next_at: datetime | None
    last_error: str | None
    delivered_at: datetime | None


def delivery_state(delivered_at: str | None, failed_at: str | None) -> str:
    if delivered_at is not None:
        return "delivered"
    return "failed" if failed_at is not None else "pending"


def _notice(kind: str, account: str, subject: str, at: str, data: str) -> Notice:
    return Notice(NoticeKind(kind), account, subject, parse_time(at), json.loads(data))


def claim_due(
    conn: sqlite3.Connection, owner: str, now: datetime, lease_until: datetime, limit: int
) -> list[Delivery]:
    """Claim up to ``limit`` due rows for ``owner`` until ``lease_until``, oldest due first."""
    stamp = format_time(now)
    conn.execute("BEGIN IMMEDIATE")
    try:
        rows = conn.execute(
            "SELECT o.notice_id, o.attempts, n.kind, n.account, n.subject, n.at, n.data"
            " FROM notice_outbox o JOIN notices n ON n.id = o.notice_id"
            " WHERE o.delivered_at IS NULL AND o.failed_at IS NULL AND o.next_at <= ?"
            " AND (o.claimed_until IS NULL OR o.claimed_until <= ?)"
            " ORDER BY o.next_at, n.seq LIMIT ?",
            (stamp, stamp, limit),
        ).fetchall()
        conn.executemany(
            "UPDATE notice_outbox SET claimed_by = ?, claimed_until = ? WHERE notice_id = ?",
            [(owner, format_time(lease_until), r[0]) for r in rows],
        )
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return [Delivery(_notice(*r[2:]), int(r[1])) for r in rows]


def record_attempt(
    conn: sqlite3.Connection,
    notice_id: str,
    owner: str,
    now: datetime,
    *,
    error: str | None,
    next_at: datetime | None,
) -> None:
    """Record one attempt: delivered (``error`` None), retried at ``next_at``, or given up
    (``next_at`` None). A failure counts only while ``owner`` still holds the claim (a
    sender whose lease ran out and was taken over writes nothing); a delivery always
    counts: it happened."""
    stamp = format_time(now)
    if error is None:
        conn.execute(
            "UPDATE notice_outbox SET attempts = attempts + 1, delivered_at = ?,"
            " claimed_by = NULL, claimed_until = NULL"
            " WHERE notice_id = ? AND delivered_at IS NULL",
            (stamp, notice_id),
        )
        return
    conn.execute(
        "UPDATE notice_outbox SET attempts = attempts + 1, last_error = ?, next_at = ?,"
        " failed_at = ?, claimed_by = NULL, claimed_until = NULL"
        " WHERE notice_id = ? AND claimed_by = ? AND delivered_at IS NULL",
        (
            error[:500],
            stamp if next_at is None else format_time(next_at),
            stamp if next_at is None else None,
            notice_id,
            owner,
        ),
    )


def list_notices(
    conn: sqlite3.Connection,
    *,
    account: str | None = None,
    kind: str | None = None,
    pending: bool = False,
    since: datetime | None = None,
) -> list[OutboxRow]:
    """Notices in recording order with their delivery state."""
    clauses: list[str] = []
    params: list[Any] = []
    if account is not None:
        clauses.append("n.account = ?")
        params.append(account)
    if kind is not None:
        clauses.append("n.kind = ?")
        params.append(kind)
    if since is not None:
        clauses.append("n.at >= ?")
        params.append(format_time(since))
    if pending:
        clauses.append("o.notice_id IS NOT NULL AND o.delivered_at IS NULL AND o.failed_at IS NULL")
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    rows: Sequence[tuple[Any, ...]] = conn.execute(
        "SELECT n.kind, n.account, n.subject, n.at, n.data, n.recorded_at, o.attempts,"
        " o.next_at, o.last_error, o.delivered_at, o.failed_at"
        " FROM notices n LEFT JOIN notice_outbox o ON o.notice_id = n.id"
        f"{where} ORDER BY n.seq",
        params,
    ).fetchall()
    out: list[OutboxRow] = []
    for kind_, acct, subject, at, data, recorded, attempts, next_at, error, done, failed in rows:
        out.append(
            OutboxRow(
                notice=_notice(kind_, acct, subject, at, data),
                recorded_at=parse_time(recorded),
                state=delivery_state(done, failed),
                attempts=int(attempts or 0),
                next_at=None if next_at is None or done or failed else parse_time(next_at),
                last_error=error,
                delivered_at=None if done is None else parse_time(done),
            )
        )
    return out
