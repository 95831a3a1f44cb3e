"""What every ledger backend provides (SQLite now; memory for tests; PostgreSQL later).

One shared contract test suite runs against every implementation.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from .records import CallRecord, ClaimedNonce, OutcomeCount

__all__ = ["CallSummary", "CredentialRow", "LedgerStore", "StoreError"]


class StoreError(Exception):
    """The store cannot take or give data right now (locked, full, gone, replaced).

    The writer answers it by journaling; it never loses a record.
    """


@dataclass(frozen=True, slots=True)
class CredentialRow:
    access_key_id: str
    account: str
    secret: str  # as stored: 'plain:<secret>' or 'fernet:<token>'
    enabled: bool
    created_at: datetime
    disabled_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class CallSummary:
    account: str
    category: str
    action: str
    item: str
    calls: int
    first: datetime
    last: datetime


class LedgerStore(Protocol):
    async def open(self) -> None:
        """Connect and bring the schema up to date (safe with concurrent starters)."""
        ...

    async def close(self) -> None: ...

    async def check(self) -> None:
        """Raise ``StoreError`` unless the store is reachable and still the same store."""
        ...

    async def write(
        self,
        records: Sequence[CallRecord],
        counts: Sequence[OutcomeCount],
        nonces: Sequence[ClaimedNonce] = (),
    ) -> None:
        """Commit records (idempotent by id), add counts and hold nonces, in one transaction.

        A nonce already held keeps the later of the two expiries (idempotent too).
        """
        ...

    def live_nonces(self, now: float, *, chunk: int = 10_000) -> AsyncIterator[list[ClaimedNonce]]:
        """The nonces held past ``now`` (epoch seconds), in lists of at most ``chunk``.

        The store is not locked between lists: writes go on while a caller reads them.
        """
        ...

    async def prune_nonces(self, now: float, limit: int) -> int:
        """Drop at most ``limit`` nonces that expired at or before ``now``; return how many."""
        ...

    async def calls(
        self,
        *,
        account: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
    ) -> list[CallRecord]:
        """Records in (occurred_at, id) order, ``since`` inclusive, ``until`` exclusive."""
        ...

    def iter_calls(
        self,
        *,
        account: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
        page: int = 1000,
    ) -> AsyncIterator[list[CallRecord]]:
        """What ``calls`` returns, in lists of at most ``page``, in constant memory.

        Keyset pages on (occurred_at, id), the listing's own order and a unique key:
        each page is one short read starting after the last record of the previous one,
        so a million records never sit in memory and writes go on between pages.
        """
        ...

    async def count_calls(
        self,
        *,
        account: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> int:
        """How many records ``calls`` would return without a limit (a progress bar's end)."""
        ...

    async def summary(
        self,
        *,
        account: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[CallSummary]: ...

    async def outcome_counts(
        self,
        *,
        account: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[OutcomeCount]:
        """Per-minute counts, summed over nothing (one row per stored key)."""
        ...

    async def add_credential(self, row: CredentialRow) -> None:
        """Raise ``ValueError`` if the AccessKeyId exists."""
        ...

    async def list_credentials(self, *, account: str | None = None) -> list[CredentialRow]: ...

    async def set_credential_enabled(
        self, access_key_id: str, enabled: bool, when: datetime
    ) -> bool:
        """Return False if no such AccessKeyId."""
        ...
