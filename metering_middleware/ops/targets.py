"""What an operations command works on: the ledger a URL names (private to ``ops``).

The ledger URL is the one every other face takes (``ledger/urls.py``); operations
dispatch on its scheme, so a backend added there (PostgreSQL) gets a branch here:
an SQLite file is migrated and copied with SQLite's own API, a PostgreSQL database
with the store's migrations and ``pg_dump``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from ..ledger.urls import open_store, redact_url
from ..stores.sqlite.ledger import SqliteStore

__all__ = ["BadLedgerUrl", "LedgerTarget", "PostgresTarget", "SqliteTarget", "resolve", "safe_url"]


class BadLedgerUrl(ValueError):
    """A ledger URL operations cannot work on (the message says why)."""


@dataclass(frozen=True, slots=True)
class SqliteTarget:
    path: Path
    busy_timeout_ms: int = 5000


@dataclass(frozen=True, slots=True)
class PostgresTarget:
    url: str = field(repr=False)  # holds the password, if the URL carries one


LedgerTarget = SqliteTarget | PostgresTarget

_POSTGRES = ("postgresql", "postgres")


def resolve(url: str) -> LedgerTarget:
    """The target ``url`` names; ``BadLedgerUrl`` for anything operations cannot use."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in _POSTGRES or scheme.startswith("postgresql+"):
        parts = urlsplit(url)
        if not parts.hostname and not parts.path.strip("/"):
            raise BadLedgerUrl(f"PostgreSQL URL without a host or database: {safe_url(url)!r}")
        return PostgresTarget(url)
    if scheme == "memory":
        raise BadLedgerUrl("memory:// ledgers live in one process: nothing to migrate or copy")
    try:
        store = open_store(url, create=False)
    except ValueError as exc:
        raise BadLedgerUrl(str(exc)) from None
    if not isinstance(store, SqliteStore):  # a backend added to open_store, not here yet
        raise BadLedgerUrl(f"operations do not support this ledger yet: {safe_url(url)!r}")
    return SqliteTarget(store.path)


def safe_url(url: str) -> str:
    """``url`` with any password replaced by ``***``: for messages and output."""
    return redact_url(url)
