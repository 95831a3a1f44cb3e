"""The synchronous halves of balances, standing and settings (private): a worker thread.

Every function that writes runs inside the caller's ``BEGIN IMMEDIATE`` transaction, so
an entry, the totals it changes, the standing it moves and the notices it causes commit
together or not at all.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from ...ledger.codec import format_time, parse_time
from ...notices import Notice, NoticeKind, record_notice
from ...rating import _rows as rows_
from ...rating.balances import (
    SUSPEND_AFTER,
    AccountSettings,
    BalanceEntry,
    BalanceError,
    EntryKind,
    Standing,
)
from ...rating.money import exact_sum
from ...rating.months import Month, parse_month
from ...rating.store import SettlementWrites
from .._money_rules import settled_entries, standing_notice

__all__: list[str] = []

_ENTRY_COLUMNS = "seq, id, account, kind, amount, at, month, ref, reason, recorded_at"
_STANDING_COLUMNS = "account, overdue_since, suspended_at, held_at, held_reason, updated_at"
_SETTLED_KINDS = (EntryKind.PAYG, EntryKind.ADJUSTMENT, EntryKind.ROUNDING)


def entry_from_row(row: Sequence[Any]) -> BalanceEntry:
    seq, id_, account, kind, amount, at, month, ref, reason, recorded_at = row
    return BalanceEntry(
        id=id_,
        account=account,
        kind=EntryKind(kind),
        amount=Decimal(amount),
        at=parse_time(at),
        recorded_at=parse_time(recorded_at),
        month=None if month is None else parse_month(month),
        ref=ref,
        reason=reason,
        seq=int(seq),
    )


def standing_from_row(row: Sequence[Any]) -> Standing:
    account, overdue, suspended, held, reason, updated = row
    return Standing(
        account=account,
        overdue_since=rows_.optional_time(overdue),
        suspended_at=rows_.optional_time(suspended),
        held_at=rows_.optional_time(held),
        held_reason=reason,
        updated_at=parse_time(updated),
    )


# -- totals --------------------------------------------------------------------------------


def _pending(conn: sqlite3.Connection) -> tuple[int, list[tuple[int, str, str]]]:
    (mark,) = conn.execute("SELECT last_seq FROM balance_mark WHERE name = 'totals'").fetchone()
    rows = conn.execute(
        "SELECT seq, account, amount FROM balance_entries WHERE seq > ? ORDER BY seq", (mark,)
    ).fetchall()
    return int(mark), rows


def catch_up_totals(conn: sqlite3.Connection) -> None:
    """Add every entry after the mark to its account's total (in a write transaction)."""
    _, rows = _pending(conn)
    if not rows:
        return
    added: dict[str, tuple[list[Decimal], int]] = {}
    for _, account, amount in rows:
        amounts, n = added.get(account, ([], 0))
        amounts.append(Decimal(amount))
        added[account] = (amounts, n + 1)
    base: dict[str, tuple[Decimal, int]] = {}
    for part in _chunks(sorted(added)):
        for account, balance, count in conn.execute(
            "SELECT account, balance, entries FROM balance_totals"
            f" WHERE account IN ({','.join('?' * len(part))})",
            list(part),
        ):
            base[account] = (Decimal(balance), int(count))
    conn.executemany(
        "INSERT OR REPLACE INTO balance_totals (account, balance, entries) VALUES (?, ?, ?)",
        [
            (
                account,
                rows_.decimal_text(exact_sum([base.get(account, (Decimal(0), 0))[0], *amounts])),
                base.get(account, (Decimal(0), 0))[1] + n,
            )
            for account, (amounts, n) in added.items()
        ],
    )
    conn.execute("UPDATE balance_mark SET last_seq = ? WHERE name = 'totals'", (rows[-1][0],))


def _chunks(names: Sequence[str], size: int = 500) -> Iterable[Sequence[str]]:
    for i in range(0, len(names), size):
        yield names[i : i + size]


def read_balances(conn: sqlite3.Connection, account: str | None = None) -> dict[str, Decimal]:
    """Every account's balance (or one's): the totals plus any entry not yet summed.

    Read-only, so a reader never needs the write lock; run it inside one read transaction
    when it must agree with other reads."""
    where, params = ("WHERE account = ?", [account]) if account else ("", [])
    found = conn.execute(f"SELECT account, balance FROM balance_totals {where}", params)
    balances = {name: Decimal(text) for name, text in found}
    _, rows = _pending(conn)
    for _, name, amount in rows:
        if account is None or name == account:
            balances[name] = exact_sum((balances.get(name, Decimal(0)), Decimal(amount)))
    return balances


