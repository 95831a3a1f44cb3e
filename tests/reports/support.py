"""A real ledger for report tests, SQLite or PostgreSQL: accounts, calls with their
counters, plans, top-ups and settlement, all through the project's own APIs, on one
ManualClock. ``source(at)`` is what a report function takes for the ledger at ``at``."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from metering_middleware.catalog import Catalog
from metering_middleware.clock import ManualClock
from metering_middleware.credentials import CredentialManager, SecretBox
from metering_middleware.ledger import CallRecord, LedgerStore, SqliteStore
from metering_middleware.ledger.records import Outcome, OutcomeCount
from metering_middleware.rating import SettleReport, SqliteRatingStore, buy_resource_plan, settle
from metering_middleware.rating.open import MoneyRatingStore
from metering_middleware.reports import LedgerSource
from tests.support.money import priced_catalog, topup

__all__ = ["COMPARE", "DETECT", "PLATE", "Ledger", "cli_url", "source", "table_sizes", "utc"]

DETECT = "facebody.DetectFace"  # 0.50 for a month's first 3 calls, then 0.25
COMPARE = "facebody.CompareFace"  # 0.40
PLATE = "ocr.RecognizeLicensePlate"  # 0.15 for a month's first 10,000 calls


def utc(y: int, m: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> datetime:
    return datetime(y, m, d, h, mi, s, tzinfo=UTC)


def _is_url(at: Path | str) -> bool:
    return isinstance(at, str) and at.startswith("postgresql://")


def source(at: Path | str) -> LedgerSource:
    """The report functions' argument for the ledger at ``at``: the SQLite file's path, or
    an (unopened) PostgreSQL ledger store: its options are all a report needs."""
    if _is_url(at):
        from metering_middleware.stores.postgresql import PostgresStore

        return PostgresStore.from_url(str(at), create=False)
    return at


def cli_url(at: Path | str) -> str:
    """``--db`` for the ledger at ``at``."""
    return str(at) if _is_url(at) else f"sqlite:///{at}"


async def table_sizes(at: Path | str) -> dict[str, int]:
    """Rows per table of the ledger at ``at`` (to show a report wrote nothing)."""
    if not _is_url(at):
        with sqlite3.connect(at) as conn:
            q = "SELECT name FROM sqlite_master WHERE type='table'"
            names = [r[0] for r in conn.execute(q)]
            return {n: conn.execute(f"SELECT COUNT(*) FROM '{n}'").fetchone()[0] for n in names}
    import asyncpg

    conn = await asyncpg.connect(str(at))
    try:
        q = "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        names = [r[0] for r in await conn.fetch(q)]
        return {n: int(await conn.fetchval(f'SELECT count(*) FROM "{n}"')) for n in names}
    finally:
        await conn.close()


class Ledger:
    """``calls`` writes records and their charged counters as the writer would; ``at`` is
    an SQLite file's path or a ``postgresql://`` URL (tests/rating/conftest.py's ``ledger``)."""

    def __init__(self, path: Path | str, start: datetime, catalog: Catalog | None = None) -> None:
        self.path = path
        self.catalog = catalog or priced_catalog()
        self.clock = ManualClock(start)
        self.store: LedgerStore
        self.rating: MoneyRatingStore
        if _is_url(path):
            from metering_middleware.stores.postgresql import PostgresStore
            from metering_middleware.stores.postgresql.rating import PostgresRatingStore

            self.store = PostgresStore.from_url(str(path), clock=self.clock)
            self.rating = PostgresRatingStore.from_url(str(path))
        else:
            self.store = SqliteStore(path, clock=self.clock, synchronous="NORMAL")
            self.rating = SqliteRatingStore(path)
        self._n = 0

    async def __aenter__(self) -> Ledger:
        await self.store.open()
        await self.rating.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.rating.close()
        await self.store.close()

    async def account(self, name: str) -> None:
        await CredentialManager(self.store, SecretBox(None), self.clock).add(name)

    async def calls(
        self, account: str, times: Iterable[datetime], item: str = DETECT, status: int = 200
    ) -> list[CallRecord]:
        it = self.catalog.by_item()[item]
        records = []
        counts = []
        for when in times:
            self._n += 1
            records.append(
                CallRecord(
                    id=f"r{self._n:08d}",
                    request_id=f"up-{self._n}",
                    account=account,
                    access_key_id=f"AK-{account}",
                    category=it.category,
                    action=it.action,
                    version=it.version,
                    item=item,
                    occurred_at=when,
                    status=status,
                    error_code=None,
                    latency_ms=12.5,
                )
            )
            counts.append(self.count(account, when, Outcome.CHARGED, "", 1, item))
        await self.store.write(records, counts)
        return records

    def count(
        self,
        account: str,
        when: datetime,
        outcome: Outcome,
        detail: str,
        n: int,
        item: str = DETECT,
    ) -> OutcomeCount:
        it = self.catalog.by_item()[item]
        minute = when.replace(second=0, microsecond=0)
        return OutcomeCount(minute, account, it.category, it.action, outcome, detail, n)

    async def counts(self, *counts: OutcomeCount) -> None:
        await self.store.write([], list(counts))

    async def settle(self, at: datetime, **options: Any) -> SettleReport:
        self.clock.set(at)
        options.setdefault("lag", timedelta(seconds=60))
        return await settle(self.rating, self.catalog, self.clock, **options)

    async def topup(self, account: str, amount: str, at: datetime) -> None:
        await topup(self.rating, account, amount, at)

    async def plan(
        self,
        account: str,
        points: str,
        at: datetime,
        pid: str,
        *,
        category: str = "facebody",
        months: int = 12,
    ) -> None:
        await buy_resource_plan(
            self.rating,
            self.catalog,
            account=account,
            kind="single",
            categories={category},
            points=Decimal(points),
            ordered_at=at,
            price_paid=Decimal("1"),
            plan_id=pid,
            validity_months=months,
            clock=self.clock,
        )
