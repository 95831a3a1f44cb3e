"""The ledger's reads, said once for every store: filters and the keyset pager.

The memory, SQLite and PostgreSQL stores answer the same questions (``calls``,
``iter_calls``, ``count_calls``, ``summary``, ``outcome_counts``, ``list_credentials``)
with the same filter (an account, a half-open time range) and the same order
(``occurred_at, id``). What truly differs is kept in a :class:`Dialect`: how a parameter
is written (``?`` or ``$n``), how a time and a text are bound (ISO text or an aware
``datetime``; PostgreSQL refuses NUL in text) and what "no limit" is. "After this row"
is a row comparison, ``(occurred_at, id) > (t, id)``, on both (SQLite has row values
since 3.15; its plan is the same index search on ``occurred_at`` as for the spelled-out
range with ``id`` as the tie-break that its store used before).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

__all__ = [
    "CALL_COLUMNS",
    "CREDENTIAL_COLUMNS",
    "Dialect",
    "Filter",
    "calls_page",
    "count_calls_sql",
    "credentials_sql",
    "outcome_counts_sql",
    "pages",
    "summary_sql",
]

#: The columns of a call as the codecs read them (``occurred_at`` is [8], ``id`` [0]).
CALL_COLUMNS = (
    "id, request_id, account, access_key_id, category, action, version, item,"
    " occurred_at, status, error_code, latency_ms"
)
CREDENTIAL_COLUMNS = "access_key_id, account, secret, enabled, created_at, disabled_at"

_Row = TypeVar("_Row")
_Item = TypeVar("_Item")


@dataclass(frozen=True, slots=True)
class Dialect:
    """What an SQL store binds differently (see the module docstring)."""

    numbered: bool  # $1, $2 ... (asyncpg) rather than ? (sqlite3)
    time: Callable[[datetime], Any]
    text: Callable[[str], Any]
    no_limit: Any  # the LIMIT value meaning "all rows"

    def param(self, args: list[Any], value: Any) -> str:
        """Bind ``value`` (appended to ``args``); the placeholder to write for it."""
        args.append(value)
        return f"${len(args)}" if self.numbered else "?"

    def after(self, args: list[Any], occurred_at: Any, record_id: Any) -> str:
        """The keyset condition: rows after (``occurred_at``, ``record_id``)."""
        t, i = self.param(args, occurred_at), self.param(args, record_id)
        return f"(occurred_at, id) > ({t}, {i})"


@dataclass(frozen=True, slots=True)
class Filter:
    """One account (or all), ``since <= time < until`` (either side open)."""

    account: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def matches(self, account: str, when: datetime) -> bool:
        """For the memory store: does a row of ``account`` at ``when`` pass?"""
        return (
            (self.account is None or account == self.account)
            and (self.since is None or when >= self.since)
            and (self.until is None or when < self.until)
        )

    def where(self, time_column: str, dialect: Dialect, args: list[Any]) -> str:
        """`` WHERE ...`` (or ``""``) on ``time_column``, its values appended to ``args``."""
        clauses: list[str] = []
        if self.account is not None:
            clauses.append(f"account = {dialect.param(args, dialect.text(self.account))}")
        if self.since is not None:
            clauses.append(f"{time_column} >= {dialect.param(args, dialect.time(self.since))}")
        if self.until is not None:
            clauses.append(f"{time_column} < {dialect.param(args, dialect.time(self.until))}")
        return " WHERE " + " AND ".join(clauses) if clauses else ""


def calls_page(
    dialect: Dialect,
    where: Filter,
    after: tuple[Any, Any] | None,
    size: int | None,
) -> tuple[str, list[Any]]:
    """The SELECT of one page of calls in ledger order, after ``after`` (the last
    row's stored ``occurred_at`` and ``id``), at most ``size`` rows (None: all)."""
    args: list[Any] = []
    clauses = where.where("occurred_at", dialect, args)
    if after is not None:
        clauses += (" AND " if clauses else " WHERE ") + dialect.after(args, *after)
    limit = dialect.param(args, dialect.no_limit if size is None else max(size, 0))
    sql = f"SELECT {CALL_COLUMNS} FROM calls{clauses} ORDER BY occurred_at, id LIMIT {limit}"
    return sql, args


def count_calls_sql(dialect: Dialect, where: Filter) -> tuple[str, list[Any]]:
    args: list[Any] = []
    return f"SELECT count(*) FROM calls{where.where('occurred_at', dialect, args)}", args


def summary_sql(dialect: Dialect, where: Filter) -> tuple[str, list[Any]]:
    """Per account, category, action and item: calls, first and last ``occurred_at``."""
    args: list[Any] = []
    sql = (
        "SELECT account, category, action, item, count(*), min(occurred_at),"
        f" max(occurred_at) FROM calls{where.where('occurred_at', dialect, args)}"
        " GROUP BY account, category, action, item ORDER BY account, category, action, item"
    )
    return sql, args


def outcome_counts_sql(dialect: Dialect, where: Filter) -> tuple[str, list[Any]]:
    args: list[Any] = []
    sql = (
        "SELECT minute, account, category, action, outcome, detail, count"
        f" FROM outcome_counts{where.where('minute', dialect, args)}"
        " ORDER BY minute, account, category, action, outcome, detail"
    )
    return sql, args


def credentials_sql(dialect: Dialect, account: str | None) -> tuple[str, list[Any]]:
    args: list[Any] = []
    where = Filter(account).where("created_at", dialect, args)
    sql = f"SELECT {CREDENTIAL_COLUMNS} FROM credentials{where} ORDER BY account, access_key_id"
    return sql, args


async def pages(
    fetch: Callable[[tuple[Any, Any] | None, int], Awaitable[list[_Row]]],
    key: Callable[[_Row], tuple[Any, Any]],
    convert: Callable[[_Row], _Item],
    *,
    limit: int | None,
    page: int,
) -> AsyncIterator[list[_Item]]:
    """``iter_calls``'s pages: ``fetch(after, size)`` reads the next ``size`` rows after
    the key of the last row read (None at first), until a short page or ``limit`` rows.

    Each page is its own short read, so a writer commits between pages however many
    rows there are; rows committed meanwhile after the cursor are read, none twice.
    """
    if page < 1:
        raise ValueError("page must be 1 or more")
    left = -1 if limit is None else max(limit, 0)
    after: tuple[Any, Any] | None = None
    while left != 0:
        size = page if left < 0 else min(page, left)
        rows = await fetch(after, size)
        if rows:
            yield [convert(row) for row in rows]
        if len(rows) < size:
            return
        after = key(rows[-1])
        if left > 0:
            left -= len(rows)
