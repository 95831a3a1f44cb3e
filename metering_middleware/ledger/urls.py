"""Ledger stores chosen by URL.

======================================  ==========================================
``memory://``                           :class:`~.memory.MemoryStore` (tests, demos)
``sqlite:///relative/path.db``          SQLite file relative to the working directory
``sqlite:////absolute/path.db``         SQLite file at an absolute path
``ledger.db``, ``/var/lib/ledger.db``   a plain path: SQLite
``postgresql://user@host:5432/db``      PostgreSQL (asyncpg; ``postgres://`` too)
======================================  ==========================================

SQLite URLs take options as query parameters: ``?synchronous=NORMAL`` and
``?busy_timeout_ms=500``. The store is returned unopened: ``await store.open()``.
``create=False`` makes that open refuse a missing SQLite file (``LedgerMissing``)
instead of creating a new ledger: for every use that reads or adds to a ledger
that should already be there (see :class:`~metering_middleware.stores.sqlite.ledger.SqliteStore`).

PostgreSQL URLs are libpq-style (``?sslmode=...``, ``?host=/run/postgresql`` for a
socket) plus ``pool_min``, ``pool_max``, ``connect_timeout`` and ``command_timeout``
(docs/postgresql.md); an unknown option is a ``ValueError``. They need the
``postgresql`` extra (asyncpg); without it the URL is a ``ValueError`` saying so.
With ``create=False`` a database holding no ledger is ``LedgerMissing`` at open.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import parse_qs, parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from ..stores.sqlite.ledger import SqliteStore
from .memory import MemoryStore
from .store import LedgerStore

__all__ = ["open_store", "redact_url"]


def open_store(url: str, *, create: bool = True) -> LedgerStore:
    """The (unopened) store a ledger URL names; ``ValueError`` for anything else."""
    if "://" not in url:
        if not url.strip():
            raise ValueError("empty ledger URL")
        return SqliteStore(url, create=create)
    scheme = url.split("://", 1)[0].lower()
    if scheme == "memory":
        if url.split("://", 1)[1] not in ("", "/"):
            raise ValueError(f"memory:// ledger URLs take no path: {url!r}")
        return MemoryStore()
    if scheme == "sqlite":
        return _sqlite(url, create)
    if scheme in ("postgresql", "postgres"):
        return _postgresql(url, create)
    if scheme.startswith(("postgresql+", "postgres+")):
        raise ValueError(f"use postgresql://... (no driver suffix), not {scheme}://")
    raise ValueError(
        f"unsupported ledger URL scheme {scheme!r} "
        "(use sqlite:///path, postgresql://host/db or memory://)"
    )


def _postgresql(url: str, create: bool) -> LedgerStore:
    try:
        from ..stores.postgresql.ledger import PostgresStore
    except ImportError as exc:  # the optional extra is not installed
        raise ValueError(
            "postgresql:// ledgers need asyncpg: pip install 'metering_middleware[postgresql]'"
            f" ({exc})"
        ) from None
    return PostgresStore.from_url(url, create=create)


def _sqlite(url: str, create: bool) -> SqliteStore:
    parts = urlsplit(url)
    if parts.netloc:
        raise ValueError(
            f"sqlite URLs have no host: use sqlite:///relative or sqlite:////absolute, not {url!r}"
        )
    # sqlite:///x.db has path "/x.db" -> "x.db"; sqlite:////abs/x.db has "//abs/x.db" -> "/abs/x.db"
    path = unquote(parts.path[1:]) if parts.path.startswith("/") else ""
    if not path:
        raise ValueError(f"sqlite URL without a file path: {url!r}")
    options = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    synchronous = options.pop("synchronous", "FULL").upper()
    if synchronous not in ("FULL", "NORMAL"):
        raise ValueError(f"synchronous must be FULL or NORMAL, not {synchronous!r}")
    mode: Literal["FULL", "NORMAL"] = "FULL" if synchronous == "FULL" else "NORMAL"
    timeout = options.pop("busy_timeout_ms", None)
    if options:
        raise ValueError(f"unknown sqlite URL options: {', '.join(sorted(options))}")
    if timeout is None:
        return SqliteStore(path, synchronous=mode, create=create)
    try:
        busy_timeout_ms = int(timeout)
    except ValueError:
        raise ValueError(f"busy_timeout_ms must be an integer, not {timeout!r}") from None
    return SqliteStore(path, synchronous=mode, busy_timeout_ms=busy_timeout_ms, create=create)


def redact_url(url: str) -> str:
    """``url`` with any password (in the user part or a ``password`` option) replaced by
    ``***``: the one form of a ledger URL for messages, logs and output."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url.split("://", 1)[0] + "://***"
    query = [(k, "***" if k == "password" else v) for k, v in parse_qsl(parts.query, True)]
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":***"
        netloc = f"{userinfo}@{host}"
    if netloc == parts.netloc and not any(k == "password" for k, _ in query):
        return url  # nothing to hide: exactly as given
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query, safe="/*"), ""))
