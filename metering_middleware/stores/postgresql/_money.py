"""Balances, standing and settings on PostgreSQL (private): the SQLite ``_money`` ported.

Same rules as the SQLite half (``stores/sqlite/_money.py``, whose docstrings are the spec):
every function that writes runs inside the caller's transaction, which holds the store's
write lock (``pg_advisory_xact_lock``), so an entry, the totals it changes, the standing
it moves and the notices it causes commit together or not at all. Money is ``numeric``:
asyncpg hands ``Decimal`` in and out, exactly. The totals and per-month posted sums are
kept by a trigger on ``balance_entries`` (migration 0003), not here.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg

from ...ledger.codec import format_time
from ...notices import Notice, NoticeKind
from ...notices.records import log_recorded, notice_data_text
from ...rating.balances import (
    SUSPEND_AFTER,
    AccountSettings,
    BalanceEntry,
    BalanceError,
    EntryKind,
    Standing,
)
from ...rating.months import Month, parse_month
from ...rating.store import SettlementWrites
from .._money_rules import settled_entries, standing_notice
from ._migrate import Conn

__all__: list[str] = []


_ENTRY_COLUMNS = "seq, id, account, kind, amount, at, month, ref, reason, recorded_at"
_STANDING_COLUMNS = "account, overdue_since, suspended_at, held_at, held_reason, updated_at"


def entry_from_row(r: asyncpg.Record) -> BalanceEntry:
    return BalanceEntry(
        id=r[1],
        account=r[2],
        kind=EntryKind(r[3]),
        amount=r[4],
        at=r[5],
        recorded_at=r[9],
        month=None if r[6] is None else parse_month(r[6]),
        ref=r[7],
        reason=r[8],
        seq=int(r[0]),
    )


def standing_from_row(r: asyncpg.Record) -> Standing:
    return Standing(
        account=r[0],
        overdue_since=r[1],
        suspended_at=r[2],
        held_at=r[3],
        held_reason=r[4],
        updated_at=r[5],
    )


# -- totals --------------------------------------------------------------------------------


async def read_balances(conn: Conn, account: str | None = None) -> dict[str, Decimal]:
    """Every account's balance (or one's): the trigger-kept totals."""
    if account is None:
        rows = await conn.fetch("SELECT account, balance FROM balance_totals")
    else:
        rows = await conn.fetch(
            "SELECT account, balance FROM balance_totals WHERE account = $1", account
        )
    return {r[0]: r[1] for r in rows}


# -- entries -------------------------------------------------------------------------------


async def insert_entries(conn: Conn, entries: Iterable[BalanceEntry]) -> list[str]:
    """Post entries (in the caller's transaction); the ids of those that were new.

    An id already posted with the same account, kind and amount is the same entry posted
    again (a retried command): skipped. With anything else it is a conflict: BalanceError.
    One statement for the batch (``ON CONFLICT DO NOTHING``), then the skipped ids are
    compared with what is stored.
    """
    batch = list(entries)
    if not batch:
        return []
    seen: set[str] = set()
    unique: list[BalanceEntry] = []
    first: dict[str, BalanceEntry] = {}
    for e in batch:
        if e.id not in seen:  # a batch naming one id twice: the first is the entry
            seen.add(e.id)
            unique.append(e)
            first[e.id] = e
        elif (e.account, e.kind, e.amount) != (
            first[e.id].account,
            first[e.id].kind,
            first[e.id].amount,
        ):
            raise BalanceError(
                f"entry {e.id!r} already exists with different content: nothing written"
            )
    rows = await conn.fetch(
        "INSERT INTO balance_entries (id, account, kind, amount, at, month, ref, reason,"
        " recorded_at) SELECT id, account, kind, amount, at, month, ref, reason, recorded_at"
        " FROM unnest($1::text[], $2::text[], $3::text[],"
        " $4::numeric[], $5::timestamptz[], $6::text[], $7::text[], $8::text[],"
        " $9::timestamptz[]) WITH ORDINALITY AS u(id, account, kind, amount, at, month, ref,"
        " reason, recorded_at, n) ORDER BY n"
        " ON CONFLICT (id) DO NOTHING RETURNING id",
        [e.id for e in unique],
        [e.account for e in unique],
        [e.kind.value for e in unique],
        [e.amount for e in unique],
        [e.at for e in unique],
        [None if e.month is None else str(e.month) for e in unique],
        [e.ref for e in unique],
        [e.reason for e in unique],
        [e.recorded_at for e in unique],
    )
    new = {r[0] for r in rows}
    skipped = [e for e in unique if e.id not in new]
    if skipped:
        found = {
            r[0]: (r[1], r[2], r[3])
            for r in await conn.fetch(
                "SELECT id, account, kind, amount FROM balance_entries WHERE id = ANY($1::text[])",
                [e.id for e in skipped],
            )
        }
        for e in skipped:
            if found.get(e.id) != (e.account, e.kind.value, e.amount):
                raise BalanceError(
                    f"entry {e.id!r} already exists with different content: nothing written"
                )
    return [e.id for e in unique if e.id in new]


async def entries(
    conn: Conn,
    account: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    kind: EntryKind | None = None,
) -> list[BalanceEntry]:
    clauses: list[str] = ["account = $1"]
    params: list[Any] = [account]
    if since is not None:
        params.append(since)
        clauses.append(f"at >= ${len(params)}")
    if until is not None:
        params.append(until)
        clauses.append(f"at < ${len(params)}")
    if kind is not None:
        params.append(kind.value)
        clauses.append(f"kind = ${len(params)}")
    rows = await conn.fetch(
        f"SELECT {_ENTRY_COLUMNS} FROM balance_entries WHERE {' AND '.join(clauses)} ORDER BY seq",
        *params,
    )
    return [entry_from_row(r) for r in rows]


async def _targets(
    conn: Conn, pairs: set[tuple[str, str]]
) -> dict[tuple[str, str], tuple[list[Decimal], list[Decimal]]]:
    """Per (account, month): exact pay-as-you-go amounts of regular lines and adjustments."""
    out: dict[tuple[str, str], tuple[list[Decimal], list[Decimal]]] = {p: ([], []) for p in pairs}
    first = min(m for _, m in pairs)
    for account, month, origin, amount in await conn.fetch(
        "SELECT account, billed_month, origin_month, amount FROM rating_lines"
        " WHERE account = ANY($1::text[]) AND billed_month >= $2 AND kind = 'payg'",
        sorted({a for a, _ in pairs}),
        first,
    ):
        found = out.get((account, month))
        if found is not None:
            (found[0] if origin == month else found[1]).append(amount)
    return out


async def _posted(
    conn: Conn, pairs: set[tuple[str, str]]
) -> tuple[dict[tuple[str, str, str], tuple[Decimal, int]], set[tuple[str, str]]]:
    """What usage entries posted per (account, month, kind), and which months are closed."""
    names = sorted({a for a, _ in pairs})
    first = min(m for _, m in pairs)
    sums = {
        (r[0], r[1], r[2]): (r[3], int(r[4]))
        for r in await conn.fetch(
            "SELECT account, month, kind, amount, entries FROM balance_posted"
            " WHERE account = ANY($1::text[]) AND month >= $2",
            names,
            first,
        )
    }
    closed = {
        (r[0], r[1])
        for r in await conn.fetch(
            "SELECT account, month FROM balance_closes WHERE account = ANY($1::text[])"
            " AND month >= $2",
            names,
            first,
        )
    }
    return sums, closed


async def post_settled(conn: Conn, writes: SettlementWrites) -> set[str]:
    """Post what a settlement pass changed (``sqlite._money.post_settled``, the same entries)."""
    money = writes.money
    if money is None:
        return set()
    pairs: set[tuple[str, str]] = set()
    for aw in writes.accounts:
        name = aw.progress.account
        pairs.update((name, str(ln.billed)) for ln in aw.lines)
        if aw.lines_from is not None:
            since = str(aw.lines_from)
            # A re-rate replaced these months: re-post where lines or entries exist.
            for r in await conn.fetch(
                "SELECT DISTINCT billed_month FROM rating_lines"
                " WHERE account = $1 AND billed_month >= $2"
                " UNION SELECT DISTINCT month FROM balance_posted"
                " WHERE account = $1 AND month >= $2",
                name,
                since,
            ):
                pairs.add((name, r[0]))
    closed_through = None if money.closed_through is None else str(money.closed_through)
    if closed_through is not None and await _newly_closed(
        conn, money.closed_through, money.account
    ):
        sql = (
            "SELECT DISTINCT l.account, l.billed_month FROM rating_lines l"
            " LEFT JOIN balance_closes c ON c.account = l.account AND c.month = l.billed_month"
            " WHERE l.billed_month <= $1 AND c.account IS NULL"
        )
        args: list[Any] = [closed_through]
        if money.account is not None:
            sql += " AND l.account = $2"
            args.append(money.account)
        for r in await conn.fetch(sql, *args):
            pairs.add((r[0], r[1]))
    if not pairs:
        return set()
    posted, already_closed = await _posted(conn, pairs)
    at = money.posted_at
    new, closing, moved = settled_entries(
        await _targets(conn, pairs), posted, already_closed, closed_through, at, rerate=money.rerate
    )
    closes = [(account, month, at) for account, month in closing]
    if closes:
        await conn.executemany(
            "INSERT INTO balance_closes (account, month, closed_at) VALUES ($1, $2, $3)"
            " ON CONFLICT DO NOTHING",
            closes,
        )
    await insert_entries(conn, new)
    return moved


async def _newly_closed(conn: Conn, through: Month | None, account: str | None) -> bool:
    if through is None:
        return False
    if account is not None:
        return True
    index = through.year * 12 + through.month
    found = await conn.fetchval("SELECT last_seq FROM balance_mark WHERE name = 'closed'")
    if found is not None and found >= index:
        return False
    await conn.execute(
        "INSERT INTO balance_mark (name, last_seq) VALUES ('closed', $1)"
        " ON CONFLICT (name) DO UPDATE SET last_seq = excluded.last_seq",
        index,
    )
    return True


# -- standing ------------------------------------------------------------------------------


async def standings(conn: Conn, account: str | None = None) -> dict[str, Standing]:
    if account is None:
        rows = await conn.fetch(f"SELECT {_STANDING_COLUMNS} FROM account_standing")
    else:
        rows = await conn.fetch(
            f"SELECT {_STANDING_COLUMNS} FROM account_standing WHERE account = $1", account
        )
    return {r[0]: standing_from_row(r) for r in rows}


async def _write_standing(conn: Conn, s: Standing) -> None:
    if s.overdue_since is None and s.held_at is None:
        await conn.execute("DELETE FROM account_standing WHERE account = $1", s.account)
        return
    await conn.execute(
        f"INSERT INTO account_standing ({_STANDING_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"
        " ON CONFLICT (account) DO UPDATE SET overdue_since = excluded.overdue_since,"
        " suspended_at = excluded.suspended_at, held_at = excluded.held_at,"
        " held_reason = excluded.held_reason, updated_at = excluded.updated_at",
        s.account,
        s.overdue_since,
        s.suspended_at,
        s.held_at,
        s.held_reason,
        s.updated_at,
    )


async def update_standing(
    conn: Conn, accounts: Iterable[str] | None, now: datetime, *, settled: bool
) -> list[Notice]:
    """Move accounts between good, overdue and suspended (``sqlite._money.update_standing``)."""
    balances = await read_balances(conn)
    current = await standings(conn)
    names = (set(balances) | set(current)) if accounts is None else set(accounts)
    notices: list[Notice] = []
    for name in sorted(names):
        balance = balances.get(name, Decimal(0))
        s = current.get(name)
        if balance < 0 and settled:
            if s is None or s.overdue_since is None:
                held, why = (None, None) if s is None else (s.held_at, s.held_reason)
                s = Standing(name, now, None, held, why, now)
                notices.append(standing_notice(NoticeKind.ACCOUNT_OVERDUE, s, now, balance))
                await _write_standing(conn, s)
            elif s.suspended_at is None and now - s.overdue_since >= SUSPEND_AFTER:
                s = Standing(name, s.overdue_since, now, s.held_at, s.held_reason, now)
                notices.append(standing_notice(NoticeKind.ACCOUNT_SUSPENDED, s, now, balance))
                await _write_standing(conn, s)
        elif balance >= 0 and s is not None and s.overdue_since is not None:
            notices.append(standing_notice(NoticeKind.ACCOUNT_RESTORED, s, now, balance))
            await _write_standing(conn, Standing(name, None, None, s.held_at, s.held_reason, now))
    for n in notices:
        await record_notice(conn, n, now)
    return notices


async def record_notice(conn: Conn, notice: Notice, recorded_at: datetime) -> bool:
    """Insert ``notice`` unless one with its id exists (no webhook outbox on PostgreSQL)."""
    data = notice_data_text(notice)
    status = await conn.execute(
        "INSERT INTO notices (id, kind, account, subject, at, data, recorded_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING",
        notice.id,
        notice.kind.value,
        notice.account,
        notice.subject,
        notice.at,
        data,
        recorded_at,
    )
    if status.endswith(" 0"):
        return False
    log_recorded(notice, data)
    return True


async def set_hold(
    conn: Conn, account: str, now: datetime, reason: str | None, *, hold: bool
) -> Standing | None:
    """Suspend (``hold``) or restore an account by hand; None if there was nothing to lift."""

    s = (await standings(conn, account)).get(account)
    if hold:
        if s is not None and s.held_at is not None:
            raise BalanceError(f"account {account!r} is already suspended by an operator")
        overdue, suspended = (None, None) if s is None else (s.overdue_since, s.suspended_at)
        held = Standing(account, overdue, suspended, now, reason or "operator", now)
        await _write_standing(conn, held)
        await record_notice(
            conn,
            Notice(NoticeKind.ACCOUNT_HELD, account, format_time(now), now, {"reason": reason}),
            now,
        )
        return held
    if s is None or s.held_at is None:
        raise BalanceError(f"account {account!r} is not suspended by an operator")
    lifted = Standing(account, s.overdue_since, s.suspended_at, None, None, now)
    await _write_standing(conn, lifted)
    await record_notice(
        conn,
        Notice(
            NoticeKind.ACCOUNT_RELEASED,
            account,
            format_time(s.held_at),
            now,
            {"reason": reason, "held_at": s.held_at.isoformat()},
        ),
        now,
    )
    return lifted if lifted.overdue_since is not None else None


# -- settings ------------------------------------------------------------------------------


async def settings(conn: Conn, account: str | None = None) -> dict[str, AccountSettings]:
    sql = "SELECT account, monthly_cap, low_balance FROM account_settings"
    rows = await (
        conn.fetch(sql) if account is None else conn.fetch(sql + " WHERE account = $1", account)
    )
    return {r[0]: AccountSettings(r[0], r[1], r[2]) for r in rows}


async def write_settings(conn: Conn, s: AccountSettings, now: datetime) -> None:
    if s.monthly_cap is None and s.low_balance is None:
        await conn.execute("DELETE FROM account_settings WHERE account = $1", s.account)
        return
    await conn.execute(
        "INSERT INTO account_settings (account, monthly_cap, low_balance, updated_at)"
        " VALUES ($1, $2, $3, $4) ON CONFLICT (account) DO UPDATE SET"
        " monthly_cap = excluded.monthly_cap, low_balance = excluded.low_balance,"
        " updated_at = excluded.updated_at",
        s.account,
        s.monthly_cap,
        s.low_balance,
        now,
    )


# -- accounts ------------------------------------------------------------------------------


async def account_state(conn: Conn, account: str) -> str | None:
    """'enabled', 'disabled' or None (unknown): see ``sqlite._money.account_state``."""
    row = await conn.fetchrow(
        "SELECT count(*), count(*) FILTER (WHERE enabled) FROM credentials WHERE account = $1",
        account,
    )
    assert row is not None
    if row[0]:
        return "enabled" if row[1] else "disabled"
    found = await conn.fetchval("SELECT 1 FROM balance_entries WHERE account = $1 LIMIT 1", account)
    return "disabled" if found else None
