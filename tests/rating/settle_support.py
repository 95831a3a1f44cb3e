"""A real SQLite ledger plus rating store on one ManualClock, for settlement tests."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from metering_middleware.catalog import Catalog
from metering_middleware.clock import ManualClock
from metering_middleware.ledger import CallRecord, LedgerStore, SqliteStore
from metering_middleware.rating import (
    Bill,
    BillLine,
    MoneyRatingStore,
    Month,
    SettleProgress,
    SettleReport,
    SqliteRatingStore,
    build_bill,
    rerate,
    settle,
)

LAG = timedelta(seconds=60)


class Harness:
    """Write records as they would arrive, settle at chosen instants, read bills.

    ``recorded_at`` (a record's arrival) is the clock's time when it is written, as in
    the gateway; settlement runs at the clock's time too.

    ``path`` is an SQLite file, or a ``postgresql://`` URL (the ``ledger`` fixture gives
    either): the same test body runs on both backends.
    """

    def __init__(self, path: Path | str, catalog: Catalog, start: datetime) -> None:
        self.catalog = catalog
        self.clock = ManualClock(start)
        self.ledger: LedgerStore
        self.rating: MoneyRatingStore
        if isinstance(path, str) and path.startswith("postgresql://"):
            from metering_middleware.stores.postgresql import PostgresStore
            from metering_middleware.stores.postgresql.rating import PostgresRatingStore

            self.url = path
            self.ledger = PostgresStore.from_url(path, clock=self.clock)
            self.rating = PostgresRatingStore.from_url(path)
        else:
            self.path = Path(path)
            self.ledger = SqliteStore(path, clock=self.clock, synchronous="NORMAL")
            self.rating = SqliteRatingStore(path)

    @property
    def postgresql(self) -> bool:
        return not hasattr(self, "path")

    async def query(self, sql: str) -> list[tuple[Any, ...]]:
        """Rows of ``sql`` read straight from the database (a connection of its own), with
        decimals as plain text, as the SQLite store keeps them."""
        if self.postgresql:
            import asyncpg

            conn = await asyncpg.connect(self.url)
            try:
                found = [tuple(r) for r in await conn.fetch(sql)]
            finally:
                await conn.close()
            return [tuple(_text(v) for v in row) for row in found]
        conn3 = sqlite3.connect(self.path)
        try:
            return [tuple(r) for r in conn3.execute(sql).fetchall()]
        finally:
            conn3.close()

    async def refused(self, sql: str) -> str:
        """The error message of ``sql`` (a statement the database must refuse)."""
        if self.postgresql:
            import asyncpg

            conn = await asyncpg.connect(self.url)
            try:
                await conn.execute(sql)
            except asyncpg.PostgresError as exc:
                return str(exc)
            finally:
                await conn.close()
            raise AssertionError(f"{sql!r} was not refused")
        conn3 = sqlite3.connect(self.path)
        try:
            conn3.execute(sql)
        except sqlite3.IntegrityError as exc:
            return str(exc)
        finally:
            conn3.close()
        raise AssertionError(f"{sql!r} was not refused")

    async def __aenter__(self) -> Harness:
        await self.ledger.open()
        await self.rating.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.rating.close()
        await self.ledger.close()

    async def arrive(self, records: Sequence[CallRecord], at: datetime | None = None) -> None:
        """Write ``records`` at ``at``; by default each UTC day's records a second after
        the day's last one occurred (on time: none arrives after its month closed)."""
        if at is None:
            days: dict[object, list[CallRecord]] = {}
            for r in sorted(records, key=lambda r: (r.occurred_at, r.id)):
                days.setdefault(r.occurred_at.date(), []).append(r)
            for day in days.values():
                await self.arrive(day, at=day[-1].occurred_at + timedelta(seconds=1))
            return
        if at > self.clock.now():
            self.clock.set(at)
        for i in range(0, len(records), 5000):
            await self.ledger.write(records[i : i + 5000], [])

    async def settle(self, at: datetime | None = None, **options: Any) -> SettleReport:
        if at is not None:
            self.clock.set(at)
        options.setdefault("lag", LAG)
        return await settle(self.rating, self.catalog, self.clock, **options)

    async def rerate(self, month: Month, **options: Any) -> SettleReport:
        return await rerate(self.rating, self.catalog, self.clock, month=month, **options)

    async def bill(self, account: str, month: Month) -> Bill:
        return await build_bill(self.rating, account, month)

    async def lines(self) -> list[BillLine]:
        return await self.rating.lines()

    async def snapshot(self) -> dict[str, Any]:
        """Everything settlement stored that a bill depends on (for equality checks)."""
        accounts = await self.rating.accounts()
        states = {name: a.state.to_plain() for name, a in accounts.items()}
        return {
            "lines": await self.rating.lines(),
            # An account pass leaves a row even for an account with nothing settled yet.
            "states": {name: s for name, s in states.items() if s["remaining"] or s["positions"]},
            "adjustments": await self.rating.adjustments(),
        }


def _text(value: Any) -> Any:
    return format(value, "f") if isinstance(value, Decimal) else value


def summary(lines: Iterable[BillLine]) -> list[tuple[str, str, str, str, str, int, str, str]]:
    """Lines as comparable tuples (account, months, item, source, calls, points, amount)."""
    out = []
    for ln in lines:
        s = ln.source
        source = f"{s.kind.value}:{s.plan_id or ''}:{s.tier}:{s.unit_price}"
        out.append(
            (
                ln.account,
                str(ln.billed),
                str(ln.origin),
                ln.item,
                source,
                ln.calls,
                str(ln.points.normalize()),
                str(ln.amount.normalize()),
            )
        )
    return sorted(out)


def charged(bill: Bill) -> Decimal:
    return bill.amount_due


class Progress:
    """Collects progress reports."""

    def __init__(self) -> None:
        self.seen: list[SettleProgress] = []

    def __call__(self, step: SettleProgress) -> None:
        self.seen.append(step)
