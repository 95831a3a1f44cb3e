"""The rating store beside a ledger, whichever database holds it (SQLite or PostgreSQL).

``rating_store_for(ledger)`` is what every command and the gateway use: the SQLite rating
store on an SQLite ledger's file, the PostgreSQL one on a PostgreSQL ledger's database
(same options: URL, pool size, timeouts). Both implement :class:`MoneyRatingStore`: the
settlement protocol (:class:`~.store.RatingStore`) plus balances, entries, standing and
settings. Neither ever creates a ledger: the ledger store decided that.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import Decimal
from types import TracebackType
from typing import Protocol

from ..ledger.store import LedgerStore
from ..stores.sqlite.ledger import SqliteStore
from ..stores.sqlite.rating import SqliteRatingStore
from .balances import AccountSettings, BalanceEntry, EntryKind, Standing
from .store import RatingStore

__all__ = ["MoneyRatingStore", "rating_store_for", "rating_store_for_url", "rating_stores_beside"]


class MoneyRatingStore(RatingStore, Protocol):
    """A rating store that keeps money too (both backends' stores are)."""

    async def __aenter__(self) -> MoneyRatingStore: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def post_entries(self, entries: Sequence[BalanceEntry], now: datetime) -> list[str]: ...

    async def balance_entries(
        self,
        account: str,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        kind: EntryKind | None = None,
    ) -> list[BalanceEntry]: ...

    async def balances(self, *, account: str | None = None) -> dict[str, Decimal]: ...

    async def standings(self, *, account: str | None = None) -> dict[str, Standing]: ...

    async def set_hold(
        self, account: str, now: datetime, reason: str | None, *, hold: bool
    ) -> Standing | None: ...

    async def account_settings(
        self, *, account: str | None = None
    ) -> dict[str, AccountSettings]: ...

    async def set_account_settings(self, settings: AccountSettings, now: datetime) -> None: ...

    async def account_state(self, account: str) -> str | None: ...

    async def settle_standing(self, now: datetime) -> None: ...


def rating_store_for(ledger: LedgerStore) -> MoneyRatingStore:
    """The rating store beside ``ledger`` (unopened); ``ValueError`` for a ledger that keeps
    no plans (``memory://``)."""
    if isinstance(ledger, SqliteStore):
        return SqliteRatingStore(ledger.path, create=False)
    try:
        from ..stores.postgresql import PostgresStore  # asyncpg only when it is used
    except ImportError:  # the optional extra is missing: no ledger can be a PostgreSQL one
        PostgresStore = None  # type: ignore[assignment,misc]
    if PostgresStore is not None and isinstance(ledger, PostgresStore):
        from ..stores.postgresql.rating import PostgresRatingStore

        return PostgresRatingStore(ledger.options, create=False)
    raise ValueError(
        "rating needs an SQLite (sqlite:///path) or PostgreSQL (postgresql://) ledger; "
        "memory:// keeps no plans"
    )


def rating_store_for_url(url: str) -> MoneyRatingStore:
    """The rating store of the ledger at ``url`` (a path, ``sqlite:///`` or
    ``postgresql://``); ``ValueError`` for a URL that names no such ledger."""
    from ..ledger.urls import open_store

    return rating_store_for(open_store(url, create=False))


def rating_stores_beside(ledger: LedgerStore) -> Callable[[], MoneyRatingStore] | None:
    """For a ledger whose rating store is not a local file (PostgreSQL): a maker of
    (unopened) rating stores beside it, one per loop that needs one (the gateway's serving
    loop, each settlement pass's own). None for SQLite (the runtime uses the file's path)
    and for ledgers that keep no plans."""
    if isinstance(ledger, SqliteStore):
        return None
    try:
        rating_store_for(ledger)
    except ValueError:
        return None
    return lambda: rating_store_for(ledger)
