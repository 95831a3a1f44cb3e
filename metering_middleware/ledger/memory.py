"""An in-memory ledger store (``memory://``) for tests and demos.

It keeps the same contract as the SQLite store (the shared contract suite runs
against both), normalises times to UTC like a round trip through storage
would, and can be told to fail: set ``fail_with`` to an exception and
``open``/``check``/``reopen``/``write`` raise it, which lets writer tests
simulate an outage without touching SQLite. Reads keep working so a test can
look at what was committed while the "outage" lasts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from datetime import datetime

from ._query import Filter, pages
from .codec import CountKey, count_key, format_time, parse_time
from .records import CallRecord, ClaimedNonce, OutcomeCount
from .store import CallSummary, CredentialRow

__all__ = ["MemoryStore"]


class MemoryStore:
    """A :class:`~.store.LedgerStore` held in dictionaries.

    ``writes`` counts successful write transactions, ``reopens`` calls to
    :meth:`reopen`.
    """

    def __init__(self, *, fail_with: Exception | None = None) -> None:
        self.fail_with = fail_with
        self.writes = 0
        self.reopens = 0
        self.is_open = False
        self._calls: dict[str, CallRecord] = {}  # insertion order is the store's seq order
        self._counts: dict[CountKey, int] = {}
        self._credentials: dict[str, CredentialRow] = {}
        self._nonces: dict[tuple[str, str], ClaimedNonce] = {}

    def __repr__(self) -> str:
        return f"MemoryStore(calls={len(self._calls)}, fail_with={self.fail_with!r})"

    def _maybe_fail(self) -> None:
        if self.fail_with is not None:
            raise self.fail_with

    async def open(self) -> None:
        self._maybe_fail()
        self.is_open = True

    async def close(self) -> None:
        self.is_open = False

    async def reopen(self) -> None:
        self.reopens += 1
        self._maybe_fail()
        self.is_open = True

    async def check(self) -> None:
        self._maybe_fail()

    async def write(
        self,
        records: Sequence[CallRecord],
        counts: Sequence[OutcomeCount],
        nonces: Sequence[ClaimedNonce] = (),
    ) -> None:
        self._maybe_fail()
        if not records and not counts and not nonces:
            return
        # Build first, apply after: a bad value must leave the store untouched (one transaction).
        new_calls: dict[str, CallRecord] = {}
        for r in records:  # the first of duplicate ids wins, as in SQL's DO NOTHING
            if r.id not in self._calls and r.id not in new_calls:
                new_calls[r.id] = replace(r, occurred_at=_stored(r.occurred_at))
        added: dict[CountKey, int] = {}
        for c in counts:
            key = count_key(replace(c, minute=_stored(c.minute)))
            added[key] = added.get(key, 0) + c.count
        held = self._nonces
        new_nonces: dict[tuple[str, str], ClaimedNonce] = {}
        for nonce in nonces:  # one per nonce, the later expiry (what a reader of SQLite's takes)
            key_n = (nonce.access_key_id, nonce.nonce)
            nonce = replace(nonce, expires_at=_stored_epoch(nonce.expires_at))
            old = new_nonces.get(key_n) or held.get(key_n)
            if old is None or nonce.expires_at > old.expires_at:
                new_nonces[key_n] = nonce
        self._calls.update(new_calls)
        for key, n in added.items():
            self._counts[key] = self._counts.get(key, 0) + n
        held.update(new_nonces)
        self.writes += 1

    async def live_nonces(
        self, now: float, *, chunk: int = 10_000
    ) -> AsyncIterator[list[ClaimedNonce]]:
        live = sorted(
            (n for n in self._nonces.values() if n.expires_at > now),
            key=lambda n: (n.access_key_id, n.nonce),
        )
        for start in range(0, len(live), chunk):
            yield live[start : start + chunk]

    async def prune_nonces(self, now: float, limit: int) -> int:
        self._maybe_fail()
        expired = sorted(
            (n for n in self._nonces.values() if n.expires_at <= now), key=lambda n: n.expires_at
        )[: max(limit, 0)]
        for n in expired:
            del self._nonces[n.access_key_id, n.nonce]
        return len(expired)

    async def calls(
        self,
        *,
        account: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
    ) -> list[CallRecord]:
        return self._select(_filter(account, since, until), None, limit)

    async def iter_calls(
        self,
        *,
        account: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
        page: int = 1000,
    ) -> AsyncIterator[list[CallRecord]]:
        where = _filter(account, since, until)

        async def fetch(after: tuple[datetime, str] | None, size: int) -> list[CallRecord]:
            return self._select(where, after, size)

        async for rows in pages(fetch, _call_key, _same, limit=limit, page=page):
            yield rows

    def _select(
        self, where: Filter, after: tuple[datetime, str] | None, size: int | None
    ) -> list[CallRecord]:
        """What ``_query.calls_page`` selects, from the dictionary."""
        found = [
            r
            for r in self._calls.values()
            if where.matches(r.account, r.occurred_at)
            and (after is None or (r.occurred_at, r.id) > after)
        ]
        found.sort(key=_call_key)
        return found if size is None else found[: max(size, 0)]

    async def count_calls(
        self,
        *,
        account: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> int:
        return len(await self.calls(account=account, since=since, until=until))

    async def summary(
        self,
        *,
        account: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[CallSummary]:
        where = _filter(account, since, until)
        groups: dict[tuple[str, str, str, str], list[datetime]] = {}
        for r in self._calls.values():
            if where.matches(r.account, r.occurred_at):
                key = (r.account, r.category, r.action, r.item)
                groups.setdefault(key, []).append(r.occurred_at)
        return [
            CallSummary(*key, calls=len(times), first=min(times), last=max(times))
            for key, times in sorted(groups.items())
        ]

    async def outcome_counts(
        self,
        *,
        account: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[OutcomeCount]:
        where = _filter(account, since, until)
        return [
            OutcomeCount(*key, count=n)
            for key, n in sorted(self._counts.items())
            if where.matches(key[1], key[0])
        ]

    async def add_credential(self, row: CredentialRow) -> None:
        if row.access_key_id in self._credentials:
            raise ValueError(f"AccessKeyId {row.access_key_id!r} already exists")
        self._credentials[row.access_key_id] = replace(
            row,
            created_at=_stored(row.created_at),
            disabled_at=None if row.disabled_at is None else _stored(row.disabled_at),
        )

    async def list_credentials(self, *, account: str | None = None) -> list[CredentialRow]:
        rows = [c for c in self._credentials.values() if account is None or c.account == account]
        rows.sort(key=lambda c: (c.account, c.access_key_id))
        return rows

    async def set_credential_enabled(
        self, access_key_id: str, enabled: bool, when: datetime
    ) -> bool:
        row = self._credentials.get(access_key_id)
        if row is None:
            return False
        # Disabling twice keeps the first disabled_at, like the SQLite store.
        disabled_at = None if enabled else row.disabled_at or _stored(when)
        self._credentials[access_key_id] = replace(row, enabled=enabled, disabled_at=disabled_at)
        return True


def _stored(when: datetime) -> datetime:
    """The datetime a round trip through storage gives (UTC; naive ones refused)."""
    return parse_time(format_time(when))


def _stored_epoch(seconds: float) -> float:
    """Epoch seconds as a round trip through storage gives them (whole milliseconds)."""
    return round(seconds * 1000) / 1000


def _filter(account: str | None, since: datetime | None, until: datetime | None) -> Filter:
    """The shared filter, its bounds as storage would compare them."""
    return Filter(
        account,
        None if since is None else _stored(since),
        None if until is None else _stored(until),
    )


def _call_key(r: CallRecord) -> tuple[datetime, str]:
    return r.occurred_at, r.id


def _same(r: CallRecord) -> CallRecord:
    return r