# -- entries -------------------------------------------------------------------------------


def _entry_row(e: BalanceEntry) -> tuple[Any, ...]:
    return (
        e.id,
        e.account,
        e.kind.value,
        rows_.decimal_text(e.amount),
        format_time(e.at),
        None if e.month is None else str(e.month),
        e.ref,
        e.reason,
        format_time(e.recorded_at),
    )


_INSERT_ENTRY = (
    "INSERT INTO balance_entries (id, account, kind, amount, at, month, ref, reason,"
    " recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def insert_entries(conn: sqlite3.Connection, entries: Iterable[BalanceEntry]) -> list[str]:
    """Post entries (in the caller's transaction); the ids of those that were new.

    An id already posted with the same account, kind and amount is the same entry posted
    again (a retried command): skipped. With anything else it is a conflict: BalanceError.
    """
    batch = list(entries)
    conn.execute("SAVEPOINT entries")
    try:
        # Usually every id is new (a settlement's ids count what was posted): one statement.
        conn.executemany(_INSERT_ENTRY, [_entry_row(e) for e in batch])
        posted = batch
    except sqlite3.IntegrityError:
        conn.execute("ROLLBACK TO entries")
        posted = [e for e in batch if _insert_one(conn, e)]
    conn.execute("RELEASE entries")
    conn.executemany(
        "INSERT INTO balance_posted (account, month, kind, amount, entries)"
        " VALUES (?, ?, ?, ?, 1) ON CONFLICT (account, month, kind) DO UPDATE SET"
        " amount = rating_add(amount, excluded.amount), entries = entries + 1",
        [
            (e.account, str(e.month), e.kind.value, rows_.decimal_text(e.amount))
            for e in posted
            if e.month is not None
        ],
    )
    catch_up_totals(conn)
    return [e.id for e in posted]


def _insert_one(conn: sqlite3.Connection, e: BalanceEntry) -> bool:
    try:
        conn.execute(_INSERT_ENTRY, _entry_row(e))
    except sqlite3.IntegrityError:
        found = conn.execute(
            "SELECT account, kind, amount FROM balance_entries WHERE id = ?", (e.id,)
        ).fetchone()
        if found is None:
            raise
        if (found[0], found[1], Decimal(found[2])) != (e.account, e.kind.value, e.amount):
            raise BalanceError(
                f"entry {e.id!r} already exists with different content: nothing written"
            ) from None
        return False
    return True


def entries(
    conn: sqlite3.Connection,
    account: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    kind: EntryKind | None = None,
) -> list[BalanceEntry]:
    clauses, params = ["account = ?"], [account]
    if since is not None:
        clauses.append("at >= ?")
        params.append(format_time(since))
    if until is not None:
        clauses.append("at < ?")
        params.append(format_time(until))
    if kind is not None:
        clauses.append("kind = ?")
        params.append(kind.value)
    found = conn.execute(
        f"SELECT {_ENTRY_COLUMNS} FROM balance_entries WHERE {' AND '.join(clauses)} ORDER BY seq",
        params,
    ).fetchall()
    return [entry_from_row(r) for r in found]


def _targets(
    conn: sqlite3.Connection, pairs: set[tuple[str, str]]
) -> dict[tuple[str, str], tuple[list[Decimal], list[Decimal]]]:
    """Per (account, month): exact pay-as-you-go amounts of regular lines and adjustments."""
    out: dict[tuple[str, str], tuple[list[Decimal], list[Decimal]]] = {p: ([], []) for p in pairs}
    first = min(m for _, m in pairs)
    for part in _chunks(sorted({a for a, _ in pairs})):
        for account, month, origin, amount in conn.execute(
            "SELECT account, billed_month, origin_month, amount FROM rating_lines"
            f" WHERE account IN ({','.join('?' * len(part))}) AND billed_month >= ?"
            " AND kind = 'payg'",
            [*part, first],
        ):
            found = out.get((account, month))
            if found is not None:
                (found[0] if origin == month else found[1]).append(Decimal(amount))
    return out


def _posted(
    conn: sqlite3.Connection, pairs: set[tuple[str, str]]
) -> tuple[dict[tuple[str, str, str], tuple[Decimal, int]], set[tuple[str, str]]]:
    """What usage entries posted per (account, month, kind), and which months are closed."""
    sums: dict[tuple[str, str, str], tuple[Decimal, int]] = {}
    closed: set[tuple[str, str]] = set()
    first = min(m for _, m in pairs)
    for part in _chunks(sorted({a for a, _ in pairs})):
        marks = ",".join("?" * len(part))
        for account, month, kind, amount, n in conn.execute(
            "SELECT account, month, kind, amount, entries FROM balance_posted"
            f" WHERE account IN ({marks}) AND month >= ?",
            [*part, first],
        ):
            sums[(account, month, kind)] = (Decimal(amount), int(n))
        for account, month in conn.execute(
            f"SELECT account, month FROM balance_closes WHERE account IN ({marks}) AND month >= ?",
            [*part, first],
        ):
            closed.add((account, month))
    return sums, closed


def post_settled(conn: sqlite3.Connection, writes: SettlementWrites) -> set[str]:
    """Post what a settlement pass changed: for each (account, billed month) it touched,
    the exact pay-as-you-go (and adjustments) not yet posted, and once the month has
    closed, its rounding to the fen. Runs in the pass's commit, after its lines are
    written. Returns the accounts whose balance moved.

    At most one entry per kind, account and month per pass, and only for accounts with
    new usage: the journal never holds more usage entries than the ledger holds calls."""
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
            for (month,) in conn.execute(
                "SELECT DISTINCT billed_month FROM rating_lines"
                " WHERE account = ? AND billed_month >= ?",
                (name, since),
            ):
                pairs.add((name, month))
            for (month,) in conn.execute(
                "SELECT DISTINCT month FROM balance_posted WHERE account = ? AND month >= ?",
                (name, since),
            ):
                pairs.add((name, month))
    closed_through = None if money.closed_through is None else str(money.closed_through)
    if closed_through is not None and _newly_closed(conn, money.closed_through, money.account):
        # Months closed at this horizon whose rounding is not posted yet (months that
        # closed earlier were posted by the pass that closed them, or are in ``pairs``).
        where, params = "", [closed_through]
        if money.account is not None:
            where, params = " AND l.account = ?", [closed_through, money.account]
        for account, month in conn.execute(
            "SELECT DISTINCT l.account, l.billed_month FROM rating_lines l"
            " LEFT JOIN balance_closes c ON c.account = l.account AND c.month = l.billed_month"
            f" WHERE l.billed_month <= ? AND c.account IS NULL{where}",
            params,
        ):
            pairs.add((account, month))
    if not pairs:
        return set()
    posted, already_closed = _posted(conn, pairs)
    at = money.posted_at
    new, closing, moved = settled_entries(
        _targets(conn, pairs), posted, already_closed, closed_through, at, rerate=money.rerate
    )
    closes = [(account, month, format_time(at)) for account, month in closing]
    conn.executemany(
        "INSERT OR IGNORE INTO balance_closes (account, month, closed_at) VALUES (?, ?, ?)",
        closes,
    )
    insert_entries(conn, new)
    return moved


def _newly_closed(conn: sqlite3.Connection, through: Month | None, account: str | None) -> bool:
    """Whether a pass closing every month up to ``through`` may close new ones: always for
    one account (its lines are few), for all accounts only when ``through`` moved on."""
    if through is None:
        return False
    if account is not None:
        return True
    index = through.year * 12 + through.month
    found = conn.execute("SELECT last_seq FROM balance_mark WHERE name = 'closed'").fetchone()
    if found is not None and found[0] >= index:
        return False
    conn.execute(
        "INSERT OR REPLACE INTO balance_mark (name, last_seq) VALUES ('closed', ?)", (index,)
    )
    return True


# -- standing ------------------------------------------------------------------------------


def standings(conn: sqlite3.Connection, account: str | None = None) -> dict[str, Standing]:
    where, params = ("WHERE account = ?", [account]) if account else ("", [])
    found = conn.execute(f"SELECT {_STANDING_COLUMNS} FROM account_standing {where}", params)
    return {row[0]: standing_from_row(row) for row in found}


def _write_standing(conn: sqlite3.Connection, s: Standing) -> None:
    if s.overdue_since is None and s.held_at is None:
        conn.execute("DELETE FROM account_standing WHERE account = ?", (s.account,))
        return
    conn.execute(
        f"INSERT OR REPLACE INTO account_standing ({_STANDING_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
        (
            s.account,
            None if s.overdue_since is None else format_time(s.overdue_since),
            None if s.suspended_at is None else format_time(s.suspended_at),
            None if s.held_at is None else format_time(s.held_at),
            s.held_reason,
            format_time(s.updated_at),
        ),
    )


def update_standing(
    conn: sqlite3.Connection, accounts: Iterable[str] | None, now: datetime, *, settled: bool
) -> list[Notice]:
    """Move accounts between good, overdue and suspended from their balances at ``now``.

    Only a settlement (``settled``) makes an account overdue or suspended (billing rules
    section 6: the balance *after settlement*); any write that brings the balance back to
    zero or above (a top-up, a refund, a correction) restores it at once. ``accounts``
    None: every account with a balance or a standing."""
    balances = read_balances(conn)
    current = standings(conn)
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
                _write_standing(conn, s)
            elif s.suspended_at is None and now - s.overdue_since >= SUSPEND_AFTER:
                s = Standing(name, s.overdue_since, now, s.held_at, s.held_reason, now)
                notices.append(standing_notice(NoticeKind.ACCOUNT_SUSPENDED, s, now, balance))
                _write_standing(conn, s)
        elif balance >= 0 and s is not None and s.overdue_since is not None:
            notices.append(standing_notice(NoticeKind.ACCOUNT_RESTORED, s, now, balance))
            _write_standing(conn, Standing(name, None, None, s.held_at, s.held_reason, now))
    for n in notices:
        record_notice(conn, n, now)
    return notices


def set_hold(
    conn: sqlite3.Connection, account: str, now: datetime, reason: str | None, *, hold: bool
) -> Standing | None:
    """Suspend (``hold``) or restore an account by hand; None if there was nothing to lift."""
    s = standings(conn, account).get(account)
    if hold:
        if s is not None and s.held_at is not None:
            raise BalanceError(f"account {account!r} is already suspended by an operator")
        overdue, suspended = (None, None) if s is None else (s.overdue_since, s.suspended_at)
        held = Standing(account, overdue, suspended, now, reason or "operator", now)
        _write_standing(conn, held)
        record_notice(
            conn,
            Notice(NoticeKind.ACCOUNT_HELD, account, format_time(now), now, {"reason": reason}),
            now,
        )
        return held
    if s is None or s.held_at is None:
        raise BalanceError(f"account {account!r} is not suspended by an operator")
    lifted = Standing(account, s.overdue_since, s.suspended_at, None, None, now)
    _write_standing(conn, lifted)
    record_notice(
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


def settings(conn: sqlite3.Connection, account: str | None = None) -> dict[str, AccountSettings]:
    where, params = ("WHERE account = ?", [account]) if account else ("", [])
    found = conn.execute(
        f"SELECT account, monthly_cap, low_balance FROM account_settings {where}", params
    )
    return {
        a: AccountSettings(
            a, None if cap is None else Decimal(cap), None if low is None else Decimal(low)
        )
        for a, cap, low in found
    }


def write_settings(conn: sqlite3.Connection, s: AccountSettings, now: datetime) -> None:
    if s.monthly_cap is None and s.low_balance is None:
        conn.execute("DELETE FROM account_settings WHERE account = ?", (s.account,))
        return
    conn.execute(
        "INSERT OR REPLACE INTO account_settings (account, monthly_cap, low_balance, updated_at)"
        " VALUES (?, ?, ?, ?)",
        (
            s.account,
            None if s.monthly_cap is None else rows_.decimal_text(s.monthly_cap),
            None if s.low_balance is None else rows_.decimal_text(s.low_balance),
            format_time(now),
        ),
    )


# -- accounts ------------------------------------------------------------------------------


def account_state(conn: sqlite3.Connection, account: str) -> str | None:
    """'enabled' (an enabled AccessKey), 'disabled' (keys, none enabled), or None (unknown:
    no AccessKey ever; an account with entries but no keys counts as disabled)."""
    (keys, enabled) = conn.execute(
        "SELECT COUNT(*), COALESCE(SUM(enabled), 0) FROM credentials WHERE account = ?",
        (account,),
    ).fetchone()
    if keys:
        return "enabled" if enabled else "disabled"
    found = conn.execute(
        "SELECT 1 FROM balance_entries WHERE account = ? LIMIT 1", (account,)
    ).fetchone()
    return "disabled" if found else None
