"""The synchronous halves of the SQLite rating store (private): run in a worker thread."""

from __future__ import annotations

import sqlite3
from array import array
from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

from ...ledger.codec import format_time, parse_time
from ...rating import _rows as rows_
from ...rating.money import exact_sum
from ...rating.store import CallBatch, LockLost, SettlementWrites
from . import _money as money_

__all__: list[str] = []

T = TypeVar("T")
LOCK = "settle"
PROGRESS = "settle"
_CHUNK = 100_000


def durable(conn: sqlite3.Connection, fn: Callable[..., T], *args: Any) -> T:
    """Run a purchase or refund with ``synchronous=FULL``: durable across power loss."""
    conn.execute("PRAGMA synchronous = FULL")
    try:
        return fn(conn, *args)
    finally:
        conn.execute("PRAGMA synchronous = NORMAL")


def transaction(conn: sqlite3.Connection, fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn`` in one write transaction: all of it commits, or none."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = fn(conn, *args)
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result


def reading(conn: sqlite3.Connection, fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn`` in one read transaction: every read sees the same commit."""
    conn.execute("BEGIN")
    try:
        return fn(conn, *args)
    finally:
        conn.execute("COMMIT")


def add_decimal_text(a: str, b: str) -> str:
    return rows_.decimal_text(exact_sum((Decimal(a), Decimal(b))))


def execute(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> None:
    conn.execute(sql, params)


def fetch(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    return conn.execute(sql, params).fetchall()


def where(*pairs: tuple[str, Any]) -> tuple[str, list[Any]]:
    used = [(clause, value) for clause, value in pairs if value is not None]
    if not used:
        return "", []
    return " WHERE " + " AND ".join(c for c, _ in used), [v for _, v in used]


def batch(found: Sequence[tuple[Any, ...]]) -> CallBatch:
    with rows_.gc_paused():
        records, seqs, arrived = rows_.records_from_rows(found)
    times = {i: parse_time(t) for i, t in enumerate(arrived) if t is not None}
    return CallBatch(records, array("q", seqs), times)


def read_batch(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> CallBatch:
    cursor = conn.execute(sql, params)
    records: list[Any] = []
    seqs = array("q")
    arrived: dict[int, datetime] = {}
    # In chunks, so the raw rows of a month never sit in memory beside its records.
    with rows_.gc_paused():
        while chunk := cursor.fetchmany(_CHUNK):
            got, got_seqs, got_arrived = rows_.records_from_rows(chunk)
            base = len(records)
            records += got
            seqs.extend(got_seqs)
            for i, text in enumerate(got_arrived):
                if text is not None:
                    arrived[base + i] = parse_time(text)
    return CallBatch(records, seqs, arrived)


def commit(conn: sqlite3.Connection, owner: str, writes: SettlementWrites) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        row = conn.execute("SELECT owner FROM rating_lock WHERE name = ?", (LOCK,)).fetchone()
        if row is None or row[0] != owner:
            raise LockLost("the settlement lock was taken over: this pass wrote nothing")
        lines: list[tuple[Any, ...]] = []
        checkpoints: list[tuple[str, str, str]] = []
        replaced: dict[str, list[str]] = {}  # from month -> accounts
        for aw in writes.accounts:
            name = aw.progress.account
            if aw.lines_from is not None:
                replaced.setdefault(str(aw.lines_from), []).append(name)
            lines += map(rows_.line_row, aw.lines)
            checkpoints += ((name, str(m), rows_.state_text(s)) for m, s in aw.checkpoints)
        for since, names in replaced.items():
            for i in range(0, len(names), 500):
                part = names[i : i + 500]
                conn.execute(
                    "DELETE FROM rating_lines WHERE billed_month >= ?"
                    f" AND account IN ({','.join('?' * len(part))})",
                    [since, *part],
                )
        conn.executemany(
            f"INSERT OR REPLACE INTO rating_accounts ({rows_.ACCOUNT_COLUMNS})"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [rows_.account_row(aw.progress) for aw in writes.accounts],
        )
        conn.executemany(
            f"INSERT INTO rating_lines ({rows_.LINE_COLUMNS}) VALUES ({', '.join('?' * 12)})"
            " ON CONFLICT (account, billed_month, origin_month, item, kind, plan_id, tier,"
            " unit_price) DO UPDATE SET calls = calls + excluded.calls,"
            " points = CASE excluded.points WHEN '0' THEN points"
            " ELSE rating_add(points, excluded.points) END,"
            " amount = CASE excluded.amount WHEN '0' THEN amount"
            " ELSE rating_add(amount, excluded.amount) END",
            lines,
        )
        conn.executemany(
            "INSERT OR REPLACE INTO rating_checkpoints (account, month, state) VALUES (?, ?, ?)",
            checkpoints,
        )
        # A record's classification is made once; a re-rate reads it back, never redoes it.
        conn.executemany(
            f"INSERT OR IGNORE INTO rating_adjustments ({rows_.ADJUSTMENT_COLUMNS})"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            [rows_.adjustment_row(a) for a in writes.adjustments],
        )
        if writes.progress is not None:
            p = writes.progress
            conn.execute(
                "INSERT OR REPLACE INTO rating_progress (name, seen, horizon, plan_seq,"
                " refund_seq, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    PROGRESS,
                    p.seen,
                    format_time(p.horizon),
                    p.plan_seq,
                    p.refund_seq,
                    format_time(p.updated_at),
                ),
            )
        if writes.money is not None:
            # In the same transaction: the entries follow the lines exactly, once.
            money_.post_settled(conn, writes)
            money_.update_standing(conn, None, writes.money.posted_at, settled=True)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
